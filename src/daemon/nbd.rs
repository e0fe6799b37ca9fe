//! The daemon's NBD front: the Unix socket every node has (`$UDRBD_RUN_DIR/nbd.sock`) and the
//! TCP listeners that resources ask for with `nbd-listen`.

use super::Daemon;
use super::nbd_backend::DaemonBackend;
use crate::config::{NbdTlsMode, ResourceOptions};
use crate::nbd::server::access::{ExportPolicy, parse_allow_list};
use crate::nbd::server::{NbdServer, ServerConfig, bind_unix};
use crate::tls::{NbdTls, NbdTlsFiles};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long SIGTERM waits for clients' in-flight requests before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The running NBD server and what it listens on.
#[derive(Debug)]
pub struct NbdFront {
    server: NbdServer,
    unix: PathBuf,
    /// Each TCP listener and the TLS files it offers.
    tcp: Mutex<BTreeMap<SocketAddr, Option<NbdTlsFiles>>>,
}

/// The TLS files of a resource's `nbd-tls-*` options.
fn tls_files(o: &ResourceOptions) -> NbdTlsFiles {
    NbdTlsFiles {
        certificate: o.nbd_tls_certificate_file.clone(),
        privkey: o.nbd_tls_privkey_file.clone(),
        ca: o.nbd_tls_ca_file.clone(),
        psk: o.nbd_tls_psk_file.clone(),
    }
}

/// The rules for a resource's TCP clients, or why its `nbd-allow` cannot be used.
pub fn export_policy(o: &ResourceOptions) -> Result<ExportPolicy, String> {
    let allow = match &o.nbd_allow {
        Some(a) => parse_allow_list(a).map_err(|e| format!("nbd-allow: {e}"))?,
        None => Vec::new(),
    };
    Ok(ExportPolicy {
        tls_required: o.nbd_tls == NbdTlsMode::Require,
        allow,
        closed: false,
    })
}

/// Checks a resource's `nbd-tls*` and `nbd-allow` options and makes its TLS server, if any.
/// `tcp` says whether the resource has an `nbd-listen` (they apply only there).
pub fn export_tls(o: &ResourceOptions, tcp: bool) -> Result<Option<Arc<NbdTls>>, String> {
    export_policy(o)?;
    let files = tls_files(o);
    let uses_tls = o.nbd_tls != NbdTlsMode::Off;
    if !tcp && (uses_tls || o.nbd_allow.is_some()) {
        return Err(
            "nbd-tls and nbd-allow apply to the TCP export: set nbd-listen too (the Unix \
             socket is local and root's only)"
                .into(),
        );
    }
    if !uses_tls {
        if files != NbdTlsFiles::default() {
            return Err(
                "nbd-tls-* files are set but nbd-tls is off (say `nbd-tls on;` or \
                        `nbd-tls require;`)"
                    .into(),
            );
        }
        return Ok(None);
    }
    NbdTls::new(&files)
        .map(|t| Some(Arc::new(t)))
        .map_err(|e| format!("nbd-tls: {e}"))
}

/// Starts the NBD server on `run_dir/nbd.sock` and tells `daemon` about it (for `nbd-listen`).
/// An export takes at most `max_clients` clients at once (`--nbd-max-clients`).
pub async fn start(
    daemon: &Arc<Daemon>,
    run_dir: &Path,
    max_clients: u32,
) -> std::io::Result<Arc<NbdFront>> {
    let backend = Arc::new(DaemonBackend::new(daemon.clone(), max_clients));
    let server = NbdServer::new(backend, ServerConfig::default());
    let unix = run_dir.join("nbd.sock");
    server.serve_unix(bind_unix(&unix)?);
    let front = Arc::new(NbdFront {
        server,
        unix,
        tcp: Mutex::new(BTreeMap::new()),
    });
    daemon.set_nbd(front.clone());
    Ok(front)
}

impl NbdFront {
    /// Serves every export on `addr` too, offering `tls` (idempotent: resources may share an
    /// address, the export name picks the resource, and they must agree on the TLS files).
    pub async fn listen_tcp(
        &self,
        addr: SocketAddr,
        tls: Option<Arc<NbdTls>>,
    ) -> std::io::Result<()> {
        let files = tls.as_ref().map(|t| t.files().clone());
        if let Some(existing) = self
            .tcp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
        {
            if *existing == files {
                return Ok(());
            }
            return Err(std::io::Error::other(
                "another resource serves this address with other nbd-tls settings; resources \
                 that share an nbd-listen address must have the same nbd-tls files",
            ));
        }
        let l = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(tls = files.is_some(), "NBD listening on {addr}");
        self.tcp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, files);
        self.server.serve_tcp_tls(l, tls);
        Ok(())
    }

    /// The daemon's run directory (where `nbd.sock` is).
    pub fn run_dir(&self) -> &Path {
        self.unix.parent().unwrap_or(Path::new("/"))
    }

    /// The server, for connections the daemon makes itself (the kernel device's).
    pub fn server(&self) -> &NbdServer {
        &self.server
    }

    /// Stops accepting, lets in-flight requests finish, closes every connection.
    pub async fn shutdown(&self) {
        self.server.shutdown(SHUTDOWN_GRACE).await;
        let _ = std::fs::remove_file(&self.unix);
    }
}
