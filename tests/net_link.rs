//! The peer link over real sockets on 127.0.0.1 (ports from binding `127.0.0.1:0`).
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use udrbd::net::connect;
use udrbd::net::framed::{FrameReader, FrameWriter};
use udrbd::net::{AuthConfig, HmacAlg, Link, LinkConfig, LinkError};
use udrbd::repl::wire::{self, BlockAck, DataFlags, Frame, Packet, features};
use udrbd::types::{NodeId, Sector};

const UP: Duration = Duration::from_secs(5);
/// How late a ping timeout may be detected beyond its deadline: generous, because a loaded CI
/// machine can stall a thread for a while; the test is about detection, not its precision.
const SLACK: Duration = Duration::from_millis(1500);

async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn cfg(me: u8, peer: u8) -> LinkConfig {
    let mut c = LinkConfig::new("r0", NodeId(me), NodeId(peer));
    c.connect_int = Duration::from_millis(100);
    c.ping_int = Duration::from_millis(200);
    c.ping_timeout = Duration::from_millis(500);
    c.handshake_timeout = Duration::from_secs(1);
    c
}

fn with_auth(mut c: LinkConfig, alg: HmacAlg, secret: &str) -> LinkConfig {
    c.auth = Some(AuthConfig::new(alg, secret));
    c
}

/// Both endpoints establish concurrently.
async fn establish_both(
    ca: LinkConfig,
    cb: LinkConfig,
) -> (Result<Link, LinkError>, Result<Link, LinkError>) {
    let (la, aa) = bind().await;
    let (lb, ab) = bind().await;
    timeout(UP, async {
        tokio::join!(Link::establish(&ca, &la, ab), Link::establish(&cb, &lb, aa))
    })
    .await
    .expect("establish neither succeeded nor failed in time")
}

async fn pair(ca: LinkConfig, cb: LinkConfig) -> (Link, Link) {
    let (a, b) = establish_both(ca, cb).await;
    (a.unwrap(), b.unwrap())
}

fn ack(i: u64) -> Packet {
    Packet::WriteAck(BlockAck {
        sector: Sector(i * 8),
        block_id: i,
        size: 4096,
        seq: i as u32,
    })
}

fn data(i: u64) -> Packet {
    let block: Vec<u8> = (0..4096u32)
        .map(|j| (i as u32).wrapping_mul(31).wrapping_add(j) as u8)
        .collect();
    Packet::Data {
        sector: Sector(i * 8),
        block_id: i,
        seq: i as u32,
        seen: 0,
        flags: DataFlags::SEND_WRITE_ACK,
        size: 4096,
        digest: Bytes::new(),
        data: Bytes::from(block),
    }
}

async fn recv(l: &mut Link) -> Frame {
    timeout(UP, l.recv())
        .await
        .expect("recv timed out")
        .unwrap()
}

/// One packet each way, on each stream.
async fn exchange(a: &mut Link, b: &mut Link) {
    a.send(0, &data(1)).await.unwrap();
    b.send(0, &ack(2)).await.unwrap();
    assert_eq!(recv(b).await.packet, data(1));
    assert_eq!(recv(a).await.packet, ack(2));
    b.send(0, &Packet::Barrier { epoch: 7 }).await.unwrap();
    assert_eq!(recv(a).await.packet, Packet::Barrier { epoch: 7 });
}

/// The two ends are the two ends of the same connections.
fn assert_same_connection(a: &Link, b: &Link) {
    let (a, b) = (a.info(), b.info());
    assert_eq!(a.data_local, b.data_peer);
    assert_eq!(a.data_peer, b.data_local);
    assert_eq!(a.control_local, b.control_peer);
    assert_eq!(a.control_peer, b.control_local);
    // Two distinct connections (the dialer's ends have distinct ports).
    let dialer = if a.dialed { a } else { b };
    assert!(a.dialed != b.dialed);
    assert_ne!(dialer.data_local, dialer.control_local);
}

#[tokio::test]
async fn connects_in_both_orders() {
    for a_first in [true, false] {
        let (la, aa) = bind().await;
        let (lb, ab) = bind().await;
        let (ca, cb) = (cfg(1, 0), cfg(0, 1));
        let delay = |first: bool| async move {
            if !first {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        };
        let (a, b) = timeout(UP, async {
            tokio::join!(
                async {
                    delay(a_first).await;
                    Link::establish(&ca, &la, ab).await
                },
                async {
                    delay(!a_first).await;
                    Link::establish(&cb, &lb, aa).await
                }
            )
        })
        .await
        .unwrap();
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        // Node 1 (higher) dialed; node 0 accepted.
        assert!(a.info().dialed && !b.info().dialed);
        assert_same_connection(&a, &b);
        assert_eq!(a.info().protocol, udrbd::repl::wire::PROTOCOL_MAX);
        assert_eq!(
            a.info().peer_features,
            udrbd::repl::wire::features::SUPPORTED
        );
        exchange(&mut a, &mut b).await;
        exchange(&mut b, &mut a).await;
    }
}

#[tokio::test]
async fn simultaneous_connect_resolves_to_one_link() {
    for _ in 0..3 {
        let (mut a, mut b) = pair(cfg(3, 5), cfg(5, 3)).await;
        assert!(!a.info().dialed && b.info().dialed);
        assert_same_connection(&a, &b);
        exchange(&mut a, &mut b).await;
    }
}

#[tokio::test]
async fn every_hmac_algorithm_works() {
    for alg in HmacAlg::ALL {
        let (mut a, mut b) = pair(
            with_auth(cfg(1, 0), alg, "a shared secret"),
            with_auth(cfg(0, 1), alg, "a shared secret"),
        )
        .await;
        exchange(&mut a, &mut b).await;
    }
}

#[tokio::test]
async fn secret_on_one_side_only_fails_clearly() {
    for a_has_it in [true, false] {
        let (mut ca, mut cb) = (cfg(1, 0), cfg(0, 1));
        if a_has_it {
            ca = with_auth(ca, HmacAlg::Sha1, "s");
        } else {
            cb = with_auth(cb, HmacAlg::Sha1, "s");
        }
        let (a, b) = establish_both(ca, cb).await;
        let (ea, eb) = (a.unwrap_err(), b.unwrap_err());
        let (with, without) = if a_has_it { (ea, eb) } else { (eb, ea) };
        assert!(matches!(with, LinkError::AuthFailed(_)), "{with}");
        assert!(
            with.to_string().contains("the peer has no shared-secret"),
            "{with}"
        );
        assert!(matches!(without, LinkError::AuthFailed(_)), "{without}");
        assert!(
            without.to_string().contains("we have no shared-secret"),
            "{without}"
        );
    }
}

#[tokio::test]
async fn idle_link_stays_up_across_many_ping_intervals() {
    let (mut ca, mut cb) = (cfg(1, 0), cfg(0, 1));
    for c in [&mut ca, &mut cb] {
        c.ping_int = Duration::from_millis(100);
        c.ping_timeout = Duration::from_millis(1000);
    }
    let (mut a, mut b) = pair(ca, cb).await;
    // Nothing to receive, and no failure, for 10 intervals.
    let (ra, rb) = tokio::join!(
        timeout(Duration::from_millis(1000), a.recv()),
        timeout(Duration::from_millis(1000), b.recv())
    );
    assert!(ra.is_err() && rb.is_err(), "{ra:?} {rb:?}");
    for (me, peer) in [(&a, &b), (&b, &a)] {
        let (s, p) = (me.stats(), peer.stats());
        assert!(s.pings_sent >= 6, "{s:?}");
        assert!(s.ping_acks + 1 >= s.pings_sent, "{s:?}");
        assert!(p.pings_answered >= 6, "{p:?}");
    }
    exchange(&mut a, &mut b).await;
}

#[test]
fn a_frozen_peer_is_detected_within_ping_timeout() {
    let ping_int = Duration::from_millis(100);
    let ping_timeout = Duration::from_millis(300);
    let mut ca = cfg(1, 0);
    let mut cb = cfg(0, 1);
    for c in [&mut ca, &mut cb] {
        c.ping_int = ping_int;
        c.ping_timeout = ping_timeout;
    }
    let la = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lb = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    la.set_nonblocking(true).unwrap();
    lb.set_nonblocking(true).unwrap();

    // B runs on its own single-threaded runtime; "freezing" blocks that thread, so nothing of
    // B's link runs any more (no reading, no PingAck), as with SIGSTOP.
    let (up_tx, up_rx) = std::sync::mpsc::channel::<()>();
    let (freeze_tx, freeze_rx) = tokio::sync::oneshot::channel::<()>();
    let (thaw_tx, thaw_rx) = std::sync::mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let lb = TcpListener::from_std(lb).unwrap();
            let link = Link::establish(&cb, &lb, aa).await.unwrap();
            up_tx.send(()).unwrap();
            freeze_rx.await.unwrap();
            // Block the runtime's only thread.
            let _ = thaw_rx.recv_timeout(Duration::from_secs(10));
            drop(link);
        });
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let la = TcpListener::from_std(la).unwrap();
        let mut a = timeout(UP, Link::establish(&ca, &la, ab))
            .await
            .unwrap()
            .unwrap();
        up_rx.recv_timeout(UP).unwrap();
        // Alive across several intervals.
        assert!(timeout(ping_int * 5, a.recv()).await.is_err());
        let before = a.stats();
        assert!(before.ping_acks >= 3, "{before:?}");
        freeze_tx.send(()).unwrap();
        let t0 = Instant::now();
        let e = timeout(UP, a.recv()).await.unwrap().unwrap_err();
        let took = t0.elapsed();
        assert!(matches!(e, LinkError::PingTimeout), "{e}");
        assert!(!e.is_fatal());
        // At most one interval until the next ping, then the timeout, plus slack.
        assert!(took <= ping_int + ping_timeout + SLACK, "took {took:?}");
        assert!(took >= ping_timeout / 2, "took {took:?}");
        // The link stays failed.
        assert!(matches!(a.recv().await, Err(LinkError::PingTimeout)));
        assert!(matches!(
            a.send(0, &ack(1)).await,
            Err(LinkError::PingTimeout)
        ));
    });
    thaw_tx.send(()).unwrap();
    peer.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_data_packets_arrive_in_order_while_pings_flow() {
    const N: u64 = 10_000;
    let (mut ca, mut cb) = (cfg(1, 0), cfg(0, 1));
    for c in [&mut ca, &mut cb] {
        // Short: a transfer takes 40-70 ms here. A ping's answer queues behind the 10,000
        // acks on the control stream, so how many complete depends on that queue, not on
        // this interval; one that completes mid-transfer shows the stream is not starved.
        c.ping_int = Duration::from_millis(2);
        c.ping_timeout = Duration::from_secs(2);
    }
    let (mut a, mut b) = pair(ca, cb).await;
    let before = a.stats();
    let t0 = Instant::now();
    let tx = a.sender();
    let sender = tokio::spawn(async move {
        for i in 0..N {
            tx.send(0, &data(i)).await.unwrap();
        }
    });
    // B checks every packet and acks each on the control stream.
    let receiver = tokio::spawn(async move {
        for i in 0..N {
            let f = timeout(UP, b.recv()).await.unwrap().unwrap();
            assert_eq!(f.volume, 0);
            assert!(f.packet == data(i), "packet {i} differs");
            b.send(0, &ack(i)).await.unwrap();
        }
        b
    });
    for i in 0..N {
        assert_eq!(recv(&mut a).await.packet, ack(i));
    }
    sender.await.unwrap();
    let b = receiver.await.unwrap();
    let took = t0.elapsed();
    let after = a.stats();
    eprintln!("{N} x 4 KiB in {took:?}; pings {before:?} -> {after:?}");
    assert!(
        after.ping_acks > before.ping_acks,
        "pings did not flow during the transfer: {before:?} -> {after:?} in {took:?}"
    );
    assert!(b.stats().pings_answered >= 2);
}

#[tokio::test]
async fn garbage_clients_are_rejected_and_a_good_peer_connects_after() {
    let (la, aa) = bind().await;
    let (lb, ab) = bind().await;
    let (ca, cb) = (cfg(1, 0), cfg(0, 1));
    // B (the lower id, which accepts the real streams) starts alone.
    let b = tokio::spawn(async move { Link::establish(&cb, &lb, aa).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A silent client (must not block anything), an HTTP request, random bytes, and a header
    // with a valid magic but a broken checksum.
    let _silent = TcpStream::connect(ab).await.unwrap();
    let mut bad_header = Vec::new();
    udrbd::repl::wire::encode(&Packet::Ping, &mut bad_header).unwrap();
    bad_header[13] ^= 0xff;
    let garbage: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        &[0xa5; 100],
        &bad_header,
    ];
    for g in garbage {
        let mut c = TcpStream::connect(ab).await.unwrap();
        c.write_all(g).await.unwrap();
        // B answers with its Hello, then closes (EOF, or a reset if our bytes were left unread).
        let mut buf = Vec::new();
        let r = timeout(Duration::from_secs(2), c.read_to_end(&mut buf))
            .await
            .expect("B did not close a garbage connection");
        if r.is_ok() {
            assert!(buf.len() <= udrbd::repl::wire::MAX_FRAME_LEN);
        }
    }
    assert!(!b.is_finished(), "a garbage client ended B's establish");

    let mut a = timeout(UP, Link::establish(&ca, &la, ab))
        .await
        .unwrap()
        .unwrap();
    let mut b = timeout(UP, b).await.unwrap().unwrap().unwrap();
    assert_same_connection(&a, &b);
    exchange(&mut a, &mut b).await;
}

#[tokio::test]
async fn close_sends_disconnect_after_queued_data() {
    let (a, mut b) = pair(cfg(1, 0), cfg(0, 1)).await;
    for i in 0..10 {
        a.send(0, &data(i)).await.unwrap();
    }
    // The receiver reads while the sender closes (its read-ahead holds fewer frames than
    // were sent: the rest waits in the socket until read).
    let closing = tokio::spawn(a.close());
    for i in 0..10 {
        assert_eq!(recv(&mut b).await.packet, data(i));
    }
    assert_eq!(recv(&mut b).await.packet, Packet::Disconnect);
    let e = timeout(UP, b.recv()).await.unwrap().unwrap_err();
    assert!(matches!(e, LinkError::PeerClosed), "{e}");
    closing.await.unwrap();
}

#[tokio::test]
async fn invalid_packets_are_refused_without_hurting_the_link() {
    let (mut a, mut b) = pair(cfg(1, 0), cfg(0, 1)).await;
    // Data whose size does not match its bytes.
    let bad = Packet::Data {
        sector: Sector(0),
        block_id: 0,
        seq: 0,
        seen: 0,
        flags: DataFlags::empty(),
        size: 4096,
        digest: Bytes::new(),
        data: Bytes::from_static(&[0; 512]),
    };
    assert!(matches!(a.send(0, &bad).await, Err(LinkError::Encode(_))));
    let hello = Packet::Hello {
        protocol_min: 1,
        protocol_max: 1,
        features: 0,
        sender: NodeId(1),
        receiver: NodeId(0),
        resource: "r0".into(),
    };
    assert!(matches!(
        a.send(0, &hello).await,
        Err(LinkError::Protocol(_))
    ));
    exchange(&mut a, &mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frames_overtake_blocked_bulk_data() {
    const N: u64 = 400;
    let big = |i: u64| Packet::Data {
        sector: Sector(i * 128),
        block_id: i,
        seq: i as u32,
        seen: 0,
        flags: DataFlags::empty(),
        size: 64 * 1024,
        digest: Bytes::new(),
        data: Bytes::from(vec![i as u8; 64 * 1024]),
    };
    let (mut ca, mut cb) = (cfg(1, 0), cfg(0, 1));
    for c in [&mut ca, &mut cb] {
        c.ping_int = Duration::from_millis(100);
        c.ping_timeout = Duration::from_millis(300);
    }
    // B buffers only 4 received data frames: its data stream stops being read.
    cb.data_queue = 4;
    let (a, mut b) = pair(ca, cb).await;
    let tx = a.sender();
    let bulk = tokio::spawn(async move {
        for i in 0..N {
            tx.send(0, &big(i)).await.unwrap();
        }
    });
    // 25 MiB cannot all be in flight: the sender blocks on the full data stream.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!bulk.is_finished(), "bulk data was not held back");
    // A control frame still gets through, ahead of everything queued on the data stream, and
    // pings keep flowing both ways for several intervals although B reads no data.
    a.send(0, &ack(9)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(recv(&mut b).await.packet, ack(9));
    assert!(a.stats().ping_acks >= 5 && b.stats().ping_acks >= 5);
    for i in 0..N {
        assert!(recv(&mut b).await.packet == big(i), "bulk frame {i}");
    }
    bulk.await.unwrap();
    drop(a);
}

/// `max-buffers`: a receiver that pauses its data stream gets control frames only, its peer's
/// writers are held back once the read-ahead and the socket buffers are full, and after the
/// pause everything arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_data_stream_pushes_back_while_control_flows() {
    const N: u64 = 400;
    let big = |i: u64| Packet::Data {
        sector: Sector(i * 128),
        block_id: i,
        seq: i as u32,
        seen: 0,
        flags: DataFlags::empty(),
        size: 64 * 1024,
        digest: Bytes::new(),
        data: Bytes::from(vec![i as u8; 64 * 1024]),
    };
    let (a, mut b) = pair(cfg(1, 0), cfg(0, 1)).await;
    b.set_data_paused(true);
    let tx = a.sender();
    let bulk = tokio::spawn(async move {
        for i in 0..N {
            tx.send(0, &big(i)).await.unwrap();
        }
    });
    a.send(0, &ack(9)).await.unwrap();
    // Only the control frame comes through while paused.
    assert_eq!(recv(&mut b).await.packet, ack(9));
    assert!(
        timeout(Duration::from_millis(300), b.recv()).await.is_err(),
        "a data frame arrived while paused"
    );
    assert!(!bulk.is_finished(), "25 MiB went out to a paused receiver");
    b.set_data_paused(false);
    for i in 0..N {
        assert!(recv(&mut b).await.packet == big(i), "bulk frame {i}");
    }
    bulk.await.unwrap();
}

/// The peer process of [`a_sigstopped_peer_process_is_detected`]: the test binary runs itself
/// with `UDRBD_NET_CHILD_PEER` set. Without it (a normal run) this does nothing.
#[test]
fn child_peer() {
    let Ok(a_addr) = std::env::var("UDRBD_NET_CHILD_PEER") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (l, addr) = bind().await;
        println!("LISTEN {addr}");
        let mut c = cfg(0, 1);
        c.ping_int = Duration::from_millis(100);
        c.ping_timeout = Duration::from_millis(300);
        let mut link = timeout(UP, Link::establish(&c, &l, a_addr.parse().unwrap()))
            .await
            .unwrap()
            .unwrap();
        // Serve until the parent kills us (bounded, should the parent die first).
        let _ = timeout(Duration::from_secs(20), link.recv()).await;
    });
}

/// Kills the child however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_sigstopped_peer_process_is_detected() {
    use std::io::BufRead;
    let ping_int = Duration::from_millis(100);
    let ping_timeout = Duration::from_millis(300);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (la, aa) = bind().await;
        let mut child = KillOnDrop(
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "child_peer", "--nocapture", "--test-threads=1"])
                .env("UDRBD_NET_CHILD_PEER", aa.to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may have printed "test child_peer ... " on the same line.
                if let Some(at) = line.find("LISTEN ") {
                    let _ = tx.send(line[at + 7..].trim().to_string());
                }
            }
        });
        let ab: SocketAddr = rx.recv_timeout(UP).unwrap().parse().unwrap();
        let mut ca = cfg(1, 0);
        ca.ping_int = ping_int;
        ca.ping_timeout = ping_timeout;
        let mut a = timeout(UP, Link::establish(&ca, &la, ab))
            .await
            .unwrap()
            .unwrap();
        assert!(timeout(ping_int * 5, a.recv()).await.is_err());
        assert!(a.stats().ping_acks >= 3, "{:?}", a.stats());

        let pid = i32::try_from(child.0.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let t0 = Instant::now();
        let e = timeout(UP, a.recv()).await.unwrap().unwrap_err();
        let took = t0.elapsed();
        assert!(matches!(e, LinkError::PingTimeout), "{e}");
        assert!(took <= ping_int + ping_timeout + SLACK, "took {took:?}");
    });
}

#[tokio::test]
async fn the_lower_node_wakes_the_higher_one_up() {
    // The higher node retries only every 30 s; its first dial is refused (nothing listens).
    let (la, aa) = bind().await;
    let (lb, ab) = bind().await;
    drop(lb);
    let mut ca = cfg(1, 0);
    ca.connect_int = Duration::from_secs(30);
    let a = tokio::spawn(async move { Link::establish(&ca, &la, ab).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // B comes up on the same address and dials A, which dials back at once.
    let lb = TcpListener::bind(ab).await.unwrap();
    let t0 = Instant::now();
    let mut b = timeout(Duration::from_secs(3), Link::establish(&cfg(0, 1), &lb, aa))
        .await
        .expect("not woken up")
        .unwrap();
    let mut a = a.await.unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_same_connection(&a, &b);
    exchange(&mut a, &mut b).await;
}

/// A hand-driven "peer" dialing `to` as node 1 (the higher id, so its connection is kept),
/// which has sent its Hello and read B's.
async fn fake_dialer(
    to: SocketAddr,
    hello: Packet,
) -> (FrameReader<OwnedReadHalf>, FrameWriter<OwnedWriteHalf>) {
    let (r, w) = TcpStream::connect(to).await.unwrap().into_split();
    let (mut r, mut w) = (FrameReader::new(r), FrameWriter::new(w));
    w.write_frame(0, &hello).await.unwrap();
    let theirs = r.read_frame().await.unwrap().unwrap();
    assert!(matches!(theirs.packet, Packet::Hello { .. }));
    (r, w)
}

fn hello_from_1(protocol: (u32, u32), features: u64) -> Packet {
    Packet::Hello {
        protocol_min: protocol.0,
        protocol_max: protocol.1,
        features,
        sender: NodeId(1),
        receiver: NodeId(0),
        resource: "r0".into(),
    }
}

#[tokio::test]
async fn transient_failures_are_retried_every_connect_int_without_spinning() {
    // A "peer" that accepts and hangs up at once: every attempt fails, transiently.
    let (counter, counter_addr) = bind().await;
    let (la, _) = bind().await;
    let mut ca = cfg(1, 0);
    ca.connect_int = Duration::from_millis(200);
    let a = tokio::spawn(async move { Link::establish(&ca, &la, counter_addr).await });
    let mut attempts = 0;
    let window = tokio::time::sleep(Duration::from_millis(1100));
    tokio::pin!(window);
    loop {
        tokio::select! {
            c = counter.accept() => {
                drop(c.unwrap());
                attempts += 1;
            }
            () = &mut window => break,
        }
    }
    assert!(!a.is_finished(), "a transient failure ended establish");
    a.abort();
    // One attempt at once, then one every 200 ms.
    assert!((4..=7).contains(&attempts), "{attempts} attempts in 1.1 s");
}

#[tokio::test]
async fn a_peer_closing_one_stream_only_ends_the_link() {
    let (_idle, idle_addr) = bind().await;
    let (lb, ab) = bind().await;
    let mut cb = cfg(0, 1);
    cb.ping_int = Duration::from_secs(10);
    cb.handshake_timeout = Duration::from_millis(500);
    let b = tokio::spawn(async move { Link::establish(&cb, &lb, idle_addr).await });
    // A hand-driven higher node: data stream, then control stream.
    let data = fake_dialer(
        ab,
        hello_from_1(
            (wire::PROTOCOL_MIN, wire::PROTOCOL_MAX),
            features::SUPPORTED,
        ),
    )
    .await;
    let _control = fake_dialer(
        ab,
        hello_from_1(
            (wire::PROTOCOL_MIN, wire::PROTOCOL_MAX),
            features::SUPPORTED | connect::HELLO_CONTROL_STREAM,
        ),
    )
    .await;
    let mut b = timeout(UP, b).await.unwrap().unwrap().unwrap();
    drop(data);
    let t0 = Instant::now();
    let e = timeout(UP, b.recv()).await.unwrap().unwrap_err();
    assert!(matches!(e, LinkError::PeerClosed), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

/// `a` (node 1, the higher id: it dials and authenticates) against `b` (node 0): a's own
/// dial fails fatally; b only accepted, and an unauthenticated connection decides nothing
/// there, so b is still establishing afterwards.
async fn auth_fails_for_the_dialer_only(ca: LinkConfig, cb: LinkConfig) -> LinkError {
    let (la, aa) = bind().await;
    let (lb, ab) = bind().await;
    let b = tokio::spawn(async move { Link::establish(&cb, &lb, aa).await });
    let t0 = Instant::now();
    let e = timeout(UP, Link::establish(&ca, &la, ab))
        .await
        .expect("the dialer gave up in time")
        .unwrap_err();
    // It did not retry every 100 ms until the 5 s timeout.
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(e.is_fatal(), "{e}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !b.is_finished(),
        "the acceptor's state changed: {:?}",
        b.await
    );
    b.abort();
    e
}

#[tokio::test]
async fn a_wrong_secret_is_fatal_to_the_dialer_and_changes_nothing_for_the_acceptor() {
    let e = auth_fails_for_the_dialer_only(
        with_auth(cfg(1, 0), HmacAlg::Sha256, "secret-one"),
        with_auth(cfg(0, 1), HmacAlg::Sha256, "secret-two"),
    )
    .await;
    assert!(matches!(e, LinkError::AuthFailed(_)), "{e}");
    assert!(
        e.to_string().starts_with("Authentication of peer failed"),
        "{e}"
    );
}

#[tokio::test]
async fn different_algorithms_fail_auth() {
    let e = auth_fails_for_the_dialer_only(
        with_auth(cfg(1, 0), HmacAlg::Sha1, "s"),
        with_auth(cfg(0, 1), HmacAlg::Sha512, "s"),
    )
    .await;
    assert!(matches!(e, LinkError::AuthFailed(_)), "{e}");
}

#[tokio::test]
async fn a_wrong_resource_or_node_id_connects_nobody_and_stops_nobody() {
    // The acceptor answers no Hello from a node it does not expect: the dialer sees a closed
    // connection, both keep trying (the acceptor logs the mismatch every time).
    let mut other = cfg(0, 1);
    other.resource = "r1".into();
    for (ca, cb) in [(cfg(1, 0), other), (cfg(1, 0), cfg(2, 1))] {
        let (la, aa) = bind().await;
        let (lb, ab) = bind().await;
        let a = tokio::spawn(async move { Link::establish(&ca, &la, ab).await });
        let b = tokio::spawn(async move { Link::establish(&cb, &lb, aa).await });
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!a.is_finished() && !b.is_finished());
        a.abort();
        b.abort();
    }
}

/// The real node 1 (`ca`, listening on `la`) establishes with node 0 at `ab`, which is still
/// establishing in `b` after whatever came before: both get the link, and it carries data.
async fn real_peer_links(
    ca: LinkConfig,
    la: &TcpListener,
    ab: SocketAddr,
    b: tokio::task::JoinHandle<Result<Link, LinkError>>,
) {
    let a = Link::establish(&ca, la, ab);
    let (a, b) = tokio::join!(timeout(UP, a), timeout(UP, b));
    let (mut a, mut b) = (a.unwrap().unwrap(), b.unwrap().unwrap().unwrap());
    exchange(&mut a, &mut b).await;
}

/// A dialer from `from` (bound there) that sends `hello`; returns what it read back: the
/// acceptor's first frame, or None when the connection was closed without one.
async fn stranger(to: SocketAddr, from: &str, hello: Packet) -> Option<Packet> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let (r, w) = socket.connect(to).await.unwrap().into_split();
    let (mut r, mut w) = (FrameReader::new(r), FrameWriter::new(w));
    // The acceptor may have closed already: a failed write is part of the answer.
    let _ = w.write_frame(0, &hello).await;
    match timeout(UP, r.read_frame())
        .await
        .expect("answered or closed")
    {
        Ok(Some(f)) => Some(f.packet),
        _ => None,
    }
}

#[tokio::test]
async fn a_connection_from_another_address_is_closed_unanswered() {
    let (la, aa) = bind().await;
    let (lb, ab) = bind().await;
    let b = tokio::spawn(async move { Link::establish(&cfg(0, 1), &lb, aa).await });
    // The impostor claims to be node 1 with everything right, from 127.0.0.2.
    let hello = hello_from_1(
        (wire::PROTOCOL_MIN, wire::PROTOCOL_MAX),
        features::SUPPORTED,
    );
    assert_eq!(stranger(ab, "127.0.0.2", hello).await, None);
    assert!(!b.is_finished());
    // The real node 1, from 127.0.0.1, connects.
    real_peer_links(cfg(1, 0), &la, ab, b).await;
}

#[tokio::test]
async fn a_forged_hello_is_not_answered_and_does_not_stop_the_real_peer() {
    let (la, aa) = bind().await;
    let (lb, ab) = bind().await;
    let b = tokio::spawn(async move { Link::establish(&cfg(0, 1), &lb, aa).await });
    for forged in [
        Packet::Hello {
            protocol_min: wire::PROTOCOL_MIN,
            protocol_max: wire::PROTOCOL_MAX,
            features: features::SUPPORTED,
            sender: NodeId(3),
            receiver: NodeId(0),
            resource: "r0".into(),
        },
        Packet::Hello {
            protocol_min: wire::PROTOCOL_MIN,
            protocol_max: wire::PROTOCOL_MAX,
            features: features::SUPPORTED,
            sender: NodeId(1),
            receiver: NodeId(0),
            resource: "guess".into(),
        },
        Packet::Ping,
    ] {
        assert_eq!(stranger(ab, "127.0.0.1", forged).await, None);
    }
    // One that knows the names but not the protocol gets our Hello (it says nothing new),
    // and is dropped; so is one that reflects our challenge.
    let wrong_version = hello_from_1((7, 9), features::SUPPORTED);
    assert!(matches!(
        stranger(ab, "127.0.0.1", wrong_version).await,
        Some(Packet::Hello { .. })
    ));
    assert!(
        !b.is_finished(),
        "a forged Hello changed the acceptor's state"
    );
    real_peer_links(cfg(1, 0), &la, ab, b).await;
}

#[tokio::test]
async fn a_peer_without_a_common_protocol_is_fatal_to_our_dial() {
    // A fake node 1 at the address node 0 dials: it answers with a Hello of versions 7-9.
    let (fake, fake_addr) = bind().await;
    let (lb, _) = bind().await;
    let b = tokio::spawn(async move { Link::establish(&cfg(0, 1), &lb, fake_addr).await });
    let (stream, _) = fake.accept().await.unwrap();
    let (r, w) = stream.into_split();
    let (mut r, mut w) = (FrameReader::new(r), FrameWriter::new(w));
    assert!(matches!(
        r.read_frame().await.unwrap().unwrap().packet,
        Packet::Hello { .. }
    ));
    w.write_frame(0, &hello_from_1((7, 9), features::SUPPORTED))
        .await
        .unwrap();
    let e = timeout(UP, b).await.unwrap().unwrap().unwrap_err();
    assert!(matches!(e, LinkError::Mismatch(_)), "{e}");
    assert!(e.to_string().contains("incompatible udrbd dialects"), "{e}");
}

#[tokio::test]
async fn a_reflected_challenge_is_refused_and_changes_nothing() {
    let (la, aa) = bind().await;
    let (lb, ab) = bind().await;
    let cb = with_auth(cfg(0, 1), HmacAlg::Sha256, "s");
    let b = tokio::spawn(async move { Link::establish(&cb, &lb, aa).await });
    let (mut r, mut w) = fake_dialer(
        ab,
        hello_from_1(
            (wire::PROTOCOL_MIN, wire::PROTOCOL_MAX),
            features::SUPPORTED | connect::HELLO_AUTH,
        ),
    )
    .await;
    // Echo B's own challenge back as ours: B closes the connection.
    let Packet::AuthChallenge { challenge } = r.read_frame().await.unwrap().unwrap().packet else {
        panic!("B did not send a challenge");
    };
    w.write_frame(0, &Packet::AuthChallenge { challenge })
        .await
        .unwrap();
    let rest = timeout(UP, r.read_frame()).await.unwrap();
    assert!(!matches!(rest, Ok(Some(_))), "{rest:?}");
    assert!(!b.is_finished());
    let ca = with_auth(cfg(1, 0), HmacAlg::Sha256, "s");
    real_peer_links(ca, &la, ab, b).await;
}

#[test]
fn silent_connections_do_not_keep_the_real_peer_out() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (la, aa) = bind().await;
        let (lb, ab) = bind().await;
        // b waits up to 5 s for a handshake: long enough for silent connections to matter.
        let mut cb = cfg(0, 1);
        cb.handshake_timeout = Duration::from_secs(5);
        let b = tokio::spawn(async move { Link::establish(&cb, &lb, aa).await });
        let mut silent = Vec::new();
        for _ in 0..20 {
            silent.push(TcpStream::connect(ab).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = Instant::now();
        real_peer_links(cfg(1, 0), &la, ab, b).await;
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the real peer waited {:?} behind silent connections",
            t0.elapsed()
        );
        drop(silent);
    });
}

#[path = "common/certs.rs"]
mod certs;

/// `c` with TLS: our identity `files`, the peer's certificate must name `peer_name`.
fn with_tls(mut c: LinkConfig, files: &udrbd::tls::X509Files, peer_name: &str) -> LinkConfig {
    c.tls = Some(std::sync::Arc::new(
        udrbd::tls::PeerTls::new(files, peer_name).expect("TLS identity"),
    ));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_link_carries_data_both_ways_and_closes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let pki = certs::Pki::new(dir.path(), "ca");
    let (alice, bob) = (pki.issue("alice"), pki.issue("bob"));
    let (mut a, mut b) = pair(
        with_tls(cfg(0, 1), &alice, "bob"),
        with_tls(cfg(1, 0), &bob, "alice"),
    )
    .await;
    assert_same_connection(&a, &b);
    exchange(&mut a, &mut b).await;
    // Bulk through the relay, in order, with acks coming back on the control stream.
    for i in 0..2000 {
        a.send(0, &data(i)).await.unwrap();
        if i % 7 == 0 {
            b.send(0, &ack(i)).await.unwrap();
        }
    }
    for i in 0..2000 {
        assert_eq!(recv(&mut b).await.packet, data(i));
    }
    for i in (0..2000).step_by(7) {
        assert_eq!(recv(&mut a).await.packet, ack(i));
    }
    a.close().await;
    assert_eq!(recv(&mut b).await.packet, Packet::Disconnect);
    let e = timeout(UP, b.recv()).await.unwrap().unwrap_err();
    assert!(matches!(e, LinkError::PeerClosed), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_a_wrong_certificate_or_no_tls_and_the_real_peer_connects_after() {
    let dir = tempfile::tempdir().unwrap();
    let pki = certs::Pki::new(dir.path(), "ca");
    let other = certs::Pki::new(dir.path(), "other");
    let (alice, bob) = (pki.issue("alice"), pki.issue("bob"));
    let (la, aa) = bind().await;
    let la = std::sync::Arc::new(la);
    let (lb, ab) = bind().await;
    let real_b = with_tls(cfg(1, 0), &bob, "alice");
    let ca = with_tls(cfg(0, 1), &alice, "bob");
    let a = tokio::spawn(async move { Link::establish(&ca, &lb, aa).await });
    // Node 1 impostors, from the peer's own address: a certificate from another CA, one from
    // the right CA for another host name, and no TLS at all.
    for impostor in [
        with_tls(cfg(1, 0), &other.issue("bob"), "alice"),
        with_tls(cfg(1, 0), &pki.issue("mallory"), "alice"),
        cfg(1, 0),
    ] {
        let la = la.clone();
        let i = tokio::spawn(async move { Link::establish(&impostor, &la, ab).await });
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!i.is_finished(), "the impostor got a link: {:?}", i.await);
        assert!(!a.is_finished(), "node 0 changed state: {:?}", a.await);
        i.abort();
        let _ = i.await;
    }
    // Node 0 with a certificate that does not name itself is refused by the real node 1 too.
    let la2 = la.clone();
    let wrong_name = with_tls(cfg(1, 0), &bob, "alice-not");
    let i = tokio::spawn(async move { Link::establish(&wrong_name, &la2, ab).await });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!i.is_finished() && !a.is_finished());
    i.abort();
    let _ = i.await;
    let la = std::sync::Arc::try_unwrap(la).expect("one listener handle left");
    real_peer_links(real_b, &la, ab, a).await;
}

/// `SO_RCVBUF`/`SO_SNDBUF` of a socket (Linux reports twice what was set: it counts its own
/// bookkeeping).
fn sockbuf(fd: std::os::fd::RawFd, opt: libc::c_int) -> u32 {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one c_int into `v`, whose size `len` gives.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &mut len) };
    assert_eq!(rc, 0, "getsockopt");
    v as u32
}

/// `sndbuf-size` / `rcvbuf-size` size the sockets of the links: accepted ones through the
/// listener, dialed ones before the dial.
#[tokio::test]
async fn sndbuf_and_rcvbuf_size_the_sockets() {
    use std::os::fd::AsRawFd;
    let mut c = cfg(1, 0);
    c.sndbuf_size = 96 << 10;
    c.rcvbuf_size = 48 << 10;
    let listener = c.listen("127.0.0.1:0".parse().unwrap()).expect("listen");
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr).await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    assert_eq!(
        sockbuf(accepted.as_raw_fd(), libc::SO_RCVBUF),
        2 * (48 << 10)
    );
    assert_eq!(
        sockbuf(accepted.as_raw_fd(), libc::SO_SNDBUF),
        2 * (96 << 10)
    );
    // Without the options the kernel's defaults stay (not what was asked above).
    assert_ne!(sockbuf(client.as_raw_fd(), libc::SO_RCVBUF), 2 * (48 << 10));
}
