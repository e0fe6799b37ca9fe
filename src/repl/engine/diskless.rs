//! A Primary without a disk of its own (DRBD 9's diskless client `disk none;`, or a node
//! whose disk was detached or failed): reads and writes go to the peers that hold the data.
//!
//! Such a node serves one generation of the data: the *exposed* UUID (DRBD's
//! `exposed_data_uuid`), learned from the UpToDate peers it connects to. While Primary it
//! uses only peers whose current UUID is that one; a peer on another generation is refused
//! at the handshake and tried again on the next connect (DRBD: "Can only connect to data
//! with current UUID"), since it either lacks writes this node made or holds writes it did
//! not (it resyncs from a peer that has them and then takes the exposed generation).
//!
//! Losing a peer that got its writes starts a new generation here, as it does on a diskful
//! Primary: the node sends [`CurrentUuid`](crate::repl::wire::Packet::CurrentUuid) to the
//! peers that still get its writes, with the *weak* mask of the diskful nodes that do not
//! (DRBD's `P_CURRENT_UUID` with `weak_nodes`; the announcing is in `weak`, as every Primary
//! does it). A diskless node has no bitmap; the peers that get its writes mark them for
//! the weak nodes instead, and make those nodes know that they are behind (see `weak`).
//! Without this, two diskful Secondaries that still see each other would go on calling
//! each other UpToDate over blocks only one of them got.
//!
//! A write completes when at least one peer acknowledged it per its protocol (under protocol
//! A: when it went to at least one peer); a read goes to one UpToDate peer of the exposed
//! generation. With none, both fail with an I/O error (DRBD's "no access to UpToDate data").

use super::Engine;
use crate::repl::state::{DiskState, ReplState, Role};
use crate::types::{GenUuid, NodeId};

/// What a node without a disk knows of the data it serves.
#[derive(Debug, Default)]
pub(super) struct Exposed {
    /// The generation of the data this node serves.
    pub uuid: GenUuid,
    /// The device size the peers hold (bytes): what a diskless node exports.
    pub bytes: u64,
}

impl Engine {
    /// This node has no disk of its own to read or write.
    pub(super) fn diskless(&self) -> bool {
        self.disk.is_none()
    }

    /// A peer this diskless node may use for its data: replicating, settled, and on the
    /// exposed generation.
    fn on_exposed_generation(&self, node: NodeId) -> bool {
        self.peers.get(&node).is_some_and(|c| {
            c.replicating()
                && c.hs.is_none()
                && c.st.repl() == ReplState::Established
                && !c.info.intentional_diskless
                && c.peer_current.same_as(self.exposed.uuid)
        })
    }

    /// The peer a diskless node reads from: UpToDate, on the exposed generation (the one
    /// with the lowest node id, so reads of one block go to one place while it lasts).
    pub(super) fn data_peer(&self) -> Option<NodeId> {
        self.peers
            .iter()
            .filter(|(_, c)| c.st.disk() == DiskState::UpToDate)
            .map(|(n, _)| *n)
            .find(|n| self.on_exposed_generation(*n))
    }

    /// The handshake of this diskless node with a diskful `node` decided: whether to use it.
    /// A Secondary follows an UpToDate peer's generation; a Primary keeps its own and refuses
    /// a peer on another one.
    pub(super) fn diskless_accepts(
        &mut self,
        node: NodeId,
        peer_current: GenUuid,
        peer_disk: DiskState,
        peer_bytes: u64,
    ) -> bool {
        if peer_disk < DiskState::Inconsistent || peer_disk == DiskState::DUnknown {
            return true; // another diskless node: no data to agree on
        }
        if let Some(c) = self.peers.get_mut(&node) {
            c.peer_current = peer_current;
        }
        // The device size the peers agreed on (an UpToDate peer's counts over a first guess).
        if peer_bytes > 0 && (peer_disk == DiskState::UpToDate || self.exposed.bytes == 0) {
            self.exposed.bytes = peer_bytes;
        }
        if self.st.role() != Role::Primary {
            if peer_disk == DiskState::UpToDate {
                self.exposed.uuid = peer_current;
            }
            return true;
        }
        if self.exposed.uuid.is_zero() && peer_disk == DiskState::UpToDate {
            self.exposed.uuid = peer_current;
        }
        if peer_current.same_as(self.exposed.uuid) {
            return true;
        }
        self.peer_log(
            node,
            format!(
                "Can only connect to data with current UUID={}; the peer has {}: it resyncs \
                 from a node on that generation first",
                self.exposed.uuid, peer_current
            ),
        );
        false
    }

    /// A diskless node became Primary: it serves the generation of its UpToDate peers (those
    /// on another one are dropped and tried again), and tells the peers that get its writes
    /// which diskful nodes do not.
    pub(super) fn diskless_promoted(&mut self) {
        let up: Vec<(NodeId, GenUuid)> = self
            .peers
            .iter()
            .filter(|(_, c)| {
                c.replicating() && c.hs.is_none() && c.st.disk() == DiskState::UpToDate
            })
            .map(|(n, c)| (*n, c.peer_current))
            .collect();
        if let Some((_, uuid)) = up.first() {
            self.exposed.uuid = *uuid;
        }
        let exposed = self.exposed.uuid;
        for (node, uuid) in up {
            if !uuid.same_as(exposed) {
                self.peer_log(
                    node,
                    format!("the peer is on generation {uuid}, not {exposed}: reconnecting"),
                );
                self.drop_link(node, false);
            }
        }
        let weak = self.weak_nodes();
        if weak != 0 {
            // A node that does not get the writes must be behind from the first one on: a
            // new generation (as a diskful Primary starts one when it lost a peer).
            self.new_uuid_due = true;
        }
        self.reannounce_generation();
    }

    /// Starts a new generation on a diskless Primary: a fresh UUID, announced to every peer
    /// that gets its writes (they move into it; see `weak`).
    pub(super) fn diskless_new_generation(&mut self) {
        let uuid = self.uuids.next(true);
        let old = self.exposed.uuid;
        self.exposed.uuid = uuid;
        self.log(format!("new current UUID: {uuid}"));
        // The peers that get the writes move into it with the announcement (which goes
        // before the next write on each link).
        for n in self.recipients() {
            if let Some(c) = self
                .peers
                .get_mut(&n)
                .filter(|c| c.peer_current.same_as(old))
            {
                c.peer_current = uuid;
            }
        }
        self.reannounce_generation();
    }

    /// A diskless Primary lost a peer that got its writes: a new generation at once if
    /// another peer still gets them (the one that does learns, with the weak mask, to mark
    /// what comes for the lost one), else with the next write; announced either way, before
    /// the writes that waited for the lost peer complete (the peers mark those too).
    pub(super) fn diskless_lost_peer(&mut self) {
        let others = !self.recipients().is_empty();
        if others && self.st.quorum() {
            self.new_uuid_due = false;
            self.diskless_new_generation();
        } else {
            self.new_uuid_due = true;
            self.announce_generation();
        }
    }

    /// A diskful node's current UUID changed: its diskless peers learn it (a diskless node
    /// serves the generation of its UpToDate peers, and checks it when it is promoted).
    pub(super) fn tell_diskless_peers_current(&mut self) {
        let Some(current) = self.disk.as_ref().map(|d| d.sb.current_uuid) else {
            return;
        };
        if current == self.current_told_to_diskless {
            return;
        }
        self.current_told_to_diskless = current;
        let to: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, c)| {
                c.replicating() && c.hs.is_none() && c.st.disk() == DiskState::Diskless
            })
            .map(|(n, _)| *n)
            .collect();
        for node in to {
            let p = self.my_uuids_packet(node, crate::repl::wire::UuidFlags::empty());
            self.send(node, p);
        }
    }
}
