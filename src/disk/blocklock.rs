//! Per-4 KiB-block lock table that serialises writes touching the same block.
//!
//! A 512-byte write on an O_DIRECT device is a read-modify-write of its 4 KiB block; two of them
//! running at once would each write back the other's stale bytes. Every modifying op (write, trim,
//! write-zeroes) therefore holds the blocks it touches, and so a normal write is ordered against an
//! in-progress RMW too. Waiters are granted strictly in arrival order among overlapping ranges,
//! which also makes overlapping writes land in submission order (the differential test relies on
//! it). The table never blocks: it hands back the items that became runnable, so both the
//! thread-pool engine and the single-threaded io_uring loop can use it.

use std::collections::VecDeque;

/// Half-open range of 4 KiB block numbers.
pub type BlockRange = (u64, u64);

/// Size of a lock-table block.
pub const LOCK_BLOCK: u64 = 4096;

/// Blocks touched by the byte range `[offset, offset+len)`.
pub fn blocks_of(offset: u64, len: u64) -> BlockRange {
    if len == 0 {
        return (0, 0);
    }
    (offset / LOCK_BLOCK, (offset + len).div_ceil(LOCK_BLOCK))
}

fn overlaps(a: BlockRange, b: BlockRange) -> bool {
    a.0 < a.1 && b.0 < b.1 && a.0 < b.1 && b.0 < a.1
}

/// The table; `T` is whatever the engine needs to resume a waiter.
#[derive(Debug)]
pub struct BlockLocks<T> {
    held: Vec<BlockRange>,
    waiting: VecDeque<(BlockRange, T)>,
}

impl<T> Default for BlockLocks<T> {
    fn default() -> Self {
        BlockLocks {
            held: Vec::new(),
            waiting: VecDeque::new(),
        }
    }
}

impl<T> BlockLocks<T> {
    /// Takes `range` for `item`: returns the item if it may run now (the range is then held),
    /// or keeps it queued until a [`release`](Self::release) grants it. Empty ranges never wait.
    pub fn acquire(&mut self, range: BlockRange, item: T) -> Option<T> {
        if range.0 >= range.1 {
            return Some(item);
        }
        // Queued waiters count as holders so a later request cannot overtake an earlier one.
        let busy = self.held.iter().any(|&h| overlaps(h, range))
            || self.waiting.iter().any(|(w, _)| overlaps(*w, range));
        if busy {
            self.waiting.push_back((range, item));
            None
        } else {
            self.held.push(range);
            Some(item)
        }
    }

    /// Releases a range returned by a successful acquire; returns the waiters that now hold
    /// their ranges and may run, in arrival order.
    pub fn release(&mut self, range: BlockRange) -> Vec<T> {
        if range.0 >= range.1 {
            return Vec::new();
        }
        if let Some(i) = self.held.iter().position(|&h| h == range) {
            self.held.swap_remove(i);
        }
        let mut granted = Vec::new();
        let mut still: VecDeque<(BlockRange, T)> = VecDeque::new();
        while let Some((r, item)) = self.waiting.pop_front() {
            let blocked = self.held.iter().any(|&h| overlaps(h, r))
                || still.iter().any(|(w, _)| overlaps(*w, r));
            if blocked {
                still.push_back((r, item));
            } else {
                self.held.push(r);
                granted.push(item);
            }
        }
        self.waiting = still;
        granted
    }

    /// Whether nothing is held or waiting.
    pub fn is_idle(&self) -> bool {
        self.held.is_empty() && self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ranges() {
        assert_eq!(blocks_of(0, 512), (0, 1));
        assert_eq!(blocks_of(3584, 1024), (0, 2));
        assert_eq!(blocks_of(4096, 4096), (1, 2));
        assert_eq!(blocks_of(100, 0), (0, 0));
    }

    #[test]
    fn overlapping_waits_in_order_disjoint_runs() {
        let mut t = BlockLocks::default();
        assert_eq!(t.acquire((0, 2), 1), Some(1));
        assert_eq!(t.acquire((1, 3), 2), None);
        assert_eq!(t.acquire((5, 6), 3), Some(3));
        // Overlaps only the waiter 2, still must not overtake it.
        assert_eq!(t.acquire((2, 3), 4), None);
        assert_eq!(t.release((5, 6)), Vec::<i32>::new());
        assert_eq!(t.release((0, 2)), vec![2]);
        assert_eq!(t.release((1, 3)), vec![4]);
        assert_eq!(t.release((2, 3)), Vec::<i32>::new());
        assert!(t.is_idle());
    }
}
