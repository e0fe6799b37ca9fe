//! The two small vocabularies the protocol uses to say "no": option-reply error types during
//! the handshake and errno values during transmission. Typed so that a caller cannot send an
//! errno where a reply type belongs, or invent a value the spec does not define.

use super::consts::*;

/// An `NBD_REP_ERR_*` option reply type ("Option reply types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepError {
    /// `NBD_REP_ERR_UNSUP`: option unknown to this server.
    Unsup,
    /// `NBD_REP_ERR_POLICY`: known and valid, but forbidden by policy.
    Policy,
    /// `NBD_REP_ERR_INVALID`: syntactically or semantically invalid.
    Invalid,
    /// `NBD_REP_ERR_PLATFORM`: not available on this platform.
    Platform,
    /// `NBD_REP_ERR_TLS_REQD`: TLS required first.
    TlsReqd,
    /// `NBD_REP_ERR_UNKNOWN`: no such export.
    Unknown,
    /// `NBD_REP_ERR_SHUTDOWN`: the server is shutting down.
    Shutdown,
    /// `NBD_REP_ERR_BLOCK_SIZE_REQD`: ask for `NBD_INFO_BLOCK_SIZE` first.
    BlockSizeReqd,
    /// `NBD_REP_ERR_TOO_BIG`: request or reply too large.
    TooBig,
    /// `NBD_REP_ERR_EXT_HEADER_REQD`: extended headers required first.
    ExtHeaderReqd,
}

impl RepError {
    /// The reply type on the wire.
    pub fn code(self) -> u32 {
        match self {
            RepError::Unsup => REP_ERR_UNSUP,
            RepError::Policy => REP_ERR_POLICY,
            RepError::Invalid => REP_ERR_INVALID,
            RepError::Platform => REP_ERR_PLATFORM,
            RepError::TlsReqd => REP_ERR_TLS_REQD,
            RepError::Unknown => REP_ERR_UNKNOWN,
            RepError::Shutdown => REP_ERR_SHUTDOWN,
            RepError::BlockSizeReqd => REP_ERR_BLOCK_SIZE_REQD,
            RepError::TooBig => REP_ERR_TOO_BIG,
            RepError::ExtHeaderReqd => REP_ERR_EXT_HEADER_REQD,
        }
    }

    /// The inverse of [`RepError::code`]; `None` for anything else.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            REP_ERR_UNSUP => RepError::Unsup,
            REP_ERR_POLICY => RepError::Policy,
            REP_ERR_INVALID => RepError::Invalid,
            REP_ERR_PLATFORM => RepError::Platform,
            REP_ERR_TLS_REQD => RepError::TlsReqd,
            REP_ERR_UNKNOWN => RepError::Unknown,
            REP_ERR_SHUTDOWN => RepError::Shutdown,
            REP_ERR_BLOCK_SIZE_REQD => RepError::BlockSizeReqd,
            REP_ERR_TOO_BIG => RepError::TooBig,
            REP_ERR_EXT_HEADER_REQD => RepError::ExtHeaderReqd,
            _ => return None,
        })
    }
}

/// An `NBD_E*` error value for replies ("Error values"). Lower layers map their own errors to
/// one of these at the NBD edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Errno {
    /// `NBD_EPERM`: write to a read-only export.
    Perm,
    /// `NBD_EIO`: I/O error.
    Io,
    /// `NBD_ENOMEM`: out of memory (the spec says avoid it).
    NoMem,
    /// `NBD_EINVAL`: invalid request.
    Inval,
    /// `NBD_ENOSPC`: write beyond the end of the export.
    NoSpc,
    /// `NBD_EOVERFLOW`: a `DF` read too large to send unfragmented.
    Overflow,
    /// `NBD_ENOTSUP`: a `FAST_ZERO` write-zeroes that would not be fast.
    NotSup,
    /// `NBD_ESHUTDOWN`: the server is shutting down.
    Shutdown,
}

impl Errno {
    /// The value on the wire.
    pub fn code(self) -> u32 {
        match self {
            Errno::Perm => EPERM,
            Errno::Io => EIO,
            Errno::NoMem => ENOMEM,
            Errno::Inval => EINVAL,
            Errno::NoSpc => ENOSPC,
            Errno::Overflow => EOVERFLOW,
            Errno::NotSup => ENOTSUP,
            Errno::Shutdown => ESHUTDOWN,
        }
    }

    /// The inverse of [`Errno::code`]; `None` for values the spec does not define (a client
    /// SHOULD treat those as `EINVAL`).
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            EPERM => Errno::Perm,
            EIO => Errno::Io,
            ENOMEM => Errno::NoMem,
            EINVAL => Errno::Inval,
            ENOSPC => Errno::NoSpc,
            EOVERFLOW => Errno::Overflow,
            ENOTSUP => Errno::NotSup,
            ESHUTDOWN => Errno::Shutdown,
            _ => return None,
        })
    }
}
