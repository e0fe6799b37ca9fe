//! `drbdadm disconnect` (and `down`) as DRBD 9 makes it: a cluster-wide change the peers
//! agree to, not a link that simply goes away.
//!
//! What the agreement buys is DRBD's `outdate_on_disconnect()`: under `fencing` (resource-only
//! or resource-and-stonith), when a Primary and a Secondary part on purpose, the Secondary's
//! disk becomes Outdated (persisted: it cannot be promoted without `--force` until it has
//! resynced) and the Primary records the peer Outdated (`MDF_PEER_OUTDATED`). The link's end
//! then fences nobody: the Primary knows the peer cannot have newer data, which is what a
//! fence-peer handler would have had to prove. Without the agreement a planned disconnect of
//! the Secondary looked like a lost peer and ran fence-peer (a Pacemaker constraint, a
//! frozen Primary under resource-and-stonith).
//!
//! The state rules check both sides before anything changes: a Primary that reads through
//! this peer (a SyncTarget) may not lose it (`(-2) Need access to UpToDate data`), and a
//! Primary next to another Primary under fencing is refused (`(-7) Refusing to be Primary
//! while peer is not outdated`) as in DRBD; `disconnect --force` skips the agreement.

use super::Engine;
use super::states::Change;
use super::twopc::Proposal;
use crate::config::Fencing;
use crate::repl::state::{ConnState, DiskState, ReplState, Role, StateError};
use crate::types::NodeId;
use std::collections::BTreeSet;

impl Engine {
    /// `drbdadm disconnect`: answered once the peers agreed and this node's side is made
    /// (the driver closes the links then); at once when no peer is connected.
    pub(super) fn disconnect_cluster_wide(&mut self, token: u64) {
        let asked = self.twopc_peers();
        if asked.is_empty() {
            return self.wait_for_meta(token);
        }
        if self.transient() {
            return self.deferred.push(Proposal::Disconnect {
                token,
                outdate: false,
            });
        }
        let outdate = self.outdate_on_disconnect();
        if let Err(e) = self.validate(&self.own_disconnect_change(outdate)) {
            return self.admin_failed(token, e);
        }
        self.start_twopc(Proposal::Disconnect { token, outdate }, asked);
    }

    /// DRBD's `outdate_on_disconnect()`: a connected peer under fencing whose role differs
    /// from this node's.
    fn outdate_on_disconnect(&self) -> bool {
        let role = self.st.role();
        self.peers.iter().any(|(n, c)| {
            c.replicating()
                && c.st.conn() == ConnState::Connected
                && c.st.role() != Role::Unknown
                && c.st.role() != role
                && self.fencing_policy(*n) != Fencing::DontCare
        })
    }

    /// This node's side, for the rules: every connected peer gone, and with `outdate` the
    /// Secondary's disk (or the Primary's record of its peer) Outdated. The link's end makes
    /// the connection states.
    fn own_disconnect_change(&self, outdate: bool) -> Change {
        let peers = self.twopc_peers();
        self.parting_change("disconnect", &peers, ConnState::Disconnecting, outdate)
    }

    /// The change a peer's disconnect makes here, checked before agreeing: the peer gone
    /// (this side keeps trying, `Connecting`), and with `outdate` this node's disk (as the
    /// Secondary) or the peer's (as the Primary) Outdated.
    pub(super) fn remote_disconnect_change(&self, node: NodeId, outdate: bool) -> Change {
        self.parting_change(
            "remote",
            &BTreeSet::from([node]),
            ConnState::Connecting,
            outdate,
        )
    }

    /// Parting from `nodes` on purpose, as a change to check: their connections become
    /// `conn`, and with `outdate` (DRBD's `outdate_on_disconnect()`) the Primary records them
    /// Outdated, or the Secondary outdates its own disk.
    fn parting_change(
        &self,
        tag: &'static str,
        nodes: &BTreeSet<NodeId>,
        conn: ConnState,
        outdate: bool,
    ) -> Change {
        let primary = self.st.role() == Role::Primary;
        let pdsk = if outdate && primary {
            DiskState::Outdated
        } else {
            DiskState::DUnknown
        };
        let mut c = Change::soft(tag);
        for &node in nodes {
            c = c
                .conn(node, conn)
                .repl(node, ReplState::Off)
                .pdsk(node, pdsk);
        }
        if outdate && !primary && self.st.disk() > DiskState::Outdated {
            c = c.disk(DiskState::Outdated);
        }
        c
    }

    /// Every peer agreed: make this node's side (the links close after the answer).
    pub(super) fn commit_disconnect(
        &mut self,
        outdate: bool,
        asked: &BTreeSet<NodeId>,
    ) -> Result<(), StateError> {
        if !outdate {
            return Ok(());
        }
        self.part_outdated(asked, "disconnect")
    }

    /// The peer's disconnect is committed: this node's side of it (the link's end follows).
    pub(super) fn remote_disconnect_committed(&mut self, node: NodeId, outdate: bool) {
        if outdate && let Err(e) = self.part_outdated(&BTreeSet::from([node]), "remote") {
            self.peer_log(node, format!("could not outdate the disk: {e}"));
        }
    }

    /// The outdate part of an agreed disconnect from `nodes`: as the Primary, each is
    /// recorded Outdated; as the Secondary, this disk becomes Outdated. Hard: it was checked
    /// with the connection's end before the prepare (`parting_change`), and the link is still
    /// up here, which the soft rules alone would refuse (-6).
    fn part_outdated(
        &mut self,
        nodes: &BTreeSet<NodeId>,
        tag: &'static str,
    ) -> Result<(), StateError> {
        if self.st.role() == Role::Primary {
            for &node in nodes {
                self.peer_outdated_on_disconnect(node);
            }
            return Ok(());
        }
        if self.st.disk() > DiskState::Outdated {
            self.log("Outdating this disk: parting from a Primary under fencing".into());
            self.outdate_self(Change::hard(tag))?;
        }
        Ok(())
    }

    /// As the Primary: `node` parts Outdated, recorded as fence-peer's answer would be, so
    /// the link's end fences nobody and a restart still knows it.
    fn peer_outdated_on_disconnect(&mut self, node: NodeId) {
        if !self.peers.get(&node).is_some_and(|c| {
            c.st.disk() > DiskState::Outdated && c.st.disk() != DiskState::DUnknown
        }) {
            return;
        }
        self.force_change(Change::hard("disconnect").pdsk(node, DiskState::Outdated));
        self.set_peer_outdated_flag(node, true);
    }
}
