//! A connection with two `path` sections (DRBD 9's multiple paths) between two daemons in
//! network namespaces joined by two cables: every path is tried, so the pair connects over
//! the second path while the first cable is pulled, and after the second cable is pulled
//! too and the first plugged back in, it reconnects over the first. `status --json` and
//! `events2` name the path the link runs on (`established`).

mod common;

use common::netns::NetnsPair;
use common::pair::eventually;
use common::{Node, backing_file, free_port, scratch};

const RES: &str = "res0";

/// `established` of each path in `status --json`: (this host's address, established).
fn paths(n: &Node) -> Vec<(String, bool)> {
    let out = n.adm(&["status", "--json", RES]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&out).expect("status --json");
    v[0]["connections"][0]["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| {
            (
                p["this_host"]["address"].as_str().unwrap_or("").to_string(),
                p["established"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn connected(n: &Node) -> bool {
    n.adm(&["cstate", RES]).ok().stdout.trim() == "Connected"
}

#[test]
fn every_path_is_tried_and_the_link_moves_to_the_one_that_works() {
    let Some(net) = NetnsPair::new() else { return };
    let second = net.add_second_link();
    let dir = scratch();
    let port = free_port();
    let disks = [dir.path().join("a.img"), dir.path().join("b.img")];
    for d in &disks {
        backing_file(d, 64 << 20);
    }
    let cfg = dir.path().join("drbd.conf");
    std::fs::write(
        &cfg,
        format!(
            r#"resource {RES} {{
    device /dev/drbd0;
    net {{ connect-int 1; ping-int 1; ping-timeout 5; timeout 10; ko-count 2; }}
    on node-1 {{ node-id 0; disk {}; }}
    on node-2 {{ node-id 1; disk {}; }}
    connection {{
        path {{ host node-1 address {}; host node-2 address {}; }}
        path {{ host node-1 address {second_a}:{port}; host node-2 address {second_b}:{port}; }}
    }}
}}
"#,
            disks[0].display(),
            disks[1].display(),
            net.address(0, port),
            net.address(1, port),
            second_a = second[0],
            second_b = second[1],
        ),
    )
    .expect("config");
    let mut a = Node::new(dir.path(), "node-1", &cfg);
    let mut b = Node::new(dir.path(), "node-2", &cfg);
    net.host(&mut a, 0);
    net.host(&mut b, 1);
    // More than one path is no longer warned about: both are used.
    let up = a.adm(&["dump", RES]).ok();
    assert!(!up.stderr.contains("paths"), "{}", up.stderr);
    // The first cable is pulled before the nodes come up.
    net.cut();
    for n in [&mut a, &mut b] {
        n.start();
        n.adm(&["create-md", "--force", RES]).ok();
        n.adm(&["up", RES]).ok();
    }
    let logs = |a: &Node, b: &Node| format!("{}\n{}", a.log_text(), b.log_text());
    eventually(30, "connected over the second path", || {
        connected(&a) && connected(&b)
    });
    let second_a = second[0].to_string();
    let first_a = net.ip(0).to_string();
    assert_eq!(
        paths(&a),
        [(first_a.clone(), false), (second_a.clone(), true)],
        "{}",
        logs(&a, &b)
    );
    // events2 names both paths, the second established.
    let ev = a.adm(&["events2", "--now", RES]).ok().stdout;
    let path_lines: Vec<&str> = ev
        .lines()
        .filter(|l| l.starts_with("exists path"))
        .collect();
    assert_eq!(path_lines.len(), 2, "{ev}");
    assert!(path_lines[0].ends_with(" established:no"), "{ev}");
    assert!(path_lines[1].ends_with(" established:yes"), "{ev}");
    // Replication works over it.
    a.adm(&["--clear-bitmap", "new-current-uuid", RES]).ok();
    a.adm(&["primary", RES]).ok();
    common::qemu_io(&a, RES, "write -P 0x61 0 1M");
    // The first cable back, the second pulled: the link dies and comes back on the first.
    net.heal();
    net.cut_second();
    eventually(60, "reconnected over the first path", || {
        connected(&a) && paths(&a) == [(first_a.clone(), true), (second_a.clone(), false)]
    });
    common::qemu_io(&a, RES, "write -P 0x62 1M 1M");
    eventually(30, "in sync", || {
        b.adm(&["status", RES])
            .ok()
            .stdout
            .contains("disk:UpToDate")
            && a.adm(&["status", RES])
                .ok()
                .stdout
                .contains("peer-disk:UpToDate")
    });
    a.adm(&["secondary", RES]).ok();
    for n in [&a, &b] {
        n.adm(&["down", RES]).ok();
    }
    let read = |p: &std::path::Path| std::fs::read(p).expect("disk")[..2 << 20].to_vec();
    assert_eq!(read(&disks[0]), read(&disks[1]), "replicas differ");
    assert!(read(&disks[1])[..1 << 20].iter().all(|&x| x == 0x61));
}
