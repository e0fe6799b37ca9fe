//! Metadata persistence: the superblock, the activity log and the bitmap pages, one write of
//! each kind in flight, and everything that waits for them.

use super::{Action, AdminError, AlStep, Change, Engine, IoError, IoOp, MetaError, Origin};
use crate::meta::al::Transaction;
use crate::meta::layout::BM_WORDS_PER_PAGE;
use crate::repl::state::DiskState;
use crate::types::{AL_EXTENT_SIZE, ExtentNr, NodeId};

/// An admin command waiting for a superblock generation to be persisted.
#[derive(Clone, Copy, Debug)]
pub(super) struct MetaWaiter {
    pub(super) generation: u64,
    pub(super) token: u64,
}

/// An AL transaction queued for writing (after a bitmap flush).
#[derive(Clone, Debug)]
pub(super) struct QueuedAl {
    pub(super) seq: u64,
    pub(super) tr: Transaction,
    /// The extent this transaction evicts: it is written only once no write into that extent
    /// is in flight, or a crash could lose such a write locally while the peer has it, with
    /// neither the AL nor (for a connected peer) the bitmap recording the block.
    pub(super) evicts: Option<ExtentNr>,
}

impl Engine {
    /// The in-memory superblock changed: write it (or queue another write after the current).
    pub(super) fn sb_changed(&mut self) {
        if self.disk.is_none() {
            return; // nothing to persist
        }
        self.sb_gen += 1;
        self.pump_meta();
        self.tell_diskless_peers_current();
    }

    pub(super) fn pump_meta(&mut self) {
        if self.meta_failed || self.meta_inflight.is_some() || self.meta_persisted >= self.sb_gen {
            return;
        }
        if let Some(d) = self.disk.as_ref() {
            self.meta_inflight = Some(self.sb_gen);
            self.actions.push_back(Action::WriteMeta {
                generation: self.sb_gen,
                sb: Box::new(d.sb.clone()),
            });
        }
    }

    pub(super) fn meta_written(&mut self, generation: u64, result: Result<(), MetaError>) {
        if self.meta_inflight != Some(generation) {
            return;
        }
        self.meta_inflight = None;
        match result {
            Ok(()) => {
                self.meta_persisted = generation;
                let (ready, waiting): (Vec<_>, Vec<_>) = self
                    .meta_waiters
                    .iter()
                    .partition(|w| w.generation <= generation);
                self.meta_waiters = waiting;
                for w in ready {
                    self.actions.push_back(Action::AdminDone {
                        token: w.token,
                        result: Ok(()),
                    });
                }
                let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.after_meta)
                    .into_iter()
                    .partition(|(g, _)| *g <= generation);
                self.after_meta = later;
                for (_, node) in ready {
                    self.resync_target_persisted(node);
                }
                self.pump_meta();
                self.release();
                let targets: Vec<NodeId> = self.peers.keys().copied().collect();
                for node in targets {
                    self.resync_pump(node);
                }
                self.maybe_finish_detach();
            }
            Err(e) => self.meta_failure(e),
        }
    }

    /// A metadata write failed: nothing that depends on it may be acknowledged. What waits is
    /// failed, no metadata is written any more, and the disk is detached as DRBD does (its
    /// state on disk stays as it last was: the activity log still covers every write that was
    /// let through, and a peer marks what this node misses from here).
    pub(super) fn meta_failure(&mut self, e: MetaError) {
        let first = !self.meta_failed;
        self.meta_failed = true;
        self.log(format!("meta data I/O error: {e}. Detaching..."));
        for w in std::mem::take(&mut self.meta_waiters) {
            self.actions.push_back(Action::AdminDone {
                token: w.token,
                result: Err(AdminError::Meta(e.clone())),
            });
        }
        for token in self.take_detach_waiters() {
            self.actions.push_back(Action::AdminDone {
                token,
                result: Err(AdminError::Meta(e.clone())),
            });
        }
        // What waits for metadata that will not come can never go: the application gets the
        // error, a peer its NegAck (it marks the block and resyncs it later).
        for id in self
            .reqs
            .waiting_for_metadata(self.meta_persisted, self.al_persisted)
        {
            let Some(r) = self.reqs.take_unsubmitted(id) else {
                continue;
            };
            let gone = self.link_gone(&r);
            match r.origin {
                Origin::App => self.answer(id, Err(IoError::Meta)),
                Origin::PeerWrite { .. } if gone => {}
                // The peer gets its NegAck and the epoch's count goes on.
                origin @ Origin::PeerWrite { .. } => self.peer_disk_done(origin, Err(libc::EIO)),
                _ => {}
            }
        }
        self.al_queue.clear();
        if first && let Some(d) = self.disk.as_mut() {
            d.failed = true;
            self.force_change(Change::hard("local-io-error").disk(DiskState::Failed));
        }
        // The detach of the failed disk is still to finish, after a second failure too (which
        // took every waiter above): the simulator found a disk left Failed forever.
        if self.disk.as_ref().is_some_and(|d| d.failed) {
            self.flush_waiters
                .push((super::FAILURE_DETACH, self.al_next_seq));
        }
        self.maybe_finish_detach();
    }

    /// Starts the next AL step: a bitmap flush before a transaction, then the transaction.
    pub(super) fn pump_al(&mut self) {
        if self.al_inflight.is_some() || self.meta_failed {
            return;
        }
        let Some(q) = self.al_queue.front() else {
            return;
        };
        let seq = q.seq;
        if let Some(x) = q.evicts {
            // Wait for the writes into the evicted extent: those in flight, those a peer has
            // not confirmed (DRBD keeps an extent referenced until its requests are done), and
            // those held for an earlier transaction (they are ahead of everything that needs
            // this one).
            let (lo, hi) = (
                u64::from(x.0) * AL_EXTENT_SIZE,
                (u64::from(x.0) + 1) * AL_EXTENT_SIZE,
            );
            let unconfirmed = self.unconfirmed_overlaps(lo, hi);
            if unconfirmed {
                self.close_epochs_over(lo, hi);
            }
            // Writes at the disk, and writes admitted for an earlier transaction (later ones
            // wait for this one and must not be waited for).
            if unconfirmed || self.reqs.writes_before_eviction(lo, hi, seq) {
                return; // pumped again by the disk completion
            }
            // The writes into the evicted extent completed, but nothing has made them stable
            // yet: once the activity log forgets the extent, a crash would not resync them. So
            // the data device is flushed before the transaction is written, with internal
            // metadata too (the transaction's own flush comes after its write, and a volatile
            // cache may persist the AL block before the data). Skipped with
            // `disk-flushes no` (a battery-backed cache loses nothing).
            let flushes = self.disk.as_ref().is_some_and(|d| d.disk_flushes);
            if flushes && self.al_data_flushed < seq {
                let id = self.submit_internal(Origin::AlFlush { seq }, IoOp::Flush);
                self.al_inflight = Some(AlStep::DataFlush { seq, id });
                return;
            }
        }
        if self.start_bitmap_flush(seq) {
            return;
        }
        self.write_al_transaction();
    }

    pub(super) fn write_al_transaction(&mut self) {
        let (Some(q), Some(d)) = (self.al_queue.pop_front(), self.disk.as_ref()) else {
            return;
        };
        let block = q.tr.block_index(d.al_blocks);
        self.al_inflight = Some(AlStep::Transaction { seq: q.seq });
        self.stats.al_writes += 1;
        self.actions.push_back(Action::WriteAl {
            seq: q.seq,
            block,
            tr: Box::new(q.tr),
        });
    }

    /// The data device flush before AL transaction `seq` evicts an extent finished.
    pub(super) fn al_flush_done(&mut self, seq: u64, result: &super::requests::IoResult) {
        if !matches!(self.al_inflight, Some(AlStep::DataFlush { seq: s, .. }) if s == seq) {
            return;
        }
        self.al_inflight = None;
        if let Err(e) = result {
            let errno = match e {
                IoError::Disk(errno) => *errno,
                _ => libc::EIO,
            };
            self.meta_failure(MetaError::DataFlush { errno });
        } else {
            self.al_data_flushed = seq;
            self.pump_al();
        }
    }

    /// Emits a bitmap write of the dirty pages, if any; true if one was started.
    pub(super) fn start_bitmap_flush(&mut self, seq: u64) -> bool {
        if self.meta_failed {
            return false;
        }
        let Some(d) = self.disk.as_mut() else {
            return false;
        };
        let mut pages = Vec::new();
        for (idx, bm) in d.bitmaps.iter_mut().enumerate() {
            for page in bm.take_dirty_pages(BM_WORDS_PER_PAGE) {
                let start = page * BM_WORDS_PER_PAGE;
                let end = (start + BM_WORDS_PER_PAGE).min(bm.words().len());
                let words = bm.words().get(start..end).unwrap_or(&[]).to_vec();
                pages.push((idx as u32, page as u32, words));
            }
        }
        if pages.is_empty() {
            return false;
        }
        self.stats.bm_writes += pages.len() as u64;
        self.al_inflight = Some(AlStep::Bitmap { seq });
        self.actions.push_back(Action::WriteBitmap { pages });
        true
    }

    /// Writes dirty bitmap pages now, if nothing else of the AL path is in flight (after an
    /// attach that applied the AL, a new UUID that cleared the bitmap, or before a detach).
    pub(super) fn flush_bitmap_if_dirty(&mut self) {
        if self.al_inflight.is_none() && self.al_queue.is_empty() {
            self.start_bitmap_flush(0);
        }
    }

    pub(super) fn bitmap_written(&mut self, result: Result<(), MetaError>) {
        let Some(AlStep::Bitmap { seq }) = self.al_inflight else {
            return;
        };
        self.al_inflight = None;
        if let Err(e) = result {
            return self.meta_failure(e);
        }
        if seq != 0 && self.al_queue.front().map(|q| q.seq) == Some(seq) {
            self.write_al_transaction();
        } else {
            self.pump_al();
            if !self.flush_waiters.is_empty() {
                self.flush_bitmap_if_dirty();
            }
        }
        self.maybe_finish_detach();
    }

    pub(super) fn al_written(&mut self, seq: u64, result: Result<(), MetaError>) {
        if self.al_inflight != Some(AlStep::Transaction { seq }) {
            return;
        }
        self.al_inflight = None;
        if let Err(e) = result {
            return self.meta_failure(e);
        }
        self.al_persisted = seq;
        self.release();
        self.pump_al();
        if self.al_inflight.is_none() && !self.flush_waiters.is_empty() {
            self.flush_bitmap_if_dirty();
        }
        self.maybe_finish_detach();
    }
}
