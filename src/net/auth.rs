//! CRAM-HMAC peer authentication, mutual, as DRBD's `drbd_do_auth()` does it.
//!
//! Runs on every stream of a link right after the Hello exchange, when `cram-hmac-alg` and
//! `shared-secret` are configured:
//!
//! 1. Each side sends [`CHALLENGE_LEN`] random bytes (`getrandom`) in an `AuthChallenge`.
//! 2. Each side reads the peer's challenge. One equal to our own is refused ("Peer presented the
//!    same challenge!"): a peer that reflects our challenge back would otherwise get us to
//!    compute the answer it needs.
//! 3. Each side answers with `AuthResponse` = `HMAC(shared-secret, peer's challenge || my node
//!    id)` (DRBD 9 appends the responder's node id too, which binds the answer to its direction).
//! 4. Each side checks the peer's response against `HMAC(secret, my challenge || peer's node
//!    id)` in constant time ([`hmac::Mac::verify_slice`]).
//!
//! Any mismatch is [`LinkError::AuthFailed`] ("Authentication of peer failed"), which is fatal:
//! the caller goes `StandAlone` instead of reconnecting. Socket errors while authenticating stay
//! transient.

use super::error::LinkError;
use super::framed::{FrameReader, FrameWriter};
use crate::repl::wire::Packet;
use crate::types::NodeId;
use bytes::Bytes;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use std::fmt;
use tokio::io::{AsyncRead, AsyncWrite};

/// Length of a challenge, as DRBD's (`CHALLENGE_LEN 64`).
pub const CHALLENGE_LEN: usize = 64;

/// A `cram-hmac-alg` this build supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HmacAlg {
    Sha1,
    Sha256,
    Sha512,
}

impl HmacAlg {
    /// Every supported algorithm.
    pub const ALL: [HmacAlg; 3] = [HmacAlg::Sha1, HmacAlg::Sha256, HmacAlg::Sha512];

    /// The algorithm for a `cram-hmac-alg` value (`sha1`, `sha256`, `sha512`; case does not
    /// matter).
    pub fn from_name(name: &str) -> Result<HmacAlg, LinkError> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Ok(HmacAlg::Sha1),
            "sha256" => Ok(HmacAlg::Sha256),
            "sha512" => Ok(HmacAlg::Sha512),
            _ => Err(LinkError::Config(format!(
                "unknown cram-hmac-alg '{name}': udrbd supports sha1, sha256 and sha512"
            ))),
        }
    }

    /// The configuration word.
    pub fn name(self) -> &'static str {
        match self {
            HmacAlg::Sha1 => "sha1",
            HmacAlg::Sha256 => "sha256",
            HmacAlg::Sha512 => "sha512",
        }
    }

    /// `HMAC(key, parts concatenated)`.
    fn mac(self, key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, LinkError> {
        Ok(match self {
            HmacAlg::Sha1 => keyed::<Hmac<sha1::Sha1>>(key, parts)?
                .finalize()
                .into_bytes()
                .to_vec(),
            HmacAlg::Sha256 => keyed::<Hmac<sha2::Sha256>>(key, parts)?
                .finalize()
                .into_bytes()
                .to_vec(),
            HmacAlg::Sha512 => keyed::<Hmac<sha2::Sha512>>(key, parts)?
                .finalize()
                .into_bytes()
                .to_vec(),
        })
    }

    /// Constant-time check of `tag` against `HMAC(key, parts)`.
    fn verify(self, key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
        match self {
            HmacAlg::Sha1 => {
                keyed::<Hmac<sha1::Sha1>>(key, parts).is_ok_and(|m| m.verify_slice(tag).is_ok())
            }
            HmacAlg::Sha256 => {
                keyed::<Hmac<sha2::Sha256>>(key, parts).is_ok_and(|m| m.verify_slice(tag).is_ok())
            }
            HmacAlg::Sha512 => {
                keyed::<Hmac<sha2::Sha512>>(key, parts).is_ok_and(|m| m.verify_slice(tag).is_ok())
            }
        }
    }
}

/// HMAC takes keys of any length (longer ones are hashed), so the error cannot happen; it is
/// still an error, never a fallback key.
fn keyed<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Result<M, LinkError> {
    let mut m = <M as KeyInit>::new_from_slice(key)
        .map_err(|_| LinkError::Config("shared-secret has an invalid length".into()))?;
    for p in parts {
        m.update(p);
    }
    Ok(m)
}

/// `cram-hmac-alg` plus `shared-secret`. `Debug` does not print the secret.
#[derive(Clone)]
pub struct AuthConfig {
    alg: HmacAlg,
    secret: Vec<u8>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("alg", &self.alg)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl AuthConfig {
    pub fn new(alg: HmacAlg, secret: impl Into<Vec<u8>>) -> AuthConfig {
        AuthConfig {
            alg,
            secret: secret.into(),
        }
    }

    /// From the `net` options: both set means authenticate, neither means don't; one without
    /// the other is a configuration error (a secret nobody uses, or an algorithm with no key),
    /// as is an unknown algorithm or an empty secret.
    pub fn from_options(
        alg: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Option<AuthConfig>, LinkError> {
        match (alg, secret) {
            (None, None) => Ok(None),
            (Some(a), Some(s)) => {
                let alg = HmacAlg::from_name(a)?;
                if s.is_empty() {
                    return Err(LinkError::Config(
                        "shared-secret is empty (cram-hmac-alg needs a secret)".into(),
                    ));
                }
                Ok(Some(AuthConfig::new(alg, s.as_bytes())))
            }
            (Some(a), None) => Err(LinkError::Config(format!(
                "cram-hmac-alg '{a}' is set but no shared-secret"
            ))),
            (None, Some(_)) => Err(LinkError::Config(
                "shared-secret is set but no cram-hmac-alg (the secret would not be used)".into(),
            )),
        }
    }

    pub fn alg(&self) -> HmacAlg {
        self.alg
    }

    /// Our answer to the peer's `challenge`: `HMAC(secret, challenge || me)`.
    pub fn respond(&self, challenge: &[u8], me: NodeId) -> Result<Vec<u8>, LinkError> {
        self.alg.mac(&self.secret, &[challenge, &[me.0]])
    }

    /// Checks the peer's `response` to `our_challenge`, in constant time.
    pub fn verify(&self, our_challenge: &[u8], peer: NodeId, response: &[u8]) -> bool {
        self.alg
            .verify(&self.secret, &[our_challenge, &[peer.0]], response)
    }
}

/// A fresh random challenge.
pub fn new_challenge() -> Result<[u8; CHALLENGE_LEN], LinkError> {
    let mut c = [0u8; CHALLENGE_LEN];
    getrandom::fill(&mut c)
        .map_err(|e| LinkError::Io(std::sync::Arc::new(std::io::Error::other(e.to_string()))))?;
    Ok(c)
}

/// Runs the mutual exchange on one stream (both sides call this, in either order).
pub async fn authenticate<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    auth: &AuthConfig,
    me: NodeId,
    peer: NodeId,
) -> Result<(), LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mine = new_challenge()?;
    writer
        .write_frame(
            0,
            &Packet::AuthChallenge {
                challenge: Bytes::copy_from_slice(&mine),
            },
        )
        .await?;
    let theirs = match reader.read_frame().await? {
        Some(f) => match f.packet {
            Packet::AuthChallenge { challenge } => challenge,
            other => {
                return Err(LinkError::AuthFailed(format!(
                    "expected an AuthChallenge, the peer sent {:?}",
                    other.packet_type()
                )));
            }
        },
        None => return Err(LinkError::PeerClosed),
    };
    if theirs.len() != CHALLENGE_LEN {
        return Err(LinkError::AuthFailed(format!(
            "the peer's challenge is {} bytes, not {CHALLENGE_LEN}",
            theirs.len()
        )));
    }
    if theirs[..] == mine[..] {
        return Err(LinkError::AuthFailed(
            "Peer presented the same challenge!".into(),
        ));
    }
    writer
        .write_frame(
            0,
            &Packet::AuthResponse {
                response: Bytes::from(auth.respond(&theirs, me)?),
            },
        )
        .await?;
    let response = match reader.read_frame().await? {
        Some(f) => match f.packet {
            Packet::AuthResponse { response } => response,
            other => {
                return Err(LinkError::AuthFailed(format!(
                    "expected an AuthResponse, the peer sent {:?}",
                    other.packet_type()
                )));
            }
        },
        None => return Err(LinkError::PeerClosed),
    };
    if !auth.verify(&mine, peer, &response) {
        return Err(LinkError::AuthFailed(format!(
            "the peer's response does not match (different shared-secret or cram-hmac-alg; \
             ours is {})",
            auth.alg.name()
        )));
    }
    tracing::debug!(
        alg = auth.alg.name(),
        "peer authenticated using {} bytes HMAC",
        response.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 (HMAC-SHA256 and -SHA512) and RFC 2202 test case 2 (HMAC-SHA1):
    /// key "Jefe", data "what do ya want for nothing?".
    #[test]
    fn known_answers() {
        let hex = |v: Vec<u8>| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let data: &[&[u8]] = &[b"what do ya want ", b"for nothing?"];
        assert_eq!(
            hex(HmacAlg::Sha1.mac(b"Jefe", data).unwrap()),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            hex(HmacAlg::Sha256.mac(b"Jefe", data).unwrap()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(HmacAlg::Sha512.mac(b"Jefe", data).unwrap()),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
             9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
    }

    #[test]
    fn respond_verify_and_direction_binding() {
        for alg in HmacAlg::ALL {
            let a = AuthConfig::new(alg, "s3cret");
            let c = [5u8; CHALLENGE_LEN];
            let r = a.respond(&c, NodeId(1)).unwrap();
            assert!(a.verify(&c, NodeId(1), &r));
            // Bound to the responder's id, the challenge and the secret.
            assert!(!a.verify(&c, NodeId(2), &r));
            assert!(!a.verify(&[6u8; CHALLENGE_LEN], NodeId(1), &r));
            assert!(!AuthConfig::new(alg, "other").verify(&c, NodeId(1), &r));
            assert!(!a.verify(&c, NodeId(1), &r[..r.len() - 1]));
        }
    }

    #[test]
    fn options() {
        assert!(AuthConfig::from_options(None, None).unwrap().is_none());
        let a = AuthConfig::from_options(Some("SHA256"), Some("x"))
            .unwrap()
            .unwrap();
        assert_eq!(a.alg(), HmacAlg::Sha256);
        for (alg, secret) in [
            (Some("md5"), Some("x")),
            (Some("sha1"), None),
            (None, Some("x")),
            (Some("sha1"), Some("")),
        ] {
            let e = AuthConfig::from_options(alg, secret).unwrap_err();
            assert!(matches!(e, LinkError::Config(_)), "{e}");
            assert!(e.is_fatal());
        }
        let e = HmacAlg::from_name("md5").unwrap_err().to_string();
        assert!(e.contains("unknown cram-hmac-alg 'md5'"), "{e}");
    }

    #[test]
    fn debug_hides_the_secret() {
        let a = AuthConfig::new(HmacAlg::Sha1, "hunter2");
        assert!(!format!("{a:?}").contains("hunter2"));
    }

    #[test]
    fn challenges_are_random() {
        assert_ne!(new_challenge().unwrap(), new_challenge().unwrap());
    }
}
