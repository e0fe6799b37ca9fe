//! Option haggling as a sans-IO state machine ("Fixed newstyle negotiation", "Option types").
//!
//! The server reads the client flags, then for each option a 16-byte header and (per
//! [`OptionHeader::plan`](super::OptionHeader::plan)) its payload, and calls
//! [`Negotiation::handle_option`]; it writes `reply` and follows `next`. Servers whose export
//! lookups are asynchronous (auto-promotion waits for a metadata write) use
//! [`Negotiation::begin`] and [`Negotiation::resume_lookup`]/[`Negotiation::resume_list`]
//! instead; `handle_option` is exactly those with the catalog in between.
//!
//! Choices the spec leaves open, made here:
//! - `NBD_INFO_BLOCK_SIZE` is sent on every successful INFO/GO, requested or not (the spec lets
//!   the server send unrequested information; clients ignore what they don't know), because
//!   udrbd's 512-byte minimum is not the protocol default of 1.
//! - A GO without an `NBD_INFO_BLOCK_SIZE` request, and `NBD_OPT_EXPORT_NAME`, are not refused;
//!   misaligned requests then fail with `EINVAL` ("SHOULD NOT refuse clients that do not request
//!   sizing information"). [`Negotiated::block_size_requested`] records which it was.
//! - `NBD_OPT_STARTTLS` gets `NBD_REP_ERR_UNSUP` unless the server offers TLS
//!   ([`Negotiation::offer_tls`]); then it is SELECTIVETLS mode: the server decides per export
//!   (`NBD_REP_ERR_TLS_REQD` from its lookup). Whatever was negotiated before STARTTLS
//!   (structured replies, a meta context) is forgotten, as the spec requires. `PEEK_EXPORT`,
//!   `EXTENDED_HEADERS` and unknown options get `NBD_REP_ERR_UNSUP`.
//! - `NBD_OPT_LIST_META_CONTEXT` before structured replies is `NBD_REP_ERR_INVALID` (a MAY).
//! - Clients without `NBD_FLAG_C_FIXED_NEWSTYLE` are still answered the fixed-newstyle way.

use super::catalog::{ExportCatalog, ExportInfo, GoRefusal, Purpose};
use super::consts::*;
use super::errors::RepError;
use super::handshake::ClientFlags;
use super::option_reply::*;
use super::options::*;
use super::outcome::*;

#[derive(Debug, Clone, PartialEq, Eq)]
struct MetaSelection {
    export: String,
    id: Option<u32>,
}

/// One client's option haggling.
#[derive(Debug)]
pub struct Negotiation<C> {
    catalog: C,
    client: ClientFlags,
    structured: bool,
    meta: Option<MetaSelection>,
    finished: bool,
    tls_offered: bool,
    tls_active: bool,
}

impl<C: ExportCatalog> Negotiation<C> {
    /// Starts haggling with a client that sent `client` flags.
    pub fn new(client: ClientFlags, catalog: C) -> Self {
        Negotiation {
            catalog,
            client,
            structured: false,
            meta: None,
            finished: false,
            tls_offered: false,
            tls_active: false,
        }
    }

    /// Makes `NBD_OPT_STARTTLS` succeed (the server has TLS credentials for this connection).
    pub fn offer_tls(&mut self) {
        self.tls_offered = true;
    }

    /// The client's flags.
    pub fn client_flags(&self) -> ClientFlags {
        self.client
    }

    /// Whether `NBD_OPT_STRUCTURED_REPLY` has been accepted.
    pub fn structured(&self) -> bool {
        self.structured
    }

    /// Answers one option whose whole payload has been read.
    pub fn handle_option(&mut self, option: u32, payload: &[u8]) -> OptionOutcome {
        match self.begin(option, payload) {
            Step::Done(out) => out,
            Step::Lookup(p) => {
                let found = self.catalog.lookup(p.name(), p.purpose());
                self.resume_lookup(p, found)
            }
            Step::List(p) => {
                let exports = self.catalog.list();
                self.resume_list(p, exports)
            }
        }
    }

    /// Answers an option whose payload exceeded the server's limit and was discarded
    /// ([`PayloadPlan::Discard`](super::PayloadPlan::Discard)): `NBD_REP_ERR_TOO_BIG`.
    pub fn handle_oversize(&mut self, option: u32) -> OptionOutcome {
        if self.finished {
            return OptionOutcome::close(Vec::new(), CloseReason::AlreadyFinished);
        }
        match option {
            OPT_EXPORT_NAME => {
                self.finished = true;
                OptionOutcome::close(
                    Vec::new(),
                    CloseReason::BadExportName(PayloadError::Truncated),
                )
            }
            _ => {
                if option == OPT_SET_META_CONTEXT {
                    // "replaces all previously-set metadata contexts (including when this
                    // command fails)".
                    self.meta = None;
                }
                OptionOutcome::error(option, RepError::TooBig, "option data too large")
            }
        }
    }

    /// First half of [`Negotiation::handle_option`]: everything that needs no export lookup.
    pub fn begin(&mut self, option: u32, payload: &[u8]) -> Step {
        if self.finished {
            return Step::Done(OptionOutcome::close(
                Vec::new(),
                CloseReason::AlreadyFinished,
            ));
        }
        let done = Step::Done;
        match option {
            OPT_EXPORT_NAME => match parse_export_name(payload) {
                Ok(name) => pending(option, name, Purpose::Go, LookupKind::ExportName),
                Err(e) => {
                    self.finished = true;
                    done(OptionOutcome::close(
                        Vec::new(),
                        CloseReason::BadExportName(e),
                    ))
                }
            },
            OPT_ABORT => {
                // "a server SHOULD ignore any data sent by the client".
                self.finished = true;
                let mut reply = Vec::new();
                encode_rep_ack(&mut reply, option);
                done(OptionOutcome::close(reply, CloseReason::Abort))
            }
            OPT_LIST => match expect_empty(payload) {
                Ok(()) => Step::List(PendingList { option }),
                Err(e) => done(invalid(option, &e)),
            },
            OPT_INFO | OPT_GO => match parse_info_request(payload) {
                Ok(req) => {
                    let purpose = if option == OPT_GO {
                        Purpose::Go
                    } else {
                        Purpose::Info
                    };
                    pending(option, req.name, purpose, LookupKind::Info(req.requests))
                }
                Err(e) => done(invalid(option, &e)),
            },
            OPT_STRUCTURED_REPLY => done(self.structured_reply(option, payload)),
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let set = option == OPT_SET_META_CONTEXT;
                if set {
                    self.meta = None;
                }
                if !self.structured {
                    return done(OptionOutcome::error(
                        option,
                        RepError::Invalid,
                        "negotiate NBD_OPT_STRUCTURED_REPLY first",
                    ));
                }
                match parse_meta_context_request(payload) {
                    Ok(req) => {
                        let kind = if set {
                            LookupKind::SetMeta(req.queries)
                        } else {
                            LookupKind::ListMeta(req.queries)
                        };
                        pending(option, req.export, Purpose::Info, kind)
                    }
                    Err(e) => done(invalid(option, &e)),
                }
            }
            OPT_STARTTLS => done(self.start_tls(option, payload)),
            _ => done(OptionOutcome::error(
                option,
                RepError::Unsup,
                "option not supported by this server",
            )),
        }
    }

    /// Second half of an option that needed [`ExportCatalog::lookup`].
    pub fn resume_lookup(
        &mut self,
        pending: PendingLookup,
        found: Result<ExportInfo, GoRefusal>,
    ) -> OptionOutcome {
        if self.finished {
            return OptionOutcome::close(Vec::new(), CloseReason::AlreadyFinished);
        }
        let PendingLookup {
            option,
            name,
            purpose,
            kind,
        } = pending;
        let info = match (found, &kind) {
            (Ok(info), _) => info,
            (Err(refusal), LookupKind::ExportName) => {
                self.finished = true;
                return OptionOutcome::close(Vec::new(), CloseReason::ExportRefused(refusal));
            }
            (Err(refusal), _) => {
                return OptionOutcome::error(option, refusal.error, &refusal.message);
            }
        };
        let mut reply = Vec::new();
        match kind {
            LookupKind::ExportName => {
                let n = self.negotiated(name, &info, false, true);
                encode_export_name_reply(&mut reply, n.size, n.flags, self.client.no_zeroes);
                self.finished = true;
                OptionOutcome {
                    reply,
                    next: Next::Transmission(Box::new(n)),
                }
            }
            LookupKind::Info(requests) => {
                let flags = effective_flags(info.flags, self.structured);
                encode_info_export(&mut reply, option, info.size, flags);
                if requests.contains(&INFO_NAME) {
                    encode_info_name(&mut reply, option, &info.name);
                }
                if let (true, Some(d)) = (
                    requests.contains(&INFO_DESCRIPTION),
                    info.description.as_deref(),
                ) {
                    encode_info_description(&mut reply, option, d);
                }
                encode_info_block_size(&mut reply, option, info.block_sizes);
                encode_rep_ack(&mut reply, option);
                if purpose == Purpose::Go {
                    let asked = requests.contains(&INFO_BLOCK_SIZE);
                    let n = self.negotiated(name, &info, asked, false);
                    self.finished = true;
                    OptionOutcome {
                        reply,
                        next: Next::Transmission(Box::new(n)),
                    }
                } else {
                    OptionOutcome::cont(reply)
                }
            }
            LookupKind::ListMeta(queries) => {
                // Zero queries list everything; `base:` is a wildcard for our one context.
                let hit = queries.is_empty()
                    || queries.iter().any(|q| q == "base:" || q == BASE_ALLOCATION);
                if hit {
                    encode_rep_meta_context(&mut reply, option, 0, BASE_ALLOCATION);
                }
                encode_rep_ack(&mut reply, option);
                OptionOutcome::cont(reply)
            }
            LookupKind::SetMeta(queries) => {
                // `base:` MUST be ignored here; unknown namespaces and leaves are ignored too.
                let id = queries
                    .iter()
                    .any(|q| q == BASE_ALLOCATION)
                    .then_some(BASE_ALLOCATION_ID);
                if let Some(id) = id {
                    encode_rep_meta_context(&mut reply, option, id, BASE_ALLOCATION);
                }
                encode_rep_ack(&mut reply, option);
                self.meta = Some(MetaSelection { export: name, id });
                OptionOutcome::cont(reply)
            }
        }
    }

    /// Second half of `NBD_OPT_LIST`: one `NBD_REP_SERVER` per export, then `NBD_REP_ACK`.
    pub fn resume_list(
        &mut self,
        pending: PendingList,
        exports: Vec<(String, Option<String>)>,
    ) -> OptionOutcome {
        if self.finished {
            return OptionOutcome::close(Vec::new(), CloseReason::AlreadyFinished);
        }
        let mut reply = Vec::new();
        for (name, desc) in &exports {
            encode_rep_server(&mut reply, pending.option, name, desc.as_deref());
        }
        encode_rep_ack(&mut reply, pending.option);
        OptionOutcome::cont(reply)
    }

    fn start_tls(&mut self, option: u32, payload: &[u8]) -> OptionOutcome {
        if !self.tls_offered {
            return OptionOutcome::error(
                option,
                RepError::Unsup,
                "TLS is not configured for this export address (nbd-tls)",
            );
        }
        if let Err(e) = expect_empty(payload) {
            return invalid(option, &e);
        }
        if self.tls_active {
            return OptionOutcome::error(option, RepError::Invalid, "TLS is already negotiated");
        }
        // "the server MUST NOT preserve any negotiation state ... from before the TLS
        // handshake": a man in the middle could have chosen it.
        self.tls_active = true;
        self.structured = false;
        self.meta = None;
        let mut reply = Vec::new();
        encode_rep_ack(&mut reply, option);
        OptionOutcome {
            reply,
            next: Next::StartTls,
        }
    }

    fn structured_reply(&mut self, option: u32, payload: &[u8]) -> OptionOutcome {
        if let Err(e) = expect_empty(payload) {
            return invalid(option, &e);
        }
        if self.structured {
            // "The client SHOULD NOT send such messages more than once; if it does, the server
            // MAY fail the repeated message with NBD_REP_ERR_INVALID."
            return OptionOutcome::error(
                option,
                RepError::Invalid,
                "structured replies already negotiated",
            );
        }
        self.structured = true;
        let mut reply = Vec::new();
        encode_rep_ack(&mut reply, option);
        OptionOutcome::cont(reply)
    }

    fn negotiated(
        &self,
        requested_name: String,
        info: &ExportInfo,
        block_size_requested: bool,
        via_export_name: bool,
    ) -> Negotiated {
        // BLOCK_STATUS needs SET_META_CONTEXT for the same export name as the GO ("Metadata
        // querying").
        let meta_context = self
            .meta
            .as_ref()
            .filter(|m| self.structured && m.export == requested_name)
            .and_then(|m| m.id);
        Negotiated {
            export: info.name.clone(),
            requested_name,
            size: info.size,
            flags: effective_flags(info.flags, self.structured),
            block_sizes: info.block_sizes,
            structured: self.structured,
            meta_context,
            block_size_requested,
            via_export_name,
        }
    }
}

/// The transmission flags actually sent: `HAS_FLAGS` always; `SEND_DF` exactly when structured
/// replies are on (it MUST be clear otherwise, and udrbd answers a read with one data chunk
/// anyway, so "don't fragment" is free); `SEND_FAST_ZERO` only with `SEND_WRITE_ZEROES` (MUST);
/// `SEND_RESIZE` never (not implemented).
pub fn effective_flags(flags: u16, structured: bool) -> u16 {
    let mut f = (flags | FLAG_HAS_FLAGS) & !(FLAG_SEND_DF | FLAG_SEND_RESIZE);
    if structured {
        f |= FLAG_SEND_DF;
    }
    if f & FLAG_SEND_WRITE_ZEROES == 0 {
        f &= !FLAG_SEND_FAST_ZERO;
    }
    f
}

fn pending(option: u32, name: String, purpose: Purpose, kind: LookupKind) -> Step {
    Step::Lookup(PendingLookup {
        option,
        name,
        purpose,
        kind,
    })
}

fn invalid(option: u32, e: &PayloadError) -> OptionOutcome {
    OptionOutcome::error(option, RepError::Invalid, &e.to_string())
}
