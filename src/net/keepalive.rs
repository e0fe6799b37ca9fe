//! Keepalive: a `Ping` on the control stream every `ping-int`; its `PingAck` must arrive
//! within `ping-timeout`, or the peer is declared dead ([`LinkError::PingTimeout`], DRBD's
//! "PingAck did not arrive in time", connection state `NetworkFailure`).
//!
//! Unlike DRBD, which pings only an idle control stream, we ping always: the cost is one
//! 24-byte frame per interval, and the rule stays one sentence. The timeout counts from the
//! moment the ping is queued, so a control stream that cannot even be written (the peer stopped
//! reading, its receive window is closed) also times out. Pings from the peer are answered by
//! the link's control-stream reader, without going through the consumer.
//!
//! Requests the peer does not answer (`ko-count` × `timeout`) are tracked by the engine, which
//! knows the requests; [`super::LinkConfig::ko_deadline`] gives it the limit.

use super::error::LinkError;
use crate::repl::wire::{self, Packet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

/// Counters shared between the keepalive and the readers.
#[derive(Debug, Default)]
pub(crate) struct PingCounters {
    /// Pings we sent.
    pub sent: AtomicU64,
    /// Pings of the peer we answered.
    pub answered: AtomicU64,
}

/// Pings through `control` every `ping_int`; `acks` counts the PingAcks received. Ends with
/// [`LinkError::PingTimeout`], with [`LinkError::Closed`] when the link goes away, or `Ok` once
/// `closing` turns true.
pub(crate) async fn run(
    control: Arc<super::outbox::Outbox>,
    acks: watch::Receiver<u64>,
    mut closing: watch::Receiver<bool>,
    ping_int: Duration,
    ping_timeout: Duration,
    counters: Arc<PingCounters>,
) -> Result<(), LinkError> {
    tokio::select! {
        r = pings(control, acks, ping_int, ping_timeout, counters) => r,
        () = async {
            let _ = closing.wait_for(|c| *c).await;
        } => Ok(()),
    }
}

async fn pings(
    control: Arc<super::outbox::Outbox>,
    mut acks: watch::Receiver<u64>,
    ping_int: Duration,
    ping_timeout: Duration,
    counters: Arc<PingCounters>,
) -> Result<(), LinkError> {
    let mut ping = Vec::new();
    wire::encode(&Packet::Ping, &mut ping).map_err(LinkError::Encode)?;
    let mut next = Instant::now() + ping_int;
    loop {
        sleep_until(next).await;
        let seen = *acks.borrow_and_update();
        let sent = Instant::now();
        control.wait_room().await;
        control.push(ping.clone()).map_err(|_| LinkError::Closed)?;
        counters.sent.fetch_add(1, Ordering::Relaxed);
        // `wait_for`'s guard is dropped here, never held across an await.
        let acked = timeout(ping_timeout, acks.wait_for(|n| *n > seen))
            .await
            .map(|r| r.is_ok());
        match acked {
            Ok(true) => {}
            Ok(false) => return Err(LinkError::Closed),
            Err(_) => {
                tracing::warn!("PingAck did not arrive in time");
                return Err(LinkError::PingTimeout);
            }
        }
        next = sent + ping_int;
    }
}
