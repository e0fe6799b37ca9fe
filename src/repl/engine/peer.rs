//! Everything the engine holds about one configured peer, in one place: its configuration,
//! its states (read-only here, changed through `states`), the handshake, resync and verify in
//! progress, and the [`Session`] of the current connection.

use super::PeerInfo;
use super::connection::Handshake;
use super::resync::Resync;
use super::states::PeerStates;
use super::verify::Verify;
use crate::config::Protocol;
use crate::repl::state::ReplState;
use crate::types::GenUuid;
use std::collections::BTreeMap;

/// One configured peer.
#[derive(Debug)]
pub(super) struct Peer {
    pub info: PeerInfo,
    pub st: PeerStates,
    /// The protocol of the current (or last) link.
    pub protocol: Protocol,
    /// While the handshake runs: what the peer has sent so far.
    pub hs: Option<Handshake>,
    /// The resync with this peer, from its start until it finishes.
    pub rs: Option<Resync>,
    /// An online verify with this peer (`VerifyS`/`VerifyT`).
    pub ov: Option<Verify>,
    /// Replication with this peer, from the handshake's decision until the link goes.
    pub session: Option<Session>,
    /// The replication state the peer last reported (its `State`): a SyncSource ends its
    /// resync when its target, having been SyncTarget, reports Established.
    pub peer_repl: ReplState,
    /// The peer's `Sizes` asking to grow (`drbdadm resize` there) and the handshake packets
    /// after it, held until this disk has checked its own backing device (see `grow`).
    pub pending_resize: Option<Vec<crate::repl::wire::Packet>>,
    /// `pause-sync` here / on the peer.
    pub user_paused: bool,
    pub peer_paused: bool,
    /// Bytes of data received from / sent to the peer (status `received:`/`sent:`).
    pub received: u64,
    pub sent: u64,
    /// Replication was established with this peer since the disk was attached: a later
    /// handshake is a reconnect (`UUID_FLAG_RECONNECT`), not a fresh start.
    pub was_established: bool,
    /// The peer's current UUID from its last `Uuids` (a SyncTarget adopts it at the end).
    pub peer_current: GenUuid,
    /// The peer's history UUIDs from its last `Uuids`, newest first: a SyncTarget takes them
    /// over with the data (three nodes: its own history may lack generations it skipped).
    pub peer_history: Vec<GenUuid>,
    /// `connect --discard-my-data`: this node gives up its changes in the next split brain.
    /// Sent in `ProtocolParams` and `Uuids`; cleared once a handshake has decided.
    pub discard_my_data: bool,
    /// `connect --tentative`: the next handshake only reports what it would do.
    pub tentative: bool,
    /// Counts the links lost: requests done for this peer remember it, so one that finishes
    /// after its link went does not answer or feed a later connection (DRBD drains them
    /// before it reconnects; here they may finish any time, and are ignored).
    pub link_gen: u64,
    /// The peer said it has quorum (its last `State`; false while disconnected).
    pub peer_quorate: bool,
    /// Resync requests of this peer (sector, block id, size, csum digest) that wait until
    /// this node's own disk is no longer Inconsistent (it is the target of another resync
    /// and would serve data it does not have yet).
    pub deferred_rs: Vec<(crate::types::Sector, u64, u32, Option<bytes::Bytes>)>,
    /// This node asked the peer for a resync of the rest (`resync_elsewhere`), on this link,
    /// and that resync has not ended yet.
    pub resync_asked: bool,
    /// Reading this peer's data stream is paused (`max-buffers`, [`super::Action::ReceiveData`]).
    pub receive_paused: bool,
    /// The weak mask of the peer's last `CurrentUuid`: the diskful nodes a Primary's writes do
    /// not reach (see `weak`). 0 while disconnected.
    pub weak: u64,
}

impl Peer {
    pub fn new(info: PeerInfo) -> Peer {
        Peer {
            info,
            st: PeerStates::new(),
            protocol: Protocol::C,
            hs: None,
            rs: None,
            ov: None,
            session: None,
            peer_repl: ReplState::Off,
            pending_resize: None,
            user_paused: false,
            peer_paused: false,
            received: 0,
            sent: 0,
            was_established: false,
            peer_current: GenUuid::ZERO,
            peer_history: Vec::new(),
            discard_my_data: false,
            tentative: false,
            link_gen: 0,
            peer_quorate: false,
            deferred_rs: Vec::new(),
            resync_asked: false,
            receive_paused: false,
            weak: 0,
        }
    }

    /// The replication state as status shows it (a paused resync is `PausedSync*`).
    pub fn shown_repl(&self) -> ReplState {
        let paused = self.user_paused || self.peer_paused;
        match self.st.repl() {
            ReplState::SyncSource if paused => ReplState::PausedSyncS,
            ReplState::SyncTarget if paused => ReplState::PausedSyncT,
            r => r,
        }
    }

    /// Replication with this peer is established (the handshake decided, the link is up).
    pub fn replicating(&self) -> bool {
        self.session.is_some()
    }
}

/// One established connection's replication state: the transfer log and epochs of what this
/// node sends, the barriers of what it receives.
#[derive(Debug)]
pub(super) struct Session {
    pub protocol: Protocol,
    /// The epoch writes are currently sent in.
    pub epoch: u32,
    pub epoch_writes: u32,
    pub seq: u32,
    /// Replicated writes not yet covered by a BarrierAck: (epoch, offset, len).
    pub tl: Vec<(u32, u64, u64)>,
    /// Peer side: writes received in the current epoch, and per epoch how many are not yet
    /// on disk.
    pub rx_epoch_writes: u32,
    pub rx_pending: BTreeMap<u32, u32>,
    /// Peer side: barriers received whose writes are not all done: (epoch, set size).
    pub rx_barriers: Vec<(u32, u32)>,
    pub rx_epoch: u32,
    /// The `seq` of the last Data received (two primaries: what our writes have seen).
    pub rx_seq: u32,
    /// Peer side: writes received and not yet covered by the sender's `PeerAck` (see
    /// `peer_ack`).
    pub rx_unacked: super::peer_ack::Unacked,
    /// Sender side: the last `seq` announced in a `PeerAck`.
    pub peer_acked: u32,
    /// `allow-two-primaries`: writes arrive while this node is Primary, and concurrent ones
    /// are resolved (`engine::conflicts`).
    pub two_primaries: bool,
    /// This node decides concurrent writes (DRBD's `RESOLVE_CONFLICTS`: the higher node id).
    pub resolves: bool,
}

impl Session {
    pub fn new(protocol: Protocol, two_primaries: bool, resolves: bool) -> Session {
        Session {
            rx_seq: 0,
            two_primaries,
            resolves,
            protocol,
            epoch: 1,
            epoch_writes: 0,
            seq: 0,
            tl: Vec::new(),
            rx_epoch_writes: 0,
            rx_pending: BTreeMap::new(),
            rx_barriers: Vec::new(),
            rx_epoch: 1,
            rx_unacked: super::peer_ack::Unacked::new(),
            peer_acked: 0,
        }
    }
}
