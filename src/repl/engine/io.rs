//! Requests on the local disk: admission of application requests, the activity log, release
//! to the disk in the order the request table allows, and what a disk answer finishes.

use super::remote_read::ReadFrom;
use super::replicate::INTERNAL;
use super::requests::{IoResult, Request};
use super::{Action, AlStep, Engine, Event, IoError, IoOp, Origin, QueuedAl, rotate_current};
use crate::repl::state::{DiskState, ReplState, Role};
use crate::types::{AL_EXTENT_SIZE, ExtentNr, NodeId, ReqId};

impl Engine {
    /// An application request; `device`: of the kernel block device ([`super::Input::DeviceIo`]).
    pub(super) fn io(&mut self, id: ReqId, op: IoOp, device: bool) {
        self.last_app_io = Some(self.now);
        if self.reqs.get(id).is_some() {
            // The driver's ids are unique; a reused one would corrupt the table.
            return self.log(format!("BUG: request id {} reused; refused", id.0));
        }
        self.reqs.insert(id, Origin::App, op, Event::Freeze, None);
        if device {
            self.reqs.set_read_only_opener(id);
        }
        self.admit(id);
    }

    /// A handshake is between its start and its decision.
    pub(super) fn handshaking(&self) -> bool {
        self.peers
            .values()
            .any(|c| c.hs.as_ref().is_some_and(|h| h.strategy.is_none()))
    }

    /// Admits the writes suspended during a handshake, once none runs any more, in order.
    pub(super) fn resume_suspended(&mut self) {
        if self.handshaking() {
            return;
        }
        for id in self
            .reqs
            .in_state(|s| *s == super::requests::State::Suspended)
        {
            self.admit(id);
        }
    }

    /// Admits the requests frozen by fencing, in order.
    pub(super) fn thaw(&mut self) {
        for id in self.reqs.in_state(|s| *s == super::requests::State::Frozen) {
            self.admit(id);
        }
    }

    /// Admits an application request that is Frozen or Suspended: it waits while I/O is
    /// frozen (fencing) or, for a write, while a handshake decides (DRBD suspends I/O while it
    /// connects, so the generation both sides compare does not move under the comparison);
    /// it is refused on a Secondary or without UpToDate data; a write starts a new data
    /// generation if one is due, makes its activity-log extents hot and is marked for every
    /// peer that will not get it. Then it is queued.
    fn admit(&mut self, id: ReqId) {
        let Some(r) = self.reqs.get(id) else {
            return;
        };
        let written = r.op.written_range();
        if self.st.role() != Role::Primary {
            // Checked first: a Secondary whose I/O is suspended (it lost quorum as Primary and
            // was demoted by force) fails its openers' requests rather than freezing them.
            // DRBD serves a Secondary's read-only openers (ro_open_cond), the kernel device:
            // its reads, and the flushes a reader's close may send, never a write.
            match (r.read_only_opener, &r.op) {
                (true, IoOp::Read { .. }) => {}
                (true, IoOp::Flush) => {
                    // A Secondary wrote nothing of its own for the flush to cover; its disk's
                    // writes are the Primary's, flushed by the Primary's barriers. Never sent
                    // to a peer.
                    if let Some(r) = self.reqs.take_unsubmitted(id) {
                        self.answer(r.id, Ok(None));
                    }
                    return;
                }
                _ => return self.refuse(id, IoError::NotPrimary),
            }
        }
        if self.st.io_frozen() {
            // `susp-io( fencing )` or `( user )`: queued, not failed, until fence-peer answers
            // or resume-io.
            self.reqs.modify(id, Event::Freeze);
            return;
        }
        if written.is_some() && self.handshaking() {
            self.reqs.modify(id, Event::Suspend);
            return;
        }
        if self.quorum_fails_io() {
            // `on-no-quorum io-error` (DRBD's `cached_err_io`).
            return self.refuse(id, IoError::NoQuorum);
        }
        if let Some((offset, len)) = r.op.range()
            && offset.saturating_add(len) > self.size_bytes()
            && (self.disk.is_some() || self.exposed.bytes > 0)
        {
            let write = written.is_some();
            return self.refuse(id, IoError::PastEnd { write });
        }
        match r.op {
            IoOp::Read { offset, len } => match self.read_from(offset, u64::from(len)) {
                None => return self.refuse(id, IoError::NoData),
                Some(ReadFrom::Peer(node)) => self.reqs.set_remote(id, node, len),
                Some(ReadFrom::Local) => {}
            },
            _ if !self.writable() => return self.refuse(id, IoError::NoData),
            _ => {}
        }
        let (mut meta_gen, mut al_seq) = (0, 0);
        if let Some((offset, len)) = written {
            self.new_uuid_if_due();
            // A diskless node has no metadata to wait for.
            meta_gen = if self.diskless() { 0 } else { self.sb_gen };
            al_seq = self.activate_extents(offset, len);
            self.mark_out_of_sync(offset, len);
            self.resync_overwritten(offset, len);
        }
        self.reqs.modify(id, Event::Queue { meta_gen, al_seq });
        if written.is_some() {
            let seen = self.admission_seen();
            self.reqs.set_seen(id, seen);
        }
        self.release();
    }

    /// Admits again a write the peer asked for again (two primaries): it goes behind every
    /// request that arrived meanwhile, the peer's concurrent writes among them.
    pub(super) fn readmit(&mut self, id: ReqId) {
        let Some(r) = self.reqs.get(id) else {
            return;
        };
        let Some((offset, len)) = r.op.written_range() else {
            return;
        };
        if !self.writable() {
            // Written here once, not on the peer, and this disk is gone: the blocks are
            // marked for every peer already (the local failure marked them).
            if let Some(d) = self.disk.as_mut() {
                for node in self.peers.keys() {
                    d.mark(*node, offset, len);
                }
            }
            let r = self.reqs.modify(
                id,
                Event::Readmit {
                    meta_gen: 0,
                    al_seq: 0,
                },
            );
            debug_assert!(r.is_none());
            if let Some(r) = self.reqs.take_unsubmitted(id) {
                self.answer(r.id, Err(IoError::NoData));
            }
            return;
        }
        self.new_uuid_if_due();
        let meta_gen = self.sb_gen;
        let al_seq = self.activate_extents(offset, len);
        self.mark_out_of_sync(offset, len);
        self.resync_overwritten(offset, len);
        self.reqs.modify(id, Event::Readmit { meta_gen, al_seq });
        let seen = self.admission_seen();
        self.reqs.set_seen(id, seen);
        self.release();
    }

    /// A write starts the new data generation a promotion or a lost peer made due.
    pub(super) fn new_uuid_if_due(&mut self) {
        if !self.new_uuid_due {
            return;
        }
        self.new_uuid_due = false;
        self.new_generation(true);
    }

    /// Peers that move into a new data generation with this node: replicating and UpToDate.
    /// (A peer that is behind keeps the old generation as its bitmap UUID instead.)
    pub(super) fn generation_followers(&self) -> std::collections::BTreeSet<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| {
                p.replicating()
                    && p.st.repl() == ReplState::Established
                    && p.st.disk() == DiskState::UpToDate
            })
            .map(|(n, _)| *n)
            .collect()
    }

    /// Starts a new data generation (`primary`: with the Primary role bit) and tells the
    /// peers that follow into it (DRBD 9 sends the new current UUID to the connected peers;
    /// with three nodes the one in sync must know that a third, absent one lacks what comes).
    pub(super) fn new_generation(&mut self, primary: bool) {
        if self.diskless() {
            if primary {
                self.diskless_new_generation();
            }
            return;
        }
        let followers = self.generation_followers();
        if primary {
            self.remember_before_rotation();
        }
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        rotate_current(&mut d.sb, &mut self.uuids, primary, &|n| {
            followers.contains(&n)
        });
        let uuid = d.sb.current_uuid;
        self.log(format!("new current UUID: {uuid}"));
        self.sb_changed();
        // The weak mask first: a Secondary moves into the generation with the nodes this
        // Primary does not reach left behind (see `weak`); the UUIDs that follow find it
        // there already.
        if primary {
            self.reannounce_generation();
        }
        // The followers move along; every other peer that gets this node's writes (a
        // SyncTarget, or one whose resync is about to start) notes it and adopts it when its
        // resync from here ends (it gets the writes of the new generation as they happen).
        let targets: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(n, p)| p.replicating() && !followers.contains(n))
            .map(|(n, _)| *n)
            .collect();
        for node in followers.into_iter().chain(targets) {
            let p = self.my_uuids_packet(node, crate::repl::wire::UuidFlags::NEW_DATAGEN);
            self.send(node, p);
        }
    }

    /// Fails every application request in the table: those held or not yet admitted now,
    /// those in flight when they finish.
    pub(super) fn fail_app_requests(&mut self, why: &str) {
        let held = self.reqs.take_held();
        let waiting = self.reqs.in_state(|s| {
            matches!(
                s,
                super::requests::State::Frozen | super::requests::State::Suspended
            )
        });
        let in_flight: Vec<ReqId> = self
            .reqs
            .iter()
            .filter(|r| matches!(r.origin, Origin::App))
            .map(|r| r.id)
            .filter(|id| !waiting.contains(id))
            .collect();
        let n = held.len() + waiting.len() + in_flight.len();
        if n > 0 {
            self.log(format!("{n} application requests failed ({why})"));
        }
        for r in held {
            self.answer(r.id, Err(IoError::NotPrimary));
        }
        for id in waiting {
            self.refuse(id, IoError::NotPrimary);
        }
        self.doomed.extend(in_flight);
    }

    /// Answers a request that never reached the disk.
    fn refuse(&mut self, id: ReqId, e: IoError) {
        if let Some(r) = self.reqs.take_unsubmitted(id) {
            self.answer(r.id, Err(e));
        }
    }

    /// Queues a disk op done on behalf of a peer or the resync (a peer's write waits for its
    /// activity-log transaction `al_seq`); it goes to the disk when the table allows.
    pub(super) fn queue_internal(&mut self, origin: Origin, op: IoOp, al_seq: u64) -> ReqId {
        let id = self.internal_id();
        let link = self.link_of(&origin);
        self.reqs.insert(
            id,
            origin,
            op,
            Event::Queue {
                meta_gen: 0,
                al_seq,
            },
            link,
        );
        self.release();
        id
    }

    /// Submits an internal op at once (a flush: it has no range to wait for).
    pub(super) fn submit_internal(&mut self, origin: Origin, op: IoOp) -> ReqId {
        let id = self.internal_id();
        let link = self.link_of(&origin);
        self.reqs.insert(
            id,
            origin,
            op,
            Event::Queue {
                meta_gen: 0,
                al_seq: 0,
            },
            link,
        );
        self.submit(id);
        id
    }

    /// The peer a request works for and its current link generation.
    fn link_of(&self, origin: &Origin) -> Option<(NodeId, u64)> {
        let node = origin.peer()?;
        Some((node, self.peers.get(&node)?.link_gen))
    }

    /// The link a request was made for is gone (or it was made for none).
    pub(super) fn link_gone(&self, r: &Request) -> bool {
        r.link
            .is_some_and(|(node, at)| self.peers.get(&node).is_none_or(|p| p.link_gen != at))
    }

    pub(super) fn internal_id(&mut self) -> ReqId {
        self.next_internal += 1;
        ReqId(INTERNAL | self.next_internal)
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

    /// Marks the written blocks out of sync for every peer that will not get the write (a
    /// diskless client has no data to be out of sync: DRBD keeps no bitmap for it). Returns
    /// those peers.
    pub(super) fn mark_out_of_sync(&mut self, offset: u64, len: u64) -> Vec<NodeId> {
        let behind: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(n, p)| !p.info.intentional_diskless && !self.gets_writes(**n))
            .map(|(n, _)| *n)
            .collect();
        if let Some(d) = self.disk.as_mut() {
            for node in &behind {
                d.mark(*node, offset, len);
            }
        }
        behind
    }

    /// A Secondary marks a replicated write for a third node that does not get it: from its
    /// current generation on, that node is behind (its bitmap UUID says so, as a Primary's
    /// says it once it starts a new generation). Without it, the third node's older data
    /// would compare as equal to this node's, and the newer blocks could be resynced away.
    /// The sending Primary's weak nodes (see `weak`) do not get it either.
    pub(super) fn mark_for_absent(&mut self, from: NodeId, offset: u64, len: u64) {
        let weak = self.mark_weak_write(from, offset, len);
        let mut behind = self.mark_out_of_sync(offset, len);
        if weak != 0 {
            behind.extend(
                self.peers
                    .keys()
                    .filter(|n| super::weak::node_bit(**n) & weak != 0),
            );
        }
        if self
            .disk
            .as_mut()
            .is_some_and(|d| d.record_behind(|n| behind.contains(&n)))
        {
            self.sb_changed();
        }
    }

    /// Submits every queued request the table allows now, in arrival order. A peer write
    /// that two primaries' conflict rules answer without writing it may let later ones go:
    /// then the table is asked again.
    pub(super) fn release(&mut self) {
        loop {
            let mut again = false;
            for id in self.reqs.releasable(self.meta_persisted, self.al_persisted) {
                match self.conflict_release(id) {
                    super::conflicts::Release::Go => self.submit(id),
                    super::conflicts::Release::Wait => {}
                    super::conflicts::Release::Resolved => again = true,
                }
            }
            if !again {
                return;
            }
        }
    }

    /// Hands a queued request to the disk and, for an application write or flush, to the
    /// peers.
    fn submit(&mut self, id: ReqId) {
        let now = self.now;
        self.concurrent_logged.remove(&id);
        self.reqs.modify(id, Event::Submit { now });
        let Some(r) = self.reqs.get(id) else {
            return;
        };
        let (op, app, remote) = (r.op.clone(), matches!(r.origin, Origin::App), r.remote);
        if let Some((offset, len)) = op.written_range() {
            self.verify_note_write(offset, len);
            if app {
                // A peer that is no longer linked does not get this write: it differs.
                self.mark_out_of_sync(offset, len);
            }
        }
        if let (Some(node), IoOp::Read { offset, len }) = (remote, &op) {
            return self.request_remote_read(id, node, *offset, *len);
        }
        let sent = if app { self.replicate(id, &op) } else { 0 };
        if self.diskless() {
            return self.diskless_submitted(id, sent);
        }
        self.actions.push_back(Action::SubmitDisk { id, op });
    }

    /// The local disk answered request `id`.
    pub(super) fn disk_done(&mut self, id: ReqId, result: Result<Option<bytes::Bytes>, i32>) {
        let Some(r) = self.reqs.get(id) else {
            return; // not ours (a duplicate completion): ignore rather than corrupt counters
        };
        if r.state != super::requests::State::Submitted {
            return;
        }
        let op = r.op.clone();
        match (&result, op.written_range()) {
            (Ok(_), None) => {
                if let IoOp::Read { len, .. } = op {
                    self.stats.read_kib += u64::from(len) / 1024;
                }
            }
            (Ok(_), Some((_, len))) => {
                if matches!(op, IoOp::Write { .. }) {
                    self.stats.written_kib += len / 1024;
                }
            }
            (Err(errno), written) => {
                let (offset, len, write) = match (&op, written) {
                    (IoOp::Read { offset, len }, _) => (*offset, u64::from(*len), false),
                    (_, Some((o, l))) => (o, l, true),
                    _ => (0, 0, true),
                };
                if len > 0 {
                    self.local_io_error(offset, len, write, *errno);
                } else if id.0 & INTERNAL == 0 {
                    self.log(format!("local I/O error on a flush (errno {errno})"));
                }
            }
        }
        let result = result.map_err(IoError::Disk);
        if let Some(done) = self.reqs.modify(id, Event::LocalDone(result)) {
            self.finished(done);
        }
        self.after_local_done();
    }

    /// What may go once requests have their local answer: postponed writes, the requests
    /// they held back, the activity log, a detach.
    pub(super) fn after_local_done(&mut self) {
        // A write the peer asked for again is postponed now that its local write is done.
        // (Checked first: this runs for every disk completion.)
        if self.reqs.has_postponed() {
            let asked: std::collections::BTreeSet<NodeId> = self
                .reqs
                .postponed()
                .into_iter()
                .map(|(_, n, _)| n)
                .collect();
            for node in asked {
                self.readmit_postponed(node);
            }
        }
        // Requests the finished one held back go only after its own results are out: a
        // resync read's reply must be on the wire before a newer write to the same blocks.
        self.release();
        self.pump_al();
        self.maybe_finish_detach();
    }

    /// A diskless node's request went to the peers (`sent` of them): it has no local part,
    /// so that part is done at once; the answer waits for the peers (see `diskless`).
    fn diskless_submitted(&mut self, id: ReqId, sent: usize) {
        let result = if sent == 0 {
            Err(IoError::NoData)
        } else {
            Ok(None)
        };
        if sent > 0 && self.reqs.get(id).is_some_and(|r| r.owed.is_empty()) {
            // Protocol A: nobody acknowledges; it went to the peers, which is all A asks.
            self.reqs.set_peer_ok(id);
        }
        if let Some(done) = self.reqs.modify(id, Event::LocalDone(result)) {
            self.finished(done);
        }
    }

    /// A request has everything it waited for: answer whoever asked.
    pub(super) fn finished(&mut self, r: Request) {
        let gone = self.link_gone(&r);
        let local = r.local.unwrap_or(Err(IoError::NoData));
        match r.origin {
            Origin::App => {
                let mut result = local;
                if self.doomed.remove(&r.id) {
                    result = Err(IoError::NotPrimary);
                }
                // DRBD completes a write the peer has even if the local disk failed it, unless
                // `pass_on` asks to report local errors (the failed blocks are marked already).
                let masks = self
                    .disk
                    .as_ref()
                    .is_some_and(|d| d.on_io_error != crate::config::OnIoError::PassOn);
                if matches!(result, Err(IoError::Disk(_))) && r.peer_ok && masks {
                    result = Ok(None);
                }
                if result.is_ok() && self.diskless() && !r.peer_ok && r.op.written_range().is_some()
                {
                    // No disk has it: the peers it went to failed it or went away.
                    result = Err(IoError::NoData);
                }
                if result.is_ok() && self.quorum_fails_io() {
                    // Written here, maybe on some peers, but this partition has no quorum:
                    // the other side may promote without it, so it is not acknowledged
                    // (DRBD fails it at completion the same way).
                    result = Err(IoError::NoQuorum);
                }
                if result.is_ok() && !matches!(r.op, IoOp::Read { .. } | IoOp::Flush) {
                    self.generation_confirmed();
                }
                self.answer(r.id, result);
                self.send_peer_acks();
                if !self.reqs.iter().any(|q| !q.owed.is_empty()) {
                    self.close_idle_epochs();
                }
            }
            Origin::AlFlush { seq } => self.al_flush_done(seq, &local),
            // Done for a link that went since: whoever asked is gone (see `Request::link`).
            _ if gone => {}
            origin => {
                let raw = local.map_err(|e| match e {
                    IoError::Disk(errno) => errno,
                    _ => libc::EIO,
                });
                self.peer_disk_done(origin, raw);
            }
        }
    }

    /// Emits the application's answer for request `id`.
    pub(super) fn answer(&mut self, id: ReqId, result: IoResult) {
        self.actions.push_back(Action::Complete { id, result });
    }

    /// A peer acknowledged a part of request `id` (`ok` false: NegAck) or is gone; what it
    /// finishes is answered.
    pub(super) fn peer_event(&mut self, id: ReqId, ev: Event) {
        if let Some(done) = self.reqs.modify(id, ev) {
            self.finished(done);
        }
        self.maybe_finish_detach();
    }
}
