//! The pure layers (config, meta, bitmap, repl, nbd::proto) must not do I/O, spawn threads, read
//! the clock or draw unseeded randomness (DESIGN.md, "Dependencies point one way"). That is what
//! lets the simulator drive them deterministically, so it is enforced here by scanning their
//! sources rather than left to review.

use std::path::{Path, PathBuf};

/// Names a pure module must not mention in code. Comment lines (`//`, `///`, `//!`) are skipped,
/// so the rule can be explained in docs; anything else, strings included, counts.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "std::fs",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "std::net::UdpSocket",
    "Instant::now",
    "SystemTime::now",
    "thread_rng",
    "rand::random",
    "getrandom",
    "std::thread",
    // The socket types under any import path (`use std::net::*;` then `TcpStream::connect`).
    "TcpStream",
    "TcpListener",
    "UdpSocket",
];

/// Items that must not appear in a grouped import such as `use std::{fs, thread};`, which the
/// plain substring list above would miss.
const FORBIDDEN_IN_STD_GROUP: &[&str] = &["fs", "thread"];

/// Source trees (directories scanned recursively, or single files) that must stay pure.
const PURE: &[&str] = &[
    "src/config",
    "src/meta",
    "src/bitmap",
    "src/repl",
    "src/nbd/proto.rs",
    "src/nbd/proto",
];

#[derive(Debug, PartialEq, Eq)]
struct Violation {
    /// 1-based line number.
    line: usize,
    what: String,
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with("//")
}

/// Every forbidden name in `src`, with its line.
fn violations(src: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    for (i, line) in src.lines().enumerate() {
        if is_comment(line) {
            continue;
        }
        for pat in FORBIDDEN {
            if line.contains(pat) {
                out.push(Violation {
                    line: i + 1,
                    what: (*pat).to_string(),
                });
            }
        }
    }
    out.extend(std_group_violations(src));
    out
}

/// Finds `std::{ ... }` groups (possibly spanning lines) whose top-level items include a
/// forbidden module.
fn std_group_violations(src: &str) -> Vec<Violation> {
    // Blank out comment lines but keep line breaks so offsets still map to line numbers.
    let code: String = src
        .lines()
        .map(|l| if is_comment(l) { "" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut search = 0;
    while let Some(found) = code[search..].find("std::{") {
        let open = search + found + "std::".len();
        let line = code[..open].matches('\n').count() + 1;
        let mut depth = 0usize;
        let mut item = String::new();
        let mut items = Vec::new();
        let mut end = code.len();
        for (off, c) in code[open..].char_indices() {
            match c {
                '{' => {
                    depth += 1;
                    if depth == 1 {
                        continue;
                    }
                }
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        items.push(std::mem::take(&mut item));
                        end = open + off;
                        break;
                    }
                }
                ',' if depth == 1 => {
                    items.push(std::mem::take(&mut item));
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        for it in items {
            // `fs`, `fs::File`, `fs as f`, `thread::{spawn}` all start with the module name.
            let head = it
                .trim()
                .split(|c: char| c == ':' || c == '{' || c.is_whitespace())
                .next()
                .unwrap_or("");
            if FORBIDDEN_IN_STD_GROUP.contains(&head) {
                out.push(Violation {
                    line,
                    what: format!("std::{{{head}}}"),
                });
            }
        }
        search = end.max(open);
    }
    out
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_path_buf());
        }
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        // Layers that do not exist yet are simply not checked.
        return;
    };
    for entry in entries.flatten() {
        rust_files(&entry.path(), out);
    }
}

#[test]
fn pure_modules_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for p in PURE {
        rust_files(&root.join(p), &mut files);
    }
    files.sort();
    assert!(
        files.iter().any(|f| f.starts_with(root.join("src/bitmap"))),
        "scanner found no sources; paths wrong? {files:?}"
    );
    let mut report = Vec::new();
    for f in &files {
        let src =
            std::fs::read_to_string(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        for v in violations(&src) {
            report.push(format!(
                "{}:{}: names `{}`",
                f.strip_prefix(root).unwrap_or(f).display(),
                v.line,
                v.what
            ));
        }
    }
    assert!(
        report.is_empty(),
        "pure modules must not do I/O, threads, clocks or unseeded randomness:\n{}",
        report.join("\n")
    );
}

/// The engine's outputs must not depend on a hash map's iteration order (a random seed per
/// process): the simulator replays a seed to the same action trace.
#[test]
fn the_engine_uses_no_hash_ordered_collections() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/repl"), &mut files);
    assert!(!files.is_empty(), "no sources under src/repl");
    let mut report = Vec::new();
    for f in &files {
        let src =
            std::fs::read_to_string(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        for (i, line) in src.lines().enumerate() {
            if !is_comment(line) && (line.contains("HashMap") || line.contains("HashSet")) {
                report.push(format!("{}:{}", f.display(), i + 1));
            }
        }
    }
    assert!(
        report.is_empty(),
        "use BTreeMap/BTreeSet in the engine:\n{}",
        report.join("\n")
    );
}

#[test]
fn checker_flags_forbidden_lines() {
    let sample = "\
//! Docs may say tokio and std::fs freely.
/// Even Instant::now in a doc comment.
use std::collections::HashMap;
    // indented comment: std::thread::spawn
use std::fs::File;
fn f() { let t = std::time::Instant::now(); }
let s = tokio::net::TcpStream::connect(a);
let r = rand::thread_rng();
";
    let got: Vec<(usize, String)> = violations(sample)
        .into_iter()
        .map(|v| (v.line, v.what))
        .collect();
    let want: Vec<(usize, String)> = [
        (5, "std::fs"),
        (6, "Instant::now"),
        (7, "tokio"),
        (7, "TcpStream"),
        (8, "thread_rng"),
    ]
    .into_iter()
    .map(|(l, w)| (l, w.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn checker_passes_pure_code() {
    let sample = "\
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::{fmt, io::Read};
use crate::types::{BlockIdx, Sector};
fn now(t: Time) -> Time { t } // time is an argument
";
    assert_eq!(violations(sample), vec![]);
}

#[test]
fn checker_sees_grouped_std_imports() {
    let sample = "\
use std::{collections::HashMap, fs};
use std::{
    fmt,
    thread::{self, spawn},
};
use std::{fs as f};
// use std::{fs};
";
    let got: Vec<(usize, String)> = violations(sample)
        .into_iter()
        .map(|v| (v.line, v.what))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "std::{fs}".to_string()),
            (2, "std::{thread}".to_string()),
            (6, "std::{fs}".to_string()),
        ]
    );
}

#[test]
fn checker_fails_when_a_line_is_added() {
    // The property the test exists for: take clean code, add one offending line, and it fails.
    let clean = "pub fn f(now: u64) -> u64 { now }\n";
    assert!(violations(clean).is_empty());
    let dirty = format!("{clean}pub fn g() {{ let _ = std::fs::read(\"x\"); }}\n");
    assert_eq!(
        violations(&dirty),
        vec![Violation {
            line: 2,
            what: "std::fs".to_string()
        }]
    );
}
