//! Two nodes replicating `res0` with the SUSE HA how-to's configuration
//! (`../shared/testdata/configs/suse-ha`), only disks and addresses changed: the setup of
//! `tests/replication.rs` (loopback) and `tests/split_brain.rs` (two network namespaces).

use super::{Node, backing_file, free_port, scratch};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Each backing file.
pub const DISK: u64 = 64 << 20;
/// The data area compared between the replicas: the internal metadata lives after it.
pub const DATA: usize = 60 << 20;
pub const RES: &str = "res0";

pub struct Pair {
    pub _dir: tempfile::TempDir,
    pub a: Node,
    pub b: Node,
    pub disk_a: PathBuf,
    pub disk_b: PathBuf,
}

/// What differs between the two copies of the how-to's config, and between tests.
pub struct Setup<'a> {
    /// Inserted into `common { }` (e.g. `net { connect-int 1; }`).
    pub extra: &'a str,
    /// `shared-secret` of node-1's and node-2's copy.
    pub secrets: [&'a str; 2],
    /// `protocol` of node-1's and node-2's copy.
    pub protocols: [&'a str; 2],
    /// `address` of node-1 and node-2 (`IP:PORT`); `None`: two free ports on 127.0.0.1.
    pub addresses: Option<[String; 2]>,
    /// Inserted into `common { }` of node-1's and node-2's copy only (their own TLS files).
    pub per_node: [String; 2],
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            extra: "",
            secrets: ["Abcd1234Password", "Abcd1234Password"],
            protocols: ["C", "C"],
            addresses: None,
            per_node: Default::default(),
        }
    }
}

/// The how-to's config for one node's copy (`which` 0 or 1 picks the secret and protocol).
fn write_config(path: &Path, s: &Setup, which: usize, addrs: &[String; 2], disks: [&Path; 2]) {
    let (secret, protocol, extra) = (s.secrets[which], s.protocols[which], s.extra);
    let own = &s.per_node[which];
    std::fs::write(
        path,
        format!(
            r#"global {{ usage-count no; }}
common {{
    startup {{ degr-wfc-timeout 90; wfc-timeout 100; }}
    options {{ quorum off; }}
    net {{
        cram-hmac-alg "sha1";
        shared-secret "{secret}";
        protocol {protocol};
        fencing resource-only;
    }}
    {extra}
    {own}
}}
resource res0 {{
    connection-mesh {{ hosts node-1 node-2; }}
    on node-1 {{ node-id 0; address {}; disk "{}"; }}
    on node-2 {{ node-id 1; address {}; disk "{}"; }}
    device /dev/drbd0;
    meta-disk internal;
}}
"#,
            addrs[0],
            disks[0].display(),
            addrs[1],
            disks[1].display()
        ),
    )
    .expect("config");
}

/// Two nodes (not started) with fresh sparse disks and their own copy of the config.
pub fn pair_setup(s: &Setup) -> Pair {
    let dir = scratch();
    let (disk_a, disk_b) = (dir.path().join("node-1.img"), dir.path().join("node-2.img"));
    backing_file(&disk_a, DISK);
    backing_file(&disk_b, DISK);
    let addrs = s.addresses.clone().unwrap_or_else(|| {
        [
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        ]
    });
    let node = |which: usize, name: &str| {
        let cfg = dir.path().join(format!("drbd-{}.conf", which + 1));
        write_config(&cfg, s, which, &addrs, [&disk_a, &disk_b]);
        Node::new(dir.path(), name, &cfg)
    };
    let (a, b) = (node(0, "node-1"), node(1, "node-2"));
    Pair {
        _dir: dir,
        a,
        b,
        disk_a,
        disk_b,
    }
}

/// [`pair_setup`] on loopback with the how-to's secret and protocol, plus `extra`.
pub fn pair(extra: &str) -> Pair {
    pair_setup(&Setup {
        extra,
        ..Setup::default()
    })
}

impl Pair {
    /// Starts both daemons and runs `create-md` and `up` on each, without waiting.
    pub fn start_both(&mut self) {
        for n in [&mut self.a, &mut self.b] {
            n.adm(&["create-md", RES]).ok();
            n.start();
            n.adm(&["up", RES]).ok();
        }
    }

    /// create-md and up on both; waits for the connection.
    pub fn up(&mut self) {
        self.start_both();
        self.a
            .adm(&["wait-connect", "--wfc-timeout", "20", RES])
            .ok();
    }

    /// Both logs, for a failure message.
    pub fn logs(&self) -> String {
        format!(
            "--- {} log ---\n{}\n--- {} log ---\n{}",
            self.a.name,
            self.a.log_text(),
            self.b.name,
            self.b.log_text()
        )
    }

    pub fn assert_identical(&self) {
        let a = std::fs::read(&self.disk_a).expect("read a");
        let b = std::fs::read(&self.disk_b).expect("read b");
        if let Some(i) = (0..DATA).find(|&i| a[i] != b[i]) {
            panic!(
                "the replicas differ first at byte {i} (block {}); logs:\n{}",
                i / 4096,
                self.logs()
            );
        }
    }

    /// [`eventually`], with both logs in the panic message.
    pub fn eventually(&self, secs: u64, what: &str, f: impl FnMut() -> bool) {
        if !poll_until(secs, f) {
            panic!("timed out waiting for {what}; logs:\n{}", self.logs());
        }
    }

    /// `drbdadm verify` on node-1 until it is done; its result line (`Online verify found N
    /// 4k block out of sync!`).
    pub fn verify(&self) -> String {
        self.a.adm(&["verify", RES]).ok();
        self.eventually(120, "the verify to finish", || {
            self.a.log_text().contains("Online verify found")
        });
        self.a
            .log_text()
            .lines()
            .rev()
            .find(|l| l.contains("Online verify found"))
            .unwrap_or_default()
            .to_string()
    }

    /// Online verify from node-1 finds no block out of sync.
    pub fn assert_verify_clean(&self) {
        let line = self.verify();
        assert!(
            line.ends_with("Online verify found 0 4k block out of sync!"),
            "verify: {line}; logs:\n{}",
            self.logs()
        );
    }

    /// Both connected, both disks UpToDate, no resync or verify running.
    pub fn in_sync(&self) -> bool {
        let (a, b) = (status(&self.a), status(&self.b));
        [&a, &b].iter().all(|s| {
            !s.contains("connection:")
                && s.contains("disk:UpToDate")
                && s.contains("peer-disk:UpToDate")
                && !s.contains("replication:")
        })
    }

    pub fn wait_sync(&self) {
        let r = self.a.adm(&["wait-sync", "--wfc-timeout", "60", RES]);
        assert_eq!(r.code, 0, "wait-sync: {r:#?}\nlogs:\n{}", self.logs());
    }
}

/// `drbdadm status res0` on `n`.
pub fn status(n: &Node) -> String {
    n.adm(&["status", RES]).ok().stdout
}

/// KiB each resync moved, from the SyncSource's log (DRBD's "Began resync as SyncSource
/// (will sync N KB [M bits set]).").
pub fn resync_kib(log: &str) -> Vec<u64> {
    const AT: &str = "Began resync as SyncSource (will sync ";
    log.lines()
        .filter_map(|l| {
            let at = l.find(AT)? + AT.len();
            l[at..].split(' ').next()?.parse().ok()
        })
        .collect()
}

/// Polls `f` every 50 ms for up to `secs`; whether it came to hold.
pub fn poll_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while !f() {
        if t0.elapsed() >= Duration::from_secs(secs) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Polls `f` until it holds (or panics after `secs`).
pub fn eventually(secs: u64, what: &str, f: impl FnMut() -> bool) {
    assert!(poll_until(secs, f), "timed out waiting for {what}");
}
