//! The NBD export over TLS with real clients: libnbd's `nbdinfo` and `qemu-io`, with x509
//! certificates and with a pre-shared key (`nbd-tls require`), a plain client refused, `LIST`
//! showing only what the client may use, and `nbd-allow` by address and by TLS name.
//! Traffic goes only to 127.0.0.1.

mod common;

#[path = "common/certs.rs"]
mod certs;

use common::{Node, backing_file, scratch, tool};
use std::path::Path;

const SIZE: u64 = 64 << 20;

/// Writes a one-resource config (node alpha, its peer beta never runs) serving NBD on `port`
/// with `options` in `options { }`; returns its path.
fn config(dir: &Path, port: u16, options: &str) -> std::path::PathBuf {
    let (disk_a, disk_b) = (dir.join("alpha.img"), dir.join("beta.img"));
    backing_file(&disk_a, SIZE);
    backing_file(&disk_b, SIZE);
    let text = format!(
        "resource r0 {{\n  device minor 0;\n  meta-disk internal;\n  \
         options {{ nbd-listen 127.0.0.1:{port}; {options} }}\n  \
         on alpha {{ node-id 0; address 127.0.0.1:{}; disk \"{}\"; }}\n  \
         on beta {{ node-id 1; address 127.0.0.1:{}; disk \"{}\"; }}\n}}\n",
        common::free_port(),
        disk_a.display(),
        common::free_port(),
        disk_b.display()
    );
    let cfg = dir.join("drbd.conf");
    std::fs::write(&cfg, text).expect("config");
    cfg
}

/// [`config`], up and Primary.
fn node(dir: &Path, port: u16, options: &str) -> Node {
    let cfg = config(dir, port, options);
    let mut n = Node::new(dir, "alpha", &cfg);
    n.adm(&["create-md", "r0"]).ok();
    n.start();
    n.adm(&["up", "r0"]).ok();
    n.adm(&["primary", "--force", "r0"]).ok();
    n
}

/// Runs a client; returns (success, stdout + stderr).
fn run(program: &str, args: &[&str]) -> (bool, String) {
    let o = tool(program, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn qemu_io(creds: &str, port: u16, cmds: &[&str]) -> (bool, String) {
    let opts = format!("driver=nbd,host=localhost,port={port},export=r0,tls-creds=tls0");
    let mut args = vec!["--object", creds, "--image-opts", &opts];
    for c in cmds {
        args.extend(["-c", c]);
    }
    run("qemu-io", &args)
}

#[test]
fn x509_tls_serves_nbdinfo_and_qemu_io_and_refuses_plain_clients() {
    let dir = scratch();
    let pki = certs::Pki::new(dir.path(), "ca");
    let server = pki.issue("localhost");
    // The clients' certificate directory, as libnbd and qemu expect it.
    let client_dir = dir.path().join("client");
    std::fs::create_dir(&client_dir).unwrap();
    std::fs::copy(pki.ca_file(), client_dir.join("ca-cert.pem")).unwrap();
    let port = common::free_port();
    let n = node(
        dir.path(),
        port,
        &format!(
            "nbd-tls require; nbd-tls-certificate-file \"{}\"; nbd-tls-privkey-file \"{}\";",
            server.certificate, server.privkey
        ),
    );
    let tls_uri = format!(
        "nbds://localhost:{port}/r0?tls-certificates={}",
        client_dir.display()
    );
    let (ok, out) = run("nbdinfo", &["--size", &tls_uri]);
    assert!(ok, "{out}\n{}", n.log_text());
    assert!(out.trim().parse::<u64>().is_ok_and(|s| s > 0), "{out}");
    let creds = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=client",
        client_dir.display()
    );
    let (ok, out) = qemu_io(&creds, port, &["write -P 0x5c 0 64k", "read -P 0x5c 0 64k"]);
    assert!(ok && !out.contains("Pattern verification failed"), "{out}");
    // The same data through the local Unix socket: TLS is for TCP clients only.
    let (ok, out) = run(
        "qemu-io",
        &["-f", "raw", "-c", "read -P 0x5c 0 64k", &n.nbd_uri("r0")],
    );
    assert!(ok && !out.contains("failed"), "{out}");

    // A client without TLS: refused, told why; LIST shows it nothing.
    let plain = format!("nbd://127.0.0.1:{port}/r0");
    let (ok, out) = run("nbdinfo", &["--size", &plain]);
    assert!(!ok, "a plain client was served: {out}");
    assert!(out.contains("TLS"), "{out}");
    let (_, out) = run("nbdinfo", &["--list", &format!("nbd://127.0.0.1:{port}")]);
    assert!(!out.contains("r0"), "LIST showed a TLS-only export: {out}");
    let (ok, out) = run("nbdinfo", &["--list", &tls_uri]);
    assert!(ok && out.contains("r0"), "{out}");

    // A client that trusts another CA refuses our certificate.
    let other = certs::Pki::new(dir.path(), "other");
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    std::fs::copy(other.ca_file(), other_dir.join("ca-cert.pem")).unwrap();
    let (ok, _) = run(
        "nbdinfo",
        &[
            "--size",
            &format!(
                "nbds://localhost:{port}/r0?tls-certificates={}",
                other_dir.display()
            ),
        ],
    );
    assert!(!ok);
}

#[test]
fn psk_tls_and_allow_lists_by_address_and_by_tls_name() {
    let dir = scratch();
    let psk = dir.path().join("keys.psk");
    std::fs::write(
        &psk,
        "alice:0123456789abcdef0123456789abcdef\nbob:fedcba9876543210fedcba9876543210\n",
    )
    .unwrap();
    let port = common::free_port();
    // Only alice, and only over TLS (a name counts only when TLS proved it).
    let n = node(
        dir.path(),
        port,
        &format!(
            "nbd-tls on; nbd-tls-psk-file \"{}\"; nbd-allow \"192.0.2.0/24 alice\";",
            psk.display()
        ),
    );
    let uri = |user: &str| {
        format!(
            "nbds://{user}@127.0.0.1:{port}/r0?tls-psk-file={}",
            psk.display()
        )
    };
    let (ok, out) = run("nbdinfo", &["--size", &uri("alice")]);
    assert!(ok, "{out}\n{}", n.log_text());
    let (ok, out) = run("nbdinfo", &["--size", &uri("bob")]);
    assert!(!ok, "bob is not on the allow list: {out}");
    let refusals = |n: &Node| {
        n.log_text()
            .matches("may not use export 'r0' (nbd-allow)")
            .count()
    };
    assert_eq!(refusals(&n), 1, "{}", n.log_text());
    // 127.0.0.1 is not in 192.0.2.0/24: a plain client is refused by the allow list.
    let (ok, out) = run(
        "nbdinfo",
        &["--size", &format!("nbd://127.0.0.1:{port}/r0")],
    );
    assert!(!ok, "{out}");
    assert_eq!(refusals(&n), 2, "{}", n.log_text());
    let (_, out) = run("nbdinfo", &["--list", &format!("nbd://127.0.0.1:{port}")]);
    assert!(!out.contains("r0"), "{out}");

    // qemu with the same key (its PSK directory holds keys.psk).
    let creds = format!(
        "tls-creds-psk,id=tls0,dir={},username=alice,endpoint=client",
        dir.path().display()
    );
    let (ok, out) = qemu_io(
        &creds,
        port,
        &["write -P 0x6d 1M 64k", "read -P 0x6d 1M 64k"],
    );
    assert!(ok && !out.contains("Pattern verification failed"), "{out}");
    // A wrong key for alice fails the handshake.
    let wrong_dir = dir.path().join("wrong");
    std::fs::create_dir(&wrong_dir).unwrap();
    std::fs::write(
        wrong_dir.join("keys.psk"),
        "alice:00000000000000000000000000000000\n",
    )
    .unwrap();
    let creds = format!(
        "tls-creds-psk,id=tls0,dir={},username=alice,endpoint=client",
        wrong_dir.display()
    );
    let (ok, out) = qemu_io(&creds, port, &["read 0 4k"]);
    assert!(!ok, "{out}");
}

#[test]
fn bad_nbd_tls_settings_are_refused_at_up_with_the_reason() {
    let dir = scratch();
    let port = common::free_port();
    for (options, expect) in [
        ("nbd-tls require;", "nbd-tls needs"),
        (
            "nbd-tls-psk-file \"/nonexistent\";",
            "nbd-tls-* files are set but nbd-tls is off",
        ),
        (
            "nbd-tls on; nbd-tls-psk-file \"/nonexistent\";",
            "/nonexistent",
        ),
        ("nbd-allow \"10.0.0.0/40\";", "0 to 32"),
        // The peer link's TLS is checked at `up` too.
        (
            "} net { tls yes;",
            "`tls yes` needs tls-ca-file, tls-certificate-file and tls-privkey-file",
        ),
        (
            "} net { tls yes; tls-ca-file \"/nonexistent\"; tls-certificate-file \"/x\"; tls-privkey-file \"/y\";",
            "cannot use the TLS certificate '/x'",
        ),
        (
            "} net { tls-privkey \"key-1\";",
            "tls-privkey names a key in the kernel keyring",
        ),
    ] {
        let cfg = config(dir.path(), port, options);
        let mut n = Node::new(dir.path(), "alpha", &cfg);
        n.adm(&["create-md", "--force", "r0"]).ok();
        n.start();
        let r = n.adm(&["up", "r0"]);
        assert_ne!(r.code, 0, "{options}");
        assert!(r.stderr.contains(expect), "{options}: {}", r.stderr);
        n.stop();
    }
}
