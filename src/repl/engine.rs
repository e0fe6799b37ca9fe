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
//! - While a configured peer is not connected (in this build: always), every write marks its
//!   4 KiB blocks in that peer's bitmap, so the later resync copies only what changed.

use super::state::{ConnState, DiskState, ReplState, Role, StateError};
use super::uuid::UuidGen;
use crate::bitmap::Bitmap;
use crate::meta::al::{ActivityLog, AlRecovery, Transaction};
use crate::meta::layout::BM_WORDS_PER_PAGE;
use crate::meta::superblock::{Superblock, flags};
use crate::types::{AL_EXTENT_SIZE, BM_BLOCK_SIZE, ExtentNr, GenUuid, NodeId, ReqId, Sector};
use std::collections::{BTreeMap, HashMap, VecDeque};

mod connection;
mod fencing;
mod replicate;
mod resync;
mod verify;

/// What the engine is told about its resource when it is created.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub resource: String,
    pub node_id: NodeId,
    pub peers: Vec<PeerInfo>,
    /// DRBD 9's `auto-promote`: an NBD client's GO promotes a Secondary.
    pub auto_promote: bool,
    /// Seed for new generation UUIDs (the driver draws it from the OS).
    pub uuid_seed: u64,
}

/// A configured peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub name: String,
    pub node_id: NodeId,
    /// `ko-count` x `timeout`, in ms: a request the peer leaves unanswered this long gets the
    /// link dropped ([`Action::DropLink`]). `None` when `ko-count` is 0.
    pub ko_deadline_ms: Option<u64>,
    /// The resync controller settings (`resync-rate`, `c-plan-ahead`, ...).
    pub sync: crate::config::PeerDeviceOptions,
    /// The after-split-brain policies and rr-conflict (`net { }`).
    pub sb_policy: crate::repl::handshake::SbPolicy,
    /// `verify-alg` and `csums-alg` (`net { }`); both nodes must agree.
    pub verify_alg: Option<crate::repl::digest::DigestAlg>,
    pub csums_alg: Option<crate::repl::digest::DigestAlg>,
    /// `data-integrity-alg`: every replicated write carries its digest, checked on arrival.
    pub integrity_alg: Option<crate::repl::digest::DigestAlg>,
    /// `fencing` toward this peer (`net { }`): see `engine::fencing`.
    pub fencing: crate::config::Fencing,
}

impl PeerInfo {
    /// A peer with DRBD's default resync settings and ko-count.
    pub fn new(name: impl Into<String>, node_id: NodeId) -> PeerInfo {
        PeerInfo {
            name: name.into(),
            node_id,
            ko_deadline_ms: Some(42_000),
            sync: crate::config::PeerDeviceOptions::default(),
            sb_policy: crate::repl::handshake::SbPolicy::default(),
            verify_alg: None,
            csums_alg: None,
            integrity_alg: None,
            fencing: crate::config::Fencing::DontCare,
        }
    }
}

/// The metadata read at attach time.
#[derive(Clone, Debug)]
pub struct Attached {
    pub sb: Superblock,
    /// Usable data bytes.
    pub data_bytes: u64,
    /// One bitmap per bitmap index (`0..max-peers`), as read.
    pub bitmaps: Vec<Bitmap>,
    /// The activity-log replay; `None` when the log could not be read (treated as empty).
    pub al: Option<AlRecovery>,
    /// AL ring size in 4 KiB blocks.
    pub al_blocks: u32,
    /// `on-io-error` of the disk (`disk { }`).
    pub on_io_error: crate::config::OnIoError,
    /// The metadata is on another device (`meta-disk /dev/x`): flushing it does not flush
    /// the data, so an AL eviction flushes the data device first.
    pub meta_external: bool,
    /// `disk { disk-flushes }`: a peer's barrier flushes this disk before it is acknowledged.
    /// `no` (only with a battery-backed write cache, as with DRBD) drains the epoch's writes
    /// and acknowledges without a flush.
    pub disk_flushes: bool,
}

/// An application request, in bytes. The driver has validated ranges against the size.
pub use crate::types::BlockOp as IoOp;

/// Why an application request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// The resource is not Primary (nobody may write to a Secondary).
    #[error("resource is not Primary")]
    NotPrimary,
    /// No usable local disk and no peer to serve the request.
    #[error("no UpToDate data reachable")]
    NoData,
    /// The backing device failed with this errno.
    #[error("backing device error (errno {0})")]
    Disk(i32),
    /// The metadata write this request waited for failed.
    #[error("metadata write failed")]
    Meta,
}

/// An administrative state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminCmd {
    Primary {
        force: bool,
    },
    Secondary,
    NewCurrentUuid {
        clear_bitmap: bool,
    },
    /// Flush everything and mark the metadata clean; the driver detaches after success.
    Detach,
    /// `drbdadm invalidate`: this node's disk becomes Inconsistent and is fully resynced from
    /// the connected peer.
    /// `reset_bitmap: false` (`--reset-bitmap=no`): only the blocks marked out of sync.
    Invalidate {
        reset_bitmap: bool,
    },
    /// `drbdadm invalidate-remote`: the connected peer's disk is fully resynced from here
    /// (`reset_bitmap: false`: only the marked blocks).
    InvalidateRemote {
        reset_bitmap: bool,
    },
    /// `drbdadm pause-sync`: stop requesting or serving resync blocks (`user_isp`).
    PauseSync,
    /// `drbdadm resume-sync`.
    ResumeSync,
    /// `drbdadm verify [--start S] [--stop S]`: online verify of `[start, stop)` (sectors;
    /// `None`: to the end) against the connected peer, with its `verify-alg`.
    Verify {
        start: Sector,
        stop: Option<Sector>,
    },
    /// `drbdadm connect [--discard-my-data]`: the driver (re)starts the links once this
    /// succeeded. `discard_my_data` makes this node the victim of the next split brain.
    Connect {
        discard_my_data: bool,
    },
    /// `drbdadm outdate`: mark this node's (consistent, disconnected) data Outdated, persisted.
    Outdate,
    /// `drbdadm resume-io`: lift the freeze of `fencing resource-and-stonith` (after a
    /// fence-peer handler that failed).
    ResumeIo,
}

/// Why an administrative command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("State change failed: {0}")]
    State(#[from] StateError),
    #[error("Failure: (119) {0}")]
    Meta(String),
    /// DRBD's `ERR_DISCARD_IMPOSSIBLE`.
    #[error("Failure: (123) --discard-my-data not allowed when primary.")]
    DiscardMyDataPrimary,
}

impl AdminError {
    /// drbdsetup's exit code: a state change refusal has its own; a `Failure: (N)` is 10.
    pub fn exit_code(&self) -> i32 {
        match self {
            AdminError::State(s) => s.exit_code(),
            AdminError::Meta(_) | AdminError::DiscardMyDataPrimary => 10,
        }
    }
}

/// Results the driver feeds back.
#[derive(Clone, Debug)]
pub enum Input {
    Attach(Box<Attached>),
    Admin {
        token: u64,
        cmd: AdminCmd,
    },
    Io {
        id: ReqId,
        op: IoOp,
    },
    DiskDone {
        id: ReqId,
        result: Result<Option<bytes::Bytes>, i32>,
    },
    MetaWritten {
        generation: u64,
        result: Result<(), String>,
    },
    AlWritten {
        seq: u64,
        result: Result<(), String>,
    },
    BitmapWritten {
        result: Result<(), String>,
    },
    /// The driver is trying to reach `node` (`connection:Connecting`).
    PeerConnecting {
        node: NodeId,
    },
    /// The link to `node` is established (authenticated): the engine starts the handshake
    /// (sizes, UUIDs, state), decides the sync direction and replicates from then on.
    PeerUp {
        node: NodeId,
        protocol: crate::config::Protocol,
    },
    /// The link to `node` is gone. `standalone`: the driver will not reconnect (disconnect,
    /// authentication failure, a refused handshake); otherwise it keeps trying (`Connecting`).
    PeerDown {
        node: NodeId,
        standalone: bool,
    },
    /// A packet from `node`.
    PeerPacket {
        node: NodeId,
        packet: crate::repl::wire::Packet,
    },
    /// A handler the engine asked for ([`Action::RunHandler`]) finished. `exit`: its exit code,
    /// or None when it did not exit by itself (killed at the deadline, died of a signal, could
    /// not be started). A handler missing from the config "exits" 0, as drbdadm's does.
    HandlerDone {
        handler: crate::repl::handler::Handler,
        node: Option<NodeId>,
        exit: Option<i32>,
    },
}

/// Work for the driver, to be executed in the order polled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Submit to the backing device; answer with [`Input::DiskDone`] for `id`.
    SubmitDisk { id: ReqId, op: IoOp },
    /// Persist the superblock; answer with [`Input::MetaWritten`] for `generation`.
    WriteMeta {
        generation: u64,
        sb: Box<Superblock>,
    },
    /// Write this AL transaction at block `block` of the ring; answer [`Input::AlWritten`].
    WriteAl {
        seq: u64,
        block: u32,
        tr: Box<Transaction>,
    },
    /// Write these bitmap pages `(bitmap index, page, words)`; answer [`Input::BitmapWritten`].
    WriteBitmap { pages: Vec<(u32, u32, Vec<u64>)> },
    /// Reply to the application request `id`; `Some(data)` for reads.
    Complete {
        id: ReqId,
        result: Result<Option<bytes::Bytes>, IoError>,
    },
    /// Reply to the administrative request `token`.
    AdminDone {
        token: u64,
        result: Result<(), AdminError>,
    },
    /// A state change, in DRBD's log wording (`role( Secondary -> Primary )`).
    Log(String),
    /// Send `packet` to `node` (in order per node).
    Send {
        node: NodeId,
        packet: crate::repl::wire::Packet,
    },
    /// The disk was detached because of an I/O error (`on-io-error detach`): close it and
    /// its metadata. `drbdadm attach` brings it back.
    ReleaseDisk,
    /// Close the link to `node` (the handshake refused it, or ko-count expired), then report
    /// [`Input::PeerDown`]. `standalone`: do not reconnect (split brain, unrelated data, a
    /// too-small peer), as DRBD goes StandAlone; otherwise keep trying.
    DropLink { node: NodeId, standalone: bool },
    /// Run the user's handler (`handlers { }`), if configured, concerning `node`.
    RunHandler {
        handler: crate::repl::handler::Handler,
        node: Option<NodeId>,
    },
}

/// The `flush_waiters` token of a detach no admin command asked for (a local I/O error).
const FAILURE_DETACH: u64 = u64::MAX;

/// A snapshot for status and events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub resource: String,
    pub node_id: NodeId,
    pub role: Role,
    pub disk: DiskState,
    /// Clients holding the device open (NBD GO).
    pub open_count: u32,
    pub size_bytes: u64,
    pub current_uuid: GenUuid,
    pub md_flags: u32,
    pub peers: Vec<PeerStatus>,
    pub stats: Stats,
    /// I/O frozen by `fencing resource-and-stonith` (DRBD's `suspended:fencing`).
    pub suspended_fencing: bool,
}

/// One peer as the status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub name: String,
    pub node_id: NodeId,
    pub conn: ConnState,
    pub role: Role,
    pub repl: ReplState,
    pub disk: DiskState,
    /// Bytes marked out of sync with this peer.
    pub out_of_sync_bytes: u64,
    /// While a resync (or a paused one) runs with this peer.
    pub resync: Option<ResyncProgress>,
    /// Resync paused by `pause-sync` here (`user_isp`) or on the peer (`peer_isp`).
    pub user_paused: bool,
    pub peer_paused: bool,
    /// KiB of replication and resync data received from / sent to the peer.
    pub received_kib: u64,
    pub sent_kib: u64,
    /// Requests sent to the peer and not yet answered.
    pub pending: u64,
    /// Requests the peer sent (writes, resync and verify requests) not yet answered here
    /// (DRBD's `unacked:`).
    pub unacked: u64,
}

/// Resync progress toward one peer, in DRBD's terms (`done:`, `dbdt1`, `eta`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResyncProgress {
    /// Bytes that were out of sync when the resync started, plus those added since.
    pub total_bytes: u64,
    /// Bytes still out of sync.
    pub left_bytes: u64,
    /// Bytes that could not be resynced (the source failed to read them).
    pub failed_bytes: u64,
    /// Bytes moved in the last second (DRBD's `dbdt1`, here bytes/s).
    pub rate_bytes_per_sec: u64,
}

impl ResyncProgress {
    /// DRBD's `done:` percentage: `100 * (total - (left - failed)) / total`.
    pub fn done_percent(&self) -> f64 {
        if self.total_bytes == 0 {
            return 100.0;
        }
        let left = self.left_bytes.saturating_sub(self.failed_bytes);
        100.0 * (self.total_bytes.saturating_sub(left)) as f64 / self.total_bytes as f64
    }

    /// Seconds to go at the current rate (None while nothing moves).
    pub fn eta_secs(&self) -> Option<u64> {
        (self.rate_bytes_per_sec > 0).then(|| self.left_bytes / self.rate_bytes_per_sec)
    }
}

/// Counters in `drbdsetup status --statistics` units (KiB, requests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub read_kib: u64,
    pub written_kib: u64,
    pub al_writes: u64,
    pub bm_writes: u64,
    /// Application requests not yet completed.
    pub upper_pending: u64,
    /// Backing-device requests in flight.
    pub lower_pending: u64,
}

/// An admin command waiting for a superblock generation to be persisted.
#[derive(Clone, Copy, Debug)]
struct MetaWaiter {
    generation: u64,
    token: u64,
}

/// An application request waiting for metadata.
#[derive(Clone, Debug)]
struct HeldIo {
    id: ReqId,
    op: IoOp,
    /// Superblock generation that must be on disk first.
    meta_gen: u64,
    /// AL transaction sequence that must be on disk first.
    al_seq: u64,
}

/// An AL transaction queued for writing (after a bitmap flush).
#[derive(Clone, Debug)]
struct QueuedAl {
    seq: u64,
    tr: Transaction,
    /// The extent this transaction evicts: it is written only once no write into that extent
    /// is in flight, or a crash could lose such a write locally while the peer has it, with
    /// neither the AL nor (for a connected peer) the bitmap recording the block.
    evicts: Option<ExtentNr>,
}

/// The per-attach state: only present while a disk is attached.
#[derive(Debug)]
struct Disk {
    sb: Superblock,
    data_bytes: u64,
    al: ActivityLog,
    al_blocks: u32,
    bitmaps: Vec<Bitmap>,
    on_io_error: crate::config::OnIoError,
    meta_external: bool,
    disk_flushes: bool,
    /// A local I/O error made this disk go away (`on-io-error detach`); the detach is under
    /// way.
    failed: bool,
}

impl Disk {
    /// The out-of-sync bitmap kept for peer `node`, if it has a slot.
    fn bitmap(&self, node: NodeId) -> Option<&Bitmap> {
        let idx = self.sb.peer(node)?.bitmap_index?;
        self.bitmaps.get(usize::from(idx))
    }

    /// The bitmap for `node`, to change.
    fn bitmap_mut(&mut self, node: NodeId) -> Option<&mut Bitmap> {
        let idx = self.sb.peer(node)?.bitmap_index?;
        self.bitmaps.get_mut(usize::from(idx))
    }

    /// Marks `[offset, offset+len)` out of sync with `node`; returns the newly set bits.
    fn mark(&mut self, node: NodeId, offset: u64, len: u64) -> u64 {
        let dev = self.data_bytes;
        self.bitmap_mut(node)
            .map_or(0, |bm| mark_bytes(bm, offset, len, dev))
    }

    /// Clears the blocks `[offset, offset+len)` covers completely in `node`'s bitmap.
    fn clear_covered(&mut self, node: NodeId, offset: u64, len: u64) {
        let dev = self.data_bytes;
        if let Some(bm) = self.bitmap_mut(node) {
            bm.clear_bytes_covered_dev(offset, len, dev);
        }
    }

    /// The bitmap UUID for `node` goes into the history and becomes 0 (a resync toward it
    /// ended); false if it was 0 already.
    fn bitmap_uuid_to_history(&mut self, node: NodeId) -> bool {
        let Some(p) = self.sb.peers.iter_mut().find(|p| p.node_id == Some(node)) else {
            return false;
        };
        if p.bitmap_uuid.is_zero() {
            return false;
        }
        let old = std::mem::replace(&mut p.bitmap_uuid, GenUuid::ZERO);
        self.sb.push_history(old);
        true
    }
}

/// The engine of one resource.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    role: Role,
    disk_state: DiskState,
    disk: Option<Disk>,
    open_count: u32,
    /// Promoted by `drbdadm primary` rather than by an opener: DRBD 9's `EXPLICIT_PRIMARY`,
    /// which keeps the last opener's close from auto-demoting.
    explicit_primary: bool,
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
    held: VecDeque<HeldIo>,
    /// Requests submitted to disk: id -> whether the op was a read of `len`.
    inflight: std::collections::HashMap<ReqId, InflightKind>,
    stats: Stats,
    actions: VecDeque<Action>,
    /// Peers writes are replicated to (see `replicate`): from the handshake's decision on.
    links: BTreeMap<NodeId, replicate::Link>,
    /// Every configured peer's connection state (see `connection`).
    conns: BTreeMap<NodeId, connection::PeerConn>,
    /// Packets to send once a superblock generation is on disk: (generation, peer) for the
    /// end of a resync on the target.
    after_meta: Vec<(u64, NodeId)>,
    /// The time of the last input (every input and timeout brings it).
    now: crate::types::Time,
    /// When application I/O (or a replicated write) last arrived: the resync's `c-min-rate`
    /// throttle.
    last_app_io: Option<crate::types::Time>,
    /// Application writes held while a handshake runs (DRBD suspends I/O while it connects),
    /// so the generation both sides compare does not move under the comparison.
    suspended: VecDeque<(ReqId, IoOp)>,
    /// Byte ranges of disk ops in flight that others must not overlap: (offset, len, write).
    busy: HashMap<ReqId, (u64, u64, bool)>,
    /// What peers were last told of role and disk state.
    told: (Role, DiskState),
    /// Application requests waiting for peers as well as the local disk.
    waiting: HashMap<ReqId, replicate::Waiting>,
    /// Disk ops done on behalf of peers.
    peer_ops: HashMap<ReqId, replicate::PeerOp>,
    next_internal: u64,
    /// fence-peer calls in flight, the I/O freeze of resource-and-stonith (see `fencing`).
    fence: fencing::FenceState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AlStep {
    /// Writing dirty bitmap pages before AL transaction `seq`, or for a plain flush (`seq` 0).
    Bitmap { seq: u64 },
    /// Writing AL transaction `seq`.
    Transaction { seq: u64 },
    /// Flushing the data device (internal request `id`) before transaction `seq` evicts an
    /// extent: the writes into it completed, but with external metadata nothing has made them
    /// durable yet, and once the AL forgets the extent a crash would not resync them.
    DataFlush { seq: u64, id: ReqId },
}

#[derive(Clone, Copy, Debug)]
enum InflightKind {
    Read {
        offset: u64,
        len: u32,
    },
    /// `data`: a write with data (counted in `written:`), not a trim or zeroes.
    Write {
        offset: u64,
        len: u64,
        data: bool,
    },
    Other,
}

impl Engine {
    /// A resource without a disk yet (`Diskless`, Secondary).
    pub fn new(cfg: EngineConfig) -> Engine {
        let uuids = UuidGen::new(cfg.uuid_seed);
        let conns = cfg
            .peers
            .iter()
            .map(|p| (p.node_id, connection::PeerConn::new()))
            .collect();
        let mut e = Engine {
            cfg,
            role: Role::Secondary,
            disk_state: DiskState::Diskless,
            disk: None,
            open_count: 0,
            explicit_primary: false,
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
            held: VecDeque::new(),
            inflight: std::collections::HashMap::new(),
            stats: Stats::default(),
            actions: VecDeque::new(),
            links: BTreeMap::new(),
            conns: BTreeMap::new(),
            after_meta: Vec::new(),
            now: crate::types::Time(0),
            last_app_io: None,
            suspended: VecDeque::new(),
            busy: HashMap::new(),
            told: (Role::Secondary, DiskState::Diskless),
            waiting: HashMap::new(),
            peer_ops: HashMap::new(),
            next_internal: 0,
            fence: fencing::FenceState::default(),
        };
        e.conns = conns;
        e
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The local disk state.
    pub fn disk_state(&self) -> DiskState {
        self.disk_state
    }

    /// Clients holding the device open.
    pub fn open_count(&self) -> u32 {
        self.open_count
    }

    /// True when nothing is in flight or queued: no application request, no metadata write.
    pub fn is_quiet(&self) -> bool {
        self.inflight.is_empty()
            && self.waiting.is_empty()
            && self.held.is_empty()
            && self.suspended.is_empty()
            && self.meta_inflight.is_none()
            && self.al_inflight.is_none()
            && self.al_queue.is_empty()
            && !self.fence.holds_io()
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
        self.disk.as_ref().map_or(0, |d| d.data_bytes)
    }

    /// The configuration of peer `node`.
    fn peer_info(&self, node: NodeId) -> Option<&PeerInfo> {
        self.cfg.peers.iter().find(|p| p.node_id == node)
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
                let c = self.conns.get(&p.node_id);
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
                    conn: c.map_or(ConnState::StandAlone, |c| c.conn),
                    role: c.map_or(Role::Unknown, |c| c.role),
                    repl: c.map_or(ReplState::Off, |c| c.shown_repl()),
                    disk: c.map_or(DiskState::DUnknown, |c| c.disk),
                    out_of_sync_bytes: oos,
                    resync,
                    user_paused: c.is_some_and(|c| c.user_paused),
                    peer_paused: c.is_some_and(|c| c.peer_paused),
                    received_kib: c.map_or(0, |c| c.received / 1024),
                    sent_kib: c.map_or(0, |c| c.sent / 1024),
                    pending: self
                        .waiting
                        .values()
                        .filter(|w| w.waits_for(p.node_id))
                        .count() as u64,
                    unacked: self
                        .peer_ops
                        .values()
                        .filter(|op| op.serves(p.node_id))
                        .count() as u64,
                }
            })
            .collect();
        Status {
            resource: self.cfg.resource.clone(),
            node_id: self.cfg.node_id,
            role: self.role,
            disk: self.disk_state,
            open_count: self.open_count,
            size_bytes: self.size_bytes(),
            current_uuid: self
                .disk
                .as_ref()
                .map_or(GenUuid::ZERO, |d| d.sb.current_uuid),
            md_flags: self.disk.as_ref().map_or(0, |d| d.sb.flags),
            peers,
            stats: self.stats,
            suspended_fencing: self.fence.frozen,
        }
    }

    /// An NBD client wants to open the device (`NBD_OPT_GO`). A Primary accepts; a Secondary
    /// promotes first when `auto-promote` is on and promotion is possible. The promotion is
    /// persisted before any I/O of the client is served (held until [`Input::MetaWritten`]).
    pub fn open(&mut self, now: crate::types::Time) -> Result<(), OpenRefusal> {
        self.advance(now);
        match self.role {
            Role::Primary => {}
            _ if !self.cfg.auto_promote => return Err(OpenRefusal::Secondary),
            _ => {
                self.try_promote(false)
                    .map_err(OpenRefusal::AutoPromoteFailed)?;
                self.log("auto-promote on open".to_string());
            }
        }
        self.open_count += 1;
        self.maybe_broadcast();
        Ok(())
    }

    /// A client that opened the device went away. The last one leaving auto-demotes a
    /// resource that an opener promoted (not one promoted with `drbdadm primary`).
    pub fn close(&mut self, now: crate::types::Time) {
        self.advance(now);
        self.open_count = self.open_count.saturating_sub(1);
        if self.open_count == 0
            && self.cfg.auto_promote
            && self.role == Role::Primary
            && !self.explicit_primary
        {
            self.demote();
            self.log("auto-demote: last opener left".to_string());
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
            Input::Io { id, op } => self.io(id, op),
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
        }
        if !self.suspended.is_empty() {
            self.resume_suspended();
        }
        self.maybe_broadcast();
    }

    /// Tells the peers when the role or disk state changed since they last heard.
    fn maybe_broadcast(&mut self) {
        let now = (self.role, self.disk_state);
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
        if !self.suspended.is_empty() {
            self.resume_suspended();
        }
        self.maybe_broadcast();
    }

    // ---- attach ------------------------------------------------------------------------------

    fn attach(&mut self, a: Attached) {
        let mut sb = a.sb;
        let mut bitmaps = a.bitmaps;
        let al = match &a.al {
            Some(rec) => ActivityLog::from_recovery(rec),
            None => ActivityLog::new(sb.al_extents, u64::from(a.al_blocks)),
        };
        if sb.flags & flags::AL_CLEAN == 0 && sb.flags & flags::PRIMARY_IND != 0 {
            // A Primary stopped uncleanly: every extent the AL says was hot may differ from
            // the peers. (A Secondary that crashed needs no such marks: every write it got
            // came from a Primary, which keeps each one it has not seen flushed here in its
            // transfer log and marks it when the link drops, or, if it crashed as well, has
            // the same extents in its own AL. Marking them here too would resync whole 4 MiB
            // extents after every Secondary restart.)
            let hot = a.al.as_ref().map(|r| r.extents.clone()).unwrap_or_default();
            let mut marked = 0;
            for e in &hot {
                let start = u64::from(e.0) * AL_EXTENT_SIZE;
                for bm in bitmaps.iter_mut() {
                    marked += mark_bytes(bm, start, AL_EXTENT_SIZE, a.data_bytes);
                }
            }
            self.log(format!(
                "Marked additional {} KB as out-of-sync based on AL ({} extents)",
                marked * BM_BLOCK_SIZE / 1024,
                hot.len()
            ));
        }
        if sb.flags & flags::PRIMARY_IND != 0 {
            sb.flags |= flags::CRASHED_PRIMARY;
        }
        self.disk_state = disk_state_from_flags(sb.flags);
        sb.flags &= !flags::AL_CLEAN;
        self.disk = Some(Disk {
            sb,
            data_bytes: a.data_bytes,
            al,
            al_blocks: a.al_blocks,
            bitmaps,
            on_io_error: a.on_io_error,
            meta_external: a.meta_external,
            disk_flushes: a.disk_flushes,
            failed: false,
        });
        self.log(format!("disk( Diskless -> {} )", self.disk_state));
        self.fence_attached();
        self.sb_changed();
        self.flush_bitmap_if_dirty();
    }

    // ---- admin -------------------------------------------------------------------------------

    fn admin(&mut self, token: u64, cmd: AdminCmd) {
        let result = match cmd {
            AdminCmd::Primary { force } => {
                if self.fence_before_promote(token, force) {
                    return; // answered once fence-peer has (see `fencing`)
                }
                let r = self.try_promote(force);
                if r.is_ok() {
                    self.explicit_primary = true;
                }
                r
            }
            AdminCmd::Secondary => {
                if self.open_count > 0 {
                    Err(StateError::DeviceInUse)
                } else {
                    self.demote();
                    Ok(())
                }
            }
            AdminCmd::NewCurrentUuid { clear_bitmap } => self.new_current_uuid(clear_bitmap),
            AdminCmd::Verify { start, stop } => self.verify_start(start, stop),
            AdminCmd::Connect { discard_my_data } => {
                if discard_my_data && self.role == Role::Primary {
                    self.actions.push_back(Action::AdminDone {
                        token,
                        result: Err(AdminError::DiscardMyDataPrimary),
                    });
                    return;
                }
                self.set_discard_my_data(discard_my_data);
                Ok(())
            }
            AdminCmd::Detach => self.detach(token),
            AdminCmd::Invalidate { reset_bitmap } => self.invalidate(reset_bitmap),
            AdminCmd::InvalidateRemote { reset_bitmap } => self.invalidate_remote(reset_bitmap),
            AdminCmd::PauseSync => self.set_user_paused(true).map_err(|e| {
                self.log(format!("pause-sync: {e}"));
                StateError::NeedConnection
            }),
            AdminCmd::ResumeSync => self.set_user_paused(false).map_err(|e| {
                self.log(format!("resume-sync: {e}"));
                StateError::NeedConnection
            }),
            AdminCmd::Outdate => self.outdate(),
            AdminCmd::ResumeIo => {
                self.resume_io();
                Ok(())
            }
        };
        match result {
            Err(e) => self.actions.push_back(Action::AdminDone {
                token,
                result: Err(AdminError::State(e)),
            }),
            Ok(()) if matches!(cmd, AdminCmd::Detach) => {}
            Ok(()) => self.wait_for_meta(token),
        }
    }

    /// Replies to `token` once the current superblock generation is on disk.
    fn wait_for_meta(&mut self, token: u64) {
        if self.meta_persisted >= self.sb_gen && self.meta_inflight.is_none() {
            self.actions.push_back(Action::AdminDone {
                token,
                result: Ok(()),
            });
        } else {
            self.meta_waiters.push(MetaWaiter {
                generation: self.sb_gen,
                token,
            });
        }
    }

    fn try_promote(&mut self, force: bool) -> Result<(), StateError> {
        if self.role == Role::Primary {
            return Ok(());
        }
        if self
            .conns
            .values()
            .any(|c| c.conn == ConnState::Connected && c.role == Role::Primary)
        {
            return Err(StateError::TwoPrimaries);
        }
        if self.conns.values().any(|c| c.repl == ReplState::SyncTarget) {
            // Its data is a mix of two generations until the resync ends.
            return Err(StateError::NoUpToDateDisk);
        }
        if self.disk.is_none() {
            return Err(StateError::NoUpToDateDisk);
        }
        let forced = force && self.disk_state < DiskState::Consistent;
        let fenced = self.fencing_allows_primary();
        let new_disk = match self.disk_state {
            DiskState::UpToDate if fenced || force => DiskState::UpToDate,
            DiskState::UpToDate => return Err(StateError::PrimaryNop),
            // DRBD 9 promotes a Consistent disk when no peer can have newer data and fencing
            // does not ask for certainty (or fence-peer gave it).
            DiskState::Consistent if fenced => DiskState::UpToDate,
            _ if force => DiskState::UpToDate,
            _ => return Err(StateError::NoUpToDateDisk),
        };
        if !fenced && !forced {
            self.log("Forced into split brain situation!".to_string());
        }
        let Some(d) = self.disk.as_mut() else {
            return Err(StateError::NoUpToDateDisk);
        };
        d.sb.flags |= flags::PRIMARY_IND | flags::CONSISTENT | flags::WAS_UP_TO_DATE;
        if self.disk_state != new_disk {
            self.log(format!("disk( {} -> {new_disk} )", self.disk_state));
            self.disk_state = new_disk;
        }
        self.log("role( Secondary -> Primary )".to_string());
        self.role = Role::Primary;
        // Without a connected peer the next write starts a new data generation (DRBD 9 marks it
        // due and creates it on the first write, so a promotion that never wrote cannot cause a
        // split brain). With a peer connected both stay in the same generation.
        self.new_uuid_due = self.links.is_empty();
        self.sb_changed();
        if forced {
            // A connected peer without good data gets everything from here.
            self.full_sync_inconsistent_peers();
        }
        Ok(())
    }

    fn invalidate(&mut self, reset_bitmap: bool) -> Result<(), StateError> {
        if self.disk.is_none() {
            return Err(StateError::NoLocalDisk);
        }
        if self.role == Role::Primary {
            return Err(StateError::DeviceInUse);
        }
        let Some(node) = self.established_peers().into_iter().find(|n| {
            self.conns
                .get(n)
                .is_some_and(|c| c.repl == ReplState::Established && c.disk == DiskState::UpToDate)
        }) else {
            return Err(StateError::NeedConnection);
        };
        // Ask the peer to become SyncSource (`StartingSyncT`): with everything, answered with
        // SyncUuid; or (`--reset-bitmap=no`) with the marked blocks, answered with its marks
        // (OutOfSync) and its State as SyncSource. Either starts the resync here.
        if let Some(c) = self.conns.get_mut(&node) {
            c.repl = ReplState::StartingSyncT;
        }
        let mut p = self.my_state_packet(node);
        if !reset_bitmap && let crate::repl::wire::Packet::State { flags, .. } = &mut p {
            *flags = *flags | crate::repl::wire::StateFlags::KEEP_BITMAP;
        }
        self.send(node, p);
        if let Some(c) = self.conns.get_mut(&node) {
            c.repl = ReplState::Established;
        }
        self.log(format!(
            "peer {node}: invalidate: requesting {} from the peer",
            if reset_bitmap {
                "a full sync"
            } else {
                "a resync of the marked blocks"
            }
        ));
        Ok(())
    }

    fn invalidate_remote(&mut self, reset_bitmap: bool) -> Result<(), StateError> {
        if self.disk_state != DiskState::UpToDate {
            return Err(StateError::NoUpToDateDisk);
        }
        let nodes = self.established_peers();
        let Some(node) = nodes.into_iter().find(|n| {
            self.conns
                .get(n)
                .is_some_and(|c| c.repl == ReplState::Established)
        }) else {
            return Err(StateError::NeedConnection);
        };
        if self
            .conns
            .get(&node)
            .is_some_and(|c| c.role == Role::Primary)
        {
            return Err(StateError::DeviceInUse);
        }
        let r = if reset_bitmap {
            self.start_full_sync_to(node)
        } else {
            self.start_bitmap_sync_to(node)
        };
        r.map_err(|e| {
            self.log(format!("invalidate-remote: {e}"));
            StateError::NeedConnection
        })
    }

    fn demote(&mut self) {
        if self.role != Role::Primary {
            return;
        }
        self.role = Role::Secondary;
        self.explicit_primary = false;
        self.new_uuid_due = false;
        self.log("role( Primary -> Secondary )".to_string());
        if let Some(d) = self.disk.as_mut() {
            d.sb.flags &= !flags::PRIMARY_IND;
            self.sb_changed();
        }
    }

    fn new_current_uuid(&mut self, clear_bitmap: bool) -> Result<(), StateError> {
        let connected = !self.established_peers().is_empty();
        if self.conns.values().any(|c| c.rs.is_some()) {
            return Err(StateError::InTransientState);
        }
        let Some(d) = self.disk.as_mut() else {
            return Err(StateError::DeviceDiskless);
        };
        let primary = self.role == Role::Primary;
        let fresh = d.sb.current_uuid.same_as(GenUuid::JUST_CREATED);
        if clear_bitmap {
            if !(fresh || self.disk_state == DiskState::UpToDate) {
                return Err(StateError::NoUpToDateDisk);
            }
            // Skip the initial sync: everyone starts from the same (new) generation.
            d.sb.current_uuid = self.uuids.next(primary);
            for bm in d.bitmaps.iter_mut() {
                bm.clear_all();
            }
            for p in d.sb.peers.iter_mut().filter(|p| p.node_id.is_some()) {
                p.bitmap_uuid = GenUuid::ZERO;
            }
            d.sb.flags |= flags::CONSISTENT | flags::WAS_UP_TO_DATE;
        } else {
            if self.disk_state < DiskState::Outdated {
                return Err(StateError::NoUpToDateDisk);
            }
            if connected {
                // The peers follow into the new generation: nothing differs from them, so the
                // old one is history, not a bitmap UUID.
                let old = d.sb.current_uuid;
                if !old.same_as(GenUuid::JUST_CREATED) {
                    d.sb.push_history(old);
                }
                d.sb.current_uuid = self.uuids.next(primary);
            } else {
                rotate_current(&mut d.sb, &mut self.uuids, primary);
            }
        }
        self.new_uuid_due = false;
        let uuid = d.sb.current_uuid;
        if clear_bitmap && self.disk_state != DiskState::UpToDate {
            self.log(format!("disk( {} -> UpToDate )", self.disk_state));
            self.disk_state = DiskState::UpToDate;
        }
        self.log(format!("new current UUID: {uuid}"));
        self.sb_changed();
        self.flush_bitmap_if_dirty();
        if connected {
            self.announce_new_uuid(clear_bitmap);
        }
        Ok(())
    }

    fn detach(&mut self, token: u64) -> Result<(), StateError> {
        if self.open_count > 0 {
            return Err(StateError::DeviceInUse);
        }
        if self.disk.is_none() {
            self.actions.push_back(Action::AdminDone {
                token,
                result: Ok(()),
            });
            return Ok(());
        }
        self.demote();
        // Clean stop: bitmap on disk, then a superblock that says the AL is clean. The reply
        // comes when both are persisted (see `maybe_finish_detach`).
        self.flush_waiters.push((token, self.al_next_seq));
        self.flush_bitmap_if_dirty();
        self.maybe_finish_detach();
        Ok(())
    }

    /// A backing-device read or write failed (`on-io-error`, DRBD's `__drbd_chk_io_error_()`).
    /// The range is marked out of sync for every peer first, so whatever happens next (the
    /// request is answered, the disk goes away) the blocks are resynced later. `pass_on`
    /// keeps the disk but makes it Inconsistent; `detach` (and `call-local-io-error`, which
    /// runs the handler too) detaches it.
    fn local_io_error(&mut self, offset: u64, len: u64, write: bool, errno: i32) {
        let nodes: Vec<NodeId> = self.cfg.peers.iter().map(|p| p.node_id).collect();
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        for node in nodes {
            d.mark(node, offset, len);
        }
        let policy = d.on_io_error;
        let already = d.failed;
        // A resync into this disk cannot declare it UpToDate now (pass_on keeps it attached).
        for c in self.conns.values_mut() {
            if let Some(rs) = c.rs.as_mut().filter(|rs| !rs.source) {
                rs.failed_bytes += len;
            }
        }
        let what = if write { "WRITE" } else { "READ" };
        let sector = offset / crate::types::SECTOR_SIZE;
        use crate::config::OnIoError;
        if policy == OnIoError::PassOn {
            self.log(format!(
                "Local IO failed in {what} at sector {sector} (errno {errno}); passed on \
                 (on-io-error pass_on), the blocks are marked out of sync"
            ));
            if self.disk_state > DiskState::Inconsistent {
                self.log(format!("disk( {} -> Inconsistent )", self.disk_state));
                self.disk_state = DiskState::Inconsistent;
                if let Some(d) = self.disk.as_mut() {
                    d.sb.flags &= !(flags::CONSISTENT | flags::WAS_UP_TO_DATE);
                }
                self.sb_changed();
                self.broadcast_state();
            }
            return self.flush_bitmap_if_dirty();
        }
        if already {
            return;
        }
        self.log(format!(
            "Local IO failed in {what} at sector {sector} (errno {errno}). Detaching..."
        ));
        if policy == OnIoError::CallLocalIoError {
            self.run_handler(crate::repl::handler::Handler::LocalIoError, None);
        }
        if let Some(d) = self.disk.as_mut() {
            d.failed = true;
            // Comes back Inconsistent: the next handshake resyncs the marked blocks to it.
            d.sb.flags &= !(flags::CONSISTENT | flags::WAS_UP_TO_DATE);
        }
        let old = self.disk_state;
        self.disk_state = DiskState::Failed;
        self.log(format!("disk( {old} -> Failed )"));
        self.sb_changed();
        self.flush_bitmap_if_dirty();
        self.flush_waiters.push((FAILURE_DETACH, self.al_next_seq));
        self.broadcast_state();
    }

    fn maybe_finish_detach(&mut self) {
        if self.flush_waiters.is_empty()
            || !self.inflight.is_empty()
            || !self.waiting.is_empty()
            || !self.held.is_empty()
            || !self.suspended.is_empty()
            || self.al_inflight.is_some()
            || !self.al_queue.is_empty()
        {
            return;
        }
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        if d.sb.flags & flags::AL_CLEAN == 0 {
            d.sb.flags |= flags::AL_CLEAN;
            self.sb_changed();
        }
        if self.meta_persisted < self.sb_gen || self.meta_inflight.is_some() {
            return; // `meta_written` calls back here
        }
        let waiters = self.take_detach_waiters();
        let old = self.disk_state;
        let failed = self.disk.take().is_some_and(|d| d.failed);
        self.disk_state = DiskState::Diskless;
        self.log(format!("disk( {old} -> Diskless )"));
        if failed {
            // Nobody asked for it: the driver lets go of the disk itself.
            self.actions.push_back(Action::ReleaseDisk);
            for node in self.established_peers() {
                self.drop_link(node, false);
            }
        }
        for token in waiters {
            self.actions.push_back(Action::AdminDone {
                token,
                result: Ok(()),
            });
        }
    }

    /// The admin commands waiting for a detach (not the failure detach, which nobody awaits).
    fn take_detach_waiters(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.flush_waiters)
            .into_iter()
            .map(|(token, _)| token)
            .filter(|&t| t != FAILURE_DETACH)
            .collect()
    }

    // ---- application I/O ---------------------------------------------------------------------

    fn io(&mut self, id: ReqId, op: IoOp) {
        self.stats.upper_pending += 1;
        self.last_app_io = Some(self.now);
        if self.fence.frozen {
            // `susp-io( fencing )`: queued, not failed, until fence-peer answers or resume-io.
            self.fence.queued.push_back((id, op));
            return;
        }
        self.io_admitted(id, op);
    }

    /// A handshake is between its start and its decision.
    fn handshaking(&self) -> bool {
        self.conns
            .values()
            .any(|c| c.hs.as_ref().is_some_and(|h| h.strategy.is_none()))
    }

    /// Releases the writes suspended during a handshake, once none runs any more.
    pub(super) fn resume_suspended(&mut self) {
        if self.handshaking() {
            return;
        }
        while let Some((id, op)) = self.suspended.pop_front() {
            self.io_admitted(id, op);
        }
    }

    fn io_admitted(&mut self, id: ReqId, op: IoOp) {
        if op.written_range().is_some() && self.handshaking() {
            self.suspended.push_back((id, op));
            return;
        }
        if self.role != Role::Primary {
            return self.complete(id, Err(IoError::NotPrimary));
        }
        if self.disk.is_none() || self.disk_state < DiskState::UpToDate || self.meta_failed {
            return self.complete(id, Err(IoError::NoData));
        }
        let mut held = HeldIo {
            id,
            op,
            meta_gen: 0,
            al_seq: 0,
        };
        if let Some((offset, len)) = held.op.written_range() {
            if self.new_uuid_due {
                self.new_uuid_due = false;
                if let Some(d) = self.disk.as_mut() {
                    rotate_current(&mut d.sb, &mut self.uuids, true);
                    let uuid = d.sb.current_uuid;
                    self.log(format!("new current UUID: {uuid}"));
                }
                self.sb_changed();
            }
            held.meta_gen = self.sb_gen;
            held.al_seq = self.activate_extents(offset, len);
            self.mark_out_of_sync(offset, len);
        }
        self.held.push_back(held);
        self.release_held();
    }

    /// Makes the extents of `[offset, offset+len)` hot; returns the AL sequence that must be on
    /// disk before the write may be issued (0: none needed).
    fn activate_extents(&mut self, offset: u64, len: u64) -> u64 {
        let Some(d) = self.disk.as_mut() else {
            return 0;
        };
        if len == 0 {
            return 0;
        }
        let first = offset / AL_EXTENT_SIZE;
        let last = (offset + len - 1) / AL_EXTENT_SIZE;
        let mut need = 0;
        for e in first..=last {
            let e = ExtentNr(e as u32);
            let before = if d.al.is_hot(e) {
                Vec::new()
            } else {
                d.al.hot_extents()
            };
            if let Some(tr) = d.al.access(e) {
                let evicts = before.into_iter().find(|x| !d.al.is_hot(*x));
                let seq = self.al_next_seq;
                self.al_next_seq += 1;
                self.al_queue.push_back(QueuedAl { seq, tr, evicts });
                need = seq;
            }
        }
        // A queued transaction's write also covers any earlier one still queued.
        if need == 0 {
            need = self.al_queue.back().map_or(0, |q| q.seq);
            if let Some(
                AlStep::Transaction { seq }
                | AlStep::Bitmap { seq }
                | AlStep::DataFlush { seq, .. },
            ) = self.al_inflight
            {
                need = need.max(seq);
            }
        }
        self.pump_al();
        need
    }

    /// Marks the written blocks out of sync for every peer that is not connected (all of them
    /// in this build).
    fn mark_out_of_sync(&mut self, offset: u64, len: u64) {
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        for p in self.cfg.peers.iter() {
            // A connected peer gets the write itself; only absent peers fall behind.
            if !self.links.contains_key(&p.node_id) {
                d.mark(p.node_id, offset, len);
            }
        }
    }

    /// Issues held requests whose metadata is on disk, in order.
    fn release_held(&mut self) {
        while let Some(h) = self.held.front() {
            if h.meta_gen > self.meta_persisted || h.al_seq > self.al_persisted {
                break;
            }
            let range = self.gate_range(h);
            if let Some(r) = range
                && self.conflicts(r)
            {
                break; // released by the disk completion of the op it overlaps
            }
            let Some(h) = self.held.pop_front() else {
                break;
            };
            if let Some(r) = range {
                self.busy.insert(h.id, r);
            }
            if let Some((offset, len)) = h.op.written_range() {
                self.verify_note_write(offset, len);
            }
            if let Some((offset, len)) = h.op.written_range()
                && h.id.0 & replicate::INTERNAL == 0
            {
                // A peer that is not (or no longer) linked does not get this write: it differs.
                self.mark_out_of_sync(offset, len);
            }
            let kind = match (&h.op, h.op.written_range()) {
                (IoOp::Read { offset, len }, _) => InflightKind::Read {
                    offset: *offset,
                    len: *len,
                },
                (op, Some((offset, len))) => InflightKind::Write {
                    offset,
                    len,
                    data: matches!(op, IoOp::Write { .. }),
                },
                _ => InflightKind::Other,
            };
            self.inflight.insert(h.id, kind);
            self.stats.lower_pending += 1;
            self.replicate(&h);
            self.actions
                .push_back(Action::SubmitDisk { id: h.id, op: h.op });
        }
        // Nothing newer may overtake a held write whose metadata is pending: they are
        // released in order, which is the order the client sent them.
    }

    /// The range an op must not share with conflicting ops in flight: every write (against
    /// any write or resync read), and resync reads (against writes). Overlapping writes thus
    /// reach the disk, and the peer, in the order they were released on every node, and a
    /// resync read never sees half of a write that the target gets separately.
    fn gate_range(&self, h: &HeldIo) -> Option<(u64, u64, bool)> {
        if let Some((off, len)) = h.op.written_range() {
            return (len > 0).then_some((off, len, true));
        }
        match (&h.op, self.peer_ops.get(&h.id)) {
            (
                IoOp::Read { offset, len },
                Some(replicate::PeerOp::Resync(_) | replicate::PeerOp::Verify(_)),
            ) => Some((*offset, u64::from(*len), false)),
            _ => None,
        }
    }

    fn conflicts(&self, (off, len, write): (u64, u64, bool)) -> bool {
        self.busy
            .values()
            .any(|&(o, l, w)| (write || w) && off < o + l && o < off + len)
    }

    fn disk_done(&mut self, id: ReqId, result: Result<Option<bytes::Bytes>, i32>) {
        let Some(kind) = self.inflight.remove(&id) else {
            return; // not ours (a duplicate completion): ignore rather than corrupt counters
        };
        // Ops the finished one held back are released only after its own results are out: a
        // resync read's reply must be on the wire before a newer write to the same blocks.
        let freed = self.busy.remove(&id).is_some();
        self.stats.lower_pending = self.stats.lower_pending.saturating_sub(1);
        match (&result, kind) {
            (Ok(_), InflightKind::Read { len, .. }) => self.stats.read_kib += u64::from(len) / 1024,
            (Ok(_), InflightKind::Write { len, data, .. }) if data => {
                self.stats.written_kib += len / 1024
            }
            (Err(errno), InflightKind::Read { offset, len }) => {
                self.local_io_error(offset, u64::from(len), false, *errno)
            }
            (Err(errno), InflightKind::Write { offset, len, .. }) => {
                self.local_io_error(offset, len, true, *errno)
            }
            _ => {}
        }
        if id.0 & replicate::INTERNAL != 0 {
            match self.al_inflight {
                Some(AlStep::DataFlush { seq, id: flush }) if flush == id => {
                    self.al_inflight = None;
                    if let Err(e) = &result {
                        self.meta_failure(format!(
                            "flushing the data device before an activity-log update failed \
                             (errno {e})"
                        ));
                    } else {
                        self.al_data_flushed = seq;
                        self.pump_al();
                    }
                }
                _ => self.peer_disk_done(id, result),
            }
            if freed {
                self.release_held();
                self.pump_al();
            }
            self.maybe_finish_detach();
            return;
        }
        let result = result.map_err(IoError::Disk);
        if let Err(e) = &result {
            self.log(format!("local I/O error: {e}"));
        }
        if self.local_done(id, &result) {
            self.complete(id, result);
        }
        if freed {
            self.release_held();
            self.pump_al();
        }
        self.maybe_finish_detach();
    }

    fn complete(&mut self, id: ReqId, result: Result<Option<bytes::Bytes>, IoError>) {
        if self.fence.frozen {
            // A write the lost peer may not have must not be acknowledged before that peer is
            // fenced: the application could otherwise see it vanish after a fail-over.
            self.fence.completions.push((id, result));
            return;
        }
        self.stats.upper_pending = self.stats.upper_pending.saturating_sub(1);
        self.actions.push_back(Action::Complete { id, result });
    }

    // ---- metadata ----------------------------------------------------------------------------

    /// The in-memory superblock changed: write it (or queue another write after the current).
    fn sb_changed(&mut self) {
        self.sb_gen += 1;
        self.pump_meta();
    }

    fn pump_meta(&mut self) {
        if self.meta_inflight.is_some() || self.meta_persisted >= self.sb_gen {
            return;
        }
        if let Some(d) = self.disk.as_ref() {
            self.meta_inflight = Some(self.sb_gen);
            self.actions.push_back(Action::WriteMeta {
                generation: self.sb_gen,
                sb: Box::new(d.sb.clone()),
            });
        }
    }

    fn meta_written(&mut self, generation: u64, result: Result<(), String>) {
        if self.meta_inflight != Some(generation) {
            return;
        }
        self.meta_inflight = None;
        match result {
            Ok(()) => {
                self.meta_persisted = generation;
                let (ready, waiting): (Vec<_>, Vec<_>) = self
                    .meta_waiters
                    .iter()
                    .partition(|w| w.generation <= generation);
                self.meta_waiters = waiting;
                for w in ready {
                    self.actions.push_back(Action::AdminDone {
                        token: w.token,
                        result: Ok(()),
                    });
                }
                let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.after_meta)
                    .into_iter()
                    .partition(|(g, _)| *g <= generation);
                self.after_meta = later;
                for (_, node) in ready {
                    self.resync_target_persisted(node);
                }
                self.pump_meta();
                self.release_held();
                let targets: Vec<NodeId> = self.conns.keys().copied().collect();
                for node in targets {
                    self.resync_pump(node);
                }
                self.maybe_finish_detach();
            }
            Err(e) => self.meta_failure(e),
        }
    }

    /// A metadata write failed: nothing that depends on it may be acknowledged. Fail what
    /// waits, and refuse new I/O (DRBD detaches on a metadata I/O error).
    fn meta_failure(&mut self, e: String) {
        self.meta_failed = true;
        self.log(format!("meta data I/O error: {e}"));
        for w in std::mem::take(&mut self.meta_waiters) {
            self.actions.push_back(Action::AdminDone {
                token: w.token,
                result: Err(AdminError::Meta(e.clone())),
            });
        }
        for token in self.take_detach_waiters() {
            self.actions.push_back(Action::AdminDone {
                token,
                result: Err(AdminError::Meta(e.clone())),
            });
        }
        for h in std::mem::take(&mut self.held) {
            self.complete(h.id, Err(IoError::Meta));
        }
        self.al_queue.clear();
    }

    /// Starts the next AL step: a bitmap flush before a transaction, then the transaction.
    fn pump_al(&mut self) {
        if self.al_inflight.is_some() || self.meta_failed {
            return;
        }
        let Some(q) = self.al_queue.front() else {
            return;
        };
        let seq = q.seq;
        if let Some(x) = q.evicts {
            // Wait for the writes into the evicted extent: those in flight, those a peer has
            // not confirmed (DRBD keeps an extent referenced until its requests are done), and
            // those held for an earlier transaction (they are ahead of everything that needs
            // this one).
            let lo = u64::from(x.0) * AL_EXTENT_SIZE;
            let hits = |o: u64, l: u64| o < lo + AL_EXTENT_SIZE && lo < o + l;
            let unconfirmed = self.unconfirmed_overlaps(lo, lo + AL_EXTENT_SIZE);
            if unconfirmed {
                self.close_epochs_over(lo, lo + AL_EXTENT_SIZE);
            }
            let in_flight = unconfirmed || self.busy.values().any(|&(o, l, w)| w && hits(o, l));
            // Only those ahead of the first that waits for this transaction: the queue is
            // released in order, so the ones behind it (resync writes need no AL) cannot go
            // first and must not be waited for.
            let held = self
                .held
                .iter()
                .take_while(|h| h.al_seq < seq)
                .any(|h| h.op.written_range().is_some_and(|(o, l)| hits(o, l)));
            if in_flight || held {
                return; // pumped again by the disk completion
            }
            let external = self.disk.as_ref().is_some_and(|d| d.meta_external);
            if external && self.al_data_flushed < seq {
                let id = self.internal_id();
                self.al_inflight = Some(AlStep::DataFlush { seq, id });
                self.submit_internal(id, IoOp::Flush);
                return;
            }
        }
        if self.start_bitmap_flush(seq) {
            return;
        }
        self.write_al_transaction();
    }

    fn write_al_transaction(&mut self) {
        let (Some(q), Some(d)) = (self.al_queue.pop_front(), self.disk.as_ref()) else {
            return;
        };
        let block = q.tr.block_index(d.al_blocks);
        self.al_inflight = Some(AlStep::Transaction { seq: q.seq });
        self.stats.al_writes += 1;
        self.actions.push_back(Action::WriteAl {
            seq: q.seq,
            block,
            tr: Box::new(q.tr),
        });
    }

    /// Emits a bitmap write of the dirty pages, if any; true if one was started.
    fn start_bitmap_flush(&mut self, seq: u64) -> bool {
        let Some(d) = self.disk.as_mut() else {
            return false;
        };
        let mut pages = Vec::new();
        for (idx, bm) in d.bitmaps.iter_mut().enumerate() {
            for page in bm.take_dirty_pages(BM_WORDS_PER_PAGE) {
                let start = page * BM_WORDS_PER_PAGE;
                let end = (start + BM_WORDS_PER_PAGE).min(bm.words().len());
                let words = bm.words().get(start..end).unwrap_or(&[]).to_vec();
                pages.push((idx as u32, page as u32, words));
            }
        }
        if pages.is_empty() {
            return false;
        }
        self.stats.bm_writes += pages.len() as u64;
        self.al_inflight = Some(AlStep::Bitmap { seq });
        self.actions.push_back(Action::WriteBitmap { pages });
        true
    }

    /// Writes dirty bitmap pages now, if nothing else of the AL path is in flight (after an
    /// attach that applied the AL, a new UUID that cleared the bitmap, or before a detach).
    fn flush_bitmap_if_dirty(&mut self) {
        if self.al_inflight.is_none() && self.al_queue.is_empty() {
            self.start_bitmap_flush(0);
        }
    }

    fn bitmap_written(&mut self, result: Result<(), String>) {
        let Some(AlStep::Bitmap { seq }) = self.al_inflight else {
            return;
        };
        self.al_inflight = None;
        if let Err(e) = result {
            return self.meta_failure(e);
        }
        if seq != 0 && self.al_queue.front().map(|q| q.seq) == Some(seq) {
            self.write_al_transaction();
        } else {
            self.pump_al();
            if !self.flush_waiters.is_empty() {
                self.flush_bitmap_if_dirty();
            }
        }
        self.maybe_finish_detach();
    }

    fn al_written(&mut self, seq: u64, result: Result<(), String>) {
        if self.al_inflight != Some(AlStep::Transaction { seq }) {
            return;
        }
        self.al_inflight = None;
        if let Err(e) = result {
            return self.meta_failure(e);
        }
        self.al_persisted = seq;
        self.release_held();
        self.pump_al();
        if self.al_inflight.is_none() && !self.flush_waiters.is_empty() {
            self.flush_bitmap_if_dirty();
        }
        self.maybe_finish_detach();
    }

    fn log(&mut self, msg: String) {
        let line = format!("{}: {msg}", self.cfg.resource);
        self.actions.push_back(Action::Log(line));
    }
}

/// Why an NBD open was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenRefusal {
    /// Secondary and auto-promote is off.
    #[error("is Secondary and auto-promote is off")]
    Secondary,
    /// auto-promote tried and failed.
    #[error("could not auto-promote: {0}")]
    AutoPromoteFailed(StateError),
}

/// Disk state after attach, from the superblock flags (DRBD's `disk_state_from_md`): not
/// consistent is Inconsistent; consistent but not UpToDate when it stopped is Outdated;
/// otherwise Consistent, until a connection (or a promotion under `fencing dont-care`) decides
/// that it is UpToDate. That holds for a crashed Primary too: only its peer can tell whether it
/// still has the newest data.
fn disk_state_from_flags(f: u32) -> DiskState {
    if f & flags::CONSISTENT == 0 {
        DiskState::Inconsistent
    } else if f & flags::WAS_UP_TO_DATE == 0 {
        DiskState::Outdated
    } else {
        DiskState::Consistent
    }
}

/// Starts a new data generation while no peer is connected: the old current UUID becomes the
/// bitmap UUID of each peer whose bitmap was clean (the bitmap now records changes since that
/// generation), otherwise it goes into the history. It keeps its role bit, as DRBD's does: the
/// after-sb `discard-younger/older-primary` policies read it. The just-created sentinel is not a
/// generation and is dropped.
fn rotate_current(sb: &mut Superblock, uuids: &mut UuidGen, primary: bool) {
    let old = sb.current_uuid;
    if !old.same_as(GenUuid::JUST_CREATED) && !old.is_zero() {
        let mut into_history = false;
        for p in sb.peers.iter_mut().filter(|p| p.node_id.is_some()) {
            if p.bitmap_uuid.is_zero() {
                p.bitmap_uuid = old;
            } else {
                into_history = true;
            }
        }
        if into_history {
            sb.push_history(old);
        }
    }
    sb.current_uuid = uuids.next(primary);
}

/// Sets the bits of every 4 KiB block touched by `[offset, offset+len)`, clipped to the device;
/// returns how many bits were newly set.
fn mark_bytes(bm: &mut Bitmap, offset: u64, len: u64, dev_bytes: u64) -> u64 {
    let end = offset.saturating_add(len).min(dev_bytes);
    if end <= offset {
        return 0;
    }
    bm.set_bytes(offset, end - offset)
}
