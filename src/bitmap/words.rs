//! Word-level helpers over `[u64]` bit vectors (bit `i` is word `i / 64`, bit `i % 64`, LSB first).
//!
//! Kept separate from [`super::Bitmap`] so the dirty-word tracker, which is itself a bit vector,
//! can reuse them without recursion. Every range operation touches whole words with masks, so a
//! range of N bits costs about N/64 steps rather than N.

/// Bits per storage word.
pub(crate) const WORD_BITS: u64 = 64;

/// Number of words needed to hold `nbits` bits.
pub(crate) fn words_for(nbits: u64) -> u64 {
    nbits.div_ceil(WORD_BITS)
}

/// Mask of the bits of word `w` that fall inside `[start, end)`. Requires the range to intersect
/// the word.
fn word_mask(w: u64, start: u64, end: u64) -> u64 {
    let lo_bit = w * WORD_BITS;
    let lo = start.saturating_sub(lo_bit).min(WORD_BITS);
    let hi = end.saturating_sub(lo_bit).min(WORD_BITS);
    debug_assert!(lo < hi);
    let upper = if hi == WORD_BITS {
        u64::MAX
    } else {
        (1u64 << hi) - 1
    };
    upper & !((1u64 << lo) - 1)
}

/// Mask of the valid bits in the last word of an `nbits`-bit vector (all ones when it is full).
pub(crate) fn tail_mask(nbits: u64) -> u64 {
    match nbits % WORD_BITS {
        0 => u64::MAX,
        r => (1u64 << r) - 1,
    }
}

/// Calls `f(word_index, mask)` for every word intersecting `[start, end)`, in order.
pub(crate) fn for_each_masked_word(start: u64, end: u64, mut f: impl FnMut(usize, u64)) {
    if start >= end {
        return;
    }
    let first = start / WORD_BITS;
    let last = (end - 1) / WORD_BITS;
    for w in first..=last {
        // Word indices fit in usize: the caller's vector has that many words.
        f(w as usize, word_mask(w, start, end));
    }
}

/// Sets every bit in `[start, end)` of a plain bit vector (no bookkeeping).
pub(crate) fn set_range_raw(words: &mut [u64], start: u64, end: u64) {
    for_each_masked_word(start, end, |w, m| words[w] |= m);
}

/// Population count of `[start, end)`.
pub(crate) fn count_range(words: &[u64], start: u64, end: u64) -> u64 {
    let mut n = 0u64;
    for_each_masked_word(start, end, |w, m| {
        n += u64::from((words[w] & m).count_ones())
    });
    n
}

/// First index `>= from` whose bit equals `want`, below `nbits`.
///
/// One loop serves both polarities: searching for a clear bit is searching for a set bit in the
/// complemented word.
pub(crate) fn find_next(words: &[u64], nbits: u64, from: u64, want: bool) -> Option<u64> {
    if from >= nbits {
        return None;
    }
    let flip = if want { 0 } else { u64::MAX };
    let mut w = (from / WORD_BITS) as usize;
    // Discard bits below `from` in the first word.
    let mut cur = (words[w] ^ flip) & !((1u64 << (from % WORD_BITS)) - 1);
    loop {
        if cur != 0 {
            let idx = w as u64 * WORD_BITS + u64::from(cur.trailing_zeros());
            // The complemented tail of the last word has ones past `nbits`; they are not bits.
            return (idx < nbits).then_some(idx);
        }
        w += 1;
        if w >= words.len() {
            return None;
        }
        cur = words[w] ^ flip;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(word_mask(0, 0, 64), u64::MAX);
        assert_eq!(word_mask(0, 3, 5), 0b11000);
        assert_eq!(word_mask(1, 60, 70), 0b11_1111);
        assert_eq!(word_mask(0, 60, 70), 0xF << 60);
        assert_eq!(tail_mask(64), u64::MAX);
        assert_eq!(tail_mask(65), 1);
        assert_eq!(words_for(0), 0);
        assert_eq!(words_for(1), 1);
        assert_eq!(words_for(64), 1);
        assert_eq!(words_for(65), 2);
    }

    #[test]
    fn find_clear_respects_nbits() {
        let words = [u64::MAX, 0b0111];
        assert_eq!(find_next(&words, 67, 0, false), None);
        assert_eq!(find_next(&words, 68, 0, false), Some(67));
        assert_eq!(find_next(&words, 68, 5, true), Some(5));
        assert_eq!(find_next(&words, 68, 68, true), None);
    }
}
