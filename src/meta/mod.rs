//! On-disk metadata codecs: udrbd's own format (not DRBD's bytes), modelled on DRBD 9's.
//!
//! PURE: nothing here touches the operating system. Callers pass bytes in and get bytes out; the
//! random device UUID and the clock come from the caller (`crate::disk::metadev`). Every decoder
//! returns a typed error on foreign or corrupt input and never panics: they are fuzz targets.
//!
//! - [`layout`]: where the superblock slots, activity log and bitmap live, and the size rule.
//! - [`superblock`]: two checksummed, sequence-numbered 4 KiB slots.
//! - [`al`]: activity-log transactions, recovery, and the in-memory LRU of hot extents.
//! - [`bm_page`]: checksummed 4 KiB bitmap pages.
//! - [`text`]: `dump-md`, `get-gi` and `show-gi` texts in drbdmeta's layout.

pub mod al;
pub mod bm_page;
pub mod layout;
pub mod superblock;
pub mod text;

/// The format token printed by `dump-md` (`version "udrbd-v1";`) and in create-md's messages,
/// where drbdmeta says `v09`.
pub const FORMAT_NAME: &str = "udrbd-v1";

/// CRC32C of `buf` with the 4 bytes at `crc_at` treated as zero, so the checksum can live
/// inside the block it protects.
pub(crate) fn crc_with_hole(buf: &[u8], crc_at: usize) -> u32 {
    let (head, rest) = buf.split_at(crc_at.min(buf.len()));
    let tail = rest.get(4..).unwrap_or(&[]);
    let c = crc32c::crc32c_append(0, head);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    crc32c::crc32c_append(c, tail)
}

/// Little-endian field readers over a buffer whose length the caller has already checked.
/// They return 0 rather than panic if that check was ever wrong.
pub(crate) fn get_u16(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .unwrap_or(0)
}
pub(crate) fn get_u32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}
pub(crate) fn get_u64(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}
pub(crate) fn put(b: &mut [u8], off: usize, v: &[u8]) {
    if let Some(dst) = b.get_mut(off..off + v.len()) {
        dst.copy_from_slice(v);
    }
}
