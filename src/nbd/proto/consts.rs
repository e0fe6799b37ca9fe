//! Every number the NBD protocol puts on the wire, named as `doc/proto.md` in
//! NetworkBlockDevice/nbd names it, minus the `NBD_` prefix (the module path says "nbd").
//! Sections cited are that document's ("Values" unless stated).

// ---- Magics ("Newstyle negotiation", "Fixed newstyle negotiation", "Transmission") ----

/// ASCII `NBDMAGIC`, the first 8 bytes the server sends (also known as `INIT_PASSWD`).
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// ASCII `IHAVEOPT`: second word of the newstyle greeting and the prefix of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// Prefix of every fixed-newstyle option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// `NBD_REQUEST_MAGIC`, the first word of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// `NBD_SIMPLE_REPLY_MAGIC` (formerly `NBD_REPLY_MAGIC`).
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// `NBD_STRUCTURED_REPLY_MAGIC`, the first word of every structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// ---- Handshake flags (16 bits, server -> client) ----

/// The server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// The server can omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;

// ---- Client flags (32 bits, client -> server) ----

/// The client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// The client does not want the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;
/// Every client flag this server understands; any other bit means the server MUST drop the
/// connection ("Client flags").
pub const KNOWN_CLIENT_FLAGS: u32 = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;

// ---- Transmission flags (16 bits, "Transmission flags") ----

/// MUST always be set.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// The export is read-only; writes fail with `EPERM`.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// `NBD_CMD_FLUSH` is supported.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// `NBD_CMD_FLAG_FUA` is supported.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// The medium behaves like a spinning disk (a scheduling hint only).
pub const FLAG_ROTATIONAL: u16 = 1 << 4;
/// `NBD_CMD_TRIM` is supported.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
/// `NBD_CMD_WRITE_ZEROES` (and `NBD_CMD_FLAG_NO_HOLE`) is supported.
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// `NBD_CMD_FLAG_DF` is supported; MUST be clear without structured replies.
pub const FLAG_SEND_DF: u16 = 1 << 7;
/// FLUSH and FUA are visible across all connections to the export.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// The experimental `RESIZE` extension (not implemented here).
pub const FLAG_SEND_RESIZE: u16 = 1 << 9;
/// `NBD_CMD_CACHE` is understood.
pub const FLAG_SEND_CACHE: u16 = 1 << 10;
/// `NBD_CMD_FLAG_FAST_ZERO` is supported; MUST be clear without `SEND_WRITE_ZEROES`.
pub const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;
// bit 12, NBD_FLAG_BLOCK_STAT_PAYLOAD, belongs to extended headers, which udrbd does not offer.

// ---- Option types ("Option types") ----

/// Choose an export and enter transmission; cannot return an error.
pub const OPT_EXPORT_NAME: u32 = 1;
/// End the session (soft disconnect).
pub const OPT_ABORT: u32 = 2;
/// List exports with `NBD_REP_SERVER` replies.
pub const OPT_LIST: u32 = 3;
/// Withdrawn experimental option; answered with `NBD_REP_ERR_UNSUP`.
pub const OPT_PEEK_EXPORT: u32 = 4;
/// Upgrade to TLS; udrbd runs in NOTLS mode.
pub const OPT_STARTTLS: u32 = 5;
/// Describe an export without entering transmission.
pub const OPT_INFO: u32 = 6;
/// Describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Use structured replies in transmission.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// List metadata contexts.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// Select metadata contexts for `NBD_CMD_BLOCK_STATUS`.
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// 64-bit request/reply headers (newer spec revisions); udrbd answers `NBD_REP_ERR_UNSUP`.
pub const OPT_EXTENDED_HEADERS: u32 = 11;

// ---- Option reply types ("Option reply types") ----

/// Success, or the end of a list of replies.
pub const REP_ACK: u32 = 1;
/// One export in reply to `NBD_OPT_LIST`.
pub const REP_SERVER: u32 = 2;
/// One `NBD_INFO_*` item in reply to `NBD_OPT_INFO`/`NBD_OPT_GO`.
pub const REP_INFO: u32 = 3;
/// One metadata context in reply to `NBD_OPT_{LIST,SET}_META_CONTEXT`.
pub const REP_META_CONTEXT: u32 = 4;
/// Bit 31 marks an error reply.
pub const REP_FLAG_ERROR: u32 = 1 << 31;
/// The option is unknown to this server.
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR + 1;
/// Known and well formed, but policy forbids it.
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR + 2;
/// Syntactically or semantically invalid.
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR + 3;
/// Not supported on this platform or build.
pub const REP_ERR_PLATFORM: u32 = REP_FLAG_ERROR + 4;
/// TLS must be negotiated first (never sent in NOTLS mode).
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR + 5;
/// The requested export is not available.
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR + 6;
/// The server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR + 7;
/// The client must request `NBD_INFO_BLOCK_SIZE` before `NBD_OPT_GO`.
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_FLAG_ERROR + 8;
/// The request or reply is too large to process.
pub const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR + 9;
/// Extended headers must be negotiated first (newer spec revisions).
pub const REP_ERR_EXT_HEADER_REQD: u32 = REP_FLAG_ERROR + 10;

// ---- Info types (`NBD_REP_INFO`) ----

/// Size and transmission flags; mandatory before a successful INFO/GO.
pub const INFO_EXPORT: u16 = 0;
/// The export's canonical name.
pub const INFO_NAME: u16 = 1;
/// A human-readable description.
pub const INFO_DESCRIPTION: u16 = 2;
/// Minimum, preferred and maximum block sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

// ---- Request types ("Request types") ----

/// Read `length` bytes at `offset`.
pub const CMD_READ: u16 = 0;
/// Write the `length` bytes that follow the header.
pub const CMD_WRITE: u16 = 1;
/// Disconnect after handling outstanding requests; no reply.
pub const CMD_DISC: u16 = 2;
/// Persist every write already replied to.
pub const CMD_FLUSH: u16 = 3;
/// Discard hint.
pub const CMD_TRIM: u16 = 4;
/// Prefetch hint.
pub const CMD_CACHE: u16 = 5;
/// Zero a range without a payload.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Query metadata contexts for a range.
pub const CMD_BLOCK_STATUS: u16 = 7;
/// The experimental `RESIZE` extension (rejected with `EINVAL`).
pub const CMD_RESIZE: u16 = 8;

// ---- Command flags ("Command flags") ----

/// Force unit access: reply only once the data is on stable storage.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// `NBD_CMD_WRITE_ZEROES` must not punch a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// `NBD_CMD_READ`: do not fragment the structured reply.
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// `NBD_CMD_BLOCK_STATUS`: one extent per context.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// `NBD_CMD_WRITE_ZEROES`: fail with `ENOTSUP` unless zeroing is fast.
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;
/// Every command flag this implementation knows.
pub const KNOWN_CMD_FLAGS: u16 =
    CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_DF | CMD_FLAG_REQ_ONE | CMD_FLAG_FAST_ZERO;

// ---- Structured replies ("Structured reply flags", "Structured reply types") ----

/// This is the last chunk of the reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// Empty final chunk.
pub const REPLY_TYPE_NONE: u16 = 0;
/// Offset + data.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Offset + length of a range that reads as zeroes.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Context id + (length, flags) extents.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Bit 15 marks an error chunk.
pub const REPLY_TYPE_FLAG_ERROR: u16 = 1 << 15;
/// Error + message.
pub const REPLY_TYPE_ERROR: u16 = REPLY_TYPE_FLAG_ERROR + 1;
/// Error + message + offset where it happened.
pub const REPLY_TYPE_ERROR_OFFSET: u16 = REPLY_TYPE_FLAG_ERROR + 2;

// ---- Error values ("Error values") ----

/// Operation not permitted (write to a read-only export).
pub const EPERM: u32 = 1;
/// Input/output error.
pub const EIO: u32 = 5;
/// Cannot allocate memory (SHOULD NOT be used).
pub const ENOMEM: u32 = 12;
/// Invalid argument.
pub const EINVAL: u32 = 22;
/// No space left on device (write beyond the end).
pub const ENOSPC: u32 = 28;
/// Value too large (`NBD_CMD_FLAG_DF` reads only).
pub const EOVERFLOW: u32 = 75;
/// Operation not supported (`NBD_CMD_FLAG_FAST_ZERO` only).
pub const ENOTSUP: u32 = 95;
/// The server is shutting down.
pub const ESHUTDOWN: u32 = 108;

// ---- base:allocation ("`base:allocation` metadata context") ----

/// The extent is not allocated.
pub const STATE_HOLE: u32 = 1 << 0;
/// The extent reads as zeroes.
pub const STATE_ZERO: u32 = 1 << 1;
/// The one metadata context udrbd serves.
pub const BASE_ALLOCATION: &str = "base:allocation";

// ---- Sizes ----

/// Longest string (export name, message, query) the spec allows ("Conventions").
pub const MAX_STRING_LEN: usize = 4096;
/// Server greeting: NBDMAGIC, IHAVEOPT, handshake flags.
pub const GREETING_LEN: usize = 18;
/// Client flags word.
pub const CLIENT_FLAGS_LEN: usize = 4;
/// Option header: IHAVEOPT, option, length.
pub const OPTION_HEADER_LEN: usize = 16;
/// Option reply header: magic, option, reply type, length.
pub const OPTION_REPLY_HEADER_LEN: usize = 20;
/// Request header: magic, flags, type, cookie, offset, length.
pub const REQUEST_HEADER_LEN: usize = 28;
/// Simple reply header: magic, error, cookie.
pub const SIMPLE_REPLY_HEADER_LEN: usize = 16;
/// Structured chunk header: magic, flags, type, cookie, length.
pub const CHUNK_HEADER_LEN: usize = 20;
/// The zero padding after an `NBD_OPT_EXPORT_NAME` reply unless `NO_ZEROES` was agreed.
pub const EXPORT_NAME_PADDING: usize = 124;
