//! Establishing a link: listen, dial every `connect-int`, Hello, authenticate, pair the two
//! streams, resolve simultaneous connects.
//!
//! # Who may connect
//!
//! A connection is accepted only from the IP address configured for the peer (DRBD does the
//! same), and our own dials leave from our configured address, so the peer sees us come from
//! it. Anyone else is logged and closed before a byte is read or written.
//!
//! # One stream's handshake
//!
//! The dialer sends its `Hello` first; the acceptor reads and checks it before it says
//! anything, so a stranger learns nothing (not even the resource name) from our port. The
//! Hello carries resource, sender and receiver node ids, protocol range, feature bits.
//! Checked, in this order:
//!
//! 1. The first frame is a `Hello` (else: not a udrbd peer, a transient error; the connection
//!    is dropped and establishing goes on).
//! 2. Resource name, the peer's node id and the node id it expects us to have: a mismatch is a
//!    fatal [`LinkError::Mismatch`] (DRBD: "Peer presented a node_id of %d instead of %d").
//! 3. A common protocol version (`Mismatch` too); the highest common one is agreed.
//! 4. Authentication configured on both sides or on neither ([`HELLO_AUTH`]): one-sided is a
//!    fatal [`LinkError::AuthFailed`] on both nodes, with a message saying which side lacks it.
//! 5. The tie-break (below); the losing connection is closed here, before authentication.
//! 6. CRAM-HMAC ([`super::auth`]) if configured.
//!
//! The whole handshake of a stream, the dial included, runs under
//! [`LinkConfig::handshake_timeout`], so a silent client cannot hold it.
//!
//! # Tie-break
//!
//! Both nodes dial and both accept, so two connections may come up at once. Both sides keep
//! **only connections dialed by the node with the higher node id**: after the Hello exchange
//! each side knows whether it dialed and both node ids, so both reach the same verdict without
//! another message. The lower node's dials are wake-up calls: the higher node drops them after
//! the Hello and dials back at once rather than at its next `connect-int` (one dial at a time,
//! so a flood of wake-ups cannot make it dial more than once per handshake).
//!
//! # Pairing
//!
//! The higher node dials the data stream, completes its handshake, then dials the control
//! stream, whose `Hello` carries [`HELLO_CONTROL_STREAM`]. The lower node keeps the newest
//! authenticated stream of each kind and starts the link once it has both; a half pair older
//! than `handshake_timeout` is dropped.
//!
//! # What ends [`establish`]
//!
//! A link, or a fatal error (from a dial or from any accepted connection). Transient errors
//! (refused, reset, timeouts, garbage from a client that is not a udrbd peer) are logged and
//! establishing continues. Dropping the future stops it and closes every socket it holds.
//!
//! # Known limits
//!
//! - Only what the configured peer address says on a connection *we dialed* is fatal (a wrong
//!   secret, a mismatching resource or node id: StandAlone, as in DRBD). The same failures on
//!   a connection we accepted are logged and the connection dropped: it is not authenticated
//!   yet, so a forged Hello or a failed authentication from someone at the peer's address
//!   cannot stop the real peer from connecting. Whoever controls the peer's address itself can
//!   still be refused only by `cram-hmac-alg`.
//! - The lower node pairs the newest data stream with the newest control stream; if the
//!   higher node's dial failed between its two streams, a stale data stream could be paired
//!   with the next control stream, and that link then fails at once on the dead stream (and is
//!   established again).

use super::framed::{FrameReader, FrameWriter};
use super::link::{Link, LinkInfo};
use super::shared_listener::Acceptor;
use super::stream::PeerStream;
use super::{LinkConfig, LinkError, auth};
use crate::repl::wire::{self, Packet, features};
use crate::tls::MaybeTls;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

/// Hello feature bit set by the dialer on the control stream of a pair. A transport bit, not
/// a protocol feature: [`LinkInfo::peer_features`] has it masked off.
pub const HELLO_CONTROL_STREAM: u64 = 1 << 63;
/// Hello feature bit: the sender authenticates with CRAM-HMAC on this stream.
pub const HELLO_AUTH: u64 = 1 << 62;
/// The bits of the Hello features word that belong to the link layer.
pub const TRANSPORT_BITS: u64 = HELLO_CONTROL_STREAM | HELLO_AUTH;
/// Accepted connections still in their handshake at once; one more evicts the oldest (a
/// silent connection must not keep the real peer out until its handshake deadline).
pub const MAX_PENDING_HANDSHAKES: usize = 16;

/// What the peer said in its Hello (transport bits split off).
#[derive(Clone, Copy, Debug)]
struct PeerHello {
    protocol: u32,
    features: u64,
    control: bool,
}

/// How one stream's handshake ended, when it did not fail.
enum Shake {
    /// An authenticated stream to keep.
    Keep {
        stream: PeerStream,
        hello: PeerHello,
    },
    /// Dialed by the lower node id: closed after the Hello (a wake-up call).
    WakeUp,
}

/// How a dial ended, when it did not fail.
enum Dialed {
    /// Both streams, authenticated.
    Pair {
        data: PeerStream,
        control: PeerStream,
        hello: PeerHello,
    },
    /// We are the lower node: the peer has been woken up and will dial us.
    WokeUp,
}

/// Establishes the link to the peer at `peer`, accepting on `listener` (bound by the caller
/// to our `address`; it stays usable for the next call after a link is lost). Dials every
/// `connect-int` until a link is up or a fatal error occurs (see the module doc).
pub async fn establish(
    cfg: &LinkConfig,
    listener: &TcpListener,
    peer: SocketAddr,
) -> Result<Link, LinkError> {
    establish_paths(cfg, &[(listener as &dyn Acceptor, peer)]).await
}

/// [`establish`] over several paths (DRBD 9's `path` sections), each where this node accepts
/// on its address of the path (a listener, or its share of one, see [`super::shared_listener`])
/// and the peer's address. Connections are accepted on every
/// path at once (from the peer's address of that path); dials go to one path at a time and
/// move on to the next path after one fails, so every path is tried in turn. Whichever path
/// completes the handshake first carries the link.
pub async fn establish_paths(
    cfg: &LinkConfig,
    paths: &[(&dyn Acceptor, SocketAddr)],
) -> Result<Link, LinkError> {
    cfg.check()?;
    let Some(&(_, first_peer)) = paths.first() else {
        return Err(LinkError::Config(
            "a connection needs at least one path".into(),
        ));
    };
    let cfg = Arc::new(cfg.clone());
    // Our dials leave from the address we listen on (when it is a specific one), so that the
    // peer, which accepts only from our configured address, recognises them.
    let local_ip = |l: &dyn Acceptor| l.local_ip().filter(|ip| !ip.is_unspecified());
    let listeners: Vec<&dyn Acceptor> = paths.iter().map(|(l, _)| *l).collect();
    // The path the next dial takes.
    let mut dial_path = 0usize;
    let mut peer = first_peer;
    let mut handshakes: JoinSet<(SocketAddr, Result<Shake, LinkError>)> = JoinSet::new();
    // Their abort handles, oldest first.
    let mut pending: std::collections::VecDeque<tokio::task::AbortHandle> =
        std::collections::VecDeque::new();
    let mut dials: JoinSet<Result<Dialed, LinkError>> = JoinSet::new();
    let mut next_dial = Instant::now();
    let mut data: Option<(PeerStream, PeerHello, Instant)> = None;
    let mut control: Option<(PeerStream, Instant)> = None;
    loop {
        if data.is_some()
            && control.is_some()
            && let (Some((d, hello, _)), Some((c, _))) = (data.take(), control.take())
        {
            match start(&cfg, d, c, hello, false) {
                Ok(link) => return Ok(link),
                Err(e) => tracing::warn!(peer = %cfg.peer, "link lost while pairing: {e}"),
            }
            continue;
        }
        let half_pair_deadline = match (&data, &control) {
            (Some((_, _, t)), _) | (None, Some((_, t))) => Some(*t + cfg.handshake_timeout),
            (None, None) => None,
        };
        tokio::select! {
            (accepted, on) = accept_any(&listeners) => match accepted {
                Ok((stream, from)) => {
                    // From the peer's address of a path that listens here.
                    let expected = || {
                        paths
                            .iter()
                            .filter(|(l, _)| std::ptr::addr_eq(*l, listeners[on]))
                            .map(|(_, p)| p.ip())
                    };
                    if !expected().any(|ip| same_host(from.ip(), ip)) {
                        let ips: Vec<String> = expected().map(|ip| ip.to_string()).collect();
                        tracing::warn!(
                            %from,
                            "connection refused: not from the address configured for peer {} ({})",
                            cfg.peer,
                            ips.join(", ")
                        );
                    } else {
                        pending.retain(|h| !h.is_finished());
                        if pending.len() >= MAX_PENDING_HANDSHAKES
                            && let Some(oldest) = pending.pop_front()
                        {
                            tracing::warn!(
                                %from,
                                "too many connections in their handshake; closing the oldest"
                            );
                            oldest.abort();
                        }
                        tracing::debug!(%from, "accepted a connection");
                        let cfg = cfg.clone();
                        pending.push_back(
                            handshakes.spawn(async move { (from, accept_one(stream, &cfg).await) }),
                        );
                    }
                }
                Err(e) => {
                    // EMFILE and friends: do not spin on a listener that keeps failing.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(cfg.connect_int.min(std::time::Duration::from_millis(100)))
                        .await;
                }
            },
            Some(done) = handshakes.join_next(), if !handshakes.is_empty() => match done {
                Ok((from, Ok(Shake::WakeUp))) => {
                    if dials.is_empty() {
                        // Dial back over the path the wake-up came by: it works.
                        if let Some(i) =
                            paths.iter().position(|(_, p)| same_host(p.ip(), from.ip()))
                        {
                            dial_path = i;
                            peer = paths[i].1;
                        }
                        tracing::debug!(peer = %cfg.peer, "woken up by the peer: dialing now");
                        next_dial = Instant::now();
                    }
                }
                Ok((_, Ok(Shake::Keep { stream, hello }))) => {
                    let now = Instant::now();
                    if hello.control {
                        control = Some((stream, now));
                    } else {
                        data = Some((stream, hello, now));
                    }
                }
                // Not authenticated: whatever it said changes nothing here (module doc).
                Ok((from, Err(e))) if e.is_fatal() => {
                    tracing::warn!(peer = %cfg.peer, %from, "refused a connection: {e}");
                }
                Ok((from, Err(e))) => {
                    tracing::info!(peer = %cfg.peer, %from, "rejected a connection: {e}");
                }
                Err(e) if e.is_cancelled() => {} // evicted (MAX_PENDING_HANDSHAKES)
                Err(e) => tracing::warn!("handshake task failed: {e}"),
            },
            Some(done) = dials.join_next(), if !dials.is_empty() => {
                next_dial = Instant::now() + cfg.connect_int;
                let woke_up = matches!(done, Ok(Ok(Dialed::WokeUp)));
                match done {
                    Ok(Ok(Dialed::Pair { data, control, hello })) => {
                        match start(&cfg, data, control, hello, true) {
                            Ok(link) => return Ok(link),
                            Err(e) => tracing::warn!(peer = %cfg.peer, "link lost at start: {e}"),
                        }
                    }
                    Ok(Ok(Dialed::WokeUp)) => {}
                    Ok(Err(e)) if e.is_fatal() => return Err(e),
                    Ok(Err(e @ LinkError::Tls(_))) => tracing::warn!(%peer, "{e}"),
                    Ok(Err(e)) => tracing::debug!(%peer, "dial failed: {e}"),
                    Err(e) => tracing::warn!("dial task failed: {e}"),
                }
                if !woke_up {
                    // This path gave no link: the next dial tries the next one.
                    dial_path = (dial_path + 1) % paths.len();
                    peer = paths[dial_path].1;
                }
            }
            () = sleep_until(next_dial), if dials.is_empty() => {
                let cfg = cfg.clone();
                let (from, to) = (local_ip(paths[dial_path].0), paths[dial_path].1);
                // The branch stays off while the dial runs; its end sets the next time.
                dials.spawn(async move { dial(&cfg, to, from).await });
            }
            () = sleep_until(half_pair_deadline.unwrap_or_else(Instant::now)),
                if half_pair_deadline.is_some() =>
            {
                tracing::info!(peer = %cfg.peer, "the second stream did not come; dropping the first");
                data = None;
                control = None;
            }
        }
    }
}

/// Accepts on whichever of `listeners` has a connection first; with the index of that one.
async fn accept_any(
    listeners: &[&dyn Acceptor],
) -> (std::io::Result<(TcpStream, SocketAddr)>, usize) {
    std::future::poll_fn(|cx| {
        for (i, l) in listeners.iter().enumerate() {
            if let std::task::Poll::Ready(r) = l.poll_accept(cx) {
                return std::task::Poll::Ready((r, i));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

fn start(
    cfg: &LinkConfig,
    data: PeerStream,
    control: PeerStream,
    hello: PeerHello,
    dialed: bool,
) -> Result<Link, LinkError> {
    let info = LinkInfo {
        protocol: hello.protocol,
        peer_features: hello.features,
        dialed,
        data_local: data.tcp()?.local_addr()?,
        data_peer: data.tcp()?.peer_addr()?,
        control_local: control.tcp()?.local_addr()?,
        control_peer: control.tcp()?.peer_addr()?,
    };
    tracing::info!(
        peer = %cfg.peer,
        "Handshake to peer {} successful: Agreed network protocol version {}",
        cfg.peer,
        info.protocol
    );
    Link::start(cfg, data, control, info)
}

/// The same host: equal addresses, an IPv4 address and its IPv6-mapped form included.
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// One dial: the data stream, then (if we win the tie-break) the control stream.
async fn dial(
    cfg: &LinkConfig,
    peer: SocketAddr,
    local_ip: Option<IpAddr>,
) -> Result<Dialed, LinkError> {
    let stream = connect_one(cfg, peer, local_ip).await?;
    let (data, hello) = match handshake(stream, cfg, true, false).await? {
        Shake::WakeUp => return Ok(Dialed::WokeUp),
        Shake::Keep { stream, hello } => (stream, hello),
    };
    let stream = connect_one(cfg, peer, local_ip).await?;
    match handshake(stream, cfg, true, true).await? {
        Shake::Keep { stream, .. } => Ok(Dialed::Pair {
            data,
            control: stream,
            hello,
        }),
        // The verdict depends only on who dialed, which has not changed.
        Shake::WakeUp => Err(LinkError::Protocol(
            "tie-break changed between two streams".into(),
        )),
    }
}

/// Connects to `peer`, from `local_ip` when given (an ephemeral port on it).
async fn connect_one(
    cfg: &LinkConfig,
    peer: SocketAddr,
    local_ip: Option<IpAddr>,
) -> Result<TcpStream, LinkError> {
    let connect = async {
        let socket = if peer.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        cfg.size_buffers(&socket)?;
        if let Some(ip) = local_ip.filter(|ip| ip.is_ipv4() == peer.is_ipv4()) {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        socket.connect(peer).await
    };
    let stream = timeout(cfg.handshake_timeout, connect)
        .await
        .map_err(|_| LinkError::Timeout("connect"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn accept_one(stream: TcpStream, cfg: &LinkConfig) -> Result<Shake, LinkError> {
    stream.set_nodelay(true)?;
    handshake(stream, cfg, false, false).await
}

/// One stream's handshake (module doc), TLS first when configured. `control` is what the
/// dialer declares; an acceptor learns it from the peer's Hello.
async fn handshake(
    stream: TcpStream,
    cfg: &LinkConfig,
    dialed: bool,
    control: bool,
) -> Result<Shake, LinkError> {
    let shake = async {
        let mut stream = secure(stream, cfg, dialed).await?;
        let verdict = handshake_on(&mut stream, cfg, dialed, control).await?;
        Ok(match verdict {
            Some(hello) => Shake::Keep { stream, hello },
            None => Shake::WakeUp,
        })
    };
    timeout(cfg.handshake_timeout, shake)
        .await
        .map_err(|_| LinkError::Timeout("handshake"))?
}

/// Runs the TLS handshake when `tls yes` (the dialer is the TLS client). Either way, a peer
/// that disagrees about TLS is recognised by its first bytes and named in the error, so that
/// the log says which side to fix.
async fn secure(
    stream: TcpStream,
    cfg: &LinkConfig,
    dialed: bool,
) -> Result<PeerStream, LinkError> {
    let Some(tls) = &cfg.tls else {
        if !dialed && peek_is_tls(&stream).await? {
            return Err(LinkError::Tls(
                "the peer speaks TLS; this node has no `tls yes` in net { } (set it on both nodes \
                 or on neither)"
                    .into(),
            ));
        }
        return Ok(MaybeTls::Plain(stream));
    };
    let tls_err = |e: crate::tls::TlsError| LinkError::Tls(e.to_string());
    if dialed {
        return Ok(MaybeTls::Tls(Box::new(
            tls.connect(stream).await.map_err(tls_err)?,
        )));
    }
    if !peek_is_tls(&stream).await? {
        return Err(LinkError::Tls(
            "the peer does not speak TLS; this node has `tls yes` in net { } (set it on both \
             nodes or on neither)"
                .into(),
        ));
    }
    Ok(MaybeTls::Tls(Box::new(
        tls.accept(stream).await.map_err(tls_err)?,
    )))
}

/// Waits for the first two bytes the dialer sends and tells whether they start TLS.
async fn peek_is_tls(stream: &TcpStream) -> Result<bool, LinkError> {
    let mut first = [0u8; 2];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Err(LinkError::PeerClosed);
        }
        if n >= first.len() || first[0] != 0x16 {
            return Ok(crate::tls::looks_like_tls(&first[..n]));
        }
        // One byte so far: wait for the second.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// `None`: the connection loses the tie-break.
async fn handshake_on<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    cfg: &LinkConfig,
    dialed: bool,
    control: bool,
) -> Result<Option<PeerHello>, LinkError> {
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = FrameReader::new(rd);
    let mut writer = FrameWriter::new(wr);
    let mut our_features = features::SUPPORTED;
    if cfg.auth.is_some() {
        our_features |= HELLO_AUTH;
    }
    if dialed && control {
        our_features |= HELLO_CONTROL_STREAM;
    }
    let ours = Packet::Hello {
        protocol_min: wire::PROTOCOL_MIN,
        protocol_max: wire::PROTOCOL_MAX,
        features: our_features,
        sender: cfg.me,
        receiver: cfg.peer,
        resource: cfg.resource.clone(),
    };
    // The dialer speaks first; the acceptor answers only a Hello from the peer it expects
    // (the right resource and node ids: nothing a stranger does not know already). It does
    // answer one that differs in protocol range or authentication, so that both sides say
    // clearly what is misconfigured.
    if dialed {
        writer.write_frame(0, &ours).await?;
    }
    let first = reader.read_frame().await?.ok_or(LinkError::PeerClosed)?;
    if !dialed {
        check_identity(cfg, &first.packet)?;
        writer.write_frame(0, &ours).await?;
    }
    let mut hello = check_hello(cfg, first.packet)?;
    if dialed {
        // Only the dialer's bit means anything.
        hello.control = control;
    }
    let we_win = cfg.me > cfg.peer;
    if dialed != we_win {
        return Ok(None);
    }
    if let Some(a) = &cfg.auth {
        auth::authenticate(&mut reader, &mut writer, a, cfg.me, cfg.peer).await?;
    }
    Ok(Some(hello))
}

/// The first frame is a Hello from the node we expect, for our resource.
fn check_identity(cfg: &LinkConfig, packet: &Packet) -> Result<(), LinkError> {
    let Packet::Hello {
        sender,
        receiver,
        resource,
        ..
    } = packet
    else {
        return Err(LinkError::Protocol(format!(
            "expected a Hello first, got {:?}",
            packet.packet_type()
        )));
    };
    if *resource != cfg.resource {
        return Err(LinkError::Mismatch(format!(
            "the peer connects for resource '{resource}', we are '{}'",
            cfg.resource
        )));
    }
    if *sender != cfg.peer {
        return Err(LinkError::Mismatch(format!(
            "Peer presented a node_id of {sender} instead of {}",
            cfg.peer
        )));
    }
    if *receiver != cfg.me {
        return Err(LinkError::Mismatch(format!(
            "the peer expects us to be node {receiver}, we are node {}",
            cfg.me
        )));
    }
    Ok(())
}

fn check_hello(cfg: &LinkConfig, packet: Packet) -> Result<PeerHello, LinkError> {
    check_identity(cfg, &packet)?;
    let Packet::Hello {
        protocol_min,
        protocol_max,
        features,
        ..
    } = packet
    else {
        return Err(LinkError::Protocol("expected a Hello first".into()));
    };
    if protocol_max < wire::PROTOCOL_MIN || protocol_min > wire::PROTOCOL_MAX {
        return Err(LinkError::Mismatch(format!(
            "incompatible udrbd dialects: I support {}-{}, peer supports {protocol_min}-{protocol_max}",
            wire::PROTOCOL_MIN,
            wire::PROTOCOL_MAX
        )));
    }
    let peer_auth = features & HELLO_AUTH != 0;
    match (cfg.auth.is_some(), peer_auth) {
        (true, false) => {
            return Err(LinkError::AuthFailed(
                "we require cram-hmac-alg authentication, the peer has no shared-secret configured"
                    .into(),
            ));
        }
        (false, true) => {
            return Err(LinkError::AuthFailed(
                "the peer requires cram-hmac-alg authentication, we have no shared-secret configured"
                    .into(),
            ));
        }
        _ => {}
    }
    Ok(PeerHello {
        protocol: protocol_max.min(wire::PROTOCOL_MAX),
        features: features & !TRANSPORT_BITS,
        control: features & HELLO_CONTROL_STREAM != 0,
    })
}

/// The fuzzing entry for the peer handshake ([`crate::fuzzing::peer_handshake`]): runs the
/// acceptor's side of one stream's handshake with `data[1..]` as everything the dialer sends
/// (bit 0 of `data[0]` turns CRAM-HMAC on). It must fail cleanly on anything, and with
/// CRAM-HMAC on it must never accept: the dialer cannot know the random challenge's answer.
#[doc(hidden)]
pub fn fuzz_accept(data: &[u8]) {
    use tokio::io::AsyncWriteExt;
    thread_local! {
        static RT: Option<tokio::runtime::Runtime> =
            tokio::runtime::Builder::new_current_thread().build().ok();
    }
    let Some((&mode, sent)) = data.split_first() else {
        return;
    };
    let mut cfg = LinkConfig::new("r0", crate::types::NodeId(0), crate::types::NodeId(1));
    let with_auth = mode & 1 == 1;
    if with_auth {
        cfg.auth = Some(auth::AuthConfig::new(
            auth::HmacAlg::Sha256,
            b"secret".to_vec(),
        ));
    }
    RT.with(|rt| {
        let Some(rt) = rt else { return };
        rt.block_on(async {
            let (mut ours, mut theirs) = tokio::io::duplex(sent.len() + (1 << 16));
            if theirs.write_all(sent).await.is_err() || theirs.shutdown().await.is_err() {
                return;
            }
            let verdict = handshake_on(&mut ours, &cfg, false, false).await;
            assert!(
                !(with_auth && matches!(verdict, Ok(Some(_)))),
                "a dialer that cannot know the secret passed CRAM-HMAC"
            );
        });
    });
}
