//! The syntax tree: the language is uniform (`keyword args... ;` or `keyword args... { body }`),
//! so the parser builds this generic tree and `build` gives it meaning. Keeping the two apart
//! lets the grammar stay tiny while the semantic pass knows each keyword's arity and can say
//! "expected ';'" exactly where a value list runs on.

use super::error::Pos;
use super::lexer::Token;

/// One statement.
#[derive(Debug, Clone)]
pub struct Stmt {
    /// The keyword (a word or, for `"resource"` spelled in quotes, a string).
    pub key: Token,
    /// Everything between the keyword and `;` or `{`.
    pub args: Vec<Token>,
    /// `Some` for a section, with the position of its `{`.
    pub body: Option<Body>,
}

#[derive(Debug, Clone)]
pub struct Body {
    pub open: Pos,
    pub stmts: Vec<Stmt>,
}

impl Stmt {
    pub fn name(&self) -> &str {
        self.key.text().unwrap_or("")
    }
    pub fn pos(&self) -> &Pos {
        &self.key.pos
    }
}
