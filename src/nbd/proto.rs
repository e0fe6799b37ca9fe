//! The NBD protocol, pure: codecs, the option-haggling state machine and request validation.
//!
//! The authority is `doc/proto.md` in the NetworkBlockDevice/nbd repository; doc comments cite
//! its section titles. Nothing here does I/O, reads a clock or spawns anything
//! (`tests/purity.rs`), so `nbd::server` and the simulator drive it the same way:
//!
//! 1. Handshake: send [`server_greeting`]; read 4 bytes and [`decode_client_flags`] (an error
//!    means drop the connection); create a [`Negotiation`] with an [`ExportCatalog`].
//! 2. Options: read 16 bytes, [`OptionHeader::decode`], follow [`OptionHeader::plan`] (read,
//!    discard, or drop), call [`Negotiation::handle_option`] (or `handle_oversize`), write
//!    [`OptionOutcome::reply`] and follow [`OptionOutcome::next`] until
//!    [`Next::Transmission`] hands over a [`Negotiated`].
//! 3. Transmission: read 28 bytes, [`RequestHeader::decode`] (an error means drop), then
//!    [`validate`] against [`Negotiated::limits`]. A [`Command::Write`] is followed by `len`
//!    payload bytes; a [`Reject`] says whether to drain the payload or drop the connection.
//!    Answer with the encoders in [`reply`]; [`reply::error_reply`] picks the right form.
//!
//! [`client`] holds the other side of the wire for tests; [`fuzz_options`] and
//! [`fuzz_requests`] are the fuzz targets' entry points.
//!
//! Not implemented: TLS (`NBD_OPT_STARTTLS` is refused; NOTLS mode), extended headers
//! (`NBD_OPT_EXTENDED_HEADERS` is refused), `NBD_CMD_RESIZE`, and metadata contexts other than
//! `base:allocation`.

mod catalog;
pub mod client;
pub mod consts;
mod errors;
mod fuzz;
mod handshake;
mod negotiate;
mod option_reply;
mod options;
mod outcome;
pub mod reply;
mod request;
mod validate;
mod wire;

#[cfg(test)]
mod tests;

pub use catalog::{ExportCatalog, ExportInfo, GoRefusal, Purpose};
pub use consts::*;
pub use errors::{Errno, RepError};
pub use fuzz::{FUZZ_FLAGS, FuzzCatalog, fuzz_options, fuzz_requests, fuzz_requests_with};
pub use handshake::{
    ClientFlags, DEFAULT_MAX_OPTION_LEN, HandshakeError, OPTION_DISCARD_LIMIT, OptionHeader,
    PayloadPlan, SERVER_HANDSHAKE_FLAGS, decode_client_flags, server_greeting,
};
pub use negotiate::{Negotiation, effective_flags};
pub use option_reply::*;
pub use options::{
    InfoRequest, MetaContextRequest, PayloadError, expect_empty, parse_export_name,
    parse_info_request, parse_meta_context_request,
};
pub use outcome::{
    BASE_ALLOCATION_ID, CloseReason, Negotiated, Next, OptionOutcome, PendingList, PendingLookup,
    Step,
};
pub use reply::Extent;
pub use request::{RequestError, RequestHeader};
pub use validate::{Command, ExportLimits, Reject, RejectAction, WRITE_DRAIN_LIMIT, validate};
pub use wire::StringError;
