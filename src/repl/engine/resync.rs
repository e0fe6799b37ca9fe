//! The resync: bitmap-driven, alongside application I/O (DRBD's `P_RS_DATA_REQUEST` flow).
//!
//! - The **SyncTarget** walks its bitmap for the source and sends `ResyncRequest`s for runs of
//!   out-of-sync blocks, paced by the [`Controller`] and bounded in flight. A `ResyncReply` is
//!   written like any other write (through the same conflict gate, so it lands in the order it
//!   arrived relative to replicated application writes); once on disk its blocks are clear here
//!   and a `ResyncWriteAck` tells the source. At the end the target flushes its disk, adopts the
//!   source's generation, persists UpToDate and only then tells the source (`State`).
//! - The **SyncSource** answers each request with a read, which the conflict gate holds while an
//!   overlapping write is in flight (and holds writes while an overlapping resync read is), so
//!   a reply never carries data older than a write the target already has. It keeps every bit
//!   until the target reports the end: a target that crashes mid-resync has lost nothing the
//!   source still knows about, and the next handshake ORs both bitmaps again.
//! - Application writes during the resync are replicated to the target too; on the target a
//!   replicated write that covers whole 4 KiB blocks clears them.
//! - With `csums-alg` the target first reads its own copy of a range and sends its digest
//!   (`CsumResyncRequest`); the source answers `ResyncIsInSync` instead of the data when its
//!   digest is the same, so identical blocks cross the wire as a few bytes.

use super::disk::take_generation;
use super::{Change, Engine, IoOp};
use crate::meta::superblock::flags;
use crate::repl::resync::Pacer;
use crate::repl::state::{DiskState, ReplState, Role};
use crate::repl::wire::{BlockAck, Packet};
use crate::types::{BM_BLOCK_SIZE, BlockIdx, GenUuid, NodeId, SECTOR_SIZE, Sector};
use std::collections::{BTreeMap, BTreeSet};

/// Largest resync request: one frame (DRBD resyncs in up to 1 MiB requests too). Larger than
/// 256 KiB moved a 4 GiB initial sync about a quarter faster here (benches/pair_fio.sh).
const MAX_REQUEST: u64 = 1024 * 1024;
/// Largest request with `csums-alg`.
const CSUMS_MAX_REQUEST: u64 = 256 * 1024;
/// Resync requests in flight, and their bytes (enough to keep a fast disk busy on both ends).
const MAX_REQUESTS: usize = 64;
const MAX_IN_FLIGHT_BYTES: u64 = 32 << 20;

/// A resync with one peer, either direction.
#[derive(Debug)]
pub(super) struct Resync {
    pub source: bool,
    /// Bytes out of sync when it started.
    pub total_bytes: u64,
    /// Bytes resynced so far (target: written; source: acknowledged).
    pub done_bytes: u64,
    pub failed_bytes: u64,
    // ---- target only ----
    /// Next block to look at.
    cursor: u64,
    /// Requests sent and not yet written: block_id -> (offset, len).
    in_flight: BTreeMap<u64, (u64, u64)>,
    /// In-flight requests an application write of this node overlapped (a Primary
    /// SyncTarget): their reply may be older than that write, so it is not written; the
    /// blocks stay marked and a later pass fetches them again.
    overwritten: BTreeSet<u64>,
    in_flight_bytes: u64,
    next_id: u64,
    /// The superblock generation that records Inconsistent: nothing is requested before it.
    meta_gen: u64,
    /// Budget (target) and rate window (both sides).
    pace: Pacer,
    /// The final flush has been submitted.
    finishing: bool,
    /// Target, with csums-alg: bytes found equal by digest, and bytes that came as data.
    same_csum_bytes: u64,
    transferred_bytes: u64,
    /// When it began (the `Resync done` line's duration).
    started: crate::types::Time,
}

impl Resync {
    fn new(
        source: bool,
        total_bytes: u64,
        meta_gen: u64,
        pace: Pacer,
        now: crate::types::Time,
    ) -> Resync {
        Resync {
            source,
            total_bytes,
            done_bytes: 0,
            failed_bytes: 0,
            cursor: 0,
            in_flight: BTreeMap::new(),
            overwritten: BTreeSet::new(),
            in_flight_bytes: 0,
            next_id: 1,
            meta_gen,
            pace,
            finishing: false,
            same_csum_bytes: 0,
            transferred_bytes: 0,
            started: now,
        }
    }

    /// Bytes per second over the last second.
    pub fn rate(&self) -> u64 {
        self.pace.rate()
    }

    /// Resync data requested and not yet written (a target's; 0 on the source).
    pub(super) fn in_flight_bytes(&self) -> u64 {
        self.in_flight_bytes
    }

    /// New controller settings (`drbdadm adjust`).
    pub(super) fn set_options(&mut self, opts: crate::config::PeerDeviceOptions) {
        self.pace.set_options(opts);
    }

    /// The answer to request `block_id` came, and an application write overlapped the
    /// request while it was out: the request is done without its data (its blocks stay
    /// marked). Returns whether it was such a request.
    fn forget_overwritten(&mut self, block_id: u64) -> bool {
        if !self.overwritten.remove(&block_id) {
            return false;
        }
        if let Some((_, len)) = self.in_flight.remove(&block_id) {
            self.in_flight_bytes -= len;
        }
        true
    }
}

/// Disk ops of the resync (kept in `Engine::peer_ops`).
#[derive(Debug, Clone)]
pub(super) enum ResyncOp {
    /// Source: a read answering a request (with csums-alg: the target's digest of it).
    Read {
        node: NodeId,
        sector: Sector,
        block_id: u64,
        size: u32,
        peer_digest: Option<bytes::Bytes>,
    },
    /// Target, with csums-alg: reading its own copy to send the digest.
    CsumRead {
        node: NodeId,
        block_id: u64,
        offset: u64,
        len: u64,
    },
    /// Target: writing a reply.
    Write {
        node: NodeId,
        block_id: u64,
        offset: u64,
        len: u64,
    },
    /// Target: the flush before declaring UpToDate.
    Flush { node: NodeId },
}

impl Engine {
    /// Starts the resync with `node` after the bitmaps were exchanged (or a full sync was
    /// requested).
    pub(super) fn resync_start(&mut self, node: NodeId, source: bool) {
        if !source && self.st.disk() <= DiskState::Inconsistent {
            // An Inconsistent target fetches from this source everything it may lack: what
            // is marked toward any peer (three nodes: a resync from another one may have
            // been cut short; DRBD copies that peer's bitmap the same way).
            if let Some(d) = self.disk.as_mut() {
                d.gather_marks_into(node);
            }
        }
        if !source {
            // From here on this disk takes in the source's newer data; a third node that is
            // not in the source's generation with this one lacks it from this node's current
            // generation on. Its bitmap UUID says so, or that node's older data could later
            // be resynced over what this node got (three nodes).
            self.mark_others_behind(node);
        }
        let oos = self
            .disk
            .as_ref()
            .and_then(|d| d.bitmap(node))
            .map_or(0, |b| b.count() * BM_BLOCK_SIZE);
        let opts = self
            .peer_info(node)
            .map(|p| p.sync.clone())
            .unwrap_or_default();
        // Soft, so that the rules refuse a resync a disk went away for; a Primary told to be
        // SyncTarget (`rr-conflict violently`) was decided by the handshake and is forced.
        let make = if !source && self.st.role() == Role::Primary {
            Change::hard
        } else {
            Change::soft
        };
        let change = if source {
            make("resync")
                .repl(node, ReplState::SyncSource)
                .pdsk(node, DiskState::Inconsistent)
        } else {
            make("resync")
                .repl(node, ReplState::SyncTarget)
                .disk(DiskState::Inconsistent)
                .pdsk(node, DiskState::UpToDate)
        };
        if let Err(e) = self.change(change) {
            // A disk went away meanwhile (the rules refuse a resync without both).
            return self.peer_log(node, format!("resync not started: {e}"));
        }
        if !source {
            // LVM snapshot scripts take their snapshot here (DRBD waits for the handler; this
            // build runs it alongside: see `fencing::handler_done`).
            self.run_handler(
                crate::repl::handler::Handler::BeforeResyncTarget,
                Some(node),
            );
            // The target's data is a mix until the end: that must be on disk before the first
            // resync write lands (a crash in between must not come back Consistent).
            if let Some(d) = self.disk.as_mut() {
                d.sb.flags &= !(flags::CONSISTENT | flags::WAS_UP_TO_DATE);
            }
            self.sb_changed();
            self.flush_bitmap_if_dirty();
        }
        if source {
            self.run_handler(
                crate::repl::handler::Handler::BeforeResyncSource,
                Some(node),
            );
        }
        if source && let Some(d) = self.disk.as_mut() {
            // The end clears what the resync covered, never a mark made while it runs.
            d.start_recording(node);
        }
        let meta_gen = self.sb_gen;
        let now = self.now;
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        // The target requests, so the target is the side that is paced.
        c.rs = Some(Resync::new(
            source,
            oos,
            meta_gen,
            Pacer::new(opts, !source, now),
            now,
        ));
        let (role, bits) = if source {
            ("SyncSource", oos / BM_BLOCK_SIZE)
        } else {
            ("SyncTarget", oos / BM_BLOCK_SIZE)
        };
        self.peer_log(
            node,
            format!(
                "Began resync as {role} (will sync {} KB [{bits} bits set]).",
                oos / 1024
            ),
        );
        self.broadcast_state();
        self.resync_pump(node);
    }

    /// Source side: send everything to `node` (`invalidate-remote`, a forced Primary with an
    /// Inconsistent peer, or the peer's `invalidate`).
    pub(super) fn start_full_sync_to(&mut self, node: NodeId) -> Result<(), String> {
        if self.st.disk() != DiskState::UpToDate {
            return Err("no UpToDate data here to resync from".into());
        }
        if self.peers.get(&node).map(|c| c.st.repl()) != Some(ReplState::Established) {
            return Err("not connected and idle".into());
        }
        if self
            .disk
            .as_ref()
            .is_some_and(|d| d.sb.current_uuid.same_as(GenUuid::JUST_CREATED))
        {
            self.new_generation_for_sync();
        }
        let Some(d) = self.disk.as_mut() else {
            return Err("no disk".into());
        };
        let bytes = d.data_bytes;
        d.mark(node, 0, bytes);
        let uuid = d.sb.current_uuid;
        self.send(node, Packet::SyncUuid { uuid });
        self.resync_start(node, true);
        Ok(())
    }

    /// Source side of a resync of the marked blocks only (`--reset-bitmap=no`): the target
    /// gets this node's marks first (`OutOfSync`), so it requests the union of both bitmaps,
    /// then this node's State as SyncSource starts it there.
    pub(super) fn start_bitmap_sync_to(&mut self, node: NodeId) -> Result<(), String> {
        if self.st.disk() != DiskState::UpToDate {
            return Err("no UpToDate data here to resync from".into());
        }
        if self.peers.get(&node).map(|c| c.st.repl()) != Some(ReplState::Established) {
            return Err("not connected and idle".into());
        }
        let Some(bm) = self.disk.as_ref().and_then(|d| d.bitmap(node)) else {
            return Err("no bitmap for the peer".into());
        };
        let data_bytes = self.size_bytes();
        let mut runs = Vec::new();
        let mut at = BlockIdx(0);
        while let Some((start, end)) = bm.next_run(at) {
            at = end;
            let mut off = start.0 * BM_BLOCK_SIZE;
            let stop = (end.0 * BM_BLOCK_SIZE).min(data_bytes);
            while off < stop {
                // OutOfSync sizes are u32 bytes.
                let len = (stop - off).min(1 << 30);
                runs.push(Packet::OutOfSync {
                    sector: Sector(off / SECTOR_SIZE),
                    size: len as u32,
                });
                off += len;
            }
        }
        for p in runs {
            self.send(node, p);
        }
        self.resync_start(node, true);
        // The peer tells this start from a State it sent during an earlier resync (one that
        // reached it after that resync had ended there) by the flag.
        let mut p = self.my_state_packet(node);
        if let Packet::State { flags, .. } = &mut p {
            *flags = *flags | crate::repl::wire::StateFlags::KEEP_BITMAP;
        }
        self.send(node, p);
        Ok(())
    }

    /// Target side of a full sync the source started ([`Packet::SyncUuid`]).
    pub(super) fn become_full_sync_target(&mut self, node: NodeId, uuid: GenUuid) {
        if self.st.role() == Role::Primary {
            self.peer_log(
                node,
                "I shall become SyncTarget, but I am primary!".to_string(),
            );
            return self.drop_link(node, true);
        }
        if let Some(d) = self.disk.as_mut() {
            let bytes = d.data_bytes;
            d.mark(node, 0, bytes);
        }
        if let Some(c) = self.peers.get_mut(&node) {
            c.peer_current = uuid;
        }
        self.resync_start(node, false);
    }

    /// The end of the earliest resync controller step.
    pub(super) fn resync_deadline(&self) -> Option<crate::types::Time> {
        self.peers
            .values()
            .filter_map(|c| c.rs.as_ref())
            .map(|rs| rs.pace.next_step())
            .min()
    }

    /// Controller steps that are due: new budgets, the rate window, and more requests.
    pub(super) fn resync_steps(&mut self) {
        let (now, app) = (self.now, self.last_app_io);
        let nodes: Vec<NodeId> = self
            .peers
            .iter_mut()
            .filter_map(|(n, c)| {
                let rs = c.rs.as_mut()?;
                rs.pace
                    .step_if_due(now, rs.in_flight_bytes, app)
                    .then_some(*n)
            })
            .collect();
        for node in nodes {
            self.resync_pump(node);
        }
    }

    /// Target: request what the budget and the in-flight bounds allow; finish when done.
    pub(super) fn resync_pump(&mut self, node: NodeId) {
        let meta_ok = self.meta_persisted;
        let csums = self.peer_info(node).is_some_and(|p| p.csums_alg.is_some());
        let Some(d) = self.disk.as_ref() else {
            return;
        };
        let data_bytes = d.data_bytes;
        let Some(bm) = d.bitmap(node) else {
            return;
        };
        // A Primary other than this source writes to this disk directly: a block read on
        // the source may predate a write this node has already applied (three nodes; DRBD
        // orders them with dagtags). Such a resync waits; the data comes from the Primary
        // (`resync_elsewhere`), and the resync ends with the Primary's.
        let foreign_writer = self.writer_besides(node).is_some();
        // A Primary with no UpToDate disk (a diskless one, or one being resynced itself)
        // cannot serve the rest, so the resync goes on; but a block with one of its writes
        // that may not have reached the source yet (not covered by its peer ack) is not
        // requested now: the reply could be older than that write.
        let unconfirmed: Vec<(u64, u64)> = self
            .peers
            .iter()
            .filter(|(n, c)| **n != node && c.st.role() == Role::Primary)
            .filter_map(|(_, c)| c.session.as_ref())
            .flat_map(|s| s.rx_unacked.iter().map(|&(_, o, l)| (o, l)))
            .collect();
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        let paused = c.user_paused || c.peer_paused || foreign_writer;
        let Some(rs) = c.rs.as_mut() else {
            return;
        };
        if rs.source || paused || rs.finishing || meta_ok < rs.meta_gen {
            return;
        }
        // With csums one digest covers a request, so a block that differs costs its whole
        // request: smaller ones keep that cheap.
        let max_request = if csums {
            CSUMS_MAX_REQUEST
        } else {
            MAX_REQUEST
        };
        let mut out = Vec::new();
        while rs.in_flight.len() < MAX_REQUESTS
            && rs.in_flight_bytes < MAX_IN_FLIGHT_BYTES
            && rs.pace.may_request()
        {
            let Some((start, end)) = bm.next_run(BlockIdx(rs.cursor)) else {
                rs.cursor = bm.len_bits();
                break;
            };
            let end = end.0.min(start.0 + max_request / BM_BLOCK_SIZE);
            let offset = start.0 * BM_BLOCK_SIZE;
            let len = (end * BM_BLOCK_SIZE).min(data_bytes).saturating_sub(offset);
            rs.cursor = end;
            if len == 0 {
                continue;
            }
            let block_id = rs.next_id;
            rs.next_id += 1;
            rs.in_flight.insert(block_id, (offset, len));
            if self.reqs.app_write_overlaps(offset, len)
                || unconfirmed
                    .iter()
                    .any(|&(o, l)| o < offset + len && offset < o + l)
            {
                rs.overwritten.insert(block_id);
            }
            rs.in_flight_bytes += len;
            rs.pace.spend(len);
            out.push(Packet::ResyncRequest {
                sector: Sector(offset / SECTOR_SIZE),
                block_id,
                size: len as u32,
            });
        }
        let at_end = rs.cursor >= bm.len_bits() && rs.in_flight.is_empty();
        let left = bm.count();
        let failed = rs.failed_bytes;
        if at_end && left > 0 && failed == 0 {
            // Blocks behind the cursor became dirty again: another pass.
            rs.cursor = 0;
        }
        for p in out {
            match p {
                Packet::ResyncRequest {
                    sector,
                    block_id,
                    size,
                } if csums => {
                    // Digest our copy first (see the module docs).
                    let (offset, len) = (sector.bytes(), u64::from(size));
                    self.queue_internal(
                        super::Origin::Resync(ResyncOp::CsumRead {
                            node,
                            block_id,
                            offset,
                            len,
                        }),
                        IoOp::Read { offset, len: size },
                        0,
                    );
                }
                p => self.send(node, p),
            }
        }
        if at_end && (left == 0 || failed > 0) {
            self.resync_target_finishing(node, left);
        }
    }

    /// Target: every block requested and written. Flush, then adopt the source's generation.
    fn resync_target_finishing(&mut self, node: NodeId, left_bits: u64) {
        let Some(rs) = self.peers.get_mut(&node).and_then(|c| c.rs.as_mut()) else {
            return;
        };
        if rs.failed_bytes > 0 {
            // DRBD's end with failures: the resync is over, this disk stays Inconsistent and
            // the failed blocks stay marked on both sides for the next one.
            let failed = rs.failed_bytes;
            return self.resync_end(
                node,
                format!(
                    "            {} failed blocks ({} KiB left); this disk stays Inconsistent: \
                     fix the failing disk, then `drbdadm disconnect` and `connect` (or \
                     `invalidate`) resyncs the rest",
                    failed.div_ceil(BM_BLOCK_SIZE),
                    left_bits * BM_BLOCK_SIZE / 1024
                ),
                DiskState::Inconsistent,
            );
        }
        rs.finishing = true;
        self.submit_internal(super::Origin::Resync(ResyncOp::Flush { node }), IoOp::Flush);
    }

    /// Target: every block is written and flushed. Adopt the source's generation and record
    /// UpToDate in the superblock; the states change, and the source hears of it, only once
    /// that is on disk ([`Engine::resync_target_persisted`]).
    fn resync_target_done(&mut self, node: NodeId) {
        let (peer_current, peer_history) = self
            .peers
            .get(&node)
            .map_or((GenUuid::ZERO, Vec::new()), |c| {
                (c.peer_current, c.peer_history.clone())
            });
        if let Some(d) = self.disk.as_mut() {
            take_generation(&mut d.sb, peer_current, &peer_history);
            if let Some(p) = d.sb.peers.iter_mut().find(|p| p.node_id == Some(node)) {
                p.bitmap_uuid = GenUuid::ZERO;
            }
            d.sb.flags |= flags::CONSISTENT | flags::WAS_UP_TO_DATE;
        }
        self.sb_changed();
        self.flush_bitmap_if_dirty();
        self.after_meta.push((self.sb_gen, node));
        self.pump_meta();
    }

    /// The superblock that records a finished resync is on disk: UpToDate, and tell the
    /// source.
    pub(super) fn resync_target_persisted(&mut self, node: NodeId) {
        let Some(c) = self.peers.get(&node) else {
            return;
        };
        if c.rs.as_ref().is_none_or(|rs| !rs.finishing) {
            return;
        }
        let csums =
            c.rs.as_ref()
                .map(|rs| (rs.same_csum_bytes, rs.transferred_bytes));
        self.end_resyncs_the_writer_covered(node);
        // Blocks marked for the source during the resync (an `OutOfSync` for a write a
        // weak node lacks) are still missing here: Outdated, and resynced
        // by the handshake that follows; so is a node that is weak (see `weak`).
        let marked = self
            .disk
            .as_ref()
            .and_then(|d| d.bitmap(node))
            .is_some_and(|bm| !bm.is_clear());
        let disk = if marked && self.st.role() != Role::Primary {
            DiskState::Outdated
        } else {
            self.up_to_date_unless_weak()
        };
        self.resync_end(node, String::new(), disk);
        if disk == DiskState::Outdated {
            let _ = self.outdate_self(Change::hard("resync-finished"));
        }
        let uses_csums = self.peer_info(node).is_some_and(|p| p.csums_alg.is_some());
        if let Some((same, sent)) = csums.filter(|_| uses_csums) {
            // DRBD's line (drbd_resync_finished()).
            let total = same + sent;
            let ratio = (same * 100).checked_div(total).unwrap_or(0);
            self.peer_log(
                node,
                format!(
                    "{ratio} % had equal checksums, eliminated: {}K; transferred {}K total {}K",
                    same / 1024,
                    sent / 1024,
                    total / 1024
                ),
            );
        }
        // 8.4-style configs unfence from here (crm-unfence-peer.sh as after-resync-target).
        self.run_handler(crate::repl::handler::Handler::AfterResyncTarget, Some(node));
        self.maybe_unfence(node);
        self.resync_again_if_marked(node);
    }

    /// Target: the resync with `node` is over, `disk` is what this disk is now (UpToDate, or
    /// Inconsistent after failures). Logs DRBD's `Resync done` line and tells the source.
    fn resync_end(&mut self, node: NodeId, failures: String, disk: DiskState) {
        let now = self.now;
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        // The resync it asked for is over: a later need may ask again.
        c.resync_asked = false;
        let Some(rs) = c.rs.take() else {
            return;
        };
        self.log_resync_done(node, &rs, now, &failures);
        self.force_change(
            Change::hard("resync-finished")
                .repl(node, ReplState::Established)
                .disk(disk),
        );
        let p = self.my_state_packet(node);
        self.send(node, p);
    }

    /// DRBD's `Resync done (total N sec; paused 0 sec; K K/sec)`, and the failures, if any.
    fn log_resync_done(
        &mut self,
        node: NodeId,
        rs: &Resync,
        now: crate::types::Time,
        failures: &str,
    ) {
        let secs = (now.0.saturating_sub(rs.started.0) / 1_000_000_000).max(1);
        self.peer_log(
            node,
            format!(
                "Resync done (total {secs} sec; paused 0 sec; {} K/sec)",
                rs.done_bytes / 1024 / secs
            ),
        );
        if !failures.is_empty() {
            self.peer_log(node, failures.to_string());
        }
    }

    /// Source: the target reports the end (its State says Established). With its disk
    /// UpToDate everything it had to get, it has: the bits the resync covered are cleared,
    /// but never one marked while it ran (a write the target failed, an `OutOfSync`). With
    /// failures, or a target disk that went away, every bit stays for the next resync.
    pub(super) fn resync_source_finished(&mut self, node: NodeId, role: Role, disk: DiskState) {
        let now = self.now;
        let rs = self.peers.get_mut(&node).and_then(|c| c.rs.take());
        let ok = disk == DiskState::UpToDate;
        // A target that ends Inconsistent has written what it got too: it is still the target
        // of another resync (three nodes), or keeps its own marks for blocks it failed to
        // write, which the next handshake's bitmap exchange brings back. A target that ends
        // Outdated took this node's generation with the data, but blocks were marked for it
        // while the resync ran or a Primary's writes do not reach it (see `weak`).
        // Only a target whose disk went away leaves every block marked here.
        let outdated = disk == DiskState::Outdated;
        let transferred = ok || outdated || disk == DiskState::Inconsistent;
        let recorded = self.disk.as_mut().and_then(|d| d.stop_recording(node));
        if transferred && let Some(d) = self.disk.as_mut() {
            match recorded {
                Some(marked) if !marked.overflow => {
                    if let Some(bm) = d.bitmap_mut(node) {
                        bm.clear_all();
                    }
                    for (off, len) in marked.ranges {
                        d.mark(node, off, len);
                    }
                }
                // Too many marks to remember: keep every bit (a later resync moves a few
                // blocks again rather than lose one).
                _ => {}
            }
            if ok || outdated {
                d.bitmap_uuid_to_history(node);
            }
        }
        if let Some(rs) = &rs {
            let failures = if ok {
                String::new()
            } else if outdated {
                "the target ends Outdated: blocks marked meanwhile stay marked".to_string()
            } else if transferred {
                format!("the target ends {disk} and keeps its own marks")
            } else {
                format!("the target ends {disk}: every marked block stays marked")
            };
            self.log_resync_done(node, rs, now, &failures);
        }
        self.force_change(
            Change::hard("resync-finished")
                .repl(node, ReplState::Established)
                .peer_role(node, role)
                .pdsk(node, disk),
        );
        // A Consistent source (a crashed Primary the handshake chose) holds what its target
        // now holds as UpToDate: it is UpToDate too.
        // (So it is when the target ends Outdated only for lack of blocks marked meanwhile,
        // or because it is weak; see `weak`.)
        if (ok || outdated)
            && matches!(self.st.disk(), DiskState::Consistent | DiskState::Outdated)
            && self.up_to_date_unless_weak() == DiskState::UpToDate
        {
            self.set_up_to_date("resync-finished");
        }
        self.sb_changed();
        self.flush_bitmap_if_dirty();
        if ok {
            // (Blocks still marked for the now UpToDate peer: `resync_again_if_marked`, from
            // the state change above.)
            self.maybe_unfence(node);
        }
    }

    /// A resync ended well (or the peer became UpToDate through another one), but blocks are
    /// marked for the peer (a lost Primary's unconfirmed writes, marks made while the resync
    /// ran): both sides are UpToDate and in sync otherwise, so the handshake runs again and
    /// resyncs them (equal UUIDs with marked blocks), instead of leaving them marked under an
    /// UpToDate peer. Called when this disk or the peer's becomes UpToDate, and when a lost
    /// Primary's unconfirmed writes were marked (`peer_ack`).
    pub(super) fn resync_again_if_marked(&mut self, node: NodeId) {
        let marked = self
            .disk
            .as_ref()
            .and_then(|d| d.bitmap(node))
            .is_some_and(|bm| !bm.is_clear());
        let settled = self
            .peers
            .get(&node)
            .is_some_and(|p| p.hs.is_none() && p.st.repl() == ReplState::Established);
        if marked && settled {
            self.handshake_again_with(
                node,
                crate::repl::wire::SizesFlags::empty(),
                "blocks are still marked for the peer",
            );
        }
    }

    /// Every peer but `source` that is not in sync with this node gets this node's current
    /// UUID as its bitmap UUID, if it has none.
    fn mark_others_behind(&mut self, source: NodeId) {
        let followers = self.generation_followers();
        let diskless: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, c)| c.info.intentional_diskless)
            .map(|(n, _)| *n)
            .collect();
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        let own = d.sb.current_uuid;
        if own.is_zero() || own.same_as(GenUuid::JUST_CREATED) {
            return;
        }
        if d.record_behind(|n| n != source && !followers.contains(&n) && !diskless.contains(&n)) {
            self.sb_changed();
        }
    }

    /// A connected Primary other than `node` whose writes reach this disk directly and whose
    /// own disk is UpToDate, so it can bring what a resync from `node` would. (A Primary that
    /// is itself being resynced cannot: waiting for it would wait forever.)
    pub(super) fn writer_besides(&self, node: NodeId) -> Option<NodeId> {
        self.peers
            .iter()
            .find(|(n, c)| {
                **n != node
                    && c.replicating()
                    && c.st.role() == Role::Primary
                    && c.st.disk() == DiskState::UpToDate
            })
            .map(|(n, _)| *n)
    }

    /// An Inconsistent disk that no resync feeds (its source went away mid-way, or waits
    /// for a Primary that writes here directly) asks a connected peer with UpToDate data,
    /// the Primary if there is one, for the rest (as `invalidate --reset-bitmap=no` does: the
    /// marks gathered at the start cover what other sources did not send).
    pub(super) fn resync_elsewhere(&mut self) {
        let fed = self.peers.iter().any(|(n, c)| {
            c.hs.is_some()
                || c.rs
                    .as_ref()
                    .is_some_and(|rs| !rs.source && self.writer_besides(*n).is_none())
        });
        if self.st.disk() != DiskState::Inconsistent || self.disk.is_none() || fed {
            return;
        }
        let candidate = |c: &super::peer::Peer| {
            c.replicating()
                && c.st.repl() == ReplState::Established
                && c.st.disk() == DiskState::UpToDate
                && c.rs.is_none()
                && !c.resync_asked
        };
        let primary = self
            .peers
            .iter()
            .find(|(_, c)| candidate(c) && c.st.role() == Role::Primary);
        let Some(node) = primary
            .or_else(|| self.peers.iter().find(|(_, c)| candidate(c)))
            .map(|(n, _)| *n)
        else {
            return;
        };
        if let Some(c) = self.peers.get_mut(&node) {
            c.resync_asked = true;
        }
        self.peer_log(
            node,
            "this disk is Inconsistent and no resync feeds it: asking the peer for the rest"
                .to_string(),
        );
        self.request_bitmap_resync(node);
    }

    /// The resync from `writer`, a Primary, has brought everything: the resyncs from other
    /// peers that waited for it (`resync_pump`) end too. What this node had marked toward
    /// them was gathered into the writer's resync, and they get the writer's writes as this
    /// node does.
    fn end_resyncs_the_writer_covered(&mut self, writer: NodeId) {
        let waiting: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(n, c)| {
                **n != writer
                    && c.rs.as_ref().is_some_and(|rs| !rs.source)
                    && self.writer_besides(**n) == Some(writer)
            })
            .map(|(n, _)| *n)
            .collect();
        for node in waiting {
            if let Some(bm) = self.disk.as_mut().and_then(|d| d.bitmap_mut(node)) {
                bm.clear_all();
            }
            let Some(rs) = self.peers.get_mut(&node).and_then(|c| c.rs.take()) else {
                continue;
            };
            let now = self.now;
            self.log_resync_done(node, &rs, now, "");
            self.peer_log(
                node,
                format!(
                    "everything came from the Primary ({})",
                    self.peer_name(writer)
                ),
            );
            self.force_change(Change::hard("resync-finished").repl(node, ReplState::Established));
            let p = self.my_state_packet(node);
            self.send(node, p);
        }
    }

    /// Serves the resync requests deferred while this disk was Inconsistent, once it is not.
    pub(super) fn serve_deferred_resync(&mut self) {
        if self.st.disk() == DiskState::Inconsistent {
            return;
        }
        let waiting: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, c)| !c.deferred_rs.is_empty())
            .map(|(n, _)| *n)
            .collect();
        for node in waiting {
            let reqs = self
                .peers
                .get_mut(&node)
                .map(|c| std::mem::take(&mut c.deferred_rs))
                .unwrap_or_default();
            for (sector, block_id, size, digest) in reqs {
                self.serve_resync_request(node, sector, block_id, size, digest);
            }
        }
    }

    /// Resync packets.
    pub(super) fn resync_packet(&mut self, node: NodeId, packet: Packet) {
        match packet {
            Packet::ResyncRequest {
                sector,
                block_id,
                size,
            } => self.serve_resync_request(node, sector, block_id, size, None),
            Packet::CsumResyncRequest {
                sector,
                block_id,
                size,
                digest,
            } => self.serve_resync_request(node, sector, block_id, size, Some(digest)),
            Packet::ResyncIsInSync(a) => {
                // The source's digest matched ours: nothing to write, the blocks are current.
                let Some(rs) = self.peers.get_mut(&node).and_then(|c| c.rs.as_mut()) else {
                    return;
                };
                let Some(&(offset, len)) = rs.in_flight.get(&a.block_id) else {
                    return;
                };
                rs.pace.arrived(len);
                if rs.forget_overwritten(a.block_id) {
                    return self.resync_pump(node);
                }
                rs.in_flight.remove(&a.block_id);
                rs.in_flight_bytes -= len;
                rs.done_bytes += len;
                rs.same_csum_bytes += len;
                if let Some(d) = self.disk.as_mut() {
                    d.clear_covered(node, offset, len);
                }
                self.resync_pump(node);
            }
            Packet::ResyncReply {
                sector,
                block_id,
                data,
                ..
            } => self.resync_reply(node, sector, block_id, data),
            Packet::NegResyncReply(a) => {
                if let Some(rs) = self.peers.get_mut(&node).and_then(|c| c.rs.as_mut())
                    && let Some((_, len)) = rs.in_flight.remove(&a.block_id)
                {
                    rs.overwritten.remove(&a.block_id);
                    rs.in_flight_bytes -= len;
                    rs.failed_bytes += len;
                }
                self.peer_log(
                    node,
                    format!(
                        "the source could not read sector {} for the resync",
                        a.sector.0
                    ),
                );
                self.resync_pump(node);
            }
            Packet::ResyncWriteAck(a) => {
                if let Some(rs) = self.peers.get_mut(&node).and_then(|c| c.rs.as_mut()) {
                    rs.done_bytes += u64::from(a.size);
                    rs.pace.arrived(u64::from(a.size));
                }
            }
            _ => {}
        }
    }

    fn serve_resync_request(
        &mut self,
        node: NodeId,
        sector: Sector,
        block_id: u64,
        size: u32,
        peer_digest: Option<bytes::Bytes>,
    ) {
        let serving = self
            .peers
            .get(&node)
            .is_some_and(|c| c.rs.as_ref().is_some_and(|rs| rs.source));
        if serving && self.st.disk() == DiskState::Inconsistent {
            // Three nodes: this source is itself a resync target right now (DRBD pauses it
            // with `resync-suspended:dependency`). Served once its own disk is good.
            if let Some(c) = self.peers.get_mut(&node) {
                c.deferred_rs.push((sector, block_id, size, peer_digest));
            }
            return;
        }
        let offset = sector.bytes();
        let in_range = offset
            .checked_add(u64::from(size))
            .is_some_and(|e| e <= self.size_bytes())
            && size > 0;
        if !serving || !in_range || self.disk.is_none() {
            let ack = BlockAck {
                sector,
                block_id,
                size,
                seq: 0,
            };
            return self.send(node, Packet::NegResyncReply(ack));
        }
        self.queue_internal(
            super::Origin::Resync(ResyncOp::Read {
                node,
                sector,
                block_id,
                size,
                peer_digest,
            }),
            IoOp::Read { offset, len: size },
            0,
        );
    }

    fn resync_reply(&mut self, node: NodeId, sector: Sector, block_id: u64, data: bytes::Bytes) {
        let Some(c) = self.peers.get_mut(&node) else {
            return;
        };
        c.received += data.len() as u64;
        let Some(rs) = c.rs.as_mut() else {
            return;
        };
        let Some(&(offset, len)) = rs.in_flight.get(&block_id) else {
            return; // not (or no longer) ours
        };
        rs.pace.arrived(len);
        rs.transferred_bytes += len;
        if rs.forget_overwritten(block_id) {
            return self.resync_pump(node);
        }
        if offset != sector.bytes() || data.len() as u64 != len {
            self.peer_log(
                node,
                "resync reply does not match its request; dropping the connection".to_string(),
            );
            return self.drop_link(node, false);
        }
        // No AL transaction: until the resync ends the whole disk is Inconsistent anyway.
        self.queue_internal(
            super::Origin::Resync(ResyncOp::Write {
                node,
                block_id,
                offset,
                len,
            }),
            IoOp::Write {
                offset,
                data,
                fua: false,
            },
            0,
        );
    }

    /// A resync disk op finished.
    pub(super) fn resync_disk_done(
        &mut self,
        op: ResyncOp,
        result: Result<Option<bytes::Bytes>, i32>,
    ) {
        match op {
            ResyncOp::Read {
                node,
                sector,
                block_id,
                size,
                peer_digest,
            } => {
                let alg = self.peer_info(node).and_then(|p| p.csums_alg);
                let same = match (&result, &peer_digest, alg) {
                    (Ok(Some(data)), Some(theirs), Some(alg)) => {
                        let mut mine = Vec::new();
                        alg.digest_into(data, &mut mine);
                        mine[..] == theirs[..]
                    }
                    _ => false,
                };
                let ack = BlockAck {
                    sector,
                    block_id,
                    size,
                    seq: 0,
                };
                let packet = match result {
                    Ok(Some(_)) if same => {
                        if let Some(rs) = self.peers.get_mut(&node).and_then(|c| c.rs.as_mut()) {
                            rs.done_bytes += u64::from(size);
                        }
                        Packet::ResyncIsInSync(ack)
                    }
                    Ok(Some(data)) => Packet::ResyncReply {
                        sector,
                        block_id,
                        digest: bytes::Bytes::new(),
                        data,
                    },
                    _ => Packet::NegResyncReply(ack),
                };
                if self.peers.get(&node).is_some_and(|p| p.replicating()) {
                    self.send(node, packet);
                }
            }
            ResyncOp::Write {
                node,
                block_id,
                offset,
                len,
            } => {
                let ok = result.is_ok();
                if ok && let Some(d) = self.disk.as_mut() {
                    d.clear_covered(node, offset, len);
                }
                let Some(rs) = self.peers.get_mut(&node).and_then(|c| c.rs.as_mut()) else {
                    return;
                };
                if rs.in_flight.remove(&block_id).is_some() {
                    rs.in_flight_bytes -= len;
                }
                rs.overwritten.remove(&block_id);
                let ack = BlockAck {
                    sector: Sector(offset / SECTOR_SIZE),
                    block_id,
                    size: len as u32,
                    seq: 0,
                };
                if ok {
                    rs.done_bytes += len;
                    self.send(node, Packet::ResyncWriteAck(ack));
                } else {
                    // `local_io_error` counted it as failed already.
                    self.send(node, Packet::NegAck(ack));
                }
                self.resync_pump(node);
            }
            ResyncOp::CsumRead {
                node,
                block_id,
                offset,
                len,
            } => {
                let alg = self.peer_info(node).and_then(|p| p.csums_alg);
                let still_asked = self
                    .peers
                    .get(&node)
                    .and_then(|c| c.rs.as_ref())
                    .is_some_and(|rs| rs.in_flight.contains_key(&block_id));
                if !still_asked || !self.peers.get(&node).is_some_and(|p| p.replicating()) {
                    return;
                }
                let sector = Sector(offset / SECTOR_SIZE);
                let size = len as u32;
                let packet = match (result, alg) {
                    (Ok(Some(data)), Some(alg)) => {
                        let mut digest = Vec::new();
                        alg.digest_into(&data, &mut digest);
                        Packet::CsumResyncRequest {
                            sector,
                            block_id,
                            size,
                            digest: bytes::Bytes::from(digest),
                        }
                    }
                    // Our copy is unreadable: ask for the data.
                    _ => Packet::ResyncRequest {
                        sector,
                        block_id,
                        size,
                    },
                };
                self.send(node, packet);
            }
            ResyncOp::Flush { node } => match result {
                Ok(_) => self.resync_target_done(node),
                Err(e) => self.peer_log(
                    node,
                    format!(
                        "flush at the end of the resync failed (errno {e}); the disk \
                     stays Inconsistent"
                    ),
                ),
            },
        }
    }

    /// An application write of this node's covers `[offset, offset+len)`: resync requests
    /// out for those blocks may bring older data back (the source may read before the write
    /// reaches it); their replies are not written (see `Resync::overwritten`).
    pub(super) fn resync_overwritten(&mut self, offset: u64, len: u64) {
        self.resync_overwritten_except(offset, len, None);
    }

    /// The same for a write replicated by `writer`: the resyncs from every other peer (three
    /// nodes: a reply from a third node may hold what it had before this write reached it).
    /// The writer's own resync replies are ordered after its writes on its link.
    pub(super) fn resync_overwritten_except(
        &mut self,
        offset: u64,
        len: u64,
        writer: Option<NodeId>,
    ) {
        for (n, c) in self.peers.iter_mut() {
            if Some(*n) == writer {
                continue;
            }
            let Some(rs) = c.rs.as_mut().filter(|rs| !rs.source) else {
                continue;
            };
            let hit: Vec<u64> = rs
                .in_flight
                .iter()
                .filter(|(_, (o, l))| *o < offset + len && offset < o + l)
                .map(|(id, _)| *id)
                .collect();
            rs.overwritten.extend(hit);
        }
    }

    /// Target: a replicated application write that covers whole blocks makes them current.
    pub(super) fn resync_target_covered(&mut self, node: NodeId, offset: u64, len: u64) {
        let syncing = self
            .peers
            .get(&node)
            .is_some_and(|c| c.rs.as_ref().is_some_and(|rs| !rs.source));
        if !syncing {
            return;
        }
        if let Some(d) = self.disk.as_mut() {
            d.clear_covered(node, offset, len);
        }
    }

    /// `pause-sync` / `resume-sync`.
    pub(super) fn set_user_paused(&mut self, paused: bool) -> Result<(), String> {
        let nodes = self.established_peers();
        if nodes.is_empty() {
            return Err("not connected".into());
        }
        for node in &nodes {
            if let Some(c) = self.peers.get_mut(node) {
                c.user_paused = paused;
            }
        }
        self.broadcast_state();
        for node in nodes {
            self.resync_pump(node);
        }
        Ok(())
    }
}
