//! Payload layouts: [`encode_body`] and [`decode_body`], plus the [`validate`] rules both share.
//!
//! All integers big-endian. `str8` / `bytes8` are a u8 length then that many bytes; booleans
//! are one byte, 0 or 1; `rest` is every byte to the end of the payload.
//!
//! | packet | payload |
//! |---|---|
//! | Hello | protocol_min u32, protocol_max u32, features u64, sender u8, receiver u8, resource str8 |
//! | AuthChallenge / AuthResponse | bytes8 |
//! | ProtocolParams | protocol u8, after_sb_0pri u8, after_sb_1pri u8, after_sb_2pri u8, flags u8 (1 discard-my-data, 2 dry-run, 4 two-primaries), integrity_alg str8 |
//! | SyncParams | resync_rate, c_plan_ahead, c_delay_target, c_fill_target, c_max_rate, c_min_rate: u32 each; verify_alg str8, csums_alg str8 |
//! | Sizes | backing u64, user u64, current u64, max_bio_size u32, flags u16 |
//! | Uuids | current u64, bitmap u64, dirty_bits u64, flags u64, count u8 (<= 32), history u64 × count |
//! | State | role, peer_role, disk, peer_disk, conn, repl, flags: u8 each |
//! | Data | sector u64, block_id u64, seq u32, seen u32, flags u32, size u32, digest bytes8, data rest |
//! | RecvAck, WriteAck, ResyncWriteAck, NegAck, Superseded, NegDataReply, NegResyncReply, ResyncIsInSync | sector u64, block_id u64, size u32, seq u32 |
//! | RetryWrite | sector u64, block_id u64, size u32, seq u32, after u32 |
//! | Barrier | epoch u32 |
//! | PeerAck | seq u32 |
//! | BarrierAck | epoch u32, set_size u32 |
//! | Ping, PingAck, Disconnect | (empty) |
//! | BitmapRle | chunk u32, flags u8 (1 = last), data rest |
//! | DataRequest, ResyncRequest, OvRequest | sector u64, block_id u64, size u32 |
//! | DataReply, ResyncReply | sector u64, block_id u64, digest bytes8, data rest |
//! | CsumResyncRequest, OvReply | sector u64, block_id u64, size u32, digest bytes8 |
//! | OvResult | sector u64, block_id u64, size u32, outcome u8 (1 in sync, 2 out of sync) |
//! | OutOfSync | sector u64, size u32 |
//! | SyncUuid | uuid u64 |
//! | CurrentUuid | uuid u64, weak u64 |
//!
//! Decoding is canonical: reserved bits, non-0/1 booleans, undefined codes and trailing bytes
//! are errors, so a payload that decodes re-encodes to the same bytes.

use super::codes::{DataFlags, OvOutcome, SizesFlags, StateFlags, UuidFlags, WireCode};
use super::error::{FieldError, WireError};
use super::packet::{BlockAck, Packet, PacketType, TwoPcChange};
use super::{
    MAX_ALG_NAME_LEN, MAX_AUTH_LEN, MAX_BITMAP_CHUNK, MAX_DATA_LEN, MAX_DIGEST_LEN,
    MAX_RESOURCE_NAME_LEN,
};
use crate::types::{GenUuid, HISTORY_UUIDS, MAX_NODE_ID, NodeId, SECTOR_SIZE, Sector};
use bytes::Bytes;

const PP_DISCARD_MY_DATA: u8 = 1;
const PP_DRY_RUN: u8 = 2;
const PP_TWO_PRIMARIES: u8 = 4;
const PP_KNOWN: u8 = PP_DISCARD_MY_DATA | PP_DRY_RUN | PP_TWO_PRIMARIES;
const RLE_LAST: u8 = 1;
/// TwoPcPrepare kinds.
const TWOPC_ROLE: u8 = 1;
const TWOPC_DISCONNECT: u8 = 2;

/// Refuses bits outside `known` in a flags field: decoding is canonical, so a flag this
/// version does not know is an error, not something to drop.
fn known_bits(ty: PacketType, field: &'static str, bits: u64, known: u64) -> Result<(), WireError> {
    match bits & !known {
        0 => Ok(()),
        unknown => Err(bad(ty, field, FieldError::UnknownBits(unknown))),
    }
}

fn bad(packet: PacketType, field: &'static str, error: FieldError) -> WireError {
    WireError::Malformed {
        packet,
        field,
        error,
    }
}

/// Appends `p`'s payload to `out` after checking it against [`validate`]; on error `out` is
/// unchanged. A packet that ends in a data block (see [`block_digest_len_at`]) gets its fields
/// appended and the block returned (a reference-counted clone), not copied: the payload is what
/// was appended followed by the block. For other packets the returned block is empty.
pub(crate) fn encode_body(p: &Packet, out: &mut Vec<u8>) -> Result<Bytes, WireError> {
    validate(p)?;
    let mut w = Writer(out);
    let mut block = Bytes::new();
    match p {
        Packet::Hello {
            protocol_min,
            protocol_max,
            features,
            sender,
            receiver,
            resource,
        } => {
            w.u32(*protocol_min);
            w.u32(*protocol_max);
            w.u64(*features);
            w.u8(sender.0);
            w.u8(receiver.0);
            w.bytes8(resource.as_bytes());
        }
        Packet::AuthChallenge { challenge: b } | Packet::AuthResponse { response: b } => {
            w.bytes8(b);
        }
        Packet::ProtocolParams {
            protocol,
            after_sb_0pri,
            after_sb_1pri,
            after_sb_2pri,
            two_primaries,
            discard_my_data,
            dry_run,
            integrity_alg,
        } => {
            w.u8(protocol.code());
            w.u8(after_sb_0pri.code());
            w.u8(after_sb_1pri.code());
            w.u8(after_sb_2pri.code());
            let mut flags = 0;
            if *discard_my_data {
                flags |= PP_DISCARD_MY_DATA;
            }
            if *dry_run {
                flags |= PP_DRY_RUN;
            }
            if *two_primaries {
                flags |= PP_TWO_PRIMARIES;
            }
            w.u8(flags);
            w.bytes8(integrity_alg.as_bytes());
        }
        Packet::SyncParams {
            resync_rate,
            c_plan_ahead,
            c_delay_target,
            c_fill_target,
            c_max_rate,
            c_min_rate,
            verify_alg,
            csums_alg,
        } => {
            for v in [
                resync_rate,
                c_plan_ahead,
                c_delay_target,
                c_fill_target,
                c_max_rate,
                c_min_rate,
            ] {
                w.u32(*v);
            }
            w.bytes8(verify_alg.as_bytes());
            w.bytes8(csums_alg.as_bytes());
        }
        Packet::Sizes {
            backing,
            user,
            current,
            max_bio_size,
            flags,
        } => {
            w.u64(backing.0);
            w.u64(user.0);
            w.u64(current.0);
            w.u32(*max_bio_size);
            w.u16(flags.0);
        }
        Packet::Uuids {
            current,
            bitmap,
            history,
            dirty_bits,
            flags,
        } => {
            w.u64(current.0);
            w.u64(bitmap.0);
            w.u64(*dirty_bits);
            w.u64(flags.0);
            // validate() capped the count at HISTORY_UUIDS.
            w.u8(history.len() as u8);
            for h in history {
                w.u64(h.0);
            }
        }
        Packet::State {
            role,
            peer_role,
            disk,
            peer_disk,
            conn,
            repl,
            flags,
        } => {
            w.u8(role.code());
            w.u8(peer_role.code());
            w.u8(disk.code());
            w.u8(peer_disk.code());
            w.u8(conn.code());
            w.u8(repl.code());
            w.u8(flags.0);
        }
        Packet::Data {
            sector,
            block_id,
            seq,
            seen,
            flags,
            size,
            digest,
            data,
        } => {
            w.u64(sector.0);
            w.u64(*block_id);
            w.u32(*seq);
            w.u32(*seen);
            w.u32(flags.0);
            w.u32(*size);
            w.bytes8(digest);
            block = data.clone();
        }
        Packet::RecvAck(a)
        | Packet::WriteAck(a)
        | Packet::ResyncWriteAck(a)
        | Packet::NegAck(a)
        | Packet::Superseded(a)
        | Packet::NegDataReply(a)
        | Packet::NegResyncReply(a)
        | Packet::ResyncIsInSync(a) => {
            w.u64(a.sector.0);
            w.u64(a.block_id);
            w.u32(a.size);
            w.u32(a.seq);
        }
        Packet::RetryWrite { ack: a, after } => {
            w.u64(a.sector.0);
            w.u64(a.block_id);
            w.u32(a.size);
            w.u32(a.seq);
            w.u32(*after);
        }
        Packet::Barrier { epoch } => w.u32(*epoch),
        Packet::PeerAck { seq } => w.u32(*seq),
        Packet::TwoPcPrepare { tid, change } => {
            w.u32(*tid);
            match change {
                TwoPcChange::Role(role) => {
                    w.u8(TWOPC_ROLE);
                    w.u8(role.code());
                }
                TwoPcChange::Disconnect { outdate } => {
                    w.u8(TWOPC_DISCONNECT);
                    w.u8(u8::from(*outdate));
                }
            }
        }
        Packet::TwoPcYes { tid } | Packet::TwoPcCommit { tid } | Packet::TwoPcAbort { tid } => {
            w.u32(*tid)
        }
        Packet::TwoPcNo { tid, code } => {
            w.u32(*tid);
            w.u32(*code as u32);
        }
        Packet::BarrierAck { epoch, set_size } => {
            w.u32(*epoch);
            w.u32(*set_size);
        }
        Packet::Ping | Packet::PingAck | Packet::Disconnect => {}
        Packet::BitmapRle { chunk, last, data } => {
            w.u32(*chunk);
            w.u8(if *last { RLE_LAST } else { 0 });
            w.0.extend_from_slice(data);
        }
        Packet::ResyncRequest {
            sector,
            block_id,
            size,
        }
        | Packet::DataRequest {
            sector,
            block_id,
            size,
        }
        | Packet::OvRequest {
            sector,
            block_id,
            size,
        } => {
            w.u64(sector.0);
            w.u64(*block_id);
            w.u32(*size);
        }
        Packet::ResyncReply {
            sector,
            block_id,
            digest,
            data,
        }
        | Packet::DataReply {
            sector,
            block_id,
            digest,
            data,
        } => {
            w.u64(sector.0);
            w.u64(*block_id);
            w.bytes8(digest);
            block = data.clone();
        }
        Packet::CsumResyncRequest {
            sector,
            block_id,
            size,
            digest,
        }
        | Packet::OvReply {
            sector,
            block_id,
            size,
            digest,
        } => {
            w.u64(sector.0);
            w.u64(*block_id);
            w.u32(*size);
            w.bytes8(digest);
        }
        Packet::OvResult {
            sector,
            block_id,
            size,
            outcome,
        } => {
            w.u64(sector.0);
            w.u64(*block_id);
            w.u32(*size);
            w.u8(outcome.code());
        }
        Packet::OutOfSync { sector, size } => {
            w.u64(sector.0);
            w.u32(*size);
        }
        Packet::SyncUuid { uuid } => w.u64(uuid.0),
        Packet::CurrentUuid { uuid, weak } => {
            w.u64(uuid.0);
            w.u64(*weak);
        }
    }
    Ok(block)
}

/// For the packet types whose payload ends in a data block (fixed fields, a one-byte digest
/// length, the digest, then the block): where that digest-length byte is. A reader that wants
/// the block on an aligned address (for an O_DIRECT write without a copy) places the payload
/// by it; see `net::framed`. Must match [`decode_body`] below.
pub fn block_digest_len_at(ty: PacketType) -> Option<usize> {
    match ty {
        // sector, block_id, seq, seen, flags, size
        PacketType::Data => Some(8 + 8 + 4 + 4 + 4 + 4),
        // sector, block_id
        PacketType::ResyncReply | PacketType::DataReply => Some(8 + 8),
        _ => None,
    }
}

/// Decodes a payload of type `ty`. Byte fields are zero-copy slices of `payload`. Never panics;
/// checks the same rules as [`validate`], plus structure (truncation, codes, trailing bytes).
/// Does not look at checksums: that is [`super::decode_payload`]'s job.
pub(crate) fn decode_body(ty: PacketType, payload: Bytes) -> Result<Packet, WireError> {
    if payload.len() > ty.max_payload_len() {
        return Err(WireError::TooLong {
            ty,
            len: payload.len() as u64,
            max: ty.max_payload_len(),
        });
    }
    let mut r = Reader {
        buf: payload,
        pos: 0,
        ty,
    };
    let p = match ty {
        PacketType::Hello => Packet::Hello {
            protocol_min: r.u32("protocol_min")?,
            protocol_max: r.u32("protocol_max")?,
            features: r.u64("features")?,
            sender: NodeId(r.u8("sender")?),
            receiver: NodeId(r.u8("receiver")?),
            resource: r.str8("resource")?,
        },
        PacketType::AuthChallenge => Packet::AuthChallenge {
            challenge: r.bytes8("challenge")?,
        },
        PacketType::AuthResponse => Packet::AuthResponse {
            response: r.bytes8("response")?,
        },
        PacketType::ProtocolParams => {
            let protocol = r.code("protocol")?;
            let after_sb_0pri = r.code("after_sb_0pri")?;
            let after_sb_1pri = r.code("after_sb_1pri")?;
            let after_sb_2pri = r.code("after_sb_2pri")?;
            let flags = r.u8("flags")?;
            known_bits(ty, "flags", flags.into(), PP_KNOWN.into())?;
            Packet::ProtocolParams {
                protocol,
                after_sb_0pri,
                after_sb_1pri,
                after_sb_2pri,
                two_primaries: flags & PP_TWO_PRIMARIES != 0,
                discard_my_data: flags & PP_DISCARD_MY_DATA != 0,
                dry_run: flags & PP_DRY_RUN != 0,
                integrity_alg: r.str8("integrity_alg")?,
            }
        }
        PacketType::SyncParams => Packet::SyncParams {
            resync_rate: r.u32("resync_rate")?,
            c_plan_ahead: r.u32("c_plan_ahead")?,
            c_delay_target: r.u32("c_delay_target")?,
            c_fill_target: r.u32("c_fill_target")?,
            c_max_rate: r.u32("c_max_rate")?,
            c_min_rate: r.u32("c_min_rate")?,
            verify_alg: r.str8("verify_alg")?,
            csums_alg: r.str8("csums_alg")?,
        },
        PacketType::Sizes => Packet::Sizes {
            backing: Sector(r.u64("backing")?),
            user: Sector(r.u64("user")?),
            current: Sector(r.u64("current")?),
            max_bio_size: r.u32("max_bio_size")?,
            flags: SizesFlags(r.u16("flags")?),
        },
        PacketType::Uuids => {
            let current = GenUuid(r.u64("current")?);
            let bitmap = GenUuid(r.u64("bitmap")?);
            let dirty_bits = r.u64("dirty_bits")?;
            let flags = UuidFlags(r.u64("flags")?);
            let count = usize::from(r.u8("history")?);
            // Checked against the cap and the bytes present before allocating.
            if count > HISTORY_UUIDS {
                return Err(bad(
                    ty,
                    "history",
                    FieldError::TooLong {
                        len: count,
                        max: HISTORY_UUIDS,
                    },
                ));
            }
            if r.remaining() < count * 8 {
                return Err(bad(ty, "history", FieldError::Truncated));
            }
            let mut history = Vec::with_capacity(count);
            for _ in 0..count {
                history.push(GenUuid(r.u64("history")?));
            }
            Packet::Uuids {
                current,
                bitmap,
                history,
                dirty_bits,
                flags,
            }
        }
        PacketType::State => Packet::State {
            role: r.code("role")?,
            peer_role: r.code("peer_role")?,
            disk: r.code("disk")?,
            peer_disk: r.code("peer_disk")?,
            conn: r.code("conn")?,
            repl: r.code("repl")?,
            flags: StateFlags(r.u8("flags")?),
        },
        PacketType::Data => Packet::Data {
            sector: Sector(r.u64("sector")?),
            block_id: r.u64("block_id")?,
            seq: r.u32("seq")?,
            seen: r.u32("seen")?,
            flags: DataFlags(r.u32("flags")?),
            size: r.u32("size")?,
            digest: r.bytes8("digest")?,
            data: r.rest(),
        },
        PacketType::RecvAck
        | PacketType::WriteAck
        | PacketType::ResyncWriteAck
        | PacketType::NegAck
        | PacketType::Superseded
        | PacketType::NegDataReply
        | PacketType::NegResyncReply
        | PacketType::ResyncIsInSync => {
            let a = BlockAck {
                sector: Sector(r.u64("sector")?),
                block_id: r.u64("block_id")?,
                size: r.u32("size")?,
                seq: r.u32("seq")?,
            };
            match Packet::ack(ty, a) {
                Some(p) => p,
                None => unreachable!("the arm matches ack types only"),
            }
        }
        PacketType::RetryWrite => Packet::RetryWrite {
            ack: BlockAck {
                sector: Sector(r.u64("sector")?),
                block_id: r.u64("block_id")?,
                size: r.u32("size")?,
                seq: r.u32("seq")?,
            },
            after: r.u32("after")?,
        },
        PacketType::PeerAck => Packet::PeerAck { seq: r.u32("seq")? },
        PacketType::Barrier => Packet::Barrier {
            epoch: r.u32("epoch")?,
        },
        PacketType::TwoPcPrepare => {
            let tid = r.u32("tid")?;
            let change = match r.u8("kind")? {
                TWOPC_ROLE => TwoPcChange::Role(r.code("role")?),
                TWOPC_DISCONNECT => match r.u8("outdate")? {
                    0 => TwoPcChange::Disconnect { outdate: false },
                    1 => TwoPcChange::Disconnect { outdate: true },
                    v => return Err(bad(ty, "outdate", FieldError::BadValue(v.into()))),
                },
                k => return Err(bad(ty, "kind", FieldError::BadValue(k.into()))),
            };
            Packet::TwoPcPrepare { tid, change }
        }
        PacketType::TwoPcYes => Packet::TwoPcYes { tid: r.u32("tid")? },
        PacketType::TwoPcCommit => Packet::TwoPcCommit { tid: r.u32("tid")? },
        PacketType::TwoPcAbort => Packet::TwoPcAbort { tid: r.u32("tid")? },
        PacketType::TwoPcNo => {
            let tid = r.u32("tid")?;
            let code = r.u32("code")? as i32;
            if code >= 0 {
                return Err(bad(
                    ty,
                    "code",
                    FieldError::BadValue(u64::from(code as u32)),
                ));
            }
            Packet::TwoPcNo { tid, code }
        }
        PacketType::BarrierAck => Packet::BarrierAck {
            epoch: r.u32("epoch")?,
            set_size: r.u32("set_size")?,
        },
        PacketType::Ping => Packet::Ping,
        PacketType::PingAck => Packet::PingAck,
        PacketType::Disconnect => Packet::Disconnect,
        PacketType::BitmapRle => {
            let chunk = r.u32("chunk")?;
            let flags = r.u8("flags")?;
            known_bits(ty, "flags", flags.into(), RLE_LAST.into())?;
            Packet::BitmapRle {
                chunk,
                last: flags & RLE_LAST != 0,
                data: r.rest(),
            }
        }
        PacketType::ResyncRequest | PacketType::DataRequest | PacketType::OvRequest => {
            let sector = Sector(r.u64("sector")?);
            let block_id = r.u64("block_id")?;
            let size = r.u32("size")?;
            if ty == PacketType::OvRequest {
                Packet::OvRequest {
                    sector,
                    block_id,
                    size,
                }
            } else if ty == PacketType::DataRequest {
                Packet::DataRequest {
                    sector,
                    block_id,
                    size,
                }
            } else {
                Packet::ResyncRequest {
                    sector,
                    block_id,
                    size,
                }
            }
        }
        PacketType::ResyncReply => Packet::ResyncReply {
            sector: Sector(r.u64("sector")?),
            block_id: r.u64("block_id")?,
            digest: r.bytes8("digest")?,
            data: r.rest(),
        },
        PacketType::DataReply => Packet::DataReply {
            sector: Sector(r.u64("sector")?),
            block_id: r.u64("block_id")?,
            digest: r.bytes8("digest")?,
            data: r.rest(),
        },
        PacketType::CsumResyncRequest | PacketType::OvReply => {
            let sector = Sector(r.u64("sector")?);
            let block_id = r.u64("block_id")?;
            let size = r.u32("size")?;
            let digest = r.bytes8("digest")?;
            if ty == PacketType::OvReply {
                Packet::OvReply {
                    sector,
                    block_id,
                    size,
                    digest,
                }
            } else {
                Packet::CsumResyncRequest {
                    sector,
                    block_id,
                    size,
                    digest,
                }
            }
        }
        PacketType::OvResult => Packet::OvResult {
            sector: Sector(r.u64("sector")?),
            block_id: r.u64("block_id")?,
            size: r.u32("size")?,
            outcome: r.code::<OvOutcome>("outcome")?,
        },
        PacketType::OutOfSync => Packet::OutOfSync {
            sector: Sector(r.u64("sector")?),
            size: r.u32("size")?,
        },
        PacketType::SyncUuid => Packet::SyncUuid {
            uuid: GenUuid(r.u64("uuid")?),
        },
        PacketType::CurrentUuid => Packet::CurrentUuid {
            uuid: GenUuid(r.u64("uuid")?),
            weak: r.u64("weak")?,
        },
    };
    let extra = r.remaining();
    if extra != 0 {
        return Err(bad(ty, "payload", FieldError::TrailingBytes(extra)));
    }
    validate(&p)?;
    Ok(p)
}

/// The value rules every encodable packet obeys: caps on strings and byte fields, printable
/// ASCII names, defined flag bits, node ids in range, sector-aligned sizes and the data-length
/// rules of [`Packet::Data`]. [`super::encode`] refuses a packet that breaks one; a decoded
/// packet always passes.
pub fn validate(p: &Packet) -> Result<(), WireError> {
    let ty = p.packet_type();
    let b = |field, error| Err(bad(ty, field, error));
    match p {
        Packet::Hello {
            protocol_min,
            protocol_max,
            sender,
            receiver,
            resource,
            ..
        } => {
            if *protocol_min == 0 {
                return b("protocol_min", FieldError::BadValue(0));
            }
            if protocol_max < protocol_min {
                return b("protocol_max", FieldError::Inconsistent);
            }
            node_id(ty, "sender", *sender)?;
            node_id(ty, "receiver", *receiver)?;
            if resource.is_empty() {
                return b("resource", FieldError::BadValue(0));
            }
            name(ty, "resource", resource, MAX_RESOURCE_NAME_LEN)?;
        }
        Packet::AuthChallenge { challenge: v } | Packet::AuthResponse { response: v } => {
            let field = if ty == PacketType::AuthChallenge {
                "challenge"
            } else {
                "response"
            };
            non_empty_bytes(ty, field, v, MAX_AUTH_LEN)?;
        }
        Packet::ProtocolParams { integrity_alg, .. } => {
            name(ty, "integrity_alg", integrity_alg, MAX_ALG_NAME_LEN)?;
        }
        Packet::SyncParams {
            verify_alg,
            csums_alg,
            ..
        } => {
            name(ty, "verify_alg", verify_alg, MAX_ALG_NAME_LEN)?;
            name(ty, "csums_alg", csums_alg, MAX_ALG_NAME_LEN)?;
        }
        Packet::Sizes { flags, .. } => {
            known_bits(ty, "flags", flags.0.into(), SizesFlags::KNOWN.into())?
        }
        Packet::Uuids { history, flags, .. } => {
            if history.len() > HISTORY_UUIDS {
                return b(
                    "history",
                    FieldError::TooLong {
                        len: history.len(),
                        max: HISTORY_UUIDS,
                    },
                );
            }
            known_bits(ty, "flags", flags.0, UuidFlags::KNOWN)?;
        }
        Packet::State { flags, .. } => {
            known_bits(ty, "flags", flags.0.into(), StateFlags::KNOWN.into())?
        }
        Packet::Data {
            sector,
            flags,
            size,
            digest,
            data,
            ..
        } => {
            known_bits(ty, "flags", flags.0.into(), DataFlags::KNOWN.into())?;
            let no_data = flags.contains(DataFlags::DISCARD) || flags.contains(DataFlags::ZEROES);
            if flags.contains(DataFlags::DISCARD | DataFlags::ZEROES) {
                return b("flags", FieldError::Inconsistent);
            }
            extent(ty, *sector, *size)?;
            bytes_cap(ty, "digest", digest, MAX_DIGEST_LEN)?;
            if no_data {
                if !data.is_empty() || !digest.is_empty() {
                    return b("data", FieldError::Inconsistent);
                }
            } else {
                if *size as usize > MAX_DATA_LEN {
                    return b(
                        "size",
                        FieldError::TooLong {
                            len: *size as usize,
                            max: MAX_DATA_LEN,
                        },
                    );
                }
                if data.len() != *size as usize {
                    return b("data", FieldError::Inconsistent);
                }
            }
        }
        Packet::RecvAck(a)
        | Packet::WriteAck(a)
        | Packet::ResyncWriteAck(a)
        | Packet::NegAck(a)
        | Packet::Superseded(a)
        | Packet::RetryWrite { ack: a, .. }
        | Packet::NegDataReply(a)
        | Packet::NegResyncReply(a)
        | Packet::ResyncIsInSync(a) => extent(ty, a.sector, a.size)?,
        Packet::OutOfSync { sector, size } => extent(ty, *sector, *size)?,
        Packet::ResyncRequest { sector, size, .. }
        | Packet::DataRequest { sector, size, .. }
        | Packet::OvRequest { sector, size, .. }
        | Packet::OvResult { sector, size, .. } => request(ty, *sector, *size)?,
        Packet::CsumResyncRequest {
            sector,
            size,
            digest,
            ..
        }
        | Packet::OvReply {
            sector,
            size,
            digest,
            ..
        } => {
            request(ty, *sector, *size)?;
            non_empty_bytes(ty, "digest", digest, MAX_DIGEST_LEN)?;
        }
        Packet::ResyncReply {
            sector,
            digest,
            data,
            ..
        }
        | Packet::DataReply {
            sector,
            digest,
            data,
            ..
        } => {
            bytes_cap(ty, "digest", digest, MAX_DIGEST_LEN)?;
            // Fits in u32: capped at MAX_DATA_LEN first.
            bytes_cap(ty, "data", data, MAX_DATA_LEN)?;
            request(ty, *sector, data.len() as u32)?;
        }
        Packet::BitmapRle { data, .. } => bytes_cap(ty, "data", data, MAX_BITMAP_CHUNK)?,
        Packet::TwoPcNo { code, .. } if *code >= 0 => {
            return Err(bad(
                ty,
                "code",
                FieldError::BadValue(u64::from(*code as u32)),
            ));
        }
        Packet::Barrier { .. }
        | Packet::PeerAck { .. }
        | Packet::BarrierAck { .. }
        | Packet::TwoPcPrepare { .. }
        | Packet::TwoPcYes { .. }
        | Packet::TwoPcNo { .. }
        | Packet::TwoPcCommit { .. }
        | Packet::TwoPcAbort { .. }
        | Packet::Ping
        | Packet::PingAck
        | Packet::SyncUuid { .. }
        | Packet::CurrentUuid { .. }
        | Packet::Disconnect => {}
    }
    Ok(())
}

fn node_id(ty: PacketType, field: &'static str, id: NodeId) -> Result<(), WireError> {
    if id.0 > MAX_NODE_ID {
        return Err(bad(ty, field, FieldError::BadValue(u64::from(id.0))));
    }
    Ok(())
}

/// Names (resource, algorithms): at most `max` bytes of printable ASCII, no spaces.
fn name(ty: PacketType, field: &'static str, s: &str, max: usize) -> Result<(), WireError> {
    if s.len() > max {
        return Err(bad(ty, field, FieldError::TooLong { len: s.len(), max }));
    }
    if !s.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(bad(ty, field, FieldError::NotAscii));
    }
    Ok(())
}

fn bytes_cap(ty: PacketType, field: &'static str, v: &[u8], max: usize) -> Result<(), WireError> {
    if v.len() > max {
        return Err(bad(ty, field, FieldError::TooLong { len: v.len(), max }));
    }
    Ok(())
}

fn non_empty_bytes(
    ty: PacketType,
    field: &'static str,
    v: &[u8],
    max: usize,
) -> Result<(), WireError> {
    if v.is_empty() {
        return Err(bad(ty, field, FieldError::BadValue(0)));
    }
    bytes_cap(ty, field, v, max)
}

/// A byte range starting at a sector: size sector-aligned, end inside u64 sectors.
fn extent(ty: PacketType, sector: Sector, size: u32) -> Result<(), WireError> {
    if u64::from(size) % SECTOR_SIZE != 0 {
        return Err(bad(ty, "size", FieldError::Misaligned(u64::from(size))));
    }
    if sector
        .0
        .checked_add(u64::from(size) / SECTOR_SIZE)
        .is_none()
    {
        return Err(bad(ty, "sector", FieldError::BadValue(sector.0)));
    }
    Ok(())
}

/// A block request: a non-empty extent no larger than one data packet.
fn request(ty: PacketType, sector: Sector, size: u32) -> Result<(), WireError> {
    if size == 0 {
        return Err(bad(ty, "size", FieldError::BadValue(0)));
    }
    if size as usize > MAX_DATA_LEN {
        return Err(bad(
            ty,
            "size",
            FieldError::TooLong {
                len: size as usize,
                max: MAX_DATA_LEN,
            },
        ));
    }
    extent(ty, sector, size)
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// Callers validated `v.len() <= 255` (every cap is below it).
    fn bytes8(&mut self, v: &[u8]) {
        self.0.push(v.len() as u8);
        self.0.extend_from_slice(v);
    }
}

struct Reader {
    buf: Bytes,
    pos: usize,
    ty: PacketType,
}

impl Reader {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let end = self.pos + N;
        let arr = self
            .buf
            .get(self.pos..end)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(bad(self.ty, field, FieldError::Truncated))?;
        self.pos = end;
        Ok(arr)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.take::<1>(field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.take(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(field)?))
    }

    fn code<T: WireCode>(&mut self, field: &'static str) -> Result<T, WireError> {
        let c = self.u8(field)?;
        T::from_code(c).ok_or(bad(self.ty, field, FieldError::BadValue(u64::from(c))))
    }

    /// A u8 length and that many bytes, sliced (no copy). The length is checked against the
    /// bytes present; the per-field cap is [`validate`]'s.
    fn bytes8(&mut self, field: &'static str) -> Result<Bytes, WireError> {
        let n = usize::from(self.u8(field)?);
        if n > self.remaining() {
            return Err(bad(self.ty, field, FieldError::Truncated));
        }
        let v = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(v)
    }

    fn str8(&mut self, field: &'static str) -> Result<String, WireError> {
        let b = self.bytes8(field)?;
        if !b.iter().all(u8::is_ascii_graphic) {
            return Err(bad(self.ty, field, FieldError::NotAscii));
        }
        String::from_utf8(b.to_vec()).map_err(|_| bad(self.ty, field, FieldError::NotAscii))
    }

    fn rest(&mut self) -> Bytes {
        let v = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        v
    }
}
