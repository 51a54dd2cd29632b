//! The L4 proxy: accept, admit, peek, route, connect, relay.
//!
//! [`Proxy::serve`] takes already-bound listeners (so tests bind
//! `127.0.0.1:0`) and a shutdown future; [`bind`] binds the union of the
//! ports the plugins declare.

mod conn;
mod connect;
mod pending;
pub mod relay;
mod serve_http;
mod socket;
mod terminate;
mod workers;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use turnout_plugin_sdk::Policy;
use turnout_plugin_sdk::matching::IpList;

pub use crate::metrics::Refusal;
pub use connect::{ConnectError, connect_any};
pub use workers::default_count as default_workers;

use crate::limits::ConnectionTracker;
use crate::metrics::Metrics;
use crate::plugins::{Chain, PluginSet};
use crate::tls::Terminator;

/// What the connection path needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time to receive a PROXY header and a complete ClientHello.
    pub initial_data_timeout: Duration,
    /// Time to connect to one target.
    pub connect_timeout: Duration,
    /// Bytes buffered before the backend is connected.
    pub max_pending_data: usize,
    /// Read PROXY headers from trusted sources.
    pub accept_proxy_protocol: bool,
    /// The trusted sources (also the peers allowed to extend an HTTP
    /// request's `X-Forwarded-For`).
    pub trusted_proxies: Arc<IpList>,
    /// Applied when no plugin answers `policy` (TLS connections get at
    /// least 5 min half-open grace and stuck detection).
    pub default_policy: Policy,
    /// TCP_NODELAY on client sockets.
    pub no_delay: bool,
    /// Drain time on shutdown.
    pub graceful_shutdown: Duration,
    /// Worker threads, each with its own runtime and its own copy of every
    /// listener (read when [`Proxy::serve`] starts; a reload cannot change
    /// it).
    pub workers: usize,
    /// The HTTP proxy's limits (`http`); its pool settings are read once
    /// per worker thread, when that worker first sends a request upstream.
    pub http: crate::config::http::HttpConfig,
    /// `acme.port` when HTTP-01 challenges are answered there: served as
    /// an HTTP port even when no route declares it.
    pub acme_http_port: Option<u16>,
}

impl Settings {
    /// The connection-path settings a config implies.
    pub fn from_config(config: &crate::config::Config) -> Settings {
        use turnout_plugin_sdk::KeepAliveTreatment as T;
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        // The fallback when no plugin answers `policy`: the same arithmetic
        // as the keepalive plugin, so removing it changes nothing.
        let ka = &config.keep_alive;
        let (inactivity, lifetime) = match ka.treatment {
            T::Standard => (
                Some(ms(config.timeouts.inactivity)),
                Some(ms(config.timeouts.max_lifetime)),
            ),
            T::Extended => (
                Some(ms(config.timeouts.inactivity).saturating_mul(ka.multiplier)),
                Some(ms(config.timeouts.extended_lifetime)),
            ),
            T::Immortal => (None, None),
        };
        let mut policy = Policy::new(inactivity);
        policy.keep_alive_treatment = ka.treatment;
        policy.max_lifetime = lifetime;
        policy.stuck_timeout = Some(60_000);
        policy.tcp_keep_alive = ka.tcp_keep_alive.then_some(ms(ka.tcp_keep_alive_delay));
        policy.no_delay = ka.no_delay;
        Settings {
            initial_data_timeout: config.timeouts.initial_data,
            connect_timeout: config.timeouts.connect,
            max_pending_data: config.limits.max_pending_data,
            accept_proxy_protocol: config.proxy_protocol.accept,
            trusted_proxies: Arc::new(config.proxy_protocol.trusted.clone()),
            default_policy: policy,
            no_delay: config.keep_alive.no_delay,
            graceful_shutdown: config.timeouts.graceful_shutdown,
            workers: config.workers.unwrap_or_else(default_workers),
            http: config.http,
            acme_http_port: config
                .acme
                .as_ref()
                .filter(|a| a.challenge == crate::config::acme::Challenge::Http01)
                .map(|a| a.port),
        }
    }
}

impl Default for Settings {
    /// What an empty config file gives.
    fn default() -> Self {
        Self::from_config(&crate::config::Config::default())
    }
}

/// A bound listener and whether clients on it speak TLS first.
#[derive(Debug)]
pub struct Listener {
    /// The socket.
    pub listener: TcpListener,
    /// Peek a ClientHello before routing.
    pub tls: bool,
}

/// The running proxy's shared state.
pub struct Proxy {
    settings: ArcSwap<Settings>,
    plugins: Arc<PluginSet>,
    tracker: Arc<ConnectionTracker>,
    ids: AtomicU64,
    /// `true` tells live relays to close (end of the drain).
    stop: watch::Sender<bool>,
    /// `true` once the drain starts: HTTP connections finish the requests
    /// in flight and close (keep-alive would otherwise hold the drain).
    draining: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    /// Certificates and settings of terminated routes (swapped on reload).
    tls: ArcSwap<Terminator>,
    /// ACME, when `acme` is configured (set once at start).
    acme: std::sync::OnceLock<Arc<crate::acme::Acme>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("settings", &self.settings.load())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy over these plugins, limit counters and metrics.
    pub fn new(
        settings: Settings,
        plugins: Arc<PluginSet>,
        tracker: Arc<ConnectionTracker>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings: ArcSwap::from_pointee(settings),
            plugins,
            tracker,
            ids: AtomicU64::new(1),
            stop: watch::channel(false).0,
            draining: watch::channel(false).0,
            metrics,
            tls: ArcSwap::from_pointee(Terminator::new(&crate::config::Config::default().tls).0),
            acme: std::sync::OnceLock::new(),
        })
    }

    /// Replaces the TLS termination settings and certificates for new
    /// connections (start, reload, a changed certificate file); live
    /// connections keep theirs.
    pub fn set_tls(&self, tls: Terminator) {
        self.tls.store(Arc::new(tls));
    }

    /// The TLS termination settings and certificates in use.
    pub fn tls(&self) -> Arc<Terminator> {
        self.tls.load_full()
    }

    /// Sets the ACME manager (once, at start).
    pub fn set_acme(&self, acme: Arc<crate::acme::Acme>) {
        let _ = self.acme.set(acme);
    }

    /// The ACME manager, when `acme` is configured.
    pub fn acme(&self) -> Option<&Arc<crate::acme::Acme>> {
        self.acme.get()
    }

    /// Replaces the settings for new connections (SIGHUP).
    pub fn reload(&self, mut settings: Settings) {
        // ACME keeps the challenge port it started with (its listener and
        // its orders are fixed until a restart).
        settings.acme_http_port = self.settings.load().acme_http_port;
        self.settings.store(Arc::new(settings));
    }

    /// The counters.
    pub fn tracker(&self) -> &Arc<ConnectionTracker> {
        &self.tracker
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Accepts on `listeners` until `shutdown` resolves, then stops
    /// accepting, waits up to the graceful-shutdown time for connections to
    /// finish, and closes the rest.
    ///
    /// Connections run on [`Settings::workers`] threads of their own (see
    /// `workers.rs`), not on the calling runtime, which keeps only the
    /// 1 Hz metrics sampler and the drain.
    pub async fn serve(
        self: Arc<Self>,
        listeners: Vec<Listener>,
        shutdown: impl Future<Output = ()>,
    ) {
        let (accepting_tx, accepting_rx) = watch::channel(true);
        let count = self.settings.load().workers.max(1);
        self.metrics.set_workers(count);
        let mut workers = workers::Workers::start(&self, listeners, count, &accepting_rx);
        let sweeper = tokio::spawn({
            let tracker = self.tracker.clone();
            let metrics = self.metrics.clone();
            async move {
                // 1 Hz: the metrics sample behind every throughput figure;
                // the limit counters' sweep every tenth tick.
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for n in 0u64.. {
                    tick.tick().await;
                    metrics.sample();
                    if n % 10 == 9 {
                        tracker.sweep();
                    }
                }
            }
        });
        shutdown.await;
        let _ = accepting_tx.send(false);
        let _ = self.draining.send(true);
        workers.stopped_accepting().await;
        let grace = self.settings.load().graceful_shutdown;
        tracing::info!(
            active = self.tracker.total(),
            grace_ms = grace.as_millis(),
            "draining"
        );
        let drained = tokio::time::timeout(grace, self.tracker.wait_idle()).await;
        if drained.is_err() {
            tracing::warn!(
                active = self.tracker.total(),
                "drain time over; closing the rest"
            );
            let _ = self.stop.send(true);
            // Relays close at once on `stop`; connections still waiting for
            // a ClientHello end when their worker finishes.
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait_idle()).await;
        }
        workers.finish().await;
        sweeper.abort();
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or host is out of
    // something; accepting again at once would spin.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

async fn accept_loop(
    proxy: Arc<Proxy>,
    l: Listener,
    worker: usize,
    mut accepting: watch::Receiver<bool>,
) {
    let local = match l.listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "listener has no local address");
            return;
        }
    };
    // The usual client-socket options, once on the listener (see
    // `socket::Inherited`); after a reload changes them, connections set
    // their own.
    let inherited = {
        let s = proxy.settings.load();
        socket::prepare_listener(
            &l.listener,
            socket::Inherited {
                no_delay: s.no_delay,
                keep_alive: s.default_policy.tcp_keep_alive.map(Duration::from_millis),
            },
        )
    };
    loop {
        tokio::select! {
            r = l.listener.accept() => match r {
                Ok((stream, peer)) => {
                    // A listener on a specific address accepts on that
                    // address: no getsockname per connection.
                    let local = if local.ip().is_unspecified() {
                        stream.local_addr().unwrap_or(local)
                    } else {
                        local
                    };
                    tokio::spawn(conn::handle(proxy.clone(), conn::Accepted { stream, peer, local, tls_port: l.tls, inherited, worker }));
                }
                Err(e) if is_resource_exhaustion(&e) => {
                    tracing::error!(listener = %local, error = %e, "accept failed: out of resources; backing off 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => tracing::warn!(listener = %local, error = %e, "accept failed"),
            },
            r = accepting.changed() => {
                if r.is_err() || !*accepting.borrow() {
                    return;
                }
            }
        }
    }
}

/// Every port the chain's plugins declare, and whether it is a TLS port
/// (declared in any plugin's `tls-ports` or `http-ports`).
pub fn declared_ports(chain: &Chain) -> BTreeMap<u16, bool> {
    let mut ports: BTreeMap<u16, bool> = BTreeMap::new();
    for p in chain.plugins() {
        let info = p.info();
        for r in &info.listen {
            for port in r.from..=r.to {
                // An HTTP port is read first too: a TLS record there goes
                // the TLS way (a plugin need not declare it twice).
                let tls = info.tls_ports.iter().any(|t| t.contains(port))
                    || info.http_ports.iter().any(|t| t.contains(port));
                *ports.entry(port).or_default() |= tls;
            }
        }
    }
    ports
}

/// Binds every port the chain's plugins declare on every address in
/// `addrs`.
pub async fn bind(addrs: &[IpAddr], chain: &Chain) -> Result<Vec<Listener>, BindError> {
    bind_with(addrs, chain, Vec::new()).await
}

/// [`bind`], using the caller's own listening sockets for the addresses
/// they are bound to (a test binds `127.0.0.1:0` and writes the port it got
/// into the config: no window in which another process takes the port).
/// A handed-over socket that no declared address matches is an error,
/// not silently closed.
pub async fn bind_with(
    addrs: &[IpAddr],
    chain: &Chain,
    given: Vec<std::net::TcpListener>,
) -> Result<Vec<Listener>, BindError> {
    bind_ports(addrs, &declared_ports(chain), given).await
}

/// [`bind_with`] for `ports` (port → clients speak TLS or HTTP first).
pub async fn bind_ports(
    addrs: &[IpAddr],
    ports: &BTreeMap<u16, bool>,
    mut given: Vec<std::net::TcpListener>,
) -> Result<Vec<Listener>, BindError> {
    let mut out = Vec::new();
    for ip in addrs {
        for (&port, &tls) in ports {
            let addr = SocketAddr::new(*ip, port);
            let own = given
                .iter()
                .position(|l| l.local_addr().ok() == Some(addr))
                .map(|i| given.swap_remove(i));
            let listener = match own {
                Some(l) => l
                    .set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(l)),
                None => listen(addr),
            }
            .map_err(|e| BindError { addr, source: e })?;
            out.push(Listener { listener, tls });
        }
    }
    if let Some(extra) = given.first() {
        let addr = extra
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
        return Err(BindError {
            addr,
            source: io::Error::other(
                "a listener was handed over for this address, but no route listens on it",
            ),
        });
    }
    Ok(out)
}

/// A listening socket on `addr`, in a `SO_REUSEPORT` group so that every
/// worker can have its own (see `workers.rs`). IPv6 sockets are IPv6-only,
/// so `bind: ["0.0.0.0", "::"]` gets both families instead of the second
/// bind failing with "address in use" (Linux makes `::` dual-stack by
/// default).
pub(crate) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    // `SO_REUSEPORT` would also let this bind join a group another process
    // of the same user listens on — a second proxy would quietly take half
    // the connections. A plain bind first fails with "address in use" as
    // it always did; it also resolves port 0.
    let probe = socket_for(addr, false)?;
    probe.bind(&addr.into())?;
    let addr = probe
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP address"))?;
    drop(probe);
    TcpListener::from_std(listening_socket(addr, true)?)
}

/// A bound, listening, non-blocking socket on `addr`.
pub(crate) fn listening_socket(
    addr: SocketAddr,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    let socket = socket_for(addr, reuse_port)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn socket_for(addr: SocketAddr, reuse_port: bool) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Restarts must not wait for TIME_WAIT sockets of the previous run.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}{}", hint(source, addr))]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The OS error.
    pub source: io::Error,
}

fn hint(e: &io::Error, addr: &SocketAddr) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            format!(
                " (another process is listening there; `ss -ltnp 'sport = :{}'` shows which)",
                addr.port()
            )
        }
        io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE: `setcap cap_net_bind_service=+ep $(which turnout)`, or use a port >= 1024)".to_owned()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use turnout_plugin_sdk::KeepAliveTreatment;

    /// `bind: ["0.0.0.0", "::"]` on one port: both bind, and an IPv6
    /// client reaches the IPv6 listener.
    #[tokio::test]
    async fn ipv4_and_ipv6_wildcards_bind_the_same_port() {
        let v4 = super::listen("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = super::listen(std::net::SocketAddr::new("::".parse().unwrap(), port))
            .expect("IPv6-only, so no clash with the IPv4 wildcard");
        let client = tokio::net::TcpStream::connect(("::1", port)).await.unwrap();
        let (_, peer) = v6.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    }

    #[test]
    fn the_fallback_policy_applies_the_keep_alive_treatment() {
        let mut config = crate::config::Config::default();
        let p = super::Settings::from_config(&config).default_policy;
        assert_eq!(p.keep_alive_treatment, KeepAliveTreatment::Extended);
        assert_eq!(p.inactivity_timeout, Some(14_400_000 * 6));
        assert_eq!(p.max_lifetime, Some(604_800_000));
        config.keep_alive.treatment = KeepAliveTreatment::Standard;
        let p = super::Settings::from_config(&config).default_policy;
        assert_eq!(
            (p.inactivity_timeout, p.max_lifetime),
            (Some(14_400_000), Some(86_400_000))
        );
        config.keep_alive.treatment = KeepAliveTreatment::Immortal;
        let p = super::Settings::from_config(&config).default_policy;
        assert_eq!((p.inactivity_timeout, p.max_lifetime), (None, None));
    }
}
