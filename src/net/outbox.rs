//! The outgoing side of one link stream: frames are written straight to the socket by whoever
//! sends them when nothing is queued ahead, and queued, in order, for the stream's drain task
//! otherwise.
//!
//! Why not a channel to a writer task: on the replication hot path that task hop sat between
//! the engine deciding to send a write and the write leaving, and the hop only ends when the
//! sending thread is free again, i.e. after it has also submitted the local disk write (an
//! `io_uring_enter` that runs the block layer inline). Writing from the sender cut protocol C's
//! 4 KiB QD1 write latency on loopback by about a fifth (`benches/pair_fio.sh`).
//!
//! Ordering: the state lock is held while the fast path writes, and the fast path is taken
//! only while nothing is queued and the drain task is not writing, so bytes reach the socket in
//! the order [`Outbox::push`] was called. A caller that must fix a frame's place before it can
//! afford to encode it (a 1 MiB write, under the driver lock) takes a place with
//! [`Outbox::reserve`] and fills it later with an encoder that the drain task runs; nothing
//! behind an unfilled place is written.
//!
//! Frames are [`SplitFrame`]s: the data block of a write or a resync reply is written from the
//! buffer it already lives in (one vectored write with the frame's head), never copied into a
//! frame buffer.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Mutex, MutexGuard};

use super::stream::SockWrite;
use crate::repl::wire::SplitFrame;
use tokio::sync::{Notify, watch};

/// Queued bytes above which [`Outbox::wait_room`] waits.
pub(crate) const HIGH_WATER: usize = 8 << 20;
/// Queued bytes beyond which the stream fails: the peer stopped reading while senders that
/// cannot wait (answers to the peer's own requests, sent under the driver's lock) went on.
/// Writers wait at [`HIGH_WATER`] and the peer's requests are bounded by `max-buffers` on
/// both sides, so only a peer that stops reading for good gets here; ko-count would drop it
/// too, this only makes sure memory does not grow until then.
pub(crate) const HARD_LIMIT: usize = 8 * HIGH_WATER;
/// Frames handed to one vectored write.
const MAX_IOV: usize = 64;
/// Bytes the drain task gathers before it writes.
const WRITE_CHUNK: usize = 256 * 1024;

/// See the [module doc](self).
#[derive(Debug)]
pub(crate) struct Outbox {
    sock: SockWrite,
    state: Mutex<State>,
    /// Wakes the drain task: something was queued, or the stream failed.
    more: Notify,
    /// Wakes senders waiting for the queue to go below [`HIGH_WATER`].
    room: Notify,
}

/// Makes a frame; run by the drain task, off the sender's thread.
pub(crate) type Encoder = Box<dyn FnOnce() -> io::Result<SplitFrame> + Send>;

/// What fills a reserved place.
enum Fill {
    /// A frame for the drain task to encode.
    Later { encode: Encoder, size_hint: usize },
    /// An encoded frame.
    Now(SplitFrame),
}

/// A queued frame, a frame to encode, or a place not filled yet.
enum Entry {
    Ready(SplitFrame),
    Deferred { encode: Encoder, size_hint: usize },
    Reserved(u64),
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Ready(b) => write!(f, "Ready({} bytes)", b.len()),
            Entry::Deferred { size_hint, .. } => write!(f, "Deferred(~{size_hint} bytes)"),
            Entry::Reserved(t) => write!(f, "Reserved({t})"),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    entries: VecDeque<Entry>,
    /// Bytes of the first entry already written (by a fast path that wrote part of it).
    head_written: usize,
    next_ticket: u64,
    /// Bytes queued, including those the drain task took and has not written yet.
    queued_bytes: usize,
    /// Of those, the bytes of the batch the drain task is writing (counted until it is done).
    writing_bytes: usize,
    /// The drain task took frames and is writing them.
    busy: bool,
    /// [`HARD_LIMIT`] was exceeded: the stream failed for that reason.
    overflowed: bool,
    /// Set on the first write error, or once the stream is shut down; pushes fail from then on.
    failed: Option<io::ErrorKind>,
}

impl Outbox {
    pub(crate) fn new(sock: impl Into<SockWrite>) -> Outbox {
        Outbox {
            sock: sock.into(),
            state: Mutex::default(),
            more: Notify::new(),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one encoded frame: written now if nothing is ahead of it and the socket takes it,
    /// otherwise (the rest of it) queued for the drain task. Never waits. Fails once the stream
    /// has failed or been shut down.
    pub(crate) fn push(&self, frame: impl Into<SplitFrame>) -> io::Result<()> {
        self.push_many(vec![frame.into()])
    }

    /// [`Outbox::push`] for several frames in order: written now with one vectored write (as
    /// much as the socket takes), the rest queued. Acks and writes that go out together cost
    /// one system call, not one each.
    pub(crate) fn push_many(&self, frames: Vec<SplitFrame>) -> io::Result<()> {
        let mut st = self.lock();
        if let Some(kind) = st.failed {
            return Err(io::Error::from(kind));
        }
        let at_head = st.entries.is_empty();
        let written = self.write_if_next(&mut st, at_head, &frames)?;
        // Queue what was not written: the first frame left perhaps in part, then the others.
        let mut skip = written;
        let mut first = true;
        for f in frames {
            if skip >= f.len() {
                skip -= f.len();
                continue;
            }
            if first && at_head {
                st.head_written = skip;
            }
            st.queued_bytes += f.len() - skip;
            st.entries.push_back(Entry::Ready(f));
            skip = 0;
            first = false;
        }
        if first {
            // Everything was written.
            return Ok(());
        }
        self.check_limit(&mut st)?;
        drop(st);
        self.more.notify_one();
        Ok(())
    }

    /// Takes the next place in the stream for a frame [`Outbox::fill`] provides later.
    pub(crate) fn reserve(&self) -> u64 {
        let mut st = self.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.entries.push_back(Entry::Reserved(ticket));
        ticket
    }

    /// Puts an encoder in the place `ticket` reserved, for the drain task to run and write:
    /// the frames that get reserved are the large ones, and encoding and writing them there,
    /// on another thread, overlaps that work with the sender's own. `size_hint` counts toward
    /// [`HIGH_WATER`]. Fails like [`Outbox::push`].
    pub(crate) fn fill(&self, ticket: u64, encode: Encoder, size_hint: usize) -> io::Result<()> {
        self.settle(ticket, Some(Fill::Later { encode, size_hint }))
    }

    /// Puts an encoded frame in the place `ticket` reserved: written at once if that place is
    /// next on the wire (as [`Outbox::push`] writes), queued otherwise. For small frames whose
    /// place was taken under a lock and that are cheap to encode after it.
    pub(crate) fn fill_now(&self, ticket: u64, frame: SplitFrame) -> io::Result<()> {
        self.settle(ticket, Some(Fill::Now(frame)))
    }

    /// Gives up the place `ticket` reserved.
    pub(crate) fn give_up(&self, ticket: u64) {
        let _ = self.settle(ticket, None);
    }

    fn settle(&self, ticket: u64, with: Option<Fill>) -> io::Result<()> {
        let mut st = self.lock();
        if let Some(kind) = st.failed {
            st.entries
                .retain(|e| !matches!(e, Entry::Reserved(t) if *t == ticket));
            return Err(io::Error::from(kind));
        }
        let Some(idx) = st
            .entries
            .iter()
            .position(|e| matches!(e, Entry::Reserved(t) if *t == ticket))
        else {
            return Err(io::Error::other("no such reservation"));
        };
        match with {
            None => {
                st.entries.remove(idx);
            }
            Some(Fill::Later { encode, size_hint }) => {
                st.queued_bytes += size_hint;
                st.entries[idx] = Entry::Deferred { encode, size_hint };
                self.check_limit(&mut st)?;
            }
            Some(Fill::Now(frame)) => {
                let written =
                    self.write_if_next(&mut st, idx == 0, std::slice::from_ref(&frame))?;
                if written == frame.len() {
                    st.entries.remove(idx);
                } else {
                    if idx == 0 {
                        st.head_written = written;
                    }
                    st.queued_bytes += frame.len() - written;
                    st.entries[idx] = Entry::Ready(frame);
                    self.check_limit(&mut st)?;
                }
            }
        }
        drop(st);
        // Frames queued behind this place may be writable now.
        self.more.notify_one();
        Ok(())
    }

    /// Fails the stream once more than [`HARD_LIMIT`] bytes are queued (see there). The
    /// socket is shut down so that a drain task stuck writing to the silent peer ends too.
    fn check_limit(&self, st: &mut State) -> io::Result<()> {
        if st.queued_bytes <= HARD_LIMIT {
            return Ok(());
        }
        if !st.overflowed {
            st.overflowed = true;
            st.failed = Some(io::ErrorKind::OutOfMemory);
            tracing::error!("{}; dropping the link", overflow_error());
            // SAFETY: as in `shutdown_write`.
            unsafe { libc::shutdown(self.sock.raw_fd(), libc::SHUT_RDWR) };
            self.more.notify_one();
        }
        Err(overflow_error())
    }

    /// The fast path, taken only for frames that are next on the wire (`at_head`) while the
    /// drain task is not writing: then nothing can get between them and the socket. Returns
    /// the bytes written (0 when the path is not open).
    fn write_if_next(
        &self,
        st: &mut State,
        at_head: bool,
        frames: &[SplitFrame],
    ) -> io::Result<usize> {
        if at_head && !st.busy {
            self.write_now(st, frames)
        } else {
            Ok(0)
        }
    }

    /// Writes as much of `frames` as the socket takes now; returns the bytes
    /// written. On an error the stream is failed (the drain task reports it) and the error
    /// returned.
    fn write_now(&self, st: &mut State, frames: &[SplitFrame]) -> io::Result<usize> {
        let total: usize = frames.iter().map(SplitFrame::len).sum();
        let mut written = 0;
        while written < total {
            let mut slices = Vec::with_capacity(2 * frames.len().min(MAX_IOV / 2));
            let mut skip = written;
            for f in frames {
                if slices.len() + 2 > MAX_IOV {
                    break;
                }
                if skip >= f.len() {
                    skip -= f.len();
                    continue;
                }
                unwritten(f, skip, &mut slices);
                skip = 0;
            }
            match self.sock.try_write_vectored(&slices) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    st.failed = Some(e.kind());
                    // The drain task reports the error as the stream's end.
                    self.more.notify_one();
                    return Err(e);
                }
            }
        }
        Ok(written)
    }

    /// Fewer than [`HIGH_WATER`] bytes are queued, or the stream failed (which the next push
    /// reports).
    pub(crate) fn has_room(&self) -> bool {
        let st = self.lock();
        st.queued_bytes < HIGH_WATER || st.failed.is_some()
    }

    /// Waits until [`Outbox::has_room`].
    pub(crate) async fn wait_room(&self) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                if self.has_room() {
                    return;
                }
            }
            room.await;
        }
    }

    /// The drain task: writes what [`Outbox::push`] queued, in order, until `closing` turns
    /// true and everything queued is written (then shuts the write side down: TCP FIN), or a
    /// write fails.
    pub(crate) async fn drain(&self, mut closing: watch::Receiver<bool>) -> io::Result<()> {
        // However this ends (an error, or the task aborted with the link), the stream is dead
        // from then on: senders must see that, not queue into it or wait for room forever.
        let mut ended = DrainEnded {
            outbox: self,
            cleanly: false,
        };
        loop {
            let closing_now = *closing.borrow_and_update();
            let work = {
                let mut st = self.lock();
                if st.overflowed {
                    return Err(overflow_error());
                }
                if let Some(kind) = st.failed {
                    return Err(io::Error::from(kind));
                }
                // Everything up to the first unfilled place.
                let ready = st
                    .entries
                    .iter()
                    .position(|e| matches!(e, Entry::Reserved(_)))
                    .unwrap_or(st.entries.len());
                let batch: Vec<Entry> = st.entries.drain(..ready).collect();
                let mut counted = 0;
                for (i, e) in batch.iter().enumerate() {
                    counted += match e {
                        // Only the head frame's unwritten part was counted.
                        Entry::Ready(f) if i == 0 => f.len() - st.head_written,
                        Entry::Ready(f) => f.len(),
                        Entry::Deferred { size_hint, .. } => *size_hint,
                        Entry::Reserved(_) => 0,
                    };
                }
                debug_assert!(counted <= st.queued_bytes, "outbox byte count");
                // Still queued until written: a peer that stops reading stalls the batch, and
                // what it holds must keep counting toward `HIGH_WATER` and `HARD_LIMIT`.
                st.writing_bytes = counted;
                st.busy = !batch.is_empty();
                if batch.is_empty() && closing_now && st.entries.is_empty() {
                    // Decided under the lock that saw the queue empty, so no push can slip in
                    // between and be lost behind the FIN.
                    st.failed = Some(io::ErrorKind::BrokenPipe);
                    drop(st);
                    ended.cleanly = true;
                    return self.shutdown_write();
                }
                (!batch.is_empty()).then(|| (batch, std::mem::take(&mut st.head_written)))
            };
            let Some((batch, head_written)) = work else {
                self.room.notify_waiters();
                tokio::select! {
                    () = self.more.notified() => {}
                    _ = closing.changed() => {}
                }
                continue;
            };
            if let Err(e) = self.write_batch(batch, head_written).await {
                return Err(if self.lock().overflowed {
                    overflow_error()
                } else {
                    e
                });
            }
            {
                // The batch is out: its bytes no longer count.
                let mut st = self.lock();
                st.queued_bytes = st.queued_bytes.saturating_sub(st.writing_bytes);
                st.writing_bytes = 0;
            }
            self.room.notify_waiters();
        }
    }

    /// Encodes what is deferred and writes everything, in order. Written in pieces of about
    /// [`WRITE_CHUNK`], so the first bytes go out while later frames are still to be encoded.
    async fn write_batch(&self, batch: Vec<Entry>, mut skip: usize) -> io::Result<()> {
        let mut frames = VecDeque::new();
        let mut bytes = 0;
        for e in batch {
            let frame = match e {
                Entry::Ready(f) => f,
                Entry::Deferred { encode, .. } => encode().inspect_err(|e| {
                    // What follows must not go out without it: the stream ends here.
                    tracing::error!("cannot encode a frame: {e}");
                })?,
                Entry::Reserved(_) => continue,
            };
            bytes += frame.len();
            frames.push_back(frame);
            if bytes >= WRITE_CHUNK {
                self.write_all(&frames, std::mem::take(&mut skip)).await?;
                frames.clear();
                bytes = 0;
            }
        }
        self.write_all(&frames, skip).await
    }

    /// Writes `frames` (the first without its first `skip` bytes) with vectored writes.
    async fn write_all(&self, frames: &VecDeque<SplitFrame>, mut skip: usize) -> io::Result<()> {
        let mut next = 0;
        while next < frames.len() {
            let mut slices: Vec<IoSlice<'_>> = Vec::new();
            for (i, f) in frames.iter().skip(next).enumerate() {
                if slices.len() + 2 > MAX_IOV {
                    break;
                }
                unwritten(f, if i == 0 { skip } else { 0 }, &mut slices);
            }
            let mut n = match self.sock.try_write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.sock.writable().await?;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // Advance past what was written: whole frames, then into the next one.
            while n > 0 {
                let left = frames[next].len() - skip;
                if n >= left {
                    n -= left;
                    next += 1;
                    skip = 0;
                } else {
                    skip += n;
                    n = 0;
                }
            }
            // A frame written to its end with nothing after it in this batch.
            while next < frames.len() && frames[next].len() == skip {
                next += 1;
                skip = 0;
            }
        }
        Ok(())
    }

    /// Shuts our sending side down (TCP FIN) once everything is written.
    fn shutdown_write(&self) -> io::Result<()> {
        // SAFETY: the fd is the socket `self.sock` owns, open for as long as `self` lives.
        if unsafe { libc::shutdown(self.sock.raw_fd(), libc::SHUT_WR) } != 0 {
            let e = io::Error::last_os_error();
            // The peer may have closed first; that is not a failure of ours.
            if e.kind() != io::ErrorKind::NotConnected {
                return Err(e);
            }
        }
        Ok(())
    }
}

fn overflow_error() -> io::Error {
    io::Error::other(format!(
        "the peer stopped reading: more than {} MiB queued for it",
        HARD_LIMIT >> 20
    ))
}

/// Adds the parts of `frame` from byte `from` on to `out` (empty parts left out).
fn unwritten<'a>(frame: &'a SplitFrame, from: usize, out: &mut Vec<IoSlice<'a>>) {
    let head = frame.head.len();
    if from < head {
        out.push(IoSlice::new(&frame.head[from..]));
    }
    let block_from = from.saturating_sub(head);
    if block_from < frame.block.len() {
        out.push(IoSlice::new(&frame.block[block_from..]));
    }
}

/// Marks the stream dead when the drain task ends other than by a clean shutdown: later pushes
/// fail, queued frames are dropped, waiters for room wake, and the socket is shut down both
/// ways (senders still hold the outbox, so dropping it would not close the socket).
struct DrainEnded<'a> {
    outbox: &'a Outbox,
    cleanly: bool,
}

impl Drop for DrainEnded<'_> {
    fn drop(&mut self) {
        let ob = self.outbox;
        {
            let mut st = ob.lock();
            st.busy = false;
            if self.cleanly {
                return;
            }
            st.failed.get_or_insert(io::ErrorKind::BrokenPipe);
            st.entries.clear();
            st.queued_bytes = 0;
            st.writing_bytes = 0;
        }
        ob.room.notify_waiters();
        // SAFETY: as in `shutdown_write`.
        unsafe { libc::shutdown(ob.sock.raw_fd(), libc::SHUT_RDWR) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// An outbox on one end of a loopback connection, and the other end's read half.
    async fn pair() -> (Outbox, tokio::net::tcp::OwnedReadHalf) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        let (_, aw) = a.into_split();
        let (br, _) = b.into_split();
        (Outbox::new(aw), br)
    }

    /// Pushes far more than a socket buffer holds while nobody reads, so most of it is queued
    /// (partly written frames included); the drain task then delivers every byte in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivers_in_order_across_fast_path_and_queue() {
        let (ob, mut rd) = pair().await;
        let ob = std::sync::Arc::new(ob);
        let (close_tx, close_rx) = watch::channel(false);
        let mut expect = Vec::new();
        let mut group = Vec::new();
        for i in 0..2000u32 {
            let len = [7usize, 4096, 70_000, 1][i as usize % 4];
            let frame: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j) as u8).collect();
            expect.extend_from_slice(&frame);
            let frame = if len > 1000 {
                // A head and a block, as a write's frame is sent: partial writes land inside
                // either part and across the boundary.
                let block = bytes::Bytes::copy_from_slice(&frame[100..]);
                let head = frame[..100].to_vec();
                SplitFrame { head, block }
            } else {
                frame.into()
            };
            // Every other run of five frames goes out together, as a batch's acks do.
            if (i / 5) % 2 == 0 {
                ob.push(frame).unwrap();
            } else {
                group.push(frame);
                if group.len() == 5 {
                    ob.push_many(std::mem::take(&mut group)).unwrap();
                }
            }
        }
        let drain = tokio::spawn({
            let ob = ob.clone();
            async move { ob.drain(close_rx).await }
        });
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            rd.read_to_end(&mut got).await.unwrap();
            got
        });
        // Pushes while the drain task runs keep their place too.
        let tail = vec![0xAB; 100_000];
        expect.extend_from_slice(&tail);
        ob.wait_room().await;
        ob.push(tail).unwrap();
        close_tx.send(true).unwrap();
        drain.await.unwrap().unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes arrived out of order");
        assert!(ob.push(vec![1]).is_err(), "a push after shutdown must fail");
    }

    /// Frames pushed behind a reserved place wait for it; a place given up (as a dropped
    /// `Reservation` does) is skipped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reserved_places_keep_their_order() {
        let (ob, mut rd) = pair().await;
        let ob = std::sync::Arc::new(ob);
        let (close_tx, close_rx) = watch::channel(false);
        let drain = tokio::spawn({
            let ob = ob.clone();
            async move { ob.drain(close_rx).await }
        });
        ob.push(b"a".to_vec()).unwrap();
        let big = ob.reserve();
        let gone = ob.reserve();
        let small = ob.reserve();
        ob.push(b"c".to_vec()).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        ob.give_up(gone);
        // Filled while the big place before it is still open: it must wait for it.
        ob.fill_now(small, b"s".to_vec().into()).unwrap();
        ob.fill(big, Box::new(|| Ok(vec![b'b'; 300_000].into())), 300_000)
            .unwrap();
        ob.push(b"d".to_vec()).unwrap();
        // Next on the wire when filled: written at once.
        let next = ob.reserve();
        ob.push(b"f".to_vec()).unwrap();
        ob.fill_now(next, b"e".to_vec().into()).unwrap();
        close_tx.send(true).unwrap();
        drain.await.unwrap().unwrap();
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        let mut expect = b"a".to_vec();
        expect.extend(vec![b'b'; 300_000]);
        expect.extend_from_slice(b"scdef");
        assert!(got == expect, "got {} bytes, out of order", got.len());
    }

    /// A drain task aborted with its link leaves a dead stream: pushes fail and nobody waits
    /// for room that will never come.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_aborted_drain_task_fails_the_stream() {
        let (ob, _rd) = pair().await;
        let ob = std::sync::Arc::new(ob);
        // More than HIGH_WATER queued behind a place nobody fills.
        let _held = ob.reserve();
        ob.push(vec![0; HIGH_WATER + 1]).unwrap();
        let (_close_tx, close_rx) = watch::channel(false);
        let drain = tokio::spawn({
            let ob = ob.clone();
            async move { ob.drain(close_rx).await }
        });
        let waiter = tokio::spawn({
            let ob = ob.clone();
            async move { ob.wait_room().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drain.abort();
        let _ = drain.await;
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("wait_room still waiting after the drain task died")
            .unwrap();
        assert!(ob.push(vec![1]).is_err());
    }

    /// A peer that stops reading: what the drain task took but cannot write still counts, so
    /// writers wait for room; senders that do not wait fail the stream past `HARD_LIMIT`, and
    /// the drain task stuck on the silent socket ends with that reason.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_stops_reading_bounds_the_queue() {
        let (ob, _rd) = pair().await;
        let ob = std::sync::Arc::new(ob);
        let (_close_tx, close_rx) = watch::channel(false);
        let drain = tokio::spawn({
            let ob = ob.clone();
            async move { ob.drain(close_rx).await }
        });
        // Fill the socket buffers and give the drain task a batch it cannot finish.
        let mut pushed = 0;
        while ob.has_room() {
            ob.push(vec![0; 1 << 20]).unwrap();
            pushed += 1;
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            assert!(pushed < 1000, "the queue never filled");
        }
        let waiter = tokio::spawn({
            let ob = ob.clone();
            async move { ob.wait_room().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "a writer got room while nothing was read"
        );
        // Pushes that do not wait hit the hard limit.
        let err = loop {
            match ob.push(vec![0; 1 << 20]) {
                Ok(()) => {}
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("stopped reading"), "{err}");
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), drain)
            .await
            .expect("the drain task stayed stuck on the silent peer")
            .unwrap();
        let e = end.expect_err("the drain task must fail");
        assert!(e.to_string().contains("stopped reading"), "{e}");
        waiter.await.unwrap();
    }

    /// A peer that went away fails pushes and ends the drain task with the error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn write_error_fails_the_stream() {
        let (ob, rd) = pair().await;
        drop(rd);
        let ob = std::sync::Arc::new(ob);
        let (_close_tx, close_rx) = watch::channel(false);
        let drain = tokio::spawn({
            let ob = ob.clone();
            async move { ob.drain(close_rx).await }
        });
        let mut failed = false;
        for _ in 0..10_000 {
            ob.wait_room().await;
            if ob.push(vec![0; 65536]).is_err() {
                failed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(failed, "pushes to a closed peer kept succeeding");
        assert!(drain.await.unwrap().is_err());
    }
}
