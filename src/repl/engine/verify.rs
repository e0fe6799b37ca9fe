//! Online verify (`drbdadm verify`, DRBD's `P_OV_REQUEST` flow).
//!
//! The node where the command runs is **VerifyS**: it walks `[start, stop)` in requests of up
//! to [`MAX_REQUEST`] and asks the peer (**VerifyT**) for the `verify-alg` digest of each. When
//! the reply arrives it reads the same range locally and compares. A range whose digests
//! differ is verified again 4 KiB block by block, so what is reported is exactly the blocks
//! that differ: each is marked out of sync on both nodes (an `OvResult` tells the peer),
//! logged as `Out of sync: start=S, size=N (sectors)` runs, and counted.
//!
//! A write that lands between the peer's read and ours would make a range look different when
//! it is not. Both reads go through the conflict gate (so neither sees half a write), and a
//! write released here while a request is out marks that request to be asked again instead of
//! compared: a reported block really differed.
//!
//! As in DRBD 9, verify does not resync what it found: a reconnect with equal generations
//! does not either; `invalidate --reset-bitmap=no` on the node with the bad data (or
//! `invalidate-remote --reset-bitmap=no` on the good one) resyncs exactly the marked blocks.

use super::{Change, Engine, IoOp};
use crate::repl::digest::DigestAlg;
use crate::repl::resync::Pacer;
use crate::repl::state::{DiskState, ReplState, StateError};
use crate::repl::wire::{OvOutcome, Packet};
use crate::types::{BM_BLOCK_SIZE, NodeId, SECTOR_SIZE, Sector, Time};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// Largest verify request; a mismatch is narrowed down to 4 KiB blocks.
const MAX_REQUEST: u64 = 256 * 1024;
/// Requests in flight.
const MAX_REQUESTS: usize = 32;

/// A verify run with one peer, either side.
#[derive(Debug)]
pub(super) struct Verify {
    pub source: bool,
    alg: DigestAlg,
    stop: u64,
    /// Bytes to verify, and verified (compared, or answered on the target).
    pub total_bytes: u64,
    pub done_bytes: u64,
    /// 4 KiB blocks found out of sync.
    pub found_blocks: u64,
    started: Time,
    // ---- source only ----
    cursor: u64,
    /// Ranges to ask for before going on from `cursor` (re-asks and 4 KiB refinements).
    again: VecDeque<(u64, u64)>,
    in_flight: BTreeMap<u64, Asked>,
    /// Answered ranges whose local read is queued or running (by request id). A write
    /// released before that read makes it stale too.
    reading: BTreeMap<u64, Asked>,
    next_id: u64,
    /// Budget (source) and rate window (both sides).
    pace: Pacer,
    /// Out-of-sync runs found so far: start -> len, adjacent finds merged. Logged at the end,
    /// in order: the blocks of one request are compared in whatever order their reads
    /// complete, so a run is only whole once everything is compared.
    runs: BTreeMap<u64, u64>,
}

#[derive(Debug, Clone, Copy)]
struct Asked {
    offset: u64,
    len: u64,
    /// A write here was released while the request was out: ask again, do not compare.
    dirty: bool,
}

impl Verify {
    fn new(source: bool, alg: DigestAlg, start: u64, stop: u64, now: Time, pace: Pacer) -> Self {
        Verify {
            source,
            alg,
            stop,
            total_bytes: stop.saturating_sub(start),
            done_bytes: 0,
            found_blocks: 0,
            started: now,
            cursor: start,
            again: VecDeque::new(),
            in_flight: BTreeMap::new(),
            reading: BTreeMap::new(),
            next_id: 1,
            pace,
            runs: BTreeMap::new(),
        }
    }

    pub fn rate(&self) -> u64 {
        self.pace.rate()
    }

    /// New controller settings (`drbdadm adjust`).
    pub(super) fn set_options(&mut self, opts: crate::config::PeerDeviceOptions) {
        self.pace.set_options(opts);
    }

    fn finished(&self) -> bool {
        self.cursor >= self.stop
            && self.again.is_empty()
            && self.in_flight.is_empty()
            && self.reading.is_empty()
    }
}

/// Disk reads of a verify (kept in `Engine::peer_ops`).
#[derive(Debug, Clone)]
pub(super) enum VerifyOp {
    /// Target: reading a range to digest it for the source.
    TargetRead {
        node: NodeId,
        sector: Sector,
        block_id: u64,
        size: u32,
    },
    /// Source: reading the range the peer answered (request `block_id`), to compare.
    SourceRead {
        node: NodeId,
        block_id: u64,
        peer_digest: Bytes,
    },
}

impl Engine {
    fn verify_alg(&self, node: NodeId) -> Option<DigestAlg> {
        self.peer_info(node).and_then(|p| p.verify_alg)
    }

    /// `drbdadm verify [--start S] [--stop S]`: this node becomes VerifyS toward its peer.
    pub(super) fn verify_start(
        &mut self,
        start: Sector,
        stop: Option<Sector>,
    ) -> Result<(), StateError> {
        if self.disk.is_none() {
            return Err(StateError::NoLocalDisk);
        }
        let Some(node) = self.established_peers().into_iter().find(|n| {
            self.peers
                .get(n)
                .is_some_and(|c| c.st.repl() == ReplState::Established && c.rs.is_none())
        }) else {
            return Err(StateError::NeedConnection);
        };
        let Some(alg) = self.verify_alg(node) else {
            return Err(StateError::NoVerifyAlg);
        };
        if self
            .peers
            .get(&node)
            .is_some_and(|c| c.st.disk() < DiskState::Inconsistent)
        {
            return Err(StateError::NoRemoteDisk);
        }
        let size = self.size_bytes();
        // Whole blocks: a block is the unit that is compared and marked.
        let start = (start.bytes() / BM_BLOCK_SIZE * BM_BLOCK_SIZE).min(size);
        let stop = stop.map_or(size, |s| s.bytes().min(size)).max(start);
        let pace = self.verify_pacer(node, true);
        let now = self.now;
        self.change(Change::soft("verify").repl(node, ReplState::VerifyS))?;
        let Some(c) = self.peers.get_mut(&node) else {
            return Err(StateError::NeedConnection);
        };
        c.ov = Some(Verify::new(true, alg, start, stop, now, pace));
        self.peer_log(
            node,
            format!("Online Verify start sector: {}", start / SECTOR_SIZE),
        );
        self.broadcast_state();
        self.verify_pump(node);
        Ok(())
    }

    /// Verify is paced by the same controller options as resync; the source is the side that
    /// requests.
    fn verify_pacer(&self, node: NodeId, source: bool) -> Pacer {
        let opts = self
            .peer_info(node)
            .map(|p| p.sync.clone())
            .unwrap_or_default();
        Pacer::new(opts, source, self.now)
    }

    /// The peer started a verify toward this node.
    pub(super) fn verify_target_start(&mut self, node: NodeId) {
        let Some(alg) = self.verify_alg(node) else {
            self.peer_log(
                node,
                "the peer starts an online verify but no verify-alg is configured \
                 here; dropping the connection (set the same verify-alg on both nodes)"
                    .to_string(),
            );
            return self.drop_link(node, false);
        };
        let size = self.size_bytes();
        let now = self.now;
        let pace = self.verify_pacer(node, false);
        if let Err(e) = self.change(Change::hard("verify").repl(node, ReplState::VerifyT)) {
            return self.peer_log(node, format!("cannot start the peer's online verify: {e}"));
        }
        if let Some(c) = self.peers.get_mut(&node) {
            c.ov = Some(Verify::new(false, alg, 0, size, now, pace));
        }
    }

    /// The end of the earliest verify controller step.
    pub(super) fn verify_deadline(&self) -> Option<Time> {
        self.peers
            .values()
            .filter_map(|c| c.ov.as_ref())
            .map(|v| v.pace.next_step())
            .min()
    }

    /// Controller steps that are due: budgets, the rate window, more requests.
    pub(super) fn verify_steps(&mut self) {
        let (now, app) = (self.now, self.last_app_io);
        let nodes: Vec<NodeId> = self
            .peers
            .iter_mut()
            .filter_map(|(n, c)| {
                let v = c.ov.as_mut()?;
                let out: u64 = v.in_flight.values().map(|a| a.len).sum();
                v.pace.step_if_due(now, out, app).then_some(*n)
            })
            .collect();
        for node in nodes {
            self.verify_pump(node);
        }
    }

    /// Source: ask for what the budget allows; finish when everything is compared.
    fn verify_pump(&mut self, node: NodeId) {
        let Some(v) = self.peers.get_mut(&node).and_then(|c| c.ov.as_mut()) else {
            return;
        };
        if !v.source {
            return;
        }
        let mut out = Vec::new();
        while v.in_flight.len() < MAX_REQUESTS && v.pace.may_request() {
            let (offset, len) = if let Some(r) = v.again.pop_front() {
                r
            } else if v.cursor < v.stop {
                let len = MAX_REQUEST.min(v.stop - v.cursor);
                let r = (v.cursor, len);
                v.cursor += len;
                r
            } else {
                break;
            };
            let block_id = v.next_id;
            v.next_id += 1;
            v.pace.spend(len);
            v.in_flight.insert(
                block_id,
                Asked {
                    offset,
                    len,
                    dirty: false,
                },
            );
            out.push(Packet::OvRequest {
                sector: Sector(offset / SECTOR_SIZE),
                block_id,
                size: len as u32,
            });
        }
        let finished = v.finished();
        for p in out {
            self.send(node, p);
        }
        if finished {
            self.verify_finished(node);
        }
    }

    /// A write to `[offset, offset+len)` is being released: a verify request out over it
    /// must be asked again (see the module docs).
    pub(super) fn verify_note_write(&mut self, offset: u64, len: u64) {
        for c in self.peers.values_mut() {
            if let Some(v) = c.ov.as_mut().filter(|v| v.source) {
                for a in v.in_flight.values_mut().chain(v.reading.values_mut()) {
                    if a.offset < offset + len && offset < a.offset + a.len {
                        a.dirty = true;
                    }
                }
            }
        }
    }

    /// Verify packets.
    pub(super) fn verify_packet(&mut self, node: NodeId, packet: Packet) {
        match packet {
            Packet::OvRequest {
                sector,
                block_id,
                size,
            } => self.serve_verify_request(node, sector, block_id, size),
            Packet::OvReply {
                block_id, digest, ..
            } => self.verify_reply(node, block_id, digest),
            Packet::OvResult {
                sector,
                size,
                outcome,
                ..
            } => {
                let (offset, len) = (sector.bytes(), u64::from(size));
                let Some(v) = self.peers.get_mut(&node).and_then(|c| c.ov.as_mut()) else {
                    return;
                };
                if v.source {
                    return;
                }
                v.done_bytes += len;
                v.pace.arrived(len);
                if outcome == OvOutcome::OutOfSync {
                    v.found_blocks += len.div_ceil(BM_BLOCK_SIZE);
                    self.verify_found(node, offset, len);
                }
            }
            _ => {}
        }
    }

    fn serve_verify_request(&mut self, node: NodeId, sector: Sector, block_id: u64, size: u32) {
        let offset = sector.bytes();
        let in_range = size > 0
            && offset
                .checked_add(u64::from(size))
                .is_some_and(|e| e <= self.size_bytes());
        let verifying = self
            .peers
            .get(&node)
            .is_some_and(|c| c.ov.as_ref().is_some_and(|v| !v.source));
        if !verifying
            && self
                .peers
                .get(&node)
                .is_some_and(|c| c.st.repl() == ReplState::Established)
        {
            // The peer's State saying VerifyS may be behind its first request.
            self.verify_target_start(node);
        }
        if !in_range || self.disk.is_none() || self.verify_alg(node).is_none() {
            // An empty digest never matches: the source reports the range.
            return self.send(
                node,
                Packet::OvReply {
                    sector,
                    block_id,
                    size,
                    digest: Bytes::from_static(&[0]),
                },
            );
        }
        self.queue_internal(
            super::Origin::Verify(VerifyOp::TargetRead {
                node,
                sector,
                block_id,
                size,
            }),
            IoOp::Read { offset, len: size },
            0,
        );
    }

    fn verify_reply(&mut self, node: NodeId, block_id: u64, digest: Bytes) {
        let Some(v) = self.peers.get_mut(&node).and_then(|c| c.ov.as_mut()) else {
            return;
        };
        let Some(a) = v.in_flight.remove(&block_id) else {
            return;
        };
        if a.dirty {
            v.again.push_front((a.offset, a.len));
            return self.verify_pump(node);
        }
        v.reading.insert(block_id, a);
        self.queue_internal(
            super::Origin::Verify(VerifyOp::SourceRead {
                node,
                block_id,
                peer_digest: digest,
            }),
            IoOp::Read {
                offset: a.offset,
                len: a.len as u32,
            },
            0,
        );
    }

    /// A verify read finished.
    pub(super) fn verify_disk_done(
        &mut self,
        op: VerifyOp,
        result: &Result<Option<bytes::Bytes>, i32>,
    ) {
        match op {
            VerifyOp::TargetRead {
                node,
                sector,
                block_id,
                size,
            } => {
                let Some(alg) = self.verify_alg(node) else {
                    return;
                };
                let mut digest = Vec::new();
                if let Ok(Some(data)) = result {
                    alg.digest_into(data, &mut digest);
                } else {
                    self.peer_log(
                        node,
                        format!(
                            "verify: local read at sector {} failed; the range is \
                         reported out of sync",
                            sector.0
                        ),
                    );
                    digest.push(0);
                }
                if self.peers.get(&node).is_some_and(|p| p.replicating()) {
                    self.send(
                        node,
                        Packet::OvReply {
                            sector,
                            block_id,
                            size,
                            digest: Bytes::from(digest),
                        },
                    );
                }
            }
            VerifyOp::SourceRead {
                node,
                block_id,
                peer_digest,
            } => {
                let Some(v) = self.peers.get_mut(&node).and_then(|c| c.ov.as_mut()) else {
                    return;
                };
                let Some(Asked { offset, len, dirty }) = v.reading.remove(&block_id) else {
                    return;
                };
                if dirty {
                    v.again.push_front((offset, len));
                    return self.verify_pump(node);
                }
                let mut mine = Vec::new();
                if let Ok(Some(data)) = result {
                    v.alg.digest_into(data, &mut mine);
                }
                let same = !mine.is_empty() && mine[..] == peer_digest[..];
                let outcome = if same {
                    v.done_bytes += len;
                    v.pace.arrived(len);
                    OvOutcome::InSync
                } else if len > BM_BLOCK_SIZE {
                    // Narrow it down: ask again block by block, before anything new.
                    let mut at = offset + len;
                    while at > offset {
                        let b = (at - offset - 1) / BM_BLOCK_SIZE * BM_BLOCK_SIZE + offset;
                        v.again.push_front((b, at - b));
                        at = b;
                    }
                    return self.verify_pump(node);
                } else {
                    v.done_bytes += len;
                    v.pace.arrived(len);
                    v.found_blocks += 1;
                    OvOutcome::OutOfSync
                };
                if outcome == OvOutcome::OutOfSync {
                    self.verify_found(node, offset, len);
                }
                if self.peers.get(&node).is_some_and(|p| p.replicating()) {
                    self.send(
                        node,
                        Packet::OvResult {
                            sector: Sector(offset / SECTOR_SIZE),
                            block_id: 0,
                            size: len as u32,
                            outcome,
                        },
                    );
                }
                self.verify_pump(node);
            }
        }
    }

    /// A block range found out of sync: marked, and added to the runs logged at the end.
    fn verify_found(&mut self, node: NodeId, offset: u64, len: u64) {
        if let Some(d) = self.disk.as_mut() {
            d.mark(node, offset, len);
        }
        if let Some(v) = self.peers.get_mut(&node).and_then(|c| c.ov.as_mut()) {
            add_run(&mut v.runs, offset, len);
        }
    }

    fn log_out_of_sync(&mut self, node: NodeId, offset: u64, len: u64) {
        self.peer_log(
            node,
            format!(
                "Out of sync: start={}, size={} (sectors)",
                offset / SECTOR_SIZE,
                len / SECTOR_SIZE
            ),
        );
    }

    /// Source: everything compared. Target: the source said so (its State).
    pub(super) fn verify_finished(&mut self, node: NodeId) {
        let now = self.now;
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        let Some(v) = c.ov.take() else {
            return;
        };
        self.force_change(Change::hard("verify-finished").repl(node, ReplState::Established));
        for (o, l) in v.runs {
            self.log_out_of_sync(node, o, l);
        }
        let secs = (now.0.saturating_sub(v.started.0) / 1_000_000_000).max(1);
        self.peer_log(
            node,
            format!(
                "Online verify done (total {secs} sec; paused 0 sec; {} K/sec)",
                v.done_bytes / 1024 / secs
            ),
        );
        self.peer_log(
            node,
            format!(
                "Online verify found {} 4k block out of sync!",
                v.found_blocks
            ),
        );
        if v.found_blocks > 0 {
            self.run_handler(crate::repl::handler::Handler::OutOfSync, Some(node));
        }
        self.flush_bitmap_if_dirty();
        if v.source {
            let p = self.my_state_packet(node);
            self.send(node, p);
        }
    }
}

/// Adds `[offset, offset+len)` to `runs`, merging it with the runs it touches.
fn add_run(runs: &mut BTreeMap<u64, u64>, offset: u64, len: u64) {
    let (mut start, mut end) = (offset, offset + len);
    if let Some((&o, &l)) = runs.range(..=start).next_back()
        && o + l >= start
    {
        runs.remove(&o);
        start = o;
        end = end.max(o + l);
    }
    while let Some((&o, &l)) = runs.range(start..=end).next() {
        runs.remove(&o);
        end = end.max(o + l);
    }
    runs.insert(start, end - start);
}

#[cfg(test)]
mod tests {
    use super::add_run;
    use std::collections::BTreeMap;

    #[test]
    fn runs_merge_in_any_order() {
        let mut r = BTreeMap::new();
        for (o, l) in [(8, 4), (0, 4), (20, 4), (4, 4), (12, 4)] {
            add_run(&mut r, o, l);
        }
        assert_eq!(r.into_iter().collect::<Vec<_>>(), [(0, 16), (20, 4)]);
    }
}
