//! Newtypes shared by every layer. Keeping units in the type system is what stops a sector count
//! from being added to a byte offset: DRBD mixes 512-byte sectors, 4 KiB bitmap blocks and 4 MiB
//! activity-log extents, and so do we.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Bytes per sector: DRBD (and the kernel) count sizes and positions in 512-byte sectors.
pub const SECTOR_SIZE: u64 = 512;
/// Bytes covered by one bit of the dirty bitmap.
pub const BM_BLOCK_SIZE: u64 = 4096;
/// Bytes covered by one activity-log extent (DRBD's `AL_EXTENT_SHIFT` 22).
pub const AL_EXTENT_SIZE: u64 = 4 << 20;
/// Highest node id DRBD 9 accepts (`DRBD_NODE_ID_MAX` is 32 exclusive).
pub const MAX_NODE_ID: u8 = 31;
/// Most peers one resource's metadata can track (DRBD_PEERS_MAX - 1).
pub const MAX_PEERS: u32 = 31;
/// Generation UUIDs kept in the history.
pub const HISTORY_UUIDS: usize = 32;

/// A position or length in 512-byte sectors.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Sector(pub u64);

impl Sector {
    /// The sector that contains byte `b` (rounds down).
    pub fn from_bytes(b: u64) -> Self {
        Sector(b / SECTOR_SIZE)
    }
    /// This position in bytes.
    pub fn bytes(self) -> u64 {
        // Saturating: a sector number off the wire may be anything; range checks then fail.
        self.0.saturating_mul(SECTOR_SIZE)
    }
}

/// Index of a 4 KiB block, the bitmap's granularity.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct BlockIdx(pub u64);

impl BlockIdx {
    /// The block that contains byte `b`.
    pub fn containing(b: u64) -> Self {
        BlockIdx(b / BM_BLOCK_SIZE)
    }
    /// Byte offset of the block's first byte.
    pub fn offset(self) -> u64 {
        self.0 * BM_BLOCK_SIZE
    }
}

/// Index of a 4 MiB activity-log extent.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct ExtentNr(pub u32);

impl ExtentNr {
    /// The extent that contains byte `b`.
    pub fn containing(b: u64) -> Self {
        ExtentNr((b / AL_EXTENT_SIZE) as u32)
    }
}

/// A node id from the config (`node-id N;`), 0..=31.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u8);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A data generation identifier. The low bit records "was Primary" and is ignored when two
/// generations are compared (DRBD's `UUID_PRIMARY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct GenUuid(pub u64);

impl GenUuid {
    /// The sentinel every freshly created metadata starts with (`UUID_JUST_CREATED`).
    pub const JUST_CREATED: GenUuid = GenUuid(4);
    /// No generation.
    pub const ZERO: GenUuid = GenUuid(0);
    /// The role bit.
    pub const PRIMARY_BIT: u64 = 1;

    /// The value used for comparisons: the role bit masked off.
    pub fn masked(self) -> u64 {
        self.0 & !Self::PRIMARY_BIT
    }
    /// True for 0 (no generation).
    pub fn is_zero(self) -> bool {
        self.masked() == 0
    }
    /// Same generation, ignoring the role bit.
    pub fn same_as(self, other: GenUuid) -> bool {
        self.masked() == other.masked()
    }
}

impl fmt::Display for GenUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

/// Identifies one application request inside the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReqId(pub u64);

/// Virtual time in nanoseconds. The engine never reads a clock; the driver passes `now` in.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Time(pub u64);

impl Time {
    /// `self + ms` milliseconds.
    pub fn plus_ms(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms.saturating_mul(1_000_000)))
    }
}

/// Where a volume keeps its metadata (`meta-disk` in the config).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MetaDisk {
    /// `meta-disk internal;`: at the end of the backing device.
    Internal,
    /// `meta-disk /dev/x;` (flexible external, `index` None) or `meta-disk /dev/x [N];`
    /// (indexed external: slot N of 128 MiB each, as DRBD's fixed-size indexed layout).
    External { path: String, index: Option<u32> },
}

impl fmt::Display for MetaDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaDisk::Internal => f.write_str("internal"),
            MetaDisk::External { path, index: None } => f.write_str(path),
            MetaDisk::External {
                path,
                index: Some(i),
            } => write!(f, "{path} [{i}]"),
        }
    }
}

/// One block-device request, in bytes: what an application asks of a resource and what the
/// driver asks of the backing device (the same shape, so one type serves both layers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockOp {
    /// Read `len` bytes at `offset`.
    Read { offset: u64, len: u32 },
    /// Write `data` at `offset`; `fua` makes it durable before completion.
    Write {
        offset: u64,
        data: bytes::Bytes,
        fua: bool,
    },
    /// Make every completed write durable.
    Flush,
    /// Discard the range; it reads back as zeroes afterwards.
    Trim { offset: u64, len: u32, fua: bool },
    /// Zero the range; `no_hole` keeps it allocated (no hole punch).
    WriteZeroes {
        offset: u64,
        len: u32,
        fua: bool,
        no_hole: bool,
    },
}

impl BlockOp {
    /// The byte range `(offset, len)` this op changes, if it changes data.
    pub fn written_range(&self) -> Option<(u64, u64)> {
        match self {
            BlockOp::Write { offset, data, .. } => Some((*offset, data.len() as u64)),
            BlockOp::Trim { offset, len, .. } | BlockOp::WriteZeroes { offset, len, .. } => {
                Some((*offset, u64::from(*len)))
            }
            BlockOp::Read { .. } | BlockOp::Flush => None,
        }
    }

    /// The byte range `(offset, len)` this op reads or changes (none for a flush).
    pub fn range(&self) -> Option<(u64, u64)> {
        match self {
            BlockOp::Read { offset, len } => Some((*offset, u64::from(*len))),
            _ => self.written_range(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_bit_is_ignored_in_comparisons() {
        assert!(GenUuid(0x1234_5678_9ABC_DEF0).same_as(GenUuid(0x1234_5678_9ABC_DEF1)));
        assert!(!GenUuid(0x10).same_as(GenUuid(0x20)));
        assert!(GenUuid(1).is_zero());
    }

    #[test]
    fn unit_conversions() {
        assert_eq!(Sector::from_bytes(4096), Sector(8));
        assert_eq!(BlockIdx::containing(8191), BlockIdx(1));
        assert_eq!(ExtentNr::containing(AL_EXTENT_SIZE * 3 + 5), ExtentNr(3));
        assert_eq!(GenUuid(0xAB).to_string(), "00000000000000AB");
    }
}
