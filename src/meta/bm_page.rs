//! Bitmap pages: 4 KiB each, a 16-byte header then 510 little-endian u64 words.
//!
//! Header: magic u32 `udbm`, CRC32C u32 (of the whole page with this field zero), peer slot
//! u16, reserved u16, page index u32. The CRC covers the peer slot and page index, so a page
//! written to the wrong place is caught too. A page that fails any check must be treated as
//! all ones by the caller: resyncing more is safe, resyncing less loses data.

use super::layout::{BM_PAGE_HEADER, BM_WORDS_PER_PAGE};
use super::{crc_with_hole, get_u16, get_u32, get_u64, put};

/// Bytes of one page.
pub const PAGE_SIZE: usize = 4096;
const MAGIC: u32 = u32::from_le_bytes(*b"udbm");
const CRC_AT: usize = 4;

/// Why a page is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("short bitmap page ({0} bytes)")]
    TooShort(usize),
    #[error("no bitmap page signature")]
    NoMagic,
    #[error("bad bitmap page checksum")]
    BadChecksum,
    #[error("bitmap page belongs to peer slot {peer_slot} page {page_index}")]
    Misplaced { peer_slot: u16, page_index: u32 },
}

/// Encodes one page. Words beyond 510 are ignored; missing words are zero.
pub fn encode_page(peer_slot: u16, page_index: u32, words: &[u64]) -> [u8; PAGE_SIZE] {
    let mut b = [0u8; PAGE_SIZE];
    put(&mut b, 0, &MAGIC.to_le_bytes());
    put(&mut b, 8, &peer_slot.to_le_bytes());
    put(&mut b, 12, &page_index.to_le_bytes());
    for (i, w) in words.iter().take(BM_WORDS_PER_PAGE).enumerate() {
        put(&mut b, BM_PAGE_HEADER + 8 * i, &w.to_le_bytes());
    }
    let crc = crc_with_hole(&b, CRC_AT);
    put(&mut b, CRC_AT, &crc.to_le_bytes());
    b
}

/// Decodes a page and returns (peer slot, page index, words) as stored. Never panics.
pub fn decode_page_any(buf: &[u8]) -> Result<(u16, u32, Vec<u64>), PageError> {
    if buf.len() < PAGE_SIZE {
        return Err(PageError::TooShort(buf.len()));
    }
    let b = &buf[..PAGE_SIZE];
    if get_u32(b, 0) != MAGIC {
        return Err(PageError::NoMagic);
    }
    if get_u32(b, CRC_AT) != crc_with_hole(b, CRC_AT) {
        return Err(PageError::BadChecksum);
    }
    let words = (0..BM_WORDS_PER_PAGE)
        .map(|i| get_u64(b, BM_PAGE_HEADER + 8 * i))
        .collect();
    Ok((get_u16(b, 8), get_u32(b, 12), words))
}

/// Decodes the page expected at (`peer_slot`, `page_index`).
pub fn decode_page(buf: &[u8], peer_slot: u16, page_index: u32) -> Result<Vec<u64>, PageError> {
    let (p, i, words) = decode_page_any(buf)?;
    if (p, i) != (peer_slot, page_index) {
        return Err(PageError::Misplaced {
            peer_slot: p,
            page_index: i,
        });
    }
    Ok(words)
}
