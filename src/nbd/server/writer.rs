//! The per-connection writer task: the only code that writes transmission replies, so replies
//! from requests completing in any order never interleave on the wire. Replies arrive on an
//! unbounded channel whose length is bounded by the connection's in-flight permits: a permit is
//! released only once its reply has been written, so a client that stops reading fills the
//! socket buffer, then the permits, and then the reader stops reading new requests.

use super::backend::{IoError, IoReply};
use crate::nbd::proto::reply::{block_status_chunk, error_reply, offset_data_header, simple_reply};
use crate::nbd::proto::{Errno, Extent};
use bytes::Bytes;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::UnboundedReceiver;

/// Most extents sent in one BLOCK_STATUS reply; bounds the chunk a misbehaving backend can make
/// us build (the client asks again from where the list ended).
const MAX_EXTENTS: usize = 1 << 16;

/// What a request needs from the writer, besides its outcome.
#[derive(Debug, Clone, Copy)]
pub(super) enum ReplyShape {
    /// READ: data at `offset`, exactly `len` bytes.
    Read { offset: u64, len: u32 },
    /// BLOCK_STATUS: clip to the export end, and to one extent of `len` with `req_one`.
    BlockStatus {
        offset: u64,
        len: u32,
        req_one: bool,
    },
    /// Everything else: success carries no payload.
    Plain,
}

/// One finished request on its way to the client.
#[derive(Debug)]
pub(super) struct ReplyMsg {
    pub cookie: u64,
    pub shape: ReplyShape,
    pub result: Result<IoReply, IoError>,
    /// Released after the reply is written (see the module doc).
    pub permits: Vec<OwnedSemaphorePermit>,
}

/// What the writer needs to know about the connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct WireParams {
    pub structured: bool,
    pub context_id: u32,
    pub export_size: u64,
    /// A single write making no progress for this long drops the connection.
    pub write_timeout: Duration,
}

/// Writes replies until every sender is gone (the reader finished and every in-flight request
/// completed), then flushes and shuts the write side down.
pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: UnboundedReceiver<ReplyMsg>,
    p: WireParams,
) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    let mut head = Vec::with_capacity(256);
    while let Some(msg) = rx.recv().await {
        head.clear();
        let data = encode(&mut head, msg.cookie, msg.shape, msg.result, &p);
        let flush = rx.is_empty();
        let write = async {
            w.write_all(&head).await?;
            if let Some(d) = &data {
                w.write_all(d).await?;
            }
            // Batch small replies: flush only when nothing else is ready to go.
            if flush {
                w.flush().await?;
            }
            io::Result::Ok(())
        };
        match tokio::time::timeout(p.write_timeout, write).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client stopped reading replies",
                ));
            }
        }
        drop(msg.permits);
    }
    tokio::time::timeout(p.write_timeout, async {
        w.flush().await?;
        w.shutdown().await
    })
    .await
    .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "final flush")))
}

/// Encodes one reply into `head`; returns the data buffer to send after it (a READ's bytes,
/// written straight from the backend's buffer without a copy).
fn encode(
    head: &mut Vec<u8>,
    cookie: u64,
    shape: ReplyShape,
    result: Result<IoReply, IoError>,
    p: &WireParams,
) -> Option<Bytes> {
    let fail = |head: &mut Vec<u8>, e: IoError| {
        error_reply(head, p.structured, cookie, e.errno, &e.message);
        None
    };
    let reply = match result {
        Ok(r) => r,
        Err(e) => return fail(head, e),
    };
    match (shape, reply) {
        (ReplyShape::Read { offset, len }, IoReply::Data(data)) => {
            if data.len() != len as usize {
                let msg = format!("backend returned {} of {len} bytes", data.len());
                tracing::error!(cookie, "{msg}");
                return fail(head, IoError::new(Errno::Io, msg));
            }
            if p.structured {
                head.extend_from_slice(&offset_data_header(cookie, offset, len, true));
            } else {
                head.extend_from_slice(&simple_reply(cookie, None));
            }
            Some(data)
        }
        (
            ReplyShape::BlockStatus {
                offset,
                len,
                req_one,
            },
            IoReply::Extents(extents),
        ) => {
            let extents = clip_extents(extents, offset, len, req_one, p.export_size);
            if extents.is_empty() {
                tracing::error!(cookie, "backend returned no usable extents");
                return fail(head, IoError::new(Errno::Io, "no block status available"));
            }
            block_status_chunk(head, cookie, p.context_id, &extents, true);
            None
        }
        (ReplyShape::Plain, IoReply::Done) => {
            // Success of a command without payload: the spec lets a server answer it with a
            // simple reply even when structured replies are on (it MUST NOT only for READ and
            // BLOCK_STATUS), and every client handles that.
            head.extend_from_slice(&simple_reply(cookie, None));
            None
        }
        (shape, other) => {
            let msg = format!("backend answered {shape:?} with {}", kind(&other));
            tracing::error!(cookie, "{msg}");
            fail(head, IoError::new(Errno::Io, msg))
        }
    }
}

fn kind(r: &IoReply) -> &'static str {
    match r {
        IoReply::Done => "Done",
        IoReply::Data(_) => "Data",
        IoReply::Extents(_) => "Extents",
    }
}

/// Makes a backend's extent list legal to send: stops at a zero-length extent or the export
/// end (which extents MUST NOT pass), keeps one extent no longer than `len` for REQ_ONE, and
/// caps the count.
fn clip_extents(
    extents: Vec<Extent>,
    offset: u64,
    len: u32,
    req_one: bool,
    size: u64,
) -> Vec<Extent> {
    let mut left = size.saturating_sub(offset);
    let mut out = Vec::with_capacity(extents.len().min(MAX_EXTENTS));
    for mut e in extents {
        if e.length == 0 || left == 0 || out.len() == MAX_EXTENTS {
            break;
        }
        e.length = u32::try_from(u64::from(e.length).min(left)).unwrap_or(u32::MAX);
        if req_one {
            e.length = e.length.min(len);
        }
        left -= u64::from(e.length);
        out.push(e);
        if req_one {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(length: u32) -> Extent {
        Extent { length, flags: 0 }
    }

    #[test]
    fn clip_stops_at_export_end_and_zero_extents() {
        let e = clip_extents(vec![ext(4096), ext(8192)], 0, 512, false, 6144);
        assert_eq!(e, vec![ext(4096), ext(2048)]);
        let e = clip_extents(vec![ext(512), ext(0), ext(512)], 0, 512, false, 1 << 20);
        assert_eq!(e, vec![ext(512)]);
    }

    #[test]
    fn clip_req_one_keeps_one_within_len() {
        let e = clip_extents(vec![ext(8192), ext(512)], 0, 1024, true, 1 << 20);
        assert_eq!(e, vec![ext(1024)]);
    }
}
