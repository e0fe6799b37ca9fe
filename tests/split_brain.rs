//! Split brain the way it happens: two real daemons in two network namespaces, the cable
//! between them pulled while node-1 is Primary, node-2 promoted on its own, both written to,
//! the cable plugged back in. DRBD's default policies (`after-sb-*pri disconnect`) leave it
//! unresolved: both nodes drop the connection, go StandAlone and keep their own data
//! (`../shared/reference/drbd.md` §1.7, §1.12). Then the how-to's manual recovery
//! (`../shared/testdata/configs/suse-ha/COMMANDS.md`): the victim discards its data and
//! resyncs from the survivor, bitmap-based.
//!
//! Needs root for `ip netns` (see `common::netns`); without it the tests print a skip message
//! and pass, except under CI, where they fail.

mod common;

use common::Node;
use common::netns::NetnsPair;
use common::pair::{DATA, Pair, RES, Setup, pair, pair_setup, resync_kib, status};
use common::tool;
use std::ops::Range;
use std::time::Duration;

/// A cut is noticed in ping-int + ping-timeout (1.5 s), a request stalls at most timeout x
/// ko-count (1 s), a dial gives up after `timeout` (0.5 s, less than connect-int and ping-int)
/// and the next comes a second later. A fast resync so recovery is quick.
const TIMERS: &str = "net { ping-int 1; ping-timeout 5; timeout 5; ko-count 2; connect-int 1;
        verify-alg crc32c; }
    disk { c-plan-ahead 0; resync-rate 200M; c-min-rate 0; }";
/// The how-to's port: the namespaces are private, nothing else listens there.
const PORT: u16 = 7789;
const MIB: usize = 1 << 20;
const SB_UNRESOLVED: &str = "Split-Brain detected but unresolved, dropping connection!";
/// Both sides' bitmap UUIDs are the current UUID from before the cut (DRBD 9's wording).
const SB_COMPARE: &str = "uuid_compare()=split-brain-auto-recover by rule=bitmap-both";

/// Written on node-1 while connected: on both disks.
const P0: u8 = 0x30;
/// node-1's writes during the partition: (region, byte). The last overlaps node-2's.
const PA: [(Range<usize>, u8); 2] = [(MIB..2 * MIB, 0xa1), (3 * MIB..4 * MIB, 0xaa)];
/// node-2's writes during the partition.
const PB: [(Range<usize>, u8); 2] = [(2 * MIB..3 * MIB, 0xb2), (3 * MIB..4 * MIB, 0xbb)];

/// What a disk holds in the first 4 MiB after P0 and then `writes`.
fn expected(writes: &[(Range<usize>, u8)]) -> Vec<u8> {
    let mut v = vec![P0; 4 * MIB];
    for (r, b) in writes {
        v[r.clone()].fill(*b);
    }
    v
}

/// Checks the first 4 MiB of `disk` against `want`, naming the first differing MiB.
fn assert_data(p: &Pair, disk: &std::path::Path, want: &[u8], what: &str) {
    let got = std::fs::read(disk).expect("read disk");
    if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: byte {i} (MiB {}) is {:#04x}, expected {:#04x}; logs:\n{}",
            i / MIB,
            got[i],
            want[i],
            p.logs()
        );
    }
}

/// Writes the regions through `n`'s NBD export (and flushes).
fn write(p: &Pair, n: &Node, writes: &[(Range<usize>, u8)]) {
    let mut args = vec!["-f".to_string(), "raw".to_string()];
    for (r, b) in writes {
        args.push("-c".into());
        args.push(format!("write -P {b:#04x} {} {}", r.start, r.len()));
    }
    args.extend(["-c".into(), "flush".into(), n.nbd_uri(RES)]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = tool("qemu-io", &args);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "qemu-io on {}: {o:?}\nlogs:\n{}",
        n.name,
        p.logs()
    );
}

/// The connection state `n` shows for `peer` in `drbdadm status` (`Connected` when the peer's
/// line has a role instead).
fn conn(n: &Node, peer: &str) -> String {
    let st = status(n);
    let line = st
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{peer} ")))
        .unwrap_or_else(|| panic!("no line for {peer} in the status of {}:\n{st}", n.name));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("connection:"))
        .unwrap_or("Connected")
        .to_string()
}

/// Both nodes up in their namespaces, node-1 Primary with P0 replicated; the cable pulled;
/// node-2 promoted; PA written on node-1, PB on node-2; the cable back in; both StandAlone.
fn split_brain(net: &NetnsPair, handler_log: &std::path::Path) -> Pair {
    let p = partitioned(net, handler_log, "", false);
    net.heal();
    p.eventually(20, "StandAlone on both nodes after the heal", || {
        conn(&p.a, "node-2") == "StandAlone" && conn(&p.b, "node-1") == "StandAlone"
    });
    p
}

/// [`split_brain`] up to the heal, with `policy` added to `net { }`. With `dual`, the resource
/// allows two primaries and node-2 is promoted before the cut (the live-migration setup).
fn partitioned(net: &NetnsPair, handler_log: &std::path::Path, policy: &str, dual: bool) -> Pair {
    let policy = if dual {
        format!("{policy} allow-two-primaries yes;")
    } else {
        policy.to_string()
    };
    // The split-brain handlers leave a line per call (DRBD's environment) in `handler_log`.
    let log = handler_log.display();
    let extra = format!(
        "{TIMERS}\n    net {{ {policy} }}\n    handlers {{ initial-split-brain \"echo initial $UDRBD_NODE $DRBD_RESOURCE \
         $DRBD_PEER_NODE_ID >> {log}\"; split-brain \"echo unresolved $UDRBD_NODE \
         $DRBD_RESOURCE $DRBD_PEER_NODE_ID >> {log}\"; }}"
    );
    let mut p = pair_setup(&Setup {
        extra: &extra,
        addresses: Some([net.address(0, PORT), net.address(1, PORT)]),
        ..Setup::default()
    });
    net.host(&mut p.a, 0);
    net.host(&mut p.b, 1);
    p.up();
    // The daemons really run inside (drbdadm and qemu-io reach them from outside: the sockets
    // are paths).
    for (i, n) in [&p.a, &p.b].into_iter().enumerate() {
        let pid = n.daemon.as_ref().expect("running").id() as i32;
        assert!(
            net.pids(i).contains(&pid),
            "{}'s daemon ({pid}) is not in {}",
            n.name,
            net.ns(i)
        );
    }
    // The how-to: fresh devices, no initial sync, node-1 Primary.
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", "--force", RES]).ok();
    p.eventually(10, "UpToDate/UpToDate", || {
        status(&p.a).contains("    peer-disk:UpToDate")
            && status(&p.b).starts_with("res0 role:Secondary\n  disk:UpToDate open:no\n")
    });
    if dual {
        p.b.adm(&["primary", RES]).ok();
        p.eventually(10, "both Primary", || {
            status(&p.a).contains("node-2 role:Primary")
                && status(&p.b).contains("node-1 role:Primary")
        });
    }
    write(&p, &p.a, &[(0..4 * MIB, P0)]);
    assert_data(&p, &p.disk_b, &expected(&[]), "P0 on node-2 before the cut");

    net.cut();
    p.eventually(15, "both nodes to notice the cut", || {
        conn(&p.a, "node-2") != "Connected" && conn(&p.b, "node-1") != "Connected"
    });
    p.eventually(10, "both nodes Connecting", || {
        conn(&p.a, "node-2") == "Connecting" && conn(&p.b, "node-1") == "Connecting"
    });
    if dual {
        write(&p, &p.a, &PA);
        write(&p, &p.b, &PB);
        return p;
    }
    // The how-to's `fencing resource-only` with no fence-peer handler: fence-peer "returns 0"
    // (helper broken), so a plain promote is refused (-7) and --force makes the split brain.
    let r = p.b.adm(&["primary", RES]);
    assert_eq!(r.code, 11, "{r:#?}\n{}", p.logs());
    assert!(
        r.stderr
            .contains("(-7) Refusing to be Primary while peer is not outdated"),
        "{r:#?}"
    );
    p.b.adm(&["primary", "--force", RES]).ok();
    write(&p, &p.a, &PA);
    write(&p, &p.b, &PB);

    p
}

/// Two rows of the after-split-brain table with real daemons: with one Primary left,
/// `after-sb-1pri discard-secondary` throws away the Secondary's changes; with none,
/// `after-sb-0pri discard-node-node-1` names the loser. Both resolve without the operator.
#[test]
fn after_sb_policies_resolve_automatically() {
    for (row, demote, loser) in [
        ("after-sb-1pri discard-secondary;", ["node-2"].as_slice(), 1),
        (
            "after-sb-0pri discard-node-node-1;",
            ["node-1", "node-2"].as_slice(),
            0,
        ),
    ] {
        let Some(net) = NetnsPair::new() else { return };
        let hl = handler_log(&format!("auto-{loser}"));
        let p = partitioned(&net, &hl, row, false);
        for n in [&p.a, &p.b] {
            if demote.contains(&n.name.as_str()) {
                n.adm(&["secondary", RES]).ok();
            }
        }
        net.heal();
        p.wait_sync();
        p.eventually(20, "UpToDate on both", || {
            status(&p.a).contains("peer-disk:UpToDate")
                && status(&p.b).contains("peer-disk:UpToDate")
                && status(&p.a).contains("  disk:UpToDate open:no\n")
                && status(&p.b).contains("  disk:UpToDate open:no\n")
        });
        let (winner, winner_writes) = if loser == 1 {
            (&p.a, &PA[..])
        } else {
            (&p.b, &PB[..])
        };
        assert!(
            winner
                .log_text()
                .contains("automatically solved. Sync from this node"),
            "{row}: {}",
            p.logs()
        );
        p.assert_identical();
        assert_data(&p, &p.disk_a, &expected(winner_writes), row);
        let _ = std::fs::remove_file(&hl);
    }
}

/// Where a test's handlers write.
fn handler_log(test: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "split-brain-handlers-{test}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn split_brain_detected_after_partition() {
    let Some(net) = NetnsPair::new() else { return };
    let hl = handler_log("detected");
    let p = split_brain(&net, &hl);
    for n in [&p.a, &p.b] {
        let log = n.log_text();
        assert!(
            log.contains(SB_UNRESOLVED),
            "{} did not log {SB_UNRESOLVED:?}; logs:\n{}",
            n.name,
            p.logs()
        );
        assert!(
            log.contains(SB_COMPARE),
            "{} did not log {SB_COMPARE:?}; its uuid_compare() lines: {:?}\nlogs:\n{}",
            n.name,
            log.lines()
                .filter(|l| l.contains("uuid_compare()"))
                .collect::<Vec<_>>(),
            p.logs()
        );
        assert!(
            !log.contains("SyncSource") && !log.contains("SyncTarget"),
            "{} started a resync; logs:\n{}",
            n.name,
            p.logs()
        );
    }
    // StandAlone stays StandAlone: no retries behind the operator's back.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(conn(&p.a, "node-2"), "StandAlone", "{}", p.logs());
    assert_eq!(conn(&p.b, "node-1"), "StandAlone", "{}", p.logs());
    for n in [&p.a, &p.b] {
        assert!(status(n).starts_with("res0 role:Primary\n  disk:UpToDate open:no\n"));
    }
    // No data moved: each node has its own writes, the overlap included.
    assert_data(&p, &p.disk_a, &expected(&PA), "node-1's data");
    assert_data(&p, &p.disk_b, &expected(&PB), "node-2's data");
    // Both handlers ran on both nodes, with DRBD's environment (node-1 is node-id 0).
    p.eventually(5, "the split-brain handlers", || {
        let calls = std::fs::read_to_string(&hl).unwrap_or_default();
        [
            "initial node-1 res0 1",
            "initial node-2 res0 0",
            "unresolved node-1 res0 1",
            "unresolved node-2 res0 0",
        ]
        .iter()
        .all(|c| calls.lines().any(|l| l == *c))
    });
    let _ = std::fs::remove_file(&hl);
}

#[test]
fn split_brain_manual_recovery() {
    let Some(net) = NetnsPair::new() else { return };
    let hl = handler_log("recovery");
    let p = split_brain(&net, &hl);
    // The survivor is Primary: it may not discard its data.
    let r = p.a.adm(&["connect", "--discard-my-data", RES]);
    assert_eq!(
        r.code,
        10,
        "connect --discard-my-data on a Primary: {r:#?}\nlogs:\n{}",
        p.logs()
    );
    assert!(
        format!("{}{}", r.stdout, r.stderr)
            .contains("(123) --discard-my-data not allowed when primary."),
        "{r:#?}"
    );
    assert_eq!(conn(&p.a, "node-2"), "StandAlone", "{}", p.logs());
    // The how-to's recovery, victim first.
    p.b.adm(&["secondary", RES]).ok();
    p.b.adm(&["connect", "--discard-my-data", RES]).ok();
    p.a.adm(&["connect", RES]).ok();
    p.eventually(20, "node-2 to become SyncTarget", || {
        p.b.log_text().contains("-> SyncTarget )")
    });
    p.wait_sync();
    p.eventually(10, "UpToDate on both", || {
        status(&p.a) == "res0 role:Primary\n  disk:UpToDate open:no\n  node-2 role:Secondary\n    peer-disk:UpToDate\n\n"
            && status(&p.b)
                == "res0 role:Secondary\n  disk:UpToDate open:no\n  node-1 role:Primary\n    peer-disk:UpToDate\n\n"
    });
    let (la, lb) = (p.a.log_text(), p.b.log_text());
    assert!(
        lb.contains("Split-Brain detected, manually solved. Sync from peer node")
            && la.contains("Split-Brain detected, manually solved. Sync from this node"),
        "{}",
        p.logs()
    );
    // node-1's writes win, the overlap included; node-2's are rolled back.
    p.assert_identical();
    assert_data(
        &p,
        &p.disk_b,
        &expected(&PA),
        "node-2's data after the recovery",
    );
    // Rolled back from the bitmaps (both sides' changes: 1 MiB to 4 MiB, plus activity-log
    // extents at 4 MiB granularity), not a full sync of the device.
    let moved: u64 = resync_kib(&la).iter().sum();
    assert!(
        moved >= 3 * 1024 && moved < (DATA / 1024) as u64 / 2,
        "the recovery resynced {moved} KiB; logs:\n{}",
        p.logs()
    );
    // And online verify agrees: no block differs.
    p.assert_verify_clean();
}

/// Two Primaries before the cut (`allow-two-primaries`), both writing during it: the default
/// `after-sb-2pri disconnect` leaves both StandAlone, and the Proxmox how-to's recovery runs
/// verbatim on the victim (`disconnect`, `secondary`, `-- --discard-my-data connect`) and the
/// survivor (`connect`); once both are UpToDate the victim is promoted again and online verify
/// finds nothing.
#[test]
fn split_brain_with_two_primaries_and_the_how_to_recovery() {
    let Some(net) = NetnsPair::new() else { return };
    let hl = handler_log("dual");
    let p = partitioned(&net, &hl, "", true);
    net.heal();
    p.eventually(20, "StandAlone on both nodes after the heal", || {
        conn(&p.a, "node-2") == "StandAlone" && conn(&p.b, "node-1") == "StandAlone"
    });
    for n in [&p.a, &p.b] {
        assert!(
            n.log_text().contains("Split-Brain detected but unresolved"),
            "{}: {}",
            n.name,
            p.logs()
        );
        assert!(status(n).starts_with("res0 role:Primary\n  disk:UpToDate open:no\n"));
    }
    for args in [
        &["disconnect", RES][..],
        &["secondary", RES],
        &["--", "--discard-my-data", "connect", RES],
    ] {
        let r = p.b.adm(args);
        assert_eq!(
            r.code,
            0,
            "drbdadm {args:?} on the victim: {r:#?}\n{}",
            p.logs()
        );
    }
    p.a.adm(&["connect", RES]).ok();
    p.wait_sync();
    p.eventually(20, "UpToDate/UpToDate", || {
        status(&p.a).contains("peer-disk:UpToDate") && status(&p.b).contains("peer-disk:UpToDate")
    });
    p.b.adm(&["primary", RES]).ok();
    p.eventually(10, "both Primary again", || {
        status(&p.a).contains("node-2 role:Primary")
            && status(&p.b).starts_with("res0 role:Primary")
    });
    p.assert_identical();
    assert_data(
        &p,
        &p.disk_b,
        &expected(&PA),
        "node-2's data after the recovery",
    );
    p.assert_verify_clean();
    let _ = std::fs::remove_file(&hl);
}

/// The older how-to's form (`drbdadm -- --discard-my-data connect data2`) means the same as
/// `connect --discard-my-data`: compared on what drbdadm would send (`--dry-run`), no daemon.
#[test]
fn the_older_discard_my_data_form_parses() {
    let p = pair("");
    let new = p.a.adm(&["-d", "connect", "--discard-my-data", RES]).ok();
    let old =
        p.a.adm(&["-d", "--", "--discard-my-data", "connect", RES])
            .ok();
    assert_eq!(old.stdout, new.stdout);
    let plain = p.a.adm(&["-d", "connect", RES]).ok();
    assert_ne!(plain.stdout, new.stdout, "--discard-my-data was dropped");
    assert!(new.stdout.contains("discard_my_data"), "{}", new.stdout);
}
