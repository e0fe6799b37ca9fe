//! Parsers for the option payloads udrbd understands ("Option types"). Each parser is strict:
//! every length is checked against the option length and trailing bytes are an error, because
//! the spec makes a syntactically invalid option an `NBD_REP_ERR_INVALID`.

use super::consts::MAX_STRING_LEN;
use super::wire::{Reader, StringError, check_string};

/// Why an option payload was refused; the negotiation answers all of them with
/// `NBD_REP_ERR_INVALID` (except for `NBD_OPT_EXPORT_NAME`, which can only be dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// A length field points past the end of the option.
    #[error("option data truncated")]
    Truncated,
    /// Bytes left over after the last field.
    #[error("{0} unexpected trailing bytes in option data")]
    Trailing(usize),
    /// A string field is not a valid NBD string.
    #[error("bad string: {0}")]
    String(#[from] StringError),
    /// The option takes no data but some was sent.
    #[error("option takes no data, got {0} bytes")]
    Unexpected(usize),
}

/// `NBD_OPT_INFO` / `NBD_OPT_GO` data: the export name and the `NBD_INFO_*` items requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    /// Export name as sent ("" is the default export).
    pub name: String,
    /// Information types requested, in order, duplicates removed (the client MUST NOT repeat
    /// one; udrbd tolerates it rather than failing a harmless mistake).
    pub requests: Vec<u16>,
}

impl InfoRequest {
    /// Did the client ask for this information type?
    pub fn wants(&self, info: u16) -> bool {
        self.requests.contains(&info)
    }
}

/// `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT` data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextRequest {
    /// Export the contexts are for.
    pub export: String,
    /// Query strings, in order.
    pub queries: Vec<String>,
}

/// `NBD_OPT_EXPORT_NAME`: the whole payload is the name.
pub fn parse_export_name(payload: &[u8]) -> Result<String, PayloadError> {
    Ok(check_string(payload)?.to_owned())
}

/// `NBD_OPT_INFO` / `NBD_OPT_GO`: u32 name length, name, u16 count, count × u16
/// ("name length MUST be no larger than the option data length - 6").
pub fn parse_info_request(payload: &[u8]) -> Result<InfoRequest, PayloadError> {
    let mut r = Reader::new(payload);
    let name = read_string(&mut r)?;
    let count = r.u16().ok_or(PayloadError::Truncated)?;
    let mut requests = Vec::with_capacity(usize::from(count).min(r.remaining() / 2));
    for _ in 0..count {
        let info = r.u16().ok_or(PayloadError::Truncated)?;
        if !requests.contains(&info) {
            requests.push(info);
        }
    }
    finish(&r)?;
    Ok(InfoRequest { name, requests })
}

/// `NBD_OPT_{LIST,SET}_META_CONTEXT`: u32 name length, name, u32 count, count × (u32 length,
/// query).
pub fn parse_meta_context_request(payload: &[u8]) -> Result<MetaContextRequest, PayloadError> {
    let mut r = Reader::new(payload);
    let export = read_string(&mut r)?;
    let count = r.u32().ok_or(PayloadError::Truncated)?;
    // Each query needs at least its 4-byte length, so the payload bounds the allocation.
    let cap = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(r.remaining() / 4);
    let mut queries = Vec::with_capacity(cap);
    for _ in 0..count {
        queries.push(read_string(&mut r)?);
    }
    finish(&r)?;
    Ok(MetaContextRequest { export, queries })
}

/// Options that take no data (`LIST`, `STRUCTURED_REPLY`, `STARTTLS`).
pub fn expect_empty(payload: &[u8]) -> Result<(), PayloadError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(PayloadError::Unexpected(payload.len()))
    }
}

fn read_string(r: &mut Reader<'_>) -> Result<String, PayloadError> {
    let len = r.u32().ok_or(PayloadError::Truncated)?;
    let len = usize::try_from(len).map_err(|_| PayloadError::Truncated)?;
    if len > MAX_STRING_LEN {
        return Err(StringError::TooLong(len).into());
    }
    let b = r.bytes(len).ok_or(PayloadError::Truncated)?;
    Ok(check_string(b)?.to_owned())
}

fn finish(r: &Reader<'_>) -> Result<(), PayloadError> {
    match r.remaining() {
        0 => Ok(()),
        n => Err(PayloadError::Trailing(n)),
    }
}
