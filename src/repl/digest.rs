//! The digests of `verify-alg` and `csums-alg` (DRBD lets any kernel shash be named; udrbd
//! knows the ones DRBD setups use that are not broken for this purpose). One digest covers one
//! request's range; verify narrows a mismatch down by asking again for smaller ranges.

use sha1::Digest as _;

/// A digest algorithm by its config name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestAlg {
    Crc32c,
    Sha1,
    Sha256,
    Sha512,
}

/// The names `verify-alg`/`csums-alg` accept, for error messages.
pub const KNOWN: &str = "crc32c, sha1, sha256, sha512";

impl DigestAlg {
    pub fn from_name(name: &str) -> Option<DigestAlg> {
        Some(match name.to_ascii_lowercase().as_str() {
            "crc32c" => DigestAlg::Crc32c,
            "sha1" => DigestAlg::Sha1,
            "sha256" => DigestAlg::Sha256,
            "sha512" => DigestAlg::Sha512,
            _ => return None,
        })
    }

    /// The name an optional setting goes by on the wire and in messages ("" when unset).
    pub fn name_of(alg: Option<DigestAlg>) -> &'static str {
        alg.map_or("", DigestAlg::name)
    }

    pub fn name(self) -> &'static str {
        match self {
            DigestAlg::Crc32c => "crc32c",
            DigestAlg::Sha1 => "sha1",
            DigestAlg::Sha256 => "sha256",
            DigestAlg::Sha512 => "sha512",
        }
    }

    /// Bytes per digest.
    pub fn digest_len(self) -> usize {
        match self {
            DigestAlg::Crc32c => 4,
            DigestAlg::Sha1 => 20,
            DigestAlg::Sha256 => 32,
            DigestAlg::Sha512 => 64,
        }
    }

    /// The digest of `data`, appended to `out`.
    pub fn digest_into(self, data: &[u8], out: &mut Vec<u8>) {
        match self {
            DigestAlg::Crc32c => out.extend_from_slice(&crc32c::crc32c(data).to_le_bytes()),
            DigestAlg::Sha1 => out.extend_from_slice(&sha1::Sha1::digest(data)),
            DigestAlg::Sha256 => out.extend_from_slice(&sha2::Sha256::digest(data)),
            DigestAlg::Sha512 => out.extend_from_slice(&sha2::Sha512::digest(data)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // RFC 3720's CRC32C check value, and the empty-input SHA digests.
        let mut v = Vec::new();
        DigestAlg::Crc32c.digest_into(b"123456789", &mut v);
        assert_eq!(v, 0xe306_9283u32.to_le_bytes());
        let hex = |a: DigestAlg| {
            let mut v = Vec::new();
            a.digest_into(b"", &mut v);
            v.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        assert_eq!(
            hex(DigestAlg::Sha1),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            hex(DigestAlg::Sha256),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(hex(DigestAlg::Sha512).len(), 128);
    }

    #[test]
    fn names_round_trip_and_unknown_is_none() {
        for a in [
            DigestAlg::Crc32c,
            DigestAlg::Sha1,
            DigestAlg::Sha256,
            DigestAlg::Sha512,
        ] {
            assert_eq!(DigestAlg::from_name(a.name()), Some(a));
            let mut v = Vec::new();
            a.digest_into(b"x", &mut v);
            assert_eq!(v.len(), a.digest_len());
        }
        assert_eq!(DigestAlg::from_name("SHA1"), Some(DigestAlg::Sha1));
        assert_eq!(DigestAlg::from_name("md4"), None);
    }
}
