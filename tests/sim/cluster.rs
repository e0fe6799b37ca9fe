//! Three (or more) nodes with quorum: a world of N engines on the simulated hardware of
//! `node.rs`, a packet queue per direction of every link, and a nemesis that partitions the
//! network (any split, full isolation, healing), crashes and restarts nodes and fails disks,
//! while a cluster manager promotes a node with UpToDate data where there is no Primary (as
//! Pacemaker would) and demotes (`secondary --force`) a Primary that lost quorum, and the
//! application writes on every Primary.
//!
//! Disks are write-through here (a completed write survives power loss; `pair.rs` covers the
//! volatile cache), so the model is about partitions: what each acknowledged write promises,
//! and what quorum promises:
//! - a write is acknowledged only by a Primary that has quorum, and at no moment do two
//!   Primaries have quorum;
//! - no split brain ever forms (no handshake detects one), whatever the partitions did;
//! - no acknowledged write is lost: once everything heals, every diskful node holds, in every
//!   sector, the last acknowledged write or one that was still in flight (or failed) after it;
//! - after healing, every diskful node is UpToDate with identical data.

use super::Rng;
use super::node::{Node, PendingIo, SECTOR, Work, payload, tag};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use udrbd::config::{OnNoData, Protocol, Quorum};
use udrbd::net::{Stream, stream_for};
use udrbd::repl::wire::Packet;
use udrbd::repl::{
    Action, AdminCmd, ConnState, DiskState, EngineConfig, Input, IoError, IoOp, PeerInfo,
    QuorumSettings, ReplState, Role,
};
use udrbd::types::{NodeId, ReqId, Time};

/// Writes go to the first 2 MiB, so they overlap often.
const AREA: u64 = 2 << 20;

fn trace() -> bool {
    std::env::var_os("UDRBD_SIM_TRACE").is_some()
}

/// How the cluster is built.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Per node: it has a disk (false: a diskless client, `disk none;`).
    pub disks: Vec<bool>,
    pub on_no_quorum: OnNoData,
    /// The cluster manager promotes a diskless node (a Diskless Primary reads and writes
    /// through its peers) rather than a diskful one, whenever it can.
    pub client_primary: bool,
    /// `quorum off` instead of `majority`: a Primary writes on with whatever peers it sees
    /// (the manager, which sees everything, still never promotes a second one).
    pub quorum_off: bool,
}

/// A read the application has out: per sector of it, every write it may return (those
/// allowed when it was sent, and every write to the sector sent while it is out).
struct OutstandingRead {
    node: usize,
    offset: u64,
    may_see: Vec<BTreeSet<u64>>,
}

/// A write the application has out.
struct Outstanding {
    node: usize,
    wid: u64,
    offset: u64,
    len: u64,
}

pub struct Cluster {
    pub seed: u64,
    pub rng: Rng,
    pub now: u64,
    pub n: Vec<Node>,
    setup: Setup,
    /// Per direction (from, to): (deliver at, packet), delivery times non-decreasing.
    net: HashMap<(usize, usize), VecDeque<(u64, Packet)>>,
    /// (i, j): node i's driver has the link to j up.
    up: BTreeSet<(usize, usize)>,
    /// (i, j): node i does not reconnect to j (StandAlone).
    standalone: BTreeSet<(usize, usize)>,
    /// (i, j): node i has the data stream from j paused (`max-buffers`).
    receive_paused: BTreeSet<(usize, usize)>,
    /// Per node: its side of the network; nodes talk only within one side.
    pub group: Vec<u8>,
    reconnect_at: Option<u64>,
    drops: Vec<(usize, usize, bool)>,
    outstanding: BTreeMap<ReqId, Outstanding>,
    reads: BTreeMap<ReqId, OutstandingRead>,
    /// Per sector: the writes it may hold (the last acknowledged one, and any that may still
    /// land or failed after it).
    allowed: BTreeMap<u64, BTreeSet<u64>>,
    next_req: u64,
    next_wid: u64,
    admin: HashMap<u64, (usize, AdminCmd)>,
    next_token: u64,
    /// Per node: since when it is a Primary without quorum.
    no_quorum_since: Vec<Option<u64>>,
    /// Per node: its disk failed and was released (it is attached again by the nemesis).
    pub disk_failed: Vec<bool>,
    pub acked: u64,
    pub failed: u64,
    pub reads_ok: u64,
    pub promotions: u64,
    pub quorum_refusals: u64,
    pub crashes: u64,
    pub partitions: u64,
}

impl Cluster {
    pub fn new(seed: u64, setup: Setup) -> Cluster {
        let count = setup.disks.len();
        let nodes = (0..count)
            .map(|i| {
                let peers = (0..count)
                    .filter(|j| *j != i)
                    .map(|j| {
                        let mut p = PeerInfo::new(format!("n{j}"), NodeId(j as u8));
                        p.sync.c_fill_target = 2048;
                        p.intentional_diskless = !setup.disks[j];
                        p
                    })
                    .collect();
                let cfg = EngineConfig {
                    resource: "cluster".into(),
                    node_id: NodeId(i as u8),
                    peers,
                    auto_promote: false,
                    auto_promote_timeout_ms: 2_000,
                    twopc_timeout_ms: 30_000,
                    quorum: QuorumSettings {
                        quorum: if setup.quorum_off {
                            Quorum::Off
                        } else {
                            Quorum::Majority
                        },
                        min_redundancy: Quorum::Off,
                        on_no_quorum: setup.on_no_quorum,
                        intentional_diskless: !setup.disks[i],
                    },
                    uuid_seed: seed.wrapping_mul(31).wrapping_add(i as u64),
                };
                Node::new(i, seed, cfg, setup.disks[i])
            })
            .collect();
        let mut w = Cluster {
            seed,
            rng: Rng(seed),
            now: 0,
            n: nodes,
            net: HashMap::new(),
            up: BTreeSet::new(),
            standalone: BTreeSet::new(),
            receive_paused: BTreeSet::new(),
            group: vec![0; count],
            reconnect_at: Some(0),
            drops: Vec::new(),
            outstanding: BTreeMap::new(),
            reads: BTreeMap::new(),
            allowed: BTreeMap::new(),
            next_req: 1,
            next_wid: 1,
            admin: HashMap::new(),
            next_token: 1,
            no_quorum_since: vec![None; count],
            disk_failed: vec![false; count],
            acked: 0,
            failed: 0,
            reads_ok: 0,
            promotions: 0,
            quorum_refusals: 0,
            crashes: 0,
            partitions: 0,
            setup,
        };
        for i in 0..count {
            w.pump(i);
        }
        w
    }

    fn count(&self) -> usize {
        self.n.len()
    }

    fn diskful(&self) -> Vec<usize> {
        (0..self.count()).filter(|i| self.setup.disks[*i]).collect()
    }

    pub fn fail(&self, msg: impl std::fmt::Display) -> ! {
        let mut s = format!(
            "seed {} at {} ms: {msg} ({} writes and {} reads out)",
            self.seed,
            self.now,
            self.outstanding.len(),
            self.reads.len()
        );
        for n in &self.n {
            let st = n.engine.status();
            s += &format!(
                "\n  node {} alive {} group {}: {:?} {:?} quorum {} susp {}",
                n.id, n.alive, self.group[n.id], st.role, st.disk, st.quorum, st.suspended_quorum
            );
            for p in &st.peers {
                s += &format!(
                    "\n    {}: {:?} {:?} {:?} {:?} oos {}",
                    p.name, p.conn, p.repl, p.role, p.disk, p.out_of_sync_bytes
                );
            }
            if trace() {
                for r in n.engine.debug_requests() {
                    s += &format!("\n      req {r}");
                }
                for l in n.logs.iter().rev().take(30).rev() {
                    s += &format!("\n      {l}");
                }
            }
        }
        panic!("{s}")
    }

    pub fn time(&self) -> Time {
        Time(self.now * 1_000_000)
    }

    fn handle(&mut self, i: usize, input: Input) {
        if !self.n[i].alive {
            return;
        }
        let t = self.time();
        self.n[i].engine.handle(t, input);
        self.pump(i);
    }

    /// Executes node `i`'s actions.
    fn pump(&mut self, i: usize) {
        let t = self.time();
        while let Some(a) = self.n[i].engine.poll_action() {
            if trace() {
                match &a {
                    Action::Send { node, packet } => {
                        let s = format!("{packet:?}");
                        eprintln!("{} {i}->{} {}", self.now, node.0, &s[..s.len().min(120)])
                    }
                    Action::Log(l) => eprintln!("{} {i} log {l}", self.now),
                    other => {
                        let s = format!("{other:?}");
                        eprintln!("{} {i} {}", self.now, &s[..s.len().min(160)])
                    }
                }
            }
            match a {
                Action::SubmitDisk { id, op } => {
                    let at = self.now + self.rng.below(5);
                    self.n[i].pending.push(PendingIo {
                        work: Work::Data { id, op },
                        at,
                        fail: false,
                    });
                }
                Action::WriteMeta { generation, sb } => {
                    self.meta_work(i, Work::Meta { generation, sb })
                }
                Action::WriteAl { seq, block, tr } => {
                    self.meta_work(i, Work::Al { seq, block, tr })
                }
                Action::WriteBitmap { pages } => self.meta_work(i, Work::Bitmap { pages }),
                Action::GrowDisk => panic!("the simulation does not model resize"),
                Action::Send { node, packet } => {
                    let j = node.0 as usize;
                    if self.up.contains(&(i, j)) && self.up.contains(&(j, i)) {
                        let delay = self.rng.below(4);
                        let q = self.net.entry((i, j)).or_default();
                        let last = q.back().map_or(0, |p| p.0);
                        q.push_back(((self.now + delay).max(last), packet));
                    }
                }
                Action::Complete { id, result } => self.completed(i, id, result),
                Action::AdminDone { token, result } => {
                    let (node, cmd) = self.admin.remove(&token).expect("admin token");
                    assert_eq!(node, i);
                    match (cmd, &result) {
                        (AdminCmd::Primary { .. }, Ok(())) => self.promotions += 1,
                        (
                            AdminCmd::Primary { .. },
                            Err(udrbd::repl::AdminError::State(udrbd::repl::StateError::NoQuorum)),
                        ) => self.quorum_refusals += 1,
                        _ => {}
                    }
                }
                Action::Opened { .. } => self.fail("an open nobody asked for was answered"),
                Action::Log(l) => {
                    if l.contains("Split-Brain detected") {
                        self.n[i].logs.push(l);
                        self.fail(format!("node {i}: a split brain formed"));
                    }
                    self.n[i].logs.push(l)
                }
                Action::DropLink { node, standalone } => {
                    self.drops.push((i, node.0 as usize, standalone))
                }
                Action::RunHandler { handler, node } => {
                    self.n[i].handlers.push(handler);
                    self.n[i].engine.handle(
                        t,
                        Input::HandlerDone {
                            handler,
                            node,
                            exit: Some(0),
                        },
                    );
                }
                Action::ReleaseDisk => self.disk_failed[i] = true,
                Action::ReceiveData { node, paused } => {
                    if paused {
                        self.receive_paused.insert((i, node.0 as usize));
                    } else {
                        self.receive_paused.remove(&(i, node.0 as usize));
                    }
                }
            }
        }
    }

    fn meta_work(&mut self, i: usize, work: Work) {
        let at = self.now + self.rng.below(5);
        self.n[i].pending.push(PendingIo {
            work,
            at,
            fail: false,
        });
    }

    // ----- the application -----

    /// A write of 1 to 16 sectors somewhere in the first [`AREA`] bytes on node `i`.
    pub fn write(&mut self, i: usize) {
        let sectors = 1 + self.rng.below(16);
        let offset = self.rng.below(AREA / SECTOR - sectors) * SECTOR;
        let len = sectors * SECTOR;
        let (wid, id) = (self.next_wid, ReqId(self.next_req));
        self.next_wid += 1;
        self.next_req += 1;
        for s in offset / SECTOR..(offset + len) / SECTOR {
            // Never acknowledged yet: the initial zeros are allowed too.
            self.allowed
                .entry(s)
                .or_insert_with(|| BTreeSet::from([0]))
                .insert(wid);
        }
        for r in self.reads.values_mut() {
            for (k, may) in r.may_see.iter_mut().enumerate() {
                let s = r.offset / SECTOR + k as u64;
                if offset / SECTOR <= s && s < (offset + len) / SECTOR {
                    may.insert(wid);
                }
            }
        }
        self.outstanding.insert(
            id,
            Outstanding {
                node: i,
                wid,
                offset,
                len,
            },
        );
        let op = IoOp::Write {
            offset,
            data: payload(wid, len).into(),
            fua: false,
        };
        self.handle(i, Input::Io { id, op });
    }

    /// A read of 1 to 16 sectors in the first [`AREA`] bytes on node `i`.
    pub fn read(&mut self, i: usize) {
        let sectors = 1 + self.rng.below(16);
        let offset = self.rng.below(AREA / SECTOR - sectors) * SECTOR;
        let id = ReqId(self.next_req);
        self.next_req += 1;
        let may_see = (offset / SECTOR..offset / SECTOR + sectors)
            .map(|s| {
                self.allowed
                    .get(&s)
                    .cloned()
                    .unwrap_or_else(|| BTreeSet::from([0]))
            })
            .collect();
        self.reads.insert(
            id,
            OutstandingRead {
                node: i,
                offset,
                may_see,
            },
        );
        let op = IoOp::Read {
            offset,
            len: (sectors * SECTOR) as u32,
        };
        self.handle(i, Input::Io { id, op });
    }

    /// A read completed: every sector holds a write it may see.
    fn read_done(
        &mut self,
        i: usize,
        r: OutstandingRead,
        result: Result<Option<bytes::Bytes>, IoError>,
    ) {
        assert_eq!(r.node, i);
        match result {
            Ok(Some(data)) => {
                for (k, may) in r.may_see.iter().enumerate() {
                    let t = tag(&data, k as u64);
                    if !may.contains(&t) {
                        self.fail(format!(
                            "node {i} read write {t} at sector {}, allowed {may:?}: a stale read",
                            r.offset / SECTOR + k as u64
                        ));
                    }
                }
                self.reads_ok += 1;
            }
            Ok(None) => self.fail("a read completed without data"),
            Err(IoError::NoQuorum | IoError::NotPrimary | IoError::NoData | IoError::Disk(_)) => {}
            Err(e) => self.fail(format!("a read failed with {e:?}")),
        }
    }

    fn completed(&mut self, i: usize, id: ReqId, result: Result<Option<bytes::Bytes>, IoError>) {
        if let Some(r) = self.reads.remove(&id) {
            return self.read_done(i, r, result);
        }
        let Some(o) = self.outstanding.remove(&id) else {
            self.fail(format!("completion for unknown or completed {id:?}"));
        };
        assert_eq!(o.node, i);
        match result {
            Ok(_) => {
                let st = self.n[i].engine.status();
                if st.role != Role::Primary || !st.quorum {
                    self.fail(format!(
                        "node {i} acknowledged write {} as {:?} with quorum {}",
                        o.wid, st.role, st.quorum
                    ));
                }
                self.acked += 1;
                // The sector holds this write now, or one still in flight over it.
                let in_flight: Vec<(u64, u64, u64)> = self
                    .outstanding
                    .values()
                    .map(|p| (p.wid, p.offset, p.len))
                    .collect();
                for s in o.offset / SECTOR..(o.offset + o.len) / SECTOR {
                    let mut now: BTreeSet<u64> = in_flight
                        .iter()
                        .filter(|(_, off, len)| *off / SECTOR <= s && s < (off + len) / SECTOR)
                        .map(|(w, _, _)| *w)
                        .collect();
                    now.insert(o.wid);
                    self.allowed.insert(s, now);
                }
            }
            // The nemesis fails disks too: a write its Primary could not put on any disk fails.
            Err(IoError::NoQuorum | IoError::NotPrimary | IoError::NoData | IoError::Disk(_)) => {
                self.failed += 1
            }
            Err(e) => self.fail(format!("write {} failed with {e:?}", o.wid)),
        }
    }

    // ----- administration -----

    pub fn admin(&mut self, i: usize, cmd: AdminCmd) {
        let token = self.next_token;
        self.next_token += 1;
        self.admin.insert(token, (i, cmd));
        self.handle(i, Input::Admin { token, cmd });
    }

    /// What Pacemaker would do: promote a node with UpToDate data when no node is Primary,
    /// and demote (`secondary --force`) a Primary that has been without quorum for 2 s.
    fn manage(&mut self) {
        for i in 0..self.count() {
            let st = self.n[i].engine.status();
            let stale = st.role == Role::Primary && !st.quorum && self.n[i].alive;
            match (stale, self.no_quorum_since[i]) {
                (true, None) => self.no_quorum_since[i] = Some(self.now),
                (true, Some(t)) if self.now > t + 2_000 => {
                    self.no_quorum_since[i] = None;
                    self.admin(i, AdminCmd::ForceSecondary);
                }
                (false, _) => self.no_quorum_since[i] = None,
                _ => {}
            }
        }
        let any_primary = self
            .n
            .iter()
            .any(|n| n.alive && n.engine.role() == Role::Primary);
        if any_primary || !self.rng.chance(20) {
            return;
        }
        let clients: Vec<usize> = (0..self.count())
            .filter(|i| !self.setup.disks[*i] && self.n[*i].alive)
            .collect();
        if self.setup.client_primary {
            // The engine refuses without access to UpToDate data or without quorum. (Never a
            // diskful node: without quorum nothing tells the manager which one has the data.)
            if !clients.is_empty() {
                let i = clients[self.rng.below(clients.len() as u64) as usize];
                self.admin(i, AdminCmd::Primary { force: false });
            }
            return;
        }
        let candidates: Vec<usize> = self
            .diskful()
            .into_iter()
            .filter(|i| self.n[*i].alive && self.n[*i].engine.disk_state() == DiskState::UpToDate)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let i = candidates[self.rng.below(candidates.len() as u64) as usize];
        self.admin(i, AdminCmd::Primary { force: false });
    }

    // ----- the network -----

    fn link_allowed(&self, i: usize, j: usize) -> bool {
        self.n[i].alive
            && self.n[j].alive
            && self.group[i] == self.group[j]
            && !self.standalone.contains(&(i, j))
            && !self.standalone.contains(&(j, i))
    }

    /// Brings up every link the network allows that is down.
    fn links_up(&mut self) {
        self.reconnect_at = None;
        for i in 0..self.count() {
            for j in i + 1..self.count() {
                if !self.link_allowed(i, j)
                    || self.up.contains(&(i, j))
                    || self.up.contains(&(j, i))
                {
                    continue;
                }
                self.up.insert((i, j));
                self.up.insert((j, i));
                self.net.remove(&(i, j));
                self.net.remove(&(j, i));
                for (a, b) in [(i, j), (j, i)] {
                    self.handle(
                        a,
                        Input::PeerUp {
                            node: NodeId(b as u8),
                            protocol: Protocol::C,
                        },
                    );
                }
            }
        }
    }

    /// The link between `i` and `j` is gone for both; what is on the wire is lost.
    fn cut(&mut self, i: usize, j: usize, standalone_at: Option<usize>) {
        self.net.remove(&(i, j));
        self.net.remove(&(j, i));
        for (a, b) in [(i, j), (j, i)] {
            if self.up.remove(&(a, b)) {
                self.handle(
                    a,
                    Input::PeerDown {
                        node: NodeId(b as u8),
                        standalone: standalone_at == Some(a),
                    },
                );
            }
        }
        if self.reconnect_at.is_none() {
            self.reconnect_at = Some(self.now + 200 + self.rng.below(300));
        }
    }

    /// Splits the network into the sides `group` gives (one value per node).
    pub fn partition(&mut self, group: Vec<u8>) {
        if trace() {
            eprintln!("{} PARTITION {group:?}", self.now);
        }
        self.partitions += 1;
        self.group = group;
        for i in 0..self.count() {
            for j in i + 1..self.count() {
                if self.group[i] != self.group[j] {
                    self.cut(i, j, None);
                }
            }
        }
        self.reconnect_at = Some(self.now + 100);
    }

    pub fn heal(&mut self) {
        self.partition(vec![0; self.count()]);
    }

    fn process_drops(&mut self) {
        while let Some((i, j, standalone)) = self.drops.pop() {
            if standalone {
                self.standalone.insert((i, j));
            }
            self.cut(i, j, standalone.then_some(i));
        }
    }

    // ----- crashes and disks -----

    pub fn crash(&mut self, i: usize) {
        if trace() {
            eprintln!("{} CRASH {i}", self.now);
        }
        self.crashes += 1;
        let mut rng = Rng(self.rng.next());
        // Write-through disks: completed writes survive, those in flight may or may not.
        self.n[i].flush();
        self.n[i].power_loss(&mut rng);
        // Its writes in flight are never answered; they stay allowed where they may land.
        self.outstanding.retain(|_, o| o.node != i);
        self.reads.retain(|_, r| r.node != i);
        self.receive_paused.retain(|(a, _)| *a != i);
        for j in 0..self.count() {
            if j != i {
                self.cut(i, j, None);
            }
        }
    }

    pub fn restart(&mut self, i: usize) {
        if trace() {
            eprintln!("{} RESTART {i}", self.now);
        }
        let seed = self.rng.next();
        let t = self.time();
        let disk = self.setup.disks[i];
        self.n[i].restart(seed, t, disk);
        self.disk_failed[i] = false;
        self.pump(i);
        self.reconnect_at = Some(self.now + 100);
    }

    /// The next data write on node `i`'s disk fails (`on-io-error detach`), if another
    /// diskful node is in sync with it (connected, UpToDate): losing the last good copy
    /// needs the operator (`primary --force` on the node they trust), which is not this
    /// model's business.
    pub fn fail_next_write(&mut self, i: usize) {
        let st = self.n[i].engine.status();
        let another_good = st.peers.iter().any(|p| {
            self.setup.disks[p.node_id.0 as usize]
                && p.repl == ReplState::Established
                && p.disk == DiskState::UpToDate
        });
        if !another_good {
            return;
        }
        if let Some(p) = self.n[i]
            .pending
            .iter_mut()
            .find(|p| matches!(&p.work, Work::Data { op, .. } if op.written_range().is_some()))
        {
            p.fail = true;
        }
    }

    /// `drbdadm attach` after a failed disk was released.
    pub fn reattach(&mut self, i: usize) {
        if self.disk_failed[i] && self.n[i].alive {
            self.disk_failed[i] = false;
            self.n[i].now = self.time();
            self.n[i].attach();
            self.pump(i);
            // Refused (a Primary without access to UpToDate data may not attach a disk that
            // is not UpToDate itself): the nemesis tries again later.
            self.disk_failed[i] = self.n[i].engine.disk_state() == DiskState::Diskless;
        }
    }

    // ----- time -----

    fn ready_io(&self, i: usize) -> Vec<usize> {
        let n = &self.n[i];
        (0..n.pending.len())
            .filter(|k| n.pending[*k].at <= self.now)
            .collect()
    }

    /// The index in the (from, to) queue of the packet `to` receives next: the first, or,
    /// while `to` has the data stream paused, the first control-stream packet.
    fn deliverable(&self, from: usize, to: usize) -> Option<usize> {
        let q = self.net.get(&(from, to))?;
        if !self.receive_paused.contains(&(to, from)) {
            return q.front().is_some_and(|p| p.0 <= self.now).then_some(0);
        }
        q.iter()
            .take_while(|p| p.0 <= self.now)
            .position(|p| stream_for(p.1.packet_type()) == Stream::Control)
    }

    /// One event (a disk completion, a packet, a timer, a reconnect; a random one of those
    /// due), or time advances.
    pub fn step(&mut self) {
        let mut due: Vec<(u8, usize, usize)> = Vec::new();
        for i in 0..self.count() {
            if self.n[i].alive && !self.ready_io(i).is_empty() {
                due.push((0, i, 0));
            }
            for j in 0..self.count() {
                if self.up.contains(&(i, j)) && self.deliverable(i, j).is_some() {
                    due.push((1, i, j));
                }
            }
        }
        let now = self.time();
        if self
            .n
            .iter()
            .any(|n| n.alive && n.engine.poll_timeout().is_some_and(|t| t <= now))
        {
            due.push((2, 0, 0));
        }
        if self.reconnect_at.is_some_and(|t| t <= self.now) {
            due.push((3, 0, 0));
        }
        if due.is_empty() {
            self.now += 1;
            self.manage();
            return;
        }
        let (ev, i, j) = due[self.rng.below(due.len() as u64) as usize];
        match ev {
            0 => {
                let ready = self.ready_io(i);
                let k = ready[self.rng.below(ready.len() as u64) as usize];
                let p = self.n[i].pending.swap_remove(k);
                match p.work {
                    Work::Data { id, op } => {
                        let result = if p.fail {
                            Err(libc::EIO)
                        } else {
                            match &op {
                                IoOp::Read { offset, len } => {
                                    let at = *offset as usize;
                                    Ok(Some(bytes::Bytes::copy_from_slice(
                                        &self.n[i].visible[at..at + *len as usize],
                                    )))
                                }
                                op => {
                                    // Write-through: what completes is durable.
                                    self.n[i].write_data(op);
                                    self.n[i].flush();
                                    Ok(None)
                                }
                            }
                        };
                        self.handle(i, Input::DiskDone { id, result });
                    }
                    meta => {
                        let input = self.n[i].finish_meta(meta, p.fail, true);
                        self.handle(i, input);
                    }
                }
            }
            1 => {
                let k = self.deliverable(i, j).expect("a packet");
                let (_, packet) = self
                    .net
                    .get_mut(&(i, j))
                    .and_then(|q| q.remove(k))
                    .expect("packet");
                self.handle(
                    j,
                    Input::PeerPacket {
                        node: NodeId(i as u8),
                        packet,
                    },
                );
            }
            2 => {
                for i in 0..self.count() {
                    if self.n[i].alive && self.n[i].engine.poll_timeout().is_some_and(|t| t <= now)
                    {
                        self.n[i].engine.handle_timeout(now);
                        self.pump(i);
                    }
                }
            }
            _ => self.links_up(),
        }
        self.process_drops();
        self.check_one_quorate_primary();
    }

    /// At no moment do two Primaries have quorum.
    fn check_one_quorate_primary(&self) {
        let quorate: Vec<usize> = (0..self.count())
            .filter(|i| {
                let st = self.n[*i].engine.status();
                self.n[*i].alive && st.role == Role::Primary && st.quorum
            })
            .collect();
        if quorate.len() > 1 {
            self.fail(format!("Primaries {quorate:?} all have quorum"));
        }
    }

    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.step();
        }
    }

    // ----- the end -----

    /// Every diskful node connected to every other, Established, UpToDate, nothing marked,
    /// nothing in flight.
    pub fn converged(&self) -> bool {
        let diskful = self.diskful();
        diskful.iter().all(|&i| {
            let n = &self.n[i];
            let st = n.engine.status();
            n.alive
                && st.disk == DiskState::UpToDate
                && n.pending.is_empty()
                && st.peers.iter().all(|p| {
                    let j = p.node_id.0 as usize;
                    !self.setup.disks[j]
                        || (p.conn == ConnState::Connected
                            && p.repl == ReplState::Established
                            && p.disk == DiskState::UpToDate
                            && p.out_of_sync_bytes == 0)
                })
        }) && self.outstanding.is_empty()
            && self.reads.is_empty()
            && self.net.values().all(|q| q.is_empty())
    }

    /// Heals everything (network, crashed nodes, failed disks), lets the manager demote stale
    /// Primaries, and runs until the diskful nodes converge; then checks their data.
    pub fn settle(&mut self) {
        self.heal();
        for i in 0..self.count() {
            if !self.n[i].alive {
                self.restart(i);
            }
            self.reattach(i);
        }
        let end = self.now + 120_000;
        while !self.converged() {
            if self.now > end {
                self.fail("the diskful nodes did not converge after healing");
            }
            self.step();
            // A write failure injected before healing may strike now: attach again.
            for i in 0..self.count() {
                self.reattach(i);
            }
        }
        self.check_data();
    }

    /// Nodes `i` and `j` hold the same data.
    pub fn same_data(&self, i: usize, j: usize) -> bool {
        self.n[i].visible[..AREA as usize] == self.n[j].visible[..AREA as usize]
    }

    /// Every diskful node holds the same data, and every sector an allowed write.
    fn check_data(&self) {
        let diskful = self.diskful();
        let first = &self.n[diskful[0]];
        for &i in &diskful[1..] {
            if self.n[i].visible[..AREA as usize] != first.visible[..AREA as usize] {
                let s = (0..AREA / SECTOR)
                    .find(|s| tag(&self.n[i].visible, *s) != tag(&first.visible, *s))
                    .unwrap_or(0);
                self.fail(format!(
                    "nodes {} and {i} differ at sector {s}: {} vs {}",
                    diskful[0],
                    tag(&first.visible, s),
                    tag(&self.n[i].visible, s)
                ));
            }
        }
        for (s, allowed) in &self.allowed {
            let t = tag(&first.visible, *s);
            if !allowed.contains(&t) {
                self.fail(format!(
                    "sector {s} holds write {t}, allowed {allowed:?}: an acknowledged write was lost"
                ));
            }
        }
    }
}

/// A nemesis run: partitions of every kind, crashes, disk failures and healing, with the
/// application writing on whichever node is Primary; then everything heals and the data
/// is checked.
pub fn chaos(seed: u64, setup: Setup) -> Cluster {
    let mut w = Cluster::new(seed, setup);
    let count = w.count();
    // A start: everyone connected, one node forced Primary for the initial sync.
    w.run_for(300);
    w.admin(0, AdminCmd::Primary { force: true });
    w.run_for(3_000);
    if w.setup.client_primary {
        // The manager promotes the client instead.
        w.admin(0, AdminCmd::Secondary);
        w.run_for(500);
    }
    for _ in 0..12 {
        let phase = 400 + w.rng.below(2_500);
        let end = w.now + phase;
        while w.now < end {
            if w.rng.chance(300) {
                for i in 0..count {
                    let busy = w.outstanding.values().filter(|o| o.node == i).count()
                        + w.reads.values().filter(|r| r.node == i).count();
                    if w.n[i].alive && w.n[i].engine.role() == Role::Primary && busy < 4 {
                        if w.rng.below(3) == 0 {
                            w.read(i);
                        } else {
                            w.write(i);
                        }
                    }
                }
            }
            w.step();
        }
        match w.rng.below(10) {
            0..=3 => {
                // A split: each node on side 0 or 1 (all on one side heals).
                let group = (0..count).map(|_| w.rng.below(2) as u8).collect();
                w.partition(group);
            }
            4 => {
                // Full isolation.
                w.partition((0..count as u8).collect());
            }
            5 | 6 => w.heal(),
            7 => {
                let i = w.rng.below(count as u64) as usize;
                if w.n[i].alive {
                    w.crash(i);
                } else {
                    w.restart(i);
                }
            }
            8 => {
                let i = w.rng.below(count as u64) as usize;
                if w.disk_failed[i] {
                    w.reattach(i);
                } else {
                    w.fail_next_write(i);
                }
            }
            _ => {
                for i in 0..count {
                    if !w.n[i].alive {
                        w.restart(i);
                    }
                }
            }
        }
    }
    w.settle();
    w
}
