//! Backing-device I/O.
//!
//! - [`engine`]: the I/O contract of the backing-device engines.
//! - [`mem`], [`pio`], [`uring`]: the engines (memory, pread/pwrite thread pool, io_uring);
//!   [`open_engine`] picks one for a path.
//! - [`wait`]: blocking and async wrappers that submit one op and wait for it.
//! - [`align`], [`blocklock`], [`device`], [`sync_io`], [`sys`]: the pieces the engines share
//!   (request validation and RMW planning, the per-block lock table, opening with O_DIRECT,
//!   blocking execution, syscall wrappers); aligned buffers are [`crate::buf`]'s.
//! - [`metadev`]: the offline metadata operations (create-md, dump-md, wipe-md, get-gi,
//!   show-gi) and the attach-time read, on top of the pure codecs in [`crate::meta`].
//! - [`fs_sig`]: recognising filesystems and other signatures create-md must not destroy.
//! - [`faulty`]: a wrapper that fails chosen requests (`UDRBD_FAULT_FILE`), for tests.

pub mod align;
pub mod blocklock;
pub mod device;
pub mod engine;
pub mod faulty;
pub mod fs_sig;
pub mod md_move;
pub mod mem;
pub mod meta_io;
pub mod metadev;
pub mod pio;
pub mod sync_io;
pub mod sys;
pub mod uring;
pub mod wait;

use std::io;
use std::path::Path;
use std::sync::Arc;

pub use engine::{AllocRun, Completion, DiskDone, DiskEngine, DiskOp};
pub use mem::MemEngine;
pub use pio::PioEngine;
pub use uring::UringEngine;

/// Which engine [`open_engine`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// io_uring; fails if the kernel refuses rings.
    Uring,
    /// pread/pwrite on worker threads.
    Pio,
    /// io_uring, or pio when io_uring is unavailable (old kernel, `kernel.io_uring_disabled`,
    /// seccomp).
    #[default]
    Auto,
}

/// Opens the backing device at `path` with the chosen engine. `data_bytes` is the size of the
/// data area (internal metadata lives behind it); `None` uses the whole device.
pub fn open_engine(
    path: &Path,
    kind: EngineKind,
    data_bytes: Option<u64>,
) -> io::Result<Arc<dyn DiskEngine>> {
    match kind {
        EngineKind::Uring => Ok(Arc::new(UringEngine::open_auto(path, data_bytes)?)),
        EngineKind::Pio => Ok(Arc::new(PioEngine::open(path, data_bytes)?)),
        EngineKind::Auto => match UringEngine::open_auto(path, data_bytes) {
            Ok(e) => Ok(Arc::new(e)),
            Err(e) if uring_unavailable(&e) => {
                tracing::warn!(path = %path.display(), "io_uring unavailable ({e}), using pread/pwrite");
                Ok(Arc::new(PioEngine::open(path, data_bytes)?))
            }
            Err(e) => Err(e),
        },
    }
}

/// Errors io_uring_setup gives when rings are disabled or unsupported.
fn uring_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS | libc::EPERM | libc::EACCES | libc::EINVAL | libc::ENOMEM)
    )
}
