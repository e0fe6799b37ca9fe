//! Replication of application writes to connected peers (DRBD's protocols A, B and C), the
//! transfer log, barriers, and the peer side that applies a Primary's writes.
//!
//! A peer's [`Session`] starts once the handshake (see `connection`) has decided and ends with
//! the link (`peer_down`). Packets travel as [`super::Input::PeerPacket`] and [`Action::Send`].
//! Writes go to every peer with a disk ([`Engine::gets_writes`]); a Diskless peer's blocks are
//! marked instead.
//!
//! - Primary: a write goes to the local disk and to every connected peer in parallel, once its
//!   metadata is on disk. It completes when the local write is done and, per peer, protocol C's
//!   WriteAck (on the peer's disk) or B's RecvAck (received) has arrived; under A, on local
//!   completion. Every replicated write stays in the transfer log until the peer acknowledges
//!   the barrier that closes its epoch, so when a link drops, everything the peer might not have
//!   on stable storage is marked out of sync for it.
//! - FLUSH (and the periodic epoch close): a Barrier to each peer, which drains the epoch's
//!   writes, flushes its disk and answers BarrierAck; the application's FLUSH completes after the
//!   local flush and every peer's BarrierAck (protocol C; A and B do not wait for the peer).
//! - Peer side: a Data packet becomes a local write through the same activity-log path as an
//!   application write; B answers RecvAck on receipt, C answers WriteAck once on disk, a failed
//!   write answers NegAck.

use super::peer::Session;
use super::requests::Owed;
use super::{Action, Change, Engine, Event, IoOp, Origin};
use crate::config::Protocol;
use crate::repl::state::{DiskState, Role};
use crate::repl::wire::{BlockAck, DataFlags, MAX_DATA_LEN, Packet};
use crate::types::{NodeId, ReqId, SECTOR_SIZE, Sector};

/// Internal request ids (peer writes, peer flushes) live above this bit; application ids below.
pub(super) const INTERNAL: u64 = 1 << 63;

/// Writes per epoch before the engine closes it by itself, so the transfer log stays bounded
/// when the application never flushes.
const EPOCH_WRITES: u32 = 256;

impl Engine {
    /// Whether a write a peer has not confirmed yet (in a transfer log) overlaps `[lo, hi)`.
    pub(super) fn unconfirmed_overlaps(&self, lo: u64, hi: u64) -> bool {
        self.sessions()
            .any(|(_, l)| l.tl.iter().any(|&(_, o, n)| o < hi && lo < o + n))
    }

    /// The established sessions, by peer.
    fn sessions(&self) -> impl Iterator<Item = (NodeId, &Session)> {
        self.peers
            .iter()
            .filter_map(|(n, p)| p.session.as_ref().map(|s| (*n, s)))
    }

    /// Closes the open epoch on every link that holds an unconfirmed write overlapping
    /// `[lo, hi)`, so its BarrierAck (which confirms it) is not left waiting for more writes.
    pub(super) fn close_epochs_over(&mut self, lo: u64, hi: u64) {
        let mut out = Vec::new();
        for (node, p) in self.peers.iter_mut() {
            let Some(l) = p.session.as_mut() else {
                continue;
            };
            let open = l.epoch;
            if l.tl
                .iter()
                .any(|&(e, o, n)| e == open && o < hi && lo < o + n)
            {
                l.epoch += 1;
                l.epoch_writes = 0;
                out.push((*node, open));
            }
        }
        for (node, epoch) in out {
            self.actions.push_back(Action::Send {
                node,
                packet: Packet::Barrier { epoch },
            });
        }
    }

    /// Marks out of sync for `node` everything it has not confirmed on stable storage (its
    /// transfer log): the link went, or its disk did. Persisted at once.
    pub(super) fn mark_unconfirmed(&mut self, node: NodeId) {
        let tl: Vec<(u64, u64)> = match self.peers.get(&node).and_then(|p| p.session.as_ref()) {
            Some(l) => l.tl.iter().map(|&(_, o, n)| (o, n)).collect(),
            None => return,
        };
        let mut marked = 0;
        if let Some(d) = self.disk.as_mut() {
            for (off, len) in tl {
                marked += d.mark(node, off, len);
            }
        }
        // Recorded in the bitmap (flushed before any activity-log eviction): nothing waits
        // for the peer's confirmation of them any more.
        if let Some(l) = self.peers.get_mut(&node).and_then(|p| p.session.as_mut()) {
            l.tl.clear();
        }
        // An activity-log eviction may have waited for those confirmations.
        self.pump_al();
        if marked > 0 {
            self.peer_log(
                node,
                format!(
                    "{} KiB not confirmed by the peer marked out of sync",
                    marked * crate::types::BM_BLOCK_SIZE / 1024
                ),
            );
            self.flush_bitmap_if_dirty();
        }
    }

    /// A Primary lost sight of `node`'s disk (the link went, or the peer's disk did): what the
    /// peer may lack is marked, and a new data generation starts, at once when its copy is
    /// known to differ already (unconfirmed writes, a write it failed), else with the next
    /// write (DRBD's `NEW_CUR_UUID`). Without the new generation a later handshake would find
    /// the same UUID on both sides and resync nothing.
    pub(super) fn lost_peer_data(&mut self, node: NodeId, old: DiskState, new: DiskState) {
        // Writes it had not confirmed, or that still wait for it and complete without it
        // now (a lost link has marked its transfer log already): this node's data differs
        // from the peer's at once.
        let unconfirmed = self
            .peers
            .get(&node)
            .and_then(|p| p.session.as_ref())
            .is_some_and(|l| !l.tl.is_empty())
            || self.reqs.iter().any(|r| r.awaits(node));
        self.mark_unconfirmed(node);
        // Requests stop waiting for a peer whose disk is gone: what they wrote is marked.
        self.stop_waiting_for(node);
        // The generation split off for this peer already (its bitmap UUID is set): the bitmap
        // records everything since, nothing new to start (DRBD makes no UUID when no bitmap
        // slot changes).
        let split = self
            .disk
            .as_ref()
            .and_then(|d| d.sb.peer(node))
            .is_some_and(|p| !p.bitmap_uuid.is_zero());
        // With another peer that gets this node's writes (three nodes) a new one starts all
        // the same: that peer must learn that `node` lacks what comes now, and only a
        // generation it moves into with this node (at once, or at the end of its resync)
        // tells it; its own marks do not move its UUIDs, which would still compare equal
        // with `node`'s.
        let others_get_writes = self
            .peers
            .iter()
            .any(|(n, c)| *n != node && c.replicating());
        if split && !others_get_writes {
            return;
        }
        let failed = old == DiskState::UpToDate
            && matches!(new, DiskState::Failed | DiskState::Inconsistent);
        // A Primary without quorum starts no generation now (DRBD defers the bump until I/O
        // resumes): what it wrote unconfirmed stays in the old generation, so that the side
        // with quorum, which may promote and start its own, makes it the sync target instead
        // of finding a split brain. Its next write, which needs quorum back, starts it.
        if !(unconfirmed || failed) || !self.st.quorum() {
            self.new_uuid_due = true;
            return;
        }
        if self.disk.is_some() {
            self.new_uuid_due = true;
            self.new_uuid_if_due();
        }
    }

    /// Every request waiting for `node` stops waiting (it went, or its disk did); they
    /// complete on local success, in the order of their ids.
    fn stop_waiting_for(&mut self, node: NodeId) {
        let ids: Vec<ReqId> = self
            .reqs
            .iter()
            .filter(|r| r.awaits(node))
            .map(|r| r.id)
            .collect();
        for id in ids {
            self.peer_event(id, Event::PeerGone { node });
        }
    }

    /// The session with `node` runs with two primaries allowed.
    pub(super) fn two_primaries_with(&self, node: NodeId) -> bool {
        self.peers
            .get(&node)
            .and_then(|p| p.session.as_ref())
            .is_some_and(|s| s.two_primaries)
    }

    /// Whether application writes go to `node` (otherwise they are marked in its bitmap): from
    /// the handshake's decision on, while the peer has a disk. A SyncTarget gets them too: a
    /// write is either in the bitmap it was sent or on its way as `Data`.
    pub(super) fn gets_writes(&self, node: NodeId) -> bool {
        self.peers.get(&node).is_some_and(|p| {
            p.session.is_some()
                && p.st.disk() >= DiskState::Inconsistent
                && p.st.disk() != DiskState::DUnknown
        })
    }

    /// The link to `node` is gone: nobody waits for it any more, and its session ends. (What
    /// it had not confirmed was marked before the states changed.)
    pub(super) fn peer_down(&mut self, node: NodeId) {
        let Some(p) = self.peers.get_mut(&node) else {
            return;
        };
        let Some(session) = p.session.take() else {
            return;
        };
        // Application requests stop waiting for it; the reads it served fail.
        self.stop_waiting_for(node);
        self.remote_reads_lost(node);
        // Writes the peer asked for again are written here now, and marked for it.
        self.readmit_postponed(node);
        // Its writes not known to be everywhere are marked for the other nodes.
        self.unacked_writes_lost(node, session.rx_unacked);
        // The marks must survive a crash that follows: persist them now.
        self.flush_bitmap_if_dirty();
        // An AL eviction may have waited for the transfer log; the bitmap covers it now.
        self.pump_al();
    }

    /// Pauses reading a peer's data stream while the requests done for it hold `max-buffers`
    /// pages, and resumes it once they hold less (DRBD's receiver waits for free pages the
    /// same way). What is already buffered in the link still arrives; the bound is soft by
    /// that much.
    pub(super) fn throttle_receive(&mut self) {
        let mut changes = Vec::new();
        for (node, p) in self.peers.iter_mut() {
            let limit = u64::from(p.info.max_buffers) * 4096;
            let full = self.reqs.peer_bytes(*node) >= limit;
            if full != p.receive_paused {
                p.receive_paused = full;
                changes.push((*node, full));
            }
        }
        for (node, paused) in changes {
            self.actions.push_back(Action::ReceiveData { node, paused });
        }
    }

    /// Sends a submitted application write or flush to every peer that gets writes, and
    /// records in the request what each owes it (protocol B/C acks, a flush's barrier).
    /// Returns how many peers it went to.
    pub(super) fn replicate(&mut self, id: ReqId, op: &IoOp) -> usize {
        let mut owed: Vec<(NodeId, Owed)> = Vec::new();
        let mut attempts: Vec<(NodeId, u32, u32)> = Vec::new();
        let seen_at_admission = self
            .reqs
            .get(id)
            .map(|r| r.seen.clone())
            .unwrap_or_default();
        let nodes: Vec<NodeId> = self
            .peers
            .keys()
            .copied()
            .filter(|n| self.gets_writes(*n))
            .collect();
        let sent = nodes.len();
        if nodes.is_empty() {
            return 0;
        }
        for node in nodes {
            let Some(peer) = self.peers.get_mut(&node) else {
                continue;
            };
            let integrity = peer.info.integrity_alg;
            let Some(link) = peer.session.as_mut() else {
                continue;
            };
            let seen = seen_at_admission
                .iter()
                .find(|(n, _)| *n == node)
                .map_or(link.rx_seq, |&(_, s)| s);
            match op {
                IoOp::Read { .. } => return 0,
                IoOp::Flush => {
                    let epoch = link.epoch;
                    link.epoch += 1;
                    link.epoch_writes = 0;
                    if link.protocol == Protocol::C {
                        owed.push((node, Owed::Barrier(epoch)));
                    }
                    self.actions.push_back(Action::Send {
                        node,
                        packet: Packet::Barrier { epoch },
                    });
                }
                op => {
                    let Some((offset, len)) = op.written_range() else {
                        continue;
                    };
                    let mut flags = DataFlags::empty();
                    let mut data = bytes::Bytes::new();
                    match op {
                        IoOp::Write { data: d, fua, .. } => {
                            data = d.clone();
                            if *fua {
                                flags = flags | DataFlags::FUA;
                            }
                        }
                        IoOp::Trim { .. } => flags = flags | DataFlags::DISCARD,
                        _ => flags = flags | DataFlags::ZEROES,
                    }
                    match link.protocol {
                        Protocol::C => flags = flags | DataFlags::SEND_WRITE_ACK,
                        Protocol::B => flags = flags | DataFlags::SEND_RECEIVE_ACK,
                        Protocol::A => {}
                    }
                    // A request larger than a frame travels as several Data packets, each
                    // acknowledged on its own; the request waits for all of them.
                    let parts = len.div_ceil(MAX_DATA_LEN as u64).max(1);
                    if link.protocol != Protocol::A {
                        owed.push((node, Owed::Acks(parts as u32)));
                    }
                    let first = link.seq.wrapping_add(1);
                    attempts.push((node, first, first.wrapping_add(parts as u32 - 1)));
                    for i in 0..parts {
                        let at = i * MAX_DATA_LEN as u64;
                        let n = (len - at).min(MAX_DATA_LEN as u64);
                        let chunk = if data.is_empty() {
                            bytes::Bytes::new()
                        } else {
                            data.slice(at as usize..(at + n) as usize)
                        };
                        link.seq = link.seq.wrapping_add(1);
                        link.tl.push((link.epoch, offset + at, n));
                        link.epoch_writes += 1;
                        let digest = match integrity {
                            Some(alg) if !chunk.is_empty() => {
                                let mut d = Vec::with_capacity(alg.digest_len());
                                alg.digest_into(&chunk, &mut d);
                                bytes::Bytes::from(d)
                            }
                            _ => bytes::Bytes::new(),
                        };
                        let packet = Packet::Data {
                            sector: Sector((offset + at) / SECTOR_SIZE),
                            block_id: id.0,
                            seq: link.seq,
                            seen,
                            flags,
                            size: n as u32,
                            digest,
                            data: chunk,
                        };
                        if !data.is_empty() {
                            peer.sent += n;
                        }
                        self.actions.push_back(Action::Send { node, packet });
                        if link.epoch_writes >= EPOCH_WRITES {
                            let epoch = link.epoch;
                            link.epoch += 1;
                            link.epoch_writes = 0;
                            self.actions.push_back(Action::Send {
                                node,
                                packet: Packet::Barrier { epoch },
                            });
                        }
                    }
                }
            }
        }
        for (node, owed) in owed {
            self.reqs.modify(id, Event::Expect { node, owed });
        }
        for (node, first, last) in attempts {
            self.reqs.set_attempt(id, node, first, last);
        }
        sent
    }

    /// A packet from `node`: handshake and state to `connection`, resync to `resync`,
    /// replication here.
    pub(super) fn peer_packet(&mut self, node: NodeId, packet: Packet) {
        if let Some(c) = self.peers.get_mut(&node) {
            c.received += packet.data_len() as u64;
        }
        match packet {
            Packet::ProtocolParams { .. }
            | Packet::SyncParams { .. }
            | Packet::Sizes { .. }
            | Packet::Uuids { .. }
            | Packet::State { .. }
            | Packet::BitmapRle { .. }
            | Packet::SyncUuid { .. } => return self.handshake_packet(node, packet),
            Packet::ResyncRequest { .. }
            | Packet::ResyncReply { .. }
            | Packet::ResyncWriteAck(_)
            | Packet::NegResyncReply(_)
            | Packet::CsumResyncRequest { .. }
            | Packet::ResyncIsInSync(_) => return self.resync_packet(node, packet),
            Packet::OvRequest { .. } | Packet::OvReply { .. } | Packet::OvResult { .. } => {
                return self.verify_packet(node, packet);
            }
            Packet::TwoPcPrepare { .. }
            | Packet::TwoPcYes { .. }
            | Packet::TwoPcNo { .. }
            | Packet::TwoPcCommit { .. }
            | Packet::TwoPcAbort { .. } => return self.twopc_packet(node, packet),
            Packet::Disconnect => {
                return self.peer_log(node, "the peer is disconnecting".to_string());
            }
            // Also during a handshake: it precedes the peer's handshake packets (see `weak`).
            Packet::CurrentUuid { uuid, weak } => {
                return self.current_uuid_received(node, uuid, weak);
            }
            _ => {}
        }
        if !self.peers.get(&node).is_some_and(|p| p.replicating()) {
            return;
        }
        let two_primaries = self.two_primaries_with(node);
        if matches!(packet, Packet::Superseded(_) | Packet::RetryWrite { .. }) && !two_primaries {
            // Only a peer that may write concurrently decides over our writes; from any other
            // it is a protocol breach, and acting on it would write a block again.
            return self.peer_log(
                node,
                format!(
                    "unexpected {:?} without allow-two-primaries ignored",
                    packet.packet_type()
                ),
            );
        }
        if two_primaries
            && let Some(a) = packet.as_ack()
            && !matches!(
                packet,
                Packet::ResyncWriteAck(_)
                    | Packet::NegResyncReply(_)
                    | Packet::ResyncIsInSync(_)
                    | Packet::NegDataReply(_)
            )
            && !self.current_attempt(ReqId(a.block_id), node, a.seq)
        {
            // For a write sent again since (RetryWrite): the old attempt's answer.
            return;
        }
        match packet {
            Packet::DataRequest {
                sector,
                block_id,
                size,
            } => self.serve_data_request(node, sector, block_id, size),
            Packet::DataReply { .. } | Packet::NegDataReply(_) => self.data_reply(node, packet),
            Packet::WriteAck(a) | Packet::RecvAck(a) | Packet::Superseded(a) => {
                self.peer_acked(node, ReqId(a.block_id), true);
                if two_primaries {
                    // A peer write may have waited for the peer's decision on this one.
                    self.release();
                }
            }
            Packet::RetryWrite { ack, after } => {
                self.retry_write(node, &ack, after);
                self.release();
            }
            Packet::NegAck(a) => {
                // The peer could not write it: that range differs now, and the peer's disk is
                // not UpToDate any more (its own State, which says why, follows).
                if let Some(d) = self.disk.as_mut() {
                    d.mark(node, a.sector.bytes(), u64::from(a.size));
                }
                if self
                    .peers
                    .get(&node)
                    .is_some_and(|p| p.st.disk() == DiskState::UpToDate)
                {
                    self.force_change(Change::hard("neg-ack").pdsk(node, DiskState::Inconsistent));
                }
                self.peer_log(node, format!("failed a write at sector {}", a.sector.0));
                self.peer_acked(node, ReqId(a.block_id), false);
            }
            Packet::BarrierAck { epoch, .. } => {
                if let Some(link) = self.peers.get_mut(&node).and_then(|p| p.session.as_mut()) {
                    link.tl.retain(|(e, _, _)| *e > epoch);
                }
                // An AL eviction may have waited for these writes to be confirmed.
                self.pump_al();
                let ids: Vec<ReqId> = self
                    .reqs
                    .iter()
                    .filter(|r| {
                        r.owed.iter().any(|(n, o)| {
                            *n == node && matches!(o, Owed::Barrier(e) if *e <= epoch)
                        })
                    })
                    .map(|r| r.id)
                    .collect();
                for id in ids {
                    self.peer_event(id, Event::BarrierAcked { node, epoch });
                }
            }
            Packet::Data {
                sector,
                block_id,
                seq,
                seen,
                flags,
                size,
                data,
                digest,
            } => {
                if let Some(link) = self.peers.get_mut(&node).and_then(|p| p.session.as_mut()) {
                    link.rx_seq = seq;
                }
                if !self.integrity_ok(node, &data, &digest) {
                    // DRBD's words; the data is not written and the link is reset (the peer
                    // marks what it did not get confirmed and resyncs it after reconnecting).
                    self.peer_log(
                        node,
                        format!("Digest integrity check FAILED: {}s +{size}", sector.0),
                    );
                    return self.drop_link(node, false);
                }
                self.keep_until_peer_ack(
                    node,
                    seq,
                    sector.0.saturating_mul(SECTOR_SIZE),
                    u64::from(size),
                );
                self.peer_write(node, sector, block_id, (seq, seen), flags, size, data);
                // Our writes postponed until this Data arrived go behind it.
                if two_primaries {
                    self.readmit_postponed(node);
                }
            }
            Packet::PeerAck { seq } => self.peer_ack_received(node, seq),
            Packet::Barrier { epoch } => {
                if let Some(link) = self.peers.get_mut(&node).and_then(|p| p.session.as_mut()) {
                    let set = link.rx_epoch_writes;
                    link.rx_barriers.push((epoch, set));
                    link.rx_epoch = epoch + 1;
                    link.rx_epoch_writes = 0;
                }
                self.pump_peer_barriers(node);
            }
            Packet::OutOfSync { sector, size } => {
                if let Some(d) = self.disk.as_mut() {
                    d.mark(node, sector.bytes(), u64::from(size));
                }
            }
            other => self.peer_log(
                node,
                format!("unexpected {:?} ignored", other.packet_type()),
            ),
        }
    }

    /// The application went idle: close the open epochs, so the peers confirm them and the
    /// transfer log (what a link drop marks out of sync) shrinks to nothing.
    pub(super) fn close_idle_epochs(&mut self) {
        let mut barriers = Vec::new();
        for (node, link) in self
            .peers
            .iter_mut()
            .filter_map(|(n, p)| p.session.as_mut().map(|s| (n, s)))
        {
            if link.epoch_writes > 0 {
                barriers.push((*node, link.epoch));
                link.epoch += 1;
                link.epoch_writes = 0;
            }
        }
        for (node, epoch) in barriers {
            self.actions.push_back(Action::Send {
                node,
                packet: Packet::Barrier { epoch },
            });
        }
    }

    fn peer_acked(&mut self, node: NodeId, id: ReqId, ok: bool) {
        self.peer_event(id, Event::PeerAcked { node, ok });
    }

    #[allow(clippy::too_many_arguments)]
    fn peer_write(
        &mut self,
        node: NodeId,
        sector: Sector,
        block_id: u64,
        (seq, seen): (u32, u32),
        flags: DataFlags,
        size: u32,
        data: bytes::Bytes,
    ) {
        let ack = BlockAck {
            sector,
            block_id,
            size,
            seq,
        };
        // Replicated writes compete with the resync like local application I/O does.
        self.last_app_io = Some(self.now);
        let two_primaries = self.two_primaries_with(node);
        let usable = (self.st.role() != Role::Primary || two_primaries)
            && self.disk.is_some()
            && self.st.disk() >= DiskState::Inconsistent
            && !self.meta_failed;
        // A write outside the device (a broken or hostile peer) must never reach the backing
        // file: past the data area lies the internal metadata.
        let end = sector.bytes().checked_add(u64::from(size));
        let in_range = end.is_some_and(|e| e <= self.size_bytes());
        if usable && !in_range {
            self.peer_log(
                node,
                format!(
                    "write of {size} bytes at sector {} is beyond the device; refused",
                    sector.0
                ),
            );
        }
        if !usable || !in_range {
            self.actions.push_back(Action::Send {
                node,
                packet: Packet::NegAck(ack),
            });
            return;
        }
        if flags.contains(DataFlags::SEND_RECEIVE_ACK) {
            self.actions.push_back(Action::Send {
                node,
                packet: Packet::RecvAck(ack),
            });
        }
        let offset = sector.bytes();
        let op = if flags.contains(DataFlags::DISCARD) {
            IoOp::Trim {
                offset,
                len: size,
                fua: flags.contains(DataFlags::FUA),
            }
        } else if flags.contains(DataFlags::ZEROES) {
            IoOp::WriteZeroes {
                offset,
                len: size,
                fua: flags.contains(DataFlags::FUA),
                no_hole: false,
            }
        } else {
            IoOp::Write {
                offset,
                data,
                fua: flags.contains(DataFlags::FUA),
            }
        };
        let epoch = match self.peers.get_mut(&node).and_then(|p| p.session.as_mut()) {
            Some(link) => {
                link.rx_epoch_writes += 1;
                *link.rx_pending.entry(link.rx_epoch).or_default() += 1;
                link.rx_epoch
            }
            None => return,
        };
        let (off, len) = op.written_range().unwrap_or((offset, 0));
        let al_seq = self.activate_extents(off, len);
        self.mark_for_absent(node, off, len);
        self.resync_overwritten_except(off, len, Some(node));
        self.queue_internal(
            Origin::PeerWrite {
                node,
                ack,
                epoch,
                write_ack: flags.contains(DataFlags::SEND_WRITE_ACK),
                seen,
            },
            op,
            al_seq,
        );
    }

    /// With `data-integrity-alg`, the digest that came with a write matches its data.
    fn integrity_ok(&self, node: NodeId, data: &[u8], digest: &[u8]) -> bool {
        let alg = self.peer_info(node).and_then(|p| p.integrity_alg);
        match alg {
            Some(alg) if !data.is_empty() => {
                let mut mine = Vec::with_capacity(alg.digest_len());
                alg.digest_into(data, &mut mine);
                mine[..] == digest[..]
            }
            _ => true,
        }
    }

    /// A disk op done on behalf of a peer (or the resync) finished.
    /// (Takes the result: a resync read's data goes on the wire without a copy.)
    pub(super) fn peer_disk_done(
        &mut self,
        origin: Origin,
        result: Result<Option<bytes::Bytes>, i32>,
    ) {
        match origin {
            Origin::Resync(op) => self.resync_disk_done(op, result),
            Origin::Verify(op) => self.verify_disk_done(op, &result),
            Origin::PeerRead { node, ack } => self.peer_read_done(node, ack, result),
            Origin::PeerWrite {
                node,
                ack,
                epoch,
                write_ack,
                ..
            } => {
                if result.is_ok() {
                    let offset = ack.sector.bytes();
                    self.resync_target_covered(node, offset, u64::from(ack.size));
                }
                if !self.peers.get(&node).is_some_and(|p| p.replicating()) {
                    return;
                }
                let packet = match result {
                    Err(_) => Some(Packet::NegAck(ack)),
                    Ok(_) if write_ack => Some(Packet::WriteAck(ack)),
                    Ok(_) => None,
                };
                if let Some(packet) = packet {
                    self.actions.push_back(Action::Send { node, packet });
                }
                if let Some(link) = self.peers.get_mut(&node).and_then(|p| p.session.as_mut())
                    && let Some(n) = link.rx_pending.get_mut(&epoch)
                {
                    *n = n.saturating_sub(1);
                }
                self.pump_peer_barriers(node);
            }
            Origin::PeerFlush {
                node,
                epoch,
                set_size,
            } => {
                // A flush that failed acknowledges nothing: the epoch's writes may not be on
                // stable storage here. The disk failure that follows tells the peer, which
                // marks everything it has not seen confirmed.
                if result.is_err() {
                    return self.peer_log(
                        node,
                        format!("flushing for the peer's barrier {epoch} failed; not acknowledged"),
                    );
                }
                if self.peers.get(&node).is_some_and(|p| p.replicating()) {
                    self.actions.push_back(Action::Send {
                        node,
                        packet: Packet::BarrierAck { epoch, set_size },
                    });
                }
            }
            Origin::App | Origin::AlFlush { .. } => {}
        }
    }

    /// Flushes for every received barrier whose epoch (and all earlier ones) is written; with
    /// `disk-flushes no`, acknowledges it once drained.
    pub(super) fn pump_peer_barriers(&mut self, node: NodeId) {
        if self.st.disk() < DiskState::Inconsistent {
            // Without a disk there is nothing to make stable: barriers go unanswered, and the
            // peer, seeing this disk gone, marks what it has not seen confirmed.
            return;
        }
        let flushes = self.disk.as_ref().is_none_or(|d| d.disk_flushes);
        loop {
            let Some(link) = self.peers.get_mut(&node).and_then(|p| p.session.as_mut()) else {
                return;
            };
            let Some(&(epoch, set_size)) = link.rx_barriers.first() else {
                return;
            };
            let busy = link.rx_pending.iter().any(|(e, n)| *e <= epoch && *n > 0);
            if busy {
                return;
            }
            link.rx_barriers.remove(0);
            link.rx_pending.retain(|e, _| *e > epoch);
            if !flushes {
                self.actions.push_back(Action::Send {
                    node,
                    packet: Packet::BarrierAck { epoch, set_size },
                });
                continue;
            }
            self.submit_internal(
                Origin::PeerFlush {
                    node,
                    epoch,
                    set_size,
                },
                IoOp::Flush,
            );
        }
    }
}

impl Engine {
    /// Per peer with a ko-count: the time its oldest unanswered request becomes late.
    fn ko_deadlines(&self) -> Vec<(NodeId, u64, crate::types::Time)> {
        let mut out = Vec::new();
        for p in &self.cfg.peers {
            let Some(limit) = p.ko_deadline_ms else {
                continue;
            };
            let oldest = self
                .reqs
                .iter()
                .filter(|r| r.awaits(p.node_id))
                .filter_map(|r| r.sent)
                .min();
            if let Some(t) = oldest {
                out.push((p.node_id, limit, t.plus_ms(limit)));
            }
        }
        out
    }

    /// The earliest ko-count deadline.
    pub(super) fn ko_deadline(&self) -> Option<crate::types::Time> {
        self.ko_deadlines().into_iter().map(|(_, _, t)| t).min()
    }

    /// DRBD's ko-count: a peer that leaves a request unanswered for `ko-count` x `timeout` is
    /// dropped, and the writes waiting for it complete on local success.
    pub(super) fn check_ko_count(&mut self) {
        let now = self.now;
        let late: Vec<(NodeId, u64)> = self
            .ko_deadlines()
            .into_iter()
            .filter(|&(_, _, t)| t <= now)
            .map(|(n, l, _)| (n, l))
            .collect();
        for (node, limit) in late {
            self.peer_log(
                node,
                format!(
                    "Remote failed to finish a request within {limit} ms \
                 (ko-count x timeout); dropping the connection"
                ),
            );
            self.drop_link(node, false);
        }
    }
}
