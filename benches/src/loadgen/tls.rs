//! TLS configuration for both ends: every handshake is a full one (no
//! resumption, no tickets), so each new connection costs the same.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

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

/// The client side: any certificate, no session resumption.
pub fn client_config() -> Arc<rustls::ClientConfig> {
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
    c.resumption = rustls::client::Resumption::disabled();
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
