//! The daemon's NBD export with real third-party clients: libnbd's nbdinfo, nbdcopy and Python
//! bindings, and qemu's qemu-io and qemu-img. One node, real daemon process, Unix socket.

mod common;

use common::{Node, backing_file, http_get, scratch, tool, tool_env};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Backing size: room for a 256 MiB image plus the metadata.
const SIZE: u64 = 260 << 20;

/// A one-resource config for node `alpha` (peer `beta` never runs).
fn config(dir: &Path, extra_options: &str) -> std::path::PathBuf {
    config_with(dir, extra_options, "")
}

/// [`config`] with extra statements in alpha's `on` section.
fn config_with(dir: &Path, extra_options: &str, alpha_extra: &str) -> std::path::PathBuf {
    let disk_a = dir.join("alpha.img");
    let disk_b = dir.join("beta.img");
    backing_file(&disk_a, SIZE);
    backing_file(&disk_b, SIZE);
    let (pa, pb) = (common::free_port(), common::free_port());
    let text = format!(
        "resource r0 {{\n    device minor 0;\n    meta-disk internal;\n    options {{ {extra_options} }}\n    \
         on alpha {{ node-id 0; address 127.0.0.1:{pa}; disk \"{}\"; {alpha_extra} }}\n    \
         on beta {{ node-id 1; address 127.0.0.1:{pb}; disk \"{}\"; }}\n}}\n",
        disk_a.display(),
        disk_b.display()
    );
    let p = dir.join("drbd.conf");
    std::fs::write(&p, text).expect("config");
    p
}

/// A node that is up, with fresh metadata; Primary when `primary`.
fn node(dir: &Path, extra_options: &str, primary: bool) -> Node {
    let cfg = config(dir, extra_options);
    let mut n = Node::new(dir, "alpha", &cfg);
    n.adm(&["create-md", "r0"]).ok();
    n.start();
    n.adm(&["up", "r0"]).ok();
    if primary {
        n.adm(&["primary", "--force", "r0"]).ok();
    }
    n
}

fn ok_output(program: &str, args: &[&str]) -> String {
    let o = tool(program, args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "{program} {args:?} failed:\n{out}\n{err}"
    );
    out
}

/// qemu-io commands against the export; fails on any error or pattern mismatch.
fn qemu_io(uri: &str, cmds: &[&str]) -> String {
    let mut args = vec!["-f", "raw"];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(uri);
    let out = ok_output("qemu-io", &args);
    assert!(
        !out.contains("failed") && !out.contains("error"),
        "qemu-io reported a failure:\n{out}"
    );
    out
}

/// A random file of `len` bytes (deterministic).
fn random_file(path: &Path, len: usize, seed: u64) {
    let mut x = seed | 1;
    let mut buf = vec![0u8; len];
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    std::fs::write(path, &buf).expect("random file");
}

fn same_prefix(a: &Path, b: &Path, len: u64) {
    let ra = std::fs::read(a).expect("read a");
    let rb = std::fs::read(b).expect("read b");
    let n = len as usize;
    assert!(ra.len() >= n && rb.len() >= n, "short files");
    assert!(
        ra[..n] == rb[..n],
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

/// A libnbd client (Python bindings) that connects, prints "connected" and waits until killed:
/// an application holding the device open.
fn holder(uri: &str) -> Child {
    let mut c = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import nbd,sys\nh=nbd.NBD()\nh.connect_uri(sys.argv[1])\nprint('connected',flush=True)\nsys.stdin.read()",
            uri,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3-libnbd");
    let mut line = [0u8; 10];
    let mut got = 0;
    if let Some(out) = c.stdout.as_mut() {
        while got < line.len() {
            match out.read(&mut line[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    }
    if &line[..got] != b"connected\n" {
        let mut err = String::new();
        if let Some(e) = c.stderr.as_mut() {
            let _ = e.read_to_string(&mut err);
        }
        panic!("holder did not connect: {err}");
    }
    c
}

fn wait_for_role(n: &Node, want: &str) {
    let t0 = Instant::now();
    loop {
        let r = n.adm(&["role", "r0"]).ok();
        if r.stdout.trim() == want {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "role stayed {}",
            r.stdout
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn nbdinfo_shows_name_size_block_sizes_and_map() {
    let dir = scratch();
    let n = node(dir.path(), "", true);
    let uri = n.nbd_uri("r0");
    let json = ok_output("nbdinfo", &["--json", &uri]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("nbdinfo json");
    let e = &v["exports"][0];
    assert_eq!(e["export-name"], "r0", "{json}");
    assert_eq!(e["block_size_minimum"], 512, "{json}");
    assert_eq!(e["block_size_preferred"], 4096, "{json}");
    let size = e["export-size"].as_u64().expect("size");
    assert!(size > 255 << 20 && size < SIZE, "size {size}");
    assert_eq!(e["can_flush"], true, "{json}");
    assert_eq!(e["can_fua"], true, "{json}");
    assert_eq!(e["can_trim"], true, "{json}");
    assert_eq!(e["can_zero"], true, "{json}");
    assert_eq!(e["can_multi_conn"], true, "{json}");

    // A fresh sparse file is one hole; after a write the map shows data at the front.
    qemu_io(&uri, &["write -P 0x11 0 1M"]);
    let map = ok_output("nbdinfo", &["--map", &uri]);
    let first = map.lines().next().unwrap_or_default();
    assert!(first.contains("data"), "map:\n{map}");
    assert!(map.contains("hole"), "map:\n{map}");

    // LIST: the export is listed with its description.
    let list = ok_output(
        "nbdinfo",
        &[
            "--list",
            &format!("nbd+unix://?socket={}", n.nbd_sock().display()),
        ],
    );
    assert!(list.contains("r0"), "{list}");
}

#[test]
fn qemu_io_patterns_round_trip_at_aligned_unaligned_and_512_byte_offsets() {
    let dir = scratch();
    let n = node(dir.path(), "", true);
    let uri = n.nbd_uri("r0");
    qemu_io(
        &uri,
        &[
            "write -P 0xaa 0 128k",
            "write -P 0xbb 512 512",
            "write -P 0xcc 5120 3072",
            "write -P 0xdd 1048064 1024",
            "aio_write -P 0xee 2M 64k",
            "aio_write -P 0xef 3M 64k",
            "aio_flush",
            "read -P 0xaa 0 512",
            "read -P 0xbb 512 512",
            "read -P 0xaa 1024 4096",
            "read -P 0xcc 5120 3072",
            "read -P 0xaa 8192 120k",
            "read -P 0xdd 1048064 1024",
            "read -P 0xee 2M 64k",
            "read -P 0xef 3M 64k",
        ],
    );
}

#[test]
fn nbdcopy_256_mib_in_and_out_is_byte_identical_also_with_4_connections() {
    let dir = scratch();
    let n = node(dir.path(), "", true);
    let uri = n.nbd_uri("r0");
    let img = dir.path().join("random.img");
    random_file(&img, 256 << 20, 7);
    let back = dir.path().join("back.img");
    ok_output("nbdcopy", &[img.to_str().unwrap_or_default(), &uri]);
    ok_output("nbdcopy", &[&uri, back.to_str().unwrap_or_default()]);
    same_prefix(&img, &back, 256 << 20);

    let img2 = dir.path().join("random2.img");
    random_file(&img2, 256 << 20, 99);
    let back2 = dir.path().join("back2.img");
    ok_output(
        "nbdcopy",
        &["--connections=4", img2.to_str().unwrap_or_default(), &uri],
    );
    ok_output(
        "nbdcopy",
        &["--connections=4", &uri, back2.to_str().unwrap_or_default()],
    );
    same_prefix(&img2, &back2, 256 << 20);
}

#[test]
fn qemu_img_convert_both_ways() {
    let dir = scratch();
    let n = node(dir.path(), "", true);
    let uri = n.nbd_uri("r0");
    let src = dir.path().join("src.img");
    random_file(&src, 16 << 20, 3);
    ok_output(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap_or_default(),
            &uri,
        ],
    );
    let out = dir.path().join("out.img");
    ok_output(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &uri,
            out.to_str().unwrap_or_default(),
        ],
    );
    same_prefix(&src, &out, 16 << 20);
}

#[test]
fn sixty_four_commands_in_flight_and_trim_and_zeroes_read_back_as_zeroes() {
    let dir = scratch();
    let n = node(dir.path(), "", true);
    let uri = n.nbd_uri("r0");
    let script = r#"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
N, L = 64, 65536
bufs = [nbd.Buffer.from_bytearray(bytearray([i % 251 + 1]) * L) for i in range(N)]
for i in range(N):
    h.aio_pwrite(bufs[i], i * L)
assert h.aio_in_flight() == N, h.aio_in_flight()
while h.aio_in_flight() > 0:
    h.poll(-1)
for i in range(N):
    assert h.pread(L, i * L) == bytes([i % 251 + 1]) * L, i
# trim and write-zeroes read back as zeroes
h.trim(L, 0)
assert h.pread(L, 0) == bytes(L)
h.zero(L, L)
assert h.pread(L, L) == bytes(L)
h.zero(L, 2 * L, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(L, 2 * L) == bytes(L)
assert h.pread(L, 3 * L) == bytes([3 % 251 + 1]) * L
h.flush()
h.shutdown()
print("ok")
"#;
    let out = ok_output("/usr/bin/python3", &["-c", script, &uri]);
    assert_eq!(out.trim(), "ok");
}

#[test]
fn held_open_refuses_secondary_and_down_until_the_client_leaves() {
    let dir = scratch();
    let n = node(dir.path(), "auto-promote no;", true);
    let mut h = holder(&n.nbd_uri("r0"));
    let st = n.adm(&["status", "r0"]).ok();
    assert!(st.stdout.contains("open:yes"), "{}", st.stdout);
    for cmd in ["secondary", "down"] {
        let r = n.adm(&[cmd, "r0"]);
        assert_eq!(r.code, 11, "{cmd}: {r:#?}");
        assert!(
            r.stderr.contains("(-12) Device is held open by someone"),
            "{cmd}: {r:#?}"
        );
        // drbdadm's line, which the how-tos quote.
        assert!(
            r.stderr.contains(&format!(
                "Command 'drbdsetup {cmd} r0' terminated with exit code 11"
            )),
            "{cmd}: {r:#?}"
        );
    }
    drop(h.stdin.take());
    let _ = h.kill();
    let _ = h.wait();
    // The server notices the disconnect asynchronously.
    let t0 = Instant::now();
    loop {
        let r = n.adm(&["secondary", "r0"]);
        if r.code == 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{r:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    n.adm(&["down", "r0"]).ok();
}

#[test]
fn auto_promote_on_open_and_demote_when_the_last_client_leaves() {
    let dir = scratch();
    let n = node(dir.path(), "", false);
    n.adm(&["new-current-uuid", "--clear-bitmap", "r0"]).ok();
    assert_eq!(n.adm(&["role", "r0"]).ok().stdout, "Secondary\n");
    let mut h = holder(&n.nbd_uri("r0"));
    assert_eq!(n.adm(&["role", "r0"]).ok().stdout, "Primary\n");
    // An INFO probe does not hold the device.
    ok_output("nbdinfo", &[&n.nbd_uri("r0")]);
    drop(h.stdin.take());
    let _ = h.kill();
    let _ = h.wait();
    wait_for_role(&n, "Secondary");
    // Probes alone never promoted it.
    ok_output("nbdinfo", &[&n.nbd_uri("r0")]);
    assert_eq!(n.adm(&["role", "r0"]).ok().stdout, "Secondary\n");
}

/// `--nbd-max-clients`: an export serves that many clients at once; one more is refused with
/// a message saying why (and logged), and a slot that frees up is usable again.
#[test]
fn an_export_refuses_clients_beyond_its_limit_with_a_reason() {
    let dir = scratch();
    let config = config(dir.path(), "");
    let mut n = Node::new(dir.path(), "alpha", &config);
    n.daemon_args = vec!["--nbd-max-clients".into(), "2".into()];
    n.adm(&["create-md", "r0"]).ok();
    n.start();
    n.adm(&["up", "r0"]).ok();
    n.adm(&["primary", "--force", "r0"]).ok();
    let uri = n.nbd_uri("r0");
    let mut holders = vec![holder(&uri), holder(&uri)];
    // libnbd prints the server's message for a refused GO only in its debug output.
    let debug = [("LIBNBD_DEBUG", "1")];
    let open_once = [
        "-c",
        "import nbd,sys\nnbd.NBD().connect_uri(sys.argv[1])",
        &uri,
    ];
    let o = tool_env("/usr/bin/python3", &open_once, &debug);
    assert!(!o.status.success(), "a third client was served");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("already serves 2 NBD clients") && err.contains("--nbd-max-clients"),
        "{err}"
    );
    assert!(
        n.log_text()
            .contains("NBD client refused: 2 clients hold it open"),
        "{}",
        n.log_text()
    );
    let mut first = holders.remove(0);
    drop(first.stdin.take());
    let _ = first.kill();
    let _ = first.wait();
    let t0 = Instant::now();
    loop {
        let o = tool("/usr/bin/python3", &open_once);
        if o.status.success() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the freed slot was not reused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for mut h in holders {
        drop(h.stdin.take());
        let _ = h.kill();
        let _ = h.wait();
    }
}

#[test]
fn without_auto_promote_go_on_a_secondary_is_refused_with_a_hint() {
    let dir = scratch();
    let n = node(dir.path(), "auto-promote no;", false);
    n.adm(&["new-current-uuid", "--clear-bitmap", "r0"]).ok();
    // libnbd prints the server's message for a refused GO only in its debug output.
    let debug = [("LIBNBD_DEBUG", "1")];
    let o = tool_env("nbdinfo", &[&n.nbd_uri("r0")], &debug);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("drbdadm primary r0"), "{err}");
    // Inconsistent data cannot be auto-promoted either (a fresh resource).
    let dir2 = scratch();
    let n2 = node(dir2.path(), "", false);
    let o = tool_env("nbdinfo", &[&n2.nbd_uri("r0")], &debug);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Need access to UpToDate data"), "{err}");
}

#[test]
fn kill_9_after_write_replies_loses_nothing() {
    let dir = scratch();
    let mut n = node(dir.path(), "", true);
    let uri = n.nbd_uri("r0");
    // Writes spread over several 4 MiB extents, acknowledged (no flush).
    qemu_io(
        &uri,
        &[
            "write -P 0x5a 0 1M",
            "write -P 0x6b 9M 512k",
            "write -P 0x7c 100M 4k",
        ],
    );
    n.crash();
    n.start();
    n.adm(&["up", "r0"]).ok();
    // Consistent (only a peer can say whether it is UpToDate), crashed-primary recorded, and the
    // AL's three extents marked out of sync for the peer.
    let st = n.adm(&["status", "--statistics", "--verbose", "r0"]).ok();
    assert!(st.stdout.contains("disk:Consistent"), "{}", st.stdout);
    assert!(st.stdout.contains("out-of-sync:12288"), "{}", st.stdout);
    // get-gi reads the metadata on disk, which the daemon writes after `up` has returned.
    let t0 = Instant::now();
    loop {
        let gi = n.adm(&["get-gi", "r0"]).ok();
        let flags: Vec<&str> = gi.stdout.trim().split(':').skip(4).collect();
        if flags.get(3) == Some(&"1") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "crashed-primary flag: {}",
            gi.stdout
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        n.log_text().contains("Marked additional"),
        "{}",
        n.log_text()
    );
    // The GO auto-promotes; everything acknowledged reads back.
    qemu_io(
        &uri,
        &[
            "read -P 0x5a 0 1M",
            "read -P 0x6b 9M 512k",
            "read -P 0x7c 100M 4k",
        ],
    );
}

#[test]
fn garbage_handshake_and_vanishing_clients_cost_only_their_connection() {
    let dir = scratch();
    let n = node(dir.path(), "", true);
    let sock = n.nbd_sock();
    for garbage in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0xffu8; 4096][..], &[][..]] {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
        let _ = s.write_all(garbage);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let _ = s.read_to_end(&mut sink);
    }
    // A client that starts 32 large reads and vanishes.
    let script = r#"
import nbd, sys, os
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(32):
    h.aio_pread(nbd.Buffer(4 << 20), i * (4 << 20))
os._exit(0)
"#;
    let _ = tool("/usr/bin/python3", &["-c", script, &n.nbd_uri("r0")]);
    // A 1 GiB request is refused (too large), the connection dropped or answered EINVAL.
    let script = r#"
import nbd, sys
h = nbd.NBD()
h.set_strict_mode(0)
h.connect_uri(sys.argv[1])
try:
    h.pread(1 << 30, 0)
    print("accepted")
except nbd.Error as e:
    print("refused")
"#;
    let out = ok_output("/usr/bin/python3", &["-c", script, &n.nbd_uri("r0")]);
    assert_eq!(out.trim(), "refused");
    // The daemon still serves everyone else.
    qemu_io(
        &n.nbd_uri("r0"),
        &["write -P 0x42 0 4k", "read -P 0x42 0 4k"],
    );
    n.adm(&["status", "r0"]).ok();
}

#[test]
fn nbd_listen_serves_the_export_over_tcp_on_loopback() {
    let dir = scratch();
    // A free loopback port, chosen by the kernel.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let cfg = config_with(dir.path(), "", &format!("nbd-listen 127.0.0.1:{port};"));
    let mut n = Node::new(dir.path(), "alpha", &cfg);
    n.adm(&["create-md", "r0"]).ok();
    n.start();
    n.adm(&["up", "r0"]).ok();
    n.adm(&["primary", "--force", "r0"]).ok();
    let uri = format!("nbd://127.0.0.1:{port}/r0");
    qemu_io(&uri, &["write -P 0x33 4096 8192", "read -P 0x33 4096 8192"]);
    let json = ok_output("nbdinfo", &["--json", &uri]);
    assert!(json.contains("\"r0\""), "{json}");
}

#[test]
fn sigterm_with_a_client_attached_finishes_and_writes_clean_metadata() {
    let dir = scratch();
    let mut n = node(dir.path(), "", true);
    qemu_io(&n.nbd_uri("r0"), &["write -P 0x44 0 64k"]);
    let mut h = holder(&n.nbd_uri("r0"));
    assert_eq!(n.stop(), 0, "{}", n.log_text());
    let _ = h.kill();
    let _ = h.wait();
    // AL clean, not Primary: the next up needs no AL replay.
    let gi = n.adm(&["get-gi", "r0"]).ok();
    let flags: Vec<&str> = gi.stdout.trim().split(':').skip(4).collect();
    assert_eq!(&flags[..5], &["1", "1", "0", "0", "1"], "{}", gi.stdout);
    n.start();
    n.adm(&["up", "r0"]).ok();
    assert!(
        !n.log_text().contains("Marked additional"),
        "{}",
        n.log_text()
    );
    qemu_io(&n.nbd_uri("r0"), &["read -P 0x44 0 64k"]);
}

#[test]
fn metrics_endpoint_reports_role_disk_io_and_out_of_sync() {
    let dir = scratch();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let cfg = config(dir.path(), "");
    let mut n = Node::new(dir.path(), "alpha", &cfg);
    n.daemon_args = vec!["--metrics-listen".into(), format!("127.0.0.1:{port}")];
    n.adm(&["create-md", "r0"]).ok();
    n.start();
    n.adm(&["up", "r0"]).ok();
    n.adm(&["primary", "--force", "r0"]).ok();
    qemu_io(&n.nbd_uri("r0"), &["write -P 0x21 0 64k"]);
    let m = http_get(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(m.starts_with("HTTP/1.1 200 OK"), "{m}");
    assert!(
        m.contains("udrbd_resource_primary{resource=\"r0\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("udrbd_disk_up_to_date{resource=\"r0\",volume=\"0\",disk=\"UpToDate\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("udrbd_written_bytes_total{resource=\"r0\",volume=\"0\"} 65536"),
        "{m}"
    );
    assert!(
        m.contains("udrbd_out_of_sync_bytes{resource=\"r0\",peer=\"beta\"} 65536"),
        "{m}"
    );
    assert!(
        m.contains(
            "udrbd_peer_connected{resource=\"r0\",peer=\"beta\",connection=\"Connecting\"} 0"
        ),
        "{m}"
    );
    // Anything else is a 404, and garbage costs only its connection.
    assert!(http_get(port, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    let _ = http_get(port, "\u{1}\u{2}garbage\r\n\r\n");
    assert!(http_get(port, "GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200"));
}

/// The issue's attack: 20 clients each send a 32 MiB WRITE header and 31 MiB of its payload,
/// then stall. The server-wide payload budget keeps what they make the daemon hold bounded
/// (its peak RSS under 128 MiB), and a well-behaved client is served meanwhile.
#[test]
fn twenty_stalled_writers_neither_bloat_the_daemon_nor_block_other_clients() {
    let dir = scratch();
    let n = node(dir.path(), "", true);
    let sock = n.nbd_sock();
    let attack = r#"
import socket, struct, sys, threading, time
path = sys.argv[1]
def one():
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    def need(k):
        b = b""
        while len(b) < k:
            c = s.recv(k - len(b))
            if not c:
                raise SystemExit("closed")
            b += c
        return b
    need(18)                                   # NBDMAGIC IHAVEOPT flags
    s.sendall(struct.pack(">I", 3))            # fixed newstyle, no zeroes
    name = b"r0"
    s.sendall(b"IHAVEOPT" + struct.pack(">II", 1, len(name)) + name)
    need(10)                                   # size, transmission flags
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 7, 0, 32 << 20))
    chunk = b"\xa5" * (1 << 20)
    try:
        for _ in range(31):
            s.sendall(chunk)
    except OSError:
        return
    time.sleep(600)
for _ in range(20):
    threading.Thread(target=one, daemon=True).start()
print("started", flush=True)
time.sleep(600)
"#;
    let mut attackers = Command::new("/usr/bin/python3")
        .args(["-c", attack])
        .arg(&sock)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = [0u8; 8];
    attackers
        .stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut line)
        .expect("the attackers started");
    // Let them push what the daemon lets them.
    std::thread::sleep(Duration::from_secs(3));
    let t0 = Instant::now();
    let out = qemu_io(
        &n.nbd_uri("r0"),
        &[
            "write -P 0x3c 64M 4k",
            "write -P 0x3d 65M 1M",
            "read -P 0x3c 64M 4k",
        ],
    );
    assert!(out.contains("wrote 1048576/1048576"), "{out}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "the honest client waited {:?}",
        t0.elapsed()
    );
    let pid = n.daemon.as_ref().expect("daemon").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    let _ = attackers.kill();
    let _ = attackers.wait();
    assert!(
        peak_kib < 128 * 1024,
        "peak RSS {} MiB with 20 stalled writers",
        peak_kib / 1024
    );
}

/// `secondary --force` demotes although a client holds the export open (DRBD 9's forced
/// demotion): the client's next write fails instead of reaching a Secondary's disk.
#[test]
fn secondary_force_demotes_under_an_open_client_whose_writes_then_fail() {
    let dir = scratch();
    let n = node(dir.path(), "auto-promote no;", true);
    let script = "import nbd,sys\nh=nbd.NBD()\nh.connect_uri(sys.argv[1])\nprint('connected',flush=True)\nsys.stdin.readline()\ntry:\n    h.pwrite(b'x'*4096, 0)\n    print('written',flush=True)\nexcept nbd.Error as e:\n    print('failed',e,flush=True)\n";
    let mut c = Command::new("/usr/bin/python3")
        .args(["-c", script, &n.nbd_uri("r0")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3-libnbd");
    let t0 = Instant::now();
    while !n.adm(&["status", "r0"]).ok().stdout.contains("open:yes") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the client never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(n.adm(&["secondary", "r0"]).code, 11);
    n.adm(&["secondary", "--force", "r0"]).ok();
    assert_eq!(n.adm(&["role", "r0"]).ok().stdout, "Secondary\n");
    if let Some(mut stdin) = c.stdin.take() {
        let _ = stdin.write_all(b"go\n");
    }
    let out = c.wait_with_output().expect("client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("connected") && text.contains("failed"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
