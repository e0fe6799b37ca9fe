//! Addresses: `address [ipv4|ipv6] ADDR:PORT`, IPv6 written as `[fd0c::1]:7789`.

use super::error::ConfigError;
use super::lexer::Token;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn keyword(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// `IP:PORT` with IPv6 in brackets.
pub fn parse_sockaddr(text: &str) -> Option<SocketAddr> {
    text.parse().ok()
}

/// Parses `[family] ADDR:PORT` from `args`, which must hold nothing else; `key` is the keyword
/// (for messages). Returns the address; the family must agree with it.
pub fn parse_address(key: &Token, args: &[Token]) -> Result<SocketAddr, ConfigError> {
    let (family, rest) = match args.first().and_then(|t| t.text()) {
        Some("ipv4") => (Some(Family::Ipv4), args.get(1..).unwrap_or(&[])),
        Some("ipv6") => (Some(Family::Ipv6), args.get(1..).unwrap_or(&[])),
        Some(af @ ("ssocks" | "sdp" | "sci")) => {
            return Err(args[0].pos.err(format!(
                "address family '{af}' is not supported by udrbd (use ipv4 or ipv6)"
            )));
        }
        _ => (None, args),
    };
    let Some(tok) = rest.first() else {
        return Err(key.pos.err(format!(
            "'{}' needs an address: [ipv4|ipv6] ADDR:PORT",
            key.text().unwrap_or("")
        )));
    };
    if let Some(extra) = rest.get(1) {
        return Err(extra.pos.err(format!(
            "expected ';' after {}, found {}",
            tok.describe(),
            extra.describe()
        )));
    }
    let text = tok.text().unwrap_or("");
    let sa = parse_sockaddr(text).ok_or_else(|| {
        tok.pos.err(format!(
            "bad address '{text}': expected ADDR:PORT (IPv6 as ipv6 [ADDR]:PORT)"
        ))
    })?;
    match (family, sa) {
        (Some(Family::Ipv4), SocketAddr::V6(_)) => {
            Err(tok.pos.err(format!("'{text}' is not an IPv4 address")))
        }
        (Some(Family::Ipv6), SocketAddr::V4(_)) => {
            Err(tok.pos.err(format!("'{text}' is not an IPv6 address")))
        }
        _ => Ok(sa),
    }
}

/// How an address is written in a dump: `ipv4 1.2.3.4:7788` / `ipv6 [::1]:7788`.
pub fn show(sa: &SocketAddr) -> String {
    match sa {
        SocketAddr::V4(_) => format!("ipv4 {sa}"),
        SocketAddr::V6(_) => format!("ipv6 {sa}"),
    }
}
