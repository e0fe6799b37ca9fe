#![no_main]
// The entry point is shared with the corpus-replay test (tests/fuzz_corpus.rs), which runs
// every file in fuzz/corpus/ctl_request/ on the stable toolchain.
libfuzzer_sys::fuzz_target!(|data: &[u8]| udrbd::fuzzing::ctl_request(data));
