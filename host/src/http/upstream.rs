//! Requests to upstreams: hyper-util's pooled client (keep-alive HTTP/1.1,
//! multiplexed HTTP/2, TLS with ALPN through hyper-rustls), one set of
//! pools per worker thread, and failover across a route's targets.
//!
//! Pools are per thread because each worker has a runtime of its own: a
//! pooled connection's task lives on the runtime that opened it, and a
//! request from another worker would cross threads on every read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use turnout_plugin_sdk::{BackendProtocol, Upstream};

use crate::config::http::HttpConfig;
use crate::metrics::Metrics;

/// A request body on its way upstream (boxed: the client's, a limited
/// one, or none; one allocation per request with a body type the pool can
/// name).
pub(crate) type UpBody = BoxBody<Bytes, BoxError>;
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

type UpClient = Client<HttpsConnector<Counting>, UpBody>;

/// Why an upstream did not answer.
#[derive(Debug)]
pub(crate) enum UpError {
    /// No target accepted a connection.
    Refused(String),
    /// A connection broke before a response head arrived.
    Reset(String),
    /// No response head within `responseTimeout`.
    Timeout,
    /// The request body broke the route's limit.
    BodyTooLarge,
}

/// Where and how one request goes.
pub(crate) struct Outbound<'a> {
    pub(crate) upstream: &'a Upstream,
    /// A route-specific TLS client config (re-encrypting routes: their CA,
    /// or no verification); `None`: the system's roots.
    pub(crate) tls: Option<Arc<ClientConfig>>,
    /// The name to verify the targets as (`action.tls.upstream.serverName`);
    /// `None`: each target's host.
    pub(crate) server_name: Option<String>,
    pub(crate) path: &'a str,
    pub(crate) config: &'a HttpConfig,
    pub(crate) connect_timeout: Duration,
    pub(crate) metrics: &'a Arc<Metrics>,
    /// HTTP/1.1 whatever the upstream's protocol (an upgrade).
    pub(crate) force_h1: bool,
}

/// Sends `req` (its URI is rewritten per target) and waits for the head.
/// Targets are tried in order when a connection is refused; a request with
/// a body is sent once (the body cannot be replayed), a bodiless one fails
/// over, since nothing of it reached a target that refused.
pub(crate) async fn send(
    to: Outbound<'_>,
    req: Request<UpBody>,
    bodiless: bool,
) -> Result<(Response<Incoming>, usize), UpError> {
    let scheme = if to.upstream.tls { "https" } else { "http" };
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let mut headers = Some(parts.headers);
    let mut last = String::new();
    let targets = to.upstream.targets.len();
    for (i, target) in to.upstream.targets.iter().enumerate() {
        let authority = if target.host.contains(':') {
            format!("[{}]:{}", target.host, target.port)
        } else {
            format!("{}:{}", target.host, target.port)
        };
        let uri: Uri = match format!("{scheme}://{authority}{}", to.path).parse() {
            Ok(u) => u,
            Err(e) => return Err(UpError::Refused(format!("{authority}: {e}"))),
        };
        let mut req = Request::new(body.take().unwrap_or_else(empty));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        // A copy only when a failover may need the headers again.
        *req.headers_mut() = if bodiless && i + 1 < targets {
            headers.clone().unwrap_or_default()
        } else {
            headers.take().unwrap_or_default()
        };
        match tokio::time::timeout(to.config.response_timeout, dispatch(&to, req)).await {
            Err(_) => return Err(UpError::Timeout),
            Ok(Ok(resp)) => return Ok((resp, i)),
            Ok(Err(e)) if e.is_connect() && bodiless => {
                last = format!("{authority}: {}", source_message(&e));
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(UpError::Refused(format!(
                    "{authority}: {}",
                    source_message(&e)
                )));
            }
            Ok(Err(e)) => {
                if body_limit_hit(&e) {
                    return Err(UpError::BodyTooLarge);
                }
                return Err(UpError::Reset(format!(
                    "{authority}: {}",
                    source_message(&e)
                )));
            }
        }
    }
    Err(UpError::Refused(last))
}

fn empty() -> UpBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// The innermost cause: hyper-util's own message is only "client error (Connect)".
fn source_message(e: &dyn std::error::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn body_limit_hit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// One worker thread's clients: by protocol, and per route-specific TLS
/// config.
struct Clients {
    plain: [UpClient; 3],
    /// Keyed by the config's address and the server name; the `Arc` kept
    /// alongside keeps the address from being reused while the entry lives.
    by_tls: HashMap<TlsKey, (Arc<ClientConfig>, [UpClient; 3])>,
    build: Builder,
}

/// A TLS client config (by address) and the server name to verify.
type TlsKey = (usize, Option<String>);

thread_local! {
    static CLIENTS: RefCell<Option<Clients>> = const { RefCell::new(None) };
}

struct Builder {
    config: HttpConfig,
    connect_timeout: Duration,
    metrics: Arc<Metrics>,
}

/// Sends `req` with this thread's client for the upstream's protocol and
/// TLS settings. (Borrowed where it lives: cloning a client per request
/// showed in profiles.)
fn dispatch(to: &Outbound<'_>, req: Request<UpBody>) -> hyper_util::client::legacy::ResponseFuture {
    let i = match to.upstream.protocol {
        _ if to.force_h1 => 1,
        BackendProtocol::Auto => 0,
        BackendProtocol::Http1 => 1,
        BackendProtocol::Http2 => 2,
    };
    CLIENTS.with(|c| {
        let mut c = c.borrow_mut();
        let clients = c.get_or_insert_with(|| {
            let build = Builder {
                config: *to.config,
                connect_timeout: to.connect_timeout,
                metrics: to.metrics.clone(),
            };
            Clients {
                plain: build.set(crate::tls::default_upstream_config(), None),
                by_tls: HashMap::new(),
                build,
            }
        });
        let Some(tls) = &to.tls else {
            return clients.plain[i].request(req);
        };
        // Configs change only on reload: a handful, ever.
        if clients.by_tls.len() > 64 {
            clients.by_tls.clear();
        }
        let build = &clients.build;
        let name = to.server_name.clone();
        clients
            .by_tls
            .entry((Arc::as_ptr(tls) as usize, name.clone()))
            .or_insert_with(|| (tls.clone(), build.set(tls.clone(), name)))
            .1[i]
            .request(req)
    })
}

impl Builder {
    /// Auto (ALPN h2 or http/1.1 on TLS; HTTP/1.1 in cleartext), HTTP/1.1,
    /// HTTP/2 (ALPN h2; prior knowledge in cleartext).
    fn set(&self, tls: Arc<ClientConfig>, server_name: Option<String>) -> [UpClient; 3] {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let counting = Counting {
            inner: http,
            metrics: self.metrics.clone(),
        };
        let base = || {
            let b = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((*tls).clone())
                .https_or_http();
            // `serverName` was checked to be a name when the config loaded.
            match server_name
                .clone()
                .and_then(|n| rustls::pki_types::ServerName::try_from(n).ok())
            {
                Some(name) => {
                    b.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
                }
                None => b,
            }
        };
        let auto = base()
            .enable_all_versions()
            .wrap_connector(counting.clone());
        let h1 = base().enable_http1().wrap_connector(counting.clone());
        let h2 = base().enable_http2().wrap_connector(counting);
        let client = |http2_only: bool| {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(self.config.upstream_idle_timeout)
                .pool_max_idle_per_host(self.config.upstream_max_idle)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .http2_only(http2_only);
            b
        };
        [
            client(false).build(auto),
            client(false).build(h1),
            client(true).build(h2),
        ]
    }
}

/// Counts upstream connections for the pool gauges.
#[derive(Clone)]
struct Counting {
    inner: HttpConnector,
    metrics: Arc<Metrics>,
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<Counted, BoxError>> + std::marker::Send>>;

impl tower_service::Service<Uri> for Counting {
    type Response = Counted;
    type Error = BoxError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let io = connecting.await?;
            metrics.upstream_connection_opened();
            Ok(Counted { io, metrics })
        })
    }
}

/// An upstream connection, counted closed when dropped.
struct Counted {
    io: TokioIo<TcpStream>,
    metrics: Arc<Metrics>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics.upstream_connection_closed();
    }
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl hyper::rt::Read for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
