//! A `connection-mesh` of three hosts on loopback (127.0.0.1, .2 and .3, one port): each node
//! listens on its one address for both of its peers (one socket shared by the two
//! connections, no "Address already in use"), and all three connections come up. The full
//! sync from a forced Primary reaches both peers. (Quorum, and what three nodes do beyond
//! this, is the three-node issue's.)

mod common;

use common::pair::eventually;
use common::{Node, backing_file, free_port, scratch};

const RES: &str = "r0";
const DATA: usize = 60 << 20;

#[test]
fn three_hosts_share_one_address_each_and_all_connect() {
    let dir = scratch();
    let port = free_port();
    let names = ["node-a", "node-b", "node-c"];
    let disks: Vec<_> = names
        .iter()
        .map(|n| dir.path().join(format!("{n}.img")))
        .collect();
    for d in &disks {
        backing_file(d, 64 << 20);
    }
    let hosts: String = names
        .iter()
        .zip(&disks)
        .enumerate()
        .map(|(i, (n, d))| {
            format!(
                "  on {n} {{ node-id {i}; address 127.0.0.{}:{port}; disk {}; }}\n",
                i + 1,
                d.display()
            )
        })
        .collect();
    let cfg = dir.path().join("drbd.conf");
    std::fs::write(
        &cfg,
        format!(
            "resource {RES} {{\n  device /dev/drbd0;\n  net {{ connect-int 1; }}\n{hosts}  \
             connection-mesh {{ hosts {}; }}\n}}\n",
            names.join(" ")
        ),
    )
    .expect("config");
    let mut nodes: Vec<Node> = names
        .iter()
        .map(|n| Node::new(dir.path(), n, &cfg))
        .collect();
    for n in &mut nodes {
        n.start();
        n.adm(&["create-md", "--force", RES]).ok();
        n.adm(&["up", RES]).ok();
    }
    let logs = |nodes: &[Node]| {
        nodes
            .iter()
            .map(|n| format!("== {}\n{}", n.name, n.log_text()))
            .collect::<String>()
    };
    eventually(30, "every connection Connected", || {
        nodes.iter().all(|n| {
            let c = n.adm(&["cstate", RES]).ok().stdout;
            c.lines().count() == 2 && c.lines().all(|l| l == "Connected")
        })
    });
    for n in &nodes {
        let log = n.log_text();
        assert!(
            !log.contains("cannot listen") && !log.contains("Address already in use"),
            "{}",
            logs(&nodes)
        );
    }
    nodes[0].adm(&["primary", "--force", RES]).ok();
    eventually(60, "both peers UpToDate", || {
        let st = nodes[0].adm(&["status", RES]).ok().stdout;
        st.matches("peer-disk:UpToDate").count() == 2
    });
    nodes[0].adm(&["secondary", RES]).ok();
    for n in &nodes {
        n.adm(&["down", RES]).ok();
    }
    let read = |p: &std::path::Path| std::fs::read(p).expect("disk")[..DATA].to_vec();
    let a = read(&disks[0]);
    assert!(
        a == read(&disks[1]) && a == read(&disks[2]),
        "replicas differ"
    );
}
