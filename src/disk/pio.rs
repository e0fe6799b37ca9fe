//! pread/pwrite engine: a few worker threads run each op with blocking syscalls
//! ([`super::sync_io`]). Modifying ops take their 4 KiB blocks in the lock table at submit
//! time, on the submitting thread, so overlapping writes keep submission order; an op that has to
//! wait is parked in the table and run by the worker that releases its blocks.

use std::io;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::align::{extent, modifies, validate};
use super::blocklock::{BlockLocks, BlockRange, blocks_of};
use super::device::Device;
use super::engine::{AllocRun, Completion, DiskEngine, DiskOp};
use super::sync_io;

/// Worker threads per device: enough to overlap a flush with reads and writes on a small box.
const WORKERS: usize = 4;

struct Job {
    op: DiskOp,
    done: Completion,
    /// Blocks held for this job (empty for reads and flushes).
    lock: BlockRange,
}

struct Shared {
    dev: Device,
    locks: Mutex<BlockLocks<Job>>,
}

impl Shared {
    fn locks(&self) -> MutexGuard<'_, BlockLocks<Job>> {
        // The table is only mutated in short non-panicking sections; a poisoned lock still
        // holds a consistent table.
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The thread-pool engine.
pub struct PioEngine {
    shared: Arc<Shared>,
    tx: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for PioEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PioEngine")
            .field("dev", &self.shared.dev)
            .finish()
    }
}

impl PioEngine {
    /// Opens `path` (see [`Device::open`] for `data_bytes` and the O_DIRECT choice).
    pub fn open(path: &Path, data_bytes: Option<u64>) -> io::Result<PioEngine> {
        Ok(Self::with_device(Device::open(path, data_bytes)?))
    }

    fn with_device(dev: Device) -> PioEngine {
        let shared = Arc::new(Shared {
            dev,
            locks: Mutex::new(BlockLocks::default()),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..WORKERS)
            .map(|i| {
                let (shared, rx) = (Arc::clone(&shared), Arc::clone(&rx));
                std::thread::Builder::new()
                    .name(format!("udrbd-pio-{i}"))
                    .spawn(move || worker(&shared, &rx))
            })
            .filter_map(|r| {
                r.map_err(|e| tracing::warn!("cannot start a pio worker: {e}"))
                    .ok()
            })
            .collect();
        PioEngine {
            shared,
            tx: Some(tx),
            workers,
        }
    }

    /// Whether the device was opened with O_DIRECT.
    pub fn is_direct(&self) -> bool {
        self.shared.dev.direct
    }
}

fn worker(shared: &Shared, rx: &Mutex<Receiver<Job>>) {
    loop {
        // Hold the receiver lock only while waiting for one job.
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(p) => p.into_inner().recv(),
        };
        let Ok(job) = job else { return };
        run_chain(shared, job);
    }
}

/// Runs `job`, then every job its lock release granted, on this thread: a parked job can
/// never outlive the workers that could release it.
fn run_chain(shared: &Shared, job: Job) {
    let mut ready = vec![job];
    while let Some(job) = ready.pop() {
        let result = sync_io::exec(&shared.dev, job.op);
        let granted = shared.locks().release(job.lock);
        ready.extend(granted.into_iter().rev());
        (job.done)(result);
    }
}

impl DiskEngine for PioEngine {
    fn size(&self) -> u64 {
        self.shared.dev.size()
    }

    fn grow_to(&self, bytes: u64) {
        self.shared.dev.set_size(bytes);
    }

    fn submit(&self, op: DiskOp, done: Completion) {
        if let Err(e) = validate(&op, self.shared.dev.size()) {
            return done(Err(e));
        }
        let lock = match extent(&op) {
            Some((offset, len)) if modifies(&op) => blocks_of(offset, len),
            _ => (0, 0),
        };
        let job = Job { op, done, lock };
        let Some(job) = self.shared.locks().acquire(lock, job) else {
            return;
        };
        let Some(tx) = &self.tx else {
            return (job.done)(Err(io::Error::other("engine is shutting down")));
        };
        if let Err(mpsc::SendError(job)) = tx.send(job) {
            // All workers are gone (they could not be started): run it here rather than lose it.
            run_chain(&self.shared, job);
        }
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<AllocRun>> {
        self.shared.dev.block_status(offset, len)
    }
}

impl Drop for PioEngine {
    fn drop(&mut self) {
        // Closing the channel lets each worker finish what it has and exit.
        self.tx = None;
        let me = std::thread::current().id();
        for w in self.workers.drain(..) {
            // A completion callback may drop the last handle on a worker; that worker cannot
            // join itself and exits on its own once the channel is empty.
            if w.thread().id() == me {
                continue;
            }
            let _ = w.join();
        }
    }
}
