use super::body::decode_body;
use super::*;
use crate::config::{AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, Protocol};
use crate::repl::state::{ConnState, DiskState, ReplState, Role};
use crate::types::{GenUuid, NodeId, Sector};
use proptest::prelude::*;

fn enc(p: &Packet) -> Vec<u8> {
    let mut out = Vec::new();
    encode(p, &mut out).unwrap();
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A header with correct CRCs around an arbitrary (possibly invalid) payload and fields.
fn raw_frame(ty: u16, flags: u8, volume: u16, reserved: u16, len: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAGIC.to_be_bytes());
    f.push(WIRE_VERSION);
    f.push(flags);
    f.extend_from_slice(&ty.to_be_bytes());
    f.extend_from_slice(&volume.to_be_bytes());
    f.extend_from_slice(&reserved.to_be_bytes());
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    let hc = crc32c::crc32c(&f);
    f.extend_from_slice(&hc.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ok_frame(ty: PacketType, payload: &[u8]) -> Vec<u8> {
    raw_frame(ty.code(), 0, 0, 0, payload.len() as u32, payload)
}

fn decode_err(frame: &[u8]) -> WireError {
    Frame::decode(frame).unwrap_err()
}

fn data_packet(data: &[u8], digest: &[u8]) -> Packet {
    Packet::Data {
        sector: Sector(8),
        block_id: 0x1122_3344_5566_7788,
        seq: 5,
        seen: 3,
        flags: DataFlags::FUA | DataFlags::SEND_WRITE_ACK,
        size: data.len() as u32,
        digest: Bytes::copy_from_slice(digest),
        data: Bytes::copy_from_slice(data),
    }
}

// ---------------------------------------------------------------------------------------------
// Golden bytes: these pin the format. If one fails, the wire format changed: that needs a
// WIRE_VERSION bump and a deliberate update here, never a silent one. The CRCs were computed
// independently of this code (a bitwise CRC32C, polynomial 0x82F63B78, in Python).

#[rustfmt::skip]
#[test]
fn golden_ping() {
    assert_eq!(
        hex(&enc(&Packet::Ping)),
        concat!(
            "75445242", "01", "00", "0013", // magic, version, flags, type
            "0000", "0000", "00000000",     // volume, reserved, length
            "00000000",                     // payload CRC (of nothing)
            "87d3fc61",                     // header CRC
        )
    );
}

#[rustfmt::skip]
#[test]
fn golden_barrier_ack() {
    let f = enc(&Packet::BarrierAck { epoch: 0x0102_0304, set_size: 17 });
    assert_eq!(
        hex(&f),
        concat!(
            "75445242", "01", "00", "001c", "0000", "0000", "00000008", "23dea73b", "64bf0656",
            "01020304", "00000011", // epoch, set size
        )
    );
}

#[rustfmt::skip]
#[test]
fn golden_data_with_digest_on_volume_3() {
    let mut f = Vec::new();
    encode_to(3, &data_packet(&[0xAB; 512], &[1, 2, 3, 4]), &mut f).unwrap();
    let head = concat!(
        "75445242", "01", "00", "0000", "0003", "0000",
        "00000225",                                          // 37 + 512 payload bytes
        "6b903430", "5cfb9223",                              // payload CRC, header CRC
        "0000000000000008", "1122334455667788", "00000005",  // sector, block id, seq
        "00000003",                                          // seen
        "00000110", "00000200",                              // flags FUA|SEND_WRITE_ACK, size 512
        "04", "01020304",                                    // digest
    );
    assert_eq!(hex(&f[..HEADER_LEN + 37]), head);
    assert!(f[HEADER_LEN + 37..].iter().all(|&b| b == 0xAB));
    assert_eq!(f.len(), HEADER_LEN + 37 + 512);
}

#[rustfmt::skip]
#[test]
fn golden_hello() {
    let f = enc(&Packet::Hello {
        protocol_min: 1,
        protocol_max: 2,
        features: features::TRIM | features::CSUM_RESYNC,
        sender: NodeId(1),
        receiver: NodeId(2),
        resource: "r0".into(),
    });
    assert_eq!(
        hex(&f),
        concat!(
            "75445242", "01", "00", "fffe", "0000", "0000", "00000015", "2dbd6b72", "b6fede72",
            "00000001", "00000002", "0000000100000001", // protocol min, max, features
            "01", "02", "02", "7230",                   // sender, receiver, "r0"
        )
    );
}

#[test]
fn golden_uuids() {
    let f = enc(&Packet::Uuids {
        current: GenUuid(0xAAAA),
        bitmap: GenUuid(0),
        history: vec![GenUuid(0xBBBB), GenUuid(4)],
        dirty_bits: 3,
        flags: UuidFlags::CRASHED_PRIMARY | UuidFlags::JUST_CREATED,
    });
    assert_eq!(
        hex(&f[HEADER_LEN..]),
        concat!(
            "000000000000aaaa",
            "0000000000000000",
            "0000000000000003",
            "0000000100000002",
            "02",
            "000000000000bbbb",
            "0000000000000004",
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn name(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[!-~]{{0,{max}}}")).unwrap()
}

fn bytes(min: usize, max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), min..=max).prop_map(Bytes::from)
}

fn code<T: WireCode + std::fmt::Debug>() -> impl Strategy<Value = T> {
    proptest::sample::select(T::ALL)
}

fn sector() -> impl Strategy<Value = Sector> {
    // Every extent a u32 size can describe ends inside u64 sectors.
    prop_oneof![Just(0u64), 0..u64::MAX / 2, Just(u64::MAX - (1 << 23))].prop_map(Sector)
}

/// Sector-aligned sizes, any u32 range.
fn extent_size() -> impl Strategy<Value = u32> {
    (0u32..=u32::MAX / 512).prop_map(|s| s * 512)
}

/// Sector-aligned request sizes: 512 ..= MAX_DATA_LEN.
fn request_size() -> impl Strategy<Value = u32> {
    (1u32..=(MAX_DATA_LEN as u32) / 512).prop_map(|s| s * 512)
}

/// Small data blocks (so a case stays fast): 0 ..= 8 sectors.
fn block() -> impl Strategy<Value = Bytes> {
    (0usize..=8).prop_flat_map(|s| bytes(s * 512, s * 512))
}

fn flags<T: Copy + std::fmt::Debug + 'static>(
    known: &'static [T],
) -> impl Strategy<Value = Vec<T>> {
    proptest::sample::subsequence(known.to_vec(), 0..=known.len())
}

const DATA_FLAGS: &[DataFlags] = &[
    DataFlags::MAY_SET_IN_SYNC,
    DataFlags::FUA,
    DataFlags::FLUSH,
    DataFlags::SEND_RECEIVE_ACK,
    DataFlags::SEND_WRITE_ACK,
];

fn arb_packet_of(ty: PacketType) -> BoxedStrategy<Packet> {
    use PacketType as T;
    let ack = (sector(), any::<u64>(), extent_size(), any::<u32>());
    let req = (sector(), any::<u64>(), request_size());
    match ty {
        T::Hello => (
            1u32..10,
            0u32..10,
            any::<u64>(),
            0u8..=31,
            0u8..=31,
            name(MAX_RESOURCE_NAME_LEN - 1),
        )
            .prop_map(|(min, extra, features, s, r, res)| Packet::Hello {
                protocol_min: min,
                protocol_max: min + extra,
                features,
                sender: NodeId(s),
                receiver: NodeId(r),
                resource: format!("r{res}"),
            })
            .boxed(),
        T::AuthChallenge => bytes(1, MAX_AUTH_LEN)
            .prop_map(|challenge| Packet::AuthChallenge { challenge })
            .boxed(),
        T::AuthResponse => bytes(1, MAX_AUTH_LEN)
            .prop_map(|response| Packet::AuthResponse { response })
            .boxed(),
        T::ProtocolParams => (
            code::<Protocol>(),
            code::<AfterSb0Pri>(),
            code::<AfterSb1Pri>(),
            code::<AfterSb2Pri>(),
            any::<(bool, bool, bool)>(),
            name(MAX_ALG_NAME_LEN),
        )
            .prop_map(
                |(protocol, a0, a1, a2, (two, discard, dry), alg)| Packet::ProtocolParams {
                    protocol,
                    after_sb_0pri: a0,
                    after_sb_1pri: a1,
                    after_sb_2pri: a2,
                    two_primaries: two,
                    discard_my_data: discard,
                    dry_run: dry,
                    integrity_alg: alg,
                },
            )
            .boxed(),
        T::SyncParams => (
            any::<[u32; 6]>(),
            name(MAX_ALG_NAME_LEN),
            name(MAX_ALG_NAME_LEN),
        )
            .prop_map(|(v, verify_alg, csums_alg)| Packet::SyncParams {
                resync_rate: v[0],
                c_plan_ahead: v[1],
                c_delay_target: v[2],
                c_fill_target: v[3],
                c_max_rate: v[4],
                c_min_rate: v[5],
                verify_alg,
                csums_alg,
            })
            .boxed(),
        T::Sizes => (any::<[u64; 3]>(), any::<u32>(), 0u16..4)
            .prop_map(|(s, max_bio_size, f)| Packet::Sizes {
                backing: Sector(s[0]),
                user: Sector(s[1]),
                current: Sector(s[2]),
                max_bio_size,
                flags: SizesFlags(f),
            })
            .boxed(),
        T::Uuids => (
            any::<[u64; 3]>(),
            proptest::collection::vec(any::<u64>(), 0..=crate::types::HISTORY_UUIDS),
            any::<u64>(),
        )
            .prop_map(|(u, h, f)| Packet::Uuids {
                current: GenUuid(u[0]),
                bitmap: GenUuid(u[1]),
                history: h.into_iter().map(GenUuid).collect(),
                dirty_bits: u[2],
                flags: UuidFlags(f & UuidFlags::KNOWN),
            })
            .boxed(),
        T::State => (
            code::<Role>(),
            code::<Role>(),
            code::<DiskState>(),
            code::<DiskState>(),
            code::<ConnState>(),
            code::<ReplState>(),
            0u8..64,
        )
            .prop_map(
                |(role, peer_role, disk, peer_disk, conn, repl, f)| Packet::State {
                    role,
                    peer_role,
                    disk,
                    peer_disk,
                    conn,
                    repl,
                    flags: StateFlags(f),
                },
            )
            .boxed(),
        T::Data => {
            let write = (
                sector(),
                any::<u64>(),
                (any::<u32>(), any::<u32>()),
                flags(DATA_FLAGS),
                bytes(0, MAX_DIGEST_LEN),
                block(),
            )
                .prop_map(|(sector, block_id, (seq, seen), f, digest, data)| {
                    Packet::Data {
                        sector,
                        block_id,
                        seq,
                        seen,
                        flags: f.into_iter().fold(DataFlags::empty(), |a, b| a | b),
                        size: data.len() as u32,
                        digest,
                        data,
                    }
                });
            let trim = (
                sector(),
                any::<u64>(),
                (any::<u32>(), any::<u32>()),
                flags(DATA_FLAGS),
                any::<bool>(),
                extent_size(),
            )
                .prop_map(|(sector, block_id, (seq, seen), f, zeroes, size)| {
                    Packet::Data {
                        sector,
                        block_id,
                        seq,
                        seen,
                        flags: f.into_iter().fold(
                            if zeroes {
                                DataFlags::ZEROES
                            } else {
                                DataFlags::DISCARD
                            },
                            |a, b| a | b,
                        ),
                        size,
                        digest: Bytes::new(),
                        data: Bytes::new(),
                    }
                });
            prop_oneof![3 => write, 1 => trim].boxed()
        }
        T::RecvAck
        | T::WriteAck
        | T::ResyncWriteAck
        | T::NegAck
        | T::Superseded
        | T::NegDataReply
        | T::NegResyncReply
        | T::ResyncIsInSync => ack
            .prop_map(move |(sector, block_id, size, seq)| {
                let a = BlockAck {
                    sector,
                    block_id,
                    size,
                    seq,
                };
                Packet::ack(ty, a).expect("an ack type")
            })
            .boxed(),
        T::RetryWrite => (ack, any::<u32>())
            .prop_map(
                |((sector, block_id, size, seq), after)| Packet::RetryWrite {
                    ack: BlockAck {
                        sector,
                        block_id,
                        size,
                        seq,
                    },
                    after,
                },
            )
            .boxed(),
        T::Barrier => any::<u32>()
            .prop_map(|epoch| Packet::Barrier { epoch })
            .boxed(),
        T::PeerAck => any::<u32>().prop_map(|seq| Packet::PeerAck { seq }).boxed(),
        T::TwoPcPrepare => (
            any::<u32>(),
            prop_oneof![
                code::<Role>().prop_map(TwoPcChange::Role),
                any::<bool>().prop_map(|outdate| TwoPcChange::Disconnect { outdate }),
            ],
        )
            .prop_map(|(tid, change)| Packet::TwoPcPrepare { tid, change })
            .boxed(),
        T::TwoPcYes => any::<u32>()
            .prop_map(|tid| Packet::TwoPcYes { tid })
            .boxed(),
        T::TwoPcCommit => any::<u32>()
            .prop_map(|tid| Packet::TwoPcCommit { tid })
            .boxed(),
        T::TwoPcAbort => any::<u32>()
            .prop_map(|tid| Packet::TwoPcAbort { tid })
            .boxed(),
        T::TwoPcNo => (any::<u32>(), i32::MIN..0)
            .prop_map(|(tid, code)| Packet::TwoPcNo { tid, code })
            .boxed(),
        T::BarrierAck => any::<(u32, u32)>()
            .prop_map(|(epoch, set_size)| Packet::BarrierAck { epoch, set_size })
            .boxed(),
        T::Ping => Just(Packet::Ping).boxed(),
        T::PingAck => Just(Packet::PingAck).boxed(),
        T::Disconnect => Just(Packet::Disconnect).boxed(),
        T::BitmapRle => (any::<u32>(), any::<bool>(), bytes(0, 300))
            .prop_map(|(chunk, last, data)| Packet::BitmapRle { chunk, last, data })
            .boxed(),
        T::ResyncRequest | T::DataRequest | T::OvRequest => req
            .prop_map(move |(sector, block_id, size)| {
                if ty == T::OvRequest {
                    Packet::OvRequest {
                        sector,
                        block_id,
                        size,
                    }
                } else if ty == T::DataRequest {
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
            })
            .boxed(),
        T::ResyncReply | T::DataReply => (
            sector(),
            any::<u64>(),
            bytes(0, MAX_DIGEST_LEN),
            (1usize..=8).prop_flat_map(|s| bytes(s * 512, s * 512)),
        )
            .prop_map(move |(sector, block_id, digest, data)| {
                if ty == T::DataReply {
                    Packet::DataReply {
                        sector,
                        block_id,
                        digest,
                        data,
                    }
                } else {
                    Packet::ResyncReply {
                        sector,
                        block_id,
                        digest,
                        data,
                    }
                }
            })
            .boxed(),
        T::CsumResyncRequest | T::OvReply => (req, bytes(1, MAX_DIGEST_LEN))
            .prop_map(move |((sector, block_id, size), digest)| {
                if ty == T::OvReply {
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
            })
            .boxed(),
        T::OvResult => (req, code::<OvOutcome>())
            .prop_map(|((sector, block_id, size), outcome)| Packet::OvResult {
                sector,
                block_id,
                size,
                outcome,
            })
            .boxed(),
        T::OutOfSync => (sector(), extent_size())
            .prop_map(|(sector, size)| Packet::OutOfSync { sector, size })
            .boxed(),
        T::CurrentUuid => (any::<u64>(), any::<u64>())
            .prop_map(|(u, weak)| Packet::CurrentUuid {
                uuid: GenUuid(u),
                weak,
            })
            .boxed(),
        T::SyncUuid => any::<u64>()
            .prop_map(|u| Packet::SyncUuid { uuid: GenUuid(u) })
            .boxed(),
    }
}

fn arb_packet() -> impl Strategy<Value = Packet> {
    proptest::sample::select(PacketType::ALL).prop_flat_map(arb_packet_of)
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (arb_packet(), any::<u16>()).prop_map(|(packet, v)| Frame {
        volume: if packet.packet_type().is_connection_level() {
            0
        } else {
            v
        },
        packet,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_packet_round_trips(frame in arb_frame()) {
        let mut bytes = Vec::new();
        let n = frame.encode(&mut bytes).unwrap();
        prop_assert_eq!(n, bytes.len());
        // One-shot decode.
        let (back, used) = Frame::decode(&bytes).unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(&back, &frame);
        // Streaming decode, zero-copy.
        let h = decode_header(&bytes[..Frame::header_len()]).unwrap();
        prop_assert_eq!(h.packet_type(), frame.packet.packet_type());
        prop_assert_eq!(h.volume(), frame.volume);
        prop_assert_eq!(h.payload_len(), bytes.len() - HEADER_LEN);
        let payload = Bytes::copy_from_slice(&bytes[HEADER_LEN..]);
        prop_assert_eq!(decode_payload_bytes(&h, payload).unwrap(), frame.packet.clone());
        // Canonical: the same bytes again.
        let mut again = Vec::new();
        back.encode(&mut again).unwrap();
        prop_assert_eq!(&again, &bytes);
        // Split: the same bytes, with a write's or resync reply's block not copied.
        let split = encode_split(frame.volume, &frame.packet).unwrap();
        let mut joined = split.head.clone();
        joined.extend_from_slice(&split.block);
        prop_assert_eq!(&joined, &bytes);
        match &frame.packet {
            Packet::Data { data, .. }
            | Packet::ResyncReply { data, .. }
            | Packet::DataReply { data, .. } => {
                prop_assert_eq!(split.block.as_ptr(), data.as_ptr());
                prop_assert_eq!(split.block.len(), data.len());
            }
            _ => prop_assert!(split.block.is_empty()),
        }
        // The block's place, as a reader that aligns it finds it.
        if let Some(at) = block_digest_len_at(frame.packet.packet_type()) {
            let payload = &bytes[HEADER_LEN..];
            let block_at = at + 1 + usize::from(payload[at]);
            prop_assert_eq!(payload.len() - block_at, split.block.len());
            prop_assert_eq!(&payload[block_at..], &split.block[..]);
        }
    }

    /// Every single-byte corruption, at every position, is detected.
    #[test]
    fn any_single_byte_corruption_is_detected(frame in arb_frame(), mask in 1u8..=255) {
        let mut bytes = Vec::new();
        frame.encode(&mut bytes).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= mask;
            prop_assert!(Frame::decode(&bytes).is_err(), "corrupting byte {} by {:#04x} went unnoticed", i, mask);
            bytes[i] ^= mask;
        }
    }

    /// Cutting a frame anywhere is an error, whether the header or the payload is short.
    #[test]
    fn truncation_at_every_length_is_an_error(frame in arb_frame()) {
        let mut bytes = Vec::new();
        frame.encode(&mut bytes).unwrap();
        for cut in 0..bytes.len() {
            let err = Frame::decode(&bytes[..cut]).unwrap_err();
            let truncated = matches!(err, WireError::Truncated { .. });
            prop_assert!(truncated, "cut at {}: {:?}", cut, err);
        }
        let h = decode_header(&bytes).unwrap();
        for cut in 0..bytes.len() - HEADER_LEN {
            let short = decode_payload(&h, &bytes[HEADER_LEN..HEADER_LEN + cut]).unwrap_err();
            prop_assert_eq!(short, WireError::PayloadLength { expected: h.payload_len(), got: cut });
        }
    }

    /// Payload parsers, with the CRC out of the way: a cut payload never panics, and for every
    /// packet without a trailing `rest` field it is an error.
    #[test]
    fn truncated_payloads_never_panic(packet in arb_packet()) {
        let bytes = enc(&packet);
        let body = &bytes[HEADER_LEN..];
        let ty = packet.packet_type();
        let has_rest = matches!(
            ty,
            PacketType::ResyncReply | PacketType::DataReply | PacketType::BitmapRle
        );
        for cut in 0..body.len() {
            let r = decode_body(ty, Bytes::copy_from_slice(&body[..cut]));
            if !has_rest {
                prop_assert!(r.is_err(), "{:?} cut at {} decoded: {:?}", ty, cut, r);
            }
        }
    }

    /// Arbitrary payload bytes for every type: errors, never panics; what decodes is canonical.
    #[test]
    fn payload_decoders_are_total(ty in proptest::sample::select(PacketType::ALL), body in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut input = vec![1u8];
        input.extend_from_slice(&ty.code().to_be_bytes());
        input.extend_from_slice(&body);
        fuzz_decode(&input);
    }

    /// Single-byte corruption of a payload, CRC bypassed: a different well-formed packet or an
    /// error, never a panic (what the CRC protects against, checked without it).
    #[test]
    fn corrupted_payloads_without_crc_never_panic(packet in arb_packet(), at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let bytes = enc(&packet);
        let mut body = bytes[HEADER_LEN..].to_vec();
        if !body.is_empty() {
            let i = at.index(body.len());
            body[i] ^= mask;
            let mut input = vec![1u8];
            input.extend_from_slice(&packet.packet_type().code().to_be_bytes());
            input.extend_from_slice(&body);
            fuzz_decode(&input);
            if let Ok(p) = decode_body(packet.packet_type(), Bytes::from(body)) {
                prop_assert_ne!(p, packet);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Header checks.

#[test]
fn header_errors_are_typed() {
    let good = enc(&Packet::Ping);
    assert_eq!(
        decode_header(&good[..10]),
        Err(WireError::Truncated { need: 24, have: 10 })
    );

    let mut f = good.clone();
    f[0] = 0;
    assert!(matches!(decode_err(&f), WireError::BadMagic { .. }));

    let mut f = good.clone();
    f[4] = 2;
    assert_eq!(decode_err(&f), WireError::UnsupportedVersion { got: 2 });

    let mut f = good.clone();
    f[13] = 1; // length
    assert!(matches!(
        decode_err(&f),
        WireError::BadHeaderChecksum { .. }
    ));

    assert_eq!(
        decode_err(&raw_frame(0x13, 0x02, 0, 0, 0, &[])),
        WireError::MalformedHeader("undefined header flags")
    );
    assert_eq!(
        decode_err(&raw_frame(0x13, 0, 0, 1, 0, &[])),
        WireError::MalformedHeader("reserved header field not zero")
    );
    assert_eq!(
        decode_err(&raw_frame(0x13, 0, 5, 0, 0, &[])),
        WireError::MalformedHeader("volume on a connection-level packet")
    );

    let mut f = enc(&Packet::Barrier { epoch: 1 });
    f[HEADER_LEN] ^= 1;
    assert!(matches!(
        decode_err(&f),
        WireError::BadPayloadChecksum { .. }
    ));
}

#[test]
fn drbd_peers_are_named_in_the_error() {
    let mut f = [0u8; HEADER_LEN];
    f[..4].copy_from_slice(&0x8620_ec20u32.to_be_bytes());
    let e = decode_header(&f).unwrap_err();
    assert!(e.to_string().contains("DRBD kernel peer"), "{e}");
}

#[test]
fn lengths_are_capped_before_the_payload_is_read() {
    // A header claiming 2 MiB of Data: rejected from the header alone.
    let f = raw_frame(0, 0, 0, 0, 2 << 20, &[]);
    assert!(matches!(
        decode_header(&f),
        Err(WireError::TooLong {
            ty: PacketType::Data,
            len: 0x20_0000,
            ..
        })
    ));
    // A Ping that claims a payload.
    let f = raw_frame(0x13, 0, 0, 0, 1, &[]);
    assert!(matches!(
        decode_header(&f),
        Err(WireError::TooLong { max: 0, .. })
    ));
    // A header claiming u32::MAX for an unknown type.
    let f = raw_frame(0x7777, FLAG_MAY_IGNORE, 0, 0, u32::MAX, &[]);
    assert_eq!(
        decode_header(&f),
        Err(WireError::UnknownType {
            ty: 0x7777,
            skip: None
        })
    );
    for &ty in PacketType::ALL {
        assert!(ty.max_payload_len() <= MAX_PAYLOAD_LEN, "{ty:?}");
    }
}

#[test]
fn unknown_types_may_be_skipped_only_when_flagged() {
    let e = decode_err(&raw_frame(0x7777, 0, 0, 0, 3, b"abc"));
    assert_eq!(
        e,
        WireError::UnknownType {
            ty: 0x7777,
            skip: None
        }
    );
    assert!(!e.is_ignorable());
    let e = decode_err(&raw_frame(0x7777, FLAG_MAY_IGNORE, 0, 0, 3, b"abc"));
    assert_eq!(
        e,
        WireError::UnknownType {
            ty: 0x7777,
            skip: Some(3)
        }
    );
    assert!(e.is_ignorable());
    // A known type flagged may-ignore decodes normally.
    let (f, _) = Frame::decode(&raw_frame(0x13, FLAG_MAY_IGNORE, 0, 0, 0, &[])).unwrap();
    assert_eq!(f.packet, Packet::Ping);
}

#[test]
fn a_stream_of_frames_decodes_in_order() {
    let frames = [
        Packet::Ping,
        data_packet(&[7; 1024], &[]),
        Packet::Barrier { epoch: 9 },
    ];
    let mut stream = Vec::new();
    for p in &frames {
        encode(p, &mut stream).unwrap();
    }
    let mut at = 0;
    for p in &frames {
        let h = decode_header(&stream[at..]).unwrap();
        let start = at + Frame::header_len();
        let payload = &stream[start..start + h.payload_len()];
        assert_eq!(&decode_payload(&h, payload).unwrap(), p);
        at = start + h.payload_len();
    }
    assert_eq!(at, stream.len());
}

#[test]
fn decode_payload_bytes_does_not_copy_data() {
    let f = enc(&data_packet(&[3; 4096], &[9; 32]));
    let h = decode_header(&f).unwrap();
    let payload = Bytes::copy_from_slice(&f[HEADER_LEN..]);
    let base = payload.as_ptr() as usize;
    let Packet::Data { data, digest, .. } = decode_payload_bytes(&h, payload.clone()).unwrap()
    else {
        panic!("not data");
    };
    let inside = |b: &Bytes| (base..base + payload.len()).contains(&(b.as_ptr() as usize));
    assert!(inside(&data) && inside(&digest));
}

#[test]
fn a_full_mebibyte_block_fits() {
    let p = data_packet(&vec![0x5A; MAX_DATA_LEN], &[0xEE; MAX_DIGEST_LEN]);
    let f = enc(&p);
    assert!(f.len() <= MAX_FRAME_LEN);
    assert_eq!(Frame::decode(&f).unwrap().0.packet, p);
    let too_big = data_packet(&vec![0; MAX_DATA_LEN + 512], &[]);
    assert!(matches!(
        encode(&too_big, &mut Vec::new()),
        Err(WireError::Malformed { field: "size", .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Field rules, both directions.

fn field_of(e: &WireError) -> (&'static str, FieldError) {
    match e {
        WireError::Malformed { field, error, .. } => (field, *error),
        other => panic!("not a field error: {other:?}"),
    }
}

#[test]
fn encode_refuses_what_decode_would_refuse_and_leaves_out_alone() {
    let hello = |resource: &str, sender: u8, min: u32, max: u32| Packet::Hello {
        protocol_min: min,
        protocol_max: max,
        features: 0,
        sender: NodeId(sender),
        receiver: NodeId(0),
        resource: resource.into(),
    };
    let cases: Vec<(Packet, &str, FieldError)> = vec![
        (hello("", 0, 1, 1), "resource", FieldError::BadValue(0)),
        (hello("a b", 0, 1, 1), "resource", FieldError::NotAscii),
        (hello("ü", 0, 1, 1), "resource", FieldError::NotAscii),
        (
            hello(&"r".repeat(129), 0, 1, 1),
            "resource",
            FieldError::TooLong { len: 129, max: 128 },
        ),
        (hello("r", 32, 1, 1), "sender", FieldError::BadValue(32)),
        (hello("r", 0, 0, 1), "protocol_min", FieldError::BadValue(0)),
        (
            hello("r", 0, 3, 2),
            "protocol_max",
            FieldError::Inconsistent,
        ),
        (
            Packet::AuthChallenge {
                challenge: Bytes::new(),
            },
            "challenge",
            FieldError::BadValue(0),
        ),
        (
            Packet::AuthResponse {
                response: Bytes::from(vec![0; 65]),
            },
            "response",
            FieldError::TooLong { len: 65, max: 64 },
        ),
        (
            Packet::Uuids {
                current: GenUuid(4),
                bitmap: GenUuid(0),
                history: vec![GenUuid(1); 33],
                dirty_bits: 0,
                flags: UuidFlags::empty(),
            },
            "history",
            FieldError::TooLong { len: 33, max: 32 },
        ),
        (
            Packet::Uuids {
                current: GenUuid(4),
                bitmap: GenUuid(0),
                history: vec![],
                dirty_bits: 0,
                flags: UuidFlags(1 << 40),
            },
            "flags",
            FieldError::UnknownBits(1 << 40),
        ),
        (
            Packet::Data {
                sector: Sector(0),
                block_id: 1,
                seq: 1,
                seen: 0,
                flags: DataFlags::DISCARD,
                size: 4096,
                digest: Bytes::new(),
                data: Bytes::from_static(&[0; 512]),
            },
            "data",
            FieldError::Inconsistent,
        ),
        (
            Packet::Data {
                sector: Sector(0),
                block_id: 1,
                seq: 1,
                seen: 0,
                flags: DataFlags::DISCARD | DataFlags::ZEROES,
                size: 4096,
                digest: Bytes::new(),
                data: Bytes::new(),
            },
            "flags",
            FieldError::Inconsistent,
        ),
        (
            Packet::Data {
                sector: Sector(0),
                block_id: 1,
                seq: 1,
                seen: 0,
                flags: DataFlags(2),
                size: 0,
                digest: Bytes::new(),
                data: Bytes::new(),
            },
            "flags",
            FieldError::UnknownBits(2),
        ),
        (
            Packet::Data {
                sector: Sector(0),
                block_id: 1,
                seq: 1,
                seen: 0,
                flags: DataFlags::empty(),
                size: 1024,
                digest: Bytes::new(),
                data: Bytes::from_static(&[0; 512]),
            },
            "data",
            FieldError::Inconsistent,
        ),
        (
            Packet::WriteAck(BlockAck {
                sector: Sector(0),
                block_id: 0,
                size: 100,
                seq: 0,
            }),
            "size",
            FieldError::Misaligned(100),
        ),
        (
            Packet::OutOfSync {
                sector: Sector(u64::MAX),
                size: 512,
            },
            "sector",
            FieldError::BadValue(u64::MAX),
        ),
        (
            Packet::ResyncRequest {
                sector: Sector(0),
                block_id: 0,
                size: 0,
            },
            "size",
            FieldError::BadValue(0),
        ),
        (
            Packet::OvReply {
                sector: Sector(0),
                block_id: 0,
                size: 4096,
                digest: Bytes::new(),
            },
            "digest",
            FieldError::BadValue(0),
        ),
        (
            Packet::ResyncReply {
                sector: Sector(0),
                block_id: 0,
                digest: Bytes::new(),
                data: Bytes::new(),
            },
            "size",
            FieldError::BadValue(0),
        ),
    ];
    for (p, field, error) in cases {
        let mut out = vec![0xCC];
        let e = encode(&p, &mut out).unwrap_err();
        assert_eq!(field_of(&e), (field, error), "{p:?}");
        assert_eq!(out, [0xCC], "encode left bytes behind for {p:?}");
    }
    assert_eq!(
        encode_to(1, &Packet::Ping, &mut Vec::new()),
        Err(WireError::MalformedHeader(
            "volume on a connection-level packet"
        ))
    );
}

#[test]
fn decode_rejects_non_canonical_payloads() {
    let check = |ty: PacketType, payload: &[u8], field: &str, error: FieldError| {
        let e = decode_err(&ok_frame(ty, payload));
        assert_eq!(field_of(&e), (field, error), "{ty:?} {}", hex(payload));
    };
    // A byte after the last field.
    check(
        PacketType::AuthChallenge,
        &[1, 0xAA, 0xBB],
        "payload",
        FieldError::TrailingBytes(1),
    );
    // Undefined role code.
    check(
        PacketType::State,
        &[3, 0, 0, 0, 0, 0, 0],
        "role",
        FieldError::BadValue(3),
    );
    // (Every State flag bit is defined since protocol 4: QUORATE is 0x80.)
    // ProtocolParams: protocol 4, then unknown flag bits.
    check(
        PacketType::ProtocolParams,
        &[4, 0, 0, 0, 0, 0],
        "protocol",
        FieldError::BadValue(4),
    );
    check(
        PacketType::ProtocolParams,
        &[3, 0, 0, 0, 8, 0],
        "flags",
        FieldError::UnknownBits(8),
    );
    // An after-sb-1pri code that only exists for 0pri.
    check(
        PacketType::ProtocolParams,
        &[3, 0, 1, 0, 0, 0],
        "after_sb_1pri",
        FieldError::BadValue(1),
    );
    // A string length pointing past the end.
    check(
        PacketType::ProtocolParams,
        &[3, 0, 0, 0, 0, 5, b'a'],
        "integrity_alg",
        FieldError::Truncated,
    );
    // A history count of 200: refused before anything is allocated.
    let mut u = vec![0u8; 32];
    u.push(200);
    check(
        PacketType::Uuids,
        &u,
        "history",
        FieldError::TooLong { len: 200, max: 32 },
    );
    // A count within the cap but beyond the bytes present.
    let mut u = vec![0u8; 32];
    u.push(3);
    u.extend_from_slice(&[0; 16]);
    check(PacketType::Uuids, &u, "history", FieldError::Truncated);
    // BitmapRle with an undefined flag bit.
    check(
        PacketType::BitmapRle,
        &[0, 0, 0, 0, 2, 1],
        "flags",
        FieldError::UnknownBits(2),
    );
    // OvResult outcome 0.
    let mut ov = vec![0u8; 16];
    ov.extend_from_slice(&512u32.to_be_bytes());
    ov.push(0);
    check(
        PacketType::OvResult,
        &ov,
        "outcome",
        FieldError::BadValue(0),
    );
}

#[test]
fn wire_codes_are_a_bijection() {
    fn check<T: WireCode + std::fmt::Debug>() {
        let mut seen = 0;
        for c in 0..=255u8 {
            if let Some(v) = T::from_code(c) {
                assert_eq!(v.code(), c);
                assert!(T::ALL.contains(&v));
                seen += 1;
            }
        }
        assert_eq!(seen, T::ALL.len());
    }
    check::<Role>();
    check::<DiskState>();
    check::<ConnState>();
    check::<ReplState>();
    check::<Protocol>();
    check::<AfterSb0Pri>();
    check::<AfterSb1Pri>();
    check::<AfterSb2Pri>();
    check::<OvOutcome>();
    for &ty in PacketType::ALL {
        assert_eq!(PacketType::from_u16(ty.code()), Some(ty));
    }
    assert_eq!(DiskState::UpToDate.code(), 9);
    assert_eq!(ConnState::Connected.code(), 9);
    assert_eq!(Protocol::C.code(), 3);
}
