//! A running link: two established streams, five tasks.
//!
//! - one [`Outbox`] per stream: a sender encodes in its own task and writes the frame straight
//!   to the socket when nothing is queued ahead of it; what the socket does not take is queued
//!   for the stream's drain task, which writes it in order with vectored writes;
//! - one reader per stream, which answers pings, counts ping acks and queues everything else
//!   for [`Link::recv`] (bounded: a full data queue stops reading the data stream, which is
//!   TCP backpressure to the peer, while the control stream goes on being read);
//! - the keepalive ([`super::keepalive`]).
//!
//! A supervisor task waits for the first of them to fail, or for the peer to close both
//! streams (the second within [`LinkConfig::handshake_timeout`] of the first), records the
//! error, and drops everything, which closes both sockets. [`Link::recv`] returns what was received before the
//! failure, then the error. Dropping the [`Link`] aborts all tasks and closes the sockets.

use super::framed::FrameReader;
use super::keepalive::{self, PingCounters};
use super::outbox::Outbox;
use super::stream::{PeerStream, SockRead};
use super::{LinkConfig, LinkError, Stream, stream_for};
use crate::repl::wire::{self, Frame, Packet, SplitFrame};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::BufReader;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Read buffer per stream.
const READ_BUFFER: usize = 64 * 1024;
/// How long [`Link::close`] waits for queued frames to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the handshake established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The agreed protocol version (the highest both speak).
    pub protocol: u32,
    /// The peer's Hello feature bits ([`crate::repl::wire::features`]), transport bits masked.
    pub peer_features: u64,
    /// True if we dialed this link (we are the node with the higher id).
    pub dialed: bool,
    pub data_local: SocketAddr,
    pub data_peer: SocketAddr,
    pub control_local: SocketAddr,
    pub control_peer: SocketAddr,
}

/// Keepalive counters, for status and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Pings we sent.
    pub pings_sent: u64,
    /// PingAcks we received.
    pub ping_acks: u64,
    /// Pings of the peer we answered.
    pub pings_answered: u64,
}

#[derive(Debug)]
struct Shared {
    error: Mutex<Option<LinkError>>,
    /// Set with the first error: sending is refused from then on.
    failed: AtomicBool,
    acks: watch::Sender<u64>,
    pings: Arc<PingCounters>,
}

impl Shared {
    /// Records the first error; later ones are only logged.
    fn fail(&self, e: LinkError) {
        let mut g = match self.error.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.is_none() {
            if !matches!(e, LinkError::Closed) {
                tracing::warn!("link failed: {e}");
            }
            *g = Some(e);
            self.failed.store(true, Ordering::Release);
        } else {
            tracing::debug!("link: later error {e}");
        }
    }

    fn error(&self) -> LinkError {
        let g = match self.error.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.clone().unwrap_or(LinkError::Closed)
    }
}

/// A clonable handle that sends on a link (for tasks other than the one owning the [`Link`]).
#[derive(Clone, Debug)]
pub struct LinkSender {
    data: Arc<Outbox>,
    control: Arc<Outbox>,
    shared: Arc<Shared>,
}

impl LinkSender {
    /// See [`Link::send`].
    pub async fn send(&self, volume: u16, packet: &Packet) -> Result<(), LinkError> {
        let (outbox, frame) = self.encode(volume, packet)?;
        outbox.wait_room().await;
        outbox.push(frame).map_err(|_| self.shared.error())
    }

    /// Like [`LinkSender::send`] for several packets, in order, but never waits: the frames
    /// for each stream go out together, with one write where the socket takes them (see
    /// [`Outbox::push_many`]), or are queued behind what is queued already however much that
    /// is. For callers that must not await (the driver, under its lock, so that packets leave
    /// in the engine's order) and whose own flow control bounds what they send. A packet that
    /// cannot be encoded is left out and its error returned, once the others are sent; an
    /// error of the link itself is returned at once.
    pub fn send_now_many(&self, volume: u16, packets: &[Packet]) -> Result<(), LinkError> {
        let mut data = Vec::new();
        let mut control = Vec::new();
        let mut bad = None;
        for packet in packets {
            match self.encode(volume, packet) {
                Ok((outbox, frame)) if std::ptr::eq(outbox, &*self.data) => data.push(frame),
                Ok((_, frame)) => control.push(frame),
                Err(e @ LinkError::Encode(_)) => bad = bad.or(Some(e)),
                Err(e) => return Err(e),
            }
        }
        for (outbox, frames) in [(&self.data, data), (&self.control, control)] {
            if !frames.is_empty() {
                outbox.push_many(frames).map_err(|_| self.shared.error())?;
            }
        }
        bad.map_or(Ok(()), Err)
    }

    /// The data stream has room for more: fewer than [`super::outbox`]'s high-water mark of
    /// bytes are queued for the peer (or the link failed, which the next send reports).
    pub fn has_room(&self) -> bool {
        self.data.has_room()
    }

    /// Waits until [`LinkSender::has_room`]. Writers wait here before taking in more data to
    /// replicate, so a slow peer pushes back on them instead of growing the queue.
    pub async fn wait_room(&self) {
        self.data.wait_room().await
    }

    /// Takes `packet`'s place in its stream now, for [`Reservation::fill`] to encode and send
    /// later, outside whatever lock fixed the order (the driver's, for a large write).
    pub fn reserve(&self, packet: &Packet) -> Reservation {
        let outbox = self.outbox_for(packet);
        let ticket = outbox.reserve();
        Reservation {
            outbox: Arc::clone(outbox),
            shared: Arc::clone(&self.shared),
            ticket: Some(ticket),
        }
    }

    fn outbox_for(&self, packet: &Packet) -> &Arc<Outbox> {
        match stream_for(packet.packet_type()) {
            Stream::Data => &self.data,
            Stream::Control => &self.control,
        }
    }

    fn encode(&self, volume: u16, packet: &Packet) -> Result<(&Outbox, SplitFrame), LinkError> {
        if matches!(
            packet,
            Packet::Hello { .. } | Packet::AuthChallenge { .. } | Packet::AuthResponse { .. }
        ) {
            return Err(LinkError::Protocol(format!(
                "{:?} belongs to the handshake, not to an established link",
                packet.packet_type()
            )));
        }
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(self.shared.error());
        }
        let frame = wire::encode_split(volume, packet).map_err(LinkError::Encode)?;
        Ok((self.outbox_for(packet), frame))
    }
}

/// Packets carrying more data than this are large: the driver only reserves their place
/// under its lock, and the stream's drain task encodes them (a CRC over up to 1 MiB, off the
/// sender's thread). Smaller reserved packets are encoded by [`Reservation::fill`] itself.
pub const LARGE_FRAME_DATA: usize = 32 * 1024;

/// A place in a stream taken by [`LinkSender::reserve`]. Frames sent after it wait until it is
/// filled; dropping it unfilled gives the place up.
#[derive(Debug)]
pub struct Reservation {
    outbox: Arc<Outbox>,
    shared: Arc<Shared>,
    ticket: Option<u64>,
}

impl Reservation {
    /// Fills the place with `packet` (the one it was reserved for): the stream's drain task
    /// encodes and writes it. An encoding error then ends the link.
    pub fn fill(mut self, volume: u16, packet: crate::repl::wire::Packet) -> Result<(), LinkError> {
        let Some(ticket) = self.ticket.take() else {
            return Ok(());
        };
        if packet.data_len() <= LARGE_FRAME_DATA {
            // Cheap to encode here (a write's block is not copied): written now when its
            // place is next, with no hop to the drain task. A packet that does not encode
            // takes the path below, where the drain task meets the error and ends the stream.
            if let Ok(frame) = wire::encode_split(volume, &packet) {
                return self
                    .outbox
                    .fill_now(ticket, frame)
                    .map_err(|_| self.shared.error());
            }
        }
        // About what it encodes to: its data, the rest being small.
        let size_hint = packet.data_len() + 64;
        let encode: super::outbox::Encoder = Box::new(move || {
            wire::encode_split(volume, &packet)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
        });
        self.outbox
            .fill(ticket, encode, size_hint)
            .map_err(|_| self.shared.error())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.outbox.give_up(ticket);
        }
    }
}

/// One established link to the peer. See the [module doc](super).
#[derive(Debug)]
pub struct Link {
    info: LinkInfo,
    sender: LinkSender,
    data_rx: mpsc::Receiver<Frame>,
    control_rx: mpsc::Receiver<Frame>,
    data_open: bool,
    control_open: bool,
    /// [`Link::set_data_paused`].
    data_paused: bool,
    closing: watch::Sender<bool>,
    /// The supervisor; dropping the set aborts it, and with it every task of the link.
    supervisor: JoinSet<()>,
}

impl Link {
    /// Establishes a link: see [`super::connect::establish`]. `listener` is bound to our
    /// `address` by the caller; `peer` is the peer's `address`.
    pub async fn establish(
        cfg: &LinkConfig,
        listener: &tokio::net::TcpListener,
        peer: SocketAddr,
    ) -> Result<Link, LinkError> {
        super::connect::establish(cfg, listener, peer).await
    }

    /// [`Link::establish`] over several paths (see [`super::connect::establish_paths`]).
    pub async fn establish_paths(
        cfg: &LinkConfig,
        paths: &[(&dyn super::shared_listener::Acceptor, SocketAddr)],
    ) -> Result<Link, LinkError> {
        super::connect::establish_paths(cfg, paths).await
    }

    /// Starts the tasks on two handshaken streams. Must run inside a tokio runtime.
    pub(crate) fn start(
        cfg: &LinkConfig,
        data: PeerStream,
        control: PeerStream,
        info: LinkInfo,
    ) -> Result<Link, LinkError> {
        let (acks, acks_rx) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            error: Mutex::new(None),
            failed: AtomicBool::new(false),
            acks,
            pings: Arc::new(PingCounters::default()),
        });
        let (data_in, data_rx) = mpsc::channel(cfg.data_queue);
        let (control_in, control_rx) = mpsc::channel(cfg.control_queue);
        let (closing, closing_rx) = watch::channel(false);
        let (data_r, data_w, data_relay) = data.into_halves()?;
        let (control_r, control_w, control_relay) = control.into_halves()?;

        let data_out = Arc::new(Outbox::new(data_w));
        let control_out = Arc::new(Outbox::new(control_w));

        let mut tasks: JoinSet<Result<(), LinkError>> = JoinSet::new();
        for relay in [data_relay, control_relay].into_iter().flatten() {
            tasks.spawn(relay);
        }
        tasks.spawn(drain(data_out.clone(), closing_rx.clone()));
        tasks.spawn(drain(control_out.clone(), closing_rx.clone()));
        tasks.spawn(read_loop(
            data_r,
            data_in,
            control_out.clone(),
            shared.clone(),
        ));
        tasks.spawn(read_loop(
            control_r,
            control_in,
            control_out.clone(),
            shared.clone(),
        ));
        tasks.spawn(keepalive::run(
            control_out.clone(),
            acks_rx,
            closing_rx,
            cfg.ping_int,
            cfg.ping_timeout,
            shared.pings.clone(),
        ));

        let mut supervisor = JoinSet::new();
        supervisor.spawn(supervise(tasks, shared.clone(), cfg.handshake_timeout));
        Ok(Link {
            info,
            sender: LinkSender {
                data: data_out,
                control: control_out,
                shared,
            },
            data_rx,
            control_rx,
            data_open: true,
            control_open: true,
            data_paused: false,
            closing,
            supervisor,
        })
    }

    /// What the handshake established.
    pub fn info(&self) -> &LinkInfo {
        &self.info
    }

    /// Keepalive counters so far.
    pub fn stats(&self) -> LinkStats {
        let p = &self.sender.shared.pings;
        LinkStats {
            pings_sent: p.sent.load(Ordering::Relaxed),
            ping_acks: *self.sender.shared.acks.borrow(),
            pings_answered: p.answered.load(Ordering::Relaxed),
        }
    }

    /// Queues `packet` for `volume` on its stream ([`super::stream_for`]: acks and pings on the
    /// control stream, the rest on the data stream), in order within the stream. Waits while
    /// the stream's queue is full. Errors: [`LinkError::Encode`] for a packet that cannot be
    /// encoded and [`LinkError::Protocol`] for a handshake packet (the link sends those itself);
    /// the link is unaffected by either. Otherwise the error the link failed with.
    pub async fn send(&self, volume: u16, packet: &Packet) -> Result<(), LinkError> {
        self.sender.send(volume, packet).await
    }

    /// A clonable sending handle.
    pub fn sender(&self) -> LinkSender {
        self.sender.clone()
    }

    /// While paused, [`Link::recv`] returns control-stream frames only: the data stream's
    /// frames stay in the socket, and once the link's small read-ahead is full the peer's TCP
    /// window closes (`max-buffers`). Pings and acks go on.
    pub fn set_data_paused(&mut self, paused: bool) {
        self.data_paused = paused;
    }

    /// The next received frame, control stream first when both have one. After a failure,
    /// returns what was received before it, then the error (every call after that returns it
    /// again). Cancellation-safe.
    pub async fn recv(&mut self) -> Result<Frame, LinkError> {
        loop {
            tokio::select! {
                biased;
                f = self.control_rx.recv(), if self.control_open => match f {
                    Some(f) => return Ok(f),
                    None => self.control_open = false,
                },
                // Once the control stream is gone the link is ending: what the data stream
                // still has (a Disconnect) is delivered, paused or not.
                f = self.data_rx.recv(), if self.data_open && (!self.data_paused || !self.control_open) => match f {
                    Some(f) => return Ok(f),
                    None => self.data_open = false,
                },
                else => return Err(self.sender.shared.error()),
            }
        }
    }

    /// Closes the link in order: sends `Disconnect` after everything already queued on the
    /// data stream, writes what is queued on both streams, shuts our sending side down and
    /// reads on until the peer has closed both streams too (which a udrbd peer does as soon as
    /// it has read everything), for at most 2 s in all; then stops all tasks. The peer's
    /// [`Link::recv`] returns everything sent before, the `Disconnect`, then
    /// [`LinkError::PeerClosed`].
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(CLOSE_GRACE, self.send(0, &Packet::Disconnect)).await;
        self.sender.shared.fail(LinkError::Closed);
        let _ = self.closing.send(true);
        let _ = tokio::time::timeout(CLOSE_GRACE, self.supervisor.join_next()).await;
    }
}

/// Ends the link at the first real error, or once the peer has closed both streams (each
/// reader reads to the end of its stream first, so nothing the peer sent before closing is
/// lost). Writers and the keepalive end quietly when the link is closing.
///
/// Once one stream has ended, the other must end within `grace`: a peer that closed only one
/// stream (or a stale stream paired with a live one) does not leave a half link behind.
async fn supervise(
    mut tasks: JoinSet<Result<(), LinkError>>,
    shared: Arc<Shared>,
    grace: Duration,
) {
    let mut ended_streams = 0;
    loop {
        let next = if ended_streams == 0 {
            tasks.join_next().await
        } else {
            match tokio::time::timeout(grace, tasks.join_next()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::warn!("the peer closed one stream of the link but not the other");
                    break;
                }
            }
        };
        let Some(done) = next else { break };
        match done {
            Ok(Ok(())) | Ok(Err(LinkError::Closed)) => {}
            Ok(Err(LinkError::PeerClosed)) => {
                shared.fail(LinkError::PeerClosed);
                ended_streams += 1;
                if ended_streams == 2 {
                    break;
                }
            }
            Ok(Err(e)) => {
                shared.fail(e);
                break;
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                shared.fail(LinkError::Protocol(format!("a link task panicked: {e}")));
                break;
            }
        }
    }
    shared.fail(LinkError::Closed);
    tasks.abort_all();
}

async fn drain(outbox: Arc<Outbox>, closing: watch::Receiver<bool>) -> Result<(), LinkError> {
    outbox.drain(closing).await.map_err(LinkError::from)
}

async fn read_loop(
    r: SockRead,
    tx: mpsc::Sender<Frame>,
    control: Arc<Outbox>,
    shared: Arc<Shared>,
) -> Result<(), LinkError> {
    let mut reader = FrameReader::new(BufReader::with_capacity(READ_BUFFER, r));
    let mut ping_ack = Vec::new();
    wire::encode(&Packet::PingAck, &mut ping_ack).map_err(LinkError::Encode)?;
    loop {
        let Some(frame) = reader.read_frame().await? else {
            return Err(LinkError::PeerClosed);
        };
        match frame.packet {
            Packet::Ping => {
                // Fails only once our control writer is gone (closing): keep reading anyway,
                // to the end of the stream.
                control.wait_room().await;
                if control.push(ping_ack.clone()).is_ok() {
                    shared.pings.answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Packet::PingAck => shared.acks.send_modify(|n| *n += 1),
            Packet::Hello { .. } | Packet::AuthChallenge { .. } | Packet::AuthResponse { .. } => {
                return Err(LinkError::Protocol(format!(
                    "unexpected {:?} on an established link",
                    frame.packet.packet_type()
                )));
            }
            _ => tx.send(frame).await.map_err(|_| LinkError::Closed)?,
        }
    }
}
