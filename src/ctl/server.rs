//! The daemon side of the control socket: accept, read one request line, ask the handler,
//! write the answer. A malformed request gets an error answer and costs only that connection.
//! An event request (`drbdsetup events2`) instead gets one JSON line per event until the client
//! closes its end.

use super::proto::{Event, Request, Response};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// Longest request line accepted (a resource spec is a few hundred bytes).
const MAX_REQUEST: usize = 1 << 20;

/// What answers requests: the daemon's resource table.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> Pin<Box<dyn Future<Output = Response> + Send + '_>>;

    /// Starts an event stream for `Request::Events`: events arrive on the receiver until it
    /// is dropped (the client left). An error answer refuses the stream.
    fn events(
        self: &Arc<Self>,
        resource: Option<String>,
        statistics: bool,
    ) -> Result<tokio::sync::mpsc::Receiver<Event>, Response>;
}

/// Binds `path` (replacing a stale socket file) and serves until the task is dropped.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// Serves connections from `listener` forever.
pub async fn serve<H: Handler>(listener: UnixListener, handler: Arc<H>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut rd = BufReader::new(rd.take(MAX_REQUEST as u64));
            let mut line = String::new();
            let answer = match rd.read_line(&mut line).await {
                Ok(0) => return,
                Ok(_) => match serde_json::from_str::<Request>(line.trim_end()) {
                    Ok(Request::Events {
                        resource,
                        statistics,
                    }) => match handler.events(resource, statistics) {
                        Ok(rx) => return stream_events(rx, rd, wr).await,
                        Err(refusal) => refusal,
                    },
                    Ok(req) => handler.handle(req).await,
                    Err(e) => Response::Error {
                        code: 20,
                        message: format!("malformed control request: {e}"),
                    },
                },
                Err(e) => Response::Error {
                    code: 20,
                    message: format!("unreadable control request: {e}"),
                },
            };
            let mut out = match serde_json::to_vec(&answer) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("cannot encode control answer: {e}");
                    return;
                }
            };
            out.push(b'\n');
            if let Err(e) = wr.write_all(&out).await {
                tracing::debug!("control client left before its answer: {e}");
            }
        });
    }
}

/// Writes each event as a JSON line until the client closes its end (or a write fails);
/// dropping `rx` then ends the daemon's producer for this client, so a client that leaves
/// costs nothing further.
async fn stream_events<R, W>(mut rx: tokio::sync::mpsc::Receiver<Event>, mut rd: R, mut wr: W)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { return };
                let mut out = match serde_json::to_vec(&ev) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!("cannot encode an event: {e}");
                        return;
                    }
                };
                out.push(b'\n');
                if wr.write_all(&out).await.is_err() {
                    return;
                }
            }
            // The client sends nothing after its request: EOF (or an error) means it left,
            // which is how an idle stream notices.
            n = rd.read(&mut scratch) => {
                if !matches!(n, Ok(n) if n > 0) {
                    return;
                }
            }
        }
    }
}
