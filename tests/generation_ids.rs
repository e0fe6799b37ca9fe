//! The generation identifiers with real daemons: `get-gi`/`show-gi` from the running daemon
//! (drbdsetup's, which drbd-utils' drbdadm prints while the device has a disk) and from the
//! metadata otherwise (drbdmeta's), and `forget-peer` online and offline, after which the next
//! connection to that peer resyncs the whole device.

mod common;

use common::pair::{Pair, RES, pair, resync_kib, status};
use common::tool;

/// Fixed-rate resync, fast enough for a full sync of the test device.
const SETUP: &str = "disk { c-plan-ahead 0; resync-rate 200M; c-min-rate 0; }";

/// The fields of a `get-gi` line: 4 UUIDs, then 12 flags.
fn gi_fields(line: &str) -> Vec<String> {
    let fields: Vec<String> = line.trim().split(':').map(str::to_string).collect();
    assert_eq!(fields.len(), 16, "a get-gi line: {line:?}");
    fields
}

fn qemu_write(p: &Pair, cmd: &str) {
    let o = tool(
        "qemu-io",
        &["-f", "raw", "-c", cmd, "-c", "flush", &p.a.nbd_uri(RES)],
    );
    assert!(o.status.success(), "{o:?}\n{}", p.logs());
}

/// `NAME:N` of node-1's `status --verbose --statistics` (`size:`, `out-of-sync:`), 0 when
/// absent.
fn stat_kib(p: &Pair, name: &str) -> u64 {
    let st =
        p.a.adm(&["status", "--verbose", "--statistics", RES])
            .ok()
            .stdout;
    st.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix(':')?.parse().ok())
        .unwrap_or(0)
}

/// The KiB of the last resync node-1 began as SyncSource.
fn last_resync_kib(p: &Pair) -> u64 {
    resync_kib(&p.a.log_text()).last().copied().unwrap_or(0)
}

#[test]
fn get_gi_comes_from_the_daemon_while_attached() {
    let mut p = pair(SETUP);
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.eventually(10, "UpToDate/UpToDate", || p.in_sync());

    // drbdadm get-gi while attached prints what `drbdsetup get-gi RES PEER VOL` prints.
    let adm = p.a.adm(&["get-gi", RES]).ok().stdout;
    let setup = p.a.setup(&["get-gi", RES, "1", "0"]).ok().stdout;
    assert_eq!(adm, setup);
    let f = gi_fields(&setup);
    // The daemon's view: consistent, up to date, Primary; the AL is in use (not clean).
    assert_eq!(&f[4..9], ["1", "1", "1", "0", "0"], "{setup}");
    // show-gi: drbdsetup's legend, without drbdmeta's size lines.
    let show = p.a.adm(&["show-gi", RES]).ok().stdout;
    assert_eq!(show, p.a.setup(&["show-gi", RES, "1", "0"]).ok().stdout);
    assert!(show.contains(setup.trim()), "{show}");
    assert!(show.contains("-<  Data consistency flag  >--+"), "{show}");
    assert!(!show.contains("last agreed size"), "{show}");

    // drbdsetup's words and exit codes (drbd-utils user/v9/drbdsetup.c,
    // show_or_get_gi_cmd()): no such peer device, exit 10; a device without a disk, exit 1.
    let r = p.a.setup(&["get-gi", RES, "7", "0"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (10, "res0: No such peer device\n")
    );
    let r = p.a.setup(&["get-gi", RES, "1", "1"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (10, "res0: No such peer device\n")
    );
    let r = p.a.setup(&["get-gi", "nosuch", "1", "0"]);
    assert_eq!(r.code, 10, "{r:?}");

    p.b.adm(&["detach", RES]).ok();
    let r = p.b.setup(&["get-gi", RES, "0", "0"]);
    assert_eq!((r.code, r.stderr.as_str()), (1, "Device has no disk\n"));
    // drbdadm then reads the metadata (adm_setup_and_meta() falls back to drbdmeta): what
    // the detach left, clean.
    let off = p.b.adm(&["get-gi", RES]).ok().stdout;
    assert_eq!(&gi_fields(&off)[4..9], ["1", "1", "0", "0", "1"], "{off}");
    p.b.adm(&["disconnect", RES]).ok();
    let r = p.b.setup(&["get-gi", RES, "0", "0"]);
    assert_eq!((r.code, r.stderr.as_str()), (1, "Device is unconfigured\n"));
}

/// `forget-peer` (DRBD's `drbd_adm_forget_peer()`, drbd-utils' `adm_forget_peer()`): refused
/// while the connection is configured, as DRBD's `ERR_NET_CONFIGURED`: drbdsetup prints
/// "Failure: (125) Device has a net-config (use disconnect first)" and exits 10 (drbdsetup.c
/// `print_config_error()`: codes above 100 are "Failure: (N)", exit 10). drbd-utils' drbdadm
/// runs that drbdsetup silently and then drbdmeta, which refuses the attached device ("Device
/// '0' is configured!", exit 20); udrbd's drbdadm shows drbdsetup's reason instead. Once
/// StandAlone, the peer's bitmap UUID and flags go and its bitmap is all set: the next
/// connection resyncs everything, where without forget-peer it would resync what was written.
#[test]
fn forget_peer_online_then_offline_each_leads_to_a_full_sync() {
    let mut p = pair(SETUP);
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    p.eventually(10, "UpToDate/UpToDate", || p.in_sync());

    let r = p.a.adm(&["forget-peer", "res0:node-2"]);
    assert_eq!(r.code, 10, "{r:?}");
    assert!(
        r.stderr
            .contains("res0: Failure: (125) Device has a net-config (use disconnect first)"),
        "{r:?}"
    );
    let r = p.a.setup(&["forget-peer", RES, "1"]);
    assert_eq!(r.code, 10, "{r:?}");
    assert!(r.stderr.contains("(125) Device has a net-config"), "{r:?}");
    // DRBD_NODE_ID_MAX is 32: ERR_INVALID_PEER_NODE_ID, whose text ends in a newline.
    let r = p.a.setup(&["forget-peer", RES, "32"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (10, "res0: Failure: (171) Invalid peer-node-id\n\n")
    );

    // StandAlone, and a write: the old generation becomes node-2's bitmap UUID.
    p.a.adm(&["disconnect", RES]).ok();
    qemu_write(&p, "write -P 0x11 0 1M");
    let before = gi_fields(&p.a.adm(&["get-gi", RES]).ok().stdout);
    assert_ne!(before[1], "0000000000000000", "{before:?}");
    p.a.adm(&["forget-peer", "res0:node-2"]).ok();
    let after = gi_fields(&p.a.adm(&["get-gi", RES]).ok().stdout);
    assert_eq!(after[0], before[0]);
    assert_eq!(after[1], "0000000000000000", "{after:?}");
    // udrbd keeps no day-0 UUID: the forgotten generation is history, so node-2's data is
    // still recognised as an older generation (a full sync, not "unrelated data").
    assert_eq!(after[2], before[1], "{after:?}");
    assert_eq!(&after[11..], ["0", "0", "0", "0", "0"], "{after:?}");
    let size_kib = stat_kib(&p, "size");
    assert!(size_kib > 60 << 10, "size:{size_kib}");
    assert_eq!(
        stat_kib(&p, "out-of-sync"),
        size_kib,
        "every block marked for node-2\n{}",
        p.logs()
    );

    p.a.adm(&["connect", RES]).ok();
    p.eventually(60, "the full sync", || p.in_sync());
    assert_eq!(last_resync_kib(&p), size_kib, "{}", p.logs());
    p.assert_identical();

    // Offline: node-2 leaves, node-1 writes and goes down; forget-peer edits the metadata.
    p.b.adm(&["down", RES]).ok();
    p.eventually(10, "node-1 alone", || {
        !status(&p.a).contains("peer-disk:UpToDate")
    });
    qemu_write(&p, "write -P 0x22 4M 1M");
    p.a.adm(&["secondary", RES]).ok();
    p.a.adm(&["down", RES]).ok();
    let before = gi_fields(&p.a.adm(&["get-gi", RES]).ok().stdout);
    assert_ne!(before[1], "0000000000000000", "{before:?}");
    p.a.adm(&["forget-peer", RES]).ok();
    let after = gi_fields(&p.a.adm(&["get-gi", RES]).ok().stdout);
    assert_eq!(
        (after[1].as_str(), after[2].as_str()),
        ("0000000000000000", before[1].as_str()),
        "{after:?}"
    );
    let dump = p.a.adm(&["dump-md", RES]).ok().stdout;
    assert!(
        dump.contains(&format!("# bits-set {};", size_kib / 4)),
        "{}",
        dump.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );

    p.a.adm(&["up", RES]).ok();
    p.b.adm(&["up", RES]).ok();
    p.eventually(60, "the second full sync", || p.in_sync());
    assert_eq!(last_resync_kib(&p), size_kib, "{}", p.logs());
    p.assert_identical();
}
