//! Concurrent writes of two Primaries (`allow-two-primaries`): both nodes must end with the
//! same bytes, and nothing an application was told is written may be lost.
//!
//! Two writes are *concurrent* when neither node had the other's write when it admitted its
//! own. Each Data packet says what its sender had seen (`seen`: the seq of the last Data it
//! had received from the receiver when it admitted the write), so both nodes decide the same
//! thing without waiting for acks that travel on the other stream. DRBD 8.4's rules decide
//! who wins, with the node that resolves conflicts (the higher node id, DRBD's
//! `RESOLVE_CONFLICTS`) holding the decision:
//!
//! - On the **resolving** node, a peer write concurrent with local writes is not written. If
//!   one local write covers it and the peer had seen none of that write, the peer's write is
//!   *superseded* (`Superseded`: done, the local write comes after it on both nodes);
//!   otherwise the peer must write it again (`RetryWrite`) once the local writes have reached
//!   it, so it lands after them on both nodes.
//! - On the **other** node, a peer write concurrent with local writes waits until the
//!   resolving node has answered them (acked, superseded or asked to retry), then goes to
//!   the disk over them: the same order the resolving node applies.
//!
//! Writes that are not concurrent are ordered by arrival like any overlapping writes: the
//! later one waits for the earlier one's local write on both nodes.

use super::requests::{Origin, seq_after};
use super::{Action, Engine, Event};
use crate::repl::wire::{BlockAck, Packet};
use crate::types::{NodeId, ReqId};

/// What a queued request may do now.
pub(super) enum Release {
    /// Go to the disk.
    Go,
    /// Stay queued: a concurrent local write is not answered yet.
    Wait,
    /// Answered without a disk write (superseded or to be retried): it left the table.
    Resolved,
}

impl Engine {
    /// Per peer with two primaries: the seq of the last Data received from it (recorded
    /// with every write admitted, sent as `seen`).
    pub(super) fn admission_seen(&self) -> Vec<(NodeId, u32)> {
        self.peers
            .iter()
            .filter_map(|(n, p)| p.session.as_ref().map(|s| (*n, s)))
            .filter(|(_, s)| s.two_primaries)
            .map(|(n, s)| (n, s.rx_seq))
            .collect()
    }

    /// Whether queued request `id` may go to the disk: a peer's write under two primaries is
    /// checked against the local writes concurrent with it.
    pub(super) fn conflict_release(&mut self, id: ReqId) -> Release {
        let Some(r) = self.reqs.get(id) else {
            return Release::Go;
        };
        let Origin::PeerWrite {
            node, ack, seen, ..
        } = r.origin
        else {
            return Release::Go;
        };
        if self.link_gone(r) {
            return Release::Go;
        }
        let Some((off, len)) = r.op.written_range() else {
            return Release::Go;
        };
        let Some(session) = self.peers.get(&node).and_then(|p| p.session.as_ref()) else {
            return Release::Go;
        };
        if !session.two_primaries {
            return Release::Go;
        }
        let resolves = session.resolves;
        let concurrent = self.reqs.concurrent_with(node, off, len, r.seq, seen);
        if resolves {
            if concurrent.is_empty() {
                return Release::Go;
            }
            // Superseded only by one write that covers it and that the peer had seen none
            // of: then every part of it reaches the peer after the peer's own write.
            let covering = concurrent.iter().find(|c| {
                c.op.written_range()
                    .is_some_and(|(o, l)| o <= off && off + len <= o + l)
                    && c.attempt_to(node)
                        .is_some_and(|(first, _)| seq_after(first, seen))
            });
            let (local_off, local_len) = concurrent[0].op.written_range().unwrap_or((0, 0));
            let after = concurrent
                .iter()
                .filter_map(|c| c.attempt_to(node).map(|(_, last)| last))
                .fold(seen, |a, l| if seq_after(l, a) { l } else { a });
            let superseded = covering.is_some();
            self.log_concurrent(
                node,
                format!(
                    "Concurrent remote write detected! local={}s +{local_len}, remote={}s \
                     +{len}, assuming local came first ({})",
                    local_off / 512,
                    off / 512,
                    if superseded {
                        "remote write superseded"
                    } else {
                        "remote write retried"
                    }
                ),
            );
            let packet = if superseded {
                Packet::Superseded(ack)
            } else {
                Packet::RetryWrite { ack, after }
            };
            self.resolve_unwritten(id, node, packet);
            return Release::Resolved;
        }
        let waits = concurrent.iter().any(|c| c.awaits(node));
        if !waits {
            return Release::Go;
        }
        if self.concurrent_logged.insert(id) {
            let (local_off, local_len) = concurrent[0].op.written_range().unwrap_or((0, 0));
            self.log_concurrent(
                node,
                format!(
                    "Concurrent local write detected! local={}s +{local_len}, remote={}s \
                     +{len}; the remote write waits for the peer's decision",
                    local_off / 512,
                    off / 512,
                ),
            );
        }
        Release::Wait
    }

    fn log_concurrent(&mut self, node: NodeId, text: String) {
        self.stats.concurrent_writes += 1;
        self.peer_log(node, text);
    }

    /// Answers a peer's write that is not written here, and counts it done in its epoch.
    fn resolve_unwritten(&mut self, id: ReqId, node: NodeId, packet: Packet) {
        let Some(r) = self.reqs.take_unsubmitted(id) else {
            return;
        };
        self.concurrent_logged.remove(&id);
        self.actions.push_back(Action::Send { node, packet });
        if let Origin::PeerWrite { epoch, .. } = r.origin
            && let Some(link) = self.peers.get_mut(&node).and_then(|p| p.session.as_mut())
            && let Some(n) = link.rx_pending.get_mut(&epoch)
        {
            *n = n.saturating_sub(1);
        }
        self.pump_peer_barriers(node);
    }

    /// The peer asked for write `ack.block_id` again: it is postponed (once its local write
    /// is done) until the peer's Data `after` has arrived.
    pub(super) fn retry_write(&mut self, node: NodeId, ack: &BlockAck, after: u32) {
        let id = ReqId(ack.block_id);
        if !self.current_attempt(id, node, ack.seq) {
            return;
        }
        self.peer_event(id, Event::RetryWrite { node, after });
        self.readmit_postponed(node);
    }

    /// Whether an ack with `seq` from `node` answers the current attempt of request `id`
    /// (one from before a retry is stale).
    pub(super) fn current_attempt(&self, id: ReqId, node: NodeId, seq: u32) -> bool {
        self.reqs
            .get(id)
            .and_then(|r| r.attempt_to(node))
            .is_some_and(|(first, _)| !seq_after(first, seq))
    }

    /// Admits again the postponed writes for `node` whose wait is over: the peer's Data they
    /// wait for has arrived (they go behind it), or the link is gone (they are written here
    /// and marked for the peer).
    pub(super) fn readmit_postponed(&mut self, node: NodeId) {
        let rx = self
            .peers
            .get(&node)
            .and_then(|p| p.session.as_ref())
            .map(|s| s.rx_seq);
        let due: Vec<ReqId> = self
            .reqs
            .postponed()
            .into_iter()
            .filter(|&(_, n, after)| n == node && rx.is_none_or(|rx| !seq_after(after, rx)))
            .map(|(id, _, _)| id)
            .collect();
        for id in due {
            self.readmit(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::seq_after;

    #[test]
    fn sequence_numbers_compare_across_the_wrap() {
        assert!(seq_after(2, 1));
        assert!(!seq_after(1, 1));
        assert!(seq_after(1, u32::MAX));
        assert!(!seq_after(u32::MAX, 1));
    }
}
