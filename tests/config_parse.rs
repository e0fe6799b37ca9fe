//! The config language on real configs: the SUSE HA how-to (split over includes) and the
//! reference's sample configs. Everything parses, resolves per host, and dumps stably.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use udrbd::config::{
    AfterSb0Pri, Config, Fencing, HostQuery, MemSource, Protocol, Quorum, Resolved, dump, load,
    parse_str, resolve,
};
use udrbd::types::{MetaDisk, NodeId};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/configs");

/// Loads a directory of test files into a MemSource rooted at `/etc/drbd`.
fn mem_dir(dir: &str) -> MemSource {
    let mut src = MemSource::new();
    for e in std::fs::read_dir(Path::new(DATA).join(dir)).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        src = src.with(
            PathBuf::from("/etc/drbd").join(p.file_name().unwrap()),
            text,
        );
    }
    src
}

fn sample(name: &str) -> Config {
    let text = std::fs::read_to_string(Path::new(DATA).join("samples").join(name)).unwrap();
    parse_str(name, &text).unwrap()
}

fn as_node(cfg: &Config, res: &str, node: &str) -> Resolved {
    let q = HostQuery {
        explicit: Some(node),
        hostname: "somewhere-else",
        is_local: &|_| false,
    };
    resolve(cfg, res, &q).unwrap()
}

fn sa(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

/// dump(parse(dump(x))) == dump(x), and the dump parses.
fn assert_dump_stable(cfg: &Config) -> String {
    let first = dump(cfg, None).unwrap();
    let again = parse_str("dump.conf", &first)
        .unwrap_or_else(|e| panic!("dump does not parse: {e}\n{first}"));
    assert_eq!(dump(&again, None).unwrap(), first);
    for r in cfg.resource_names() {
        let one = dump(cfg, Some(r)).unwrap();
        let again = parse_str("one.res", &one).unwrap();
        assert_eq!(dump(&again, Some(r)).unwrap(), one);
    }
    first
}

#[test]
fn suse_ha_loads_through_includes() {
    let cfg = load(&mem_dir("suse-ha"), Path::new("/etc/drbd/drbd.conf")).unwrap();
    assert_eq!(cfg.resource_names(), vec!["res0"]);
    assert!(cfg.has_resource("res0") && !cfg.has_resource("res1"));
    for (node, id, addr, peer, peer_addr) in [
        (
            "node-1",
            0,
            "10.20.30.71:7788",
            "node-2",
            "10.20.30.72:7788",
        ),
        (
            "node-2",
            1,
            "10.20.30.72:7788",
            "node-1",
            "10.20.30.71:7788",
        ),
    ] {
        let r = as_node(&cfg, "res0", node);
        assert_eq!(
            (r.me.name.as_str(), r.me.node_id, r.me.address),
            (node, NodeId(id), sa(addr))
        );
        assert_eq!(r.peers.len(), 1);
        let p = &r.peers[0];
        assert_eq!(
            (p.name.as_str(), p.node_id, p.address),
            (peer, NodeId(1 - id), sa(peer_addr))
        );
        assert_eq!(p.net.protocol, Protocol::C);
        assert_eq!(p.net.cram_hmac_alg.as_deref(), Some("sha1"));
        assert_eq!(p.net.shared_secret.as_deref(), Some("Abcd1234Password"));
        assert_eq!(p.net.fencing, Fencing::ResourceOnly);
        assert_eq!(r.options.quorum, Quorum::Off);
        assert_eq!(
            (r.startup.wfc_timeout, r.startup.degr_wfc_timeout),
            (100, 90)
        );
        assert_eq!(
            r.handlers["fence-peer"],
            "/usr/lib/drbd/crm-fence-peer.9.sh"
        );
        assert_eq!(
            r.handlers["after-resync-target"],
            "/usr/lib/drbd/crm-unfence-peer.9.sh"
        );
        assert_eq!(r.volumes.len(), 1);
        let v = &r.volumes[0];
        assert_eq!(
            (v.number, v.minor, v.device.as_deref()),
            (0, 0, Some("/dev/drbd0"))
        );
        assert_eq!(
            (v.disk.as_deref(), &v.meta_disk),
            (Some("/dev/sda4"), &MetaDisk::Internal)
        );
        assert_eq!(r.config_file, "/etc/drbd/res0.res");
        assert!(r.options.auto_promote);
        // What the daemon receives survives JSON.
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Resolved>(&json).unwrap(), r);
    }
}

#[test]
fn suse_ha_dump_matches_drbd_utils() {
    let cfg = load(&mem_dir("suse-ha"), Path::new("/etc/drbd/drbd.conf")).unwrap();
    let out = assert_dump_stable(&cfg);
    // Every line drbd-utils prints (its comments aside) appears in our dump, in the same order.
    let expected =
        std::fs::read_to_string(Path::new(DATA).join("suse-ha/dump-all.expected")).unwrap();
    let mut ours = out.lines();
    for line in expected
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        assert!(
            ours.any(|l| l == line),
            "dump lacks {line:?} (or has it out of order):\n{out}"
        );
    }
}

#[test]
fn sample_a_man_page() {
    let cfg = sample("a-man-page.res");
    assert_dump_stable(&cfg);
    let a = as_node(&cfg, "r0", "alice");
    assert_eq!(
        (a.me.node_id, a.me.address),
        (NodeId(0), sa("10.1.1.31:7000"))
    );
    let p = &a.peers[0];
    assert_eq!(
        (p.name.as_str(), p.node_id, p.address),
        ("bob", NodeId(1), sa("10.1.1.32:7000"))
    );
    assert_eq!(p.net.protocol, Protocol::C);
    assert_eq!(p.net.cram_hmac_alg.as_deref(), Some("sha1"));
    assert_eq!(p.net.shared_secret.as_deref(), Some("FooFunFactory"));
    assert_eq!(
        (a.volumes[0].minor, a.volumes[0].disk.as_deref()),
        (1, Some("/dev/sda7"))
    );
    let b = as_node(&cfg, "r0", "bob");
    assert_eq!(
        (b.me.node_id, b.peers[0].name.as_str()),
        (NodeId(1), "alice")
    );
}

#[test]
fn sample_b_84_style_is_translated() {
    let cfg = sample("b-drbd84.res");
    let out = assert_dump_stable(&cfg);
    for note in [
        "    # syncer { rate 25M; } translated to disk { resync-rate 25M; }",
        "    # handlers { outdate-peer /opt/root-scripts/bin/fence-peer; } translated to handlers { fence-peer /opt/root-scripts/bin/fence-peer; }",
        "    # disk { no-disk-flushes; } translated to disk { disk-flushes no; }",
        "    # disk { fencing resource-and-stonith; } translated to net { fencing resource-and-stonith; }",
        "    # protocol C; translated to net { protocol C; }",
    ] {
        assert!(
            out.lines().any(|l| l == note),
            "dump lacks {note:?}:\n{out}"
        );
    }
    // No node-ids in the file: the two hosts get 0 and 1 in order, with an implicit connection.
    let me = as_node(&cfg, "dbdata_resource", "undertest");
    assert_eq!(
        (me.me.node_id, me.me.address),
        (NodeId(0), sa("172.16.6.211:1120"))
    );
    let p = &me.peers[0];
    assert_eq!(
        (p.name.as_str(), p.node_id, p.address),
        ("peer-host", NodeId(1), sa("172.16.0.249:1120"))
    );
    assert_eq!(
        as_node(&cfg, "dbdata_resource", "peer-host").me.node_id,
        NodeId(1)
    );
    assert_eq!(p.net.protocol, Protocol::C);
    assert_eq!(p.net.fencing, Fencing::ResourceAndStonith);
    assert_eq!(
        (
            p.net.timeout,
            p.net.ping_int,
            p.net.ping_timeout,
            p.net.ko_count
        ),
        (50, 5, 50, 0)
    );
    assert_eq!(p.net.cram_hmac_alg.as_deref(), Some("md5"));
    assert_eq!(
        (p.net.csums_alg.as_deref(), p.net.verify_alg.as_deref()),
        (Some("md5"), Some("crc32c"))
    );
    assert!(p.net.csums_after_crash_only);
    assert_eq!(
        me.handlers["fence-peer"],
        "/opt/root-scripts/bin/fence-peer"
    );
    assert!(!me.handlers.contains_key("outdate-peer"));
    let d = &me.volumes[0].disk_opts;
    assert_eq!(d.resync.resync_rate, 25600);
    assert_eq!((d.resync.c_min_rate, d.resync.c_max_rate), (20480, 512000));
    assert_eq!(d.al_extents, 379);
    assert!(!d.disk_flushes && !d.md_flushes);
    assert_eq!(d.on_io_error, udrbd::config::OnIoError::CallLocalIoError);
    assert_eq!(p.volumes[0].opts.resync_rate, 25600);
    assert_eq!(me.startup.wfc_timeout, 1);
    assert_eq!(
        me.volumes[0].disk.as_deref(),
        Some("/dev/dbdata01/lvdbdata01")
    );
}

#[test]
fn sample_c_tiebreaker_mesh() {
    let cfg = sample("c-tiebreaker.res");
    assert_dump_stable(&cfg);
    let u = as_node(&cfg, "tiebreaker-test", "undertest");
    let peers: Vec<(&str, NodeId)> = u
        .peers
        .iter()
        .map(|p| (p.name.as_str(), p.node_id))
        .collect();
    assert_eq!(
        peers,
        vec![
            ("other", NodeId(1)),
            ("witness", NodeId(2)),
            ("dless", NodeId(3))
        ]
    );
    assert_eq!(
        (u.volumes[0].minor, u.volumes[0].disk.as_deref()),
        (43, Some("/dev/foo/bar42"))
    );
    let w = as_node(&cfg, "tiebreaker-test", "witness");
    assert_eq!(
        (
            w.me.node_id,
            w.volumes[0].disk.as_deref(),
            w.volumes[0].minor
        ),
        (NodeId(2), None, 43)
    );
    assert_eq!(w.peers.len(), 3);
}

#[test]
fn sample_d_minimal_addresses_in_connection() {
    let cfg = sample("d-minimal.res");
    assert_dump_stable(&cfg);
    let a = as_node(&cfg, "r0", "alice");
    assert_eq!(
        (a.me.node_id, a.me.address),
        (NodeId(0), sa("10.1.1.31:7789"))
    );
    assert_eq!(a.peers[0].address, sa("10.1.1.32:7789"));
    assert_eq!(
        (a.volumes[0].minor, a.volumes[0].device.as_deref()),
        (1, None)
    );
}

const MULTI: &str = r#"
global { usage-count no; }
common { disk { resync-rate 10M; al-extents 6007; } net { protocol C; } }
resource r1 {
    options { nbd-listen 0.0.0.0:10809; auto-promote no; quorum majority; }
    net { after-sb-0pri discard-node-alice; }
    disk { c-plan-ahead 0; }
    volume 0 { device /dev/drbd10; disk /dev/vg/a; meta-disk internal; disk { al-extents 3001; } }
    volume 1 { device /dev/drbd11 minor 11; disk /dev/vg/b; meta-disk /dev/vg/md [2]; }
    on "alice" {
        node-id 5;
        address ipv6 [fd0c:39f4:f135:305:230:48ff:fe63:5c9a]:7789;
        nbd-listen 127.0.0.1:10810;
    }
    on bob { node-id 7; address 10.0.0.2:7789; volume 1 { disk none; } }
    floating ipv4 10.0.0.3:7789 { node-id 9; }
    connection { host alice; host bob; net { protocol A; } disk { resync-rate 40M; } volume 1 { disk { c-max-rate 1G; } } }
    connection { host alice; host 10.0.0.3:7789; }
    skip connection { host nobody; }
}
skip resource disabled { this is not even valid; }
"#;

#[test]
fn inheritance_ipv6_floating_nbd_listen() {
    let cfg = parse_str("multi.res", MULTI).unwrap();
    assert_eq!(cfg.resource_names(), vec!["r1"]);
    assert_dump_stable(&cfg);
    let a = as_node(&cfg, "r1", "alice");
    assert_eq!(
        a.me.address,
        sa("[fd0c:39f4:f135:305:230:48ff:fe63:5c9a]:7789")
    );
    assert_eq!(
        a.me.nbd_listen,
        sa("127.0.0.1:10810"),
        "the host's nbd-listen wins"
    );
    assert_eq!(a.me.node_id, NodeId(5));
    assert!(!a.options.auto_promote);
    assert_eq!(a.options.quorum, Quorum::Majority);
    assert_eq!(a.net.after_sb_0pri, AfterSb0Pri::DiscardLocal);
    assert_eq!(a.volumes.len(), 2);
    assert_eq!((a.volumes[0].minor, a.volumes[1].minor), (10, 11));
    assert_eq!(a.volumes[0].disk_opts.al_extents, 3001);
    assert_eq!(a.volumes[1].disk_opts.al_extents, 6007);
    assert_eq!(a.volumes[0].disk_opts.resync.resync_rate, 10240);
    assert_eq!(a.volumes[0].disk_opts.resync.c_plan_ahead, 0);
    assert_eq!(
        a.volumes[1].meta_disk,
        MetaDisk::External {
            path: "/dev/vg/md".into(),
            index: Some(2)
        }
    );
    let bob = &a.peers[0];
    assert_eq!((bob.name.as_str(), bob.net.protocol), ("bob", Protocol::A));
    assert_eq!(bob.net.after_sb_0pri, AfterSb0Pri::DiscardLocal);
    assert_eq!(bob.volumes[0].opts.resync_rate, 40960);
    assert_eq!(bob.volumes[0].opts.c_max_rate, 102400);
    assert_eq!(bob.volumes[1].opts.c_max_rate, 1 << 20);
    let fl = &a.peers[1];
    assert_eq!(
        (fl.name.as_str(), fl.node_id, fl.net.protocol),
        ("10.0.0.3:7789", NodeId(9), Protocol::C)
    );

    let b = as_node(&cfg, "r1", "bob");
    assert_eq!(b.net.after_sb_0pri, AfterSb0Pri::DiscardRemote);
    assert_eq!(
        b.me.nbd_listen,
        sa("0.0.0.0:10809"),
        "resource-wide nbd-listen"
    );
    assert_eq!(
        (b.volumes[1].disk.as_deref(), b.volumes[0].disk.as_deref()),
        (None, Some("/dev/vg/a"))
    );
    assert_eq!(b.peers.len(), 1);

    // Host selection: hostname, then a floating address that is local.
    let q = HostQuery {
        explicit: None,
        hostname: "bob",
        is_local: &|_| true,
    };
    assert_eq!(resolve(&cfg, "r1", &q).unwrap().me.name, "bob");
    let ip: IpAddr = "10.0.0.3".parse().unwrap();
    let local = move |a: IpAddr| a == ip;
    let q = HostQuery {
        explicit: None,
        hostname: "carol",
        is_local: &local,
    };
    let f = resolve(&cfg, "r1", &q).unwrap();
    assert_eq!((f.me.node_id, f.peers.len()), (NodeId(9), 1));
}

#[test]
fn includes_are_relative_sorted_and_top_level_only() {
    let src = MemSource::new()
        .with(
            "/etc/drbd.conf",
            "include \"drbd.d/global_common.conf\";\ninclude \"drbd.d/*.res\";\n",
        )
        .with(
            "/etc/drbd.d/global_common.conf",
            "common { net { protocol B; } }\n",
        )
        .with(
            "/etc/drbd.d/b.res",
            "resource b { on x { address 1.1.1.1:1; } on y { address 1.1.1.2:1; } }\n",
        )
        .with(
            "/etc/drbd.d/a.res",
            "resource a { on x { address 1.1.1.1:2; } on y { address 1.1.1.2:2; } }\n",
        )
        .with("/etc/drbd.d/a.res.bak", "garbage {");
    let cfg = load(&src, Path::new("/etc/drbd.conf")).unwrap();
    assert_eq!(cfg.resource_names(), vec!["a", "b"]);
    let r = as_node(&cfg, "b", "x");
    assert_eq!(
        (r.peers[0].net.protocol, r.config_file.as_str()),
        (Protocol::B, "/etc/drbd.d/b.res")
    );
    // An error in an included file names that file.
    let src = src.with(
        "/etc/drbd.d/c.res",
        "resource c {\n  net { protocl C; }\n}\n",
    );
    let e = load(&src, Path::new("/etc/drbd.conf")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/drbd.d/c.res:2:9: unknown keyword 'protocl' in section net, did you mean 'protocol'?"
    );
    // Self-inclusion is stopped.
    let src = MemSource::new().with("/x.conf", "include \"x.conf\";");
    assert!(
        load(&src, Path::new("/x.conf"))
            .unwrap_err()
            .message
            .contains("nested too deeply")
    );
}

#[test]
fn dump_of_one_resource_and_unknown_resource() {
    let cfg = sample("a-man-page.res");
    let one = dump(&cfg, Some("r0")).unwrap();
    assert!(one.starts_with("resource r0 {\n"));
    assert!(!one.contains("global"));
    assert!(
        dump(&cfg, Some("nope"))
            .unwrap_err()
            .message
            .contains("'nope' not defined")
    );
}

#[test]
fn quoting_survives_dump() {
    let cfg = parse_str(
        "q.res",
        "resource \"r 1\" { handlers { split-brain \"/bin/notify \\\"x\\\" root\"; } device minor 1; disk \"none\"; \
         meta-disk internal; on a { address 1.1.1.1:1; } on b { address 1.1.1.2:1; } }",
    )
    .unwrap();
    let out = assert_dump_stable(&cfg);
    assert!(out.contains("resource \"r 1\" {"), "{out}");
    let r = as_node(&cfg, "r 1", "a");
    assert_eq!(r.handlers["split-brain"], "/bin/notify \"x\" root");
    assert_eq!(
        r.volumes[0].disk.as_deref(),
        Some("none"),
        "a quoted \"none\" is a path"
    );
}

/// The README's "Options without effect" table lists exactly the options of
/// `udrbd::config::effect::NO_EFFECT`, so what it promises is what `up` warns about.
#[test]
fn the_readme_lists_every_option_without_effect() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("## Options without effect")
        .expect("the README has the section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let rows: Vec<(String, String)> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (
                cells[1].trim_matches('`').to_string(),
                cells[2].trim_matches('`').to_string(),
            )
        })
        .collect();
    let table: Vec<(String, String)> = udrbd::config::effect::NO_EFFECT
        .iter()
        .map(|n| (n.sect.keyword().to_string(), n.name.to_string()))
        .collect();
    assert_eq!(rows, table);
}
