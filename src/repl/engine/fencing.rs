//! Peer fencing (`fencing resource-only | resource-and-stonith`), the fence-peer handler's
//! answer, the I/O freeze, and `outdate` (DRBD's `conn_try_outdate_peer()` and `drbd_set_role()`
//! in `drbd_nl.c`).
//!
//! - A Primary that loses an established link to a peer whose disk it does not know to be
//!   Outdated or Inconsistent asks for `fence-peer` for that peer. Under resource-and-stonith,
//!   application I/O is frozen from that moment (`susp-io( no -> fencing )`): new requests are
//!   queued and finished ones are not acknowledged, because the peer might be promoted with
//!   data that lacks them. resource-only never freezes.
//! - `primary` while a fencing peer is neither connected nor known Outdated runs fence-peer
//!   first and answers the admin command only once the handler has.
//! - The exit code is read as DRBD reads it: 3 peer Inconsistent, 4 peer Outdated, 5 peer
//!   Outdated only if this disk is UpToDate, 6 outdate myself, 7 peer Outdated (STONITHed). Any
//!   other code, or no exit at all, is "fence-peer helper broken": nothing changes, and a
//!   freeze stays until `resume-io` (or the peer comes back).
//! - A fenced peer is remembered in its metadata slot (`MDF_PEER_OUTDATED`), so a restart does
//!   not forget it; `unfence-peer` runs once both disks are UpToDate again.

use super::{Change, Engine};
use crate::config::Fencing;
use crate::meta::superblock::{flags, peer_flags};
use crate::repl::handler::Handler;
use crate::repl::state::{ConnState, DiskState, Role, StateError};
use crate::types::NodeId;
use std::collections::{BTreeMap, BTreeSet};

/// What is in flight of fencing.
#[derive(Debug, Default)]
pub(super) struct FenceState {
    /// Peers with a fence-peer call whose answer is awaited, with the link generation it was
    /// called for: an answer about a link that has come back since is ignored, as DRBD does.
    pending: BTreeMap<NodeId, u64>,
    /// Per peer, bumped on every link loss and every new link.
    link_gen: BTreeMap<NodeId, u64>,
    /// Peers whose loss froze I/O and that are neither fenced nor back yet.
    freezing: BTreeSet<NodeId>,
    /// `primary` commands waiting for fence-peer.
    promotions: Vec<super::twopc::Promotion>,
}

/// How DRBD reads fence-peer's exit code.
enum Answer {
    /// The peer's disk is now known to be this (3, 4, 5 with an UpToDate disk, 7).
    Peer(DiskState, &'static str),
    /// 5 while this disk is not UpToDate: nothing is known.
    Nothing(&'static str),
    /// 6: the peer is Primary; this node outdates itself.
    OutdateMyself,
    /// Anything else.
    Broken(Option<i32>),
}

impl Engine {
    pub(super) fn fencing_policy(&self, node: NodeId) -> Fencing {
        self.peer_info(node)
            .map_or(Fencing::DontCare, |p| p.fencing)
    }

    /// The peer's disk is known not to hold newer data than this node: Outdated or
    /// Inconsistent (kept while disconnected), or fenced before a restart.
    fn peer_known_outdated(&self, node: NodeId) -> bool {
        self.peers
            .get(&node)
            .is_some_and(|c| matches!(c.st.disk(), DiskState::Outdated | DiskState::Inconsistent))
    }

    fn peer_connected(&self, node: NodeId) -> bool {
        self.peers
            .get(&node)
            .is_some_and(|c| c.st.conn() == ConnState::Connected)
    }

    /// Peers that fencing says must be dealt with before this node may be Primary alone.
    fn peers_to_fence(&self) -> Vec<NodeId> {
        self.cfg
            .peers
            .iter()
            .map(|p| p.node_id)
            .filter(|&n| {
                self.fencing_policy(n) != Fencing::DontCare
                    && !self.peer_connected(n)
                    && !self.peer_known_outdated(n)
            })
            .collect()
    }

    /// May this node be Primary without `--force` as far as fencing goes (DRBD's
    /// `SS_PRIMARY_NOP` check)? Under dont-care, always.
    pub(super) fn fencing_allows_primary(&self) -> bool {
        self.peers_to_fence().is_empty()
    }

    /// `primary`: if a fencing peer is unreachable and not known Outdated, call fence-peer
    /// for it and answer `token` once it has. False when nothing needs fencing (promote now).
    pub(super) fn fence_before_promote(&mut self, token: u64, force: bool) -> bool {
        if self.st.role() == Role::Primary
            || !matches!(self.st.disk(), DiskState::Consistent | DiskState::UpToDate)
        {
            // Nothing to fence for, or a refusal (or a forced promotion of bad data) that does
            // not depend on the peer: `try_promote` answers.
            return false;
        }
        let need = self.peers_to_fence();
        if need.is_empty() {
            return false;
        }
        for node in need {
            self.call_fence_peer(node);
        }
        self.fence.promotions.push(super::twopc::Promotion {
            purpose: super::twopc::Purpose::Admin { token },
            force,
            deadline: None,
        });
        true
    }

    fn call_fence_peer(&mut self, node: NodeId) {
        if self.fence.pending.contains_key(&node) {
            return; // its answer serves this caller too
        }
        let generation = self.fence.link_gen.get(&node).copied().unwrap_or(0);
        self.fence.pending.insert(node, generation);
        self.run_handler(Handler::FencePeer, Some(node));
    }

    /// The link to `node` is going down (called before anything is reset). Starts fencing for
    /// a Primary that needs it, freezing I/O under resource-and-stonith. Returns the peer disk
    /// state to keep while disconnected (Outdated or Inconsistent; otherwise it is DUnknown).
    pub(super) fn fence_link_lost(&mut self, node: NodeId) -> Option<DiskState> {
        let c = self.peers.get(&node)?;
        let was_up = c.st.conn() == ConnState::Connected && c.hs.is_none();
        let old_disk = c.st.disk();
        let known =
            matches!(old_disk, DiskState::Outdated | DiskState::Inconsistent).then_some(old_disk);
        *self.fence.link_gen.entry(node).or_insert(0) += 1;
        let policy = self.fencing_policy(node);
        if !was_up
            || self.st.role() != Role::Primary
            || policy == Fencing::DontCare
            || known.is_some()
            || old_disk == DiskState::Diskless
            || self.st.disk() < DiskState::Consistent
        {
            return known;
        }
        if policy == Fencing::ResourceAndStonith {
            self.fence.freezing.insert(node);
            if !self.st.susp_fen() {
                self.force_change(Change::hard("lost-peer").susp_fen(true));
            }
        }
        self.call_fence_peer(node);
        known
    }

    /// A new link to `node`: a fence-peer answer still to come is about the old one, and a
    /// freeze for that peer ends (DRBD resumes when the connection is re-established).
    pub(super) fn fence_peer_up(&mut self, node: NodeId) {
        *self.fence.link_gen.entry(node).or_insert(0) += 1;
        if self.fence.freezing.remove(&node) {
            self.update_freeze();
        }
    }

    /// At attach: peers fenced before (`MDF_PEER_OUTDATED`) are known Outdated until they
    /// connect and say otherwise.
    pub(super) fn fence_attached(&mut self) {
        let Some(d) = self.disk.as_ref() else {
            return;
        };
        let fenced: Vec<NodeId> =
            d.sb.peers
                .iter()
                .filter(|p| p.flags & peer_flags::OUTDATED != 0)
                .filter_map(|p| p.node_id)
                .collect();
        for node in fenced {
            if self
                .peers
                .get(&node)
                .is_some_and(|c| c.st.conn() != ConnState::Connected)
            {
                self.force_change(Change::hard("attach").pdsk(node, DiskState::Outdated));
            }
        }
    }

    pub(super) fn handler_done(
        &mut self,
        handler: Handler,
        node: Option<NodeId>,
        exit: Option<i32>,
    ) {
        // Only fence-peer answers; the others are notifications whose exit codes the driver
        // logs. (DRBD drops the connection when before-resync-target fails; this build does
        // not wait for that handler.)
        if let (Handler::FencePeer, Some(node)) = (handler, node) {
            self.fence_answer(node, exit);
        }
    }

    fn fence_answer(&mut self, node: NodeId, exit: Option<i32>) {
        let Some(generation) = self.fence.pending.remove(&node) else {
            return self.peer_log(node, "fence-peer answer without a call ignored".to_string());
        };
        let policy = self.fencing_policy(node);
        let answer = match exit {
            Some(3) => Answer::Peer(DiskState::Inconsistent, "peer is inconsistent or worse"),
            Some(4) => Answer::Peer(DiskState::Outdated, "peer was fenced"),
            Some(5) if self.st.disk() == DiskState::UpToDate => Answer::Peer(
                DiskState::Outdated,
                "peer is unreachable, assumed to be dead",
            ),
            Some(5) => Answer::Nothing("peer unreachable, doing nothing since disk != UpToDate"),
            Some(6) => Answer::OutdateMyself,
            Some(7) => {
                if policy != Fencing::ResourceAndStonith {
                    self.peer_log(
                        node,
                        "fence-peer() = 7 && fencing != Stonith !!!".to_string(),
                    );
                }
                Answer::Peer(DiskState::Outdated, "peer was stonithed")
            }
            other => Answer::Broken(other),
        };
        let text = match &answer {
            Answer::Peer(_, t) | Answer::Nothing(t) => t,
            Answer::OutdateMyself => "peer is active",
            Answer::Broken(Some(n)) => {
                // The state change is aborted: a freeze stays until resume-io.
                self.peer_log(node, format!("fence-peer helper broken, returned {n}"));
                return self.after_fence_answer(node);
            }
            Answer::Broken(None) => {
                self.peer_log(
                    node,
                    "fence-peer helper broken, it did not exit (killed at the \
                     handler deadline, died of a signal, or could not be started)"
                        .to_string(),
                );
                return self.after_fence_answer(node);
            }
        };
        let code = exit.unwrap_or_default();
        self.peer_log(node, format!("fence-peer helper returned {code} ({text})"));
        if self.peer_connected(node) {
            self.peer_log(
                node,
                "connection re-established; fence-peer exit code not applied".to_string(),
            );
            return self.after_fence_answer(node);
        }
        if self.fence.link_gen.get(&node).copied().unwrap_or(0) != generation {
            // Connected and lost again while the handler ran: it answered about another link,
            // and the loss of this one needs its own answer.
            self.peer_log(node, "Ignoring fence-peer exit code".to_string());
            if self.st.role() == Role::Primary && !self.peer_known_outdated(node) {
                self.call_fence_peer(node);
            }
            return self.after_fence_answer(node);
        }
        match answer {
            Answer::Peer(disk, _) => {
                self.force_change(Change::hard("after-fencing").pdsk(node, disk));
                self.set_peer_outdated_flag(node, true);
                if self.fence.freezing.remove(&node) {
                    self.update_freeze();
                }
            }
            Answer::OutdateMyself => {
                self.peer_log(node, "Peer is primary, outdating myself.".to_string());
                if self.st.role() == Role::Primary {
                    // A Primary cannot be Outdated: DRBD's state change fails the same way.
                    self.peer_log(
                        node,
                        format!(
                            "cannot outdate myself while Primary: {}",
                            StateError::NoUpToDateDisk
                        ),
                    );
                } else if let Err(e) = self.outdate_self(Change::soft("after-fencing")) {
                    self.peer_log(node, format!("cannot outdate myself: {e}"));
                }
            }
            Answer::Nothing(_) | Answer::Broken(_) => {}
        }
        self.after_fence_answer(node);
    }

    /// Once no fence-peer answer is outstanding, the promotions that waited for one go on.
    fn after_fence_answer(&mut self, _node: NodeId) {
        if !self.fence.pending.is_empty() {
            return;
        }
        for p in std::mem::take(&mut self.fence.promotions) {
            self.promote(p);
        }
    }

    /// Lifts the freeze once no lost peer holds it: acknowledges what finished meanwhile, then
    /// admits what was queued, in order.
    fn update_freeze(&mut self) {
        if !self.st.susp_fen() || !self.fence.freezing.is_empty() {
            return;
        }
        // The answers held meanwhile go out, then the frozen requests are admitted in order
        // (see `states::after_state_change`).
        self.force_change(Change::hard("after-fencing").susp_fen(false));
    }

    /// `drbdadm resume-io`: the operator takes the risk a failed fence-peer left.
    pub(super) fn resume_io(&mut self) {
        if self.st.susp_user() {
            self.force_change(Change::hard("resume-io").susp_user(false));
        }
        if !self.st.susp_fen() {
            return;
        }
        self.fence.freezing.clear();
        self.update_freeze();
    }

    /// `drbdadm outdate`: a consistent Secondary that no Primary relies on (the state rules
    /// refuse the rest with DRBD's codes).
    pub(super) fn outdate(&mut self) -> Result<(), StateError> {
        if self.st.role() == Role::Primary {
            // drbdadm's "is primary and thus cannot be outdated" (exit 17).
            return Err(StateError::NoUpToDateDisk);
        }
        self.outdate_self(Change::soft("outdate"))
    }

    /// Outdated, persisted the way DRBD encodes it: consistent, but not up to date when it
    /// stopped (`MDF_CONSISTENT` set, `MDF_WAS_UP_TO_DATE` clear).
    pub(super) fn outdate_self(&mut self, c: Change) -> Result<(), StateError> {
        if self.st.disk() != DiskState::Outdated {
            self.change(c.disk(DiskState::Outdated))?;
        }
        if let Some(d) = self.disk.as_mut() {
            let outdated = (d.sb.flags | flags::CONSISTENT) & !flags::WAS_UP_TO_DATE;
            if d.sb.flags != outdated {
                d.sb.flags = outdated;
                self.sb_changed();
            }
        }
        Ok(())
    }

    /// Records in `node`'s metadata slot that it is fenced (`MDF_PEER_OUTDATED`), or not.
    pub(super) fn set_peer_outdated_flag(&mut self, node: NodeId, on: bool) {
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        let Some(p) = d.sb.peers.iter_mut().find(|p| p.node_id == Some(node)) else {
            return;
        };
        let new = if on {
            p.flags | peer_flags::OUTDATED
        } else {
            p.flags & !peer_flags::OUTDATED
        };
        if new != p.flags {
            p.flags = new;
            self.sb_changed();
        }
    }

    /// Both disks UpToDate with `node` again: the fence is no longer needed (DRBD calls
    /// unfence-peer at the end of a resync; it is also due when the peer connects in sync).
    pub(super) fn maybe_unfence(&mut self, node: NodeId) {
        if self.fencing_policy(node) == Fencing::DontCare
            || self.st.disk() != DiskState::UpToDate
            || self
                .peers
                .get(&node)
                .is_none_or(|c| c.st.disk() != DiskState::UpToDate)
        {
            return;
        }
        self.set_peer_outdated_flag(node, false);
        self.run_handler(Handler::UnfencePeer, Some(node));
    }
}
