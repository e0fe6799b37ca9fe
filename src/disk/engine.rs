//! The backing-device I/O contract every engine implements (io_uring, pread/pwrite, memory).
//!
//! Submission is callback-based so the same engine serves the tokio world (the callback sends on
//! a oneshot) and the driver that feeds completions back into the sans-IO Engine. An engine never
//! blocks the submitting thread on disk I/O; completions may run on any thread.
//!
//! Semantics every engine guarantees (the differential test checks they agree):
//! - offsets and lengths are in bytes and may be 512-byte aligned only; the engine does whatever
//!   read-modify-write the device needs, serialised per 4 KiB block;
//! - `Write { fua: true }` is durable when it completes (RWF_DSYNC on io_uring);
//! - `Flush` is durable for every write that *completed* before the flush was submitted; engines
//!   may coalesce flushes only with flushes that arrived before their fdatasync started;
//! - `Trim` and `WriteZeroes` make the range read back as zeroes, deterministically (hole punch on
//!   files, BLKZEROOUT on block devices), so replicas never differ after a TRIM;
//! - a request beyond `size()` fails with `EINVAL`-like [`std::io::ErrorKind::InvalidInput`]
//!   rather than touching the device.

use std::io;

/// One request to the backing device (the same shape as an application request).
pub use crate::types::BlockOp as DiskOp;

/// A successful completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskDone {
    /// The bytes of a [`DiskOp::Read`] (often straight over the buffer the device filled).
    Read(bytes::Bytes),
    /// Any other op finished.
    Done,
}

/// Called exactly once per submitted op, on an engine thread or inline.
pub type Completion = Box<dyn FnOnce(io::Result<DiskDone>) + Send + 'static>;

/// One allocation-status run, for NBD `base:allocation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocRun {
    /// Length of the run in bytes.
    pub len: u64,
    /// The run is a hole (reads as zeroes and holds no storage).
    pub hole: bool,
    /// The run reads as zeroes.
    pub zero: bool,
}

/// A backing device (the data area only: callers hand it offsets below the metadata).
pub trait DiskEngine: Send + Sync + 'static {
    /// Usable size in bytes.
    fn size(&self) -> u64;
    /// The data area grew to `bytes` (`drbdadm resize`); engines that check ranges accept
    /// the larger size from now on. The default keeps the size.
    fn grow_to(&self, bytes: u64) {
        let _ = bytes;
    }
    /// Starts `op`; `done` is called once when it finishes.
    fn submit(&self, op: DiskOp, done: Completion);
    /// Starts several ops, as [`DiskEngine::submit`] would one after another. An engine that
    /// can hand them to the kernel together does (io_uring: one `io_uring_enter`, so the block
    /// layer plugs them into one dispatch and a virtio disk gets one notification, not one per
    /// request).
    fn submit_batch(&self, ops: Vec<(DiskOp, Completion)>) {
        for (op, done) in ops {
            self.submit(op, done);
        }
    }
    /// Allocation runs covering `[offset, offset+len)` (clipped to the device), in order.
    /// Engines without the information answer one allocated, non-zero run.
    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<AllocRun>>;
}
