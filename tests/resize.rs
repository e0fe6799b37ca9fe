//! Growing the backing devices of a running pair, as an administrator does with `lvextend`:
//! both grown while the resource was down (internal metadata left at the old end), then up
//! again: the metadata is found and moved, the peers agree on the larger size, the new area
//! is resynced, and the old data is untouched. A pair where only one side grew keeps its size.

mod common;

use common::pair::{Pair, RES, pair, status};
use common::{Node, tool};

const GROWN: u64 = 96 << 20;

fn export_size(n: &Node) -> u64 {
    let o = tool("nbdinfo", &["--size", &n.nbd_uri(RES)]);
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("nbdinfo --size")
}

fn qemu_io(n: &Node, cmd: &str) -> String {
    let o = tool(
        "qemu-io",
        &["-f", "raw", "-c", cmd, "-c", "flush", &n.nbd_uri(RES)],
    );
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn in_sync(p: &Pair) -> bool {
    let (a, b) = (status(&p.a), status(&p.b));
    !a.contains("connection:")
        && !b.contains("connection:")
        && a.contains("disk:UpToDate")
        && b.contains("disk:UpToDate")
        && a.contains("peer-disk:UpToDate")
        && b.contains("peer-disk:UpToDate")
        && !a.contains("replication:")
        && !b.contains("replication:")
}

/// A synced pair with a pattern written through node-1, then both down.
fn written_pair() -> (Pair, u64) {
    let mut p = pair("net { verify-alg crc32c; }");
    p.up();
    p.a.adm(&["primary", "--force", RES]).ok();
    p.wait_sync();
    qemu_io(&p.a, "write -P 0x5a 1M 4M");
    let size = export_size(&p.a);
    p.a.adm(&["secondary", RES]).ok();
    for n in [&p.a, &p.b] {
        n.adm(&["down", RES]).ok();
    }
    (p, size)
}

fn grow(path: &std::path::Path) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open backing file");
    f.set_len(GROWN).expect("grow");
    // What used to be past the end is not zero on a real LV; make it visible if it leaks.
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0xee; 4096], GROWN - 8 * 4096)
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
    p.eventually(30, "connected and in sync after the growth", || in_sync(&p));
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
    let out = qemu_io(&p.a, "read -P 0x5a 1M 4M");
    assert!(!out.contains("Pattern verification failed"), "{out}");
    // The new area was resynced: the replicas are identical up to the new size.
    let a = std::fs::read(&p.disk_a).expect("read a");
    let b = std::fs::read(&p.disk_b).expect("read b");
    let n = new_size as usize;
    if let Some(i) = (0..n).find(|&i| a[i] != b[i]) {
        panic!("the replicas differ at byte {i}; logs:\n{}", p.logs());
    }
    // And writes reach the new area on both.
    qemu_io(&p.a, &format!("write -P 0x77 {} 1M", new_size - (1 << 20)));
    p.wait_sync();
    let b = std::fs::read(&p.disk_b).expect("read b");
    assert!(b[n - (1 << 20)..n].iter().all(|&x| x == 0x77));
    p.assert_verify_clean();
}

#[test]
fn a_grown_node_keeps_the_agreed_size_while_its_peer_did_not_grow() {
    let (p, old_size) = written_pair();
    grow(&p.disk_a);
    for n in [&p.a, &p.b] {
        n.adm(&["up", RES]).ok();
    }
    p.eventually(30, "connected and in sync", || in_sync(&p));
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
    qemu_io(&p.a, "write -P 0x5a 1M 4M");
    let old_size = export_size(&p.a);
    grow(&p.disk_a);
    grow(&p.disk_b);
    // Nothing changes by itself while up: the device keeps its size.
    assert_eq!(export_size(&p.a), old_size);
    p.a.adm(&["resize", RES]).ok();
    p.eventually(30, "grown and in sync", || {
        in_sync(&p) && export_size(&p.a) > old_size + (30 << 20)
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
    let out = qemu_io(&p.a, "read -P 0x5a 1M 4M");
    assert!(!out.contains("Pattern verification failed"), "{out}");
    qemu_io(&p.a, &format!("write -P 0x77 {} 1M", new_size - (1 << 20)));
    p.wait_sync();
    let a = std::fs::read(&p.disk_a).expect("read a");
    let b = std::fs::read(&p.disk_b).expect("read b");
    let n = new_size as usize;
    if let Some(i) = (0..n).find(|&i| a[i] != b[i]) {
        panic!("the replicas differ at byte {i}; logs:\n{}", p.logs());
    }
    p.assert_verify_clean();
    // The metadata is at the new end: a restart finds it.
    p.a.adm(&["secondary", RES]).ok();
    for n in [&p.a, &p.b] {
        n.adm(&["down", RES]).ok();
        n.adm(&["up", RES]).ok();
    }
    p.eventually(30, "connected again at the new size", || in_sync(&p));
    assert_eq!(export_size(&p.b), new_size);
    // --size is refused with a reason, not ignored.
    let r = p.a.adm(&["resize", "--size", "80M", RES]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains("--size"), "{r:#?}");
}
