//! Property tests: codec identities, decoders total on arbitrary bytes, and validation never
//! letting a request escape the export.

use super::super::client::*;
use super::super::*;
use super::support::*;
use proptest::prelude::*;

fn any_header() -> impl Strategy<Value = RequestHeader> {
    (
        any::<u16>(),
        prop_oneof![0u16..10, any::<u16>()],
        any::<u64>(),
        prop_oneof![any::<u64>(), (0u64..4096).prop_map(|s| s * 512)],
        prop_oneof![any::<u32>(), (0u32..256).prop_map(|s| s * 512)],
    )
        .prop_map(|(flags, kind, cookie, offset, length)| RequestHeader {
            flags,
            kind,
            cookie,
            offset,
            length,
        })
}

fn any_limits() -> impl Strategy<Value = ExportLimits> {
    (
        prop_oneof![any::<u64>(), (0u64..8192).prop_map(|s| s * 512)],
        (0u32..17).prop_map(|s| 1u32 << s),
        any::<u32>(),
        any::<u16>(),
        any::<bool>(),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(
            |(size, min_block, max_payload, flags, structured, meta_context)| ExportLimits {
                size,
                min_block,
                max_payload,
                flags,
                structured,
                meta_context,
            },
        )
}

proptest! {
    #[test]
    fn request_encode_decode_identity(h in any_header()) {
        prop_assert_eq!(RequestHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn option_header_encode_decode_identity(option in any::<u32>(), length in any::<u32>()) {
        let h = OptionHeader { option, length };
        prop_assert_eq!(OptionHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn validate_never_accepts_outside_the_export(h in any_header(), l in any_limits()) {
        if let Ok(cmd) = validate(&h, &l) {
            let range = match cmd {
                Command::Read { offset, len, .. }
                | Command::Write { offset, len, .. }
                | Command::Trim { offset, len, .. }
                | Command::WriteZeroes { offset, len, .. }
                | Command::BlockStatus { offset, len, .. }
                | Command::Cache { offset, len } => Some((offset, len)),
                Command::Flush | Command::Disc => None,
            };
            if let Some((offset, len)) = range {
                prop_assert!(len > 0);
                let end = offset.checked_add(u64::from(len));
                prop_assert!(end.is_some_and(|e| e <= l.size));
                prop_assert_eq!(offset % u64::from(l.min_block), 0);
                prop_assert_eq!(u64::from(len) % u64::from(l.min_block), 0);
                prop_assert_eq!((offset, len), (h.offset, h.length));
            }
            if let Command::Write { len, .. } | Command::Read { len, .. } = cmd {
                prop_assert!(len <= l.max_payload);
            }
            if matches!(cmd, Command::Write { .. } | Command::Trim { .. } | Command::WriteZeroes { .. }) {
                prop_assert_eq!(l.flags & FLAG_READ_ONLY, 0);
            }
            if let Command::BlockStatus { .. } = cmd {
                prop_assert!(l.meta_context.is_some() && l.structured);
            }
            // DISC is honoured whatever it carries; everything else has only known flags.
            if cmd != Command::Disc {
                prop_assert_eq!(h.flags & !KNOWN_CMD_FLAGS, 0);
            }
        }
    }

    #[test]
    fn rejected_writes_always_resync(h in any_header(), l in any_limits()) {
        if let Err(r) = validate(&h, &l) {
            match r.action {
                RejectAction::Reply => prop_assert_eq!(h.payload_len(), 0),
                RejectAction::DrainThenReply(n) => prop_assert_eq!(n, h.payload_len()),
                RejectAction::Disconnect => prop_assert!(h.payload_len() > (1 << 25)),
            }
        }
    }

    #[test]
    fn decoders_are_total(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = RequestHeader::decode_slice(&data);
        if let Some(b) = data.first_chunk::<OPTION_HEADER_LEN>() {
            let _ = OptionHeader::decode(b);
        }
        if let Some(b) = data.first_chunk::<CLIENT_FLAGS_LEN>() {
            let _ = decode_client_flags(b, SERVER_HANDSHAKE_FLAGS);
        }
        let _ = parse_export_name(&data);
        let _ = parse_info_request(&data);
        let _ = parse_meta_context_request(&data);
        let _ = decode_greeting(&data);
        let _ = decode_option_replies(&data);
        let _ = decode_info_reply(&data);
        let _ = decode_rep_server(&data);
        let _ = decode_rep_meta_context(&data);
        let _ = decode_export_name_reply(&data, false);
        let _ = decode_export_name_reply(&data, true);
        let _ = decode_reply_header(&data);
        for kind in [0u16, 1, 2, 5, 0x8001, 0x8002, 7] {
            let _ = decode_chunk(kind, &data);
        }
        fuzz_options(&data);
        fuzz_requests(&data);
    }

    #[test]
    fn negotiation_with_random_options_always_answers_decodably(
        script in proptest::collection::vec(
            (0u32..13, proptest::collection::vec(any::<u8>(), 0..48)),
            0..12,
        )
    ) {
        let cat = TestCatalog::default();
        let mut n = neg(&cat);
        for (opt, payload) in script {
            let out = n.handle_option(opt, &payload);
            match out.next {
                Next::Continue => {
                    let reps = decode_option_replies(&out.reply);
                    prop_assert!(reps.is_ok());
                    let reps = reps.unwrap_or_default();
                    prop_assert!(!reps.is_empty());
                    prop_assert!(reps.iter().all(|r| r.option == opt));
                }
                // TLS is not offered here.
                Next::StartTls => prop_assert!(false, "STARTTLS accepted without TLS"),
                Next::Transmission(t) => {
                    prop_assert!(opt == OPT_GO || opt == OPT_EXPORT_NAME);
                    prop_assert!(t.meta_context.is_none() || t.structured);
                    break;
                }
                Next::Close(_) => break,
            }
        }
    }

    #[test]
    fn fuzz_entry_points_survive_prefixed_handshakes(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        // A valid handshake that reaches transmission, followed by arbitrary request bytes.
        let mut data = 3u32.to_be_bytes().to_vec();
        encode_option(&mut data, OPT_STRUCTURED_REPLY, &[]);
        encode_option(&mut data, OPT_SET_META_CONTEXT, &meta_context_payload("r0", &[BASE_ALLOCATION]));
        encode_option(&mut data, OPT_GO, &info_request_payload("r0", &[]));
        data.extend_from_slice(&tail);
        fuzz_options(&data);
    }
}
