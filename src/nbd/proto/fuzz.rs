//! Entry points for the `nbd_option` and `nbd_request` fuzz targets (and the corpus replay
//! test). They feed arbitrary bytes through the same calls the server makes and must never
//! panic; every encoder they reach is exercised with inputs the decoders accepted.

use super::catalog::{ExportCatalog, ExportInfo, GoRefusal, Purpose};
use super::consts::*;
use super::errors::{Errno, RepError};
use super::handshake::{
    DEFAULT_MAX_OPTION_LEN, OptionHeader, PayloadPlan, SERVER_HANDSHAKE_FLAGS, decode_client_flags,
};
use super::negotiate::Negotiation;
use super::option_reply::BlockSizes;
use super::outcome::Next;
use super::reply::{self, Extent};
use super::request::RequestHeader;
use super::validate::{Command, ExportLimits, RejectAction, validate};

/// The fixed catalog the fuzzer negotiates against: `r0` (1 MiB, every feature; also the
/// default export ""), `ro` (read-only), `sec` (refuses GO like a Secondary without
/// auto-promote), nothing else.
#[derive(Debug, Clone, Copy, Default)]
pub struct FuzzCatalog;

/// Every transmission flag udrbd can offer.
pub const FUZZ_FLAGS: u16 = FLAG_SEND_FLUSH
    | FLAG_SEND_FUA
    | FLAG_SEND_TRIM
    | FLAG_SEND_WRITE_ZEROES
    | FLAG_SEND_FAST_ZERO
    | FLAG_SEND_CACHE
    | FLAG_CAN_MULTI_CONN;

impl ExportCatalog for FuzzCatalog {
    fn lookup(&self, name: &str, purpose: Purpose) -> Result<ExportInfo, GoRefusal> {
        let info = |name: &str, flags| ExportInfo {
            name: name.to_owned(),
            size: 1 << 20,
            flags,
            description: Some(format!("fuzz export {name}")),
            block_sizes: BlockSizes::default(),
        };
        match (name, purpose) {
            ("r0" | "", _) => Ok(info("r0", FUZZ_FLAGS)),
            ("ro", _) => Ok(info("ro", FUZZ_FLAGS | FLAG_READ_ONLY)),
            ("sec", Purpose::Info) => Ok(info("sec", FUZZ_FLAGS)),
            ("sec", Purpose::Go) => Err(GoRefusal::new(
                RepError::Policy,
                "resource sec is Secondary; promote it with `drbdadm primary sec` or enable \
                 auto-promote",
            )),
            _ => Err(GoRefusal::unknown(name)),
        }
    }

    fn list(&self) -> Vec<(String, Option<String>)> {
        vec![
            ("r0".into(), Some("fuzz export r0".into())),
            ("ro".into(), None),
            ("sec".into(), None),
        ]
    }
}

/// Client flags (4 bytes), then a stream of options (16-byte header + payload) negotiated
/// against [`FuzzCatalog`]; if an option enters transmission, the remaining bytes go to
/// [`fuzz_requests_with`] under the negotiated limits.
pub fn fuzz_options(data: &[u8]) {
    let Some((flags, mut rest)) = data.split_first_chunk::<CLIENT_FLAGS_LEN>() else {
        return;
    };
    let Ok(client) = decode_client_flags(flags, SERVER_HANDSHAKE_FLAGS) else {
        return;
    };
    let mut neg = Negotiation::new(client, FuzzCatalog);
    // Whether TLS is offered: inputs of odd length (so the corpus reaches both).
    if data.len() % 2 == 1 {
        neg.offer_tls();
    }
    while let Some((hdr, after)) = rest.split_first_chunk::<OPTION_HEADER_LEN>() {
        let Ok(hdr) = OptionHeader::decode(hdr) else {
            return;
        };
        let outcome = match hdr.plan(DEFAULT_MAX_OPTION_LEN) {
            PayloadPlan::Read(n) => {
                let Some((payload, after)) = after.split_at_checked(n as usize) else {
                    return;
                };
                rest = after;
                neg.handle_option(hdr.option, payload)
            }
            PayloadPlan::Discard(n) => {
                rest = after.get(n as usize..).unwrap_or(&[]);
                neg.handle_oversize(hdr.option)
            }
            PayloadPlan::Disconnect => return,
        };
        // The client-side decoders must accept everything the server says.
        let ok = match &outcome.next {
            Next::Transmission(n) if n.via_export_name => true,
            _ => super::client::decode_option_replies(&outcome.reply).is_ok(),
        };
        assert!(ok, "server produced undecodable option replies");
        match outcome.next {
            // The TLS handshake is below this layer: haggling goes on over it.
            Next::Continue | Next::StartTls => {}
            Next::Close(_) => return,
            Next::Transmission(n) => return fuzz_requests_with(rest, &n.limits()),
        }
    }
}

/// A stream of requests (28-byte header + WRITE payload) validated against a 1 MiB export with
/// every feature, structured replies and `base:allocation` negotiated.
pub fn fuzz_requests(data: &[u8]) {
    let limits = ExportLimits {
        size: 1 << 20,
        min_block: 512,
        max_payload: 32 << 20,
        flags: super::negotiate::effective_flags(FUZZ_FLAGS, true),
        structured: true,
        meta_context: Some(super::BASE_ALLOCATION_ID),
    };
    fuzz_requests_with(data, &limits);
}

/// [`fuzz_requests`] under any limits.
pub fn fuzz_requests_with(mut data: &[u8], limits: &ExportLimits) {
    let mut out = Vec::new();
    while let Some((hdr, rest)) = data.split_first_chunk::<REQUEST_HEADER_LEN>() {
        let Ok(req) = RequestHeader::decode(hdr) else {
            return;
        };
        let skip = match validate(&req, limits) {
            Ok(cmd) => {
                assert_in_bounds(&cmd, limits);
                answer(&mut out, req.cookie, &cmd, limits);
                if cmd == Command::Disc {
                    return;
                }
                req.payload_len()
            }
            Err(rej) => {
                reply::error_reply(
                    &mut out,
                    limits.structured,
                    req.cookie,
                    rej.errno,
                    "refused",
                );
                match rej.action {
                    RejectAction::Reply => 0,
                    RejectAction::DrainThenReply(n) => n,
                    RejectAction::Disconnect => return,
                }
            }
        };
        data = rest.get(skip as usize..).unwrap_or(&[]);
        out.clear();
    }
}

/// What a server would send for an accepted command, built with the reply encoders.
fn answer(out: &mut Vec<u8>, cookie: u64, cmd: &Command, limits: &ExportLimits) {
    match *cmd {
        Command::Read { offset, len, .. } if limits.structured => {
            out.extend_from_slice(&reply::offset_data_header(cookie, offset, len, true));
        }
        Command::BlockStatus { len, .. } => {
            let ext = [Extent {
                length: len,
                flags: STATE_HOLE | STATE_ZERO,
            }];
            let id = limits.meta_context.unwrap_or(0);
            reply::block_status_chunk(out, cookie, id, &ext, true);
        }
        Command::WriteZeroes {
            fast_zero: true, ..
        } => reply::error_reply(out, limits.structured, cookie, Errno::NotSup, "slow"),
        Command::Disc => {}
        _ => out.extend_from_slice(&reply::simple_reply(cookie, None)),
    }
}

/// The property the fuzzer checks beyond "no panic": nothing accepted touches bytes outside the
/// export or breaks the alignment rule.
fn assert_in_bounds(cmd: &Command, limits: &ExportLimits) {
    let range = match *cmd {
        Command::Read { offset, len, .. }
        | Command::Write { offset, len, .. }
        | Command::Trim { offset, len, .. }
        | Command::WriteZeroes { offset, len, .. }
        | Command::BlockStatus { offset, len, .. }
        | Command::Cache { offset, len } => Some((offset, len)),
        Command::Flush | Command::Disc => None,
    };
    if let Some((offset, len)) = range {
        let min = u64::from(limits.min_block.max(1));
        assert!(len > 0 && offset % min == 0 && u64::from(len) % min == 0);
        assert!(
            offset
                .checked_add(u64::from(len))
                .is_some_and(|e| e <= limits.size)
        );
    }
}
