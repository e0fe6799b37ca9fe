//! io_uring engine: one ring per backing device (no SQPOLL), driven in one of two modes.
//!
//! Thread mode ([`UringEngine::open`]): the ring is owned by one dedicated thread. Submitters
//! put requests on a bounded channel and bump an eventfd; the ring thread always has a read of
//! that eventfd pending, so `submit_and_wait(1)` returns when either I/O completes or a request
//! arrives, with no lost wakeups (the eventfd counter stays non-zero until read). Completion
//! callbacks run on the ring thread; requests they submit go through a side queue so the thread
//! never blocks on its own full channel.
//!
//! Tokio mode ([`UringEngine::open_on`], chosen by [`UringEngine::open_auto`] inside a
//! multi-threaded runtime, i.e. in the daemon): the ring state sits behind a mutex. A submitter
//! pushes its SQEs and calls the non-blocking `submit` itself; an eventfd registered with the
//! ring wakes a tokio task that reaps. That saves both cross-thread wake-ups of thread mode
//! (submitter to ring thread, ring thread to the tokio worker running the NBD writer): the
//! completion arrives on a worker through the runtime's own epoll, like a socket event.
//!
//! In both modes callbacks are collected while the ring state is borrowed and run afterwards,
//! in completion order, with no lock held, so they may submit again.
//!
//! Data ops use O_DIRECT with 4096-aligned buffers that live inside the op's task until its
//! completion arrives; 512-byte requests become read-modify-write under the block lock table
//! ([`super::blocklock`]). Flush is one `fsync(DATASYNC)`: flushes that arrive while none is in
//! flight share the next one; flushes that arrive while one runs wait for the one after it,
//! because the running fsync may have started before writes they must cover completed.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};

use io_uring::{IoUring, opcode, squeue, types};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::{Handle, RuntimeFlavor};

use super::align::{modifies, plan_write, span, validate};
use super::blocklock::{BlockLocks, BlockRange, blocks_of};
use super::device::Device;
use super::engine::{AllocRun, Completion, DiskDone, DiskEngine, DiskOp};
use super::{sync_io, sys};
use crate::buf::AlignedBuf;
use crate::buf::is_aligned;
use bytes::Bytes;

/// Submission queue size.
const RING_ENTRIES: u32 = 256;
/// Requests accepted but not completed. Every task has at most one SQE in flight and the
/// wakeup read one more, so staying below the SQ size means a push never finds the SQ full
/// and the CQ (twice the SQ) never overflows.
const MAX_ACTIVE: usize = RING_ENTRIES as usize - 1;
/// Requests queued in the channel before submitters wait (back-pressure).
const CHANNEL_BOUND: usize = 1024;
/// user_data of the eventfd read.
const WAKE: u64 = u64::MAX;

struct Request {
    op: DiskOp,
    done: Completion,
}

/// Counters of the fsyncs issued for Flush requests (for tests and statistics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushStats {
    /// fsyncs handed to the ring.
    pub started: u64,
    /// fsyncs whose completion arrived; counted before their flushes are completed.
    pub completed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    started: AtomicU64,
    completed: AtomicU64,
}

type SideQueue = Arc<Mutex<VecDeque<Request>>>;

/// Whether the ring thread needs an eventfd kick. Writing the eventfd is a syscall, and its read
/// completing costs the ring a CQE and a re-arm: worth skipping while the thread is awake anyway
/// (under load it usually is). Dekker-style handshake, all SeqCst: the thread clears `awake`,
/// then looks at `queued`; a submitter bumps `queued`, then sets `awake` and kicks only if it
/// was clear. One of the two always sees the other's write, so no request is left asleep.
#[derive(Debug, Default)]
struct WakeState {
    awake: AtomicBool,
    /// Requests counted before they are sent, uncounted when received: never underflows.
    queued: AtomicUsize,
}

fn side(q: &SideQueue) -> MutexGuard<'_, VecDeque<Request>> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}

/// The io_uring engine.
pub struct UringEngine {
    dev: Arc<Device>,
    counters: Arc<Counters>,
    mode: Mode,
}

/// Who drives the ring.
enum Mode {
    /// A dedicated ring thread submits and reaps; submitters hand it requests.
    Thread(ThreadMode),
    /// Submitters push and submit SQEs themselves under a mutex; a tokio task reaps when the
    /// ring's registered eventfd fires. A request then costs no thread hop of its own: the
    /// completion lands on a tokio worker, usually the one that runs the NBD writer next.
    Tokio {
        core: Arc<Mutex<Ring>>,
        wake: Arc<File>,
    },
}

struct ThreadMode {
    tx: Option<SyncSender<Request>>,
    wake: Arc<File>,
    wake_state: Arc<WakeState>,
    side: SideQueue,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

fn core(c: &Mutex<Ring>) -> MutexGuard<'_, Ring> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs completion callbacks collected while a lock was held, in order, as one
/// [`crate::batch::scope`] (so a driver handles them together).
fn run_ready(ready: Vec<(Completion, io::Result<DiskDone>)>) {
    if ready.is_empty() {
        return;
    }
    crate::batch::scope(|| {
        for (done, r) in ready {
            done(r);
        }
    });
}

impl std::fmt::Debug for UringEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringEngine")
            .field("dev", &self.dev)
            .finish()
    }
}

impl UringEngine {
    /// Opens `path` (see [`Device::open`] for `data_bytes` and the O_DIRECT choice). Fails
    /// when io_uring is unavailable (e.g. `kernel.io_uring_disabled`).
    ///
    /// Always uses a dedicated ring thread; see [`UringEngine::open_auto`] for the tokio mode.
    pub fn open(path: &Path, data_bytes: Option<u64>) -> io::Result<UringEngine> {
        let dev = Arc::new(Device::open(path, data_bytes)?);
        Self::open_thread(dev)
    }

    /// Like [`UringEngine::open`], but when called inside a multi-threaded tokio runtime (also
    /// from its `spawn_blocking` threads) completions are reaped by a task of that runtime
    /// instead of a dedicated thread (see [`UringEngine::open_on`]). `UDRBD_URING_REAP=thread`
    /// forces the thread mode.
    pub fn open_auto(path: &Path, data_bytes: Option<u64>) -> io::Result<UringEngine> {
        let forced_thread = std::env::var("UDRBD_URING_REAP").is_ok_and(|v| v == "thread");
        match Handle::try_current() {
            Ok(h) if !forced_thread && h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                Self::open_on(path, data_bytes, &h)
            }
            _ => Self::open(path, data_bytes),
        }
    }

    /// Opens `path` in tokio mode: submitters push and submit their SQEs themselves and a task
    /// spawned on `handle` reaps completions, so callbacks run on that runtime's workers (or
    /// inline on a submitter that finds completions ready). The runtime must keep running
    /// while I/O is in flight, and needs its IO driver enabled; a current-thread runtime works
    /// only if nobody blocks it waiting for a completion.
    pub fn open_on(
        path: &Path,
        data_bytes: Option<u64>,
        handle: &Handle,
    ) -> io::Result<UringEngine> {
        let dev = Arc::new(Device::open(path, data_bytes)?);
        let ring = IoUring::new(RING_ENTRIES)?;
        let wake = Arc::new(sys::eventfd(libc::EFD_NONBLOCK)?);
        ring.submitter().register_eventfd(wake.as_raw_fd())?;
        let afd = {
            let _g = handle.enter();
            // SAFETY: the AsyncFd owns an `Arc` of the eventfd, which stays open (and the same
            // descriptor) for as long as the AsyncFd holds it.
            unsafe { AsyncFd::register_with_interest(Arc::clone(&wake), Interest::READABLE) }?
        };
        let counters = Arc::new(Counters::default());
        let looper = Ring::new(
            ring,
            &dev,
            None,
            Arc::default(),
            Arc::clone(&wake),
            Arc::default(),
            &counters,
        );
        let core = Arc::new(Mutex::new(looper));
        handle.spawn(reap_loop(Arc::clone(&core), afd));
        Ok(UringEngine {
            dev,
            counters,
            mode: Mode::Tokio { core, wake },
        })
    }

    /// Whether completions are reaped by a tokio task rather than a ring thread.
    pub fn reaps_on_tokio(&self) -> bool {
        matches!(self.mode, Mode::Tokio { .. })
    }

    fn open_thread(dev: Arc<Device>) -> io::Result<UringEngine> {
        let ring = IoUring::new(RING_ENTRIES)?;
        let wake = Arc::new(sys::eventfd(0)?);
        let (tx, rx) = mpsc::sync_channel(CHANNEL_BOUND);
        let side: SideQueue = Arc::default();
        let counters = Arc::new(Counters::default());
        let wake_state = Arc::new(WakeState {
            awake: AtomicBool::new(true),
            queued: AtomicUsize::new(0),
        });
        let looper = Ring::new(
            ring,
            &dev,
            Some(rx),
            Arc::clone(&side),
            Arc::clone(&wake),
            Arc::clone(&wake_state),
            &counters,
        );
        let thread = std::thread::Builder::new()
            .name("udrbd-uring".into())
            .spawn(move || looper.run())?;
        let thread_id = thread.thread().id();
        Ok(UringEngine {
            dev,
            counters,
            mode: Mode::Thread(ThreadMode {
                tx: Some(tx),
                wake,
                wake_state,
                side,
                thread: Some(thread),
                thread_id,
            }),
        })
    }

    /// Whether the device was opened with O_DIRECT.
    pub fn is_direct(&self) -> bool {
        self.dev.direct
    }

    /// fsyncs issued for Flush requests so far.
    pub fn flush_stats(&self) -> FlushStats {
        FlushStats {
            started: self.counters.started.load(Ordering::SeqCst),
            completed: self.counters.completed.load(Ordering::SeqCst),
        }
    }
}

fn kick(wake: &File) {
    if let Err(e) = (&*wake).write_all(&1u64.to_ne_bytes()) {
        tracing::error!("cannot wake the io_uring thread: {e}");
    }
}

/// The tokio-mode reaper: runs until the engine is dropped and nothing is in flight.
async fn reap_loop(core_m: Arc<Mutex<Ring>>, fd: AsyncFd<Arc<File>>) {
    let mut buf = [0u8; 8];
    loop {
        let mut g = match fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("io_uring eventfd poll failed: {e}");
                return;
            }
        };
        match (&**g.get_inner()).read(&mut buf) {
            // Any CQE posted after this read signals the eventfd again, which sets the
            // readiness anew (clear_ready leaves a newer event in place).
            Ok(_) => g.clear_ready(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                g.clear_ready();
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("io_uring eventfd read failed: {e}");
                return;
            }
        }
        let (ready, exit) = {
            let mut r = core(&core_m);
            r.pump();
            let exit = r.closed && r.active == 0 && r.backlog.is_empty();
            (std::mem::take(&mut r.ready), exit)
        };
        run_ready(ready);
        if exit {
            return;
        }
    }
}

impl DiskEngine for UringEngine {
    fn size(&self) -> u64 {
        self.dev.size()
    }

    fn grow_to(&self, bytes: u64) {
        self.dev.set_size(bytes);
    }

    fn submit_batch(&self, ops: Vec<(DiskOp, Completion)>) {
        let Mode::Tokio { core: c, .. } = &self.mode else {
            // The ring thread batches on its own: it drains its channel before it submits.
            for (op, done) in ops {
                self.submit(op, done);
            }
            return;
        };
        let ready = {
            let mut r = core(c);
            if r.closed {
                drop(r);
                for (_, done) in ops {
                    done(Err(io::Error::other("engine is shutting down")));
                }
                return;
            }
            r.backlog
                .extend(ops.into_iter().map(|(op, done)| Request { op, done }));
            r.pump();
            std::mem::take(&mut r.ready)
        };
        run_ready(ready);
    }

    fn submit(&self, op: DiskOp, done: Completion) {
        let req = Request { op, done };
        let tm = match &self.mode {
            Mode::Thread(tm) => tm,
            Mode::Tokio { core: c, .. } => {
                let ready = {
                    let mut r = core(c);
                    if r.closed {
                        drop(r);
                        return (req.done)(Err(io::Error::other("engine is shutting down")));
                    }
                    r.backlog.push_back(req);
                    r.pump();
                    std::mem::take(&mut r.ready)
                };
                return run_ready(ready);
            }
        };
        if std::thread::current().id() == tm.thread_id {
            // A completion callback on the ring thread: it drains the side queue before it
            // sleeps again, so no kick is needed.
            side(&tm.side).push_back(req);
            return;
        }
        let Some(tx) = &tm.tx else {
            return (req.done)(Err(io::Error::other("engine is shutting down")));
        };
        let ws = &tm.wake_state;
        ws.queued.fetch_add(1, Ordering::SeqCst);
        if let Err(mpsc::SendError(req)) = tx.send(req) {
            ws.queued.fetch_sub(1, Ordering::SeqCst);
            return (req.done)(Err(io::Error::other("io_uring thread is gone")));
        }
        if !ws.awake.swap(true, Ordering::SeqCst) {
            kick(&tm.wake);
        }
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<AllocRun>> {
        self.dev.block_status(offset, len)
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        let tm = match &mut self.mode {
            Mode::Thread(tm) => tm,
            Mode::Tokio { core: c, wake } => {
                // The reaper finishes the accepted requests, then exits and drops the ring.
                core(c).closed = true;
                kick(wake);
                return;
            }
        };
        // Closing the channel tells the thread to finish the accepted requests and exit.
        tm.tx = None;
        kick(&tm.wake);
        if let Some(t) = tm.thread.take() {
            // A callback dropping the last handle runs on the ring thread, which cannot join
            // itself; it exits on its own once idle.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// The kernel I/O of a task: `segs` are byte ranges of `buf`, done front to back; `dev_off`
/// is the device offset of `buf[0]`. Reads go into the engine's own buffer (`B` =
/// [`AlignedBuf`]); writes come from an [`IoBuf`].
struct Io<B> {
    buf: B,
    dev_off: u64,
    segs: VecDeque<(usize, usize)>,
}

/// The memory a task transfers: a buffer of the engine's own, or, for a write whose payload
/// already sits aligned (the NBD server and the peer link read payloads into aligned memory,
/// see [`crate::buf`]), the caller's bytes themselves. Either lives in the task until its CQE.
enum IoBuf {
    Owned(AlignedBuf),
    /// Only ever written from (the kernel reads it), never read into.
    Shared(Bytes),
}

impl IoBuf {
    /// Where a write takes its bytes from.
    fn as_ptr(&self) -> *const u8 {
        match self {
            IoBuf::Owned(b) => b.as_ptr(),
            IoBuf::Shared(b) => b.as_ptr(),
        }
    }
}

enum Step {
    /// Reading the span; the result is `buf[skip..skip+len]`.
    Read {
        io: Io<AlignedBuf>,
        skip: usize,
        len: usize,
    },
    /// RMW: reading the partial edge blocks; then `data` goes to `buf[skip..]`.
    Fill {
        io: Io<AlignedBuf>,
        data: bytes::Bytes,
        skip: usize,
        fua: bool,
    },
    Write {
        io: Io<IoBuf>,
        fua: bool,
    },
    Fallocate {
        offset: u64,
        len: u64,
        mode: i32,
        fua: bool,
        op: DiskOp,
    },
    /// fdatasync after a FUA trim/zero.
    SyncAfter,
    /// The coalesced flush fsync; its waiters are `Ring::flush_covered`.
    Flush,
}

struct Task {
    done: Option<Completion>,
    lock: BlockRange,
    step: Step,
}

struct Ring {
    ring: IoUring,
    wake_state: Arc<WakeState>,
    dev: Arc<Device>,
    /// Thread mode's request channel.
    rx: Option<Receiver<Request>>,
    side: SideQueue,
    /// Tokio mode: requests accepted by `submit` but not yet started (beyond [`MAX_ACTIVE`]).
    backlog: VecDeque<Request>,
    /// Callbacks due, run by the loop (or the tokio-mode caller) once no lock is held.
    ready: Vec<(Completion, io::Result<DiskDone>)>,
    wake_fd: Arc<File>,
    /// Target of the pending eventfd read; boxed so its address is stable.
    wake_buf: Box<[u8; 8]>,
    wake_armed: bool,
    exiting: bool,
    /// Task slab; user_data is the index.
    tasks: Vec<Option<Task>>,
    free: Vec<usize>,
    locks: BlockLocks<Request>,
    /// Flushes waiting for an fsync that has not started yet.
    flush_waiting: Vec<Completion>,
    /// Flushes covered by the fsync in flight.
    flush_covered: Vec<Completion>,
    active: usize,
    closed: bool,
    counters: Arc<Counters>,
}

fn os_err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

impl Ring {
    fn new(
        ring: IoUring,
        dev: &Arc<Device>,
        rx: Option<Receiver<Request>>,
        side: SideQueue,
        wake_fd: Arc<File>,
        wake_state: Arc<WakeState>,
        counters: &Arc<Counters>,
    ) -> Ring {
        Ring {
            wake_state,
            ring,
            dev: Arc::clone(dev),
            rx,
            side,
            backlog: VecDeque::new(),
            ready: Vec::new(),
            wake_fd,
            wake_buf: Box::new([0; 8]),
            wake_armed: false,
            exiting: false,
            tasks: Vec::new(),
            free: Vec::new(),
            locks: BlockLocks::default(),
            flush_waiting: Vec::new(),
            flush_covered: Vec::new(),
            active: 0,
            closed: false,
            counters: Arc::clone(counters),
        }
    }

    /// Tokio mode: reaps what completed, starts what can start and submits without waiting.
    fn pump(&mut self) {
        self.reap();
        self.drain();
        self.start_flush();
        if self.ring.submission().is_empty() {
            return;
        }
        loop {
            match self.ring.submit() {
                Ok(_) => return,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // EBUSY/EAGAIN: the SQEs stay queued and go with the next submit (every
                // completion reaped leads to one).
                Err(e) => {
                    tracing::warn!("io_uring submit failed: {e}");
                    return;
                }
            }
        }
    }

    fn run(mut self) {
        self.arm_wake();
        loop {
            self.reap();
            self.drain();
            self.start_flush();
            run_ready(std::mem::take(&mut self.ready));
            if self.closed && self.active == 0 {
                break;
            }
            let ws = &self.wake_state;
            ws.awake.store(false, Ordering::SeqCst);
            let more = (ws.queued.load(Ordering::SeqCst) > 0 || !side(&self.side).is_empty())
                && self.active < MAX_ACTIVE;
            if more {
                ws.awake.store(true, Ordering::SeqCst);
                continue;
            }
            self.wait();
            self.wake_state.awake.store(true, Ordering::SeqCst);
        }
        self.disarm_wake();
    }

    fn wait(&mut self) {
        match self.ring.submit_and_wait(1) {
            Ok(_) => {}
            // EBUSY: completions must be reaped first, which the loop does next.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => {
                tracing::error!("io_uring_enter failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }

    /// Pushes one SQE. Cannot find the SQ full (see [`MAX_ACTIVE`]); reports it if it does.
    fn push(&mut self, e: &squeue::Entry) -> io::Result<()> {
        // SAFETY: every buffer an SQE points to lives in a task of `self.tasks` (or in
        // `wake_buf`) and is neither freed nor moved until that SQE's CQE has been reaped:
        // tasks leave the slab only in `on_cqe`, and `Drop for Ring` leaks them if the thread
        // dies with I/O in flight. Neither `AlignedBuf` nor `Bytes` memory moves with the task.
        let r = unsafe { self.ring.submission().push(e) };
        r.map_err(|_| io::Error::other("io_uring submission queue full"))
    }

    fn arm_wake(&mut self) {
        let fd = types::Fd(self.wake_fd.as_raw_fd());
        let e = opcode::Read::new(fd, self.wake_buf.as_mut_ptr(), 8)
            .offset(u64::MAX)
            .build()
            .user_data(WAKE);
        match self.push(&e) {
            Ok(()) => self.wake_armed = true,
            Err(err) => tracing::error!("cannot arm the io_uring wakeup: {err}"),
        }
    }

    /// Completes the pending eventfd read so nothing in the kernel points at `wake_buf`.
    fn disarm_wake(&mut self) {
        self.exiting = true;
        if self.wake_armed {
            let _ = (&*self.wake_fd).write_all(&1u64.to_ne_bytes());
        }
        while self.wake_armed {
            self.wait();
            self.reap();
        }
    }

    fn reap(&mut self) {
        loop {
            let cqes: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            if cqes.is_empty() {
                return;
            }
            for (ud, res) in cqes {
                if ud == WAKE {
                    self.wake_armed = false;
                    if !self.exiting {
                        self.arm_wake();
                    }
                } else {
                    self.on_cqe(ud as usize, res);
                }
            }
        }
    }

    /// Accepts requests from the side queue and the channel, up to [`MAX_ACTIVE`].
    fn drain(&mut self) {
        while self.active < MAX_ACTIVE {
            let next = match self.backlog.pop_front() {
                Some(r) => Some(r),
                None => side(&self.side).pop_front(),
            };
            let req = match next {
                Some(r) => r,
                None => match self.rx.as_ref().map(Receiver::try_recv) {
                    None => return,
                    Some(Ok(r)) => {
                        self.wake_state.queued.fetch_sub(1, Ordering::SeqCst);
                        r
                    }
                    Some(Err(TryRecvError::Empty)) => return,
                    Some(Err(TryRecvError::Disconnected)) => {
                        self.closed = true;
                        return;
                    }
                },
            };
            self.accept(req);
        }
    }

    fn accept(&mut self, req: Request) {
        if let Err(e) = validate(&req.op, self.dev.size()) {
            return self.ready.push((req.done, Err(e)));
        }
        self.active += 1;
        if req.op == DiskOp::Flush {
            self.flush_waiting.push(req.done);
            return;
        }
        let lock = lock_of(&req.op);
        if let Some(req) = self.locks.acquire(lock, req) {
            self.start(req);
        }
    }

    /// Starts one fsync for every waiting flush, unless one is already running.
    fn start_flush(&mut self) {
        if self.flush_waiting.is_empty() || !self.flush_covered.is_empty() {
            return;
        }
        self.flush_covered = std::mem::take(&mut self.flush_waiting);
        self.counters.started.fetch_add(1, Ordering::SeqCst);
        self.spawn(Task {
            done: None,
            lock: (0, 0),
            step: Step::Flush,
        });
    }

    /// Starts a validated request whose blocks are held.
    fn start(&mut self, req: Request) {
        let lock = lock_of(&req.op);
        let align = self.dev.align();
        let step = match req.op {
            DiskOp::Read { offset, len } => {
                let s = span(offset, u64::from(len), align);
                // SAFETY: the read fills all of `0..s.len` before the buffer is read (a short
                // transfer is resubmitted, an end of device fails the task unread).
                let buf = unsafe { AlignedBuf::for_kernel_fill(s.len) };
                Step::Read {
                    io: io_of(buf, s.start, vec![(0, s.len)]),
                    skip: s.skip,
                    len: len as usize,
                }
            }
            DiskOp::Write { offset, data, fua } => {
                let plan = plan_write(offset, data.len() as u64, align);
                if plan.fill.is_empty() && plan.span.skip == 0 && plan.span.len == data.len() {
                    // The common, aligned case: the payload is the whole span, written from
                    // where it already is when that is aligned memory.
                    let buf = if is_aligned(&data) {
                        IoBuf::Shared(data)
                    } else {
                        IoBuf::Owned(AlignedBuf::copy_of(&data))
                    };
                    Step::Write {
                        io: io_of(buf, plan.span.start, vec![(0, plan.span.len)]),
                        fua,
                    }
                } else if plan.fill.is_empty() {
                    let mut buf = AlignedBuf::zeroed(plan.span.len);
                    buf.as_mut_slice()[plan.span.skip..plan.span.skip + data.len()]
                        .copy_from_slice(&data);
                    Step::Write {
                        io: io_of(IoBuf::Owned(buf), plan.span.start, vec![(0, plan.span.len)]),
                        fua,
                    }
                } else {
                    let buf = AlignedBuf::zeroed(plan.span.len);
                    Step::Fill {
                        io: io_of(buf, plan.span.start, plan.fill),
                        data,
                        skip: plan.span.skip,
                        fua,
                    }
                }
            }
            DiskOp::Trim { offset, len, fua } => {
                self.zero_step(req.op.clone(), offset, len, fua, true)
            }
            DiskOp::WriteZeroes {
                offset,
                len,
                fua,
                no_hole,
            } => self.zero_step(req.op.clone(), offset, len, fua, !no_hole),
            DiskOp::Flush => {
                // Flushes never take this path (accept queues them); answer rather than lose it.
                self.flush_waiting.push(req.done);
                return;
            }
        };
        let task = Task {
            done: Some(req.done),
            lock,
            step,
        };
        // Nothing to do for empty ranges; ops with no io_uring opcode run synchronously here.
        match &task.step {
            Step::Read { io, .. } if io.segs.is_empty() => {
                self.finish(task, Ok(DiskDone::Read(Bytes::new())))
            }
            Step::Fill { io, .. } if io.segs.is_empty() => self.finish(task, Ok(DiskDone::Done)),
            Step::Write { io, .. } if io.segs.is_empty() => self.finish(task, Ok(DiskDone::Done)),
            Step::Fallocate { len: 0, .. } => self.finish(task, Ok(DiskDone::Done)),
            Step::Fallocate { op, .. } if self.dev.block_dev => {
                // BLKZEROOUT is an ioctl without an io_uring opcode; the blocks are held, so
                // running it inline on the ring thread is correct, only slower.
                let r = sync_io::exec(&self.dev, op.clone());
                self.finish(task, r)
            }
            _ => self.spawn(task),
        }
    }

    fn zero_step(&self, op: DiskOp, offset: u64, len: u32, fua: bool, punch: bool) -> Step {
        Step::Fallocate {
            offset,
            len: u64::from(len),
            mode: if punch {
                sys::PUNCH_HOLE
            } else {
                sys::ZERO_RANGE
            },
            fua,
            op,
        }
    }

    /// Puts `task` in the slab and issues its first SQE.
    fn spawn(&mut self, task: Task) {
        let idx = match self.free.pop() {
            Some(i) => {
                self.tasks[i] = Some(task);
                i
            }
            None => {
                self.tasks.push(Some(task));
                self.tasks.len() - 1
            }
        };
        self.issue(idx);
    }

    /// Issues the next SQE of the task at `idx`.
    fn issue(&mut self, idx: usize) {
        let fd = types::Fd(self.dev.file.as_raw_fd());
        let Some(task) = self.tasks[idx].as_mut() else {
            return;
        };
        let entry = match &mut task.step {
            Step::Read { io, .. } | Step::Fill { io, .. } => {
                let (a, b) = io.segs[0];
                // SAFETY: `a..b` lies inside `io.buf` (segments come from the span plan).
                let ptr = unsafe { io.buf.as_mut_ptr().add(a) };
                opcode::Read::new(fd, ptr, (b - a) as u32)
                    .offset(io.dev_off + a as u64)
                    .build()
            }
            Step::Write { io, fua } => {
                let (a, b) = io.segs[0];
                // SAFETY: as above.
                let ptr = unsafe { io.buf.as_ptr().add(a) };
                let flags = if *fua { libc::RWF_DSYNC } else { 0 };
                opcode::Write::new(fd, ptr, (b - a) as u32)
                    .offset(io.dev_off + a as u64)
                    .rw_flags(flags)
                    .build()
            }
            Step::Fallocate {
                offset, len, mode, ..
            } => opcode::Fallocate::new(fd, *len)
                .offset(*offset)
                .mode(*mode)
                .build(),
            Step::SyncAfter | Step::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        };
        if let Err(e) = self.push(&entry.user_data(idx as u64)) {
            self.fail(idx, e);
        }
    }

    fn take(&mut self, idx: usize) -> Option<Task> {
        let t = self.tasks.get_mut(idx)?.take()?;
        self.free.push(idx);
        Some(t)
    }

    fn fail(&mut self, idx: usize, e: io::Error) {
        if let Some(task) = self.take(idx) {
            self.finish(task, Err(e));
        }
    }

    fn on_cqe(&mut self, idx: usize, res: i32) {
        if res < 0 {
            let errno = -res;
            if errno == libc::EINTR || errno == libc::EAGAIN {
                return self.issue(idx);
            }
            let Some(task) = self.take(idx) else { return };
            if let Step::Fallocate { op, .. } = &task.step
                && matches!(errno, libc::EOPNOTSUPP | libc::ENOSYS)
            {
                // The filesystem cannot punch or zero ranges: write zeroes instead.
                let r = sync_io::exec_zeroes_fallback(&self.dev, op);
                return self.finish(task, r);
            }
            return self.finish(task, Err(os_err(errno)));
        }
        let Some(task) = self.tasks.get_mut(idx).and_then(|t| t.as_mut()) else {
            return;
        };
        let n = res as usize;
        let (segs, short) = match &mut task.step {
            Step::Read { io, .. } | Step::Fill { io, .. } => {
                (&mut io.segs, io::ErrorKind::UnexpectedEof)
            }
            Step::Write { io, .. } => (&mut io.segs, io::ErrorKind::WriteZero),
            Step::Fallocate { .. } | Step::SyncAfter | Step::Flush => {
                return self.step_done(idx);
            }
        };
        let (a, b) = segs[0];
        if n == 0 {
            return self.fail(idx, io::Error::new(short, "short transfer at device end"));
        }
        // A short transfer resubmits the rest of the segment.
        if a + n < b {
            segs[0] = (a + n, b);
        } else {
            segs.pop_front();
        }
        if segs.is_empty() {
            self.step_done(idx)
        } else {
            self.issue(idx)
        }
    }

    /// The task at `idx` finished its step: complete it or start its next step.
    fn step_done(&mut self, idx: usize) {
        let Some(mut task) = self.take(idx) else {
            return;
        };
        match task.step {
            Step::Read { io, skip, len } => {
                // The whole span was read (every segment done), so every byte is written.
                let data = io.buf.into_bytes(skip..skip + len);
                self.complete(task.done, task.lock, Ok(DiskDone::Read(data)))
            }
            Step::Fill {
                mut io,
                data,
                skip,
                fua,
            } => {
                io.buf.as_mut_slice()[skip..skip + data.len()].copy_from_slice(&data);
                let len = io.buf.len();
                let io = io_of(IoBuf::Owned(io.buf), io.dev_off, vec![(0, len)]);
                task.step = Step::Write { io, fua };
                self.spawn(task);
            }
            Step::Fallocate { fua: true, .. } => {
                task.step = Step::SyncAfter;
                self.spawn(task);
            }
            Step::Flush => self.flush_done(&Ok(DiskDone::Done)),
            Step::Write { .. } | Step::Fallocate { .. } | Step::SyncAfter => {
                self.complete(task.done, task.lock, Ok(DiskDone::Done))
            }
        }
    }

    fn finish(&mut self, task: Task, r: io::Result<DiskDone>) {
        match task.step {
            Step::Flush => self.flush_done(&r),
            _ => self.complete(task.done, task.lock, r),
        }
    }

    /// Completes a request: releases its blocks (starting the requests that were waiting on
    /// them), then calls its callback.
    fn complete(&mut self, done: Option<Completion>, lock: BlockRange, r: io::Result<DiskDone>) {
        for req in self.locks.release(lock) {
            self.start(req);
        }
        self.active -= 1;
        if let Some(done) = done {
            self.ready.push((done, r));
        }
    }

    /// The flush fsync finished: every flush it covered gets its result.
    fn flush_done(&mut self, r: &io::Result<DiskDone>) {
        self.counters.completed.fetch_add(1, Ordering::SeqCst);
        let covered = std::mem::take(&mut self.flush_covered);
        self.active -= covered.len();
        for done in covered {
            let r = match r {
                Ok(_) => Ok(DiskDone::Done),
                Err(e) => Err(clone_err(e)),
            };
            self.ready.push((done, r));
        }
    }
}

fn clone_err(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(n) => os_err(n),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

fn io_of<B>(buf: B, dev_off: u64, segs: Vec<(usize, usize)>) -> Io<B> {
    let segs = segs.into_iter().filter(|(a, b)| a < b).collect();
    Io { buf, dev_off, segs }
}

fn lock_of(op: &DiskOp) -> BlockRange {
    match super::align::extent(op) {
        Some((offset, len)) if modifies(op) => blocks_of(offset, len),
        _ => (0, 0),
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Only reached with I/O in flight if the thread panicked: the kernel may still write
        // into those buffers, so they are leaked rather than freed.
        if self.tasks.iter().any(Option::is_some) || self.wake_armed {
            std::mem::forget(std::mem::take(&mut self.tasks));
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new([0; 8])));
        }
    }
}
