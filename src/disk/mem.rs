//! In-memory backing device for tests and the simulator. Ops complete inline, in submission
//! order. Each 4 KiB block is either allocated or a hole, the way a sparse file behaves: writes
//! allocate; Trim and hole-punching WriteZeroes free the blocks they cover completely and zero
//! the partial ones in place.

use std::io;
use std::sync::{Mutex, MutexGuard};

use super::align::validate;
use super::engine::{AllocRun, Completion, DiskDone, DiskEngine, DiskOp};

/// Allocation granularity.
const BLOCK: u64 = 4096;

#[derive(Debug)]
struct State {
    bytes: Vec<u8>,
    allocated: Vec<bool>,
}

/// The in-memory engine.
#[derive(Debug)]
pub struct MemEngine {
    size: u64,
    state: Mutex<State>,
}

impl MemEngine {
    /// A zeroed, fully unallocated device of `size` bytes.
    pub fn new(size: u64) -> MemEngine {
        MemEngine {
            size,
            state: Mutex::new(State {
                bytes: vec![0; size as usize],
                allocated: vec![false; size.div_ceil(BLOCK) as usize],
            }),
        }
    }

    /// A copy of the whole device.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().bytes.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain bytes behind; they are still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self, op: DiskOp) -> io::Result<DiskDone> {
        validate(&op, self.size)?;
        let mut st = self.lock();
        match op {
            DiskOp::Read { offset, len } => {
                let o = offset as usize;
                Ok(DiskDone::Read(bytes::Bytes::copy_from_slice(
                    &st.bytes[o..o + len as usize],
                )))
            }
            DiskOp::Write { offset, data, .. } => {
                let o = offset as usize;
                st.bytes[o..o + data.len()].copy_from_slice(&data);
                st.mark(offset, data.len() as u64, true);
                Ok(DiskDone::Done)
            }
            DiskOp::Flush => Ok(DiskDone::Done),
            DiskOp::Trim { offset, len, .. } => {
                st.zero(offset, u64::from(len), true);
                Ok(DiskDone::Done)
            }
            DiskOp::WriteZeroes {
                offset,
                len,
                no_hole,
                ..
            } => {
                st.zero(offset, u64::from(len), !no_hole);
                Ok(DiskDone::Done)
            }
        }
    }
}

impl State {
    /// Marks the blocks touched by the range allocated, or (`alloc == false`) frees the ones
    /// it covers completely.
    fn mark(&mut self, offset: u64, len: u64, alloc: bool) {
        if len == 0 {
            return;
        }
        let (first, last) = if alloc {
            (offset / BLOCK, (offset + len).div_ceil(BLOCK))
        } else {
            (offset.div_ceil(BLOCK), (offset + len) / BLOCK)
        };
        for b in first..last.max(first) {
            self.allocated[b as usize] = alloc;
        }
    }

    fn zero(&mut self, offset: u64, len: u64, punch: bool) {
        let o = offset as usize;
        self.bytes[o..o + len as usize].fill(0);
        self.mark(offset, len, !punch);
    }
}

impl DiskEngine for MemEngine {
    fn size(&self) -> u64 {
        self.size
    }

    fn submit(&self, op: DiskOp, done: Completion) {
        let r = self.run(op);
        done(r);
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<AllocRun>> {
        let end = offset.saturating_add(len).min(self.size);
        let st = self.lock();
        let mut runs: Vec<AllocRun> = Vec::new();
        let mut pos = offset;
        while pos < end {
            let b = pos / BLOCK;
            let stop = ((b + 1) * BLOCK).min(end);
            let hole = !st.allocated[b as usize];
            let zero = hole
                || st.bytes[pos as usize..stop as usize]
                    .iter()
                    .all(|&x| x == 0);
            match runs.last_mut() {
                Some(r) if r.hole == hole && r.zero == zero => r.len += stop - pos,
                _ => runs.push(AllocRun {
                    len: stop - pos,
                    hole,
                    zero,
                }),
            }
            pos = stop;
        }
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::wait::run_blocking;

    fn run(e: &MemEngine, op: DiskOp) -> io::Result<DiskDone> {
        run_blocking(e, op)
    }

    #[test]
    fn holes_follow_writes_and_trims() {
        let e = MemEngine::new(16 * 4096);
        let hole = |len| AllocRun {
            len,
            hole: true,
            zero: true,
        };
        assert_eq!(e.block_status(0, u64::MAX).unwrap(), vec![hole(16 * 4096)]);
        run(
            &e,
            DiskOp::Write {
                offset: 4096 + 512,
                data: vec![1; 512].into(),
                fua: false,
            },
        )
        .unwrap();
        let data = AllocRun {
            len: 4096,
            hole: false,
            zero: false,
        };
        assert_eq!(
            e.block_status(0, 16 * 4096).unwrap(),
            vec![hole(4096), data, hole(14 * 4096)]
        );
        // A partial trim zeroes in place; the block stays allocated but reads as zero.
        run(
            &e,
            DiskOp::Trim {
                offset: 4096,
                len: 1024,
                fua: false,
            },
        )
        .unwrap();
        let st = e.block_status(4096, 4096).unwrap();
        assert_eq!(
            st,
            vec![AllocRun {
                len: 4096,
                hole: false,
                zero: true
            }]
        );
        run(
            &e,
            DiskOp::WriteZeroes {
                offset: 0,
                len: 8192,
                fua: false,
                no_hole: false,
            },
        )
        .unwrap();
        assert_eq!(e.block_status(0, 16 * 4096).unwrap(), vec![hole(16 * 4096)]);
        let err = run(
            &e,
            DiskOp::Read {
                offset: 16 * 4096,
                len: 512,
            },
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
