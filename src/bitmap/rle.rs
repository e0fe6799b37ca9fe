//! Compressed bitmap exchange: run lengths of alternating clear/set bits as LEB128 varints.
//!
//! DRBD sends its bitmap as `P_COMPRESSED_BITMAP` with run-length + VLI encoding, because an
//! out-of-sync set is almost always a few long runs: a mostly clean 1 TiB device (268 M bits)
//! becomes a handful of bytes instead of 32 MiB. We keep the idea and use plain LEB128 varints
//! (unsigned, 7 bits per byte, low group first, high bit = "more follows") instead of DRBD's
//! prefix-code VLI: simpler, byte-aligned, and within a byte or two of it for the long runs that
//! dominate.
//!
//! Format (version 1):
//!
//! ```text
//! u8      version = 1
//! varint  nbits            number of bits in the bitmap
//! u8      flags            bit 0: value of the first run (0 = clear, 1 = set); other bits 0
//! varint* run lengths      each >= 1, polarity alternating from the first, summing to nbits
//! ```
//!
//! Every rule that makes the encoding canonical also makes damage detectable: runs are never
//! zero (so there is exactly one encoding per bitmap and no way to spin without progress), the
//! last run is explicit (so dropping it, or any tail of the message, leaves the sum short of
//! `nbits` and is an error rather than a silently different bitmap), varints must be minimal,
//! and nothing may follow the last run.
//!
//! [`decode`] never panics and allocates only after the header's `nbits` matched the
//! caller's `expected_nbits`, so the peer cannot make us allocate more than our own device size
//! implies.

use super::{Bitmap, BlockIdx};

/// Format version written in the first byte.
pub const VERSION: u8 = 1;
/// Flag bit: the first run is of set bits.
const FLAG_FIRST_SET: u8 = 1;
/// Longest LEB128 encoding of a u64.
const MAX_VARINT_LEN: usize = 10;

/// Why a compressed bitmap was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RleError {
    /// The message ended early: a header field, a varint or the final runs are missing.
    #[error("compressed bitmap truncated")]
    Truncated,
    /// Unknown format version.
    #[error("unsupported compressed bitmap version {0}")]
    BadVersion(u8),
    /// Reserved flag bits set, or a first-run flag on an empty bitmap.
    #[error("invalid compressed bitmap flags {0:#04x}")]
    BadFlags(u8),
    /// A varint longer than a u64 or not minimally encoded.
    #[error("invalid varint at byte {0}")]
    BadVarint(usize),
    /// The peer's bitmap is not the size we expect.
    #[error("compressed bitmap has {got} bits, expected {expected}")]
    SizeMismatch { expected: u64, got: u64 },
    /// A run of length zero.
    #[error("zero-length run at byte {0}")]
    ZeroRun(usize),
    /// The runs add up to more than `nbits`.
    #[error("run at byte {0} extends past the end of the bitmap")]
    RunOverflow(usize),
    /// Bytes after the last run.
    #[error("{0} trailing bytes after the last run")]
    TrailingBytes(usize),
    /// `expected_nbits` cannot be allocated on this platform.
    #[error("bitmap of {0} bits is too large for this platform")]
    TooLarge(u64),
}

/// Encodes `bm` in the format above.
pub fn encode(bm: &Bitmap) -> Vec<u8> {
    let nbits = bm.len_bits();
    let mut out = Vec::with_capacity(16);
    out.push(VERSION);
    put_varint(&mut out, nbits);
    if nbits == 0 {
        out.push(0);
        return out;
    }
    let mut value = bm.test(BlockIdx(0));
    out.push(if value { FLAG_FIRST_SET } else { 0 });
    let mut pos = 0u64;
    // Each step jumps a whole run using the word-level searches, so a clean 268 M-bit bitmap is
    // one scan over its words, not 268 M bit tests.
    while pos < nbits {
        let next = if value {
            bm.find_next_clear(BlockIdx(pos))
        } else {
            bm.find_next_set(BlockIdx(pos))
        };
        let end = next.map_or(nbits, |b| b.0);
        put_varint(&mut out, end - pos);
        pos = end;
        value = !value;
    }
    out
}

/// Decodes a compressed bitmap that must have exactly `expected_nbits` bits. Never panics on
/// any input; the returned bitmap starts with no dirty pages.
pub fn decode(data: &[u8], expected_nbits: u64) -> Result<Bitmap, RleError> {
    let mut r = Reader { data, pos: 0 };
    let (nbits, first_set) = read_header(&mut r)?;
    if nbits != expected_nbits {
        return Err(RleError::SizeMismatch {
            expected: expected_nbits,
            got: nbits,
        });
    }
    let mut bm = Bitmap::try_new(nbits).map_err(|_| RleError::TooLarge(nbits))?;
    let mut pos = 0u64;
    let mut value = first_set;
    while pos < nbits {
        let at = r.pos;
        let run = r.varint()?;
        if run == 0 {
            return Err(RleError::ZeroRun(at));
        }
        let end = match pos.checked_add(run) {
            Some(e) if e <= nbits => e,
            _ => return Err(RleError::RunOverflow(at)),
        };
        if value {
            // In range by the check above, so this cannot panic.
            bm.set_range(BlockIdx(pos), BlockIdx(end));
        }
        pos = end;
        value = !value;
    }
    let rest = data.len() - r.pos;
    if rest != 0 {
        return Err(RleError::TrailingBytes(rest));
    }
    bm.clear_dirty();
    Ok(bm)
}

/// Reads the bit count from an encoding's header without decoding it. For tools and fuzz
/// harnesses; a receiver should compare with its own size, never allocate from this.
pub fn peek_nbits(data: &[u8]) -> Result<u64, RleError> {
    read_header(&mut Reader { data, pos: 0 }).map(|(n, _)| n)
}

/// Largest bitmap [`fuzz_decode`] will allocate, so a fuzzer's header cannot ask for gigabytes.
pub const FUZZ_MAX_NBITS: u64 = 1 << 20;

/// Fuzz entry point (cargo-fuzz target and the corpus replay test): decodes `data` at the size its
/// own header claims, capped at [`FUZZ_MAX_NBITS`], and checks that whatever decodes re-encodes to
/// the same bytes (one encoding per bitmap). Panics only if that invariant breaks.
pub fn fuzz_decode(data: &[u8]) {
    let n = peek_nbits(data).unwrap_or(0).min(FUZZ_MAX_NBITS);
    if let Ok(bm) = decode(data, n) {
        assert_eq!(bm.len_bits(), n, "decoded bitmap has the wrong size");
        assert!(encode(&bm) == data, "accepted a non-canonical encoding");
    }
}

fn read_header(r: &mut Reader<'_>) -> Result<(u64, bool), RleError> {
    let version = r.byte()?;
    if version != VERSION {
        return Err(RleError::BadVersion(version));
    }
    let nbits = r.varint()?;
    let flags = r.byte()?;
    // An empty bitmap has no first run, so a first-run flag there would be a second encoding.
    if flags & !FLAG_FIRST_SET != 0 || (nbits == 0 && flags != 0) {
        return Err(RleError::BadFlags(flags));
    }
    Ok((nbits, flags & FLAG_FIRST_SET != 0))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, RleError> {
        let b = *self.data.get(self.pos).ok_or(RleError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// A minimal LEB128 u64.
    fn varint(&mut self) -> Result<u64, RleError> {
        let start = self.pos;
        let mut v = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let b = self.byte()?;
            let group = u64::from(b & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if i == MAX_VARINT_LEN - 1 && group > 1 {
                return Err(RleError::BadVarint(start));
            }
            v |= group << (7 * i);
            if b & 0x80 == 0 {
                // A zero final group after the first byte is padding: a second encoding of the
                // same number, which the canonical form forbids.
                if i > 0 && group == 0 {
                    return Err(RleError::BadVarint(start));
                }
                return Ok(v);
            }
        }
        Err(RleError::BadVarint(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_bytes(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    #[test]
    fn varint_roundtrip_edges() {
        for v in [
            0,
            1,
            127,
            128,
            16383,
            16384,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let b = varint_bytes(v);
            let mut r = Reader { data: &b, pos: 0 };
            assert_eq!(r.varint(), Ok(v), "{v}");
            assert_eq!(r.pos, b.len());
        }
        assert_eq!(varint_bytes(u64::MAX).len(), MAX_VARINT_LEN);
    }

    #[test]
    fn varint_rejects_overlong_and_overflow() {
        for bad in [
            &[0x80, 0x00][..],
            &[0xff, 0x80, 0x00],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[0x80; 11],
        ] {
            let mut r = Reader { data: bad, pos: 0 };
            assert_eq!(r.varint(), Err(RleError::BadVarint(0)), "{bad:?}");
        }
        let mut r = Reader {
            data: &[0x80, 0x80],
            pos: 0,
        };
        assert_eq!(r.varint(), Err(RleError::Truncated));
    }

    #[test]
    fn empty_bitmap() {
        let bm = Bitmap::new(0);
        let e = encode(&bm);
        assert_eq!(e, vec![VERSION, 0, 0]);
        assert_eq!(decode(&e, 0), Ok(bm));
        assert_eq!(decode(&[VERSION, 0, 1], 0), Err(RleError::BadFlags(1)));
    }

    #[test]
    fn layout_is_as_documented() {
        let mut bm = Bitmap::new(200);
        bm.set_range(BlockIdx(0), BlockIdx(3));
        bm.set_range(BlockIdx(130), BlockIdx(200));
        // version, nbits=200 (0xc8 0x01), first run set, runs 3, 127, 70.
        assert_eq!(encode(&bm), vec![1, 0xc8, 0x01, 1, 3, 127, 70]);
    }

    #[test]
    fn one_tib_mostly_clean_is_tiny() {
        // 1 TiB / 4 KiB = 268,435,456 bits.
        let nbits = (1u64 << 40) / crate::types::BM_BLOCK_SIZE;
        let mut bm = Bitmap::new(nbits);
        assert!(encode(&bm).len() <= 16, "{:?}", encode(&bm));
        bm.set_range(BlockIdx(1_000_000), BlockIdx(1_000_256));
        bm.set(BlockIdx(nbits - 1));
        let e = encode(&bm);
        assert!(e.len() <= 32, "{} bytes", e.len());
        let back = decode(&e, nbits).expect("valid encoding");
        assert_eq!(back, bm);
        assert_eq!(back.count(), 257);
        assert!(!back.has_dirty());
    }

    #[test]
    fn hostile_sizes_are_refused_before_allocating() {
        let mut msg = vec![VERSION];
        put_varint(&mut msg, u64::MAX);
        msg.push(0);
        put_varint(&mut msg, u64::MAX);
        assert_eq!(
            decode(&msg, 4096),
            Err(RleError::SizeMismatch {
                expected: 4096,
                got: u64::MAX
            })
        );
        assert_eq!(peek_nbits(&msg), Ok(u64::MAX));
    }

    #[test]
    fn structural_errors() {
        assert_eq!(decode(&[], 8), Err(RleError::Truncated));
        assert_eq!(decode(&[2, 8, 0, 8], 8), Err(RleError::BadVersion(2)));
        assert_eq!(decode(&[1, 8, 2, 8], 8), Err(RleError::BadFlags(2)));
        assert_eq!(decode(&[1, 8, 0, 0, 8], 8), Err(RleError::ZeroRun(3)));
        assert_eq!(decode(&[1, 8, 0, 9], 8), Err(RleError::RunOverflow(3)));
        assert_eq!(decode(&[1, 8, 0, 5, 4], 8), Err(RleError::RunOverflow(4)));
        assert_eq!(decode(&[1, 8, 0, 5], 8), Err(RleError::Truncated));
        assert_eq!(decode(&[1, 8, 0, 8, 0], 8), Err(RleError::TrailingBytes(1)));
        let ok = decode(&[1, 8, 1, 2, 5, 1], 8).expect("valid");
        assert_eq!(ok.words(), &[0b1000_0011]);
    }

    /// The seeded fuzz corpus must keep decoding without panics, and the valid seeds must stay
    /// valid (they document the format by example).
    #[test]
    fn fuzz_corpus_seeds() {
        macro_rules! seed {
            ($name:literal) => {
                include_bytes!(concat!("../../fuzz/corpus/bitmap_rle/", $name))
            };
        }
        let cases: [(&[u8], bool); 9] = [
            (seed!("valid_empty"), true),
            (seed!("valid_clean_1000"), true),
            (seed!("valid_mixed_200"), true),
            (seed!("valid_full_130"), true),
            (seed!("bad_truncated"), false),
            (seed!("bad_zero_run"), false),
            (seed!("bad_overlong_varint"), false),
            (seed!("bad_huge_nbits"), false),
            (seed!("garbage_random"), false),
        ];
        for (data, valid) in cases {
            fuzz_decode(data);
            let n = peek_nbits(data).unwrap_or(0).min(FUZZ_MAX_NBITS);
            let res = decode(data, n);
            assert_eq!(res.is_ok(), valid, "{data:?}: {res:?}");
            if let Ok(bm) = res {
                assert_eq!(encode(&bm), data);
            }
        }
    }
}
