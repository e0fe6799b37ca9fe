//! Driving proto's option haggling over a socket: greeting, client flags, then options until
//! transmission starts or the negotiation ends. Uses the two-phase
//! [`Negotiation::begin`]/[`Negotiation::resume_lookup`] API so that `Purpose::Go` goes through
//! [`NbdBackend::open`] (asynchronous, and atomic with the lookup).

use super::access::ClientInfo;
use super::backend::{ExportIo, NbdBackend, OpenExport};
use crate::nbd::proto::{
    CLIENT_FLAGS_LEN, CloseReason, GoRefusal, Negotiated, Negotiation, Next, OPTION_HEADER_LEN,
    OptionHeader, PayloadPlan, Purpose, RepError, SERVER_HANDSHAKE_FLAGS, Step,
    decode_client_flags, server_greeting,
};
use crate::tls::{MaybeTls, NbdTls};
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A client's stream: plain until STARTTLS, TLS after ([`MaybeTls::Gone`] only while a failed
/// handshake ends the connection).
pub(super) type ClientStream<S> = MaybeTls<S>;

/// How option haggling ended.
pub(super) enum Handshake {
    /// Transmission starts with this export.
    Transmission(Box<Negotiated>, Arc<dyn ExportIo>),
    /// The client ended it (ABORT) or was refused; the connection closes quietly.
    Closed(String),
}

/// Why the connection must be dropped during haggling.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeFailure {
    /// The socket failed or the client hung up.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The client broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Runs the handshake on `s`. `max_option_len` is the largest option payload read. With `tls`,
/// STARTTLS is offered; once it succeeds `s` is the TLS stream and `client` has its names.
/// Every export lookup first checks the export's policy for `client`.
pub(super) async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut ClientStream<S>,
    backend: &Arc<dyn NbdBackend>,
    max_option_len: u32,
    client: &mut ClientInfo,
    tls: Option<&NbdTls>,
) -> Result<Handshake, HandshakeFailure> {
    s.write_all(&server_greeting()).await?;
    s.flush().await?;
    let mut flags = [0u8; CLIENT_FLAGS_LEN];
    s.read_exact(&mut flags).await?;
    let client_flags = decode_client_flags(&flags, SERVER_HANDSHAKE_FLAGS)
        .map_err(|e| HandshakeFailure::Protocol(e.to_string()))?;
    let mut neg = Negotiation::new(client_flags, Arc::clone(backend));
    if tls.is_some() {
        neg.offer_tls();
    }
    loop {
        let mut hb = [0u8; OPTION_HEADER_LEN];
        s.read_exact(&mut hb).await?;
        let header =
            OptionHeader::decode(&hb).map_err(|e| HandshakeFailure::Protocol(e.to_string()))?;
        let mut opened: Option<Arc<dyn ExportIo>> = None;
        let outcome = match header.plan(max_option_len) {
            PayloadPlan::Read(n) => {
                let mut payload = vec![0u8; n as usize];
                s.read_exact(&mut payload).await?;
                match neg.begin(header.option, &payload) {
                    Step::Done(o) => o,
                    Step::List(p) => {
                        let visible = backend
                            .list()
                            .into_iter()
                            .filter(|(name, _)| backend.policy(name).check(name, client).is_ok())
                            .collect();
                        neg.resume_list(p, visible)
                    }
                    Step::Lookup(p) => {
                        let name = p.name().to_string();
                        if let Err(refusal) = backend.policy(&name).check(&name, client) {
                            tracing::info!(
                                client = ?client.addr,
                                "NBD client refused: {}",
                                refusal.message
                            );
                            neg.resume_lookup(p, Err(refusal))
                        } else if p.purpose() == Purpose::Go {
                            let found = open(backend.as_ref(), &name).await.map(|o| {
                                opened = Some(o.io);
                                o.info
                            });
                            neg.resume_lookup(p, found)
                        } else {
                            let found = backend.lookup(&name, Purpose::Info);
                            neg.resume_lookup(p, found)
                        }
                    }
                }
            }
            PayloadPlan::Discard(n) => {
                discard(s, u64::from(n)).await?;
                neg.handle_oversize(header.option)
            }
            PayloadPlan::Disconnect => {
                return Err(HandshakeFailure::Protocol(format!(
                    "option {} with {} bytes of data is too large",
                    header.option, header.length
                )));
            }
        };
        s.write_all(&outcome.reply).await?;
        s.flush().await?;
        match outcome.next {
            Next::Continue => {}
            Next::StartTls => {
                let Some(tls) = tls else {
                    return Err(HandshakeFailure::Protocol("STARTTLS without TLS".into()));
                };
                let MaybeTls::Plain(plain) = std::mem::replace(s, MaybeTls::Gone) else {
                    return Err(HandshakeFailure::Protocol("STARTTLS twice".into()));
                };
                let (secured, names) = tls
                    .accept(plain)
                    .await
                    .map_err(|e| HandshakeFailure::Io(crate::tls::io_error(e)))?;
                *s = MaybeTls::Tls(Box::new(secured));
                client.tls_names = Some(names);
            }
            Next::Transmission(n) => {
                // Only a Go lookup leads here, and only after `open` succeeded.
                let Some(io) = opened else {
                    return Err(HandshakeFailure::Protocol(
                        "transmission without an opened export".into(),
                    ));
                };
                return Ok(Handshake::Transmission(n, io));
            }
            Next::Close(reason) => return Ok(Handshake::Closed(describe(&reason))),
        }
        // An export opened for an option that did not start transmission (cannot happen, the
        // negotiation checks everything before the lookup) is released here by dropping it.
    }
}

/// Calls the backend's callback-based `open` and waits for it.
async fn open(backend: &dyn NbdBackend, name: &str) -> Result<OpenExport, GoRefusal> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    backend.open(
        name,
        Box::new(move |r| {
            // The connection may have timed out meanwhile; the export is then released by
            // dropping it here.
            let _ = tx.send(r);
        }),
    );
    rx.await.unwrap_or_else(|_| {
        Err(GoRefusal::new(
            RepError::Shutdown,
            "the server dropped the open request",
        ))
    })
}

/// Reads and throws away `n` bytes.
pub(super) async fn discard<R: AsyncRead + Unpin>(r: &mut R, n: u64) -> io::Result<()> {
    let copied = tokio::io::copy(&mut r.take(n), &mut tokio::io::sink()).await?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn describe(reason: &CloseReason) -> String {
    match reason {
        CloseReason::Abort => "client aborted the negotiation".into(),
        CloseReason::ExportRefused(r) => format!("export refused: {}", r.message),
        CloseReason::BadExportName(e) => format!("bad export name: {e}"),
        CloseReason::AlreadyFinished => "negotiation already finished".into(),
    }
}
