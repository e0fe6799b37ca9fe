//! An index of byte ranges for overlap queries (DRBD's `drbd_interval.c`), PURE.
//!
//! Requests in flight and requests waiting for an earlier overlapping one are looked up here
//! by range. The interval-tree crates on crates.io were last released in 2022 or build on `Rc`
//! nodes; this index relies instead on a property of what it holds: a range is never longer
//! than the longest range present. Entries are kept in a map ordered by start; every range
//! that overlaps `[lo, hi)` starts in `[lo - longest + 1, hi)`, so a query walks only that
//! window: O(log n + k) for the request sizes a block device sees, and never worse than a
//! scan of the ranges that start before `hi`. The longest length is tracked with a multiset
//! of lengths, so removing the one long trim narrows the window again.

use std::collections::BTreeMap;

/// Ranges `[start, start + len)` with a key each (unique per entry).
#[derive(Debug, Clone)]
pub struct IntervalIndex<K: Ord + Copy, V> {
    /// (start, key) -> (end, value).
    by_start: BTreeMap<(u64, K), (u64, V)>,
    /// Lengths present, with how many entries have each.
    lengths: BTreeMap<u64, u32>,
}

impl<K: Ord + Copy, V> Default for IntervalIndex<K, V> {
    fn default() -> Self {
        IntervalIndex {
            by_start: BTreeMap::new(),
            lengths: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy, V> IntervalIndex<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// Adds `[start, start + len)` under `key`; an empty range is not stored (it overlaps
    /// nothing). Returns false if `(start, key)` was present already (nothing changes).
    pub fn insert(&mut self, start: u64, len: u64, key: K, value: V) -> bool {
        if len == 0 || self.by_start.contains_key(&(start, key)) {
            return false;
        }
        self.by_start
            .insert((start, key), (start.saturating_add(len), value));
        *self.lengths.entry(len).or_default() += 1;
        true
    }

    /// Removes the entry `(start, key)`; returns its value.
    pub fn remove(&mut self, start: u64, key: K) -> Option<V> {
        let (end, v) = self.by_start.remove(&(start, key))?;
        let len = end - start;
        if let Some(n) = self.lengths.get_mut(&len) {
            *n -= 1;
            if *n == 0 {
                self.lengths.remove(&len);
            }
        }
        Some(v)
    }
}

/// The smallest key, so a range bound `(x, K::min_key())` comes before every `(x, k)`.
pub trait MinKey {
    fn min_key() -> Self;
}

impl MinKey for u64 {
    fn min_key() -> Self {
        0
    }
}

impl MinKey for crate::types::ReqId {
    fn min_key() -> Self {
        crate::types::ReqId(0)
    }
}

// Queries bound the map's range with the smallest key of a start.
impl<K: Ord + Copy + MinKey, V> IntervalIndex<K, V> {
    /// Every entry overlapping `[lo, lo + len)`, in order of start: (start, end, key, value).
    pub fn overlapping(&self, lo: u64, len: u64) -> impl Iterator<Item = (u64, u64, K, &V)> {
        let hi = lo.saturating_add(len);
        let longest = self.lengths.keys().next_back().copied().unwrap_or(0);
        let from = lo.saturating_sub(longest.saturating_sub(1));
        let window = if len == 0 || self.by_start.is_empty() || from >= hi {
            None
        } else {
            Some(
                self.by_start
                    .range((from, K::min_key())..(hi, K::min_key())),
            )
        };
        window
            .into_iter()
            .flatten()
            .filter(move |((start, _), (end, _))| *start < hi && *end > lo)
            .map(|((start, key), (end, v))| (*start, *end, *key, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_what_overlaps_and_nothing_else() {
        let mut ix = IntervalIndex::<u64, ()>::new();
        ix.insert(0, 4096, 1, ());
        ix.insert(8192, 4096, 2, ());
        ix.insert(4096, 1 << 20, 3, ());
        fn keys(ix: &IntervalIndex<u64, ()>, lo: u64, len: u64) -> Vec<u64> {
            ix.overlapping(lo, len).map(|(_, _, k, _)| k).collect()
        }
        assert_eq!(keys(&ix, 4095, 2), [1, 3]);
        assert_eq!(keys(&ix, 4096, 4096), [3]);
        assert_eq!(keys(&ix, 12288, 10), [3]);
        assert_eq!(keys(&ix, 2 << 20, 10), Vec::<u64>::new());
        assert!(ix.remove(4096, 3).is_some());
        assert_eq!(keys(&ix, 12288, 10), Vec::<u64>::new());
        assert!(ix.remove(4096, 3).is_none());
    }

    proptest! {
        #[test]
        fn matches_a_brute_force_scan(
            ops in proptest::collection::vec((0u64..64, 0u64..20, any::<bool>()), 1..200),
            queries in proptest::collection::vec((0u64..80, 0u64..24), 1..50),
        ) {
            let mut ix = IntervalIndex::<u64, ()>::new();
            let mut all: Vec<(u64, u64, u64)> = Vec::new();
            for (k, (start, len, remove)) in ops.into_iter().enumerate() {
                if remove && !all.is_empty() {
                    let (s, _, key) = all.remove(k % all.len());
                    prop_assert!(ix.remove(s, key).is_some());
                } else if ix.insert(start, len, k as u64, ()) {
                    all.push((start, start + len, k as u64));
                }
            }
            for (lo, len) in queries {
                let mut got: Vec<u64> = ix.overlapping(lo, len).map(|(_, _, k, _)| k).collect();
                let mut want: Vec<u64> = all
                    .iter()
                    .filter(|&&(s, e, _)| len > 0 && s < lo + len && e > lo)
                    .map(|&(_, _, k)| k)
                    .collect();
                got.sort();
                want.sort();
                prop_assert_eq!(got, want);
            }
        }
    }
}
