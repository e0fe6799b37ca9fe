//! The config language on real configs: the SUSE HA how-to (split over includes), the
//! reference's sample configs, and drbd-utils' own test configs (tests/data/drbd-utils-v9).
//! Everything parses, resolves per host, and dumps stably, or is refused with a clear reason.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use udrbd::config::{
    AfterSb0Pri, Config, Fencing, HostQuery, MemSource, Protocol, Quorum, Resolved, dump, effect,
    hostnames_equal, load, parse_str, resolve,
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

/// A resolved resource's peers: (name, node id).
fn peers_of(r: &Resolved) -> Vec<(&str, NodeId)> {
    r.peers
        .iter()
        .map(|p| (p.name.as_str(), p.node_id))
        .collect()
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
    let peers = peers_of(&u);
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
    // The rows name their option in backquotes; the section is a keyword (`net`) or "top level".
    let rows: Vec<(String, String)> = section
        .lines()
        .map(|l| l.split('|').map(str::trim).collect::<Vec<&str>>())
        .filter(|cells| cells.len() > 3 && cells[2].starts_with('`'))
        .map(|cells| {
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

// --- drbd-utils' own test configurations (tests/data/drbd-utils-v9/README.md) ---

const V9: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/drbd-utils-v9");

fn v9_text(name: &str) -> String {
    std::fs::read_to_string(Path::new(V9).join(name)).unwrap()
}

fn v9(name: &str) -> Config {
    parse_str(name, &v9_text(name)).unwrap_or_else(|e| panic!("{e}"))
}

/// What each file must do: `None` dumps (and its dump re-parses to the same dump), `Some(msg)`
/// is refused with exactly `FILE:msg`.
const V9_FILES: &[(&str, Option<&str>)] = &[
    ("adjust_bitmap_disable.res", None),
    ("adjust_bitmap_enable.res", None),
    ("adjust_disk_opts_late.res", None),
    ("adjust_order.res", None),
    (
        "adjust_proxy.res",
        Some("6:2: 'proxy' (DRBD Proxy) is not supported by udrbd"),
    ),
    ("adjust_set_option_connect.res", None),
    ("adjust_switch_diskfull_r0.res", None),
    ("adjust_switch_interface_r0.res", None),
    ("adjust_tiebreaker_swap.res", None),
    ("block-size.res", None),
    ("drbd_8.4.res", None),
    ("drbdctrl.res", None),
    ("drbdmeta_force_flag.res", None),
    ("floating-ipv4.res", None),
    ("floating-ipv6.res", None),
    ("man.res", None),
    ("nat-address.res", None),
    (
        "node-id-missing.res",
        Some("54:2: 'stacked-on-top-of' is not supported by udrbd"),
    ),
    (
        "proxy_2sites_3nodes.res",
        Some("32:40: 'via proxy' (DRBD Proxy) is not supported by udrbd"),
    ),
    ("release_9_1_1.res", None),
    ("require-drbd-module-version.res", None),
    (
        "restore_show.res",
        Some(
            "2:5: '_this_host' (the syntax of `drbdsetup show` output) is not supported by \
             udrbd in a configuration: name the hosts with 'on NAME { }' and 'host NAME'",
        ),
    ),
    ("resync_after.res", None),
    ("sh-list-adjustable.res", None),
    (
        "stacked_implicit_conn.res",
        Some("35:3: 'stacked-on-top-of' is not supported by udrbd"),
    ),
    (
        "stacked_multi_path_2sites_3nodes.res",
        Some("54:2: 'stacked-on-top-of' is not supported by udrbd"),
    ),
    (
        "stacked_multi_path_3sites_2nodes.res",
        Some("94:2: 'stacked-on-top-of' is not supported by udrbd"),
    ),
    ("tiebreaker.res", None),
    ("top-level-meta-disk.res", None),
];

#[test]
fn drbd_utils_v9_configs_dump_or_are_refused_clearly() {
    let mut on_disk: Vec<String> = std::fs::read_dir(V9)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".res"))
        .collect();
    on_disk.sort();
    let listed: Vec<&str> = V9_FILES.iter().map(|(n, _)| *n).collect();
    assert_eq!(on_disk, listed, "every file in {V9} has a line in V9_FILES");
    for (name, refused) in V9_FILES {
        match (parse_str(name, &v9_text(name)), refused) {
            (Ok(cfg), None) => {
                assert_dump_stable(&cfg);
            }
            (Err(e), Some(msg)) => assert_eq!(e.to_string(), format!("{name}:{msg}")),
            (Ok(_), Some(msg)) => panic!("{name} parsed, but should be refused with {msg:?}"),
            (Err(e), None) => panic!("{name} should dump: {e}"),
        }
    }
}

/// What drbd-utils' tests/v9/*.test check of `drbdadm dump`.
#[test]
fn drbd_utils_v9_dump_lines_as_their_tests_check() {
    // block-size.test: `dump all | grep -q '^.*block-size.*4096;$'`.
    let out = assert_dump_stable(&v9("block-size.res"));
    assert!(
        out.lines()
            .any(|l| l.contains("block-size") && l.ends_with(" 4096;")),
        "{out}"
    );
    // tiebreaker.test: `dump tiebreaker-test | grep -c '^ *tiebreaker.*no'` prints 1.
    let out = dump(&v9("tiebreaker.res"), Some("tiebreaker-test")).unwrap();
    let n = out
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("tiebreaker") && l.contains("no")
        })
        .count();
    assert_eq!(n, 1, "{out}");
    // top-level-meta-disk.test prints the whole dump; udrbd orders sections and pads values
    // differently, so each of its lines must be in ours, spaces aside, as often as there.
    // Not its node-id lines: without node-ids drbdadm numbers two hosts by a hash of their
    // addresses (ADDRLeft gets 1), udrbd in the order of the `on` sections.
    let norm = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let out = assert_dump_stable(&v9("top-level-meta-disk.res"));
    let mut ours: Vec<String> = out.lines().map(norm).collect();
    let test = v9_text("top-level-meta-disk.test");
    let expected: Vec<String> = test
        .lines()
        .map(norm)
        .filter(|l| l.ends_with(';') || l.ends_with('{') || l == "}")
        .filter(|l| !l.starts_with("node-id "))
        .collect();
    assert!(expected.len() > 20, "{test}");
    for l in &expected {
        let i = ours
            .iter()
            .position(|o| o == l)
            .unwrap_or_else(|| panic!("dump lacks {l:?}:\n{out}"));
        ours.remove(i);
    }
}

/// `on` names and `host` names are the same host when drbdadm's `hostnames_equal` says so.
#[test]
fn hosts_are_matched_as_drbdadm_matches_them() {
    assert!(hostnames_equal("n1", "n1.ryzen9.home"));
    assert!(hostnames_equal("N1.Ryzen9.home", "n1.ryzen9.HOME"));
    assert!(hostnames_equal("n1.ryzen9.home", "n1"));
    assert!(!hostnames_equal("n1.a", "n1.b"));
    assert!(!hostnames_equal("n1", "n10.ryzen9.home"));
    assert!(!hostnames_equal("n1", "n2"));

    // adjust_set_option_connect.test: `connection-mesh { hosts n1 n2 undertest; }` joins the
    // hosts `on n1.ryzen9.home` and `on n2.ryzen9.home` (new-peer ... --_name=n1.ryzen9.home).
    let cfg = v9("adjust_set_option_connect.res");
    let u = as_node(&cfg, "r0", "undertest");
    let peers = peers_of(&u);
    assert_eq!(
        peers,
        [("n1.ryzen9.home", NodeId(0)), ("n2.ryzen9.home", NodeId(1))]
    );
    let n1 = as_node(&cfg, "r0", "n1");
    assert_eq!(
        (n1.me.name.as_str(), n1.me.address, n1.peers.len()),
        ("n1.ryzen9.home", sa("192.168.1.10:7000"), 2)
    );

    // block-size.res: paths name `undertest`, `u2` and `u3`; this node's hostname is the short
    // one too.
    let cfg = v9("block-size.res");
    let q = HostQuery {
        explicit: None,
        hostname: "undertest",
        is_local: &|_| false,
    };
    let r = resolve(&cfg, "res", &q).unwrap();
    assert_eq!(r.me.name, "undertest.ryzen9.home");
    let peers: Vec<(&str, Option<SocketAddr>, Option<SocketAddr>)> = r
        .peers
        .iter()
        .map(|p| (p.name.as_str(), p.address, p.local_address))
        .collect();
    assert_eq!(
        peers,
        [
            (
                "u2.ryzen9.home",
                sa("192.168.123.52:7789"),
                sa("192.168.123.51:7789")
            ),
            (
                "u3.ryzen9.home",
                sa("192.168.123.53:7789"),
                sa("192.168.123.51:7789")
            )
        ]
    );

    // An exact name wins over a short one, two spellings of one host are not a connection,
    // and `discard-node-NAME` names its host the same way.
    let two = |conn: &str| {
        format!(
            "resource r {{ device minor 1; disk none; net {{ after-sb-0pri discard-node-a; }} \
             on a.x {{ node-id 0; address 10.0.0.1:1; }} on a {{ node-id 1; address 10.0.0.2:1; }} \
             on b.x {{ node-id 2; address 10.0.0.3:1; }} {conn} }}"
        )
    };
    let cfg = parse_str("t.res", &two("connection { host a; host b; }")).unwrap();
    let a = as_node(&cfg, "r", "a");
    assert_eq!((a.me.node_id, a.peers[0].name.as_str()), (NodeId(1), "b.x"));
    assert_eq!(a.peers[0].net.after_sb_0pri, AfterSb0Pri::DiscardLocal);
    let b = as_node(&cfg, "r", "b");
    assert_eq!(b.peers[0].net.after_sb_0pri, AfterSb0Pri::DiscardRemote);
    let e = parse_str("t.res", &two("connection { host b; host b.x; }")).unwrap_err();
    assert!(
        e.message
            .contains("a connection joins exactly two different hosts, found: b b.x"),
        "{e}"
    );
}

/// nat-address.test: `new-path nat-address 1 ipv4:10.43.10.50:7000 ipv4:192.168.17.20:7000`:
/// this node listens on its own address and dials the peer's `via outside-address`.
#[test]
fn nat_outside_address_is_where_the_peer_is_dialed() {
    let cfg = v9("nat-address.res");
    let u = as_node(&cfg, "nat-address", "undertest");
    let p = &u.peers[0];
    assert_eq!(
        (p.node_id, p.local_address, p.address),
        (NodeId(1), sa("10.43.10.50:7000"), sa("192.168.17.20:7000"))
    );
    assert_eq!(u.me.address, sa("10.43.10.50:7000"));
    let o = as_node(&cfg, "nat-address", "other");
    assert_eq!(
        (o.peers[0].local_address, o.peers[0].address),
        (sa("10.43.10.51:7000"), sa("192.168.17.19:7000"))
    );
    let out = assert_dump_stable(&cfg);
    assert!(
        out.contains(
            "host other address ipv4 10.43.10.51:7000 via outside-address ipv4 192.168.17.20:7000;"
        ),
        "{out}"
    );
    for (conn, msg) in [
        (
            "host a address 10.0.0.1:1 via;",
            "expected 'outside-address' or 'proxy' after 'via', found ';'",
        ),
        (
            "host a address 10.0.0.1:1 via outside-address;",
            "'outside-address' needs an address",
        ),
        (
            "host a address 10.0.0.1:1 via outside-address 1.2.3.4:5 port 7;",
            "expected ';' after '1.2.3.4:5', found 'port'",
        ),
    ] {
        let text = format!(
            "resource r {{ device minor 1; disk none; on a {{ node-id 0; }} \
             on b {{ node-id 1; address 10.0.0.2:1; }} connection {{ {conn} host b; }} }}"
        );
        let e = parse_str("t.res", &text).unwrap_err();
        assert!(e.message.contains(msg), "{conn}: {e}");
    }
}

/// floating-ipv6.res: `[fe80::...%vethX]:7706` parses and dumps as written wherever vethX is;
/// resolving it (what `up` sends the daemon) needs the interface on this node.
#[test]
fn ipv6_link_local_scope_is_kept_and_resolved_per_node() {
    let cfg = v9("floating-ipv6.res");
    let out = assert_dump_stable(&cfg);
    assert!(
        out.contains("floating ipv6 [fe80::1022:53ff:feb7:614f%vethX]:7706 {"),
        "{out}"
    );
    if !Path::new("/sys/class/net/vethX").exists() {
        let q = HostQuery {
            explicit: None,
            hostname: "undertest",
            is_local: &|a| a == IpAddr::from([127, 0, 0, 1]),
        };
        let e = resolve(&cfg, "r0", &q).unwrap_err();
        assert_eq!(
            e.to_string(),
            "floating-ipv6.res:6:19: address ipv6 [fe80::1022:53ff:feb7:614f%vethX]:7706: this \
             node has no network interface 'vethX' (the %vethX of a link-local address names \
             the interface that reaches it)"
        );
    }
    // An interface this node has: its index, as the system numbers it.
    let lo: u32 = std::fs::read_to_string("/sys/class/net/lo/ifindex")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let text = v9_text("floating-ipv6.res").replace("%vethX", "%lo");
    let cfg = parse_str("lo.res", &text).unwrap();
    let me = as_node(&cfg, "r0", "127.0.0.1:7706");
    let want: SocketAddr = format!("[fe80::1022:53ff:feb7:614f%{lo}]:7706")
        .parse()
        .unwrap();
    assert_eq!(me.peers[0].address, Some(want));
    let SocketAddr::V6(v6) = want else {
        unreachable!()
    };
    assert_eq!(v6.scope_id(), lo);
    // ...which survives the JSON the daemon receives.
    let json = serde_json::to_string(&me).unwrap();
    assert_eq!(serde_json::from_str::<Resolved>(&json).unwrap(), me);
    // A scope written as a number is that index.
    let text = v9_text("floating-ipv6.res").replace("%vethX", "%7");
    let cfg = parse_str("n.res", &text).unwrap();
    assert!(assert_dump_stable(&cfg).contains("[fe80::1022:53ff:feb7:614f%7]:7706"));
    assert_eq!(
        as_node(&cfg, "r0", "127.0.0.1:7706").peers[0].address,
        sa("[fe80::1022:53ff:feb7:614f%7]:7706")
    );
    let e = parse_str(
        "b.res",
        &v9_text("floating-ipv6.res").replace("%vethX", "%a/b"),
    )
    .unwrap_err();
    assert!(e.message.contains("bad interface name 'a/b'"), "{e}");
}

/// drbdmeta_force_flag.test, resync_after.test: a disk without `meta-disk` runs with internal
/// metadata (`drbdmeta 1 v09 /dev/foo/fun/0 internal ...`); `dump` prints what is written, as
/// drbdadm's does (it prints `meta-disk` only when the file has it).
#[test]
fn a_disk_without_meta_disk_has_internal_metadata() {
    for (file, res, node, minor, disk) in [
        (
            "drbdmeta_force_flag.res",
            "r0",
            "undertest",
            1,
            "/dev/foo/fun/0",
        ),
        (
            "floating-ipv4.res",
            "r0",
            "127.0.0.1:7706",
            1,
            "/dev/foo/fun/0",
        ),
        (
            "resync_after.res",
            "res1",
            "undertest",
            1041,
            "/dev/ssdpool/res0_0",
        ),
    ] {
        let cfg = v9(file);
        let out = assert_dump_stable(&cfg);
        assert!(!out.contains("meta-disk"), "{out}");
        let v = &as_node(&cfg, res, node).volumes[0];
        assert_eq!(
            (v.minor, v.disk.as_deref(), &v.meta_disk),
            (minor, Some(disk), &MetaDisk::Internal),
            "{file}"
        );
    }
    // A resource-wide meta-disk still reaches a host volume that only names its disk.
    let cfg = parse_str(
        "t.res",
        "resource r { volume 0 { device minor 1; meta-disk /dev/md [3]; } \
         on a { address 10.0.0.1:1; volume 0 { disk /dev/a; } } \
         on b { address 10.0.0.2:1; volume 0 { disk /dev/b; } } }",
    )
    .unwrap();
    assert_eq!(
        as_node(&cfg, "r", "b").volumes[0].meta_disk,
        MetaDisk::External {
            path: "/dev/md".into(),
            index: Some(3)
        }
    );
}

/// require-drbd-module-version.res: the top-level statement is accepted; udrbd has no module
/// to check, so `up` warns about it like any option without effect, and `dump` marks it.
#[test]
fn module_version_requirements_and_block_size_are_accepted_with_a_warning() {
    let cfg = v9("require-drbd-module-version.res");
    let out = assert_dump_stable(&cfg);
    assert!(
        out.contains(
            "# require-drbd-module-version-eq: accepted but has no effect in udrbd (udrbd has \
             no kernel module whose version could be checked)\nrequire-drbd-module-version-eq \
             9.0.0;\n"
        ),
        "{out}"
    );
    let w = effect::warnings(&cfg, "r0");
    assert!(
        w.contains(
            &"require-drbd-module-version.res:2:1: require-drbd-module-version-eq is accepted \
              but has no effect in udrbd: udrbd has no kernel module whose version could be \
              checked"
                .to_string()
        ),
        "{w:#?}"
    );
    for (text, msg) in [
        (
            "require-drbd-module-version-ge 9.2;",
            "1:32: bad version '9.2' for 'require-drbd-module-version-ge': expected \
             MAJOR.MINOR.SUBLEVEL, as in 9.2.0",
        ),
        (
            "global { require-drbd-module-version-ge 9.2.0; }",
            "1:10: 'require-drbd-module-version-ge' is written at top level, outside any \
             section, not in global",
        ),
        (
            "require-drbd-module-version-eg 9.2.0;",
            "1:1: unknown keyword 'require-drbd-module-version-eg' at top level, did you mean \
             'require-drbd-module-version-eq'?",
        ),
    ] {
        let e = parse_str("t.conf", text).unwrap_err();
        assert_eq!(e.to_string(), format!("t.conf:{msg}"));
    }

    // block-size (DRBD 9.2's logical block size): warned about unless it is the 512 bytes
    // udrbd's NBD exports advertise.
    let cfg = v9("adjust_switch_interface_r0.res");
    let w = effect::warnings(&cfg, "r0");
    assert!(
        w.iter().any(|l| l.starts_with(
            "adjust_switch_interface_r0.res:12:3: block-size is \
                                          accepted but has no effect in udrbd"
        )),
        "{w:#?}"
    );
    let res = |bs: &str| {
        format!(
            "resource r {{ disk {{ block-size {bs}; }} device minor 1; disk none; \
             on a {{ address 10.0.0.1:1; }} on b {{ address 10.0.0.2:1; }} }}"
        )
    };
    let cfg = parse_str("t.res", &res("512")).unwrap();
    assert!(effect::warnings(&cfg, "r").is_empty());
    let e = parse_str("t.res", &res("8192")).unwrap_err();
    assert!(e.message.contains("out of range (512..4096"), "{e}");
}
