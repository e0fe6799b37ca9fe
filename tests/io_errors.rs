//! `on-io-error detach` with real daemons: the Secondary's backing device starts failing
//! writes in one region (`UDRBD_FAULT_FILE`, a dm-error in user space); the node detaches,
//! the Primary's writes still succeed and are marked for it; once the disk is mended,
//! `drbdadm attach` brings it back and exactly what it missed is resynced.

mod common;

use common::pair::{RES, pair, resync_kib, status};
use common::tool;

const MIB: u64 = 1 << 20;

fn qemu_write(uri: &str, pattern: u8, offset: u64, len: u64) -> std::process::Output {
    tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            &format!("write -P {pattern:#04x} {offset} {len}"),
            "-c",
            "flush",
            uri,
        ],
    )
}

#[test]
fn a_failing_secondary_detaches_and_attach_resyncs_what_it_missed() {
    let mut p =
        pair("disk { on-io-error detach; c-plan-ahead 0; resync-rate 100M; c-min-rate 0; }");
    let faults = p._dir.path().join("faults-node-2");
    std::fs::write(&faults, "").expect("fault file");
    p.b.daemon_env
        .push(("UDRBD_FAULT_FILE".into(), faults.display().to_string()));
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.eventually(10, "UpToDate/UpToDate", || {
        status(&p.a).contains("    peer-disk:UpToDate")
    });
    let uri = p.a.nbd_uri(RES);
    let o = qemu_write(&uri, 0x11, 0, 8 * MIB);
    assert!(o.status.success(), "{o:?}");

    // node-2's disk goes bad between 2 and 3 MiB.
    std::fs::write(&faults, format!("write {} {}\n", 2 * MIB, MIB)).expect("fault file");
    let o = qemu_write(&uri, 0x22, 0, 8 * MIB);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "the Primary's write failed although its disk is fine: {o:?}\n{}",
        p.logs()
    );
    p.eventually(10, "node-2 Diskless", || {
        status(&p.b).starts_with("res0 role:Secondary\n  disk:Diskless client:no open:no\n")
    });
    let lb = p.b.log_text();
    assert!(
        lb.contains("Local IO failed in WRITE") && lb.contains("Detaching..."),
        "{}",
        p.logs()
    );
    // More writes while it is away: marked on node-1.
    let o = qemu_write(&uri, 0x33, 20 * MIB, MIB);
    assert!(o.status.success(), "{o:?}");

    // Mended; attach: Inconsistent, then a resync of the marked blocks only.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(&faults, "").expect("fault file");
    p.b.adm(&["attach", RES]).ok();
    p.eventually(30, "node-2 UpToDate again", || {
        status(&p.b).starts_with("res0 role:Secondary\n  disk:UpToDate open:no\n")
            && status(&p.a).contains("peer-disk:UpToDate")
    });
    p.assert_identical();
    let moved: u64 = resync_kib(&p.a.log_text()).iter().sum();
    assert!(
        (1024..16 * 1024).contains(&moved),
        "attach resynced {moved} KiB (expected the failed region and what was written \
         meanwhile, not the device)\n{}",
        p.logs()
    );
}
