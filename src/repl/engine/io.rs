//! Application and peer I/O on the local disk: admission, the activity log, the conflict gate,
//! completion.

use super::replicate;
use super::{
    Action, AlStep, Engine, HeldIo, InflightKind, IoError, IoOp, QueuedAl, rotate_current,
};
use crate::repl::state::{DiskState, Role};
use crate::types::{AL_EXTENT_SIZE, ExtentNr, ReqId};

impl Engine {
    pub(super) fn io(&mut self, id: ReqId, op: IoOp) {
        self.stats.upper_pending += 1;
        self.last_app_io = Some(self.now);
        if self.st.susp_fen() {
            // `susp-io( fencing )`: queued, not failed, until fence-peer answers or resume-io.
            self.fence.queued.push_back((id, op));
            return;
        }
        self.io_admitted(id, op);
    }

    /// A handshake is between its start and its decision.
    pub(super) fn handshaking(&self) -> bool {
        self.peers
            .values()
            .any(|c| c.hs.as_ref().is_some_and(|h| h.strategy.is_none()))
    }

    /// Releases the writes suspended during a handshake, once none runs any more.
    pub(super) fn resume_suspended(&mut self) {
        if self.handshaking() {
            return;
        }
        while let Some((id, op)) = self.suspended.pop_front() {
            self.io_admitted(id, op);
        }
    }

    pub(super) fn io_admitted(&mut self, id: ReqId, op: IoOp) {
        if op.written_range().is_some() && self.handshaking() {
            self.suspended.push_back((id, op));
            return;
        }
        if self.st.role() != Role::Primary {
            return self.complete(id, Err(IoError::NotPrimary));
        }
        if self.disk.is_none() || self.st.disk() < DiskState::UpToDate || self.meta_failed {
            return self.complete(id, Err(IoError::NoData));
        }
        let mut held = HeldIo {
            id,
            op,
            meta_gen: 0,
            al_seq: 0,
        };
        if let Some((offset, len)) = held.op.written_range() {
            if self.new_uuid_due {
                self.new_uuid_due = false;
                if let Some(d) = self.disk.as_mut() {
                    rotate_current(&mut d.sb, &mut self.uuids, true);
                    let uuid = d.sb.current_uuid;
                    self.log(format!("new current UUID: {uuid}"));
                }
                self.sb_changed();
            }
            held.meta_gen = self.sb_gen;
            held.al_seq = self.activate_extents(offset, len);
            self.mark_out_of_sync(offset, len);
        }
        self.held.push_back(held);
        self.release_held();
    }

    /// Makes the extents of `[offset, offset+len)` hot; returns the AL sequence that must be on
    /// disk before the write may be issued (0: none needed).
    pub(super) fn activate_extents(&mut self, offset: u64, len: u64) -> u64 {
        let Some(d) = self.disk.as_mut() else {
            return 0;
        };
        if len == 0 {
            return 0;
        }
        let first = offset / AL_EXTENT_SIZE;
        let last = (offset + len - 1) / AL_EXTENT_SIZE;
        let mut need = 0;
        for e in first..=last {
            let e = ExtentNr(e as u32);
            let before = if d.al.is_hot(e) {
                Vec::new()
            } else {
                d.al.hot_extents()
            };
            if let Some(tr) = d.al.access(e) {
                let evicts = before.into_iter().find(|x| !d.al.is_hot(*x));
                let seq = self.al_next_seq;
                self.al_next_seq += 1;
                self.al_queue.push_back(QueuedAl { seq, tr, evicts });
                need = seq;
            }
        }
        // A queued transaction's write also covers any earlier one still queued.
        if need == 0 {
            need = self.al_queue.back().map_or(0, |q| q.seq);
            if let Some(
                AlStep::Transaction { seq }
                | AlStep::Bitmap { seq }
                | AlStep::DataFlush { seq, .. },
            ) = self.al_inflight
            {
                need = need.max(seq);
            }
        }
        self.pump_al();
        need
    }

    /// Marks the written blocks out of sync for every peer that is not connected (all of them
    /// in this build).
    pub(super) fn mark_out_of_sync(&mut self, offset: u64, len: u64) {
        // A peer that gets the write itself has it; every other one falls behind.
        let behind: Vec<crate::types::NodeId> = self
            .peers
            .keys()
            .copied()
            .filter(|n| !self.gets_writes(*n))
            .collect();
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        for node in behind {
            d.mark(node, offset, len);
        }
    }

    /// Issues held requests whose metadata is on disk, in order.
    pub(super) fn release_held(&mut self) {
        while let Some(h) = self.held.front() {
            if h.meta_gen > self.meta_persisted || h.al_seq > self.al_persisted {
                break;
            }
            let range = self.gate_range(h);
            if let Some(r) = range
                && self.conflicts(r)
            {
                break; // released by the disk completion of the op it overlaps
            }
            let Some(h) = self.held.pop_front() else {
                break;
            };
            if let Some(r) = range {
                self.busy.insert(h.id, r);
            }
            if let Some((offset, len)) = h.op.written_range() {
                self.verify_note_write(offset, len);
            }
            if let Some((offset, len)) = h.op.written_range()
                && h.id.0 & replicate::INTERNAL == 0
            {
                // A peer that is not (or no longer) linked does not get this write: it differs.
                self.mark_out_of_sync(offset, len);
            }
            let kind = match (&h.op, h.op.written_range()) {
                (IoOp::Read { offset, len }, _) => InflightKind::Read {
                    offset: *offset,
                    len: *len,
                },
                (op, Some((offset, len))) => InflightKind::Write {
                    offset,
                    len,
                    data: matches!(op, IoOp::Write { .. }),
                },
                _ => InflightKind::Other,
            };
            self.inflight.insert(h.id, kind);
            self.stats.lower_pending += 1;
            self.replicate(&h);
            self.actions
                .push_back(Action::SubmitDisk { id: h.id, op: h.op });
        }
        // Nothing newer may overtake a held write whose metadata is pending: they are
        // released in order, which is the order the client sent them.
    }

    /// The range an op must not share with conflicting ops in flight: every write (against
    /// any write or resync read), and resync reads (against writes). Overlapping writes thus
    /// reach the disk, and the peer, in the order they were released on every node, and a
    /// resync read never sees half of a write that the target gets separately.
    pub(super) fn gate_range(&self, h: &HeldIo) -> Option<(u64, u64, bool)> {
        if let Some((off, len)) = h.op.written_range() {
            return (len > 0).then_some((off, len, true));
        }
        match (&h.op, self.peer_ops.get(&h.id)) {
            (
                IoOp::Read { offset, len },
                Some(replicate::PeerOp::Resync(_) | replicate::PeerOp::Verify(_)),
            ) => Some((*offset, u64::from(*len), false)),
            _ => None,
        }
    }

    pub(super) fn conflicts(&self, (off, len, write): (u64, u64, bool)) -> bool {
        self.busy
            .values()
            .any(|&(o, l, w)| (write || w) && off < o + l && o < off + len)
    }

    pub(super) fn disk_done(&mut self, id: ReqId, result: Result<Option<bytes::Bytes>, i32>) {
        let Some(kind) = self.inflight.remove(&id) else {
            return; // not ours (a duplicate completion): ignore rather than corrupt counters
        };
        // Ops the finished one held back are released only after its own results are out: a
        // resync read's reply must be on the wire before a newer write to the same blocks.
        let freed = self.busy.remove(&id).is_some();
        self.stats.lower_pending = self.stats.lower_pending.saturating_sub(1);
        match (&result, kind) {
            (Ok(_), InflightKind::Read { len, .. }) => self.stats.read_kib += u64::from(len) / 1024,
            (Ok(_), InflightKind::Write { len, data, .. }) if data => {
                self.stats.written_kib += len / 1024
            }
            (Err(errno), InflightKind::Read { offset, len }) => {
                self.local_io_error(offset, u64::from(len), false, *errno)
            }
            (Err(errno), InflightKind::Write { offset, len, .. }) => {
                self.local_io_error(offset, len, true, *errno)
            }
            _ => {}
        }
        if id.0 & replicate::INTERNAL != 0 {
            match self.al_inflight {
                Some(AlStep::DataFlush { seq, id: flush }) if flush == id => {
                    self.al_inflight = None;
                    if let Err(e) = &result {
                        self.meta_failure(format!(
                            "flushing the data device before an activity-log update failed \
                             (errno {e})"
                        ));
                    } else {
                        self.al_data_flushed = seq;
                        self.pump_al();
                    }
                }
                _ => self.peer_disk_done(id, result),
            }
            if freed {
                self.release_held();
                self.pump_al();
            }
            self.maybe_finish_detach();
            return;
        }
        let result = result.map_err(IoError::Disk);
        if let Err(e) = &result {
            self.log(format!("local I/O error: {e}"));
        }
        if self.local_done(id, &result) {
            self.complete(id, result);
        }
        if freed {
            self.release_held();
            self.pump_al();
        }
        self.maybe_finish_detach();
    }

    pub(super) fn complete(&mut self, id: ReqId, result: Result<Option<bytes::Bytes>, IoError>) {
        if self.st.susp_fen() {
            // A write the lost peer may not have must not be acknowledged before that peer is
            // fenced: the application could otherwise see it vanish after a fail-over.
            self.fence.completions.push((id, result));
            return;
        }
        self.stats.upper_pending = self.stats.upper_pending.saturating_sub(1);
        self.actions.push_back(Action::Complete { id, result });
    }

    // ---- metadata ----------------------------------------------------------------------------
}
