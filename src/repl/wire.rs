//! The peer-link wire format, PURE: frames and packets as bytes, nothing else. The network shell
//! reads and writes sockets; this module only says what the bytes mean (`tests/purity.rs`).
//!
//! # Frame
//!
//! Every packet travels as one frame: a fixed 24-byte header, then `length` payload bytes.
//! All integers are big-endian (network order, like DRBD's headers).
//!
//! | offset | size | field | |
//! |---:|---:|---|---|
//! | 0 | 4 | magic | [`MAGIC`] `0x75445242` (`"uDRB"`) |
//! | 4 | 1 | version | [`WIRE_VERSION`]: the framing, not the protocol (that is negotiated in [`Packet::Hello`]) |
//! | 5 | 1 | flags | bit 0 [`FLAG_MAY_IGNORE`]; other bits must be 0 |
//! | 6 | 2 | type | [`PacketType`] (DRBD's `enum drbd_packet` numbers) |
//! | 8 | 2 | volume | volume number; 0 for connection-level packets |
//! | 10 | 2 | reserved | must be 0 |
//! | 12 | 4 | length | payload bytes, at most the type's [`PacketType::max_payload_len`] and [`MAX_PAYLOAD_LEN`] |
//! | 16 | 4 | payload CRC | CRC32C of the payload |
//! | 20 | 4 | header CRC | CRC32C of bytes 0..20 (so it also covers the payload CRC) |
//!
//! Payload layouts are in `body.rs` (one table for every packet).
//!
//! # Why two CRCs, and why CRCs at all on TCP
//!
//! TCP's 16-bit checksum is weak and offload engines, bad NICs and our own bugs sit after it. A
//! CRC32C per frame catches our framing bugs (a short write, a length off by one, a buffer reused
//! too early) and memory corruption as a clean [`WireError`] instead of a silently wrong block on
//! the peer, and costs next to nothing (hardware CRC32C runs at ~13 GB/s, faster than the link).
//! CRC32C detects every error burst up to 32 bits, so any single corrupted byte of a frame is
//! always detected (the tests check this for every byte of arbitrary frames).
//!
//! The header has its own CRC so a receiver can trust `length` *before* it reads the payload: a
//! flipped length bit is "bad checksum" at once, not a wait for a megabyte that never comes, nor
//! a resynchronisation on garbage. The payload CRC sits inside the checksummed header and is
//! verified once the payload is in (a receiver may also verify it incrementally while reading).
//! The CRC is not a security measure: an attacker recomputes it. `data-integrity-alg` (a digest
//! carried in [`Packet::Data`]) is the end-to-end check of the data itself, and `cram-hmac-alg`
//! ([`Packet::AuthChallenge`]) authenticates the peer.
//!
//! # Reading a stream
//!
//! 1. Read [`Frame::header_len`] bytes; [`decode_header`] checks magic, version and header CRC
//!    and the length against the type's maximum, all before anything is allocated.
//! 2. Read [`Header::payload_len`] bytes; [`decode_payload`] (or [`decode_payload_bytes`], which
//!    slices byte fields out of a [`Bytes`] without copying) checks the payload CRC and decodes.
//!
//! An error means drop the connection, except [`WireError::is_ignorable`]: an unknown type the
//! sender flagged [`FLAG_MAY_IGNORE`], whose payload may be skipped. [`encode`] writes a frame
//! and refuses packets that would not decode ([`validate`]). Nothing here panics on any input.

mod body;
mod codes;
mod error;
mod packet;

#[cfg(test)]
mod tests;

pub use body::{block_digest_len_at, validate};
pub use codes::{DataFlags, OvOutcome, SizesFlags, StateFlags, UuidFlags, WireCode, features};
pub use error::{FieldError, WireError};
pub use packet::{BlockAck, Packet, PacketType, TwoPcChange};

use bytes::Bytes;

/// First four header bytes, `"uDRB"`. Differs from all of DRBD's magics on purpose.
pub const MAGIC: u32 = 0x7544_5242;
/// The framing version this build writes and accepts. Changing the header bumps it; changing a
/// payload layout bumps the protocol version ([`PROTOCOL_MAX`]; the golden-bytes tests pin
/// both).
pub const WIRE_VERSION: u8 = 1;
/// Lowest protocol version (in [`Packet::Hello`]) this build speaks. 2: Data carries `seen`,
/// Superseded and RetryWrite exist (two primaries). 3: DataRequest, DataReply and
/// NegDataReply exist (reads served by the peer). 4: State carries `QUORATE` (quorum; a
/// diskless node has quorum through a peer that has it). 5: PeerAck exists (three nodes: a
/// Secondary learns which writes completed everywhere). 6: CurrentUuid exists (a diskless
/// Primary's generation and the nodes its writes do not reach).
pub const PROTOCOL_MIN: u32 = 6;
/// Highest protocol version (in [`Packet::Hello`]) this build speaks.
pub const PROTOCOL_MAX: u32 = 6;
/// Header flag: a receiver that does not know this type may skip the frame instead of failing.
pub const FLAG_MAY_IGNORE: u8 = 0x01;
/// Header size in bytes.
pub const HEADER_LEN: usize = 24;
/// Largest data block in a Data or ResyncReply packet (DRBD's `DRBD_MAX_BIO_SIZE`, 1 MiB).
pub const MAX_DATA_LEN: usize = 1 << 20;
/// Largest payload of any frame: one data block plus room for its fixed fields and digest.
pub const MAX_PAYLOAD_LEN: usize = MAX_DATA_LEN + 4096;
/// Largest frame, header included.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_PAYLOAD_LEN;
/// Longest digest (data-integrity, csums, verify): 64 bytes, SHA-512.
pub const MAX_DIGEST_LEN: usize = 64;
/// Longest auth challenge or response (DRBD's 64-byte challenge, HMAC-SHA512).
pub const MAX_AUTH_LEN: usize = 64;
/// Longest algorithm name (DRBD keeps them in `char[64]`, NUL included).
pub const MAX_ALG_NAME_LEN: usize = 63;
/// Longest resource name.
pub const MAX_RESOURCE_NAME_LEN: usize = 128;
/// Largest chunk of the compressed bitmap in one BitmapRle frame.
pub const MAX_BITMAP_CHUNK: usize = MAX_DATA_LEN;

/// A decoded, verified frame header. Only [`decode_header`] makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    ty: PacketType,
    flags: u8,
    volume: u16,
    payload_len: u32,
    payload_crc: u32,
}

impl Header {
    /// The packet type.
    pub fn packet_type(&self) -> PacketType {
        self.ty
    }
    /// Header flags ([`FLAG_MAY_IGNORE`]).
    pub fn flags(&self) -> u8 {
        self.flags
    }
    /// The volume the packet is for (0 for connection-level packets).
    pub fn volume(&self) -> u16 {
        self.volume
    }
    /// Payload bytes to read next; at most [`MAX_PAYLOAD_LEN`].
    pub fn payload_len(&self) -> usize {
        self.payload_len as usize
    }
    /// The CRC32C the payload must have.
    pub fn payload_crc(&self) -> u32 {
        self.payload_crc
    }
}

/// A packet with the volume it is addressed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub volume: u16,
    pub packet: Packet,
}

impl Frame {
    /// Bytes to read before [`decode_header`].
    pub const fn header_len() -> usize {
        HEADER_LEN
    }

    /// Appends this frame to `out`; see [`encode_to`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<usize, WireError> {
        encode_to(self.volume, &self.packet, out)
    }

    /// Decodes one frame from the front of `buf`, returning it and the bytes it used. For
    /// datagram-style callers and tests; stream readers use [`decode_header`] and
    /// [`decode_payload`] so they know how much to read.
    pub fn decode(buf: &[u8]) -> Result<(Frame, usize), WireError> {
        let head = buf.get(..HEADER_LEN).ok_or(WireError::Truncated {
            need: HEADER_LEN,
            have: buf.len(),
        })?;
        let h = decode_header(head)?;
        let end = HEADER_LEN + h.payload_len();
        let payload = buf.get(HEADER_LEN..end).ok_or(WireError::Truncated {
            need: end,
            have: buf.len(),
        })?;
        let packet = decode_payload(&h, payload)?;
        Ok((
            Frame {
                volume: h.volume,
                packet,
            },
            end,
        ))
    }
}

/// Appends `packet` as a volume-0 frame to `out`; returns the bytes appended.
pub fn encode(packet: &Packet, out: &mut Vec<u8>) -> Result<usize, WireError> {
    encode_to(0, packet, out)
}

/// Appends `packet` as a frame for `volume` to `out`; returns the bytes appended. Fails (leaving
/// `out` as it was) if the packet breaks a rule of [`validate`], or names a volume other than 0
/// on a connection-level packet, so whatever encodes also decodes, to an equal packet.
pub fn encode_to(volume: u16, packet: &Packet, out: &mut Vec<u8>) -> Result<usize, WireError> {
    let start = out.len();
    let block = encode_head(volume, packet, out)?;
    out.extend_from_slice(&block);
    Ok(out.len() - start)
}

/// A frame in two parts: the bytes on the wire are `head` (the header and the packet's fields)
/// followed by `block` (the data block of a write or a resync reply, empty for other packets).
/// Sending the block from where it already is saves copying up to 1 MiB into a frame buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitFrame {
    pub head: Vec<u8>,
    pub block: Bytes,
}

impl SplitFrame {
    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.block.len()
    }

    /// Whether the frame has no bytes (never true for an encoded frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<u8>> for SplitFrame {
    /// A frame encoded in one piece.
    fn from(head: Vec<u8>) -> SplitFrame {
        SplitFrame {
            head,
            block: Bytes::new(),
        }
    }
}

/// [`encode_to`] as a [`SplitFrame`]: the same bytes, without copying the data block.
pub fn encode_split(volume: u16, packet: &Packet) -> Result<SplitFrame, WireError> {
    let mut head = Vec::new();
    let block = encode_head(volume, packet, &mut head)?;
    Ok(SplitFrame { head, block })
}

/// Appends the header and the fields of `packet` to `out` and returns its data block, which
/// belongs right after them on the wire (the header's length and CRC cover it). On error `out`
/// is unchanged.
fn encode_head(volume: u16, packet: &Packet, out: &mut Vec<u8>) -> Result<Bytes, WireError> {
    let ty = packet.packet_type();
    if ty.is_connection_level() && volume != 0 {
        return Err(WireError::MalformedHeader(
            "volume on a connection-level packet",
        ));
    }
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    let block = match body::encode_body(packet, out) {
        Ok(b) => b,
        Err(e) => {
            out.truncate(start);
            return Err(e);
        }
    };
    let len = out.len() - start - HEADER_LEN + block.len();
    if len > ty.max_payload_len() {
        // validate() keeps every field within its cap, so this is a bug guard, not a path.
        out.truncate(start);
        return Err(WireError::TooLong {
            ty,
            len: len as u64,
            max: ty.max_payload_len(),
        });
    }
    let fields_crc = crc32c::crc32c(&out[start + HEADER_LEN..]);
    let payload_crc = crc32c::crc32c_append(fields_crc, &block);
    let h = &mut out[start..start + HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    h[4] = WIRE_VERSION;
    h[5] = 0;
    h[6..8].copy_from_slice(&ty.code().to_be_bytes());
    h[8..10].copy_from_slice(&volume.to_be_bytes());
    h[10..12].copy_from_slice(&[0, 0]);
    // Fits: len <= max_payload_len <= MAX_PAYLOAD_LEN.
    h[12..16].copy_from_slice(&(len as u32).to_be_bytes());
    h[16..20].copy_from_slice(&payload_crc.to_be_bytes());
    let header_crc = crc32c::crc32c(&h[..20]);
    h[20..24].copy_from_slice(&header_crc.to_be_bytes());
    Ok(block)
}

/// Decodes and verifies a frame header from the first [`HEADER_LEN`] bytes of `buf` (more are
/// ignored). Checks, in order: length, magic, version, header CRC, reserved bits, the type, the
/// payload length against the type's maximum, and the volume rule. The returned header's
/// [`Header::payload_len`] is safe to allocate.
pub fn decode_header(buf: &[u8]) -> Result<Header, WireError> {
    let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
        return Err(WireError::Truncated {
            need: HEADER_LEN,
            have: buf.len(),
        });
    };
    let be16 = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
    let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let magic = be32(0);
    if magic != MAGIC {
        return Err(WireError::BadMagic { got: magic });
    }
    if h[4] != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion { got: h[4] });
    }
    let stored = be32(20);
    let computed = crc32c::crc32c(&h[..20]);
    if stored != computed {
        return Err(WireError::BadHeaderChecksum { stored, computed });
    }
    let flags = h[5];
    if flags & !FLAG_MAY_IGNORE != 0 {
        return Err(WireError::MalformedHeader("undefined header flags"));
    }
    if be16(10) != 0 {
        return Err(WireError::MalformedHeader("reserved header field not zero"));
    }
    let code = be16(6);
    let volume = be16(8);
    let payload_len = be32(12);
    let Some(ty) = PacketType::from_u16(code) else {
        let skippable = flags & FLAG_MAY_IGNORE != 0 && payload_len as usize <= MAX_PAYLOAD_LEN;
        return Err(WireError::UnknownType {
            ty: code,
            skip: skippable.then_some(payload_len),
        });
    };
    if payload_len as usize > ty.max_payload_len() {
        return Err(WireError::TooLong {
            ty,
            len: u64::from(payload_len),
            max: ty.max_payload_len(),
        });
    }
    if ty.is_connection_level() && volume != 0 {
        return Err(WireError::MalformedHeader(
            "volume on a connection-level packet",
        ));
    }
    Ok(Header {
        ty,
        flags,
        volume,
        payload_len,
        payload_crc: be32(16),
    })
}

/// Verifies `payload` (exactly [`Header::payload_len`] bytes) against the header's CRC and
/// decodes it. Byte fields are copied once, out of `payload`; use [`decode_payload_bytes`] to
/// avoid that.
pub fn decode_payload(header: &Header, payload: &[u8]) -> Result<Packet, WireError> {
    check_payload(header, payload)?;
    body::decode_body(header.ty, Bytes::copy_from_slice(payload))
}

/// [`decode_payload`] for a payload already in a [`Bytes`]: data, digests and bitmap chunks in
/// the packet are slices of it, not copies.
pub fn decode_payload_bytes(header: &Header, payload: Bytes) -> Result<Packet, WireError> {
    check_payload(header, &payload)?;
    body::decode_body(header.ty, payload)
}

fn check_payload(header: &Header, payload: &[u8]) -> Result<(), WireError> {
    if payload.len() != header.payload_len() {
        return Err(WireError::PayloadLength {
            expected: header.payload_len(),
            got: payload.len(),
        });
    }
    let computed = crc32c::crc32c(payload);
    if computed != header.payload_crc {
        return Err(WireError::BadPayloadChecksum {
            stored: header.payload_crc,
            computed,
        });
    }
    Ok(())
}

/// Fuzz entry point (the cargo-fuzz target `repl_wire` and the corpus replay test). The first
/// byte picks the mode, since random bytes almost never carry valid CRCs:
///
/// - even: the rest is a stream of frames, decoded one after another until the first error;
///   each decoded frame must re-encode to the very same bytes (but for a `FLAG_MAY_IGNORE` on a
///   known type, which is not kept).
/// - odd: the next two bytes are a packet type and the rest its payload, decoded with the CRCs
///   bypassed, so the payload parsers get fuzzed; a payload that decodes must re-encode to the
///   same bytes and round-trip through a full frame.
///
/// Panics only if one of those invariants breaks.
pub fn fuzz_decode(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let mut buf = rest;
        while let Ok((frame, used)) = Frame::decode(buf) {
            let mut re = Vec::new();
            match frame.encode(&mut re) {
                Ok(n) => assert_eq!(n, used, "re-encoded frame has a different length"),
                Err(e) => panic!("a decoded frame does not re-encode: {e}"),
            }
            // FLAG_MAY_IGNORE on a known type is accepted and not kept (it only matters to a
            // receiver that does not know the type), so the flags byte and the header CRC over
            // it may differ; everything else must be the same bytes.
            let same = re[..5] == buf[..5]
                && re[5] == buf[5] & !FLAG_MAY_IGNORE
                && re[6..20] == buf[6..20]
                && re[HEADER_LEN..] == buf[HEADER_LEN..used];
            assert!(same, "re-encoded frame differs");
            buf = &buf[used..];
        }
        return;
    }
    let Some((ty, payload)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let Some(ty) = PacketType::from_u16(u16::from_be_bytes(*ty)) else {
        return;
    };
    let Ok(packet) = body::decode_body(ty, Bytes::copy_from_slice(payload)) else {
        return;
    };
    let mut frame = Vec::new();
    if let Err(e) = encode(&packet, &mut frame) {
        panic!("a decoded payload does not re-encode: {e}");
    }
    assert!(
        frame[HEADER_LEN..] == payload[..],
        "accepted a non-canonical payload"
    );
    match Frame::decode(&frame) {
        Ok((f, used)) => {
            assert_eq!(used, frame.len());
            assert_eq!(f.packet, packet, "frame round trip");
        }
        Err(e) => panic!("an encoded frame does not decode: {e}"),
    }
}
