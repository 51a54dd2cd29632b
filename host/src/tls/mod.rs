//! TLS termination with rustls (aws-lc-rs, the workspace's one provider):
//!
//! * `certs.rs` — loading one certificate and key from PEM text or files;
//! * `store.rs` — every certificate, indexed by name for the handshake's
//!   lookup;
//! * this file — [`Terminator`], what the connection path asks: the
//!   route's TLS settings, a server config carrying the chosen certificate,
//!   the handshake (bounded, failures classified), the client side of
//!   re-encryption; and [`Prefixed`], the stream that replays the
//!   ClientHello the host already peeked, so the handshake starts from
//!   bytes already read and the routing decision comes before it.
//!
//! A leaf below `proxy`: it knows nothing about connections, plugins or
//! metrics.

pub mod certs;
pub mod store;

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use certs::{CertError, LoadedCert};
pub use store::{CertStore, LoadReport, StoredCert};

use crate::config::TlsConfig;
use crate::config::tls::{Pem, Protocol, TlsRoute, Versions};

/// Sessions remembered for TLS 1.2 resumption by id (and 1.3 stateful
/// resumption), across all routes; the oldest are forgotten first.
const SESSION_CACHE: usize = 16_384;

/// The workspace's crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// A route's TLS settings, ready for connections.
#[derive(Debug)]
pub struct RouteTls {
    /// The route's config.
    pub config: TlsRoute,
    /// For `terminate-and-reencrypt`: the client config toward targets.
    pub upstream: Option<Arc<ClientConfig>>,
}

impl RouteTls {
    /// Whether the decrypted stream is relayed as bytes.
    pub fn is_tcp(&self) -> bool {
        self.config.protocol == Protocol::Tcp
    }
}

/// Why a handshake did not complete, as a stable label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct HandshakeError {
    /// `no-certificate`, `certificate-pending` (an ACME certificate not
    /// issued yet), `no-shared-version-or-cipher`, `bad-record`,
    /// `client-alert`, `timeout`, `client-gone`, `other`.
    pub reason: &'static str,
    /// rustls' or the OS's words.
    pub detail: String,
}

impl HandshakeError {
    /// Every reason, in a fixed order (metrics).
    pub const REASONS: [&'static str; 8] = [
        "no-certificate",
        "certificate-pending",
        "no-shared-version-or-cipher",
        "bad-record",
        "client-alert",
        "timeout",
        "client-gone",
        "other",
    ];

    fn from_io(e: &io::Error) -> HandshakeError {
        let reason = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::PeerIncompatible(_)) => "no-shared-version-or-cipher",
            Some(
                rustls::Error::InvalidMessage(_)
                | rustls::Error::PeerMisbehaved(_)
                | rustls::Error::InappropriateMessage { .. }
                | rustls::Error::InappropriateHandshakeMessage { .. }
                | rustls::Error::DecryptError,
            ) => "bad-record",
            Some(rustls::Error::AlertReceived(_)) => "client-alert",
            Some(_) => "other",
            None if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
            ) =>
            {
                "client-gone"
            }
            None if e.kind() == io::ErrorKind::InvalidData => "bad-record",
            None => "other",
        };
        HandshakeError {
            reason,
            detail: e.to_string(),
        }
    }
}

/// Everything termination needs, built from the config; a reload builds a
/// new one.
#[derive(Debug)]
pub struct Terminator {
    store: CertStore,
    routes: HashMap<String, RouteTls>,
    /// Server configs without a certificate, one per version set; each
    /// handshake clones one with its certificate (cheap: `Arc` fields).
    bases: [Arc<ServerConfig>; 3],
    handshake_timeout: Duration,
}

impl Terminator {
    /// Builds from `config`, loading every certificate. Problems come back
    /// in the report; what loaded is served.
    pub fn new(config: &TlsConfig) -> (Terminator, LoadReport) {
        let provider = provider();
        let (store, mut report) = CertStore::load(config, &provider);
        let sessions: Arc<dyn StoresServerSessions> = ServerSessionMemoryCache::new(SESSION_CACHE);
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().ok();
        let base = |versions: &[&'static rustls::SupportedProtocolVersion]| {
            let mut c = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .expect("the provider supports TLS 1.2 and 1.3")
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(NoCert));
            c.session_storage = sessions.clone();
            if let Some(t) = &ticketer {
                c.ticketer = t.clone();
            }
            Arc::new(c)
        };
        let bases = [
            base(&[&rustls::version::TLS12]),
            base(&[&rustls::version::TLS13]),
            base(&[&rustls::version::TLS13, &rustls::version::TLS12]),
        ];
        let mut routes = HashMap::new();
        for r in &config.routes {
            let upstream = if r.reencrypt {
                match upstream_config(r, &provider) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        report.errors.push(e);
                        continue;
                    }
                }
            } else {
                None
            };
            if r.reencrypt && !r.upstream.verify {
                report.warnings.push(format!(
                    "route {:?}: action.tls.upstream.verify is false: the backend's certificate is not checked",
                    r.name
                ));
            }
            routes.insert(
                r.name.clone(),
                RouteTls {
                    config: r.clone(),
                    upstream,
                },
            );
        }
        let t = Terminator {
            store,
            routes,
            bases,
            handshake_timeout: config.handshake_timeout,
        };
        (t, report)
    }

    /// The certificates.
    pub fn store(&self) -> &CertStore {
        &self.store
    }

    /// The settings of terminated route `name`.
    pub fn route(&self, name: &str) -> Option<&RouteTls> {
        self.routes.get(name)
    }

    /// The handshake's time limit.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The certificate for a handshake with `sni` on `port` (see
    /// `store.rs`); `no-certificate` when none names the server.
    pub fn certificate(
        &self,
        sni: Option<&str>,
        port: u16,
    ) -> Result<Arc<rustls::sign::CertifiedKey>, HandshakeError> {
        self.store.resolve(sni, port).ok_or_else(|| HandshakeError {
            reason: "no-certificate",
            detail: format!(
                "no certificate for {} on port {port}",
                sni.map_or_else(|| "a client without SNI".to_owned(), |s| format!("{s:?}"))
            ),
        })
    }

    /// A server config for one handshake: `key` (from
    /// [`Terminator::certificate`]), `route`'s versions, and `alpn` (the
    /// protocols the server may select).
    pub fn server_config(
        &self,
        key: Arc<rustls::sign::CertifiedKey>,
        route: &str,
        alpn: Vec<Vec<u8>>,
    ) -> Arc<ServerConfig> {
        let versions = self
            .routes
            .get(route)
            .map_or(Versions::ALL, |r| r.config.versions);
        let base = match (versions.tls12, versions.tls13) {
            (true, false) => &self.bases[0],
            (false, true) => &self.bases[1],
            _ => &self.bases[2],
        };
        let mut c = ServerConfig::clone(base);
        c.cert_resolver = Arc::new(SingleCertAndKey::from(key));
        c.alpn_protocols = alpn;
        Arc::new(c)
    }
}

/// Runs the server handshake on `io` within `timeout`.
pub async fn accept<IO>(
    config: Arc<ServerConfig>,
    io: IO,
    timeout: Duration,
) -> Result<tokio_rustls::server::TlsStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(timeout, acceptor.accept(io)).await {
        Err(_) => Err(HandshakeError {
            reason: "timeout",
            detail: format!("no complete handshake within {} ms", timeout.as_millis()),
        }),
        Ok(Err(e)) => Err(HandshakeError::from_io(&e)),
        Ok(Ok(s)) => Ok(s),
    }
}

/// Never picks a certificate: the base configs' placeholder (each
/// handshake gets its certificate before it starts).
#[derive(Debug)]
struct NoCert;

impl rustls::server::ResolvesServerCert for NoCert {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
}

/// The system's trust roots, read once (rustls-native-certs: the
/// platform's store, `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured).
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "reading the system's trust roots");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system trust roots");
        roots
    })
}

/// The client config toward TLS upstreams that no route configures: the
/// system's roots, verified as the target's name.
pub fn default_upstream_config() -> Arc<ClientConfig> {
    static C: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    C.get_or_init(|| {
        Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("the provider supports the default versions")
                .with_root_certificates(system_roots().clone())
                .with_no_client_auth(),
        )
    })
    .clone()
}

fn upstream_config(
    route: &TlsRoute,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ClientConfig>, CertError> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default versions");
    let config = if route.upstream.verify {
        let mut roots = system_roots().clone();
        if let Some(ca) = &route.upstream.ca {
            let at = format!("route {:?}: action.tls.upstream", route.name);
            let bytes = match ca {
                Pem::Text(t) => t.clone().into_bytes(),
                Pem::File(p) => std::fs::read(p).map_err(|e| CertError {
                    at: format!("{at}.ca"),
                    message: format!("cannot read {}: {e}", p.display()),
                })?,
            };
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
            let certs = certs.map_err(|e| CertError {
                at: format!("{at}.ca"),
                message: format!("{}: not valid PEM: {e}", ca.describe()),
            })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(CertError {
                    at: format!("{at}.ca"),
                    message: format!("{}: no usable CA certificate in it", ca.describe()),
                });
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider.clone())))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The name to verify a backend as: `serverName`, else the target host if
/// it is a name, else the client's SNI, else the target's address.
pub fn upstream_name(
    route: &RouteTls,
    target_host: &str,
    client_sni: Option<&str>,
) -> Result<ServerName<'static>, String> {
    let pick = route
        .config
        .upstream
        .server_name
        .clone()
        .or_else(|| {
            (target_host.parse::<std::net::IpAddr>().is_err()).then(|| target_host.to_owned())
        })
        .or_else(|| client_sni.map(str::to_owned))
        .unwrap_or_else(|| target_host.to_owned());
    ServerName::try_from(pick.clone()).map_err(|e| format!("{pick:?} is not a server name: {e}"))
}

/// `verify: false`: accepts any certificate, still checks signatures (a
/// backend must hold the key of the certificate it shows).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
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
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A stream that first yields `prefix` (bytes already read from `inner`),
/// then reads `inner`; writes go straight to `inner`. The prefix is freed
/// once consumed.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `prefix` first, then `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            at: 0,
            inner,
        }
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let rest = &this.prefix[this.at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
