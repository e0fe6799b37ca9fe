//! Request validation, one rule per test.

use super::super::*;

const SIZE: u64 = 1 << 20;

fn limits() -> ExportLimits {
    ExportLimits {
        size: SIZE,
        min_block: 512,
        max_payload: 64 * 1024,
        flags: effective_flags(
            FLAG_SEND_FLUSH
                | FLAG_SEND_FUA
                | FLAG_SEND_TRIM
                | FLAG_SEND_WRITE_ZEROES
                | FLAG_SEND_FAST_ZERO,
            true,
        ),
        structured: true,
        meta_context: Some(BASE_ALLOCATION_ID),
    }
}

fn req(kind: u16, flags: u16, offset: u64, length: u32) -> RequestHeader {
    RequestHeader {
        flags,
        kind,
        cookie: 42,
        offset,
        length,
    }
}

fn check(r: RequestHeader) -> Result<Command, Reject> {
    validate(&r, &limits())
}

fn errno(r: RequestHeader) -> Errno {
    check(r).expect_err("should be rejected").errno
}

#[test]
fn accepts_each_command() {
    assert_eq!(
        check(req(CMD_READ, 0, 4096, 4096)),
        Ok(Command::Read {
            offset: 4096,
            len: 4096,
            df: false
        })
    );
    assert_eq!(
        check(req(CMD_READ, CMD_FLAG_DF, 0, 512)),
        Ok(Command::Read {
            offset: 0,
            len: 512,
            df: true
        })
    );
    assert_eq!(
        check(req(CMD_WRITE, CMD_FLAG_FUA, SIZE - 512, 512)),
        Ok(Command::Write {
            offset: SIZE - 512,
            len: 512,
            fua: true
        })
    );
    assert_eq!(check(req(CMD_FLUSH, 0, 0, 0)), Ok(Command::Flush));
    assert_eq!(
        check(req(CMD_TRIM, 0, 0, SIZE as u32)),
        Ok(Command::Trim {
            offset: 0,
            len: SIZE as u32,
            fua: false
        })
    );
    assert_eq!(
        check(req(
            CMD_WRITE_ZEROES,
            CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO | CMD_FLAG_FUA,
            512,
            1024
        )),
        Ok(Command::WriteZeroes {
            offset: 512,
            len: 1024,
            fua: true,
            no_hole: true,
            fast_zero: true
        })
    );
    assert_eq!(
        check(req(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, SIZE as u32)),
        Ok(Command::BlockStatus {
            offset: 0,
            len: SIZE as u32,
            req_one: true
        })
    );
    assert_eq!(
        check(req(CMD_CACHE, 0, 0, 512)),
        Ok(Command::Cache {
            offset: 0,
            len: 512
        })
    );
    assert_eq!(check(req(CMD_DISC, 0xffff, 7, 9)), Ok(Command::Disc));
}

#[test]
fn unknown_command_and_resize_are_einval() {
    assert_eq!(errno(req(CMD_RESIZE, 0, 0, 512)), Errno::Inval);
    assert_eq!(errno(req(99, 0, 0, 512)), Errno::Inval);
}

#[test]
fn unknown_flags_are_einval() {
    assert_eq!(errno(req(CMD_READ, 1 << 5, 0, 512)), Errno::Inval);
    assert_eq!(errno(req(CMD_WRITE, 1 << 15, 0, 512)), Errno::Inval);
}

#[test]
fn command_specific_flags_only_on_their_command() {
    // NO_HOLE only on WRITE_ZEROES.
    assert_eq!(
        errno(req(CMD_WRITE, CMD_FLAG_NO_HOLE, 0, 512)),
        Errno::Inval
    );
    assert_eq!(errno(req(CMD_TRIM, CMD_FLAG_NO_HOLE, 0, 512)), Errno::Inval);
    // DF only on READ.
    assert_eq!(errno(req(CMD_WRITE, CMD_FLAG_DF, 0, 512)), Errno::Inval);
    // REQ_ONE only on BLOCK_STATUS.
    assert_eq!(errno(req(CMD_READ, CMD_FLAG_REQ_ONE, 0, 512)), Errno::Inval);
    // FAST_ZERO only on WRITE_ZEROES.
    assert_eq!(
        errno(req(CMD_WRITE, CMD_FLAG_FAST_ZERO, 0, 512)),
        Errno::Inval
    );
}

#[test]
fn fua_needs_send_fua_and_is_tolerated_on_non_writes() {
    // "the server MUST accept all commands with this bit set (even by ignoring the bit)".
    assert!(check(req(CMD_READ, CMD_FLAG_FUA, 0, 512)).is_ok());
    assert_eq!(
        check(req(CMD_FLUSH, CMD_FLAG_FUA, 0, 0)),
        Ok(Command::Flush)
    );
    let mut l = limits();
    l.flags &= !FLAG_SEND_FUA;
    let r = validate(&req(CMD_WRITE, CMD_FLAG_FUA, 0, 512), &l);
    assert_eq!(r.map_err(|e| e.errno), Err(Errno::Inval));
    assert!(validate(&req(CMD_WRITE, 0, 0, 512), &l).is_ok());
}

#[test]
fn df_needs_structured_replies() {
    let mut l = limits();
    l.structured = false;
    l.flags = effective_flags(l.flags, false);
    let r = validate(&req(CMD_READ, CMD_FLAG_DF, 0, 512), &l);
    assert_eq!(r.map_err(|e| e.errno), Err(Errno::Inval));
}

#[test]
fn fast_zero_needs_send_fast_zero() {
    let mut l = limits();
    l.flags &= !FLAG_SEND_FAST_ZERO;
    let r = validate(&req(CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 0, 512), &l);
    assert_eq!(r.map_err(|e| e.errno), Err(Errno::Inval));
}

#[test]
fn unadvertised_commands_are_einval() {
    let mut l = limits();
    l.flags = FLAG_HAS_FLAGS;
    for kind in [CMD_FLUSH, CMD_TRIM, CMD_WRITE_ZEROES] {
        let (off, len) = if kind == CMD_FLUSH { (0, 0) } else { (0, 512) };
        let r = validate(&req(kind, 0, off, len), &l);
        assert_eq!(r.map_err(|e| e.errno), Err(Errno::Inval), "cmd {kind}");
    }
    // CACHE is tolerated without SEND_CACHE.
    assert!(validate(&req(CMD_CACHE, 0, 0, 512), &l).is_ok());
}

#[test]
fn block_status_needs_a_meta_context() {
    let mut l = limits();
    l.meta_context = None;
    let r = validate(&req(CMD_BLOCK_STATUS, 0, 0, 512), &l);
    assert_eq!(r.map_err(|e| e.errno), Err(Errno::Inval));
}

#[test]
fn flush_with_offset_or_length_is_einval() {
    assert_eq!(errno(req(CMD_FLUSH, 0, 512, 0)), Errno::Inval);
    assert_eq!(errno(req(CMD_FLUSH, 0, 0, 512)), Errno::Inval);
}

#[test]
fn zero_length_is_einval() {
    for kind in [
        CMD_READ,
        CMD_WRITE,
        CMD_TRIM,
        CMD_WRITE_ZEROES,
        CMD_BLOCK_STATUS,
        CMD_CACHE,
    ] {
        assert_eq!(errno(req(kind, 0, 0, 0)), Errno::Inval, "cmd {kind}");
    }
}

#[test]
fn misaligned_is_einval() {
    assert_eq!(errno(req(CMD_READ, 0, 100, 512)), Errno::Inval);
    assert_eq!(errno(req(CMD_READ, 0, 0, 100)), Errno::Inval);
    assert_eq!(errno(req(CMD_WRITE, 0, 256, 512)), Errno::Inval);
    assert_eq!(errno(req(CMD_TRIM, 0, 0, 513)), Errno::Inval);
}

#[test]
fn beyond_the_end_is_enospc_for_writes_and_einval_otherwise() {
    let past = req(CMD_WRITE, 0, SIZE, 512);
    assert_eq!(errno(past), Errno::NoSpc);
    assert_eq!(
        errno(req(CMD_WRITE_ZEROES, 0, SIZE - 512, 1024)),
        Errno::NoSpc
    );
    assert_eq!(errno(req(CMD_READ, 0, SIZE - 512, 1024)), Errno::Inval);
    assert_eq!(errno(req(CMD_TRIM, 0, SIZE, 512)), Errno::Inval);
    assert_eq!(errno(req(CMD_BLOCK_STATUS, 0, SIZE, 512)), Errno::Inval);
    assert_eq!(errno(req(CMD_CACHE, 0, SIZE, 512)), Errno::Inval);
}

#[test]
fn offset_plus_length_overflow_is_out_of_range() {
    let off = u64::MAX - 511; // 512-aligned
    assert_eq!(errno(req(CMD_READ, 0, off, 1024)), Errno::Inval);
    assert_eq!(errno(req(CMD_WRITE, 0, off, 1024)), Errno::NoSpc);
}

#[test]
fn over_max_payload_is_einval_or_eoverflow_with_df() {
    let big = 128 * 1024;
    assert_eq!(errno(req(CMD_READ, 0, 0, big)), Errno::Inval);
    assert_eq!(errno(req(CMD_READ, CMD_FLAG_DF, 0, big)), Errno::Overflow);
    assert_eq!(errno(req(CMD_WRITE, 0, 0, big)), Errno::Inval);
    // Not payload-bearing: no maximum.
    assert!(check(req(CMD_TRIM, 0, 0, big)).is_ok());
    assert!(check(req(CMD_WRITE_ZEROES, 0, 0, big)).is_ok());
}

#[test]
fn read_only_export_refuses_writes_with_eperm() {
    let mut l = limits();
    l.flags |= FLAG_READ_ONLY;
    for kind in [CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES] {
        let r = validate(&req(kind, 0, SIZE, 512), &l);
        assert_eq!(r.map_err(|e| e.errno), Err(Errno::Perm), "cmd {kind}");
    }
    assert!(validate(&req(CMD_READ, 0, 0, 512), &l).is_ok());
}

#[test]
fn rejected_write_payload_is_drained_or_connection_dropped() {
    let r = check(req(CMD_WRITE, 0, SIZE, 4096)).expect_err("out of range");
    assert_eq!(r.action, RejectAction::DrainThenReply(4096));
    let r = check(req(CMD_WRITE, 0, 0, 100)).expect_err("misaligned");
    assert_eq!(r.action, RejectAction::DrainThenReply(100));
    // Longer than the maximum but below 2^25: drained.
    let r = check(req(CMD_WRITE, 0, 0, 1 << 24)).expect_err("too big");
    assert_eq!(r.action, RejectAction::DrainThenReply(1 << 24));
    // Beyond 2^25 and the maximum: a denial of service, drop.
    let r = check(req(CMD_WRITE, 0, 0, (1 << 25) + 512)).expect_err("way too big");
    assert_eq!(r.action, RejectAction::Disconnect);
    // Non-writes have nothing to drain.
    let r = check(req(CMD_READ, 0, SIZE, 512)).expect_err("range");
    assert_eq!(r.action, RejectAction::Reply);
    let r = check(req(CMD_TRIM, 0, SIZE, u32::MAX)).expect_err("range");
    assert_eq!(r.action, RejectAction::Reply);
}

#[test]
fn request_header_errors() {
    let mut b = req(CMD_READ, 0, 0, 512).encode();
    assert!(RequestHeader::decode(&b).is_ok());
    b[3] ^= 0xff;
    assert!(matches!(
        RequestHeader::decode(&b),
        Err(RequestError::BadMagic(_))
    ));
    let good = req(CMD_READ, 0, 0, 512).encode();
    assert_eq!(
        RequestHeader::decode_slice(&good[..27]),
        Err(RequestError::Truncated(27))
    );
    assert_eq!(
        RequestHeader::decode_slice(&good[..2]),
        Err(RequestError::Truncated(2))
    );
    assert_eq!(req(CMD_WRITE, 0, 0, 9).payload_len(), 9);
    assert_eq!(req(CMD_READ, 0, 0, 9).payload_len(), 0);
}
