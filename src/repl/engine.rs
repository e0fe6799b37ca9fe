//! The replication engine: one resource's state machine, sans I/O.
//!
//! Inputs go in ([`Engine::handle`], [`Engine::open`], [`Engine::close`]), actions come out
//! ([`Engine::poll_action`]); the driver executes the actions in order and feeds their results back
//! as inputs. The engine never reads a clock, never does I/O and never spawns: that is what lets
//! the simulator drive it deterministically.
//!
//! What it guarantees (and the tests pin):
//! - **Persist before you acknowledge.** A promotion, a demotion or a new current UUID is
//!   acknowledged only after the superblock that records it is written ([`Input::MetaWritten`]);
//!   application writes that need it (the first write after a promotion generates the new
//!   current UUID) are held until then. A write into a cold activity-log extent is held until the
//!   AL transaction that makes the extent hot is on disk, and before any AL transaction (which may
//!   evict an extent) the dirty bitmap pages are written, so a crash never loses the record of a
//!   block that differs from a peer.
//! - **One metadata write of each kind in flight.** Superblock writes, AL transactions and bitmap
//!   flushes are serialised here, so a driver that executes actions from several threads can never
//!   write an older superblock over a newer one.
//! - While a configured peer is not connected, or its disk is not UpToDate, every write marks its
//!   4 KiB blocks in that peer's bitmap, so the later resync copies only what changed; a status
//!   never shows `peer-disk:UpToDate` with bits set (the simulator asserts it).
//! - **One home for a request.** Every application, peer, resync and verify request lives in
//!   one table (`requests.rs`) with an explicit state, indexed by sector range for overlap
//!   checks; overlapping writes are committed in one order, which both nodes follow.
//! - **One path for a state change.** Role, disk, peer-disk, connection and replication states
//!   change only through `states.rs`, checked against DRBD's rules (`super::state_rules`).
//! - **Time is an input.** Every input carries `now`; [`Engine::poll_timeout`] says when the
//!   next timer is due and the driver calls [`Engine::handle_timeout`] then.

use super::state::{ConnState, DiskState, ReplState, Role};
use super::uuid::UuidGen;
use crate::bitmap::Bitmap;
use crate::meta::superblock::Superblock;
use crate::types::{BM_BLOCK_SIZE, GenUuid, NodeId, ReqId};
use std::collections::{BTreeMap, VecDeque};

mod admin;
mod api;
mod conflicts;
mod connection;
mod disconnect;
mod disk;
mod diskless;
mod fencing;
mod grow;
mod io;
mod meta;
mod peer;
mod peer_ack;
mod quorum;
mod remote_read;
mod replicate;
mod requests;
mod resync;
mod states;
pub use states::suspended_str;
mod tentative;
mod twopc;
mod verify;
mod weak;

pub use api::{
    Action, AdminCmd, AdminError, Attached, EngineConfig, Input, IoError, IoOp, MetaArea,
    MetaError, OpenRefusal, PeerInfo, PeerStatus, QuorumSettings, ResyncProgress, Settings, Stats,
    Status,
};
use disk::{Disk, rotate_current};
use meta::{MetaWaiter, QueuedAl};
use peer::Peer;
use requests::{Event, Origin, Requests, State};
use states::{Change, NodeStates};

/// The `flush_waiters` token of a detach no admin command asked for (a local I/O error).
const FAILURE_DETACH: u64 = u64::MAX;

/// The engine of one resource.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    /// This node's role, disk and suspension states (changed only through `states`).
    st: NodeStates,
    disk: Option<Disk>,
    open_count: u32,
    /// Promoted by `drbdadm primary` rather than by an opener: DRBD 9's `EXPLICIT_PRIMARY`,
    /// which keeps the last opener's close from auto-demoting.
    explicit_primary: bool,
    /// `secondary --force` is under way: the demotion is allowed while the device is open
    /// (the openers' later requests fail, as DRBD's do).
    force_demote: bool,
    /// A write must generate a new current UUID first (set by promotion while no peer is
    /// connected, as DRBD 9 does, so a promotion that never wrote cannot cause split brain).
    new_uuid_due: bool,
    uuids: UuidGen,
    /// Superblock generations: `sb_gen` counts changes, `meta_persisted` is the last on disk,
    /// `meta_inflight` the one being written.
    sb_gen: u64,
    meta_persisted: u64,
    meta_inflight: Option<u64>,
    meta_failed: bool,
    meta_waiters: Vec<MetaWaiter>,
    /// AL transactions: `al_next_seq` numbers them, `al_persisted` is the last on disk.
    al_next_seq: u64,
    al_persisted: u64,
    /// The last AL transaction whose eviction the data device was flushed for.
    al_data_flushed: u64,
    al_queue: VecDeque<QueuedAl>,
    /// Some(seq) while a bitmap flush for AL transaction `seq` or its write is in flight.
    al_inflight: Option<AlStep>,
    /// Admin commands waiting for the AL and bitmap to be quiet (detach).
    flush_waiters: Vec<(u64, u64)>,
    /// Every request, with its state (see `requests`).
    reqs: Requests,
    stats: Stats,
    actions: VecDeque<Action>,
    /// Every configured peer: its states, handshake, resync, verify and session.
    peers: BTreeMap<NodeId, Peer>,
    /// Packets to send once a superblock generation is on disk: (generation, peer) for the
    /// end of a resync on the target.
    after_meta: Vec<(u64, NodeId)>,
    /// The time of the last input (every input and timeout brings it).
    now: crate::types::Time,
    /// When application I/O (or a replicated write) last arrived: the resync's `c-min-rate`
    /// throttle.
    last_app_io: Option<crate::types::Time>,
    /// What peers were last told of role and disk state.
    told: (Role, DiskState),
    next_internal: u64,
    /// fence-peer calls in flight, the I/O freeze of resource-and-stonith (see `fencing`).
    fence: fencing::FenceState,
    /// Promotions that wait for a handshake to decide or a cluster-wide change to end.
    deferred: Vec<twopc::Proposal>,
    /// The cluster-wide state change this node started, and the one it agreed to.
    twopc: Option<twopc::TwoPc>,
    prepared: Option<twopc::Prepared>,
    next_tid: u32,
    /// Peer writes whose wait for a concurrent local write was logged (two primaries).
    concurrent_logged: std::collections::BTreeSet<ReqId>,
    /// A `drbdadm resize` (here, or a peer's) waiting for [`Input::DiskGrew`].
    grow: Option<grow::GrowOp>,
    /// Application requests in flight that fail when they finish (see
    /// `io::fail_app_requests`).
    doomed: std::collections::BTreeSet<ReqId>,
    /// The UUIDs a Primary's latest rotation replaced, until a write under the new
    /// generation is acknowledged (see `tentative`).
    tentative: Option<tentative::Tentative>,
    /// Without a disk: the generation of the data this node serves (see `diskless`).
    exposed: diskless::Exposed,
    /// The current UUID the diskless peers were last told (see `diskless`).
    current_told_to_diskless: GenUuid,
    /// The weak mask this Primary last announced (None: not yet in this generation or
    /// role; see `weak`).
    announced_weak: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AlStep {
    /// Writing dirty bitmap pages before AL transaction `seq`, or for a plain flush (`seq` 0).
    Bitmap { seq: u64 },
    /// Writing AL transaction `seq`.
    Transaction { seq: u64 },
    /// Flushing the data device (internal request `id`) before transaction `seq` evicts an
    /// extent: the writes into it completed, but with external metadata nothing has made them
    /// durable yet, and once the AL forgets the extent a crash would not resync them.
    DataFlush { seq: u64, id: ReqId },
}

impl Engine {
    /// A resource without a disk yet (`Diskless`, Secondary).
    pub fn new(cfg: EngineConfig) -> Engine {
        let uuids = UuidGen::new(cfg.uuid_seed);
        let peers = cfg
            .peers
            .iter()
            .map(|p| (p.node_id, Peer::new(p.clone())))
            .collect();
        // The node id in the top bits: two nodes' transaction ids never collide in logs.
        let next_tid = u32::from(cfg.node_id.0) << 24;
        let enforced = cfg.quorum.quorum != crate::config::Quorum::Off;
        Engine {
            cfg,
            st: NodeStates::new(enforced),
            disk: None,
            open_count: 0,
            explicit_primary: false,
            force_demote: false,
            new_uuid_due: false,
            uuids,
            sb_gen: 0,
            meta_persisted: 0,
            meta_inflight: None,
            meta_failed: false,
            meta_waiters: Vec::new(),
            al_next_seq: 1,
            al_persisted: 0,
            al_data_flushed: 0,
            al_queue: VecDeque::new(),
            al_inflight: None,
            flush_waiters: Vec::new(),
            reqs: Requests::default(),
            stats: Stats::default(),
            actions: VecDeque::new(),
            peers,
            after_meta: Vec::new(),
            now: crate::types::Time(0),
            last_app_io: None,
            told: (Role::Secondary, DiskState::Diskless),
            next_internal: 0,
            fence: fencing::FenceState::default(),
            deferred: Vec::new(),
            twopc: None,
            prepared: None,
            next_tid,
            concurrent_logged: std::collections::BTreeSet::new(),
            grow: None,
            doomed: std::collections::BTreeSet::new(),
            tentative: None,
            exposed: diskless::Exposed::default(),
            current_told_to_diskless: GenUuid::ZERO,
            announced_weak: None,
        }
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.st.role()
    }

    /// The local disk state.
    pub fn disk_state(&self) -> DiskState {
        self.st.disk()
    }

    /// Clients holding the device open.
    pub fn open_count(&self) -> u32 {
        self.open_count
    }

    /// True when nothing is in flight or queued: no application request, no metadata write.
    pub fn is_quiet(&self) -> bool {
        self.reqs.is_empty()
            && self.meta_inflight.is_none()
            && self.al_inflight.is_none()
            && self.al_queue.is_empty()
    }

    /// One line per request in the table, and the metadata pipeline: for a simulator's or a
    /// test's failure message.
    pub fn debug_requests(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .reqs
            .iter()
            .map(|r| {
                format!(
                    "{:?} seq {} {:?} {:?} range {:?} owed {:?}",
                    r.id,
                    r.seq,
                    r.origin,
                    r.state,
                    r.op.written_range(),
                    r.owed
                )
            })
            .collect();
        out.push(format!(
            "meta persisted {} of {}, al persisted {} next {}, al step {:?}, queue {:?}",
            self.meta_persisted,
            self.sb_gen,
            self.al_persisted,
            self.al_next_seq,
            self.al_inflight,
            self.al_queue
                .iter()
                .map(|q| (q.seq, q.evicts))
                .collect::<Vec<_>>()
        ));
        for (n, p) in &self.peers {
            if let Some(s) = &p.session {
                out.push(format!(
                    "peer {n}: epoch {} tl {:?} rx_epoch {} rx_pending {:?} rx_barriers {:?}",
                    s.epoch, s.tl, s.rx_epoch, s.rx_pending, s.rx_barriers
                ));
            }
        }
        out
    }

    /// The out-of-sync bitmap this node keeps for peer `node` (None while diskless or for an
    /// unknown peer). For status details and the simulator's invariants.
    pub fn peer_bitmap(&self, node: NodeId) -> Option<&Bitmap> {
        self.disk.as_ref()?.bitmap(node)
    }

    /// The in-memory superblock (None while diskless): what the next metadata write persists.
    pub fn superblock(&self) -> Option<&Superblock> {
        self.disk.as_ref().map(|d| &d.sb)
    }

    /// Usable size in bytes (0 while diskless).
    pub fn size_bytes(&self) -> u64 {
        // Without a disk: the size of the data the peers hold (see `diskless`).
        self.disk
            .as_ref()
            .map_or(self.exposed.bytes, |d| d.data_bytes)
    }

    /// The configuration of peer `node`.
    fn peer_info(&self, node: NodeId) -> Option<&PeerInfo> {
        self.peers.get(&node).map(|p| &p.info)
    }

    /// The name of peer `node` (its connection's name in logs).
    fn peer_name(&self, node: NodeId) -> String {
        self.peers
            .get(&node)
            .map_or_else(|| format!("node-id {node}"), |p| p.info.name.clone())
    }

    /// A line about the connection to `node`, prefixed as DRBD prefixes connection messages.
    fn peer_log(&mut self, node: NodeId, msg: impl std::fmt::Display) {
        let line = format!("{} {}: {msg}", self.cfg.resource, self.peer_name(node));
        self.actions.push_back(Action::Log(line));
    }

    /// A status snapshot.
    pub fn status(&self) -> Status {
        let peers = self
            .cfg
            .peers
            .iter()
            .map(|p| {
                let oos = self
                    .peer_bitmap(p.node_id)
                    .map_or(0, |b| b.count() * BM_BLOCK_SIZE);
                let c = self.peers.get(&p.node_id);
                let resync = c.and_then(|c| c.rs.as_ref()).map(|rs| ResyncProgress {
                    total_bytes: rs.total_bytes.max(oos),
                    left_bytes: if rs.source {
                        rs.total_bytes.saturating_sub(rs.done_bytes)
                    } else {
                        oos
                    },
                    failed_bytes: rs.failed_bytes,
                    rate_bytes_per_sec: rs.rate(),
                });
                // An online verify shows its progress the same way (`done:`).
                let verify = c.and_then(|c| c.ov.as_ref()).map(|v| ResyncProgress {
                    total_bytes: v.total_bytes,
                    left_bytes: v.total_bytes.saturating_sub(v.done_bytes),
                    failed_bytes: 0,
                    rate_bytes_per_sec: v.rate(),
                });
                let resync = resync.or(verify);
                PeerStatus {
                    name: p.name.clone(),
                    node_id: p.node_id,
                    conn: c.map_or(ConnState::StandAlone, |c| c.st.conn()),
                    role: c.map_or(Role::Unknown, |c| c.st.role()),
                    repl: c.map_or(ReplState::Off, |c| c.shown_repl()),
                    disk: c.map_or(DiskState::DUnknown, |c| c.st.disk()),
                    out_of_sync_bytes: oos,
                    resync,
                    user_paused: c.is_some_and(|c| c.user_paused),
                    peer_paused: c.is_some_and(|c| c.peer_paused),
                    received_kib: c.map_or(0, |c| c.received / 1024),
                    sent_kib: c.map_or(0, |c| c.sent / 1024),
                    pending: self.reqs.iter().filter(|r| r.awaits(p.node_id)).count() as u64,
                    unacked: self
                        .reqs
                        .iter()
                        .filter(|r| r.origin.serves(p.node_id))
                        .count() as u64,
                    ap_in_flight_bytes: self.reqs.app_bytes_awaiting(p.node_id),
                    rs_in_flight_bytes: c
                        .and_then(|c| c.rs.as_ref())
                        .map_or(0, |rs| rs.in_flight_bytes()),
                }
            })
            .collect();
        Status {
            resource: self.cfg.resource.clone(),
            node_id: self.cfg.node_id,
            role: self.st.role(),
            disk: self.st.disk(),
            open_count: self.open_count,
            size_bytes: self.size_bytes(),
            current_uuid: self
                .disk
                .as_ref()
                .map_or(GenUuid::ZERO, |d| d.sb.current_uuid),
            md_flags: self.disk.as_ref().map_or(0, |d| d.sb.flags),
            peers,
            stats: Stats {
                upper_pending: self.reqs.app_count(),
                lower_pending: self.reqs.submitted(),
                ..self.stats
            },
            suspended_fencing: self.st.susp_fen(),
            suspended_user: self.st.susp_user(),
            suspended_quorum: self.st.susp_quorum(),
            quorum: self.st.quorum(),
            io_blocked: self.st.io_frozen()
                || !self
                    .reqs
                    .in_state(|s| matches!(s, State::Frozen | State::Suspended))
                    .is_empty(),
        }
    }

    /// An NBD client wants to open the device ([`Input::Open`]).
    fn open(&mut self, token: u64) {
        if self.st.role() == Role::Primary {
            self.open_count += 1;
            self.actions.push_back(Action::Opened {
                token,
                result: Ok(()),
            });
        } else if !self.cfg.auto_promote {
            self.actions.push_back(Action::Opened {
                token,
                result: Err(OpenRefusal::Secondary),
            });
        } else {
            let deadline = self.now.plus_ms(self.cfg.auto_promote_timeout_ms);
            self.promote(twopc::Promotion {
                purpose: twopc::Purpose::Open { token },
                force: false,
                deadline: Some(deadline),
            });
        }
    }

    /// A client that opened the device went away. The last one leaving auto-demotes a
    /// resource that an opener promoted (not one promoted with `drbdadm primary`).
    pub fn close(&mut self, now: crate::types::Time) {
        self.advance(now);
        self.open_count = self.open_count.saturating_sub(1);
        if self.open_count == 0
            && self.cfg.auto_promote
            && self.st.role() == Role::Primary
            && !self.explicit_primary
        {
            // Nobody holds it open any more: the demotion cannot be refused for openers.
            let _ = self.demote("auto-demote");
        }
        self.maybe_broadcast();
    }

    /// Feeds one input, at time `now` (monotonic; an earlier time than one seen before is
    /// taken as the later one).
    pub fn handle(&mut self, now: crate::types::Time, input: Input) {
        self.advance(now);
        match input {
            Input::Attach(a) => self.attach(*a),
            Input::Admin { token, cmd } => self.admin(token, cmd),
            Input::Open { token } => self.open(token),
            Input::Io { id, op } => self.io(id, op, false),
            Input::DeviceIo { id, op } => self.io(id, op, true),
            Input::DiskDone { id, result } => self.disk_done(id, result),
            Input::MetaWritten { generation, result } => self.meta_written(generation, result),
            Input::AlWritten { seq, result } => self.al_written(seq, result),
            Input::BitmapWritten { result } => self.bitmap_written(result),
            Input::PeerConnecting { node } => self.peer_connecting(node),
            Input::PeerUp { node, protocol } => self.handshake_start(node, protocol),
            Input::PeerDown { node, standalone } => self.link_lost(node, standalone),
            Input::PeerPacket { node, packet } => self.peer_packet(node, packet),
            Input::HandlerDone {
                handler,
                node,
                exit,
            } => self.handler_done(handler, node, exit),
            Input::Reconfigure(s) => self.reconfigure(*s),
            Input::DiskGrew { result } => self.disk_grew(result),
        }
        self.after_input();
    }

    /// What every input and timeout ends with: work that waited for a handshake to decide,
    /// and the peers told of a new role or disk state.
    fn after_input(&mut self) {
        self.serve_deferred_resync();
        self.resync_elsewhere();
        self.resume_suspended();
        self.retry_deferred();
        self.maybe_broadcast();
        self.throttle_receive();
    }

    /// Tells the peers when the role or disk state changed since they last heard.
    fn maybe_broadcast(&mut self) {
        let now = (self.st.role(), self.st.disk());
        if now != self.told {
            self.told = now;
            self.broadcast_state();
        }
    }

    fn advance(&mut self, now: crate::types::Time) {
        self.now = self.now.max(now);
    }

    /// The earliest time at which [`Engine::handle_timeout`] has work: a resync or verify
    /// controller step, a ko-count deadline, a handshake that must have decided. None while
    /// nothing waits for time.
    pub fn poll_timeout(&self) -> Option<crate::types::Time> {
        [
            self.resync_deadline(),
            self.verify_deadline(),
            self.ko_deadline(),
            self.handshake_deadline(),
            self.twopc_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs whatever is due at `now` (see [`Engine::poll_timeout`]); harmless when nothing is.
    pub fn handle_timeout(&mut self, now: crate::types::Time) {
        self.advance(now);
        self.resync_steps();
        self.verify_steps();
        self.check_ko_count();
        self.check_handshake_timeout();
        self.check_twopc_timeout();
        self.after_input();
    }

    fn log(&mut self, msg: String) {
        let line = format!("{}: {msg}", self.cfg.resource);
        self.actions.push_back(Action::Log(line));
    }
}
