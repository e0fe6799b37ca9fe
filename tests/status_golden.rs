//! `drbdadm status` of real daemons against what drbdsetup 9 prints for the same state: a
//! connected pair, a syncing pair and a node without its disk, in the plain layout, with
//! `--verbose --statistics` and as `--json`. The expected texts follow drbdsetup.c
//! (`resource_status()`, `device_status()`, `connection_status()`, `peer_device_status()`,
//! the `print_*_statistics()` functions, `*_status_json()`) and wrap_printf.c (lines break at
//! 80 columns when stdout is not a terminal). Counters that depend on timing (KiB read and
//! written, metadata writes, rates) are replaced by `N` before comparing; those whose value
//! the state fixes (pending requests, in-flight sectors, out-of-sync) are compared as they are.
//!
//! The counters that used to be fixed are checked live: `ap-in-flight` and `pending` while the
//! peer is stopped under a write, `blocked:upper` and `suspended:user` under `suspend-io`,
//! `rs-in-flight` on a SyncTarget whose source is stopped.

mod common;

use common::pair::{eventually, poll_until};
use common::{Node, backing_file, free_port, qemu_io, scratch};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const RES: &str = "res0";
const DISK: u64 = 64 << 20;

/// Backing files at paths of a fixed length, so that the `backing_dev:` field wraps the same
/// way wherever the tests run (the scratch directory's path length varies).
struct FixedPaths(Vec<PathBuf>);

impl FixedPaths {
    fn new() -> FixedPaths {
        // Unique per test: the tests of this file run in one process, in parallel.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100;
        let id = std::process::id() % 1_000_000 * 100 + n;
        FixedPaths(
            ["a", "b"]
                .iter()
                .map(|n| PathBuf::from(format!("/tmp/udrbd-golden-{id:08}-{n}.img")))
                .collect(),
        )
    }
}

impl Drop for FixedPaths {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

struct Golden {
    _dir: tempfile::TempDir,
    disks: FixedPaths,
    a: Node,
    b: Node,
}

/// Two nodes (node-1 id 0, node-2 id 1) on loopback; `extra` goes into `common { }`.
fn golden_pair(extra: &str) -> Golden {
    let dir = scratch();
    let disks = FixedPaths::new();
    for d in &disks.0 {
        backing_file(d, DISK);
    }
    let cfg = dir.path().join("drbd.conf");
    std::fs::write(
        &cfg,
        format!(
            r#"common {{
    net {{ protocol C; }}
    {extra}
}}
resource {RES} {{
    device /dev/drbd0;
    meta-disk internal;
    on node-1 {{ node-id 0; address 127.0.0.1:{}; disk {}; }}
    on node-2 {{ node-id 1; address 127.0.0.1:{}; disk {}; }}
}}
"#,
            free_port(),
            disks.0[0].display(),
            free_port(),
            disks.0[1].display()
        ),
    )
    .expect("config");
    let mut a = Node::new(dir.path(), "node-1", &cfg);
    let mut b = Node::new(dir.path(), "node-2", &cfg);
    for n in [&mut a, &mut b] {
        n.start();
        n.adm(&["create-md", "--force", RES]).ok();
        n.adm(&["up", RES]).ok();
    }
    Golden {
        _dir: dir,
        disks,
        a,
        b,
    }
}

fn status(n: &Node, args: &[&str]) -> String {
    let mut a = vec!["status"];
    a.extend_from_slice(args);
    a.push(RES);
    n.adm(&a).ok().stdout
}

/// Replaces the values of the timing-dependent counters by `N`.
fn normalize(s: &str) -> String {
    // The counters, and in the text layout also the rates, the estimate and the progress.
    const COUNTERS: [&str; 6] = [
        "read",
        "written",
        "al-writes",
        "bm-writes",
        "received",
        "sent",
    ];
    const VOLATILE: [&str; 4] = ["dbdt1", "eta", "done", "percent-in-sync"];
    let mut out = String::new();
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let words: Vec<String> = line
            .split(' ')
            .map(|w| match w.split_once(':') {
                Some((k, _)) if VOLATILE.contains(&k) || COUNTERS.contains(&k) => format!("{k}:N"),
                _ => w.to_string(),
            })
            .collect();
        out.push_str(&words.join(" "));
    }
    // JSON: `"read": 123,` and friends.
    let mut json = String::new();
    for line in out.split_inclusive('\n') {
        let key = line.trim_start().split('"').nth(1).unwrap_or("");
        if line.trim_start().starts_with('"') && COUNTERS.contains(&key) {
            let indent = &line[..line.len() - line.trim_start().len()];
            let comma = if line.trim_end().ends_with(',') {
                ","
            } else {
                ""
            };
            json.push_str(&format!("{indent}\"{key}\": N{comma}\n"));
        } else {
            json.push_str(line);
        }
    }
    json
}

/// A connected pair, node-1 Primary of fresh data (no sync), nothing written.
fn connected() -> Golden {
    let g = golden_pair("");
    g.a.adm(&["wait-connect", RES]).ok();
    g.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    g.a.adm(&["primary", RES]).ok();
    eventually(20, "both UpToDate", || {
        status(&g.b, &[]).contains("peer-disk:UpToDate")
            && status(&g.a, &[]).contains("peer-disk:UpToDate")
    });
    g
}

#[test]
fn a_connected_pair_prints_what_drbdsetup_prints() {
    let g = connected();
    assert_eq!(
        status(&g.a, &[]),
        "res0 role:Primary\n  disk:UpToDate open:no\n  node-2 role:Secondary\n    peer-disk:UpToDate\n\n"
    );
    assert_eq!(
        status(&g.b, &[]),
        "res0 role:Secondary\n  disk:UpToDate open:no\n  node-1 role:Primary\n    peer-disk:UpToDate\n\n"
    );
    let disk_a = g.disks.0[0].display().to_string();
    // --verbose: every field, wrapped at 80 columns (the device line's backing_dev pushes
    // `quorum:` and `open:` to a continuation line indented by 6).
    assert_eq!(
        normalize(&status(&g.a, &["--verbose", "--statistics"])),
        format!(
            "res0 node-id:0 role:Primary suspended:no force-io-failures:no\n    \
             write-ordering:flush\n  \
             volume:0 minor:0 disk:UpToDate backing_dev:{disk_a}\n      \
             quorum:yes open:no\n      \
             size:65492 read:N written:N al-writes:N bm-writes:N upper-pending:0\n      \
             lower-pending:0 al-suspended:no blocked:no\n  \
             node-2 node-id:1 connection:Connected role:Secondary tls:no congested:no\n      \
             ap-in-flight:0 rs-in-flight:0\n    \
             volume:0 replication:Established peer-disk:UpToDate resync-suspended:no\n        \
             received:N sent:N out-of-sync:0 pending:0 unacked:0\n\n"
        )
    );
    // --statistics alone: the device's read/written, the peer's received/sent.
    assert_eq!(
        normalize(&status(&g.a, &["--statistics"])),
        "res0 role:Primary\n  disk:UpToDate open:no\n      read:N written:N\n  \
         node-2 role:Secondary\n    peer-disk:UpToDate\n        received:N sent:N\n\n"
    );
    let json = normalize(&status(&g.a, &["--json"]));
    let expected = r#"[
{
  "name": "res0",
  "node-id": 0,
  "role": "Primary",
  "suspended": false,
  "suspended-user": false,
  "suspended-no-data": false,
  "suspended-fencing": false,
  "suspended-quorum": false,
  "force-io-failures": false,
  "write-ordering": "flush",
  "devices": [
    {
      "volume": 0,
      "minor": 0,
      "disk-state": "UpToDate",
      "client": false,
      "open": false,
      "quorum": true,
      "size": 65492,
      "read": N,
      "written": N,
      "al-writes": N,
      "bm-writes": N,
      "upper-pending": 0,
      "lower-pending": 0
    } ],
  "connections": [
    {
      "peer-node-id": 1,
      "name": "node-2",
      "connection-state": "Connected", 
      "congested": false,
      "peer-role": "Secondary",
      "tls": false,
      "ap-in-flight": 0,
      "rs-in-flight": 0,
      "paths": [
        {
          "this_host": {
            "address": "127.0.0.1",
            "port": PORT_A,
            "family": "ipv4"
          },
          "remote_host": {
            "address": "127.0.0.1",
            "port": PORT_B,
            "family": "ipv4"
          },
          "established": true
        } ],
      "peer_devices": [
        {
          "volume": 0,
          "replication-state": "Established",
          "peer-disk-state": "UpToDate",
          "peer-client": false,
          "resync-suspended": "no",
          "received": N,
          "sent": N,
          "out-of-sync": 0,
          "pending": 0,
          "unacked": 0,
          "has-sync-details": false,
          "has-online-verify-details": false,
          "percent-in-sync": 100.00
        } ]
    } ]
}
]

"#;
    let ports: Vec<String> = json
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"port\": "))
        .map(|p| p.trim_end_matches(',').to_string())
        .collect();
    assert_eq!(ports.len(), 2, "{json}");
    let expected = expected
        .replace("PORT_A", &ports[0])
        .replace("PORT_B", &ports[1]);
    assert_eq!(json, expected);
    // It is JSON.
    let v: serde_json::Value =
        serde_json::from_str(&status(&g.a, &["--json"])).expect("status --json parses");
    assert_eq!(v[0]["connections"][0]["peer_devices"][0]["out-of-sync"], 0);
    // drbdsetup status prints the same.
    assert_eq!(
        g.a.setup(&["status", RES]).ok().stdout,
        status(&g.a, &[]),
        "drbdsetup and drbdadm agree"
    );
}

/// `qemu-io` writing `len` bytes at 0 on `n`'s export, in the background.
fn background_write(n: &Node, len: &str) -> Child {
    Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            &format!("write -P 0x33 0 {len}"),
            &n.nbd_uri(RES),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-io")
}

fn signal(n: &Node, sig: i32) {
    let pid = n.daemon.as_ref().expect("running").id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, sig) };
}

#[test]
fn in_flight_counters_blocked_and_suspended_are_real() {
    let g = connected();
    // The Secondary stops: a 1 MiB write on the Primary waits for its ack (protocol C).
    signal(&g.b, libc::SIGSTOP);
    let mut w = background_write(&g.a, "1M");
    let shows = |what: &str| poll_until(20, || status(&g.a, &["--verbose"]).contains(what));
    let ok = shows("ap-in-flight:2048 rs-in-flight:0");
    let st = status(&g.a, &["--verbose", "--statistics"]);
    signal(&g.b, libc::SIGCONT);
    assert!(ok, "{st}");
    assert!(st.contains(" pending:"), "{st}");
    assert!(
        !st.contains(" pending:0 "),
        "requests wait for the peer: {st}"
    );
    assert!(w.wait().expect("qemu-io").success());
    eventually(20, "the write acknowledged", || {
        status(&g.a, &["--verbose"]).contains("ap-in-flight:0 rs-in-flight:0")
    });
    // suspend-io: I/O is suspended by the user and new requests are blocked.
    g.a.adm(&["suspend-io", RES]).ok();
    let mut w = background_write(&g.a, "4k");
    let ok = poll_until(20, || {
        status(&g.a, &[]).starts_with("res0 role:Primary suspended:user\n")
            && status(&g.a, &["--verbose"]).contains(" blocked:upper")
    });
    let st = status(&g.a, &["--verbose"]);
    g.a.adm(&["resume-io", RES]).ok();
    assert!(ok, "{st}");
    assert!(w.wait().expect("qemu-io").success());
    assert!(status(&g.a, &["--verbose"]).contains(" blocked:no"));
    let json: serde_json::Value = serde_json::from_str(&status(&g.a, &["--json"])).expect("json");
    assert_eq!(json[0]["suspended-user"], false);
}

#[test]
fn a_syncing_pair_shows_progress_and_rs_in_flight_on_the_target() {
    // A slow resync (fixed rate, 1 MiB/s) so that it is seen running.
    let g = golden_pair("disk { c-plan-ahead 0; resync-rate 1M; }");
    g.a.adm(&["wait-connect", RES]).ok();
    g.a.adm(&["primary", "--force", RES]).ok();
    eventually(20, "SyncSource", || {
        status(&g.a, &[]).contains("replication:SyncSource")
    });
    let st = normalize(&status(&g.a, &[]));
    assert_eq!(
        st,
        "res0 role:Primary\n  disk:UpToDate open:no\n  node-2 role:Secondary\n    \
         replication:SyncSource peer-disk:Inconsistent done:N\n\n"
    );
    let st = normalize(&status(&g.b, &["--statistics"]));
    assert!(
        st.starts_with(
            "res0 role:Secondary\n  disk:Inconsistent open:no\n      read:N written:N\n  \
             node-1 role:Primary\n    replication:SyncTarget peer-disk:UpToDate done:N\n        \
             received:N sent:N out-of-sync:"
        ),
        "{st}"
    );
    // --verbose adds the rate and the estimate.
    let st = normalize(&status(&g.a, &["--verbose", "--statistics"]));
    assert!(st.contains(" unacked:0 dbdt1:N eta:N\n"), "{st}");
    // JSON: no detailed resync counters, so drbdsetup's `percent-resync-done` from the
    // out-of-sync count.
    let json: serde_json::Value = serde_json::from_str(&status(&g.a, &["--json"])).expect("json");
    let pd = &json[0]["connections"][0]["peer_devices"][0];
    assert_eq!(pd["replication-state"], "SyncSource");
    assert_eq!(pd["has-sync-details"], false);
    assert!(pd["percent-resync-done"].is_number(), "{pd}");
    // The source stops: the target's requests stay in flight.
    signal(&g.a, libc::SIGSTOP);
    let ok = poll_until(20, || {
        let st = status(&g.b, &["--verbose"]);
        st.contains(" rs-in-flight:") && !st.contains(" rs-in-flight:0\n")
    });
    let st = status(&g.b, &["--verbose"]);
    signal(&g.a, libc::SIGCONT);
    assert!(ok, "{st}");
}

#[test]
fn a_node_without_its_disk_is_diskless_and_its_peer_shows_it() {
    let g = connected();
    g.b.adm(&["detach", RES]).ok();
    eventually(20, "peer Diskless", || {
        status(&g.a, &[]).contains("peer-disk:Diskless")
    });
    // Not a terminal: drbdsetup adds `client:` and `peer-client:` for Diskless.
    assert_eq!(
        status(&g.b, &[]),
        "res0 role:Secondary\n  disk:Diskless client:no open:no\n  node-1 role:Primary\n    \
         peer-disk:UpToDate\n\n"
    );
    assert_eq!(
        status(&g.a, &[]),
        "res0 role:Primary\n  disk:UpToDate open:no\n  node-2 role:Secondary\n    \
         peer-disk:Diskless peer-client:no\n\n"
    );
    // --verbose names no backing device while none is attached.
    assert!(
        status(&g.b, &["--verbose"]).contains(
            "  volume:0 minor:0 disk:Diskless client:no backing_dev:none quorum:yes open:no\n"
        ),
        "{}",
        status(&g.b, &["--verbose"])
    );
    let json: serde_json::Value = serde_json::from_str(&status(&g.b, &["--json"])).expect("json");
    assert_eq!(json[0]["devices"][0]["disk-state"], "Diskless");
    assert_eq!(json[0]["devices"][0]["client"], false);
    // The data written meanwhile is there after attach.
    qemu_io(&g.a, RES, "write -P 0x44 0 64k");
    g.b.adm(&["attach", RES]).ok();
    eventually(30, "UpToDate again", || {
        status(&g.b, &[]).starts_with("res0 role:Secondary\n  disk:UpToDate open:no\n")
    });
    let read = |p: &PathBuf| std::fs::read(p).expect("backing file")[..65536].to_vec();
    assert_eq!(read(&g.disks.0[0]), read(&g.disks.0[1]));
    let b = read(&g.disks.0[1]);
    assert!(b.iter().all(|&x| x == 0x44), "{:?}", &b[..16]);
}
