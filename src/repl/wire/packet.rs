//! The packets: [`PacketType`] (the header's `u16`) and [`Packet`] (the decoded payload).

use super::codes::{DataFlags, OvOutcome, SizesFlags, StateFlags, UuidFlags};
use super::{
    MAX_ALG_NAME_LEN, MAX_AUTH_LEN, MAX_BITMAP_CHUNK, MAX_DATA_LEN, MAX_DIGEST_LEN,
    MAX_RESOURCE_NAME_LEN,
};
use crate::config::{AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, Protocol};
use crate::repl::state::{ConnState, DiskState, ReplState, Role};
use crate::types::{GenUuid, HISTORY_UUIDS, NodeId, Sector};
use bytes::Bytes;

/// What a cluster-wide state change proposes (the sender's side of it; the receiver applies
/// its own side on commit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwoPcChange {
    /// The sender's role becomes this.
    Role(Role),
    /// The sender closes the connection on purpose. `outdate`: the Secondary of the two
    /// outdates its disk, and the Primary records it (DRBD's `outdate_on_disconnect()`,
    /// under fencing), so that the link's end fences nobody.
    Disconnect { outdate: bool },
}

/// The body every block acknowledgement shares (the six ack packets differ only in meaning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockAck {
    /// Start of the acknowledged range.
    pub sector: Sector,
    /// The sender's request id, echoed.
    pub block_id: u64,
    /// Bytes acknowledged.
    pub size: u32,
    /// The write's sequence number, echoed.
    pub seq: u32,
}

macro_rules! packet_types {
    ($($(#[$m:meta])* $var:ident = $code:literal, conn = $conn:literal, max = $max:expr;)+) => {
        /// The packet type in the header. Numbers are DRBD's `enum drbd_packet` for the
        /// corresponding DRBD packet, so traces compare easily; the payloads are our own.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum PacketType {
            $($(#[$m])* $var = $code,)+
        }

        impl PacketType {
            /// Every type, in code order of declaration.
            pub const ALL: &'static [PacketType] = &[$(PacketType::$var),+];

            /// The type for a header code, if this build knows it.
            pub fn from_u16(code: u16) -> Option<PacketType> {
                match code {
                    $($code => Some(PacketType::$var),)+
                    _ => None,
                }
            }

            /// The header code.
            pub fn code(self) -> u16 {
                self as u16
            }

            /// Connection-level packets belong to no volume: their header volume must be 0.
            pub fn is_connection_level(self) -> bool {
                match self {
                    $(PacketType::$var => $conn,)+
                }
            }

            /// The largest payload this type can have. [`super::decode_header`] rejects longer
            /// lengths before the caller reads (or allocates for) the payload.
            pub const fn max_payload_len(self) -> usize {
                match self {
                    $(PacketType::$var => $max,)+
                }
            }
        }
    };
}

/// Fixed part of a block request/ack: sector u64, block id u64, size u32, seq u32.
const BLOCK: usize = 8 + 8 + 4 + 4;

packet_types! {
    /// A replicated write (`P_DATA`).
    Data = 0x00, conn = false, max = 8 + 8 + 4 + 4 + 4 + 4 + 1 + MAX_DIGEST_LEN + MAX_DATA_LEN;
    /// The data an application read asked the peer for (`P_DATA_REPLY`).
    DataReply = 0x01, conn = false, max = 8 + 8 + 1 + MAX_DIGEST_LEN + MAX_DATA_LEN;
    /// Resync data from the SyncSource (`P_RS_DATA_REPLY`).
    ResyncReply = 0x02, conn = false, max = 8 + 8 + 1 + MAX_DIGEST_LEN + MAX_DATA_LEN;
    /// Closes a write epoch (`P_BARRIER`).
    Barrier = 0x03, conn = true, max = 4;
    /// An application read served by the peer: the sender's disk does not have the blocks
    /// (`P_DATA_REQUEST`).
    DataRequest = 0x08, conn = false, max = 8 + 8 + 4;
    /// A resync block request from the SyncTarget (`P_RS_DATA_REQUEST`).
    ResyncRequest = 0x09, conn = false, max = 8 + 8 + 4;
    /// Replication protocol and split-brain policies (`P_PROTOCOL`).
    ProtocolParams = 0x0b, conn = true, max = 5 + 1 + MAX_ALG_NAME_LEN;
    /// Generation UUIDs (`P_UUIDS`).
    Uuids = 0x0c, conn = false, max = 8 * 4 + 1 + 8 * HISTORY_UUIDS;
    /// Device sizes (`P_SIZES`).
    Sizes = 0x0d, conn = false, max = 8 * 3 + 4 + 2;
    /// Role and disk state (`P_STATE`).
    State = 0x0e, conn = false, max = 7;
    /// The UUID a resync starts from (`P_SYNC_UUID`).
    SyncUuid = 0x0f, conn = false, max = 8;
    /// CRAM-HMAC challenge (`P_AUTH_CHALLENGE`).
    AuthChallenge = 0x10, conn = true, max = 1 + MAX_AUTH_LEN;
    /// CRAM-HMAC response (`P_AUTH_RESPONSE`).
    AuthResponse = 0x11, conn = true, max = 1 + MAX_AUTH_LEN;
    /// Keep-alive (`P_PING`).
    Ping = 0x13, conn = true, max = 0;
    /// Keep-alive answer (`P_PING_ACK`).
    PingAck = 0x14, conn = true, max = 0;
    /// Protocol B: write received (`P_RECV_ACK`).
    RecvAck = 0x15, conn = false, max = BLOCK;
    /// Protocol C: write on disk (`P_WRITE_ACK`).
    WriteAck = 0x16, conn = false, max = BLOCK;
    /// Resync write on disk (`P_RS_WRITE_ACK`).
    ResyncWriteAck = 0x17, conn = false, max = BLOCK;
    /// Two primaries: a concurrent write of the receiver's covers this one, which it did
    /// not write (`P_SUPERSEDED`).
    Superseded = 0x18, conn = false, max = BLOCK;
    /// Write failed on the peer (`P_NEG_ACK`).
    NegAck = 0x19, conn = false, max = BLOCK;
    /// The peer could not read the blocks a DataRequest asked for (`P_NEG_DREPLY`).
    NegDataReply = 0x1a, conn = false, max = BLOCK;
    /// The SyncSource could not read a resync block (`P_NEG_RS_DREPLY`).
    NegResyncReply = 0x1b, conn = false, max = BLOCK;
    /// Acknowledges a whole epoch (`P_BARRIER_ACK`).
    BarrierAck = 0x1c, conn = true, max = 8;
    /// Online-verify request (`P_OV_REQUEST`).
    OvRequest = 0x1e, conn = false, max = 8 + 8 + 4;
    /// Online-verify digest (`P_OV_REPLY`).
    OvReply = 0x1f, conn = false, max = 8 + 8 + 4 + 1 + MAX_DIGEST_LEN;
    /// Online-verify verdict (`P_OV_RESULT`).
    OvResult = 0x20, conn = false, max = 8 + 8 + 4 + 1;
    /// Resync request carrying the target's digest (`P_CSUM_RS_REQUEST`).
    CsumResyncRequest = 0x21, conn = false, max = 8 + 8 + 4 + 1 + MAX_DIGEST_LEN;
    /// Digests matched: no data needed (`P_RS_IS_IN_SYNC`).
    ResyncIsInSync = 0x22, conn = false, max = BLOCK;
    /// Resync rate and algorithms (`P_SYNC_PARAM89`).
    SyncParams = 0x23, conn = false, max = 4 * 6 + 2 * (1 + MAX_ALG_NAME_LEN);
    /// One chunk of the compressed bitmap exchange (`P_COMPRESSED_BITMAP`).
    BitmapRle = 0x24, conn = false, max = 4 + 1 + MAX_BITMAP_CHUNK;
    /// Every write the sender sent on this link up to `seq` has completed everywhere it
    /// went (`P_PEER_ACK`, without DRBD's node mask: see `engine::peer_ack`).
    PeerAck = 0x40, conn = true, max = 4;
    /// Marks a range out of sync on the peer (`P_OUT_OF_SYNC`).
    OutOfSync = 0x28, conn = false, max = 8 + 4;
    /// The Primary's current generation and the diskful nodes its writes do not reach
    /// (`P_CURRENT_UUID`; see `engine::weak`).
    CurrentUuid = 0x41, conn = false, max = 8 + 8;
    /// Two primaries: a concurrent write of the receiver's overlaps this one, which it did
    /// not write; write it again once the receiver's Data up to `after` has arrived
    /// (`P_RETRY_WRITE`).
    RetryWrite = 0x2c, conn = false, max = BLOCK + 4;
    /// A cluster-wide state change: the sender asks to change its role (`P_TWOPC_PREPARE`).
    TwoPcPrepare = 0x2e, conn = true, max = 4 + 1 + 1;
    /// The sender gives up its prepared change (`P_TWOPC_ABORT`).
    TwoPcAbort = 0x2f, conn = true, max = 4;
    /// The receiver may make the prepared change (`P_TWOPC_YES`).
    TwoPcYes = 0x45, conn = true, max = 4;
    /// The receiver refuses it, with DRBD's state-change code (`P_TWOPC_NO`).
    TwoPcNo = 0x46, conn = true, max = 4 + 4;
    /// The sender makes the prepared change (`P_TWOPC_COMMIT`).
    TwoPcCommit = 0x47, conn = true, max = 4;
    /// Orderly disconnect (`P_DISCONNECT`).
    Disconnect = 0x4b, conn = true, max = 0;
    /// Connection features, the first packet (`P_CONNECTION_FEATURES`).
    Hello = 0xfffe, conn = true, max = 4 + 4 + 8 + 1 + 1 + 1 + MAX_RESOURCE_NAME_LEN;
}

/// One decoded packet. Sectors are 512-byte units ([`Sector`]); `size` fields are bytes, as in
/// DRBD. `block_id` is the sender's opaque request handle, echoed back in the answer.
///
/// Not every value is encodable: strings and byte fields have caps, strings are printable
/// ASCII, data sizes are multiples of 512, and so on ([`super::encode`] checks the same rules
/// [`super::decode_payload`] enforces, so whatever encodes decodes to an equal packet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// First packet on a connection: what the sender speaks and who it is.
    Hello {
        /// Lowest protocol version the sender speaks (>= 1).
        protocol_min: u32,
        /// Highest protocol version the sender speaks (>= `protocol_min`).
        protocol_max: u32,
        /// [`super::features`] bits; undefined bits are allowed.
        features: u64,
        /// The sender's node id.
        sender: NodeId,
        /// The node id the sender expects us to have.
        receiver: NodeId,
        /// The resource this connection is for (non-empty).
        resource: String,
    },
    /// CRAM-HMAC: random bytes the peer must sign.
    AuthChallenge {
        challenge: Bytes,
    },
    /// CRAM-HMAC: `HMAC(secret, peer's challenge ...)`.
    AuthResponse {
        response: Bytes,
    },
    /// Connection parameters both sides must agree on. The after-sb policies are the sender's
    /// view: its `DiscardLocal` is the receiver's `DiscardRemote`.
    ProtocolParams {
        protocol: Protocol,
        after_sb_0pri: AfterSb0Pri,
        after_sb_1pri: AfterSb1Pri,
        after_sb_2pri: AfterSb2Pri,
        two_primaries: bool,
        /// `connect --discard-my-data`.
        discard_my_data: bool,
        /// `connect --dry-run`.
        dry_run: bool,
        /// `data-integrity-alg`; empty for none.
        integrity_alg: String,
    },
    /// Resync controller settings and algorithms.
    SyncParams {
        /// `resync-rate`, KiB/s.
        resync_rate: u32,
        /// `c-plan-ahead`, tenths of a second.
        c_plan_ahead: u32,
        /// `c-delay-target`, tenths of a second.
        c_delay_target: u32,
        /// `c-fill-target`, sectors.
        c_fill_target: u32,
        /// `c-max-rate`, KiB/s.
        c_max_rate: u32,
        /// `c-min-rate`, KiB/s.
        c_min_rate: u32,
        /// `verify-alg`; empty for none.
        verify_alg: String,
        /// `csums-alg`; empty for none.
        csums_alg: String,
    },
    /// Device sizes, in sectors.
    Sizes {
        /// Usable size of the sender's backing device.
        backing: Sector,
        /// The configured (`size`) limit; 0 for none.
        user: Sector,
        /// The sender's current device size.
        current: Sector,
        /// Largest request the sender's queue accepts, bytes.
        max_bio_size: u32,
        flags: SizesFlags,
    },
    /// Generation UUIDs, as toward the receiver.
    Uuids {
        current: GenUuid,
        /// The sender's bitmap UUID for the receiver.
        bitmap: GenUuid,
        /// Newest first, at most [`HISTORY_UUIDS`].
        history: Vec<GenUuid>,
        /// Bits set in the sender's bitmap for the receiver.
        dirty_bits: u64,
        flags: UuidFlags,
    },
    /// The sender's state, and its view of the receiver's.
    State {
        role: Role,
        peer_role: Role,
        disk: DiskState,
        peer_disk: DiskState,
        conn: ConnState,
        repl: ReplState,
        flags: StateFlags,
    },
    /// A replicated write. `size` is the bytes covered; `data` holds exactly `size` bytes,
    /// except for DISCARD / ZEROES, which carry no data. `digest` is the data-integrity-alg
    /// digest of `data` (empty when no integrity alg is configured).
    Data {
        sector: Sector,
        block_id: u64,
        seq: u32,
        /// Two primaries: the `seq` of the last Data the sender had received from the
        /// receiver when it admitted this write (which of the receiver's writes it had seen).
        seen: u32,
        flags: DataFlags,
        size: u32,
        digest: Bytes,
        data: Bytes,
    },
    /// Protocol B acknowledgement.
    RecvAck(BlockAck),
    /// Protocol C acknowledgement.
    WriteAck(BlockAck),
    /// Resync write acknowledgement.
    ResyncWriteAck(BlockAck),
    /// The write failed on the peer: the range is out of sync.
    NegAck(BlockAck),
    /// Two primaries: superseded by a concurrent write of the peer's (not written there).
    Superseded(BlockAck),
    /// Two primaries: not written because of a concurrent write of the peer's; to be written
    /// again once the peer's Data with seq `after` has arrived.
    RetryWrite {
        ack: BlockAck,
        after: u32,
    },
    /// The peer failed to read the blocks of a DataRequest.
    NegDataReply(BlockAck),
    /// The SyncSource failed to read the requested block.
    NegResyncReply(BlockAck),
    /// Digests matched: the requested block is already in sync.
    ResyncIsInSync(BlockAck),
    /// Ends write epoch `epoch`.
    Barrier {
        epoch: u32,
    },
    /// Every `Data` the sender sent on this link up to `seq` has completed everywhere it
    /// went (three nodes: the receiver forgets those writes; see `engine::peer_ack`).
    PeerAck {
        seq: u32,
    },
    /// All `set_size` writes of epoch `epoch` are done on the peer.
    BarrierAck {
        epoch: u32,
        set_size: u32,
    },
    Ping,
    PingAck,
    /// Chunk `chunk` (from 0) of the [`crate::bitmap::rle`] encoding of the sender's bitmap;
    /// the receiver concatenates chunks until `last`.
    BitmapRle {
        chunk: u32,
        last: bool,
        data: Bytes,
    },
    /// An application read on a node whose disk does not have current data for these
    /// blocks asks for `size` bytes at `sector` (`0 < size <= MAX_DATA_LEN`).
    DataRequest {
        sector: Sector,
        block_id: u64,
        size: u32,
    },
    /// The peer's data for a DataRequest; `data` is non-empty and sector-aligned.
    DataReply {
        sector: Sector,
        block_id: u64,
        digest: Bytes,
        data: Bytes,
    },
    /// SyncTarget asks for `size` bytes at `sector` (`0 < size <= MAX_DATA_LEN`).
    ResyncRequest {
        sector: Sector,
        block_id: u64,
        size: u32,
    },
    /// SyncSource's data for a request; `data` is non-empty and sector-aligned.
    ResyncReply {
        sector: Sector,
        block_id: u64,
        digest: Bytes,
        data: Bytes,
    },
    /// Like ResyncRequest, with the target's `csums-alg` digest of its block.
    CsumResyncRequest {
        sector: Sector,
        block_id: u64,
        size: u32,
        digest: Bytes,
    },
    /// VerifyS asks for the digest of a block.
    OvRequest {
        sector: Sector,
        block_id: u64,
        size: u32,
    },
    /// VerifyT's `verify-alg` digest of the block.
    OvReply {
        sector: Sector,
        block_id: u64,
        size: u32,
        digest: Bytes,
    },
    /// VerifyS's verdict on a block.
    OvResult {
        sector: Sector,
        block_id: u64,
        size: u32,
        outcome: OvOutcome,
    },
    /// The range was written without the peer: mark it out of sync.
    OutOfSync {
        sector: Sector,
        size: u32,
    },
    /// The generation a resync brings the target to.
    SyncUuid {
        uuid: GenUuid,
    },
    /// From a Primary: its writes are of generation `uuid` now, and do not reach the diskful
    /// nodes in `weak` (a bit per node id). From a Secondary: the Primary's mask passed on to
    /// its other peers, with its own current UUID, so that a node the Primary does not reach
    /// knows it (DRBD's `P_CURRENT_UUID` with `weak_nodes`).
    CurrentUuid {
        uuid: GenUuid,
        weak: u64,
    },
    /// The sender is closing the connection on purpose.
    Disconnect,
    /// Phase one of a cluster-wide state change: the sender (the initiator) asks to make
    /// `change`. Transaction `tid` is the sender's.
    TwoPcPrepare {
        tid: u32,
        change: TwoPcChange,
    },
    /// The receiver agrees to transaction `tid`, and holds back conflicting changes until the
    /// commit or abort.
    TwoPcYes {
        tid: u32,
    },
    /// The receiver refuses transaction `tid`: `code` is DRBD's `enum drbd_state_rv` (< 0).
    TwoPcNo {
        tid: u32,
        code: i32,
    },
    /// Phase two: the initiator made the change of transaction `tid`.
    TwoPcCommit {
        tid: u32,
    },
    /// The initiator gave transaction `tid` up.
    TwoPcAbort {
        tid: u32,
    },
}

impl Packet {
    /// The ack packet of type `ty` with body `a`; None if `ty` is not an ack type.
    pub fn ack(ty: PacketType, a: BlockAck) -> Option<Packet> {
        Some(match ty {
            PacketType::RecvAck => Packet::RecvAck(a),
            PacketType::WriteAck => Packet::WriteAck(a),
            PacketType::ResyncWriteAck => Packet::ResyncWriteAck(a),
            PacketType::NegAck => Packet::NegAck(a),
            PacketType::Superseded => Packet::Superseded(a),
            PacketType::NegDataReply => Packet::NegDataReply(a),
            PacketType::NegResyncReply => Packet::NegResyncReply(a),
            PacketType::ResyncIsInSync => Packet::ResyncIsInSync(a),
            _ => return None,
        })
    }

    /// The body of an ack packet.
    pub fn as_ack(&self) -> Option<&BlockAck> {
        match self {
            Packet::RecvAck(a)
            | Packet::WriteAck(a)
            | Packet::ResyncWriteAck(a)
            | Packet::NegAck(a)
            | Packet::Superseded(a)
            | Packet::RetryWrite { ack: a, .. }
            | Packet::NegDataReply(a)
            | Packet::NegResyncReply(a)
            | Packet::ResyncIsInSync(a) => Some(a),
            _ => None,
        }
    }

    /// Bytes of block data the packet carries (writes and resync replies; 0 for the rest).
    pub fn data_len(&self) -> usize {
        match self {
            Packet::Data { data, .. }
            | Packet::ResyncReply { data, .. }
            | Packet::DataReply { data, .. } => data.len(),
            _ => 0,
        }
    }

    /// This packet's header type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Hello { .. } => PacketType::Hello,
            Packet::AuthChallenge { .. } => PacketType::AuthChallenge,
            Packet::AuthResponse { .. } => PacketType::AuthResponse,
            Packet::ProtocolParams { .. } => PacketType::ProtocolParams,
            Packet::SyncParams { .. } => PacketType::SyncParams,
            Packet::Sizes { .. } => PacketType::Sizes,
            Packet::Uuids { .. } => PacketType::Uuids,
            Packet::State { .. } => PacketType::State,
            Packet::Data { .. } => PacketType::Data,
            Packet::RecvAck(_) => PacketType::RecvAck,
            Packet::WriteAck(_) => PacketType::WriteAck,
            Packet::ResyncWriteAck(_) => PacketType::ResyncWriteAck,
            Packet::NegAck(_) => PacketType::NegAck,
            Packet::Superseded(_) => PacketType::Superseded,
            Packet::RetryWrite { .. } => PacketType::RetryWrite,
            Packet::NegResyncReply(_) => PacketType::NegResyncReply,
            Packet::NegDataReply(_) => PacketType::NegDataReply,
            Packet::DataRequest { .. } => PacketType::DataRequest,
            Packet::DataReply { .. } => PacketType::DataReply,
            Packet::ResyncIsInSync(_) => PacketType::ResyncIsInSync,
            Packet::Barrier { .. } => PacketType::Barrier,
            Packet::PeerAck { .. } => PacketType::PeerAck,
            Packet::BarrierAck { .. } => PacketType::BarrierAck,
            Packet::Ping => PacketType::Ping,
            Packet::PingAck => PacketType::PingAck,
            Packet::BitmapRle { .. } => PacketType::BitmapRle,
            Packet::ResyncRequest { .. } => PacketType::ResyncRequest,
            Packet::ResyncReply { .. } => PacketType::ResyncReply,
            Packet::CsumResyncRequest { .. } => PacketType::CsumResyncRequest,
            Packet::OvRequest { .. } => PacketType::OvRequest,
            Packet::OvReply { .. } => PacketType::OvReply,
            Packet::OvResult { .. } => PacketType::OvResult,
            Packet::OutOfSync { .. } => PacketType::OutOfSync,
            Packet::SyncUuid { .. } => PacketType::SyncUuid,
            Packet::CurrentUuid { .. } => PacketType::CurrentUuid,
            Packet::Disconnect => PacketType::Disconnect,
            Packet::TwoPcPrepare { .. } => PacketType::TwoPcPrepare,
            Packet::TwoPcYes { .. } => PacketType::TwoPcYes,
            Packet::TwoPcNo { .. } => PacketType::TwoPcNo,
            Packet::TwoPcCommit { .. } => PacketType::TwoPcCommit,
            Packet::TwoPcAbort { .. } => PacketType::TwoPcAbort,
        }
    }
}
