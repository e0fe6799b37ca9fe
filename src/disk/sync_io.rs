//! Blocking execution of one validated op on a [`Device`], with the alignment handling from
//! [`super::align`]. The pio engine runs everything through here on its worker threads; the
//! io_uring engine uses it only for the rare ops it has no opcode for (BLKZEROOUT, zeroing
//! fallbacks). Callers hold the op's block locks for modifying ops.

use std::io;
use std::os::unix::fs::FileExt;

use super::align::{plan_write, span};
use super::device::Device;
use super::engine::{DiskDone, DiskOp};
use super::sys;
use crate::buf::{AlignedBuf, BUF_ALIGN};
use bytes::Bytes;

/// Largest zero buffer written at once by the zeroing fallback.
const ZERO_CHUNK: u64 = 1 << 20;

/// Runs `op` to completion.
pub fn exec(dev: &Device, op: DiskOp) -> io::Result<DiskDone> {
    match op {
        DiskOp::Read { offset, len } => read(dev, offset, u64::from(len)).map(DiskDone::Read),
        DiskOp::Write { offset, data, fua } => {
            write(dev, offset, &data)?;
            durable(dev, fua)
        }
        DiskOp::Flush => durable(dev, true),
        DiskOp::Trim { offset, len, fua } => {
            zero(dev, offset, u64::from(len), true)?;
            durable(dev, fua)
        }
        DiskOp::WriteZeroes {
            offset,
            len,
            fua,
            no_hole,
        } => {
            zero(dev, offset, u64::from(len), !no_hole)?;
            durable(dev, fua)
        }
    }
}

/// Trim or WriteZeroes by writing zero bytes, for filesystems that cannot punch or zero ranges.
pub fn exec_zeroes_fallback(dev: &Device, op: &DiskOp) -> io::Result<DiskDone> {
    match *op {
        DiskOp::Trim { offset, len, fua }
        | DiskOp::WriteZeroes {
            offset, len, fua, ..
        } => {
            write_zeroes(dev, offset, u64::from(len))?;
            durable(dev, fua)
        }
        _ => Err(super::align::invalid(format!("{op:?} is not a zeroing op"))),
    }
}

fn durable(dev: &Device, sync: bool) -> io::Result<DiskDone> {
    if sync {
        dev.file.sync_data()?;
    }
    Ok(DiskDone::Done)
}

/// Reads `len` bytes at `offset` through the aligned span.
pub fn read(dev: &Device, offset: u64, len: u64) -> io::Result<Bytes> {
    let s = span(offset, len, dev.align());
    let mut buf = AlignedBuf::zeroed(s.len);
    dev.file.read_exact_at(buf.as_mut_slice(), s.start)?;
    Ok(buf.into_bytes(s.skip..s.skip + len as usize))
}

/// Writes `data` at `offset`, reading the partial edge blocks first when the device needs it.
pub fn write(dev: &Device, offset: u64, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let plan = plan_write(offset, data.len() as u64, dev.align());
    let mut buf = AlignedBuf::zeroed(plan.span.len);
    for &(a, b) in &plan.fill {
        dev.file
            .read_exact_at(&mut buf.as_mut_slice()[a..b], plan.span.start + a as u64)?;
    }
    buf.as_mut_slice()[plan.span.skip..plan.span.skip + data.len()].copy_from_slice(data);
    dev.file.write_all_at(buf.as_slice(), plan.span.start)
}

/// Makes `[offset, offset+len)` read back as zeroes; `punch` frees the storage where it can.
pub fn zero(dev: &Device, offset: u64, len: u64, punch: bool) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    if dev.block_dev {
        return zero_block_dev(dev, offset, len);
    }
    let mode = if punch {
        sys::PUNCH_HOLE
    } else {
        sys::ZERO_RANGE
    };
    match sys::fallocate(&dev.file, mode, offset, len) {
        Err(e) if unsupported(&e) => write_zeroes(dev, offset, len),
        r => r,
    }
}

/// Whether a fallocate error means "this filesystem cannot", so writing zeroes is the answer.
pub fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS))
}

/// BLKZEROOUT wants logical-block alignment, so the 4 KiB-aligned middle goes there and the
/// partial edges are written as zeroes (read-modify-write under the caller's block locks).
fn zero_block_dev(dev: &Device, offset: u64, len: u64) -> io::Result<()> {
    let a = BUF_ALIGN as u64;
    let end = offset + len;
    let mid_start = offset.next_multiple_of(a).min(end);
    let mid_end = (end & !(a - 1)).max(mid_start);
    if mid_start > offset {
        write_zeroes(dev, offset, mid_start - offset)?;
    }
    if mid_end > mid_start {
        sys::blkzeroout(&dev.file, mid_start, mid_end - mid_start)?;
    }
    if end > mid_end {
        write_zeroes(dev, mid_end, end - mid_end)?;
    }
    Ok(())
}

/// Writes zero bytes over the range, in bounded chunks.
pub fn write_zeroes(dev: &Device, offset: u64, len: u64) -> io::Result<()> {
    let zeroes = vec![0u8; len.min(ZERO_CHUNK) as usize];
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(ZERO_CHUNK);
        write(dev, offset + pos, &zeroes[..n as usize])?;
        pos += n;
    }
    Ok(())
}
