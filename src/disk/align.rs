//! Request validation and the read-modify-write plan shared by the pio and io_uring engines.
//!
//! Requests are 512-byte aligned; an O_DIRECT device wants the I/O alignment of its logical
//! block (we always use 4096, which is right for both 512 and 4096 devices). A read covers the
//! aligned span around the request and returns the middle; a write that does not start and end on
//! the alignment first reads the partial edge blocks into the span buffer, copies the payload over
//! them and writes the whole span back. Callers hold the span's blocks in the
//! [`BlockLocks`](super::blocklock::BlockLocks) table between the read and the write.

use std::io;

use super::engine::DiskOp;

/// Sector size every request must be aligned to.
pub const SECTOR: u64 = 512;

/// `InvalidInput` error with `msg`.
pub fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The byte range an op touches (`None` for Flush).
pub fn extent(op: &DiskOp) -> Option<(u64, u64)> {
    match op {
        DiskOp::Read { offset, len } => Some((*offset, u64::from(*len))),
        DiskOp::Write { offset, data, .. } => Some((*offset, data.len() as u64)),
        DiskOp::Trim { offset, len, .. } | DiskOp::WriteZeroes { offset, len, .. } => {
            Some((*offset, u64::from(*len)))
        }
        DiskOp::Flush => None,
    }
}

/// Whether the op changes the device contents (and so takes block locks).
pub fn modifies(op: &DiskOp) -> bool {
    matches!(
        op,
        DiskOp::Write { .. } | DiskOp::Trim { .. } | DiskOp::WriteZeroes { .. }
    )
}

/// Rejects ops that are not 512-aligned or reach past `size`.
pub fn validate(op: &DiskOp, size: u64) -> io::Result<()> {
    let Some((offset, len)) = extent(op) else {
        return Ok(());
    };
    if offset % SECTOR != 0 || len % SECTOR != 0 {
        return Err(invalid(format!(
            "request at {offset}+{len} is not {SECTOR}-byte aligned"
        )));
    }
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(invalid(format!(
            "request at {offset}+{len} is beyond the device end {size}"
        ))),
    }
}

/// An `align`-aligned device range that covers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Device offset of the span.
    pub start: u64,
    /// Length of the span in bytes.
    pub len: usize,
    /// Where the request starts inside the span.
    pub skip: usize,
}

/// The span covering `[offset, offset+len)` at alignment `align` (a power of two).
pub fn span(offset: u64, len: u64, align: u64) -> Span {
    if len == 0 {
        // Nothing to transfer; an aligned-out span would make an empty write clobber a block.
        return Span {
            start: offset,
            len: 0,
            skip: 0,
        };
    }
    let start = offset & !(align - 1);
    let end = (offset + len).next_multiple_of(align);
    Span {
        start,
        len: (end - start) as usize,
        skip: (offset - start) as usize,
    }
}

/// What a write must do: read `fill` (ranges of the span buffer) from the device, copy the
/// payload at `span.skip`, write the span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritePlan {
    pub span: Span,
    /// Half-open byte ranges inside the span to read first (the partial edge blocks).
    pub fill: Vec<(usize, usize)>,
}

/// Plans a write of `len` bytes at `offset` on a device with I/O alignment `align`.
pub fn plan_write(offset: u64, len: u64, align: u64) -> WritePlan {
    let span = span(offset, len, align);
    let a = align as usize;
    let mut fill = Vec::new();
    if len > 0 && !offset.is_multiple_of(align) {
        fill.push((0, a));
    }
    if len > 0 && !(offset + len).is_multiple_of(align) {
        let tail = (span.len - a, span.len);
        if fill.last() != Some(&tail) {
            fill.push(tail);
        }
    }
    WritePlan { span, fill }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let r = |offset, len| DiskOp::Read { offset, len };
        assert!(validate(&r(0, 512), 4096).is_ok());
        assert!(validate(&r(3584, 512), 4096).is_ok());
        assert!(validate(&r(4096, 0), 4096).is_ok());
        for bad in [r(1, 512), r(0, 100), r(3584, 1024), r(u64::MAX - 511, 512)] {
            let e = validate(&bad, 4096).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        assert!(validate(&DiskOp::Flush, 0).is_ok());
    }

    #[test]
    fn plans() {
        // Aligned: no fill.
        let p = plan_write(4096, 8192, 4096);
        assert_eq!(
            p.span,
            Span {
                start: 4096,
                len: 8192,
                skip: 0
            }
        );
        assert!(p.fill.is_empty());
        // Inside one block: one fill of that block.
        let p = plan_write(4608, 512, 4096);
        assert_eq!(
            p.span,
            Span {
                start: 4096,
                len: 4096,
                skip: 512
            }
        );
        assert_eq!(p.fill, vec![(0, 4096)]);
        // Straddling two blocks: both edges.
        let p = plan_write(3584, 1024, 4096);
        assert_eq!(
            p.span,
            Span {
                start: 0,
                len: 8192,
                skip: 3584
            }
        );
        assert_eq!(p.fill, vec![(0, 4096), (4096, 8192)]);
        // Empty: nothing to read or write.
        let p = plan_write(25088, 0, 4096);
        assert_eq!(p.span.len, 0);
        assert!(p.fill.is_empty());
        // Buffered alignment: never a fill.
        assert!(plan_write(3584, 1024, 512).fill.is_empty());
    }
}
