//! A Prometheus text-format endpoint (`udrbd --metrics-listen ADDR`, `GET /metrics`): the
//! counters `drbdadm status --statistics` shows, for dashboards and alerts (role changes, a disk
//! that is not UpToDate, out-of-sync bytes growing while a peer is away).
//!
//! The exposition format is a few lines of text, and one GET path is all there is to serve, so
//! this is a small responder over tokio rather than an HTTP framework.

use super::Daemon;
use crate::repl::{ConnState, DiskState, Role};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request line longer than this is not a metrics scrape.
const MAX_REQUEST: usize = 8192;

/// Renders every resource's metrics in the Prometheus text format (version 0.0.4).
pub fn render(daemon: &Daemon) -> String {
    let mut out = String::new();
    let gauge = |out: &mut String, name: &str, help: &str| {
        let _ = writeln!(out, "# HELP udrbd_{name} {help}");
        let _ = writeln!(out, "# TYPE udrbd_{name} gauge");
    };
    let counter = |out: &mut String, name: &str, help: &str| {
        let _ = writeln!(out, "# HELP udrbd_{name} {help}");
        let _ = writeln!(out, "# TYPE udrbd_{name} counter");
    };
    let views: Vec<_> = daemon.all().iter().map(|d| d.view()).collect();
    gauge(
        &mut out,
        "resource_primary",
        "1 if this node is Primary for the resource.",
    );
    for v in &views {
        let _ = writeln!(
            out,
            "udrbd_resource_primary{{resource=\"{}\"}} {}",
            v.name,
            u8::from(v.role == Role::Primary)
        );
    }
    gauge(
        &mut out,
        "disk_up_to_date",
        "1 if the local disk is UpToDate; the disk label names the state.",
    );
    for v in &views {
        for d in &v.volumes {
            let _ = writeln!(
                out,
                "udrbd_disk_up_to_date{{resource=\"{}\",volume=\"{}\",disk=\"{}\"}} {}",
                v.name,
                d.volume,
                d.disk,
                u8::from(d.disk == DiskState::UpToDate)
            );
        }
    }
    gauge(
        &mut out,
        "open",
        "1 if an NBD client holds the device open.",
    );
    gauge(&mut out, "size_bytes", "Usable size of the device.");
    gauge(
        &mut out,
        "pending_requests",
        "Requests in flight (upper: application, lower: disk).",
    );
    counter(
        &mut out,
        "read_bytes_total",
        "Bytes read from the local disk.",
    );
    counter(
        &mut out,
        "written_bytes_total",
        "Bytes written to the local disk.",
    );
    counter(
        &mut out,
        "al_writes_total",
        "Activity-log transactions written.",
    );
    counter(&mut out, "bm_writes_total", "Bitmap pages written.");
    counter(
        &mut out,
        "concurrent_writes_total",
        "Two primaries: peer writes that met a concurrent local write (superseded, retried or held).",
    );
    for v in &views {
        for d in &v.volumes {
            let l = format!("resource=\"{}\",volume=\"{}\"", v.name, d.volume);
            let _ = writeln!(out, "udrbd_open{{{l}}} {}", u8::from(d.open));
            let _ = writeln!(out, "udrbd_size_bytes{{{l}}} {}", d.size_kib * 1024);
            let _ = writeln!(
                out,
                "udrbd_pending_requests{{{l},level=\"upper\"}} {}",
                d.upper_pending
            );
            let _ = writeln!(
                out,
                "udrbd_pending_requests{{{l},level=\"lower\"}} {}",
                d.lower_pending
            );
            let _ = writeln!(out, "udrbd_read_bytes_total{{{l}}} {}", d.read_kib * 1024);
            let _ = writeln!(
                out,
                "udrbd_written_bytes_total{{{l}}} {}",
                d.written_kib * 1024
            );
            let _ = writeln!(out, "udrbd_al_writes_total{{{l}}} {}", d.al_writes);
            let _ = writeln!(out, "udrbd_bm_writes_total{{{l}}} {}", d.bm_writes);
            let _ = writeln!(
                out,
                "udrbd_concurrent_writes_total{{{l}}} {}",
                d.concurrent_writes
            );
        }
    }
    gauge(
        &mut out,
        "peer_connected",
        "1 if the connection to the peer is Connected.",
    );
    gauge(
        &mut out,
        "out_of_sync_bytes",
        "Bytes marked out of sync with the peer.",
    );
    for v in &views {
        for c in &v.connections {
            let l = format!(
                "resource=\"{}\",peer=\"{}\",connection=\"{}\"",
                v.name, c.name, c.connection
            );
            let _ = writeln!(
                out,
                "udrbd_peer_connected{{{l}}} {}",
                u8::from(c.connection == ConnState::Connected)
            );
            let _ = writeln!(
                out,
                "udrbd_out_of_sync_bytes{{resource=\"{}\",peer=\"{}\"}} {}",
                v.name,
                c.name,
                c.out_of_sync_kib * 1024
            );
        }
    }
    out
}

/// Serves `GET /metrics` on `listener` until the task is dropped. Anything else gets 404; a
/// client that sends garbage or stalls costs only its own connection.
pub async fn serve(listener: TcpListener, daemon: Arc<Daemon>) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("metrics accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_REQUEST];
            let mut got = 0;
            // Read until the end of the request head (or give up after a few seconds).
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while got < buf.len() {
                    match stream.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                    if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if read.is_err() {
                tracing::debug!(%peer, "metrics client stalled");
                return;
            }
            let head = String::from_utf8_lossy(&buf[..got]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let ok = head.starts_with("GET ") && (path == "/metrics" || path == "/");
            let (status, body) = if ok {
                ("200 OK", render(&daemon))
            } else {
                ("404 Not Found", "try GET /metrics\n".to_string())
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = stream.write_all(reply.as_bytes()).await {
                tracing::debug!(%peer, "metrics client left: {e}");
            }
            let _ = stream.shutdown().await;
        });
    }
}
