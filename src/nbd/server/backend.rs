//! The contract between the NBD listener and whatever stores the data (in the daemon: the
//! replication engine). It is callback-based and knows nothing about tokio, so the daemon's
//! driver can complete requests from any thread (an io_uring reaper, the replication loop)
//! without a runtime handle.
//!
//! Lifecycle of one client:
//! 1. Option haggling probes exports with [`ExportCatalog::lookup`]`(name, Purpose::Info)` and
//!    [`ExportCatalog::list`]. The server never calls `lookup` with [`Purpose::Go`]; opening
//!    goes through [`NbdBackend::open`] instead, which describes *and* opens in one step, so a
//!    refusal after a successful "go" cannot happen.
//! 2. `NBD_OPT_GO` / `NBD_OPT_EXPORT_NAME` call [`NbdBackend::open`]. On success the client
//!    holds the export open until every clone of [`OpenExport::io`] is dropped: the server keeps
//!    one for the connection and one inside each in-flight request's completion, so the export
//!    is released only after the connection is closed *and* every submitted request has
//!    completed (or its completion was dropped). The daemon counts opens with it ("Device is
//!    held open by someone", auto-demote when the last client leaves).
//! 3. Transmission submits [`IoCmd`]s with [`ExportIo::submit`]. Requests are already validated
//!    against the export's size, block sizes and flags; many are in flight at once and may
//!    complete in any order.

use crate::nbd::proto::{Errno, ExportCatalog, ExportInfo, Extent, GoRefusal};
use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

/// One validated transmission request. Offsets and lengths are multiples of the export's
/// minimum block size and lie inside the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoCmd {
    /// Read `len` bytes at `offset`; answer [`IoReply::Data`] with exactly `len` bytes.
    Read {
        /// Byte offset.
        offset: u64,
        /// Byte length (at most the advertised maximum block size).
        len: u32,
    },
    /// Write `data` at `offset`; with `fua` it must be durable before completing.
    Write {
        /// Byte offset.
        offset: u64,
        /// The payload (its length is the request length).
        data: Bytes,
        /// `NBD_CMD_FLAG_FUA`.
        fua: bool,
    },
    /// Make every write that completed before this was submitted durable.
    Flush,
    /// Discard the range; it must read back as zeroes afterwards (replicas must not differ).
    Trim {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u32,
        /// `NBD_CMD_FLAG_FUA`.
        fua: bool,
    },
    /// Zero the range.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u32,
        /// `NBD_CMD_FLAG_FUA`.
        fua: bool,
        /// Keep the range allocated (no hole punching).
        no_hole: bool,
        /// Fail with [`Errno::NotSup`] unless zeroing is faster than writing zeroes.
        fast_zero: bool,
    },
    /// `base:allocation` status from `offset`; answer [`IoReply::Extents`] in order, starting at
    /// `offset`. `len` is a hint: fewer bytes may be described, and the last extent may run past
    /// it. The server clips the list to the export and, for `NBD_CMD_FLAG_REQ_ONE`, to one
    /// extent of at most `len` bytes.
    BlockStatus {
        /// Byte offset.
        offset: u64,
        /// Byte length (a hint).
        len: u32,
    },
}

/// A successful completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoReply {
    /// Any command other than READ and BLOCK_STATUS finished.
    Done,
    /// The bytes of a [`IoCmd::Read`]; a wrong length is answered with `EIO`.
    Data(Bytes),
    /// The extents of a [`IoCmd::BlockStatus`] (proto's [`Extent`]: `STATE_HOLE`/`STATE_ZERO`
    /// flags). Zero-length extents end the list; an empty list is answered with `EIO`.
    Extents(Vec<Extent>),
}

/// A failed request: the errno the client sees and, with structured replies, a message for the
/// human at the client (e.g. "resource r0 lost its disk and has no connected peer").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoError {
    /// NBD error value.
    pub errno: Errno,
    /// Sent in the `NBD_REPLY_TYPE_ERROR` chunk (truncated to 4096 bytes); empty is fine.
    pub message: String,
}

impl IoError {
    /// An error with a message.
    pub fn new(errno: Errno, message: impl Into<String>) -> Self {
        IoError {
            errno,
            message: message.into(),
        }
    }
}

impl From<Errno> for IoError {
    fn from(errno: Errno) -> Self {
        IoError::new(errno, String::new())
    }
}

/// Completion of one [`IoCmd`]. Call it exactly once, from any thread, possibly inline inside
/// [`ExportIo::submit`]. Dropping it without calling answers the client with `EIO` (so a
/// backend that loses a request cannot hang the client or leak the in-flight slot). Calling it
/// after the client went away is harmless: the reply is discarded.
pub type IoDone = Box<dyn FnOnce(Result<IoReply, IoError>) + Send + 'static>;

/// I/O on one opened export.
pub trait ExportIo: Send + Sync + 'static {
    /// Starts `cmd`; `done` is called once when it finishes. Must not block on the I/O itself:
    /// it runs on the server's reactor threads.
    fn submit(&self, cmd: IoCmd, done: IoDone);
    /// Starts several requests that arrived together, as [`ExportIo::submit`] would one after
    /// another; a backend that can hand them on together (to the disk in one submission) does.
    fn submit_batch(&self, cmds: Vec<(IoCmd, IoDone)>) {
        for (cmd, done) in cmds {
            self.submit(cmd, done);
        }
    }
    /// Whether a write's payload may be read in now: `None` if so, or what to wait for first
    /// (the export's outgoing queues are full, e.g. replication to a slow peer). The reader
    /// waits before reading the payload, so the client is pushed back by TCP instead of the
    /// server buffering its data. Default: always room.
    fn write_room(&self) -> Option<RoomWait> {
        None
    }
}

/// What [`ExportIo::write_room`] waits on.
pub type RoomWait = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// An opened export: its description (as [`ExportCatalog::lookup`] would return it) and the
/// I/O handle. The export stays open while any clone of `io` lives.
#[derive(Clone)]
pub struct OpenExport {
    /// What the client is told (size, flags, block sizes).
    pub info: ExportInfo,
    /// Where requests go.
    pub io: Arc<dyn ExportIo>,
}

impl fmt::Debug for OpenExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenExport")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Completion of [`NbdBackend::open`]; call it once, from any thread. Dropping it refuses the
/// open (the client sees `NBD_REP_ERR_SHUTDOWN`).
pub type OpenDone = Box<dyn FnOnce(Result<OpenExport, GoRefusal>) + Send + 'static>;

/// What the NBD server serves. `lookup(_, Purpose::Info)` and `list` answer probes and must not
/// block (they run on the server's reactor threads); opening may take time (auto-promotion
/// waits for a metadata write), so it completes through a callback.
pub trait NbdBackend: ExportCatalog + Send + Sync + 'static {
    /// Opens `name` (as the client sent it; "" is the default export) for I/O, e.g. promoting
    /// a Secondary resource, and calls `done` with the result. Refuse with
    /// [`GoRefusal::unknown`] for a missing export and [`RepError::Policy`](crate::nbd::proto::RepError)
    /// for one that cannot be opened now.
    fn open(&self, name: &str, done: OpenDone);

    /// The rules TCP clients of export `name` must meet ([`super::access`]); by default none.
    fn policy(&self, _name: &str) -> super::access::ExportPolicy {
        super::access::ExportPolicy::default()
    }
}
