//! The dirty bitmap: one bit per 4 KiB block ([`BM_BLOCK_SIZE`]) that says "this block may differ
//! from the peer and must be resynced" (DRBD's quick-sync bitmap, reference §1.8).
//!
//! Storage is a `Vec<u64>` with bit `i` in word `i / 64` at position `i % 64` (LSB first), which is
//! also the order the on-disk page codec (`meta::bm_page`, 510 words per page) stores. Bits at or
//! beyond `len_bits()` are always zero: that invariant lets `count`, `find_next_set` and the
//! exchange encoder work on whole words without re-checking the tail.
//!
//! Two pieces of bookkeeping ride along:
//! - the number of set bits, kept up to date on every change so `count()` is O(1) (status and
//!   resync progress ask for it constantly);
//! - one "dirty" bit per storage word, so the metadata writer can flush only the on-disk pages
//!   that actually changed since the last flush ([`Bitmap::take_dirty_pages`]).
//!
//! Pure: no I/O, no clock, no randomness. Callers validate block indices against `len_bits()`;
//! an out-of-range index is a broken invariant and panics (like slice indexing), because silently
//! dropping a dirty bit would mean silently skipping a resync.

pub mod rle;
mod words;

#[cfg(test)]
mod tests;

use crate::types::{BM_BLOCK_SIZE, BlockIdx};
use std::fmt;
use words::{
    WORD_BITS, count_range, find_next, for_each_masked_word, set_range_raw, tail_mask, words_for,
};

/// Errors from building or combining bitmaps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapError {
    /// `from_words` got fewer words than `nbits` needs.
    #[error("bitmap of {nbits} bits needs {need} words, got {got}")]
    TooFewWords { nbits: u64, need: u64, got: usize },
    /// Two bitmaps of different sizes cannot be combined.
    #[error("bitmap size mismatch: ours {ours} bits, theirs {theirs} bits")]
    SizeMismatch { ours: u64, theirs: u64 },
    /// The bit count cannot be addressed on this platform.
    #[error("bitmap of {0} bits is too large for this platform")]
    TooLarge(u64),
}

/// A dirty bitmap with a cached population count and per-word dirty tracking.
#[derive(Clone)]
pub struct Bitmap {
    nbits: u64,
    words: Vec<u64>,
    /// Number of set bits; maintained incrementally.
    count: u64,
    /// One bit per element of `words`: set when that word changed since the last
    /// `take_dirty_pages`/`clear_dirty`.
    dirty: Vec<u64>,
}

impl Bitmap {
    /// An all-clear bitmap of `nbits` bits. Panics if the size cannot be addressed; use
    /// [`Bitmap::try_new`] when the size comes from outside.
    pub fn new(nbits: u64) -> Self {
        match Self::try_new(nbits) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        }
    }

    /// An all-clear bitmap of `nbits` bits, or an error if `nbits` does not fit in memory
    /// addressing on this platform.
    pub fn try_new(nbits: u64) -> Result<Self, BitmapError> {
        let nwords = word_count(nbits)?;
        Ok(Bitmap {
            nbits,
            words: vec![0; nwords],
            count: 0,
            dirty: vec![0; words_for(nwords as u64) as usize],
        })
    }

    /// A bitmap from raw words (e.g. read from the on-disk pages). Extra words are dropped and
    /// bits at or beyond `nbits` are cleared, because the last on-disk page is padded and its
    /// padding is not trusted. The result starts clean (nothing to flush).
    pub fn from_words(nbits: u64, mut words: Vec<u64>) -> Result<Self, BitmapError> {
        let need = word_count(nbits)?;
        if words.len() < need {
            return Err(BitmapError::TooFewWords {
                nbits,
                need: need as u64,
                got: words.len(),
            });
        }
        words.truncate(need);
        if let Some(last) = words.last_mut() {
            *last &= tail_mask(nbits);
        }
        let count = words.iter().map(|w| u64::from(w.count_ones())).sum();
        Ok(Bitmap {
            nbits,
            words,
            count,
            dirty: vec![0; words_for(need as u64) as usize],
        })
    }

    /// The storage words (bits beyond `len_bits()` are zero).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Number of bits (blocks covered).
    pub fn len_bits(&self) -> u64 {
        self.nbits
    }

    /// Number of set bits, O(1).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// True when no bit is set (nothing to resync).
    pub fn is_clear(&self) -> bool {
        self.count == 0
    }

    /// Whether block `b` is marked.
    pub fn test(&self, b: BlockIdx) -> bool {
        self.check_bit(b);
        let (w, m) = bit_pos(b.0);
        self.words[w] & m != 0
    }

    /// Marks block `b`. Returns whether it was previously clear.
    pub fn set(&mut self, b: BlockIdx) -> bool {
        self.check_bit(b);
        self.change_range(b.0, b.0 + 1, true) == 1
    }

    /// Clears block `b`. Returns whether it was previously set.
    pub fn clear(&mut self, b: BlockIdx) -> bool {
        self.check_bit(b);
        self.change_range(b.0, b.0 + 1, false) == 1
    }

    /// Marks blocks `[start, end)`. Returns how many bits changed.
    pub fn set_range(&mut self, start: BlockIdx, end: BlockIdx) -> u64 {
        self.check_range(start.0, end.0);
        self.change_range(start.0, end.0, true)
    }

    /// Clears blocks `[start, end)`. Returns how many bits changed.
    pub fn clear_range(&mut self, start: BlockIdx, end: BlockIdx) -> u64 {
        self.check_range(start.0, end.0);
        self.change_range(start.0, end.0, false)
    }

    /// Marks every block (full sync, DRBD's `invalidate`).
    pub fn set_all(&mut self) -> u64 {
        self.change_range(0, self.nbits, true)
    }

    /// Clears every block.
    pub fn clear_all(&mut self) -> u64 {
        self.change_range(0, self.nbits, false)
    }

    /// Marks every block the byte range `[offset, offset + len)` touches, even partially: a write
    /// to any byte makes the whole 4 KiB block out of sync. Returns how many bits changed.
    pub fn set_bytes(&mut self, offset: u64, len: u64) -> u64 {
        if len == 0 {
            return 0;
        }
        let last = match offset.checked_add(len - 1) {
            Some(l) => l,
            None => panic!("byte range {offset}+{len} overflows"),
        };
        self.set_range(
            BlockIdx(offset / BM_BLOCK_SIZE),
            BlockIdx(last / BM_BLOCK_SIZE + 1),
        )
    }

    /// Clears only the blocks that `[offset, offset + len)` covers entirely. A partially written
    /// block stays marked, because the rest of it may still differ (DRBD clears a bit only for a
    /// write covering the whole block). The device is taken to be `len_bits() * 4 KiB` long; use
    /// [`Bitmap::clear_bytes_covered_dev`] when its last block is partial.
    pub fn clear_bytes_covered(&mut self, offset: u64, len: u64) -> u64 {
        let dev = self.nbits.saturating_mul(BM_BLOCK_SIZE);
        self.clear_bytes_covered_dev(offset, len, dev)
    }

    /// Like [`Bitmap::clear_bytes_covered`] for a device of `dev_bytes` bytes: a range that reaches
    /// the end of the device covers the device's final, partial block (DRBD's `drbd_set_in_sync`
    /// does the same), otherwise that block could never be cleared.
    pub fn clear_bytes_covered_dev(&mut self, offset: u64, len: u64, dev_bytes: u64) -> u64 {
        let end_byte = match offset.checked_add(len) {
            Some(e) => e,
            None => panic!("byte range {offset}+{len} overflows"),
        };
        let start = offset.div_ceil(BM_BLOCK_SIZE);
        let end = if end_byte >= dev_bytes {
            end_byte.div_ceil(BM_BLOCK_SIZE)
        } else {
            end_byte / BM_BLOCK_SIZE
        };
        if start >= end {
            return 0;
        }
        self.clear_range(BlockIdx(start), BlockIdx(end))
    }

    /// Number of set bits in `[start, end)`.
    pub fn count_range(&self, start: BlockIdx, end: BlockIdx) -> u64 {
        self.check_range(start.0, end.0);
        count_range(&self.words, start.0, end.0)
    }

    /// First set bit at or after `from`.
    pub fn find_next_set(&self, from: BlockIdx) -> Option<BlockIdx> {
        find_next(&self.words, self.nbits, from.0, true).map(BlockIdx)
    }

    /// First clear bit at or after `from`.
    pub fn find_next_clear(&self, from: BlockIdx) -> Option<BlockIdx> {
        find_next(&self.words, self.nbits, from.0, false).map(BlockIdx)
    }

    /// The next run of set bits at or after `from`, as `[start, end)`. The run extends as far
    /// right as it goes; if `from` falls inside a run, the run is reported from `from` (resync
    /// resumes mid-run that way). Walk the whole bitmap with `from = previous end`.
    pub fn next_run(&self, from: BlockIdx) -> Option<(BlockIdx, BlockIdx)> {
        let start = self.find_next_set(from)?;
        let end = self.find_next_clear(start).unwrap_or(BlockIdx(self.nbits));
        Some((start, end))
    }

    /// ORs `other` into `self` (on reconnect both sides' out-of-sync sets are merged). Returns how
    /// many bits became set.
    pub fn union_with(&mut self, other: &Bitmap) -> Result<u64, BitmapError> {
        if other.nbits != self.nbits {
            return Err(BitmapError::SizeMismatch {
                ours: self.nbits,
                theirs: other.nbits,
            });
        }
        self.union_prefix(other)
    }

    /// Grows to `nbits` bits (a larger backing device); the new bits start clear. Never
    /// shrinks.
    pub fn grow(&mut self, nbits: u64) -> Result<(), BitmapError> {
        if nbits <= self.nbits {
            return Ok(());
        }
        let need = word_count(nbits)?;
        self.words.resize(need, 0);
        self.dirty.resize(words_for(need as u64) as usize, 0);
        self.nbits = nbits;
        Ok(())
    }

    /// The first `nbits` bits as a bitmap of their own (the part of the bitmap a device of that
    /// size uses: what the handshake exchanges once both sides agreed on the size).
    pub fn prefix(&self, nbits: u64) -> Bitmap {
        let nbits = nbits.min(self.nbits);
        let n = (nbits.div_ceil(64)) as usize;
        match Bitmap::from_words(nbits, self.words[..n].to_vec()) {
            Ok(b) => b,
            // Unreachable: `n` words are exactly what `nbits` needs.
            Err(_) => Bitmap::new(nbits),
        }
    }

    /// ORs `other` into the first `other.len_bits()` bits; returns the newly set bits. `other`
    /// may be shorter (a peer's bitmap of the agreed size against ours of the whole disk).
    pub fn union_prefix(&mut self, other: &Bitmap) -> Result<u64, BitmapError> {
        if other.nbits > self.nbits {
            return Err(BitmapError::SizeMismatch {
                ours: self.nbits,
                theirs: other.nbits,
            });
        }
        let mut added = 0u64;
        for (i, (mine, theirs)) in self.words.iter_mut().zip(&other.words).enumerate() {
            let new = *mine | *theirs;
            if new != *mine {
                added += u64::from((new ^ *mine).count_ones());
                *mine = new;
                mark_dirty(&mut self.dirty, i);
            }
        }
        self.count += added;
        Ok(added)
    }

    /// Indices of on-disk pages (of `page_words` words each) that changed since the last
    /// [`Bitmap::take_dirty_pages`], ascending, without resetting the tracking.
    pub fn dirty_pages(&self, page_words: usize) -> Vec<usize> {
        assert!(page_words > 0, "page_words must be positive");
        let nwords = self.words.len() as u64;
        let mut pages = Vec::new();
        let mut from = 0u64;
        while let Some(w) = find_next(&self.dirty, nwords, from, true) {
            let page = w / page_words as u64;
            pages.push(page as usize);
            // Skip the rest of this page: one dirty word is enough to rewrite it.
            from = (page + 1).saturating_mul(page_words as u64);
        }
        pages
    }

    /// Like [`Bitmap::dirty_pages`], and resets the tracking: the caller is about to write those
    /// pages. If the write fails, call [`Bitmap::mark_pages_dirty`] to retry them later.
    pub fn take_dirty_pages(&mut self, page_words: usize) -> Vec<usize> {
        let pages = self.dirty_pages(page_words);
        self.clear_dirty();
        pages
    }

    /// Whether any word changed since the last flush.
    pub fn has_dirty(&self) -> bool {
        self.dirty.iter().any(|&d| d != 0)
    }

    /// Forgets pending changes (the bitmap now matches what is on disk).
    pub fn clear_dirty(&mut self) {
        self.dirty.fill(0);
    }

    /// Marks every word dirty, e.g. after `create-md` or a resize, so the next flush writes all.
    pub fn mark_all_dirty(&mut self) {
        let nwords = self.words.len() as u64;
        set_range_raw(&mut self.dirty, 0, nwords);
    }

    /// Marks the given pages dirty again (a flush failed). Pages past the end are ignored.
    pub fn mark_pages_dirty(&mut self, pages: &[usize], page_words: usize) {
        assert!(page_words > 0, "page_words must be positive");
        let nwords = self.words.len() as u64;
        for &p in pages {
            let start = (p as u64).saturating_mul(page_words as u64).min(nwords);
            let end = start.saturating_add(page_words as u64).min(nwords);
            set_range_raw(&mut self.dirty, start, end);
        }
    }

    /// Sets or clears `[start, end)` word by word, keeping `count` and `dirty` in step. Returns
    /// how many bits changed. The range is already validated.
    fn change_range(&mut self, start: u64, end: u64, set: bool) -> u64 {
        let Bitmap {
            words,
            dirty,
            count,
            ..
        } = self;
        let mut changed = 0u64;
        for_each_masked_word(start, end, |w, m| {
            let old = words[w];
            let new = if set { old | m } else { old & !m };
            if new != old {
                changed += u64::from((new ^ old).count_ones());
                words[w] = new;
                mark_dirty(dirty, w);
            }
        });
        if set {
            *count += changed;
        } else {
            *count -= changed;
        }
        changed
    }

    fn check_bit(&self, b: BlockIdx) {
        assert!(
            b.0 < self.nbits,
            "block {} out of range (bitmap has {} bits)",
            b.0,
            self.nbits
        );
    }

    fn check_range(&self, start: u64, end: u64) {
        assert!(
            start <= end && end <= self.nbits,
            "block range {start}..{end} out of range (bitmap has {} bits)",
            self.nbits
        );
    }
}

impl PartialEq for Bitmap {
    /// Two bitmaps are equal when they mark the same blocks; flush state does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.nbits == other.nbits && self.words == other.words
    }
}

impl Eq for Bitmap {}

impl fmt::Debug for Bitmap {
    // A 1 TiB device has 4 M words; printing them would bury any log or assertion message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bitmap")
            .field("nbits", &self.nbits)
            .field("count", &self.count)
            .field("dirty", &self.has_dirty())
            .finish_non_exhaustive()
    }
}

/// Storage words for `nbits`, as a `usize` the platform can allocate.
fn word_count(nbits: u64) -> Result<usize, BitmapError> {
    usize::try_from(words_for(nbits)).map_err(|_| BitmapError::TooLarge(nbits))
}

/// Word index and mask of bit `i`.
fn bit_pos(i: u64) -> (usize, u64) {
    ((i / WORD_BITS) as usize, 1u64 << (i % WORD_BITS))
}

fn mark_dirty(dirty: &mut [u64], word: usize) {
    dirty[word / WORD_BITS as usize] |= 1u64 << (word % WORD_BITS as usize);
}
