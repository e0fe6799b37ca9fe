//! Where large [`AlignedBuf`](super::AlignedBuf)s come from: their own anonymous mappings,
//! and freed ones kept for reuse up to [`POOL_CAP`] bytes.
//!
//! Why not the heap: a 1 MiB payload is freed on another thread than the one that allocated
//! it, in no particular order, so glibc's arenas fragment and keep the freed megabytes
//! resident (a Primary that had written 1 GiB sat at 120 MiB RSS, idle; `benches/rss_pressure.sh`),
//! while mmap for each buffer costs a page fault per 4 KiB and the kernel's zeroing every time
//! (a fifth of the CPU of an initial sync). A small pool keeps what the steady state reuses
//! (the requests a few clients have in flight, a resync's window) and gives the rest back.

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::Mutex;

/// Buffers at least this large come from the pool; smaller ones from the heap, where they
/// are cheap and do not fragment it much.
pub(super) const POOL_MIN: usize = 64 * 1024;
/// Pooled sizes are multiples of this, so a buffer serves every length up to its size class.
const CLASS: usize = 64 * 1024;
/// Free buffers kept for reuse, in bytes; beyond that a freed buffer is unmapped.
pub(super) const POOL_CAP: usize = 32 << 20;

/// The size class (mapping length) for a buffer of `len` bytes.
pub(super) fn class_of(len: usize) -> usize {
    len.div_ceil(CLASS) * CLASS
}

struct Pool {
    free: BTreeMap<usize, Vec<NonNull<u8>>>,
    free_bytes: usize,
}

// SAFETY: the pointers are mappings nobody else references while they are in the pool.
unsafe impl Send for Pool {}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: BTreeMap::new(),
    free_bytes: 0,
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A mapping of `size` bytes (a size class), page-aligned; `zeroed` asks for zero bytes.
/// Panics, as the global allocator does, when memory is exhausted.
pub(super) fn take(size: usize, zeroed: bool) -> NonNull<u8> {
    let reused = {
        let mut p = pool();
        let r = p.free.get_mut(&size).and_then(Vec::pop);
        if r.is_some() {
            p.free_bytes -= size;
        }
        r
    };
    if let Some(ptr) = reused {
        if zeroed {
            // SAFETY: the mapping is `size` bytes, owned by the caller from here on.
            unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, size) };
        }
        return ptr;
    }
    // SAFETY: an anonymous private mapping, no address hint; checked below.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    match NonNull::new(raw.cast::<u8>()) {
        // A fresh anonymous mapping reads as zeroes already.
        Some(p) if raw != libc::MAP_FAILED => p,
        _ => std::alloc::handle_alloc_error(
            std::alloc::Layout::from_size_align(size, super::BUF_ALIGN)
                .unwrap_or(std::alloc::Layout::new::<u8>()),
        ),
    }
}

/// Gives back a mapping [`take`] returned for `size`: kept while the pool has room, unmapped
/// otherwise.
///
/// # Safety
/// `ptr` came from [`take`] with this `size`, and nothing uses it any more.
pub(super) unsafe fn give(ptr: NonNull<u8>, size: usize) {
    {
        let mut p = pool();
        if p.free_bytes + size <= POOL_CAP {
            p.free_bytes += size;
            p.free.entry(size).or_default().push(ptr);
            return;
        }
    }
    // SAFETY: per the contract, a whole mapping of `size` bytes nobody uses.
    unsafe { libc::munmap(ptr.as_ptr().cast(), size) };
}

/// Bytes the pool holds free now (for tests and metrics).
pub fn free_bytes() -> usize {
    pool().free_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_up_to_the_cap_and_zeroed_on_request() {
        let size = class_of(POOL_MIN + 1);
        assert_eq!(size, 2 * CLASS);
        let a = take(size, false);
        // SAFETY: `a` is a fresh mapping of `size` bytes.
        unsafe { std::ptr::write_bytes(a.as_ptr(), 0xab, size) };
        let before = free_bytes();
        // SAFETY: from `take`, unused from here.
        unsafe { give(a, size) };
        assert_eq!(free_bytes(), before + size);
        let b = take(size, true);
        // SAFETY: `b` holds `size` initialised bytes.
        let bytes = unsafe { std::slice::from_raw_parts(b.as_ptr(), size) };
        assert!(
            bytes.iter().all(|x| *x == 0),
            "a reused buffer was not zeroed"
        );
        // SAFETY: from `take`.
        unsafe { give(b, size) };
        // Far more than the cap: the pool keeps at most the cap.
        let many: Vec<_> = (0..(POOL_CAP / size + 8))
            .map(|_| take(size, false))
            .collect();
        for p in many {
            // SAFETY: from `take`.
            unsafe { give(p, size) };
        }
        assert!(free_bytes() <= POOL_CAP);
    }
}
