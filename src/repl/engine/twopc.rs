//! Promotion, and the cluster-wide state changes that make role changes and disconnects
//! safe (DRBD 9's two-phase commit, `change_cluster_wide_state()`).
//!
//! A node that replicates to a peer may not simply become Primary: the peer might be promoting
//! at the same moment, and two Primaries would each refuse the other's writes. So the
//! initiator first asks every peer it replicates to (`TwoPcPrepare`). A peer checks the change
//! against its own state rules (it refuses a second Primary), answers `TwoPcYes` and holds
//! back its own promotions until the outcome, or answers `TwoPcNo` with DRBD's code. With
//! every Yes the initiator makes the change and sends `TwoPcCommit`; with a No it sends
//! `TwoPcAbort` and answers the refusal. Two initiators at once: the node with the higher node
//! id refuses the other's prepare (`(-19) Concurrent state changes`), the lower one gives its
//! own up and agrees; the loser's promotion is tried again once the winner's is done, and then
//! finds a Primary peer (`(-1) Multiple primaries not allowed by config`).
//!
//! A promotion that arrives while a handshake decides, or while a cluster-wide change runs, is
//! deferred until neither does; an opener's (auto-promote) waits at most
//! `auto-promote-timeout`. Without a peer to ask, the change is made at once.
//!
//! `drbdadm secondary` and `drbdadm disconnect` go the same way (DRBD 9 makes every role
//! change and every disconnect cluster-wide): the peer learns of a demotion before it
//! happens, and a disconnect is agreed, with the Secondary of the two Outdated and the
//! Primary knowing it (see `disconnect.rs`), instead of looking like a lost link to fence.

use super::states::Change;
use super::{Action, AdminError, Engine, OpenRefusal};
use crate::meta::superblock::flags;
use crate::repl::state::{DiskState, Role, StateError};
use crate::repl::wire::{Packet, TwoPcChange};
use crate::types::{NodeId, Time};
use std::collections::BTreeSet;

/// A cluster-wide change this node started and waits for answers to.
#[derive(Debug)]
pub(super) struct TwoPc {
    tid: u32,
    proposal: Proposal,
    /// Peers asked.
    asked: BTreeSet<NodeId>,
    /// Peers that have not answered yet.
    waiting: BTreeSet<NodeId>,
    started: Time,
}

/// A peer's change this node agreed to, until its commit or abort.
#[derive(Debug)]
pub(super) struct Prepared {
    node: NodeId,
    tid: u32,
    change: TwoPcChange,
    since: Time,
}

/// What a cluster-wide change of this node's makes, and who gets the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proposal {
    Promote(Promotion),
    /// `drbdadm secondary`.
    Demote {
        token: u64,
    },
    /// `drbdadm disconnect` (see `disconnect.rs`).
    Disconnect {
        token: u64,
        outdate: bool,
    },
}

impl Proposal {
    /// The change as the peers are asked for it.
    fn change(self) -> TwoPcChange {
        match self {
            Proposal::Promote(_) => TwoPcChange::Role(Role::Primary),
            Proposal::Demote { .. } => TwoPcChange::Role(Role::Secondary),
            Proposal::Disconnect { outdate, .. } => TwoPcChange::Disconnect { outdate },
        }
    }
}

/// How a change is written in the log lines (`role( Primary )`, `conn( Disconnecting )`).
fn describe(change: TwoPcChange) -> String {
    match change {
        TwoPcChange::Role(r) => format!("role( {r} )"),
        TwoPcChange::Disconnect { outdate: false } => "conn( Disconnecting )".to_string(),
        TwoPcChange::Disconnect { outdate: true } => {
            "conn( Disconnecting ) (the Secondary outdated)".to_string()
        }
    }
}

/// Who asked for a promotion, and so who gets the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// `drbdadm primary` (an admin token).
    Admin { token: u64 },
    /// An opener's auto-promote (an open token).
    Open { token: u64 },
}

/// A promotion someone asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Promotion {
    pub purpose: Purpose,
    /// `primary --force`.
    pub force: bool,
    /// An opener gives up then (`auto-promote-timeout`).
    pub deadline: Option<Time>,
}

impl Engine {
    /// A handshake decides, or a cluster-wide change runs: promotions wait.
    pub(super) fn transient(&self) -> bool {
        self.handshaking() || self.twopc.is_some() || self.prepared.is_some()
    }

    /// Starts `proposal`, or defers it while something transient runs.
    pub(super) fn propose(&mut self, proposal: Proposal) {
        match proposal {
            Proposal::Promote(p) => self.promote(p),
            Proposal::Demote { token } => self.demote_cluster_wide(token),
            Proposal::Disconnect { token, .. } => self.disconnect_cluster_wide(token),
        }
    }

    /// The peers a cluster-wide change asks: every one that replicates.
    pub(super) fn twopc_peers(&self) -> BTreeSet<NodeId> {
        self.peers
            .iter()
            .filter(|(_, c)| c.replicating())
            .map(|(n, _)| *n)
            .collect()
    }

    /// Asks `asked` to agree to `proposal` (phase one).
    pub(super) fn start_twopc(&mut self, proposal: Proposal, asked: BTreeSet<NodeId>) {
        self.next_tid = self.next_tid.wrapping_add(1);
        let tid = self.next_tid;
        let change = proposal.change();
        self.log(format!(
            "Preparing cluster-wide state change {tid}: {}->all {}",
            self.cfg.node_id,
            describe(change)
        ));
        for &node in &asked {
            self.send(node, Packet::TwoPcPrepare { tid, change });
        }
        self.twopc = Some(TwoPc {
            tid,
            proposal,
            waiting: asked.clone(),
            asked,
            started: self.now,
        });
    }

    /// Promotes, through a cluster-wide change if a peer replicates; answers `p` when done.
    pub(super) fn promote(&mut self, p: Promotion) {
        if self.st.role() == Role::Primary {
            return self.promoted(p);
        }
        if self.transient() {
            // Refused only for now (DRBD's `SS_IN_TRANSIENT_STATE`): tried again once the
            // handshake has decided and no cluster-wide change runs.
            return self.deferred.push(Proposal::Promote(p));
        }
        let change = match self.promotion_change(p.force) {
            Ok(c) => c,
            Err(e) => {
                if e == StateError::NoQuorum {
                    // DRBD's verbose refusal says why (`drbd_state_err()`).
                    let v = self.view();
                    let why = self
                        .quorum_verdict(&v)
                        .explain(v.disk <= DiskState::Attaching);
                    self.log(format!("State change failed: {e}: {why}"));
                }
                return self.promotion_failed(p, e);
            }
        };
        let asked = self.twopc_peers();
        if asked.is_empty() {
            // Answered either way.
            let _ = self.commit_promotion(p, change);
            return;
        }
        self.start_twopc(Proposal::Promote(p), asked);
    }

    /// `drbdadm secondary`: a demotion the peers agree to first (they refuse nothing; the
    /// point is that none of them is halfway through a change that assumes this Primary).
    fn demote_cluster_wide(&mut self, token: u64) {
        if self.st.role() != Role::Primary {
            return self.wait_for_meta(token);
        }
        if self.transient() {
            return self.deferred.push(Proposal::Demote { token });
        }
        if let Err(e) = self.validate(&self.demotion("secondary")) {
            self.force_demote = false;
            return self.admin_failed(token, e);
        }
        let asked = self.twopc_peers();
        if asked.is_empty() {
            return self.finish_demotion(token);
        }
        self.start_twopc(Proposal::Demote { token }, asked);
    }

    /// Demotes and answers `token`.
    fn finish_demotion(&mut self, token: u64) {
        let r = self.demote("secondary");
        self.force_demote = false;
        match r {
            Ok(()) => self.wait_for_meta(token),
            Err(e) => self.admin_failed(token, e),
        }
    }

    /// Answers an admin command with a refusal.
    pub(super) fn admin_failed(&mut self, token: u64, e: StateError) {
        self.actions.push_back(Action::AdminDone {
            token,
            result: Err(AdminError::State(e)),
        });
    }

    /// The change that makes this node Primary, checked but not made: a Consistent disk
    /// becomes UpToDate when no peer can have newer data (fencing has nothing to fear, or
    /// fence-peer said so), as DRBD 9 does; `--force` makes any disk the UpToDate one. The
    /// state rules refuse the rest with DRBD's codes (a Primary peer, no UpToDate data,
    /// fencing).
    fn promotion_change(&mut self, force: bool) -> Result<Change, StateError> {
        let disk = self.st.disk();
        let fenced = self.fencing_allows_primary();
        let new_disk = match disk {
            DiskState::Consistent if fenced => DiskState::UpToDate,
            d if force && d >= DiskState::Inconsistent => DiskState::UpToDate,
            d => d,
        };
        let mut c = Change::soft("primary").role(Role::Primary).disk(new_disk);
        if force {
            c = c.force();
        }
        match self.validate(&c) {
            Err(StateError::NoQuorum) if force => {
                // `primary --force` without quorum: the peers out of reach are declared
                // Outdated (DRBD retries with `CS_FP_OUTDATE_PEERS`), which makes this node
                // the last man standing. The operator vouches that they are down.
                let c = c.outdate_unreachable();
                self.validate(&c)?;
                Ok(c)
            }
            r => r.map(|()| c),
        }
    }

    /// Makes the promotion (`change` is re-checked: the states may have moved since it was
    /// prepared) and answers.
    fn commit_promotion(&mut self, p: Promotion, change: Change) -> Result<(), StateError> {
        let disk = self.st.disk();
        let forced = p.force && disk < DiskState::Consistent;
        let fenced = self.fencing_allows_primary();
        if let Err(e) = self.change(change) {
            self.promotion_failed(p, e);
            return Err(e);
        }
        if !fenced && !forced {
            self.log("Forced into split brain situation!".to_string());
        }
        if let Some(d) = self.disk.as_mut() {
            d.sb.flags |= flags::PRIMARY_IND | flags::CONSISTENT | flags::WAS_UP_TO_DATE;
        }
        // Peers a forced promotion declared Outdated stay so across a restart.
        for node in self.unreachable_outdated_peers() {
            self.set_peer_outdated_flag(node, true);
        }
        // With a peer (with a disk) that does not replicate, the next write starts a new data
        // generation (DRBD 9 marks it due and creates it on the first write, so a promotion
        // that never wrote cannot cause a split brain); the peers that replicate follow into
        // it. With every peer replicating all stay in the same one.
        self.new_uuid_due = self.diskful_peer_away(None);
        self.sb_changed();
        if forced {
            // A connected peer without good data gets everything from here.
            self.full_sync_inconsistent_peers();
        }
        self.promoted(p);
        Ok(())
    }

    /// Answers a promotion that is done.
    fn promoted(&mut self, p: Promotion) {
        match p.purpose {
            Purpose::Admin { token } => {
                self.explicit_primary = true;
                self.wait_for_meta(token);
            }
            Purpose::Open { token } => {
                self.open_count += 1;
                self.actions.push_back(Action::Opened {
                    token,
                    result: Ok(()),
                });
            }
        }
    }

    fn promotion_failed(&mut self, p: Promotion, e: StateError) {
        match p.purpose {
            Purpose::Admin { token } => self.actions.push_back(Action::AdminDone {
                token,
                result: Err(AdminError::State(e)),
            }),
            Purpose::Open { token } => self.actions.push_back(Action::Opened {
                token,
                result: Err(OpenRefusal::AutoPromoteFailed(e)),
            }),
        }
    }

    /// Changes that waited: tried again once nothing is transient (in order; one may start
    /// a cluster-wide change the others then wait for). An opener's promotion that waited
    /// too long is refused.
    pub(super) fn retry_deferred(&mut self) {
        let now = self.now;
        let late = |p: &Proposal| matches!(p, Proposal::Promote(p) if p.deadline.is_some_and(|d| d <= now));
        let (late, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(late);
        self.deferred = waiting;
        for p in late {
            if let Proposal::Promote(p) = p {
                self.promotion_failed(p, StateError::InTransientState);
            }
        }
        while !self.transient() && !self.deferred.is_empty() {
            let p = self.deferred.remove(0);
            self.propose(p);
        }
    }

    /// The earliest of: an opener's deadline, the running transaction's or a prepared one's
    /// timeout.
    pub(super) fn twopc_deadline(&self) -> Option<Time> {
        let opens = self
            .deferred
            .iter()
            .filter_map(|p| match p {
                Proposal::Promote(p) => p.deadline,
                _ => None,
            })
            .min();
        let mine = self
            .twopc
            .as_ref()
            .map(|t| t.started.plus_ms(self.cfg.twopc_timeout_ms));
        let theirs = self
            .prepared
            .as_ref()
            .map(|p| p.since.plus_ms(self.cfg.twopc_timeout_ms));
        [opens, mine, theirs].into_iter().flatten().min()
    }

    /// Gives up a transaction nobody answered and lets go of one whose outcome never came.
    pub(super) fn check_twopc_timeout(&mut self) {
        let now = self.now;
        if self
            .twopc
            .as_ref()
            .is_some_and(|t| t.started.plus_ms(self.cfg.twopc_timeout_ms) <= now)
        {
            self.abort_twopc(None, StateError::Timeout);
        }
        if let Some(p) = self
            .prepared
            .take_if(|p| p.since.plus_ms(self.cfg.twopc_timeout_ms) <= now)
        {
            let tid = p.tid;
            self.peer_log(
                p.node,
                format!("Aborting remote state change {tid}: no outcome in time"),
            );
        }
        self.retry_deferred();
    }

    /// Gives the running transaction up (a peer refused, or time ran out): the others are
    /// told, and the change answered (or, for a concurrent change, deferred).
    fn abort_twopc(&mut self, refused_by: Option<NodeId>, e: StateError) {
        let Some(t) = self.twopc.take() else {
            return;
        };
        let ms = self.now.0.saturating_sub(t.started.0) / 1_000_000;
        self.log(format!(
            "Aborting cluster-wide state change {} ({ms}ms) rv = {}",
            t.tid,
            e.code()
        ));
        for node in t.asked.iter().filter(|n| Some(**n) != refused_by) {
            if self.peers.get(node).is_some_and(|c| c.replicating()) {
                self.send(*node, Packet::TwoPcAbort { tid: t.tid });
            }
        }
        if e == StateError::ConcurrentChange {
            return self.deferred.push(t.proposal);
        }
        match t.proposal {
            Proposal::Promote(p) => self.promotion_failed(p, e),
            Proposal::Demote { token } => {
                self.force_demote = false;
                self.admin_failed(token, e);
            }
            Proposal::Disconnect { token, .. } => self.admin_failed(token, e),
        }
    }

    /// Every peer asked agreed (or went away): make the change, then tell them.
    fn complete_twopc(&mut self) {
        let Some(t) = self.twopc.take_if(|t| t.waiting.is_empty()) else {
            return;
        };
        let ms = self.now.0.saturating_sub(t.started.0) / 1_000_000;
        let tid = t.tid;
        let result = match t.proposal {
            Proposal::Promote(promotion) => match self.promotion_change(promotion.force) {
                Ok(change) => self.commit_promotion(promotion, change),
                Err(e) => {
                    self.twopc = Some(t);
                    return self.abort_twopc(None, e);
                }
            },
            Proposal::Demote { token } => {
                self.finish_demotion(token);
                Ok(())
            }
            Proposal::Disconnect { outdate, .. } => self.commit_disconnect(outdate, &t.asked),
        };
        let packet = match result {
            Ok(()) => {
                self.log(format!(
                    "Committing cluster-wide state change {tid} ({ms}ms)"
                ));
                Packet::TwoPcCommit { tid }
            }
            Err(e) => {
                self.log(format!(
                    "Aborting cluster-wide state change {tid} ({ms}ms) rv = {}",
                    e.code()
                ));
                Packet::TwoPcAbort { tid }
            }
        };
        for &node in &t.asked {
            if self.peers.get(&node).is_some_and(|c| c.replicating()) {
                self.send(node, packet.clone());
            }
        }
        // A disconnect is answered after the commit is queued: the driver closes the links on
        // the answer, and the commit must be on the wire before that.
        if let Proposal::Disconnect { token, .. } = t.proposal {
            match result {
                Ok(()) => self.wait_for_meta(token),
                Err(e) => self.admin_failed(token, e),
            }
        }
    }

    /// A packet of a cluster-wide change, from `node`.
    pub(super) fn twopc_packet(&mut self, node: NodeId, packet: Packet) {
        match packet {
            Packet::TwoPcPrepare { tid, change } => self.remote_prepare(node, tid, change),
            Packet::TwoPcYes { tid } => {
                if let Some(t) = self.twopc.as_mut().filter(|t| t.tid == tid) {
                    t.waiting.remove(&node);
                    self.complete_twopc();
                }
            }
            Packet::TwoPcNo { tid, code } if self.twopc.as_ref().is_some_and(|t| t.tid == tid) => {
                let e = StateError::from_code(code).unwrap_or(StateError::RefusedByPeer);
                self.abort_twopc(Some(node), e);
            }
            Packet::TwoPcCommit { tid } => {
                let Some(p) = self.prepared.take_if(|p| p.node == node && p.tid == tid) else {
                    return;
                };
                self.peer_log(node, format!("Committing remote state change {tid}"));
                match p.change {
                    TwoPcChange::Role(role) => {
                        self.force_change(Change::hard("remote").peer_role(node, role));
                    }
                    TwoPcChange::Disconnect { outdate } => {
                        self.remote_disconnect_committed(node, outdate);
                    }
                }
            }
            Packet::TwoPcAbort { tid }
                if self
                    .prepared
                    .take_if(|p| p.node == node && p.tid == tid)
                    .is_some() =>
            {
                self.peer_log(node, format!("Aborting remote state change {tid}"));
            }
            _ => {}
        }
        self.retry_deferred();
    }

    /// `node` asks to make `change`: answered from this node's state rules; a Yes holds back
    /// this node's own changes until the outcome.
    fn remote_prepare(&mut self, node: NodeId, tid: u32, change: TwoPcChange) {
        self.peer_log(
            node,
            format!(
                "Preparing remote state change {tid}: {node}->all {}",
                describe(change)
            ),
        );
        let no = |e: StateError| Packet::TwoPcNo {
            tid,
            code: e.code(),
        };
        if self.twopc.is_some() {
            if self.cfg.node_id > node {
                // Both started one: the higher node id keeps its own.
                return self.send(node, no(StateError::ConcurrentChange));
            }
            self.abort_twopc(None, StateError::ConcurrentChange);
        }
        if self.prepared.is_some() || self.handshaking() {
            return self.send(node, no(StateError::ConcurrentChange));
        }
        let mine = match change {
            TwoPcChange::Role(role) => Change::soft("remote").peer_role(node, role),
            TwoPcChange::Disconnect { outdate } => self.remote_disconnect_change(node, outdate),
        };
        if let Err(e) = self.validate(&mine) {
            self.peer_log(node, format!("Declined remote state change {tid}: {e}"));
            return self.send(node, no(e));
        }
        self.prepared = Some(Prepared {
            node,
            tid,
            change,
            since: self.now,
        });
        self.send(node, Packet::TwoPcYes { tid });
    }

    /// The link to `node` went: it owes no answer and holds no lock any more.
    pub(super) fn twopc_link_lost(&mut self, node: NodeId) {
        if self.prepared.as_ref().is_some_and(|p| p.node == node) {
            self.prepared = None;
        }
        if let Some(t) = self.twopc.as_mut() {
            t.asked.remove(&node);
            t.waiting.remove(&node);
            self.complete_twopc();
        }
    }
}
