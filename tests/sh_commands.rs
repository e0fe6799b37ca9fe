//! drbdadm's `sh-*` commands, as drbd-utils' scripts call them: one fact per line, drbd-utils
//! 9's texts, no daemon needed.

mod common;

use std::process::Command;

const CONF: &str = r#"resource r0 {
  on alice { node-id 0; address 127.0.0.1:7000; disk /dev/x; meta-disk internal; device /dev/drbd3; }
  on bob { node-id 1; address 127.0.0.1:7001; disk /dev/y; meta-disk /dev/m [2]; device minor 4; }
}
resource r1 {
  on alice { node-id 0; address 127.0.0.1:7002; disk none; device minor 5; }
  on bob { node-id 1; address 127.0.0.1:7003; disk /dev/z; meta-disk /dev/n; device minor 6; }
}
"#;

fn sh(conf: &std::path::Path, node: &str, args: &[&str]) -> (i32, String) {
    let o = Command::new(common::drbdadm_bin())
        .arg("-c")
        .arg(conf)
        .args(["--node", node])
        .args(args)
        .output()
        .expect("run drbdadm");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn sh_commands_print_what_drbd_utils_prints() {
    let dir = common::scratch();
    let conf = dir.path().join("drbd.conf");
    std::fs::write(&conf, CONF).expect("write");
    let cases: &[(&str, &[&str], &str)] = &[
        ("bob", &["sh-nop"], ""),
        ("bob", &["sh-resources"], "r0\nr1\n"),
        ("bob", &["sh-resource", "r0"], "r0\n"),
        ("bob", &["sh-dev", "r0"], "/dev/drbd4\n"),
        ("alice", &["sh-dev", "r0"], "/dev/drbd3\n"),
        ("bob", &["sh-minor", "all"], "4\n6\n"),
        ("bob", &["sh-ll-dev", "r0"], "/dev/y\n"),
        ("alice", &["sh-ll-dev", "r1"], "none\n"),
        ("alice", &["sh-md-dev", "r0"], "/dev/x\n"),
        ("bob", &["sh-md-dev", "r0"], "/dev/m\n"),
        ("alice", &["sh-md-idx", "r0"], "internal\n"),
        ("bob", &["sh-md-idx", "r0"], "2\n"),
        ("bob", &["sh-md-idx", "r1"], "flexible\n"),
        ("bob", &["sh-ip", "r0"], "127.0.0.1\n"),
        (
            "alice",
            &["sh-udev", "r0/0"],
            // drbd-utils' sh_udev(): a volume written without a `volume` section links
            // by-res/RES, not by-res/RES/0, unless udev-always-use-vnr (below).
            "DEVICE=drbd3\nSYMLINK=drbd/by-res/r0\nSYMLINK_BY_RES=drbd/by-res/r0\nSYMLINK_BY_DISK=drbd/by-disk/x\n",
        ),
        // Diskless: no by-disk link.
        (
            "alice",
            &["sh-udev", "r1/0"],
            "DEVICE=drbd5\nSYMLINK=drbd/by-res/r1\nSYMLINK_BY_RES=drbd/by-res/r1\n",
        ),
    ];
    for (node, args, want) in cases {
        let (code, out) = sh(&conf, node, args);
        assert_eq!((code, out.as_str()), (0, *want), "{node}: drbdadm {args:?}");
    }
    let vnr = dir.path().join("vnr.conf");
    std::fs::write(&vnr, format!("global {{ udev-always-use-vnr; }}\n{CONF}")).expect("write");
    assert_eq!(
        sh(&vnr, "alice", &["sh-udev", "r0/0"]),
        (
            0,
            "DEVICE=drbd3\nSYMLINK=drbd/by-res/r0/0\nSYMLINK_BY_RES=drbd/by-res/r0/0\nSYMLINK_BY_DISK=drbd/by-disk/x\n"
                .to_string()
        )
    );
    let explicit = dir.path().join("explicit.conf");
    std::fs::write(
        &explicit,
        "resource r2 {\n  volume 0 { device minor 7; disk /dev/x; meta-disk internal; }\n  \
         on alice { node-id 0; address 127.0.0.1:7004; }\n  \
         on bob { node-id 1; address 127.0.0.1:7005; }\n}\n",
    )
    .expect("write");
    assert_eq!(
        sh(&explicit, "alice", &["sh-udev", "r2/0"]).1,
        "DEVICE=drbd7\nSYMLINK=drbd/by-res/r2/0\nSYMLINK_BY_RES=drbd/by-res/r2/0\nSYMLINK_BY_DISK=drbd/by-disk/x\n"
    );
    let (code, out) = sh(&conf, "bob", &["sh-list-config-file", "r1"]);
    assert_eq!(code, 0);
    assert_eq!(out, format!("{}:5:r1\n", conf.display()));
    // sh-nop is how scripts check a configuration: exit 10 when it is invalid.
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "resource r0 {").expect("write");
    assert_eq!(sh(&bad, "bob", &["sh-nop"]).0, 10);
}
