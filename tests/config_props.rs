//! Properties of the config language: layout does not matter, units convert right, and no
//! input makes the parser panic.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use std::path::Path;
use udrbd::config::{HostQuery, Unit, dump, parse_number, parse_str, resolve};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/configs");

fn samples() -> Vec<String> {
    [
        "samples/a-man-page.res",
        "samples/b-drbd84.res",
        "samples/c-tiebreaker.res",
        "samples/d-minimal.res",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(Path::new(DATA).join(f)).unwrap())
    .collect()
}

const SEPARATORS: &[&str] = &[
    " ",
    "\t",
    "\n",
    "  \n\t ",
    " # a comment { ; \"\n",
    "\n\n# x\n",
];

/// Re-lays out `text`: every run of blanks between tokens becomes `seps[i]`, and comments go
/// at line ends. Lines that are comments (translation notes) are kept as they are.
fn relayout(text: &str, seps: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    let mut next = || {
        i += 1;
        seps[i % seps.len()]
    };
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        out.push_str(SEPARATORS[next() % SEPARATORS.len()]);
        // The sample configs have no spaces inside quoted strings, so splitting on blanks is safe.
        let words: Vec<&str> = line.split_whitespace().collect();
        for (k, w) in words.iter().enumerate() {
            if k > 0 {
                out.push_str(SEPARATORS[next() % SEPARATORS.len()]);
            }
            out.push_str(w);
        }
        if next() % 3 == 0 {
            out.push_str(" # trailing comment");
        }
        out.push('\n');
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn whitespace_and_comments_do_not_change_the_parse(
        which in 0usize..4,
        seps in prop::collection::vec(0usize..64, 1..40),
        from_dump in any::<bool>(),
    ) {
        let original = &samples()[which];
        let base = parse_str("s.res", original).unwrap();
        // Relayout the file as written, or its dump (which carries translation notes).
        let text = if from_dump { dump(&base, None).unwrap() } else { original.clone() };
        let reference = dump(&parse_str("s.res", &text).unwrap(), None).unwrap();
        let moved = relayout(&text, &seps);
        let cfg = parse_str("s.res", &moved).map_err(|e| TestCaseError::fail(format!("{e}\n{moved}")))?;
        prop_assert_eq!(dump(&cfg, None).unwrap(), reference);
    }

    #[test]
    fn sizes_with_units(n in 0u64..100_000, suffix in 0usize..5) {
        let (s, mult): (&str, u64) = [("", 0), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("s", 512)][suffix];
        let text = format!("{n}{s}");
        let per = |unit_bytes: u64| if mult == 0 { n } else { n * mult / unit_bytes };
        prop_assert_eq!(parse_number(&text, Unit::Bytes), Ok(per(1)));
        prop_assert_eq!(parse_number(&text, Unit::KiB), Ok(per(1024)));
        prop_assert_eq!(parse_number(&text, Unit::Sectors), Ok(per(512)));
        prop_assert_eq!(parse_number(&text, Unit::Seconds).is_ok(), mult == 0);

        // Through the whole pipeline: resync-rate is in KiB/s, 1..=8 GiB/s.
        let cfg = parse_str("u.res", &format!(
            "resource r {{ disk {{ resync-rate {text}; }} device minor 1; disk /d; meta-disk internal; \
             on a {{ address 1.1.1.1:1; }} on b {{ address 1.1.1.2:1; }} }}"
        ));
        let want = per(1024);
        if (1..=8 << 20).contains(&want) {
            let q = HostQuery { explicit: Some("a"), hostname: "", is_local: &|_| false };
            let r = resolve(&cfg.unwrap(), "r", &q).unwrap();
            prop_assert_eq!(u64::from(r.volumes[0].disk_opts.resync.resync_rate), want);
            prop_assert_eq!(u64::from(r.peers[0].volumes[0].opts.resync_rate), want);
        } else {
            prop_assert!(cfg.unwrap_err().message.contains("out of range"));
        }
    }

    #[test]
    fn parse_str_never_panics_on_any_string(s in ".{0,400}") {
        let _ = parse_str("fuzz", &s);
    }

    #[test]
    fn parse_str_never_panics_on_config_like_text(
        parts in prop::collection::vec(
            prop::sample::select(vec![
                "resource", "r0", "{", "}", ";", "on", "alice", "node-id", "0", "address", "1.2.3.4:5",
                "net", "disk", "protocol", "C", "volume", "device", "minor", "meta-disk", "internal",
                "connection", "host", "port", "7000", "\"", "#", "\n", "skip", "include", "syncer", "rate",
                "25M", "floating", "connection-mesh", "hosts", "path", "[::1]:9", "ipv6", "none", "[0]",
            ]),
            0..120,
        )
    ) {
        let _ = parse_str("fuzz", &parts.join(" "));
    }

    #[test]
    fn parse_str_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_str("fuzz", &String::from_utf8_lossy(&bytes));
    }
}

/// The fuzz seed corpus: every file parses without panicking; the valid ones parse and dump stably.
#[test]
fn fuzz_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let got = parse_str(&name, &text);
        if name.starts_with("broken-") {
            assert!(got.is_err(), "{name} should not parse");
        } else {
            let cfg = got.unwrap_or_else(|e| panic!("{e}"));
            let d = dump(&cfg, None).unwrap();
            assert_eq!(
                dump(&parse_str(&name, &d).unwrap(), None).unwrap(),
                d,
                "{name}"
            );
        }
        n += 1;
    }
    assert!(n >= 15, "seed corpus has only {n} files");
}
