//! Addresses: `address [ipv4|ipv6] ADDR:PORT`, IPv6 written as `[fd0c::1]:7789`, a link-local
//! one with its interface as `[fe80::1%eth0]:7789` (or the interface's index, `%2`).
//!
//! An interface name is kept as written: `dump` prints it back, and only `resolve` (the config
//! of this node) asks the system for its index, so a configuration naming another node's
//! interface loads and dumps anywhere.

use super::error::{ConfigError, Pos};
use super::lexer::Token;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

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

/// An address as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    /// The address; for an IPv6 `%scope` written as a number its `scope_id` is that number, for
    /// one written as an interface name it is 0 until [`Addr::socket_addr`] looks it up.
    pub sa: SocketAddr,
    /// The interface name after `%`, when the scope is written as a name.
    pub scope: Option<String>,
    /// Where the address is written.
    pub pos: Pos,
}

impl Addr {
    pub fn ip(&self) -> IpAddr {
        self.sa.ip()
    }

    /// The same address with another port.
    pub fn with_port(&self, port: u16) -> Addr {
        let mut a = self.clone();
        a.sa.set_port(port);
        a
    }

    /// The socket address this node uses: an interface name looked up with `if_index` (the
    /// system's `if_nametoindex` in [`super::resolve`]).
    pub fn socket_addr(
        &self,
        if_index: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<SocketAddr, ConfigError> {
        let (Some(name), SocketAddr::V6(mut v6)) = (&self.scope, self.sa) else {
            return Ok(self.sa);
        };
        let index = if_index(name).ok_or_else(|| {
            self.pos.err(format!(
                "address {}: this node has no network interface '{name}' (the %{name} of a \
                 link-local address names the interface that reaches it)",
                show(self)
            ))
        })?;
        v6.set_scope_id(index);
        Ok(SocketAddr::V6(v6))
    }
}

/// As written: `1.2.3.4:7788`, `[fd0c::1]:7788`, `[fe80::1%eth0]:7788`.
impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.scope, self.sa) {
            (Some(name), SocketAddr::V6(v6)) => write!(f, "[{}%{name}]:{}", v6.ip(), v6.port()),
            _ => write!(f, "{}", self.sa),
        }
    }
}

/// `IP:PORT` with IPv6 in brackets (a numeric `%scope` included).
pub fn parse_sockaddr(text: &str) -> Option<SocketAddr> {
    text.parse().ok()
}

/// Linux's rule for interface names (`dev_valid_name`).
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// `IP:PORT`, or `[IPV6%SCOPE]:PORT` with an interface name or index as the scope.
fn parse_text(tok: &Token, text: &str) -> Result<Addr, ConfigError> {
    let bad = || {
        tok.pos.err(format!(
            "bad address '{text}': expected ADDR:PORT (IPv6 as ipv6 [ADDR]:PORT)"
        ))
    };
    let named = text
        .strip_prefix('[')
        .and_then(|t| t.split_once("]:"))
        .and_then(|(inner, port)| Some((inner.split_once('%')?, port)));
    let Some(((ip, scope), port)) = named else {
        return Ok(Addr {
            sa: parse_sockaddr(text).ok_or_else(bad)?,
            scope: None,
            pos: tok.pos.clone(),
        });
    };
    if scope.bytes().all(|b| b.is_ascii_digit()) {
        // A number: std reads it as the scope id.
        return Ok(Addr {
            sa: parse_sockaddr(text).ok_or_else(bad)?,
            scope: None,
            pos: tok.pos.clone(),
        });
    }
    if !valid_ifname(scope) {
        return Err(tok.pos.err(format!(
            "bad interface name '{scope}' in address '{text}': expected [IPV6%INTERFACE]:PORT"
        )));
    }
    let sa = parse_sockaddr(&format!("[{ip}]:{port}")).ok_or_else(bad)?;
    Ok(Addr {
        sa,
        scope: Some(scope.to_string()),
        pos: tok.pos.clone(),
    })
}

/// Parses `[family] ADDR:PORT` from `args`, which must hold nothing else; `key` is the keyword
/// (for messages). Returns the address; the family must agree with it.
pub fn parse_address(key: &Token, args: &[Token]) -> Result<Addr, ConfigError> {
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
    let a = parse_text(tok, text)?;
    match (family, a.sa) {
        (Some(Family::Ipv4), SocketAddr::V6(_)) => {
            Err(tok.pos.err(format!("'{text}' is not an IPv4 address")))
        }
        (Some(Family::Ipv6), SocketAddr::V4(_)) => {
            Err(tok.pos.err(format!("'{text}' is not an IPv6 address")))
        }
        _ => Ok(a),
    }
}

/// How an address is written in a dump: `ipv4 1.2.3.4:7788` / `ipv6 [::1]:7788`.
pub fn show(a: &Addr) -> String {
    match a.sa {
        SocketAddr::V4(_) => format!("ipv4 {a}"),
        SocketAddr::V6(_) => format!("ipv6 {a}"),
    }
}

/// The system's index of interface `name` (`if_nametoindex(3)`), `None` if there is none.
/// The one question the config module asks the operating system: what a `%eth0` in an
/// address means on this node.
pub fn system_if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call, which only reads it.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lexer::TokKind;

    fn tok(text: &str) -> Token {
        Token {
            kind: TokKind::Word(text.into()),
            pos: Pos {
                file: "t".into(),
                line: 1,
                col: 1,
            },
        }
    }

    fn parse(text: &str) -> Result<Addr, ConfigError> {
        parse_address(&tok("address"), &[tok(text)])
    }

    #[test]
    fn scopes_by_name_and_number() {
        let a = parse("[fe80::1%vethX]:7706").expect("parses");
        assert_eq!(a.scope.as_deref(), Some("vethX"));
        assert_eq!(a.to_string(), "[fe80::1%vethX]:7706");
        assert_eq!(show(&a), "ipv6 [fe80::1%vethX]:7706");
        let found = a
            .socket_addr(&|n| (n == "vethX").then_some(7))
            .expect("found");
        assert_eq!(found.to_string(), "[fe80::1%7]:7706");
        let e = a.socket_addr(&|_| None).expect_err("no such interface");
        assert!(e.message.contains("no network interface 'vethX'"), "{e}");

        let n = parse("[fe80::1%3]:7706").expect("parses");
        assert_eq!(
            (n.scope.as_deref(), n.sa.to_string()),
            (None, "[fe80::1%3]:7706".into())
        );
        assert_eq!(n.to_string(), "[fe80::1%3]:7706");

        for bad in [
            "[fe80::1%]:1",
            "[fe80::1%a/b]:1",
            "[fe80::1%0123456789abcdef]:1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("1.2.3.4%eth0:1").is_err());
        assert!(parse_address(&tok("address"), &[tok("ipv4"), tok("[fe80::1%eth0]:1")]).is_err());
    }

    #[test]
    fn loopback_has_an_index() {
        assert!(system_if_index("lo").is_some());
        assert_eq!(system_if_index("udrbd-none0"), None);
        assert_eq!(system_if_index("a\0b"), None);
    }
}
