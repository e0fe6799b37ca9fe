//! Three nodes with quorum, as real daemons on a switch of network namespaces
//! (`common::star`): the SUSE HA how-to's `res0` (a `connection-mesh`) with a third host and
//! `options { quorum majority; }`.
//!
//! - Three diskful nodes, `on-no-quorum suspend-io`: the Primary cut off from both peers loses
//!   quorum and freezes its I/O (a write does not complete), the other two keep quorum, one of
//!   them is promoted and written to; `secondary --force` fails the frozen write; healing
//!   resyncs the old Primary from the new one with no split brain, and all disks are equal.
//! - Two diskful nodes and a diskless client (`disk none;`), `on-no-quorum io-error`: the
//!   client is no voter (and udrbd has no tiebreaker, see `repl::quorum`), so the Primary
//!   that loses the other diskful node fails I/O at once, a promotion without quorum is
//!   refused with `(-25) No quorum`, and healing brings quorum back.
//!
//! - A diskless client as Primary (DRBD 9's Diskless Primary): it reads and writes through
//!   the diskful nodes; fio verifies what it wrote, also while one diskful node is cut off
//!   and comes back (`quorum off`): the other gets the writes, resyncs the returning one,
//!   and all disks end equal.
//!
//! Needs root for `ip netns`; without it the tests print a skip message and pass, except
//! under CI, where they fail.

mod common;

use common::pair::{DISK, status};
use common::star::Star;
use common::{Node, backing_file, scratch, tool};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RES: &str = "res0";
const PORT: u16 = 7788;
const MIB: usize = 1 << 20;
/// The compared data area (the internal metadata lives after it).
const DATA: usize = 60 << 20;
const NAMES: [&str; 3] = ["node-1", "node-2", "node-3"];
/// A cut is noticed in ping-int + ping-timeout, a dial gives up after `timeout`.
const TIMERS: &str = "net { ping-int 1; ping-timeout 5; timeout 5; ko-count 2; connect-int 1; }
    disk { c-plan-ahead 0; resync-rate 200M; c-min-rate 0; }";

struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
    disks: Vec<Option<PathBuf>>,
}

/// The how-to's res0 with a third host; `diskful[i]` false makes host i `disk none;`.
fn cluster(star: &Star, diskful: [bool; 3], on_no_quorum: &str) -> Cluster {
    cluster_with(
        star,
        diskful,
        &format!("quorum majority; on-no-quorum {on_no_quorum};"),
    )
}

/// The same with `options { OPTIONS }`.
fn cluster_with(star: &Star, diskful: [bool; 3], options: &str) -> Cluster {
    let dir = scratch();
    let disks: Vec<Option<PathBuf>> = (0..3)
        .map(|i| {
            diskful[i].then(|| {
                let p = dir.path().join(format!("{}.img", NAMES[i]));
                backing_file(&p, DISK);
                p
            })
        })
        .collect();
    let hosts: String = (0..3)
        .map(|i| {
            let disk = disks[i]
                .as_ref()
                .map_or("none".to_string(), |p| format!("\"{}\"", p.display()));
            format!(
                "    on {} {{ node-id {i}; address {}; disk {disk}; }}\n",
                NAMES[i],
                star.address(i, PORT)
            )
        })
        .collect();
    let cfg = dir.path().join("drbd.conf");
    std::fs::write(
        &cfg,
        format!(
            r#"global {{ usage-count no; }}
common {{
    options {{ {options} }}
    net {{ cram-hmac-alg "sha1"; shared-secret "Abcd1234Password"; protocol C; }}
    {TIMERS}
}}
resource res0 {{
    connection-mesh {{ hosts node-1 node-2 node-3; }}
{hosts}    device /dev/drbd0;
    meta-disk internal;
}}
"#
        ),
    )
    .expect("config");
    let mut nodes: Vec<Node> = NAMES
        .iter()
        .map(|n| Node::new(dir.path(), n, &cfg))
        .collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        star.host(n, i);
        n.start();
        if diskful[i] {
            n.adm(&["create-md", RES]).ok();
        }
        n.adm(&["up", RES]).ok();
    }
    Cluster {
        _dir: dir,
        nodes,
        disks,
    }
}

impl Cluster {
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("== {}\n{}", n.name, n.log_text()))
            .collect()
    }

    fn eventually(&self, secs: u64, what: &str, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(secs);
        while !f() {
            if Instant::now() > end {
                let st: String = self.nodes.iter().map(status).collect();
                panic!("timed out: {what}\n{st}\nlogs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes `len` bytes of `byte` at `off` through node `i`'s export; the qemu-io output.
    fn write(&self, i: usize, off: usize, len: usize, byte: u8) -> std::process::Output {
        tool(
            "qemu-io",
            &[
                "-f",
                "raw",
                "-c",
                &format!("write -P {byte:#04x} {off} {len}"),
                "-c",
                "flush",
                &self.nodes[i].nbd_uri(RES),
            ],
        )
    }

    fn assert_written(&self, i: usize, off: usize, len: usize, byte: u8) {
        let o = self.write(i, off, len, byte);
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "write on {}: {o:?}\nlogs:\n{}",
            self.nodes[i].name,
            self.logs()
        );
    }

    /// Every diskful node's data area is the same; returns it.
    fn assert_identical(&self) -> Vec<u8> {
        let datas: Vec<Vec<u8>> = self
            .disks
            .iter()
            .flatten()
            .map(|p| std::fs::read(p).expect("disk")[..DATA].to_vec())
            .collect();
        for d in &datas[1..] {
            assert!(*d == datas[0], "replicas differ\nlogs:\n{}", self.logs());
        }
        datas[0].clone()
    }

    fn all_connected(&self) {
        self.eventually(30, "all connected", || {
            self.nodes.iter().all(|n| {
                let cs = n.adm(&["cstate", RES]).ok().stdout;
                cs.lines().filter(|l| *l == "Connected").count() == 2
            })
        });
    }

    fn no_split_brain(&self) {
        let logs = self.logs();
        assert!(!logs.contains("Split-Brain"), "{logs}");
    }
}

fn field<'a>(st: &'a str, key: &str) -> Vec<&'a str> {
    st.split_whitespace()
        .filter_map(|w| w.strip_prefix(key))
        .collect()
}

#[test]
fn a_primary_cut_off_from_both_peers_freezes_and_the_majority_takes_over() {
    let Some(star) = Star::new(3) else { return };
    let c = cluster(&star, [true, true, true], "suspend-io");
    let [n1, n2, n3] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    c.all_connected();
    n1.adm(&["primary", "--force", RES]).ok();
    c.eventually(60, "both peers UpToDate", || {
        field(&status(n1), "peer-disk:") == ["UpToDate", "UpToDate"]
    });
    assert_eq!(
        field(&status(n1), "quorum:"),
        Vec::<&str>::new(),
        "quorum:yes is not shown"
    );
    c.assert_written(0, 0, 4 * MIB, 0x11);

    // node-1 alone: no quorum, I/O frozen.
    star.isolate(0);
    c.eventually(20, "node-1 lost quorum", || {
        let st = n1.adm(&["status", "--verbose", RES]).ok().stdout;
        field(&st, "quorum:") == ["no"] && field(&st, "suspended:") == ["quorum"]
    });
    let frozen = Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            &format!("write -P 0x22 {} {}", 8 * MIB, MIB),
            &n1.nbd_uri(RES),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-io");
    std::thread::sleep(Duration::from_secs(2));
    let mut frozen = frozen;
    assert!(
        frozen.try_wait().expect("wait").is_none(),
        "a write completed on the node without quorum\nlogs:\n{}",
        c.logs()
    );
    // The majority keeps quorum; one of them is promoted and written to.
    for n in [n2, n3] {
        let st = n.adm(&["status", "--verbose", RES]).ok().stdout;
        assert_eq!(field(&st, "quorum:"), ["yes"], "{st}");
    }
    c.eventually(20, "node-2 may be promoted", || {
        n2.adm(&["primary", RES]).code == 0
    });
    c.assert_written(1, 2 * MIB, 2 * MIB, 0x33);
    // node-1 cannot be promoted back without quorum... it is Primary; it steps down by force,
    // and the frozen write fails.
    n1.adm(&["secondary", "--force", RES]).ok();
    let out = frozen.wait_with_output().expect("qemu-io");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() || text.contains("error"),
        "the frozen write reported success: {text}"
    );
    let refused = n1.adm(&["primary", RES]);
    assert_eq!(refused.code, 11, "{refused:?}");
    assert!(refused.stderr.contains("(-25) No quorum"), "{refused:?}");

    // Healing: node-1 resyncs from the majority; no split brain.
    star.rejoin(0);
    c.eventually(60, "node-1 back and UpToDate", || {
        let st = status(n2);
        field(&st, "peer-disk:") == ["UpToDate", "UpToDate"]
            && !st.contains("connection:")
            && !status(n1).contains("Inconsistent")
    });
    c.no_split_brain();
    n2.adm(&["secondary", RES]).ok();
    for n in &c.nodes {
        n.adm(&["down", RES]).ok();
    }
    let data = c.assert_identical();
    assert!(data[..2 * MIB].iter().all(|b| *b == 0x11));
    assert!(data[2 * MIB..4 * MIB].iter().all(|b| *b == 0x33));
    assert!(
        data[8 * MIB..9 * MIB].iter().all(|b| *b == 0),
        "the write that never completed is not on the replicas"
    );
}

#[test]
fn with_a_diskless_client_a_lost_diskful_node_takes_quorum_and_io_errors() {
    let Some(star) = Star::new(3) else { return };
    let c = cluster(&star, [true, true, false], "io-error");
    let [n1, n2, n3] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    c.all_connected();
    n1.adm(&["primary", "--force", RES]).ok();
    c.eventually(60, "node-2 UpToDate", || {
        field(&status(n1), "peer-disk:") == ["UpToDate", "Diskless"]
    });
    let st = status(n3);
    assert!(st.contains("disk:Diskless"), "{st}");
    c.assert_written(0, 0, MIB, 0x44);

    // node-2 goes: the diskless client is no voter (and udrbd has no tiebreaker), so node-1
    // has one of two votes: no quorum, and with io-error its writes fail at once.
    star.isolate(1);
    c.eventually(20, "node-1 lost quorum", || {
        let st = n1.adm(&["status", "--verbose", RES]).ok().stdout;
        field(&st, "quorum:") == ["no"] && !st.contains("suspended:quorum")
    });
    let o = c.write(0, 4 * MIB, MIB, 0x66);
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() || out.contains("error") || out.contains("Input/output"),
        "a write succeeded without quorum: {o:?}"
    );
    // node-2, alone, has no quorum either: its promotion is refused.
    c.eventually(20, "node-2 lost quorum", || {
        field(
            &n2.adm(&["status", "--verbose", RES]).ok().stdout,
            "quorum:",
        ) == ["no"]
    });
    let refused = n2.adm(&["primary", RES]);
    assert_eq!(refused.code, 11, "{refused:?}");
    assert!(refused.stderr.contains("(-25) No quorum"), "{refused:?}");
    // Back together: quorum returns, writes go through, the replicas converge.
    star.rejoin(1);
    c.eventually(60, "node-2 back and UpToDate", || {
        field(&status(n1), "peer-disk:") == ["UpToDate", "Diskless"]
            && !n1
                .adm(&["status", "--verbose", RES])
                .ok()
                .stdout
                .contains("quorum:no")
    });
    c.assert_written(0, MIB, MIB, 0x55);
    c.no_split_brain();
    n1.adm(&["secondary", RES]).ok();
    for n in &c.nodes {
        n.adm(&["down", RES]).ok();
    }
    let data = c.assert_identical();
    assert!(data[..MIB].iter().all(|b| *b == 0x44));
    assert!(data[MIB..2 * MIB].iter().all(|b| *b == 0x55));
}

/// fio through `uri`: random writes of 4 to 64 KiB over the first `size` at QD16, each block
/// read back and checked (`--verify=crc32c`); `loops` passes.
fn fio_verify(uri: &str, name: &str, size: &str, loops: u32) -> std::process::Child {
    common::fio_randwrite(
        uri,
        name,
        &[
            &format!("--size={size}"),
            "--verify=crc32c",
            "--do_verify=1",
            &format!("--loops={loops}"),
        ],
    )
}

/// The size `n`'s export announces.
fn export_size(n: &Node) -> u64 {
    let o = tool("nbdinfo", &["--size", &n.nbd_uri(RES)]);
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse::<u64>()
        .unwrap_or(0)
}

/// Node-3 (diskless) Primary after node-1 synced node-2; returns node-1's export size.
fn diskless_primary(c: &Cluster) -> u64 {
    let [n1, _, n3] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    c.all_connected();
    n1.adm(&["primary", "--force", RES]).ok();
    c.eventually(60, "node-2 UpToDate", || {
        field(&status(n1), "peer-disk:") == ["UpToDate", "Diskless"]
    });
    c.assert_written(0, 0, MIB, 0x44);
    let size = export_size(n1);
    n1.adm(&["secondary", RES]).ok();
    n3.adm(&["primary", RES]).ok();
    let st = status(n3);
    assert!(
        st.starts_with("res0 role:Primary\n  disk:Diskless"),
        "{st}\n{}",
        c.logs()
    );
    size
}

#[test]
fn a_diskless_primary_reads_and_writes_through_its_peers() {
    let Some(star) = Star::new(3) else { return };
    let c = cluster(&star, [true, true, false], "io-error");
    let size = diskless_primary(&c);
    let [n1, n2, n3] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    // The export has the peers' size, and their data.
    assert!(size >= DATA as u64, "{}", c.logs());
    assert_eq!(export_size(n3), size, "{}", c.logs());
    let o = tool(
        "qemu-io",
        &["-f", "raw", "-c", "read -P 0x44 0 1M", &n3.nbd_uri(RES)],
    );
    assert!(
        o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("verification failed"),
        "{o:?}\n{}",
        c.logs()
    );
    common::fio_ok(
        fio_verify(&n3.nbd_uri(RES), "diskless", "16M", 1),
        &c.logs(),
    );
    c.assert_written(2, 32 * MIB, MIB, 0x77);
    // A diskful node cannot be promoted while the client is Primary.
    let refused = n1.adm(&["primary", RES]);
    assert_ne!(refused.code, 0, "{refused:?}");
    n3.adm(&["secondary", RES]).ok();
    c.no_split_brain();
    for n in [n3, n1, n2] {
        n.adm(&["down", RES]).ok();
    }
    let data = c.assert_identical();
    assert!(data[32 * MIB..33 * MIB].iter().all(|b| *b == 0x77));
}

#[test]
fn a_diskless_primary_goes_on_through_one_peer_while_the_other_is_away() {
    let Some(star) = Star::new(3) else { return };
    let c = cluster_with(&star, [true, true, false], "quorum off;");
    diskless_primary(&c);
    let [n1, n2, n3] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    let job = common::fio_load(&n3.nbd_uri(RES), "one-peer", 8);
    std::thread::sleep(Duration::from_millis(1500));
    // node-2 cut off while fio writes: node-1 alone gets the writes (and marks them for
    // node-2); nothing fails.
    star.isolate(1);
    c.eventually(20, "node-3 lost node-2", || {
        n3.adm(&["cstate", RES]).ok().stdout.contains("Connecting")
    });
    c.assert_written(2, 40 * MIB, MIB, 0x66);
    std::thread::sleep(Duration::from_secs(2));
    star.rejoin(1);
    common::fio_ok(job, &c.logs());
    c.eventually(60, "node-2 back and UpToDate", || {
        field(&status(n3), "peer-disk:") == ["UpToDate", "UpToDate"]
            && field(&status(n1), "peer-disk:") == ["UpToDate", "Diskless"]
            && !status(n1).contains("replication:")
    });
    // node-2 got what it missed by a resync from node-1.
    let log2 = n2.log_text();
    assert!(
        log2.lines()
            .any(|l| l.contains("Began resync as SyncTarget") && !l.contains("will sync 0 KB")),
        "{}",
        c.logs()
    );
    common::fio_ok(fio_verify(&n3.nbd_uri(RES), "after", "8M", 1), &c.logs());
    c.no_split_brain();
    n3.adm(&["secondary", RES]).ok();
    for n in [n3, n1, n2] {
        n.adm(&["down", RES]).ok();
    }
    let data = c.assert_identical();
    assert!(data[40 * MIB..41 * MIB].iter().all(|b| *b == 0x66));
}
