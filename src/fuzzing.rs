//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and the corpus
//! replay test (`tests/fuzz_corpus.rs`), so the stable test run exercises exactly what the
//! fuzzer does. Each takes arbitrary bytes, must never panic on them, and asserts the codec's
//! round-trip invariant on whatever the decoder accepts: a panic here is a real bug.

use crate::config;
use crate::meta::{al, bm_page, superblock};

/// The config parser, dump and re-parse: text that parses must dump to text that parses to the
/// same dump (the "dump of the dump" property `drbdadm dump` promises).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = config::parse_str("/fuzz/drbd.conf", text) else {
        return;
    };
    let Ok(first) = config::dump(&cfg, None) else {
        return;
    };
    let again = match config::parse_str("/fuzz/dump.conf", &first) {
        Ok(c) => c,
        Err(e) => panic!("the dump of a valid config does not parse: {e}\n{first}"),
    };
    match config::dump(&again, None) {
        Ok(second) => assert_eq!(first, second, "dump of the dump differs"),
        Err(e) => panic!("the re-parsed dump does not dump: {e}"),
    }
}

/// Superblock slots: a slot that decodes re-encodes to a slot that decodes to the same value,
/// and choosing between two arbitrary slots never panics.
pub fn superblock(data: &[u8]) {
    let (a, b) = data.split_at(data.len().min(superblock::SLOT_SIZE));
    for slot in [a, b] {
        if let Ok(d) = superblock::decode_slot(slot) {
            let re = superblock::encode_slot(&d.sb, d.seq);
            assert_eq!(
                superblock::decode_slot(&re).ok(),
                Some(d),
                "superblock round trip"
            );
        }
    }
    let _ = superblock::choose(a, b);
}

/// Activity-log blocks: every 4 KiB block that decodes round-trips, and recovery over the whole
/// input (as an AL area) never panics, whatever al-extents the first block claims.
pub fn al(data: &[u8]) {
    for block in data.chunks(al::AL_BLOCK) {
        if let Ok(tr) = al::decode_transaction(block) {
            let re = al::encode_transaction(&tr);
            assert_eq!(
                al::decode_transaction(&re).ok(),
                Some(tr),
                "AL transaction round trip"
            );
        }
    }
    let whole = data.len() - data.len() % al::AL_BLOCK;
    if whole > 0 {
        let area = &data[..whole];
        let claimed = al::decode_transaction(area)
            .map(|t| t.al_extents)
            .unwrap_or(al::DEFAULT_AL_EXTENTS)
            .min(al::AL_EXTENTS_MAX);
        if let Ok(rec) = al::recover(area, claimed) {
            assert!(rec.valid_blocks + rec.corrupt_blocks == whole / al::AL_BLOCK);
            let _ = al::ActivityLog::from_recovery(&rec);
        }
    }
}

/// Bitmap pages: a page that decodes re-encodes to the same bytes.
pub fn bitmap_page(data: &[u8]) {
    if let Ok((peer, index, words)) = bm_page::decode_page_any(data) {
        let re = bm_page::encode_page(peer, index, &words);
        assert!(
            re[..] == data[..bm_page::PAGE_SIZE],
            "bitmap page round trip"
        );
    }
}

/// The run-length bitmap exchange encoding: see [`crate::bitmap::rle::fuzz_decode`].
pub fn bitmap_rle(data: &[u8]) {
    crate::bitmap::rle::fuzz_decode(data);
}

/// The peer-link wire format: see [`crate::repl::wire::fuzz_decode`] (frames with their CRCs, or
/// a bare payload with the CRCs bypassed; whatever decodes must re-encode to the same bytes).
pub fn wire(data: &[u8]) {
    crate::repl::wire::fuzz_decode(data);
}

/// A control-socket request line, as the daemon reads it: whatever decodes re-encodes to a
/// line that decodes to the same request (what drbdadm sends is what the daemon runs).
pub fn ctl_request(data: &[u8]) {
    let Ok(req) = serde_json::from_slice::<crate::ctl::proto::Request>(data) else {
        return;
    };
    let line = match serde_json::to_vec(&req) {
        Ok(l) => l,
        Err(e) => panic!("a decoded request does not encode: {e}"),
    };
    match serde_json::from_slice::<crate::ctl::proto::Request>(&line) {
        Ok(again) => assert_eq!(again, req, "control request round trip"),
        Err(e) => panic!("a re-encoded request does not decode: {e}"),
    }
}

/// The peer link's handshake as the accepting node runs it (Hello checks, CRAM-HMAC): see
/// [`crate::net::connect::fuzz_accept`].
pub fn peer_handshake(data: &[u8]) {
    crate::net::connect::fuzz_accept(data);
}
