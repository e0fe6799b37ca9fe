//! One stream of a link, plain TCP or TLS, and the two halves a running link uses.
//!
//! A plain stream's halves are the TCP socket's own: the outbox writes to it from the
//! sender's thread with `try_write_vectored` (see [`super::outbox`]). A TLS stream cannot be
//! written that way (the cipher state is shared by both directions and lives in OpenSSL), so
//! a running TLS stream is relayed: the link gets one end of a Unix socket pair and a relay task
//! moves bytes between the other end and the TLS stream, encrypting and decrypting. The link's
//! code is the same for both; TLS costs one more copy per direction (`benches/pair_fio.sh`
//! measures it).

use super::LinkError;
use crate::tls::MaybeTls;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpStream, UnixStream, tcp, unix};
use tokio_openssl::SslStream;

/// Buffer per direction of a TLS relay: a 1 MiB write moves in four pieces.
const RELAY_BUFFER: usize = 256 * 1024;

/// A handshaken stream of a link.
pub(crate) type PeerStream = MaybeTls<TcpStream>;

/// The future that relays a TLS stream for a running link; it ends when either side closes.
pub(crate) type Relay = Pin<Box<dyn Future<Output = Result<(), LinkError>> + Send>>;

impl PeerStream {
    /// The TCP socket underneath.
    pub(crate) fn tcp(&self) -> io::Result<&TcpStream> {
        match self {
            MaybeTls::Plain(s) => Ok(s),
            MaybeTls::Tls(s) => Ok(s.get_ref()),
            MaybeTls::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The halves a running link reads and writes, and for TLS the relay that must run as long
    /// as the link does.
    pub(crate) fn into_halves(self) -> io::Result<(SockRead, SockWrite, Option<Relay>)> {
        match self {
            MaybeTls::Plain(s) => {
                let (r, w) = s.into_split();
                Ok((SockRead::Tcp(r), SockWrite::Tcp(w), None))
            }
            MaybeTls::Gone => Err(io::ErrorKind::NotConnected.into()),
            MaybeTls::Tls(tls) => {
                let (ours, theirs) = UnixStream::pair()?;
                let (r, w) = ours.into_split();
                let relay: Relay = Box::pin(relay(tls, theirs));
                Ok((SockRead::Unix(r), SockWrite::Unix(w), Some(relay)))
            }
        }
    }
}

/// Moves bytes both ways until both directions have ended (a clean close on either side is
/// passed on as a close of the other) or one fails.
async fn relay(mut tls: Box<SslStream<TcpStream>>, mut inner: UnixStream) -> Result<(), LinkError> {
    tokio::io::copy_bidirectional_with_sizes(&mut *tls, &mut inner, RELAY_BUFFER, RELAY_BUFFER)
        .await
        .map(|_| ())
        .map_err(LinkError::from)
}

macro_rules! delegate_io {
    ($ty:ident { $($variant:ident),* }) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_read(cx, buf),)*
                }
            }
        }
    };
}

/// The reading half of a running link's stream.
#[derive(Debug)]
pub(crate) enum SockRead {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
}

delegate_io!(SockRead { Tcp, Unix });

/// The writing half of a running link's stream: what [`super::outbox::Outbox`] needs of it.
#[derive(Debug)]
pub(crate) enum SockWrite {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
}

impl SockWrite {
    pub(crate) fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            SockWrite::Tcp(w) => w.try_write_vectored(bufs),
            SockWrite::Unix(w) => w.try_write_vectored(bufs),
        }
    }

    pub(crate) async fn writable(&self) -> io::Result<()> {
        match self {
            SockWrite::Tcp(w) => w.writable().await,
            SockWrite::Unix(w) => w.writable().await,
        }
    }

    /// The socket's descriptor, for `shutdown(2)` (the halves cannot shut down both ways).
    pub(crate) fn raw_fd(&self) -> RawFd {
        match self {
            SockWrite::Tcp(w) => w.as_ref().as_raw_fd(),
            SockWrite::Unix(w) => w.as_ref().as_raw_fd(),
        }
    }
}

impl From<tcp::OwnedWriteHalf> for SockWrite {
    fn from(w: tcp::OwnedWriteHalf) -> Self {
        SockWrite::Tcp(w)
    }
}
