//! Tokens of the drbd.conf language: words, double-quoted strings, `{`, `}` and `;`.
//! `#` starts a comment to the end of the line (outside strings).

use super::error::{ConfigError, Pos};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokKind {
    /// A bare word: anything up to whitespace or one of `{ } ; " #`.
    Word(String),
    /// A double-quoted string, escapes resolved.
    Str(String),
    LBrace,
    RBrace,
    Semi,
    /// A comment `# ... translated to ...` as `dump` writes it: kept so that dumping a dump
    /// reproduces it (the translation itself is gone by then).
    Note(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokKind,
    pub pos: Pos,
}

impl Token {
    /// The text of a word or string; `None` for punctuation.
    pub fn text(&self) -> Option<&str> {
        match &self.kind {
            TokKind::Word(s) | TokKind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// How the token reads in a message.
    pub fn describe(&self) -> String {
        match &self.kind {
            TokKind::Word(s) => format!("'{s}'"),
            TokKind::Str(s) => format!("\"{s}\""),
            TokKind::LBrace => "'{'".into(),
            TokKind::RBrace => "'}'".into(),
            TokKind::Semi => "';'".into(),
            TokKind::Note(_) => "a comment".into(),
        }
    }
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '{' | '}' | ';' | '"' | '#')
}

/// Splits `text` into tokens; the returned position is where the file ends (for "unexpected end").
pub fn tokenize(file: &Arc<str>, text: &str) -> Result<(Vec<Token>, Pos), ConfigError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let (mut line, mut col) = (1u32, 1u32);
    let pos = |line, col| Pos {
        file: file.clone(),
        line,
        col,
    };
    // Advances over one char, keeping line/col right.
    macro_rules! bump {
        ($c:expr) => {{
            if $c == '\n' {
                line = line.saturating_add(1);
                col = 1;
            } else {
                col = col.saturating_add(1);
            }
        }};
    }
    while let Some(&c) = chars.peek() {
        let start = pos(line, col);
        match c {
            c if c.is_whitespace() => {
                chars.next();
                bump!(c);
            }
            '#' => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '\n' {
                        break;
                    }
                    chars.next();
                    bump!(c);
                    s.push(c);
                }
                // Decided on the text as it is kept (trailing blanks trimmed), so a kept note
                // is kept again when its dump is read back (the fuzzer found a comment ending
                // in " translated to \x0c": kept, dumped without the blank, then dropped).
                let s = s.trim_end();
                if s.contains(" translated to ") {
                    out.push(Token {
                        kind: TokKind::Note(s.to_string()),
                        pos: start,
                    });
                }
            }
            '{' | '}' | ';' => {
                chars.next();
                bump!(c);
                let kind = match c {
                    '{' => TokKind::LBrace,
                    '}' => TokKind::RBrace,
                    _ => TokKind::Semi,
                };
                out.push(Token { kind, pos: start });
            }
            '"' => {
                chars.next();
                bump!(c);
                let mut s = String::new();
                loop {
                    match chars.next() {
                        // drbdadm's scanner does not let a string span lines either.
                        None | Some('\n') => {
                            return Err(start.err("unterminated string (missing '\"')"));
                        }
                        Some('"') => {
                            bump!('"');
                            break;
                        }
                        Some('\\') => {
                            bump!('\\');
                            match chars.next() {
                                None | Some('\n') => {
                                    return Err(start.err("unterminated string (missing '\"')"));
                                }
                                Some(e) => {
                                    bump!(e);
                                    s.push(e);
                                }
                            }
                        }
                        Some(ch) => {
                            bump!(ch);
                            s.push(ch);
                        }
                    }
                }
                out.push(Token {
                    kind: TokKind::Str(s),
                    pos: start,
                });
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if !is_word_char(c) {
                        break;
                    }
                    chars.next();
                    bump!(c);
                    s.push(c);
                }
                out.push(Token {
                    kind: TokKind::Word(s),
                    pos: start,
                });
            }
        }
    }
    Ok((out, pos(line, col)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokKind> {
        let f: Arc<str> = Arc::from("t");
        tokenize(&f, text)
            .map(|(t, _)| t.into_iter().map(|t| t.kind).collect())
            .unwrap_or_default()
    }

    #[test]
    fn words_strings_punctuation() {
        assert_eq!(
            kinds("on \"alice\" { address [::1]:7000; } # c"),
            vec![
                TokKind::Word("on".into()),
                TokKind::Str("alice".into()),
                TokKind::LBrace,
                TokKind::Word("address".into()),
                TokKind::Word("[::1]:7000".into()),
                TokKind::Semi,
                TokKind::RBrace,
            ]
        );
        assert_eq!(kinds(r#""a\"b""#), vec![TokKind::Str("a\"b".into())]);
    }

    #[test]
    fn positions_and_unterminated() {
        let f: Arc<str> = Arc::from("t");
        let (toks, end) = tokenize(&f, "a\n  b;").unwrap();
        assert_eq!((toks[1].pos.line, toks[1].pos.col), (2, 3));
        assert_eq!((end.line, end.col), (2, 5));
        let e = tokenize(&f, "x \"abc\n").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("t:1:3: unterminated string (missing '\"')")
        );
    }
}
