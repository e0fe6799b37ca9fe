#![no_main]
// The decoder under test is shared with the corpus-replay test (tests/fuzz_corpus.rs), which runs
// every file in fuzz/corpus/bitmap_rle/ on the stable toolchain.
libfuzzer_sys::fuzz_target!(|data: &[u8]| udrbd::fuzzing::bitmap_rle(data));
