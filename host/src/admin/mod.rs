//! The admin API (hyper, HTTP/1.1), off unless `admin.listen` is set:
//!
//! * `GET /metrics` — OpenMetrics text for Prometheus;
//! * `GET /api/stats[?window=S&history=S&top=N]` — SmartProxy's groups
//!   (connections, throughput, requests, totals, percentiles) as JSON;
//! * `GET /api/connections[?limit=N]` — the live connections;
//! * `GET /api/plugins` — loaded plugins and their call statistics;
//! * `GET /api/certificates` — every certificate in use, static and ACME;
//! * `GET /api/cluster` — the shared store (`cluster`) and the instances
//!   whose heartbeat is live ([`cluster`]);
//! * `GET /healthz` — the process answers; `GET /readyz` — listeners bound
//!   and plugins initialised, and not draining;
//! * `GET /api/config`, `PUT /api/config`, `PUT /api/routes` — the running
//!   configuration, and replacing it ([`config`]; writes only with
//!   `admin.token` set, and the bearer token).
//!
//! Everything else only reads. Each admin connection is bounded (header
//! read timeout, a cap on concurrent connections, a cap on a body) so a
//! client gone wrong cannot starve the proxy.

pub mod client;
mod cluster;
pub mod config;
pub mod prometheus;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::limits::ConnectionTracker;
use crate::metrics::{HISTORY_SECS, LogHistogram, Metrics, Rate, RequestsView, WebSocketView};
use crate::plugins::{Origin, PluginSet};
use turnout_plugin_sdk::Hooks;

/// Admin connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;
pub use crate::config::DEFAULT_TOP_IPS;

/// What the admin API reads.
#[derive(Debug)]
pub struct AdminState {
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The plugins (their chain is read at each request, so reloads show).
    pub plugins: Arc<PluginSet>,
    /// The limit counters.
    pub tracker: Arc<ConnectionTracker>,
    /// Client IPs exposed per-IP (`admin.topIps`).
    pub top_ips: usize,
    ready: AtomicBool,
    /// The proxy, for its certificates (set once it exists).
    proxy: std::sync::OnceLock<Arc<crate::proxy::Proxy>>,
    /// Whoever applies configuration changes (set once it runs).
    config: std::sync::OnceLock<tokio::sync::mpsc::Sender<config::ConfigRequest>>,
    /// `admin.token`: the write endpoints' key (a reconfigure may change it).
    token: arc_swap::ArcSwapOption<crate::config::admin::Token>,
    /// The shared store, when `cluster` is configured.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

impl AdminState {
    /// State over these, not ready yet.
    pub fn new(
        metrics: Arc<Metrics>,
        plugins: Arc<PluginSet>,
        tracker: Arc<ConnectionTracker>,
        top_ips: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            plugins,
            tracker,
            top_ips,
            ready: AtomicBool::new(false),
            proxy: std::sync::OnceLock::new(),
            config: std::sync::OnceLock::new(),
            token: arc_swap::ArcSwapOption::empty(),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Where `/api/config` and `/api/routes` send their requests (later
    /// calls are ignored).
    pub fn set_config_owner(&self, owner: tokio::sync::mpsc::Sender<config::ConfigRequest>) {
        let _ = self.config.set(owner);
    }

    /// Sets the token the write endpoints require; `None` turns them off.
    pub fn set_token(&self, token: Option<crate::config::admin::Token>) {
        self.token.store(token.map(Arc::new));
    }

    fn token(&self) -> Option<Arc<crate::config::admin::Token>> {
        self.token.load_full()
    }

    /// The proxy whose certificates `/api/certificates` and `/metrics`
    /// show (later calls are ignored).
    pub fn set_tls(&self, proxy: Arc<crate::proxy::Proxy>) {
        let _ = self.proxy.set(proxy);
    }

    fn tls(&self) -> Option<Arc<crate::tls::Terminator>> {
        self.proxy.get().map(|p| p.tls())
    }

    fn acme(&self) -> Option<Vec<crate::acme::NameStatus>> {
        Some(self.proxy.get()?.acme()?.statuses())
    }

    /// The shared store `/api/cluster` shows (later calls are ignored).
    pub fn set_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.cluster.get().map(|c| &**c)
    }

    /// Sets what `/readyz` answers.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "admin API: {MAX_CONNECTIONS} connections open already; closing");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    let response = match req.uri().path() {
                        "/api/config" | "/api/routes" => config::handle(&state, req).await,
                        "/api/cluster" if req.method() == Method::GET => {
                            json_response(&cluster::handle(state.cluster()).await)
                        }
                        _ => respond(&state, &req),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
            drop(permit);
        });
    }
}

type Body = Full<Bytes>;

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_response(v: &Value) -> Response<Body> {
    let mut body = serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into());
    body.push('\n');
    text(StatusCode::OK, "application/json", body)
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = json_response(&json!({ "error": message }));
    *r.status_mut() = status;
    r
}

/// A query parameter as a number within `range`; absent → `default`.
fn param(
    query: Option<&str>,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, String> {
    let Some(raw) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
    else {
        return Ok(default);
    };
    match raw.parse::<u64>() {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(format!(
            "query parameter {name}={raw:?}: expected a whole number from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

fn respond(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET or HEAD (only /api/config and /api/routes take PUT)",
        );
    }
    let query = req.uri().query();
    let result = match req.uri().path() {
        "/healthz" => Ok(text(StatusCode::OK, "text/plain", "ok\n".into())),
        "/readyz" => Ok(if state.ready.load(Ordering::Relaxed) {
            text(StatusCode::OK, "text/plain", "ready\n".into())
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready (starting or draining)\n".into(),
            )
        }),
        "/metrics" => param(query, "top", state.top_ips as u64, 0..=1000).map(|top| {
            text(
                StatusCode::OK,
                prometheus::CONTENT_TYPE,
                prometheus::render(prometheus::Scrape {
                    metrics: state.metrics.clone(),
                    plugins: Some(state.plugins.clone()),
                    tracker: Some(state.tracker.clone()),
                    top_ips: top as usize,
                    tls: state.tls(),
                    acme: state.acme(),
                    cluster: state.cluster().map(crate::cluster::Cluster::view),
                }),
            )
        }),
        "/api/stats" => stats(state, query).map(|v| json_response(&v)),
        "/api/connections" => param(query, "limit", 10_000, 0..=1_000_000)
            .map(|limit| json_response(&connections(&state.metrics, limit as usize))),
        "/api/plugins" => Ok(json_response(&plugins(&state.plugins))),
        "/api/certificates" => Ok(json_response(&certificates(
            state.tls().as_deref(),
            state.acme().as_deref(),
        ))),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown path; try /metrics, /api/stats, /api/connections, /api/plugins, /api/certificates, /api/config, /api/cluster, /healthz, /readyz",
            );
        }
    };
    result.unwrap_or_else(|message| error(StatusCode::BAD_REQUEST, &message))
}

fn rate(r: Rate) -> Value {
    json!({ "in": r.bytes_in, "out": r.bytes_out })
}

fn percentiles(h: &LogHistogram) -> Value {
    json!({
        "count": h.count(),
        "p50": h.quantile(0.50),
        "p95": h.quantile(0.95),
        "p99": h.quantile(0.99),
    })
}

/// `/api/stats`: SmartProxy's `getMetrics()` groups.
fn stats(state: &AdminState, query: Option<&str>) -> Result<Value, String> {
    let m = &state.metrics;
    let window = param(query, "window", 300, 1..=HISTORY_SECS as u64)?;
    let history = param(query, "history", 60, 0..=HISTORY_SECS as u64)?;
    let top = param(query, "top", state.top_ips as u64, 0..=1000)?;
    let routes = m.routes();
    let ips = m.top_ips(top as usize);
    let (bytes_in, bytes_out) = m.bytes();
    Ok(json!({
        "uptimeSeconds": m.uptime().as_secs(),
        "connections": {
            "active": m.active(),
            "total": m.accepted(),
            "byRoute": routes.iter().map(|(r, u)| (r.clone(), json!({"active": u.active, "total": u.total}))).collect::<serde_json::Map<_, _>>(),
            "topIPs": ips.iter().map(|(ip, u)| json!({"ip": ip, "active": u.active, "total": u.total})).collect::<Vec<_>>(),
            "trackedIPs": m.tracked_ips(),
            "byWorker": m.workers().iter().map(|w| json!({"active": w.active, "total": w.accepted})).collect::<Vec<_>>(),
        },
        "limits": {
            "active": state.tracker.total(),
            "trackedIPs": state.tracker.tracked_ips(),
        },
        "throughput": {
            "instant": rate(m.rate(1)),
            "recent": rate(m.rate(10)),
            "average": rate(m.rate(60)),
            "custom": { "windowSeconds": window, "rate": rate(m.rate(window)) },
            "history": m.history(history as usize).into_iter().map(|(t, r)| json!({"second": t, "in": r.bytes_in, "out": r.bytes_out})).collect::<Vec<_>>(),
            "byRoute": routes.iter().map(|(r, u)| (r.clone(), json!({"instant": rate(u.rate_1s), "recent": rate(u.rate_10s), "average": rate(u.rate_60s)}))).collect::<serde_json::Map<_, _>>(),
            "byIP": ips.iter().map(|(ip, u)| (ip.to_string(), json!({"instant": rate(u.rate_1s), "recent": rate(u.rate_10s), "average": rate(u.rate_60s)}))).collect::<serde_json::Map<_, _>>(),
        },
        "requests": requests(&m.requests(), top as usize),
        "websockets": websockets(&m.websockets()),
        "totals": {
            "bytesIn": bytes_in,
            "bytesOut": bytes_out,
            "connections": m.accepted(),
            "refusals": m.refusals().into_iter().map(|(r, n)| (r.to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "pluginRefusals": m.plugin_refusals().into_iter().map(|((p, r), n)| json!({"plugin": p, "reason": r, "count": n})).collect::<Vec<_>>(),
            "byRoute": routes.iter().map(|(r, u)| (r.clone(), json!({"bytesIn": u.bytes_in, "bytesOut": u.bytes_out}))).collect::<serde_json::Map<_, _>>(),
            "byIP": ips.iter().map(|(ip, u)| (ip.to_string(), json!({"bytesIn": u.bytes_in, "bytesOut": u.bytes_out}))).collect::<serde_json::Map<_, _>>(),
        },
        "percentiles": {
            "durationMs": percentiles(m.durations_ms()),
            "bytesPerConnection": percentiles(m.connection_bytes()),
        },
        "cluster": cluster::summary(state.cluster()),
    }))
}

/// The `requests` group: SmartProxy's four keys, then by route, status
/// class and error, durations, and the upstream pool. `byDomain` is the
/// `top` busiest domains, like `topIPs`.
fn requests(v: &RequestsView, top: usize) -> Value {
    let counts = |rows: &[(&'static str, u64)]| {
        rows.iter()
            .map(|(k, n)| ((*k).to_owned(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
    };
    json!({
        "perSecond": v.per_second,
        "perMinute": v.per_minute,
        "total": v.total,
        "byDomain": v.by_domain.iter().take(top).map(|(d, n)| (d.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "byRoute": v.by_route.iter().map(|r| (r.route.clone(), json!({"total": r.total, "byStatus": counts(&r.by_status_class)}))).collect::<serde_json::Map<_, _>>(),
        "byStatus": counts(&v.by_status_class),
        "errors": counts(&v.errors),
        "durationMs": { "p50": v.duration_ms.p50, "p90": v.duration_ms.p90, "p99": v.duration_ms.p99 },
        "upstreamConnections": { "open": v.upstream_open, "opened": v.upstream_opened },
    })
}

/// The `websockets` group: WebSockets the proxy speaks itself.
fn websockets(w: &WebSocketView) -> Value {
    json!({
        "active": w.active,
        "upgrades": w.upgrades.iter().map(|(r, n)| (r.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "pingsSent": w.pings_sent,
        "closes": w.closes.iter().map(|(r, n)| ((*r).to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
    })
}

fn connections(m: &Metrics, limit: usize) -> Value {
    let live = m.connections(limit);
    json!({ "active": m.active(), "shown": live.len(), "connections": live })
}

fn hook_names(h: Hooks) -> Vec<&'static str> {
    [
        (Hooks::ADMIT, "admit"),
        (Hooks::ROUTE, "route"),
        (Hooks::POLICY, "policy"),
        (Hooks::ON_IDLE, "on-idle"),
        (Hooks::REQUEST, "request"),
        (Hooks::RESPONSE, "response"),
        (Hooks::APPROVE_CERTIFICATE, "approve-certificate"),
    ]
    .into_iter()
    .filter(|(flag, _)| h.contains(*flag))
    .map(|(_, n)| n)
    .collect()
}

fn plugins(set: &PluginSet) -> Value {
    let chain = set.chain();
    let list: Vec<Value> = chain
        .plugins()
        .iter()
        .map(|p| {
            let s = p.metrics().snapshot();
            let info = p.info();
            let loaded_ms = p
                .loaded_at()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            json!({
                "name": p.name(),
                "version": info.version,
                "source": match p.origin() {
                    Origin::Embedded => json!("embedded"),
                    Origin::File(path) => json!(path.display().to_string()),
                },
                "sha256": p.sha256(),
                "loadedAtUnixMs": loaded_ms,
                "hooks": hook_names(info.hooks),
                "failurePolicy": match p.failure_policy() {
                    crate::plugins::FailurePolicy::Closed => "closed",
                    crate::plugins::FailurePolicy::Open => "open",
                },
                "listen": info.listen.iter().map(|r| json!([r.from, r.to])).collect::<Vec<_>>(),
                "calls": s.calls,
                "failures": s.failures.iter().map(|(k, n)| (k.as_str().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "instancesLive": s.instances_live,
                "instantiations": s.instantiations,
                "meanCallMicros": if s.calls == 0 { 0.0 } else { s.call_time_sum.as_secs_f64() * 1e6 / s.calls as f64 },
                "callTimeBuckets": s.call_time_buckets.iter().map(|(le, n)| json!({"leMicros": le, "count": n})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "plugins": list })
}

/// Every certificate in use: names, source, file, issuer, serial,
/// validity, days left, the routes using it.
fn certificates(
    tls: Option<&crate::tls::Terminator>,
    acme: Option<&[crate::acme::NameStatus]>,
) -> Value {
    let now = std::time::SystemTime::now();
    let mut list: Vec<Value> = tls
        .map(|t| t.store().certs().to_vec())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let cert = &c.cert;
            json!({
                "names": cert.names,
                "source": "static",
                "file": cert.source,
                "issuer": cert.issuer,
                "serial": cert.serial,
                "notBefore": unix_to_rfc3339(cert.not_before),
                "notAfter": unix_to_rfc3339(cert.not_after),
                "daysLeft": cert.days_left(now),
                "routes": c.routes,
                "default": c.routes.is_empty(),
            })
        })
        .collect();
    let now_s = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    list.extend(acme.unwrap_or_default().iter().map(|a| {
        let c = a.certificate.as_ref();
        json!({
            "names": [a.name],
            "source": "acme",
            "status": a.status.as_str(),
            "onDemand": a.on_demand,
            "issuer": c.map(|c| c.issuer.clone()),
            "serial": c.map(|c| c.serial.clone()),
            "notBefore": c.map(|c| unix_to_rfc3339(c.not_before)),
            "notAfter": c.map(|c| unix_to_rfc3339(c.not_after)),
            "daysLeft": c.map(|c| (c.not_after - now_s).div_euclid(86_400)),
            "lastError": a.last_error,
            "nextAttempt": a.next_attempt.map(unix_to_rfc3339),
        })
    }));
    json!({ "certificates": list })
}

/// Unix seconds as an RFC 3339 UTC time.
fn unix_to_rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// A listening socket the caller bound for the admin API (`addr` is the
/// configured address, for the error message).
pub fn adopt(
    listener: std::net::TcpListener,
    addr: SocketAddr,
) -> Result<TcpListener, crate::proxy::BindError> {
    listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
        .map_err(|source| crate::proxy::BindError { addr, source })
}

/// Binds the admin listener, explaining the usual failures.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, crate::proxy::BindError> {
    // One socket, served on the control runtime: no `SO_REUSEPORT` group.
    crate::proxy::listening_socket(addr, false)
        .and_then(TcpListener::from_std)
        .map_err(|source| crate::proxy::BindError { addr, source })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::requests;
    use crate::metrics::{Metrics, OTHER, RequestRecord};

    #[test]
    fn the_requests_group_keeps_smartproxys_keys_and_adds_the_http_ones() {
        let m = Metrics::default();
        for (domain, status, error) in [
            ("a.test", 200, None),
            ("a.test", 301, None),
            ("b.test", 504, Some("upstream-timeout")),
        ] {
            m.request(&RequestRecord {
                domain,
                route: "web",
                status,
                duration: Duration::from_millis(2),
                error,
            });
        }
        m.upstream_connection_opened();
        let v = requests(&m.requests(), 1);
        assert_eq!(v["total"], 3);
        assert_eq!(
            (v["perSecond"].as_f64(), v["perMinute"].as_u64()),
            (Some(0.0), Some(0))
        );
        assert_eq!(v["byDomain"], json!({"a.test": 2}), "top 1 only");
        assert_eq!(
            v["byRoute"]["web"],
            json!({"total": 3, "byStatus": {"1xx": 0, "2xx": 1, "3xx": 1, "4xx": 0, "5xx": 1}})
        );
        assert_eq!(v["byStatus"]["5xx"], 1);
        assert_eq!(v["errors"]["upstream-timeout"], 1);
        assert_eq!(v["errors"]["no-route"], 0);
        assert!(v["errors"].get(OTHER).is_none());
        // 2 ms is reported as its bucket's upper bound, at µs precision.
        let p50 = v["durationMs"]["p50"].as_f64().unwrap();
        assert!((2.0..2.52).contains(&p50), "{p50}");
        assert_eq!(v["upstreamConnections"], json!({"open": 1, "opened": 1}));
        // Before any request: zeros, and null percentiles.
        let empty = requests(&Metrics::default().requests(), 10);
        assert_eq!(empty["byDomain"], json!({}));
        assert_eq!(
            empty["durationMs"],
            json!({"p50": null, "p90": null, "p99": null})
        );
    }
}
