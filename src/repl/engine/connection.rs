//! The connection to each peer and the handshake (DRBD's `drbd_connected()`,
//! `drbd_sync_handshake()` and, for a disk attached while connected, `drbd_attach_handshake()`).
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
//! A side without a disk takes part too: it is Established with no resync, and its peer marks
//! what it writes instead of sending it. When a disk is attached while connected, the same
//! exchange runs again on the open link ([`Engine::handshake_again`]): `Sizes` outside a
//! handshake tells the peer to send its side again.
//!
//! From the decision on, application writes are replicated to the peer (also to a SyncTarget),
//! so a write is either in the bitmap that was sent or on its way as `Data`.

use super::disk::{move_to_generation, take_generation};
use super::peer::Session;
use super::{Action, Change, Engine};
use crate::config::Protocol;
use crate::meta::superblock::flags;
use crate::repl::digest::DigestAlg;
use crate::repl::handshake::{self, SbContext, SbPolicy, SizeInput, SyncStrategy, UuidSet};
use crate::repl::state::{ConnState, DiskState, ReplState, Role, StateError};
use crate::repl::wire::{Packet, SizesFlags, StateFlags, UuidFlags};
use crate::types::{BM_BLOCK_SIZE, GenUuid, NodeId, SECTOR_SIZE, Sector};

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
    /// The dirty bits this node reported in its `Uuids`: the decision uses what the peer saw,
    /// not a count that moved since, so both sides decide from the same facts.
    sent_dirty_bits: u64,
    /// Likewise the generation UUIDs (current, bitmap, history) and the disk state this node
    /// reported: with three nodes they can move during the handshake (a resync with a third
    /// node ends or starts), and a decision from newer facts than the peer's could make both
    /// sides the sync target.
    sent_uuids: Option<(GenUuid, GenUuid, Vec<GenUuid>)>,
    sent_disk: Option<DiskState>,
    /// The flags of this node's `Sizes` (`drbdadm resize` here: RESIZE, NO_RESYNC).
    pub(super) own_sizes_flags: SizesFlags,
    /// The peer's `Sizes` said NO_RESYNC (`resize --assume-clean` there).
    peer_no_resync: bool,
    /// The peer's `Sizes` said RESIZE (`drbdadm resize` there): its user size is taken over.
    peer_resize: bool,
    /// The peer's user size (`disk { size }`, `resize --size`), 0 for none.
    peer_user: Sector,
    /// The peer's `ProtocolParams` said dry run (`connect --tentative` there).
    peer_dry_run: bool,
    /// The peer's device size from its `Sizes` (bytes): what a diskless node exports.
    peer_bytes: u64,
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
    /// The driver is trying to reach `node` (`connect`, or a lost link it keeps retrying).
    pub(super) fn peer_connecting(&mut self, node: NodeId) {
        let Some(c) = self.peers.get(&node) else {
            return;
        };
        if c.st.conn() == ConnState::StandAlone {
            // DRBD's way out of StandAlone: Unconnected first, then Connecting.
            self.force_change(Change::hard("connect").conn(node, ConnState::Unconnected));
        }
        self.force_change(Change::hard("connect").conn(node, ConnState::Connecting));
    }

    /// The link is up: start the handshake.
    pub(super) fn handshake_start(&mut self, node: NodeId, protocol: Protocol) {
        if !self.peers.contains_key(&node) {
            return self.log(format!("ignoring unknown peer node-id {node}"));
        }
        self.fence_peer_up(node);
        if self
            .peers
            .get(&node)
            .is_some_and(|c| c.st.conn() == ConnState::StandAlone)
        {
            self.force_change(Change::hard("connect").conn(node, ConnState::Unconnected));
        }
        self.force_change(
            Change::hard("connected")
                .conn(node, ConnState::Connected)
                .repl(node, ReplState::Off),
        );
        let now = self.now;
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        c.protocol = protocol;
        c.hs = Some(Handshake {
            started: now,
            ..Handshake::default()
        });
        c.rs = None;
        c.ov = None;
        c.peer_paused = false;
        c.peer_repl = ReplState::Off;
        let discard_my_data = c.discard_my_data;
        let dry_run = c.tentative;
        self.peer_log(node, format!("Handshake: protocol {protocol:?}"));
        let policy = self.sb_policy(node);
        let info = self.peer_info(node);
        // P_PROTOCOL first: both sides must run the same replication protocol.
        let params = Packet::ProtocolParams {
            protocol,
            after_sb_0pri: policy.after_sb_0pri,
            after_sb_1pri: policy.after_sb_1pri,
            after_sb_2pri: policy.after_sb_2pri,
            two_primaries: info.is_some_and(|p| p.two_primaries),
            discard_my_data,
            dry_run,
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
        self.send(node, params);
        self.send(node, sync_params);
        self.send_handshake(node);
    }

    /// Runs the handshake again on an established link: this node attached its disk, or the
    /// peer did (its `Sizes` arrived outside a handshake). Writes wait while it runs, as at
    /// connect time; replication with the peer goes on afterwards in the same session.
    pub(super) fn handshake_again(&mut self, node: NodeId) {
        self.handshake_again_with(node, SizesFlags::empty(), "a disk was attached");
    }

    /// [`Engine::handshake_again`], with `flags` in this node's `Sizes` and `why` in the log.
    pub(super) fn handshake_again_with(&mut self, node: NodeId, flags: SizesFlags, why: &str) {
        let now = self.now;
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        if c.st.conn() != ConnState::Connected {
            return;
        }
        c.hs = Some(Handshake {
            started: now,
            own_sizes_flags: flags,
            ..Handshake::default()
        });
        self.peer_log(node, format!("{why}: running the handshake again"));
        self.send_handshake(node);
    }

    /// This node's `Sizes`, `Uuids` and `State` (a Diskless node sends size 0 and no UUIDs).
    fn send_handshake(&mut self, node: NodeId) {
        // The peer learns the current generation: it is no longer this node's alone.
        self.generation_confirmed();
        let sectors = self.disk.as_ref().map_or(0, |d| d.data_bytes) / SECTOR_SIZE;
        let max = self.disk.as_ref().map_or(0, |d| d.max_bytes) / SECTOR_SIZE;
        let flags = self
            .peers
            .get(&node)
            .and_then(|c| c.hs.as_ref())
            .map_or(SizesFlags::empty(), |h| h.own_sizes_flags);
        let user = self.disk.as_ref().map_or(0, |d| d.user_bytes) / SECTOR_SIZE;
        let sizes = Packet::Sizes {
            backing: Sector(max),
            user: Sector(user),
            current: Sector(sectors),
            max_bio_size: crate::repl::wire::MAX_DATA_LEN as u32,
            flags,
        };
        let discard_my_data = self.peers.get(&node).is_some_and(|c| c.discard_my_data);
        let extra = if discard_my_data {
            UuidFlags::DISCARD_MY_DATA
        } else {
            UuidFlags::empty()
        };
        let uuids = self.my_uuids_packet(node, extra);
        let state = self.my_state_packet(node);
        if let (
            Packet::Uuids {
                dirty_bits,
                current,
                bitmap,
                history,
                ..
            },
            Packet::State { disk, .. },
            Some(hs),
        ) = (
            &uuids,
            &state,
            self.peers.get_mut(&node).and_then(|c| c.hs.as_mut()),
        ) {
            hs.sent_dirty_bits = *dirty_bits;
            hs.sent_uuids = Some((*current, *bitmap, history.clone()));
            hs.sent_disk = Some(*disk);
        }
        if let Some(weak) = self.weak_for_handshake(node) {
            self.send(node, weak);
        }
        for packet in [sizes, uuids, state] {
            self.send(node, packet);
        }
    }

    /// When the oldest undecided handshake is given up.
    pub(super) fn handshake_deadline(&self) -> Option<crate::types::Time> {
        self.peers
            .values()
            .filter_map(|c| c.hs.as_ref().filter(|h| h.strategy.is_none()))
            .map(|h| h.started.plus_ms(HANDSHAKE_TIMEOUT_MS))
            .min()
    }

    pub(super) fn check_handshake_timeout(&mut self) {
        let now = self.now;
        let late: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, c)| {
                c.hs.as_ref().is_some_and(|h| {
                    h.strategy.is_none() && h.started.plus_ms(HANDSHAKE_TIMEOUT_MS) <= now
                })
            })
            .map(|(n, _)| *n)
            .collect();
        for node in late {
            self.peer_log(
                node,
                "the handshake did not finish in time; reconnecting".to_string(),
            );
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
                if d.sb.flags & flags::PRIMARY_LOST_QUORUM != 0 {
                    fl = fl | UuidFlags::PRIMARY_LOST_QUORUM;
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
            // A diskless node's current UUID is the generation it serves (DRBD sends the
            // exposed UUID).
            None => (
                self.exposed.uuid,
                GenUuid::ZERO,
                Vec::new(),
                0,
                UuidFlags::empty(),
            ),
        };
        if self.st.disk() < DiskState::Consistent {
            fl = fl | UuidFlags::INCONSISTENT;
        }
        if self.peers.get(&node).is_some_and(|c| c.was_established) {
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
        let c = self.peers.get(&node);
        let mut fl = StateFlags::empty();
        if c.is_some_and(|c| c.user_paused) {
            fl = StateFlags(fl.bits() | StateFlags::USER_ISP.bits());
        }
        if self.st.quorum() {
            fl = StateFlags(fl.bits() | StateFlags::QUORATE.bits());
        }
        Packet::State {
            role: self.st.role(),
            peer_role: c.map_or(Role::Unknown, |c| c.st.role()),
            disk: self.st.disk(),
            peer_disk: c.map_or(DiskState::DUnknown, |c| c.st.disk()),
            conn: ConnState::Connected,
            repl: c.map_or(ReplState::Off, |c| c.st.repl()),
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
        if let Some(c) = self.peers.get_mut(&node) {
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

    /// The link to `node` is gone (reported by the driver, or dropped by us). What the peer
    /// has not confirmed is marked, the writes that waited for it complete on local success
    /// (see `replicate::peer_down`), and the connection goes Connecting (the driver retries)
    /// or StandAlone.
    pub(super) fn link_lost(&mut self, node: NodeId, standalone: bool) {
        let Some(c) = self.peers.get(&node) else {
            return;
        };
        if c.st.conn() == ConnState::StandAlone && standalone {
            return; // already down and staying down
        }
        if let Some(c) = self.peers.get_mut(&node) {
            c.link_gen += 1;
            c.peer_quorate = false;
        }
        let was_connected = self
            .peers
            .get(&node)
            .is_some_and(|c| c.st.conn() == ConnState::Connected);
        // Before `peer_down` completes the writes that waited for the peer: under
        // resource-and-stonith they must stay unacknowledged until the peer is fenced.
        let known = self.fence_link_lost(node);
        self.twopc_link_lost(node);
        let was_primary = self
            .peers
            .get(&node)
            .is_some_and(|c| c.st.role() == Role::Primary);
        self.weak_mask_gone(node, was_primary);
        self.mark_unconfirmed(node);
        let conn = if standalone {
            ConnState::StandAlone
        } else {
            ConnState::Connecting
        };
        // DRBD keeps an Outdated or Inconsistent peer disk while disconnected: that peer
        // cannot have newer data, which is what promotion under fencing asks.
        let pdsk = known.unwrap_or(DiskState::DUnknown);
        self.force_change(
            Change::hard("disconnected")
                .conn(node, conn)
                .repl(node, ReplState::Off)
                .pdsk(node, pdsk),
        );
        self.peer_down(node);
        if was_connected {
            // DRBD 9's `disconnected` helper, once the connection is down.
            self.run_handler(crate::repl::handler::Handler::Disconnected, Some(node));
        }
        if let Some(c) = self.peers.get_mut(&node) {
            c.hs = None;
            c.rs = None;
            c.ov = None;
            c.peer_paused = false;
            c.deferred_rs.clear();
            c.resync_asked = false;
        }
    }

    /// A handshake packet, or a state update once connected.
    pub(super) fn handshake_packet(&mut self, node: NodeId, packet: Packet) {
        let Some(packet) = self.hold_for_resize(node, packet) else {
            return;
        };
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        if c.hs.is_none() {
            if !matches!(packet, Packet::Sizes { .. }) {
                return self.connected_packet(node, packet);
            }
            if let Packet::Sizes { flags, .. } = &packet
                && flags.contains(SizesFlags::RESIZE)
            {
                // The peer grew: this disk checks its own backing device before answering.
                return self.resize_requested(node, packet);
            }
            // The peer attached its disk and runs the handshake again: our side too.
            self.handshake_again(node);
        }
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        let Some(hs) = c.hs.as_mut() else {
            return;
        };
        match packet {
            Packet::ProtocolParams {
                protocol,
                after_sb_0pri,
                after_sb_1pri,
                after_sb_2pri,
                integrity_alg,
                two_primaries,
                dry_run,
                ..
            } => {
                // `connect --tentative` there: this side only reports its decision too.
                hs.peer_dry_run = dry_run;
                if self.peer_info(node).is_some_and(|p| p.two_primaries) != two_primaries {
                    // DRBD's `receive_protocol()`: "incompatible allow-two-primaries settings".
                    self.peer_log(
                        node,
                        "incompatible allow-two-primaries settings; set the same \
                         allow-two-primaries on both nodes"
                            .to_string(),
                    );
                    return self.drop_link(node, true);
                }
                let mine = DigestAlg::name_of(self.peer_info(node).and_then(|p| p.integrity_alg));
                if mine != integrity_alg {
                    // DRBD's `receive_protocol()`: both ends must digest the same way.
                    self.peer_log(
                        node,
                        format!(
                            "incompatible data-integrity-alg (mine \"{mine}\", peer's \
                         \"{integrity_alg}\"); set the same data-integrity-alg on both nodes"
                        ),
                    );
                    return self.drop_link(node, true);
                }
                let Some(c) = self.peers.get_mut(&node) else {
                    return;
                };
                if protocol != c.protocol {
                    let mine = c.protocol;
                    self.peer_log(
                        node,
                        format!(
                            "incompatible communication protocols (mine {mine:?}, \
                         peer's {protocol:?}); set the same `protocol` on both nodes"
                        ),
                    );
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
                    self.peer_log(
                        node,
                        format!(
                            "incompatible {what} settings; set the same policy on both \
                         nodes (discard-node-NAME names the same node on both)"
                        ),
                    );
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
                        self.peer_log(
                            node,
                            format!(
                                "Different {what} settings. me=\"{mine}\" \
                             peer=\"{theirs}\"; set the same {what} on both nodes"
                            ),
                        );
                        return self.drop_link(node, true);
                    }
                }
                return;
            }
            Packet::Sizes {
                backing,
                user,
                current,
                flags,
                ..
            } => {
                hs.peer_bytes = current.0.saturating_mul(SECTOR_SIZE);
                // A round of the handshake begins with Sizes: what came before is stale.
                if hs.strategy.is_none() {
                    hs.uuids = None;
                    hs.state = None;
                }
                hs.sizes = Some(backing);
                hs.peer_no_resync = flags.contains(SizesFlags::NO_RESYNC);
                hs.peer_resize = flags.contains(SizesFlags::RESIZE);
                hs.peer_user = user;
            }
            Packet::Uuids {
                current,
                history,
                flags,
                ..
            } if hs.uuids.is_some() && flags.contains(UuidFlags::NEW_DATAGEN) => {
                // The peer moved to a new generation after it sent its handshake UUIDs (it
                // decided first and wrote): the decision stays with the UUIDs both sides
                // compared; the new one is noted for the end of a resync from it.
                return self.peer_new_uuid(node, current, &history, flags);
            }
            Packet::Uuids {
                current,
                bitmap,
                history,
                dirty_bits,
                flags,
            } => {
                // What a resync from the peer ends in (updated by a later NEW_DATAGEN).
                c.peer_current = current;
                c.peer_history.clone_from(&history);
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
                c.peer_paused = flags.contains(StateFlags::USER_ISP);
                c.peer_quorate = flags.contains(StateFlags::QUORATE);
            }
            Packet::BitmapRle { chunk, last, data } => {
                return self.bitmap_chunk(node, chunk, last, &data);
            }
            other => {
                return self.peer_log(
                    node,
                    format!("{:?} during the handshake ignored", other.packet_type()),
                );
            }
        }
        self.maybe_decide(node);
    }

    fn maybe_decide(&mut self, node: NodeId) {
        let Some(hs) = self.peers.get(&node).and_then(|c| c.hs.as_ref()) else {
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
        // `resize --assume-clean` on either side: a new area is taken as equal.
        let clean = hs.peer_no_resync || hs.own_sizes_flags.contains(SizesFlags::NO_RESYNC);
        let peer_dry_run = hs.peer_dry_run;
        let peer_bytes = hs.peer_bytes;
        let Some(d) = self.disk.as_ref() else {
            if !self.diskless_accepts(node, pu.current, peer_disk, peer_bytes) {
                return self.drop_link(node, false);
            }
            return self.established_diskless(node, peer_role, peer_disk);
        };
        if peer_disk == DiskState::Diskless {
            return self.established_diskless(node, peer_role, peer_disk);
        }
        // The user's size: a resize here keeps ours, a resize there is taken over ("Peer sets
        // u_size"), at connect the smaller one counts (DRBD's receive_sizes()).
        let (own_resize, peer_resize, peer_user) = self
            .peers
            .get(&node)
            .and_then(|c| c.hs.as_ref())
            .map_or((false, false, 0), |h| {
                (
                    h.own_sizes_flags.contains(SizesFlags::RESIZE),
                    h.peer_resize,
                    h.peer_user.0 * SECTOR_SIZE,
                )
            });
        let my_user = d.user_bytes;
        let user = handshake::agreed_user_size(own_resize, peer_resize, my_user, peer_user);
        if peer_resize && !own_resize && user != my_user {
            self.peer_log(
                node,
                format!(
                    "Peer sets u_size to {} sectors (old: {})",
                    user / SECTOR_SIZE,
                    my_user / SECTOR_SIZE
                ),
            );
            if let Some(d) = self.disk.as_mut() {
                d.user_bytes = user;
            }
        }
        let Some(d) = self.disk.as_ref() else {
            return;
        };
        // Sizes: never shrink a device that holds data at connect; a resize may (DRBD allows
        // online shrinking while connected).
        let size = match handshake::check_sizes(&SizeInput {
            my_max: Sector(d.max_bytes / SECTOR_SIZE),
            peer_max: peer_size,
            user_size: Sector(user / SECTOR_SIZE),
            last_agreed: Sector(d.sb.la_size_sect),
            my_disk: self.st.disk(),
            online: own_resize || peer_resize,
        }) {
            Ok(s) => s,
            Err(refusal) => {
                self.peer_log(node, format!("{refusal}"));
                return self.drop_link(node, true);
            }
        };
        // Blocks both sides just marked for the area a growth added: counted on both sides
        // of the decision below, so that it resyncs them and both sides pick the same source.
        let mut grown_bits = 0;
        if size.bytes() < d.data_bytes {
            self.shrink_to(size.bytes());
        } else if size.bytes() > d.data_bytes {
            grown_bits = self.grow_to(size.bytes(), !clean);
        }
        let Some(info) = self.peer_info(node).cloned() else {
            return;
        };
        let protocol = self.peers.get(&node).map_or(Protocol::C, |c| c.protocol);
        let mut me = self.my_uuid_set(node, protocol);
        me.dirty_bits += grown_bits;
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
            dirty_bits: pu.dirty_bits + grown_bits,
            protocol,
        };
        let decision = handshake::uuid_compare(&me, &peer);
        self.peer_log(node, format!("{decision}"));
        let outcome = handshake::resolve_split_brain(
            decision,
            &SbContext {
                me: &me,
                peer: &peer,
                policy: info.sb_policy,
            },
        );
        for line in &outcome.log {
            self.peer_log(node, format!("{line}"));
        }
        let tentative = self.peers.get(&node).is_some_and(|c| c.tentative);
        if tentative || peer_dry_run {
            return self.dry_run_decided(node, outcome.strategy, tentative);
        }
        for &handler in &outcome.handlers {
            self.run_handler(handler, Some(node));
        }
        if outcome.fixup == Some(handshake::Fixup::PushOwnBitmapToHistory) {
            self.bitmap_uuid_to_history(node);
        }
        if outcome.disconnects() {
            let retry = matches!(
                outcome.strategy,
                SyncStrategy::SyncTargetPrimaryReconnect
                    | SyncStrategy::InconsistentSourceReconnect
            );
            return self.drop_link(node, !retry);
        }
        if outcome.demote_first {
            // call-pri-lost-after-sb chose this Primary's data to be discarded: it must stop
            // being Primary first (DRBD's `drbd_asb_recover_1p()`/`_2p()`).
            if self.open_count > 0 {
                self.peer_log(
                    node,
                    format!(
                        "cannot give up primary role ({} NBD client(s) hold the \
                     export open); calling pri-lost-after-sb",
                        self.open_count
                    ),
                );
                self.run_handler(crate::repl::handler::Handler::PriLostAfterSb, Some(node));
                self.peer_log(node, handshake::msg::SB_UNRESOLVED.to_string());
                return self.drop_link(node, true);
            }
            if let Err(e) = self.demote("after-sb") {
                self.peer_log(node, format!("cannot give up primary role: {e}"));
                return self.drop_link(node, true);
            }
            self.peer_log(node, "Successfully gave up primary role.".to_string());
        }
        if let Some(c) = self.peers.get_mut(&node)
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
        let two_primaries = self.peer_info(node).is_some_and(|p| p.two_primaries);
        if self.st.role() == Role::Primary
            && peer_role == Role::Primary
            && !two_primaries
            && !peer_demotes()
        {
            self.peer_log(
                node,
                "both nodes are Primary and allow-two-primaries is not set; dropping connection"
                    .to_string(),
            );
            return self.drop_link(node, true);
        }
        let strategy = outcome.strategy;
        self.start_replication(node, protocol);
        if strategy != SyncStrategy::NoSync {
            // Both sides end the resync in the source's generation, the one compared now.
            self.uuid_not_due_for(node);
        }
        if strategy == SyncStrategy::NoSync {
            return self.established_in_sync(node, peer_role, peer_disk);
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
        let repl = if source {
            ReplState::WFBitMapS
        } else {
            ReplState::WFBitMapT
        };
        self.force_change(
            Change::hard("connected")
                .repl(node, repl)
                .peer_role(node, peer_role)
                .pdsk(node, peer_disk),
        );
        if let Some(c) = self.peers.get_mut(&node)
            && let Some(hs) = c.hs.as_mut()
        {
            hs.strategy = Some(strategy);
            hs.bitmap = Some(Vec::new());
        }
        self.send_bitmap(node);
    }

    /// `connect --tentative` here or on the peer (DRBD's dry-run connect): the decision is
    /// logged in DRBD's words and nothing follows from it (no resync, no handler, no UUID
    /// change); the link closes. The tentative side stays StandAlone, the other keeps trying.
    fn dry_run_decided(&mut self, node: NodeId, strategy: SyncStrategy, tentative: bool) {
        let line = if strategy == SyncStrategy::NoSync {
            "dry-run connect: No resync, would become Connected immediately.".to_string()
        } else if strategy.is_sync_source() || strategy.is_sync_target() {
            let full = matches!(
                strategy,
                SyncStrategy::SourceSetBitmap | SyncStrategy::TargetSetBitmap
            );
            format!(
                "dry-run connect: Would become {}, doing a {} resync.",
                if strategy.is_sync_source() {
                    "SyncSource"
                } else {
                    "SyncTarget"
                },
                if full { "full" } else { "bit-map based" }
            )
        } else {
            format!("dry-run connect: would not connect ({})", strategy.name())
        };
        self.peer_log(node, line);
        if let Some(c) = self.peers.get_mut(&node) {
            c.tentative = false;
        }
        self.drop_link(node, tentative);
    }

    /// `connect --discard-my-data` (or a plain `connect`, which clears it).
    pub(super) fn set_discard_my_data(&mut self, discard: bool, tentative: bool) {
        for c in self.peers.values_mut() {
            c.discard_my_data = discard;
            c.tentative = tentative;
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
        let hs = self.peers.get(&node).and_then(|c| c.hs.as_ref());
        let (current, bitmap, history) = match hs.and_then(|h| h.sent_uuids.clone()) {
            Some(sent) => sent,
            None => (
                d.map_or(GenUuid::ZERO, |d| d.sb.current_uuid),
                d.and_then(|d| d.sb.peer(node))
                    .map_or(GenUuid::ZERO, |p| p.bitmap_uuid),
                d.map_or(Vec::new(), |d| d.sb.history.to_vec()),
            ),
        };
        UuidSet {
            node_id: self.cfg.node_id,
            current,
            bitmap,
            history,
            crashed_primary: d.is_some_and(|d| d.sb.flags & flags::CRASHED_PRIMARY != 0),
            reconnect: self.peers.get(&node).is_some_and(|c| c.was_established),
            primary_lost_quorum: d.is_some_and(|d| d.sb.flags & flags::PRIMARY_LOST_QUORUM != 0),
            role: self.st.role(),
            disk: hs.and_then(|h| h.sent_disk).unwrap_or(self.st.disk()),
            discard_my_data: self.peers.get(&node).is_some_and(|c| c.discard_my_data),
            dirty_bits: self
                .peers
                .get(&node)
                .and_then(|c| c.hs.as_ref())
                .map_or(0, |h| h.sent_dirty_bits),
            protocol,
        }
    }

    /// From the decision on, writes go to the peer as well (see the module docs).
    fn start_replication(&mut self, node: NodeId, protocol: Protocol) {
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        c.was_established = true;
        // A handshake run again on an open link (a disk attached) keeps its session: epochs
        // and barriers in flight go on.
        if c.session.is_none() {
            let two_primaries = c.info.two_primaries;
            c.session = Some(Session::new(
                protocol,
                two_primaries,
                self.cfg.node_id > node,
            ));
        }
    }

    /// No resync: both sides hold the same generation.
    fn established_in_sync(&mut self, node: NodeId, peer_role: Role, peer_disk: DiskState) {
        // In the same generation as the peer: a UUID that was due is not needed any more.
        self.uuid_not_due_for(node);
        let consistent = |s: DiskState| s >= DiskState::Outdated && s != DiskState::DUnknown;
        let both = consistent(self.st.disk()) && consistent(peer_disk);
        if let Some(c) = self.peers.get_mut(&node) {
            c.hs = None;
        }
        let mut change = Change::hard("connected")
            .repl(node, ReplState::Established)
            .peer_role(node, peer_role)
            .pdsk(node, if both { DiskState::UpToDate } else { peer_disk });
        // A node a Primary's writes do not reach is Outdated instead (see `weak`).
        let mine = self.up_to_date_unless_weak();
        if both && mine == DiskState::UpToDate {
            change = change.disk(mine);
        }
        self.force_change(change);
        if both && mine == DiskState::UpToDate {
            self.set_up_to_date("connected");
        } else if both {
            let _ = self.outdate_self(Change::hard("weak"));
        }
        self.clear_crashed_primary();
        self.broadcast_state();
        self.maybe_unfence(node);
    }

    /// One side has no disk: there is nothing to compare or resync. Replication is established
    /// all the same: a Primary marks in its bitmap what a Diskless peer misses (see
    /// `replicate`), and a disk attached later runs the handshake again.
    fn established_diskless(&mut self, node: NodeId, peer_role: Role, peer_disk: DiskState) {
        let protocol = self.peers.get(&node).map_or(Protocol::C, |c| c.protocol);
        self.start_replication(node, protocol);
        if let Some(c) = self.peers.get_mut(&node) {
            c.hs = None;
        }
        self.force_change(
            Change::hard("connected")
                .repl(node, ReplState::Established)
                .peer_role(node, peer_role)
                .pdsk(node, peer_disk),
        );
        self.broadcast_state();
        // A diskless Primary's writes reach one more peer: the others learn it.
        self.announce_generation();
    }

    /// The disk holds the newest data (a handshake or a finished resync said so): UpToDate,
    /// and persisted as such.
    pub(super) fn set_up_to_date(&mut self, tag: &'static str) {
        self.force_change(Change::hard(tag).disk(DiskState::UpToDate));
        if let Some(d) = self.disk.as_mut() {
            d.sb.flags |= flags::CONSISTENT | flags::WAS_UP_TO_DATE;
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

    /// The device gets smaller: both disks agreed on a smaller size while this one held no
    /// data, or the user asked for it (`resize --size`). What lies beyond is no longer part
    /// of the device: its out-of-sync marks go too (a resync must not wait for them).
    pub(super) fn shrink_to(&mut self, bytes: u64) {
        if let Some(d) = self.disk.as_mut() {
            let new = bytes - bytes % BM_BLOCK_SIZE;
            self.actions.push_back(Action::Log(format!(
                "{}: device size {} -> {} KiB",
                self.cfg.resource,
                d.data_bytes / 1024,
                new / 1024
            )));
            super::disk::clear_beyond(&mut d.bitmaps, new);
            d.data_bytes = new;
            d.sb.la_size_sect = new / SECTOR_SIZE;
            self.sb_changed();
            self.flush_bitmap_if_dirty();
        }
    }

    /// Both disks can hold more than the device's size (both backing devices grew): the
    /// device grows to `bytes`, and the new area is marked out of sync for every peer, so it
    /// is resynced like any other difference (DRBD's `drbd_bm_resize(.., set_new_bits)`):
    /// what the two backing devices hold there was never replicated.
    /// Returns the 4 KiB blocks marked (none when `!mark`: `--assume-clean`).
    fn grow_to(&mut self, bytes: u64, mark: bool) -> u64 {
        let Some(d) = self.disk.as_mut() else {
            return 0;
        };
        let new = (bytes - bytes % BM_BLOCK_SIZE).min(d.max_bytes);
        let old = d.data_bytes;
        if new <= old {
            return 0;
        }
        d.data_bytes = new;
        let mut marked = 0;
        if mark {
            for bm in d.bitmaps.iter_mut() {
                marked += bm.set_bytes(old, new - old);
            }
        }
        d.sb.la_size_sect = new / SECTOR_SIZE;
        self.actions.push_back(Action::Log(format!(
            "{}: both disks grew: device size {} -> {} KiB, {} KiB marked out of sync",
            self.cfg.resource,
            old / 1024,
            new / 1024,
            marked * BM_BLOCK_SIZE / 1024
        )));
        self.sb_changed();
        self.flush_bitmap_if_dirty();
        if mark { (new - old) / BM_BLOCK_SIZE } else { 0 }
    }

    fn send_bitmap(&mut self, node: NodeId) {
        let Some(d) = self.disk.as_ref() else {
            return;
        };
        let Some(bm) = d.bitmap(node) else {
            return;
        };
        // The agreed size's part: the peer's bitmap may cover a larger backing device.
        let enc = crate::bitmap::rle::encode(&bm.prefix(d.data_bytes / BM_BLOCK_SIZE));
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
        let Some(hs) = self.peers.get_mut(&node).and_then(|c| c.hs.as_mut()) else {
            return;
        };
        let Some(buf) = hs.bitmap.as_mut() else {
            self.peer_log(node, "bitmap before the sync decision".to_string());
            return self.drop_link(node, false);
        };
        let _ = chunk;
        buf.extend_from_slice(data);
        if buf.len() > 64 << 20 {
            self.peer_log(node, "bitmap too large".to_string());
            return self.drop_link(node, false);
        }
        if !last {
            return;
        }
        let enc = std::mem::take(buf);
        let strategy = hs.strategy;
        let nbits = self.size_bytes() / BM_BLOCK_SIZE;
        let theirs = match crate::bitmap::rle::decode(&enc, nbits) {
            Ok(b) => b,
            Err(e) => {
                self.peer_log(node, format!("bad bitmap from peer: {e}"));
                return self.drop_link(node, false);
            }
        };
        if let Some(bm) = self.disk.as_mut().and_then(|d| d.bitmap_mut(node))
            && bm.union_prefix(&theirs).is_err()
        {
            self.peer_log(node, "peer bitmap has the wrong size".to_string());
            return self.drop_link(node, false);
        }
        // A Primary's resync to this node fetches what this peer's marks say too (the resync
        // with this peer waits for it: see `resync_pump`).
        if let Some(writer) = self.writer_besides(node)
            && self
                .peers
                .get(&writer)
                .is_some_and(|c| c.rs.as_ref().is_some_and(|rs| !rs.source))
            && let Some(d) = self.disk.as_mut()
        {
            d.gather_marks_into(writer);
        }
        if let Some(c) = self.peers.get_mut(&node) {
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
            Packet::Uuids {
                current,
                history,
                flags,
                ..
            } => self.peer_new_uuid(node, current, &history, flags),
            Packet::SyncUuid { uuid } => self.become_full_sync_target(node, uuid),
            other => self.peer_log(
                node,
                format!("unexpected {:?} ignored", other.packet_type()),
            ),
        }
    }

    /// The peer's `State` after the handshake: its role and disk, and what its replication
    /// state starts or ends here (the end of a resync, a verify, an invalidate).
    fn peer_state(
        &mut self,
        node: NodeId,
        role: Role,
        disk: DiskState,
        repl: ReplState,
        fl: StateFlags,
    ) {
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        c.peer_paused = fl.contains(StateFlags::USER_ISP);
        let quorate_changed = c.peer_quorate != fl.contains(StateFlags::QUORATE);
        c.peer_quorate = fl.contains(StateFlags::QUORATE);
        if quorate_changed {
            self.recheck_quorum();
        }
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        let my_repl = c.st.repl();
        let was_target = matches!(c.peer_repl, ReplState::SyncTarget | ReplState::PausedSyncT);
        c.peer_repl = repl;
        if my_repl == ReplState::SyncSource && was_target && repl == ReplState::Established {
            return self.resync_source_finished(node, role, disk);
        }
        match self.change(
            Change::soft("peer-state")
                .peer_role(node, role)
                .pdsk(node, disk),
        ) {
            Ok(()) => {}
            Err(StateError::TwoPrimaries) => {
                // A second Primary without allow-two-primaries (the cluster-wide change
                // prevents it while connected; a peer state that says so anyway is a
                // protocol breach). Two Primaries must not stay connected: each refuses the
                // other's writes, and what each wrote alone makes the next handshake a split
                // brain, decided as any other.
                self.peer_log(
                    node,
                    "both nodes became Primary at the same time; dropping the connection \
                     (demote one, then connect again)"
                        .to_string(),
                );
                return self.drop_link(node, true);
            }
            Err(e) => {
                // DRBD drops a connection whose peer reports a state this node refuses.
                self.peer_log(
                    node,
                    format!("the peer's state is refused ({e}); reconnecting"),
                );
                return self.drop_link(node, false);
            }
        }
        if repl == ReplState::VerifyS && my_repl == ReplState::Established {
            return self.verify_target_start(node);
        }
        if repl == ReplState::Established && my_repl == ReplState::VerifyT {
            return self.verify_finished(node);
        }
        if repl == ReplState::SyncSource
            && my_repl == ReplState::Established
            && fl.contains(StateFlags::KEEP_BITMAP)
            && self.peers.get(&node).is_some_and(|c| c.rs.is_none())
        {
            // `invalidate-remote --reset-bitmap=no` there (its marks came first as OutOfSync).
            // Same generation on both: the target keeps its current UUID at the end.
            let own = self.disk.as_ref().map(|d| d.sb.current_uuid);
            if let (Some(c), Some(own)) = (self.peers.get_mut(&node), own) {
                c.peer_current = own;
            }
            self.peer_log(
                node,
                "the peer resyncs the marked blocks to this node".to_string(),
            );
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
                self.peer_log(node, format!("cannot serve its invalidate: {e}"));
            }
        }
    }

    /// The peer started a new generation while connected (`new-current-uuid`): follow it.
    fn peer_new_uuid(
        &mut self,
        node: NodeId,
        current: GenUuid,
        history: &[GenUuid],
        fl: UuidFlags,
    ) {
        let in_sync = self
            .peers
            .get(&node)
            .is_some_and(|c| c.st.repl() == ReplState::Established);
        let Some(d) = self.disk.as_mut() else {
            // A diskless node notes the generation (it serves it from its next promotion).
            if let Some(c) = self.peers.get_mut(&node) {
                c.peer_current = current;
            }
            if self.st.role() != Role::Primary
                && self
                    .peers
                    .get(&node)
                    .is_some_and(|c| c.st.disk() == DiskState::UpToDate)
            {
                self.exposed.uuid = current;
            }
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
            self.peer_log(
                node,
                format!("clear-bitmap new current UUID {current}: initial sync skipped"),
            );
            self.force_change(Change::hard("skip-initial-sync").pdsk(node, DiskState::UpToDate));
            self.set_up_to_date("skip-initial-sync");
            self.flush_bitmap_if_dirty();
            self.broadcast_state();
        } else if d.sb.current_uuid.same_as(current) {
            // There already (a Primary's `CurrentUuid` came first).
        } else if (in_sync || self.writes_from(node)) && self.st.disk() == DiskState::UpToDate {
            // Into the peer's new generation (in sync with it, or UpToDate and getting the
            // writes of a Primary that resyncs from here: this disk holds everything the new
            // generation writes); a third node not in sync with this one keeps the old
            // generation as its bitmap UUID (it lacks what the new one writes).
            // (Not a node the Primary's writes do not reach: see `weak`.)
            let weak = self.weak_of(node);
            let followers = self.generation_followers();
            if let Some(d) = self.disk.as_mut() {
                move_to_generation(&mut d.sb, current, &|n| {
                    n == node || (followers.contains(&n) && super::weak::node_bit(n) & weak == 0)
                });
            }
            self.peer_log(node, format!("new current UUID {current} from peer"));
            self.sb_changed();
        } else if self.st.disk() == DiskState::Inconsistent && self.writes_from(node) {
            // A disk being resynced that gets a Primary's writes (from the Primary itself or
            // its sync source) holds data of the new generation from now on, possibly the
            // only copy besides the Primary's: it takes that generation at once, still
            // Inconsistent. A handshake with a node that lacks it then finds this disk newer
            // and, Inconsistent, never its sync target nor its source (DRBD: "I shall become
            // SyncSource, but I am inconsistent!"), instead of letting an older node
            // overwrite the writes the Primary acknowledged with this disk's help.
            if let Some(c) = self.peers.get_mut(&node) {
                c.peer_current = current;
                c.peer_history = history.to_vec();
            }
            if let Some(d) = self.disk.as_mut() {
                take_generation(&mut d.sb, current, history);
            }
            self.peer_log(
                node,
                format!("new current UUID {current} from peer, taken while Inconsistent"),
            );
            self.sb_changed();
        } else if let Some(c) = self.peers.get_mut(&node) {
            // Not in sync: the peer's newest generation is remembered. A resync from it (one
            // running, or one its handshake starts) ends in it: the writes of the new
            // generation reach this node as they happen. (Third nodes this node is not in
            // sync with got their bitmap UUIDs when the resync started.)
            let previous = std::mem::replace(&mut c.peer_current, current);
            if !previous.is_zero() && !previous.same_as(current) {
                c.peer_history.insert(0, previous);
            }
            self.peer_log(
                node,
                format!("new current UUID {current} from peer noted (not in sync)"),
            );
        }
    }

    /// `node` sends this node a Primary's writes: it is Primary and replicates here, or it
    /// is this node's sync source.
    fn writes_from(&self, node: NodeId) -> bool {
        self.peers.get(&node).is_some_and(|c| {
            c.replicating()
                && (c.st.role() == Role::Primary
                    || matches!(
                        c.st.repl(),
                        ReplState::SyncTarget | ReplState::WFBitMapT | ReplState::PausedSyncT
                    ))
        })
    }

    /// `new-current-uuid` while connected: the peers follow ([`Self::peer_new_uuid`]).
    pub(super) fn announce_new_uuid(&mut self, clear_bitmap: bool) {
        for node in self.established_peers() {
            let fl = if clear_bitmap {
                UuidFlags::SKIP_INITIAL_SYNC
            } else {
                UuidFlags::NEW_DATAGEN
            };
            let has_disk = self
                .peers
                .get(&node)
                .is_some_and(|c| c.st.disk() >= DiskState::Inconsistent);
            if clear_bitmap && has_disk {
                self.force_change(
                    Change::hard("skip-initial-sync").pdsk(node, DiskState::UpToDate),
                );
            }
            let p = self.my_uuids_packet(node, fl);
            self.send(node, p);
        }
    }

    /// A peer with replication established (not in a handshake).
    pub(super) fn established_peers(&self) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(_, c)| c.st.conn() == ConnState::Connected && c.hs.is_none())
            .map(|(n, _)| *n)
            .collect()
    }

    /// `node` is back in this node's generation: a new one due for its absence is not needed
    /// any more, unless another peer with a disk is still away (three nodes: the generation
    /// must still tell the others that that one lacks what comes).
    fn uuid_not_due_for(&mut self, node: NodeId) {
        if !self.diskful_peer_away(Some(node)) {
            self.new_uuid_due = false;
        }
    }

    /// A peer with a disk (other than `except`) does not get this node's writes.
    pub(super) fn diskful_peer_away(&self, except: Option<NodeId>) -> bool {
        self.peers
            .iter()
            .any(|(n, c)| Some(*n) != except && !c.replicating() && !c.info.intentional_diskless)
    }

    /// After a forced promotion: every connected peer without good data gets a full sync.
    pub(super) fn full_sync_inconsistent_peers(&mut self) {
        for node in self.established_peers() {
            let needs = self.peers.get(&node).is_some_and(|c| {
                c.st.repl() == ReplState::Established
                    && c.st.disk() >= DiskState::Inconsistent
                    && c.st.disk() < DiskState::Consistent
            });
            if needs && let Err(e) = self.start_full_sync_to(node) {
                self.peer_log(node, e.to_string());
            }
        }
    }

    /// Keeps the generation toward a connected peer: rotate the current UUID so that the
    /// source's generation is new and the target can tell it later.
    pub(super) fn new_generation_for_sync(&mut self) {
        let primary = self.st.role() == Role::Primary;
        self.new_generation(primary);
    }
}
