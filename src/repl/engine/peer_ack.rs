//! Peer acks (DRBD's `P_PEER_ACK`): with three or more diskful nodes, a Secondary learns which
//! of a Primary's writes completed everywhere, so that when it loses the Primary it knows
//! which writes the other Secondaries may lack.
//!
//! Why: a Primary sends each write to every peer; if it goes away (crash, partition) while
//! writes are in flight, each Secondary may hold a different subset of them. None of those
//! writes was acknowledged to the application, but the Secondaries stay connected to each
//! other, with equal UUIDs and nothing in their bitmaps: they would go on calling each other
//! UpToDate over blocks that differ. So a Secondary keeps every write it received on a link
//! (its `seq` and range) until the Primary says, with `PeerAck { seq }`, that every write it
//! sent on that link up to `seq` is done (answered to the application: on every peer it went
//! to, or marked for those it did not reach). When the link goes, what is still kept is marked
//! out of sync for every other diskful peer, and a peer in sync with this node runs the
//! handshake again: equal UUIDs with marked blocks resync them (DRBD's reconciliation resync,
//! without its dagtags: the direction does not matter for writes nobody acknowledged).
//!
//! Left out: DRBD's node mask (which peers a write reached). A write that one peer failed
//! (NegAck, or its link went) is marked for that peer in the Primary's bitmap only.
//!
//! The Primary announces after [`PEER_ACK_WINDOW`] writes, or when no write it sent on the link
//! is in flight any more; a Secondary keeps at most [`MAX_UNACKED`] writes and marks the oldest
//! at once beyond that. Two-node clusters have no third node to mark for: no peer acks.

use super::{Action, Engine, Origin};
use crate::repl::wire::Packet;
use crate::types::NodeId;
use std::collections::VecDeque;

/// Writes after which the Primary announces even while others are still in flight.
const PEER_ACK_WINDOW: u32 = 64;
/// Writes a Secondary keeps unconfirmed; beyond that the oldest is marked at once.
const MAX_UNACKED: usize = 65_536;

/// Writes received on a link and not yet covered by a `PeerAck`: (seq, offset, len).
pub(super) type Unacked = VecDeque<(u32, u64, u64)>;

impl Engine {
    /// Whether writes replicated between this node and `node` need peer acks: a third diskful
    /// node exists, which the receiver must be able to mark for.
    fn peer_acks_with(&self, node: NodeId) -> bool {
        self.diskful_peers_but(node).next().is_some()
    }

    /// Diskful peers other than `node`.
    fn diskful_peers_but(&self, node: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.cfg
            .peers
            .iter()
            .filter(move |p| p.node_id != node && !p.intentional_diskless)
            .map(|p| p.node_id)
    }

    /// Receiver: a write from `node` (Data `seq`, `len` bytes at `offset`) is kept until a
    /// peer ack covers it.
    pub(super) fn keep_until_peer_ack(&mut self, node: NodeId, seq: u32, offset: u64, len: u64) {
        if !self.peer_acks_with(node) {
            return;
        }
        let Some(l) = self.peers.get_mut(&node).and_then(|p| p.session.as_mut()) else {
            return;
        };
        l.rx_unacked.push_back((seq, offset, len));
        if l.rx_unacked.len() > MAX_UNACKED
            && let Some((_, off, n)) = l.rx_unacked.pop_front()
        {
            let others: Vec<NodeId> = self.diskful_peers_but(node).collect();
            if let Some(d) = self.disk.as_mut() {
                for other in others {
                    d.mark(other, off, n);
                }
            }
        }
    }

    /// Receiver: `PeerAck { seq }` from `node`.
    pub(super) fn peer_ack_received(&mut self, node: NodeId, seq: u32) {
        let Some(l) = self.peers.get_mut(&node).and_then(|p| p.session.as_mut()) else {
            return;
        };
        while let Some(&(s, _, _)) = l.rx_unacked.front() {
            if super::requests::seq_after(s, seq) {
                break;
            }
            l.rx_unacked.pop_front();
        }
    }

    /// Receiver: the link to `node` went with `unacked` writes it had not confirmed: they are
    /// marked for every other diskful peer, and a peer in sync with this node runs the
    /// handshake again to resync them.
    pub(super) fn unacked_writes_lost(&mut self, node: NodeId, unacked: Unacked) {
        if unacked.is_empty() {
            return;
        }
        let others: Vec<NodeId> = self.diskful_peers_but(node).collect();
        let mut marked = 0;
        if let Some(d) = self.disk.as_mut() {
            for &(_, off, len) in &unacked {
                for &other in &others {
                    marked += d.mark(other, off, len);
                }
            }
        }
        if marked == 0 {
            return;
        }
        self.peer_log(
            node,
            format!(
                "{} writes not known to have reached every node marked out of sync for the others",
                unacked.len()
            ),
        );
        for other in others {
            self.resync_again_if_marked(other);
        }
    }

    /// Sender: announces, per link that needs it, how far every write sent on it is done.
    pub(super) fn send_peer_acks(&mut self) {
        let nodes: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(n, p)| p.session.is_some() && self.peer_acks_with(**n))
            .map(|(n, _)| *n)
            .collect();
        for node in nodes {
            // The oldest write sent on this link that is not done yet.
            let oldest = self
                .reqs
                .iter()
                .filter(|r| matches!(r.origin, Origin::App))
                .filter_map(|r| r.attempt.iter().find(|a| a.0 == node).map(|a| a.1))
                .reduce(|a, b| {
                    if super::requests::seq_after(a, b) {
                        b
                    } else {
                        a
                    }
                });
            let Some(l) = self.peers.get_mut(&node).and_then(|p| p.session.as_mut()) else {
                continue;
            };
            let upto = oldest.map_or(l.seq, |s| s.wrapping_sub(1));
            let ahead = upto.wrapping_sub(l.peer_acked);
            let behind = !super::requests::seq_after(upto, l.peer_acked);
            if behind || (oldest.is_some() && ahead < PEER_ACK_WINDOW) {
                continue;
            }
            l.peer_acked = upto;
            self.actions.push_back(Action::Send {
                node,
                packet: Packet::PeerAck { seq: upto },
            });
        }
    }
}
