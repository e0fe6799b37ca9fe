//! Why a frame was rejected (or could not be encoded).

use super::packet::PacketType;

/// Why a frame failed to decode, or a packet failed to encode. Every decoder path returns one of
/// these; none panics.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header, or than the header's payload length, were supplied.
    #[error("frame truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    /// The first four bytes are not [`super::MAGIC`]: not a udrbd peer, or the stream lost sync.
    #[error("bad magic {got:#010x}{}", drbd_hint(*got))]
    BadMagic { got: u32 },
    /// A framing version this build does not speak.
    #[error(
        "unsupported wire version {got} (this build speaks {})",
        super::WIRE_VERSION
    )]
    UnsupportedVersion { got: u8 },
    /// The header CRC32C does not match: the header (length included) cannot be trusted.
    #[error("header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadHeaderChecksum { stored: u32, computed: u32 },
    /// The payload CRC32C (carried in the checksummed header) does not match the payload.
    #[error("payload checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadPayloadChecksum { stored: u32, computed: u32 },
    /// A packet type this build does not know. With `skip: Some(n)` the sender flagged it
    /// [`super::FLAG_MAY_IGNORE`]: the header is sound, and the receiver may discard the next
    /// `n` payload bytes and carry on. With `None` the connection must be dropped.
    #[error("unknown packet type {ty:#06x}{}", if skip.is_some() { " (may be ignored)" } else { "" })]
    UnknownType { ty: u16, skip: Option<u32> },
    /// The payload length exceeds what this packet type (or any packet) may carry. Raised by
    /// [`super::decode_header`], before the caller allocates a buffer for the payload.
    #[error("{ty:?} payload of {len} bytes exceeds its maximum of {max}")]
    TooLong {
        ty: PacketType,
        len: u64,
        max: usize,
    },
    /// A header field other than the checksums is invalid (reserved bits, a volume on a
    /// connection-level packet).
    #[error("malformed header: {0}")]
    MalformedHeader(&'static str),
    /// The payload slice handed to [`super::decode_payload`] is not the header's length.
    #[error("payload is {got} bytes, the header says {expected}")]
    PayloadLength { expected: usize, got: usize },
    /// A payload field is invalid.
    #[error("malformed {packet:?} packet, field `{field}`: {error}")]
    Malformed {
        packet: PacketType,
        field: &'static str,
        error: FieldError,
    },
}

/// What is wrong with one payload field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The payload ends inside this field.
    #[error("truncated")]
    Truncated,
    /// A length (or count) over the field's hard cap.
    #[error("length {len} exceeds the cap of {max}")]
    TooLong { len: usize, max: usize },
    /// An enum code, boolean or range outside the defined values.
    #[error("invalid value {0}")]
    BadValue(u64),
    /// Flag bits this version does not define.
    #[error("undefined flag bits {0:#x}")]
    UnknownBits(u64),
    /// A string with bytes outside printable ASCII.
    #[error("not printable ASCII")]
    NotAscii,
    /// A size or offset that must be a multiple of 512 bytes is not.
    #[error("{0} is not a multiple of 512")]
    Misaligned(u64),
    /// Two fields that must agree do not (e.g. a data length and the bytes present).
    #[error("inconsistent with the rest of the packet")]
    Inconsistent,
    /// Bytes after the last field.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

impl WireError {
    /// True if the receiver may skip this frame ([`WireError::UnknownType`] with `skip`) rather
    /// than drop the connection.
    pub fn is_ignorable(&self) -> bool {
        matches!(self, WireError::UnknownType { skip: Some(_), .. })
    }
}

/// DRBD's own header magics, so the log says what connected rather than just "bad magic".
fn drbd_hint(got: u32) -> &'static str {
    match got {
        0x8620_ec20 | 0x8374_0267 => {
            " (a DRBD kernel peer: udrbd does not speak DRBD's wire format)"
        }
        g if g >> 16 == 0x835a => " (a DRBD 8.x peer: udrbd does not speak DRBD's wire format)",
        _ => "",
    }
}
