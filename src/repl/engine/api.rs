//! The engine's public types: its configuration, what goes in ([`Input`]) and comes out
//! ([`Action`]), the admin commands and their errors, and the status snapshot.

use crate::bitmap::Bitmap;
use crate::meta::al::{AlRecovery, Transaction};
use crate::meta::superblock::Superblock;
use crate::repl::state::{ConnState, DiskState, ReplState, Role, StateError};
use crate::types::{GenUuid, NodeId, ReqId, Sector};

/// What the engine is told about its resource when it is created.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub resource: String,
    pub node_id: NodeId,
    pub peers: Vec<PeerInfo>,
    /// DRBD 9's `auto-promote`: an NBD client's GO promotes a Secondary.
    pub auto_promote: bool,
    /// `auto-promote-timeout`, in ms: how long an opener's promotion may wait for a handshake
    /// or a cluster-wide state change to finish.
    pub auto_promote_timeout_ms: u64,
    /// `twopc-timeout`, in ms: a cluster-wide state change the peers leave unanswered this
    /// long fails.
    pub twopc_timeout_ms: u64,
    /// Seed for new generation UUIDs (the driver draws it from the OS).
    pub uuid_seed: u64,
    /// `quorum`, `quorum-minimum-redundancy`, `on-no-quorum` (`options { }`), and whether this
    /// node is a diskless client (`disk none;`).
    pub quorum: QuorumSettings,
}

/// What decides quorum and what losing it does (see `crate::repl::quorum`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuorumSettings {
    pub quorum: crate::config::Quorum,
    pub min_redundancy: crate::config::Quorum,
    /// `on-no-quorum`: a Primary without quorum fails its I/O, or suspends it until quorum
    /// returns (DRBD's default).
    pub on_no_quorum: crate::config::OnNoData,
    /// This node is configured without a disk (`disk none;`): a diskless client, not a
    /// voter (it has quorum through an UpToDate peer that has it).
    pub intentional_diskless: bool,
}

/// The options `drbdadm adjust` can change on a running resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub peers: Vec<PeerInfo>,
    pub auto_promote: bool,
    pub auto_promote_timeout_ms: u64,
    pub twopc_timeout_ms: u64,
    pub quorum: QuorumSettings,
    /// `disk { on-io-error }` and `disk { disk-flushes }` of the attached disk (kept for the
    /// next attach by the driver, which builds [`Attached`] from its configuration).
    pub on_io_error: crate::config::OnIoError,
    pub disk_flushes: bool,
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
    /// `max-buffers` (`net { }`), in 4 KiB pages: how much the requests done for this peer
    /// (its writes, the resync and verify reads it asked for) may hold before this node stops
    /// reading its data stream ([`Action::ReceiveData`]).
    pub max_buffers: u32,
    /// `allow-two-primaries` (`net { }`): both nodes may be Primary while connected (protocol
    /// C only), and concurrent writes are resolved as in `engine::conflicts`. Both nodes must
    /// agree.
    pub two_primaries: bool,
    /// The peer is configured without a disk (`disk none;` in its `on` section): a diskless
    /// client, not a quorum voter, and no bitmap is kept for it.
    pub intentional_diskless: bool,
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
            max_buffers: 2048,
            two_primaries: false,
            intentional_diskless: false,
        }
    }
}

/// The metadata read at attach time.
#[derive(Clone, Debug)]
pub struct Attached {
    pub sb: Superblock,
    /// Usable data bytes.
    pub data_bytes: u64,
    /// `disk { size }` in bytes, 0 for none: the device is at most this large.
    pub user_bytes: u64,
    /// One bitmap per bitmap index (`0..max-peers`), as read.
    pub bitmaps: Vec<Bitmap>,
    /// The activity-log replay; `None` when the log could not be read (treated as empty).
    pub al: Option<AlRecovery>,
    /// AL ring size in 4 KiB blocks.
    pub al_blocks: u32,
    /// `on-io-error` of the disk (`disk { }`).
    pub on_io_error: crate::config::OnIoError,
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
    /// `on-no-quorum io-error`: this Primary has no quorum (a partition without a majority
    /// must not complete writes the other side may never see).
    #[error("no quorum")]
    NoQuorum,
    /// The request reaches past the end of the device (which shrank under a client that
    /// still has the old size).
    #[error("request past the end of the device")]
    PastEnd {
        /// A write (NBD answers ENOSPC) or a read (EINVAL).
        write: bool,
    },
}

/// An administrative state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminCmd {
    Primary {
        force: bool,
    },
    Secondary,
    /// `drbdadm secondary --force`: demote although NBD clients hold the device open; every
    /// application request still in the table fails (DRBD fails a forced Secondary's I/O),
    /// and the openers' later requests fail too (not Primary).
    ForceSecondary,
    NewCurrentUuid {
        clear_bitmap: bool,
    },
    /// Flush everything and mark the metadata clean; the driver detaches after success.
    Detach,
    /// `drbdadm detach --force` (DRBD's `FORCE_DETACH`): the disk goes away now, along the
    /// path of a local I/O error under `on-io-error detach` (Failed, then Diskless; it comes
    /// back Inconsistent and resyncs what it missed). Requests at the disk are not waited
    /// for: their local part counts as failed, so an application write a peer has succeeds,
    /// a peer's write is answered with NegAck. Answered at once, as DRBD answers it; the
    /// driver lets go of the disk ([`Action::ReleaseDisk`]) once the metadata is written.
    ForceDetach,
    /// `drbdadm forget-peer` (DRBD's `drbd_adm_forget_peer()`): drop what the metadata holds
    /// of peer `node`, whose connection must be StandAlone: its flags, its bitmap UUID, and
    /// its bitmap (all set: a node never seen). A later connection to it resyncs everything.
    ForgetPeer {
        node: NodeId,
    },
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
        /// `--tentative`: the handshake only logs what it would do, then the link closes.
        tentative: bool,
    },
    /// `drbdadm outdate`: mark this node's (consistent, disconnected) data Outdated, persisted.
    Outdate,
    /// `drbdadm resize [--assume-clean]`: the backing devices grew; this disk's metadata is
    /// moved to the new end ([`Action::GrowDisk`]), then the connected peers are asked to do
    /// the same and the size is agreed anew (see `engine::grow`). `no_resync`: the new area
    /// is not resynced.
    Resize {
        no_resync: bool,
        /// `--size`: the device's size in bytes (DRBD's `disk { size }`, the user size); 0:
        /// as large as the backing devices allow. Below the current size it shrinks the device
        /// (explicitly: what lies beyond is cut off).
        #[doc(hidden)]
        user_bytes: u64,
    },
    /// `drbdadm disconnect` (and `down`): agreed with the connected peers as a cluster-wide
    /// change (under fencing the Secondary of a Primary/Secondary pair is outdated); the
    /// driver closes the links once this succeeded. Without a connected peer it succeeds at
    /// once.
    Disconnect,
    /// `drbdadm resume-io`: lift `suspend-io`, and the freeze of `fencing
    /// resource-and-stonith` (after a fence-peer handler that failed).
    ResumeIo,
    /// `drbdadm suspend-io`: new application requests wait (queued, not failed) until
    /// `resume-io`; those already started finish.
    SuspendIo,
}

/// Which metadata area a write was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaArea {
    Superblock,
    ActivityLog,
    Bitmap,
}

impl std::fmt::Display for MetaArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MetaArea::Superblock => "superblock",
            MetaArea::ActivityLog => "activity log",
            MetaArea::Bitmap => "bitmap",
        })
    }
}

/// Why a metadata write failed (the driver's report in [`Input::MetaWritten`],
/// [`Input::AlWritten`], [`Input::BitmapWritten`]), or why what waited for one got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// The device failed the write or its flush: `errno`, and the device's own words.
    #[error("{area} write failed (errno {errno}): {detail}")]
    Io {
        area: MetaArea,
        errno: i32,
        detail: String,
    },
    /// What was to be written does not fit the metadata area (a bug or a changed device).
    #[error("{area} write refused: {detail}")]
    Geometry { area: MetaArea, detail: String },
    /// The write was never issued: the metadata writer had stopped.
    #[error("{area} write not issued: the metadata writer has stopped")]
    Stopped { area: MetaArea },
    /// The flush of the data device an activity-log eviction waits for failed.
    #[error("flushing the data device before an activity-log update failed (errno {errno})")]
    DataFlush { errno: i32 },
    /// The resource went away while the command waited.
    #[error("the resource went away")]
    Gone,
}

/// Why an administrative command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("State change failed: {0}")]
    State(#[from] StateError),
    #[error("Failure: (119) {0}")]
    Meta(MetaError),
    /// DRBD's `ERR_DISCARD_IMPOSSIBLE`.
    #[error("Failure: (123) --discard-my-data not allowed when primary.")]
    DiscardMyDataPrimary,
    /// DRBD's `ERR_DISK_TOO_SMALL`: `resize --size` beyond what the backing device holds.
    #[error("Failure: (111) Low.dev. smaller than requested DRBD-dev. size.")]
    DiskTooSmall,
    /// DRBD's `ERR_RESIZE_RESYNC`.
    #[error("Failure: (130) Resize not allowed during resync.")]
    ResizeResync,
    /// DRBD's `ERR_NET_CONFIGURED`: `forget-peer` of a peer whose connection is not
    /// StandAlone.
    #[error("Failure: (125) Device has a net-config (use disconnect first)")]
    NetConfigured,
}

impl AdminError {
    /// drbdsetup's exit code: a state change refusal has its own; a `Failure: (N)` is 10.
    pub fn exit_code(&self) -> i32 {
        match self {
            AdminError::State(s) => s.exit_code(),
            AdminError::Meta(_)
            | AdminError::DiscardMyDataPrimary
            | AdminError::DiskTooSmall
            | AdminError::ResizeResync
            | AdminError::NetConfigured => 10,
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
    /// An NBD client wants to open the device (`NBD_OPT_GO`), answered with
    /// [`Action::Opened`]. A Primary accepts; a Secondary promotes first when `auto-promote`
    /// is on and promotion is possible (with a peer, through a cluster-wide change). The
    /// promotion is persisted before any I/O of the client is served.
    Open {
        token: u64,
    },
    Io {
        id: ReqId,
        op: IoOp,
    },
    /// A request of the kernel block device (`/dev/drbdN` through the kernel NBD client,
    /// src/daemon/kdev.rs). The kernel does not tell a server who opens the device or how,
    /// so it counts as DRBD's read-only opener on a Secondary: reads (and flushes) are served
    /// wherever the data is accessible, writes only on a Primary.
    DeviceIo {
        id: ReqId,
        op: IoOp,
    },
    DiskDone {
        id: ReqId,
        result: Result<Option<bytes::Bytes>, i32>,
    },
    MetaWritten {
        generation: u64,
        result: Result<(), MetaError>,
    },
    AlWritten {
        seq: u64,
        result: Result<(), MetaError>,
    },
    BitmapWritten {
        result: Result<(), MetaError>,
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
    /// What [`Action::GrowDisk`] found: the bytes the data area can hold now.
    DiskGrew {
        result: Result<u64, MetaError>,
    },
    /// `drbdadm adjust`: the options that changed in the configuration, applied to the running
    /// resource. Peers are matched by node id (adjust refuses to add or remove one); a running
    /// resync or verify takes the new controller settings at once, as DRBD's do.
    Reconfigure(Box<Settings>),
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
    /// Reply to the open request `token` ([`Input::Open`]).
    Opened {
        token: u64,
        result: Result<(), OpenRefusal>,
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
    /// The backing device may have grown (`drbdadm resize` here or on a peer): move internal
    /// metadata to its new end (after the metadata writes already asked for) and answer with
    /// [`Input::DiskGrew`].
    GrowDisk,
    /// Stop (`paused`) or resume reading `node`'s data stream: the requests done for it hold
    /// `max-buffers` (DRBD's receiver blocks the same way), so TCP pushes back on the peer
    /// instead of its writes and resync requests queueing here without limit. The control
    /// stream (acks, pings) is read on either way. Applies to later links too until resumed.
    ReceiveData { node: NodeId, paused: bool },
}

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
    /// I/O frozen by `drbdadm suspend-io` (DRBD's `suspended:user`).
    pub suspended_user: bool,
    /// I/O frozen for lack of quorum (`on-no-quorum suspend-io`; DRBD's `suspended:quorum`).
    pub suspended_quorum: bool,
    /// This node has quorum (always yes with `quorum off`).
    pub quorum: bool,
    /// New application requests wait instead of starting: I/O is suspended, or requests are
    /// frozen (no access to data) (DRBD's `blocked:upper`, `!may_inc_ap_bio()`).
    pub io_blocked: bool,
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
    /// Payload of application writes sent to the peer and not yet acknowledged by it
    /// (DRBD's `ap-in-flight`, which it prints in sectors).
    pub ap_in_flight_bytes: u64,
    /// Resync data requested from the peer and not yet written here (DRBD's
    /// `rs-in-flight`).
    pub rs_in_flight_bytes: u64,
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
    /// Two primaries: peer writes found concurrent with local ones (superseded, retried or
    /// held for the peer's decision).
    pub concurrent_writes: u64,
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
