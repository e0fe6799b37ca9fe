//! Broken configs: each must fail with exactly this `file:line:col: message`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use udrbd::config::{HostQuery, MemSource, load, parse_str, resolve};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/configs/broken");

fn error_of(file: &str) -> String {
    let text = std::fs::read_to_string(Path::new(DIR).join(file)).unwrap();
    match parse_str(file, &text) {
        Ok(_) => panic!("{file} parsed, but it is broken"),
        Err(e) => e.to_string(),
    }
}

macro_rules! broken {
    ($($test:ident: $file:literal => $msg:literal;)*) => {
        $(
            #[test]
            fn $test() {
                assert_eq!(error_of($file), concat!($file, ":", $msg));
            }
        )*
    };
}

broken! {
    missing_semicolon: "missing-semicolon.res" => "4:9: expected ';' after 'C', found 'timeout'";
    misspelt_keyword_suggests: "misspelt-keyword.res" =>
        "3:9: unknown keyword 'protocl' in section net, did you mean 'protocol'?";
    bad_enum_value: "bad-enum.res" =>
        "2:25: bad value 'discard-yonger-primary' for 'after-sb-0pri': expected one of disconnect, \
         discard-younger-primary, discard-older-primary, discard-zero-changes, discard-least-changes, \
         discard-local, discard-remote, discard-node-NAME, did you mean 'discard-younger-primary'?";
    number_out_of_range: "out-of-range.res" =>
        "2:19: value 700 for 'timeout' is out of range (1..600, in tenths of a second)";
    bad_unit: "bad-unit.res" => "2:24: bad unit in '25X' for 'resync-rate': expected K, M or G";
    unit_on_plain_number: "unit-not-allowed.res" =>
        "2:20: bad unit in '5M' for 'ping-int': it takes a plain number (in seconds)";
    bad_bool: "bad-bool.res" => "2:25: bad value 'maybe' for 'disk-flushes': expected yes or no";
    unknown_host_in_connection: "unknown-host.res" =>
        "7:14: unknown host 'bobb' in resource r0; its hosts are: alice, bob, did you mean 'bob'?";
    duplicate_node_id: "duplicate-node-id.res" =>
        "4:5: duplicate node-id 0 in resource r0: hosts 'alice' and 'bob'";
    duplicate_resource: "duplicate-resource.res" =>
        "6:1: duplicate resource 'r0' (first defined at duplicate-resource.res:1:1)";
    duplicate_minor: "duplicate-minor.res" =>
        "7:5: minor 1 of resource r1 (host 'alice') is already used by resource r0";
    duplicate_volume: "duplicate-volume.res" =>
        "3:5: duplicate volume 0 (first at duplicate-volume.res:2:5)";
    missing_address: "missing-address.res" =>
        "7:14: host 'bob' has no address for its connection in resource r0: give 'address' in 'on bob { }' or in the connection";
    secret_too_long: "secret-too-long.res" =>
        "2:25: 'shared-secret' is too long (70 characters, at most 64)";
    include_inside_section: "include-in-section.res" =>
        "2:5: 'include' is only allowed at top level, not inside resource r0";
    unterminated_string: "unterminated-string.res" => "2:25: unterminated string (missing '\"')";
    unterminated_section: "unterminated-section.res" =>
        "5:1: unexpected end of file, expected '}' to close 'resource r0' opened at line 1";
    missing_include_file: "missing-include.conf" =>
        "1:9: cannot read included file 'drbd.d/global_common.conf': No such file or directory";
    three_hosts_without_node_ids: "three-hosts-no-ids.res" =>
        "3:5: host 'a' of resource r0 has no node-id: a resource with more than two hosts needs 'node-id' in every host section";
    misspelt_top_level: "unknown-top-level.res" =>
        "1:1: unknown keyword 'resorce' at top level, did you mean 'resource'?";
    address_without_port: "bad-address.res" =>
        "3:24: bad address '10.0.0.1': expected ADDR:PORT (IPv6 as ipv6 [ADDR]:PORT)";
}

#[test]
fn no_host_matches() {
    let cfg = parse_str(
        "/etc/drbd.conf",
        "resource res0 {\n  device minor 0; disk /dev/sdb; meta-disk internal;\n  \
         on node-1 { address 10.0.0.1:7788; }\n  on node-2 { address 10.0.0.2:7788; }\n}\n",
    )
    .unwrap();
    let q = HostQuery {
        explicit: None,
        hostname: "HOST",
        is_local: &|_| false,
    };
    assert_eq!(
        resolve(&cfg, "res0", &q).unwrap_err().to_string(),
        "/etc/drbd.conf:1:1: res0: no host section matches this node ('HOST'); on sections: node-1, node-2. \
         Use --node NAME or UDRBD_NODE to choose one."
    );
    let q = HostQuery {
        explicit: Some("node-3"),
        hostname: "node-1",
        is_local: &|_| false,
    };
    assert!(
        resolve(&cfg, "res0", &q)
            .unwrap_err()
            .message
            .contains("no host section named 'node-3'")
    );
}

#[test]
fn missing_top_level_file_and_literal_include() {
    let src = MemSource::new();
    let e = load(&src, Path::new("/etc/drbd.conf")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/drbd.conf:1:1: cannot read config file: No such file or directory"
    );
    // A glob that matches nothing is fine.
    let src = MemSource::new().with("/etc/drbd.conf", "include \"drbd.d/*.res\";\n");
    assert!(
        load(&src, Path::new("/etc/drbd.conf"))
            .unwrap()
            .resources
            .is_empty()
    );
}

#[test]
fn more_semantic_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "resource r { net { protocol C; } device minor 1 }",
            "t:1:49: expected ';' after '1', found '}'",
        ),
        (
            "resource r { net { protocol D; } }",
            "t:1:29: bad value 'D' for 'protocol': expected one of A, B, C",
        ),
        (
            "common { disk { al-extents 10; } }",
            "t:1:28: value 10 for 'al-extents' is out of range (67..65534)",
        ),
        (
            "resource r { on a { node-id 40; } }",
            "t:1:29: node-id 40 is out of range (0..31)",
        ),
        (
            "resource r { connection { disk { al-extents 100; } } }",
            "t:1:34: 'al-extents' can not be set per connection (only resync-rate, c-plan-ahead, \
             c-delay-target, c-fill-target, c-max-rate, c-min-rate, bitmap can)",
        ),
        (
            "resource r { device /dev/foo; }",
            "t:1:21: cannot tell the minor number from '/dev/foo': write 'device /dev/foo minor N'",
        ),
        (
            "resource r { net { protocol C; } net }",
            "t:1:38: expected ';' after 'net', found '}'",
        ),
        (
            "resource r { net; }",
            "t:1:14: expected '{' after 'net' ('net' is a section)",
        ),
        (
            "resource r { options { nbd-listen nowhere; } }",
            "t:1:35: bad address 'nowhere' for 'nbd-listen': expected IP:PORT (IPv6 as [ADDR]:PORT)",
        ),
        (
            "global { usage-count maybe; }",
            "t:1:22: bad value 'maybe' for 'usage-count': expected one of yes, no, ask",
        ),
        (
            "resource r { on a { address sdp 1.2.3.4:5; } }",
            "t:1:29: address family 'sdp' is not supported by udrbd (use ipv4 or ipv6)",
        ),
        (
            "resource r { on a { address ipv6 1.2.3.4:5; } }",
            "t:1:34: '1.2.3.4:5' is not an IPv6 address",
        ),
        (
            "resource r { volume 0 { device minor 1; disk /d; disk /e; } }",
            "t:1:50: 'disk' is given twice for this volume",
        ),
        (
            "resource r { net { after-sb-0pri discard-node-carol; } on a { address 1.1.1.1:1; } }",
            "OK",
        ),
    ];
    let mut bad = Vec::new();
    for (text, want) in cases {
        let got = match parse_str("t", text) {
            Ok(_) => "OK".to_string(),
            Err(e) => e.to_string(),
        };
        if &got != want {
            bad.push(format!("for {text}\n  got:  {got}\n  want: {want}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn discard_node_must_name_a_host() {
    let cfg = parse_str(
        "t",
        "resource r { net { after-sb-0pri discard-node-carol; } device minor 1; disk /d; meta-disk internal; \
         on a { address 1.1.1.1:1; } on b { address 1.1.1.2:1; } }",
    )
    .unwrap();
    let q = HostQuery {
        explicit: Some("a"),
        hostname: "",
        is_local: &|_| false,
    };
    assert_eq!(
        resolve(&cfg, "r", &q).unwrap_err().to_string(),
        "t:1:20: after-sb-0pri discard-node-carol: resource r has no host 'carol'"
    );
}
