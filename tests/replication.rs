//! Two real daemons on loopback replicating one resource: the SUSE HA how-to command for
//! command, the initial full sync, a Secondary and a Primary killed with SIGKILL under queue
//! depth 32, and a Secondary stopped with SIGSTOP (ko-count). Traffic goes only to 127.0.0.1.

mod common;

use common::pair::{DATA, Pair, RES, Setup, eventually, pair, pair_setup, resync_kib, status};
use common::{Node, tool};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// [`pair_setup`] where each node's copy of the config has its own `shared-secret`.
fn pair_with_secrets(extra: &str, secret_a: &str, secret_b: &str) -> Pair {
    pair_setup(&Setup {
        extra,
        secrets: [secret_a, secret_b],
        ..Setup::default()
    })
}

#[test]
fn the_suse_ha_howto_runs_command_for_command_with_no_resync() {
    let mut p = pair("");
    p.a.adm(&["dump", "all"]).ok();
    p.up();
    // Both fresh: connected, no sync, both Inconsistent.
    let st = status(&p.b);
    assert!(st.contains("node-1 role:Secondary"), "{st}");
    assert!(st.contains("peer-disk:Inconsistent"), "{st}");
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", "--force", RES]).ok();
    let expected = "res0 role:Primary\n  disk:UpToDate open:no\n  node-2 role:Secondary\n    peer-disk:UpToDate\n\n";
    eventually(10, "the how-to's status block", || status(&p.a) == expected);
    let st = status(&p.b);
    assert_eq!(
        st,
        "res0 role:Secondary\n  disk:UpToDate open:no\n  node-1 role:Primary\n    peer-disk:UpToDate\n\n"
    );
    // fencing resource-only is accepted, with a warning.
    assert!(p.a.log_text().contains("fencing"), "{}", p.a.log_text());
    // No resync happened: nothing was ever out of sync.
    assert!(resync_kib(&p.a.log_text()).is_empty());
    assert!(!p.a.log_text().contains("SyncTarget"));
    // Data written through NBD is on both disks.
    let o = tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x5a 0 4M",
            "-c",
            "flush",
            &p.a.nbd_uri(RES),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    p.assert_identical();
    let b = std::fs::read(&p.disk_b).expect("read");
    assert!(
        b[..4 << 20].iter().all(|&x| x == 0x5a),
        "a 4 MiB write travels as four frames"
    );
}

#[test]
fn the_initial_full_sync_shows_progress_and_ends_with_identical_disks() {
    // A resync slow enough to be seen in flight (64 MiB at 16 MiB/s).
    let mut p = pair("disk { c-plan-ahead 0; resync-rate 16M; }");
    // Something to sync: node-1's disk has data before create-md.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&p.disk_a)
            .expect("open");
        for i in 0..(DATA / (1 << 20)) {
            f.seek(SeekFrom::Start((i << 20) as u64)).expect("seek");
            f.write_all(&[(i % 250 + 1) as u8; 4096]).expect("write");
        }
    }
    p.up();
    p.a.adm(&["primary", "--force", RES]).ok();
    let mut seen = String::new();
    eventually(20, "SyncSource progress", || {
        seen = status(&p.a);
        seen.contains("replication:SyncSource peer-disk:Inconsistent done:")
    });
    let st = status(&p.b);
    assert!(
        st.contains("replication:SyncTarget peer-disk:UpToDate done:")
            || st.contains("disk:UpToDate"),
        "{st}"
    );
    // --verbose --statistics shows the rate and the ETA while it runs (drbdsetup: with
    // --verbose only).
    let stats =
        p.a.adm(&["status", "--verbose", "--statistics", RES])
            .ok()
            .stdout;
    assert!(
        stats.contains(" dbdt1:") || stats.contains("peer-disk:UpToDate"),
        "{stats}"
    );
    // pause-sync holds it (PausedSyncS, resync-suspended:user; the peer sees peer), resume-sync
    // lets it finish.
    // (At 16 MiB/s the 60 MiB take about 4 s: it is still running here.)
    {
        p.a.adm(&["pause-sync", RES]).ok();
        eventually(5, "a paused resync", || {
            status(&p.a).contains("replication:PausedSyncS")
                && status(&p.a).contains("resync-suspended:user")
                && status(&p.b).contains("resync-suspended:peer")
        });
        let before = status(&p.b);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(status(&p.b), before, "the resync moved while paused");
        p.a.adm(&["resume-sync", RES]).ok();
    }
    p.wait_sync();
    eventually(10, "UpToDate on both", || {
        status(&p.a).ends_with("    peer-disk:UpToDate\n\n")
            && status(&p.b).starts_with("res0 role:Secondary\n  disk:UpToDate open:no\n")
    });
    p.assert_identical();
}

/// Runs the QD32 writer against `n`; returns the blocks acknowledged and whether it finished.
fn write_blocks(n: &Node, seed: u64, start: usize, count: usize, tag: u32) -> (Vec<u64>, bool) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/qd32_writer.py");
    let out = Command::new("/usr/bin/python3")
        .args([script, &n.nbd_uri(RES)])
        .args([
            seed.to_string(),
            (DATA / 4096).to_string(),
            start.to_string(),
            count.to_string(),
            tag.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("python3-libnbd");
    let acked = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if !out.status.success() {
        eprintln!("writer: {}", String::from_utf8_lossy(&out.stderr));
    }
    (acked, out.status.success())
}

fn pattern(b: u64, tag: u32) -> Vec<u8> {
    let head = format!("udrbd block {b:08} tag {tag:04} ");
    head.as_bytes().iter().copied().cycle().take(4096).collect()
}

#[test]
fn a_secondary_killed_under_qd32_resyncs_only_what_changed() {
    let mut p =
        pair("net { connect-int 1; } disk { c-plan-ahead 0; resync-rate 200M; c-min-rate 0; }");
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    // Connected: 2000 writes, all on both disks.
    let (acked, ok) = write_blocks(&p.a, 7, 0, 2000, 1);
    assert!(ok && acked.len() == 2000);
    p.assert_identical();
    // The Secondary dies; the Primary goes on alone.
    p.b.crash();
    let (outage, ok) = write_blocks(&p.a, 7, 2000, 3000, 2);
    assert!(ok && outage.len() == 3000, "writes must go on degraded");
    let distinct: BTreeSet<u64> = outage.iter().copied().collect();
    p.b.start();
    p.b.adm(&["up", RES]).ok();
    p.a.adm(&["wait-connect", "--wfc-timeout", "20", RES]).ok();
    p.wait_sync();
    let kib = resync_kib(&p.a.log_text());
    let moved = kib.iter().sum::<u64>() / 4;
    let window = 32 + 4; // writes in flight when the link broke, and rounding
    assert!(
        moved >= distinct.len() as u64 && moved <= distinct.len() as u64 + window,
        "resync moved {moved} blocks for {} written during the outage ({kib:?}); log:\n{}",
        distinct.len(),
        p.a.log_text()
    );
    p.assert_identical();
    let b = std::fs::read(&p.disk_b).expect("read");
    for blk in &distinct {
        let at = (*blk * 4096) as usize;
        assert_eq!(&b[at..at + 4096], &pattern(*blk, 2)[..], "block {blk}");
    }
}

#[test]
fn a_primary_killed_under_qd32_loses_no_acknowledged_write() {
    let mut p = pair("net { connect-int 1; }");
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    // Kill the Primary while the writer runs: every block it saw acknowledged must be on
    // the Secondary.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/qd32_writer.py");
    let mut w = Command::new("/usr/bin/python3")
        .args([
            script,
            &p.a.nbd_uri(RES),
            "11",
            &(DATA / 4096).to_string(),
            "0",
            "14000",
            "3",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3-libnbd");
    let stdout = w.stdout.take().expect("stdout");
    let mut acked = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        if let Ok(b) = line.trim().parse::<u64>() {
            acked.push(b);
        }
        if acked.len() == 3000 {
            p.a.crash();
            break;
        }
    }
    // Acks that were already on their way count too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Ok(b) = line.trim().parse::<u64>() {
            acked.push(b);
        }
    }
    let _ = w.wait();
    assert!(acked.len() >= 3000);
    // The how-to's `fencing resource-only` without a fence-peer handler: fence-peer "returns
    // 0" (helper broken), so only --force promotes with the old Primary unreachable.
    p.b.adm(&["primary", "--force", RES]).ok();
    let data = read_export(&p.b, &acked);
    for (blk, got) in acked.iter().zip(data) {
        assert_eq!(
            got,
            pattern(*blk, 3),
            "acknowledged block {blk} is not on the survivor"
        );
    }
}

/// Reads the given blocks through the node's NBD export.
fn read_export(n: &Node, blocks: &[u64]) -> Vec<Vec<u8>> {
    let script = r#"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for line in sys.stdin:
    b = int(line)
    sys.stdout.write(h.pread(4096, b * 4096).hex() + "\n")
h.shutdown()
"#;
    let mut c = Command::new("/usr/bin/python3")
        .args(["-c", script, &n.nbd_uri(RES)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::Write;
        let mut stdin = c.stdin.take().expect("stdin");
        for b in blocks {
            writeln!(stdin, "{b}").expect("write");
        }
    }
    let out = c.wait_with_output().expect("read");
    assert!(out.status.success(), "read failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap_or(0))
                .collect()
        })
        .collect()
}

#[test]
fn a_stopped_secondary_stalls_writes_for_at_most_ko_count_times_timeout() {
    // timeout 1 s x ko-count 2: writes continue degraded after at most ~2 s.
    let mut p = pair("net { timeout 10; ko-count 2; ping-int 10; connect-int 1; }");
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    let pid = p.b.daemon.as_ref().map(|c| c.id()).expect("running");
    // SAFETY: signals to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let t0 = Instant::now();
    let o = tool(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x11 0 64k", &p.a.nbd_uri(RES)],
    );
    let stalled = t0.elapsed();
    assert!(o.status.success(), "{o:?}");
    assert!(
        stalled < Duration::from_secs(2 + 3),
        "the write stalled {stalled:?}, more than ko-count x timeout (+ slack)"
    );
    // Degraded now: the next write is quick.
    let t1 = Instant::now();
    let o = tool(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x22 1M 64k", &p.a.nbd_uri(RES)],
    );
    assert!(o.status.success(), "{o:?}");
    assert!(t1.elapsed() < Duration::from_secs(2), "{:?}", t1.elapsed());
    assert!(p.a.log_text().contains("ko-count"), "{}", p.a.log_text());
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    // It comes back and catches up.
    p.a.adm(&["wait-connect", "--wfc-timeout", "30", RES]).ok();
    p.wait_sync();
    p.assert_identical();
}

#[test]
fn a_wrong_shared_secret_goes_standalone_with_drbds_message_and_no_data() {
    let mut p = pair_with_secrets("net { connect-int 1; }", "Abcd1234Password", "wrong");
    p.start_both();
    eventually(10, "StandAlone after the failed authentication", || {
        p.a.adm(&["cstate", RES]).ok().stdout == "StandAlone\n"
            || p.b.adm(&["cstate", RES]).ok().stdout == "StandAlone\n"
    });
    let logs = format!("{}{}", p.a.log_text(), p.b.log_text());
    assert!(logs.contains("Authentication of peer failed"), "{logs}");
    // No reconnect storm: the StandAlone side stops trying.
    let count = |l: &str| l.matches("Authentication of peer failed").count();
    let before = count(&p.a.log_text()) + count(&p.b.log_text());
    std::thread::sleep(Duration::from_secs(3));
    let after = count(&p.a.log_text()) + count(&p.b.log_text());
    assert!(
        after <= before + 2,
        "{before} -> {after} failures: a reconnect storm"
    );
    // Nothing was exchanged: no handshake, no sync decision.
    assert!(!logs.contains("uuid_compare"), "{logs}");
}

#[test]
fn split_brain_is_detected_and_refused_on_reconnect() {
    let mut p = pair("net { connect-int 1; }");
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    for n in [&p.a, &p.b] {
        n.adm(&["disconnect", RES]).ok();
    }
    // fencing resource-only with no fence-peer handler: only --force promotes while the peer
    // is unreachable ("Forced into split brain situation!", which is the point here).
    p.b.adm(&["primary", "--force", RES]).ok();
    for (n, pat) in [(&p.a, "0x0a"), (&p.b, "0x0b")] {
        let o = tool(
            "qemu-io",
            &[
                "-f",
                "raw",
                "-c",
                &format!("write -P {pat} 0 64k"),
                &n.nbd_uri(RES),
            ],
        );
        assert!(o.status.success(), "{o:?}");
    }
    for n in [&p.a, &p.b] {
        n.adm(&["connect", RES]).ok();
    }
    // Both sides see it (each one's handshake packets go out before it drops the link); DRBD
    // allows the second to sit in Connecting, so the check is that neither connects.
    let t0 = Instant::now();
    while !(p.a.log_text().contains("Split-Brain detected")
        && p.b.log_text().contains("Split-Brain detected"))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "split brain not detected on both nodes; logs:\n{}\n{}",
            p.a.log_text(),
            p.b.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = format!("{}{}", p.a.log_text(), p.b.log_text());
    assert!(
        logs.contains("Split-Brain detected but unresolved, dropping connection!"),
        "{logs}"
    );
    std::thread::sleep(Duration::from_millis(500));
    for n in [&p.a, &p.b] {
        let cs = n.adm(&["cstate", RES]).ok().stdout;
        assert!(cs == "StandAlone\n" || cs == "Connecting\n", "{cs}");
    }
    assert!(
        [&p.a, &p.b]
            .iter()
            .any(|n| n.adm(&["cstate", RES]).ok().stdout == "StandAlone\n")
    );
    // Nothing was synced: each side keeps its own data.
    let a = std::fs::read(&p.disk_a).expect("a");
    let b = std::fs::read(&p.disk_b).expect("b");
    assert!(a[..65536].iter().all(|&x| x == 0x0a));
    assert!(b[..65536].iter().all(|&x| x == 0x0b));
}

#[test]
fn differing_protocols_are_refused() {
    let s = "Abcd1234Password";
    let mut p = pair_setup(&Setup {
        extra: "net { connect-int 1; }",
        secrets: [s, s],
        protocols: ["C", "A"],
        addresses: None,
        per_node: Default::default(),
    });
    p.start_both();
    eventually(10, "the protocol refusal", || {
        p.a.log_text()
            .contains("incompatible communication protocols")
            || p.b
                .log_text()
                .contains("incompatible communication protocols")
    });
    let logs = format!("{}{}", p.a.log_text(), p.b.log_text());
    assert!(!logs.contains("uuid_compare"), "{logs}");
}

#[path = "common/certs.rs"]
mod certs;

/// `net { }` lines for one node's TLS identity.
fn tls_net(files: &udrbd::tls::X509Files) -> String {
    format!(
        "net {{ tls yes; tls-ca-file \"{}\"; tls-certificate-file \"{}\"; tls-privkey-file \"{}\"; }}",
        files.ca, files.certificate, files.privkey
    )
}

#[test]
fn replication_runs_over_tls_and_a_node_without_tls_is_refused_with_a_clear_message() {
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let pki = certs::Pki::new(pki_dir.path(), "ca");
    let mut p = pair_setup(&Setup {
        extra: "net { connect-int 1; verify-alg sha256; }",
        per_node: [tls_net(&pki.issue("node-1")), tls_net(&pki.issue("node-2"))],
        ..Setup::default()
    });
    p.up();
    p.a.adm(&["primary", "--force", RES]).ok();
    p.wait_sync();
    let st = status(&p.a);
    assert!(st.contains("node-2 role:Secondary tls:yes"), "{st}");
    let (acked, done) = write_blocks(&p.a, 7, 0, 2000, 1);
    assert!(done && acked.len() == 2000, "{} acked", acked.len());
    p.assert_identical();
    p.assert_verify_clean();

    // The same pair with TLS on node-1 only: they never connect, and each log says which
    // side to fix.
    let mut q = pair_setup(&Setup {
        extra: "net { connect-int 1; }",
        per_node: [tls_net(&pki.issue("node-1")), String::new()],
        ..Setup::default()
    });
    q.start_both();
    eventually(15, "both sides name the TLS mismatch", || {
        q.a.log_text().contains("the peer does not speak TLS")
            && q.b.log_text().contains("the peer speaks TLS")
    });
    assert!(
        q.a.adm(&["cstate", RES])
            .ok()
            .stdout
            .starts_with("Connecting")
    );
    assert!(
        q.b.adm(&["cstate", RES])
            .ok()
            .stdout
            .starts_with("Connecting")
    );
}

/// `connect --tentative` (DRBD's dry-run connect): both sides log what the handshake decided,
/// nothing is resynced, the tentative side stays StandAlone; a plain `connect` then does it.
#[test]
fn a_tentative_connect_reports_the_resync_it_would_do_and_does_nothing() {
    let mut p = pair("net { connect-int 1; }");
    p.up();
    p.a.adm(&["primary", "--force", RES]).ok();
    p.wait_sync();
    p.b.adm(&["disconnect", RES]).ok();
    eventually(10, "node-2 StandAlone", || {
        status(&p.b).contains("connection:StandAlone")
    });
    common::qemu_io(&p.a, RES, "write -P 0x66 0 1M");
    let began = p.a.log_text().matches("Began resync").count();
    p.b.adm(&["connect", "--tentative", RES]).ok();
    p.eventually(20, "both sides' dry-run lines", || {
        p.b.log_text()
            .contains("dry-run connect: Would become SyncTarget, doing a bit-map based resync.")
            && p.a
                .log_text()
                .contains("dry-run connect: Would become SyncSource, doing a bit-map based resync.")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        status(&p.b).contains("connection:StandAlone"),
        "{}",
        status(&p.b)
    );
    assert_eq!(
        p.a.log_text().matches("Began resync").count(),
        began,
        "{}",
        p.logs()
    );
    let b = std::fs::read(&p.disk_b).expect("read b");
    assert!(b[..1 << 20].iter().any(|&x| x != 0x66), "resynced anyway");
    p.b.adm(&["connect", RES]).ok();
    p.wait_sync();
    p.assert_identical();
}
