//! Why a link could not be established, or failed.

use super::framed::FramedError;
use crate::repl::wire::WireError;
use std::sync::Arc;

/// Everything [`super::Link`] and [`super::Link::establish`] can fail with.
///
/// The caller decides what to do from [`LinkError::is_fatal`]: a fatal error (authentication,
/// a peer that is configured for something else, our own bad configuration) must take the
/// connection to `StandAlone` and wait for the operator, as DRBD does; retrying would only be a
/// reconnect storm against a peer that will refuse again. Every other error is transient
/// (`NetworkFailure`, `BrokenPipe`, `ProtocolError`, `Timeout` in DRBD's words): establish again.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LinkError {
    /// CRAM-HMAC failed: wrong `shared-secret` or `cram-hmac-alg`, authentication configured on
    /// one side only, or a reflected challenge. Fatal.
    #[error("Authentication of peer failed: {0}")]
    AuthFailed(String),
    /// The peer is a udrbd node configured for another resource or node id, or speaks no
    /// protocol version in common with us. Fatal.
    #[error("peer mismatch: {0}")]
    Mismatch(String),
    /// Our own configuration cannot be used (unknown `cram-hmac-alg`, a secret without an
    /// algorithm, equal node ids, ...). Fatal.
    #[error("invalid link configuration: {0}")]
    Config(String),
    /// The peer did not answer a ping within `ping-timeout`: it is considered dead.
    #[error("PingAck did not arrive in time")]
    PingTimeout,
    /// A step (connect, handshake, pairing of the two streams) did not finish in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The TLS handshake failed (a certificate refused, a peer without TLS, ...). Not fatal:
    /// nobody is authenticated yet, so a stranger must not be able to stop the link with it.
    #[error("{0}")]
    Tls(String),
    /// A socket error.
    #[error("network error: {0}")]
    Io(Arc<std::io::Error>),
    /// The peer sent bytes that are not a valid frame (or not a udrbd peer at all).
    #[error("protocol error: {0}")]
    Wire(WireError),
    /// The peer sent a valid frame that makes no sense at this point.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    PeerClosed,
    /// [`super::Link::send`] was given a packet that cannot be encoded. The link itself is
    /// unaffected.
    #[error("packet not sent: {0}")]
    Encode(WireError),
    /// The link was closed on this side ([`super::Link::close`]) or has already failed.
    #[error("link closed")]
    Closed,
}

impl LinkError {
    /// True if the caller must not retry: go `StandAlone` (authentication failure, a peer that
    /// is configured for something else, our own bad configuration).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            LinkError::AuthFailed(_) | LinkError::Mismatch(_) | LinkError::Config(_)
        )
    }
}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        LinkError::Io(Arc::new(e))
    }
}

impl From<FramedError> for LinkError {
    fn from(e: FramedError) -> Self {
        match e {
            FramedError::Io(e) => LinkError::from(e),
            FramedError::Wire(w) => LinkError::Wire(w),
            FramedError::Truncated => LinkError::PeerClosed,
        }
    }
}
