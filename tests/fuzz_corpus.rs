//! Replays every fuzz corpus file through the same entry points the cargo-fuzz targets use, on the
//! stable toolchain, so a crash the fuzzer once found (and saved) stays fixed.
//! Run the fuzzers themselves by hand: `cargo +nightly fuzz run config` (see the README).

use std::path::Path;

fn replay(target: &str, decode: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        if path.is_file() {
            let data = std::fs::read(&path).expect("corpus file");
            decode(&data);
            n += 1;
        }
    }
    assert!(n > 0, "fuzz corpus {target} is empty: seed it");
}

#[test]
fn config_corpus() {
    replay("config", udrbd::fuzzing::config);
}

#[test]
fn superblock_corpus() {
    replay("superblock", udrbd::fuzzing::superblock);
}

#[test]
fn al_corpus() {
    replay("al", udrbd::fuzzing::al);
}

#[test]
fn bitmap_page_corpus() {
    replay("bitmap_page", udrbd::fuzzing::bitmap_page);
}

#[test]
fn bitmap_rle_corpus() {
    replay("bitmap_rle", udrbd::fuzzing::bitmap_rle);
}

#[test]
fn repl_wire_corpus() {
    replay("repl_wire", udrbd::fuzzing::wire);
}

/// Writes the seed corpus for the `repl_wire` target. The first byte of a seed picks the mode of
/// `udrbd::repl::wire::fuzz_decode`: 0 = a stream of frames, 1 = a type and a bare payload (CRCs
/// bypassed, so the fuzzer reaches the payload parsers). Run by hand after a format change:
/// `cargo test --test fuzz_corpus -- --ignored write_repl_wire_seeds`.
#[test]
#[ignore]
fn write_repl_wire_seeds() {
    use bytes::Bytes;
    use udrbd::repl::wire::{self, BlockAck, DataFlags, Packet, UuidFlags, features};
    use udrbd::types::{GenUuid, NodeId, Sector};

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/repl_wire");
    std::fs::create_dir_all(&dir).unwrap();
    let put = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    let frame = |p: &Packet| {
        let mut f = Vec::new();
        wire::encode(p, &mut f).unwrap();
        f
    };
    let stream = |ps: &[Packet]| {
        let mut s = vec![0u8];
        for p in ps {
            s.extend_from_slice(&frame(p));
        }
        s
    };
    let body = |p: &Packet| {
        let mut s = vec![1u8];
        s.extend_from_slice(&p.packet_type().code().to_be_bytes());
        s.extend_from_slice(&frame(p)[wire::HEADER_LEN..]);
        s
    };

    let hello = Packet::Hello {
        protocol_min: wire::PROTOCOL_MIN,
        protocol_max: wire::PROTOCOL_MAX,
        features: features::SUPPORTED,
        sender: NodeId(0),
        receiver: NodeId(1),
        resource: "r0".into(),
    };
    let uuids = Packet::Uuids {
        current: GenUuid(0x1234_5678_9ABC_DEF1),
        bitmap: GenUuid(0),
        history: vec![GenUuid(0xAAAA), GenUuid(4)],
        dirty_bits: 12,
        flags: UuidFlags::CRASHED_PRIMARY,
    };
    let data = Packet::Data {
        sector: Sector(2048),
        block_id: 77,
        seq: 3,
        seen: 2,
        flags: DataFlags::FUA | DataFlags::SEND_WRITE_ACK,
        size: 1024,
        digest: Bytes::from_static(&[0xD1; 20]),
        data: Bytes::from(vec![0x5A; 1024]),
    };
    let trim = Packet::Data {
        sector: Sector(0),
        block_id: 78,
        seq: 4,
        seen: 2,
        flags: DataFlags::DISCARD,
        size: 1 << 20,
        digest: Bytes::new(),
        data: Bytes::new(),
    };
    let ack = Packet::WriteAck(BlockAck {
        sector: Sector(2048),
        block_id: 77,
        size: 1024,
        seq: 3,
    });
    let handshake = stream(&[
        hello.clone(),
        Packet::AuthChallenge {
            challenge: Bytes::from_static(&[7; 64]),
        },
        uuids.clone(),
        Packet::Ping,
        Packet::PingAck,
    ]);
    // The valid seeds must really get past the header checks, or they seed nothing.
    let decodes_fully = |s: &[u8]| {
        let mut buf = &s[1..];
        while !buf.is_empty() {
            let (_, used) = wire::Frame::decode(buf).expect("seed frame decodes");
            buf = &buf[used..];
        }
    };
    decodes_fully(&handshake);
    put("valid_handshake", &handshake);
    let io = stream(&[
        data.clone(),
        trim.clone(),
        ack.clone(),
        Packet::Superseded(BlockAck {
            sector: Sector(2048),
            block_id: 79,
            size: 512,
            seq: 5,
        }),
        Packet::RetryWrite {
            ack: BlockAck {
                sector: Sector(4096),
                block_id: 80,
                size: 4096,
                seq: 6,
            },
            after: 9,
        },
        Packet::Barrier { epoch: 1 },
        Packet::BarrierAck {
            epoch: 1,
            set_size: 2,
        },
        Packet::PeerAck { seq: 6 },
    ]);
    decodes_fully(&io);
    put("valid_io", &io);
    let resync = stream(&[
        Packet::BitmapRle {
            chunk: 0,
            last: true,
            data: Bytes::from_static(&[1, 0x80, 0x08, 0, 0x80, 0x08]),
        },
        Packet::ResyncRequest {
            sector: Sector(8),
            block_id: 5,
            size: 4096,
        },
        Packet::ResyncReply {
            sector: Sector(8),
            block_id: 5,
            digest: Bytes::new(),
            data: Bytes::from(vec![1; 4096]),
        },
        Packet::SyncUuid {
            uuid: GenUuid(0x42),
        },
        Packet::CurrentUuid {
            uuid: GenUuid(0x43),
            weak: 0b10,
        },
        Packet::Disconnect,
    ]);
    decodes_fully(&resync);
    put("valid_resync", &resync);
    for (name, p) in [
        ("body_hello", &hello),
        ("body_uuids", &uuids),
        ("body_data", &data),
        ("body_trim", &trim),
        ("body_ack", &ack),
    ] {
        put(name, &body(p));
    }
    let mut bad_crc = handshake.clone();
    bad_crc[1 + wire::HEADER_LEN + 3] ^= 0x40;
    put("bad_payload_crc", &bad_crc);
    let mut bad_len = handshake.clone();
    bad_len[1 + 14] ^= 0x01;
    put("bad_header_crc", &bad_len);
    put("bad_truncated", &handshake[..handshake.len() - 3]);
    let mut drbd = vec![0u8; 1 + 16];
    drbd[1..5].copy_from_slice(&0x8620_ec20u32.to_be_bytes());
    put("bad_drbd_magic", &drbd);
    let mut bad_body = body(&uuids);
    // History count 200: over the cap.
    bad_body[3 + 32] = 200;
    put("bad_body_history_count", &bad_body);
}

#[test]
fn ctl_request_corpus() {
    replay("ctl_request", udrbd::fuzzing::ctl_request);
}

#[test]
fn peer_handshake_corpus() {
    replay("peer_handshake", udrbd::fuzzing::peer_handshake);
}

/// Writes the seed corpus for the `peer_handshake` target: byte 0 bit 0 turns CRAM-HMAC on, the
/// rest is what a dialer (node 1, for resource r0, to node 0) sends. Run by hand after a format
/// change: `cargo test --test fuzz_corpus -- --ignored write_peer_handshake_seeds`.
#[test]
#[ignore]
fn write_peer_handshake_seeds() {
    use udrbd::net::connect::{HELLO_AUTH, HELLO_CONTROL_STREAM};
    use udrbd::repl::wire::{self, Packet, features};
    use udrbd::types::NodeId;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/peer_handshake");
    std::fs::create_dir_all(&dir).unwrap();
    let put = |name: &str, mode: u8, ps: &[Packet]| {
        let mut s = vec![mode];
        for p in ps {
            wire::encode(p, &mut s).unwrap();
        }
        std::fs::write(dir.join(name), s).unwrap();
    };
    let hello = |features: u64, resource: &str, sender: u8| Packet::Hello {
        protocol_min: wire::PROTOCOL_MIN,
        protocol_max: wire::PROTOCOL_MAX,
        features,
        sender: NodeId(sender),
        receiver: NodeId(0),
        resource: resource.into(),
    };
    put("hello", 0, &[hello(features::SUPPORTED, "r0", 1)]);
    put(
        "hello_control",
        0,
        &[hello(features::SUPPORTED | HELLO_CONTROL_STREAM, "r0", 1)],
    );
    put(
        "hello_wrong_resource",
        0,
        &[hello(features::SUPPORTED, "r1", 1)],
    );
    put(
        "hello_wrong_node",
        0,
        &[hello(features::SUPPORTED, "r0", 2)],
    );
    put(
        "hello_auth_one_sided",
        0,
        &[hello(features::SUPPORTED | HELLO_AUTH, "r0", 1)],
    );
    put(
        "auth_exchange",
        1,
        &[
            hello(features::SUPPORTED | HELLO_AUTH, "r0", 1),
            Packet::AuthChallenge {
                challenge: vec![7; 64].into(),
            },
            Packet::AuthResponse {
                response: vec![9; 32].into(),
            },
        ],
    );
    put(
        "auth_reflected",
        1,
        &[
            hello(features::SUPPORTED | HELLO_AUTH, "r0", 1),
            Packet::AuthChallenge {
                challenge: vec![0; 64].into(),
            },
        ],
    );
    put("garbage", 0, &[]);
    std::fs::write(
        dir.join("tls_client_hello"),
        [0u8, 0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0],
    )
    .unwrap();
}
