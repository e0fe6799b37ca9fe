//! A Primary's new data generation stays *tentative* until an application write under it
//! is acknowledged. If the node loses quorum first, alone, the generation is taken back.
//!
//! Why: a Primary that loses one peer while another still gets its writes starts a new
//! generation at once (`replicate::lost_peer_data`), so that the other peer learns that the
//! lost one lacks what comes. When the partition forms one link at a time, the second link
//! may go a moment later, before any write completed under the new generation: the node is
//! alone, without quorum, with a generation nobody else holds and no acknowledged data in it.
//! Meanwhile the majority promotes and starts its own generation from the old one. Keeping
//! the orphan would make the next handshake a split brain (two generations grown from one);
//! taking it back leaves this node one generation behind the majority, its sync target, which
//! is what it is: everything it wrote under the orphan was never acknowledged. (DRBD 9 closes
//! the same window with a cluster-wide state change for every lost connection; udrbd has no
//! such agreement for connection loss yet.)
//!
//! The bits this node marked meanwhile stay: the resync that makes it a target copies them
//! back from the majority.

use super::Engine;
use crate::repl::state::{ConnState, Role};
use crate::types::{GenUuid, NodeId};

/// The UUIDs a rotation replaced.
#[derive(Debug, Clone)]
pub(super) struct Tentative {
    current: GenUuid,
    history: Vec<GenUuid>,
    bitmap_uuids: Vec<(NodeId, GenUuid)>,
}

impl Engine {
    /// Before a Primary's rotation: remember what it replaces (kept from the first rotation
    /// on, while none is confirmed).
    pub(super) fn remember_before_rotation(&mut self) {
        if self.tentative.is_some() || self.st.role() != Role::Primary {
            return;
        }
        let Some(d) = self.disk.as_ref() else {
            return;
        };
        self.tentative = Some(Tentative {
            current: d.sb.current_uuid,
            history: d.sb.history.to_vec(),
            bitmap_uuids: d
                .sb
                .peers
                .iter()
                .filter_map(|p| p.node_id.map(|n| (n, p.bitmap_uuid)))
                .collect(),
        });
    }

    /// The generation is confirmed: an application write under it was acknowledged, or a
    /// peer learned it in a handshake, or this node is no longer Primary.
    pub(super) fn generation_confirmed(&mut self) {
        self.tentative = None;
    }

    /// Quorum is gone: a Primary alone with a tentative generation takes it back.
    pub(super) fn roll_back_tentative_generation(&mut self) {
        let Some(t) = self.tentative.take() else {
            return;
        };
        // (A link that just went still has its session here; its connection state is new.)
        let connected = self
            .peers
            .values()
            .any(|p| p.st.conn() == ConnState::Connected);
        if self.st.role() != Role::Primary || connected {
            return;
        }
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        let orphan = d.sb.current_uuid;
        d.sb.current_uuid = t.current;
        for (slot, uuid) in d.sb.history.iter_mut().zip(t.history) {
            *slot = uuid;
        }
        for p in d.sb.peers.iter_mut() {
            if let Some((_, uuid)) = t.bitmap_uuids.iter().find(|(n, _)| Some(*n) == p.node_id) {
                p.bitmap_uuid = *uuid;
            }
        }
        self.log(format!(
            "new current UUID {orphan} taken back: quorum went before any write under it was \
             acknowledged; current UUID {} again",
            t.current
        ));
        // The first write after quorum returns starts a generation again.
        self.new_uuid_due = true;
        self.sb_changed();
    }
}
