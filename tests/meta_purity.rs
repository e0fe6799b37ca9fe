//! `meta` is a pure layer (DESIGN.md): it must not name the OS, the clock or randomness.

#![allow(clippy::unwrap_used)]

#[test]
fn meta_names_no_io_clock_or_randomness() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/meta");
    let forbidden = [
        "std::fs",
        "std::net",
        "tokio",
        "Instant::now",
        "SystemTime",
        "getrandom",
        "rand::",
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for f in forbidden {
            assert!(!text.contains(f), "{} names {f}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 6);
}
