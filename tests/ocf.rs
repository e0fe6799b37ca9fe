//! The Pacemaker pieces under `ocf/` run as real processes: the resource agent `ocf/udrbd`
//! (`../shared/reference/drbd.md` §2.1), the fence handlers `ocf/fence-peer.sh` and
//! `ocf/unfence-peer.sh` (§2.2), and `ocf-tester` (§2.3) against two real daemons on loopback.
//! Pacemaker's tools run without a cluster: `CIB_file` points them at a CIB XML file.
//!
//! Needs `resource-agents` (ocf-tester, ocf-shellfuncs, the OCF 1.0 DTD), `pacemaker-cli-utils`
//! (cibadmin, crm_attribute, crm_verify) and `libxml2-utils` (xmllint), all in
//! `.ci/apt-packages`. Without one a test prints a skip message and passes, except under CI
//! (`CI` set), where it fails.

mod common;

use common::Node;
use common::pair::{Pair, RES, pair};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const OCF_ROOT: &str = "/usr/lib/ocf";
const SHELLFUNCS: &str = "/usr/lib/ocf/lib/heartbeat/ocf-shellfuncs";
const DTD: &str = "/usr/share/resource-agents/ra-api-1.dtd";
/// The primitive's id: the promotion score is the node attribute `master-p_drbd_res0`.
const INSTANCE: &str = "p_drbd_res0";
/// The promotable clone's id in the walkthrough CIB.
const CLONE: &str = "ms_drbd_res0";
const CONSTRAINT: &str = "drbd-fence-by-handler-res0-ms_drbd_res0";

// OCF exit codes.
const OCF_SUCCESS: i32 = 0;
const OCF_ERR_GENERIC: i32 = 1;
const OCF_ERR_INSTALLED: i32 = 5;
const OCF_ERR_CONFIGURED: i32 = 6;
const OCF_NOT_RUNNING: i32 = 7;
const OCF_RUNNING_MASTER: i32 = 8;
const OCF_FAILED_MASTER: i32 = 9;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn on_path(tool: &str) -> bool {
    if tool.starts_with('/') {
        return Path::new(tool).exists();
    }
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::metadata(d.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

use std::os::unix::fs::PermissionsExt;

/// Whether every tool is there; if not, prints a skip message (or panics under CI).
fn have(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI: missing {missing:?}; .ci/apt-packages installs resource-agents, pacemaker-cli-utils, libxml2-utils"
    );
    eprintln!(
        "skipped: {missing:?} not installed (apt-get install resource-agents pacemaker-cli-utils libxml2-utils)"
    );
    false
}

const PCMK: &[&str] = &["cibadmin", "crm_attribute", "crm_verify", SHELLFUNCS];

/// One run of a program.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Out {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A CIB file: the walkthrough's configuration plus a `node_state` per node, so that node
/// attributes (the promotion score) have somewhere to live.
struct Cib {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Cib {
    fn walkthrough() -> Cib {
        let dir = common::scratch();
        let path = dir.path().join("cib.xml");
        std::fs::copy(repo("ocf/examples/cib-walkthrough.xml"), &path).expect("copy CIB");
        let cib = Cib { _dir: dir, path };
        for (id, name) in [("1", "node-1"), ("2", "node-2")] {
            let xml = format!(r#"<node_state id="{id}" uname="{name}"/>"#);
            let r = cib.tool("cibadmin", &["-C", "-o", "status", "-X", &xml]);
            assert_eq!(r.code, 0, "{r:#?}");
        }
        cib
    }

    /// A Pacemaker tool against this file.
    fn tool(&self, program: &str, args: &[&str]) -> Out {
        run(Command::new(program).args(args).env("CIB_file", &self.path))
    }

    /// The promotion score of `node`, if set.
    fn score(&self, node: &str) -> Option<i64> {
        let r = self.tool(
            "crm_attribute",
            &[&format!("--promotion={INSTANCE}"), "-N", node, "-G", "-q"],
        );
        if r.code != 0 {
            return None;
        }
        Some(
            r.stdout
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("score: {r:#?}")),
        )
    }

    fn set_score(&self, node: &str, v: i64) {
        let r = self.tool(
            "crm_attribute",
            &[
                &format!("--promotion={INSTANCE}"),
                "-N",
                node,
                "-v",
                &v.to_string(),
            ],
        );
        assert_eq!(r.code, 0, "{r:#?}");
    }

    fn constraint(&self) -> Option<String> {
        let xp = format!("//rsc_location[@id='{CONSTRAINT}']");
        let r = self.tool("cibadmin", &["-Q", "--xpath", &xp]);
        (r.code == 0).then_some(r.stdout)
    }

    fn verify(&self) {
        let r = run(Command::new("crm_verify")
            .arg("-x")
            .arg(&self.path)
            .arg("-V"));
        assert_eq!(r.code, 0, "crm_verify -x: {r:#?}");
    }
}

/// A directory with `drbdadm` and `drbdsetup` for the agent's `udrbd_bin_dir`.
struct BinDir {
    dir: tempfile::TempDir,
}

impl BinDir {
    /// The real binaries.
    fn real() -> BinDir {
        let dir = common::scratch();
        let adm = common::drbdadm_bin();
        std::os::unix::fs::symlink(&adm, dir.path().join("drbdadm")).expect("symlink");
        let setup = adm.with_file_name("drbdsetup");
        assert!(
            setup.exists(),
            "{} is missing: run `cargo build --workspace`",
            setup.display()
        );
        std::os::unix::fs::symlink(&setup, dir.path().join("drbdsetup")).expect("symlink");
        BinDir { dir }
    }

    /// The real drbdadm, and a `drbdsetup` printing [`BinDir::events2`]'s text whatever it is
    /// asked: drives the agent's state parsing and score table with fixtures.
    fn fixture() -> BinDir {
        let dir = common::scratch();
        let adm = common::drbdadm_bin();
        std::os::unix::fs::symlink(&adm, dir.path().join("drbdadm")).expect("symlink");
        let script = dir.path().join("drbdsetup");
        std::fs::write(
            &script,
            "#!/bin/sh\ncat \"$(dirname \"$0\")/events2.txt\"\n",
        )
        .expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        BinDir { dir }
    }

    fn events2(&self, text: &str) {
        std::fs::write(self.dir.path().join("events2.txt"), text).expect("events2 fixture");
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The agent as Pacemaker would run it for `node`: OCF_RESKEY_* parameters and the CIB file.
struct Agent<'a> {
    path: PathBuf,
    node: &'a Node,
    bin: &'a Path,
    cib: &'a Cib,
}

impl Agent<'_> {
    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("OCF_ROOT", OCF_ROOT.to_string()),
            ("OCF_RESOURCE_INSTANCE", INSTANCE.to_string()),
            ("OCF_RESKEY_CRM_meta_timeout", "20000".to_string()),
            ("OCF_RESKEY_promote_failure_delay", "0".to_string()),
            ("CIB_file", self.cib.path.display().to_string()),
        ];
        for (k, v) in self.params() {
            env.push((k, v));
        }
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// The parameters, as `ocf-tester -o` takes them too.
    fn params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OCF_RESKEY_drbd_resource", RES.to_string()),
            (
                "OCF_RESKEY_drbdconf",
                self.node.config.display().to_string(),
            ),
            (
                "OCF_RESKEY_udrbd_run_dir",
                self.node.run_dir.display().to_string(),
            ),
            ("OCF_RESKEY_udrbd_node", self.node.name.clone()),
            ("OCF_RESKEY_udrbd_bin_dir", self.bin.display().to_string()),
        ]
    }

    fn run(&self, action: &str, extra: &[(&str, &str)]) -> Out {
        run(Command::new(&self.path)
            .arg(action)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env())
            .envs(extra.iter().copied()))
    }

    /// Runs `action`, asserting its exit code.
    fn expect(&self, action: &str, code: i32) -> Out {
        let r = self.run(action, &[]);
        assert_eq!(
            r.code,
            code,
            "{} {action} on {}: {r:#?}",
            self.path.display(),
            self.node.name
        );
        r
    }
}

fn agent<'a>(node: &'a Node, bin: &'a BinDir, cib: &'a Cib) -> Agent<'a> {
    Agent {
        path: repo("ocf/udrbd"),
        node,
        bin: bin.path(),
        cib,
    }
}

/// The clone meta attributes Pacemaker passes for the walkthrough's clone.
const GOOD_CLONE: &[(&str, &str)] = &[
    ("OCF_RESKEY_CRM_meta_clone_max", "2"),
    ("OCF_RESKEY_CRM_meta_clone_node_max", "1"),
    ("OCF_RESKEY_CRM_meta_promoted_max", "1"),
    ("OCF_RESKEY_CRM_meta_promoted_node_max", "1"),
    ("OCF_RESKEY_CRM_meta_master_max", "1"),
    ("OCF_RESKEY_CRM_meta_master_node_max", "1"),
    ("OCF_RESKEY_CRM_meta_notify", "true"),
];

/// GOOD_CLONE with one attribute changed (or, with `None`, removed).
fn clone_with(key: &str, value: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<(&str, &str)> = GOOD_CLONE
        .iter()
        .copied()
        .filter(|(k, _)| *k != key)
        .collect();
    if let Some(value) = value {
        let k = GOOD_CLONE
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(k, _)| *k)
            .expect("known key");
        v.push((k, value));
    }
    v
}

#[test]
fn shell_is_posix() {
    for f in [
        "ocf/udrbd",
        "ocf/fence-peer.sh",
        "ocf/unfence-peer.sh",
        "scripts/install-ocf.sh",
    ] {
        let path = repo(f);
        let mode = std::fs::metadata(&path)
            .expect("script")
            .permissions()
            .mode();
        assert_eq!(mode & 0o755, 0o755, "{f} must be mode 755");
        for sh in ["sh", "dash"] {
            if on_path(sh) {
                let r = run(Command::new(sh).arg("-n").arg(&path));
                assert_eq!(r.code, 0, "{sh} -n {f}: {r:#?}");
            }
        }
        if have(&["checkbashisms"]) {
            let r = run(Command::new("checkbashisms").arg(&path));
            assert_eq!(r.code, 0, "checkbashisms {f}: {r:#?}");
            assert!(
                !r.stderr.contains("possible bashism"),
                "checkbashisms {f}: {r:#?}"
            );
        }
    }
}

#[test]
fn meta_data_is_ocf_1_0() {
    if !have(&["xmllint", SHELLFUNCS, DTD]) {
        return;
    }
    let r = run(Command::new(repo("ocf/udrbd"))
        .arg("meta-data")
        .env("OCF_ROOT", OCF_ROOT));
    assert_eq!(r.code, 0, "{r:#?}");
    let file = common::scratch();
    let xml = file.path().join("meta-data.xml");
    std::fs::write(&xml, &r.stdout).expect("write");
    let v = run(Command::new("xmllint")
        .args(["--noout", "--dtdvalid", DTD])
        .arg(&xml));
    assert_eq!(
        v.code, 0,
        "meta-data does not validate against {DTD}: {v:#?}\n{}",
        r.stdout
    );
    let parameters: &[&str] = &[
        "drbd_resource",
        "drbdconf",
        "udrbd_run_dir",
        "udrbd_node",
        "adjust_master_score",
    ];
    let actions: &[&str] = &[
        "start",
        "stop",
        "promote",
        "demote",
        "monitor",
        "notify",
        "reload",
        "validate-all",
    ];
    for (tag, names) in [("parameter", parameters), ("action", actions)] {
        for n in names {
            let want = format!("<{tag} name=\"{n}\"");
            assert!(r.stdout.contains(&want), "{want} missing");
        }
    }
    assert!(r.stdout.contains("<version>1.0</version>"));
}

/// A resource that allows two primaries may run as a clone with two promoted instances (the
/// dual-primary live-migration setup); the agent checks the config through `drbdadm dump`.
#[test]
fn validate_all_accepts_two_promoted_with_allow_two_primaries() {
    if !have(PCMK) {
        return;
    }
    let p = pair("net { allow-two-primaries yes; }");
    let bin = BinDir::fixture();
    bin.events2("exists -\n");
    let cib = Cib::walkthrough();
    let a = agent(&p.a, &bin, &cib);
    let r = a.run(
        "validate-all",
        &clone_with("OCF_RESKEY_CRM_meta_promoted_max", Some("2")),
    );
    assert_eq!(r.code, OCF_SUCCESS, "promoted-max=2: {r:#?}");
}

#[test]
fn validate_all_refuses_unworkable_clones() {
    if !have(PCMK) {
        return;
    }
    let p = pair("");
    let bin = BinDir::fixture();
    bin.events2("exists -\n");
    let cib = Cib::walkthrough();
    let a = agent(&p.a, &bin, &cib);
    let check = |env: &[(&str, &str)], code: i32, what: &str| {
        let r = a.run("validate-all", env);
        assert_eq!(r.code, code, "validate-all with {what}: {r:#?}");
        if code == OCF_ERR_CONFIGURED {
            assert!(
                r.stderr.contains("ocf-exit-reason:"),
                "{what}: no exit reason: {r:#?}"
            );
        }
    };
    check(&[], OCF_SUCCESS, "no clone (ocf-tester's case)");
    check(GOOD_CLONE, OCF_SUCCESS, "the walkthrough's clone");
    let bad: &[(&str, Option<&'static str>, &str)] = &[
        ("OCF_RESKEY_CRM_meta_notify", Some("false"), "notify=false"),
        ("OCF_RESKEY_CRM_meta_notify", None, "notify unset"),
        (
            "OCF_RESKEY_CRM_meta_clone_node_max",
            Some("2"),
            "clone-node-max=2",
        ),
        (
            "OCF_RESKEY_CRM_meta_promoted_max",
            Some("3"),
            "promoted-max=3",
        ),
        (
            "OCF_RESKEY_CRM_meta_promoted_max",
            Some("2"),
            "promoted-max=2 without allow-two-primaries",
        ),
        (
            "OCF_RESKEY_CRM_meta_promoted_node_max",
            Some("2"),
            "promoted-node-max=2",
        ),
    ];
    for (k, v, what) in bad {
        check(&clone_with(k, *v), OCF_ERR_CONFIGURED, what);
    }
    // Pacemaker before 2.1 passes only the master_* names.
    let old = |max: &'static str, node_max: &'static str| {
        let mut v = clone_with("OCF_RESKEY_CRM_meta_promoted_max", None);
        v.retain(|(k, _)| !k.contains("promoted") && !k.contains("master"));
        v.push(("OCF_RESKEY_CRM_meta_master_max", max));
        v.push(("OCF_RESKEY_CRM_meta_master_node_max", node_max));
        v
    };
    check(
        &old("1", "1"),
        OCF_SUCCESS,
        "master-max=1 master-node-max=1",
    );
    check(&old("3", "1"), OCF_ERR_CONFIGURED, "master-max=3");
    check(&old("1", "2"), OCF_ERR_CONFIGURED, "master-node-max=2");
    check(
        &[
            ("OCF_RESKEY_CRM_meta_notify", "false"),
            ("OCF_RESKEY_CRM_meta_clone_max", "2"),
            ("OCF_RESKEY_ignore_missing_notifications", "true"),
        ],
        OCF_SUCCESS,
        "notify=false with ignore_missing_notifications",
    );
    // start refuses the same clones before touching anything.
    for (k, v) in [
        ("OCF_RESKEY_CRM_meta_notify", "false"),
        ("OCF_RESKEY_CRM_meta_clone_node_max", "2"),
    ] {
        let r = a.run("start", &clone_with(k, Some(v)));
        assert_eq!(r.code, OCF_ERR_CONFIGURED, "start with {k}={v}: {r:#?}");
    }
    // The setup itself.
    let setups: &[(&str, &str, i32, &str)] = &[
        (
            "OCF_RESKEY_drbd_resource",
            "",
            OCF_ERR_CONFIGURED,
            "no drbd_resource",
        ),
        (
            "OCF_RESKEY_drbd_resource",
            "r$(id)",
            OCF_ERR_CONFIGURED,
            "a bad resource name",
        ),
        (
            "OCF_RESKEY_drbd_resource",
            "nosuch",
            OCF_ERR_INSTALLED,
            "an unknown resource",
        ),
        (
            "OCF_RESKEY_drbdconf",
            "/nonexistent.conf",
            OCF_ERR_INSTALLED,
            "no config file",
        ),
        (
            "OCF_RESKEY_udrbd_bin_dir",
            "/nonexistent",
            OCF_ERR_INSTALLED,
            "no drbdadm",
        ),
        (
            "OCF_RESKEY_adjust_master_score",
            "1 2 3",
            OCF_ERR_CONFIGURED,
            "3 scores",
        ),
        (
            "OCF_RESKEY_wfc_timeout",
            "soon",
            OCF_ERR_CONFIGURED,
            "a bad wfc_timeout",
        ),
    ];
    for &(k, v, code, what) in setups {
        check(&[(k, v)], code, what);
    }
    // A probe on a node without the binaries finds the resource stopped.
    let r = a.run(
        "monitor",
        &[
            ("OCF_RESKEY_udrbd_bin_dir", "/nonexistent"),
            ("OCF_RESKEY_CRM_meta_interval", "0"),
        ],
    );
    assert_eq!(r.code, OCF_NOT_RUNNING, "{r:#?}");
    let r = a.run("frobnicate", &[]);
    assert_eq!(r.code, 3, "unknown action: {r:#?}");
}

/// events2 text for `res0` as node-1 sees it: its role and disk, and one peer (node-2, id 1)
/// with a connection state, role and disk. Unknown keys, keys in another order, another
/// resource's lines and `change` lines are mixed in: the agent must match keys, not positions.
fn events2(
    role: &str,
    disk: &str,
    client: bool,
    peer: Option<(&str, &str, &str)>,
    quorum: bool,
) -> String {
    let client = if client { "yes" } else { "no" };
    let quorum = if quorum { "yes" } else { "no" };
    let mut s = String::new();
    s += "exists resource name:other role:Primary suspended:no\n";
    s += &format!(
        "exists resource name:res0 role:{role} suspended:no force-io-failures:no may_promote:no promotion_score:0\n"
    );
    if let Some((conn, prole, _)) = peer {
        s += &format!(
            "exists connection name:res0 peer-node-id:1 conn-name:node-2 connection:{conn} role:{prole} congested:no\n"
        );
    }
    s += &format!(
        "exists device name:res0 volume:0 minor:0 backing_dev:/dev/x disk:{disk} client:{client} quorum:{quorum} open:no\n"
    );
    s += "exists device name:other volume:0 minor:1 disk:Inconsistent client:no\n";
    if let Some((conn, _, pdisk)) = peer {
        let repl = if conn == "Connected" {
            "Established"
        } else {
            "Off"
        };
        s += &format!(
            "exists peer-device name:res0 conn-name:node-2 volume:0 peer-node-id:1 replication:{repl} peer-disk:{pdisk} peer-client:no resync-suspended:no\n"
        );
    }
    s += "exists -\n";
    s += "change resource name:res0 role:Primary\n";
    s += "exists device name:res0 volume:1 disk:Failed client:no\n";
    s
}

/// What the score should be after a monitor: a number, removed, or left as it was.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Score {
    Set(i64),
    Removed,
    Unchanged,
}
use Score::{Removed, Set, Unchanged};

#[test]
fn master_scores_follow_linbits_table() {
    if !have(PCMK) {
        return;
    }
    let p = pair("");
    let bin = BinDir::fixture();
    let cib = Cib::walkthrough();
    let a = agent(&p.a, &bin, &cib);
    const UP: Option<(&str, &str, &str)> = Some(("Connected", "Secondary", "UpToDate"));
    const UP_PRIMARY: Option<(&str, &str, &str)> = Some(("Connected", "Primary", "UpToDate"));
    const AWAY: Option<(&str, &str, &str)> = Some(("Connecting", "Unknown", "DUnknown"));
    const ALONE: Option<(&str, &str, &str)> = Some(("StandAlone", "Unknown", "DUnknown"));
    const SYNCING: Option<(&str, &str, &str)> = Some(("Connected", "Secondary", "Inconsistent"));
    const OUTDATED: Option<(&str, &str, &str)> = Some(("Connected", "Secondary", "Outdated"));
    const CONSISTENT: Option<(&str, &str, &str)> = Some(("Connected", "Secondary", "Consistent"));
    // (role, local disk, diskless client, peer, quorum, monitor's code, score)
    #[allow(clippy::type_complexity)]
    #[rustfmt::skip]
    let table: &[(
        &str,
        &str,
        bool,
        Option<(&str, &str, &str)>,
        bool,
        i32,
        Score,
    )] = &[
        // Local UpToDate: 10000 when the peer's disk is known (or we are Primary), else 1000.
        ("Secondary", "UpToDate", false, UP, true, OCF_SUCCESS, Set(10000)),
        ("Secondary", "UpToDate", false, UP_PRIMARY, true, OCF_SUCCESS, Set(10000)),
        ("Secondary", "UpToDate", false, SYNCING, true, OCF_SUCCESS, Set(10000)),
        ("Secondary", "UpToDate", false, OUTDATED, true, OCF_SUCCESS, Set(10000)),
        ("Secondary", "UpToDate", false, CONSISTENT, true, OCF_SUCCESS, Set(10000)),
        ("Secondary", "UpToDate", false, AWAY, true, OCF_SUCCESS, Set(1000)),
        ("Secondary", "UpToDate", false, ALONE, true, OCF_SUCCESS, Set(1000)),
        ("Secondary", "UpToDate", false, None, true, OCF_SUCCESS, Set(10000)),
        ("Primary", "UpToDate", false, UP, true, OCF_RUNNING_MASTER, Set(10000)),
        ("Primary", "UpToDate", false, AWAY, true, OCF_RUNNING_MASTER, Set(10000)),
        ("Primary", "UpToDate", false, SYNCING, true, OCF_RUNNING_MASTER, Set(10000)),
        // Local not UpToDate, the peer is: 10 (only remote data).
        ("Secondary", "Inconsistent", false, UP, true, OCF_SUCCESS, Set(10)),
        ("Secondary", "Inconsistent", false, UP_PRIMARY, true, OCF_SUCCESS, Set(10)),
        ("Secondary", "Outdated", false, UP, true, OCF_SUCCESS, Set(10)),
        ("Secondary", "Consistent", false, UP, true, OCF_SUCCESS, Set(10)),
        ("Secondary", "Diskless", false, UP, true, OCF_SUCCESS, Set(10)),
        ("Primary", "Inconsistent", false, UP, true, OCF_RUNNING_MASTER, Set(10)),
        // Only Consistent: adjust_master_score's first value, 0, which removes the score.
        ("Secondary", "Consistent", false, AWAY, true, OCF_SUCCESS, Removed),
        ("Secondary", "Consistent", false, SYNCING, true, OCF_SUCCESS, Removed),
        // Nothing usable anywhere: removed.
        ("Secondary", "Inconsistent", false, AWAY, true, OCF_SUCCESS, Removed),
        ("Secondary", "Inconsistent", false, SYNCING, true, OCF_SUCCESS, Removed),
        ("Secondary", "Inconsistent", false, OUTDATED, true, OCF_SUCCESS, Removed),
        ("Secondary", "Outdated", false, AWAY, true, OCF_SUCCESS, Removed),
        ("Secondary", "Outdated", false, OUTDATED, true, OCF_SUCCESS, Removed),
        ("Secondary", "Diskless", false, AWAY, true, OCF_SUCCESS, Removed),
        ("Secondary", "Failed", false, AWAY, true, OCF_SUCCESS, Removed),
        ("Secondary", "Detaching", false, AWAY, true, OCF_SUCCESS, Removed),
        ("Primary", "Diskless", false, AWAY, true, OCF_FAILED_MASTER, Removed),
        ("Primary", "Failed", false, AWAY, true, OCF_FAILED_MASTER, Removed),
        // A transitional local disk leaves the score as it was.
        ("Secondary", "Attaching", false, AWAY, true, OCF_SUCCESS, Unchanged),
        ("Secondary", "Negotiating", false, AWAY, true, OCF_SUCCESS, Unchanged),
        // Diskless clients: 9999 with an UpToDate peer, removed without one.
        ("Secondary", "Diskless", true, UP, true, OCF_SUCCESS, Set(9999)),
        ("Primary", "Diskless", true, UP, true, OCF_RUNNING_MASTER, Set(9999)),
        ("Secondary", "Diskless", true, AWAY, true, OCF_SUCCESS, Removed),
        // No quorum: removed.
        ("Secondary", "UpToDate", false, UP, false, OCF_SUCCESS, Removed),
        ("Primary", "UpToDate", false, UP, false, OCF_RUNNING_MASTER, Removed),
    ];
    const BEFORE: i64 = 4321;
    for &(role, disk, client, peer, quorum, code, score) in table {
        let case = format!(
            "{role} {disk}{} peer {peer:?} quorum {quorum}",
            if client { " (client)" } else { "" }
        );
        cib.set_score("node-1", BEFORE);
        bin.events2(&events2(role, disk, client, peer, quorum));
        let r = a.run("monitor", &[("OCF_RESKEY_CRM_meta_interval", "20000")]);
        assert_eq!(r.code, code, "monitor for {case}: {r:#?}");
        let want = match score {
            Set(n) => Some(n),
            Removed => None,
            Unchanged => Some(BEFORE),
        };
        assert_eq!(cib.score("node-1"), want, "score for {case}: {r:#?}");
    }

    // Not up at all: 7, and the score goes; a probe leaves it alone.
    bin.events2("exists -\n");
    cib.set_score("node-1", BEFORE);
    let r = a.run("monitor", &[("OCF_RESKEY_CRM_meta_interval", "0")]);
    assert_eq!(r.code, OCF_NOT_RUNNING, "{r:#?}");
    assert_eq!(
        cib.score("node-1"),
        Some(BEFORE),
        "a probe changed the score"
    );
    let r = a.run("monitor", &[("OCF_RESKEY_CRM_meta_interval", "20000")]);
    assert_eq!(r.code, OCF_NOT_RUNNING, "{r:#?}");
    assert_eq!(cib.score("node-1"), None);
    // drbdsetup failing (daemon down) reads as not running too.
    bin.events2("");
    let r = a.run("monitor", &[]);
    assert_eq!(r.code, OCF_NOT_RUNNING, "{r:#?}");

    // adjust_master_score moves every value.
    let custom = [("OCF_RESKEY_adjust_master_score", "5 50 500 5000")];
    for (disk, peer, want) in [
        ("Consistent", AWAY, Some(5)),
        ("Inconsistent", UP, Some(50)),
        ("UpToDate", AWAY, Some(500)),
        ("UpToDate", UP, Some(5000)),
        ("Outdated", AWAY, None),
    ] {
        bin.events2(&events2("Secondary", disk, false, peer, true));
        let r = a.run("monitor", &custom);
        assert_eq!(r.code, OCF_SUCCESS, "{r:#?}");
        assert_eq!(
            cib.score("node-1"),
            want,
            "{disk} {peer:?} with 5 50 500 5000"
        );
    }
    // The other node's score is its own.
    assert_eq!(cib.score("node-2"), None);
}

#[test]
fn walkthrough_cib_passes_crm_verify() {
    if !have(PCMK) {
        return;
    }
    let cib = Cib::walkthrough();
    cib.verify();
    // Also as cibadmin builds it from the walkthrough's XML, section by section, on an empty CIB.
    let dir = common::scratch();
    let path = dir.path().join("cib.xml");
    let empty = run(Command::new("cibadmin").arg("--empty"));
    assert_eq!(empty.code, 0, "{empty:#?}");
    std::fs::write(&path, &empty.stdout).expect("write");
    let text = std::fs::read_to_string(repo("ocf/examples/cib-walkthrough.xml")).expect("read");
    for section in ["crm_config", "nodes", "resources", "constraints"] {
        let start = text.find(&format!("<{section}>")).expect("section");
        let end = text.find(&format!("</{section}>")).expect("section end") + section.len() + 3;
        let r = run(Command::new("cibadmin")
            .args(["--replace", "-o", section, "-X", &text[start..end]])
            .env("CIB_file", &path));
        assert_eq!(r.code, 0, "cibadmin --replace -o {section}: {r:#?}");
    }
    let r = run(Command::new("crm_verify").arg("-x").arg(&path).arg("-V"));
    assert_eq!(r.code, 0, "{r:#?}");
}

/// Runs a handler as the daemon would: DRBD's environment for node `me` fencing the other.
fn handler(script: &str, cib: &Cib, me: u32, up_to_date: &str) -> Out {
    let peer = 1 - me;
    run(Command::new(repo(script))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CIB_file", &cib.path)
        .env("DRBD_RESOURCE", RES)
        .env("DRBD_MY_NODE_ID", me.to_string())
        .env("DRBD_PEER_NODE_ID", peer.to_string())
        .env("DRBD_NODE_ID_0", "node-1")
        .env("DRBD_NODE_ID_1", "node-2")
        .env("DRBD_PEER", format!("node-{}", peer + 1))
        .env("UP_TO_DATE_NODES", up_to_date)
        .env("UDRBD_NODE", format!("node-{}", me + 1)))
}

#[test]
fn fence_handlers_place_and_remove_the_constraint() {
    if !have(PCMK) {
        return;
    }
    let cib = Cib::walkthrough();
    assert_eq!(cib.constraint(), None);

    // node-1 (UpToDate) fences node-2: the Promoted role is kept off every node but node-1.
    let r = handler("ocf/fence-peer.sh", &cib, 0, "0x00000001");
    assert_eq!(r.code, 4, "fence-peer: {r:#?}");
    let c = cib.constraint().expect("the constraint after fence-peer");
    for want in [
        format!("rsc=\"{CLONE}\""),
        "role=\"Promoted\"".to_string(),
        "score=\"-INFINITY\"".to_string(),
        format!("id=\"drbd-fence-by-handler-res0-rule-{CLONE}\""),
        "attribute=\"#uname\"".to_string(),
        "operation=\"ne\"".to_string(),
        "value=\"node-1\"".to_string(),
        format!("id=\"drbd-fence-by-handler-res0-expr-0-{CLONE}\""),
    ] {
        assert!(c.contains(&want), "{want} missing in\n{c}");
    }
    cib.verify();
    // Again: the constraint is already there, still 4.
    let r = handler("ocf/fence-peer.sh", &cib, 0, "0x00000001");
    assert_eq!(r.code, 4, "{r:#?}");
    assert!(r.stdout.contains("already placed"), "{r:#?}");
    // node-2 now finds a constraint against itself: the peer has the better data (6).
    let r = handler("ocf/fence-peer.sh", &cib, 1, "0x00000002");
    assert_eq!(r.code, 6, "{r:#?}");
    assert_eq!(
        cib.constraint().as_deref(),
        Some(c.as_str()),
        "node-2 changed the constraint"
    );

    // unfence-peer (also the after-resync-target handler) removes it; again is a no-op.
    let r = handler("ocf/unfence-peer.sh", &cib, 0, "0x00000003");
    assert_eq!(r.code, 0, "unfence-peer: {r:#?}");
    assert_eq!(cib.constraint(), None, "{r:#?}");
    let r = handler("ocf/unfence-peer.sh", &cib, 0, "0x00000003");
    assert_eq!(r.code, 0, "{r:#?}");
    cib.verify();

    // A node whose own disk is not UpToDate places nothing (5).
    let r = handler("ocf/fence-peer.sh", &cib, 0, "0x00000000");
    assert_eq!(r.code, 5, "{r:#?}");
    assert_eq!(cib.constraint(), None);

    // node-2 fencing node-1 excludes node-1.
    let r = handler("ocf/fence-peer.sh", &cib, 1, "0x00000002");
    assert_eq!(r.code, 4, "{r:#?}");
    assert!(
        cib.constraint()
            .expect("constraint")
            .contains("value=\"node-2\"")
    );
    let r = handler("ocf/unfence-peer.sh", &cib, 1, "0x00000003");
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(cib.constraint(), None);

    // An older schema gets the old role name.
    let old = Cib::walkthrough();
    let text = std::fs::read_to_string(&old.path).expect("read");
    let text = text
        .replace("pacemaker-3.9", "pacemaker-3.0")
        .replace("role=\"Promoted\"", "role=\"Master\"")
        .replace("role=\"Unpromoted\"", "role=\"Slave\"")
        .replace("with-rsc-role=\"Promoted\"", "with-rsc-role=\"Master\"");
    std::fs::write(&old.path, text).expect("write");
    let r = handler("ocf/fence-peer.sh", &old, 0, "0x00000001");
    assert_eq!(r.code, 4, "{r:#?}");
    assert!(
        old.constraint()
            .expect("constraint")
            .contains("role=\"Master\"")
    );
    old.verify();

    // No clone for the resource, or no CIB at all: "helper broken" (1), nothing placed.
    let empty = Cib::walkthrough();
    let text = std::fs::read_to_string(&empty.path).expect("read");
    let text = text.replace(
        r#"name="drbd_resource" value="res0""#,
        r#"name="drbd_resource" value="res9""#,
    );
    std::fs::write(&empty.path, text).expect("write");
    let r = handler("ocf/fence-peer.sh", &empty, 0, "0x00000001");
    assert_eq!(r.code, 1, "{r:#?}");
    let gone = Cib::walkthrough();
    std::fs::remove_file(&gone.path).expect("rm");
    let r = handler("ocf/fence-peer.sh", &gone, 0, "0x00000001");
    assert_eq!(r.code, 1, "{r:#?}");
}

/// Two daemons with `res0` created; node-2 up (and so connecting), node-1 not yet started.
fn two_daemons() -> Pair {
    let mut p = pair("net { connect-int 1; }");
    for n in [&mut p.a, &mut p.b] {
        n.adm(&["create-md", RES]).ok();
        n.start();
    }
    p
}

#[test]
fn monitor_and_scores_on_real_daemons() {
    if !have(PCMK) {
        return;
    }
    let p = two_daemons();
    let bin = BinDir::real();
    let cib = Cib::walkthrough();
    let (a, b) = (agent(&p.a, &bin, &cib), agent(&p.b, &bin, &cib));

    // Stopped: 7 (and start/stop are idempotent).
    a.expect("monitor", OCF_NOT_RUNNING);
    a.expect("stop", OCF_SUCCESS);
    a.expect("demote", OCF_NOT_RUNNING);
    a.expect("promote", OCF_ERR_GENERIC);
    for ag in [&a, &b] {
        let r = ag.run("start", GOOD_CLONE);
        assert_eq!(r.code, OCF_SUCCESS, "start: {r:#?}\n{}", p.logs());
    }
    a.expect("start", OCF_SUCCESS);
    // Fresh metadata: both Inconsistent, nobody may be promoted.
    a.expect("monitor", OCF_SUCCESS);
    b.expect("monitor", OCF_SUCCESS);
    assert_eq!((cib.score("node-1"), cib.score("node-2")), (None, None));
    let r = a.run("promote", &[]);
    assert_eq!(
        r.code, OCF_ERR_GENERIC,
        "promote of Inconsistent data: {r:#?}"
    );
    assert!(
        r.stderr.contains("without access to UpToDate data"),
        "{r:#?}"
    );

    // Fresh disks: skip the sync, both UpToDate, both peers known: 10000 each.
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.eventually(10, "peer-disk:UpToDate", || {
        common::pair::status(&p.a).contains("peer-disk:UpToDate")
    });
    a.expect("monitor", OCF_SUCCESS);
    b.expect("monitor", OCF_SUCCESS);
    assert_eq!(
        (cib.score("node-1"), cib.score("node-2")),
        (Some(10000), Some(10000))
    );

    // Promote node-1: 8 there, 0 on node-2 (promote twice is fine).
    a.expect("promote", OCF_SUCCESS);
    a.expect("promote", OCF_SUCCESS);
    a.expect("monitor", OCF_RUNNING_MASTER);
    b.expect("monitor", OCF_SUCCESS);
    assert!(common::pair::status(&p.a).starts_with("res0 role:Primary"));
    // node-2 cannot be promoted while node-1 is Primary (single-primary).
    let r = b.run("promote", &[("OCF_RESKEY_CRM_meta_timeout", "5000")]);
    assert_eq!(r.code, OCF_ERR_GENERIC, "second Primary: {r:#?}");
    b.expect("monitor", OCF_SUCCESS);

    // Stop node-2: 7 there, its score gone; node-1 stays Primary with 10000.
    b.expect("stop", OCF_SUCCESS);
    b.expect("stop", OCF_SUCCESS);
    b.expect("monitor", OCF_NOT_RUNNING);
    assert_eq!(cib.score("node-2"), None);
    p.eventually(10, "node-1 sees node-2 gone", || {
        !common::pair::status(&p.a).contains("peer-disk:UpToDate")
    });
    a.expect("monitor", OCF_RUNNING_MASTER);
    assert_eq!(cib.score("node-1"), Some(10000));
    // Demoted with the peer away: UpToDate, and the peer known Outdated (its `stop` was a
    // disconnect agreed under fencing, as in DRBD 9), so still 10000: node-1 is the one to
    // promote.
    a.expect("demote", OCF_SUCCESS);
    a.expect("demote", OCF_SUCCESS);
    a.expect("monitor", OCF_SUCCESS);
    assert_eq!(cib.score("node-1"), Some(10000));
    // A post notification re-reads the state; reload is harmless.
    let r = a.run(
        "notify",
        &[
            ("OCF_RESKEY_CRM_meta_notify_type", "post"),
            ("OCF_RESKEY_CRM_meta_notify_operation", "stop"),
        ],
    );
    assert_eq!(r.code, OCF_SUCCESS, "{r:#?}");
    a.expect("reload", OCF_SUCCESS);
    a.expect("stop", OCF_SUCCESS);
    a.expect("monitor", OCF_NOT_RUNNING);
    assert_eq!(cib.score("node-1"), None);
}

#[test]
fn ocf_tester_passes_on_two_real_daemons() {
    if !have(&[
        "ocf-tester",
        "xmllint",
        DTD,
        "cibadmin",
        "crm_attribute",
        SHELLFUNCS,
    ]) {
        return;
    }
    let p = two_daemons();
    // node-2 up and UpToDate with node-1, then node-1 down again: ocf-tester starts from a
    // stopped resource, and its promote needs UpToDate data.
    p.b.adm(&["up", RES]).ok();
    p.a.adm(&["up", RES]).ok();
    p.a.adm(&["wait-connect", "--wfc-timeout", "20", RES]).ok();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.eventually(10, "peer-disk:UpToDate", || {
        common::pair::status(&p.a).contains("peer-disk:UpToDate")
    });
    p.a.adm(&["down", RES]).ok();

    // The installed agent (scripts/install-ocf.sh into a scratch root), readable by nobody:
    // ocf-tester runs meta-data as nobody.
    let root = common::scratch();
    let r = run(Command::new(repo("scripts/install-ocf.sh")).arg(root.path()));
    assert_eq!(r.code, 0, "install-ocf.sh: {r:#?}");
    let installed = root.path().join("usr/lib/ocf/resource.d/udrbd/udrbd");
    for f in [
        &installed,
        &root.path().join("usr/lib/udrbd/fence-peer.sh"),
        &root.path().join("usr/lib/udrbd/unfence-peer.sh"),
    ] {
        let mode = std::fs::metadata(f)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{}", f.display());
    }
    let mut dir = Some(root.path());
    while let Some(d) = dir {
        let mut perm = std::fs::metadata(d).expect("dir").permissions();
        perm.set_mode(perm.mode() | 0o755);
        std::fs::set_permissions(d, perm).expect("chmod");
        dir = d
            .parent()
            .filter(|d| d.starts_with(env!("CARGO_TARGET_TMPDIR")));
    }

    let bin = BinDir::real();
    let cib = Cib::walkthrough();
    let a = Agent {
        path: installed.clone(),
        node: &p.a,
        bin: bin.path(),
        cib: &cib,
    };
    let mut cmd = Command::new("ocf-tester");
    cmd.args(["-v", "-n", INSTANCE]);
    for (k, v) in a.params() {
        cmd.arg("-o")
            .arg(format!("{}={v}", k.trim_start_matches("OCF_RESKEY_")));
    }
    let r = run(cmd.arg(&installed).env("CIB_file", &cib.path));
    assert!(
        r.code == 0 && r.stdout.contains("passed all tests"),
        "ocf-tester failed: {r:#?}\n{}",
        p.logs()
    );
    // It left the resource stopped; node-2 is still up.
    a.expect("monitor", OCF_NOT_RUNNING);
    let b = agent(&p.b, &bin, &cib);
    b.expect("monitor", OCF_SUCCESS);
}

/// The daemon itself runs the fence handlers: node-1 (Primary, `fencing resource-only`)
/// loses node-2 (killed), runs `ocf/fence-peer.sh`, which places the constraint in the CIB and
/// answers 4, so node-2 is Outdated in node-1's view; when node-2 is back and both are
/// UpToDate, `unfence-peer` removes the constraint.
#[test]
fn the_daemon_runs_the_fence_handlers_against_the_cib() {
    if !have(PCMK) {
        return;
    }
    let cib = Cib::walkthrough();
    let extra = format!(
        "net {{ connect-int 1; ping-int 1; ping-timeout 5; timeout 5; ko-count 2; }}\n    \
         handlers {{ fence-peer \"{}\"; unfence-peer \"{}\"; }}",
        repo("ocf/fence-peer.sh").display(),
        repo("ocf/unfence-peer.sh").display()
    );
    let mut p = pair(&extra);
    for n in [&mut p.a, &mut p.b] {
        n.daemon_env
            .push(("CIB_file".into(), cib.path.display().to_string()));
    }
    p.up();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", RES]).ok();
    let status = |n: &Node| n.adm(&["status", "--verbose", RES]).ok().stdout;
    p.eventually(10, "UpToDate/UpToDate", || {
        status(&p.a).contains("peer-disk:UpToDate")
    });
    assert_eq!(cib.constraint(), None);

    p.b.crash();
    p.eventually(20, "the constraint placed by fence-peer", || {
        cib.constraint().is_some()
    });
    p.eventually(10, "node-2 Outdated in node-1's view", || {
        status(&p.a).contains("peer-disk:Outdated")
    });
    let c = cib.constraint().unwrap_or_default();
    assert!(c.contains("value=\"node-1\""), "{c}");
    assert!(
        p.a.log_text().contains("fence-peer"),
        "no fence-peer call in the log:\n{}",
        p.logs()
    );
    cib.verify();

    p.b.start();
    p.b.adm(&["up", RES]).ok();
    p.eventually(30, "the constraint removed by unfence-peer", || {
        cib.constraint().is_none()
    });
    p.eventually(10, "UpToDate/UpToDate again", || {
        status(&p.a).contains("peer-disk:UpToDate")
    });
    cib.verify();
}

/// `quorum majority` with two diskful nodes: node-2 crashes, node-1 has no quorum
/// (`quorum:no`, the peer's state unknown) and the agent removes its promotion score, as
/// ocf:linbit:drbd does for a node that cannot be promoted; the score comes back with the peer.
#[test]
fn a_node_without_quorum_loses_its_promotion_score() {
    if !have(PCMK) {
        return;
    }
    let mut p = pair("net { connect-int 1; }");
    for n in [&p.a, &p.b] {
        let text = std::fs::read_to_string(&n.config).expect("config");
        let text = text.replace("quorum off;", "quorum majority;");
        std::fs::write(&n.config, text).expect("config");
    }
    for n in [&mut p.a, &mut p.b] {
        n.adm(&["create-md", RES]).ok();
        n.start();
    }
    let bin = BinDir::real();
    let cib = Cib::walkthrough();
    for n in [&p.a, &p.b] {
        let r = agent(n, &bin, &cib).run("start", GOOD_CLONE);
        assert_eq!(r.code, OCF_SUCCESS, "start: {r:#?}\n{}", p.logs());
    }
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.eventually(10, "peer-disk:UpToDate", || {
        common::pair::status(&p.a).contains("peer-disk:UpToDate")
    });
    let a = agent(&p.a, &bin, &cib);
    a.expect("monitor", OCF_SUCCESS);
    assert_eq!(cib.score("node-1"), Some(10000));

    p.b.crash();
    p.eventually(10, "node-1 without quorum", || {
        common::pair::status(&p.a).contains("quorum:no")
    });
    a.expect("monitor", OCF_SUCCESS);
    assert_eq!(cib.score("node-1"), None, "no quorum: no promotion score");
    let r = a.run("promote", &[("OCF_RESKEY_CRM_meta_timeout", "5000")]);
    assert_eq!(r.code, OCF_ERR_GENERIC, "promote without quorum: {r:#?}");

    p.b.start();
    p.b.adm(&["up", RES]).ok();
    p.eventually(20, "node-1 with quorum and its peer again", || {
        let st = common::pair::status(&p.a);
        !st.contains("quorum:no") && st.contains("peer-disk:UpToDate")
    });
    a.expect("monitor", OCF_SUCCESS);
    assert_eq!(cib.score("node-1"), Some(10000));
    a.expect("stop", OCF_SUCCESS);
    agent(&p.b, &bin, &cib).expect("stop", OCF_SUCCESS);
}
