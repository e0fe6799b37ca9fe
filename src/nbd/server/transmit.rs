//! The reader half of a connection in transmission: reads request headers and write payloads,
//! validates with proto's [`validate`], and submits to the backend. Requests run concurrently
//! and their replies go to the writer task in completion order.
//!
//! Back-pressure: each request holds a count permit (at most `max_in_flight` per connection)
//! and, for READ and WRITE, byte permits for its payload (at most `max_in_flight_bytes`) until
//! its reply has been *written*. When either runs out the reader stops reading, so a client
//! that floods requests or stops reading replies costs a bounded amount of memory.

use super::backend::{ExportIo, IoCmd, IoDone, IoError, IoReply};
use super::handshake::discard;
use super::writer::{ReplyMsg, ReplyShape};
use super::{RunState, not_running};
use crate::buf::AlignedFill;
use crate::nbd::proto::{
    Command, Errno, Negotiated, REQUEST_HEADER_LEN, Reject, RejectAction, RequestHeader, validate,
};
use bytes::Bytes;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Why the reader stopped.
#[derive(Debug)]
pub(super) enum ReadEnd {
    /// `NBD_CMD_DISC`: finish in-flight requests, then close.
    Disc,
    /// The client closed its side without `NBD_CMD_DISC`.
    Eof,
    /// The server is shutting down; in-flight requests still get their replies.
    Shutdown,
    /// The reply channel is gone (the writer died).
    WriterGone,
    /// The stream cannot be resynchronised: drop the connection now.
    Protocol(String),
    /// Reading failed.
    Io(io::Error),
}

/// Per-connection bounds, and the server-wide payload budget.
#[derive(Debug, Clone)]
pub(super) struct Bounds {
    pub count: Arc<Semaphore>,
    pub bytes: Arc<Semaphore>,
    /// Total byte permits; a single request never asks for more than this.
    pub byte_budget: u32,
    /// Payload bytes of all connections together ([`super::ServerConfig::max_payload_bytes`]).
    pub shared: Arc<Semaphore>,
    pub shared_budget: u32,
    /// No payload byte for this long drops the connection.
    pub payload_timeout: std::time::Duration,
}

/// How often a request waiting for the server-wide budget looks again. Polled rather than
/// queued: a queue is first come, first served, and a small request must not wait behind a
/// large one for budget that stalled clients hold (they are dropped at the payload timeout).
const SHARED_RETRY: std::time::Duration = std::time::Duration::from_millis(5);
/// Requests above this leave [`Bounds::shared_reserve`] of the server-wide budget free.
const SMALL_REQUEST: u32 = 1 << 20;

impl Bounds {
    /// What a large request must leave of the server-wide budget (an eighth).
    fn shared_reserve(&self) -> usize {
        self.shared_budget as usize / 8
    }

    /// `bytes` of the server-wide budget, now, if there is room for a request of that size.
    fn try_shared(&self, bytes: u32) -> Result<OwnedSemaphorePermit, tokio::sync::TryAcquireError> {
        let want = bytes.min(self.shared_budget);
        let large = bytes > SMALL_REQUEST && want < self.shared_budget;
        if large && self.shared.available_permits() < want as usize + self.shared_reserve() {
            return Err(tokio::sync::TryAcquireError::NoPermits);
        }
        Arc::clone(&self.shared).try_acquire_many_owned(want)
    }
}

/// Reads and submits requests until one of the [`ReadEnd`]s.
///
/// Requests that arrive together go to the backend together ([`ExportIo::submit_batch`]): a
/// request is held back only while the next one is already complete in the read buffer, so
/// nothing waits for bytes that have not arrived, and at most [`MAX_BATCH`] are held.
pub(super) async fn read_loop<R: AsyncRead + Unpin>(
    mut r: BufReader<R>,
    neg: &Negotiated,
    io: Arc<dyn ExportIo>,
    tx: UnboundedSender<ReplyMsg>,
    bounds: Bounds,
    state: watch::Receiver<RunState>,
) -> ReadEnd {
    let mut batch = Vec::new();
    let end = read_requests(&mut r, neg, &io, &tx, &bounds, state, &mut batch).await;
    // Requests taken in are answered however reading ended.
    if !batch.is_empty() {
        io.submit_batch(batch);
    }
    end
}

/// Most requests held back for one [`ExportIo::submit_batch`]. Measured on the 2-core VMs
/// (`benches/`, 4 KiB at QD32, three rounds): 8 cut a protocol C pair's CPU per write by a
/// fifth and raised its IOPS by a fifth over 1 (no batching), with a single node unchanged;
/// 64 helped the pair as much but cost a single node 10 to 20%: the virtio disk keeps busier
/// fed by several small submissions than by one large one.
const MAX_BATCH: usize = 8;

/// Whether `buf` starts with a whole request (a write's header and payload, any other's
/// header).
fn whole_request_buffered(buf: &[u8]) -> bool {
    let Some(h) = buf.first_chunk::<REQUEST_HEADER_LEN>() else {
        return false;
    };
    match RequestHeader::decode(h) {
        Ok(req) => buf.len() - REQUEST_HEADER_LEN >= req.payload_len() as usize,
        // Read on: its decoding fails there and ends the connection.
        Err(_) => true,
    }
}

async fn read_requests<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    neg: &Negotiated,
    io: &Arc<dyn ExportIo>,
    tx: &UnboundedSender<ReplyMsg>,
    bounds: &Bounds,
    mut state: watch::Receiver<RunState>,
    batch: &mut Vec<(IoCmd, IoDone)>,
) -> ReadEnd {
    let limits = neg.limits();
    loop {
        if !batch.is_empty() && (batch.len() >= MAX_BATCH || !whole_request_buffered(r.buffer())) {
            io.submit_batch(std::mem::take(batch));
        }
        let mut hb = [0u8; REQUEST_HEADER_LEN];
        // Shutdown is only noticed between requests: a half-read request is never submitted.
        let read = tokio::select! {
            biased;
            _ = not_running(&mut state) => return ReadEnd::Shutdown,
            read = r.read_exact(&mut hb) => read,
        };
        match read {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return ReadEnd::Eof,
            Err(e) => return ReadEnd::Io(e),
        }
        let req = match RequestHeader::decode(&hb) {
            Ok(req) => req,
            Err(e) => return ReadEnd::Protocol(e.to_string()),
        };
        let cmd = match validate(&req, &limits) {
            Ok(Command::Disc) => return ReadEnd::Disc,
            Ok(cmd) => cmd,
            Err(rej) => {
                // Answering may wait for an in-flight permit, which held requests could be
                // holding (with a small `max_in_flight`): hand them on first.
                if !batch.is_empty() {
                    io.submit_batch(std::mem::take(batch));
                }
                if let Some(end) = reject(r, &req, rej, neg.structured, tx, bounds).await {
                    return end;
                }
                continue;
            }
        };
        let cost = payload_cost(&cmd);
        let permits = match try_acquire(bounds, cost) {
            Some(p) => p,
            None => {
                // The held requests may be what holds the permits: hand them on before waiting.
                if !batch.is_empty() {
                    io.submit_batch(std::mem::take(batch));
                }
                match acquire(bounds, cost).await {
                    Some(p) => p,
                    None => return ReadEnd::WriterGone,
                }
            }
        };
        let (io_cmd, shape) = match cmd {
            Command::Write { offset, len, fua } => {
                if let Some(wait) = io.write_room() {
                    // What is held may be what the backend needs to make room: hand it on.
                    if !batch.is_empty() {
                        io.submit_batch(std::mem::take(batch));
                    }
                    tokio::select! {
                        biased;
                        _ = not_running(&mut state) => return ReadEnd::Shutdown,
                        () = wait => {}
                    }
                }
                let data = match read_payload(r, len as usize, bounds.payload_timeout).await {
                    Ok(data) => data,
                    Err(e) => return ReadEnd::Io(e),
                };
                (IoCmd::Write { offset, data, fua }, ReplyShape::Plain)
            }
            Command::Cache { .. } => {
                // A prefetch hint; udrbd has no cache to warm, and success is allowed.
                let msg = ReplyMsg {
                    cookie: req.cookie,
                    shape: ReplyShape::Plain,
                    result: Ok(IoReply::Done),
                    permits,
                };
                if tx.send(msg).is_err() {
                    return ReadEnd::WriterGone;
                }
                continue;
            }
            other => match to_io(other) {
                Some(pair) => pair,
                None => continue,
            },
        };
        let slot = Slot {
            inner: Some(SlotInner {
                cookie: req.cookie,
                shape,
                permits,
                tx: tx.clone(),
                _export: Arc::clone(io),
            }),
        };
        batch.push((io_cmd, Box::new(move |res| slot.finish(res))));
    }
}

/// Reads a write's payload into aligned memory, so the disk can take it as it is (O_DIRECT)
/// instead of copying it into an aligned buffer of its own (see [`crate::buf`]). Fails with
/// `TimedOut` once no byte has come for `stall`.
async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
    stall: std::time::Duration,
) -> io::Result<Bytes> {
    let mut guarded = StallGuard::new(r, stall);
    AlignedFill::new(len).read_from(&mut guarded).await
}

/// A reader that fails when its inner reader has produced nothing for `limit`. The timer is
/// made only once a read has to wait: a payload that is already buffered (most small writes
/// at queue depth) costs neither a clock read nor an allocation.
struct StallGuard<'a, R> {
    inner: &'a mut R,
    limit: std::time::Duration,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<'a, R> StallGuard<'a, R> {
    fn new(inner: &'a mut R, limit: std::time::Duration) -> Self {
        StallGuard {
            inner,
            limit,
            deadline: None,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for StallGuard<'_, R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::future::Future;
        use std::task::Poll;
        let before = buf.filled().len();
        let this = &mut *self;
        match std::pin::Pin::new(&mut *this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    // Progress: the next wait gets a whole `limit` again.
                    this.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = this.limit;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "a write's payload stopped arriving ({} s without a byte)",
                            limit.as_secs()
                        ),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// Bytes of buffer a request pins until its reply is written.
fn payload_cost(cmd: &Command) -> u32 {
    match cmd {
        Command::Read { len, .. } | Command::Write { len, .. } => *len,
        _ => 0,
    }
}

/// [`acquire`] without waiting: `None` if the permits are not all free now.
fn try_acquire(b: &Bounds, bytes: u32) -> Option<Vec<OwnedSemaphorePermit>> {
    let mut permits = Vec::with_capacity(3);
    permits.push(Arc::clone(&b.count).try_acquire_owned().ok()?);
    let mine = bytes.min(b.byte_budget);
    if mine > 0 {
        permits.push(Arc::clone(&b.bytes).try_acquire_many_owned(mine).ok()?);
    }
    if bytes > 0 {
        permits.push(b.try_shared(bytes).ok()?);
    }
    Some(permits)
}

async fn acquire(b: &Bounds, bytes: u32) -> Option<Vec<OwnedSemaphorePermit>> {
    let mut permits = Vec::with_capacity(3);
    // The semaphores are never closed, so these only fail if that invariant breaks.
    permits.push(Arc::clone(&b.count).acquire_owned().await.ok()?);
    let mine = bytes.min(b.byte_budget);
    if mine > 0 {
        permits.push(Arc::clone(&b.bytes).acquire_many_owned(mine).await.ok()?);
    }
    if bytes > 0 {
        loop {
            match b.try_shared(bytes) {
                Ok(p) => {
                    permits.push(p);
                    break;
                }
                Err(tokio::sync::TryAcquireError::Closed) => return None,
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    tokio::time::sleep(SHARED_RETRY).await;
                }
            }
        }
    }
    Some(permits)
}

/// Maps the commands that go to the backend (everything but WRITE, CACHE and DISC, handled by
/// the caller).
fn to_io(cmd: Command) -> Option<(IoCmd, ReplyShape)> {
    Some(match cmd {
        Command::Read { offset, len, .. } => {
            // DF needs no handling: a read is always answered with one data chunk.
            (
                IoCmd::Read { offset, len },
                ReplyShape::Read { offset, len },
            )
        }
        Command::Flush => (IoCmd::Flush, ReplyShape::Plain),
        Command::Trim { offset, len, fua } => (IoCmd::Trim { offset, len, fua }, ReplyShape::Plain),
        Command::WriteZeroes {
            offset,
            len,
            fua,
            no_hole,
            fast_zero,
        } => (
            IoCmd::WriteZeroes {
                offset,
                len,
                fua,
                no_hole,
                fast_zero,
            },
            ReplyShape::Plain,
        ),
        Command::BlockStatus {
            offset,
            len,
            req_one,
        } => (
            IoCmd::BlockStatus { offset, len },
            ReplyShape::BlockStatus {
                offset,
                len,
                req_one,
            },
        ),
        Command::Write { .. } | Command::Cache { .. } | Command::Disc => return None,
    })
}

/// Answers a refused request, first getting the stream back in sync as proto says. Returns
/// `Some` if the connection must end.
async fn reject<R: AsyncRead + Unpin>(
    r: &mut R,
    req: &RequestHeader,
    rej: Reject,
    structured: bool,
    tx: &UnboundedSender<ReplyMsg>,
    bounds: &Bounds,
) -> Option<ReadEnd> {
    match rej.action {
        RejectAction::Disconnect => {
            return Some(ReadEnd::Protocol(format!(
                "request {} with a {}-byte payload refused ({:?}); too large to skip",
                req.kind, req.length, rej.errno
            )));
        }
        RejectAction::DrainThenReply(n) => {
            if let Err(e) = discard(r, u64::from(n)).await {
                return Some(ReadEnd::Io(e));
            }
        }
        RejectAction::Reply => {}
    }
    tracing::debug!(
        kind = req.kind,
        offset = req.offset,
        length = req.length,
        errno = ?rej.errno,
        "refused request"
    );
    // Error replies count against the in-flight bound too, or a client flooding bad requests
    // while not reading could grow the reply queue without limit.
    let permits = acquire(bounds, 0).await?;
    let msg = ReplyMsg {
        cookie: req.cookie,
        shape: ReplyShape::Plain,
        result: Err(IoError::new(
            rej.errno,
            refusal_message(rej.errno, structured),
        )),
        permits,
    };
    tx.send(msg).err().map(|_| ReadEnd::WriterGone)
}

fn refusal_message(errno: Errno, structured: bool) -> String {
    if !structured {
        return String::new();
    }
    match errno {
        Errno::Perm => "export is read-only".into(),
        Errno::NoSpc => "request extends beyond the end of the export".into(),
        Errno::Overflow => "read too large to send unfragmented".into(),
        _ => "invalid request (flags, alignment, length or range)".into(),
    }
}

/// The completion handed to the backend. If the backend drops it without calling, the client
/// still gets an answer (`EIO`) and the in-flight permits come back.
struct Slot {
    inner: Option<SlotInner>,
}

struct SlotInner {
    cookie: u64,
    shape: ReplyShape,
    permits: Vec<OwnedSemaphorePermit>,
    tx: UnboundedSender<ReplyMsg>,
    /// Keeps the export open until this request has completed (see `backend`'s module doc).
    _export: Arc<dyn ExportIo>,
}

impl SlotInner {
    fn send(self, result: Result<IoReply, IoError>) {
        let msg = ReplyMsg {
            cookie: self.cookie,
            shape: self.shape,
            result,
            permits: self.permits,
        };
        // The connection may be gone; its replies are then simply discarded.
        let _ = self.tx.send(msg);
    }
}

impl Slot {
    fn finish(mut self, result: Result<IoReply, IoError>) {
        if let Some(inner) = self.inner.take() {
            inner.send(result);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            tracing::error!(
                cookie = inner.cookie,
                "backend dropped a request unanswered"
            );
            inner.send(Err(IoError::new(Errno::Io, "request lost by the server")));
        }
    }
}
