//! N hosts on one switch: a network namespace per host, each joined by a veth pair to a
//! bridge in a hub namespace, so that every host reaches every other at one address
//! (`192.168.K.(i+1)/24`, a `connection-mesh` as the how-tos write it). A test isolates host
//! `i` from all others ([`Star::isolate`]: its cable to the switch is pulled, the way
//! [`super::netns::NetnsPair::cut`] pulls one, see there) and plugs it back in
//! ([`Star::rejoin`]). The addresses exist only inside these namespaces.

use super::Node;
use super::netns::{must, run};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The hub namespace's bridge, and each host's end of its cable (names are per namespace).
const BRIDGE: &str = "udrbd-br";
const HOST_END: &str = "udrbd-eth";

pub struct Star {
    hub: String,
    hosts: Vec<String>,
    addrs: Vec<Ipv4Addr>,
    /// Namespaces made so far (hub first), for drop after a failed setup.
    made: Vec<String>,
}

impl Star {
    /// `n` hosts on a switch; `None` (after a message) without root, except under CI, where
    /// that panics (CI must run these tests).
    pub fn new(n: usize) -> Option<Star> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "network namespaces need root under CI"
            );
            eprintln!("skipped: network namespaces need root");
            return None;
        }
        let c = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let k = 200 + (c % 50) as u8;
        let hub = format!("udrbd-{pid}-s{c}-hub");
        let mut star = Star {
            hosts: (0..n).map(|i| format!("udrbd-{pid}-s{c}-{i}")).collect(),
            addrs: (0..n)
                .map(|i| Ipv4Addr::new(192, 168, k, i as u8 + 1))
                .collect(),
            hub: hub.clone(),
            made: Vec::new(),
        };
        must("ip", &["netns", "add", &hub]);
        star.made.push(hub.clone());
        must("ip", &["-n", &hub, "link", "add", BRIDGE, "type", "bridge"]);
        must("ip", &["-n", &hub, "link", "set", BRIDGE, "up"]);
        for i in 0..n {
            let ns = star.hosts[i].clone();
            must("ip", &["netns", "add", &ns]);
            star.made.push(ns.clone());
            let port = format!("udrbd-p{i}");
            must(
                "ip",
                &[
                    "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", HOST_END,
                    "netns", &ns,
                ],
            );
            must("ip", &["-n", &hub, "link", "set", &port, "master", BRIDGE]);
            must("ip", &["-n", &hub, "link", "set", &port, "up"]);
            let cidr = format!("{}/24", star.addrs[i]);
            must("ip", &["-n", &ns, "addr", "add", &cidr, "dev", HOST_END]);
            must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            must("ip", &["-n", &ns, "link", "set", HOST_END, "up"]);
        }
        Some(star)
    }

    /// `IP:PORT` of host `i`.
    pub fn address(&self, i: usize, port: u16) -> String {
        format!("{}:{port}", self.addrs[i])
    }

    /// Makes `node`'s daemon run on host `i` (before [`Node::start`]).
    pub fn host(&self, node: &mut Node, i: usize) {
        node.netns = Some(self.hosts[i].clone());
    }

    /// Pulls host `i`'s cable: both ends drop everything they send.
    pub fn isolate(&self, i: usize) {
        self.qdisc(i, &["replace", "root", "pfifo", "limit", "0"]);
    }

    /// Plugs it back in.
    pub fn rejoin(&self, i: usize) {
        self.qdisc(i, &["del", "root"]);
    }

    fn qdisc(&self, i: usize, args: &[&str]) {
        let (verb, rest) = args.split_first().expect("a verb");
        let port = format!("udrbd-p{i}");
        for (ns, dev) in [(&self.hosts[i], HOST_END), (&self.hub, port.as_str())] {
            let mut a = vec!["-n", ns.as_str(), "qdisc", verb, "dev", dev];
            a.extend_from_slice(rest);
            must("tc", &a);
        }
    }
}

impl Drop for Star {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            if let Ok(o) = run("ip", &["netns", "pids", ns]) {
                for pid in String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    // SAFETY: kill(2) on a process in a namespace this test made.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}
