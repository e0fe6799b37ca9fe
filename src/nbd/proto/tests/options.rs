//! Strict length checks in the option payload parsers.

use super::super::client::{info_request_payload, meta_context_payload};
use super::super::*;

#[test]
fn info_request_round_trip_and_dedup() {
    let p = info_request_payload("r0", &[INFO_NAME, INFO_BLOCK_SIZE, INFO_NAME]);
    assert_eq!(
        parse_info_request(&p),
        Ok(InfoRequest {
            name: "r0".into(),
            requests: vec![INFO_NAME, INFO_BLOCK_SIZE]
        })
    );
    assert_eq!(
        parse_info_request(&info_request_payload("", &[])),
        Ok(InfoRequest {
            name: String::new(),
            requests: vec![]
        })
    );
}

#[test]
fn info_request_length_errors() {
    let p = info_request_payload("r0", &[INFO_NAME]);
    // Name length pointing past the end.
    let mut long = p.clone();
    long[3] = 200;
    assert_eq!(parse_info_request(&long), Err(PayloadError::Truncated));
    // Count says two, only one present.
    let mut count = p.clone();
    count[7] = 2;
    assert_eq!(parse_info_request(&count), Err(PayloadError::Truncated));
    // Trailing byte.
    let mut trail = p.clone();
    trail.push(0);
    assert_eq!(parse_info_request(&trail), Err(PayloadError::Trailing(1)));
    // Every truncation fails.
    for cut in 0..p.len() {
        assert!(parse_info_request(&p[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn strings_must_be_utf8_without_nul_and_at_most_4096_bytes() {
    assert_eq!(parse_export_name(b"r0/1"), Ok("r0/1".into()));
    assert!(matches!(
        parse_export_name(b"a\0b"),
        Err(PayloadError::String(StringError::Nul))
    ));
    assert!(matches!(
        parse_export_name(&[0xff, 0xfe]),
        Err(PayloadError::String(StringError::NotUtf8))
    ));
    assert!(parse_export_name(&[b'a'; 4096]).is_ok());
    assert!(matches!(
        parse_export_name(&[b'a'; 4097]),
        Err(PayloadError::String(StringError::TooLong(4097)))
    ));
    let long = "x".repeat(4097);
    assert!(parse_info_request(&info_request_payload(&long, &[])).is_err());
}

#[test]
fn meta_context_request_round_trip_and_errors() {
    let p = meta_context_payload("r0", &["base:", "base:allocation"]);
    assert_eq!(
        parse_meta_context_request(&p),
        Ok(MetaContextRequest {
            export: "r0".into(),
            queries: vec!["base:".into(), "base:allocation".into()]
        })
    );
    for cut in 0..p.len() {
        assert!(parse_meta_context_request(&p[..cut]).is_err(), "cut {cut}");
    }
    let mut trail = p.clone();
    trail.extend_from_slice(&[0, 0]);
    assert_eq!(
        parse_meta_context_request(&trail),
        Err(PayloadError::Trailing(2))
    );
    // A huge query count with no queries must fail without allocating for it.
    let mut huge = meta_context_payload("r0", &[]);
    let n = huge.len();
    huge[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        parse_meta_context_request(&huge),
        Err(PayloadError::Truncated)
    );
}

#[test]
fn empty_options() {
    assert_eq!(expect_empty(&[]), Ok(()));
    assert_eq!(expect_empty(&[1, 2]), Err(PayloadError::Unexpected(2)));
}
