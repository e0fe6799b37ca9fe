//! Accept loops and the Unix socket's setup.

use super::access::ClientInfo;
use super::{NbdServer, RunState, not_running};
use crate::tls::NbdTls;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

/// After a failed accept (EMFILE, ENOBUFS) wait this long instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds a Unix listener at `path`. A socket file left by a crashed daemon is replaced, but
/// only if nothing answers on it: a live server's socket is `AddrInUse`, and a path that is not
/// a socket is never removed. Must be called inside a tokio runtime.
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is in use by a running server", path.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

pub(super) async fn accept_unix(
    server: NbdServer,
    listener: UnixListener,
    mut state: watch::Receiver<RunState>,
) {
    loop {
        let accepted = tokio::select! {
            _ = not_running(&mut state) => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => server.serve_stream(stream, "unix"),
            Err(e) => backoff(e).await,
        }
    }
}

pub(super) async fn accept_tcp(
    server: NbdServer,
    listener: TcpListener,
    tls: Option<Arc<NbdTls>>,
    mut state: watch::Receiver<RunState>,
) {
    loop {
        let accepted = tokio::select! {
            _ = not_running(&mut state) => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::warn!(%peer, "cannot set TCP_NODELAY: {e}");
                }
                let client = ClientInfo {
                    addr: Some(peer.ip()),
                    tls_names: None,
                };
                server.serve_client(stream, peer.to_string(), client, tls.clone());
            }
            Err(e) => backoff(e).await,
        }
    }
}

async fn backoff(e: io::Error) {
    tracing::warn!("NBD accept failed: {e}");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}
