//! Encoders for everything the server sends during option haggling: the generic option reply
//! ("Fixed newstyle negotiation"), its payloads ("Option reply types"), and the bare reply that
//! ends `NBD_OPT_EXPORT_NAME` ("Newstyle negotiation"). All append to a caller's buffer so one
//! option's several replies go out in one write.

use super::consts::*;
use super::errors::RepError;
use super::wire::truncate_str;

/// Block size constraints advertised with `NBD_INFO_BLOCK_SIZE` ("Block size constraints").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    /// Smallest addressable unit; offsets and lengths must be multiples of it.
    pub min: u32,
    /// Size at which aligned I/O is efficient.
    pub preferred: u32,
    /// Largest READ/WRITE payload the server accepts.
    pub max: u32,
}

impl Default for BlockSizes {
    /// udrbd's: 512 (the kernel client's default, what LVM metadata expects), 4096 (the
    /// bitmap granularity), 32 MiB (the spec's interoperable maximum payload, 2^25).
    fn default() -> Self {
        BlockSizes {
            min: 512,
            preferred: 4096,
            max: 32 << 20,
        }
    }
}

/// Appends one option reply: magic, option, reply type, length, data.
pub fn encode_option_reply(out: &mut Vec<u8>, option: u32, reply_type: u32, data: &[u8]) {
    // Every payload built here is bounded by 4 KiB strings; saturate rather than wrap if a
    // caller ever passes more, so the header never lies about a short length.
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
}

/// `NBD_REP_ACK`.
pub fn encode_rep_ack(out: &mut Vec<u8>, option: u32) {
    encode_option_reply(out, option, REP_ACK, &[]);
}

/// An error reply with a message for the user (capped at the 4096-byte string limit).
pub fn encode_rep_error(out: &mut Vec<u8>, option: u32, err: RepError, message: &str) {
    let msg = truncate_str(message, MAX_STRING_LEN);
    encode_option_reply(out, option, err.code(), msg.as_bytes());
}

/// `NBD_REP_SERVER`: u32 name length, name, then an optional description for humans.
pub fn encode_rep_server(out: &mut Vec<u8>, option: u32, name: &str, description: Option<&str>) {
    let name = truncate_str(name, MAX_STRING_LEN);
    let desc = truncate_str(description.unwrap_or(""), MAX_STRING_LEN);
    let mut data = Vec::with_capacity(4 + name.len() + desc.len());
    data.extend_from_slice(&(name.len() as u32).to_be_bytes());
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(desc.as_bytes());
    encode_option_reply(out, option, REP_SERVER, &data);
}

/// `NBD_REP_INFO` with `NBD_INFO_EXPORT`: u16 type, u64 size, u16 transmission flags (length 12).
pub fn encode_info_export(out: &mut Vec<u8>, option: u32, size: u64, flags: u16) {
    let mut data = [0u8; 12];
    data[0..2].copy_from_slice(&INFO_EXPORT.to_be_bytes());
    data[2..10].copy_from_slice(&size.to_be_bytes());
    data[10..12].copy_from_slice(&flags.to_be_bytes());
    encode_option_reply(out, option, REP_INFO, &data);
}

/// `NBD_REP_INFO` with `NBD_INFO_NAME`: u16 type, canonical name.
pub fn encode_info_name(out: &mut Vec<u8>, option: u32, name: &str) {
    encode_info_string(out, option, INFO_NAME, name);
}

/// `NBD_REP_INFO` with `NBD_INFO_DESCRIPTION`: u16 type, description.
pub fn encode_info_description(out: &mut Vec<u8>, option: u32, description: &str) {
    encode_info_string(out, option, INFO_DESCRIPTION, description);
}

/// `NBD_REP_INFO` with `NBD_INFO_BLOCK_SIZE`: u16 type, u32 min, preferred, max (length 14).
pub fn encode_info_block_size(out: &mut Vec<u8>, option: u32, sizes: BlockSizes) {
    let mut data = [0u8; 14];
    data[0..2].copy_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    data[2..6].copy_from_slice(&sizes.min.to_be_bytes());
    data[6..10].copy_from_slice(&sizes.preferred.to_be_bytes());
    data[10..14].copy_from_slice(&sizes.max.to_be_bytes());
    encode_option_reply(out, option, REP_INFO, &data);
}

fn encode_info_string(out: &mut Vec<u8>, option: u32, info: u16, s: &str) {
    let s = truncate_str(s, MAX_STRING_LEN);
    let mut data = Vec::with_capacity(2 + s.len());
    data.extend_from_slice(&info.to_be_bytes());
    data.extend_from_slice(s.as_bytes());
    encode_option_reply(out, option, REP_INFO, &data);
}

/// `NBD_REP_META_CONTEXT`: u32 context id, context name. (The id is 0 in replies to
/// `NBD_OPT_LIST_META_CONTEXT`, where it is reserved.)
pub fn encode_rep_meta_context(out: &mut Vec<u8>, option: u32, id: u32, name: &str) {
    let name = truncate_str(name, MAX_STRING_LEN);
    let mut data = Vec::with_capacity(4 + name.len());
    data.extend_from_slice(&id.to_be_bytes());
    data.extend_from_slice(name.as_bytes());
    encode_option_reply(out, option, REP_META_CONTEXT, &data);
}

/// The reply that ends `NBD_OPT_EXPORT_NAME`: u64 size, u16 transmission flags, and 124 zero
/// bytes unless the client set `NBD_FLAG_C_NO_ZEROES`. There is no option-reply header.
pub fn encode_export_name_reply(out: &mut Vec<u8>, size: u64, flags: u16, no_zeroes: bool) {
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        out.extend_from_slice(&[0u8; EXPORT_NAME_PADDING]);
    }
}
