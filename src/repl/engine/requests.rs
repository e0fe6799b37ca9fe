//! The request table: every request the engine holds, in one place, each with an explicit
//! [`State`], changed only by [`Requests::modify`] (DRBD's `__req_mod()` with its
//! `drbd_req_event`s is the model).
//!
//! A request is an application request, a write or flush a peer sent, a resync or verify read
//! or write, or an internal flush ([`Origin`]). Its life:
//!
//! ```text
//!   Frozen ─┐                       (fencing froze I/O)
//!   Suspended ─┤                    (a handshake decides; writes only)
//!              ├─ Queue ─> Queued ─ Submit ─> Submitted ─ LocalDone ─> AwaitingPeers ─┐
//!   (new) ─────┘   (metadata and earlier      (at the disk, sent to       (protocol B/C  │
//!                   overlapping requests)      the peers)                  acks, barrier) │
//!                                                        └───── all answered ──────────┴─> done
//!                                                                          (Held while fencing
//!                                                                           holds answers)
//!   Two primaries: a write the peer answered with RetryWrite goes, once its local write is
//!   done, to Postponed, and from there back to Queued (Readmit) as a new arrival.
//!   A read the local disk cannot serve (`Request::remote`) is Submitted to the peer instead
//!   of the disk: its DataReply (all parts of it) is its LocalDone.
//! ```
//!
//! Overlaps: a request that writes, and a resync or verify read, takes its byte range in an
//! interval index from the moment it is queued until its local disk answered. A request is
//! submitted only when no earlier request (in arrival order) with a conflicting range is still
//! there: overlapping writes are all accepted, and reach the disk, and the peer, in the order
//! they arrived on every node; a resync read never sees half of a write the target gets
//! separately. Requests that do not overlap do not wait for each other.

use super::resync::ResyncOp;
use super::verify::VerifyOp;
use super::{IoError, IoOp};
use crate::repl::interval::IntervalIndex;
use crate::repl::wire::BlockAck;
use crate::types::{NodeId, ReqId, Time};
use std::collections::BTreeMap;

/// A request's answer to whoever asked (`Some(data)` for a read).
pub(super) type IoResult = Result<Option<bytes::Bytes>, IoError>;

/// Who a request is for.
#[derive(Debug, Clone)]
pub(super) enum Origin {
    /// The application (an NBD client): answered with [`super::Action::Complete`].
    App,
    /// A write the peer `node` replicated to this node (acknowledged per its protocol).
    PeerWrite {
        node: NodeId,
        ack: BlockAck,
        epoch: u32,
        write_ack: bool,
        /// The sender's `seen` (two primaries: which of our writes it had when it admitted
        /// this one).
        seen: u32,
    },
    /// An application read of the peer `node` that its own disk cannot serve (DataRequest,
    /// answered with DataReply).
    PeerRead {
        node: NodeId,
        ack: BlockAck,
    },
    /// The flush that closes the peer's epoch (answered with BarrierAck).
    PeerFlush {
        node: NodeId,
        epoch: u32,
        set_size: u32,
    },
    Resync(ResyncOp),
    Verify(VerifyOp),
    /// The data device flushed before an activity-log transaction evicts an extent (external
    /// metadata).
    AlFlush {
        seq: u64,
    },
}

impl Origin {
    /// The peer this request works for (its answer goes to that peer, or its result feeds
    /// the resync or verify with it).
    pub fn peer(&self) -> Option<NodeId> {
        match self {
            Origin::PeerWrite { node, .. }
            | Origin::PeerFlush { node, .. }
            | Origin::PeerRead { node, .. } => Some(*node),
            Origin::Resync(
                ResyncOp::Read { node, .. }
                | ResyncOp::CsumRead { node, .. }
                | ResyncOp::Write { node, .. }
                | ResyncOp::Flush { node },
            ) => Some(*node),
            Origin::Verify(
                VerifyOp::TargetRead { node, .. } | VerifyOp::SourceRead { node, .. },
            ) => Some(*node),
            Origin::App | Origin::AlFlush { .. } => None,
        }
    }

    /// An answer to `node` is due when it finishes (a write, flush, resync or verify read it
    /// asked for): DRBD's `unacked`.
    pub fn serves(&self, node: NodeId) -> bool {
        match self {
            Origin::PeerWrite { node: n, .. }
            | Origin::PeerFlush { node: n, .. }
            | Origin::PeerRead { node: n, .. } => *n == node,
            Origin::Resync(ResyncOp::Read { node: n, .. }) => *n == node,
            Origin::Verify(VerifyOp::TargetRead { node: n, .. }) => *n == node,
            _ => false,
        }
    }

    /// Reads of a resync or verify, and reads for a peer, take a range too: they must not
    /// see half of a write (a peer's read must see the writes it sent before it).
    fn gated_read(&self) -> bool {
        matches!(
            self,
            Origin::Resync(_) | Origin::Verify(_) | Origin::PeerRead { .. }
        )
    }
}

/// Where a request is in its life (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Frozen,
    Suspended,
    /// Waits for the superblock generation `meta_gen` and the activity-log transaction
    /// `al_seq` to be on disk, and for earlier overlapping requests.
    Queued {
        meta_gen: u64,
        al_seq: u64,
    },
    Submitted,
    AwaitingPeers,
    Held,
    /// Two primaries: the peer asked for the write again (RetryWrite); it waits for the
    /// peer's Data it named to arrive, then is admitted again.
    Postponed,
}

/// What a peer still owes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owed {
    /// Acknowledgements of Data packets (protocol B: received; C: written). A request larger
    /// than a frame travels as several.
    Acks(u32),
    /// The BarrierAck of this epoch (a FLUSH under protocol C).
    Barrier(u32),
}

/// One request.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub id: ReqId,
    /// Admission order (arrival order until admitted): overlapping requests go to the disk
    /// in this order.
    pub seq: u64,
    pub origin: Origin,
    pub op: IoOp,
    pub state: State,
    /// When it was handed to the peers (ko-count measures from here).
    pub sent: Option<Time>,
    /// Per peer, what it still owes.
    pub owed: Vec<(NodeId, Owed)>,
    /// The local disk's answer, once there.
    pub local: Option<IoResult>,
    /// A peer has the data (acknowledged, not NegAck'ed).
    pub peer_ok: bool,
    /// For a request done for a peer: that peer and its link generation at the time. Once
    /// the link went, the answer has nobody to go to, and its effects on the resync (bits
    /// cleared, progress) would land in a later connection's resync, which does not own it.
    pub link: Option<(NodeId, u64)>,
    /// Two primaries, an application write: per peer, the `seq` of the last Data received
    /// from it when the write was admitted (sent along as `seen`).
    pub seen: Vec<(NodeId, u32)>,
    /// Per peer: the `seq` of the first and the last Data packet of the current attempt.
    pub attempt: Vec<(NodeId, u32, u32)>,
    /// The peer that asked for this write again, and the seq of its Data to wait for.
    pub retry: Option<(NodeId, u32)>,
    /// An application read this node's disk cannot serve: the peer that does (its
    /// DataReply is the request's "local" answer; it never goes to the local disk).
    pub remote: Option<NodeId>,
    /// A remote read larger than one packet: the parts that arrived.
    pub parts: Option<Box<Parts>>,
    /// From the kernel block device, which DRBD would count as a read-only opener: its
    /// reads are served on a Secondary too.
    pub read_only_opener: bool,
}

/// A read served by the peer in several DataRequests (one per [`PART`] bytes).
#[derive(Debug, Clone)]
pub(super) struct Parts {
    buf: Vec<u8>,
    got: Vec<bool>,
}

/// The bytes one DataRequest asks for at most (a frame's data).
pub(super) const PART: u32 = crate::repl::wire::MAX_DATA_LEN as u32;

impl Request {
    /// The range it takes in the overlap index, and whether it writes.
    fn range(&self) -> Option<(u64, u64, bool)> {
        if let Some((off, len)) = self.op.written_range() {
            return (len > 0).then_some((off, len, true));
        }
        match &self.op {
            IoOp::Read { offset, len } if self.origin.gated_read() => {
                Some((*offset, u64::from(*len), false))
            }
            _ => None,
        }
    }

    /// Waits for peers.
    pub fn awaits(&self, node: NodeId) -> bool {
        self.owed.iter().any(|(n, _)| *n == node)
    }

    /// The seq range of the Data packets of the current attempt sent to `node`.
    pub fn attempt_to(&self, node: NodeId) -> Option<(u32, u32)> {
        self.attempt
            .iter()
            .find(|(n, _, _)| *n == node)
            .map(|&(_, first, last)| (first, last))
    }

    /// Whether `node` had not received all of this write when it admitted a write of its own
    /// after seeing our Data up to `seen`: the two writes are concurrent.
    pub fn unseen_by(&self, node: NodeId, seen: u32) -> bool {
        self.attempt_to(node)
            .is_some_and(|(_, last)| seq_after(last, seen))
    }
}

/// `a` comes after `b` in a wrapping u32 sequence (DRBD's `seq_greater`).
pub(super) fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// What changes a request (DRBD's `drbd_req_event`).
#[derive(Debug, Clone)]
pub(super) enum Event {
    /// Fencing froze I/O: the request waits unadmitted.
    Freeze,
    /// A handshake decides: the write waits unadmitted.
    Suspend,
    /// Admitted: it waits for this metadata, and for earlier overlapping requests.
    Queue { meta_gen: u64, al_seq: u64 },
    /// Handed to the local disk (and sent to the peers, at `now`).
    Submit { now: Time },
    /// `node` owes it an answer.
    Expect { node: NodeId, owed: Owed },
    /// The local disk answered.
    LocalDone(IoResult),
    /// `node` acknowledged a part (`ok` false: NegAck).
    PeerAcked { node: NodeId, ok: bool },
    /// `node` acknowledged every barrier up to `epoch`.
    BarrierAcked { node: NodeId, epoch: u32 },
    /// `node` went away: it owes nothing any more.
    PeerGone { node: NodeId },
    /// Two primaries: `node` did not write it (a concurrent write of its own overlaps) and
    /// asks for it again once its Data `after` has arrived here.
    RetryWrite { node: NodeId, after: u32 },
    /// A postponed write is admitted again: it waits for this metadata, and goes behind every
    /// request that arrived meanwhile.
    Readmit { meta_gen: u64, al_seq: u64 },
}

/// The table.
#[derive(Debug, Default)]
pub(super) struct Requests {
    reqs: BTreeMap<ReqId, Request>,
    /// Not yet submitted (Frozen, Suspended, Queued), in arrival order.
    waiting: BTreeMap<u64, ReqId>,
    /// The ranges of queued and submitted requests, keyed by arrival: (id, writes).
    ranges: IntervalIndex<u64, (ReqId, bool)>,
    next_seq: u64,
    /// Fencing holds application answers.
    hold: bool,
    submitted: u64,
    /// Per peer: the bytes of buffer the requests done for it hold (`max-buffers`).
    peer_bytes: BTreeMap<NodeId, u64>,
    /// Application writes from their submission until they leave the table or are
    /// postponed, keyed by arrival: a peer's write is checked against them for concurrency
    /// (two primaries).
    replicated: IntervalIndex<u64, ReqId>,
    /// Postponed writes: the peer that asked for them again and the seq of its Data they
    /// wait for.
    postponed: BTreeMap<ReqId, (NodeId, u32)>,
}

/// Bytes of buffer a request holds until it is gone: a write's data, a read's result.
fn held_bytes(op: &IoOp) -> u64 {
    match op {
        IoOp::Read { len, .. } => u64::from(*len),
        IoOp::Write { data, .. } => data.len() as u64,
        _ => 0,
    }
}

impl Requests {
    /// The bytes of buffer held by requests done for `node` (see [`Requests::insert`]).
    pub fn peer_bytes(&self, node: NodeId) -> u64 {
        self.peer_bytes.get(&node).copied().unwrap_or(0)
    }

    /// Takes request `id` out of the table (its other indexes are the caller's).
    fn remove(&mut self, id: ReqId) -> Option<Request> {
        let r = self.reqs.remove(&id)?;
        if let Some((off, _, true)) = r.range() {
            self.replicated.remove(off, r.seq);
        }
        self.postponed.remove(&id);
        if let Some(node) = r.origin.peer()
            && let Some(n) = self.peer_bytes.get_mut(&node)
        {
            *n = n.saturating_sub(held_bytes(&r.op));
        }
        Some(r)
    }

    /// Adds a request in `state` (Frozen, Suspended or Queued).
    pub fn insert(
        &mut self,
        id: ReqId,
        origin: Origin,
        op: IoOp,
        ev: Event,
        link: Option<(NodeId, u64)>,
    ) {
        debug_assert!(!self.reqs.contains_key(&id), "request ids are unique");
        let seq = self.next_seq;
        self.next_seq += 1;
        let r = Request {
            id,
            seq,
            origin,
            op,
            state: State::Frozen,
            sent: None,
            owed: Vec::new(),
            local: None,
            peer_ok: false,
            link,
            seen: Vec::new(),
            attempt: Vec::new(),
            retry: None,
            remote: None,
            parts: None,
            read_only_opener: false,
        };
        if let Some(node) = r.origin.peer() {
            *self.peer_bytes.entry(node).or_default() += held_bytes(&r.op);
        }
        self.reqs.insert(id, r);
        self.waiting.insert(seq, id);
        self.modify(id, ev);
    }

    pub fn get(&self, id: ReqId) -> Option<&Request> {
        self.reqs.get(&id)
    }

    /// Records what the peers had sent when request `id` was admitted (two primaries).
    pub fn set_seen(&mut self, id: ReqId, seen: Vec<(NodeId, u32)>) {
        if let Some(r) = self.reqs.get_mut(&id) {
            r.seen = seen;
        }
    }

    /// Marks request `id` as the kernel block device's ([`Request::read_only_opener`]).
    pub fn set_read_only_opener(&mut self, id: ReqId) {
        if let Some(r) = self.reqs.get_mut(&id) {
            r.read_only_opener = true;
        }
    }

    /// Has application read `id` (of `len` bytes) served by `node` instead of the local
    /// disk.
    pub fn set_remote(&mut self, id: ReqId, node: NodeId, len: u32) {
        if let Some(r) = self.reqs.get_mut(&id) {
            r.remote = Some(node);
            if len > PART {
                r.parts = Some(Box::new(Parts {
                    buf: vec![0; len as usize],
                    got: vec![false; len.div_ceil(PART) as usize],
                }));
            }
        }
    }

    /// Part `at` (bytes from the start) of remote read `id` arrived: the whole read once
    /// every part has. None while parts are missing, or for a part that does not fit (not at
    /// a part boundary, the wrong length, or a duplicate: `Err`).
    pub fn remote_part(
        &mut self,
        id: ReqId,
        at: u64,
        data: bytes::Bytes,
    ) -> Result<Option<bytes::Bytes>, ()> {
        let r = self.reqs.get_mut(&id).ok_or(())?;
        let IoOp::Read { len, .. } = r.op else {
            return Err(());
        };
        let Some(p) = r.parts.as_mut() else {
            return if at == 0 && data.len() == len as usize {
                Ok(Some(data))
            } else {
                Err(())
            };
        };
        let part = at / u64::from(PART);
        let want = u64::from(len).saturating_sub(at).min(u64::from(PART));
        let fits = at.is_multiple_of(u64::from(PART))
            && data.len() as u64 == want
            && p.got.get(part as usize) == Some(&false);
        if !fits {
            return Err(());
        }
        p.got[part as usize] = true;
        p.buf[at as usize..at as usize + data.len()].copy_from_slice(&data);
        if p.got.iter().all(|g| *g) {
            return Ok(Some(bytes::Bytes::from(std::mem::take(&mut p.buf))));
        }
        Ok(None)
    }

    /// The reads `node` serves that it has not answered yet.
    pub fn remote_reads_of(&self, node: NodeId) -> Vec<ReqId> {
        self.reqs
            .values()
            .filter(|r| r.remote == Some(node) && r.state == State::Submitted)
            .map(|r| r.id)
            .collect()
    }

    /// A peer has it, as far as its protocol says (a diskless node's protocol-A write).
    pub fn set_peer_ok(&mut self, id: ReqId) {
        if let Some(r) = self.reqs.get_mut(&id) {
            r.peer_ok = true;
        }
    }

    /// Records the seq range of the Data packets that carry request `id` to `node`.
    pub fn set_attempt(&mut self, id: ReqId, node: NodeId, first: u32, last: u32) {
        if let Some(r) = self.reqs.get_mut(&id) {
            r.attempt.retain(|(n, _, _)| *n != node);
            r.attempt.push((node, first, last));
        }
    }

    /// Application writes that overlap `[off, off+len)`, arrived before `before` and were
    /// sent to `node` (at least in part) after `node` had last seen our Data at `seen`:
    /// writes concurrent with the one `node` sent with that `seen` (two primaries).
    pub fn concurrent_with(
        &self,
        node: NodeId,
        off: u64,
        len: u64,
        before: u64,
        seen: u32,
    ) -> Vec<&Request> {
        self.replicated
            .overlapping(off, len)
            .filter(|(_, _, seq, _)| *seq < before)
            .filter_map(|(_, _, _, id)| self.reqs.get(id))
            .filter(|r| r.unseen_by(node, seen))
            .collect()
    }

    /// An application write overlapping `[off, off+len)` is in the table (admitted, not yet
    /// answered).
    pub fn app_write_overlaps(&self, off: u64, len: u64) -> bool {
        let app_write = |id: &ReqId| {
            self.reqs
                .get(id)
                .is_some_and(|r| matches!(r.origin, Origin::App))
        };
        self.ranges
            .overlapping(off, len)
            .any(|(_, _, _, (id, writes))| *writes && app_write(id))
            || self.replicated.overlapping(off, len).next().is_some()
    }

    /// Every request, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Request> {
        self.reqs.values()
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Requests at the local disk (`lower_pending`).
    pub fn submitted(&self) -> u64 {
        self.submitted
    }

    /// Ids of the requests in `state` (frozen or suspended ones to re-admit), in arrival
    /// order.
    pub fn in_state(&self, pred: impl Fn(&State) -> bool) -> Vec<ReqId> {
        self.waiting
            .values()
            .filter(|id| self.reqs.get(id).is_some_and(|r| pred(&r.state)))
            .copied()
            .collect()
    }

    /// The one transition function. Returns the request when the event finished it (it has
    /// left the table), None while it is pending.
    pub fn modify(&mut self, id: ReqId, ev: Event) -> Option<Request> {
        let r = self.reqs.get_mut(&id)?;
        let old = r.state;
        match (old, ev) {
            (State::Frozen | State::Suspended, Event::Freeze) => r.state = State::Frozen,
            (State::Frozen | State::Suspended, Event::Suspend) => r.state = State::Suspended,
            (State::Frozen | State::Suspended, Event::Queue { meta_gen, al_seq })
            | (State::Postponed, Event::Readmit { meta_gen, al_seq }) => {
                self.postponed.remove(&id);
                r.retry = None;
                r.local = None;
                r.attempt.clear();
                // Ordered by admission: a request frozen or suspended for a while goes behind
                // those admitted meanwhile (they took their metadata first, and an activity-log
                // eviction waits only for writes admitted before its transaction).
                self.waiting.remove(&r.seq);
                r.seq = self.next_seq;
                self.next_seq += 1;
                self.waiting.insert(r.seq, id);
                r.state = State::Queued { meta_gen, al_seq };
                if let Some((off, len, writes)) = r.range() {
                    self.ranges.insert(off, len, r.seq, (id, writes));
                }
            }
            (State::Queued { .. }, Event::Submit { now }) => {
                r.state = State::Submitted;
                r.sent = Some(now);
                self.waiting.remove(&r.seq);
                if r.remote.is_none() {
                    self.submitted += 1;
                }
                if let (Origin::App, Some((off, len, true))) = (&r.origin, r.range()) {
                    self.replicated.insert(off, len, r.seq, id);
                }
            }
            (State::Submitted, Event::Expect { node, owed }) => r.owed.push((node, owed)),
            (State::Submitted, Event::LocalDone(result)) => {
                r.local = Some(result);
                r.state = State::AwaitingPeers;
                if r.remote.is_none() {
                    self.submitted -= 1;
                }
                if let Some((off, _, _)) = r.range() {
                    self.ranges.remove(off, r.seq);
                }
            }
            (State::Submitted | State::AwaitingPeers, Event::PeerAcked { node, ok }) => {
                r.peer_ok |= ok;
                if let Some(at) = r
                    .owed
                    .iter()
                    .position(|(n, o)| *n == node && matches!(o, Owed::Acks(_)))
                {
                    match &mut r.owed[at].1 {
                        Owed::Acks(n) if *n > 1 => *n -= 1,
                        _ => {
                            r.owed.remove(at);
                        }
                    }
                }
            }
            (State::Submitted | State::AwaitingPeers, Event::BarrierAcked { node, epoch }) => {
                r.owed
                    .retain(|(n, o)| !(*n == node && matches!(o, Owed::Barrier(e) if *e <= epoch)));
            }
            (State::Submitted | State::AwaitingPeers, Event::RetryWrite { node, after }) => {
                r.owed.retain(|(n, _)| *n != node);
                r.retry = Some((node, after));
            }
            (_, Event::PeerGone { node }) => r.owed.retain(|(n, _)| *n != node),
            (state, ev) => {
                // A late or duplicate event (an ack for a request the link loss already
                // released): nothing to do, as DRBD's `mod_rq_state` ignores a no-op.
                debug_assert!(
                    matches!(
                        ev,
                        Event::PeerAcked { .. }
                            | Event::BarrierAcked { .. }
                            | Event::LocalDone(_)
                            | Event::RetryWrite { .. }
                    ),
                    "request {id:?}: {ev:?} in {state:?}"
                );
                return None;
            }
        }
        self.finish_if_done(id)
    }

    /// Whether `id` has everything: its local answer and every peer's.
    fn finish_if_done(&mut self, id: ReqId) -> Option<Request> {
        let r = self.reqs.get_mut(&id)?;
        if r.state != State::AwaitingPeers || !r.owed.is_empty() {
            return None;
        }
        if let Some(retry) = r.retry {
            // Written here, not on the peer: it goes again (see `Event::Readmit`).
            r.state = State::Postponed;
            self.postponed.insert(id, retry);
            if let Some((off, _, _)) = r.range() {
                self.replicated.remove(off, r.seq);
            }
            return None;
        }
        if self.hold && matches!(r.origin, Origin::App) {
            r.state = State::Held;
            return None;
        }
        self.remove(id)
    }

    /// Holds (fencing froze I/O) or releases application answers; returns those released, in
    /// arrival order.
    pub fn hold_answers(&mut self, hold: bool) -> Vec<Request> {
        self.hold = hold;
        if hold {
            return Vec::new();
        }
        self.take_held()
    }

    /// Takes the application requests whose answers are held (a Primary that stops being
    /// one answers them with an error), in arrival order.
    pub fn take_held(&mut self) -> Vec<Request> {
        let mut held: Vec<(u64, ReqId)> = self
            .reqs
            .values()
            .filter(|r| r.state == State::Held)
            .map(|r| (r.seq, r.id))
            .collect();
        held.sort_unstable();
        held.into_iter()
            .filter_map(|(_, id)| self.remove(id))
            .collect()
    }

    /// Takes a request that was never submitted (refused at admission, or dropped with a
    /// failed metadata write).
    pub fn take_unsubmitted(&mut self, id: ReqId) -> Option<Request> {
        let r = self.reqs.get(&id)?;
        if matches!(
            r.state,
            State::Submitted | State::AwaitingPeers | State::Held | State::Postponed
        ) {
            return None;
        }
        let r = self.remove(id)?;
        self.waiting.remove(&r.seq);
        if let (State::Queued { .. }, Some((off, _, _))) = (r.state, r.range()) {
            self.ranges.remove(off, r.seq);
        }
        Some(r)
    }

    /// The queued requests that may go to the disk now, in arrival order: their metadata is
    /// on disk and no earlier request with a conflicting range is still queued or at the disk.
    pub fn releasable(&self, meta_persisted: u64, al_persisted: u64) -> Vec<ReqId> {
        let mut out = Vec::new();
        for id in self.waiting.values() {
            let Some(r) = self.reqs.get(id) else {
                continue;
            };
            let State::Queued { meta_gen, al_seq } = r.state else {
                continue;
            };
            if meta_gen > meta_persisted || al_seq > al_persisted {
                continue;
            }
            let blocked = r.range().is_some_and(|(off, len, writes)| {
                self.ranges
                    .overlapping(off, len)
                    .any(|(_, _, seq, (_, w))| seq < r.seq && (writes || *w))
            });
            if !blocked {
                out.push(*id);
            }
        }
        out
    }

    /// Whether a write into `[lo, hi)` must finish before the activity-log transaction `al`
    /// may evict that range's extent. Only writes that made their extent hot count (the
    /// application's, a peer's replicated ones: a resync target is Inconsistent until the end,
    /// and its source keeps the bits): one at the disk, or one queued for an earlier
    /// transaction. Those were admitted before `al` was queued, so nothing ahead of them waits
    /// for `al` either, and the eviction cannot wait on what waits for it.
    pub fn writes_before_eviction(&self, lo: u64, hi: u64, al: u64) -> bool {
        self.ranges
            .overlapping(lo, hi.saturating_sub(lo))
            .filter(|(_, _, _, (_, writes))| *writes)
            .any(|(_, _, _, (id, _))| {
                self.reqs.get(id).is_some_and(|r| {
                    matches!(r.origin, Origin::App | Origin::PeerWrite { .. })
                        && match r.state {
                            State::Submitted => true,
                            State::Queued { al_seq, .. } => al_seq < al,
                            _ => false,
                        }
                })
            })
    }

    /// The queued requests that wait for metadata newer than what is on disk (a metadata
    /// write failed: they can never go).
    pub fn waiting_for_metadata(&self, meta_persisted: u64, al_persisted: u64) -> Vec<ReqId> {
        self.waiting
            .values()
            .filter(|id| {
                self.reqs.get(id).is_some_and(|r| {
                    matches!(r.state, State::Queued { meta_gen, al_seq }
                        if meta_gen > meta_persisted || al_seq > al_persisted)
                })
            })
            .copied()
            .collect()
    }

    pub fn has_postponed(&self) -> bool {
        !self.postponed.is_empty()
    }

    /// The postponed writes: (id, the peer that asked for them again, the seq of its Data
    /// they wait for).
    pub fn postponed(&self) -> Vec<(ReqId, NodeId, u32)> {
        self.postponed
            .iter()
            .map(|(id, &(node, after))| (*id, node, after))
            .collect()
    }

    /// Application requests in the table (`upper_pending`).
    /// Payload bytes of application writes that still wait for `node`.
    pub fn app_bytes_awaiting(&self, node: NodeId) -> u64 {
        self.reqs
            .values()
            .filter(|r| matches!(r.origin, Origin::App) && r.awaits(node))
            .map(|r| match &r.op {
                IoOp::Write { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    pub fn app_count(&self) -> u64 {
        self.reqs
            .values()
            .filter(|r| matches!(r.origin, Origin::App))
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(offset: u64, len: usize) -> IoOp {
        IoOp::Write {
            offset,
            data: vec![1; len].into(),
            fua: false,
        }
    }

    fn queue() -> Event {
        Event::Queue {
            meta_gen: 0,
            al_seq: 0,
        }
    }

    #[test]
    fn overlapping_writes_go_in_arrival_order_and_others_do_not_wait() {
        let mut t = Requests::default();
        t.insert(ReqId(1), Origin::App, write(0, 8192), queue(), None);
        t.insert(ReqId(2), Origin::App, write(4096, 4096), queue(), None);
        t.insert(ReqId(3), Origin::App, write(1 << 20, 4096), queue(), None);
        assert_eq!(t.releasable(0, 0), [ReqId(1), ReqId(3)]);
        for id in [ReqId(1), ReqId(3)] {
            t.modify(id, Event::Submit { now: Time(0) });
        }
        assert_eq!(t.releasable(0, 0), Vec::<ReqId>::new());
        assert!(t.modify(ReqId(1), Event::LocalDone(Ok(None))).is_some());
        assert_eq!(t.releasable(0, 0), [ReqId(2)]);
    }

    #[test]
    fn a_request_finishes_when_the_disk_and_every_peer_answered() {
        let mut t = Requests::default();
        t.insert(ReqId(1), Origin::App, write(0, 4096), queue(), None);
        t.modify(ReqId(1), Event::Submit { now: Time(0) });
        t.modify(
            ReqId(1),
            Event::Expect {
                node: NodeId(1),
                owed: Owed::Acks(2),
            },
        );
        assert!(t.modify(ReqId(1), Event::LocalDone(Ok(None))).is_none());
        assert!(
            t.modify(
                ReqId(1),
                Event::PeerAcked {
                    node: NodeId(1),
                    ok: true
                }
            )
            .is_none()
        );
        let done = t
            .modify(
                ReqId(1),
                Event::PeerAcked {
                    node: NodeId(1),
                    ok: true,
                },
            )
            .expect("done");
        assert!(done.peer_ok);
        assert!(t.is_empty());
    }

    #[test]
    fn a_freeze_holds_answers_until_released() {
        let mut t = Requests::default();
        t.insert(ReqId(1), Origin::App, write(0, 4096), queue(), None);
        t.modify(ReqId(1), Event::Submit { now: Time(0) });
        t.hold_answers(true);
        assert!(t.modify(ReqId(1), Event::LocalDone(Ok(None))).is_none());
        assert_eq!(t.get(ReqId(1)).map(|r| r.state), Some(State::Held));
        let released = t.hold_answers(false);
        assert_eq!(released.len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_lost_peer_owes_nothing() {
        let mut t = Requests::default();
        t.insert(ReqId(1), Origin::App, IoOp::Flush, queue(), None);
        t.modify(ReqId(1), Event::Submit { now: Time(0) });
        t.modify(
            ReqId(1),
            Event::Expect {
                node: NodeId(1),
                owed: Owed::Barrier(7),
            },
        );
        assert!(t.modify(ReqId(1), Event::LocalDone(Ok(None))).is_none());
        assert!(
            t.modify(ReqId(1), Event::PeerGone { node: NodeId(1) })
                .is_some()
        );
    }
}
