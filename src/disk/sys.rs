//! Thin wrappers over the Linux calls std does not offer (fallocate modes, BLKZEROOUT,
//! SEEK_DATA/SEEK_HOLE, eventfd). Each one is a single syscall with its error mapped to io::Error.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

/// `_IO(0x12, 127)`: zero a byte range of a block device (the kernel writes zeroes or uses
/// WRITE_ZEROES / unmap-with-zeroing, so the range always reads back as zeroes; BLKDISCARD
/// gives no such guarantee).
const BLKZEROOUT: libc::c_ulong = 0x127f;

/// fallocate(2) with `mode` on `[offset, offset+len)`.
pub fn fallocate(f: &File, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    let (o, l) = (to_off(offset)?, to_off(len)?);
    loop {
        // SAFETY: plain syscall on a valid fd owned by `f`; no memory is passed.
        let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, o, l) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Hole punch that keeps the file size.
pub const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
/// Zero (allocated, unwritten) range that keeps the file size.
pub const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;

/// BLKZEROOUT on a block device; `offset` and `len` must be logical-block aligned.
pub fn blkzeroout(f: &File, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKZEROOUT reads a `u64[2]` through the pointer, which lives across the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKZEROOUT as _, range.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// lseek(2) with SEEK_DATA or SEEK_HOLE; `None` when there is no such position (ENXIO).
pub fn seek(f: &File, offset: u64, whence: i32) -> io::Result<Option<u64>> {
    // SAFETY: plain syscall on a valid fd. The fd position moves, but every engine uses
    // positional I/O only, so nothing depends on it.
    let r = unsafe { libc::lseek(f.as_raw_fd(), to_off(offset)?, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENXIO) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// A new close-on-exec eventfd with counter 0 and extra `flags` (e.g. `EFD_NONBLOCK`), as a
/// `File` (read/write 8-byte counters through it).
pub fn eventfd(flags: i32) -> io::Result<File> {
    // SAFETY: plain syscall; no memory is passed.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn to_off(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset"))
}
