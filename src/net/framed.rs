//! Frames over an async byte stream: [`FrameReader`] and [`FrameWriter`], on top of
//! [`crate::repl::wire`].
//!
//! The reader reads exactly one header ([`Frame::header_len`] bytes), lets
//! [`wire::decode_header`] check it (magic, version, CRC, and the payload length against the
//! type's maximum) *before* it allocates anything, then reads exactly `payload_len` bytes into a
//! [`BytesMut`] and decodes them with [`wire::decode_payload_bytes`], so data blocks in the
//! packet are slices of that one buffer, not copies. It never reads past the end of a frame, so
//! a reader can be dropped between frames and the stream handed to someone else (the handshake
//! relies on this). Wrap a socket in a [`tokio::io::BufReader`] for fewer system calls when that
//! does not matter.
//!
//! A frame of an unknown type that its sender flagged [`wire::FLAG_MAY_IGNORE`] is skipped; any
//! other decoding error is returned and the stream is unusable afterwards.

use crate::buf::AlignedFill;
use crate::repl::wire::{self, Frame, Packet, WireError};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FramedError {
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a valid frame, or the packet cannot be encoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The stream ended inside a frame.
    #[error("stream ended in the middle of a frame")]
    Truncated,
}

/// Reads frames from `R`.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader { inner }
    }

    /// The next frame, or `None` if the stream ended cleanly between two frames.
    ///
    /// Not cancellation-safe: dropping the future in the middle of a frame loses the bytes
    /// already read (use it from one task that only stops when the stream is given up).
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, FramedError> {
        loop {
            let mut head = [0u8; wire::HEADER_LEN];
            if !read_full(&mut self.inner, &mut head).await? {
                return Ok(None);
            }
            let header = match wire::decode_header(&head) {
                Ok(h) => h,
                Err(WireError::UnknownType { skip: Some(n), ty }) => {
                    tracing::debug!(
                        ty,
                        len = n,
                        "skipping a frame of an unknown, ignorable type"
                    );
                    skip(&mut self.inner, u64::from(n)).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let len = header.payload_len();
            let payload = match wire::block_digest_len_at(header.packet_type()) {
                Some(at) if at < len => read_block_payload(&mut self.inner, len, at).await?,
                _ => read_payload(&mut self.inner, len).await?,
            };
            let packet = wire::decode_payload_bytes(&header, payload)?;
            return Ok(Some(Frame {
                volume: header.volume(),
                packet,
            }));
        }
    }

    /// The stream back.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Reads a `len`-byte payload.
async fn read_payload<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Result<Bytes, FramedError> {
    let mut payload = BytesMut::with_capacity(len);
    while payload.len() < len {
        let want = (len - payload.len()) as u64;
        let n = (&mut *r).take(want).read_buf(&mut payload).await?;
        if n == 0 {
            return Err(FramedError::Truncated);
        }
    }
    Ok(payload.freeze())
}

/// Reads the `len`-byte payload of a packet that ends in a data block, placed so that the
/// block starts on an aligned address: the disk then writes it as it is, without copying it
/// into an aligned buffer (see [`crate::buf`]). `at` is where the digest-length byte is
/// ([`wire::block_digest_len_at`]); the block follows the digest.
async fn read_block_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
    at: usize,
) -> Result<Bytes, FramedError> {
    let mut head = [0u8; 64];
    let Some(head) = head.get_mut(..=at) else {
        return read_payload(r, len).await;
    };
    if !read_full(r, head).await? {
        return Err(FramedError::Truncated);
    }
    let block_at = at + 1 + usize::from(head[at]);
    let mut fill = AlignedFill::with_offset(len, block_at);
    fill.extend_from_slice(head);
    // The fill has room for exactly the rest of the frame, so this never reads past it.
    fill.read_from(r).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FramedError::Truncated,
        _ => FramedError::Io(e),
    })
}

/// Fills `buf`; `false` if the stream ended before the first byte, [`FramedError::Truncated`]
/// if it ended after it.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<bool, FramedError> {
    let mut have = 0;
    while have < buf.len() {
        let n = r.read(&mut buf[have..]).await?;
        if n == 0 {
            return if have == 0 {
                Ok(false)
            } else {
                Err(FramedError::Truncated)
            };
        }
        have += n;
    }
    Ok(true)
}

async fn skip<R: AsyncRead + Unpin>(r: &mut R, n: u64) -> Result<(), FramedError> {
    let copied = tokio::io::copy(&mut r.take(n), &mut tokio::io::sink()).await?;
    if copied != n {
        return Err(FramedError::Truncated);
    }
    Ok(())
}

/// Writes frames to `W`. Frames are encoded into an internal buffer by [`FrameWriter::push`]
/// and written by [`FrameWriter::flush`], so several small frames go out in one write.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    buf: Vec<u8>,
}

/// Above this many buffered bytes [`FrameWriter::push`] callers should flush.
pub const FLUSH_THRESHOLD: usize = 256 * 1024;

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            buf: Vec::new(),
        }
    }

    /// Encodes `packet` for `volume` into the buffer. On error nothing is buffered.
    pub fn push(&mut self, volume: u16, packet: &Packet) -> Result<(), FramedError> {
        wire::encode_to(volume, packet, &mut self.buf)?;
        Ok(())
    }

    /// Appends an already encoded frame (from [`wire::encode_to`]) to the buffer.
    pub fn push_encoded(&mut self, frame: &[u8]) {
        self.buf.extend_from_slice(frame);
    }

    /// Writes what is buffered, then `frame` (an encoded frame) straight from the caller's
    /// buffer, without copying it into ours: for large frames.
    pub async fn write_encoded(&mut self, frame: &[u8]) -> Result<(), FramedError> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf).await?;
            self.buf.clear();
        }
        self.inner.write_all(frame).await?;
        Ok(())
    }

    /// Bytes waiting for [`FrameWriter::flush`].
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Writes everything buffered and flushes the stream.
    pub async fn flush(&mut self) -> Result<(), FramedError> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf).await?;
            self.buf.clear();
            // Keep a reasonable buffer around, not the largest frame ever sent.
            if self.buf.capacity() > 4 * FLUSH_THRESHOLD {
                self.buf.shrink_to(FLUSH_THRESHOLD);
            }
        }
        self.inner.flush().await?;
        Ok(())
    }

    /// [`FrameWriter::push`] then [`FrameWriter::flush`].
    pub async fn write_frame(&mut self, volume: u16, packet: &Packet) -> Result<(), FramedError> {
        self.push(volume, packet)?;
        self.flush().await
    }

    /// Flushes, then shuts the write side down (TCP FIN).
    pub async fn shutdown(&mut self) -> Result<(), FramedError> {
        self.flush().await?;
        self.inner.shutdown().await?;
        Ok(())
    }

    /// The stream back (anything still buffered is lost).
    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn round_trip_and_clean_eof() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        w.push(0, &Packet::Ping).unwrap();
        w.push(
            0,
            &Packet::AuthChallenge {
                challenge: Bytes::from_static(&[7; 64]),
            },
        )
        .unwrap();
        w.flush().await.unwrap();
        drop(w);
        assert_eq!(r.read_frame().await.unwrap().unwrap().packet, Packet::Ping);
        let f = r.read_frame().await.unwrap().unwrap();
        assert!(matches!(f.packet, Packet::AuthChallenge { .. }));
        assert!(r.read_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn eof_inside_a_frame_is_truncated() {
        let mut frame = Vec::new();
        wire::encode(
            &Packet::AuthResponse {
                response: Bytes::from_static(&[1; 32]),
            },
            &mut frame,
        )
        .unwrap();
        for cut in [
            1,
            wire::HEADER_LEN - 1,
            wire::HEADER_LEN + 1,
            frame.len() - 1,
        ] {
            let mut r = FrameReader::new(&frame[..cut]);
            assert!(
                matches!(r.read_frame().await, Err(FramedError::Truncated)),
                "cut at {cut}"
            );
        }
    }

    #[tokio::test]
    async fn garbage_is_a_wire_error_before_any_payload_read() {
        let mut r = FrameReader::new(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
        assert!(matches!(
            r.read_frame().await,
            Err(FramedError::Wire(WireError::BadMagic { .. }))
        ));
    }

    #[tokio::test]
    async fn ignorable_unknown_frames_are_skipped() {
        // A hand-made frame of unknown type 0x7777 flagged may-ignore, then a Ping.
        let payload = [9u8; 5];
        let mut h = [0u8; wire::HEADER_LEN];
        h[0..4].copy_from_slice(&wire::MAGIC.to_be_bytes());
        h[4] = wire::WIRE_VERSION;
        h[5] = wire::FLAG_MAY_IGNORE;
        h[6..8].copy_from_slice(&0x7777u16.to_be_bytes());
        h[12..16].copy_from_slice(&5u32.to_be_bytes());
        h[16..20].copy_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        let crc = crc32c::crc32c(&h[..20]);
        h[20..24].copy_from_slice(&crc.to_be_bytes());
        let mut bytes = h.to_vec();
        bytes.extend_from_slice(&payload);
        wire::encode(&Packet::Ping, &mut bytes).unwrap();
        let mut r = FrameReader::new(&bytes[..]);
        assert_eq!(r.read_frame().await.unwrap().unwrap().packet, Packet::Ping);
        assert!(r.read_frame().await.unwrap().is_none());
    }

    /// The block of a write or a resync reply arrives on an aligned address, whatever the
    /// digest before it, so the disk writes it without a copy; and a frame cut inside such a
    /// payload is still reported truncated.
    #[tokio::test]
    async fn data_blocks_arrive_aligned() {
        use crate::repl::wire::DataFlags;
        use crate::types::Sector;
        for digest_len in [0usize, 3, 32] {
            let digest = Bytes::from(vec![0xD1; digest_len]);
            let data = Bytes::from(vec![0xA5; 8192]);
            let packets = [
                Packet::Data {
                    sector: Sector(8),
                    block_id: 1,
                    seq: 2,
                    seen: 0,
                    flags: DataFlags(0),
                    size: 8192,
                    digest: digest.clone(),
                    data: data.clone(),
                },
                Packet::ResyncReply {
                    sector: Sector(8),
                    block_id: 1,
                    digest: digest.clone(),
                    data: data.clone(),
                },
            ];
            let mut bytes = Vec::new();
            for p in &packets {
                wire::encode(p, &mut bytes).unwrap();
            }
            wire::encode(&Packet::Ping, &mut bytes).unwrap();
            let mut r = FrameReader::new(&bytes[..]);
            for p in &packets {
                let got = r.read_frame().await.unwrap().unwrap().packet;
                assert_eq!(&got, p);
                let (Packet::Data { data, .. } | Packet::ResyncReply { data, .. }) = got else {
                    unreachable!()
                };
                assert!(crate::buf::is_aligned(&data), "digest of {digest_len}");
            }
            assert_eq!(r.read_frame().await.unwrap().unwrap().packet, Packet::Ping);
            // Inside the fixed fields, inside the block, one byte short.
            let first_len = wire::HEADER_LEN + 29 + digest_len + 8192;
            for cut in [wire::HEADER_LEN + 5, wire::HEADER_LEN + 40, first_len - 1] {
                let mut r = FrameReader::new(&bytes[..cut]);
                assert!(
                    matches!(r.read_frame().await, Err(FramedError::Truncated)),
                    "cut at {cut}"
                );
            }
        }
    }

    #[tokio::test]
    async fn reader_does_not_read_past_a_frame() {
        let mut bytes = Vec::new();
        wire::encode(&Packet::Ping, &mut bytes).unwrap();
        bytes.extend_from_slice(b"rest");
        let mut r = FrameReader::new(&bytes[..]);
        assert_eq!(r.read_frame().await.unwrap().unwrap().packet, Packet::Ping);
        assert_eq!(r.into_inner(), b"rest");
    }
}
