//! The NBD listener: accepts clients on Unix and TCP sockets, drives [`proto`](super::proto)
//! over tokio, and hands validated requests to an [`NbdBackend`].
//!
//! Shape of a connection (`conn`): the handshake runs in the connection's task under
//! [`ServerConfig::handshake_timeout`]; transmission then splits the socket between a reader
//! (that task: headers, payloads, validation, submission) and a writer task that serialises
//! replies in completion order. Up to [`ServerConfig::max_in_flight`] requests (and
//! [`ServerConfig::max_in_flight_bytes`] of READ/WRITE payload) are outstanding per connection;
//! beyond that the reader stops reading. Across all connections, READ/WRITE payloads in flight
//! share [`ServerConfig::max_payload_bytes`]: once it is spent no connection reads a new
//! request's payload until some is freed, so many clients cannot add up to unbounded memory.
//! A client that stops reading replies stalls only its own writer, which drops it once a reply
//! cannot be written within [`ServerConfig::write_timeout`]; one that stops sending a write's
//! payload is dropped after [`ServerConfig::payload_timeout`] without a byte, which frees its
//! share.
//!
//! Shutdown ([`NbdServer::shutdown`]): listeners stop accepting, connections still haggling are
//! closed, connections in transmission stop reading new requests, answer those in flight and
//! close; whatever is left when the grace period ends is dropped.
//!
//! Logging: connection open/close at `info`, protocol violations at `warn`, backend contract
//! violations at `error`, refused (but answered) requests at `debug`.

pub mod access;
mod backend;
mod conn;
mod handshake;
mod listen;
mod transmit;
mod writer;

pub use backend::{
    ExportIo, IoCmd, IoDone, IoError, IoReply, NbdBackend, OpenDone, OpenExport, RoomWait,
};
pub use listen::bind_unix;

use crate::nbd::proto::{DEFAULT_MAX_OPTION_LEN, Negotiated};
use crate::tls::NbdTls;
use access::ClientInfo;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

/// Tunables; [`Default`] is what the daemon uses.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Requests outstanding per connection before the reader stops reading (default 128;
    /// qemu and libnbd keep up to 64 in flight).
    pub max_in_flight: usize,
    /// READ/WRITE payload bytes outstanding per connection (default 64 MiB, two maximum-size
    /// requests). A single larger request is admitted alone.
    pub max_in_flight_bytes: u32,
    /// Largest option payload read during haggling (default
    /// [`DEFAULT_MAX_OPTION_LEN`]).
    pub max_option_len: u32,
    /// The whole handshake, including opening the export, must finish within this (default
    /// 30 s), so a silent client cannot hold a connection slot forever.
    pub handshake_timeout: Duration,
    /// A reply (at most one maximum-size READ, 32 MiB) not written within this long drops the
    /// connection: the client stopped reading (default 60 s).
    pub write_timeout: Duration,
    /// READ/WRITE payload bytes in flight across all connections (default 64 MiB; a request
    /// larger than that is admitted alone). Requests above 1 MiB leave an eighth of it to
    /// smaller ones, so clients that stall large writes cannot starve everyone else.
    pub max_payload_bytes: u32,
    /// A write's payload that stops arriving (no byte for this long) drops the connection
    /// (default 30 s).
    pub payload_timeout: Duration,
    /// Connections open at once, haggling or transmitting (default 4096); one more is closed
    /// at once, with a warning in the log. Each costs a task and its buffers, so this bounds
    /// the memory clients can make the server use.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_in_flight: 128,
            max_in_flight_bytes: 64 << 20,
            max_option_len: DEFAULT_MAX_OPTION_LEN,
            handshake_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(60),
            max_payload_bytes: 64 << 20,
            payload_timeout: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

/// Server lifecycle, broadcast to every listener and connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Running,
    /// Stop accepting and reading requests; finish what is in flight.
    Draining,
    /// Grace period over: drop everything.
    Abort,
}

struct Shared {
    backend: Arc<dyn NbdBackend>,
    config: ServerConfig,
    /// [`ServerConfig::max_payload_bytes`], shared by all connections.
    payload_budget: Arc<tokio::sync::Semaphore>,
    state: watch::Sender<RunState>,
    next_id: AtomicU64,
    open: AtomicUsize,
}

impl Shared {
    fn count_connection(&self) -> ConnCount<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        ConnCount(&self.open)
    }
}

/// Decrements the open-connection count when a connection task ends, however it ends.
struct ConnCount<'a>(&'a AtomicUsize);

impl Drop for ConnCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An NBD server over one backend, serving any number of listeners. Cheap to clone; all
/// clones control the same server. The `serve_*` methods spawn onto the current tokio runtime
/// and panic outside one (as `tokio::spawn` does).
///
/// Dropping every handle without [`NbdServer::shutdown`] stops the listeners and lets open
/// connections run until their clients leave.
#[derive(Clone)]
pub struct NbdServer {
    shared: Arc<Shared>,
}

impl fmt::Debug for NbdServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NbdServer")
            .field("config", &self.shared.config)
            .field("state", &*self.shared.state.borrow())
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl NbdServer {
    /// A server for `backend`; it accepts nothing until given a listener.
    pub fn new(backend: Arc<dyn NbdBackend>, config: ServerConfig) -> Self {
        let (state, _) = watch::channel(RunState::Running);
        NbdServer {
            shared: Arc::new(Shared {
                backend,
                payload_budget: Arc::new(tokio::sync::Semaphore::new(
                    config.max_payload_bytes.max(1) as usize,
                )),
                config,
                state,
                next_id: AtomicU64::new(1),
                open: AtomicUsize::new(0),
            }),
        }
    }

    /// Accepts clients on a Unix socket (in production `$UDRBD_RUN_DIR/nbd.sock`, see
    /// [`bind_unix`]) until shutdown. The socket file is left for the caller to remove.
    pub fn serve_unix(&self, listener: UnixListener) {
        let rx = self.shared.state.subscribe();
        tokio::spawn(listen::accept_unix(self.clone(), listener, rx));
    }

    /// Accepts clients on a TCP socket until shutdown; accepted sockets get `TCP_NODELAY`
    /// (replies are small and latency-bound).
    pub fn serve_tcp(&self, listener: TcpListener) {
        self.serve_tcp_tls(listener, None);
    }

    /// [`NbdServer::serve_tcp`], offering STARTTLS with `tls` when given; the exports'
    /// [`access::ExportPolicy`] decides who must use it.
    pub fn serve_tcp_tls(&self, listener: TcpListener, tls: Option<Arc<NbdTls>>) {
        let rx = self.shared.state.subscribe();
        tokio::spawn(listen::accept_tcp(self.clone(), listener, tls, rx));
    }

    /// Serves one already-connected stream (a socketpair, an accepted socket from elsewhere);
    /// `peer` names it in logs.
    pub fn serve_stream<S>(&self, stream: S, peer: impl Into<String>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_client(stream, peer, ClientInfo::default(), None);
    }

    /// Serves one stream whose other end skipped the handshake and starts in transmission
    /// with the parameters in `neg` (the kernel's NBD client, configured over netlink), with
    /// requests going to `io`. Not counted against [`ServerConfig::max_connections`]: the
    /// daemon makes these itself.
    pub fn serve_transmission<S>(
        &self,
        stream: S,
        peer: impl Into<String>,
        neg: Negotiated,
        io: Arc<dyn ExportIo>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let rx = self.shared.state.subscribe();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(&self.shared);
        tokio::spawn(conn::run_transmission(
            stream,
            id,
            peer.into(),
            neg,
            io,
            shared,
            rx,
        ));
    }

    /// Serves one connected client that `client` describes, offering `tls`.
    fn serve_client<S>(
        &self,
        stream: S,
        peer: impl Into<String>,
        client: ClientInfo,
        tls: Option<Arc<NbdTls>>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let rx = self.shared.state.subscribe();
        if *rx.borrow() != RunState::Running {
            tracing::info!("NBD server shutting down; refusing a new connection");
            return;
        }
        let (open, max) = (self.connections(), self.shared.config.max_connections);
        if open >= max {
            let peer = peer.into();
            tracing::warn!(
                %peer,
                "NBD connection refused: {open} connections are open, the server's limit"
            );
            return;
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(&self.shared);
        tokio::spawn(conn::run(stream, id, peer.into(), client, tls, shared, rx));
    }

    /// Connections currently open (handshaking or transmitting).
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Graceful shutdown: stop accepting, close connections still haggling, let requests in
    /// flight finish and be answered, then close; after `grace`, drop whatever is left. Returns
    /// once every listener and connection task has finished. Idempotent.
    pub async fn shutdown(&self, grace: Duration) {
        let state = &self.shared.state;
        state.send_if_modified(|s| {
            let change = *s == RunState::Running;
            if change {
                *s = RunState::Draining;
            }
            change
        });
        tracing::info!(connections = self.connections(), "NBD server shutting down");
        if tokio::time::timeout(grace, state.closed()).await.is_err() {
            tracing::warn!(
                connections = self.connections(),
                "NBD shutdown grace period expired; dropping connections"
            );
            state.send_replace(RunState::Abort);
            state.closed().await;
        }
        tracing::info!("NBD server stopped");
    }
}

/// Resolves once the server stops running (draining, aborting, or every handle dropped).
async fn not_running(state: &mut watch::Receiver<RunState>) {
    let _ = state.wait_for(|s| *s != RunState::Running).await;
}

/// Resolves once the grace period is over; never if every handle was dropped (connections then
/// end with their clients).
async fn aborted(state: &mut watch::Receiver<RunState>) {
    if state.wait_for(|s| *s == RunState::Abort).await.is_err() {
        std::future::pending::<()>().await;
    }
}
