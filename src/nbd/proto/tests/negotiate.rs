//! Option haggling, one spec rule per test.

use super::super::client::*;
use super::super::*;
use super::support::*;

fn go(name: &str, infos: &[u16]) -> Vec<u8> {
    info_request_payload(name, infos)
}

#[test]
fn client_flags_reject_unknown_bits_and_unadvertised_no_zeroes() {
    assert_eq!(
        decode_client_flags(&3u32.to_be_bytes(), SERVER_HANDSHAKE_FLAGS),
        Ok(ClientFlags {
            fixed_newstyle: true,
            no_zeroes: true
        })
    );
    assert_eq!(
        decode_client_flags(&0u32.to_be_bytes(), SERVER_HANDSHAKE_FLAGS),
        Ok(ClientFlags::default())
    );
    assert_eq!(
        decode_client_flags(&5u32.to_be_bytes(), SERVER_HANDSHAKE_FLAGS),
        Err(HandshakeError::UnknownClientFlags(4))
    );
    assert_eq!(
        decode_client_flags(&2u32.to_be_bytes(), FLAG_FIXED_NEWSTYLE),
        Err(HandshakeError::UnadvertisedClientFlag(FLAG_C_NO_ZEROES))
    );
}

#[test]
fn option_header_checks_magic_and_plans_payload() {
    let mut b = OptionHeader {
        option: OPT_GO,
        length: 10,
    }
    .encode();
    assert_eq!(
        OptionHeader::decode(&b),
        Ok(OptionHeader {
            option: OPT_GO,
            length: 10
        })
    );
    b[0] ^= 1;
    assert!(matches!(
        OptionHeader::decode(&b),
        Err(HandshakeError::BadOptionMagic(_))
    ));
    let plan = |option, length| OptionHeader { option, length }.plan(DEFAULT_MAX_OPTION_LEN);
    assert_eq!(plan(OPT_GO, 65536), PayloadPlan::Read(65536));
    assert_eq!(plan(OPT_GO, 65537), PayloadPlan::Discard(65537));
    assert_eq!(
        plan(OPT_GO, OPTION_DISCARD_LIMIT + 1),
        PayloadPlan::Disconnect
    );
    // EXPORT_NAME cannot be answered with an error: oversize means drop.
    assert_eq!(plan(OPT_EXPORT_NAME, 65537), PayloadPlan::Disconnect);
}

#[test]
fn oversize_option_gets_too_big_and_negotiation_continues() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    let out = n.handle_oversize(OPT_GO);
    assert_eq!(types(&out), vec![REP_ERR_TOO_BIG]);
    assert_eq!(out.next, Next::Continue);
}

#[test]
fn structured_reply_rules() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    // With data: NBD_REP_ERR_INVALID, and not negotiated.
    let out = n.handle_option(OPT_STRUCTURED_REPLY, &[0]);
    assert_eq!(types(&out), vec![REP_ERR_INVALID]);
    assert!(!n.structured());
    // First time: ACK.
    structured(&mut n);
    assert!(n.structured());
    // Twice: INVALID.
    let out = n.handle_option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(types(&out), vec![REP_ERR_INVALID]);
    assert_eq!(out.next, Next::Continue);
}

#[test]
fn set_meta_context_requires_structured_replies() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    let p = meta_context_payload("r0", &["base:allocation"]);
    assert_eq!(
        types(&n.handle_option(OPT_SET_META_CONTEXT, &p)),
        vec![REP_ERR_INVALID]
    );
    assert_eq!(
        types(&n.handle_option(OPT_LIST_META_CONTEXT, &p)),
        vec![REP_ERR_INVALID]
    );
    structured(&mut n);
    let out = n.handle_option(OPT_SET_META_CONTEXT, &p);
    let reps = replies(&out);
    assert_eq!(types(&out), vec![REP_META_CONTEXT, REP_ACK]);
    assert_eq!(
        decode_rep_meta_context(&reps[0].data),
        Ok((BASE_ALLOCATION_ID, BASE_ALLOCATION.to_owned()))
    );
    let t = transmission(n.handle_option(OPT_GO, &go("r0", &[])));
    assert_eq!(t.meta_context, Some(BASE_ALLOCATION_ID));
    assert!(t.structured);
}

#[test]
fn set_meta_context_ignores_wildcards_and_unknown_contexts() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    structured(&mut n);
    for q in [
        &["base:"][..],
        &["qemu:dirty-bitmap:x", "base:nope", "nocolon"],
        &[],
    ] {
        let out = n.handle_option(OPT_SET_META_CONTEXT, &meta_context_payload("r0", q));
        assert_eq!(types(&out), vec![REP_ACK], "queries {q:?}");
    }
    let t = transmission(n.handle_option(OPT_GO, &go("r0", &[])));
    assert_eq!(t.meta_context, None);
}

#[test]
fn list_meta_context_lists_base_allocation_for_base_wildcard_and_empty_query() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    structured(&mut n);
    for q in [&["base:"][..], &[], &["base:allocation", "base:"]] {
        let out = n.handle_option(OPT_LIST_META_CONTEXT, &meta_context_payload("r0", q));
        let reps = replies(&out);
        assert_eq!(types(&out), vec![REP_META_CONTEXT, REP_ACK], "{q:?}");
        // The id is reserved (zero) in LIST replies.
        assert_eq!(
            decode_rep_meta_context(&reps[0].data),
            Ok((0, BASE_ALLOCATION.to_owned()))
        );
    }
    let out = n.handle_option(
        OPT_LIST_META_CONTEXT,
        &meta_context_payload("r0", &["x-foo:"]),
    );
    assert_eq!(types(&out), vec![REP_ACK]);
    // LIST does not select anything.
    let t = transmission(n.handle_option(OPT_GO, &go("r0", &[])));
    assert_eq!(t.meta_context, None);
}

#[test]
fn meta_context_for_another_export_is_not_used() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    structured(&mut n);
    n.handle_option(
        OPT_SET_META_CONTEXT,
        &meta_context_payload("ro", &[BASE_ALLOCATION]),
    );
    let t = transmission(n.handle_option(OPT_GO, &go("r0", &[])));
    assert_eq!(t.meta_context, None);
}

#[test]
fn failed_set_meta_context_clears_the_previous_selection() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    structured(&mut n);
    let ok = meta_context_payload("r0", &[BASE_ALLOCATION]);
    assert_eq!(
        types(&n.handle_option(OPT_SET_META_CONTEXT, &ok)),
        vec![REP_META_CONTEXT, REP_ACK]
    );
    // Malformed second SET: INVALID, and the earlier selection is gone ("including when this
    // command fails").
    assert_eq!(
        types(&n.handle_option(OPT_SET_META_CONTEXT, &ok[..ok.len() - 1])),
        vec![REP_ERR_INVALID]
    );
    let t = transmission(n.handle_option(OPT_GO, &go("r0", &[])));
    assert_eq!(t.meta_context, None);
}

#[test]
fn meta_context_for_unknown_export_is_an_error() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    structured(&mut n);
    let out = n.handle_option(
        OPT_SET_META_CONTEXT,
        &meta_context_payload("nope", &[BASE_ALLOCATION]),
    );
    assert_eq!(types(&out), vec![REP_ERR_UNKNOWN]);
}

#[test]
fn go_sends_info_export_and_block_size_unrequested_then_ack_and_enters_transmission() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    let out = n.handle_option(OPT_GO, &go("r0", &[]));
    let reps = replies(&out);
    assert_eq!(types(&out), vec![REP_INFO, REP_INFO, REP_ACK]);
    assert!(reps.iter().all(|r| r.option == OPT_GO));
    let flags = effective_flags(R0_FLAGS, false);
    assert_eq!(
        decode_info_reply(&reps[0].data),
        Ok(InfoReply::Export {
            size: R0_SIZE,
            flags
        })
    );
    assert_eq!(
        decode_info_reply(&reps[1].data),
        Ok(InfoReply::BlockSize(BlockSizes {
            min: 512,
            preferred: 4096,
            max: 32 << 20
        }))
    );
    let t = transmission(out);
    assert_eq!(t.export, "r0");
    assert_eq!(t.size, R0_SIZE);
    assert_eq!(t.flags, flags);
    assert!(!t.structured);
    assert!(!t.block_size_requested);
    assert!(!t.via_export_name);
    assert_eq!(*cat.lookups.borrow(), vec![("r0".to_owned(), Purpose::Go)]);
}

#[test]
fn go_sends_name_and_description_when_requested() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    let out = n.handle_option(
        OPT_GO,
        &go("", &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE, 999]),
    );
    let infos: Vec<_> = replies(&out)
        .iter()
        .filter(|r| r.reply_type == REP_INFO)
        .map(|r| decode_info_reply(&r.data).expect("info"))
        .collect();
    assert!(infos.contains(&InfoReply::Name("r0".into())));
    assert!(infos.contains(&InfoReply::Description("replicated r0".into())));
    assert!(infos.iter().any(|i| matches!(i, InfoReply::Export { .. })));
    assert_eq!(
        infos
            .iter()
            .filter(|i| matches!(i, InfoReply::BlockSize(_)))
            .count(),
        1
    );
    let t = transmission(out);
    assert!(t.block_size_requested);
    assert_eq!(t.requested_name, "");
    assert_eq!(t.export, "r0");
}

#[test]
fn info_probes_without_ending_negotiation() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    let out = n.handle_option(OPT_INFO, &go("sec", &[INFO_BLOCK_SIZE]));
    assert_eq!(types(&out), vec![REP_INFO, REP_INFO, REP_ACK]);
    assert_eq!(out.next, Next::Continue);
    assert_eq!(
        *cat.lookups.borrow(),
        vec![("sec".to_owned(), Purpose::Info)]
    );
}

#[test]
fn refused_go_carries_the_catalogs_error_and_message_and_continues() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    let out = n.handle_option(OPT_GO, &go("sec", &[]));
    let reps = replies(&out);
    assert_eq!(types(&out), vec![REP_ERR_POLICY]);
    assert_eq!(String::from_utf8_lossy(&reps[0].data), SECONDARY_MSG);
    assert_eq!(out.next, Next::Continue);
    let out = n.handle_option(OPT_GO, &go("nope", &[]));
    assert_eq!(types(&out), vec![REP_ERR_UNKNOWN]);
    // Still negotiating: a good GO works afterwards.
    transmission(n.handle_option(OPT_GO, &go("r0", &[])));
}

#[test]
fn malformed_go_is_invalid_and_never_reaches_the_catalog() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    let mut p = go("r0", &[INFO_NAME]);
    p.push(0);
    assert_eq!(types(&n.handle_option(OPT_GO, &p)), vec![REP_ERR_INVALID]);
    assert_eq!(
        types(&n.handle_option(OPT_GO, &p[..p.len() - 2])),
        vec![REP_ERR_INVALID]
    );
    assert!(cat.lookups.borrow().is_empty());
}

#[test]
fn df_is_advertised_exactly_with_structured_replies() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    let t = transmission(n.handle_option(OPT_GO, &go("r0", &[])));
    assert_eq!(t.flags & FLAG_SEND_DF, 0);
    assert_ne!(t.flags & FLAG_HAS_FLAGS, 0);
    let mut n = neg(&cat);
    structured(&mut n);
    let t = transmission(n.handle_option(OPT_GO, &go("r0", &[])));
    assert_ne!(t.flags & FLAG_SEND_DF, 0);
    assert_eq!(
        effective_flags(FLAG_SEND_FAST_ZERO, true) & FLAG_SEND_FAST_ZERO,
        0
    );
}

#[test]
fn list_rules() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    assert_eq!(
        types(&n.handle_option(OPT_LIST, b"x")),
        vec![REP_ERR_INVALID]
    );
    let out = n.handle_option(OPT_LIST, &[]);
    let reps = replies(&out);
    assert_eq!(types(&out), vec![REP_SERVER, REP_SERVER, REP_ACK]);
    assert_eq!(
        decode_rep_server(&reps[0].data),
        Ok(("r0".into(), "replicated r0".into()))
    );
    assert_eq!(
        decode_rep_server(&reps[1].data),
        Ok(("sec".into(), String::new()))
    );
    // LIST never looks anything up (so it cannot promote).
    assert!(cat.lookups.borrow().is_empty());
}

#[test]
fn abort_acks_and_closes() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    let out = n.handle_option(OPT_ABORT, b"ignored");
    assert_eq!(types(&out), vec![REP_ACK]);
    assert_eq!(out.next, Next::Close(CloseReason::Abort));
    let again = n.handle_option(OPT_LIST, &[]);
    assert!(again.reply.is_empty());
    assert_eq!(again.next, Next::Close(CloseReason::AlreadyFinished));
}

#[test]
fn unknown_and_unsupported_options_get_unsup_and_continue() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    for opt in [
        OPT_PEEK_EXPORT,
        OPT_STARTTLS,
        OPT_EXTENDED_HEADERS,
        12,
        0,
        0xdead_beef,
    ] {
        let out = n.handle_option(opt, b"whatever");
        let reps = replies(&out);
        assert_eq!(types(&out), vec![REP_ERR_UNSUP], "option {opt}");
        assert_eq!(reps[0].option, opt);
        assert_eq!(out.next, Next::Continue);
    }
}

#[test]
fn export_name_known_enters_transmission_with_bare_reply() {
    let cat = TestCatalog::default();
    let mut n = neg(&cat);
    let out = n.handle_option(OPT_EXPORT_NAME, b"r0");
    assert_eq!(
        decode_export_name_reply(&out.reply, true),
        Ok((R0_SIZE, effective_flags(R0_FLAGS, false)))
    );
    assert_eq!(out.reply.len(), 10);
    let t = transmission(out);
    assert!(t.via_export_name);
    assert_eq!(*cat.lookups.borrow(), vec![("r0".to_owned(), Purpose::Go)]);

    let mut n = Negotiation::new(ClientFlags::default(), &cat);
    let out = n.handle_option(OPT_EXPORT_NAME, b"r0");
    assert_eq!(out.reply.len(), 134);
    assert_eq!(
        decode_export_name_reply(&out.reply, false),
        Ok((R0_SIZE, effective_flags(R0_FLAGS, false)))
    );
}

#[test]
fn export_name_unknown_or_refused_closes_without_reply() {
    let cat = TestCatalog::default();
    for name in ["nope", "sec"] {
        let mut n = neg(&cat);
        let out = n.handle_option(OPT_EXPORT_NAME, name.as_bytes());
        assert!(out.reply.is_empty());
        assert!(matches!(
            out.next,
            Next::Close(CloseReason::ExportRefused(_))
        ));
    }
    let mut n = neg(&cat);
    let out = n.handle_option(OPT_EXPORT_NAME, b"r\0");
    assert!(out.reply.is_empty());
    assert!(matches!(
        out.next,
        Next::Close(CloseReason::BadExportName(_))
    ));
}

#[test]
fn begin_and_resume_match_handle_option() {
    let cat = TestCatalog::default();
    let mut a = neg(&cat);
    let mut b = neg(&cat);
    let script: Vec<(u32, Vec<u8>)> = vec![
        (OPT_STRUCTURED_REPLY, vec![]),
        (OPT_LIST, vec![]),
        (
            OPT_SET_META_CONTEXT,
            meta_context_payload("r0", &[BASE_ALLOCATION]),
        ),
        (OPT_INFO, go("r0", &[INFO_NAME])),
        (OPT_GO, go("sec", &[])),
        (OPT_GO, go("r0", &[INFO_BLOCK_SIZE])),
    ];
    for (opt, payload) in script {
        let want = a.handle_option(opt, &payload);
        let got = match b.begin(opt, &payload) {
            Step::Done(o) => o,
            Step::Lookup(p) => {
                let found = cat.lookup(p.name(), p.purpose());
                b.resume_lookup(p, found)
            }
            Step::List(p) => b.resume_list(p, cat.list()),
        };
        assert_eq!(got, want, "option {opt}");
    }
}

#[test]
fn whole_handshake_from_bytes() {
    // A qemu-like client: structured replies, base:allocation, GO with block sizes.
    let cat = TestCatalog::default();
    let mut wire = Vec::new();
    encode_option(&mut wire, OPT_STRUCTURED_REPLY, &[]);
    encode_option(
        &mut wire,
        OPT_SET_META_CONTEXT,
        &meta_context_payload("r0", &[BASE_ALLOCATION]),
    );
    encode_option(&mut wire, OPT_GO, &go("r0", &[INFO_BLOCK_SIZE]));
    let mut n = neg(&cat);
    let mut rest = &wire[..];
    let mut end = None;
    while let Some((h, after)) = rest.split_first_chunk::<OPTION_HEADER_LEN>() {
        let h = OptionHeader::decode(h).expect("header");
        let PayloadPlan::Read(len) = h.plan(DEFAULT_MAX_OPTION_LEN) else {
            panic!("plan");
        };
        let (payload, after) = after.split_at(len as usize);
        rest = after;
        let out = n.handle_option(h.option, payload);
        if let Next::Transmission(t) = out.next {
            end = Some(*t);
        }
    }
    let t = end.expect("entered transmission");
    let l = t.limits();
    assert_eq!(
        (
            l.size,
            l.min_block,
            l.max_payload,
            l.structured,
            l.meta_context
        ),
        (R0_SIZE, 512, 32 << 20, true, Some(BASE_ALLOCATION_ID))
    );
}
