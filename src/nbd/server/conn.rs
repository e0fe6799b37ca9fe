//! One client connection from accept to close: handshake (bounded by a timeout), then a reader
//! (this task) and a writer task sharing the socket. Every way a connection can fail ends here,
//! costing only this connection.

use super::access::ClientInfo;
use super::backend::ExportIo;
use super::handshake::{ClientStream, Handshake, HandshakeFailure, negotiate};
use super::transmit::{Bounds, ReadEnd, read_loop};
use super::writer::{WireParams, write_loop};
use super::{RunState, Shared, aborted, not_running};
use crate::nbd::proto::Negotiated;
use crate::tls::NbdTls;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc, watch};

/// Runs one connection to completion. `state` also keeps the server's shutdown waiting for us.
pub(super) async fn run<S>(
    stream: S,
    id: u64,
    peer: String,
    mut client: ClientInfo,
    tls: Option<Arc<NbdTls>>,
    shared: Arc<Shared>,
    mut state: watch::Receiver<RunState>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stream = ClientStream::Plain(stream);
    let _open = shared.count_connection();
    tracing::info!(conn = id, %peer, "NBD connection opened");
    let cfg = &shared.config;
    let hs = tokio::select! {
        hs = tokio::time::timeout(
            cfg.handshake_timeout,
            negotiate(&mut stream, &shared.backend, cfg.max_option_len, &mut client, tls.as_deref()),
        ) => hs,
        _ = not_running(&mut state) => {
            tracing::info!(conn = id, "NBD connection closed: server shutting down");
            return;
        }
    };
    let (neg, io) = match hs {
        Err(_) => {
            tracing::warn!(conn = id, "NBD connection closed: handshake timed out");
            return;
        }
        Ok(Err(HandshakeFailure::Protocol(m))) => {
            tracing::warn!(conn = id, "NBD connection closed: handshake {m}");
            return;
        }
        Ok(Err(HandshakeFailure::Io(e))) => {
            tracing::info!(conn = id, "NBD connection closed during handshake: {e}");
            return;
        }
        Ok(Ok(Handshake::Closed(why))) => {
            tracing::info!(conn = id, "NBD connection closed: {why}");
            return;
        }
        Ok(Ok(Handshake::Transmission(neg, io))) => (neg, io),
    };
    tracing::info!(
        conn = id,
        export = %neg.export,
        size = neg.size,
        structured = neg.structured,
        tls = client.tls_names.is_some(),
        "NBD transmission started"
    );
    let why = transmission(stream, &neg, io, &shared, state).await;
    tracing::info!(conn = id, export = %neg.export, "NBD connection closed: {why}");
}

/// Runs a connection that starts in transmission: the other end (the kernel's NBD client,
/// handed a socket over netlink) took the export's parameters from us, not from a handshake.
pub(super) async fn run_transmission<S>(
    stream: S,
    id: u64,
    peer: String,
    neg: Negotiated,
    io: Arc<dyn ExportIo>,
    shared: Arc<Shared>,
    state: watch::Receiver<RunState>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _open = shared.count_connection();
    tracing::info!(conn = id, %peer, export = %neg.export, size = neg.size, "NBD transmission started");
    let why = transmission(stream, &neg, io, &shared, state).await;
    tracing::info!(conn = id, %peer, export = %neg.export, "NBD connection closed: {why}");
}

/// Runs transmission; returns why it ended, for the close log line.
async fn transmission<S>(
    stream: S,
    neg: &Negotiated,
    io: Arc<dyn ExportIo>,
    shared: &Shared,
    mut state: watch::Receiver<RunState>,
) -> String
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &shared.config;
    let (rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel();
    let params = WireParams {
        structured: neg.structured,
        context_id: neg.meta_context.unwrap_or(0),
        export_size: neg.size,
        write_timeout: cfg.write_timeout,
    };
    let mut writer = tokio::spawn(write_loop(wr, rx, params));
    let budget = cfg.max_in_flight_bytes.max(1);
    let bounds = Bounds {
        count: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
        bytes: Arc::new(Semaphore::new(budget as usize)),
        byte_budget: budget,
        shared: Arc::clone(&shared.payload_budget),
        shared_budget: cfg.max_payload_bytes.max(1),
        payload_timeout: cfg.payload_timeout,
    };
    // Buffered: at high queue depth many 28-byte headers (and small write payloads) arrive in
    // one read. Large payloads bypass the buffer once it is empty.
    let rd = tokio::io::BufReader::with_capacity(64 * 1024, rd);
    let reader = read_loop(rd, neg, io, tx, bounds, state.clone());
    let end = tokio::select! {
        end = reader => end,
        w = &mut writer => return writer_end(w),
        _ = aborted(&mut state) => {
            writer.abort();
            return "server shutdown grace period expired".into();
        }
    };
    let prefix = match end {
        ReadEnd::Protocol(m) => {
            tracing::warn!(export = %neg.export, "NBD protocol error: {m}");
            writer.abort();
            return format!("protocol error: {m}");
        }
        ReadEnd::Disc => "client disconnected",
        ReadEnd::Eof => "client closed the connection without NBD_CMD_DISC",
        ReadEnd::Shutdown => "server shutting down",
        ReadEnd::WriterGone => "reply writer stopped",
        ReadEnd::Io(ref e) => {
            tracing::info!(export = %neg.export, "read failed: {e}");
            "read failed"
        }
    };
    // The reader has dropped its sender; the writer ends once every in-flight request has
    // been answered.
    tokio::select! {
        w = &mut writer => format!("{prefix}; {}", writer_end(w)),
        _ = aborted(&mut state) => {
            writer.abort();
            format!("{prefix}; server shutdown grace period expired")
        }
    }
}

fn writer_end(w: Result<std::io::Result<()>, tokio::task::JoinError>) -> String {
    match w {
        Ok(Ok(())) => "all replies sent".into(),
        Ok(Err(e)) => {
            if e.kind() == std::io::ErrorKind::TimedOut {
                tracing::warn!("NBD client stopped reading replies; dropping it");
            }
            format!("writing replies failed: {e}")
        }
        Err(e) => format!("reply writer task failed: {e}"),
    }
}
