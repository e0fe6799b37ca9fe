//! What one step of option haggling produces: the reply bytes, where the connection goes next,
//! and, when transmission starts, the [`Negotiated`] state. Also the half-finished steps of the
//! two-phase ([`Negotiation::begin`](super::Negotiation::begin)) API.

use super::catalog::{GoRefusal, Purpose};
use super::errors::RepError;
use super::option_reply::{BlockSizes, encode_rep_error};
use super::options::PayloadError;
use super::validate::ExportLimits;

/// The context id udrbd gives `base:allocation` in `NBD_REP_META_CONTEXT` replies to
/// `NBD_OPT_SET_META_CONTEXT` and in `NBD_REPLY_TYPE_BLOCK_STATUS` chunks.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// What the client and server agreed on when transmission starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Canonical export name (from the catalog).
    pub export: String,
    /// The name as the client sent it.
    pub requested_name: String,
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags exactly as sent to the client.
    pub flags: u16,
    /// Block size constraints advertised (and enforced).
    pub block_sizes: BlockSizes,
    /// Structured replies were negotiated: READ replies and errors use chunks.
    pub structured: bool,
    /// Context id for `base:allocation` if the client selected it for this export; without it
    /// `NBD_CMD_BLOCK_STATUS` is refused.
    pub meta_context: Option<u32>,
    /// The client entered with `NBD_OPT_GO` and asked for `NBD_INFO_BLOCK_SIZE`, so it promised
    /// to honour the constraints.
    pub block_size_requested: bool,
    /// Entered via `NBD_OPT_EXPORT_NAME` rather than `NBD_OPT_GO`.
    pub via_export_name: bool,
}

impl Negotiated {
    /// The limits request validation enforces for this connection.
    pub fn limits(&self) -> ExportLimits {
        ExportLimits {
            size: self.size,
            min_block: self.block_sizes.min,
            max_payload: self.block_sizes.max,
            flags: self.flags,
            structured: self.structured,
            meta_context: self.meta_context,
        }
    }
}

/// Why the negotiation ended without transmission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// `NBD_OPT_ABORT`: write the ACK in `reply`, then close (soft disconnect).
    Abort,
    /// `NBD_OPT_EXPORT_NAME` for an export that cannot be opened; the spec allows no error
    /// reply, so the server MUST terminate the session.
    ExportRefused(GoRefusal),
    /// `NBD_OPT_EXPORT_NAME` whose name is not a valid NBD string.
    BadExportName(PayloadError),
    /// The negotiation had already ended; nothing more may be sent.
    AlreadyFinished,
}

/// Where the connection goes after the reply is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Read the next option.
    Continue,
    /// Write the reply (the ACK), then run the TLS handshake as the server and go on reading
    /// options over TLS.
    StartTls,
    /// Write the reply, then switch to the transmission phase.
    Transmission(Box<Negotiated>),
    /// Write the reply (possibly empty), then close the connection.
    Close(CloseReason),
}

/// The server's answer to one option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionOutcome {
    /// Bytes to send, possibly several option replies; empty when the spec demands a silent
    /// close.
    pub reply: Vec<u8>,
    /// What happens next.
    pub next: Next,
}

impl OptionOutcome {
    pub(super) fn cont(reply: Vec<u8>) -> Self {
        OptionOutcome {
            reply,
            next: Next::Continue,
        }
    }

    pub(super) fn error(option: u32, err: RepError, msg: &str) -> Self {
        let mut reply = Vec::new();
        encode_rep_error(&mut reply, option, err, msg);
        OptionOutcome::cont(reply)
    }

    pub(super) fn close(reply: Vec<u8>, why: CloseReason) -> Self {
        OptionOutcome {
            reply,
            next: Next::Close(why),
        }
    }
}

/// First half of an option whose answer needs an export lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLookup {
    pub(super) option: u32,
    pub(super) name: String,
    pub(super) purpose: Purpose,
    pub(super) kind: LookupKind,
}

impl PendingLookup {
    /// The export name to look up, as the client sent it.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Whether the lookup opens the export.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LookupKind {
    ExportName,
    Info(Vec<u16>),
    ListMeta(Vec<String>),
    SetMeta(Vec<String>),
}

/// First half of `NBD_OPT_LIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingList {
    pub(super) option: u32,
}

/// The result of [`Negotiation::begin`](super::Negotiation::begin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Answered without the catalog.
    Done(OptionOutcome),
    /// Look the export up, then call [`Negotiation::resume_lookup`](super::Negotiation::resume_lookup).
    Lookup(PendingLookup),
    /// List the exports, then call [`Negotiation::resume_list`](super::Negotiation::resume_list).
    List(PendingList),
}
