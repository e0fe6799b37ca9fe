//! drbdadm end to end: the real binary, real config files and real backing files.

use assert_cmd::Command;
use std::fs;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A scratch directory with a two-node config whose disks are sparse files in it.
struct Setup {
    dir: TempDir,
    conf: PathBuf,
}

impl Setup {
    fn new(disk_size: u64, meta: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["alice.img", "bob.img", "meta.img"] {
            let f = fs::File::create(dir.path().join(name)).expect("create image");
            f.set_len(disk_size).expect("size image");
        }
        let meta = meta.replace("@DIR@", &dir.path().display().to_string());
        let conf = dir.path().join("drbd.conf");
        let text = format!(
            r#"
resource r0 {{
    device minor 3;
    meta-disk {meta};
    on alice {{ node-id 0; address 127.0.0.1:7790; disk "{d}/alice.img"; }}
    on bob   {{ node-id 1; address 127.0.0.1:7791; disk "{d}/bob.img"; }}
}}
resource r1 {{
    device minor 4;
    disk none;
    meta-disk internal;
    on alice {{ node-id 0; address 127.0.0.1:7792; }}
    on bob   {{ node-id 1; address 127.0.0.1:7793; }}
}}
"#,
            d = dir.path().display()
        );
        fs::write(&conf, text).expect("write config");
        Setup { dir, conf }
    }

    fn adm(&self) -> Command {
        let mut c = Command::cargo_bin("drbdadm").expect("drbdadm binary");
        c.env_remove("UDRBD_NODE").env_remove("UDRBD_CONFIG");
        c.arg("-c").arg(&self.conf).arg("--node").arg("alice");
        c
    }

    fn disk(&self) -> PathBuf {
        self.dir.path().join("alice.img")
    }
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run drbdadm");
    assert!(
        out.status.success(),
        "drbdadm failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn create_dump_get_gi_wipe_internal() {
    let s = Setup::new(64 << 20, "internal");
    let out = stdout_of(s.adm().args(["create-md", "r0"]));
    assert!(
        out.contains("New drbd meta data block successfully created."),
        "{out}"
    );

    let dump = stdout_of(s.adm().args(["dump-md", "r0"]));
    assert!(dump.contains("current-uuid 0x0000000000000004;"), "{dump}");
    assert!(dump.contains("node-id 0;"), "{dump}");

    let gi = stdout_of(s.adm().args(["get-gi", "r0"]));
    assert!(
        gi.starts_with("0000000000000004:0000000000000000:0000000000000000:0000000000000000:"),
        "{gi}"
    );
    let show = stdout_of(s.adm().args(["show-gi", "r0"]));
    assert!(
        show.contains(gi.trim()),
        "show-gi repeats the get-gi line: {show}"
    );
    assert!(show.contains("Current data generation UUID"), "{show}");

    // Valid metadata is not overwritten without --force (no terminal to confirm on).
    let again = s.adm().args(["create-md", "r0"]).output().expect("run");
    assert!(!again.status.success());
    // ... but is with it, options before or after the command.
    stdout_of(s.adm().args(["--force", "create-md", "r0"]));
    stdout_of(s.adm().args(["create-md", "r0", "--force"]));

    let wiped = stdout_of(s.adm().args(["wipe-md", "--force", "r0"]));
    assert!(
        wiped.contains("DRBD meta data block successfully wiped out."),
        "{wiped}"
    );
    let none = s.adm().args(["dump-md", "r0"]).output().expect("run");
    assert_eq!(
        none.status.code(),
        Some(255),
        "dump-md without metadata exits 255"
    );
}

#[test]
fn external_indexed_metadata_leaves_the_data_disk_alone() {
    let s = Setup::new(256 << 20, "\"@DIR@/meta.img\" [1]");
    fs::write(s.disk(), vec![0xA5u8; 1 << 20]).expect("fill data");
    stdout_of(s.adm().args(["create-md", "--force", "r0"]));
    let data = fs::read(s.disk()).expect("read data");
    assert!(
        data.iter().all(|&b| b == 0xA5),
        "external metadata must not touch the data disk"
    );
    let dump = stdout_of(s.adm().args(["dump-md", "r0/0"]));
    assert!(dump.contains("current-uuid"), "{dump}");
}

#[test]
fn create_md_refuses_a_device_that_looks_used() {
    let s = Setup::new(64 << 20, "internal");
    // An ext4 superblock magic (0xEF53 at byte 1080).
    let mut f = fs::read(s.disk()).expect("read");
    f[1080] = 0x53;
    f[1081] = 0xEF;
    fs::write(s.disk(), f).expect("write");
    let out = s.adm().args(["create-md", "r0"]).output().expect("run");
    assert!(
        !out.status.success(),
        "must refuse a device with a filesystem"
    );
    stdout_of(s.adm().args(["create-md", "--force", "r0"]));
}

#[test]
fn diskless_volume_has_no_metadata() {
    let s = Setup::new(1 << 20, "internal");
    let out = s.adm().args(["create-md", "r1"]).output().expect("run");
    assert_eq!(out.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&out.stderr).contains("diskless"));
}

#[test]
fn unknown_resource_is_a_config_error() {
    let s = Setup::new(1 << 20, "internal");
    let out = s.adm().args(["dump-md", "r9"]).output().expect("run");
    assert_eq!(out.status.code(), Some(10));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "'r9' not defined in your config (for this host)."
    );
}

#[test]
fn all_means_every_resource() {
    let s = Setup::new(1 << 20, "internal");
    let names = stdout_of(s.adm().arg("sh-resources"));
    assert_eq!(names.trim(), "r0\nr1");
    let all = stdout_of(s.adm().args(["dump", "all"]));
    assert!(
        all.contains("resource r0") && all.contains("resource r1"),
        "{all}"
    );
}

#[test]
fn no_matching_host_says_how_to_choose() {
    let s = Setup::new(1 << 20, "internal");
    let mut c = Command::cargo_bin("drbdadm").expect("bin");
    let out = c
        .env_remove("UDRBD_NODE")
        .args(["-c"])
        .arg(&s.conf)
        .args(["--node", "carol", "dump-md", "r0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("carol") && err.contains("alice") && err.contains("--node"),
        "{err}"
    );
    // The environment variable works like --node.
    let mut c = Command::cargo_bin("drbdadm").expect("bin");
    c.env("UDRBD_NODE", "bob")
        .arg("-c")
        .arg(&s.conf)
        .args(["dump-md", "r0"]);
    let out = c.output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(255),
        "bob's disk has no metadata yet"
    );
}

#[test]
fn dump_of_the_suse_ha_config_is_stable() {
    let conf = repo_path("tests/data/configs/suse-ha/drbd.conf");
    let mut c = Command::cargo_bin("drbdadm").expect("bin");
    let first = stdout_of(c.arg("-c").arg(&conf).args(["dump", "all"]));
    assert!(first.contains("resource res0"), "{first}");
    assert!(first.contains("shared-secret"), "{first}");
    let dir = tempfile::tempdir().expect("tempdir");
    let again = dir.path().join("dumped.conf");
    fs::write(&again, &first).expect("write");
    let mut c = Command::cargo_bin("drbdadm").expect("bin");
    let second = stdout_of(c.arg("-c").arg(&again).args(["dump", "all"]));
    assert_eq!(first, second, "dumping the dump gives the same text");
}

#[test]
fn broken_config_names_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("bad.conf");
    fs::write(&conf, "resource r0 {\n    net { protocl C; }\n}\n").expect("write");
    let mut c = Command::cargo_bin("drbdadm").expect("bin");
    let out = c
        .arg("-c")
        .arg(&conf)
        .args(["dump", "all"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("{}:2:11:", conf.display())),
        "{err}"
    );
    assert!(
        err.contains("protocol"),
        "suggests the nearest keyword: {err}"
    );
}

#[test]
fn version_is_machine_readable() {
    let mut c = Command::cargo_bin("drbdadm").expect("bin");
    let out = stdout_of(c.arg("--version"));
    assert!(
        out.lines().any(|l| l.starts_with("DRBD_KERNEL_VERSION=9.")),
        "{out}"
    );
    assert!(out.lines().any(|l| l == "DRBDADM_API_VERSION=2"), "{out}");
}

#[test]
fn help_teaches() {
    let mut c = Command::cargo_bin("drbdadm").expect("bin");
    let out = stdout_of(c.args(["create-md", "--help"]));
    assert!(
        out.contains("--max-peers") && out.contains("--force"),
        "{out}"
    );
}

#[test]
fn an_unknown_command_and_a_missing_config_file_get_drbdadms_words_and_codes() {
    let mut c = Command::cargo_bin("drbdadm").expect("bin");
    let out = c.args(["statsu", "r0"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("drbdadm: Unknown command 'statsu'"),
        "{err}"
    );
    assert!(
        err.contains("did you mean") && err.contains("'status'"),
        "{err}"
    );

    let mut c = Command::cargo_bin("drbdadm").expect("bin");
    let out = c
        .args(["-c", "/nonexistent/drbd.conf", "status", "r0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(20), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "Can not open '/nonexistent/drbd.conf'."
    );
}
