//! The 28-byte transmission request header ("Request message"). Decoding only checks the magic;
//! what the fields mean for a given export is [`validate`](super::validate())'s job.

use super::consts::*;
use super::wire::Reader;

/// A request header as sent by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestHeader {
    /// Command flags (`CMD_FLAG_*`).
    pub flags: u16,
    /// Command type (`CMD_*`).
    pub kind: u16,
    /// Opaque value echoed in every reply (the spec's "handle", renamed "cookie" in newer
    /// revisions).
    pub cookie: u64,
    /// Byte offset into the export.
    pub offset: u64,
    /// Byte length; for `NBD_CMD_WRITE` also the payload that follows.
    pub length: u32,
}

/// Why a request header could not be decoded. Either way the stream cannot be resynchronised:
/// hard disconnect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The first word was not `NBD_REQUEST_MAGIC`.
    #[error("request magic {0:#010x}, expected 0x25609513")]
    BadMagic(u32),
    /// Fewer than 28 bytes.
    #[error("request header truncated: {0} of 28 bytes")]
    Truncated(usize),
}

impl RequestHeader {
    /// Decodes a header read as one fixed-size block.
    pub fn decode(bytes: &[u8; REQUEST_HEADER_LEN]) -> Result<Self, RequestError> {
        Self::decode_slice(bytes)
    }

    /// Decodes the first 28 bytes of `bytes` (for buffers of unknown length).
    pub fn decode_slice(bytes: &[u8]) -> Result<Self, RequestError> {
        let mut r = Reader::new(bytes);
        let truncated = RequestError::Truncated(bytes.len().min(REQUEST_HEADER_LEN));
        let magic = r.u32().ok_or_else(|| truncated.clone())?;
        if magic != REQUEST_MAGIC {
            return Err(RequestError::BadMagic(magic));
        }
        let (Some(flags), Some(kind), Some(cookie), Some(offset), Some(length)) =
            (r.u16(), r.u16(), r.u64(), r.u64(), r.u32())
        else {
            return Err(truncated);
        };
        Ok(RequestHeader {
            flags,
            kind,
            cookie,
            offset,
            length,
        })
    }

    /// The 28 bytes on the wire.
    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut b = [0u8; REQUEST_HEADER_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// Bytes of payload that follow this header on the wire: `length` for `NBD_CMD_WRITE`,
    /// nothing for every other command.
    pub fn payload_len(&self) -> u32 {
        if self.kind == CMD_WRITE {
            self.length
        } else {
            0
        }
    }
}
