//! The attack from the security issue, with real daemons on loopback: while node-2 is away, a
//! third udrbd that claims to be node-2 (the how-to's config: no `shared-secret`) dials node-1
//! from an address that is not node-2's. node-1 refuses it before a byte is exchanged: no
//! handshake, no sync, nothing written to node-1's backing file.

mod common;

#[path = "common/certs.rs"]
mod certs;

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

#[test]
fn up_warns_about_an_unauthenticated_peer_on_a_real_network_and_not_with_a_secret_or_tls() {
    // The peer's address must be a real (non-loopback) one: a network namespace pair of ours.
    let Some(net) = common::netns::NetnsPair::new() else {
        return;
    };
    let dir = scratch();
    let (d1, d2) = (dir.path().join("n1.img"), dir.path().join("n2.img"));
    backing_file(&d1, DISK);
    backing_file(&d2, DISK);
    let pki = certs::Pki::new(dir.path(), "ca");
    let id = pki.issue("node-1");
    let tls = format!(
        "connect-int 1; tls yes; tls-ca-file \"{}\"; tls-certificate-file \"{}\"; \
         tls-privkey-file \"{}\";",
        id.ca, id.certificate, id.privkey
    );
    for (net_opts, warned) in [
        ("connect-int 1;", true),
        (
            "connect-int 1; cram-hmac-alg sha256; shared-secret \"s3cret\";",
            false,
        ),
        (tls.as_str(), false),
    ] {
        let case = tempfile::tempdir_in(dir.path()).expect("case dir");
        let cfg = case.path().join("drbd.conf");
        std::fs::write(
            &cfg,
            format!(
                "resource r0 {{\n  net {{ {net_opts} }}\n  meta-disk internal;\n  device minor 0;\n  \
                 on node-1 {{ node-id 0; address {}; disk \"{}\"; }}\n  \
                 on node-2 {{ node-id 1; address {}; disk \"{}\"; }}\n}}\n",
                net.address(0, 7789),
                d1.display(),
                net.address(1, 7789),
                d2.display()
            ),
        )
        .expect("config");
        let mut n = Node::new(case.path(), "node-1", &cfg);
        net.host(&mut n, 0);
        n.adm(&["create-md", "--force", "r0"]).ok();
        n.start();
        n.adm(&["up", "r0"]).ok();
        let log = n.log_text();
        assert_eq!(
            log.contains("the link to node-2 is not authenticated"),
            warned,
            "{net_opts}: {log}"
        );
        n.adm(&["down", "r0"]).ok();
        n.stop();
    }
}
