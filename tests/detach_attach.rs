//! A disk detached and attached again while connected, with real daemons: the Primary marks
//! what it writes meanwhile, and the attach resyncs exactly that before the node counts as
//! UpToDate (DRBD's attach on a connected device). Before the core rebuild the attach came
//! back Consistent, nothing was resynced, a reconnect decided "no-sync by rule=reconnected",
//! and the acknowledged write was gone once the node that had it was killed.

mod common;

use common::pair::{Pair, RES, pair, status};
use common::tool;

/// Fixed-rate resync and verify, fast enough for a test.
const SETUP: &str =
    "net { verify-alg crc32c; } disk { c-plan-ahead 0; resync-rate 100M; c-min-rate 0; }";

fn qemu_io(uri: &str, cmd: &str) -> std::process::Output {
    tool("qemu-io", &["-f", "raw", "-c", cmd, uri])
}

/// `status --statistics` of `n`'s view of its peer: `out-of-sync:` in KiB (0 when absent,
/// as drbdsetup prints it only when non-zero).
fn out_of_sync_kib(n: &common::Node) -> u64 {
    let st = n.adm(&["status", "--statistics", RES]).ok().stdout;
    st.split_whitespace()
        .find_map(|w| w.strip_prefix("out-of-sync:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn in_sync(p: &Pair) -> bool {
    status(&p.b).starts_with("res0 role:Secondary\n  disk:UpToDate open:no\n")
        && status(&p.a).contains("peer-disk:UpToDate")
        && !status(&p.a).contains("replication:")
}

#[test]
fn detach_and_attach_while_connected_resyncs_what_the_primary_wrote_meanwhile() {
    let mut p = pair(SETUP);
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.eventually(10, "UpToDate/UpToDate", || in_sync(&p));

    p.b.adm(&["detach", RES]).ok();
    p.eventually(10, "node-2 Diskless, still connected", || {
        status(&p.b).starts_with("res0 role:Secondary\n  disk:Diskless client:no open:no\n")
            && status(&p.a).contains("peer-disk:Diskless")
    });
    let uri = p.a.nbd_uri(RES);
    let o = qemu_io(&uri, "write -P 0xab 4M 1M");
    assert!(o.status.success(), "{o:?}\n{}", p.logs());
    assert_eq!(out_of_sync_kib(&p.a), 1024, "{}", p.logs());

    p.b.adm(&["attach", RES]).ok();
    // A second attach is refused with drbdsetup's text and exit code.
    let again = p.b.adm(&["attach", RES]);
    assert_eq!(again.code, 10, "{again:?}");
    assert!(
        again
            .stderr
            .contains("(124) Device is attached to a disk (use detach first)"),
        "{again:?}"
    );
    p.eventually(30, "the attach's resync to end", || in_sync(&p));
    assert_eq!(out_of_sync_kib(&p.a), 0, "{}", p.logs());
    assert_eq!(out_of_sync_kib(&p.b), 0, "{}", p.logs());
    assert!(
        p.a.log_text()
            .contains("Began resync as SyncSource (will sync 1024 KB"),
        "{}",
        p.logs()
    );
    p.assert_identical();

    // A reconnect finds nothing to do, and nothing silently differs.
    p.b.adm(&["disconnect", RES]).ok();
    p.b.adm(&["connect", RES]).ok();
    p.eventually(20, "connected again", || in_sync(&p));
    p.assert_verify_clean();

    // node-2 has the acknowledged write: it survives node-1's death.
    p.a.crash();
    p.eventually(20, "node-2 to see node-1 gone", || {
        !status(&p.b).contains("peer-disk:UpToDate")
    });
    let r = p.b.adm(&["primary", RES]);
    if r.code != 0 {
        // `fencing resource-only` without a fence-peer handler cannot prove node-1 Outdated:
        // the operator takes that responsibility.
        p.b.adm(&["primary", "--force", RES]).ok();
    }
    let o = qemu_io(&p.b.nbd_uri(RES), "read -P 0xab 4M 1M");
    assert!(
        o.status.success()
            && !String::from_utf8_lossy(&o.stdout).contains("Pattern verification failed"),
        "the acknowledged write is not on node-2: {o:?}\n{}",
        p.logs()
    );
}
