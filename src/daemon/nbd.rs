//! The daemon's NBD front: the Unix socket every node has (`$UDRBD_RUN_DIR/nbd.sock`) and the
//! TCP listeners that resources ask for with `nbd-listen`.

use super::Daemon;
use super::nbd_backend::DaemonBackend;
use crate::nbd::server::{NbdServer, ServerConfig, bind_unix};
use std::collections::BTreeSet;
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
    tcp: Mutex<BTreeSet<SocketAddr>>,
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
        tcp: Mutex::new(BTreeSet::new()),
    });
    daemon.set_nbd(front.clone());
    Ok(front)
}

impl NbdFront {
    /// Serves every export on `addr` too (idempotent: resources may share an address; the export
    /// name picks the resource).
    pub async fn listen_tcp(&self, addr: SocketAddr) -> std::io::Result<()> {
        if self
            .tcp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&addr)
        {
            return Ok(());
        }
        let l = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!("NBD listening on {addr}");
        self.tcp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr);
        self.server.serve_tcp(l);
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish, closes every connection.
    pub async fn shutdown(&self) {
        self.server.shutdown(SHUTDOWN_GRACE).await;
        let _ = std::fs::remove_file(&self.unix);
    }
}
