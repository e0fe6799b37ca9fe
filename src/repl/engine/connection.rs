//! Per-peer connection state and the connect handshake (DRBD's `drbd_connected()` and
//! `drbd_sync_handshake()`).
//!
//! When the driver reports an authenticated link ([`Input::PeerUp`]) both sides send `Sizes`,
//! `Uuids` and `State`, in that order on the data stream. Once all three of the peer's have
//! arrived, each side decides on its own, from the same facts, with
//! [`handshake::uuid_compare`] and [`handshake::resolve_split_brain`] (the two decisions mirror
//! each other):
//!
//! - no sync: replication starts (`Established`); two consistent disks of the same generation
//!   are both UpToDate;
//! - a sync direction: both sides send their bitmap for the other (`WFBitMapS`/`WFBitMapT`), OR
//!   the peer's into their own, and the resync starts (see `resync`);
//! - split brain, unrelated data, a too small peer, two Primaries: the link is dropped and the
//!   connection goes StandAlone, with DRBD's log lines.
//!
//! From the decision on, application writes are replicated to the peer (also to a SyncTarget),
//! so a write is either in the bitmap that was sent or on its way as `Data`.

use super::replicate::Link;
use super::{Action, Engine, rotate_current};
use crate::config::Protocol;
use crate::meta::superblock::flags;
use crate::repl::digest::DigestAlg;
use crate::repl::handshake::{self, SbContext, SbPolicy, SizeInput, SyncStrategy, UuidSet};
use crate::repl::state::{ConnState, DiskState, ReplState, Role};
use crate::repl::wire::{Packet, SizesFlags, StateFlags, UuidFlags};
use crate::types::{BM_BLOCK_SIZE, GenUuid, NodeId, SECTOR_SIZE, Sector};

/// One configured peer, as this node sees it.
#[derive(Debug)]
pub(super) struct PeerConn {
    pub conn: ConnState,
    pub repl: ReplState,
    pub role: Role,
    pub disk: DiskState,
    pub protocol: Protocol,
    /// While the handshake runs: what the peer has sent so far.
    pub hs: Option<Handshake>,
    /// The resync with this peer, from the decision until it finishes.
    pub rs: Option<super::resync::Resync>,
    /// An online verify with this peer (`VerifyS`/`VerifyT`).
    pub ov: Option<super::verify::Verify>,
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
    /// `connect --discard-my-data`: this node gives up its changes in the next split brain.
    /// Sent in `ProtocolParams` and `Uuids`; cleared once a handshake has decided.
    pub discard_my_data: bool,
}

impl PeerConn {
    pub fn new() -> PeerConn {
        PeerConn {
            conn: ConnState::StandAlone,
            repl: ReplState::Off,
            role: Role::Unknown,
            disk: DiskState::DUnknown,
            protocol: Protocol::C,
            hs: None,
            rs: None,
            ov: None,
            user_paused: false,
            peer_paused: false,
            received: 0,
            sent: 0,
            was_established: false,
            peer_current: GenUuid::ZERO,
            discard_my_data: false,
        }
    }

    /// The replication state as status shows it (a paused resync is `PausedSync*`).
    pub fn shown_repl(&self) -> ReplState {
        let paused = self.user_paused || self.peer_paused;
        match self.repl {
            ReplState::SyncSource if paused => ReplState::PausedSyncS,
            ReplState::SyncTarget if paused => ReplState::PausedSyncT,
            r => r,
        }
    }
}

/// What the peer has sent of its handshake.
#[derive(Debug, Default)]
pub(super) struct Handshake {
    sizes: Option<Sector>,
    uuids: Option<PeerUuids>,
    state: Option<(Role, DiskState)>,
    /// Set once decided: the bitmap chunks received so far (the peer's bitmap for us).
    bitmap: Option<Vec<u8>>,
    /// The direction decided, while the bitmaps are exchanged.
    pub strategy: Option<SyncStrategy>,
    /// When it started (a handshake that never ends would keep writes suspended).
    started: crate::types::Time,
}

/// A handshake that has not decided by then is given up (and retried).
const HANDSHAKE_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, Clone)]
struct PeerUuids {
    current: GenUuid,
    bitmap: GenUuid,
    history: Vec<GenUuid>,
    dirty_bits: u64,
    flags: UuidFlags,
}

impl Engine {
    /// The connection state of `node` (created on first use for a configured peer).
    pub(super) fn conn_mut(&mut self, node: NodeId) -> Option<&mut PeerConn> {
        if !self.cfg.peers.iter().any(|p| p.node_id == node) {
            return None;
        }
        Some(self.conns.entry(node).or_insert_with(PeerConn::new))
    }

    pub(super) fn peer_connecting(&mut self, node: NodeId) {
        let Some(c) = self.conn_mut(node) else {
            return;
        };
        if c.conn != ConnState::Connecting {
            let old = c.conn;
            c.conn = ConnState::Connecting;
            self.log(format!("peer {node}: conn( {old} -> Connecting )"));
        }
    }

    /// The link is up: start the handshake.
    pub(super) fn handshake_start(&mut self, node: NodeId, protocol: Protocol) {
        self.fence_peer_up(node);
        let now = self.now;
        let Some(c) = self.conn_mut(node) else {
            return self.log(format!("ignoring unknown peer node-id {node}"));
        };
        let old = c.conn;
        c.conn = ConnState::Connected;
        c.repl = ReplState::Off;
        c.protocol = protocol;
        c.hs = Some(Handshake {
            started: now,
            ..Handshake::default()
        });
        c.rs = None;
        c.ov = None;
        c.peer_paused = false;
        self.log(format!(
            "peer {node}: conn( {old} -> Connected ) protocol {protocol:?}"
        ));
        let Some(d) = self.disk.as_ref() else {
            self.log(format!(
                "peer {node}: this node has no disk attached; a diskless node cannot connect in \
                 this build (attach first; the link keeps retrying)"
            ));
            return self.drop_link(node, false);
        };
        let sectors = d.data_bytes / SECTOR_SIZE;
        let sizes = Packet::Sizes {
            backing: Sector(sectors),
            user: Sector(0),
            current: Sector(sectors),
            max_bio_size: crate::repl::wire::MAX_DATA_LEN as u32,
            flags: SizesFlags::empty(),
        };
        let discard_my_data = self.conns.get(&node).is_some_and(|c| c.discard_my_data);
        let extra = if discard_my_data {
            UuidFlags::DISCARD_MY_DATA
        } else {
            UuidFlags::empty()
        };
        let uuids = self.my_uuids_packet(node, extra);
        let state = self.my_state_packet(node);
        let policy = self.sb_policy(node);
        let info = self.peer_info(node);
        // P_PROTOCOL first: both sides must run the same replication protocol.
        let params = Packet::ProtocolParams {
            protocol,
            after_sb_0pri: policy.after_sb_0pri,
            after_sb_1pri: policy.after_sb_1pri,
            after_sb_2pri: policy.after_sb_2pri,
            two_primaries: false,
            discard_my_data,
            dry_run: false,
            integrity_alg: DigestAlg::name_of(info.and_then(|p| p.integrity_alg)).to_string(),
        };
        // The digests both sides compute must be the same (DRBD's P_SYNC_PARAM89).
        let verify_alg = DigestAlg::name_of(info.and_then(|p| p.verify_alg)).to_string();
        let csums_alg = DigestAlg::name_of(info.and_then(|p| p.csums_alg)).to_string();
        let sync_params = Packet::SyncParams {
            resync_rate: 0,
            c_plan_ahead: 0,
            c_delay_target: 0,
            c_fill_target: 0,
            c_max_rate: 0,
            c_min_rate: 0,
            verify_alg,
            csums_alg,
        };
        for packet in [params, sync_params, sizes, uuids, state] {
            self.send(node, packet);
        }
    }

    /// When the oldest undecided handshake is given up.
    pub(super) fn handshake_deadline(&self) -> Option<crate::types::Time> {
        self.conns
            .values()
            .filter_map(|c| c.hs.as_ref().filter(|h| h.strategy.is_none()))
            .map(|h| h.started.plus_ms(HANDSHAKE_TIMEOUT_MS))
            .min()
    }

    pub(super) fn check_handshake_timeout(&mut self) {
        let now = self.now;
        let late: Vec<NodeId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.hs.as_ref().is_some_and(|h| {
                    h.strategy.is_none() && h.started.plus_ms(HANDSHAKE_TIMEOUT_MS) <= now
                })
            })
            .map(|(n, _)| *n)
            .collect();
        for node in late {
            self.log(format!(
                "peer {node}: the handshake did not finish in time; reconnecting"
            ));
            self.drop_link(node, false);
        }
    }

    /// `Uuids` as this node would send them to `node`.
    pub(super) fn my_uuids_packet(&self, node: NodeId, extra: UuidFlags) -> Packet {
        let (current, bitmap, history, dirty, mut fl) = match self.disk.as_ref() {
            Some(d) => {
                let peer = d.sb.peer(node);
                let mut fl = UuidFlags::empty();
                if d.sb.flags & flags::CRASHED_PRIMARY != 0 {
                    fl = fl | UuidFlags::CRASHED_PRIMARY;
                }
                if d.sb.current_uuid.same_as(GenUuid::JUST_CREATED) {
                    fl = fl | UuidFlags::JUST_CREATED;
                }
                (
                    d.sb.current_uuid,
                    peer.map_or(GenUuid::ZERO, |p| p.bitmap_uuid),
                    d.sb.history.to_vec(),
                    d.bitmap(node).map_or(0, |b| b.count()),
                    fl,
                )
            }
            None => (
                GenUuid::ZERO,
                GenUuid::ZERO,
                Vec::new(),
                0,
                UuidFlags::empty(),
            ),
        };
        if self.disk_state < DiskState::Consistent {
            fl = fl | UuidFlags::INCONSISTENT;
        }
        if self.conns.get(&node).is_some_and(|c| c.was_established) {
            fl = fl | UuidFlags::RECONNECT;
        }
        Packet::Uuids {
            current,
            bitmap,
            history,
            dirty_bits: dirty,
            flags: UuidFlags(fl.bits() | extra.bits()),
        }
    }

    /// `State` as this node would send it to `node`.
    pub(super) fn my_state_packet(&self, node: NodeId) -> Packet {
        let c = self.conns.get(&node);
        let mut fl = StateFlags::empty();
        if c.is_some_and(|c| c.user_paused) {
            fl = StateFlags(fl.bits() | StateFlags::USER_ISP.bits());
        }
        Packet::State {
            role: self.role,
            peer_role: c.map_or(Role::Unknown, |c| c.role),
            disk: self.disk_state,
            peer_disk: c.map_or(DiskState::DUnknown, |c| c.disk),
            conn: ConnState::Connected,
            repl: c.map_or(ReplState::Off, |c| c.repl),
            flags: fl,
        }
    }

    /// Tells every connected peer about a change of role, disk state or pause flags.
    pub(super) fn broadcast_state(&mut self) {
        for node in self.established_peers() {
            let p = self.my_state_packet(node);
            self.send(node, p);
        }
    }

    pub(super) fn send(&mut self, node: NodeId, packet: Packet) {
        if let Some(c) = self.conns.get_mut(&node) {
            c.sent += packet.data_len() as u64;
        }
        self.actions.push_back(Action::Send { node, packet });
    }

    /// Asks the driver to close the link; the engine acts as if it were gone already.
    pub(super) fn drop_link(&mut self, node: NodeId, standalone: bool) {
        self.actions
            .push_back(Action::DropLink { node, standalone });
        self.link_lost(node, standalone);
    }

    /// The link to `node` is gone (reported by the driver, or dropped by us).
    pub(super) fn link_lost(&mut self, node: NodeId, standalone: bool) {
        // Before `peer_down` completes the writes that waited for the peer: under
        // resource-and-stonith they must stay unacknowledged until the peer is fenced.
        let known = self.fence_link_lost(node);
        self.peer_down(node);
        let Some(c) = self.conns.get_mut(&node) else {
            return;
        };
        let new = if standalone {
            ConnState::StandAlone
        } else {
            ConnState::Connecting
        };
        let old = c.conn;
        let was_syncing = c.rs.is_some();
        c.conn = new;
        c.repl = ReplState::Off;
        c.role = Role::Unknown;
        c.disk = DiskState::DUnknown;
        c.hs = None;
        c.rs = None;
        let was_verifying = c.ov.take().is_some();
        c.peer_paused = false;
        if let Some(disk) = known {
            // DRBD keeps an Outdated or Inconsistent peer disk while disconnected: that peer
            // cannot have newer data, which is what promotion under fencing asks.
            c.disk = disk;
        }
        if was_verifying {
            self.log(format!(
                "peer {node}: online verify interrupted by the lost link"
            ));
        }
        if old != new {
            self.log(format!("peer {node}: conn( {old} -> {new} )"));
        }
        if was_syncing {
            self.log(format!(
                "peer {node}: resync interrupted; it continues from the bitmap on reconnect"
            ));
        }
    }

    /// A handshake packet, or a state update once connected.
    pub(super) fn handshake_packet(&mut self, node: NodeId, packet: Packet) {
        let Some(c) = self.conns.get_mut(&node) else {
            return;
        };
        let Some(hs) = c.hs.as_mut() else {
            return self.connected_packet(node, packet);
        };
        match packet {
            Packet::ProtocolParams {
                protocol,
                after_sb_0pri,
                after_sb_1pri,
                after_sb_2pri,
                integrity_alg,
                ..
            } => {
                let mine = DigestAlg::name_of(self.peer_info(node).and_then(|p| p.integrity_alg));
                if mine != integrity_alg {
                    // DRBD's `receive_protocol()`: both ends must digest the same way.
                    self.log(format!(
                        "peer {node}: incompatible data-integrity-alg (mine \"{mine}\", peer's \
                         \"{integrity_alg}\"); set the same data-integrity-alg on both nodes"
                    ));
                    return self.drop_link(node, true);
                }
                let Some(c) = self.conns.get_mut(&node) else {
                    return;
                };
                if protocol != c.protocol {
                    let mine = c.protocol;
                    self.log(format!(
                        "peer {node}: incompatible communication protocols (mine {mine:?}, \
                         peer's {protocol:?}); set the same `protocol` on both nodes"
                    ));
                    return self.drop_link(node, true);
                }
                // Both sides must resolve a split brain the same way, or each would pick
                // itself (DRBD's `receive_protocol()`).
                let mine = self.sb_policy(node);
                let theirs = SbPolicy {
                    after_sb_0pri,
                    after_sb_1pri,
                    after_sb_2pri,
                    ..mine
                }
                .mirrored();
                let differs = [
                    ("after-sb-0pri", mine.after_sb_0pri != theirs.after_sb_0pri),
                    ("after-sb-1pri", mine.after_sb_1pri != theirs.after_sb_1pri),
                    ("after-sb-2pri", mine.after_sb_2pri != theirs.after_sb_2pri),
                ]
                .into_iter()
                .find(|d| d.1);
                if let Some((what, _)) = differs {
                    self.log(format!(
                        "peer {node}: incompatible {what} settings; set the same policy on both \
                         nodes (discard-node-NAME names the same node on both)"
                    ));
                    return self.drop_link(node, true);
                }
                return;
            }
            Packet::SyncParams {
                verify_alg,
                csums_alg,
                ..
            } => {
                let info = self.peer_info(node);
                let mine_v = DigestAlg::name_of(info.and_then(|p| p.verify_alg));
                let mine_c = DigestAlg::name_of(info.and_then(|p| p.csums_alg));
                for (what, mine, theirs) in [
                    ("verify-alg", mine_v, verify_alg.as_str()),
                    ("csums-alg", mine_c, csums_alg.as_str()),
                ] {
                    if mine != theirs {
                        self.log(format!(
                            "peer {node}: Different {what} settings. me=\"{mine}\" \
                             peer=\"{theirs}\"; set the same {what} on both nodes"
                        ));
                        return self.drop_link(node, true);
                    }
                }
                return;
            }
            Packet::Sizes { backing, .. } => hs.sizes = Some(backing),
            Packet::Uuids {
                current,
                bitmap,
                history,
                dirty_bits,
                flags,
            } => {
                hs.uuids = Some(PeerUuids {
                    current,
                    bitmap,
                    history,
                    dirty_bits,
                    flags,
                })
            }
            Packet::State {
                role, disk, flags, ..
            } => {
                hs.state = Some((role, disk));
                c.role = role;
                c.disk = disk;
                c.peer_paused = flags.contains(StateFlags::USER_ISP);
            }
            Packet::BitmapRle { chunk, last, data } => {
                return self.bitmap_chunk(node, chunk, last, &data);
            }
            other => {
                return self.log(format!(
                    "peer {node}: {:?} during the handshake ignored",
                    other.packet_type()
                ));
            }
        }
        self.maybe_decide(node);
    }

    fn maybe_decide(&mut self, node: NodeId) {
        let Some(hs) = self.conns.get(&node).and_then(|c| c.hs.as_ref()) else {
            return;
        };
        if hs.strategy.is_some() {
            return;
        }
        let (Some(peer_size), Some(pu), Some((peer_role, peer_disk))) =
            (hs.sizes, hs.uuids.clone(), hs.state)
        else {
            return;
        };
        let Some(d) = self.disk.as_ref() else {
            return self.drop_link(node, true);
        };
        // Sizes: never shrink a device that holds data.
        let size = match handshake::check_sizes(&SizeInput {
            my_max: Sector(d.data_bytes / SECTOR_SIZE),
            peer_max: peer_size,
            user_size: Sector(0),
            last_agreed: Sector(d.sb.la_size_sect),
            my_disk: self.disk_state,
        }) {
            Ok(s) => s,
            Err(refusal) => {
                self.log(format!("peer {node}: {refusal}"));
                return self.drop_link(node, true);
            }
        };
        if size.bytes() < d.data_bytes {
            self.shrink_to(size.bytes());
        }
        let Some(info) = self.peer_info(node).cloned() else {
            return;
        };
        let protocol = self.conns.get(&node).map_or(Protocol::C, |c| c.protocol);
        let me = self.my_uuid_set(node, protocol);
        let peer = UuidSet {
            node_id: node,
            current: pu.current,
            bitmap: pu.bitmap,
            history: pu.history.clone(),
            crashed_primary: pu.flags.contains(UuidFlags::CRASHED_PRIMARY),
            reconnect: pu.flags.contains(UuidFlags::RECONNECT),
            primary_lost_quorum: pu.flags.contains(UuidFlags::PRIMARY_LOST_QUORUM),
            role: peer_role,
            disk: peer_disk,
            discard_my_data: pu.flags.contains(UuidFlags::DISCARD_MY_DATA),
            dirty_bits: pu.dirty_bits,
            protocol,
        };
        let decision = handshake::uuid_compare(&me, &peer);
        self.log(format!("peer {node}: {decision}"));
        let outcome = handshake::resolve_split_brain(
            decision,
            &SbContext {
                me: &me,
                peer: &peer,
                policy: info.sb_policy,
            },
        );
        for line in &outcome.log {
            self.log(format!("peer {node}: {line}"));
        }
        for &handler in &outcome.handlers {
            self.run_handler(handler, Some(node));
        }
        if outcome.fixup == Some(handshake::Fixup::PushOwnBitmapToHistory) {
            self.bitmap_uuid_to_history(node);
        }
        if let Some(c) = self.conns.get_mut(&node) {
            c.peer_current = pu.current;
        }
        if outcome.disconnects() {
            let retry = outcome.strategy == SyncStrategy::SyncTargetPrimaryReconnect;
            return self.drop_link(node, !retry);
        }
        if outcome.demote_first {
            // call-pri-lost-after-sb chose this Primary's data to be discarded: it must stop
            // being Primary first (DRBD's `drbd_asb_recover_1p()`/`_2p()`).
            if self.open_count > 0 {
                self.log(format!(
                    "peer {node}: cannot give up primary role ({} NBD client(s) hold the \
                     export open); calling pri-lost-after-sb",
                    self.open_count
                ));
                self.run_handler(crate::repl::handler::Handler::PriLostAfterSb, Some(node));
                self.log(format!("peer {node}: {}", handshake::msg::SB_UNRESOLVED));
                return self.drop_link(node, true);
            }
            self.demote();
            self.log(format!("peer {node}: Successfully gave up primary role."));
        }
        if let Some(c) = self.conns.get_mut(&node)
            && c.discard_my_data
        {
            // Used: a later split brain needs a new decision by the operator.
            c.discard_my_data = false;
        }
        // The peer's side of the same decision: under call-pri-lost-after-sb the peer may be
        // about to give up its Primary role (both sides run the same policies: ProtocolParams
        // refuses a connection whose policies differ).
        let peer_demotes = || {
            handshake::resolve_split_brain(
                handshake::uuid_compare(&peer, &me),
                &SbContext {
                    me: &peer,
                    peer: &me,
                    policy: info.sb_policy.mirrored(),
                },
            )
            .demote_first
        };
        if self.role == Role::Primary && peer_role == Role::Primary && !peer_demotes() {
            self.log(format!(
                "peer {node}: both nodes are Primary and allow-two-primaries is not supported; \
                 dropping connection"
            ));
            return self.drop_link(node, true);
        }
        let strategy = outcome.strategy;
        self.start_replication(node, protocol);
        if strategy == SyncStrategy::NoSync {
            return self.established_in_sync(node, peer_disk);
        }
        let source = strategy.is_sync_source();
        let full = matches!(
            strategy,
            SyncStrategy::SourceSetBitmap | SyncStrategy::TargetSetBitmap
        );
        if full && let Some(d) = self.disk.as_mut() {
            let bytes = d.data_bytes;
            d.mark(node, 0, bytes);
        }
        if let Some(c) = self.conns.get_mut(&node) {
            c.repl = if source {
                ReplState::WFBitMapS
            } else {
                ReplState::WFBitMapT
            };
            if let Some(hs) = c.hs.as_mut() {
                hs.strategy = Some(strategy);
                hs.bitmap = Some(Vec::new());
            }
        }
        self.send_bitmap(node);
    }

    /// `connect --discard-my-data` (or a plain `connect`, which clears it).
    pub(super) fn set_discard_my_data(&mut self, discard: bool) {
        let nodes: Vec<NodeId> = self.cfg.peers.iter().map(|p| p.node_id).collect();
        for node in nodes {
            if let Some(c) = self.conn_mut(node) {
                c.discard_my_data = discard;
            }
        }
        if discard {
            self.log(
                "connect --discard-my-data: this node's changes are discarded if the next \
                 handshake finds a split brain"
                    .to_string(),
            );
        }
    }

    /// The after-split-brain policies toward `node`.
    fn sb_policy(&self, node: NodeId) -> SbPolicy {
        self.peer_info(node)
            .map(|p| p.sb_policy)
            .unwrap_or_default()
    }

    /// Asks the driver to run `handler` (if the config defines it).
    pub(super) fn run_handler(
        &mut self,
        handler: crate::repl::handler::Handler,
        node: Option<NodeId>,
    ) {
        self.actions.push_back(Action::RunHandler { handler, node });
    }

    /// This node's side of the UUID comparison toward `node`.
    fn my_uuid_set(&self, node: NodeId, protocol: Protocol) -> UuidSet {
        let d = self.disk.as_ref();
        UuidSet {
            node_id: self.cfg.node_id,
            current: d.map_or(GenUuid::ZERO, |d| d.sb.current_uuid),
            bitmap: d
                .and_then(|d| d.sb.peer(node))
                .map_or(GenUuid::ZERO, |p| p.bitmap_uuid),
            history: d.map_or(Vec::new(), |d| d.sb.history.to_vec()),
            crashed_primary: d.is_some_and(|d| d.sb.flags & flags::CRASHED_PRIMARY != 0),
            reconnect: self.conns.get(&node).is_some_and(|c| c.was_established),
            primary_lost_quorum: false,
            role: self.role,
            disk: self.disk_state,
            discard_my_data: self.conns.get(&node).is_some_and(|c| c.discard_my_data),
            dirty_bits: d.and_then(|d| d.bitmap(node)).map_or(0, |b| b.count()),
            protocol,
        }
    }

    /// From the decision on, writes go to the peer as well (see the module docs).
    fn start_replication(&mut self, node: NodeId, protocol: Protocol) {
        self.links.insert(node, Link::new(protocol));
        // In the same generation as the peer: a UUID that was due is not needed any more.
        self.new_uuid_due = false;
        if let Some(c) = self.conns.get_mut(&node) {
            c.was_established = true;
        }
    }

    /// No resync: both sides hold the same generation.
    fn established_in_sync(&mut self, node: NodeId, peer_disk: DiskState) {
        let consistent = |s: DiskState| s >= DiskState::Outdated && s != DiskState::DUnknown;
        let both = consistent(self.disk_state) && consistent(peer_disk);
        if both && self.disk_state != DiskState::UpToDate {
            self.set_up_to_date();
        }
        if let Some(c) = self.conns.get_mut(&node) {
            c.hs = None;
            c.repl = ReplState::Established;
            if both {
                c.disk = DiskState::UpToDate;
            }
        }
        self.log(format!("peer {node}: repl( Off -> Established )"));
        self.clear_crashed_primary();
        self.broadcast_state();
        self.maybe_unfence(node);
    }

    /// The disk holds the newest data (a handshake or a finished resync said so).
    pub(super) fn set_up_to_date(&mut self) {
        if let Some(d) = self.disk.as_mut() {
            d.sb.flags |= flags::CONSISTENT | flags::WAS_UP_TO_DATE;
        }
        if self.disk_state != DiskState::UpToDate {
            self.log(format!("disk( {} -> UpToDate )", self.disk_state));
            self.disk_state = DiskState::UpToDate;
        }
        self.sb_changed();
    }

    /// A handshake settled what the crash left open: the flag has done its job.
    fn clear_crashed_primary(&mut self) {
        if let Some(d) = self.disk.as_mut()
            && d.sb.flags & flags::CRASHED_PRIMARY != 0
        {
            d.sb.flags &= !flags::CRASHED_PRIMARY;
            self.sb_changed();
        }
    }

    /// DRBD's "missed the resync finished event, corrected myself".
    fn bitmap_uuid_to_history(&mut self, node: NodeId) {
        if self
            .disk
            .as_mut()
            .is_some_and(|d| d.bitmap_uuid_to_history(node))
        {
            self.sb_changed();
        }
    }

    /// Both disks agreed on a smaller size (only possible while this one holds no data).
    fn shrink_to(&mut self, bytes: u64) {
        if let Some(d) = self.disk.as_mut() {
            self.actions.push_back(Action::Log(format!(
                "{}: the peer's disk is smaller: device size {} -> {} KiB",
                self.cfg.resource,
                d.data_bytes / 1024,
                bytes / 1024
            )));
            d.data_bytes = bytes - bytes % BM_BLOCK_SIZE;
            d.sb.la_size_sect = d.data_bytes / SECTOR_SIZE;
            self.sb_changed();
        }
    }

    fn send_bitmap(&mut self, node: NodeId) {
        let Some(bm) = self.disk.as_ref().and_then(|d| d.bitmap(node)) else {
            return;
        };
        let enc = crate::bitmap::rle::encode(bm);
        let chunks: Vec<Vec<u8>> = enc
            .chunks(crate::repl::wire::MAX_BITMAP_CHUNK)
            .map(<[u8]>::to_vec)
            .collect();
        let n = chunks.len().max(1);
        if chunks.is_empty() {
            self.send(
                node,
                Packet::BitmapRle {
                    chunk: 0,
                    last: true,
                    data: bytes::Bytes::new(),
                },
            );
        }
        for (i, c) in chunks.into_iter().enumerate() {
            self.send(
                node,
                Packet::BitmapRle {
                    chunk: i as u32,
                    last: i + 1 == n,
                    data: c.into(),
                },
            );
        }
    }

    fn bitmap_chunk(&mut self, node: NodeId, chunk: u32, last: bool, data: &[u8]) {
        let Some(hs) = self.conns.get_mut(&node).and_then(|c| c.hs.as_mut()) else {
            return;
        };
        let Some(buf) = hs.bitmap.as_mut() else {
            self.log(format!("peer {node}: bitmap before the sync decision"));
            return self.drop_link(node, false);
        };
        let _ = chunk;
        buf.extend_from_slice(data);
        if buf.len() > 64 << 20 {
            self.log(format!("peer {node}: bitmap too large"));
            return self.drop_link(node, false);
        }
        if !last {
            return;
        }
        let enc = std::mem::take(buf);
        let strategy = hs.strategy;
        let nbits = self
            .disk
            .as_ref()
            .and_then(|d| d.bitmap(node))
            .map_or(0, |b| b.len_bits());
        let theirs = match crate::bitmap::rle::decode(&enc, nbits) {
            Ok(b) => b,
            Err(e) => {
                self.log(format!("peer {node}: bad bitmap from peer: {e}"));
                return self.drop_link(node, false);
            }
        };
        if let Some(bm) = self.disk.as_mut().and_then(|d| d.bitmap_mut(node))
            && bm.union_with(&theirs).is_err()
        {
            self.log(format!("peer {node}: peer bitmap has the wrong size"));
            return self.drop_link(node, false);
        }
        if let Some(c) = self.conns.get_mut(&node) {
            c.hs = None;
        }
        match strategy {
            Some(s) if s.is_sync_source() => self.resync_start(node, true),
            Some(_) => self.resync_start(node, false),
            None => {}
        }
    }

    /// A packet outside the handshake that is about connection state, not I/O.
    fn connected_packet(&mut self, node: NodeId, packet: Packet) {
        match packet {
            Packet::State {
                role,
                disk,
                repl,
                flags,
                ..
            } => self.peer_state(node, role, disk, repl, flags),
            Packet::Uuids { current, flags, .. } => self.peer_new_uuid(node, current, flags),
            Packet::SyncUuid { uuid } => self.become_full_sync_target(node, uuid),
            other => self.log(format!(
                "peer {node}: unexpected {:?} ignored",
                other.packet_type()
            )),
        }
    }

    fn peer_state(
        &mut self,
        node: NodeId,
        role: Role,
        disk: DiskState,
        repl: ReplState,
        fl: StateFlags,
    ) {
        let Some(c) = self.conns.get_mut(&node) else {
            return;
        };
        if c.role != role {
            self.actions.push_back(Action::Log(format!(
                "{}: peer {node}: peer( {} -> {role} )",
                self.cfg.resource, c.role
            )));
        }
        c.role = role;
        let old_disk = c.disk;
        c.disk = disk;
        c.peer_paused = fl.contains(StateFlags::USER_ISP);
        let my_repl = c.repl;
        if role == Role::Primary && self.role == Role::Primary && self.links.contains_key(&node) {
            // Both promoted before either heard of the other (DRBD prevents this with a
            // cluster-wide two-phase state change; udrbd does not have one yet). Two Primaries
            // must not stay connected: each refuses the other's writes, and what each wrote
            // alone makes the next handshake a split brain, decided as any other.
            self.log(format!(
                "peer {node}: both nodes became Primary at the same time; dropping the \
                 connection (demote one, then connect again)"
            ));
            return self.drop_link(node, true);
        }
        if old_disk != disk {
            self.log(format!("peer {node}: pdsk( {old_disk} -> {disk} )"));
        }
        if my_repl == ReplState::SyncSource
            && disk == DiskState::UpToDate
            && repl == ReplState::Established
        {
            return self.resync_source_finished(node);
        }
        if repl == ReplState::VerifyS && my_repl == ReplState::Established {
            return self.verify_target_start(node);
        }
        if repl == ReplState::Established && my_repl == ReplState::VerifyT {
            return self.verify_finished(node);
        }
        if repl == ReplState::SyncSource
            && my_repl == ReplState::Established
            && self.conns.get(&node).is_some_and(|c| c.rs.is_none())
        {
            // `invalidate-remote --reset-bitmap=no` there (its marks came first as OutOfSync).
            // Same generation on both: the target keeps its current UUID at the end.
            let own = self.disk.as_ref().map(|d| d.sb.current_uuid);
            if let (Some(c), Some(own)) = (self.conns.get_mut(&node), own) {
                c.peer_current = own;
            }
            self.log(format!(
                "peer {node}: the peer resyncs the marked blocks to this node"
            ));
            return self.resync_start(node, false);
        }
        if repl == ReplState::StartingSyncT && my_repl == ReplState::Established {
            // The peer ran `invalidate`: it wants everything from here, or the marked blocks.
            let r = if fl.contains(StateFlags::KEEP_BITMAP) {
                self.start_bitmap_sync_to(node)
            } else {
                self.start_full_sync_to(node)
            };
            if let Err(e) = r {
                self.log(format!("peer {node}: cannot serve its invalidate: {e}"));
            }
        }
    }

    /// The peer started a new generation while connected (`new-current-uuid`): follow it.
    fn peer_new_uuid(&mut self, node: NodeId, current: GenUuid, fl: UuidFlags) {
        let in_sync = self
            .conns
            .get(&node)
            .is_some_and(|c| c.repl == ReplState::Established);
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        let fresh = d.sb.current_uuid.same_as(GenUuid::JUST_CREATED);
        if fl.contains(UuidFlags::SKIP_INITIAL_SYNC) && fresh {
            // `new-current-uuid --clear-bitmap` on fresh metadata: skip the initial sync.
            d.sb.current_uuid = current;
            for bm in d.bitmaps.iter_mut() {
                bm.clear_all();
            }
            for p in d.sb.peers.iter_mut().filter(|p| p.node_id.is_some()) {
                p.bitmap_uuid = GenUuid::ZERO;
            }
            self.log(format!(
                "peer {node}: clear-bitmap new current UUID {current}: initial sync skipped"
            ));
            if let Some(c) = self.conns.get_mut(&node) {
                c.disk = DiskState::UpToDate;
            }
            self.set_up_to_date();
            self.flush_bitmap_if_dirty();
            self.broadcast_state();
        } else if in_sync && self.disk_state == DiskState::UpToDate {
            let old = d.sb.current_uuid;
            d.sb.push_history(old);
            d.sb.current_uuid = current;
            self.log(format!("peer {node}: new current UUID {current} from peer"));
            self.sb_changed();
        } else {
            self.log(format!(
                "peer {node}: new current UUID {current} from peer ignored (not in sync)"
            ));
        }
    }

    /// `new-current-uuid` while connected: the peers follow ([`Self::peer_new_uuid`]).
    pub(super) fn announce_new_uuid(&mut self, clear_bitmap: bool) {
        for node in self.established_peers() {
            let fl = if clear_bitmap {
                UuidFlags::SKIP_INITIAL_SYNC
            } else {
                UuidFlags::NEW_DATAGEN
            };
            if clear_bitmap && let Some(c) = self.conns.get_mut(&node) {
                c.disk = DiskState::UpToDate;
            }
            let p = self.my_uuids_packet(node, fl);
            self.send(node, p);
        }
    }

    /// A peer with replication established (not in a handshake).
    pub(super) fn established_peers(&self) -> Vec<NodeId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.conn == ConnState::Connected && c.hs.is_none())
            .map(|(n, _)| *n)
            .collect()
    }

    /// After a forced promotion: every connected peer without good data gets a full sync.
    pub(super) fn full_sync_inconsistent_peers(&mut self) {
        for node in self.established_peers() {
            let needs = self.conns.get(&node).is_some_and(|c| {
                c.repl == ReplState::Established && c.disk < DiskState::Consistent
            });
            if needs && let Err(e) = self.start_full_sync_to(node) {
                self.log(format!("peer {node}: {e}"));
            }
        }
    }

    /// Keeps the generation toward a connected peer: rotate the current UUID so that the
    /// source's generation is new and the target can tell it later.
    pub(super) fn new_generation_for_sync(&mut self) {
        if let Some(d) = self.disk.as_mut() {
            let primary = self.role == Role::Primary;
            rotate_current(&mut d.sb, &mut self.uuids, primary);
            let u = d.sb.current_uuid;
            self.log(format!("new current UUID: {u}"));
            self.sb_changed();
        }
    }
}
