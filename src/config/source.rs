//! Where config text comes from, and `include` expansion. The module itself never touches the
//! filesystem: drbdadm passes a [`Source`] over the real one, tests a [`MemSource`].

use super::ast::Stmt;
use super::build::build;
use super::error::{ConfigError, Pos};
use super::lexer::{TokKind, tokenize};
use super::model::Config;
use super::parser::parse;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reads config files and expands include globs.
pub trait Source {
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Paths matching `pattern` (wildcards in any component the implementation supports), sorted.
    fn glob(&self, pattern: &Path) -> io::Result<Vec<PathBuf>>;
}

/// An in-memory file tree, for tests and fuzzing. Globs support `*` and `?` in the file name.
#[derive(Debug, Clone, Default)]
pub struct MemSource {
    files: BTreeMap<PathBuf, String>,
}

impl MemSource {
    pub fn new() -> MemSource {
        MemSource::default()
    }
    pub fn with(mut self, path: impl Into<PathBuf>, text: impl Into<String>) -> MemSource {
        self.files.insert(path.into(), text.into());
        self
    }
}

/// `*` and `?` wildcard match over characters, in O(pattern x name): on a mismatch only the
/// last `*` is retried one character further. (The recursive matcher this replaced tried every
/// split for every `*`, exponential in their number: the fuzzer found an include with a hundred
/// stars that ran for minutes.)
fn wild_match(pat: &[char], s: &[char]) -> bool {
    let (mut p, mut i) = (0, 0);
    // The last `*` seen, and where in `s` it has matched up to.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pat.get(p) {
            Some('*') => {
                star = Some((p, i));
                p += 1;
            }
            Some(&c) if c == '?' || c == s[i] => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|&c| c == '*')
}

impl Source for MemSource {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
    }

    fn glob(&self, pattern: &Path) -> io::Result<Vec<PathBuf>> {
        let dir = pattern.parent().unwrap_or(Path::new(""));
        let pat: Vec<char> = pattern
            .file_name()
            .map(|n| n.to_string_lossy().chars().collect())
            .unwrap_or_default();
        // BTreeMap order is sorted order.
        Ok(self
            .files
            .keys()
            .filter(|p| p.parent().unwrap_or(Path::new("")) == dir)
            .filter(|p| {
                let name: Vec<char> = p
                    .file_name()
                    .map(|n| n.to_string_lossy().chars().collect())
                    .unwrap_or_default();
                wild_match(&pat, &name)
            })
            .cloned()
            .collect())
    }
}

/// Includes nest at most this deep; deeper is almost certainly a file including itself.
const MAX_INCLUDE_DEPTH: usize = 16;

fn has_wildcard(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// Parses `path` and splices in what its top-level `include`s name.
fn load_stmts(
    src: &dyn Source,
    path: &Path,
    text: &str,
    depth: usize,
    out: &mut Vec<Stmt>,
) -> Result<(), ConfigError> {
    let file: Arc<str> = Arc::from(path.to_string_lossy().as_ref());
    let (tokens, end) = tokenize(&file, text)?;
    for st in parse(&tokens, &end)? {
        if !(st.name() == "include" && matches!(st.key.kind, TokKind::Word(_))) {
            out.push(st);
            continue;
        }
        let Some(arg) = st.args.first() else {
            return Err(st.pos().err("'include' needs a file name or glob"));
        };
        if let Some(extra) = st.args.get(1) {
            return Err(extra.pos.err(format!(
                "expected ';' after {}, found {}",
                arg.describe(),
                extra.describe()
            )));
        }
        if let Some(b) = &st.body {
            return Err(b
                .open
                .err(format!("expected ';' after {}, found '{{'", arg.describe())));
        }
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(st
                .pos()
                .err("includes nested too deeply (does a file include itself?)"));
        }
        let name = arg.text().unwrap_or("");
        let base = path.parent().unwrap_or(Path::new(""));
        let target = base.join(name);
        let files = if has_wildcard(name) {
            // A glob that matches nothing is fine (an empty drbd.d/).
            src.glob(&target)
                .map_err(|e| arg.pos.err(format!("include \"{name}\": {e}")))?
        } else {
            vec![target]
        };
        for f in files {
            let text = src.read(&f).map_err(|e| {
                arg.pos
                    .err(format!("cannot read included file '{}': {e}", f.display()))
            })?;
            load_stmts(src, &f, &text, depth + 1, out)?;
        }
    }
    Ok(())
}

/// Loads the configuration at `path`, following includes.
pub fn load(src: &dyn Source, path: &Path) -> Result<Config, ConfigError> {
    let text = src.read(path).map_err(|e| {
        Pos {
            file: Arc::from(path.to_string_lossy().as_ref()),
            line: 1,
            col: 1,
        }
        .err(format!("cannot read config file: {e}"))
    })?;
    let mut stmts = Vec::new();
    load_stmts(src, path, &text, 0, &mut stmts)?;
    build(&stmts)
}

/// Parses one file's text. Includes are resolved against an otherwise empty file tree: a glob
/// matches nothing, a literal path is an error. (For tests and the fuzzer.)
pub fn parse_str(file_name: &str, text: &str) -> Result<Config, ConfigError> {
    let src = MemSource::new().with(file_name, text);
    load(&src, Path::new(file_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_a_shell_and_in_linear_time() {
        let m = |p: &str, s: &str| {
            wild_match(
                &p.chars().collect::<Vec<_>>(),
                &s.chars().collect::<Vec<_>>(),
            )
        };
        assert!(m("*.res", "r0.res"));
        assert!(m("r?.res", "r0.res"));
        assert!(!m("r?.res", "r10.res"));
        assert!(m("*a*b*", "xxaxxbxx"));
        assert!(!m("*a*b", "xxaxxbxx"));
        assert!(m("", ""));
        assert!(m("**", ""));
        assert!(!m("a", ""));
        // A hundred stars against a long name that does not match: instant.
        let stars = format!("{}x", "*".repeat(100));
        assert!(!m(&stars, &"a".repeat(200)));
    }

    #[test]
    fn globs() {
        let src = MemSource::new()
            .with("/e/d/a.res", "")
            .with("/e/d/b.res", "")
            .with("/e/d/c.conf", "")
            .with("/e/x.res", "");
        let got = src.glob(Path::new("/e/d/*.res")).unwrap_or_default();
        assert_eq!(
            got,
            vec![PathBuf::from("/e/d/a.res"), PathBuf::from("/e/d/b.res")]
        );
        assert_eq!(
            src.glob(Path::new("/e/d/?.conf")).unwrap_or_default().len(),
            1
        );
    }
}
