//! `tests/purity.rs` names `src/nbd/proto.rs` but not its submodules under `src/nbd/proto/`;
//! this applies the same rule to every file of the protocol layer, so the layer cannot grow I/O
//! by growing a file. Sources are embedded at compile time, so this test itself needs no I/O.

/// Same list as `tests/purity.rs`.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "std::fs",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "std::net::UdpSocket",
    "Instant::now",
    "SystemTime::now",
    "thread_rng",
    "rand::random",
    "getrandom",
    "std::thread",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "fs::",
    "thread::",
];

const SOURCES: &[(&str, &str)] = &[
    ("proto.rs", include_str!("proto.rs")),
    ("proto/catalog.rs", include_str!("proto/catalog.rs")),
    ("proto/client.rs", include_str!("proto/client.rs")),
    ("proto/consts.rs", include_str!("proto/consts.rs")),
    ("proto/errors.rs", include_str!("proto/errors.rs")),
    ("proto/fuzz.rs", include_str!("proto/fuzz.rs")),
    ("proto/handshake.rs", include_str!("proto/handshake.rs")),
    ("proto/negotiate.rs", include_str!("proto/negotiate.rs")),
    (
        "proto/option_reply.rs",
        include_str!("proto/option_reply.rs"),
    ),
    ("proto/options.rs", include_str!("proto/options.rs")),
    ("proto/outcome.rs", include_str!("proto/outcome.rs")),
    ("proto/reply.rs", include_str!("proto/reply.rs")),
    ("proto/request.rs", include_str!("proto/request.rs")),
    ("proto/validate.rs", include_str!("proto/validate.rs")),
    ("proto/wire.rs", include_str!("proto/wire.rs")),
    ("proto/tests/mod.rs", include_str!("proto/tests/mod.rs")),
    (
        "proto/tests/golden.rs",
        include_str!("proto/tests/golden.rs"),
    ),
    (
        "proto/tests/negotiate.rs",
        include_str!("proto/tests/negotiate.rs"),
    ),
    (
        "proto/tests/options.rs",
        include_str!("proto/tests/options.rs"),
    ),
    ("proto/tests/props.rs", include_str!("proto/tests/props.rs")),
    (
        "proto/tests/replies.rs",
        include_str!("proto/tests/replies.rs"),
    ),
    (
        "proto/tests/support.rs",
        include_str!("proto/tests/support.rs"),
    ),
    (
        "proto/tests/validate.rs",
        include_str!("proto/tests/validate.rs"),
    ),
];

#[test]
fn protocol_layer_does_no_io() {
    let mut bad = Vec::new();
    for (file, src) in SOURCES {
        for (i, line) in src.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for pat in FORBIDDEN {
                if line.contains(pat) {
                    bad.push(format!("src/nbd/{file}:{}: names `{pat}`", i + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn every_protocol_file_is_listed() {
    // A new submodule must be added to SOURCES; its `mod` line is how we notice.
    let root = SOURCES[0].1;
    for line in root.lines() {
        let l = line.trim();
        let Some(name) = l
            .strip_prefix("pub mod ")
            .or_else(|| l.strip_prefix("mod "))
            .and_then(|r| r.strip_suffix(';'))
        else {
            continue;
        };
        let want = if name == "tests" {
            "proto/tests/mod.rs".to_string()
        } else {
            format!("proto/{name}.rs")
        };
        assert!(
            SOURCES.iter().any(|(f, _)| *f == want),
            "{want} is not checked"
        );
    }
}
