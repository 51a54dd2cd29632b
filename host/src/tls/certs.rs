//! Loading one certificate: PEM from text or a file, the chain (leaf
//! first, intermediates from the same file or `ca`), the private key (RSA,
//! ECDSA or Ed25519; PKCS#1, PKCS#8 or SEC1), checked against the leaf,
//! and what the admin API shows about it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::tls::{CertSource, Pem};

/// Why a certificate could not be loaded; the message names the config
/// key and the file.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{at}: {message}")]
pub struct CertError {
    /// The config key (`routes[2].action.tls.certificate.key`).
    pub at: String,
    /// What is wrong, naming the file.
    pub message: String,
}

fn error(at: &str, key: &str, message: impl Into<String>) -> CertError {
    CertError {
        at: format!("{at}.{key}"),
        message: message.into(),
    }
}

/// A loaded certificate and what is known about it.
#[derive(Debug)]
pub struct LoadedCert {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// The DNS names the leaf covers (subject alternative names, else the
    /// common name), lower-cased; wildcards as `*.example.com`.
    pub names: Vec<String>,
    /// The leaf's issuer, as text.
    pub issuer: String,
    /// The leaf's serial number, hex.
    pub serial: String,
    /// Validity, Unix seconds.
    pub not_before: i64,
    /// Validity, Unix seconds.
    pub not_after: i64,
    /// The files it was read from (to watch them).
    pub files: Vec<PathBuf>,
    /// The certificate file, or "inline PEM".
    pub source: String,
}

impl LoadedCert {
    /// Whole days until it expires (negative once expired).
    pub fn days_left(&self, now: SystemTime) -> i64 {
        let now = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        (self.not_after - i64::try_from(now).unwrap_or(i64::MAX)).div_euclid(86_400)
    }

    /// Whether the leaf covers `name` (lower-case): exactly, or through a
    /// wildcard one label deep (RFC 6125).
    pub fn covers(&self, name: &str) -> bool {
        self.names
            .iter()
            .any(|n| n == name || wildcard_parent(name).is_some_and(|p| n == &format!("*.{p}")))
    }
}

/// `a.example.com` → `example.com`: the part a `*.` wildcard stands before.
/// `None` for a single label.
pub(crate) fn wildcard_parent(name: &str) -> Option<&str> {
    let (_, rest) = name.split_once('.')?;
    (!rest.is_empty()).then_some(rest)
}

fn read(pem: &Pem, at: &str, key: &str) -> Result<(Vec<u8>, Option<PathBuf>), CertError> {
    match pem {
        Pem::Text(t) => Ok((t.clone().into_bytes(), None)),
        Pem::File(path) => std::fs::read(path)
            .map(|b| (b, Some(path.clone())))
            .map_err(|e| error(at, key, format!("cannot read {}: {e}", path.display()))),
    }
}

fn certificates(
    bytes: &[u8],
    what: &str,
    at: &str,
    key: &str,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(bytes).collect();
    let certs = certs.map_err(|e| error(at, key, format!("{what}: not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(error(
            at,
            key,
            format!("{what}: no CERTIFICATE block in it"),
        ));
    }
    Ok(certs)
}

/// Loads `source` with `provider`'s key loader. An expired certificate
/// loads (the caller warns); a broken one is an error.
pub fn load(source: &CertSource, provider: &CryptoProvider) -> Result<LoadedCert, CertError> {
    let at = &source.at;
    let (cert_bytes, cert_file) = read(&source.cert, at, "cert")?;
    let cert_what = source.cert.describe();
    let mut chain = certificates(&cert_bytes, &cert_what, at, "cert")?;
    let mut files: Vec<PathBuf> = cert_file.into_iter().collect();
    if let Some(ca) = &source.ca {
        let (ca_bytes, ca_file) = read(ca, at, "ca")?;
        chain.extend(certificates(&ca_bytes, &ca.describe(), at, "ca")?);
        files.extend(ca_file);
    }
    let (key_bytes, key_file) = read(&source.key, at, "key")?;
    files.extend(key_file);
    let key_what = source.key.describe();
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key in it (expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)".to_owned()
            }
            other => format!("not a valid PEM private key: {other}"),
        };
        error(at, "key", format!("{key_what}: {why}"))
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        let why = match e {
            rustls::Error::InconsistentKeys(_) => {
                format!("{key_what} does not match the certificate in {cert_what}")
            }
            other => format!("{key_what}: unusable private key: {other}"),
        };
        error(at, "key", why)
    })?;
    let leaf = certified
        .cert
        .first()
        .ok_or_else(|| error(at, "cert", format!("{cert_what}: empty chain")))?;
    let info = describe(leaf).map_err(|m| error(at, "cert", format!("{cert_what}: {m}")))?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        names: info.names,
        issuer: info.issuer,
        serial: info.serial,
        not_before: info.not_before,
        not_after: info.not_after,
        files,
        source: cert_what,
    })
}

struct Described {
    names: Vec<String>,
    issuer: String,
    serial: String,
    not_before: i64,
    not_after: i64,
}

fn describe(leaf: &CertificateDer<'_>) -> Result<Described, String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("the first certificate does not parse: {e}"))?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(|cn| cn.to_ascii_lowercase()),
        );
    }
    Ok(Described {
        names,
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The files `source` reads (for the watcher).
pub fn files_of(source: &CertSource) -> Vec<&Path> {
    [Some(&source.cert), Some(&source.key), source.ca.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|p| match p {
            Pem::File(f) => Some(f.as_path()),
            Pem::Text(_) => None,
        })
        .collect()
}
