//! The peer link: one authenticated, kept-alive connection to the peer of a resource, carrying
//! [`crate::repl::wire`] frames. An I/O shell (tokio); it knows nothing of the engine.
//!
//! ```text
//! let link = Link::establish(&cfg, &listener, peer_addr).await?;   // retries every connect-int
//! link.send(0, Packet::Data { .. }).await?;                         // data stream
//! link.send(0, Packet::WriteAck(ack)).await?;                       // control stream
//! let frame = link.recv().await?;                                   // either stream
//! link.close().await;
//! ```
//!
//! # Two TCP streams per link, as DRBD
//!
//! A link is two TCP connections: the *data* stream (replicated writes, resync data, bitmap,
//! handshake parameters: everything that may be big or must stay in order with the writes) and
//! the *control* stream (pings and acknowledgements, DRBD's "meta" socket), chosen per packet
//! type by [`stream_for`]. One stream with a priority writer was the alternative; it was not
//! chosen because it only orders *our* queue: an ack written after a 1 MiB data frame still
//! waits behind everything already in the kernel's send buffer (megabytes, auto-tuned), and on
//! the receiving side behind every data frame the peer has not consumed yet. A receiver that
//! stops reading data because its disk is slow would then also stop reading the acks and pings
//! that are needed to make progress, and a busy link would miss `ping-timeout` (DRBD's
//! "PingAck did not arrive in time" under load). With two streams the control stream is
//! always read, whatever the data stream's backpressure, and small frames never queue behind
//! bulk ones anywhere. Every socket has `TCP_NODELAY`. The receiver gets packets of the two
//! streams interleaved; order is kept within a stream (so a `BarrierAck` follows the
//! `WriteAck`s of its epoch, and `Data` and `Barrier` stay in order).
//!
//! # Establishing ([`connect`])
//!
//! Both nodes listen on their `address` and dial the peer's every `connect-int`. Every stream
//! starts with a `Hello` each way (resource, node ids, protocol range); a wrong resource or
//! node id, or no common protocol version, is a fatal [`LinkError::Mismatch`]. The tie-break
//! for simultaneous connects is a fixed rule both sides evaluate alike: **a connection
//! survives only if the node with the higher node id dialed it.** The lower node's dials are
//! therefore wake-up calls: they are dropped right after the `Hello` exchange, and make the
//! higher node dial at once instead of at its next `connect-int`. The surviving connections
//! authenticate ([`auth`], when `cram-hmac-alg` is set) and the higher node dials the data
//! stream first, then the control stream; the lower node pairs them by the stream bit in the
//! `Hello`.
//!
//! # Keepalive ([`keepalive`])
//!
//! A `Ping` on the control stream every `ping-int`; the `PingAck` must arrive within
//! `ping-timeout` or the link fails with [`LinkError::PingTimeout`]. Pings from the peer are
//! answered by the link itself; neither reaches [`Link::recv`].
//!
//! # Errors
//!
//! [`LinkError::is_fatal`] tells the caller to go `StandAlone` (authentication failed, the
//! peer is configured for something else, our configuration is unusable); anything else means
//! establish again.

pub mod auth;
pub mod connect;
mod error;
pub mod framed;
pub mod keepalive;
mod link;
mod outbox;
pub mod shared_listener;
mod stream;

pub use auth::{AuthConfig, HmacAlg};
pub use error::LinkError;
pub use link::{LARGE_FRAME_DATA, Link, LinkInfo, LinkSender, LinkStats, Reservation};

use crate::config::NetOptions;
use crate::repl::wire::PacketType;
use crate::tls::{PeerTls, X509Files};
use crate::types::NodeId;
use std::sync::Arc;
use std::time::Duration;

/// The two streams of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Bulk and ordered traffic: data, resync, bitmap, parameters.
    Data,
    /// Pings and acknowledgements (DRBD's meta socket).
    Control,
}

/// The stream a packet type travels on (DRBD's split between the data and the meta socket).
pub fn stream_for(ty: PacketType) -> Stream {
    match ty {
        PacketType::Ping
        | PacketType::PingAck
        | PacketType::RecvAck
        | PacketType::WriteAck
        | PacketType::ResyncWriteAck
        | PacketType::NegAck
        | PacketType::Superseded
        | PacketType::RetryWrite
        | PacketType::NegResyncReply
        | PacketType::ResyncIsInSync
        | PacketType::BarrierAck
        | PacketType::OvResult
        | PacketType::TwoPcYes
        | PacketType::TwoPcNo => Stream::Control,
        _ => Stream::Data,
    }
}

/// Data-stream frames read ahead of the engine: a write is at most 1 MiB, so this bounds
/// what a link buffers beyond `max-buffers` while the engine has the data stream paused.
const DATA_QUEUE: usize = 8;

/// What a link needs to know. [`LinkConfig::from_net_options`] builds it from the resource's
/// `net` section; tests set the durations directly.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// The resource name, checked against the peer's.
    pub resource: String,
    /// Our node id.
    pub me: NodeId,
    /// The peer's node id.
    pub peer: NodeId,
    /// `connect-int`: pause between two dial attempts.
    pub connect_int: Duration,
    /// `ping-int`: a ping this often.
    pub ping_int: Duration,
    /// `ping-timeout`: the PingAck must arrive within this.
    pub ping_timeout: Duration,
    /// A dial, the Hello exchange and authentication of one stream must finish within this,
    /// and the lower node waits this long for the second stream of a pair; once the peer has
    /// closed one stream of a link, the other must end within this too (`timeout`).
    pub handshake_timeout: Duration,
    /// `timeout`: how long the peer may take to answer a request (for [`LinkConfig::ko_deadline`]).
    pub timeout: Duration,
    /// `ko-count`: how many `timeout`s a request may stay unanswered (0: never).
    pub ko_count: u32,
    /// CRAM-HMAC, or none.
    pub auth: Option<AuthConfig>,
    /// TLS (`tls yes`), or none.
    pub tls: Option<Arc<PeerTls>>,
    /// Received data-stream frames buffered before the link stops reading the data stream.
    pub data_queue: usize,
    /// Received control-stream frames buffered (acks are bounded by requests in flight, so this
    /// is generous: when it is full the control stream stops being read and pings time out).
    pub control_queue: usize,
    /// `sndbuf-size` / `rcvbuf-size`: the sockets' buffer sizes in bytes (`SO_SNDBUF`,
    /// `SO_RCVBUF`); 0 leaves them to the kernel's autotuning, as DRBD does.
    pub sndbuf_size: u32,
    pub rcvbuf_size: u32,
}

impl LinkConfig {
    /// Applies `sndbuf-size` / `rcvbuf-size` to a socket before it connects or listens (a
    /// listener's sizes are inherited by the connections it accepts).
    pub fn size_buffers(&self, socket: &tokio::net::TcpSocket) -> std::io::Result<()> {
        if self.sndbuf_size > 0 {
            socket.set_send_buffer_size(self.sndbuf_size)?;
        }
        if self.rcvbuf_size > 0 {
            socket.set_recv_buffer_size(self.rcvbuf_size)?;
        }
        Ok(())
    }

    /// A listener on `addr` with this configuration's socket buffer sizes.
    pub fn listen(&self, addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As `TcpListener::bind`: a restarted daemon can listen again at once.
        socket.set_reuseaddr(true)?;
        self.size_buffers(&socket)?;
        socket.bind(addr)?;
        socket.listen(1024)
    }

    /// From the `net` options (`connect-int` and `ping-int` in seconds, `ping-timeout` and
    /// `timeout` in tenths, as DRBD has them). Fails on an unusable configuration: equal node
    /// ids, an empty resource name, an unknown `cram-hmac-alg`, a secret without an algorithm or
    /// the reverse, or a zero interval.
    pub fn from_net_options(
        resource: &str,
        me: NodeId,
        peer: NodeId,
        peer_name: &str,
        net: &NetOptions,
    ) -> Result<LinkConfig, LinkError> {
        let tenths = |t: u32| Duration::from_millis(u64::from(t) * 100);
        let cfg = LinkConfig {
            resource: resource.to_string(),
            me,
            peer,
            connect_int: Duration::from_secs(u64::from(net.connect_int)),
            ping_int: Duration::from_secs(u64::from(net.ping_int)),
            ping_timeout: tenths(net.ping_timeout),
            handshake_timeout: tenths(net.timeout),
            timeout: tenths(net.timeout),
            ko_count: net.ko_count,
            auth: AuthConfig::from_options(
                net.cram_hmac_alg.as_deref(),
                net.shared_secret.as_deref(),
            )?,
            tls: peer_tls(net, peer_name)?,
            data_queue: DATA_QUEUE,
            control_queue: 8192,
            sndbuf_size: u32::try_from(net.sndbuf_size).unwrap_or(u32::MAX),
            rcvbuf_size: u32::try_from(net.rcvbuf_size).unwrap_or(u32::MAX),
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// A configuration with short test-friendly defaults (200 ms connect-int, 1 s ping-int,
    /// 500 ms ping-timeout, 2 s handshake) and no authentication.
    pub fn new(resource: &str, me: NodeId, peer: NodeId) -> LinkConfig {
        LinkConfig {
            resource: resource.to_string(),
            me,
            peer,
            connect_int: Duration::from_millis(200),
            ping_int: Duration::from_secs(1),
            ping_timeout: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(6),
            ko_count: 7,
            auth: None,
            tls: None,
            data_queue: DATA_QUEUE,
            control_queue: 8192,
            sndbuf_size: 0,
            rcvbuf_size: 0,
        }
    }

    /// Rejects what cannot work (checked again by [`Link::establish`]).
    pub fn check(&self) -> Result<(), LinkError> {
        if self.me == self.peer {
            return Err(LinkError::Config(format!(
                "our node id and the peer's are both {}",
                self.me
            )));
        }
        if self.resource.is_empty()
            || self.resource.len() > crate::repl::wire::MAX_RESOURCE_NAME_LEN
        {
            return Err(LinkError::Config(format!(
                "resource name '{}' is empty or too long for the wire",
                self.resource
            )));
        }
        for (name, d) in [
            ("connect-int", self.connect_int),
            ("ping-int", self.ping_int),
            ("ping-timeout", self.ping_timeout),
            ("timeout", self.handshake_timeout),
        ] {
            if d.is_zero() {
                return Err(LinkError::Config(format!("{name} must not be 0")));
            }
        }
        if self.data_queue == 0 || self.control_queue == 0 {
            return Err(LinkError::Config("receive queues must not be empty".into()));
        }
        Ok(())
    }

    /// The ko-count hook: how long a request sent to the peer may stay unanswered before the
    /// peer is kicked out (`ko-count` × `timeout`), or `None` when `ko-count` is 0. The link does
    /// not track requests; the engine does, and closes the link when one is overdue.
    pub fn ko_deadline(&self) -> Option<Duration> {
        (self.ko_count > 0).then(|| self.timeout.saturating_mul(self.ko_count))
    }
}

/// The peer link's TLS from the `net` options: `None` without `tls yes`; an error for a
/// half-configured TLS, for DRBD's keyring keywords (udrbd reads PEM files), and for files
/// that cannot be used. `peer_name` is the name the peer's certificate must carry.
fn peer_tls(net: &NetOptions, peer_name: &str) -> Result<Option<Arc<PeerTls>>, LinkError> {
    for (keyring, file) in [
        ("tls-keyring", "tls-ca-file"),
        ("tls-privkey", "tls-privkey-file"),
        ("tls-certificate", "tls-certificate-file"),
    ] {
        if net.extra.contains_key(keyring) {
            return Err(LinkError::Config(format!(
                "{keyring} names a key in the kernel keyring (DRBD's tlshd); udrbd reads PEM \
                 files: use {file} instead"
            )));
        }
    }
    let files = (
        &net.tls_ca_file,
        &net.tls_certificate_file,
        &net.tls_privkey_file,
    );
    if !net.tls {
        if files.0.is_some() || files.1.is_some() || files.2.is_some() {
            return Err(LinkError::Config(
                "tls-ca-file, tls-certificate-file or tls-privkey-file is set but not `tls yes` \
                 (the files would not be used)"
                    .into(),
            ));
        }
        return Ok(None);
    }
    let (Some(ca), Some(certificate), Some(privkey)) = files else {
        return Err(LinkError::Config(
            "`tls yes` needs tls-ca-file, tls-certificate-file and tls-privkey-file in net { }"
                .into(),
        ));
    };
    let files = X509Files {
        ca: ca.clone(),
        certificate: certificate.clone(),
        privkey: privkey.clone(),
    };
    PeerTls::new(&files, peer_name)
        .map(|t| Some(Arc::new(t)))
        .map_err(|e| LinkError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_net_options_units_and_defaults() {
        let c =
            LinkConfig::from_net_options("r0", NodeId(0), NodeId(1), "bob", &NetOptions::default())
                .unwrap();
        assert_eq!(c.connect_int, Duration::from_secs(10));
        assert_eq!(c.ping_int, Duration::from_secs(10));
        assert_eq!(c.ping_timeout, Duration::from_millis(500));
        assert_eq!(c.timeout, Duration::from_secs(6));
        assert_eq!(c.ko_deadline(), Some(Duration::from_secs(42)));
        assert!(c.auth.is_none());
    }

    #[test]
    fn from_net_options_rejects_bad_configs() {
        let net = NetOptions {
            cram_hmac_alg: Some("md4".into()),
            shared_secret: Some("x".into()),
            ..NetOptions::default()
        };
        let e = LinkConfig::from_net_options("r0", NodeId(0), NodeId(1), "bob", &net).unwrap_err();
        assert!(e.is_fatal() && e.to_string().contains("md4"), "{e}");
        let e =
            LinkConfig::from_net_options("r0", NodeId(1), NodeId(1), "bob", &NetOptions::default())
                .unwrap_err();
        assert!(matches!(e, LinkError::Config(_)), "{e}");
        let net = NetOptions {
            ping_int: 0,
            ..NetOptions::default()
        };
        assert!(LinkConfig::from_net_options("r0", NodeId(0), NodeId(1), "bob", &net).is_err());
        let net = NetOptions {
            ko_count: 0,
            ..NetOptions::default()
        };
        let c = LinkConfig::from_net_options("r0", NodeId(0), NodeId(1), "bob", &net).unwrap();
        assert_eq!(c.ko_deadline(), None);
    }

    #[test]
    fn acks_and_pings_use_the_control_stream() {
        assert_eq!(stream_for(PacketType::Ping), Stream::Control);
        assert_eq!(stream_for(PacketType::WriteAck), Stream::Control);
        assert_eq!(stream_for(PacketType::BarrierAck), Stream::Control);
        assert_eq!(stream_for(PacketType::Data), Stream::Data);
        assert_eq!(stream_for(PacketType::Barrier), Stream::Data);
        assert_eq!(stream_for(PacketType::Disconnect), Stream::Data);
    }
}
