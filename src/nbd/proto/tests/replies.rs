//! Server reply encoders against the client decoders.

use super::super::client::*;
use super::super::*;

fn chunk(bytes: &[u8]) -> (u16, u16, u64, Chunk<'_>) {
    let (hdr, used) = decode_reply_header(bytes).expect("header");
    let ReplyHeader::Chunk {
        flags,
        kind,
        cookie,
        length,
    } = hdr
    else {
        panic!("not a chunk: {hdr:?}");
    };
    let payload = &bytes[used..];
    assert_eq!(payload.len(), length as usize);
    (
        flags,
        kind,
        cookie,
        decode_chunk(kind, payload).expect("chunk"),
    )
}

#[test]
fn offset_data_header_then_data() {
    let data = vec![0xab; 4096];
    let mut wire = reply::offset_data_header(5, 8192, 4096, true).to_vec();
    wire.extend_from_slice(&data);
    let (flags, _, cookie, c) = chunk(&wire);
    assert_eq!((flags, cookie), (REPLY_FLAG_DONE, 5));
    assert_eq!(
        c,
        Chunk::OffsetData {
            offset: 8192,
            data: &data
        }
    );
}

#[test]
fn hole_block_status_errors_and_none_round_trip() {
    let hole = reply::offset_hole(1, 0, 512, false);
    assert_eq!(
        chunk(&hole).3,
        Chunk::OffsetHole {
            offset: 0,
            len: 512
        }
    );

    let mut bs = Vec::new();
    let ext = [Extent {
        length: 512,
        flags: STATE_ZERO,
    }];
    reply::block_status_chunk(&mut bs, 2, 1, &ext, true);
    assert_eq!(
        chunk(&bs).3,
        Chunk::BlockStatus {
            context_id: 1,
            extents: ext.to_vec()
        }
    );

    let mut e = Vec::new();
    reply::error_chunk(&mut e, 3, Errno::Io, "disk failed", true);
    assert_eq!(
        chunk(&e).3,
        Chunk::Error {
            error: EIO,
            message: "disk failed".into()
        }
    );

    let mut e = Vec::new();
    reply::error_offset_chunk(&mut e, 3, Errno::Io, 4096, "here", false);
    assert_eq!(
        chunk(&e).3,
        Chunk::ErrorOffset {
            error: EIO,
            message: "here".into(),
            offset: 4096
        }
    );

    let none = reply::none_chunk(4);
    let (flags, kind, cookie, c) = chunk(&none);
    assert_eq!(
        (flags, kind, cookie, c),
        (REPLY_FLAG_DONE, REPLY_TYPE_NONE, 4, Chunk::None)
    );
}

#[test]
fn error_reply_form_follows_structured_negotiation() {
    let mut out = Vec::new();
    reply::error_reply(&mut out, false, 9, Errno::Inval, "ignored");
    assert_eq!(
        decode_reply_header(&out),
        Ok((
            ReplyHeader::Simple {
                error: EINVAL,
                cookie: 9
            },
            16
        ))
    );
    out.clear();
    reply::error_reply(&mut out, true, 9, Errno::Inval, "misaligned");
    let (flags, _, cookie, c) = chunk(&out);
    assert_eq!((flags, cookie), (REPLY_FLAG_DONE, 9));
    assert_eq!(
        c,
        Chunk::Error {
            error: EINVAL,
            message: "misaligned".into()
        }
    );
}

#[test]
fn long_messages_are_capped_at_4096_bytes_on_a_char_boundary() {
    let msg = "é".repeat(3000); // 6000 bytes
    let mut out = Vec::new();
    reply::error_chunk(&mut out, 1, Errno::Io, &msg, true);
    let Chunk::Error { message, .. } = chunk(&out).3 else {
        panic!("error chunk");
    };
    assert_eq!(message.len(), 4096);
    let mut out = Vec::new();
    encode_rep_error(&mut out, OPT_GO, RepError::Policy, &msg);
    let reps = decode_option_replies(&out).expect("replies");
    assert_eq!(reps[0].data.len(), 4096);
}

#[test]
fn chunk_decoder_rejects_bad_lengths() {
    assert!(decode_chunk(REPLY_TYPE_NONE, &[0]).is_err());
    assert!(decode_chunk(REPLY_TYPE_OFFSET_DATA, &[0; 8]).is_err());
    assert!(decode_chunk(REPLY_TYPE_OFFSET_HOLE, &[0; 13]).is_err());
    assert!(decode_chunk(REPLY_TYPE_OFFSET_HOLE, &[0; 12]).is_err()); // zero-size hole
    assert!(decode_chunk(REPLY_TYPE_BLOCK_STATUS, &[0; 4]).is_err());
    assert!(decode_chunk(REPLY_TYPE_BLOCK_STATUS, &[0; 13]).is_err());
    assert!(decode_chunk(REPLY_TYPE_ERROR, &[0, 0, 0, 5, 0, 9, b'x']).is_err());
    assert!(matches!(
        decode_chunk(0x8123, b"?"),
        Ok(Chunk::Unknown { kind: 0x8123, .. })
    ));
}

#[test]
fn greeting_decodes_client_side() {
    assert_eq!(
        decode_greeting(&server_greeting()),
        Ok(SERVER_HANDSHAKE_FLAGS)
    );
    let mut g = server_greeting();
    g[15] = 0;
    assert!(matches!(
        decode_greeting(&g),
        Err(ClientError::BadMagic { .. })
    ));
    assert_eq!(
        encode_client_flags(ClientFlags {
            fixed_newstyle: true,
            no_zeroes: true
        }),
        [0, 0, 0, 3]
    );
}
