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

/// `drbdadm detach --force` on a Secondary under a writer on the Primary (DRBD's
/// `drbd_adm_detach()` with `force`: `change_disk_state(D_DETACHING, CS_HARD)`, then
/// `tl_abort_disk_io()`): the disk goes at once along the path of a local I/O error, the
/// Primary's writer sees no error (the peer's aborted writes come back as NegAck and are marked
/// there), and `attach` resyncs what the disk missed.
#[test]
fn detach_force_on_a_secondary_under_load_then_attach_resyncs() {
    let mut p = pair(SETUP);
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.eventually(10, "UpToDate/UpToDate", || in_sync(&p));

    let job = common::fio_load(&p.a.nbd_uri(RES), "detach-force-secondary", 5);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    p.b.adm(&["detach", "--force", RES]).ok();
    p.eventually(10, "node-2 Diskless, still connected", || {
        status(&p.b).starts_with("res0 role:Secondary\n  disk:Diskless client:no open:no\n")
            && status(&p.a).contains("peer-disk:Diskless")
    });
    let lb = p.b.log_text();
    assert!(
        lb.contains("detach --force: detaching now") && lb.contains("disk( UpToDate -> Failed )"),
        "{}",
        p.logs()
    );
    common::fio_ok(job, &p.logs());
    assert!(out_of_sync_kib(&p.a) > 0, "{}", p.logs());

    // Comes back Inconsistent, as after an I/O error; the resync brings it UpToDate.
    p.b.adm(&["attach", RES]).ok();
    p.eventually(60, "node-2 UpToDate again", || in_sync(&p));
    p.assert_identical();
}

/// `drbdsetup detach MINOR --force` on a Primary under a writer: the disk goes at once, the
/// node stays Primary and goes on as a Diskless Primary (DRBD 9): reads are served by the
/// UpToDate peer, writes go to the peer only (it marks them for this node), and fio sees no
/// error. A client that connects meanwhile sees the whole device. `attach` brings the disk
/// back and resyncs what it missed from the peer while Primary.
#[test]
fn detach_force_on_a_primary_under_load_goes_on_through_the_peer() {
    let mut p = pair(SETUP);
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.eventually(10, "UpToDate/UpToDate", || in_sync(&p));
    let uri = p.a.nbd_uri(RES);
    // fio writes the first 8 MiB; this stays as written.
    let o = qemu_io(&uri, "write -P 0x5a 16M 1M");
    assert!(o.status.success(), "{o:?}");

    let job = common::fio_load(&uri, "detach-force-primary", 5);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // drbdsetup takes the minor (`device /dev/drbd0`); an unknown one is the kernel's
    // ERR_MINOR_INVALID (drbd_nl.c `drbd_adm_prepare()`), which drbdsetup.c's
    // `print_config_error()` prints as "MINOR: Failure: (127) Device minor not allocated",
    // exit code 10, then the kernel's info text ("unknown minor").
    let none = p.a.setup(&["detach", "7", "--force"]);
    assert_eq!(none.code, 10, "{none:?}");
    assert_eq!(
        none.stderr,
        "7: Failure: (127) Device minor not allocated\nadditional info from kernel:\nunknown minor\n"
    );
    p.a.setup(&["detach", "0", "--force"]).ok();
    p.eventually(10, "node-1 Diskless and still Primary", || {
        status(&p.a).starts_with("res0 role:Primary\n  disk:Diskless client:no")
    });
    // Requests the disk had when it went fail (DRBD fails what the detached disk held); the
    // rest, and everything after, goes through the peer.
    let out = job.wait_with_output().expect("fio");
    let fio_err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || fio_err.contains("Input/output error"),
        "fio: {out:?}\n{}",
        p.logs()
    );
    let job = common::fio_load(&uri, "on-the-diskless-primary", 2);
    common::fio_ok(job, &p.logs());

    // A new client sees the whole device, reads what the peer has, and writes to it.
    let o = qemu_io(&uri, "read -P 0x5a 16M 1M");
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("read 1048576/1048576 bytes at offset 16777216")
            && !said.contains("Pattern verification failed"),
        "a read on the Diskless Primary is not served by the peer: {o:?}\n{}",
        p.logs()
    );
    let o = qemu_io(&uri, "write -P 0x33 20M 64k");
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{o:?}\n{}",
        p.logs()
    );
    assert!(out_of_sync_kib(&p.b) >= 64, "{}", p.logs());

    p.a.adm(&["attach", RES]).ok();
    p.eventually(60, "node-1 UpToDate again", || {
        let (a, b) = (status(&p.a), status(&p.b));
        a.starts_with("res0 role:Primary\n  disk:UpToDate")
            && a.contains("peer-disk:UpToDate")
            && !a.contains("replication:")
            && b.contains("disk:UpToDate")
    });
    // What the Diskless Primary wrote came back with the resync (read from the local disk).
    let o = qemu_io(&uri, "read -P 0x33 20M 64k");
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("Pattern verification failed"),
        "{o:?}\n{}",
        p.logs()
    );
    let o = qemu_io(&uri, "write -P 0x44 20M 64k");
    assert!(o.status.success(), "{o:?}\n{}", p.logs());
    p.assert_identical();
}
