#![no_main]
// The entry point is shared with the corpus-replay test (src/nbd/corpus_tests.rs), which runs
// every file in fuzz/corpus/nbd_option/ on the stable toolchain.
libfuzzer_sys::fuzz_target!(|data: &[u8]| udrbd::nbd::proto::fuzz_options(data));
