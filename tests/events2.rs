//! `drbdsetup events2` and `drbdsetup status` against real daemons (two nodes on loopback):
//! the `--now` dump of a known state, `--statistics`, the stream of a scripted sequence
//! (up, connect, primary, resync, disconnect, down), handler calls, refusals, and clients that
//! leave.

mod common;

use common::pair::{Pair, RES, Setup, pair_setup, poll_until};
use common::{Node, free_port};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `drbdsetup` binary, built next to `udrbd`.
fn drbdsetup_bin() -> PathBuf {
    let p = common::udrbd_bin().with_file_name("drbdsetup");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first",
        p.display()
    );
    p
}

fn setup_cmd(n: &Node, args: &[&str]) -> Command {
    let mut c = Command::new(drbdsetup_bin());
    c.args(args)
        .env("UDRBD_RUN_DIR", &n.run_dir)
        .stdin(Stdio::null());
    c
}

/// Runs drbdsetup as `n` to completion: (exit code, stdout, stderr).
fn setup(n: &Node, args: &[&str]) -> (i32, String, String) {
    let o = setup_cmd(n, args).output().expect("run drbdsetup");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A pair on two known loopback ports.
fn known_pair(extra: &str) -> (Pair, [u16; 2]) {
    let ports = [free_port(), free_port()];
    let p = pair_setup(&Setup {
        extra,
        addresses: Some(ports.map(|p| format!("127.0.0.1:{p}"))),
        ..Setup::default()
    });
    (p, ports)
}

#[test]
fn now_dumps_the_known_state_exactly_and_status_matches_drbdadm() {
    let (mut p, [pa, pb]) = known_pair("");
    p.up();
    let disk_a = p.disk_a.display().to_string();
    // Right after create-md and up on both: connected, both Inconsistent (nothing promotable).
    p.eventually(20, "the handshake", || {
        setup(&p.a, &["events2", "--now", RES])
            .1
            .contains("peer-disk:Inconsistent")
    });
    let (code, out, err) = setup(&p.a, &["events2", "--now", RES]);
    assert_eq!(code, 0, "{err}");
    let expected = format!(
        "exists resource name:res0 role:Secondary suspended:no force-io-failures:no may_promote:no promotion_score:0
exists connection name:res0 peer-node-id:1 conn-name:node-2 connection:Connected role:Secondary
exists device name:res0 volume:0 minor:0 backing_dev:{disk_a} disk:Inconsistent client:no open:no quorum:yes
exists peer-device name:res0 peer-node-id:1 conn-name:node-2 volume:0 replication:Established peer-disk:Inconsistent peer-client:no resync-suspended:no
exists path name:res0 peer-node-id:1 conn-name:node-2 local:ipv4:127.0.0.1:{pa} peer:ipv4:127.0.0.1:{pb} established:yes
exists -
"
    );
    assert_eq!(out, expected);
    // `all` and no resource are the same dump here (one resource).
    assert_eq!(setup(&p.a, &["events2", "--now", "all"]).1, expected);
    assert_eq!(setup(&p.a, &["events2", "--now"]).1, expected);

    // --timestamps: DRBD's prefix on every line, `exists -` included.
    let (_, out, _) = setup(&p.a, &["events2", "--now", "--timestamps", RES]);
    for (l, want) in out.lines().zip(expected.lines()) {
        let (ts, rest) = l.split_once(' ').expect("a timestamp");
        assert_eq!(rest, want);
        assert_eq!(ts.len(), "2026-01-31T12:34:56.123456+01:00".len(), "{ts}");
        assert_eq!(&ts[10..11], "T", "{ts}");
    }

    // --statistics: DRBD's counters on each object.
    let (_, out, _) = setup(&p.a, &["events2", "--now", "--statistics", RES]);
    let line = |object: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("exists {object} ")))
            .unwrap_or_else(|| panic!("no {object} line in {out}"))
            .to_string()
    };
    for key in ["write-ordering:none"] {
        assert!(line("resource").contains(key), "{key}: {out}");
    }
    for key in ["congested:no", "ap-in-flight:", "rs-in-flight:"] {
        assert!(line("connection").contains(key), "{key}: {out}");
    }
    for key in [
        "size:",
        "read:",
        "written:",
        "al-writes:",
        "bm-writes:",
        "upper-pending:",
        "lower-pending:",
        "al-suspended:no",
        "blocked:no",
    ] {
        assert!(line("device").contains(key), "{key}: {out}");
    }
    for key in ["received:", "sent:", "out-of-sync:", "pending:", "unacked:"] {
        assert!(line("peer-device").contains(key), "{key}: {out}");
    }

    // drbdsetup status prints what drbdadm status prints, options included.
    for opts in [
        &[][..],
        &["--verbose"][..],
        &["--statistics"][..],
        &["--verbose", "--statistics"][..],
        &["--json"][..],
    ] {
        let mut adm = vec!["status"];
        adm.extend_from_slice(opts);
        adm.push(RES);
        let want = p.a.adm(&adm).ok().stdout;
        let (code, got, err) = setup(&p.a, &adm);
        assert_eq!(code, 0, "{err}");
        assert_eq!(got, want, "drbdsetup {adm:?}");
    }
    assert_eq!(setup(&p.a, &["status"]).1, p.a.adm(&["status"]).ok().stdout);
}

#[test]
fn a_resource_that_is_not_up_is_refused_in_drbds_words() {
    let (mut p, _) = known_pair("");
    p.a.start();
    for args in [
        &["events2", "--now", RES][..],
        &["events2", RES][..],
        &["status", RES][..],
    ] {
        let (code, out, err) = setup(&p.a, args);
        assert_eq!(code, 10, "{args:?}: {out} {err}");
        assert_eq!(err, "res0: No such resource\n", "{args:?}");
        assert_eq!(out, "", "{args:?}");
    }
    // Nothing up at all: the dump is empty, not an error.
    let (code, out, _) = setup(&p.a, &["events2", "--now"]);
    assert_eq!((code, out.as_str()), (0, "exists -\n"));
    assert_eq!(
        setup(&p.a, &["status"]).1,
        "# No currently configured DRBD found.\n"
    );
    // No daemon: drbdsetup's "cannot talk to the kernel" code.
    p.a.stop();
    let (code, _, err) = setup(&p.a, &["events2", "--now"]);
    assert_eq!(code, 20, "{err}");
    assert!(err.contains("cannot reach the udrbd daemon"), "{err}");
}

/// A running `drbdsetup events2`, its lines collected as they come.
struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn start(n: &Node, args: &[&str]) -> Watch {
        let mut child = setup_cmd(n, args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn drbdsetup events2");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(l);
            }
        });
        Watch { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until a line containing every word of `words` has arrived.
    fn wait_for(&self, p: &Pair, words: &[&str]) {
        p.eventually(60, &format!("an events2 line with {words:?}"), || {
            self.lines()
                .iter()
                .any(|l| words.iter().all(|w| l.contains(w)))
        });
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
