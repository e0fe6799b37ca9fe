//! What every command needs before it acts: the parsed configuration, which host is "me", and
//! the resources or volumes the operands name.

use crate::error::{AdmError, E_CONFIG_INVALID, E_EXEC, E_USAGE};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use udrbd::config::{self, Config, HostQuery, Resolved, Source};

/// Reads configuration files from the real filesystem (the config module itself is pure).
#[derive(Debug, Default)]
pub struct FsSource;

impl Source for FsSource {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn glob(&self, pattern: &Path) -> io::Result<Vec<PathBuf>> {
        let text = pattern.to_str().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "include pattern is not UTF-8")
        })?;
        let paths = glob::glob(text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut out: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
        out.sort();
        Ok(out)
    }
}

/// Loads the configuration named by `-c` (or `UDRBD_CONFIG`), following includes.
pub fn load_config(path: &Path) -> Result<Config, AdmError> {
    // drbdadm's words and codes for a file it cannot open: a file named with -c is an
    // execution error (20), the default location a configuration error (10).
    if let Err(e) = std::fs::File::open(path) {
        let e = e.to_string();
        let e = e.split(" (os error").next().unwrap_or(&e);
        return Err(if path == Path::new(crate::cli::DEFAULT_CONFIG) {
            AdmError::new(
                E_CONFIG_INVALID,
                format!("Can not open '{}': {e}", path.display()),
            )
        } else {
            AdmError::new(E_EXEC, format!("Can not open '{}'.", path.display()))
        });
    }
    config::load(&FsSource, path).map_err(|e| AdmError::new(E_CONFIG_INVALID, e.to_string()))
}

/// This machine's node name, as `uname -n` prints it.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes and gethostname NUL-terminates within it
    // (we pass one byte less so a truncated name is still terminated).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether `ip` is assigned to an interface of this machine: binding to it succeeds only then.
/// Nothing is sent.
pub fn is_local_address(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// One operand, split: `RES`, `RES/VOL`, `RES:PEER`, `RES:PEER/VOL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub resource: String,
    pub peer: Option<String>,
    pub volume: Option<u32>,
}

impl Target {
    pub fn parse(word: &str) -> Result<Target, AdmError> {
        let (head, volume) = match word.split_once('/') {
            Some((h, v)) => {
                let n = v.parse::<u32>().map_err(|_| {
                    AdmError::new(
                        E_USAGE,
                        format!("'{word}': volume number expected after '/'"),
                    )
                })?;
                (h, Some(n))
            }
            None => (word, None),
        };
        let (resource, peer) = match head.split_once(':') {
            Some((r, p)) => (r.to_string(), Some(p.to_string())),
            None => (head.to_string(), None),
        };
        if resource.is_empty() {
            return Err(AdmError::new(
                E_USAGE,
                format!("'{word}': resource name expected"),
            ));
        }
        Ok(Target {
            resource,
            peer,
            volume,
        })
    }
}

impl Target {
    /// The operand again: `RES[:PEER][/VOL]`.
    pub fn word(&self) -> String {
        let mut w = self.resource.clone();
        if let Some(p) = &self.peer {
            w.push(':');
            w.push_str(p);
        }
        if let Some(v) = self.volume {
            w.push_str(&format!("/{v}"));
        }
        w
    }
}

/// Expands the operands: `all` is every resource; unknown names are an error, as in drbdadm.
pub fn expand_targets(cfg: &Config, words: &[String]) -> Result<Vec<Target>, AdmError> {
    let mut out = Vec::new();
    for w in words {
        if w == "all" {
            out.extend(cfg.resource_names().into_iter().map(|r| Target {
                resource: r.to_string(),
                peer: None,
                volume: None,
            }));
            continue;
        }
        let t = Target::parse(w)?;
        if !cfg.has_resource(&t.resource) {
            return Err(AdmError::new(
                E_CONFIG_INVALID,
                format!(
                    "'{}' not defined in your config (for this host).",
                    t.resource
                ),
            ));
        }
        out.push(t);
    }
    Ok(out)
}

/// Resolves `resource` for this node.
pub fn resolve(cfg: &Config, resource: &str, node: Option<&str>) -> Result<Resolved, AdmError> {
    let host = hostname();
    let query = HostQuery {
        explicit: node,
        hostname: &host,
        is_local: &is_local_address,
    };
    config::resolve(cfg, resource, &query)
        .map_err(|e| AdmError::new(E_CONFIG_INVALID, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operand_forms() {
        let t = Target::parse("r0").unwrap();
        assert_eq!((t.resource.as_str(), t.peer, t.volume), ("r0", None, None));
        let t = Target::parse("r0/1").unwrap();
        assert_eq!(t.volume, Some(1));
        let t = Target::parse("r0:bob/2").unwrap();
        assert_eq!((t.peer.as_deref(), t.volume), (Some("bob"), Some(2)));
        assert_eq!(t.word(), "r0:bob/2");
        assert!(Target::parse("r0/x").is_err());
        assert!(Target::parse("/1").is_err());
    }

    #[test]
    fn loopback_is_local_and_documentation_range_is_not() {
        assert!(is_local_address("127.0.0.1".parse().unwrap()));
        assert!(!is_local_address("192.0.2.77".parse().unwrap()));
    }
}
