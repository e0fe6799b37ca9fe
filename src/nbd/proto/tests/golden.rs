//! Byte-for-byte checks against the layouts in `doc/proto.md`, written out by hand from the spec
//! rather than from the encoders.

use super::super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn greeting_is_nbdmagic_ihaveopt_fixed_newstyle_no_zeroes() {
    // "S: 64 bits, 0x4e42444d41474943 ... S: 64 bits, 0x49484156454F5054 ... S: 16 bits,
    // handshake flags" with bit 0 FIXED_NEWSTYLE and bit 1 NO_ZEROES.
    assert_eq!(
        server_greeting().to_vec(),
        hex("4e42444d41474943 49484156454f5054 0003")
    );
    assert_eq!(&server_greeting()[..8], b"NBDMAGIC");
    assert_eq!(&server_greeting()[8..16], b"IHAVEOPT");
}

#[test]
fn rep_info_export_layout() {
    // Option reply: magic 0x3e889045565a9, option (GO = 7), type NBD_REP_INFO (3), length 12,
    // then u16 NBD_INFO_EXPORT (0), u64 size, u16 transmission flags.
    let mut out = Vec::new();
    encode_info_export(&mut out, OPT_GO, 0x4000_0000, 0x014d);
    assert_eq!(
        out,
        hex("0003e889045565a9 00000007 00000003 0000000c  0000 0000000040000000 014d")
    );
}

#[test]
fn rep_info_block_size_layout() {
    let mut out = Vec::new();
    encode_info_block_size(&mut out, OPT_INFO, BlockSizes::default());
    assert_eq!(
        out,
        hex("0003e889045565a9 00000006 00000003 0000000e  0003 00000200 00001000 02000000")
    );
}

#[test]
fn block_status_chunk_layout() {
    // Structured chunk: magic 0x668e33ef, flags (DONE), type 5, cookie, length 4 + 8n, then
    // u32 context id and (u32 length, u32 flags) per extent.
    let mut out = Vec::new();
    let ext = [
        Extent {
            length: 4096,
            flags: STATE_HOLE | STATE_ZERO,
        },
        Extent {
            length: 8192,
            flags: 0,
        },
    ];
    reply::block_status_chunk(&mut out, 0x0102_0304_0506_0708, 1, &ext, true);
    assert_eq!(
        out,
        hex(
            "668e33ef 0001 0005 0102030405060708 00000014  00000001 00001000 00000003 00002000 00000000"
        )
    );
}

#[test]
fn request_header_layout() {
    // magic 0x25609513, u16 flags, u16 type, u64 cookie, u64 offset, u32 length.
    let req = RequestHeader {
        flags: CMD_FLAG_FUA,
        kind: CMD_WRITE,
        cookie: 0xdead_beef_0000_0001,
        offset: 0x1000,
        length: 0x200,
    };
    let want = hex("25609513 0001 0001 deadbeef00000001 0000000000001000 00000200");
    assert_eq!(req.encode().to_vec(), want);
    assert_eq!(RequestHeader::decode_slice(&want), Ok(req));
}

#[test]
fn simple_reply_and_none_chunk_layout() {
    assert_eq!(
        reply::simple_reply(7, Some(Errno::NoSpc)).to_vec(),
        hex("67446698 0000001c 0000000000000007")
    );
    assert_eq!(
        reply::simple_reply(7, None).to_vec(),
        hex("67446698 00000000 0000000000000007")
    );
    assert_eq!(
        reply::none_chunk(9).to_vec(),
        hex("668e33ef 0001 0000 0000000000000009 00000000")
    );
}

#[test]
fn offset_data_and_hole_layout() {
    assert_eq!(
        reply::offset_data_header(3, 0x200, 0x1000, false).to_vec(),
        hex("668e33ef 0000 0001 0000000000000003 00001008 0000000000000200")
    );
    assert_eq!(
        reply::offset_hole(3, 0x200, 0x1000, true).to_vec(),
        hex("668e33ef 0001 0002 0000000000000003 0000000c 0000000000000200 00001000")
    );
}

#[test]
fn error_chunks_layout() {
    let mut out = Vec::new();
    reply::error_chunk(&mut out, 1, Errno::Io, "bad", true);
    assert_eq!(
        out,
        hex("668e33ef 0001 8001 0000000000000001 00000009 00000005 0003 626164")
    );
    out.clear();
    reply::error_offset_chunk(&mut out, 1, Errno::Io, 0x400, "x", false);
    assert_eq!(
        out,
        hex("668e33ef 0000 8002 0000000000000001 0000000f 00000005 0001 78 0000000000000400")
    );
}

#[test]
fn export_name_reply_with_and_without_zeroes() {
    let mut out = Vec::new();
    encode_export_name_reply(&mut out, 0x10_0000, 0x0003, true);
    assert_eq!(out, hex("0000000000100000 0003"));
    out.clear();
    encode_export_name_reply(&mut out, 0x10_0000, 0x0003, false);
    assert_eq!(out.len(), 8 + 2 + 124);
    assert!(out[10..].iter().all(|&b| b == 0));
}

#[test]
fn option_header_and_error_reply_layout() {
    let hdr = OptionHeader {
        option: OPT_GO,
        length: 0x12,
    };
    assert_eq!(
        hdr.encode().to_vec(),
        hex("49484156454f5054 00000007 00000012")
    );
    let mut out = Vec::new();
    encode_rep_error(&mut out, OPT_LIST, RepError::Invalid, "no");
    assert_eq!(out, hex("0003e889045565a9 00000003 80000003 00000002 6e6f"));
}

#[test]
fn constants_match_the_spec() {
    assert_eq!(OPTION_REPLY_MAGIC, 0x3e889045565a9);
    assert_eq!(REP_ERR_UNSUP, 0x8000_0001);
    assert_eq!(REP_ERR_TOO_BIG, 0x8000_0009);
    assert_eq!(REP_ERR_EXT_HEADER_REQD, 0x8000_000a);
    assert_eq!(REPLY_TYPE_ERROR, 0x8001);
    assert_eq!(REPLY_TYPE_ERROR_OFFSET, 0x8002);
    assert_eq!(FLAG_SEND_FAST_ZERO, 1 << 11);
    assert_eq!(CMD_FLAG_FAST_ZERO, 1 << 4);
    assert_eq!(
        [
            EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN
        ],
        [1, 5, 12, 22, 28, 75, 95, 108]
    );
    for e in [
        Errno::Perm,
        Errno::Io,
        Errno::NoMem,
        Errno::Inval,
        Errno::NoSpc,
        Errno::Overflow,
        Errno::NotSup,
        Errno::Shutdown,
    ] {
        assert_eq!(Errno::from_code(e.code()), Some(e));
    }
    for code in REP_ERR_UNSUP..=REP_ERR_EXT_HEADER_REQD {
        assert_eq!(RepError::from_code(code).map(RepError::code), Some(code));
    }
}
