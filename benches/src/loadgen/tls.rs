//! TLS configuration for both ends: every handshake is a full one (no
//! resumption, no tickets), so each new connection costs the same; and the
//! certificate files the terminating proxies serve.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, NamedGroup, SignatureScheme};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Accepts any certificate: the load measures proxies, not PKI. The
/// signature checks are skipped too, which keeps client CPU (on the same
/// two cores as the proxy) low.
#[derive(Debug)]
struct AnyCert(Vec<SignatureScheme>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

/// A client session store that remembers nothing, so the client never
/// offers resumption (no PSK, no TLS 1.2 session), whatever the server
/// issues; it counts the TLS 1.3 tickets servers send, which tells whether
/// a peer's "tickets off" really is.
#[derive(Debug, Default)]
pub struct NoResumption {
    tickets: AtomicUsize,
}

impl NoResumption {
    /// TLS 1.3 tickets received (and dropped) so far.
    pub fn tickets(&self) -> usize {
        self.tickets.load(Ordering::Relaxed)
    }
}

impl ClientSessionStore for NoResumption {
    fn set_kx_hint(&self, _: ServerName<'static>, _: NamedGroup) {}
    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        None
    }
    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}
    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }
    fn remove_tls12_session(&self, _: &ServerName<'static>) {}
    fn insert_tls13_ticket(&self, _: ServerName<'static>, _: Tls13ClientSessionValue) {
        self.tickets.fetch_add(1, Ordering::Relaxed);
    }
    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        None
    }
}

/// The client side: any certificate, no session resumption.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    client_config_counting(Arc::default())
}

/// [`client_config`], counting the tickets servers send in `store`.
pub fn client_config_counting(store: Arc<NoResumption>) -> Arc<rustls::ClientConfig> {
    let provider = provider();
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(schemes)))
        .with_no_client_auth();
    c.resumption = rustls::client::Resumption::store(store)
        .tls12_resumption(rustls::client::Tls12Resumption::Disabled);
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

/// The server side: a self-signed ECDSA P-256 certificate for `names`, no
/// tickets (they would add a record after every handshake).
pub fn server_config(names: &[String]) -> Result<Arc<rustls::ServerConfig>, String> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| e.to_string())?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .map_err(|e| e.to_string())?;
    c.send_tls13_tickets = 0;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// Writes a fresh self-signed ECDSA P-256 certificate for `names` to
/// `dir`: `cert.pem`, `key.pem` (PKCS#8) and `bundle.pem` (both, for
/// HAProxy's `crt`).
pub fn write_cert(dir: &Path, names: &[String]) -> Result<(), String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let cert = rcgen::CertificateParams::new(names.to_vec())
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| e.to_string())?;
    let (cert, key) = (cert.pem(), key.serialize_pem());
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (file, text) in [
        ("cert.pem", cert.clone()),
        ("key.pem", key.clone()),
        ("bundle.pem", cert + &key),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// The bytes of the ClientHello this client sends for `sni`: what the bulk
/// streams open with, so that every proxy routes them like a TLS
/// connection without the payload paying for encryption.
pub fn client_hello(sni: &str) -> Result<Vec<u8>, String> {
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(client_config(), name).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).map_err(|e| e.to_string())?;
    }
    Ok(out)
}
