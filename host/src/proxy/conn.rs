//! One client connection, from accept to close: PROXY header in, `admit`,
//! ClientHello peek, `route`, route limits, `policy`, connect, PROXY header
//! out, relay. Every exit path logs one line with the close reason, and the
//! counters are released by their guard whatever happens.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use turnout_plugin_sdk::{
    ClientHello, Connection, IdleDecision, IdleStats, Peer, ProxyProtocol, Routed, TlsAlert,
    TlsMode,
};

use super::relay::{self, IdleVerdict, Timers, Traffic};
use super::{Proxy, Settings};
use crate::net::{client_hello, proxy_protocol};
use crate::plugins::{Admission, Chain, PLUGIN_FAILURE_REASON, Routing};

/// Why a connection ended before the relay began (a metrics label each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed or untrusted PROXY header.
    ProxyHeader(String),
    /// A plugin's `admit` denied.
    Denied { plugin: String, reason: String },
    /// The ClientHello was malformed.
    Hello(String),
    /// The PROXY header or ClientHello did not arrive within
    /// `initialDataTimeout` (which one, in words).
    Timeout(&'static str),
    /// Data before routing exceeded `maxPendingDataSize`.
    TooMuchPending,
    /// No plugin routed it.
    NoRoute,
    /// A plugin's `route` rejected it.
    Rejected { plugin: String, reason: String },
    /// The route's connection limit.
    RouteLimit(String),
    /// A TLS mode this build does not implement yet.
    Unsupported(&'static str),
    /// No target answered.
    Backend(String),
    /// The client went away before routing.
    ClientGone,
}

impl Refusal {
    /// Every label [`Refusal::label`] returns, in a fixed order (metrics
    /// index their counters by it).
    pub const LABELS: [&'static str; 12] = [
        "bad-proxy-header",
        "denied",
        "bad-client-hello",
        "timeout",
        "pending-data-limit",
        "no-route",
        "rejected",
        "plugin-failure",
        "route-limit",
        "unsupported",
        "backend-unreachable",
        "client-gone",
    ];

    /// Stable metrics label. A plugin that failed with the `closed`
    /// policy is `plugin-failure`, not a denial of its own.
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// Position of the label in [`Refusal::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            Refusal::ProxyHeader(_) => 0,
            Refusal::Denied { reason, .. } | Refusal::Rejected { reason, .. }
                if reason == PLUGIN_FAILURE_REASON =>
            {
                7
            }
            Refusal::Denied { .. } => 1,
            Refusal::Hello(_) => 2,
            Refusal::Timeout(_) => 3,
            Refusal::TooMuchPending => 4,
            Refusal::NoRoute => 5,
            Refusal::Rejected { .. } => 6,
            Refusal::RouteLimit(_) => 8,
            Refusal::Unsupported(_) => 9,
            Refusal::Backend(_) => 10,
            Refusal::ClientGone => 11,
        }
    }

    /// The plugin and its reason, for a denial or rejection by a plugin.
    pub fn plugin_verdict(&self) -> Option<(&str, &str)> {
        match self {
            Refusal::Denied { plugin, reason } | Refusal::Rejected { plugin, reason } => {
                Some((plugin, reason))
            }
            _ => None,
        }
    }
}

/// A fatal TLS alert record (TLS 1.2 record version, as servers send to
/// clients that may speak either).
fn alert_record(alert: TlsAlert) -> [u8; 7] {
    let code = match alert {
        TlsAlert::UnrecognizedName => 112,
        TlsAlert::HandshakeFailure => 40,
        TlsAlert::AccessDenied => 49,
        TlsAlert::InternalError => 80,
    };
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, code]
}

/// Writes a fatal alert (best effort; a client already gone cannot take it).
async fn send_alert(stream: &mut TcpStream, traffic: &Traffic, alert: TlsAlert) {
    let record = alert_record(alert);
    if stream.write_all(&record).await.is_ok() {
        traffic.count_out(record.len() as u64);
    }
}

/// Reads more client bytes into `buf` before `deadline`; `timed_out` says
/// what the caller was waiting for when the deadline passes.
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    limit: usize,
    timed_out: fn() -> Refusal,
) -> Result<(), Refusal> {
    if buf.len() >= limit {
        return Err(Refusal::TooMuchPending);
    }
    // Straight into the Vec (no chunk array living in the connection's
    // future while it waits), never past `limit`.
    let room = (limit - buf.len()).min(4096);
    buf.reserve(room);
    let mut limited = (&mut *stream).take(room as u64);
    match tokio::time::timeout_at(deadline, limited.read_buf(buf)).await {
        Err(_) => Err(timed_out()),
        Ok(Ok(0)) => Err(Refusal::ClientGone),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(Refusal::ClientGone),
    }
}

/// State carried from accept to close.
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) tls_port: bool,
    /// The options the socket got from its listener.
    pub(crate) inherited: super::socket::Inherited,
    /// The worker thread it was accepted on.
    pub(crate) worker: usize,
}

/// Runs one connection to the end.
///
/// Two phases, so that an idle connection's task stays small: everything
/// before the relay (PROXY header and ClientHello reads, plugin verdicts,
/// connect with its timeout) runs in a heap allocation of its own, freed
/// when the relay starts; the task itself holds only [`Relaying`] and the
/// relay. (A plain `fn` returning an `async move` block: an `async fn`
/// would keep a second copy of its arguments in its state.)
pub(crate) fn handle(proxy: Arc<Proxy>, accepted: Accepted) -> impl Future<Output = ()> + Send {
    use futures_util::FutureExt;
    use futures_util::future::Either;
    // `then`, not `if let Some(r) = prepared.await { r.run().await }`:
    // that would keep a moved-from copy of `Relaying` beside the future
    // that owns it.
    Box::pin(prepare(proxy, accepted)).then(|prepared| match prepared {
        Some(relaying) => Either::Left(relaying.run()),
        None => Either::Right(std::future::ready(())),
    })
}

/// The phase before the relay: `Some` when the connection is to be
/// relayed; a refusal is counted and logged here.
async fn prepare(proxy: Arc<Proxy>, accepted: Accepted) -> Option<Relaying> {
    let started = Instant::now();
    let id = proxy.ids.fetch_add(1, Ordering::Relaxed);
    let settings = proxy.settings.load_full();
    let chain = proxy.plugins.chain();
    let Accepted {
        mut stream,
        peer,
        local,
        tls_port,
        inherited,
        worker,
    } = accepted;
    let mut guard = proxy.tracker.accept(peer.ip());
    // Declared after the limit guard so it drops first: once the tracker
    // says no connection is left, the metrics have settled too. (Neither
    // may be moved into the async block below, which would drop it when
    // the block ends, before the refusal is counted.)
    let mut meter = proxy.metrics.open(id, peer);
    meter.worker(worker);
    let deadline = started + settings.initial_data_timeout;
    let mut buf = Vec::new();
    let mut client = peer;
    let mut via_proxy = false;
    let mut sni: Option<String> = None;
    // Client bytes before routing count once: at relay start, or at the
    // refusal (never the PROXY header's).
    let mut proxy_phase_done = false;
    let mut peek_counted = false;

    let prepared: Result<Ready, Refusal> = async {
        // PROXY header: only from trusted sources; from anyone else the
        // signature is a protocol error (checked after the peek, below).
        if settings.accept_proxy_protocol && settings.trusted_proxies.matches(peer.ip()) {
            loop {
                match proxy_protocol::parse(&buf) {
                    Ok(proxy_protocol::ProxyParse::Incomplete) => {
                        read_more(
                            &mut stream,
                            &mut buf,
                            deadline,
                            settings.max_pending_data,
                            || {
                                Refusal::Timeout(
                                    "no complete PROXY header within initialDataTimeout",
                                )
                            },
                        )
                        .await?
                    }
                    Ok(proxy_protocol::ProxyParse::Header { header, len }) => {
                        buf.drain(..len);
                        if let Some(src) = header.source {
                            client = src;
                            via_proxy = true;
                            guard.rebind(src.ip());
                        }
                        break;
                    }
                    Err(e) => return Err(Refusal::ProxyHeader(e.to_string())),
                }
            }
        }
        proxy_phase_done = true;
        meter.client(client);
        let peer_rec = Peer::new(client, local.port()).via_proxy_protocol(via_proxy);
        if let Admission::Deny { plugin, reason } = chain.admit(&peer_rec) {
            return Err(Refusal::Denied { plugin, reason });
        }

        let mut hello: Option<ClientHello> = None;
        if tls_port {
            loop {
                match client_hello::parse(&buf) {
                    Ok(client_hello::Parsed::Incomplete { .. }) => {
                        read_more(
                            &mut stream,
                            &mut buf,
                            deadline,
                            settings.max_pending_data,
                            || {
                                Refusal::Timeout(
                                    "no complete ClientHello within initialDataTimeout",
                                )
                            },
                        )
                        .await?
                    }
                    Ok(client_hello::Parsed::NotTls) => break,
                    Ok(client_hello::Parsed::Hello(info)) => {
                        let mut h = ClientHello::without_sni()
                            .alpn(info.alpn)
                            .versions(&info.versions)
                            .resumption_without_sni(info.resumption_without_sni);
                        if let Some(name) = &info.sni {
                            meter.sni(name);
                        }
                        sni.clone_from(&info.sni);
                        h.sni = info.sni;
                        hello = Some(h);
                        break;
                    }
                    Err(e) => return Err(Refusal::Hello(e.to_string())),
                }
            }
        }
        if !via_proxy && proxy_protocol::looks_like_header(&buf) {
            return Err(Refusal::ProxyHeader(format!(
                "PROXY header from untrusted peer {}",
                peer.ip()
            )));
        }
        let is_tls = hello.is_some();
        let conn = match hello {
            Some(h) => Connection::tls(id, peer_rec, h),
            None => Connection::plain(id, peer_rec),
        };

        let forward = match chain.route(&conn) {
            Routing::Forward { forward, .. } => forward,
            Routing::NoRoute => {
                if is_tls {
                    send_alert(&mut stream, meter.traffic(), TlsAlert::UnrecognizedName).await;
                }
                return Err(Refusal::NoRoute);
            }
            Routing::Reject { plugin, reject } => {
                if let (true, Some(alert)) = (is_tls, reject.alert) {
                    send_alert(&mut stream, meter.traffic(), alert).await;
                }
                return Err(Refusal::Rejected {
                    plugin,
                    reason: reject.reason,
                });
            }
        };
        if forward.tls_mode != TlsMode::Passthrough && is_tls {
            // Termination lands with the HTTP issue; refusing is better than
            // silently passing ciphertext to a backend expecting plaintext.
            send_alert(&mut stream, meter.traffic(), TlsAlert::InternalError).await;
            return Err(Refusal::Unsupported("tls termination"));
        }
        guard
            .enter_route(
                &forward.route,
                forward.limits.max_connections,
                forward.limits.max_connections_per_ip,
            )
            .map_err(|hit| Refusal::RouteLimit(format!("{hit:?}")))?;
        meter.routed(&forward.route);
        let first = forward
            .targets
            .first()
            .cloned()
            .unwrap_or_else(|| turnout_plugin_sdk::Target::new("", 0));
        let policy = chain.policy(
            &conn,
            &Routed::new(forward.route.clone(), first, forward.tls_mode),
            &settings.policy_for(is_tls),
        );

        let (mut backend, target) =
            super::connect::connect_any(&forward.targets, settings.connect_timeout)
                .await
                .map_err(|e| Refusal::Backend(e.to_string()))?;
        meter.relaying(target);
        let keep_alive = policy.tcp_keep_alive.map(Duration::from_millis);
        super::socket::apply(
            &stream,
            inherited,
            super::socket::Inherited {
                no_delay: settings.no_delay,
                keep_alive,
            },
        );
        let _ = backend.set_nodelay(policy.no_delay);
        if let Some(idle) = keep_alive {
            super::socket::keepalive(&backend, idle);
        }
        let header = match forward.proxy_protocol {
            ProxyProtocol::None => Vec::new(),
            ProxyProtocol::V1 => proxy_protocol::encode_v1(client, local),
            ProxyProtocol::V2 => proxy_protocol::encode_v2(client, local),
        };
        let traffic = meter.traffic();
        // The peeked bytes crossed the client socket: they count as "in".
        traffic.count_in(buf.len() as u64);
        peek_counted = true;
        let mut first_bytes = header;
        first_bytes.extend_from_slice(&buf);
        // Neither is needed again: an idle relay should hold no buffers.
        buf = Vec::new();
        if !first_bytes.is_empty() {
            backend
                .write_all(&first_bytes)
                .await
                .map_err(|e| Refusal::Backend(format!("{target}: {e}")))?;
        }
        drop(first_bytes);
        let timers = Timers {
            inactivity: policy.inactivity_timeout.map(Duration::from_millis),
            max_lifetime: policy.max_lifetime.map(Duration::from_millis),
            half_open_grace: Duration::from_millis(policy.half_open_grace),
            stuck: policy.stuck_timeout.map(Duration::from_millis),
        };
        Ok(Ready {
            backend,
            target,
            conn,
            route: forward.route,
            timers,
        })
    }
    .await;
    match prepared {
        Ok(ready) => Some(Relaying {
            stream,
            backend: ready.backend,
            meter,
            _guard: guard,
            proxy,
            chain,
            conn: ready.conn,
            route: ready.route,
            target: ready.target,
            timers: ready.timers,
            client,
            sni,
            id,
            started,
        }),
        Err(refusal) => {
            if proxy_phase_done && !peek_counted {
                meter.traffic().count_in(buf.len() as u64);
            }
            meter.refused(&refusal);
            tracing::info!(
                conn = id, client = %client, sni = sni.as_deref().unwrap_or("-"),
                duration_ms = started.elapsed().as_millis(),
                reason = refusal.label(), detail = ?refusal, "refused"
            );
            None
        }
    }
}

/// What the relay needs from the phase before it.
struct Ready {
    backend: TcpStream,
    target: SocketAddr,
    conn: Connection,
    route: String,
    timers: Timers,
}

/// A connection being relayed: what its task holds for as long as it
/// lives, so only what the relay, `on-idle` and the closing log need.
struct Relaying {
    // Fields drop in this order: the sockets close, then the metrics
    // handle settles, then the limit counters are released (so once the
    // tracker says no connection is left, the metrics have settled too).
    stream: TcpStream,
    backend: TcpStream,
    meter: crate::metrics::ConnHandle,
    /// Held for its drop: releases the limit counters.
    _guard: crate::limits::ClientGuard,
    proxy: Arc<Proxy>,
    chain: Arc<Chain>,
    /// For `on-idle`.
    conn: Connection,
    route: String,
    target: SocketAddr,
    timers: Timers,
    client: SocketAddr,
    sni: Option<String>,
    id: u64,
    started: Instant,
}

impl Relaying {
    /// Relays until the connection ends, then logs how it ended. (`fn` +
    /// `async move`, using `self`'s fields in place: see [`handle`].)
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps a second copy of its arguments"
    )]
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            // Through `this`, the block captures all of `self` (a field
            // it never names, the limit guard, would otherwise be dropped
            // before the relay starts).
            let this = &mut self;
            let traffic = this.meter.traffic();
            let (chain, conn, route, started) =
                (&this.chain, &this.conn, &this.route, this.started);
            let on_idle = |idle: Duration| {
                let stats = IdleStats::new(
                    route.clone(),
                    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
                    traffic.bytes_in.load(Ordering::Relaxed),
                    traffic.bytes_out.load(Ordering::Relaxed),
                );
                match chain.on_idle(conn, &stats) {
                    IdleDecision::Extend(ms) => IdleVerdict::Extend(Duration::from_millis(ms)),
                    IdleDecision::Close | IdleDecision::Pass => IdleVerdict::Close,
                }
            };
            let mut stop = this.proxy.stop.subscribe();
            let stop = std::pin::pin!(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            let reason = relay::relay(
                &mut this.stream,
                &mut this.backend,
                this.timers,
                traffic,
                started,
                on_idle,
                stop,
            )
            .await;
            tracing::info!(
                conn = this.id, client = %this.client, sni = this.sni.as_deref().unwrap_or("-"),
                route = %this.route, target = %this.target,
                bytes_in = traffic.bytes_in.load(Ordering::Relaxed),
                bytes_out = traffic.bytes_out.load(Ordering::Relaxed),
                duration_ms = started.elapsed().as_millis(), reason = reason.as_str(), "closed"
            );
        }
    }
}

impl Settings {
    /// The policy the host applies when no plugin answers `policy`.
    pub fn policy_for(&self, tls: bool) -> turnout_plugin_sdk::Policy {
        let mut p = self.default_policy.clone();
        if tls {
            p.half_open_grace = p.half_open_grace.max(300_000);
            p.stuck_timeout = p.stuck_timeout.map(|s| s.max(300_000));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::limits::ConnectionTracker;
    use crate::metrics::Metrics;
    use crate::plugins::{NoCounters, PluginSet, PluginSettings, Runtime, RuntimeConfig};

    /// Every idle connection is one task holding this future: its size is
    /// most of a connection's memory besides the sockets (the load bench's
    /// RSS per idle connection). A guard against it growing unnoticed.
    #[tokio::test]
    async fn the_connection_future_stays_small() {
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: None,
            pooling: false,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let set = PluginSet::load(
            runtime,
            PluginSettings::default(),
            Vec::new(),
            Arc::new(NoCounters),
        )
        .unwrap();
        let proxy = super::super::Proxy::new(
            super::Settings::default(),
            set,
            ConnectionTracker::new(),
            Metrics::new(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(local).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let fut = super::handle(
            proxy,
            super::Accepted {
                stream,
                peer,
                local,
                tls_port: true,
                inherited: super::super::socket::Inherited::default(),
                worker: 0,
            },
        );
        let size = std::mem::size_of_val(&fut);
        eprintln!("connection future: {size} bytes");
        // 2 488 bytes before the pre-relay phase moved to its own
        // allocation; 1 488 after.
        assert!(size <= 1600, "the connection future grew to {size} bytes");
    }
}
