//! Replays every fuzz corpus file through the same entry points the cargo-fuzz targets use, on the
//! stable toolchain, so a crash the fuzzer once found (and saved) stays fixed.
//! Run the fuzzers themselves by hand: `cargo +nightly fuzz run config` (see the README).

use std::path::Path;

fn replay(target: &str, decode: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        if path.is_file() {
            let data = std::fs::read(&path).expect("corpus file");
            decode(&data);
            n += 1;
        }
    }
    assert!(n > 0, "fuzz corpus {target} is empty: seed it");
}

#[test]
fn config_corpus() {
    replay("config", udrbd::fuzzing::config);
}

#[test]
fn superblock_corpus() {
    replay("superblock", udrbd::fuzzing::superblock);
}

#[test]
fn al_corpus() {
    replay("al", udrbd::fuzzing::al);
}

#[test]
fn bitmap_page_corpus() {
    replay("bitmap_page", udrbd::fuzzing::bitmap_page);
}

#[test]
fn bitmap_rle_corpus() {
    replay("bitmap_rle", udrbd::fuzzing::bitmap_rle);
}
