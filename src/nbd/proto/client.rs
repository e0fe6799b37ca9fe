//! The client's side of the wire: encoders for what a client sends and decoders for what a
//! server answers. udrbd has no NBD client in production; these drive the server in unit,
//! property and integration tests (and could back a `drbdadm` probe). Decoders never panic.

use super::consts::*;
use super::handshake::{ClientFlags, OptionHeader};
use super::option_reply::BlockSizes;
use super::reply::Extent;
use super::request::RequestHeader;
use super::wire::{Reader, StringError, check_string};

/// Why a server message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A magic number was wrong.
    #[error("bad magic {got:#x}, expected {expected:#x}")]
    BadMagic {
        /// What the spec requires here.
        expected: u64,
        /// What arrived.
        got: u64,
    },
    /// Fewer bytes than the message needs; `needed` is the total required.
    #[error("truncated: need {needed} bytes")]
    Truncated {
        /// Bytes needed in total.
        needed: usize,
    },
    /// Fields inconsistent with the spec's layout.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// A string field is not a valid NBD string.
    #[error("bad string: {0}")]
    String(#[from] StringError),
}

fn truncated(needed: usize) -> ClientError {
    ClientError::Truncated { needed }
}

/// Decodes the server greeting; returns the handshake flags.
pub fn decode_greeting(bytes: &[u8]) -> Result<u16, ClientError> {
    let mut r = Reader::new(bytes);
    let (Some(m1), Some(m2), Some(flags)) = (r.u64(), r.u64(), r.u16()) else {
        return Err(truncated(GREETING_LEN));
    };
    if m1 != NBDMAGIC {
        return Err(ClientError::BadMagic {
            expected: NBDMAGIC,
            got: m1,
        });
    }
    if m2 != IHAVEOPT {
        return Err(ClientError::BadMagic {
            expected: IHAVEOPT,
            got: m2,
        });
    }
    Ok(flags)
}

/// The client flags word.
pub fn encode_client_flags(flags: ClientFlags) -> [u8; CLIENT_FLAGS_LEN] {
    flags.bits().to_be_bytes()
}

/// Appends one option (header + payload).
pub fn encode_option(out: &mut Vec<u8>, option: u32, payload: &[u8]) {
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&OptionHeader { option, length }.encode());
    out.extend_from_slice(payload);
}

/// Payload of `NBD_OPT_INFO` / `NBD_OPT_GO`.
pub fn info_request_payload(name: &str, requests: &[u16]) -> Vec<u8> {
    let mut p = Vec::with_capacity(6 + name.len() + 2 * requests.len());
    p.extend_from_slice(&(name.len() as u32).to_be_bytes());
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(&(requests.len() as u16).to_be_bytes());
    for r in requests {
        p.extend_from_slice(&r.to_be_bytes());
    }
    p
}

/// Payload of `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`.
pub fn meta_context_payload(export: &str, queries: &[&str]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&(export.len() as u32).to_be_bytes());
    p.extend_from_slice(export.as_bytes());
    p.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        p.extend_from_slice(&(q.len() as u32).to_be_bytes());
        p.extend_from_slice(q.as_bytes());
    }
    p
}

/// Appends a request header and, for a WRITE, its payload.
pub fn encode_request(out: &mut Vec<u8>, req: &RequestHeader, payload: &[u8]) {
    out.extend_from_slice(&req.encode());
    out.extend_from_slice(payload);
}

/// One option reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionReply {
    /// The option this answers.
    pub option: u32,
    /// `REP_*`.
    pub reply_type: u32,
    /// Reply data.
    pub data: Vec<u8>,
}

impl OptionReply {
    /// Bit 31 set: an error reply.
    pub fn is_error(&self) -> bool {
        self.reply_type & REP_FLAG_ERROR != 0
    }
}

/// Decodes one option reply from the front of `bytes`; returns it and the bytes consumed.
pub fn decode_option_reply(bytes: &[u8]) -> Result<(OptionReply, usize), ClientError> {
    let mut r = Reader::new(bytes);
    let (Some(magic), Some(option), Some(reply_type), Some(len)) =
        (r.u64(), r.u32(), r.u32(), r.u32())
    else {
        return Err(truncated(OPTION_REPLY_HEADER_LEN));
    };
    if magic != OPTION_REPLY_MAGIC {
        return Err(ClientError::BadMagic {
            expected: OPTION_REPLY_MAGIC,
            got: magic,
        });
    }
    let len = usize::try_from(len).map_err(|_| ClientError::Malformed("reply too long"))?;
    let total = OPTION_REPLY_HEADER_LEN.saturating_add(len);
    let data = r.bytes(len).ok_or(truncated(total))?;
    Ok((
        OptionReply {
            option,
            reply_type,
            data: data.to_vec(),
        },
        total,
    ))
}

/// Decodes every option reply in `bytes`, which must end exactly after the last one.
pub fn decode_option_replies(mut bytes: &[u8]) -> Result<Vec<OptionReply>, ClientError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (rep, used) = decode_option_reply(bytes)?;
        out.push(rep);
        bytes = bytes.get(used..).unwrap_or(&[]);
    }
    Ok(out)
}

/// A decoded `NBD_REP_INFO` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoReply {
    /// `NBD_INFO_EXPORT`.
    Export {
        /// Export size in bytes.
        size: u64,
        /// Transmission flags.
        flags: u16,
    },
    /// `NBD_INFO_NAME`.
    Name(String),
    /// `NBD_INFO_DESCRIPTION`.
    Description(String),
    /// `NBD_INFO_BLOCK_SIZE`.
    BlockSize(BlockSizes),
    /// An information type this decoder does not know (clients MUST ignore it).
    Unknown(u16),
}

/// Decodes an `NBD_REP_INFO` payload, checking the fixed lengths the spec mandates.
pub fn decode_info_reply(data: &[u8]) -> Result<InfoReply, ClientError> {
    let mut r = Reader::new(data);
    let kind = r.u16().ok_or(truncated(2))?;
    let exact = |want: usize| {
        if data.len() == want {
            Ok(())
        } else {
            Err(ClientError::Malformed("NBD_REP_INFO has the wrong length"))
        }
    };
    Ok(match kind {
        INFO_EXPORT => {
            exact(12)?;
            let (Some(size), Some(flags)) = (r.u64(), r.u16()) else {
                return Err(truncated(12));
            };
            InfoReply::Export { size, flags }
        }
        INFO_NAME => InfoReply::Name(check_string(r.rest())?.to_owned()),
        INFO_DESCRIPTION => InfoReply::Description(check_string(r.rest())?.to_owned()),
        INFO_BLOCK_SIZE => {
            exact(14)?;
            let (Some(min), Some(preferred), Some(max)) = (r.u32(), r.u32(), r.u32()) else {
                return Err(truncated(14));
            };
            InfoReply::BlockSize(BlockSizes {
                min,
                preferred,
                max,
            })
        }
        other => InfoReply::Unknown(other),
    })
}

/// Decodes an `NBD_REP_SERVER` payload into (name, description).
pub fn decode_rep_server(data: &[u8]) -> Result<(String, String), ClientError> {
    let mut r = Reader::new(data);
    let len = r.u32().ok_or(truncated(4))?;
    let len = usize::try_from(len).map_err(|_| ClientError::Malformed("name length"))?;
    let name = r
        .bytes(len)
        .ok_or(ClientError::Malformed("name longer than the reply"))?;
    Ok((
        check_string(name)?.to_owned(),
        check_string(r.rest())?.to_owned(),
    ))
}

/// Decodes an `NBD_REP_META_CONTEXT` payload into (context id, name).
pub fn decode_rep_meta_context(data: &[u8]) -> Result<(u32, String), ClientError> {
    let mut r = Reader::new(data);
    let id = r.u32().ok_or(truncated(4))?;
    Ok((id, check_string(r.rest())?.to_owned()))
}

/// Decodes the reply to `NBD_OPT_EXPORT_NAME` (10 bytes, or 134 with the zero padding, which
/// must be zero); returns (size, transmission flags).
pub fn decode_export_name_reply(bytes: &[u8], no_zeroes: bool) -> Result<(u64, u16), ClientError> {
    let want = if no_zeroes {
        10
    } else {
        10 + EXPORT_NAME_PADDING
    };
    if bytes.len() < want {
        return Err(truncated(want));
    }
    let mut r = Reader::new(bytes);
    let (Some(size), Some(flags)) = (r.u64(), r.u16()) else {
        return Err(truncated(want));
    };
    if !no_zeroes
        && r.bytes(EXPORT_NAME_PADDING)
            .is_some_and(|z| z.iter().any(|&b| b != 0))
    {
        return Err(ClientError::Malformed("non-zero padding"));
    }
    Ok((size, flags))
}

/// A transmission reply header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyHeader {
    /// A simple reply (16 bytes); a successful READ's data follows.
    Simple {
        /// Error value (0 = success).
        error: u32,
        /// The request's cookie.
        cookie: u64,
    },
    /// A structured chunk header (20 bytes); `length` payload bytes follow.
    Chunk {
        /// `REPLY_FLAG_*`.
        flags: u16,
        /// `REPLY_TYPE_*`.
        kind: u16,
        /// The request's cookie.
        cookie: u64,
        /// Payload length.
        length: u32,
    },
}

/// Decodes a reply header from the front of `bytes`; returns it and its length (16 or 20).
/// `Truncated` says how many bytes to read before trying again.
pub fn decode_reply_header(bytes: &[u8]) -> Result<(ReplyHeader, usize), ClientError> {
    let mut r = Reader::new(bytes);
    let magic = r.u32().ok_or(truncated(4))?;
    match magic {
        SIMPLE_REPLY_MAGIC => {
            let (Some(error), Some(cookie)) = (r.u32(), r.u64()) else {
                return Err(truncated(SIMPLE_REPLY_HEADER_LEN));
            };
            Ok((
                ReplyHeader::Simple { error, cookie },
                SIMPLE_REPLY_HEADER_LEN,
            ))
        }
        STRUCTURED_REPLY_MAGIC => {
            let (Some(flags), Some(kind), Some(cookie), Some(length)) =
                (r.u16(), r.u16(), r.u64(), r.u32())
            else {
                return Err(truncated(CHUNK_HEADER_LEN));
            };
            Ok((
                ReplyHeader::Chunk {
                    flags,
                    kind,
                    cookie,
                    length,
                },
                CHUNK_HEADER_LEN,
            ))
        }
        other => Err(ClientError::BadMagic {
            expected: u64::from(STRUCTURED_REPLY_MAGIC),
            got: u64::from(other),
        }),
    }
}

/// A decoded structured chunk payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// `NBD_REPLY_TYPE_NONE`.
    None,
    /// `NBD_REPLY_TYPE_OFFSET_DATA`.
    OffsetData {
        /// Export offset of the first byte.
        offset: u64,
        /// The data.
        data: &'a [u8],
    },
    /// `NBD_REPLY_TYPE_OFFSET_HOLE`.
    OffsetHole {
        /// Export offset.
        offset: u64,
        /// Bytes that read as zero.
        len: u32,
    },
    /// `NBD_REPLY_TYPE_BLOCK_STATUS`.
    BlockStatus {
        /// Metadata context id.
        context_id: u32,
        /// Consecutive extents from the request offset.
        extents: Vec<Extent>,
    },
    /// `NBD_REPLY_TYPE_ERROR`.
    Error {
        /// Error value.
        error: u32,
        /// Message for humans.
        message: String,
    },
    /// `NBD_REPLY_TYPE_ERROR_OFFSET`.
    ErrorOffset {
        /// Error value.
        error: u32,
        /// Message for humans.
        message: String,
        /// Where it happened.
        offset: u64,
    },
    /// Any other type; with bit 15 set it is an error the client MUST treat as failing the
    /// request.
    Unknown {
        /// The chunk type.
        kind: u16,
        /// Its payload.
        payload: &'a [u8],
    },
}

/// Decodes the payload of a chunk of type `kind`, enforcing each type's length rule.
pub fn decode_chunk(kind: u16, payload: &[u8]) -> Result<Chunk<'_>, ClientError> {
    let mut r = Reader::new(payload);
    let bad = ClientError::Malformed;
    Ok(match kind {
        REPLY_TYPE_NONE if payload.is_empty() => Chunk::None,
        REPLY_TYPE_NONE => return Err(bad("NONE chunk with payload")),
        REPLY_TYPE_OFFSET_DATA => {
            let offset = r.u64().ok_or(bad("OFFSET_DATA shorter than 9"))?;
            let data = r.rest();
            if data.is_empty() {
                return Err(bad("OFFSET_DATA without data"));
            }
            Chunk::OffsetData { offset, data }
        }
        REPLY_TYPE_OFFSET_HOLE => {
            let (Some(offset), Some(len), 0) = (r.u64(), r.u32(), r.remaining()) else {
                return Err(bad("OFFSET_HOLE length is not 12"));
            };
            if len == 0 {
                return Err(bad("OFFSET_HOLE of zero bytes"));
            }
            Chunk::OffsetHole { offset, len }
        }
        REPLY_TYPE_BLOCK_STATUS => {
            if payload.len() < 12 || !(payload.len() - 4).is_multiple_of(8) {
                return Err(bad("BLOCK_STATUS length is not 4 + 8n"));
            }
            let context_id = r.u32().ok_or(bad("BLOCK_STATUS"))?;
            let mut extents = Vec::with_capacity(r.remaining() / 8);
            while let (Some(length), Some(flags)) = (r.u32(), r.u32()) {
                if length == 0 {
                    return Err(bad("zero-length extent"));
                }
                extents.push(Extent { length, flags });
            }
            Chunk::BlockStatus {
                context_id,
                extents,
            }
        }
        REPLY_TYPE_ERROR | REPLY_TYPE_ERROR_OFFSET => {
            let (Some(error), Some(mlen)) = (r.u32(), r.u16()) else {
                return Err(bad("error chunk shorter than 6"));
            };
            let msg = r
                .bytes(usize::from(mlen))
                .ok_or(bad("error message longer than the chunk"))?;
            let message = check_string(msg)?.to_owned();
            if kind == REPLY_TYPE_ERROR {
                if r.remaining() != 0 {
                    return Err(bad("trailing bytes in ERROR chunk"));
                }
                Chunk::Error { error, message }
            } else {
                let (Some(offset), 0) = (r.u64(), r.remaining()) else {
                    return Err(bad("ERROR_OFFSET length mismatch"));
                };
                Chunk::ErrorOffset {
                    error,
                    message,
                    offset,
                }
            }
        }
        other => Chunk::Unknown {
            kind: other,
            payload,
        },
    })
}
