//! 4096-aligned heap buffers, so that a payload can go from the socket it arrived on to an
//! O_DIRECT disk write, and from an O_DIRECT read to the socket it leaves on, without a copy.
//!
//! O_DIRECT wants buffers aligned to the device's logical block (4096 covers 512 and 4096
//! devices) and `Vec<u8>` guarantees no alignment. So the NBD server and the peer link read
//! write payloads into an [`AlignedFill`] and hand them on as [`bytes::Bytes`] that still point
//! into the aligned allocation; the disk engines write such a `Bytes` as it is when
//! [`is_aligned`] says so (and copy into an [`AlignedBuf`] otherwise), and return reads as
//! `Bytes` over the buffer the kernel filled. The allocation never moves while the buffer lives,
//! which is what io_uring needs: the engine keeps the buffer alive until its completion.
//!
//! Large buffers come from a bounded pool of their own mappings ([`pool`]), not the heap.
//!
//! This module does no I/O of its own ([`AlignedFill::read_from`] reads from the caller's
//! stream); the I/O shells (`disk`, `net`, `nbd::server`) share it.

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes};
use std::alloc::{self, Layout};
use std::io;
use std::ops::Range;
use std::ptr::NonNull;
use tokio::io::{AsyncRead, AsyncReadExt};

pub mod pool;

/// Alignment of every [`AlignedBuf`].
pub const BUF_ALIGN: usize = 4096;

/// Whether `data` starts on a [`BUF_ALIGN`] boundary (an O_DIRECT transfer can use it as it is
/// when its length and device offset are aligned too).
pub fn is_aligned(data: &[u8]) -> bool {
    (data.as_ptr() as usize).is_multiple_of(BUF_ALIGN)
}

/// A 4096-aligned, fixed-length byte buffer.
///
/// Its bytes are initialised (zeroed, or copied in at allocation) except for a buffer made by
/// [`AlignedBuf::for_kernel_fill`], whose caller promises to have them all written before any is
/// read.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    from: Source,
}

/// Where an [`AlignedBuf`]'s memory came from, and so where it goes back to.
enum Source {
    Heap(Layout),
    /// A pooled mapping of this size class.
    Pool(usize),
}

// SAFETY: the buffer exclusively owns its allocation (like a `Box<[u8]>`); nothing else aliases
// it, so moving it to or sharing it with another thread is as safe as for `Box<[u8]>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give out `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` bytes (at least one, so every buffer has a real, aligned address),
    /// zeroed or not.
    fn alloc(len: usize, zeroed: bool) -> AlignedBuf {
        if len >= pool::POOL_MIN {
            let size = pool::class_of(len);
            let ptr = pool::take(size, zeroed);
            return AlignedBuf {
                ptr,
                len,
                from: Source::Pool(size),
            };
        }
        let layout = match Layout::from_size_align(len.max(1), BUF_ALIGN) {
            Ok(l) => l,
            Err(_) => alloc::handle_alloc_error(Layout::new::<u8>()),
        };
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe {
            if zeroed {
                alloc::alloc_zeroed(layout)
            } else {
                alloc::alloc(layout)
            }
        };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        AlignedBuf {
            ptr,
            len,
            from: Source::Heap(layout),
        }
    }

    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> AlignedBuf {
        Self::alloc(len, true)
    }

    /// A buffer holding a copy of `data` (no zeroing first: every byte is written by the
    /// copy, which matters for 1 MiB payloads).
    pub fn copy_of(data: &[u8]) -> AlignedBuf {
        let buf = Self::alloc(data.len(), false);
        // SAFETY: `ptr` is valid for `len` bytes and does not overlap `data`; after the copy
        // all `len` bytes are initialised, as `as_slice` requires.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf.ptr.as_ptr(), data.len()) };
        buf
    }

    /// A buffer whose bytes the kernel is about to write (an O_DIRECT read), not zeroed first:
    /// zeroing a 1 MiB read buffer costs as much as the copy this module exists to avoid.
    ///
    /// # Safety
    /// No byte may be read (through [`AlignedBuf::as_slice`], [`AlignedBuf::into_bytes`] or
    /// otherwise) before it was written, e.g. by a read that completed in full. Dropping the
    /// buffer unread is always fine.
    pub unsafe fn for_kernel_fill(len: usize) -> AlignedBuf {
        Self::alloc(len, false)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` bytes owned by self, initialised (see the type's doc).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Raw pointer for the kernel to read from; valid for `len` bytes while `self` lives.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Raw pointer for the kernel; valid for `len` bytes while `self` lives.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// `range` of the buffer as [`Bytes`], without a copy: the `Bytes` keeps the allocation
    /// alive (and aligned at its start when `range.start` is a multiple of [`BUF_ALIGN`]).
    pub fn into_bytes(self, range: Range<usize>) -> Bytes {
        Bytes::from_owner(self).slice(range)
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        match self.from {
            // SAFETY: allocated in `alloc` with exactly this layout, freed only here.
            Source::Heap(layout) => unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) },
            // SAFETY: taken from the pool for this size in `alloc`, given back only here.
            Source::Pool(size) => unsafe { pool::give(self.ptr, size) },
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

/// An [`AlignedBuf`] filled front to back through [`BufMut`] (tokio's `read_buf`), so a
/// payload is read from a socket straight into aligned memory without zeroing it first.
/// `prefix` bytes are skipped at the front, so that the part of the payload that matters to the
/// disk (a block after a packet's fixed fields) starts on an aligned address.
pub struct AlignedFill {
    buf: AlignedBuf,
    /// Where the payload starts in `buf`.
    start: usize,
    /// Bytes written so far, from `start`; the bytes in `start..start + filled` are initialised.
    filled: usize,
}

impl AlignedFill {
    /// Room for a `len`-byte payload starting at an aligned address.
    pub fn new(len: usize) -> AlignedFill {
        Self::with_offset(len, 0)
    }

    /// Room for a `len`-byte payload whose byte `offset` lands on an aligned address.
    pub fn with_offset(len: usize, offset: usize) -> AlignedFill {
        let start = (BUF_ALIGN - offset % BUF_ALIGN) % BUF_ALIGN;
        AlignedFill {
            // SAFETY: `filled` tracks what was written; only that part is ever read (`chunk_mut`
            // hands out the rest as uninitialised memory, `finish` only the written part).
            buf: unsafe { AlignedBuf::for_kernel_fill(start + len) },
            start,
            filled: 0,
        }
    }

    /// Bytes still to be written.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.start - self.filled
    }

    /// Copies `src` in (the bytes of a payload that were already buffered elsewhere).
    /// Panics if it does not fit, like [`BufMut::put_slice`].
    pub fn extend_from_slice(&mut self, src: &[u8]) {
        self.put_slice(src);
    }

    /// The bytes written so far, as [`Bytes`] over the aligned allocation. Only they are ever
    /// looked at: the skipped front and an unwritten tail stay unread.
    pub fn finish(self) -> Bytes {
        Bytes::from_owner(Filled(self))
    }

    /// Fills the rest from `r`; an end of stream first is `UnexpectedEof`. The fill has room
    /// for exactly the rest, so nothing past it is read.
    pub async fn read_from<R: AsyncRead + Unpin>(mut self, r: &mut R) -> io::Result<Bytes> {
        while self.remaining() > 0 {
            if r.read_buf(&mut self).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.finish())
    }
}

/// The written part of an [`AlignedFill`], as the owner of a [`Bytes`].
struct Filled(AlignedFill);

impl AsRef<[u8]> for Filled {
    fn as_ref(&self) -> &[u8] {
        let f = &self.0;
        // SAFETY: `start..start + filled` lies inside the allocation and was written (see
        // `AlignedFill::filled`); the rest of it is never turned into a slice.
        unsafe { std::slice::from_raw_parts(f.buf.ptr.as_ptr().add(f.start), f.filled) }
    }
}

impl std::fmt::Debug for AlignedFill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedFill")
            .field("len", &(self.buf.len() - self.start))
            .field("filled", &self.filled)
            .finish()
    }
}

// SAFETY: `chunk_mut` hands out exactly the unwritten tail of the allocation, and
// `advance_mut` only moves `filled` over bytes the caller wrote (its contract), never past the
// end (checked).
unsafe impl BufMut for AlignedFill {
    fn remaining_mut(&self) -> usize {
        self.remaining()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        assert!(
            cnt <= self.remaining(),
            "advance_mut past the end of the buffer"
        );
        self.filled += cnt;
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        let at = self.start + self.filled;
        let n = self.remaining();
        // SAFETY: `at + n` is the allocation's length; the range is owned by `self` and
        // borrowed mutably through `&mut self`.
        unsafe { UninitSlice::from_raw_parts_mut(self.buf.ptr.as_ptr().add(at), n) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        for len in [0, 1, 512, 4096, 12288] {
            let mut b = AlignedBuf::zeroed(len);
            assert_eq!(b.as_mut_ptr() as usize % BUF_ALIGN, 0);
            assert_eq!(b.len(), len);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.as_mut_slice().fill(7);
            assert!(b.as_slice().iter().all(|&x| x == 7));
        }
    }

    #[test]
    fn into_bytes_keeps_the_allocation_and_its_alignment() {
        let mut b = AlignedBuf::zeroed(8192);
        b.as_mut_slice()[4096..4100].copy_from_slice(b"abcd");
        let whole = b.into_bytes(4096..8192);
        assert!(is_aligned(&whole));
        assert_eq!(&whole[..4], b"abcd");
        let later = whole.slice(1..);
        assert!(!is_aligned(&later));
    }

    #[test]
    fn fill_through_buf_mut_in_pieces() {
        let mut f = AlignedFill::new(10_000);
        f.extend_from_slice(&[1; 100]);
        // What tokio's read_buf does: write into chunk_mut, then advance.
        let chunk = f.chunk_mut();
        let n = 9_000;
        for i in 0..n {
            chunk.write_byte(i, 2);
        }
        // SAFETY: the loop above wrote `n` bytes.
        unsafe { f.advance_mut(n) };
        f.extend_from_slice(&[3; 900]);
        assert_eq!(f.remaining(), 0);
        let b = f.finish();
        assert!(is_aligned(&b));
        assert_eq!(b.len(), 10_000);
        assert!(b[..100].iter().all(|&x| x == 1));
        assert!(b[100..9_100].iter().all(|&x| x == 2));
        assert!(b[9_100..].iter().all(|&x| x == 3));
    }

    #[test]
    fn offset_puts_a_chosen_byte_on_the_boundary() {
        for offset in [0, 29, 4096, 5000] {
            let mut f = AlignedFill::with_offset(6000, offset);
            f.extend_from_slice(&vec![9; 6000]);
            let b = f.finish();
            assert_eq!(b.len(), 6000);
            assert!(is_aligned(&b[offset..]), "offset {offset}");
        }
    }

    #[test]
    fn a_partly_filled_buffer_yields_only_what_was_written() {
        let mut f = AlignedFill::new(4096);
        f.extend_from_slice(b"xyz");
        assert_eq!(&f.finish()[..], b"xyz");
    }

    #[test]
    #[should_panic]
    fn overfilling_panics() {
        let mut f = AlignedFill::new(2);
        f.extend_from_slice(b"abc");
    }
}
