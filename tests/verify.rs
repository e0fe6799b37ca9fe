//! Online verify and checksum-based resync with two real daemons on loopback: a block
//! corrupted by hand in the Secondary's backing file is found by `drbdadm verify` with its
//! offset, marked out of sync and repaired by `invalidate --reset-bitmap=no` on that node;
//! with `csums-alg` a full resync of identical data sends (almost) no data bytes.

mod common;

use common::pair::{DATA, Pair, RES, pair, status};
use common::tool;
use std::io::{Read, Seek, SeekFrom, Write};

const MIB: u64 = 1 << 20;

/// Fixed-rate resync and verify (20 MiB/s: a 60 MiB verify takes a few seconds, long enough
/// to see its progress).
const PACE: &str = "disk { c-plan-ahead 0; resync-rate 20M; c-min-rate 0; }";

/// Up, the initial sync skipped, node-1 Primary with `mib` MiB of a pattern written.
fn ready(extra: &str, mib: u64) -> Pair {
    let mut p = pair(extra);
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.eventually(10, "UpToDate/UpToDate", || {
        status(&p.a).contains("    peer-disk:UpToDate")
    });
    let o = tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            &format!("write -P 0x5c 0 {}", mib * MIB),
            "-c",
            "flush",
            &p.a.nbd_uri(RES),
        ],
    );
    assert!(o.status.success(), "qemu-io: {o:?}\n{}", p.logs());
    p
}

/// Flips one byte at `offset` of a backing file, behind the daemon's back.
fn corrupt(disk: &std::path::Path, offset: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .expect("open backing file");
    let mut b = [0u8];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut b).expect("read");
    b[0] ^= 0xff;
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&b).expect("write");
    f.sync_all().expect("sync");
}

/// Runs `drbdadm verify` on node-1 and waits for the end; returns node-1's log line.
fn verify(p: &Pair) -> String {
    let before = p.a.log_text().matches("Online verify found").count();
    p.a.adm(&["verify", RES]).ok();
    let mut line = String::new();
    p.eventually(60, "the verify to finish", || {
        let log = p.a.log_text();
        match log
            .lines()
            .filter(|l| l.contains("Online verify found"))
            .nth(before)
        {
            Some(l) => {
                line = l.to_string();
                true
            }
            None => false,
        }
    });
    line
}

#[test]
fn verify_finds_a_corrupted_block_and_invalidate_repairs_it() {
    // DRBD 9's out-of-sync and before-resync-source handlers run where DRBD runs them.
    let p = ready(
        &format!(
            "net {{ verify-alg sha256; }} {PACE} handlers {{ out-of-sync \"echo oos-handler-$DRBD_RESOURCE\"; before-resync-source \"echo brs-handler-$DRBD_PEER_NODE_ID\"; }}"
        ),
        8,
    );
    // The Secondary's disk silently changes one byte in block 1283 (5 MiB + 3 blocks).
    let block = 5 * MIB / 4096 + 3;
    corrupt(&p.disk_b, block * 4096 + 1234);

    p.a.adm(&["verify", RES]).ok();
    // Progress shows like a resync's, on both nodes.
    p.eventually(10, "VerifyS in status", || {
        let s = status(&p.a);
        s.contains("replication:VerifyS") && s.contains(" done:")
    });
    p.eventually(10, "VerifyT on the peer", || {
        status(&p.b).contains("replication:VerifyT")
            || p.b.log_text().contains("Online verify found")
    });
    p.eventually(60, "the verify to finish", || {
        p.a.log_text().contains("Online verify found")
    });
    let (la, lb) = (p.a.log_text(), p.b.log_text());
    let range = format!("Out of sync: start={}, size=8 (sectors)", block * 8);
    for (name, log) in [("node-1", &la), ("node-2", &lb)] {
        assert!(
            log.contains("Online verify found 1 4k block out of sync!"),
            "{name}:\n{}",
            p.logs()
        );
        assert!(
            log.contains(&range),
            "{name} did not log {range:?}:\n{}",
            p.logs()
        );
    }
    p.eventually(10, "the out-of-sync handler", || {
        p.a.log_text().contains("oos-handler-res0")
    });
    // Marked, not resynced (DRBD 9): 4 KiB out of sync on both sides.
    for n in [&p.a, &p.b] {
        let st = n.adm(&["status", "--statistics", RES]).ok().stdout;
        // drbdsetup prints `out-of-sync:` last without --verbose.
        assert!(st.contains(" out-of-sync:4\n"), "{}:\n{st}", n.name);
    }
    // The node with the bad data resyncs the marked blocks from its peer.
    p.b.adm(&["invalidate", "--reset-bitmap=no", RES]).ok();
    p.wait_sync();
    p.eventually(10, "both UpToDate", || {
        status(&p.b).starts_with("res0 role:Secondary\n  disk:UpToDate open:no\n")
            && status(&p.a).contains("peer-disk:UpToDate")
    });
    p.assert_identical();
    assert!(
        p.a.log_text()
            .contains("Began resync as SyncSource (will sync 4 KB [1 bits set])."),
        "not a 4 KiB resync:\n{}",
        p.logs()
    );
    assert!(
        p.a.log_text().contains("brs-handler-1"),
        "before-resync-source did not run on the source:\n{}",
        p.logs()
    );
    assert!(
        verify(&p).ends_with("Online verify found 0 4k block out of sync!"),
        "{}",
        p.logs()
    );
}

#[test]
fn verify_without_verify_alg_is_refused() {
    let p = ready("", 1);
    let r = p.a.adm(&["verify", RES]);
    assert_eq!(r.code, 11, "{r:#?}");
    assert!(
        r.stderr
            .contains("(-14) Need a verify algorithm to start online verify"),
        "{r:#?}"
    );
}

/// `sent:` KiB toward node-2 in node-1's `status --statistics`.
fn sent_kib(p: &Pair) -> u64 {
    let st = p.a.adm(&["status", "--statistics", RES]).ok().stdout;
    st.split_whitespace()
        .find_map(|w| w.strip_prefix("sent:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sent: in\n{st}"))
}

#[test]
fn csums_resync_of_identical_data_sends_no_data() {
    let p = ready(&format!("net {{ csums-alg sha1; }} {PACE}"), 16);
    let before = sent_kib(&p);
    // A full resync of a device whose blocks are all the same on both sides already.
    p.b.adm(&["invalidate", RES]).ok();
    p.eventually(10, "the resync to start", || {
        p.b.log_text().contains("-> SyncTarget )")
    });
    p.wait_sync();
    p.eventually(10, "node-2 UpToDate", || {
        status(&p.b).starts_with("res0 role:Secondary\n  disk:UpToDate open:no\n")
    });
    p.assert_identical();
    let sent = sent_kib(&p) - before;
    let total = DATA as u64 / 1024;
    assert!(
        sent < total / 100,
        "a resync of {total} KiB of identical data sent {sent} KiB of data\n{}",
        p.logs()
    );
    let lb = p.b.log_text();
    assert!(
        lb.contains("100 % had equal checksums, eliminated: ") && lb.contains("transferred 0K"),
        "{}",
        p.logs()
    );
}

/// `data-integrity-alg`: writes carry digests and are checked on arrival; a healthy link
/// replicates as before.
#[test]
fn data_integrity_alg_replicates_with_digests() {
    let p = ready("net { data-integrity-alg crc32c; }", 8);
    p.assert_identical();
    let log = p.b.log_text();
    assert!(
        !log.contains("Digest integrity check FAILED"),
        "{}",
        p.logs()
    );
    assert!(status(&p.a).contains("peer-disk:UpToDate"), "{}", p.logs());
}

/// An algorithm udrbd does not have is refused at `up` with the names it does have, and the
/// daemon goes on serving (here: the other node's resource and status).
#[test]
fn an_unknown_digest_algorithm_is_refused_at_up() {
    let mut p = pair("net { verify-alg md5; }");
    for n in [&mut p.a, &mut p.b] {
        n.adm(&["create-md", RES]).ok();
        n.start();
    }
    let r = p.a.adm(&["up", RES]);
    assert_eq!(r.code, 10, "{r:#?}");
    assert!(
        r.stderr.contains("verify-alg 'md5'") && r.stderr.contains("crc32c, sha1, sha256, sha512"),
        "{r:#?}"
    );
    // Nothing was set up, and the daemon still answers.
    let st = p.a.adm(&["status", RES]);
    assert_ne!(st.code, 0, "{st:#?}");
    assert!(
        p.a.adm(&["status"]).code == 0,
        "the daemon stopped answering: {}",
        p.logs()
    );
}
