//! Growing the backing devices of a running pair, as an administrator does with `lvextend`:
//! both grown while the resource was down (internal metadata left at the old end), then up
//! again: the metadata is found and moved, the peers agree on the larger size, the new area
//! is resynced, and the old data is untouched. A pair where only one side grew keeps its size.

mod common;

use common::pair::{Pair, RES, pair};
use common::{Node, qemu_io, tool};

const GROWN: u64 = 96 << 20;
/// The online test grows by 256 MiB, as an `lvextend -L +256M` would.
const GROWN_ONLINE: u64 = (64 + 256) << 20;

/// The replicas are equal (memcmp first: the byte loop is only for the message).
fn assert_same(a: &[u8], b: &[u8], p: &Pair) {
    if a != b {
        let i = (0..a.len()).find(|&i| a[i] != b[i]).unwrap_or(0);
        panic!("the replicas differ at byte {i}; logs:\n{}", p.logs());
    }
}

fn export_size(n: &Node) -> u64 {
    let o = tool("nbdinfo", &["--size", &n.nbd_uri(RES)]);
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("nbdinfo --size")
}

/// After a growth to `new_size`: the old data reads back (`read_cmd`), a write at the new end
/// reaches both disks, the replicas are identical up to the new size (the new area was
/// resynced), and verify finds nothing.
fn grown_device_holds_and_replicates(p: &Pair, read_cmd: &str, new_size: u64) {
    let out = qemu_io(&p.a, RES, read_cmd);
    assert!(!out.contains("Pattern verification failed"), "{out}");
    qemu_io(
        &p.a,
        RES,
        &format!("write -P 0x77 {} 1M", new_size - (1 << 20)),
    );
    p.wait_sync();
    let a = std::fs::read(&p.disk_a).expect("read a");
    let b = std::fs::read(&p.disk_b).expect("read b");
    let n = new_size as usize;
    assert_same(&a[..n], &b[..n], p);
    assert!(b[n - (1 << 20)..n] == [0x77; 1 << 20][..]);
    p.assert_verify_clean();
}

/// A synced pair with a pattern written through node-1, then both down.
fn written_pair() -> (Pair, u64) {
    let mut p = pair("net { verify-alg crc32c; }");
    p.up();
    p.a.adm(&["primary", "--force", RES]).ok();
    p.wait_sync();
    qemu_io(&p.a, RES, "write -P 0x5a 1M 4M");
    let size = export_size(&p.a);
    p.a.adm(&["secondary", RES]).ok();
    for n in [&p.a, &p.b] {
        n.adm(&["down", RES]).ok();
    }
    (p, size)
}

fn grow(path: &std::path::Path) {
    grow_to(path, GROWN);
}

fn grow_to(path: &std::path::Path, size: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open backing file");
    f.set_len(size).expect("grow");
    // What used to be past the end is not zero on a real LV; make it visible if it leaks.
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0xee; 4096], size - 8 * 4096)
        .expect("scribble");
}

#[test]
fn both_backing_devices_grown_offline_grow_the_device_and_resync_the_new_area() {
    let (p, old_size) = written_pair();
    grow(&p.disk_a);
    grow(&p.disk_b);
    // node-1 as drbd-utils' scripts do it (`drbdadm check-resize` before `up`), node-2 lets
    // the daemon find the metadata at attach.
    let moved = p.a.adm(&["check-resize", RES]).ok();
    assert!(
        moved.stdout.contains("moved the meta data to its new end"),
        "{moved:#?}"
    );
    assert_eq!(p.a.adm(&["check-resize", RES]).ok().stdout, "");
    for n in [&p.a, &p.b] {
        n.adm(&["up", RES]).ok();
    }
    p.eventually(30, "connected and in sync after the growth", || p.in_sync());
    assert!(
        p.b.log_text()
            .contains("moved the meta data to its new end"),
        "{}",
        p.logs()
    );
    for n in [&p.a, &p.b] {
        let log = n.log_text();
        assert!(log.contains("both disks grew: device size"), "{}", p.logs());
    }
    let new_size = export_size(&p.a);
    assert!(new_size > old_size + (30 << 20), "{old_size} -> {new_size}");
    assert_eq!(export_size(&p.b), new_size);
    // The old data is where it was, on both nodes.
    p.a.adm(&["primary", RES]).ok();
    grown_device_holds_and_replicates(&p, "read -P 0x5a 1M 4M", new_size);
}

#[test]
fn a_grown_node_keeps_the_agreed_size_while_its_peer_did_not_grow() {
    let (p, old_size) = written_pair();
    grow(&p.disk_a);
    for n in [&p.a, &p.b] {
        n.adm(&["up", RES]).ok();
    }
    p.eventually(30, "connected and in sync", || p.in_sync());
    assert_eq!(export_size(&p.a), old_size);
    assert_eq!(export_size(&p.b), old_size);
    assert!(!p.a.log_text().contains("both disks grew"), "{}", p.logs());
}

#[test]
fn resize_grows_a_running_pair_while_a_client_writes() {
    let mut p = pair("net { verify-alg crc32c; }");
    p.up();
    p.a.adm(&["primary", "--force", RES]).ok();
    p.wait_sync();
    qemu_io(&p.a, RES, "write -P 0x5a 16M 4M");
    let old_size = export_size(&p.a);
    grow_to(&p.disk_a, GROWN_ONLINE);
    grow_to(&p.disk_b, GROWN_ONLINE);
    // Nothing changes by itself while up: the device keeps its size.
    assert_eq!(export_size(&p.a), old_size);
    // Resized on the Secondary while the Primary's application writes.
    let load = common::fio_load(&p.a.nbd_uri(RES), "resize", 4);
    std::thread::sleep(std::time::Duration::from_millis(500));
    p.b.adm(&["resize", RES]).ok();
    common::fio_ok(load, &p.logs());
    p.eventually(60, "grown and in sync", || {
        p.in_sync() && export_size(&p.a) > old_size + (250 << 20)
    });
    for n in [&p.a, &p.b] {
        assert!(
            n.log_text().contains("the backing device grew"),
            "{}",
            p.logs()
        );
        assert!(
            n.log_text().contains("both disks grew: device size"),
            "{}",
            p.logs()
        );
    }
    let new_size = export_size(&p.a);
    grown_device_holds_and_replicates(&p, "read -P 0x5a 16M 4M", new_size);
    // The metadata is at the new end: a restart finds it.
    p.a.adm(&["secondary", RES]).ok();
    for n in [&p.a, &p.b] {
        n.adm(&["down", RES]).ok();
        n.adm(&["up", RES]).ok();
    }
    p.eventually(30, "connected again at the new size", || p.in_sync());
    assert_eq!(export_size(&p.b), new_size);
    // --size beyond what the backing device holds: drbdsetup's (111), exit 10
    // (drbd_nl.c drbd_adm_resize(): ERR_DISK_TOO_SMALL).
    let r = p.a.adm(&["resize", "--size", "1G", RES]);
    assert_eq!(r.code, 10, "{r:#?}");
    assert!(
        r.stderr
            .contains("Failure: (111) Low.dev. smaller than requested DRBD-dev. size."),
        "{r:#?}"
    );
    // Not a size: a usage error.
    let r = p.a.adm(&["resize", "--size", "lots", RES]);
    assert_eq!(r.code, 1, "{r:#?}");
}

/// `resize --size` below the current size on a connected pair: both shrink (what lies beyond
/// is cut off), clients see the new size, a write past the new end is refused, and the
/// replicas stay equal; a restart keeps the size. Then `resize` without `--size` grows back
/// to what the disks hold, and the area that came back is resynced.
#[test]
fn resize_with_size_shrinks_a_connected_pair_explicitly() {
    let mut p = pair("net { verify-alg crc32c; }");
    p.up();
    p.a.adm(&["primary", "--force", RES]).ok();
    p.wait_sync();
    qemu_io(&p.a, RES, "write -P 0x5a 1M 4M");
    let old_size = export_size(&p.a);
    p.b.adm(&["resize", "--size=32M", RES]).ok();
    // (A Secondary's export refuses clients; node-1 is the Primary.)
    p.eventually(30, "32 MiB", || export_size(&p.a) == 32 << 20);
    assert!(
        p.b.log_text().contains("device size") && p.a.log_text().contains("Peer sets u_size"),
        "{}",
        p.logs()
    );
    // Past the new end: the NBD protocol's ENOSPC for a write.
    let o = tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 1 40M 4k",
            &format!("nbd+unix:///{RES}?socket={}", p.a.nbd_sock().display()),
        ],
    );
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !o.status.success() || out.contains("error") || out.contains("Input/output"),
        "a write past the end succeeded: {out}"
    );
    let out = qemu_io(&p.a, RES, "read -P 0x5a 1M 4M");
    assert!(!out.contains("Pattern verification failed"), "{out}");
    p.assert_verify_clean();
    // `resize` without --size: as large as both disks allow again, the area resynced.
    p.a.adm(&["resize", RES]).ok();
    p.eventually(30, "grown back", || {
        p.in_sync() && export_size(&p.a) == old_size
    });
    grown_device_holds_and_replicates(&p, "read -P 0x5a 1M 4M", old_size);
}

/// `disk { size }` in the config limits the device from `up` on (and a shrink with
/// `resize --size` lasts across restarts only through it, as in DRBD, where the user size is
/// part of the running disk options, not of the metadata).
#[test]
fn disk_size_in_the_config_limits_the_device() {
    let mut p = pair("disk { size 32M; }");
    p.up();
    p.a.adm(&["primary", "--force", RES]).ok();
    p.wait_sync();
    assert_eq!(export_size(&p.a), 32 << 20);
    // No warning that it has no effect: it has one.
    assert!(!p.a.adm(&["dump", RES]).ok().stderr.contains("no effect"));
    // A changed size is applied by adjust (drbdadm adjust runs `drbdsetup resize --size`).
    for n in [&p.a, &p.b] {
        let cfg = std::fs::read_to_string(&n.config).expect("config");
        std::fs::write(&n.config, cfg.replace("size 32M;", "size 48M;")).expect("config");
    }
    let dry = p.a.adm(&["-d", "adjust", RES]).ok().stdout;
    assert!(dry.contains("drbdsetup resize 0 --size=98304s"), "{dry}");
    p.a.adm(&["adjust", RES]).ok();
    p.eventually(30, "48 MiB and in sync", || {
        export_size(&p.a) == 48 << 20 && p.in_sync()
    });
    // The peer took the new size over with the online resize (as DRBD's does): its own adjust
    // finds nothing left to resize. (Run while that resize is still under way, it answers
    // DRBD's `(-18) In transient state, retry after next state change`.)
    let dry = p.b.adm(&["-d", "adjust", RES]).ok().stdout;
    assert!(!dry.contains("resize"), "{dry}");
    p.b.adm(&["adjust", RES]).ok();
    assert_eq!(export_size(&p.a), 48 << 20);
}
