//! The attack from the security issue, with real daemons on loopback: while node-2 is away, a
//! third udrbd that claims to be node-2 (the how-to's config: no `shared-secret`) dials node-1
//! from an address that is not node-2's. node-1 refuses it before a byte is exchanged: no
//! handshake, no sync, nothing written to node-1's backing file.

mod common;

use common::{Node, backing_file, free_port, scratch, tool};
use std::path::Path;
use std::time::Duration;

const DISK: u64 = 64 << 20;

fn config(path: &Path, node2: &str, p1: u16, disk1: &Path, disk2: &Path) {
    std::fs::write(
        path,
        format!(
            "resource r0 {{\n  net {{ connect-int 1; }}\n  meta-disk internal;\n  device minor 0;\n  \
             on node-1 {{ node-id 0; address 127.0.0.1:{p1}; disk \"{}\"; }}\n  \
             on node-2 {{ node-id 1; address {node2}; disk \"{}\"; }}\n}}\n",
            disk1.display(),
            disk2.display()
        ),
    )
    .expect("config");
}

#[test]
fn an_impostor_from_another_address_is_refused_and_writes_nothing() {
    let dir = scratch();
    let (disk1, disk2, fake) = (
        dir.path().join("node-1.img"),
        dir.path().join("node-2.img"),
        dir.path().join("impostor.img"),
    );
    for d in [&disk1, &disk2, &fake] {
        backing_file(d, DISK);
    }
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let real = dir.path().join("real.conf");
    config(&real, &format!("127.0.0.1:{p2}"), p1, &disk1, &disk2);
    // The impostor's copy: node-2 lives at 127.0.0.2, with the impostor's disk.
    let forged = dir.path().join("forged.conf");
    config(&forged, &format!("127.0.0.2:{p3}"), p1, &disk1, &fake);

    let mut n1 = Node::new(dir.path(), "node-1", &real);
    n1.adm(&["create-md", "r0"]).ok();
    n1.start();
    n1.adm(&["up", "r0"]).ok();
    n1.adm(&["primary", "--force", "r0"]).ok();
    let w = tool(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x11 0 1M", &n1.nbd_uri("r0")],
    );
    assert!(w.status.success(), "{w:?}");
    n1.adm(&["secondary", "r0"]).ok();

    let imp_dir = dir.path().join("impostor");
    std::fs::create_dir_all(&imp_dir).expect("dir");
    let mut imp = Node::new(&imp_dir, "node-2", &forged);
    imp.adm(&["create-md", "r0"]).ok();
    imp.start();
    imp.adm(&["up", "r0"]).ok();
    imp.adm(&["primary", "--force", "r0"]).ok();
    let w = tool(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x66 0 1M", &imp.nbd_uri("r0")],
    );
    assert!(w.status.success(), "{w:?}");

    // Several connect-int rounds.
    let refused = "connection refused: not from the address configured for peer 1";
    let t0 = std::time::Instant::now();
    while !n1.log_text().contains(refused) {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "node-1 never saw the impostor; logs:\n{}\n{}",
            n1.log_text(),
            imp.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let logs = format!("{}\n{}", n1.log_text(), imp.log_text());
    assert!(!logs.contains("Handshake to peer"), "{logs}");
    assert!(!logs.contains("uuid_compare"), "{logs}");
    assert_eq!(
        n1.adm(&["cstate", "r0"]).ok().stdout,
        "Connecting\n",
        "{logs}"
    );
    let data = std::fs::read(&disk1).expect("node-1's disk");
    assert!(
        data[..1 << 20].iter().all(|&b| b == 0x11),
        "the impostor's data reached node-1"
    );
    drop(imp);
    drop(n1);
}
