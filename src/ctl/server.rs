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

/// Binds `path` (replacing a stale socket file), readable and writable by the owner only
/// whatever the umask, or by the owner and `group` (`udrbd --ctl-group`).
pub fn bind(path: &Path, group: Option<u32>) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    let mode = match group {
        Some(gid) => {
            std::os::unix::fs::chown(path, None, Some(gid))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// The supplementary groups of process `pid` (`Groups:` in `/proc/PID/status`).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Who may use the control socket: root, the user the daemon runs as, and members of `group`
/// (`--ctl-group`: the caller's group or one of its supplementary groups). Anyone else is
/// answered with why, whatever the socket file's mode says (`SO_PEERCRED`).
fn caller_allowed(stream: &tokio::net::UnixStream, group: Option<u32>) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let c = stream
        .peer_cred()
        .map_err(|e| format!("permission denied: cannot identify the caller: {e}"))?;
    if c.uid() == 0 || c.uid() == me {
        return Ok(());
    }
    if let Some(g) = group
        && (c.gid() == g
            || c.pid()
                .is_some_and(|pid| supplementary_groups(pid).contains(&g)))
    {
        return Ok(());
    }
    let who = match (me, group) {
        (0, None) => String::from("root"),
        (0, Some(g)) => format!("root and group {g}"),
        (u, None) => format!("root and uid {u}"),
        (u, Some(g)) => format!("root, uid {u} and group {g}"),
    };
    Err(format!(
        "permission denied: the control socket serves {who} only, not uid {} (gid {}); run \
         drbdadm as root{}",
        c.uid(),
        c.gid(),
        if group.is_some() {
            " or as a member of that group"
        } else {
            ", or start udrbd with --ctl-group GROUP"
        }
    ))
}

/// Serves connections from `listener` forever; `group` as for [`bind`].
pub async fn serve<H: Handler>(listener: UnixListener, handler: Arc<H>, group: Option<u32>) {
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
        if let Err(why) = caller_allowed(&stream, group) {
            tracing::warn!("control socket: {why}");
            tokio::spawn(async move {
                let answer = Response::Error {
                    code: 20,
                    message: why,
                };
                // The request is read (and ignored) first, so the client, which writes its
                // line before it reads, gets the answer rather than a broken pipe.
                let (rd, mut wr) = stream.into_split();
                let mut rd = BufReader::new(rd.take(MAX_REQUEST as u64));
                let mut line = String::new();
                let read = rd.read_line(&mut line);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read).await;
                if let Ok(mut out) = serde_json::to_vec(&answer) {
                    out.push(b'\n');
                    let _ = wr.write_all(&out).await;
                }
            });
            continue;
        }
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
