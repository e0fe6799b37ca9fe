//! The seed corpora of the `nbd_option` and `nbd_request` fuzz targets: how they are made and a
//! replay of every file through the fuzz entry points on the stable toolchain.
//!
//! Regenerate with `cargo test -p udrbd --lib nbd::corpus_tests -- --ignored`.

use super::proto::client::*;
use super::proto::*;
use std::path::PathBuf;

fn dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn req(kind: u16, flags: u16, offset: u64, length: u32) -> RequestHeader {
    RequestHeader {
        flags,
        kind,
        cookie: u64::from(kind) << 32 | offset,
        offset,
        length,
    }
}

/// Appends a request; a WRITE gets its payload.
fn push(out: &mut Vec<u8>, r: RequestHeader) {
    let payload = vec![0x5a; r.payload_len().min(8192) as usize];
    encode_request(out, &r, &payload);
}

fn opt(out: &mut Vec<u8>, option: u32, payload: &[u8]) {
    encode_option(out, option, payload);
}

fn flags(bits: u32) -> Vec<u8> {
    bits.to_be_bytes().to_vec()
}

fn option_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = Vec::new();
    let meta = |q: &[&str]| meta_context_payload("r0", q);

    let mut d = flags(3);
    opt(&mut d, OPT_STRUCTURED_REPLY, &[]);
    opt(&mut d, OPT_SET_META_CONTEXT, &meta(&[BASE_ALLOCATION]));
    opt(
        &mut d,
        OPT_GO,
        &info_request_payload("r0", &[INFO_BLOCK_SIZE]),
    );
    push(&mut d, req(CMD_WRITE, CMD_FLAG_FUA, 0, 4096));
    push(&mut d, req(CMD_BLOCK_STATUS, 0, 0, 1 << 20));
    push(&mut d, req(CMD_READ, CMD_FLAG_DF, 0, 4096));
    push(&mut d, req(CMD_DISC, 0, 0, 0));
    seeds.push(("qemu_go_then_io", d));

    let mut d = flags(3);
    opt(&mut d, OPT_LIST, &[]);
    opt(
        &mut d,
        OPT_INFO,
        &info_request_payload("r0", &[INFO_NAME, INFO_DESCRIPTION]),
    );
    opt(&mut d, OPT_ABORT, &[]);
    seeds.push(("nbdinfo_list_abort", d));

    let mut d = flags(1);
    opt(&mut d, OPT_EXPORT_NAME, b"r0");
    push(&mut d, req(CMD_READ, 0, 512, 512));
    push(&mut d, req(CMD_FLUSH, 0, 0, 0));
    seeds.push(("export_name_zeroes", d));

    let mut d = flags(3);
    opt(&mut d, OPT_EXPORT_NAME, b"nope");
    seeds.push(("export_name_unknown", d));

    let mut d = flags(3);
    opt(&mut d, OPT_GO, &info_request_payload("sec", &[]));
    opt(&mut d, OPT_GO, &info_request_payload("missing", &[]));
    opt(&mut d, OPT_GO, &info_request_payload("", &[INFO_NAME]));
    push(&mut d, req(CMD_WRITE, 0, 0, 512));
    seeds.push(("go_refused_then_default", d));

    let mut d = flags(3);
    opt(&mut d, OPT_STRUCTURED_REPLY, b"x");
    opt(&mut d, OPT_STRUCTURED_REPLY, &[]);
    opt(&mut d, OPT_STRUCTURED_REPLY, &[]);
    opt(&mut d, OPT_LIST, b"junk");
    seeds.push(("structured_twice_and_bad_list", d));

    let mut d = flags(3);
    opt(&mut d, OPT_SET_META_CONTEXT, &meta(&[BASE_ALLOCATION]));
    opt(&mut d, OPT_STRUCTURED_REPLY, &[]);
    opt(&mut d, OPT_LIST_META_CONTEXT, &meta(&["base:"]));
    opt(&mut d, OPT_LIST_META_CONTEXT, &meta(&[]));
    opt(
        &mut d,
        OPT_SET_META_CONTEXT,
        &meta(&["base:", "qemu:dirty-bitmap:b"]),
    );
    opt(&mut d, OPT_GO, &info_request_payload("r0", &[]));
    push(&mut d, req(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 4096));
    seeds.push(("meta_context_rules", d));

    let mut d = flags(3);
    for o in [OPT_STARTTLS, OPT_EXTENDED_HEADERS, OPT_PEEK_EXPORT, 0x1234] {
        opt(&mut d, o, b"??");
    }
    opt(&mut d, OPT_ABORT, &[]);
    seeds.push(("unsupported_options", d));

    let mut d = flags(3);
    opt(&mut d, OPT_INFO, &vec![0u8; 70_000]);
    opt(&mut d, OPT_GO, &info_request_payload("ro", &[]));
    push(&mut d, req(CMD_TRIM, 0, 0, 4096));
    seeds.push(("oversize_then_read_only", d));

    let mut d = flags(3);
    let mut bad = info_request_payload("r0", &[INFO_NAME]);
    opt(&mut d, OPT_GO, &bad[..bad.len() - 1]);
    bad.push(7);
    opt(&mut d, OPT_GO, &bad);
    opt(&mut d, OPT_SET_META_CONTEXT, &[0, 0, 0, 9, b'r']);
    seeds.push(("malformed_payloads", d));

    seeds.push(("bad_client_flags", flags(0x80)));

    let mut d = flags(3);
    d.extend_from_slice(b"NOTOPTIO\0\0\0\x03\0\0\0\0");
    seeds.push(("bad_option_magic", d));
    seeds
}

fn request_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut s = |name, reqs: &[RequestHeader]| {
        let mut d = Vec::new();
        for r in reqs {
            push(&mut d, *r);
        }
        seeds.push((name, d));
    };
    s(
        "read_write_flush_disc",
        &[
            req(CMD_WRITE, 0, 0, 4096),
            req(CMD_READ, 0, 0, 4096),
            req(CMD_FLUSH, 0, 0, 0),
            req(CMD_DISC, 0, 0, 0),
        ],
    );
    s(
        "fua_trim_zeroes",
        &[
            req(CMD_TRIM, CMD_FLAG_FUA, 4096, 8192),
            req(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 0, 65536),
            req(CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 0, 512),
        ],
    );
    s(
        "block_status",
        &[
            req(CMD_BLOCK_STATUS, 0, 0, 1 << 20),
            req(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 512, 4096),
        ],
    );
    s(
        "misaligned",
        &[req(CMD_READ, 0, 1, 512), req(CMD_WRITE, 0, 0, 100)],
    );
    s(
        "out_of_range",
        &[
            req(CMD_WRITE, 0, 1 << 20, 4096),
            req(CMD_READ, 0, (1 << 20) - 512, 1024),
            req(CMD_READ, 0, u64::MAX - 511, 1024),
        ],
    );
    s(
        "bad_flags",
        &[
            req(CMD_READ, 1 << 9, 0, 512),
            req(CMD_WRITE, CMD_FLAG_DF, 0, 512),
            req(CMD_READ, CMD_FLAG_REQ_ONE, 0, 512),
            req(CMD_FLUSH, 0, 512, 0),
        ],
    );
    s(
        "zero_length_and_unknown",
        &[
            req(CMD_READ, 0, 0, 0),
            req(CMD_CACHE, 0, 0, 4096),
            req(CMD_RESIZE, 0, 0, 0),
            req(99, 0, 0, 512),
        ],
    );
    s(
        "df_and_big_reads",
        &[
            req(CMD_READ, CMD_FLAG_DF, 0, 65536),
            req(CMD_READ, CMD_FLAG_DF, 0, 64 << 20),
            req(CMD_READ, 0, 0, 64 << 20),
        ],
    );
    s(
        "huge_write_disconnects",
        &[req(CMD_WRITE, 0, 0, 0x7fff_fe00)],
    );
    let mut bad = req(CMD_READ, 0, 0, 512).encode().to_vec();
    bad[0] = 0x12;
    seeds.push(("bad_magic", bad));
    let mut cut = Vec::new();
    push(&mut cut, req(CMD_WRITE, 0, 0, 4096));
    cut.truncate(28 + 100);
    seeds.push(("truncated_write_payload", cut));
    seeds
}

#[test]
#[ignore = "writes fuzz/corpus/nbd_*; run by hand after changing the seeds"]
fn write_corpus() {
    for (target, seeds) in [
        ("nbd_option", option_seeds()),
        ("nbd_request", request_seeds()),
    ] {
        let d = dir(target);
        std::fs::create_dir_all(&d).expect("mkdir");
        for (name, bytes) in seeds {
            std::fs::write(d.join(name), bytes).expect("write seed");
        }
    }
}

#[test]
fn corpus_replays_without_panic_and_is_current() {
    for (target, seeds, run) in [
        ("nbd_option", option_seeds(), fuzz_options as fn(&[u8])),
        ("nbd_request", request_seeds(), fuzz_requests as fn(&[u8])),
    ] {
        let d = dir(target);
        let mut files = 0;
        for entry in std::fs::read_dir(&d).expect("corpus dir exists") {
            let path = entry.expect("entry").path();
            run(&std::fs::read(&path).expect("read seed"));
            files += 1;
        }
        assert!(files >= 10, "{target}: only {files} seeds");
        for (name, bytes) in seeds {
            let on_disk = std::fs::read(d.join(name)).expect("seed file present");
            assert_eq!(on_disk, bytes, "{target}/{name} is stale; regenerate");
        }
    }
}
