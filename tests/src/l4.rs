//! Real loopback pieces for the L4 tests: the proxy on ephemeral ports with
//! the `router` fixture, echo / recording / TLS backends, TLS clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use turnout::limits::ConnectionTracker;
use turnout::plugins::{EmbeddedPlugin, PluginSet, PluginSettings, Runtime, RuntimeConfig};
use turnout::proxy::{Listener, Proxy, Settings};

/// Upper bound for any single step of a test.
pub const STEP: Duration = Duration::from_secs(20);

/// A running proxy; dropping it does not stop it, [`RunningProxy::stop`] does.
pub struct RunningProxy {
    /// The proxy (counters, refusals).
    pub proxy: Arc<Proxy>,
    /// The TLS listener.
    pub tls: SocketAddr,
    /// The plain listener.
    pub plain: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningProxy {
    /// Shuts down (drain) and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("proxy stops")
            .expect("proxy task");
    }

    /// Waits (bounded) until every counter is back to zero.
    pub async fn settled(&self) {
        let tracker = self.proxy.tracker();
        if tokio::time::timeout(STEP, tracker.wait_idle())
            .await
            .is_err()
        {
            panic!("{} connections still counted", tracker.total());
        }
        assert_eq!(tracker.tracked_routes(), 0, "route counters back to zero");
    }
}

/// Starts the proxy with the router fixture. `routes` gets the TLS and plain
/// ports and returns the router's JSON config.
pub async fn start_proxy(
    settings: Settings,
    routes: impl FnOnce(u16, u16) -> String,
) -> RunningProxy {
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tls_addr, plain_addr) = (tls.local_addr().unwrap(), plain.local_addr().unwrap());
    let config = routes(tls_addr.port(), plain_addr.port());
    let bytes: &'static [u8] = Box::leak(crate::guest_bytes("router").into_boxed_slice());
    let tracker = ConnectionTracker::new();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        call_deadline: Duration::from_secs(2),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let plugin_settings = PluginSettings {
        configs: [("router".to_owned(), config)].into(),
        ..PluginSettings::default()
    };
    let set = PluginSet::load(
        runtime,
        plugin_settings,
        vec![EmbeddedPlugin {
            name: "router",
            bytes,
        }],
        tracker.clone(),
    )
    .unwrap_or_else(|e| panic!("plugins: {e:?}"));
    let proxy = Proxy::new(settings, set, tracker, turnout::metrics::Metrics::new());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let listeners = vec![
        Listener {
            listener: tls,
            tls: true,
        },
        Listener {
            listener: plain,
            tls: false,
        },
    ];
    let task = tokio::spawn(proxy.clone().serve(listeners, async move {
        let _ = stop_rx.await;
    }));
    RunningProxy {
        proxy,
        tls: tls_addr,
        plain: plain_addr,
        stop: Some(stop_tx),
        task,
    }
}

/// An echo backend: echoes every byte; on the client's FIN finishes echoing
/// and closes its write side. Sends the first read of each connection
/// (up to 256 bytes) on the returned channel.
pub async fn echo_backend() -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut reported = false;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if !reported {
                        reported = true;
                        let _ = tx.send(buf[..n.min(256)].to_vec());
                    }
                    if s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, rx)
}

/// A port with nothing listening (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A self-signed certificate for these names.
pub fn cert(
    names: &[&str],
) -> (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    (vec![ck.cert.der().clone()], key)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS backend for `name` that greets with `greeting` and then echoes.
pub async fn tls_backend(name: &str, greeting: &'static str) -> SocketAddr {
    let (certs, key) = cert(&[name]);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let _ = tls.write_all(greeting.as_bytes()).await;
                let _ = tls.flush().await;
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Trusts any certificate: the tests check routing, not PKI.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client config that accepts any certificate.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(c)
}

/// Connects through `proxy` with SNI `sni` and returns the first bytes the
/// backend sends after the handshake.
pub async fn tls_greeting(proxy: SocketAddr, sni: &str) -> std::io::Result<String> {
    let connector = tokio_rustls::TlsConnector::from(client_config());
    let tcp = TcpStream::connect(proxy).await?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let mut tls = tokio::time::timeout(STEP, connector.connect(name, tcp)).await??;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(STEP, tls.read(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The bytes of a ClientHello rustls sends for `sni` (`None`: an IP, no SNI).
pub fn client_hello_bytes(sni: Option<&str>) -> Vec<u8> {
    let name = match sni {
        Some(s) => rustls::pki_types::ServerName::try_from(s.to_owned()).unwrap(),
        None => rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
    };
    let mut conn = rustls::ClientConnection::new(client_config(), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// The proxy's end of a client connection, found among this process's
/// descriptors (the proxy runs in-process): the socket whose local address
/// is `proxy` and whose peer is `client`, duplicated through
/// `pidfd_getfd(2)` so its options can be read.
pub fn proxy_side_socket(proxy: SocketAddr, client: SocketAddr) -> Option<std::os::fd::OwnedFd> {
    socket_where(|local, peer| local == Some(proxy) && peer == Some(client))
}

/// The proxy's socket connected to `backend` (its local port is the
/// kernel's choice), duplicated like [`proxy_side_socket`]'s.
pub fn socket_to(backend: SocketAddr) -> Option<std::os::fd::OwnedFd> {
    socket_where(|local, peer| {
        peer == Some(backend) && local.is_some_and(|l| l.port() != backend.port())
    })
}

fn socket_where(
    wanted: impl Fn(Option<SocketAddr>, Option<SocketAddr>) -> bool,
) -> Option<std::os::fd::OwnedFd> {
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};
    let me = pidfd_open(getpid(), PidfdFlags::empty()).ok()?;
    for entry in std::fs::read_dir("/proc/self/fd").ok()? {
        let Some(n) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(fd) = pidfd_getfd(&me, n, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let local = rustix::net::getsockname(&fd)
            .ok()
            .and_then(|a| SocketAddr::try_from(a).ok());
        let peer = rustix::net::getpeername(&fd)
            .ok()
            .flatten()
            .and_then(|a| SocketAddr::try_from(a).ok());
        if wanted(local, peer) {
            return Some(fd);
        }
    }
    None
}

/// Reads until EOF or error, bounded by [`STEP`].
pub async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(STEP, s.read_to_end(&mut out))
        .await
        .expect("peer closes in time");
    out
}
