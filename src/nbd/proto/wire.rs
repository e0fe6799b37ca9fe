//! Big-endian field access for the decoders. Every NBD field is in network byte order
//! ("Conventions"); a reader that returns `None` past the end keeps the decoders free of
//! indexing panics on hostile input.

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet consumed.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next `n` bytes, or `None` (consuming nothing) if fewer are left.
    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    /// Takes everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N).and_then(|b| b.try_into().ok())
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

/// The longest prefix of `s` that fits in `max` bytes without splitting a character, so error
/// messages can be capped at the spec's 4096-byte string limit and still be valid UTF-8.
pub(crate) fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Checks a protocol string: valid UTF-8, no NUL, at most 4096 bytes ("Conventions").
pub(crate) fn check_string(b: &[u8]) -> Result<&str, StringError> {
    if b.len() > super::consts::MAX_STRING_LEN {
        return Err(StringError::TooLong(b.len()));
    }
    let s = std::str::from_utf8(b).map_err(|_| StringError::NotUtf8)?;
    if s.contains('\0') {
        return Err(StringError::Nul);
    }
    Ok(s)
}

/// Why a string field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StringError {
    /// Longer than the spec's 4096-byte limit.
    #[error("string of {0} bytes exceeds the 4096-byte limit")]
    TooLong(usize),
    /// Not UTF-8.
    #[error("string is not valid UTF-8")]
    NotUtf8,
    /// Contains a NUL character, which NBD strings MUST NOT.
    #[error("string contains NUL")]
    Nul,
}
