//! TLS on the system's OpenSSL: the peer link's mutually authenticated x509 ([`PeerTls`]) and
//! the NBD export's STARTTLS with certificates or a pre-shared key ([`NbdTls`]).
//!
//! Why OpenSSL and not rustls: the NBD clients this project serves (qemu, libnbd, both on
//! GnuTLS) offer TLS with a pre-shared key as well as with certificates, and rustls has no PSK
//! (rustls/rustls#174). One TLS stack for both links rather than two.
//!
//! What is checked on the peer link: both sides present a certificate that chains to the
//! configured CA, and each certificate must name the host it belongs to (its `on NAME` in the
//! config) in its subject alternative names or common name, so a certificate issued to one
//! node cannot be used to pose as another. TLS 1.3 only, no session resumption (every stream
//! checks the certificate again).

use openssl::ssl::{
    Ssl, SslAcceptor, SslConnector, SslContext, SslFiletype, SslMethod, SslRef, SslVerifyMode,
    SslVersion,
};
use openssl::x509::X509VerifyResult;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_openssl::SslStream;

/// What can go wrong setting TLS up or running its handshake.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A key, certificate or CA file cannot be used.
    #[error("cannot use {what} '{path}': {why}")]
    Load {
        what: &'static str,
        path: String,
        why: String,
    },
    /// An inconsistent configuration (a key that does not match its certificate, ...).
    #[error("{0}")]
    Config(String),
    /// The handshake failed; the text says why in an operator's words where it can.
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

impl From<openssl::error::ErrorStack> for TlsError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        TlsError::Config(stack(e))
    }
}

/// The PEM files of one node's x509 identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Files {
    /// CA certificates the peer's certificate must chain to.
    pub ca: String,
    /// Our certificate (leaf first, then intermediates).
    pub certificate: String,
    /// Our private key.
    pub privkey: String,
}

fn stack(e: openssl::error::ErrorStack) -> String {
    let reasons: Vec<String> = e
        .errors()
        .iter()
        .map(|e| e.reason().unwrap_or("unknown error").to_string())
        .collect();
    if reasons.is_empty() {
        e.to_string()
    } else {
        reasons.join("; ")
    }
}

fn load(
    what: &'static str,
    path: &str,
    f: impl FnOnce(&Path) -> Result<(), openssl::error::ErrorStack>,
) -> Result<(), TlsError> {
    let p = Path::new(path);
    if let Err(e) = std::fs::metadata(p) {
        return Err(TlsError::Load {
            what,
            path: path.into(),
            why: e.to_string(),
        });
    }
    f(p).map_err(|e| TlsError::Load {
        what,
        path: path.into(),
        why: stack(e),
    })
}

/// Loads a certificate chain and its key into a context builder and checks they belong
/// together.
fn load_cert_and_key(
    b: &mut openssl::ssl::SslContextBuilder,
    certificate: &str,
    privkey: &str,
) -> Result<(), TlsError> {
    load("the TLS certificate", certificate, |p| {
        b.set_certificate_chain_file(p)
    })?;
    load("the TLS private key", privkey, |p| {
        b.set_private_key_file(p, SslFiletype::PEM)
    })?;
    b.check_private_key().map_err(|e| {
        TlsError::Config(format!(
            "the private key '{privkey}' does not belong to the certificate '{certificate}': {}",
            stack(e)
        ))
    })
}

/// Loads our identity and the CA into a context builder.
fn load_identity(
    b: &mut openssl::ssl::SslContextBuilder,
    files: &X509Files,
) -> Result<(), TlsError> {
    load_cert_and_key(b, &files.certificate, &files.privkey)?;
    load("the TLS CA file", &files.ca, |p| b.set_ca_file(p))
}

/// Explains a failed handshake on `ssl`: the certificate check's verdict when there is one.
fn handshake_error(ssl: &SslRef, e: openssl::ssl::Error) -> TlsError {
    let verdict = ssl.verify_result();
    if verdict != X509VerifyResult::OK {
        return TlsError::Handshake(format!(
            "the peer's certificate was refused: {}",
            verdict.error_string()
        ));
    }
    let text = match e.ssl_error() {
        Some(s) => stack(s.clone()),
        None => match e.io_error() {
            Some(io) => io.to_string(),
            None => "the peer closed the connection (does it have TLS configured, and does it \
                     accept our certificate? see its log)"
                .into(),
        },
    };
    TlsError::Handshake(text)
}

/// Runs the TLS handshake on `s` with `ssl`, as the server (`accept`) or the client.
async fn handshake<S>(ssl: Ssl, s: S, accept: bool) -> Result<SslStream<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut st = SslStream::new(ssl, s)?;
    let done = if accept {
        Pin::new(&mut st).accept().await
    } else {
        Pin::new(&mut st).connect().await
    };
    match done {
        Ok(()) => Ok(st),
        Err(e) => Err(handshake_error(st.ssl(), e)),
    }
}

/// The peer link's TLS: one per connection to a peer (the certificate name it expects is that
/// peer's host name).
#[derive(Clone)]
pub struct PeerTls {
    server: SslContext,
    client: SslConnector,
    peer_name: String,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("peer_name", &self.peer_name)
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Loads our identity and the CA; `peer_name` is the name the peer's certificate must carry.
    pub fn new(files: &X509Files, peer_name: &str) -> Result<PeerTls, TlsError> {
        let mut a = SslAcceptor::mozilla_modern_v5(SslMethod::tls_server())?;
        load_identity(&mut a, files)?;
        a.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        a.set_num_tickets(0)?;
        let server = a.build().into_context();

        let mut c = SslConnector::builder(SslMethod::tls_client())?;
        c.set_min_proto_version(Some(SslVersion::TLS1_3))?;
        load_identity(&mut c, files)?;
        c.set_verify(SslVerifyMode::PEER);
        Ok(PeerTls {
            server,
            client: c.build(),
            peer_name: peer_name.to_string(),
        })
    }

    /// The TLS server side of a connection the peer dialed.
    pub async fn accept<S>(&self, s: S) -> Result<SslStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut ssl = Ssl::new(&self.server)?;
        // The client's certificate must name the peer we expect on this port.
        ssl.param_mut().set_host(&self.peer_name)?;
        handshake(ssl, s, true).await
    }

    /// The TLS client side of a connection we dialed.
    pub async fn connect<S>(&self, s: S) -> Result<SslStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let ssl = self.client.configure()?.into_ssl(&self.peer_name)?;
        handshake(ssl, s, false).await
    }
}

/// The first bytes of a TLS connection: a handshake record (22) of TLS 1.x (major version 3).
pub fn looks_like_tls(first: &[u8]) -> bool {
    first.len() >= 2 && first[0] == 0x16 && first[1] == 0x03
}

/// An `io::Error` for a TLS failure, for stream-level callers.
pub fn io_error(e: TlsError) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string())
}

/// The NBD export's TLS files (`nbd-tls-*` options).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NbdTlsFiles {
    pub certificate: Option<String>,
    pub privkey: Option<String>,
    /// When set, clients must present a certificate that chains to it.
    pub ca: Option<String>,
    /// `identity:hexkey` lines, as `psktool` writes them (qemu's and nbdkit's format).
    pub psk: Option<String>,
}

/// The NBD server's STARTTLS: x509 (a server certificate, optionally requiring client
/// certificates) and/or a pre-shared key, TLS 1.2 and 1.3 (GnuTLS clients pick 1.3).
#[derive(Clone)]
pub struct NbdTls {
    ctx: SslContext,
    files: NbdTlsFiles,
}

impl std::fmt::Debug for NbdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The files' paths only: never the keys.
        f.debug_struct("NbdTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Where the PSK callback leaves the identity it accepted, on the connection's `Ssl`.
fn psk_identity_slot() -> Result<openssl::ex_data::Index<Ssl, String>, TlsError> {
    static SLOT: std::sync::OnceLock<Option<openssl::ex_data::Index<Ssl, String>>> =
        std::sync::OnceLock::new();
    SLOT.get_or_init(|| Ssl::new_ex_index().ok())
        .ok_or_else(|| TlsError::Config("OpenSSL has no ex_data slot left".into()))
}

/// One PSK: identity and key.
pub type Psk = (Vec<u8>, Vec<u8>);

/// Reads a PSK file: `identity:hexkey` per line; blank lines and `#` comments skipped.
pub fn read_psk_file(path: &str) -> Result<Vec<Psk>, TlsError> {
    let bad = |why: String| TlsError::Load {
        what: "the TLS PSK file",
        path: path.into(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((id, hex)) = line.split_once(':') else {
            return Err(bad(format!("line {}: expected identity:hexkey", n + 1)));
        };
        let key = decode_hex(hex.trim())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| bad(format!("line {}: the key is not hexadecimal", n + 1)))?;
        keys.push((id.as_bytes().to_vec(), key));
    }
    if keys.is_empty() {
        return Err(bad("no identity:hexkey line".into()));
    }
    Ok(keys)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl NbdTls {
    pub fn new(files: &NbdTlsFiles) -> Result<NbdTls, TlsError> {
        let mut a = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
        let x509 = match (&files.certificate, &files.privkey) {
            (Some(certificate), Some(privkey)) => {
                load_cert_and_key(&mut a, certificate, privkey)?;
                true
            }
            (None, None) => false,
            _ => {
                return Err(TlsError::Config(
                    "nbd-tls-certificate-file and nbd-tls-privkey-file go together".into(),
                ));
            }
        };
        if let Some(ca) = &files.ca {
            if !x509 {
                return Err(TlsError::Config(
                    "nbd-tls-ca-file needs nbd-tls-certificate-file and nbd-tls-privkey-file"
                        .into(),
                ));
            }
            load("the TLS CA file", ca, |p| a.set_ca_file(p))?;
            a.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        if let Some(psk) = &files.psk {
            let keys = read_psk_file(psk)?;
            // TLS 1.2 clients need the PSK cipher suites; TLS 1.3 uses its own.
            a.set_cipher_list(
                "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE-PSK-AES256-GCM-SHA384:\
                 DHE-PSK-AES128-GCM-SHA256:ECDHE-PSK-CHACHA20-POLY1305:PSK-AES256-GCM-SHA384:\
                 PSK-AES128-GCM-SHA256",
            )?;
            let slot = psk_identity_slot()?;
            a.set_psk_server_callback(move |ssl, identity, out| {
                let key = identity.and_then(|id| keys.iter().find(|(i, _)| i == id));
                match key {
                    Some((id, k)) if k.len() <= out.len() => {
                        out[..k.len()].copy_from_slice(k);
                        // OpenSSL does not keep a TLS 1.3 PSK's identity for later; we do.
                        ssl.set_ex_data(slot, String::from_utf8_lossy(id).into_owned());
                        Ok(k.len())
                    }
                    // 0: unknown identity, the handshake fails.
                    _ => Ok(0),
                }
            });
        } else if !x509 {
            return Err(TlsError::Config(
                "nbd-tls needs nbd-tls-certificate-file and nbd-tls-privkey-file, or \
                 nbd-tls-psk-file"
                    .into(),
            ));
        }
        a.set_num_tickets(0)?;
        Ok(NbdTls {
            ctx: a.build().into_context(),
            files: files.clone(),
        })
    }

    /// The files it was made from (listeners shared by resources must agree on them).
    pub fn files(&self) -> &NbdTlsFiles {
        &self.files
    }

    /// The server side of STARTTLS; returns the stream and the client's names: its PSK
    /// identity, or the DNS names and common name of its certificate.
    pub async fn accept<S>(&self, s: S) -> Result<(SslStream<S>, Vec<String>), TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let st = handshake(Ssl::new(&self.ctx)?, s, true).await?;
        let mut names = Vec::new();
        if let Some(id) = psk_identity_slot().ok().and_then(|i| st.ssl().ex_data(i)) {
            names.push(id.clone());
        }
        if let Some(cert) = st.ssl().peer_certificate() {
            if let Some(sans) = cert.subject_alt_names() {
                names.extend(sans.iter().filter_map(|n| n.dnsname().map(str::to_string)));
            }
            for cn in cert
                .subject_name()
                .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            {
                if let Ok(s) = cn.data().to_string() {
                    names.push(s);
                }
            }
        }
        Ok((st, names))
    }
}

/// A stream that is plain, or TLS over the plain one: the peer link's streams and the NBD
/// client's (plain until STARTTLS).
#[derive(Debug)]
pub enum MaybeTls<S> {
    Plain(S),
    Tls(Box<SslStream<S>>),
    /// Only while the TLS handshake owns the stream; a failed handshake leaves it here and
    /// the connection ends.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the TLS handshake failed")
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            MaybeTls::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, b),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
            MaybeTls::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            MaybeTls::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
            MaybeTls::Gone => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            MaybeTls::Gone => Poll::Ready(Ok(())),
        }
    }
}
