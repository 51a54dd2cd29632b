//! The L4 proxy: accept, admit, peek, route, connect, relay.
//!
//! [`Proxy::serve`] takes already-bound listeners (so tests bind
//! `127.0.0.1:0`) and a shutdown future; [`bind`] binds the union of the
//! ports the plugins declare.

mod conn;
mod connect;
mod listen;
mod pending;
pub mod relay;
mod serve_http;
mod socket;
mod terminate;
mod workers;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use turnout_plugin_sdk::Policy;
use turnout_plugin_sdk::matching::IpList;

pub use crate::metrics::Refusal;
pub use connect::{ConnectError, connect_any};
pub(crate) use listen::listening_socket;
pub use listen::{
    BindError, Listener, ListenerChange, ListenerPlan, bind, bind_ports, bind_with, declared_ports,
};
pub use workers::default_count as default_workers;

use crate::limits::ConnectionTracker;
use crate::metrics::Metrics;
use crate::plugins::PluginSet;
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
    /// `connectionRateLimitPerMinute` is set: with a cluster store, each
    /// new connection is counted there before `admit`.
    pub shared_connection_rate: bool,
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
            shared_connection_rate: config.limits.connection_rate_per_minute > 0,
        }
    }
}

impl Default for Settings {
    /// What an empty config file gives.
    fn default() -> Self {
        Self::from_config(&crate::config::Config::default())
    }
}

/// A proxy whose workers are accepting ([`Proxy::start`]).
pub struct Serving {
    accepting: watch::Sender<bool>,
    workers: workers::Workers,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving").finish_non_exhaustive()
    }
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
    /// The shared store, when `cluster` is configured (set once at start).
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// The listeners open now (a reconfigure opens and closes some).
    listeners: std::sync::Mutex<listen::Registry>,
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
            cluster: std::sync::OnceLock::new(),
            listeners: std::sync::Mutex::default(),
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

    /// Sets the shared store (once, at start).
    pub fn set_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The shared store, when `cluster` is configured.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
    }

    /// Replaces the settings for new connections (SIGHUP).
    pub fn reload(&self, mut settings: Settings) {
        // ACME keeps the challenge port it started with (its listener and
        // its orders are fixed until a restart).
        settings.acme_http_port = self.settings.load().acme_http_port;
        self.settings.store(Arc::new(settings));
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, listen::Registry> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds what listening on `ports` at every address in `addrs` adds to
    /// the listeners open now, changing nothing yet: a reconfigure calls
    /// this before it commits, so a port that cannot be bound refuses it.
    /// Plans must be applied (or dropped) one at a time, in order.
    pub fn plan_listeners(
        &self,
        addrs: &[IpAddr],
        ports: &BTreeMap<u16, bool>,
    ) -> Result<ListenerPlan, BindError> {
        self.registry().plan(addrs, ports)
    }

    /// Applies a plan: new addresses accept on every worker at once, removed
    /// ones stop accepting (connections already accepted there run on).
    /// Returns once every worker has closed the removed sockets (or after
    /// 5 s), so a caller told "removed" finds the port closed.
    pub async fn apply_listeners(&self, plan: ListenerPlan) -> ListenerChange {
        let (change, closing) = self.registry().apply(plan);
        for switch in closing {
            if tokio::time::timeout(Duration::from_secs(5), switch.closed())
                .await
                .is_err()
            {
                tracing::warn!("a worker has not closed a removed listener within 5 s");
            }
        }
        for a in &change.added {
            tracing::info!(listener = %a, "listening");
        }
        for a in &change.removed {
            tracing::info!(listener = %a, "no longer listening; its connections run on");
        }
        change
    }

    /// The drain has begun (SIGTERM): the workers no longer take new
    /// listeners, so a reconfigure must not open any.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// The addresses listening now.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.registry().addresses()
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
        let started = self.start(listeners);
        self.run(started, shutdown).await;
    }

    /// The first half of [`Proxy::serve`]: the workers start accepting on
    /// `listeners`. From here on, [`Proxy::plan_listeners`] sees them.
    pub fn start(self: &Arc<Self>, listeners: Vec<Listener>) -> Serving {
        let (accepting, accepting_rx) = watch::channel(true);
        let count = self.settings.load().workers.max(1);
        self.metrics.set_workers(count);
        let (workers, channels) = workers::Workers::start(self, count, &accepting_rx);
        self.registry().start(channels, listeners);
        Serving { accepting, workers }
    }

    /// The second half of [`Proxy::serve`]: runs until `shutdown`, then
    /// drains.
    pub async fn run(self: Arc<Self>, serving: Serving, shutdown: impl Future<Output = ()>) {
        let Serving {
            accepting: accepting_tx,
            mut workers,
        } = serving;
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
        // `send_replace`: `send` keeps the old value when no connection
        // listens yet, and one that subscribes later (a plaintext client
        // whose first bytes arrive during the drain) would never see it.
        self.draining.send_replace(true);
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
            self.stop.send_replace(true);
            // Relays close at once on `stop`; connections still waiting for
            // a ClientHello end when their worker finishes.
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait_idle()).await;
        }
        workers.finish().await;
        sweeper.abort();
    }
}

#[cfg(test)]
mod tests {
    use turnout_plugin_sdk::KeepAliveTreatment;

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
