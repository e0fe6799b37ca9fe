//! A throwaway PKI for TLS tests: a CA and certificates it issues, as PEM files in a directory.
#![allow(dead_code, clippy::unwrap_used)]

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509, X509NameBuilder};
use std::path::{Path, PathBuf};
use udrbd::tls::X509Files;

/// A CA whose key stays in memory and whose certificate is `dir/NAME-ca.pem`.
pub struct Pki {
    dir: PathBuf,
    name: String,
    key: PKey<Private>,
    cert: X509,
}

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("pkey")
}

fn build(
    subject: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    san: Option<&str>,
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", subject).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    match issuer {
        None => {
            b.set_issuer_name(&name).unwrap();
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            b.sign(key, MessageDigest::sha256()).unwrap();
        }
        Some((ca, ca_key)) => {
            b.set_issuer_name(ca.subject_name()).unwrap();
            if let Some(dns) = san {
                let ext = SubjectAlternativeName::new()
                    .dns(dns)
                    .build(&b.x509v3_context(Some(ca), None))
                    .unwrap();
                b.append_extension(ext).unwrap();
            }
            b.sign(ca_key, MessageDigest::sha256()).unwrap();
        }
    }
    b.build()
}

impl Pki {
    /// A new CA named `name`, its certificate written to `dir`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let key = key();
        let cert = build(name, &key, None, None);
        std::fs::write(dir.join(format!("{name}-ca.pem")), cert.to_pem().unwrap()).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            name: name.into(),
            key,
            cert,
        }
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A certificate for `host` (CN and DNS name), with its key, trusting this CA.
    pub fn issue(&self, host: &str) -> X509Files {
        let key = key();
        let cert = build(host, &key, Some((&self.cert, &self.key)), Some(host));
        let stem = self.dir.join(format!("{}-{host}", self.name));
        let cert_path = stem.with_extension("crt");
        let key_path = stem.with_extension("key");
        std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();
        std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        X509Files {
            ca: self.ca_file().display().to_string(),
            certificate: cert_path.display().to_string(),
            privkey: key_path.display().to_string(),
        }
    }
}
