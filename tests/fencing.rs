//! Fencing on real daemons in two network namespaces (`../shared/reference/drbd.md` §1.10
//! "Fencing semantics", §2.2): node-1 is Primary under `fencing resource-and-stonith` with an
//! NBD writer running when the cable is pulled. Its fence-peer handler is a shell line that
//! sleeps and exits with codes read from files, so each test picks DRBD's answer: I/O is frozen
//! (`suspended:fencing`) from the loss until the handler answers; 4 resumes it with the peer
//! Outdated; a broken handler (exit 1) keeps it frozen until `drbdadm resume-io`; a hanging
//! one is killed at the handler deadline. And `drbdadm outdate`, persisted, refusing `primary`.
//!
//! Needs root for `ip netns` (see `common::netns`); without it the tests print a skip message
//! and pass, except under CI, where they fail.

mod common;

use common::netns::NetnsPair;
use common::pair::{Pair, RES, Setup, pair, pair_setup, status};
use common::tool;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// As in split_brain.rs: a cut is noticed within about 1.5 s (ko-count x timeout is 1 s).
const TIMERS: &str = "net { ping-int 1; ping-timeout 5; timeout 5; ko-count 2; connect-int 1; }";
const PORT: u16 = 7789;

/// Files the fence-peer handler reads: how long to sleep, and its exit code.
struct Handler {
    dir: tempfile::TempDir,
}

impl Handler {
    fn new(sleep_s: u32, code: i32) -> Handler {
        let dir = common::scratch();
        std::fs::write(dir.path().join("sleep"), sleep_s.to_string()).expect("sleep file");
        std::fs::write(dir.path().join("code"), code.to_string()).expect("code file");
        Handler { dir }
    }

    fn config(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "{TIMERS}\n    net {{ fencing resource-and-stonith; }}\n    handlers {{ fence-peer \
             \"echo $DRBD_PEER_NODE_ID >> {d}/calls; sleep $(cat {d}/sleep); exit $(cat \
             {d}/code)\"; }}"
        )
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default()
    }
}

/// Both up in their namespaces, node-1 Primary and in sync with node-2.
fn connected(net: &NetnsPair, extra: &str, env: &[(&str, &str)]) -> Pair {
    let mut p = pair_setup(&Setup {
        extra,
        addresses: Some([net.address(0, PORT), net.address(1, PORT)]),
        ..Setup::default()
    });
    net.host(&mut p.a, 0);
    net.host(&mut p.b, 1);
    p.a.daemon_env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    // Connected: nothing to fence, a plain promotion.
    p.a.adm(&["primary", RES]).ok();
    p.eventually(10, "UpToDate/UpToDate", || {
        status(&p.a).contains("    peer-disk:UpToDate")
    });
    p
}

/// An NBD writer at queue depth 32 on node-1; the instant of every acknowledged write.
struct Writer {
    child: Child,
    acks: Arc<Mutex<Vec<Instant>>>,
}

impl Writer {
    fn start(p: &Pair) -> Writer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/qd32_writer.py");
        let mut child = Command::new("/usr/bin/python3")
            .args([script, &p.a.nbd_uri(RES), "5", "8192", "0", "8192", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3-libnbd");
        let acks = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let a = acks.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.trim().parse::<u64>().is_ok() {
                    a.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Instant::now());
                }
            }
        });
        Writer { child, acks }
    }

    fn count(&self) -> usize {
        self.acks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The writer's exit: it prints "error" and exits 3 on any failed write.
    fn finish(mut self) -> (bool, String) {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait writer");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        (status.code() != Some(3) && !err.contains("error"), err)
    }
}

fn suspended(p: &Pair) -> bool {
    status(&p.a)
        .lines()
        .next()
        .is_some_and(|l| l.contains("suspended:fencing"))
}

fn verbose(p: &Pair) -> String {
    p.a.adm(&["status", "--verbose", RES]).ok().stdout
}

/// A one-block write through node-1's export, in a thread: its result once it is answered.
fn write_one(p: &Pair) -> std::sync::mpsc::Receiver<bool> {
    let uri = p.a.nbd_uri(RES);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let o = tool(
            "qemu-io",
            &["-f", "raw", "-c", "write -P 0x5a 65536 4096", &uri],
        );
        let _ = tx.send(o.status.success() && o.stderr.is_empty());
    });
    rx
}

/// The cut, noticed: node-1 froze I/O and called fence-peer for node-2 (node-id 1).
fn cut_and_freeze(net: &NetnsPair, p: &Pair, h: &Handler) -> Instant {
    net.cut();
    p.eventually(15, "suspended:fencing after the cut", || suspended(p));
    let t = Instant::now();
    p.eventually(5, "the fence-peer call", || h.calls() == "1\n");
    t
}

#[test]
fn stonith_freezes_io_until_fence_peer_answers_4_and_the_peer_is_outdated() {
    let Some(net) = NetnsPair::new() else { return };
    let h = Handler::new(2, 4);
    let p = connected(&net, &h.config(), &[]);
    let w = Writer::start(&p);
    p.eventually(10, "the writer to run", || w.count() > 200);
    let frozen_at = cut_and_freeze(&net, &p, &h);
    // Frozen: nothing is acknowledged while the handler sleeps.
    let n0 = w.count();
    std::thread::sleep(Duration::from_millis(700));
    assert!(suspended(&p), "{}", p.logs());
    assert_eq!(
        w.count(),
        n0,
        "writes acknowledged while frozen\n{}",
        p.logs()
    );
    // The answer: peer fenced, I/O resumes.
    p.eventually(10, "the freeze to end", || !suspended(&p));
    let resumed_after = frozen_at.elapsed();
    assert!(
        resumed_after >= Duration::from_millis(1200),
        "frozen only {resumed_after:?} with a 2 s handler\n{}",
        p.logs()
    );
    p.eventually(10, "writes to go on", || w.count() > n0 + 100);
    let log = p.a.log_text();
    assert!(
        log.contains("fence-peer helper returned 4 (peer was fenced)")
            && log.contains("susp-io( no -> fencing )")
            && log.contains("susp-io( fencing -> no )"),
        "{}",
        p.logs()
    );
    assert!(
        verbose(&p).contains("peer-disk:Outdated"),
        "{}\n{}",
        verbose(&p),
        p.logs()
    );
    let (ok, err) = w.finish();
    assert!(ok, "a write failed (they are queued, never failed): {err}");
}

#[test]
fn a_broken_fence_peer_keeps_io_frozen_until_resume_io() {
    let Some(net) = NetnsPair::new() else { return };
    let h = Handler::new(0, 1);
    let p = connected(&net, &h.config(), &[]);
    let w = Writer::start(&p);
    p.eventually(10, "the writer to run", || w.count() > 200);
    cut_and_freeze(&net, &p, &h);
    p.eventually(5, "the broken answer", || {
        p.a.log_text()
            .contains("fence-peer helper broken, returned 1")
    });
    let n0 = w.count();
    let one = write_one(&p);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(suspended(&p), "{}", p.logs());
    assert_eq!(w.count(), n0, "{}", p.logs());
    assert!(one.try_recv().is_err(), "a write was answered while frozen");
    assert!(
        !verbose(&p).contains("peer-disk:Outdated"),
        "{}",
        verbose(&p)
    );

    p.a.adm(&["resume-io", RES]).ok();
    assert!(!suspended(&p), "{}", p.logs());
    assert!(
        one.recv_timeout(Duration::from_secs(10)).unwrap_or(false),
        "the queued write completes, successfully\n{}",
        p.logs()
    );
    p.eventually(10, "writes to go on", || w.count() > n0 + 100);
    let (ok, err) = w.finish();
    assert!(ok, "a write failed: {err}");
}

#[test]
fn a_hanging_fence_peer_is_killed_at_the_handler_deadline() {
    let Some(net) = NetnsPair::new() else { return };
    let h = Handler::new(600, 4);
    let p = connected(&net, &h.config(), &[("UDRBD_HANDLER_TIMEOUT_MS", "1500")]);
    let frozen_at = cut_and_freeze(&net, &p, &h);
    p.eventually(10, "the deadline", || {
        p.a.log_text().contains("fence-peer helper broken")
    });
    assert!(frozen_at.elapsed() < Duration::from_secs(8));
    // Broken: still frozen, the peer not Outdated; resume-io is the way out.
    assert!(suspended(&p), "{}", p.logs());
    assert!(
        !verbose(&p).contains("peer-disk:Outdated"),
        "{}",
        verbose(&p)
    );
    p.a.adm(&["resume-io", RES]).ok();
    assert!(
        write_one(&p)
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or(false)
    );
}

/// The promotion refusal of `outdate`, and `--force`, need no namespaces.
#[test]
fn outdate_is_persisted_and_refuses_primary_until_forced() {
    let mut p = pair("net { connect-int 1; }");
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.eventually(10, "UpToDate/UpToDate", || {
        status(&p.b).starts_with("res0 role:Secondary\n  disk:UpToDate open:no\n")
    });
    // DRBD 9 refuses it while a connected Primary relies on this node's data.
    p.a.adm(&["primary", RES]).ok();
    p.eventually(10, "the peer's role", || {
        status(&p.b).contains("role:Primary")
    });
    let r = p.b.adm(&["outdate", RES]);
    assert_eq!(r.code, 11, "{r:#?}");
    assert!(
        r.stderr
            .contains("(-6) Refusing to be Outdated while Connected"),
        "{r:#?}"
    );
    p.a.adm(&["secondary", RES]).ok();
    p.b.adm(&["disconnect", RES]).ok();
    p.b.adm(&["outdate", RES]).ok();
    assert!(
        status(&p.b).contains("  disk:Outdated open:no\n"),
        "{}",
        status(&p.b)
    );
    // Persisted: down and up again, still Outdated (node-1 StandAlone meanwhile, or `up`'s
    // connect would make it UpToDate again at once).
    p.a.adm(&["disconnect", RES]).ok();
    p.b.adm(&["down", RES]).ok();
    p.b.adm(&["up", RES]).ok();
    p.b.adm(&["disconnect", RES]).ok();
    assert!(
        status(&p.b).contains("  disk:Outdated open:no\n"),
        "{}",
        status(&p.b)
    );
    let r = p.b.adm(&["primary", RES]);
    assert_eq!(r.code, 17, "{r:#?}");
    assert!(
        r.stderr.contains("(-2) Need access to UpToDate data"),
        "{r:#?}"
    );
    // Connected again, the UpToDate peer brings it back.
    p.a.adm(&["connect", RES]).ok();
    p.b.adm(&["connect", RES]).ok();
    p.eventually(20, "UpToDate again from the peer", || {
        status(&p.b).starts_with("res0 role:Secondary\n  disk:UpToDate open:no\n")
    });
    p.b.adm(&["disconnect", RES]).ok();
    p.b.adm(&["outdate", RES]).ok();
    p.b.adm(&["primary", "--force", RES]).ok();
    assert!(
        status(&p.b).starts_with("res0 role:Primary\n  disk:UpToDate open:no\n"),
        "{}",
        status(&p.b)
    );
}

/// DRBD 9's planned disconnect under fencing: node-2 (Secondary) disconnects from node-1
/// (Primary) and is Outdated by the agreement; node-1 records it and calls no fence-peer, so
/// its I/O never freezes (resource-and-stonith). node-2 cannot be promoted until it has
/// reconnected; a reconnect brings it back UpToDate. On loopback: nothing is cut.
#[test]
fn a_planned_disconnect_outdates_the_secondary_and_fences_nobody() {
    let h = Handler::new(0, 4);
    let mut p = pair(&h.config());
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.eventually(10, "node-2 UpToDate next to the Primary", || {
        let s = status(&p.b);
        s.starts_with("res0 role:Secondary\n  disk:UpToDate open:no\n")
            && s.contains("role:Primary")
    });
    p.b.adm(&["disconnect", RES]).ok();
    let s = status(&p.b);
    assert!(s.contains("  disk:Outdated open:no\n"), "{s}\n{}", p.logs());
    p.eventually(10, "node-1 to record node-2 Outdated", || {
        p.a.log_text()
            .contains("node-2: pdsk( UpToDate -> Outdated ) [disconnect]")
    });
    assert!(
        p.b.log_text()
            .contains("Preparing cluster-wide state change"),
        "{}",
        p.logs()
    );
    // node-1 goes on writing: nothing froze, nobody was fenced.
    assert_eq!(
        write_one(&p).recv_timeout(Duration::from_secs(20)),
        Ok(true)
    );
    assert!(!suspended(&p), "{}", p.logs());
    assert_eq!(h.calls(), "", "fence-peer was called\n{}", p.logs());
    let r = p.b.adm(&["primary", RES]);
    assert_eq!(r.code, 17, "{r:#?}");
    assert!(
        r.stderr.contains("(-2) Need access to UpToDate data"),
        "{r:#?}"
    );
    p.b.adm(&["connect", RES]).ok();
    p.eventually(20, "node-2 UpToDate again", || {
        let s = status(&p.b);
        s.starts_with("res0 role:Secondary\n  disk:UpToDate open:no\n")
            && s.contains("peer-disk:UpToDate")
    });
    assert_eq!(h.calls(), "", "{}", p.logs());
}
