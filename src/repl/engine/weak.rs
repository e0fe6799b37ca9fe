//! Diskful nodes a Primary's writes do not reach (*weak* nodes, DRBD's `weak_nodes`), seen
//! from the nodes those writes do reach, and from the weak nodes themselves.
//!
//! With three nodes a partition need not be clean: the Primary may lose node C while node B,
//! which gets its writes, still sees C. B and C are in sync as far as they know, so B must
//! learn that C misses what the Primary writes now. The Primary (diskful or diskless) sends
//! its generation and weak mask in [`Packet::CurrentUuid`] whenever the set of nodes its
//! writes reach changes, and before the UUIDs of a new generation. A Secondary that gets the
//! writes moves into a new generation with the weak nodes left behind (their bitmap UUID is
//! the old one), marks for them every write it still keeps from the Primary (those in flight
//! when the Primary lost them) and every write that comes while they are weak, and passes the
//! mask on to its other peers. (A diskless Primary has no bitmap of its own: these marks are
//! the only record; see `diskless`.)
//!
//! A weak node that still sees such a Secondary must not call itself UpToDate: it would serve
//! a diskless Primary's reads, or be promoted, without the Primary's latest writes. So:
//! - the Secondary sends it every block it marks for it while they are connected (`OutOfSync`,
//!   in order with the mask), and resyncs it;
//! - a node that a peer reports as weak is Outdated, and a handshake or the end of a resync
//!   makes it Outdated, not UpToDate, while it is weak, or while blocks are still marked for
//!   its sync source (an `OutOfSync` that came during the resync);
//! - once no peer reports it weak any more, it runs the handshake again with an UpToDate peer,
//!   which resyncs whatever is still marked and makes it UpToDate.
//!
//! Every mark for a weak node is sent before the mask that lifts its weakness (one stream),
//! so a node that becomes UpToDate after that has every block it lacked.

use super::{Change, Engine};
use crate::repl::state::{ConnState, DiskState, ReplState, Role};
use crate::repl::wire::{Packet, SizesFlags};
use crate::types::{GenUuid, NodeId, SECTOR_SIZE, Sector};

/// `node`'s bit in a node mask.
pub(super) fn node_bit(node: NodeId) -> u64 {
    1u64 << (node.0 & 63)
}

impl Engine {
    /// `CurrentUuid { uuid, weak }` from `node`.
    pub(super) fn current_uuid_received(&mut self, node: NodeId, uuid: GenUuid, weak: u64) {
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        let primary = c.st.role() == Role::Primary;
        let before = std::mem::replace(&mut c.weak, weak);
        if !primary {
            // Passed on by a Secondary, with its current UUID (what a resync from it ends
            // in): whether this node is weak.
            c.peer_current = uuid;
            return self.weakness_changed();
        }
        // A diskful Primary's generation comes with its `Uuids` (NEW_DATAGEN), which follow
        // this; a diskless one has no other way to send it.
        if c.st.disk() == DiskState::Diskless {
            c.peer_current = uuid;
            self.follow_diskless_primary(node, uuid, weak);
        }
        let newly = weak & !before;
        if newly != 0 {
            self.mark_kept_writes_for(node, newly);
        }
        self.pass_on_weak(node, weak);
        self.resync_weak_nodes(weak);
    }

    /// The weak nodes in `mask` that replicate with this node run the handshake again when
    /// blocks are marked for them or they are on an older generation than this node: the
    /// resync brings them the Primary's writes and generation (a diskless Primary takes a
    /// node back only on its generation; see `diskless`).
    fn resync_weak_nodes(&mut self, mask: u64) {
        let Some(current) = self.disk.as_ref().map(|d| d.sb.current_uuid) else {
            return;
        };
        for w in self.connected_in(mask) {
            let behind = self.peers.get(&w).is_some_and(|c| {
                c.hs.is_none()
                    && c.st.repl() == ReplState::Established
                    && !c.peer_current.same_as(current)
            });
            if behind {
                self.handshake_again_with(
                    w,
                    SizesFlags::empty(),
                    "the peer misses the Primary's writes",
                );
            } else {
                self.resync_again_if_marked(w);
            }
        }
    }

    /// Moves into the diskless Primary `node`'s generation `uuid` (a diskful one sends its
    /// UUIDs for that): as a follower when UpToDate and in sync with it, the weak nodes left
    /// behind; taken as it is by a disk not UpToDate that gets its writes.
    fn follow_diskless_primary(&mut self, node: NodeId, uuid: GenUuid, weak: u64) {
        let Some(d) = self.disk.as_ref() else {
            return;
        };
        if d.sb.current_uuid.same_as(uuid) {
            return;
        }
        let in_sync = self
            .peers
            .get(&node)
            .is_some_and(|c| c.replicating() && c.st.repl() == ReplState::Established);
        match self.st.disk() {
            DiskState::UpToDate if in_sync => {
                let followers = self.generation_followers();
                if let Some(d) = self.disk.as_mut() {
                    super::disk::move_to_generation(&mut d.sb, uuid, &|n| {
                        followers.contains(&n) && node_bit(n) & weak == 0
                    });
                }
            }
            DiskState::Inconsistent | DiskState::Outdated | DiskState::Consistent if in_sync => {
                if let Some(d) = self.disk.as_mut() {
                    super::disk::take_generation(&mut d.sb, uuid, &[]);
                }
            }
            _ => return,
        }
        self.peer_log(
            node,
            format!("new current UUID {uuid} from the diskless Primary"),
        );
        self.sb_changed();
    }

    /// The writes this node keeps from `node` (not yet known to be everywhere) are marked for
    /// the nodes in `mask`, and sent to those connected here.
    fn mark_kept_writes_for(&mut self, node: NodeId, mask: u64) {
        let kept: Vec<(u64, u64)> = self
            .peers
            .get(&node)
            .and_then(|c| c.session.as_ref())
            .map(|s| s.rx_unacked.iter().map(|&(_, o, n)| (o, n)).collect())
            .unwrap_or_default();
        let nodes = self.diskful_in(mask);
        for (off, len) in kept {
            self.mark_for_weak(&nodes, off, len);
        }
        if !nodes.is_empty() {
            self.flush_bitmap_if_dirty();
        }
    }

    /// Marks `[off, off+len)` for `nodes`, and tells those connected here.
    fn mark_for_weak(&mut self, nodes: &[NodeId], off: u64, len: u64) {
        if let Some(d) = self.disk.as_mut() {
            for n in nodes {
                d.mark(*n, off, len);
            }
        }
        for n in self.connected_in(nodes.iter().fold(0, |m, n| m | node_bit(*n))) {
            let mut at = 0;
            // OutOfSync sizes are u32 bytes.
            while at < len {
                let size = (len - at).min(1 << 30);
                self.send(
                    n,
                    Packet::OutOfSync {
                        sector: Sector((off + at) / SECTOR_SIZE),
                        size: size as u32,
                    },
                );
                at += size;
            }
        }
    }

    /// The nodes a write that `from` replicated here does not reach, by `from`'s weak mask.
    pub(super) fn weak_of(&self, from: NodeId) -> u64 {
        self.peers
            .get(&from)
            .filter(|c| c.st.role() == Role::Primary)
            .map_or(0, |c| c.weak)
    }

    /// A write from `from` that its weak nodes do not get: marked for them, and sent to
    /// those connected here. Returns `from`'s weak mask.
    pub(super) fn mark_weak_write(&mut self, from: NodeId, off: u64, len: u64) -> u64 {
        let weak = self.weak_of(from);
        if weak != 0 {
            let nodes = self.diskful_in(weak);
            self.mark_for_weak(&nodes, off, len);
            self.resync_weak_nodes(weak);
        }
        weak
    }

    /// Configured diskful peers in `mask`.
    fn diskful_in(&self, mask: u64) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(n, c)| node_bit(**n) & mask != 0 && !c.info.intentional_diskless)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Peers in `mask` this node replicates with.
    fn connected_in(&self, mask: u64) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(n, c)| node_bit(**n) & mask != 0 && c.replicating())
            .map(|(n, _)| *n)
            .collect()
    }

    /// Tells every other diskful peer this node replicates with the Primary's weak mask, with
    /// this node's current UUID (a sync target of this node takes it at the end).
    fn pass_on_weak(&mut self, from: NodeId, weak: u64) {
        let uuid = self
            .disk
            .as_ref()
            .map_or(GenUuid::ZERO, |d| d.sb.current_uuid);
        let to: Vec<NodeId> = self
            .peers
            .iter()
            // (Connected is enough: a peer in its handshake takes it too.)
            .filter(|(n, c)| {
                **n != from && c.st.conn() == ConnState::Connected && !c.info.intentional_diskless
            })
            .map(|(n, _)| *n)
            .collect();
        for n in to {
            self.send(n, Packet::CurrentUuid { uuid, weak });
        }
    }

    /// `node` is gone from here, or no longer Primary (`was_primary`: it was): its weak mask
    /// no longer holds; the other peers learn it if it was a Primary's.
    pub(super) fn weak_mask_gone(&mut self, node: NodeId, was_primary: bool) {
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        if c.weak == 0 {
            return;
        }
        c.weak = 0;
        if was_primary {
            self.pass_on_weak(node, 0);
        }
        self.weakness_changed();
    }

    /// A peer reports this node weak: a Primary's writes do not reach it.
    pub(super) fn weak_here(&self) -> bool {
        let me = node_bit(self.cfg.node_id);
        self.peers
            .values()
            .any(|c| c.st.conn() == ConnState::Connected && c.weak & me != 0)
    }

    /// What a diskful peer this node starts a handshake with learns first: the weak mask of
    /// the Primary whose writes come here, if it has one (so that the peer decides with it: a
    /// weak node is not UpToDate).
    pub(super) fn weak_for_handshake(&self, node: NodeId) -> Option<Packet> {
        let c = self.peers.get(&node)?;
        if c.info.intentional_diskless {
            return None;
        }
        let weak = self
            .peers
            .iter()
            .filter(|(n, p)| **n != node && p.st.role() == Role::Primary && p.replicating())
            .fold(0, |m, (_, p)| m | p.weak);
        let uuid = self.disk.as_ref()?.sb.current_uuid;
        (weak != 0).then_some(Packet::CurrentUuid { uuid, weak })
    }

    /// The disk state a handshake or a resync's end gives this disk, where it would be
    /// UpToDate: Outdated while it is weak (see the module docs).
    pub(super) fn up_to_date_unless_weak(&self) -> DiskState {
        if self.weak_here() {
            DiskState::Outdated
        } else {
            DiskState::UpToDate
        }
    }

    /// Whether this node is weak changed (or may have): an UpToDate disk becomes Outdated; an
    /// Outdated one no longer weak asks an UpToDate peer for the handshake that makes it
    /// UpToDate again.
    pub(super) fn weakness_changed(&mut self) {
        if self.disk.is_none() {
            return;
        }
        if self.weak_here() {
            if self.st.disk() == DiskState::UpToDate && self.st.role() != Role::Primary {
                self.log("the Primary's writes do not reach this node: Outdated".into());
                let _ = self.outdate_self(Change::hard("weak"));
                self.broadcast_state();
            }
            return;
        }
        if self.st.disk() != DiskState::Outdated {
            return;
        }
        let source = self
            .peers
            .iter()
            .find(|(_, c)| {
                c.replicating()
                    && c.hs.is_none()
                    && c.st.repl() == ReplState::Established
                    && matches!(c.st.disk(), DiskState::UpToDate | DiskState::Consistent)
            })
            .map(|(n, _)| *n);
        if let Some(n) = source {
            self.handshake_again_with(n, SizesFlags::empty(), "no longer behind a Primary");
        }
    }

    // ----- the Primary's side -----

    /// A diskful peer that gets this node's writes. (Also checked while a lost link's state
    /// change is being committed: its session ends only after that.)
    pub(super) fn recipient(&self, node: NodeId) -> bool {
        self.gets_writes(node)
            && self.peers.get(&node).is_some_and(|c| {
                !c.info.intentional_diskless && c.st.repl() >= ReplState::Established
            })
    }

    /// Every [`Self::recipient`].
    pub(super) fn recipients(&self) -> Vec<NodeId> {
        self.peers
            .keys()
            .copied()
            .filter(|n| self.recipient(*n))
            .collect()
    }

    /// The diskful peers that do not get this node's writes, a bit per node id.
    pub(super) fn weak_nodes(&self) -> u64 {
        self.cfg
            .peers
            .iter()
            .filter(|p| !p.intentional_diskless && !self.recipient(p.node_id))
            .fold(0, |m, p| m | node_bit(p.node_id))
    }

    /// Sends this Primary's generation and weak mask to every diskful peer that gets its
    /// writes, if the mask changed since the last announcement. A diskful Primary does it too:
    /// with three nodes, a Secondary that still sees a node the Primary does not must mark
    /// for it what the Primary writes (see `weak`).
    pub(super) fn announce_generation(&mut self) {
        let diskful_peers = self
            .cfg
            .peers
            .iter()
            .filter(|p| !p.intentional_diskless)
            .count();
        // (Two diskful nodes: nobody to pass a weak mask on to.)
        if self.st.role() != Role::Primary || (!self.diskless() && diskful_peers < 2) {
            return;
        }
        let weak = self.weak_nodes();
        if self.announced_weak == Some(weak) {
            return;
        }
        self.announced_weak = Some(weak);
        let uuid = self
            .disk
            .as_ref()
            .map_or(self.exposed.uuid, |d| d.sb.current_uuid);
        for node in self.recipients() {
            self.send(node, Packet::CurrentUuid { uuid, weak });
        }
    }

    /// Announces the generation and weak mask even if the mask did not change (a new
    /// generation, a promotion).
    pub(super) fn reannounce_generation(&mut self) {
        self.announced_weak = None;
        self.announce_generation();
    }
}
