//! Recognising a device that is already in use, before create-md writes over it (drbdmeta's
//! `check_for_existing_data()`: swap, LVM2, ext2/3/4, XFS; we add btrfs).

/// How many bytes from the start of the device the probes look at.
pub const PROBE_BYTES: usize = 128 * 1024;

/// Something recognisable at the start of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// drbdmeta's words: "ext3 filesystem", "swap space signature", ...
    pub kind: &'static str,
    /// Bytes the thing claims to use, when the signature says.
    pub size: Option<u64>,
}

fn le16(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from(u16::from_le_bytes(
        b.get(o..o + 2)?.try_into().ok()?,
    )))
}
fn le32(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from(u32::from_le_bytes(
        b.get(o..o + 4)?.try_into().ok()?,
    )))
}
fn le64(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}
fn be32(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from(u32::from_be_bytes(
        b.get(o..o + 4)?.try_into().ok()?,
    )))
}
fn be64(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(o..o + 8)?.try_into().ok()?))
}
fn has(b: &[u8], o: usize, s: &[u8]) -> bool {
    b.get(o..o + s.len()) == Some(s)
}

/// Probes the first bytes of a device. A size of 0 from a signature counts as unknown.
pub fn probe(b: &[u8]) -> Option<Found> {
    let known = |s: Option<u64>| s.filter(|&v| v > 0);
    for o in [4096 - 10, 8192 - 10] {
        if has(b, o, b"SWAP-SPACE") || has(b, o, b"SWAPSPACE2") {
            return Some(Found {
                kind: "swap space signature",
                size: None,
            });
        }
    }
    // LVM2 label in sector 1: "LABELONE", type "LVM2 001" at +24.
    if has(b, 0x200, b"LABELONE") || has(b, 0x218, b"LVM2") {
        return Some(Found {
            kind: "LVM2 physical volume signature",
            size: None,
        });
    }
    if le16(b, 0x438) == Some(0xEF53) {
        let journal = le32(b, 0x45c).is_some_and(|f| f & 4 != 0);
        let bsize = le32(b, 0x418).map(|l| 1024u64 << l.min(6));
        let blocks = le32(b, 0x404);
        return Some(Found {
            kind: if journal {
                "ext3 filesystem"
            } else {
                "ext2 filesystem"
            },
            size: known(blocks.zip(bsize).map(|(n, s)| n * s)),
        });
    }
    if be32(b, 0) == Some(0x5846_5342) {
        return Some(Found {
            kind: "xfs filesystem",
            size: known(be32(b, 4).zip(be64(b, 8)).map(|(s, n)| s.saturating_mul(n))),
        });
    }
    if has(b, 0x10040, b"_BHRfS_M") {
        return Some(Found {
            kind: "btrfs filesystem",
            size: known(le64(b, 0x10070)),
        });
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ext4_magic_alone_has_unknown_size() {
        let mut b = vec![0u8; PROBE_BYTES];
        b[1080] = 0x53;
        b[1081] = 0xEF;
        assert_eq!(
            probe(&b),
            Some(Found {
                kind: "ext2 filesystem",
                size: None
            })
        );
        b[0x404] = 0x10; // 16 blocks of 1 KiB
        assert_eq!(probe(&b).and_then(|f| f.size), Some(16 * 1024));
    }

    #[test]
    fn zeroes_are_nothing() {
        assert_eq!(probe(&vec![0u8; PROBE_BYTES]), None);
        assert_eq!(probe(&[]), None);
    }
}
