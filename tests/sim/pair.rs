//! A reusable two-node world: two engines, one ordered packet queue per direction, simulated
//! disks with a volatile write cache, metadata persisted when its write completes, virtual time
//! (each engine's timeouts run at the deadline it reports) and one seeded RNG. Faults: packet delay, stalls, connection resets,
//! one-way partitions (a reset once pings would fail), disk latency, disk errors on a node,
//! crashes (power loss: each unflushed write survives or not) and restarts from the persisted
//! superblock, bitmap and activity log.
//!
//! The world checks as it runs:
//! - an acknowledged write is on the Primary's disk, and under protocol C while connected on
//!   the peer's too; every sector ends up holding its last acknowledged write, unless the
//!   Primary crashed since, and then a write it may hold (at least what a FLUSH covered);
//! - never two Primaries while connected;
//! - a node's current UUID changes only by a named rotation: a new one on a Primary (or a
//!   promotion) without a connected peer or without the peer's disk, `new-current-uuid`, or
//!   adopting the peer's.

use super::Rng;
pub use super::node::{Node, PendingIo, SECTOR, Work, payload, tag};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use udrbd::config::Protocol;
use udrbd::net::{Stream, stream_for};
use udrbd::repl::handshake::SbPolicy;
use udrbd::repl::wire::Packet;
use udrbd::repl::{
    Action, AdminCmd, AdminError, ConnState, DiskState, EngineConfig, Input, IoError, IoOp,
    PeerInfo, ReplState, Role,
};
use udrbd::types::{BM_BLOCK_SIZE, NodeId, ReqId, Time};

pub const A: usize = 0;
pub const B: usize = 1;

fn trace() -> bool {
    std::env::var_os("UDRBD_SIM_TRACE").is_some()
}

/// Fault rates and latencies; all times in ms, rates per mille.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub net_delay_max: u64,
    pub disk_lat_max: u64,
    /// Per mille of data writes on a Secondary that fail with EIO.
    pub disk_err_secondary: u64,
    /// Per mille of metadata writes on a Secondary that fail with EIO (it detaches).
    pub meta_err_secondary: u64,
    /// Internal metadata: the driver's fdatasync after a metadata write flushes the shared
    /// device's cache, data included. False models external metadata on another device.
    pub meta_flushes_data: bool,
    /// Per node: writes overlapping this byte range fail with EIO (a bad spot on the disk).
    pub bad_range: [Option<(u64, u64)>; 2],
    /// Per sender: flip a byte in the next Data packet's payload on the wire.
    pub corrupt_next_data: [bool; 2],
    /// Per node: its data disk answers nothing while set (a slow disk, frozen on purpose);
    /// its metadata device goes on.
    pub hold_disk: [bool; 2],
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            net_delay_max: 3,
            disk_lat_max: 4,
            disk_err_secondary: 0,
            meta_err_secondary: 0,
            meta_flushes_data: true,
            bad_range: [None, None],
            corrupt_next_data: [false, false],
            hold_disk: [false, false],
        }
    }
}

/// Node `id`'s view of its peer by default.
pub fn default_peer(id: usize) -> PeerInfo {
    let peer = 1 - id;
    let mut p = PeerInfo::new(format!("n{peer}"), NodeId(peer as u8));
    p.verify_alg = Some(udrbd::repl::digest::DigestAlg::Crc32c);
    // Faster than DRBD's default so a full sync of the small disk takes seconds of virtual time.
    p.sync.c_fill_target = 2048;
    p
}

/// Node `id` of the pair, with fresh metadata, attached.
fn node(id: usize, seed: u64, peer: PeerInfo) -> Node {
    let uuid_seed = seed.wrapping_mul(31).wrapping_add(id as u64);
    Node::new(id, seed, cfg(id, uuid_seed, &peer), true)
}

fn cfg(id: usize, seed: u64, peer: &PeerInfo) -> EngineConfig {
    EngineConfig {
        resource: "pair".into(),
        node_id: NodeId(id as u8),
        peers: vec![peer.clone()],
        auto_promote: false,
        auto_promote_timeout_ms: 2_000,
        twopc_timeout_ms: 30_000,
        quorum: Default::default(),
        uuid_seed: seed,
    }
}

/// Where an acknowledged write was written: its node, and, if the peer got it (replicated,
/// not refused, no peer-disk loss while it was out), the peer-disk losses seen at its ack.
#[derive(Clone, Copy, Debug)]
struct Origin {
    node: usize,
    replica: Option<u64>,
}

/// What the application may find in each sector.
#[derive(Clone, Debug, Default)]
struct Sector {
    /// The acknowledged write committed last (overlapping writes are committed in the order
    /// the engine submits them), while the Primary did not crash since.
    exact: Option<u64>,
    /// The ack sequence number of `exact`.
    acked_at: u64,
    /// Where `exact` was written.
    exact_from: Option<Origin>,
    /// Every write the sector may hold after crashes.
    cands: BTreeSet<u64>,
}

struct Outstanding {
    node: usize,
    op: IoOp,
    wid: u64,
    /// For a FLUSH: the ack counter when it was submitted.
    ack_seq: u64,
    /// Submitted while connected past the handshake (so it is replicated, not marked).
    replicated: bool,
    /// The peer-disk losses its node had seen so far ([`World::peer_disk_losses`]): if the
    /// peer's disk went away while this write was out, the write was marked for it instead.
    peer_disk_losses: u64,
    /// Part of the application model (see [`World::discarded_writer`]).
    modelled: bool,
    /// Its node's role and disk when it was submitted, and the failures injected on that
    /// node so far: what a failure may be blamed on.
    role: Role,
    disk: DiskState,
    data_failures: u64,
    meta_failures: u64,
}

pub struct World {
    pub seed: u64,
    pub rng: Rng,
    pub now: u64,
    pub n: [Node; 2],
    /// Per sender: (deliver at, packet), delivery times non-decreasing.
    net: [VecDeque<(u64, Packet)>; 2],
    /// The driver's view per node: the link is up.
    up: [bool; 2],
    pub standalone: [bool; 2],
    /// Writes on this node are not part of the application model: a split brain's victim,
    /// whose changes the recovery discards.
    pub discarded_writer: Option<usize>,
    /// A reconnect is due at this time (both drivers keep trying).
    reconnect_at: Option<u64>,
    /// One-way partition: (blocked sender, reset at).
    partition: Option<(usize, u64)>,
    stall_until: [u64; 2],
    pub protocol: Protocol,
    pub faults: Faults,
    drops: Vec<(usize, bool)>,
    outstanding: BTreeMap<ReqId, Outstanding>,
    sectors: BTreeMap<u64, Sector>,
    next_req: u64,
    next_wid: u64,
    ack_seq: u64,
    /// Resync data bytes sent by each node (ResyncReply payloads).
    pub resync_bytes: [u64; 2],
    pub admin_results: Vec<(usize, AdminCmd, Result<(), AdminError>)>,
    admin_cmds: HashMap<u64, (usize, AdminCmd)>,
    pub acked_writes: u64,
    /// Writes submitted over a write still in flight.
    pub overlapping_writes: u64,
    pub failed_writes: u64,
    /// Application reads in flight: first sector, per sector what it may return (see
    /// [`World::read_allowed`]), and the first write id submitted after it.
    reads: BTreeMap<ReqId, (u64, Vec<BTreeSet<u64>>, u64)>,
    /// Reads that returned data (each checked against the model).
    pub reads_ok: u64,
    /// Per node: reads it sent to its peer (DataRequest).
    pub remote_reads: [u64; 2],
    /// Per sector: the write id drawn for the last trim over it (trims read back as 0, so a
    /// read checks by this whether one was submitted after it).
    trimmed_at: BTreeMap<u64, u64>,
    /// Both nodes allow two primaries.
    two_primaries: bool,
    /// Per sender: blocks of Data sent in the open epoch, and per closed epoch until its
    /// BarrierAck arrives (what the transfer log must mark when the link goes).
    tl_open: [BTreeSet<u64>; 2],
    tl_closed: [Vec<(u32, BTreeSet<u64>)>; 2],
    /// Block ids of writes the peer answered with NegAck.
    pub neg_acked: std::collections::HashSet<u64>,
    /// 4 KiB blocks written by the application while recording.
    pub recorded: Option<BTreeSet<u64>>,
    /// Per node: an online verify reported blocks out of sync, not resynced since.
    verify_found: [bool; 2],
    /// When set, a hash of every action either engine emitted, in order (the determinism
    /// test compares two runs of one seed).
    pub actions: Option<Vec<u64>>,
    /// Per node: metadata writes that failed.
    pub meta_failures: [u64; 2],
    /// Per node: data writes (and flushes) that failed.
    pub data_failures: [u64; 2],
    /// Per application write: its place in the order the engines committed writes (the
    /// order its node submitted it to the disk). Overlapping writes land in this order.
    commit: HashMap<u64, u64>,
    next_commit: u64,
    /// The same order per application request (trims included).
    req_order: HashMap<ReqId, u64>,
    /// Per sector: the commit order of the last trim submitted over it (trims all read back
    /// as write 0, so their order is kept per sector).
    trimmed: BTreeMap<u64, u64>,
    /// Per node: the request ids of the peer's Data packets it received (protocol B acks).
    received: [BTreeSet<u64>; 2],
    /// The outcome of every finished application request, by id.
    pub results: HashMap<ReqId, Result<(), IoError>>,
    /// What each application request's sectors hold once it lands.
    wids: HashMap<ReqId, u64>,
    /// Per node: its engine has the data stream from its peer paused (`max-buffers`), and how
    /// often any engine paused one.
    receive_paused: [bool; 2],
    pub receive_pauses: u64,
    /// Per node: how often it saw its peer's disk state drop (a failed write makes it
    /// Inconsistent, a detach Diskless, a lost link DUnknown: the writes out then complete
    /// without the peer, marked for it), and the state it saw last.
    peer_disk_losses: [u64; 2],
    seen_peer_disk: [DiskState; 2],
    /// Two primaries (`allow-two-primaries`): both nodes write; see [`DualModel`].
    pub dual: Option<DualModel>,
}

/// What two Primaries' writes did: per node and sector, the writes (ids) in the order that
/// node's disk applied them, and every acknowledged write. The order each node applied is
/// the conflict order the nodes agreed on, if the final content is the same.
#[derive(Default)]
pub struct DualModel {
    pub history: [BTreeMap<u64, Vec<u64>>; 2],
    /// (node, write id, offset, len) of every acknowledged write.
    pub acked: Vec<(usize, u64, u64, u64)>,
    /// Answers seen on the wire: Superseded, RetryWrite.
    pub superseded: u64,
    pub retried: u64,
}

impl DualModel {
    /// The last place of write `wid` in node `k`'s history of sector `s`.
    fn last_at(&self, k: usize, s: u64, wid: u64) -> Option<usize> {
        self.history[k].get(&s)?.iter().rposition(|w| *w == wid)
    }
}

impl World {
    pub fn new(seed: u64, protocol: Protocol) -> World {
        World::with_policies(seed, protocol, [SbPolicy::default(); 2])
    }

    /// A world whose nodes keep their metadata on another device: flushing it does not flush
    /// the data. The engine is not told; it must order data before activity-log transactions
    /// with its own flushes either way.
    pub fn with_external_metadata(seed: u64) -> World {
        let mut w = World::new(seed, Protocol::C);
        w.faults.meta_flushes_data = false;
        w
    }

    /// A world whose nodes resolve split brains with these policies.
    pub fn with_policies(seed: u64, protocol: Protocol, policies: [SbPolicy; 2]) -> World {
        World::with_peers(seed, protocol, |i, p| p.sb_policy = policies[i])
    }

    /// A world where `tweak` adjusts how each node sees its peer.
    pub fn with_peers(
        seed: u64,
        protocol: Protocol,
        tweak: impl Fn(usize, &mut PeerInfo),
    ) -> World {
        let peer = |i: usize| {
            let mut p = default_peer(i);
            tweak(i, &mut p);
            p
        };
        let mut w = World {
            discarded_writer: None,
            seed,
            rng: Rng(seed),
            now: 0,
            n: [node(A, seed, peer(A)), node(B, seed, peer(B))],
            net: [VecDeque::new(), VecDeque::new()],
            up: [false; 2],
            standalone: [false; 2],
            reconnect_at: None,
            partition: None,
            stall_until: [0; 2],
            protocol,
            faults: Faults::default(),
            drops: Vec::new(),
            outstanding: BTreeMap::new(),
            sectors: BTreeMap::new(),
            next_req: 1,
            next_wid: 1,
            ack_seq: 0,
            resync_bytes: [0; 2],
            admin_results: Vec::new(),
            admin_cmds: HashMap::new(),
            acked_writes: 0,
            overlapping_writes: 0,
            failed_writes: 0,
            reads: BTreeMap::new(),
            reads_ok: 0,
            remote_reads: [0; 2],
            trimmed_at: BTreeMap::new(),
            two_primaries: peer(A).two_primaries && peer(B).two_primaries,
            recorded: None,
            neg_acked: Default::default(),
            tl_open: [BTreeSet::new(), BTreeSet::new()],
            tl_closed: [Vec::new(), Vec::new()],
            verify_found: [false; 2],
            actions: None,
            meta_failures: [0; 2],
            data_failures: [0; 2],
            commit: HashMap::new(),
            next_commit: 0,
            req_order: HashMap::new(),
            trimmed: BTreeMap::new(),
            received: [BTreeSet::new(), BTreeSet::new()],
            results: HashMap::new(),
            wids: HashMap::new(),
            peer_disk_losses: [0; 2],
            receive_paused: [false; 2],
            receive_pauses: 0,
            seen_peer_disk: [DiskState::DUnknown; 2],
            dual: None,
        };
        w.pump(A);
        w.pump(B);
        w
    }

    pub fn fail(&self, msg: impl std::fmt::Display) -> ! {
        if trace() {
            for i in [A, B] {
                for l in self.n[i].engine.debug_requests() {
                    eprintln!("node {i}: {l}");
                }
            }
        }
        panic!(
            "seed {} at {} ms: {msg}\n  A: {:?} {:?} {:?}\n  B: {:?} {:?} {:?}",
            self.seed,
            self.now,
            self.n[A].engine.role(),
            self.n[A].engine.disk_state(),
            self.n[A].status_peer(),
            self.n[B].engine.role(),
            self.n[B].engine.disk_state(),
            self.n[B].status_peer(),
        )
    }

    fn handle(&mut self, i: usize, input: Input) {
        if !self.n[i].alive {
            return;
        }
        self.n[i].engine.handle(self.time(), input);
        self.pump(i);
    }

    /// Executes node `i`'s actions.
    /// The engines' clock: the world's milliseconds in nanoseconds.
    pub fn time(&self) -> Time {
        Time(self.now * 1_000_000)
    }

    fn pump(&mut self, i: usize) {
        let t = self.time();
        while let Some(a) = self.n[i].engine.poll_action() {
            if let Some(record) = &mut self.actions {
                // A hash per action: the whole trace of a run, comparable across runs.
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (self.now, i, format!("{a:?}")).hash(&mut h);
                record.push(h.finish());
            }
            if trace() {
                match &a {
                    Action::Send { packet, .. } => {
                        let s = format!("{packet:?}");
                        eprintln!("{} {i} send {}", self.now, &s[..s.len().min(160)])
                    }
                    Action::Log(l) => eprintln!("{} {i} log {l}", self.now),
                    Action::SubmitDisk { id, op } => {
                        eprintln!("{} {i} disk {id:?} {:?}", self.now, op.written_range())
                    }
                    other => eprintln!("{} {i} {other:?}", self.now),
                }
            }
            match a {
                Action::SubmitDisk { id, op } => {
                    if let Some(o) = self.outstanding.get(&id)
                        && o.node == i
                    {
                        match &o.op {
                            IoOp::Write { .. } if !self.commit.contains_key(&o.wid) => {
                                self.next_commit += 1;
                                self.commit.insert(o.wid, self.next_commit);
                                self.req_order.insert(id, self.next_commit);
                            }
                            IoOp::Trim { offset, len, .. } if !self.req_order.contains_key(&id) => {
                                self.next_commit += 1;
                                self.req_order.insert(id, self.next_commit);
                                let (a, l) = (*offset, u64::from(*len));
                                for s in a / SECTOR..(a + l) / SECTOR {
                                    self.trimmed.insert(s, self.next_commit);
                                }
                            }
                            _ => {}
                        }
                    }
                    let lat = self.rng.below(self.faults.disk_lat_max + 1);
                    let secondary = self.n[i].engine.role() != Role::Primary;
                    let bad = match (op.written_range(), self.faults.bad_range[i]) {
                        (Some((o, l)), Some((bo, bl))) => o < bo + bl && bo < o + l,
                        _ => false,
                    };
                    let fail = bad
                        || (secondary
                            && op.written_range().is_some()
                            && self.rng.chance(self.faults.disk_err_secondary));
                    self.n[i].pending.push(PendingIo {
                        work: Work::Data { id, op },
                        at: self.now + lat,
                        fail,
                    });
                }
                Action::WriteMeta { generation, sb } => {
                    self.meta_work(i, Work::Meta { generation, sb })
                }
                Action::WriteAl { seq, block, tr } => {
                    self.meta_work(i, Work::Al { seq, block, tr })
                }
                Action::WriteBitmap { pages } => self.meta_work(i, Work::Bitmap { pages }),
                // Only `drbdadm resize` (or a peer's) asks for it, and no scenario resizes:
                // the growth is tested with real daemons (tests/resize.rs).
                Action::GrowDisk => panic!("the simulation does not model resize"),
                Action::Send { mut packet, .. } => {
                    if self.up[i] && self.up[1 - i] {
                        match &mut packet {
                            Packet::ResyncReply { data, .. } => {
                                self.resync_bytes[i] += data.len() as u64
                            }
                            Packet::Data { data, .. }
                                if self.faults.corrupt_next_data[i] && !data.is_empty() =>
                            {
                                self.faults.corrupt_next_data[i] = false;
                                let mut v = data.to_vec();
                                v[0] ^= 0x40;
                                *data = v.into();
                            }
                            Packet::Data { sector, size, .. } => {
                                let a = sector.0 * SECTOR;
                                let l = u64::from(*size);
                                self.tl_open[i]
                                    .extend(a / BM_BLOCK_SIZE..(a + l).div_ceil(BM_BLOCK_SIZE));
                            }
                            Packet::Barrier { epoch } => {
                                let blocks = std::mem::take(&mut self.tl_open[i]);
                                self.tl_closed[i].push((*epoch, blocks));
                            }
                            _ => {}
                        }
                        let delay = self.rng.below(self.faults.net_delay_max + 1);
                        let last = self.net[i].back().map_or(0, |p| p.0);
                        let at = (self.now + delay).max(last);
                        self.net[i].push_back((at, packet));
                    }
                }
                Action::Complete { id, result } => self.completed(i, id, result),
                Action::AdminDone { token, result } => {
                    let (node, cmd) = self.admin_cmds.remove(&token).expect("admin token");
                    assert_eq!(node, i);
                    if matches!(cmd, AdminCmd::Disconnect) && result.is_ok() {
                        // The driver closes the link once the peers agreed (`stop_links`).
                        self.drops.push((i, true));
                    }
                    self.admin_results.push((i, cmd, result));
                }
                // The simulated application opens nothing (auto-promote is off).
                Action::Opened { .. } => self.fail("an open nobody asked for was answered"),
                Action::Log(l) => {
                    if l.contains("Online verify found") && !l.contains("found 0 ") {
                        self.verify_found[i] = true;
                    } else if l.contains("Began resync") {
                        self.verify_found[i] = false;
                    }
                    self.n[i].logs.push(l)
                }
                Action::DropLink { standalone, .. } => self.drops.push((i, standalone)),
                Action::RunHandler { handler, node } => {
                    self.n[i].handlers.push(handler);
                    let exit = self.n[i].handler_exit;
                    self.n[i].engine.handle(
                        t,
                        Input::HandlerDone {
                            handler,
                            node,
                            exit,
                        },
                    );
                }
                Action::ReleaseDisk => self.n[i].logs.push("driver: disk released".into()),
                Action::ReceiveData { paused, .. } => {
                    self.receive_paused[i] = paused;
                    self.receive_pauses += u64::from(paused);
                }
            }
        }
        self.check_uuid(i);
        let sees = self.n[i].status_peer().disk;
        if sees < self.seen_peer_disk[i] {
            self.peer_disk_losses[i] += 1;
        }
        self.seen_peer_disk[i] = sees;
    }

    /// Queues a metadata write on node `i`'s metadata device: it completes after a latency,
    /// and on a Secondary it may fail (`Faults::meta_err_secondary`).
    fn meta_work(&mut self, i: usize, work: Work) {
        let lat = self.rng.below(self.faults.disk_lat_max + 1);
        let secondary = self.n[i].engine.role() != Role::Primary;
        let fail = secondary && self.rng.chance(self.faults.meta_err_secondary);
        self.n[i].pending.push(PendingIo {
            work,
            at: self.now + lat,
            fail,
        });
    }

    /// Completes metadata work: the write lands (after the cache flush a metadata write does)
    /// or fails.
    fn complete_meta(&mut self, i: usize, work: Work, fail: bool) {
        let t = self.time();
        let flushes_data = self.faults.meta_flushes_data;
        let input = self.n[i].finish_meta(work, fail, flushes_data);
        if fail {
            self.meta_failures[i] += 1;
        }
        self.n[i].engine.handle(t, input);
        self.pump(i);
    }

    fn check_uuid(&mut self, i: usize) {
        let node = &self.n[i];
        let now = node.uuid();
        // A detached disk shows no UUID; it has not changed on disk.
        if now == node.last_uuid || node.engine.disk_state() == DiskState::Diskless {
            return;
        }
        let peer = &self.n[1 - i];
        let adopted = now == peer.uuid();
        // A Primary starts a new generation when it loses sight of its peer's data (the link
        // went, or the peer's disk did: DRBD's `lost_contact_to_peer_data()`) or the peer
        // failed a write.
        let peer_data_lost = node.status_peer().disk != DiskState::UpToDate;
        let fresh_on_primary =
            node.engine.role() == Role::Primary && (!node.connected() || peer_data_lost);
        if !(adopted || fresh_on_primary || node.uuid_change_ok) {
            self.fail(format!(
                "node {i} current UUID {:?} -> {now:?} without a named rotation",
                node.last_uuid
            ));
        }
        let node = &mut self.n[i];
        node.last_uuid = now;
        node.uuid_change_ok = false;
    }

    fn completed(&mut self, i: usize, id: ReqId, result: Result<Option<bytes::Bytes>, IoError>) {
        let Some(o) = self.outstanding.remove(&id) else {
            self.fail(format!("completion for unknown or completed {id:?}"));
        };
        assert_eq!(o.node, i);
        self.results
            .insert(id, result.as_ref().map(|_| ()).map_err(Clone::clone));
        if let Some((first, allowed, later)) = self.reads.remove(&id)
            && let Ok(Some(data)) = &result
        {
            self.check_read(i, first, &allowed, later, data);
            self.reads_ok += 1;
        }
        if let (Some(d), IoOp::Write { offset, data, .. }, Ok(_)) = (&mut self.dual, &o.op, &result)
        {
            d.acked.push((i, o.wid, *offset, data.len() as u64));
        }
        match (&o.op, &result) {
            (IoOp::Flush, Ok(_)) => self.flush_acked(i, &o, id),
            (_, Ok(_)) if o.role != Role::Primary => {
                self.fail(format!("{id:?} acknowledged, submitted on a {:?}", o.role))
            }
            (IoOp::Write { .. } | IoOp::Trim { .. }, Ok(_)) if !o.modelled => {
                self.acked_writes += 1;
            }
            (IoOp::Write { .. } | IoOp::Trim { .. }, Ok(_)) => self.write_acked(i, &o, id),
            (_, Ok(_)) => {}
            (_, Err(e)) => {
                self.failed_writes += 1;
                self.check_failure(i, &o, id, e);
            }
        }
    }

    /// A failed request is failed for a reason the world caused: a Secondary was written,
    /// the disk was not UpToDate, or a disk or metadata error was injected while it was out.
    fn check_failure(&self, i: usize, o: &Outstanding, id: ReqId, e: &IoError) {
        let data_failed = self.data_failures[i] > o.data_failures;
        let meta_failed = self.meta_failures[i] > o.meta_failures;
        let disk_now = self.n[i].engine.disk_state();
        let explained = match e {
            IoError::NotPrimary => {
                o.role != Role::Primary || self.n[i].engine.role() != Role::Primary
            }
            IoError::NoData => {
                o.disk < DiskState::UpToDate
                    || disk_now < DiskState::UpToDate
                    || data_failed
                    || meta_failed
            }
            IoError::Disk(_) => data_failed,
            IoError::Meta => meta_failed || data_failed,
            // No scenario shrinks the device: every request is inside it.
            IoError::PastEnd { .. } => false,
            // The pair runs without quorum.
            IoError::NoQuorum => false,
        };
        if !explained {
            self.fail(format!(
                "{id:?} ({:?}) failed with {e:?}; submitted as {:?}/{:?}, no fault injected since",
                o.op.written_range(),
                o.role,
                o.disk
            ));
        }
    }

    /// The peer got `o` and still holds what it got: the write was sent while connected to
    /// a peer disk, the peer did not refuse it, and neither the link nor the peer's disk
    /// state dropped since.
    fn peer_promised(&self, i: usize, o: &Outstanding, id: ReqId) -> bool {
        o.replicated
            && o.peer_disk_losses == self.peer_disk_losses[i]
            // (A drop in the very batch of actions that completes it is not counted yet.)
            && self.n[i].status_peer().disk >= self.seen_peer_disk[i]
            && !self.neg_acked.contains(&id.0)
            && self.up[i]
            && self.n[i].status_peer().repl != ReplState::Off
            && self.n[1 - i].engine.disk_state() >= DiskState::Inconsistent
    }

    /// The place of write `wid` in the commit order (0: the initial content or a trim).
    fn order(&self, wid: u64) -> u64 {
        if wid == 0 {
            0
        } else {
            self.commit.get(&wid).copied().unwrap_or(u64::MAX)
        }
    }

    /// Sector `s` of `data` holds write `wid` intact, or one committed after it.
    fn holds_at_least(&self, data: &[u8], s: u64, wid: u64) -> bool {
        let t = tag(data, s);
        let at = (s * SECTOR) as usize;
        let intact = data[at..at + SECTOR as usize] == payload(t, SECTOR)[..]
            || (t == 0 && data[at..at + SECTOR as usize].iter().all(|b| *b == 0));
        let later = if t == 0 {
            self.trimmed.get(&s).is_some_and(|o| *o > self.order(wid))
        } else {
            self.order(t) > self.order(wid)
        };
        intact && (t == wid || later)
    }

    fn all_hold(&self, data: &[u8], offset: u64, len: u64, wid: u64) -> bool {
        (offset / SECTOR..(offset + len) / SECTOR).all(|s| self.holds_at_least(data, s, wid))
    }

    /// What a write's acknowledgement promises, at the moment it happens: it is on the local
    /// disk (durable if FUA); under protocol B the peer received it, under C the peer wrote it
    /// (durably if FUA). The model records it as the sector's content unless a write
    /// committed after it was acknowledged first.
    fn write_acked(&mut self, i: usize, o: &Outstanding, id: ReqId) {
        let (offset, len) = o.op.written_range().expect("range");
        self.acked_writes += 1;
        self.ack_seq += 1;
        let wid = o.wid;
        let fua = matches!(
            o.op,
            IoOp::Write { fua: true, .. } | IoOp::Trim { fua: true, .. }
        );
        let local_disk = self.n[i].engine.disk_state() == DiskState::UpToDate
            && self.data_failures[i] == o.data_failures;
        if local_disk && !self.all_hold(&self.n[i].visible, offset, len, wid) {
            self.fail(format!("{id:?} acknowledged before the local write"));
        }
        if local_disk && fua && !self.all_hold(&self.n[i].durable, offset, len, wid) {
            self.fail(format!(
                "FUA {id:?} acknowledged before it was durable locally"
            ));
        }
        let promised = self.peer_promised(i, o, id);
        let peer = &self.n[1 - i];
        match self.protocol {
            Protocol::B if promised && !self.received[1 - i].contains(&id.0) => self.fail(format!(
                "{id:?} acknowledged under protocol B before the peer received it"
            )),
            Protocol::C if promised && !self.all_hold(&peer.visible, offset, len, wid) => self
                .fail(format!(
                    "{id:?} acknowledged under protocol C but not on the peer's disk"
                )),
            Protocol::C if promised && fua && !self.all_hold(&peer.durable, offset, len, wid) => {
                self.fail(format!(
                    "FUA {id:?} acknowledged under protocol C but not durable on the peer"
                ))
            }
            _ => {}
        }
        let replica = promised.then_some(self.peer_disk_losses[i]);
        let mine = self.req_order.get(&id).copied().unwrap_or(0);
        for s in offset / SECTOR..(offset + len) / SECTOR {
            let newer = self.sectors.get(&s).and_then(|st| st.exact).map(|e| {
                if e == 0 {
                    0 // a trim: acknowledged, so committed before anything in flight over it
                } else {
                    self.order(e)
                }
            });
            if newer.is_some_and(|e| e > mine) {
                continue; // a write committed after this one was acknowledged first
            }
            let st = self.sectors.entry(s).or_default();
            st.exact = Some(wid);
            st.acked_at = self.ack_seq;
            st.exact_from = Some(Origin { node: i, replica });
        }
    }

    /// A FLUSH acknowledged: every write acknowledged before it was submitted is durable on
    /// this node's disk, and under protocol C on the peer's too (the Barrier's flush). After a
    /// crash, such a sector holds that write or one in flight.
    fn flush_acked(&mut self, i: usize, o: &Outstanding, id: ReqId) {
        let local_disk = self.n[i].engine.disk_state() == DiskState::UpToDate
            && self.data_failures[i] == o.data_failures;
        let peer_flushed = self.protocol == Protocol::C && self.peer_promised(i, o, id);
        let covered: Vec<(u64, u64, Option<Origin>)> = self
            .sectors
            .iter()
            .filter(|(_, st)| st.acked_at <= o.ack_seq)
            .filter_map(|(s, st)| st.exact.map(|e| (*s, e, st.exact_from)))
            .collect();
        for (s, e, from) in covered {
            let Some(Origin {
                node: writer,
                replica,
            }) = from
            else {
                continue;
            };
            if writer != i {
                continue;
            }
            if local_disk && !self.holds_at_least(&self.n[i].durable, s, e) {
                self.fail(format!(
                    "FLUSH {id:?} acknowledged but sector {s} (write {e}) is not durable locally \
                     (it holds {}, reads {})",
                    tag(&self.n[i].durable, s),
                    tag(&self.n[i].visible, s)
                ));
            }
            if peer_flushed
                && replica == Some(self.peer_disk_losses[i])
                && !self.holds_at_least(&self.n[1 - i].durable, s, e)
            {
                self.fail(format!(
                    "FLUSH {id:?} acknowledged under protocol C but sector {s} (write {e}) is \
                     not durable on the peer"
                ));
            }
        }
        let inflight: Vec<(u64, u64, u64)> = self
            .outstanding
            .values()
            .filter_map(|o| o.op.written_range().map(|(a, l)| (a, l, o.wid)))
            .collect();
        for (s, st) in self.sectors.iter_mut() {
            if let Some(e) = st.exact
                && st.acked_at <= o.ack_seq
            {
                st.cands = BTreeSet::from([e]);
                for (a, l, wid) in &inflight {
                    if *a <= s * SECTOR && s * SECTOR < a + l {
                        st.cands.insert(*wid);
                    }
                }
            }
        }
    }

    // ----- the application -----

    /// Submits one random write (or trim, flush) on node `i`. A write may overlap writes
    /// of the same node still in flight (then the engine orders them); a trim overlaps
    /// nothing in flight (it reads back as zeroes, which carry no order). Returns false when
    /// no range was free.
    pub fn app_write(&mut self, i: usize) -> bool {
        let r = self.rng.below(100);
        if r < 6 {
            self.submit(i, IoOp::Flush, 0, true);
            return true;
        }
        let trim = r < 10;
        let overlap = !trim && self.rng.chance(300);
        let data_bytes = self.n[i].layout.data_bytes;
        let mine: Vec<u64> = self
            .outstanding
            .values()
            .filter(|o| o.node == i && matches!(o.op, IoOp::Write { .. }))
            .filter_map(|o| o.op.written_range().map(|(a, _)| a))
            .collect();
        for _ in 0..20 {
            let len = (1 + self.rng.below(24)) * SECTOR;
            let max = (data_bytes - len) / SECTOR;
            let offset = match mine.len() {
                n if overlap && n > 0 => {
                    // Next to a write in flight: a few sectors before or after its start.
                    let near = mine[self.rng.below(n as u64) as usize] / SECTOR;
                    (near + self.rng.below(16)).saturating_sub(8).min(max) * SECTOR
                }
                _ => self.rng.below(max) * SECTOR,
            };
            let busy = self.outstanding.values().any(|o| {
                let hits =
                    o.op.written_range()
                        .is_some_and(|(a, l)| a < offset + len && offset < a + l);
                hits && (trim || o.node != i || !matches!(o.op, IoOp::Write { .. }))
            });
            if busy {
                continue;
            }
            let overlaps = self.outstanding.values().any(|o| {
                o.op.written_range()
                    .is_some_and(|(a, l)| a < offset + len && offset < a + l)
            });
            self.overlapping_writes += u64::from(overlaps);
            let wid = self.next_wid;
            self.next_wid += 1;
            let op = if trim {
                IoOp::Trim {
                    offset,
                    len: len as u32,
                    fua: false,
                }
            } else {
                IoOp::Write {
                    offset,
                    data: payload(wid, len).into(),
                    fua: self.rng.chance(80),
                }
            };
            // What the sectors hold once it lands: a trim reads back as zeroes.
            let t = if trim { 0 } else { wid };
            if trim {
                for s in offset / SECTOR..(offset + len) / SECTOR {
                    self.trimmed_at.insert(s, wid);
                }
            }
            let modelled = self.discarded_writer != Some(i);
            self.submit(i, op, t, modelled);
            return true;
        }
        false
    }

    /// Submits a random read on node `i`: what it returns is checked against the
    /// application model (a write acknowledged before it, or one in flight meanwhile).
    pub fn app_read(&mut self, i: usize) -> ReqId {
        let data_bytes = self.n[i].layout.data_bytes;
        // Now and then larger than one packet (a remote read in parts).
        let sectors = if self.rng.chance(50) { 6144 } else { 24 };
        let len = (1 + self.rng.below(sectors)) * SECTOR;
        let offset = self.rng.below((data_bytes - len) / SECTOR) * SECTOR;
        let first = offset / SECTOR;
        let allowed = (first..first + len / SECTOR)
            .map(|s| self.read_allowed(s))
            .collect();
        let later = self.next_wid;
        let op = IoOp::Read {
            offset,
            len: len as u32,
        };
        let id = self.submit(i, op, 0, true);
        if self.outstanding.contains_key(&id) {
            self.reads.insert(id, (first, allowed, later));
        }
        id
    }

    /// What a read of sector `s` submitted now may return: the write acknowledged there last
    /// (or, after crashes, any candidate) and every write in flight over it; writes submitted
    /// after the read are allowed too (by their ids, see `check_read`).
    fn read_allowed(&self, s: u64) -> BTreeSet<u64> {
        let mut set = match self.sectors.get(&s) {
            Some(st) => st
                .exact
                .map_or_else(|| st.cands.clone(), |e| BTreeSet::from([e])),
            None => BTreeSet::from([0]),
        };
        let at = s * SECTOR;
        set.extend(
            self.outstanding
                .values()
                .filter(|o| {
                    o.op.written_range()
                        .is_some_and(|(a, l)| a <= at && at < a + l)
                })
                .map(|o| o.wid),
        );
        set
    }

    fn check_read(&self, i: usize, first: u64, allowed: &[BTreeSet<u64>], later: u64, data: &[u8]) {
        for (k, ok) in allowed.iter().enumerate() {
            let t = tag(data, k as u64);
            let s = first + k as u64;
            let trimmed_since = t == 0 && self.trimmed_at.get(&s).is_some_and(|w| *w >= later);
            if !ok.contains(&t) && t < later && !trimmed_since {
                self.fail(format!(
                    "a read on node {i} returned write {t} at sector {s}; allowed {ok:?} or a \
                     write from {later} on"
                ));
            }
        }
    }

    /// Submits application request `op` on node `i`; `wid` is what its sectors hold once it
    /// lands. Returns its id.
    pub fn submit(&mut self, i: usize, op: IoOp, wid: u64, modelled: bool) -> ReqId {
        if let Some((offset, len)) = op.written_range()
            && modelled
        {
            for s in offset / SECTOR..(offset + len) / SECTOR {
                let st = self.sectors.entry(s).or_insert_with(|| Sector {
                    exact: Some(0),
                    cands: BTreeSet::from([0]),
                    ..Sector::default()
                });
                st.cands.insert(wid);
            }
            if let Some(rec) = &mut self.recorded {
                rec.extend(offset / BM_BLOCK_SIZE..(offset + len).div_ceil(BM_BLOCK_SIZE));
            }
        }
        let id = self.new_req();
        self.wids.insert(id, wid);
        let node = &self.n[i];
        let written = op.written_range().is_some();
        self.outstanding.insert(
            id,
            Outstanding {
                node: i,
                op: op.clone(),
                wid,
                ack_seq: self.ack_seq,
                replicated: written && self.up[i] && node.connected() && node.peer_has_disk(),
                peer_disk_losses: self.peer_disk_losses[i],
                modelled,
                role: node.engine.role(),
                disk: node.engine.disk_state(),
                data_failures: self.data_failures[i],
                meta_failures: self.meta_failures[i],
            },
        );
        self.handle(i, Input::Io { id, op });
        id
    }

    /// A write of `len` bytes at `offset` on node `i`, with a fresh write id as content.
    pub fn write_at(&mut self, i: usize, offset: u64, len: u64, fua: bool) -> ReqId {
        self.fresh_write(i, offset, len, fua, true)
    }

    fn fresh_write(&mut self, i: usize, offset: u64, len: u64, fua: bool, modelled: bool) -> ReqId {
        let wid = self.next_wid;
        self.next_wid += 1;
        let op = IoOp::Write {
            offset,
            data: payload(wid, len).into(),
            fua,
        };
        self.submit(i, op, wid, modelled)
    }

    /// A write outside the single-writer model (two primaries: [`DualModel`] checks it).
    pub fn write_free(&mut self, i: usize, offset: u64, len: u64, fua: bool) -> ReqId {
        self.fresh_write(i, offset, len, fua, false)
    }

    /// Node `i`'s data (what a read would see) holds write `id` in `[offset, offset+len)`.
    pub fn holds(&self, i: usize, offset: u64, len: u64, id: ReqId, durable: bool) -> bool {
        let Some(wid) = self.wid_of(id) else {
            return false;
        };
        let n = &self.n[i];
        let data = if durable { &n.durable } else { &n.visible };
        (offset / SECTOR..(offset + len) / SECTOR).all(|s| tag(data, s) == wid)
    }

    /// Node `i` received the Data packet of request `id`.
    pub fn received(&self, i: usize, id: ReqId) -> bool {
        self.received[i].contains(&id.0)
    }

    /// Request `id` finished successfully.
    pub fn acked(&self, id: ReqId) -> bool {
        matches!(self.results.get(&id), Some(Ok(())))
    }

    fn wid_of(&self, id: ReqId) -> Option<u64> {
        self.wids.get(&id).copied()
    }

    fn new_req(&mut self) -> ReqId {
        let id = ReqId(self.next_req);
        self.next_req += 1;
        id
    }

    /// Node `i` has disk requests in flight that will fail (submitted while faults were on).
    pub fn failing_io_pending(&self, i: usize) -> bool {
        self.n[i].pending.iter().any(|p| p.fail)
    }

    /// Blocks node `i` replicated that the peer has not confirmed with a BarrierAck.
    pub fn unconfirmed(&self, i: usize) -> BTreeSet<u64> {
        let mut s = self.tl_open[i].clone();
        for (_, b) in &self.tl_closed[i] {
            s.extend(b);
        }
        s
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Blocks of the writes outstanding now.
    pub fn outstanding_blocks(&self) -> BTreeSet<u64> {
        let mut s = BTreeSet::new();
        for o in self.outstanding.values() {
            if let Some((a, l)) = o.op.written_range() {
                s.extend(a / BM_BLOCK_SIZE..(a + l).div_ceil(BM_BLOCK_SIZE));
            }
        }
        s
    }

    pub fn admin(&mut self, i: usize, cmd: AdminCmd) {
        let token = self.next_req;
        self.next_req += 1;
        self.admin_cmds.insert(token, (i, cmd));
        if matches!(
            cmd,
            AdminCmd::Primary { .. } | AdminCmd::NewCurrentUuid { .. }
        ) {
            self.n[i].uuid_change_ok = true;
        }
        self.handle(i, Input::Admin { token, cmd });
    }

    /// The result of the last admin command on node `i`, if it finished.
    pub fn last_admin(&self, i: usize) -> Option<&Result<(), AdminError>> {
        self.admin_results
            .iter()
            .rev()
            .find(|r| r.0 == i)
            .map(|r| &r.2)
    }

    // ----- the network -----

    pub fn connect(&mut self) {
        self.reconnect_at = Some(self.now);
    }

    fn link_up(&mut self) {
        self.reconnect_at = None;
        if !(self.n[A].alive && self.n[B].alive) || self.standalone.iter().any(|s| *s) {
            return;
        }
        if self.partition.is_some() || self.up[A] || self.up[B] {
            return;
        }
        self.up = [true, true];
        self.tl_open = [BTreeSet::new(), BTreeSet::new()];
        self.tl_closed = [Vec::new(), Vec::new()];
        for i in [A, B] {
            let protocol = self.protocol;
            self.handle(
                i,
                Input::PeerUp {
                    node: NodeId(1 - i as u8),
                    protocol,
                },
            );
        }
    }

    /// Both sides lose the link; whatever is on the wire is lost. The drivers reconnect.
    pub fn reset(&mut self) {
        self.net = [VecDeque::new(), VecDeque::new()];
        for i in [A, B] {
            if self.up[i] {
                self.up[i] = false;
                self.handle(
                    i,
                    Input::PeerDown {
                        node: NodeId(1 - i as u8),
                        standalone: false,
                    },
                );
            }
        }
        self.reconnect_at = Some(self.now + 300 + self.rng.below(500));
    }

    /// Packets from `from` stop arriving; once pings fail the link is reset.
    pub fn partition_one_way(&mut self, from: usize) {
        let at = self.now + 500 + self.rng.below(1500);
        self.partition = Some((from, at));
    }

    pub fn stall(&mut self, from: usize, ms: u64) {
        self.stall_until[from] = self.now + ms;
    }

    /// A total partition that lasts until `heal`: both see the link go.
    pub fn split(&mut self) {
        self.reset();
        self.partition = Some((2, u64::MAX));
    }

    /// `drbdadm attach` on node `i` after its disk was detached.
    pub fn attach(&mut self, i: usize) {
        self.n[i].now = self.time();
        self.n[i].attach();
        self.pump(i);
    }

    /// `drbdadm connect [--discard-my-data]` on a StandAlone node `i`.
    pub fn reconnect(&mut self, i: usize, discard_my_data: bool) {
        self.admin(
            i,
            AdminCmd::Connect {
                discard_my_data,
                tentative: false,
            },
        );
        self.standalone[i] = false;
        self.reconnect_at = Some(self.now);
    }

    pub fn heal(&mut self) {
        self.partition = None;
        self.stall_until = [0; 2];
        if !self.up[A] && !self.up[B] {
            self.reconnect_at = Some(self.now);
        }
    }

    fn process_drops(&mut self) {
        while let Some((i, standalone)) = self.drops.pop() {
            let j = 1 - i;
            if standalone {
                self.standalone[i] = true;
            }
            // A closing side's last packets still arrive (TCP delivers before the FIN).
            self.net[j].clear();
            let mut flushed = std::mem::take(&mut self.net[i]);
            if self.up[i] {
                self.up[i] = false;
                self.handle(
                    i,
                    Input::PeerDown {
                        node: NodeId(j as u8),
                        standalone,
                    },
                );
            }
            while let Some((_, p)) = flushed.pop_front() {
                if self.up[j] {
                    self.handle(
                        j,
                        Input::PeerPacket {
                            node: NodeId(i as u8),
                            packet: p,
                        },
                    );
                }
            }
            // Unless those packets made the peer drop the link itself, it sees it close.
            if self.up[j] && !self.drops.iter().any(|d| d.0 == j) {
                self.up[j] = false;
                self.handle(
                    j,
                    Input::PeerDown {
                        node: NodeId(i as u8),
                        standalone: false,
                    },
                );
            }
            self.net = [VecDeque::new(), VecDeque::new()];
            if !standalone {
                self.reconnect_at = Some(self.now + 300 + self.rng.below(500));
            }
        }
    }

    // ----- crashes -----

    pub fn crash(&mut self, i: usize) {
        if trace() {
            eprintln!("{} CRASH {i}", self.now);
        }
        let was_primary = self.n[i].engine.role() == Role::Primary;
        self.receive_paused[i] = false;
        // Under protocol C the connected peer has every acknowledged write: nothing is lost.
        let peer_has_all = self.protocol == Protocol::C
            && self.up[i]
            && self.up[1 - i]
            && self.n[i].connected()
            && self.n[1 - i].engine.disk_state() == DiskState::UpToDate
            && self.neg_acked.is_empty();
        let mut rng = Rng(self.rng.next());
        self.n[i].power_loss(&mut rng);
        let lost: Vec<(u64, u64)> = self
            .outstanding
            .values()
            .filter(|o| o.node == i)
            .filter_map(|o| o.op.written_range())
            .collect();
        self.outstanding.retain(|_, o| o.node != i);
        if was_primary && !peer_has_all {
            // Acknowledged but unflushed writes may be gone.
            for st in self.sectors.values_mut() {
                st.exact = None;
            }
        }
        // What was in flight may or may not have landed anywhere.
        for (a, l) in lost {
            for s in a / SECTOR..(a + l) / SECTOR {
                if let Some(st) = self.sectors.get_mut(&s) {
                    st.exact = None;
                }
            }
        }
        if self.up[i] {
            self.up[i] = false;
            let j = 1 - i;
            self.net = [VecDeque::new(), VecDeque::new()];
            if self.up[j] {
                self.up[j] = false;
                self.handle(
                    j,
                    Input::PeerDown {
                        node: NodeId(i as u8),
                        standalone: false,
                    },
                );
            }
        }
    }

    /// 4 KiB blocks of the extents node `i`'s persisted activity log holds hot.
    pub fn al_hot_blocks(&self, i: usize) -> BTreeSet<u64> {
        self.n[i].al_hot_blocks()
    }

    pub fn restart(&mut self, i: usize) {
        if trace() {
            eprintln!("{} RESTART {i}", self.now);
        }
        let seed = self.rng.next();
        let t = self.time();
        self.n[i].restart(seed, t, true);
        self.pump(i);
        self.reconnect_at = Some(self.now + 100);
    }

    // ----- time -----

    /// One event: a disk completion, a packet delivery, a tick or a link change, whichever
    /// is due (a random one among those due); otherwise time advances to the next.
    pub fn step(&mut self) {
        let mut due: Vec<u8> = Vec::new();
        for i in [A, B] {
            if self.n[i].alive && !self.ready_io(i).is_empty() {
                due.push(i as u8);
            }
            let blocked = matches!(self.partition, Some((f, _)) if f == i || f == 2);
            if self.up[i]
                && self.up[1 - i]
                && !blocked
                && self.stall_until[i] <= self.now
                && self.deliverable(i).is_some()
            {
                due.push(2 + i as u8);
            }
        }
        let now = self.time();
        if [A, B]
            .iter()
            .any(|&i| self.n[i].alive && self.n[i].engine.poll_timeout().is_some_and(|t| t <= now))
        {
            due.push(4);
        }
        if let Some((f, at)) = self.partition
            && f < 2
            && at <= self.now
        {
            due.push(5);
        }
        if self.reconnect_at.is_some_and(|t| t <= self.now) {
            due.push(6);
        }
        if due.is_empty() {
            self.now += 1;
            return;
        }
        let ev = due[self.rng.below(due.len() as u64) as usize];
        match ev {
            0 | 1 => {
                let i = ev as usize;
                let ready = self.ready_io(i);
                let k = ready[self.rng.below(ready.len() as u64) as usize];
                let p = self.n[i].pending.swap_remove(k);
                let (id, op) = match p.work {
                    Work::Data { id, op } => (id, op),
                    meta => {
                        self.complete_meta(i, meta, p.fail);
                        self.process_drops();
                        self.check_roles();
                        self.check_no_silent_divergence();
                        return;
                    }
                };
                let result = if p.fail {
                    self.data_failures[i] += 1;
                    Err(libc::EIO)
                } else {
                    match &op {
                        IoOp::Read { offset, len } => {
                            let at = *offset as usize;
                            Ok(Some(bytes::Bytes::copy_from_slice(
                                &self.n[i].visible[at..at + *len as usize],
                            )))
                        }
                        IoOp::Flush => {
                            self.n[i].flush();
                            Ok(None)
                        }
                        op => {
                            self.n[i].write_data(op);
                            if let (Some(d), IoOp::Write { offset, data, .. }) =
                                (&mut self.dual, op)
                            {
                                for (k, s) in (offset / SECTOR..).enumerate() {
                                    let at = k * SECTOR as usize;
                                    if at >= data.len() {
                                        break;
                                    }
                                    let t = u64::from_le_bytes(
                                        data[at..at + 8].try_into().expect("8 bytes"),
                                    );
                                    d.history[i].entry(s).or_default().push(t);
                                }
                            }
                            Ok(None)
                        }
                    }
                };
                self.handle(i, Input::DiskDone { id, result });
            }
            2 | 3 => {
                let i = (ev - 2) as usize;
                let k = self.deliverable(i).expect("a packet");
                let (_, packet) = self.net[i].remove(k).expect("packet");
                if let Packet::Data { block_id, .. } = &packet {
                    self.received[1 - i].insert(*block_id);
                }
                if matches!(packet, Packet::DataRequest { .. }) {
                    self.remote_reads[i] += 1;
                }
                if let Some(d) = &mut self.dual {
                    match &packet {
                        Packet::Superseded(_) => d.superseded += 1,
                        Packet::RetryWrite { .. } => d.retried += 1,
                        _ => {}
                    }
                }
                if let Packet::NegAck(a) = &packet {
                    // The peer failed this write (its disk error): the Primary completes it on
                    // local success and marks it out of sync, as DRBD does.
                    self.neg_acked.insert(a.block_id);
                }
                if let Packet::BarrierAck { epoch, .. } = &packet {
                    // Acknowledges the sender's peer's epoch: drop it from its transfer log.
                    let j = 1 - i;
                    if let Some(k) = self.tl_closed[j].iter().position(|e| e.0 == *epoch) {
                        self.tl_closed[j].drain(..=k);
                    }
                }
                self.handle(
                    1 - i,
                    Input::PeerPacket {
                        node: NodeId(i as u8),
                        packet,
                    },
                );
            }
            4 => {
                let now = self.time();
                for i in [A, B] {
                    if self.n[i].alive && self.n[i].engine.poll_timeout().is_some_and(|t| t <= now)
                    {
                        self.n[i].engine.handle_timeout(now);
                        self.pump(i);
                    }
                }
            }
            5 => {
                self.partition = None;
                self.reset();
            }
            _ => self.link_up(),
        }
        self.process_drops();
        self.check_roles();
        self.check_no_silent_divergence();
    }

    /// The index in sender `i`'s queue of the packet its peer receives next: the first, or,
    /// while the peer has its data stream paused (`max-buffers`), the first control-stream
    /// packet (the two streams are separate connections: acks and pings overtake data).
    fn deliverable(&self, i: usize) -> Option<usize> {
        let q = &self.net[i];
        if !self.receive_paused[1 - i] {
            return q.front().is_some_and(|p| p.0 <= self.now).then_some(0);
        }
        q.iter()
            .take_while(|p| p.0 <= self.now)
            .position(|p| stream_for(p.1.packet_type()) == Stream::Control)
    }

    /// Node `i`'s disk work due now (data work waits while its disk is held).
    fn ready_io(&self, i: usize) -> Vec<usize> {
        let held = self.faults.hold_disk[i];
        let n = &self.n[i];
        (0..n.pending.len())
            .filter(|k| n.pending[*k].at <= self.now)
            .filter(|k| !(held && matches!(n.pending[*k].work, Work::Data { .. })))
            .collect()
    }

    /// Never two Primaries while connected, from the global view: both nodes' roles and both
    /// sides' connection, whatever either has heard of the other (the cluster-wide state
    /// change closes the window in which both could promote).
    fn check_roles(&self) {
        if self.dual.is_some() || self.two_primaries {
            return; // allow-two-primaries
        }
        if self.up[A]
            && self.up[B]
            && self.n[A].connected()
            && self.n[B].connected()
            && self.n[A].engine.role() == Role::Primary
            && self.n[B].engine.role() == Role::Primary
        {
            self.fail("two Primaries while connected");
        }
    }

    /// A node that calls both its own disk and its peer's UpToDate, connected and not
    /// resyncing, has nothing marked out of sync for that peer: blocks it knows to differ
    /// while both claim to be current would be divergence nobody sees. The one exception is
    /// what an online verify reported (DRBD leaves the repair to the operator).
    fn check_no_silent_divergence(&self) {
        for i in [A, B] {
            let n = &self.n[i];
            if !n.alive || self.verify_found[i] {
                continue;
            }
            let p = n.status_peer();
            if p.conn == ConnState::Connected
                && p.repl == ReplState::Established
                && n.engine.disk_state() == DiskState::UpToDate
                && p.disk == DiskState::UpToDate
                && p.out_of_sync_bytes > 0
            {
                self.fail(format!(
                    "node {i} says UpToDate/UpToDate with {} bytes out of sync",
                    p.out_of_sync_bytes
                ));
            }
        }
    }

    /// Runs until `done` holds, for at most `max_ms` of virtual time.
    pub fn run_until(&mut self, max_ms: u64, what: &str, done: impl Fn(&World) -> bool) {
        let end = self.now + max_ms;
        while !done(self) {
            if self.now > end {
                self.fail(format!("timed out waiting for {what}"));
            }
            self.step();
        }
    }

    /// Runs until `done` holds or `max_ms` passed; returns whether it holds.
    pub fn run_until_or(&mut self, max_ms: u64, done: impl Fn(&World) -> bool) -> bool {
        let end = self.now + max_ms;
        while !done(self) {
            if self.now > end {
                return false;
            }
            self.step();
        }
        true
    }

    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.step();
        }
    }

    /// Both connected, no resync, both UpToDate, nothing in flight.
    pub fn in_sync(&self) -> bool {
        [A, B].iter().all(|&i| {
            let n = &self.n[i];
            let p = n.status_peer();
            n.alive
                && p.conn == ConnState::Connected
                && p.repl == ReplState::Established
                && n.engine.disk_state() == DiskState::UpToDate
                && p.disk == DiskState::UpToDate
                && n.pending.is_empty()
                && self.net[i].is_empty()
        }) && self.outstanding.is_empty()
    }

    /// The end-of-run checks on two converged nodes.
    pub fn check_converged(&self) {
        let (a, b) = (&self.n[A], &self.n[B]);
        if let Some(off) = (0..a.visible.len()).find(|&k| a.visible[k] != b.visible[k]) {
            let s = off as u64 / SECTOR;
            self.fail(format!(
                "data differs at byte {off} (sector {s}: A has write {}, B has {})",
                tag(&a.visible, s),
                tag(&b.visible, s)
            ));
        }
        for i in [A, B] {
            let bits = self.n[i].oos_bits();
            if bits != 0 {
                self.fail(format!("node {i}: {bits} bits still out of sync"));
            }
        }
        if a.uuid() != b.uuid() {
            self.fail(format!(
                "current UUIDs differ: {:?} {:?}",
                a.uuid(),
                b.uuid()
            ));
        }
        self.check_data_model(A);
        self.check_dual_model();
    }

    /// Two primaries, both converged: every acknowledged write is still what its sectors
    /// hold, or a write that came after it in the order both nodes applied.
    pub fn check_dual_model(&self) {
        let Some(d) = &self.dual else {
            return;
        };
        for &(i, wid, offset, len) in &d.acked {
            for s in offset / SECTOR..(offset + len) / SECTOR {
                let f = tag(&self.n[A].visible, s);
                if f == wid {
                    continue;
                }
                if d.last_at(i, s, wid).is_none() {
                    self.fail(format!(
                        "write {wid} acknowledged on node {i} but never written there (sector {s})"
                    ));
                }
                for k in [A, B] {
                    let (Some(w), f_at) = (d.last_at(k, s, wid), d.last_at(k, s, f)) else {
                        continue;
                    };
                    if f_at.is_none_or(|fa| fa < w) {
                        self.fail(format!(
                            "sector {s} ends with write {f}, which node {k} applied before \
                             write {wid} (acknowledged on node {i}): the nodes disagree on the \
                             order (history {:?} / {:?})",
                            d.history[A].get(&s),
                            d.history[B].get(&s)
                        ));
                    }
                }
            }
        }
    }

    /// Every sector holds what the application model allows.
    pub fn check_data_model(&self, i: usize) {
        let d = &self.n[i].visible;
        for (s, st) in &self.sectors {
            let t = tag(d, *s);
            let ok = match st.exact {
                Some(e) => t == e || self.outstanding.values().any(|o| o.wid == t),
                None => st.cands.contains(&t),
            };
            if !ok {
                self.fail(format!(
                    "node {i} sector {s} holds write {t}; acknowledged {:?}, allowed {:?}",
                    st.exact, st.cands
                ));
            }
        }
    }
}
