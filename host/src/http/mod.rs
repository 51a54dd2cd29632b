//! The HTTP reverse proxy: hyper's auto (HTTP/1.1 + HTTP/2) server on a
//! client connection that turned out to be HTTP — a terminated TLS route
//! whose `match.protocol` is `"http"`, or a plaintext client on a port a
//! plugin declared an HTTP port — and every request decided by the
//! plugins' `request` hook.
//!
//! * `service` — one request: checks, the decision, the answer.
//! * `upstream` — pooled clients toward upstreams, failover.
//! * `headers` — hop-by-hop, `X-Forwarded-*`, plugin edits.
//! * `timers` — `headerTimeout` / `idleTimeout` on the client stream.
//! * `respond` — the response body type and the proxy's own answers.
//! * `upgrade` — the HTTP/1.1 upgrade and HTTP/2 extended CONNECT
//!   handshakes; `websocket` — the relay after them, and the heartbeat.
//!
//! A connection reaches this module from `proxy` at its routing verdict;
//! nothing here knows about the L4 path.

#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod head_scan;
mod headers;
mod respond;
mod service;
mod timers;
mod upgrade;
mod upstream;
pub mod websocket;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use turnout_plugin_sdk::Upstream;
use turnout_plugin_sdk::matching::IpList;

use crate::config::http::HttpConfig;
use crate::metrics::{Metrics, RequestRecord};
use crate::plugins::Chain;
use crate::tls::Terminator;

pub use self::websocket::UpgradeTimers;

/// One client connection's HTTP context.
pub struct Session {
    pub chain: Arc<Chain>,
    pub metrics: Arc<Metrics>,
    pub config: HttpConfig,
    pub connect_timeout: Duration,
    /// `proxyIPs`: peers allowed to extend `X-Forwarded-For`.
    pub trusted: Arc<IpList>,
    /// Route slots for requests in flight (the connection's client).
    pub routes: crate::limits::RouteEntry,
    pub tls: Arc<Terminator>,
    pub id: u64,
    /// The client (a trusted PROXY header's address, or the peer).
    pub client: SocketAddr,
    /// The socket peer.
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// `X-Forwarded-For`/`-Port` for `client` and `local`'s port (see
    /// [`Session::forwarded_values`]).
    pub forwarded: headers::ForwardedValues,
    pub sni: Option<String>,
    /// TLS terminated here.
    pub https: bool,
    /// The protocol ALPN chose (`h2`, `http/1.1`); `None`: detect (h2c
    /// prior knowledge, else HTTP/1.1).
    pub alpn: Option<Vec<u8>>,
    /// The connection's route (terminated TLS): where a forward without an
    /// upstream id goes.
    pub route: Option<Upstream>,
    /// The connection policy's timers, which govern an upgraded
    /// (WebSocket) connection.
    pub upgrade: UpgradeTimers,
    /// ACME HTTP-01 answers, served before any plugin (when `acme` is
    /// configured).
    pub acme: Option<Arc<crate::acme::Challenges>>,
    /// An ACME validation let in before `admit`: its challenge is
    /// answered, with `Connection: close`, and nothing else is.
    pub acme_only: bool,
}

impl Session {
    /// The `X-Forwarded-For`/`-Port` values of a connection from `client`
    /// to `local`.
    pub fn forwarded_values(client: SocketAddr, local: SocketAddr) -> headers::ForwardedValues {
        headers::ForwardedValues::new(headers::ip(client), local.port())
    }
}

/// How an HTTP connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client closed, or asked to (`Connection: close`, GOAWAY).
    Client,
    /// `headerTimeout`: a request head did not complete (408 sent).
    HeaderTimeout,
    /// `idleTimeout` with no request in flight.
    Idle,
    /// Requests in flight, and nothing moved on the client socket for the
    /// longer of `idleTimeout` and `responseTimeout`.
    Stalled,
    /// The proxy is shutting down.
    Shutdown,
    /// Upgraded (WebSocket), and the relay ended.
    Upgraded,
    /// A protocol error (400, 414 or 431, answered by hyper on HTTP/1.1).
    ProtocolError,
}

impl Closed {
    /// The label in the connection's closing log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Client => "client-closed",
            Closed::HeaderTimeout => "header-timeout",
            Closed::Idle => "idle",
            Closed::Stalled => "stalled",
            Closed::Upgraded => "upgraded-closed",
            Closed::Shutdown => "shutdown",
            Closed::ProtocolError => "http-protocol-error",
        }
    }
}

/// How the proxy ends HTTP connections when it shuts down.
pub struct Ends<D, S> {
    /// The drain started: finish the requests in flight, then close
    /// (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY).
    pub draining: D,
    /// The drain time is over: close now.
    pub stop: S,
}

/// Serves HTTP on `io` until the client leaves, a timer ends it, or the
/// proxy shuts down (`ends`).
pub async fn serve<IO, D, S>(io: IO, session: Session, ends: Ends<D, S>) -> Closed
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    D: Future<Output = ()>,
    S: Future<Output = ()>,
{
    let h2 = session.alpn.as_deref() == Some(b"h2");
    let state = timers::ConnState::new(h2);
    let config = session.config;
    let stall = config.idle_timeout.max(config.response_timeout);
    let io = timers::Timed::new(
        io,
        state.clone(),
        config.header_timeout,
        config.idle_timeout,
        stall,
    );
    let session = Arc::new(session);
    let s = session.clone();
    let st = state.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        service::handle(s.clone(), st.clone(), req)
    });
    let builder = builder(&config, session.alpn.as_deref());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let (draining, stop) = (ends.draining, ends.stop);
    tokio::pin!(draining);
    tokio::pin!(stop);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = &mut draining => {
            drain(conn.as_mut(), &state, h2, stop.as_mut()).await;
            if let Some(relay) = state.take_relay() {
                relay.abort();
            }
            state.abort_tunnels();
            return Closed::Shutdown;
        }
    };
    // HTTP/2 WebSockets are streams of this connection: they end with it.
    state.end_tunnels(Duration::from_secs(1)).await;
    if let Some(relay) = state.take_relay() {
        // Upgraded: the connection lives on in its relay, until it ends or
        // the drain time is over.
        tokio::pin!(relay);
        tokio::select! {
            _ = &mut relay => return Closed::Upgraded,
            () = &mut stop => {
                relay.abort();
                return Closed::Shutdown;
            }
        }
    }
    ended(&session, &state, result)
}

/// Ends a connection for the drain: in-flight requests finish and are
/// answered with `Connection: close` (HTTP/2: GOAWAY), bounded by the
/// drain time (`stop`).
///
/// A connection accepted before the drain whose first request has not
/// come yet (behind an L4 balancer it may be on its way, and cannot go
/// elsewhere now) waits for it, bounded by the header timeout and `stop`:
/// hyper's shutdown would drop it unanswered while the protocol is still
/// being read.
async fn drain<C, S>(
    mut conn: Pin<&mut C>,
    state: &timers::ConnState,
    h2: bool,
    mut stop: Pin<&mut S>,
) where
    C: Future + Shutdown,
    S: Future<Output = ()>,
{
    state.drain();
    if state.served() == 0 && !h2 {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = state.first_request() => {}
            () = stop.as_mut() => return,
        }
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stop.as_mut() => {}
    }
}

/// hyper-util's connection, as [`drain`] uses it.
trait Shutdown {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, E, B> Shutdown for auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: auto::HttpServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// The server: hyper-util's auto (HTTP/1.1 and HTTP/2, or the one ALPN
/// chose) with our limits.
fn builder(config: &HttpConfig, alpn: Option<&[u8]>) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Ours (`timers`): hyper's cannot tell a slow head from idle time.
        .header_read_timeout(None)
        .max_buf_size(config.max_header_size)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(u32::try_from(config.max_header_size).unwrap_or(u32::MAX))
        // Rapid reset (CVE-2023-44487): streams a client opens and cancels
        // before they are served count here; past it, GOAWAY.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(1024))
        // WebSocket over HTTP/2 (RFC 8441).
        .enable_connect_protocol();
    match alpn {
        Some(b"h2") => builder.http2_only(),
        Some(_) => builder.http1_only(),
        None => builder,
    }
}

/// How a connection that hyper finished with ended, counted and logged.
fn ended(
    session: &Session,
    state: &timers::ConnState,
    result: Result<(), Box<dyn std::error::Error + Send + Sync>>,
) -> Closed {
    match (state.expired(), result) {
        (Some(timers::Expired::Head), _) => {
            session.metrics.request(&RequestRecord {
                domain: "-",
                route: "-",
                status: 408,
                duration: session.config.header_timeout,
                error: Some("header-timeout"),
            });
            tracing::info!(conn = session.id, client = %session.client, status = 408,
                error = "header-timeout", "no complete request head within headerTimeout");
            Closed::HeaderTimeout
        }
        (Some(timers::Expired::Idle), _) => Closed::Idle,
        (Some(timers::Expired::Stalled), _) => Closed::Stalled,
        (None, Ok(())) => Closed::Client,
        (None, Err(e)) => protocol_error(session, &*e),
    }
}

/// Counts a request hyper refused before the service saw it (it answered
/// 400 or 431 itself on HTTP/1.1).
fn protocol_error(s: &Session, e: &(dyn std::error::Error + Send + Sync + 'static)) -> Closed {
    let Some(h) = e.downcast_ref::<hyper::Error>() else {
        return Closed::Client;
    };
    if !h.is_parse() && !h.is_parse_too_large() {
        return Closed::Client;
    }
    // hyper answers 414 or 431 for "too large" and tells them apart only
    // in its message.
    let (status, label) = if h.is_parse_too_large() && h.to_string().contains("URI too long") {
        (414, "uri-too-long")
    } else if h.is_parse_too_large() {
        (431, "headers-too-large")
    } else {
        (400, "bad-request")
    };
    s.metrics.request(&RequestRecord {
        domain: "-",
        route: "-",
        status,
        duration: Duration::ZERO,
        error: Some(label),
    });
    tracing::info!(
        conn = s.id, client = %s.client, status, error = label, detail = %h,
        "request refused before routing"
    );
    Closed::ProtocolError
}

/// The request's fields for its access-log line, taken before it moves:
/// clones of hyper's shared buffers, no copies.
pub(crate) struct AccessLog {
    method: http::Method,
    uri: http::Uri,
    host: Option<http::HeaderValue>,
}

impl AccessLog {
    fn of(req: &Request<Incoming>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            host: req.headers().get(http::header::HOST).cloned(),
        }
    }

    fn authority(&self) -> &str {
        match self.uri.authority() {
            Some(a) => a.as_str(),
            None => self
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or("-"),
        }
    }

    /// One line per request, when its response body has been sent (or
    /// abandoned), and its metrics.
    fn finish(
        &self,
        s: &Session,
        status: u16,
        bytes: u64,
        duration: Duration,
        outcome: &service::Outcome,
    ) {
        let authority = self.authority();
        let domain = domain_of(authority);
        let upstream = outcome.upstream.as_ref().and_then(|p| p.upstream(s));
        let route = upstream.map_or("-", |u| u.route.as_str());
        s.metrics.request(&RequestRecord {
            domain: &domain,
            route,
            status,
            duration,
            error: outcome.error,
        });
        if !tracing::enabled!(target: "turnout::access", tracing::Level::INFO) {
            return;
        }
        let target = outcome
            .upstream
            .as_ref()
            .and_then(|p| upstream.and_then(|u| u.targets.get(p.target)));
        tracing::info!(
            target: "turnout::access",
            conn = s.id,
            client = %s.client.ip(),
            method = %self.method,
            host = %authority,
            path = %self.uri.path(),
            status,
            bytes,
            duration_ms = duration.as_secs_f64() * 1000.0,
            route,
            upstream = %target.map_or_else(|| "-".to_owned(), |t| format!("{}:{}", t.host, t.port)),
            error = outcome.error.unwrap_or("-"),
            detail = outcome.detail.as_deref().unwrap_or("-"),
            "request"
        );
    }
}

/// The host of an authority, lower-case, without port (borrowed when it
/// already is).
fn domain_of(authority: &str) -> std::borrow::Cow<'_, str> {
    let host = if authority.starts_with('[') {
        authority.find(']').map_or(authority, |i| &authority[..=i])
    } else {
        authority
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(authority, |(h, _)| h)
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}
