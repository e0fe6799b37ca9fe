//! Two network namespaces joined by a veth pair: a cable between two hosts that a test can
//! pull ([`NetnsPair::cut`]) and plug back in ([`NetnsPair::heal`]).
//!
//! Each namespace has `lo` and one veth end, `192.168.K.1/24` and `192.168.K.2/24`. These
//! addresses exist only inside the two namespaces (a namespace has its own stack and routing
//! table, nothing is routed out of them), so they can never clash with the machine's network,
//! and parallel tests never clash with each other: every pair has its own namespaces, named with
//! the pid and a counter. A [`Node`]'s daemon runs inside with [`NetnsPair::host`]; drbdadm and
//! the NBD clients run outside, reaching the daemon through its control and NBD sockets, which
//! are filesystem paths (not abstract sockets, which would belong to the namespace).
//!
//! # How the cable is pulled
//!
//! [`NetnsPair::cut`] puts a `pfifo limit 0` qdisc on both veth ends: every packet either side
//! sends is dropped silently, in both directions, while links, addresses and routes stay as
//! they are. Neither side gets a FIN, a RST, an ICMP error or a failing `send()`: TCP queues
//! and retransmits into the void, new dials hang on SYN retransmits, and the daemons can only
//! notice through their own timers (`ping-timeout`, `timeout` x `ko-count`, the dial's
//! `timeout`), exactly as with a pulled cable or a dead switch. The alternatives are worse:
//! setting the veth ends down deletes the routes, so a dial fails at once with
//! ENETUNREACH (a local signal a real partition does not give, and one that makes a reconnect
//! loop look healthier than it is); `tc ... netem loss 100%` would do the same as the qdisc
//! here, but `sch_netem` is not in every kernel (it is missing on the kernel these tests
//! run on), while `pfifo` is always built in. [`NetnsPair::heal`] deletes the qdiscs.
//!
//! # Privileges
//!
//! This needs root (`ip netns add`). Without it [`NetnsPair::new`] prints why and returns
//! `None`, so the test returns early, except under CI (`CI` set), where it panics: CI must run
//! these tests.

use super::Node;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The veth end in namespace 0 and in namespace 1 (interface names are per namespace).
const VETH: [&str; 2] = ["udrbd-veth0", "udrbd-veth1"];
/// The ends of the second cable ([`NetnsPair::add_second_link`]).
const VETH2: [&str; 2] = ["udrbd-vethb0", "udrbd-vethb1"];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Two network namespaces and the veth pair between them; deleted (with everything still
/// running inside) on drop.
pub struct NetnsPair {
    names: [String; 2],
    addrs: [Ipv4Addr; 2],
    /// Which namespaces exist (for drop after a failed setup).
    made: usize,
}

/// Runs `program args`; its output, or a message with its stderr.
pub(super) fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    let o = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program} ({e}); .ci/apt-packages installs iproute2"))?;
    if o.status.success() {
        Ok(o)
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Like [`run`], panicking on failure (the setup is broken, not merely unavailable).
pub(super) fn must(program: &str, args: &[&str]) {
    if let Err(e) = run(program, args) {
        panic!("{e}");
    }
}

/// Skips (returns `None`) with a message, or panics under CI.
fn unavailable(why: &str) -> Option<NetnsPair> {
    assert!(
        std::env::var_os("CI").is_none(),
        "network namespaces are unavailable under CI: {why}"
    );
    eprintln!("skipped: network namespaces are unavailable ({why}); run as root to include it");
    None
}

impl NetnsPair {
    /// Creates both namespaces, the veth pair and the addresses; `None` (after a message) when
    /// network namespaces cannot be made here and `CI` is not set.
    pub fn new() -> Option<NetnsPair> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return unavailable("not root");
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let k = 100 + (n % 100) as u8;
        let mut pair = NetnsPair {
            names: [0, 1].map(|i| format!("udrbd-{pid}-{n}-{i}")),
            addrs: [1, 2].map(|h| Ipv4Addr::new(192, 168, k, h)),
            made: 0,
        };
        for i in 0..2 {
            if let Err(e) = run("ip", &["netns", "add", &pair.names[i]]) {
                return unavailable(&e);
            }
            pair.made += 1;
        }
        let [a, b] = &pair.names;
        must(
            "ip",
            &[
                "link", "add", VETH[0], "netns", a, "type", "veth", "peer", "name", VETH[1],
                "netns", b,
            ],
        );
        for ((ns, dev), addr) in pair.names.iter().zip(VETH).zip(pair.addrs) {
            let cidr = format!("{addr}/24");
            must("ip", &["-n", ns, "addr", "add", &cidr, "dev", dev]);
            must("ip", &["-n", ns, "link", "set", "lo", "up"]);
            must("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        Some(pair)
    }

    /// Namespace `i`'s name (0 or 1).
    pub fn ns(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Namespace `i`'s address on the veth pair.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.addrs[i]
    }

    /// `IP:PORT` in namespace `i`, for a config's `address`.
    pub fn address(&self, i: usize, port: u16) -> String {
        format!("{}:{port}", self.addrs[i])
    }

    /// Makes `node`'s daemon run in namespace `i` (before [`Node::start`]).
    pub fn host(&self, node: &mut Node, i: usize) {
        node.netns = Some(self.names[i].clone());
    }

    /// The processes in namespace `i`.
    pub fn pids(&self, i: usize) -> Vec<i32> {
        run("ip", &["netns", "pids", &self.names[i]])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs `program args` inside namespace `i`.
    pub fn exec(&self, i: usize, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.names[i], program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec")
    }

    /// A second cable between the namespaces (for a connection with two `path`s):
    /// `172.31.K.1/24` and `172.31.K.2/24` on its own veth pair; the addresses of each end.
    pub fn add_second_link(&self) -> [Ipv4Addr; 2] {
        let k = self.addrs[0].octets()[2];
        let addrs = [1, 2].map(|h| Ipv4Addr::new(172, 31, k, h));
        let [a, b] = &self.names;
        must(
            "ip",
            &[
                "link", "add", VETH2[0], "netns", a, "type", "veth", "peer", "name", VETH2[1],
                "netns", b,
            ],
        );
        for ((ns, dev), addr) in self.names.iter().zip(VETH2).zip(addrs) {
            must(
                "ip",
                &["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev],
            );
            must("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        addrs
    }

    /// Pulls the cable: both ends drop everything they send (see the module docs for why
    /// this way).
    pub fn cut(&self) {
        self.qdisc(VETH, &["replace", "root", "pfifo", "limit", "0"]);
    }

    /// Plugs it back in.
    pub fn heal(&self) {
        self.qdisc(VETH, &["del", "root"]);
    }

    /// [`NetnsPair::cut`] and [`NetnsPair::heal`] for the second cable.
    pub fn cut_second(&self) {
        self.qdisc(VETH2, &["replace", "root", "pfifo", "limit", "0"]);
    }

    pub fn heal_second(&self) {
        self.qdisc(VETH2, &["del", "root"]);
    }

    /// `tc qdisc VERB dev VETH REST...` on both ends of the cable `devs`.
    fn qdisc(&self, devs: [&str; 2], args: &[&str]) {
        let (verb, rest) = args.split_first().expect("a verb");
        for (ns, dev) in self.names.iter().zip(devs) {
            let mut a = vec!["-n", ns, "qdisc", verb, "dev", dev];
            a.extend_from_slice(rest);
            must("tc", &a);
        }
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for i in 0..self.made {
            for pid in self.pids(i) {
                // SAFETY: kill(2) on a process in a namespace this test made.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            // Deleting a veth end's namespace deletes the pair.
            let _ = run("ip", &["netns", "del", &self.names[i]]);
        }
    }
}
