//! The fixed-size parts of the handshake: the server greeting, the client flags and the option
//! header, plus the rule for how much option payload the server is willing to read
//! ("Newstyle negotiation", "Fixed newstyle negotiation").

use super::consts::*;
use super::wire::Reader;

/// Handshake flags udrbd advertises: fixed newstyle, and it can leave out the 124 zero bytes.
pub const SERVER_HANDSHAKE_FLAGS: u16 = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;

/// A sensible default for the largest option payload the server reads: every option udrbd
/// supports fits (a name and queries are at most 4096 bytes each), and 64 KiB bounds the memory a
/// client can make us allocate per option.
pub const DEFAULT_MAX_OPTION_LEN: u32 = 64 * 1024;

/// Oversized options up to this many bytes are read and thrown away so the client gets
/// `NBD_REP_ERR_TOO_BIG` and can carry on; anything larger is treated as a denial of service and
/// the connection is dropped, which "Termination of the session during option haggling"
/// allows ("if a server believes a client's behaviour constitutes a denial of service, it MAY
/// initiate a hard disconnect").
pub const OPTION_DISCARD_LIMIT: u32 = 1 << 20;

/// The 18 bytes the server sends first: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
pub fn server_greeting() -> [u8; GREETING_LEN] {
    let mut g = [0u8; GREETING_LEN];
    g[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    g[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    g[16..18].copy_from_slice(&SERVER_HANDSHAKE_FLAGS.to_be_bytes());
    g
}

/// What the client said in its 32-bit flags word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientFlags {
    /// `NBD_FLAG_C_FIXED_NEWSTYLE`. udrbd honours fixed newstyle even when it is clear, which
    /// the spec permits ("Servers MAY choose to honour fixed newstyle from clients that didn't
    /// set this bit").
    pub fixed_newstyle: bool,
    /// `NBD_FLAG_C_NO_ZEROES`: omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
    pub no_zeroes: bool,
}

impl ClientFlags {
    /// The raw word, for clients.
    pub fn bits(self) -> u32 {
        (if self.fixed_newstyle {
            FLAG_C_FIXED_NEWSTYLE
        } else {
            0
        }) | (if self.no_zeroes { FLAG_C_NO_ZEROES } else { 0 })
    }
}

/// Errors in the fixed-size handshake fields. Each one means the server must drop the
/// connection: there is no way to reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A client flag this server does not know ("the server MUST drop the TCP connection if the
    /// client sets an unknown flag").
    #[error("client sent unknown flags {0:#x}")]
    UnknownClientFlags(u32),
    /// A client flag that answers a handshake flag the server did not advertise.
    #[error("client flag {0:#x} answers a handshake flag the server did not advertise")]
    UnadvertisedClientFlag(u32),
    /// An option did not start with `IHAVEOPT`.
    #[error("option header has magic {0:#x}, expected IHAVEOPT")]
    BadOptionMagic(u64),
}

/// Decodes the client flags sent after the greeting. `advertised` is the handshake flags the
/// server sent (normally [`SERVER_HANDSHAKE_FLAGS`]).
pub fn decode_client_flags(
    bytes: &[u8; CLIENT_FLAGS_LEN],
    advertised: u16,
) -> Result<ClientFlags, HandshakeError> {
    let raw = u32::from_be_bytes(*bytes);
    let unknown = raw & !KNOWN_CLIENT_FLAGS;
    if unknown != 0 {
        return Err(HandshakeError::UnknownClientFlags(unknown));
    }
    let no_zeroes = raw & FLAG_C_NO_ZEROES != 0;
    if no_zeroes && advertised & FLAG_NO_ZEROES == 0 {
        return Err(HandshakeError::UnadvertisedClientFlag(FLAG_C_NO_ZEROES));
    }
    Ok(ClientFlags {
        fixed_newstyle: raw & FLAG_C_FIXED_NEWSTYLE != 0,
        no_zeroes,
    })
}

/// The 16-byte header in front of every option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// `NBD_OPT_*`.
    pub option: u32,
    /// Bytes of option data that follow.
    pub length: u32,
}

/// What the server should do with the payload announced by an [`OptionHeader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadPlan {
    /// Read exactly this many bytes and pass them to the negotiation.
    Read(u32),
    /// Read and discard this many bytes, then answer with
    /// [`Negotiation::handle_oversize`](super::Negotiation::handle_oversize).
    Discard(u32),
    /// Drop the connection without reading: too large to skip, or an oversized
    /// `NBD_OPT_EXPORT_NAME`, which cannot be answered with an error.
    Disconnect,
}

impl OptionHeader {
    /// Decodes the header. A wrong magic means the stream is out of sync: drop the connection.
    pub fn decode(bytes: &[u8; OPTION_HEADER_LEN]) -> Result<Self, HandshakeError> {
        // The array length guarantees every field is present; the defaults are unreachable.
        let mut r = Reader::new(bytes);
        let magic = r.u64().unwrap_or(0);
        if magic != IHAVEOPT {
            return Err(HandshakeError::BadOptionMagic(magic));
        }
        Ok(OptionHeader {
            option: r.u32().unwrap_or(0),
            length: r.u32().unwrap_or(0),
        })
    }

    /// The 16 bytes on the wire, for clients.
    pub fn encode(&self) -> [u8; OPTION_HEADER_LEN] {
        let mut b = [0u8; OPTION_HEADER_LEN];
        b[0..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        b[8..12].copy_from_slice(&self.option.to_be_bytes());
        b[12..16].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// How to treat the payload given the largest option the server accepts (`max_len`, e.g.
    /// [`DEFAULT_MAX_OPTION_LEN`]). Payloads up to `max_len` are read; longer ones up to
    /// [`OPTION_DISCARD_LIMIT`] are skipped and refused with `NBD_REP_ERR_TOO_BIG` ("The request
    /// ... is too large to process"); longer still, or any oversized `NBD_OPT_EXPORT_NAME`
    /// (whose only failure mode is a hard disconnect), drop the connection.
    pub fn plan(&self, max_len: u32) -> PayloadPlan {
        if self.length <= max_len {
            PayloadPlan::Read(self.length)
        } else if self.option != OPT_EXPORT_NAME && self.length <= OPTION_DISCARD_LIMIT {
            PayloadPlan::Discard(self.length)
        } else {
            PayloadPlan::Disconnect
        }
    }
}
