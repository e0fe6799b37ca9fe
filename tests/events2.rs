//! `drbdsetup events2` and `drbdsetup status` against real daemons (two nodes on loopback):
//! the `--now` dump of a known state, `--statistics`, the stream of a scripted sequence
//! (up, connect, primary, resync, disconnect, down), handler calls, refusals, and clients that
//! leave.

mod common;

use common::pair::{Pair, RES, Setup, pair_setup, poll_until};
use common::{Node, free_port};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn setup_cmd(n: &Node, args: &[&str]) -> Command {
    let mut c = Command::new(common::drbdsetup_bin());
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
    // DESIGN.md's `drbdadm events2` prints the same lines.
    assert_eq!(p.a.adm(&["events2", "--now", RES]).ok().stdout, expected);

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
    assert!(line("resource").contains(" write-ordering:flush "), "{out}");
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

/// States that may or may not show, depending on how the daemon's work falls into batches.
const TRANSIENT: &[&str] = &[
    "Disconnecting",
    "Unconnected",
    "NetworkFailure",
    "BrokenPipe",
    "Timeout",
    "TearDown",
    "ProtocolError",
    "WFBitMapS",
    "WFBitMapT",
    "WFSyncUUID",
    "StartingSyncS",
    "StartingSyncT",
];

/// The transcript of a stream with what varies from run to run taken out (timing, progress,
/// paths, ports): per object and key, the sequence of values it took, repeats and transient
/// states dropped; helper lines as `call NAME` / `response NAME status:N`.
fn transcript(lines: &[String]) -> Vec<String> {
    let keys = [
        ("resource", "role"),
        ("device", "disk"),
        ("device", "open"),
        ("connection", "connection"),
        ("connection", "role"),
        ("peer-device", "replication"),
        ("peer-device", "peer-disk"),
        ("path", "established"),
    ];
    let mut seqs: Vec<Vec<String>> = vec![Vec::new(); keys.len()];
    let mut helpers = Vec::new();
    for l in lines {
        let words: Vec<&str> = l.split(' ').collect();
        let (Some(action), Some(object)) = (words.first(), words.get(1)) else {
            continue;
        };
        if *object == "helper" {
            let get = |k: &str| {
                words
                    .iter()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or_default()
            };
            let mut h = format!("{action} {}", get("helper:"));
            if *action == "response" {
                h.push_str(&format!(" status:{}", get("status:")));
            }
            helpers.push(h);
            continue;
        }
        for (i, (o, k)) in keys.iter().enumerate() {
            if o != object {
                continue;
            }
            let prefix = format!("{k}:");
            if let Some(v) = words.iter().find_map(|w| w.strip_prefix(prefix.as_str()))
                && !TRANSIENT.contains(&v)
                && seqs[i].last().map(String::as_str) != Some(v)
            {
                seqs[i].push(v.to_string());
            }
        }
    }
    let mut out: Vec<String> = keys
        .iter()
        .zip(seqs)
        .map(|((o, k), s)| format!("{o} {k}: {}", s.join(" ")))
        .collect();
    out.extend(helpers);
    out
}

/// The action and object of each line (`change device`), with the initial `exists -`.
fn shape(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn the_stream_follows_up_connect_primary_resync_disconnect_and_down() {
    let (mut p, [pa, pb]) = known_pair("");
    p.a.start();
    p.b.start();
    p.a.adm(&["create-md", RES]).ok();
    p.b.adm(&["create-md", RES]).ok();
    // Watching everything before the resource exists: its `up` is a `create`.
    let w = Watch::start(&p.a, &["events2"]);
    let stats = Watch::start(&p.a, &["events2", "--statistics", "--timestamps"]);
    w.wait_for(&p, &["exists -"]);
    stats.wait_for(&p, &["exists -"]);
    p.a.adm(&["up", RES]).ok();
    w.wait_for(&p, &["connection:Connecting"]);
    p.b.adm(&["up", RES]).ok();
    w.wait_for(&p, &["established:yes"]);
    w.wait_for(&p, &["peer-disk:Inconsistent"]);
    p.a.adm(&["primary", "--force", RES]).ok();
    p.wait_sync();
    w.wait_for(&p, &["peer-disk:UpToDate"]);
    w.wait_for(&p, &["replication:Established"]);
    p.a.adm(&["disconnect", RES]).ok();
    w.wait_for(&p, &["connection:StandAlone"]);
    p.a.adm(&["secondary", RES]).ok();
    p.a.adm(&["down", RES]).ok();
    w.wait_for(&p, &["destroy resource"]);
    let got = w.lines();
    let all = got.join("\n");

    let expected = [
        "resource role: Secondary Primary Secondary",
        "device disk: Diskless Inconsistent UpToDate Detaching Diskless",
        "device open: no",
        "connection connection: StandAlone Connecting Connected StandAlone",
        "connection role: Unknown Secondary Unknown",
        "peer-device replication: Off Established SyncSource Established Off",
        // `disconnect` under fencing is agreed with the peer (DRBD 9): the Secondary parts
        // Outdated, and the Primary records it instead of calling fence-peer.
        "peer-device peer-disk: DUnknown Inconsistent UpToDate Outdated",
        "path established: no yes no",
        // DRBD 9's helpers around the resync and the disconnect (none configured: status 0).
        "call before-resync-source",
        "response before-resync-source status:0",
        // The peer is UpToDate again after the resync: the fence (none here) is lifted.
        "call unfence-peer",
        "response unfence-peer status:0",
        "call disconnected",
        "response disconnected status:0",
    ];
    assert_eq!(transcript(&got), expected, "the stream:\n{all}");

    // The frame: the empty initial dump, `create` for each object on `up`, only `change` and
    // helper lines in between, `destroy` innermost first on `down`.
    let sh = shape(&got);
    assert_eq!(
        sh[..6],
        [
            "exists -",
            "create resource",
            "create connection",
            "create device",
            "create peer-device",
            "create path"
        ],
        "{all}"
    );
    assert_eq!(
        sh[sh.len() - 5..],
        [
            "destroy path",
            "destroy peer-device",
            "destroy connection",
            "destroy device",
            "destroy resource"
        ],
        "{all}"
    );
    for s in &sh[6..sh.len() - 5] {
        assert!(
            s.starts_with("change ") || s == "call helper" || s == "response helper",
            "{s} in\n{all}"
        );
    }
    assert!(
        got.contains(&format!(
            "create path name:res0 peer-node-id:1 conn-name:node-2 local:ipv4:127.0.0.1:{pa} \
             peer:ipv4:127.0.0.1:{pb} established:no"
        )),
        "{all}"
    );
    assert!(
        got.iter().any(|l| l
            == &format!(
                "change device name:res0 volume:0 minor:0 backing_dev:{} disk:UpToDate \
                 client:no open:no quorum:yes",
                p.disk_a.display()
            )),
        "{all}"
    );
    assert!(
        got.iter().any(|l| l.starts_with(
            "change peer-device name:res0 peer-node-id:1 conn-name:node-2 volume:0 \
             replication:SyncSource"
        ) && l.contains(" done:")),
        "the resync shows its progress: {all}"
    );

    // The statistics stream: the same states, with counters, timestamped.
    stats.wait_for(&p, &["destroy resource"]);
    let with_stats = stats.lines();
    let untimed: Vec<String> = with_stats
        .iter()
        .map(|l| l.split_once(' ').map_or(l.clone(), |(_, r)| r.to_string()))
        .collect();
    assert_eq!(transcript(&untimed), expected, "{}", with_stats.join("\n"));
    assert!(
        untimed.iter().any(|l| l.starts_with("change peer-device")
            && l.contains(" sent:")
            && l.contains(" out-of-sync:")),
        "{}",
        with_stats.join("\n")
    );
}

#[test]
fn handler_runs_show_as_call_and_response_helper_lines() {
    let (mut p, _) =
        known_pair(r#"handlers { before-resync-target "true"; after-resync-target "exit 3"; }"#);
    p.start_both();
    // node-2 becomes the SyncTarget: it runs the resync handlers.
    let w = Watch::start(&p.b, &["events2", RES]);
    w.wait_for(&p, &["exists -"]);
    p.a.adm(&["wait-connect", "--wfc-timeout", "20", RES]).ok();
    p.a.adm(&["primary", "--force", RES]).ok();
    p.wait_sync();
    w.wait_for(&p, &["response helper", "helper:after-resync-target"]);
    let got = w.lines();
    // Handlers run concurrently: unfence-peer (the peer is UpToDate again) may come between.
    let helpers: Vec<&String> = got
        .iter()
        .filter(|l| l.contains(" helper ") && l.contains("-resync-target"))
        .collect();
    let head = "helper name:res0 peer-node-id:0 conn-name:node-1 volume:0 minor:0";
    assert_eq!(
        helpers,
        [
            &format!("call {head} helper:before-resync-target"),
            &format!("response {head} helper:before-resync-target status:0"),
            &format!("call {head} helper:after-resync-target"),
            &format!("response {head} helper:after-resync-target status:3"),
        ],
        "{}",
        got.join("\n")
    );
    // The call comes before the resync starts, the response after it ended.
    let at = |what: &str| got.iter().position(|l| l.contains(what));
    assert!(at("helper:before-resync-target") < at("replication:SyncTarget"));
    assert!(at("replication:SyncTarget") < at("after-resync-target status:3"));
}

/// Open file descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn clients_that_leave_cost_the_daemon_nothing() {
    let (mut p, _) = known_pair("");
    p.up();
    let pid = p.a.daemon.as_ref().expect("running").id();
    // The baseline, with the daemon settled after the handshake.
    std::thread::sleep(Duration::from_millis(300));
    let before = fds(pid);
    // Watchers that are killed mid-stream, and raw clients that ask for a stream and hang up
    // before reading anything.
    for _ in 0..5 {
        let w = Watch::start(&p.a, &["events2", "--statistics"]);
        w.wait_for(&p, &["exists -"]);
        drop(w);
    }
    for _ in 0..5 {
        use std::io::Write;
        let mut s =
            std::os::unix::net::UnixStream::connect(p.a.run_dir.join("ctl.sock")).expect("connect");
        s.write_all(b"{\"cmd\":\"events\",\"resource\":null,\"statistics\":true}\n")
            .expect("request");
    }
    assert!(
        poll_until(10, || fds(pid) <= before),
        "the daemon kept {} descriptors of clients that left (before: {before})",
        fds(pid)
    );
    // It keeps serving: state changes, answers and new streams as before.
    let w = Watch::start(&p.a, &["events2", RES]);
    w.wait_for(&p, &["exists -"]);
    p.a.adm(&["primary", "--force", RES]).ok();
    w.wait_for(&p, &["change resource", "role:Primary"]);
    let (code, out, _) = setup(&p.a, &["events2", "--now", RES]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("exists resource name:res0 role:Primary"),
        "{out}"
    );
    assert!(common::pair::status(&p.a).starts_with("res0 role:Primary"));
}

/// `events2 --now --poll`: the dump, again on each `n` (a fresh dump), and the end on any
/// other character; `--poll` without `--now` streams and exits at the end of stdin.
#[test]
fn poll_prints_the_state_again_on_n_and_exits_on_anything_else() {
    use std::io::Write as _;
    let (mut p, _) = known_pair("");
    p.up();
    p.eventually(20, "the handshake", || {
        setup(&p.a, &["events2", "--now", RES])
            .1
            .contains("established:yes")
    });
    let mut child = setup_cmd(&p.a, &["events2", "--now", "--poll", RES])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut dump = || {
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            assert!(out.read_line(&mut l).expect("read") > 0, "{lines:?}");
            lines.push(l.trim_end().to_string());
            if l == "exists -\n" {
                return lines;
            }
        }
    };
    let first = dump();
    assert_eq!(first.len(), 6, "{first:?}");
    // The state changes; `n` prints it whole again, as `exists` lines.
    p.a.adm(&["primary", "--force", RES]).ok();
    stdin.write_all(b"\nn").expect("write");
    stdin.flush().expect("flush");
    let second = dump();
    assert!(
        second[0].starts_with("exists resource name:res0 role:Primary "),
        "{second:?}"
    );
    assert_eq!(second.len(), 6, "{second:?}");
    stdin.write_all(b"q").expect("write");
    drop(stdin);
    assert!(child.wait().expect("wait").success());

    // Streaming with --poll: ends with stdin.
    let mut child = setup_cmd(&p.a, &["events2", "--poll", RES])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut l = String::new();
    while l != "exists -\n" {
        l.clear();
        assert!(out.read_line(&mut l).expect("read") > 0);
    }
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"n").expect("write");
    drop(stdin);
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

/// `--full` shows every field of a changed object; `--diff` shows `old->new`.
#[test]
fn full_and_diff_change_lines() {
    let (mut p, _) = known_pair("");
    p.up();
    p.eventually(20, "the handshake", || {
        setup(&p.a, &["events2", "--now", RES])
            .1
            .contains("established:yes")
    });
    let full = Watch::start(&p.a, &["events2", "--full", RES]);
    let diff = Watch::start(&p.a, &["events2", "--diff", RES]);
    full.wait_for(&p, &["exists -"]);
    diff.wait_for(&p, &["exists -"]);
    // The initial dump under --diff: old values unknown.
    assert!(
        diff.lines()[0].starts_with(
            "exists resource name:res0 role:UNKNOWN->Secondary suspended:UNKNOWN->no \
             force-io-failures:UNKNOWN->no may_promote:UNKNOWN->no promotion_score:0->0"
        ),
        "{:?}",
        diff.lines()
    );
    p.a.adm(&["primary", "--force", RES]).ok();
    diff.wait_for(&p, &["change resource", "role:Secondary->Primary"]);
    full.wait_for(&p, &["change resource", "role:Primary"]);
    let line = full
        .lines()
        .into_iter()
        .find(|l| l.starts_with("change resource") && l.contains("role:Primary"))
        .expect("a line");
    assert!(
        line.starts_with(
            "change resource name:res0 role:Primary suspended:no force-io-failures:no \
             write-ordering:flush may_promote:no promotion_score:"
        ),
        "{line}"
    );
    // --full: a device line carries every counter, al-suspended and blocked included.
    let dev = full
        .lines()
        .into_iter()
        .find(|l| l.starts_with("exists device"))
        .expect("device line");
    for key in [" size:", " al-suspended:no", " blocked:no", " quorum:yes"] {
        assert!(dev.contains(key), "{key}: {dev}");
    }
}
