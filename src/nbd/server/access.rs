//! Who may use an export over TCP: TLS when the export requires it (`nbd-tls require`), and the
//! export's allow list (`nbd-allow`) of client addresses, networks and TLS names. Clients of the
//! daemon's Unix socket are local and already checked by the socket's permissions (the run
//! directory is root's), so the rules are for TCP clients only.
//!
//! `NBD_OPT_LIST` shows a client only the exports it may use, so a stranger learns nothing
//! from it that `NBD_OPT_INFO` would not tell it.

use crate::nbd::proto::{GoRefusal, RepError};
use std::net::IpAddr;

/// What the server knows about a client when it asks for an export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The TCP client's address; `None` for the Unix socket.
    pub addr: Option<IpAddr>,
    /// `Some` once TLS is on: the client's PSK identity or its certificate's names.
    pub tls_names: Option<Vec<String>>,
}

/// One `nbd-allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    /// An address or a network (`10.0.0.0/8`, `fd00::/64`, `192.0.2.7`).
    Net { addr: IpAddr, prefix: u8 },
    /// A TLS name: a PSK identity, or a DNS name or common name in the client's certificate.
    Name(String),
}

impl Allow {
    /// One word of an `nbd-allow` list: an address, `ADDR/PREFIX`, or a name.
    pub fn parse(word: &str) -> Result<Allow, String> {
        let (ip, prefix) = match word.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (word, None),
        };
        let Ok(addr) = ip.parse::<IpAddr>() else {
            if prefix.is_some() {
                return Err(format!("'{word}' is neither ADDRESS/PREFIX nor a name"));
            }
            return Ok(Allow::Name(word.to_string()));
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("'{word}': the prefix length must be 0 to {max}")),
            },
        };
        Ok(Allow::Net { addr, prefix })
    }

    fn matches(&self, client: IpAddr, tls_names: Option<&[String]>) -> bool {
        match self {
            Allow::Net { addr, prefix } => in_network(client.to_canonical(), *addr, *prefix),
            Allow::Name(n) => tls_names.is_some_and(|names| names.iter().any(|m| m == n)),
        }
    }
}

fn in_network(client: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (client, net) {
        (IpAddr::V4(c), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(c) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(c), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(c) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Parses an `nbd-allow` value: words separated by blanks or commas.
pub fn parse_allow_list(text: &str) -> Result<Vec<Allow>, String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(Allow::parse)
        .collect()
}

/// An export's rules for TCP clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportPolicy {
    /// `nbd-tls require`.
    pub tls_required: bool,
    /// `nbd-allow`; empty: every client.
    pub allow: Vec<Allow>,
    /// No TCP client at all: the export's rules could not be read ([`ExportPolicy::closed`]).
    pub closed: bool,
}

impl ExportPolicy {
    /// Refuses every TCP client: for an export whose rules cannot be read, which must fail
    /// closed rather than open.
    pub fn closed() -> ExportPolicy {
        ExportPolicy {
            closed: true,
            ..ExportPolicy::default()
        }
    }

    /// May `client` use `export`? The refusal is what the client is told.
    pub fn check(&self, export: &str, client: &ClientInfo) -> Result<(), GoRefusal> {
        let Some(addr) = client.addr else {
            return Ok(());
        };
        if self.closed {
            return Err(GoRefusal::new(
                RepError::Policy,
                format!("export '{export}' takes no TCP clients: its nbd-allow cannot be used"),
            ));
        }
        if self.tls_required && client.tls_names.is_none() {
            return Err(GoRefusal::new(
                RepError::TlsReqd,
                format!("export '{export}' requires TLS (nbd-tls require): connect with TLS"),
            ));
        }
        let names = client.tls_names.as_deref();
        if !self.allow.is_empty() && !self.allow.iter().any(|a| a.matches(addr, names)) {
            return Err(GoRefusal::new(
                RepError::Policy,
                format!("this client may not use export '{export}' (nbd-allow)"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(ip: &str, names: Option<&[&str]>) -> ClientInfo {
        ClientInfo {
            addr: Some(ip.parse().unwrap()),
            tls_names: names.map(|n| n.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn allow_lists_match_addresses_networks_and_tls_names() {
        let p = ExportPolicy {
            allow: parse_allow_list("192.0.2.7, 10.0.0.0/8 fd00::/16 qemu-host").unwrap(),
            ..ExportPolicy::default()
        };
        for ok in [
            tcp("192.0.2.7", None),
            tcp("10.9.8.7", None),
            tcp("::ffff:10.1.1.1", None),
            tcp("fd00:1::5", None),
            tcp("198.51.100.1", Some(&["qemu-host"])),
        ] {
            assert!(p.check("r0", &ok).is_ok(), "{ok:?}");
        }
        for refused in [
            tcp("192.0.2.8", None),
            tcp("11.0.0.1", None),
            tcp("fd01::1", None),
            // A name counts only when TLS proved it.
            tcp("198.51.100.1", Some(&["other"])),
        ] {
            let e = p.check("r0", &refused).unwrap_err();
            assert_eq!(e.error, RepError::Policy, "{refused:?}");
        }
        // The Unix socket is not subject to the list.
        assert!(p.check("r0", &ClientInfo::default()).is_ok());
    }

    #[test]
    fn tls_required_refuses_plain_tcp_clients_only() {
        let p = ExportPolicy {
            tls_required: true,
            ..ExportPolicy::default()
        };
        let e = p.check("r0", &tcp("127.0.0.1", None)).unwrap_err();
        assert_eq!(e.error, RepError::TlsReqd);
        assert!(p.check("r0", &tcp("127.0.0.1", Some(&[]))).is_ok());
        assert!(p.check("r0", &ClientInfo::default()).is_ok());
    }

    #[test]
    fn a_closed_policy_refuses_every_tcp_client() {
        let p = ExportPolicy::closed();
        let e = p.check("r0", &tcp("127.0.0.1", Some(&["x"]))).unwrap_err();
        assert_eq!(e.error, RepError::Policy);
        assert!(p.check("r0", &ClientInfo::default()).is_ok());
    }

    #[test]
    fn bad_allow_words_are_refused_with_the_reason() {
        assert!(
            parse_allow_list("10.0.0.0/33")
                .unwrap_err()
                .contains("0 to 32")
        );
        assert!(parse_allow_list("host/8").unwrap_err().contains("neither"));
        assert_eq!(
            parse_allow_list("::1/0").unwrap(),
            vec![Allow::Net {
                addr: "::1".parse().unwrap(),
                prefix: 0
            }]
        );
    }
}
