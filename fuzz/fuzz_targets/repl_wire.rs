#![no_main]
// The decoder under test is shared with the corpus-replay test (tests/fuzz_corpus.rs), which runs
// every file in fuzz/corpus/repl_wire/ on the stable toolchain.
libfuzzer_sys::fuzz_target!(|data: &[u8]| udrbd::fuzzing::wire(data));
