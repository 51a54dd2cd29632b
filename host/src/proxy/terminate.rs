//! A routed connection whose route terminates TLS: the handshake on the
//! bytes the peek already read, a backend in plaintext or (re-encrypt) over
//! TLS, then the relay over both streams with the connection's timers.
//!
//! ```text
//! Routed ─► protocol tcp? ─► certificate for SNI ─► [re-encrypt: backend
//!   TLS first, its ALPN choice offered to the client] ─► handshake (bounded)
//!   ─► [terminate: connect backend] ─► relay_streams ─► close line
//! ```
//!
//! Byte counters count what crosses the client socket (TLS records), as on
//! passthrough: the client stream is wrapped in [`Metered`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use turnout_plugin_sdk::{BackendProtocol, TlsAlert, TlsMode, Upstream};

use super::pending::{Held, Pending, Routed, backend_socket_policy};
use super::relay::{self, Timers};
use crate::metrics::{Refusal, TrafficHandle};
use crate::tls::{self, Prefixed, Terminator};

/// The client side: TLS over the socket, counted below TLS.
type ClientStream = tokio_rustls::server::TlsStream<Metered<Prefixed<TcpStream>>>;

/// The backend side of a relayed terminated connection.
enum Backend {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// What a terminated connection does after its handshake.
enum After {
    /// Relay the decrypted stream to this backend (`protocol: "tcp"`).
    Relay(Backend, SocketAddr),
    /// Serve HTTP: requests go upstream one by one (`crate::http`).
    Http(Upstream),
}

/// A terminated connection, ready to relay: what its task holds.
pub(super) struct Terminated {
    client: ClientStream,
    after: After,
    timers: Timers,
    route: String,
    conn: turnout_plugin_sdk::Connection,
    version: &'static str,
    alpn: String,
    local: SocketAddr,
    peer: SocketAddr,
    /// The route's slot, then the bookkeeping (dropped in this order).
    _slot: crate::limits::RouteGuard,
    held: Held,
}

/// Terminates `pending`'s TLS on its route and returns the relay to run,
/// or `None` when it was refused (counted and logged here).
pub(super) async fn start(
    mut pending: Pending,
    routed: Routed,
    tls: Arc<Terminator>,
) -> Option<Terminated> {
    let sni = routed.conn.tls.as_ref().and_then(|h| h.sni.clone());
    // Refused before any backend work or cryptography.
    let key = match check(&mut pending, &tls, sni.as_deref(), &routed.forward.route).await {
        Ok(key) => key,
        Err(refusal) => {
            pending.refuse(&refusal);
            return None;
        }
    };
    let http = tls
        .route(&routed.forward.route)
        .is_some_and(|r| !r.is_tcp());
    // Re-encryption opens the backend first, offering what the client
    // offered: its choice is then the only protocol offered back to the
    // client, so both sides agree on one. (An HTTP route speaks to its
    // upstreams per request instead.)
    let backend = if routed.forward.tls_mode == TlsMode::TerminateAndReencrypt && !http {
        match reencrypt(&pending, &routed, &tls, sni.as_deref()).await {
            Ok(b) => Some(b),
            Err(refusal) => {
                pending.refuse(&refusal);
                return None;
            }
        }
    } else {
        None
    };
    let server_alpn: Vec<Vec<u8>> = match &backend {
        Some((Backend::Tls(b), _)) => b
            .get_ref()
            .1
            .alpn_protocol()
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect(),
        _ if http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        _ => Vec::new(),
    };
    let config = tls.server_config(key, &routed.forward.route, server_alpn);
    let connect_timeout = pending.settings.connect_timeout;
    pending.client_socket_policy(&routed.policy);
    let (local, peer) = (pending.local, pending.peer);
    let (stream, peeked, held) = pending.split();
    let metrics = held.proxy.metrics.clone();
    let io = Metered::new(Prefixed::new(peeked, stream), held.meter.traffic_handle());
    let client = match tls::accept(config, io, tls.handshake_timeout()).await {
        Ok(c) => c,
        Err(e) => {
            metrics.handshake(e.reason, "-", "-");
            held.refuse(&handshake_refusal(e), 0);
            // The route's slot before the client's counters (as on every
            // other path), not after, as the local `held` would drop.
            drop(routed);
            return None;
        }
    };
    let (version, alpn) = agreed(&client);
    metrics.handshake("ok", version, &alpn);
    let after = match backend {
        Some((b, target)) => After::Relay(b, target),
        None if http => After::Http(connection_upstream(&routed)),
        None => match super::connect::connect_any(&routed.forward.targets, connect_timeout).await {
            Ok((tcp, target)) => {
                backend_socket_policy(&tcp, &routed.policy);
                After::Relay(Backend::Plain(tcp), target)
            }
            Err(e) => {
                held.refuse(&Refusal::Backend(e.to_string()), 0);
                drop(routed);
                return None;
            }
        },
    };
    let mut held = held;
    if let After::Relay(_, target) = &after {
        held.meter.relaying(*target);
    }
    Some(Terminated {
        client,
        after,
        timers: Timers::from_policy(&routed.policy),
        route: routed.forward.route,
        conn: routed.conn,
        version,
        alpn,
        local,
        peer,
        _slot: routed.slot,
        held,
    })
}

/// Answers an ACME server's TLS-ALPN-01 validation (RFC 8737): the
/// handshake with the challenge certificate and `acme-tls/1`, then close.
pub(super) async fn acme_challenge(pending: Pending, cert: Arc<rustls::sign::CertifiedKey>) {
    let tls = pending.held.proxy.tls();
    let alpn = vec![crate::acme::ACME_TLS_ALPN.to_vec()];
    let config = tls.server_config(cert, "", alpn);
    let (stream, peeked, held) = pending.split();
    let io = Metered::new(Prefixed::new(peeked, stream), held.meter.traffic_handle());
    let sni = held.sni.as_deref().unwrap_or("-");
    match tls::accept(config, io, tls.handshake_timeout()).await {
        Ok(mut s) => {
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut s).await;
            tracing::info!(target: "turnout::acme", conn = held.id, client = %held.client, sni,
                "TLS-ALPN-01 challenge answered");
        }
        Err(e) => {
            tracing::info!(target: "turnout::acme", conn = held.id, client = %held.client, sni,
            error = %e, "TLS-ALPN-01 challenge handshake failed")
        }
    }
}

/// What refuses a terminated connection before its handshake: no
/// certificate naming the server (`unrecognized_name`, as when no route
/// matches). Sends the alert; otherwise gives the certificate the
/// handshake will use.
async fn check(
    pending: &mut Pending,
    tls: &Terminator,
    sni: Option<&str>,
    route: &str,
) -> Result<Arc<rustls::sign::CertifiedKey>, Refusal> {
    let found = match tls.route(route).filter(|r| r.config.acme) {
        Some(_) => acme_certificate(pending, sni).await,
        None => tls.certificate(sni, pending.local.port()),
    };
    match found {
        Ok(key) => Ok(key),
        Err(e) => {
            pending.alert(Some(TlsAlert::UnrecognizedName)).await;
            pending.held.proxy.metrics.handshake(e.reason, "-", "-");
            Err(handshake_refusal(e))
        }
    }
}

/// A name on a `certificate: "auto"` route gets its ACME certificate and
/// never another one. With `acme.onDemand`, a name without one is ordered
/// now when a plugin approves it, and this handshake waits (bounded).
async fn acme_certificate(
    pending: &Pending,
    sni: Option<&str>,
) -> Result<Arc<rustls::sign::CertifiedKey>, tls::HandshakeError> {
    let fail = |reason: &'static str, detail: String| tls::HandshakeError { reason, detail };
    let Some(acme) = pending.held.proxy.acme() else {
        return Err(fail(
            "no-certificate",
            "an \"auto\" route, and acme is not configured".into(),
        ));
    };
    let Some(name) = sni else {
        return Err(fail(
            "no-certificate",
            "a client without SNI on an \"auto\" route".into(),
        ));
    };
    if let Some(key) = acme.certificate(name) {
        return Ok(key);
    }
    if !acme.on_demand_enabled() {
        let status = acme.statuses().into_iter().find(|s| s.name == name).map_or(
            "not ordered (not a listed name; acme.onDemand is off)".to_owned(),
            |s| {
                format!(
                    "{}{}",
                    s.status.as_str(),
                    s.last_error.map(|e| format!(": {e}")).unwrap_or_default()
                )
            },
        );
        return Err(fail(
            "certificate-pending",
            format!("no certificate for {name:?} yet: {status}"),
        ));
    }
    match pending
        .held
        .chain
        .approve_certificate(name, pending.held.client)
    {
        crate::plugins::Approval::Approve { plugin } => {
            tracing::info!(target: "turnout::acme", conn = pending.held.id, name, plugin, "on-demand certificate approved");
            acme.on_demand(name)
                .await
                .map_err(|e| fail("certificate-pending", e.to_string()))
        }
        refused => Err(fail(
            "no-certificate",
            format!(
                "no certificate for {name:?}, and on-demand issuance was not approved ({refused:?})"
            ),
        )),
    }
}

fn handshake_refusal(e: tls::HandshakeError) -> Refusal {
    Refusal::Handshake {
        reason: e.reason,
        detail: e.detail,
    }
}

/// The version and ALPN protocol a finished handshake agreed on.
fn agreed(client: &ClientStream) -> (&'static str, String) {
    let (_, session) = client.get_ref();
    let version = match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        _ => "other",
    };
    let alpn = session.alpn_protocol().map_or_else(
        || "-".to_owned(),
        |p| String::from_utf8_lossy(p).into_owned(),
    );
    (version, alpn)
}

/// Connects a target over TLS with the route's client config, verifying
/// it as the target's name (see `tls::upstream_name`).
async fn reencrypt(
    pending: &Pending,
    routed: &Routed,
    tls: &Terminator,
    sni: Option<&str>,
) -> Result<(Backend, SocketAddr), Refusal> {
    let name = &routed.forward.route;
    let timeout = pending.settings.connect_timeout;
    let Some((route, config)) = tls
        .route(name)
        .and_then(|r| r.upstream.clone().map(|c| (r, c)))
    else {
        return Err(Refusal::Backend(format!(
            "route {name:?} re-encrypts but has no upstream TLS settings"
        )));
    };
    let (tcp, target, t) = super::connect::connect_first(&routed.forward.targets, timeout)
        .await
        .map_err(|e| Refusal::Backend(e.to_string()))?;
    backend_socket_policy(&tcp, &routed.policy);
    let server = tls::upstream_name(route, &t.host, sni)
        .map_err(|e| Refusal::Backend(format!("{target}: {e}")))?;
    let mut config = rustls::ClientConfig::clone(&config);
    config.alpn_protocols = routed
        .conn
        .tls
        .as_ref()
        .map(|h| h.alpn.iter().map(|p| p.as_bytes().to_vec()).collect())
        .unwrap_or_default();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::time::timeout(timeout, connector.connect(server, tcp))
        .await
        .map_err(|_| Refusal::Backend(format!("{target}: TLS handshake timed out")))?
        .map_err(|e| Refusal::Backend(format!("{target}: TLS: {e}")))?;
    Ok((Backend::Tls(Box::new(stream)), target))
}

impl Terminated {
    /// Relays (or, on an HTTP route, serves requests) until the connection
    /// ends, then logs how it ended.
    pub(super) async fn run(self) {
        match self.after {
            After::Http(upstream) => {
                let alpn = self.client.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                let conn = super::serve_http::HttpConn {
                    local: self.local,
                    peer: self.peer,
                    https: true,
                    alpn: Some(alpn.unwrap_or_else(|| b"http/1.1".to_vec())),
                    route: Some(upstream),
                    timers: self.timers,
                    acme_only: false,
                };
                // The route's slot is held until the connection ends.
                let _slot = self._slot;
                // Boxed: hyper's server connection future is ~10 KB, and
                // inline it sized this whole future — so every idle
                // `protocol: tcp` relay held it too (RSS per idle terminated
                // connection 23.2 → 15.7 KiB with it boxed).
                Box::pin(super::serve_http::run(self.client, conn, self.held)).await;
            }
            After::Relay(mut backend, target) => {
                let mut client = self.client;
                let held = &self.held;
                let traffic = held.meter.traffic();
                let (chain, started, route, conn) =
                    (&held.chain, held.started, &self.route, &self.conn);
                let on_idle =
                    |idle| super::conn::ask_on_idle(chain, conn, route, started, traffic, idle);
                let mut stop = held.proxy.stop.subscribe();
                let stop = std::pin::pin!(async move {
                    let _ = stop.wait_for(|s| *s).await;
                });
                let timers = self.timers;
                let reason = match &mut backend {
                    Backend::Plain(b) => {
                        relay::relay_streams(
                            &mut client,
                            b,
                            timers,
                            traffic,
                            started,
                            on_idle,
                            stop,
                        )
                        .await
                    }
                    Backend::Tls(b) => {
                        let b = b.as_mut();
                        relay::relay_streams(
                            &mut client,
                            b,
                            timers,
                            traffic,
                            started,
                            on_idle,
                            stop,
                        )
                        .await
                    }
                };
                tracing::info!(
                    conn = held.id, client = %held.client, sni = held.sni.as_deref().unwrap_or("-"),
                    route = %self.route, target = %target, tls = self.version, alpn = %self.alpn,
                    bytes_in = traffic.bytes_in.load(Ordering::Relaxed),
                    bytes_out = traffic.bytes_out.load(Ordering::Relaxed),
                    duration_ms = started.elapsed().as_millis(), reason = reason.as_str(), "closed"
                );
            }
        }
    }
}

/// The route's targets as an HTTP upstream: where a forward without an
/// upstream id goes.
fn connection_upstream(routed: &Routed) -> Upstream {
    let mut u = Upstream::new(routed.forward.route.clone(), routed.forward.targets.clone());
    u.tls = routed.forward.tls_mode == TlsMode::TerminateAndReencrypt;
    u.protocol = BackendProtocol::Auto;
    u
}

/// Counts the bytes that cross the client socket into the connection's
/// traffic (the relay sees only plaintext).
pub(super) struct Metered<S> {
    inner: S,
    traffic: TrafficHandle,
}

impl<S> Metered<S> {
    pub(super) fn new(inner: S, traffic: TrafficHandle) -> Self {
        Self { inner, traffic }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.traffic.count_in(n as u64);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.traffic.count_out(n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
