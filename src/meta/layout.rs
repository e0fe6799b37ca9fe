//! Where the metadata lives and how big it is.
//!
//! ```text
//! internal:        [ data ........ ][ bitmap ][ activity log ][ slot A 4K ][ slot B 4K ]   <- end of backing
//! external:        [ slot A 4K ][ slot B 4K ][ activity log ][ bitmap ][ unused ... ]     <- offset 0 of meta dev
//! indexed [N]:     the external layout inside the N-th 128 MiB slot of the meta device
//! ```
//!
//! **Size rule** (everything in 4 KiB blocks, so every region is 4 KiB aligned):
//!
//! ```text
//! md_size = 8 KiB                                   (two superblock slots)
//!         + al_blocks x 4 KiB                       (activity log ring; default 8 blocks = 32 KiB)
//!         + max_peers x ceil(bits / 32640) x 4 KiB  (bitmap; bits = ceil(backing / 4 KiB))
//! ```
//!
//! A bitmap page holds 4080 payload bytes (32640 bits, 510 u64 words) behind a 16-byte
//! checksummed header. DRBD's rule is `36 KiB + size/32K x (nodes-1)` (4 KiB superblock, 32 KiB
//! AL, raw bitmap); ours is larger by one 4 KiB slot, the 0.4% page-header overhead and the
//! rounding to whole pages: 8 KiB more for 1 GiB with one peer (76 vs 68 KiB).
//!
//! For internal metadata the bitmap is sized for the whole backing device (slightly more than
//! the data area it ends up covering), which avoids a fixed-point computation. Usable data size
//! = backing size rounded down to 4 KiB, minus `md_size`.

use std::fmt;

/// Bytes in one superblock slot, AL block or bitmap page.
pub const BLOCK: u64 = 4096;
/// Default activity-log ring: 8 transaction blocks (DRBD's 32 KiB `al-stripe-size`).
pub const DEFAULT_AL_BLOCKS: u32 = 8;
/// Fewest AL blocks: with one block torn by a crash, at least one other must remain.
pub const MIN_AL_BLOCKS: u32 = 2;
/// Most AL blocks (32 MiB of ring), a sanity bound for decoding foreign bytes.
pub const MAX_AL_BLOCKS: u32 = 8192;
/// Size of one indexed external metadata slot (`meta-disk /dev/x [N]`), as DRBD's.
pub const INDEXED_SLOT_BYTES: u64 = 128 << 20;
/// Header bytes at the start of each bitmap page.
pub const BM_PAGE_HEADER: usize = 16;
/// u64 words of bitmap payload per page.
pub const BM_WORDS_PER_PAGE: usize = 510;
/// Bits of bitmap payload per page.
pub const BM_BITS_PER_PAGE: u64 = (BM_WORDS_PER_PAGE * 64) as u64;

/// Where the metadata is, with the sizes the computation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// At the end of the backing device.
    Internal,
    /// From offset 0 of a separate device of `meta_dev_bytes`.
    External { meta_dev_bytes: u64 },
    /// In slot `index` (128 MiB each) of a separate device.
    Indexed { meta_dev_bytes: u64, index: u32 },
}

impl Placement {
    /// Kind code stored in the superblock.
    pub fn kind(&self) -> u8 {
        match self {
            Placement::Internal => 0,
            Placement::External { .. } => 1,
            Placement::Indexed { .. } => 2,
        }
    }
}

/// Why a layout cannot be computed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("max-peers {0} out of range 1..=31")]
    MaxPeers(u32),
    #[error("activity log of {0} blocks out of range {MIN_AL_BLOCKS}..={MAX_AL_BLOCKS}")]
    AlBlocks(u32),
    #[error(
        "device too small: internal meta data needs {need} bytes plus room for data, but the backing device is only {have} bytes"
    )]
    BackingTooSmall { need: u64, have: u64 },
    #[error(
        "meta device too small: external meta data needs {need} bytes, but the meta device is only {have} bytes"
    )]
    MetaDevTooSmall { need: u64, have: u64 },
    #[error(
        "indexed meta data slot [{index}] needs {need} bytes, more than the {INDEXED_SLOT_BYTES} bytes of a slot"
    )]
    IndexedSlotTooSmall { index: u32, need: u64 },
}

/// Computed geometry. Offsets are absolute byte offsets on the device holding the metadata
/// (the backing device for internal metadata).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub placement: Placement,
    /// First byte of the metadata area.
    pub md_offset: u64,
    /// Bytes of the metadata area.
    pub md_size: u64,
    /// Superblock slot A and B.
    pub sb_offsets: [u64; 2],
    pub al_offset: u64,
    pub al_blocks: u32,
    pub bm_offset: u64,
    /// Bitmap pages per peer slot; slot `p`'s pages are contiguous, `p`-th run of this many.
    pub bm_pages_per_peer: u32,
    pub max_peers: u32,
    /// Usable data bytes (4 KiB aligned).
    pub data_bytes: u64,
}

/// Bitmap pages needed to cover `bytes` of data.
pub fn bm_pages_for(bytes: u64) -> u64 {
    let bits = bytes.div_ceil(BLOCK);
    bits.div_ceil(BM_BITS_PER_PAGE).max(1)
}

/// DRBD's documented internal metadata size for comparison: `36 KiB + size/32K x peers`.
pub fn drbd_md_size(backing_bytes: u64, peers: u32) -> u64 {
    36 * 1024 + backing_bytes.div_ceil(32 * 1024) * u64::from(peers)
}

impl Layout {
    /// Compute where everything goes. `backing_bytes` is the data device size.
    pub fn compute(
        backing_bytes: u64,
        placement: Placement,
        max_peers: u32,
        al_blocks: u32,
    ) -> Result<Layout, LayoutError> {
        if !(1..=crate::types::MAX_PEERS).contains(&max_peers) {
            return Err(LayoutError::MaxPeers(max_peers));
        }
        if !(MIN_AL_BLOCKS..=MAX_AL_BLOCKS).contains(&al_blocks) {
            return Err(LayoutError::AlBlocks(al_blocks));
        }
        let backing = backing_bytes / BLOCK * BLOCK;
        match placement {
            Placement::Internal => {
                let pages = bm_pages_for(backing);
                let md_size = md_size(al_blocks, pages, max_peers);
                // At least one 4 KiB block of data must remain.
                if backing < md_size + BLOCK {
                    return Err(LayoutError::BackingTooSmall {
                        need: md_size + BLOCK,
                        have: backing_bytes,
                    });
                }
                let md_offset = backing - md_size;
                let bm_offset = md_offset;
                let al_offset = bm_offset + pages * BLOCK * u64::from(max_peers);
                let sb = al_offset + u64::from(al_blocks) * BLOCK;
                Ok(Layout {
                    placement,
                    md_offset,
                    md_size,
                    sb_offsets: [sb, sb + BLOCK],
                    al_offset,
                    al_blocks,
                    bm_offset,
                    bm_pages_per_peer: pages as u32,
                    max_peers,
                    data_bytes: md_offset,
                })
            }
            Placement::External { meta_dev_bytes } => {
                Self::external(backing, placement, 0, meta_dev_bytes, max_peers, al_blocks)
            }
            Placement::Indexed {
                meta_dev_bytes,
                index,
            } => {
                let start = u64::from(index) * INDEXED_SLOT_BYTES;
                let l = Self::external(
                    backing,
                    placement,
                    start,
                    meta_dev_bytes,
                    max_peers,
                    al_blocks,
                )?;
                if l.md_size > INDEXED_SLOT_BYTES {
                    return Err(LayoutError::IndexedSlotTooSmall {
                        index,
                        need: l.md_size,
                    });
                }
                Ok(l)
            }
        }
    }

    fn external(
        backing: u64,
        placement: Placement,
        start: u64,
        meta_dev_bytes: u64,
        max_peers: u32,
        al_blocks: u32,
    ) -> Result<Layout, LayoutError> {
        let pages = bm_pages_for(backing);
        let md_size = md_size(al_blocks, pages, max_peers);
        if meta_dev_bytes < start + md_size {
            return Err(LayoutError::MetaDevTooSmall {
                need: start + md_size,
                have: meta_dev_bytes,
            });
        }
        if backing < BLOCK {
            return Err(LayoutError::BackingTooSmall {
                need: BLOCK,
                have: backing,
            });
        }
        let al_offset = start + 2 * BLOCK;
        Ok(Layout {
            placement,
            md_offset: start,
            md_size,
            sb_offsets: [start, start + BLOCK],
            al_offset,
            al_blocks,
            bm_offset: al_offset + u64::from(al_blocks) * BLOCK,
            bm_pages_per_peer: pages as u32,
            max_peers,
            data_bytes: backing,
        })
    }

    /// Bytes of bitmap for all peer slots.
    pub fn bm_bytes(&self) -> u64 {
        u64::from(self.bm_pages_per_peer) * BLOCK * u64::from(self.max_peers)
    }

    /// Byte offset of bitmap page `page` of peer slot `peer`.
    pub fn bm_page_offset(&self, peer: u32, page: u32) -> u64 {
        self.bm_offset
            + (u64::from(peer) * u64::from(self.bm_pages_per_peer) + u64::from(page)) * BLOCK
    }

    /// Bitmap bits (4 KiB blocks) that cover the usable data.
    pub fn bm_bits(&self) -> u64 {
        self.data_bytes / BLOCK
    }
}

fn md_size(al_blocks: u32, pages: u64, max_peers: u32) -> u64 {
    2 * BLOCK + u64::from(al_blocks) * BLOCK + pages * BLOCK * u64::from(max_peers)
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "md_offset {} md_size {} al_offset {} bm_offset {} data {}",
            self.md_offset, self.md_size, self.al_offset, self.bm_offset, self.data_bytes
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn internal_one_gib_one_peer() {
        let l = Layout::compute(1 << 30, Placement::Internal, 1, DEFAULT_AL_BLOCKS).unwrap();
        // 262144 bits -> 9 pages -> 36 KiB, + 32 KiB AL + 8 KiB slots.
        assert_eq!(l.md_size, 76 * 1024);
        assert_eq!(l.sb_offsets[1], (1 << 30) - 4096);
        assert_eq!(l.data_bytes, (1 << 30) - 76 * 1024);
        assert!(l.md_size - drbd_md_size(1 << 30, 1) <= 8 * 1024);
    }

    #[test]
    fn regions_do_not_overlap() {
        for peers in [1, 2, 7, 31] {
            let l = Layout::compute(3 << 30, Placement::Internal, peers, 8).unwrap();
            assert_eq!(l.bm_offset + l.bm_bytes(), l.al_offset);
            assert_eq!(l.al_offset + 8 * BLOCK, l.sb_offsets[0]);
            assert_eq!(l.sb_offsets[1] + BLOCK, l.md_offset + l.md_size);
        }
    }

    #[test]
    fn too_small_is_an_error() {
        assert!(matches!(
            Layout::compute(40 * 1024, Placement::Internal, 1, 8),
            Err(LayoutError::BackingTooSmall { .. })
        ));
        assert!(matches!(
            Layout::compute(
                1 << 30,
                Placement::External {
                    meta_dev_bytes: 4096
                },
                1,
                8
            ),
            Err(LayoutError::MetaDevTooSmall { .. })
        ));
        assert!(Layout::compute(1 << 30, Placement::Internal, 0, 8).is_err());
        assert!(Layout::compute(1 << 30, Placement::Internal, 32, 8).is_err());
    }

    #[test]
    fn indexed_slot_limits_data_size() {
        let dev = 4 * INDEXED_SLOT_BYTES;
        let l = Layout::compute(
            1 << 30,
            Placement::Indexed {
                meta_dev_bytes: dev,
                index: 2,
            },
            1,
            8,
        )
        .unwrap();
        assert_eq!(l.sb_offsets[0], 2 * INDEXED_SLOT_BYTES);
        // 8 TiB with one peer needs ~256 MiB of bitmap: does not fit a 128 MiB slot.
        assert!(matches!(
            Layout::compute(
                8 << 40,
                Placement::Indexed {
                    meta_dev_bytes: 1 << 41,
                    index: 0
                },
                1,
                8
            ),
            Err(LayoutError::IndexedSlotTooSmall { .. })
        ));
    }
}
