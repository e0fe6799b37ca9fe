//! Property tests: every `Bitmap` operation against a `Vec<bool>` model, and the exchange format's
//! round-trip and rejection guarantees.

use super::rle::{self, RleError};
use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

const BS: u64 = BM_BLOCK_SIZE;

/// A position biased toward word boundaries (63, 64, 65, 127, ...) where masks go wrong.
fn pos() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u16>().prop_map(u64::from),
        (0u64..6, prop_oneof![Just(-1i64), Just(0), Just(1)])
            .prop_map(|(k, d)| (k as i64 * 64 + d).max(0) as u64),
    ]
}

/// A byte delta within a block, biased toward the block's edges.
fn delta() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1), Just(BS - 1), 0..BS]
}

#[derive(Debug, Clone)]
enum Op {
    Set(u64),
    Clear(u64),
    SetRange(u64, u64),
    ClearRange(u64, u64),
    SetBytes(u64, u64, u64, u64),
    ClearBytes(u64, u64, u64, u64),
    /// Clear with a device whose last block is short by `.4` bytes.
    ClearBytesDev(u64, u64, u64, u64, u64),
    Union(Vec<(u64, u64)>),
    SetAll,
    ClearAll,
    TakeDirty(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        pos().prop_map(Op::Set),
        pos().prop_map(Op::Clear),
        (pos(), pos()).prop_map(|(a, b)| Op::SetRange(a, b)),
        (pos(), pos()).prop_map(|(a, b)| Op::ClearRange(a, b)),
        (pos(), delta(), pos(), delta()).prop_map(|(a, b, c, d)| Op::SetBytes(a, b, c, d)),
        (pos(), delta(), pos(), delta()).prop_map(|(a, b, c, d)| Op::ClearBytes(a, b, c, d)),
        (pos(), delta(), pos(), delta(), 0..BS)
            .prop_map(|(a, b, c, d, e)| Op::ClearBytesDev(a, b, c, d, e)),
        prop::collection::vec((pos(), pos()), 0..4).prop_map(Op::Union),
        Just(Op::SetAll),
        Just(Op::ClearAll),
        prop_oneof![Just(1usize), Just(2), Just(3), Just(510)].prop_map(Op::TakeDirty),
    ]
}

fn nbits() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..300, Just(64), Just(128), Just(129), Just(1000)]
}

/// Maps two raw positions onto a valid `[start, end)` inside `0..=n`.
fn range(a: u64, b: u64, n: u64) -> (u64, u64) {
    let (a, b) = (a % (n + 1), b % (n + 1));
    (a.min(b), a.max(b))
}

/// Maps raw block/delta pairs onto a byte range inside `[0, total]`.
fn byte_range(a: u64, da: u64, b: u64, db: u64, total: u64) -> (u64, u64) {
    let blocks = total.div_ceil(BS) + 1;
    let x = ((a % blocks) * BS + da).min(total);
    let y = ((b % blocks) * BS + db).min(total);
    (x.min(y), x.max(y) - x.min(y))
}

fn model_words(m: &[bool]) -> Vec<u64> {
    let mut w = vec![0u64; m.len().div_ceil(64)];
    for (i, &b) in m.iter().enumerate() {
        if b {
            w[i / 64] |= 1 << (i % 64);
        }
    }
    w
}

fn model_runs(m: &[bool], from: usize) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    let mut i = from;
    while i < m.len() {
        if m[i] {
            let s = i;
            while i < m.len() && m[i] {
                i += 1;
            }
            runs.push((s as u64, i as u64));
        } else {
            i += 1;
        }
    }
    runs
}

fn build(n: u64, ranges: &[(u64, u64)]) -> (Bitmap, Vec<bool>) {
    let mut bm = Bitmap::new(n);
    let mut m = vec![false; n as usize];
    for &(a, b) in ranges {
        let (s, e) = range(a, b, n);
        bm.set_range(BlockIdx(s), BlockIdx(e));
        m[s as usize..e as usize].fill(true);
    }
    (bm, m)
}

/// Applies `op` to both, checking the change counts the bitmap reports, and records which words
/// the model says changed (the expected dirty set).
fn apply(bm: &mut Bitmap, m: &mut [bool], op: &Op, dirty: &mut BTreeSet<usize>) {
    let n = m.len() as u64;
    let total = n * BS;
    let before = model_words(m);
    let count_before = m.iter().filter(|&&b| b).count() as u64;
    let reported: Option<u64> = match *op {
        Op::Set(i) | Op::Clear(i) if n == 0 => {
            let _ = i;
            None
        }
        Op::Set(i) => {
            let i = i % n;
            let was = m[i as usize];
            m[i as usize] = true;
            assert_eq!(bm.set(BlockIdx(i)), !was);
            None
        }
        Op::Clear(i) => {
            let i = i % n;
            let was = m[i as usize];
            m[i as usize] = false;
            assert_eq!(bm.clear(BlockIdx(i)), was);
            None
        }
        Op::SetRange(a, b) => {
            let (s, e) = range(a, b, n);
            m[s as usize..e as usize].fill(true);
            Some(bm.set_range(BlockIdx(s), BlockIdx(e)))
        }
        Op::ClearRange(a, b) => {
            let (s, e) = range(a, b, n);
            m[s as usize..e as usize].fill(false);
            Some(bm.clear_range(BlockIdx(s), BlockIdx(e)))
        }
        Op::SetBytes(a, da, b, db) => {
            let (off, len) = byte_range(a, da, b, db, total);
            if len > 0 {
                for (i, bit) in m.iter_mut().enumerate() {
                    let (lo, hi) = (i as u64 * BS, (i as u64 + 1) * BS);
                    if lo < off + len && off < hi {
                        *bit = true;
                    }
                }
            }
            Some(bm.set_bytes(off, len))
        }
        Op::ClearBytes(a, da, b, db) => {
            let (off, len) = byte_range(a, da, b, db, total);
            for (i, bit) in m.iter_mut().enumerate() {
                let (lo, hi) = (i as u64 * BS, (i as u64 + 1) * BS);
                if off <= lo && hi <= off + len {
                    *bit = false;
                }
            }
            Some(bm.clear_bytes_covered(off, len))
        }
        Op::ClearBytesDev(a, da, b, db, short) => {
            // A device whose last block is partial: still `n` blocks.
            let dev = if n == 0 { 0 } else { total - short };
            let (off, len) = byte_range(a, da, b, db, dev);
            for (i, bit) in m.iter_mut().enumerate() {
                let lo = i as u64 * BS;
                let hi = ((i as u64 + 1) * BS).min(dev);
                if off <= lo && hi <= off + len {
                    *bit = false;
                }
            }
            Some(bm.clear_bytes_covered_dev(off, len, dev))
        }
        Op::Union(ref ranges) => {
            let (other, om) = build(n, ranges);
            for (x, y) in m.iter_mut().zip(&om) {
                *x |= *y;
            }
            Some(bm.union_with(&other).expect("same size"))
        }
        Op::SetAll => {
            m.fill(true);
            Some(bm.set_all())
        }
        Op::ClearAll => {
            m.fill(false);
            Some(bm.clear_all())
        }
        Op::TakeDirty(pw) => {
            let want: Vec<usize> = dirty
                .iter()
                .map(|w| w / pw)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            assert_eq!(bm.dirty_pages(pw), want);
            assert_eq!(bm.has_dirty(), !want.is_empty());
            assert_eq!(bm.take_dirty_pages(pw), want);
            assert!(!bm.has_dirty());
            assert!(bm.take_dirty_pages(pw).is_empty());
            dirty.clear();
            None
        }
    };
    let after = model_words(m);
    for (i, (x, y)) in before.iter().zip(&after).enumerate() {
        if x != y {
            dirty.insert(i);
        }
    }
    let count_after = m.iter().filter(|&&b| b).count() as u64;
    if let Some(r) = reported {
        assert_eq!(r, count_after.abs_diff(count_before), "{op:?}");
    }
}

fn check(bm: &Bitmap, m: &[bool], probes: &[u64]) {
    let n = m.len() as u64;
    assert_eq!(bm.len_bits(), n);
    assert_eq!(bm.words(), model_words(m).as_slice());
    assert_eq!(bm.count(), m.iter().filter(|&&b| b).count() as u64);
    assert_eq!(bm.is_clear(), bm.count() == 0);
    for (i, &b) in m.iter().enumerate() {
        assert_eq!(bm.test(BlockIdx(i as u64)), b, "bit {i}");
    }
    for &p in probes {
        let from = p % (n + 2); // also probe at and past the end
        let fs = (from as usize..m.len())
            .find(|&i| m[i])
            .map(|i| BlockIdx(i as u64));
        let fc = (from as usize..m.len())
            .find(|&i| !m[i])
            .map(|i| BlockIdx(i as u64));
        assert_eq!(bm.find_next_set(BlockIdx(from)), fs, "from {from}");
        assert_eq!(bm.find_next_clear(BlockIdx(from)), fc, "from {from}");
        let (s, e) = range(p, p.rotate_left(17), n);
        let cr = m[s as usize..e as usize].iter().filter(|&&b| b).count() as u64;
        assert_eq!(bm.count_range(BlockIdx(s), BlockIdx(e)), cr);
        let want = model_runs(m, from.min(n) as usize).first().copied();
        assert_eq!(
            bm.next_run(BlockIdx(from)).map(|(a, b)| (a.0, b.0)),
            want,
            "next_run from {from}"
        );
    }
    // Walking runs from 0 reproduces the model exactly.
    let mut walked = Vec::new();
    let mut from = BlockIdx(0);
    while let Some((s, e)) = bm.next_run(from) {
        assert!(s < e);
        walked.push((s.0, e.0));
        from = e;
    }
    assert_eq!(walked, model_runs(m, 0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn ops_match_model(
        n in nbits(),
        ops in prop::collection::vec(op(), 0..40),
        probes in prop::collection::vec(pos(), 4),
    ) {
        let mut bm = Bitmap::new(n);
        let mut m = vec![false; n as usize];
        let mut dirty = BTreeSet::new();
        for op in &ops {
            apply(&mut bm, &mut m, op, &mut dirty);
            check(&bm, &m, &probes);
        }
        // Whatever remains pending is exactly the words that changed since the last take.
        apply(&mut bm, &mut m, &Op::TakeDirty(1), &mut dirty);
    }

    #[test]
    fn from_words_masks_tail(n in nbits(), raw in prop::collection::vec(any::<u64>(), 0..25)) {
        let need = n.div_ceil(64) as usize;
        match Bitmap::from_words(n, raw.clone()) {
            Err(BitmapError::TooFewWords { got, .. }) => prop_assert!(got < need && got == raw.len()),
            Err(e) => prop_assert!(false, "unexpected {e}"),
            Ok(bm) => {
                prop_assert!(raw.len() >= need);
                let m: Vec<bool> = (0..n as usize).map(|i| raw[i / 64] >> (i % 64) & 1 == 1).collect();
                check(&bm, &m, &[0, 63, 64, n]);
                prop_assert!(!bm.has_dirty());
            }
        }
    }

    #[test]
    fn rle_roundtrip(n in prop_oneof![0u64..300, 0u64..5000], ranges in prop::collection::vec((any::<u16>().prop_map(u64::from), any::<u16>().prop_map(u64::from)), 0..12)) {
        let (bm, _) = build(n, &ranges);
        let e = rle::encode(&bm);
        let back = rle::decode(&e, n).expect("own encoding decodes");
        prop_assert_eq!(&back, &bm);
        prop_assert_eq!(back.count(), bm.count());
        prop_assert!(!back.has_dirty());
        prop_assert_eq!(rle::peek_nbits(&e), Ok(n));
        if n > 0 {
            prop_assert_eq!(rle::decode(&e, n - 1).map(|_| ()), Err(RleError::SizeMismatch { expected: n - 1, got: n }));
        }
        // Every proper prefix is an error, never a different bitmap.
        for k in 0..e.len() {
            prop_assert!(rle::decode(&e[..k], n).is_err(), "prefix {} of {:?} accepted", k, e);
        }
    }

    #[test]
    fn rle_mutation_is_rejected_or_canonical(
        n in 0u64..300,
        ranges in prop::collection::vec((0u64..300, 0u64..300), 0..6),
        at in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let (bm, _) = build(n, &ranges);
        let mut e = rle::encode(&bm);
        let i = at % e.len();
        e[i] = byte;
        if let Ok(got) = rle::decode(&e, n) {
            prop_assert_eq!(got.len_bits(), n);
            // One encoding per bitmap: anything accepted re-encodes to the same bytes.
            prop_assert_eq!(rle::encode(&got), e);
        }
    }

    #[test]
    fn rle_garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..64), n in 0u64..5000) {
        if let Ok(bm) = rle::decode(&data, n) {
            prop_assert_eq!(bm.len_bits(), n);
            prop_assert_eq!(rle::encode(&bm), data);
        }
    }

    #[test]
    fn rle_garbage_after_valid_header(n in 0u64..2000, first in 0u8..2, tail in prop::collection::vec(any::<u8>(), 0..64)) {
        // A valid header gets the fuzz input past the first checks into the run decoder.
        let mut data = rle::encode(&Bitmap::new(n));
        data.truncate(data.len() - usize::from(n > 0));
        if n > 0 {
            let last = data.len() - 1;
            data[last] = first;
        }
        data.extend_from_slice(&tail);
        if let Ok(bm) = rle::decode(&data, n) {
            prop_assert_eq!(bm.len_bits(), n);
            prop_assert_eq!(rle::encode(&bm), data);
        }
    }
}

#[test]
fn range_ops_straddle_words() {
    let mut bm = Bitmap::new(130);
    assert_eq!(bm.set_range(BlockIdx(60), BlockIdx(129)), 69);
    assert_eq!(bm.words(), &[0xF << 60, u64::MAX, 1]);
    assert_eq!(bm.count_range(BlockIdx(63), BlockIdx(65)), 2);
    assert_eq!(bm.clear_range(BlockIdx(62), BlockIdx(128)), 66);
    assert_eq!(bm.count(), 3);
    assert_eq!(bm.next_run(BlockIdx(0)), Some((BlockIdx(60), BlockIdx(62))));
    assert_eq!(
        bm.next_run(BlockIdx(62)),
        Some((BlockIdx(128), BlockIdx(129)))
    );
    assert_eq!(bm.next_run(BlockIdx(129)), None);
}

#[test]
fn byte_ops_follow_block_coverage() {
    let mut bm = Bitmap::new(4);
    // One byte in block 1 and one in block 2.
    assert_eq!(bm.set_bytes(2 * BS - 1, 2), 2);
    assert_eq!(bm.words(), &[0b0110]);
    // Covers all of block 1 but only part of block 2: block 2 stays dirty.
    assert_eq!(bm.clear_bytes_covered(BS, BS + 1), 1);
    assert_eq!(bm.words(), &[0b0100]);
    assert_eq!(bm.set_bytes(0, 0), 0);
    // Device of 3.5 blocks: a write reaching its end clears the short last block.
    bm.set_all();
    assert_eq!(
        bm.clear_bytes_covered_dev(3 * BS, BS / 2, 3 * BS + BS / 2),
        1
    );
    assert_eq!(bm.words(), &[0b0111]);
}

#[test]
fn dirty_pages_track_changes_only() {
    let mut bm = Bitmap::new(64 * 2000);
    assert!(bm.take_dirty_pages(510).is_empty());
    bm.set(BlockIdx(0));
    bm.set(BlockIdx(64 * 1020)); // word 1020: page 2
    bm.set_range(BlockIdx(64 * 509), BlockIdx(64 * 511)); // words 509..511: pages 0 and 1
    assert_eq!(bm.take_dirty_pages(510), vec![0, 1, 2]);
    // Setting an already-set bit changes nothing on disk.
    bm.set(BlockIdx(0));
    assert!(!bm.has_dirty());
    bm.mark_pages_dirty(&[3, 99], 510);
    assert_eq!(bm.dirty_pages(510), vec![3]);
    bm.mark_all_dirty();
    assert_eq!(bm.take_dirty_pages(510), vec![0, 1, 2, 3]);
}

#[test]
fn union_rejects_other_sizes() {
    let mut a = Bitmap::new(10);
    assert_eq!(
        a.union_with(&Bitmap::new(11)),
        Err(BitmapError::SizeMismatch {
            ours: 10,
            theirs: 11
        })
    );
}

#[test]
#[should_panic(expected = "out of range")]
fn out_of_range_bit_panics() {
    Bitmap::new(10).set(BlockIdx(10));
}
