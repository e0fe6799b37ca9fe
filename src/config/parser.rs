//! Tokens to the generic statement tree (see `ast`). The grammar is two rules,
//! `stmts := stmt*` and `stmt := WORD arg* (';' | '{' stmts '}')`, so it is a hand-written
//! recursive descent over the token slice: that gives every error the exact token position and
//! a message in the operator's terms, which a combinator library would make harder.

use super::ast::{Body, Stmt};
use super::error::{ConfigError, Pos};
use super::lexer::{TokKind, Token};

/// A cursor over the token slice.
struct Input<'t> {
    toks: &'t [Token],
    at: usize,
}

impl<'t> Input<'t> {
    fn peek_token(&self) -> Option<&'t Token> {
        self.toks.get(self.at)
    }
    fn next_token(&mut self) -> Option<&'t Token> {
        let t = self.toks.get(self.at);
        self.at += usize::from(t.is_some());
        t
    }
}

/// Sections may nest this deep; more is certainly a broken (or hostile) file, and the limit keeps
/// the recursive descent from overflowing the stack.
const MAX_DEPTH: usize = 16;

/// Parses a whole file.
pub fn parse(tokens: &[Token], end: &Pos) -> Result<Vec<Stmt>, ConfigError> {
    let mut input = Input {
        toks: tokens,
        at: 0,
    };
    let stmts = stmts(&mut input, end, None, 0)?;
    Ok(stmts)
}

/// Statements up to the closing `}` of `open` (or end of file when `open` is `None`).
fn stmts(
    input: &mut Input<'_>,
    end: &Pos,
    open: Option<&Stmt>,
    depth: usize,
) -> Result<Vec<Stmt>, ConfigError> {
    let mut out = Vec::new();
    loop {
        let Some(tok) = input.peek_token() else {
            return match open {
                None => Ok(out),
                Some(s) => Err(end.err(format!(
                    "unexpected end of file, expected '}}' to close '{}' opened at line {}",
                    title(s),
                    s.pos().line
                ))),
            };
        };
        match tok.kind {
            TokKind::RBrace => {
                if open.is_some() {
                    input.next_token();
                    return Ok(out);
                }
                return Err(tok.pos.err("unexpected '}' (no section is open)"));
            }
            TokKind::LBrace | TokKind::Semi => {
                return Err(tok
                    .pos
                    .err(format!("expected a keyword, found {}", tok.describe())));
            }
            TokKind::Word(_) | TokKind::Str(_) => out.push(stmt(input, end, depth)?),
            TokKind::Note(_) => {
                let key = tok.clone();
                input.next_token();
                out.push(Stmt {
                    key,
                    args: Vec::new(),
                    body: None,
                });
            }
        }
    }
}

fn stmt(input: &mut Input<'_>, end: &Pos, depth: usize) -> Result<Stmt, ConfigError> {
    let Some(key) = input.next_token().cloned() else {
        return Err(end.err("unexpected end of file, expected a keyword"));
    };
    let mut args = Vec::new();
    loop {
        let Some(tok) = input.next_token() else {
            let what = args.last().unwrap_or(&key);
            return Err(end.err(format!(
                "unexpected end of file, expected ';' or '{{' after {}",
                what.describe()
            )));
        };
        match tok.kind {
            TokKind::Word(_) | TokKind::Str(_) => args.push(tok.clone()),
            TokKind::Note(_) => {}
            TokKind::Semi => {
                return Ok(Stmt {
                    key,
                    args,
                    body: None,
                });
            }
            TokKind::RBrace => {
                let what = args.last().unwrap_or(&key);
                return Err(tok.pos.err(format!(
                    "expected ';' after {}, found '}}'",
                    what.describe()
                )));
            }
            TokKind::LBrace => {
                if depth >= MAX_DEPTH {
                    return Err(tok.pos.err("sections nested too deeply"));
                }
                let open = tok.pos.clone();
                let mut s = Stmt {
                    key,
                    args,
                    body: None,
                };
                let inner = stmts(input, end, Some(&s), depth + 1)?;
                s.body = Some(Body { open, stmts: inner });
                return Ok(s);
            }
        }
    }
}

/// `resource r0` for messages.
pub fn title(s: &Stmt) -> String {
    let mut t = s.name().to_string();
    for a in &s.args {
        t.push(' ');
        t.push_str(a.text().unwrap_or(""));
    }
    t
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::lexer::tokenize;
    use super::*;
    use std::sync::Arc;

    fn p(text: &str) -> Result<Vec<Stmt>, String> {
        let f: Arc<str> = Arc::from("f");
        let (t, end) = tokenize(&f, text).map_err(|e| e.to_string())?;
        parse(&t, &end).map_err(|e| e.to_string())
    }

    #[test]
    fn nested_sections() {
        let s = p("resource r { net { protocol C; } device minor 1; }").unwrap();
        assert_eq!(s.len(), 1);
        let body = &s[0].body.as_ref().unwrap().stmts;
        assert_eq!(body.len(), 2);
        assert_eq!(body[1].args.len(), 2);
    }

    #[test]
    fn errors() {
        assert_eq!(
            p("a { b c }").unwrap_err(),
            "f:1:9: expected ';' after 'c', found '}'"
        );
        assert_eq!(
            p("resource r {\n x;\n").unwrap_err(),
            "f:3:1: unexpected end of file, expected '}' to close 'resource r' opened at line 1"
        );
        assert_eq!(
            p("}").unwrap_err(),
            "f:1:1: unexpected '}' (no section is open)"
        );
        assert!(p(&"a{".repeat(100)).is_err());
    }
}
