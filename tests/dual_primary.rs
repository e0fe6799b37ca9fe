//! Two Primaries (`allow-two-primaries yes`) with real daemons on loopback: both nodes promoted
//! and written through their own NBD exports at once, the same blocks from both sides. The
//! conflicting writes are resolved as DRBD resolves them (the node with the higher node id
//! decides: superseded or retried), so afterwards online verify finds nothing and the backing
//! files are equal.

mod common;

use common::pair::{Pair, RES, Setup, pair, pair_setup, status};
use common::{fio_load, free_port, http_get, tool};
use std::process::{Command, Stdio};

/// Fixed-rate resync and verify, two primaries allowed.
const SETUP: &str = "net { verify-alg crc32c; allow-two-primaries yes; } \
    disk { c-plan-ahead 0; resync-rate 100M; c-min-rate 0; }";

/// Seconds both fio jobs write (the 30; `UDRBD_DUAL_SECS` shortens it by hand).
fn fio_secs() -> u64 {
    std::env::var("UDRBD_DUAL_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

fn both_primary_in_sync(p: &Pair) -> bool {
    [&p.a, &p.b].iter().all(|n| {
        let s = status(n);
        s.starts_with("res0 role:Primary\n  disk:UpToDate open:no\n")
            && s.contains("role:Primary")
            && s.contains("peer-disk:UpToDate")
            && !s.contains("replication:")
    })
}

#[test]
fn two_primaries_writing_the_same_range_end_identical_and_verify_finds_nothing() {
    let mut p = pair(SETUP);
    let metrics = free_port();
    p.b.daemon_args = vec!["--metrics-listen".into(), format!("127.0.0.1:{metrics}")];
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.b.adm(&["primary", RES]).ok();
    p.eventually(10, "both Primary, UpToDate/UpToDate", || {
        both_primary_in_sync(&p)
    });

    let secs = fio_secs();
    let jobs = [
        fio_load(&p.a.nbd_uri(RES), "node-1", secs),
        fio_load(&p.b.nbd_uri(RES), "node-2", secs),
    ];
    for job in jobs {
        let out = job.wait_with_output().expect("fio");
        assert!(
            out.status.success(),
            "fio: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            p.logs()
        );
    }
    // node-2 (node-id 1) resolves conflicts: it must have met some.
    assert!(
        p.b.log_text().contains("Concurrent remote write detected!"),
        "no concurrent writes met; logs:\n{}",
        p.logs()
    );
    let m = http_get(metrics, "GET /metrics HTTP/1.0\r\n\r\n");
    let met: u64 = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("udrbd_concurrent_writes_total{resource=\"res0\",volume=\"0\"} ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(met > 0, "udrbd_concurrent_writes_total: {m}");
    p.eventually(20, "both Primary, UpToDate/UpToDate", || {
        both_primary_in_sync(&p)
    });
    p.assert_verify_clean();
    p.assert_identical();
}

#[test]
fn allow_two_primaries_needs_protocol_c() {
    let mut p = pair_setup(&Setup {
        extra: "net { allow-two-primaries yes; }",
        protocols: ["A", "A"],
        ..Setup::default()
    });
    p.a.adm(&["create-md", RES]).ok();
    p.a.start();
    let r = p.a.adm(&["up", RES]);
    assert_eq!(r.code, 10, "{r:#?}");
    assert!(
        r.stderr.contains("Failure: (139) Protocol C required"),
        "{r:#?}"
    );
}

#[test]
fn without_allow_two_primaries_the_second_primary_is_refused() {
    let mut p = pair("");
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.eventually(10, "node-2 sees node-1 Primary", || {
        status(&p.b).contains("role:Primary")
    });
    let r = p.b.adm(&["primary", RES]);
    assert_eq!(r.code, 11, "{r:#?}");
    assert!(
        r.stderr
            .contains("(-1) Multiple primaries not allowed by config"),
        "{r:#?}"
    );
    // The link stays up.
    assert!(status(&p.b).contains("peer-disk:UpToDate"), "{}", p.logs());
}

/// Data written through node-1 reads back through node-2 while both are Primary (what a live
/// migration relies on): protocol C acknowledged it on both disks.
#[test]
fn a_write_through_one_primary_reads_back_through_the_other() {
    let mut p = pair(SETUP);
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.b.adm(&["primary", RES]).ok();
    p.eventually(10, "both Primary", || both_primary_in_sync(&p));
    let w = tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x5c 1M 256k",
            &p.a.nbd_uri(RES),
        ],
    );
    assert!(w.status.success(), "{w:?}");
    let r = tool(
        "qemu-io",
        &["-f", "raw", "-c", "read -P 0x5c 1M 256k", &p.b.nbd_uri(RES)],
    );
    assert!(
        r.status.success() && !String::from_utf8_lossy(&r.stdout).contains("verification failed"),
        "{r:?}\n{}",
        p.logs()
    );
}

/// qemu-io on `uri` with one command; panics (with the logs) unless it ran and, for a read
/// with a pattern, found the pattern.
fn qemu_io(p: &Pair, uri: &str, cmd: &str) {
    let r = tool("qemu-io", &["-f", "raw", "-c", cmd, uri]);
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.status.success() && !out.contains("verification failed") && !out.contains("error"),
        "qemu-io {cmd:?} on {uri}: {r:?}\nlogs:\n{}",
        p.logs()
    );
}

/// The issue's `after-sb-2pri violently-as0p`: a split brain between two Primaries is
/// resolved as with no Primary (`discard-least-changes`), and `rr-conflict violently` lets the
/// Primary that lost stay Primary as SyncTarget. Its application keeps reading and writing:
/// what its disk lacks is read from the winner, and afterwards both hold the winner's data
/// plus what was written since, on both nodes.
#[test]
fn violently_as0p_keeps_the_losing_primary_serving_during_its_resync() {
    let mut p = pair(
        "net { verify-alg crc32c; allow-two-primaries yes; \
         after-sb-0pri discard-least-changes; after-sb-1pri discard-secondary; \
         after-sb-2pri violently-as0p; rr-conflict violently; } \
         disk { c-plan-ahead 0; resync-rate 1M; c-min-rate 0; }",
    );
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.b.adm(&["primary", RES]).ok();
    p.eventually(10, "both Primary, UpToDate/UpToDate", || {
        both_primary_in_sync(&p)
    });
    // The split: both disconnect and both write; node-1 changes more. (Two Primaries under
    // fencing may only part by force, as in DRBD.)
    let r = p.a.adm(&["disconnect", RES]);
    assert_eq!(r.code, 11, "{r:#?}");
    assert!(
        r.stderr
            .contains("(-7) Refusing to be Primary while peer is not outdated"),
        "{r:#?}"
    );
    two_primary_split(&p, "write -P 0xaa 0 4M", "write -P 0xbb 8M 256k");
    let (uri_a, uri_b) = (p.a.nbd_uri(RES), p.b.nbd_uri(RES));
    p.a.adm(&["connect", RES]).ok();
    p.b.adm(&["connect", RES]).ok();
    p.eventually(20, "node-2 Primary and SyncTarget", || {
        let s = status(&p.b);
        s.starts_with("res0 role:Primary\n") && s.contains("replication:SyncTarget")
    });
    assert!(
        p.b.log_text().contains("Split-Brain detected"),
        "{}",
        p.logs()
    );
    // While the resync runs (1 MiB/s over 4.25 MiB): node-1's data reads back through
    // node-2, its own split-brain write is gone, and a new write lands on both.
    qemu_io(&p, &uri_b, "read -P 0xaa 0 4M");
    qemu_io(&p, &uri_b, "read -P 0 8M 256k");
    qemu_io(&p, &uri_b, "write -P 0xcc 2M 64k");
    assert!(
        status(&p.b).contains("replication:SyncTarget"),
        "the resync ended before the reads; they proved nothing\n{}",
        p.logs()
    );
    p.eventually(30, "both Primary, UpToDate/UpToDate", || {
        both_primary_in_sync(&p)
    });
    qemu_io(&p, &uri_a, "read -P 0xcc 2M 64k");
    qemu_io(&p, &uri_a, "read -P 0xaa 0 2M");
    // (Online verify would run at this test's slow resync rate: the files are compared.)
    p.assert_identical();
}

/// Two Primaries part (by force: under fencing nothing else lets them) and write, node-1
/// `on_a`, node-2 `on_b`.
fn two_primary_split(p: &Pair, on_a: &str, on_b: &str) {
    p.a.adm(&["disconnect", "--force", RES]).ok();
    p.b.adm(&["disconnect", "--force", RES]).ok();
    qemu_io(p, &p.a.nbd_uri(RES), on_a);
    qemu_io(p, &p.b.nbd_uri(RES), on_b);
}

/// The issue's `after-sb-2pri call-pri-lost-after-sb`: the after-sb-0pri decision
/// (`discard-least-changes`) picks node-2's data; node-2, a Primary, gives up its role and
/// becomes SyncTarget ("Successfully gave up primary role."). Split again with node-2's
/// export held open by a client, it cannot: it calls the `pri-lost-after-sb` handler and
/// refuses the connection, as DRBD does.
#[test]
fn call_pri_lost_after_sb_demotes_the_losing_primary_or_calls_its_handler() {
    let dir = common::scratch();
    let calls = dir.path().join("pri-lost");
    let mut p = pair(&format!(
        "net {{ allow-two-primaries yes; after-sb-0pri discard-least-changes; \
         after-sb-1pri discard-secondary; after-sb-2pri call-pri-lost-after-sb; }} \
         handlers {{ pri-lost-after-sb \"echo $DRBD_PEER_NODE_ID >> {}\"; }}",
        calls.display()
    ));
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.b.adm(&["primary", RES]).ok();
    p.eventually(10, "both Primary, UpToDate/UpToDate", || {
        both_primary_in_sync(&p)
    });
    two_primary_split(&p, "write -P 0xa1 0 2M", "write -P 0xb1 4M 64k");
    p.a.adm(&["connect", RES]).ok();
    p.b.adm(&["connect", RES]).ok();
    p.eventually(30, "node-2 Secondary, in sync with node-1", || {
        let s = status(&p.b);
        s.starts_with("res0 role:Secondary\n  disk:UpToDate open:no\n")
            && s.contains("peer-disk:UpToDate")
    });
    assert!(
        p.b.log_text()
            .contains("Successfully gave up primary role."),
        "{}",
        p.logs()
    );
    assert!(
        !calls.exists(),
        "the handler ran although the demotion worked"
    );
    qemu_io(&p, &p.b.nbd_uri(RES), "read -P 0 4M 64k");
    p.assert_identical();

    // Again, with node-2's export held open: it cannot demote.
    p.b.adm(&["primary", RES]).ok();
    p.eventually(10, "both Primary, UpToDate/UpToDate", || {
        both_primary_in_sync(&p)
    });
    two_primary_split(&p, "write -P 0xa1 0 2M", "write -P 0xb1 4M 64k");
    let mut holder = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import nbd, sys, time\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\nprint('open', flush=True)\ntime.sleep(60)",
            &p.b.nbd_uri(RES),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3-libnbd (.ci/apt-packages) holds the export open");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("the holder's line");
    assert_eq!(line, "open\n");
    p.a.adm(&["connect", RES]).ok();
    p.b.adm(&["connect", RES]).ok();
    p.eventually(20, "the pri-lost-after-sb handler", || {
        std::fs::read_to_string(&calls).is_ok_and(|c| c == "0\n")
    });
    p.eventually(10, "node-2 StandAlone and still Primary", || {
        let s = status(&p.b);
        s.starts_with("res0 role:Primary\n") && s.contains("connection:StandAlone")
    });
    let _ = holder.kill();
    let _ = holder.wait();
}
