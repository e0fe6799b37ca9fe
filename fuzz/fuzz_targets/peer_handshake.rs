#![no_main]
// The acceptor's side of the peer-link handshake (Hello, CRAM-HMAC) fed what a dialer sends; the
// corpus is replayed by tests/fuzz_corpus.rs on the stable toolchain.
libfuzzer_sys::fuzz_target!(|data: &[u8]| udrbd::fuzzing::peer_handshake(data));
