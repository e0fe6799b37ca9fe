//! Quorum in the engine: the votes this node sees, gathered from its states and metadata for
//! `crate::repl::quorum`, and what gaining or losing quorum does.
//!
//! Quorum is recalculated with every state change (`states::plan`), so a change that takes it
//! away is refused to a soft change (a promotion: `(-25) No quorum`) and recorded with a hard
//! one (a lost link) in the same step as its cause. A Primary without quorum then either fails
//! its application I/O (`on-no-quorum io-error`: new requests at once, requests in flight when
//! they finish) or freezes it (`suspend-io`: nothing is answered until quorum returns). Either
//! way the partition without quorum completes no write the other side could miss, so the
//! other side may promote without a split brain. The metadata remembers a Primary that lost
//! quorum (`MDF_PRIMARY_LOST_QUORUM`), which the next handshake reads: such a node is the
//! sync target when the data generations are equal.

use super::Engine;
use super::states::Change;
use crate::meta::superblock::{flags, peer_flags};
use crate::repl::handler::Handler;
use crate::repl::quorum::{self, PeerVote, SelfVote, Verdict};
use crate::repl::state::{DiskState, ReplState, Role};
use crate::repl::state_rules::View;

impl Engine {
    /// `quorum` is not `off`.
    pub(super) fn quorum_enforced(&self) -> bool {
        self.cfg.quorum.quorum != crate::config::Quorum::Off
    }

    /// The quorum the states `v` give this node (whether enforced or not).
    pub(super) fn quorum_verdict(&self, v: &View) -> Verdict {
        let me = SelfVote {
            disk: v.disk,
            intentional_diskless: self.cfg.quorum.intentional_diskless,
        };
        let fenced = |node| {
            self.disk
                .as_ref()
                .and_then(|d| d.sb.peer(node))
                .is_some_and(|p| p.flags & peer_flags::OUTDATED != 0)
        };
        let peers: Vec<PeerVote> = v
            .peers
            .iter()
            .filter_map(|pv| {
                let p = self.peers.get(&pv.node)?;
                Some(PeerVote {
                    connected: pv.repl != ReplState::Off,
                    disk: pv.disk,
                    intentional_diskless: p.info.intentional_diskless,
                    outdated_mark: fenced(pv.node),
                    quorate: p.peer_quorate,
                })
            })
            .collect();
        let q = &self.cfg.quorum;
        quorum::decide(q.quorum, q.min_redundancy, quorum::tally(me, &peers))
    }

    /// Something quorum depends on changed outside the states (a peer's quorum, the
    /// settings): recalculated through the one state-change path.
    pub(super) fn recheck_quorum(&mut self) {
        self.force_change(Change::hard("quorum"));
    }

    /// What follows when quorum comes or goes (from `states::after_state_change`).
    pub(super) fn quorum_changed(&mut self, old: &View, new: &View) {
        let lost = old.quorum && !new.quorum;
        if lost && new.role == Role::Primary {
            let what = match self.cfg.quorum.on_no_quorum {
                crate::config::OnNoData::IoError => "failing I/O",
                crate::config::OnNoData::SuspendIo => "suspending I/O",
            };
            let why = self
                .quorum_verdict(new)
                .explain(new.disk <= DiskState::Attaching);
            self.log(format!("Primary lost quorum ({why}); {what}"));
            self.run_handler(Handler::QuorumLost, None);
            self.roll_back_tentative_generation();
        }
        // The metadata remembers a Primary that lost quorum until it has it again: the next
        // handshake makes such a node the sync target when both sides hold the same data
        // generation (DRBD's `MDF_PRIMARY_LOST_QUORUM`).
        if let Some(d) = self.disk.as_mut() {
            let f = if lost && new.role == Role::Primary {
                d.sb.flags | flags::PRIMARY_LOST_QUORUM
            } else if new.quorum {
                d.sb.flags & !flags::PRIMARY_LOST_QUORUM
            } else {
                d.sb.flags
            };
            if f != d.sb.flags {
                d.sb.flags = f;
                self.sb_changed();
            }
        }
        // Diskless peers read their quorum from the diskful ones (the State packet says).
        self.broadcast_state();
    }

    /// Peers out of reach whose disk is held Outdated (fenced, or declared so by a forced
    /// promotion).
    pub(super) fn unreachable_outdated_peers(&self) -> Vec<crate::types::NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.st.repl() == ReplState::Off && p.st.disk() == DiskState::Outdated)
            .map(|(n, _)| *n)
            .collect()
    }

    /// A peer marked Outdated in the metadata that is connected with UpToDate data again
    /// loses the mark, so a later partition counts it as a voter again. (Under fencing the
    /// mark is the fence, removed by `maybe_unfence` with its handler.)
    pub(super) fn clear_outdated_marks(&mut self, new: &View) {
        let back: Vec<crate::types::NodeId> = new
            .peers
            .iter()
            .filter(|p| p.repl >= ReplState::Established && p.disk == DiskState::UpToDate)
            .map(|p| p.node)
            .filter(|n| self.fencing_policy(*n) == crate::config::Fencing::DontCare)
            .collect();
        for node in back {
            self.set_peer_outdated_flag(node, false);
        }
    }

    /// `on-no-quorum io-error` and no quorum: application requests fail.
    pub(super) fn quorum_fails_io(&self) -> bool {
        !self.st.quorum() && self.cfg.quorum.on_no_quorum == crate::config::OnNoData::IoError
    }
}
