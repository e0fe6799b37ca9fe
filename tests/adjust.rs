//! `drbdadm adjust` against two real daemons on loopback: a resource that is down is brought
//! up, `-d` prints drbdsetup's commands and changes nothing, options the engine acts on apply
//! without touching the connection, a changed protocol or path reconnects with the new
//! settings, a disk the config drops is detached and re-attached when it comes back, a changed
//! backing device is swapped, a StandAlone connection is connected, and what adjust cannot
//! change is refused.

mod common;

use common::Node;
use common::pair::{Pair, RES, eventually, pair, status};

/// Rewrites `n`'s config file with `f`.
fn edit(n: &Node, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(&n.config).expect("read config");
    let new = f(text.clone());
    assert_ne!(new, text, "the edit changed nothing");
    std::fs::write(&n.config, new).expect("write config");
}

fn adjust(n: &Node, args: &[&str]) -> common::Run {
    let mut all = args.to_vec();
    all.extend(["adjust", RES]);
    n.adm(&all)
}

/// `drbdadm -d adjust` on `n` prints exactly `want` (one drbdsetup command per line).
fn assert_dry_run(n: &Node, want: &[String]) {
    let dry = adjust(n, &["-d"]).ok();
    assert_eq!(lines(&dry.stdout), want, "{dry:#?}");
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Lines of `s` in order, trimmed, without blank ones.
fn lines(s: &str) -> Vec<&str> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

/// How many times node `n` completed a link handshake.
fn handshakes(n: &Node) -> usize {
    n.log_text().matches("Handshake to peer").count()
}

/// Both daemons running with metadata, brought up by `adjust`; node-1 Primary, in sync.
fn adjusted_pair(extra: &str) -> Pair {
    let mut p = pair(extra);
    for n in [&mut p.a, &mut p.b] {
        n.adm(&["create-md", RES]).ok();
        n.start();
    }
    let disk = p.disk_a.display().to_string();
    assert_dry_run(
        &p.a,
        &[
            "drbdsetup new-resource res0 0".to_string(),
            format!("drbdsetup attach 0 {disk} {disk} internal"),
            "drbdsetup connect res0 1".to_string(),
        ],
    );
    // -d changed nothing: the resource is not up.
    let st = p.a.adm(&["status", RES]);
    assert_ne!(st.code, 0, "{st:#?}");
    let first = adjust(&p.a, &[]).ok();
    // The how-to's `degr-wfc-timeout` is parsed but not acted on: said, with its place.
    assert!(
        first.stderr.contains(".conf:3:15: ")
            && first
                .stderr
                .contains("degr-wfc-timeout is accepted but has no effect in udrbd"),
        "{first:#?}"
    );
    adjust(&p.b, &[]).ok();
    p.a.adm(&["wait-connect", "--wfc-timeout", "20", RES]).ok();
    p.a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    p.a.adm(&["primary", "--force", RES]).ok();
    p.eventually(20, "connected and UpToDate", || p.in_sync());
    // Nothing differs now.
    for n in [&p.a, &p.b] {
        let dry = adjust(n, &["-d"]).ok();
        assert_eq!(dry.stdout, "", "{dry:#?}");
    }
    p
}

/// The `address` of host `host` in `n`'s config.
fn address_of(n: &Node, host: &str) -> String {
    let t = std::fs::read_to_string(&n.config).expect("config");
    let on = t.find(&format!("on {host} {{")).expect("host section");
    let at = on + t[on..].find("address ").expect("address") + "address ".len();
    t[at..at + t[at..].find(';').expect(";")].to_string()
}

fn write_through(n: &Node, pattern: u8, offset: &str) {
    let o = common::tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            &format!("write -P {pattern} {offset} 1M"),
            "-c",
            "flush",
            &n.nbd_uri(RES),
        ],
    );
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn adjust_brings_up_applies_live_options_and_connects_standalone() {
    let p = adjusted_pair("");
    // drbdsetup's state queries and waits, as scripts call them.
    assert_eq!(p.a.setup(&["role", RES]).ok().stdout, "Primary\n");
    assert_eq!(p.b.setup(&["role", RES]).ok().stdout, "Secondary\n");
    assert_eq!(p.a.setup(&["cstate", RES, "1"]).ok().stdout, "Connected\n");
    assert_eq!(
        p.a.setup(&["dstate", RES]).ok().stdout,
        "UpToDate/UpToDate\n"
    );
    p.a.setup(&["wait-connect-resource", "--wfc-timeout", "5", RES])
        .ok();
    p.a.setup(&["wait-sync-resource", "--wfc-timeout", "5", RES])
        .ok();
    let r = p.b.setup(&["primary", RES]);
    assert_eq!(r.code, 11, "two primaries refused: {r:#?}");
    let before = handshakes(&p.a);
    edit(&p.a, |t| {
        t.replace(
            "fencing resource-only;",
            "fencing resource-only; ko-count 3; max-buffers 4096;",
        )
        .replace(
            "options { quorum off; }",
            "options { quorum off; auto-promote-timeout 50; }\n    disk { c-max-rate 20M; on-io-error pass_on; }",
        )
    });
    let steps = strings(&[
        "drbdsetup resource-options res0 --auto-promote-timeout=50",
        "drbdsetup net-options res0 1 --ko-count=3 --max-buffers=4096",
        "drbdsetup peer-device-options res0 1 0 --c-max-rate=20480",
        "drbdsetup disk-options 0 --on-io-error=pass_on",
    ]);
    assert_dry_run(&p.a, &steps);
    let shown = p.a.setup(&["show", RES]).ok().stdout;
    assert!(
        !shown.contains("ko-count"),
        "-d applied something:\n{shown}"
    );

    let done = adjust(&p.a, &["-v"]).ok();
    assert_eq!(lines(&done.stdout), steps, "-v prints the steps it ran");
    let shown = p.a.setup(&["show", RES]).ok().stdout;
    for want in [
        "auto-promote-timeout\t50;",
        "ko-count        \t3;",
        "max-buffers     \t4096;",
        "c-max-rate      \t20480;",
        "on-io-error     \tpass_on;",
    ] {
        assert!(
            shown.contains(want),
            "no `{want}` in drbdsetup show:\n{shown}"
        );
    }
    // Applied without a reconnect.
    assert!(p.in_sync(), "{}", status(&p.a));
    assert_eq!(handshakes(&p.a), before, "{}", p.logs());
    assert_eq!(adjust(&p.a, &["-d"]).ok().stdout, "");

    // A new handler is run from the next call on.
    edit(&p.a, |t| {
        t.replace(
            "options { quorum off; auto-promote-timeout 50; }",
            "options { quorum off; auto-promote-timeout 50; }\n    handlers { disconnected \"echo disc-handler-$DRBD_RESOURCE\"; }",
        )
    });
    assert_dry_run(
        &p.a,
        &strings(&["# res0: the disconnected handler changed (applied by the daemon at once)"]),
    );
    adjust(&p.a, &[]).ok();

    // A StandAlone connection is connected.
    p.a.adm(&["disconnect", RES]).ok();
    eventually(10, "StandAlone", || {
        status(&p.a).contains("connection:StandAlone")
    });
    p.eventually(10, "the adjusted handler", || {
        p.a.log_text().contains("disc-handler-res0")
    });
    assert_dry_run(&p.a, &strings(&["drbdsetup connect res0 1"]));
    adjust(&p.a, &[]).ok();
    p.eventually(20, "connected again", || p.in_sync());

    // What adjust cannot change is refused, and nothing changes.
    edit(&p.a, |t| t.replace("node-id 1;", "node-id 2;"));
    let r = adjust(&p.a, &[]);
    assert_ne!(r.code, 0, "{r:#?}");
    assert!(
        r.stderr.contains("drbdadm down res0") && r.stderr.contains("node-2"),
        "{r:#?}"
    );
    assert!(p.in_sync(), "{}", status(&p.a));
}

#[test]
fn a_changed_protocol_or_path_reconnects_with_the_new_settings() {
    let p = adjusted_pair("");
    // Protocol A, a verify-alg and a resync-rate on both: each adjust closes the connection
    // (agreed, so the Primary fences nobody) and reconnects; the first node to reconnect
    // meets the old protocol and waits.
    for n in [&p.a, &p.b] {
        edit(n, |t| {
            t.replace("protocol C;", "protocol A; verify-alg crc32c;")
                .replace("    net {", "    disk { resync-rate 40M; }\n    net {")
        });
    }
    let dry = adjust(&p.a, &["-d"]).ok().stdout;
    let dry = lines(&dry);
    for want in [
        "drbdsetup disconnect res0 1",
        "drbdsetup connect res0 1",
        "drbdsetup peer-device-options res0 1 0 --resync-rate=40960",
    ] {
        assert!(dry.contains(&want), "{want}: {dry:#?}");
    }
    assert!(
        dry.iter()
            .any(|l| l.starts_with("drbdsetup net-options res0 1")
                && l.contains(" --protocol=A")
                && l.contains(" --verify-alg=crc32c")),
        "{dry:#?}"
    );
    // Under application writes: the Primary's I/O goes on through the reconnect.
    let load = common::fio_load(&p.a.nbd_uri(RES), "adjust", 4);
    adjust(&p.a, &[]).ok();
    adjust(&p.b, &[]).ok();
    // Whichever side went StandAlone on meeting the old protocol connects again.
    for n in [&p.a, &p.b] {
        adjust(n, &[]).ok();
    }
    common::fio_ok(load, &p.logs());
    p.eventually(30, "connected under protocol A", || p.in_sync());
    for n in [&p.a, &p.b] {
        let shown = n.setup(&["show", RES]).ok().stdout;
        assert!(shown.contains("protocol        \tA;"), "{shown}");
    }
    assert!(
        !p.a.log_text().contains("fence-peer helper"),
        "a reconnect for new settings fenced the peer:\n{}",
        p.logs()
    );
    let shown = p.a.setup(&["show", RES]).ok().stdout;
    assert!(
        shown.contains("crc32c") && shown.contains("resync-rate"),
        "{shown}"
    );
    write_through(&p.a, 0x11, "0");
    p.wait_sync();
    p.assert_identical();
    // The new verify-alg is the one both sides run.
    p.assert_verify_clean();

    // node-2 moves to another port: node-1's peer address and node-2's own both change.
    let port = common::free_port();
    let old = address_of(&p.a, "node-2");
    let new = format!("127.0.0.1:{port}");
    for n in [&p.a, &p.b] {
        edit(n, |t| t.replace(&old, &new));
    }
    let dry = adjust(&p.a, &["-d"]).ok();
    let own = address_of(&p.a, "node-1");
    assert_eq!(
        lines(&dry.stdout),
        [
            "drbdsetup disconnect res0 1".to_string(),
            format!("drbdsetup del-path res0 1 ipv4:{own} ipv4:{old}"),
            format!("drbdsetup new-path res0 1 ipv4:{own} ipv4:{new}"),
            "drbdsetup connect res0 1".to_string(),
        ],
        "{dry:#?}"
    );
    adjust(&p.a, &[]).ok();
    adjust(&p.b, &[]).ok();
    for n in [&p.a, &p.b] {
        adjust(n, &[]).ok();
    }
    p.eventually(30, "connected on the new port", || p.in_sync());
    let shown = p.a.setup(&["show", RES]).ok().stdout;
    assert!(
        shown.contains(&format!("_remote_host ipv4 {new};")),
        "{shown}"
    );
    write_through(&p.a, 0x22, "1M");
    p.wait_sync();
    p.assert_identical();
}

#[test]
fn a_disk_the_config_drops_is_detached_and_attached_when_it_returns() {
    let p = adjusted_pair("");
    let disk = p.disk_b.display().to_string();
    let line = format!("disk \"{disk}\";");
    edit(&p.b, |t| t.replace(&line, "disk none;"));
    assert_dry_run(&p.b, &strings(&["drbdsetup detach 0"]));
    adjust(&p.b, &[]).ok();
    eventually(10, "node-2 Diskless", || {
        status(&p.b).contains("disk:Diskless")
    });
    // Written while node-2 has no disk: resynced when it comes back.
    write_through(&p.a, 0x33, "2M");
    edit(&p.b, |t| t.replace("disk none;", &line));
    assert_dry_run(
        &p.b,
        &[format!("drbdsetup attach 0 {disk} {disk} internal")],
    );
    adjust(&p.b, &[]).ok();
    p.eventually(30, "node-2 attached and in sync", || {
        p.in_sync() && status(&p.b).contains("disk:UpToDate")
    });
    p.assert_identical();
}

/// The config names another backing device for node-2 (a disk replaced, with metadata made for
/// it): adjust detaches the old one and attaches the new one in one go, and node-1 resyncs it
/// in full, the writes made meanwhile included.
#[test]
fn a_changed_backing_device_is_swapped_and_resynced() {
    let p = adjusted_pair("");
    let old = p.disk_b.display().to_string();
    let new_path = p.disk_b.with_file_name("disk-2-replacement.img");
    let size = std::fs::metadata(&p.disk_b).expect("disk size").len();
    common::backing_file(&new_path, size);
    let new = new_path.display().to_string();
    // Metadata for the new disk, as `drbdadm create-md` makes it from a config that names it
    // (drbdadm asks no daemon about it: this run directory has none).
    let text = std::fs::read_to_string(&p.b.config).expect("config");
    let swap = p.b.config.with_file_name("swap.conf");
    std::fs::write(&swap, text.replace(&old, &new)).expect("write swap.conf");
    let no_daemon = common::scratch();
    let o = std::process::Command::new(common::drbdadm_bin())
        .args(["create-md", RES])
        .env("UDRBD_CONFIG", &swap)
        .env("UDRBD_NODE", &p.b.name)
        .env("UDRBD_RUN_DIR", no_daemon.path())
        .env("UDRBD_STATE_DIR", no_daemon.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("create-md");
    assert!(o.status.success(), "{o:?}");

    write_through(&p.a, 0x44, "3M");
    edit(&p.b, |t| t.replace(&old, &new));
    assert_dry_run(
        &p.b,
        &[
            "drbdsetup detach 0".to_string(),
            format!("drbdsetup attach 0 {new} {new} internal"),
        ],
    );
    adjust(&p.b, &[]).ok();
    p.eventually(60, "node-2 on its new disk, in sync", || {
        p.in_sync() && status(&p.b).contains("disk:UpToDate")
    });
    let a = std::fs::read(&p.disk_a).expect("read a");
    let b = std::fs::read(&new_path).expect("read the new disk");
    let data = common::pair::DATA;
    assert!(
        a[..data] == b[..data],
        "the new disk differs from node-1's; logs:\n{}",
        p.logs()
    );
    assert_eq!(&b[3 << 20..(3 << 20) + 4096], &[0x44; 4096][..]);
}
