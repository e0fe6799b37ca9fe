//! Transmission replies, server side ("Simple reply message", "Structured reply chunk message",
//! "Structured reply types"). Headers come back as arrays so the server can write a header and
//! then the data buffer it already has (no copy of the payload); small chunks are built whole.
//!
//! Encoders assert their documented preconditions (non-empty data, non-zero extents): those are
//! bugs in the caller, not input from the wire.

use super::consts::*;
use super::errors::Errno;
use super::wire::truncate_str;

/// Bytes before the data in an `NBD_REPLY_TYPE_OFFSET_DATA` chunk: chunk header + offset.
pub const OFFSET_DATA_HEADER_LEN: usize = CHUNK_HEADER_LEN + 8;
/// A whole `NBD_REPLY_TYPE_OFFSET_HOLE` chunk.
pub const OFFSET_HOLE_LEN: usize = CHUNK_HEADER_LEN + 12;

/// One `base:allocation` extent in a block status chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Bytes covered (non-zero, a multiple of the minimum block size).
    pub length: u32,
    /// `STATE_HOLE` / `STATE_ZERO` bits.
    pub flags: u32,
}

/// A simple reply header: magic, error (0 = success), cookie. For a successful READ without
/// structured replies the data follows.
pub fn simple_reply(cookie: u64, error: Option<Errno>) -> [u8; SIMPLE_REPLY_HEADER_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_HEADER_LEN];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.map_or(0, Errno::code).to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// A structured chunk header: magic, flags, type, cookie, payload length.
pub fn chunk_header(flags: u16, kind: u16, cookie: u64, length: u32) -> [u8; CHUNK_HEADER_LEN] {
    let mut b = [0u8; CHUNK_HEADER_LEN];
    b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..20].copy_from_slice(&length.to_be_bytes());
    b
}

fn done_flag(done: bool) -> u16 {
    if done { REPLY_FLAG_DONE } else { 0 }
}

/// The header of an `NBD_REPLY_TYPE_OFFSET_DATA` chunk for `data_len` bytes read at `offset`;
/// write the data right after it. `done` marks the final chunk, which the spec allows only when
/// no error can still be detected while sending it.
///
/// Panics if `data_len` is 0 (the chunk must carry data) or above `u32::MAX - 8`.
pub fn offset_data_header(
    cookie: u64,
    offset: u64,
    data_len: u32,
    done: bool,
) -> [u8; OFFSET_DATA_HEADER_LEN] {
    assert!(
        data_len > 0,
        "OFFSET_DATA chunk must carry at least one byte"
    );
    let len = data_len
        .checked_add(8)
        .unwrap_or_else(|| panic!("OFFSET_DATA chunk of {data_len} bytes overflows"));
    let mut b = [0u8; OFFSET_DATA_HEADER_LEN];
    b[..CHUNK_HEADER_LEN].copy_from_slice(&chunk_header(
        done_flag(done),
        REPLY_TYPE_OFFSET_DATA,
        cookie,
        len,
    ));
    b[CHUNK_HEADER_LEN..].copy_from_slice(&offset.to_be_bytes());
    b
}

/// An `NBD_REPLY_TYPE_OFFSET_HOLE` chunk: `hole_len` bytes at `offset` read as zeroes.
///
/// Panics if `hole_len` is 0 (the spec says it MUST be non-zero).
pub fn offset_hole(cookie: u64, offset: u64, hole_len: u32, done: bool) -> [u8; OFFSET_HOLE_LEN] {
    assert!(
        hole_len > 0,
        "OFFSET_HOLE chunk must cover at least one byte"
    );
    let mut b = [0u8; OFFSET_HOLE_LEN];
    b[..CHUNK_HEADER_LEN].copy_from_slice(&chunk_header(
        done_flag(done),
        REPLY_TYPE_OFFSET_HOLE,
        cookie,
        12,
    ));
    b[20..28].copy_from_slice(&offset.to_be_bytes());
    b[28..32].copy_from_slice(&hole_len.to_be_bytes());
    b
}

/// An `NBD_REPLY_TYPE_BLOCK_STATUS` chunk for one context: u32 context id, then (u32 length,
/// u32 flags) per extent. Appended to `out`.
///
/// Panics if `extents` is empty or an extent has length 0 (both MUST NOT happen), or if the
/// list does not fit a chunk.
pub fn block_status_chunk(
    out: &mut Vec<u8>,
    cookie: u64,
    context_id: u32,
    extents: &[Extent],
    done: bool,
) {
    assert!(
        !extents.is_empty(),
        "BLOCK_STATUS needs at least one extent"
    );
    assert!(
        extents.iter().all(|e| e.length > 0),
        "BLOCK_STATUS extents must be non-empty"
    );
    let len = extents
        .len()
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or_else(|| panic!("{} extents do not fit one chunk", extents.len()));
    out.reserve(CHUNK_HEADER_LEN + len as usize);
    out.extend_from_slice(&chunk_header(
        done_flag(done),
        REPLY_TYPE_BLOCK_STATUS,
        cookie,
        len,
    ));
    out.extend_from_slice(&context_id.to_be_bytes());
    for e in extents {
        out.extend_from_slice(&e.length.to_be_bytes());
        out.extend_from_slice(&e.flags.to_be_bytes());
    }
}

/// An `NBD_REPLY_TYPE_ERROR` chunk: u32 error, u16 message length, message (capped at 4096
/// bytes). Appended to `out`.
pub fn error_chunk(out: &mut Vec<u8>, cookie: u64, errno: Errno, message: &str, done: bool) {
    let msg = truncate_str(message, MAX_STRING_LEN);
    let len = 6 + msg.len() as u32;
    out.extend_from_slice(&chunk_header(
        done_flag(done),
        REPLY_TYPE_ERROR,
        cookie,
        len,
    ));
    out.extend_from_slice(&errno.code().to_be_bytes());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg.as_bytes());
}

/// An `NBD_REPLY_TYPE_ERROR_OFFSET` chunk: like [`error_chunk`] plus the u64 offset where the
/// error happened (which MUST lie inside the request).
pub fn error_offset_chunk(
    out: &mut Vec<u8>,
    cookie: u64,
    errno: Errno,
    offset: u64,
    message: &str,
    done: bool,
) {
    let msg = truncate_str(message, MAX_STRING_LEN);
    let len = 14 + msg.len() as u32;
    out.extend_from_slice(&chunk_header(
        done_flag(done),
        REPLY_TYPE_ERROR_OFFSET,
        cookie,
        len,
    ));
    out.extend_from_slice(&errno.code().to_be_bytes());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg.as_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
}

/// The `NBD_REPLY_TYPE_NONE` chunk that ends a reply (always with `NBD_REPLY_FLAG_DONE`).
pub fn none_chunk(cookie: u64) -> [u8; CHUNK_HEADER_LEN] {
    chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0)
}

/// The complete error answer to a request, in the form the connection requires: a final
/// `NBD_REPLY_TYPE_ERROR` chunk with `message` when structured replies are on (the spec says the
/// server SHOULD prefer those, and MUST for READ), else a simple reply with the error.
pub fn error_reply(out: &mut Vec<u8>, structured: bool, cookie: u64, errno: Errno, message: &str) {
    if structured {
        error_chunk(out, cookie, errno, message, true);
    } else {
        out.extend_from_slice(&simple_reply(cookie, Some(errno)));
    }
}
