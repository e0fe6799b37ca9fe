//! Deciding whether a decoded request may run, and what to answer if not. The errno choices
//! follow "Error values" and the per-command text in "Request types"; the size rules follow
//! "Block size constraints".
//!
//! Order of checks: command known → flags known and allowed for this command → command
//! advertised → read-only → length/alignment → export bounds. So a write to a read-only export
//! is `EPERM` even when it is also out of range.
//!
//! Choices the spec leaves open, made here:
//! - A zero `length` (READ, WRITE, TRIM, WRITE_ZEROES, CACHE, BLOCK_STATUS) is `EINVAL`, never a
//!   disconnect ("the behavior of a server on such a request is unspecified although the server
//!   SHOULD NOT disconnect").
//! - `NBD_CMD_FLAG_FUA` is accepted on every command once `NBD_FLAG_SEND_FUA` was advertised
//!   ("the server MUST accept all commands with this bit set (even by ignoring the bit)") and is
//!   `EINVAL` otherwise; it is reported only on the commands that write.
//! - The maximum block size is enforced on READ and WRITE only, whose payloads the server must
//!   buffer; TRIM, WRITE_ZEROES, CACHE and BLOCK_STATUS are split by the layers below ("a server
//!   SHOULD merely fail ... with NBD_EINVAL", a SHOULD, not a MUST).
//! - A READ with `NBD_CMD_FLAG_DF` over the maximum is `EOVERFLOW` ("too large to send without
//!   fragmentation"); without DF it is `EINVAL`.
//! - `NBD_CMD_CACHE` is accepted even if `NBD_FLAG_SEND_CACHE` was not advertised ("client
//!   implementations exist which attempt to send a cache request even when NBD_FLAG_SEND_CACHE
//!   was not set").
//! - `NBD_CMD_DISC` is always honoured, whatever its other fields say.

use super::consts::*;
use super::errors::Errno;
use super::request::RequestHeader;

/// A refused WRITE longer than this (and than the advertised maximum) is treated as a denial of
/// service and the connection dropped instead of reading the payload; the spec says any length
/// below 2^25 SHOULD NOT be considered one.
pub const WRITE_DRAIN_LIMIT: u32 = 1 << 25;

/// What request validation needs to know about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportLimits {
    /// Export size in bytes.
    pub size: u64,
    /// Minimum block size: offsets and lengths must be multiples (a power of two, e.g. 512).
    pub min_block: u32,
    /// Largest READ/WRITE length (the advertised maximum block size).
    pub max_payload: u32,
    /// Transmission flags as sent to the client.
    pub flags: u16,
    /// Structured replies negotiated.
    pub structured: bool,
    /// `base:allocation` context id, if selected.
    pub meta_context: Option<u32>,
}

/// A request that passed validation, with everything the server needs to run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Read `len` bytes; with `df` the reply must be a single data chunk.
    Read {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u32,
        /// `NBD_CMD_FLAG_DF`.
        df: bool,
    },
    /// Write the `len` payload bytes that follow the header.
    Write {
        /// Byte offset.
        offset: u64,
        /// Byte length (= payload length).
        len: u32,
        /// Persist before replying.
        fua: bool,
    },
    /// Persist every write already replied to.
    Flush,
    /// Discard hint; trimmed blocks must read back as zeroes on both replicas (DESIGN.md).
    Trim {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u32,
        /// Persist before replying.
        fua: bool,
    },
    /// Zero a range.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u32,
        /// Persist before replying.
        fua: bool,
        /// Must stay allocated (no hole punching).
        no_hole: bool,
        /// Fail with `ENOTSUP` unless zeroing is faster than writing.
        fast_zero: bool,
    },
    /// Report `base:allocation` extents.
    BlockStatus {
        /// Byte offset.
        offset: u64,
        /// Byte length (a hint).
        len: u32,
        /// Exactly one extent, not longer than `len`.
        req_one: bool,
    },
    /// Finish outstanding requests and close; no reply.
    Disc,
    /// Prefetch hint; may simply succeed.
    Cache {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u32,
    },
}

/// What to do with the connection after refusing a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectAction {
    /// Send the error reply; there is no payload to skip.
    Reply,
    /// Read and discard this many payload bytes (a refused WRITE), then send the error reply.
    DrainThenReply(u32),
    /// The payload is too large to read: drop the connection (hard disconnect).
    Disconnect,
}

/// A refused request: the errno to reply with and how to get the stream back in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// Error for the reply.
    pub errno: Errno,
    /// What to do about the payload.
    pub action: RejectAction,
}

/// Checks `req` against the negotiated `limits`.
pub fn validate(req: &RequestHeader, limits: &ExportLimits) -> Result<Command, Reject> {
    let reject = |errno| Err(reject_for(req, limits, errno));
    let (offset, len, flags) = (req.offset, req.length, req.flags);
    let has = |f: u16| flags & f != 0;
    let advertised = |f: u16| limits.flags & f != 0;

    let (takes, needs_flag): (u16, u16) = match req.kind {
        CMD_DISC => return Ok(Command::Disc),
        CMD_READ => (CMD_FLAG_DF, 0),
        CMD_WRITE => (0, 0),
        CMD_FLUSH => (0, FLAG_SEND_FLUSH),
        CMD_TRIM => (0, FLAG_SEND_TRIM),
        CMD_CACHE => (0, 0),
        CMD_WRITE_ZEROES => (
            CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
            FLAG_SEND_WRITE_ZEROES,
        ),
        CMD_BLOCK_STATUS => (CMD_FLAG_REQ_ONE, 0),
        // Unknown commands, and RESIZE which udrbd does not implement.
        _ => return reject(Errno::Inval),
    };

    // Flags: unknown bits, bits not documented for this command, and bits whose feature was
    // not advertised are all EINVAL.
    if flags & !KNOWN_CMD_FLAGS != 0 || flags & !(takes | CMD_FLAG_FUA) != 0 {
        return reject(Errno::Inval);
    }
    if has(CMD_FLAG_FUA) && !advertised(FLAG_SEND_FUA) {
        return reject(Errno::Inval);
    }
    if has(CMD_FLAG_DF) && !(limits.structured && advertised(FLAG_SEND_DF)) {
        return reject(Errno::Inval);
    }
    if has(CMD_FLAG_FAST_ZERO) && !advertised(FLAG_SEND_FAST_ZERO) {
        return reject(Errno::Inval);
    }
    if needs_flag != 0 && !advertised(needs_flag) {
        return reject(Errno::Inval);
    }
    // "Servers SHOULD reply with NBD_EINVAL to clients sending NBD_CMD_BLOCK_STATUS without
    // selecting at least one metadata context"; selecting one requires structured replies.
    if req.kind == CMD_BLOCK_STATUS && (limits.meta_context.is_none() || !limits.structured) {
        return reject(Errno::Inval);
    }

    let writes = matches!(req.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    if writes && advertised(FLAG_READ_ONLY) {
        return reject(Errno::Perm);
    }

    if req.kind == CMD_FLUSH {
        // "length and offset are reserved, and MUST be set to all-zero".
        return if offset == 0 && len == 0 {
            Ok(Command::Flush)
        } else {
            reject(Errno::Inval)
        };
    }

    // Everything below has a range.
    let min = u64::from(limits.min_block.max(1));
    if len == 0 || offset % min != 0 || u64::from(len) % min != 0 {
        return reject(Errno::Inval);
    }
    if matches!(req.kind, CMD_READ | CMD_WRITE) && len > limits.max_payload {
        let e = if has(CMD_FLAG_DF) {
            Errno::Overflow
        } else {
            Errno::Inval
        };
        return reject(e);
    }
    let in_range = offset
        .checked_add(u64::from(len))
        .is_some_and(|end| end <= limits.size);
    if !in_range {
        // "SHOULD return NBD_ENOSPC if it receives a write request including one or more
        // sectors beyond the size of the device" (also for WRITE_ZEROES); EINVAL for the rest.
        let e = if matches!(req.kind, CMD_WRITE | CMD_WRITE_ZEROES) {
            Errno::NoSpc
        } else {
            Errno::Inval
        };
        return reject(e);
    }

    let fua = has(CMD_FLAG_FUA);
    Ok(match req.kind {
        CMD_READ => Command::Read {
            offset,
            len,
            df: has(CMD_FLAG_DF),
        },
        CMD_WRITE => Command::Write { offset, len, fua },
        CMD_TRIM => Command::Trim { offset, len, fua },
        CMD_WRITE_ZEROES => Command::WriteZeroes {
            offset,
            len,
            fua,
            no_hole: has(CMD_FLAG_NO_HOLE),
            fast_zero: has(CMD_FLAG_FAST_ZERO),
        },
        CMD_BLOCK_STATUS => Command::BlockStatus {
            offset,
            len,
            req_one: has(CMD_FLAG_REQ_ONE),
        },
        _ => Command::Cache { offset, len },
    })
}

/// The [`Reject`] for `req` with `errno`: a WRITE's payload is still on the wire and must be
/// drained, unless it is longer than both the advertised maximum and [`WRITE_DRAIN_LIMIT`], in
/// which case the connection is dropped.
fn reject_for(req: &RequestHeader, limits: &ExportLimits, errno: Errno) -> Reject {
    let limit = limits.max_payload.max(WRITE_DRAIN_LIMIT);
    let action = match req.payload_len() {
        0 => RejectAction::Reply,
        n if n <= limit => RejectAction::DrainThenReply(n),
        _ => RejectAction::Disconnect,
    };
    Reject { errno, action }
}
