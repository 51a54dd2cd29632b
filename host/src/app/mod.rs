//! What `turnout run` and `turnout check` do, as a library: config file →
//! plugin runtime → listeners → proxy, with reload and drain. The binary
//! only parses arguments and wires signals to [`run`].

pub mod certs;
mod reconfigure;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::admin::{self, AdminState};
use crate::cluster::{Cluster, RedisAcmeStore};
use crate::config::{self, Config, ConfigErrors};
use crate::limits::ConnectionTracker;
use crate::metrics::Metrics;
use crate::plugins::{LoadError, PluginSet, PluginSettings, Runtime, RuntimeConfig};
use crate::proxy::{self, BindError, Proxy, Settings};

/// How long a start waits for the cluster store before serving without it.
const CLUSTER_CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config file has problems (all of them).
    #[error("{0}")]
    Config(ConfigErrors),
    /// Plugins failed to load (all of them).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Plugins(Vec<LoadError>),
    /// The plugin runtime could not start.
    #[error("{0}")]
    Runtime(LoadError),
    /// A listener could not be bound.
    #[error("{0}")]
    Bind(#[from] BindError),
    /// Certificates of terminated routes could not be loaded (all of
    /// them).
    #[error("{}", .0.join("\n"))]
    Certificates(Vec<String>),
    /// The cluster store could not be set up (a bad URL; Redis being
    /// down is not an error).
    #[error("{0}")]
    Cluster(String),
    /// No plugin declared a port to listen on.
    #[error(
        "no plugin declares a port to listen on: add routes with `match.ports`, or a plugin that listens"
    )]
    NoPorts,
}

/// The plugin settings a config implies. The embedded `routes` plugin gets
/// the route list and `defaults`, `guard` the global limits and
/// `defaults`, `keepalive` the global keep-alive options — unless `plugins.config.<name>` overrides
/// them; `dir` (from `--plugins`) overrides `plugins.dir`.
pub fn plugin_settings(config: &Config, dir: Option<PathBuf>) -> PluginSettings {
    let mut configs: std::collections::HashMap<String, String> = config
        .plugins
        .config
        .iter()
        .map(|(name, value)| (name.clone(), value.to_string()))
        .collect();
    configs
        .entry("keepalive".to_owned())
        .or_insert_with(|| config.keepalive_plugin_config().to_string());
    configs.entry("guard".to_owned()).or_insert_with(|| {
        serde_json::json!({
            "maxConnectionsPerIP": config.limits.max_connections_per_ip,
            "connectionRateLimitPerMinute": config.limits.connection_rate_per_minute,
            "maxConnections": config.limits.max_connections,
            "defaults": config.defaults,
        })
        .to_string()
    });
    configs.entry("routes".to_owned()).or_insert_with(|| {
        serde_json::json!({
            "routes": config.routes,
            "defaults": config.defaults,
            "sendProxyProtocol": config.proxy_protocol.send,
            "allowSessionTicket": config.allow_session_ticket,
        })
        .to_string()
    });
    PluginSettings {
        dir: dir.or_else(|| config.plugins.dir.clone()),
        order: config.plugins.order.clone(),
        configs,
        failure: config.plugins.failure.clone(),
        ..PluginSettings::default()
    }
}

/// The runtime settings a config implies.
pub fn runtime_config(config: &Config) -> RuntimeConfig {
    RuntimeConfig {
        call_deadline: config.plugins.deadline,
        epoch_tick: RuntimeConfig::tick_for(config.plugins.deadline),
        max_memory: config.plugins.memory_limit,
        ..RuntimeConfig::default()
    }
}

/// Loads the config and the plugins: what `turnout check` reports and what
/// `run` starts from.
pub fn prepare(
    path: &Path,
    plugins_dir: Option<PathBuf>,
    tracker: Arc<ConnectionTracker>,
) -> Result<(Config, Arc<PluginSet>), StartError> {
    let (config, _) = config::load_document(path).map_err(StartError::Config)?;
    let set = load_plugins(&config, plugins_dir, tracker, None)?;
    Ok((config, set))
}

fn load_plugins(
    config: &Config,
    plugins_dir: Option<PathBuf>,
    tracker: Arc<ConnectionTracker>,
    cluster: Option<&Arc<Cluster>>,
) -> Result<Arc<PluginSet>, StartError> {
    let runtime = Runtime::new(runtime_config(config)).map_err(StartError::Runtime)?;
    let settings = PluginSettings {
        shared_kv: cluster.map(Cluster::shared_kv),
        ..plugin_settings(config, plugins_dir)
    };
    PluginSet::load(runtime, settings, crate::plugins::embedded(), tracker)
        .map_err(StartError::Plugins)
}

/// The shared store, when `cluster` is configured: started, and given a
/// moment to connect so the first connections already count cluster-wide.
/// Redis being unreachable does not stop the start (it is retried, and
/// everything counts locally meanwhile).
async fn start_cluster(config: &Config) -> Result<Option<Arc<Cluster>>, StartError> {
    let Some(c) = &config.cluster else {
        return Ok(None);
    };
    let cluster = Cluster::start(c.clone()).map_err(|e| StartError::Cluster(e.to_string()))?;
    if !cluster.wait_connected(CLUSTER_CONNECT_WAIT).await {
        tracing::warn!(target: "turnout::cluster", redis = %crate::config::cluster::redacted_url(&c.redis),
            "cluster store not reachable at start: serving with local state, retrying every second");
    }
    Ok(Some(cluster))
}

/// Listening sockets the caller bound itself (tests bind `127.0.0.1:0`; a
/// supervisor may hand over its own): [`run`] uses each for the configured
/// address it is bound to instead of binding that address.
#[derive(Debug, Default)]
pub struct Bound {
    /// Listeners for the proxy's ports, matched by local address.
    pub listeners: Vec<std::net::TcpListener>,
    /// The admin API's listener, used when `admin` is configured.
    pub admin: Option<std::net::TcpListener>,
}

/// What [`run`] bound, handed to its `ready` callback.
#[derive(Debug, Clone)]
pub struct Started {
    /// The proxy's listeners.
    pub listeners: Vec<SocketAddr>,
    /// The admin API, when `admin` is configured.
    pub admin: Option<SocketAddr>,
    /// The metrics registry (what the admin API reports).
    pub metrics: Arc<Metrics>,
    /// The limit counters.
    pub tracker: Arc<ConnectionTracker>,
}

/// Runs the proxy until `shutdown` resolves; every message on `reload`
/// re-reads the config file (a broken file is logged and ignored), as the
/// admin API's configuration endpoints change it (`reconfigure.rs`).
/// `ready` is called once listening (and `/readyz` turns ready). `bound`
/// holds sockets the caller already bound ([`Bound`]; default: none).
pub async fn run(
    path: &Path,
    plugins_dir: Option<PathBuf>,
    bound: Bound,
    reload: tokio::sync::mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(Started),
) -> Result<(), StartError> {
    let tracker = ConnectionTracker::new();
    let metrics = Metrics::new();
    let (config, document) = config::load_document(path).map_err(StartError::Config)?;
    let cluster = start_cluster(&config).await?;
    let set = load_plugins(&config, plugins_dir, tracker.clone(), cluster.as_ref())?;
    for w in config.warnings() {
        tracing::warn!(key = %w.path, "{}", w.message);
    }
    let Bound {
        listeners: given,
        admin: given_admin,
    } = bound;
    let terminator = certs::load(&config.tls).map_err(|errors| {
        StartError::Certificates(errors.iter().map(ToString::to_string).collect())
    })?;
    let acme =
        match &config.acme {
            Some(a) => {
                let names = crate::acme::listed_names(&config.tls);
                let shared = cluster.clone();
                let acme =
                    crate::acme::Acme::new_over(a.clone(), &names, metrics.clone(), |disk| {
                        match shared {
                            Some(c) => Arc::new(RedisAcmeStore::new(c, disk)),
                            None => Arc::new(disk),
                        }
                    })
                    .map_err(|e| StartError::Certificates(vec![format!("acme: {e}")]))?;
                Some(acme)
            }
            None => None,
        };
    let acme_port = Settings::from_config(&config).acme_http_port;
    let ports = listen_ports(&set.chain(), acme_port);
    let listeners = proxy::bind_ports(&config.bind, &ports, given).await?;
    if listeners.is_empty() {
        return Err(StartError::NoPorts);
    }
    let addrs: Vec<_> = listeners
        .iter()
        .filter_map(|l| l.listener.local_addr().ok())
        .collect();
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut admin_task = None;
    let mut admin_addr = None;
    let mut admin_state = None;
    if let Some(a) = &config.admin {
        let listener = match given_admin {
            Some(l) => admin::adopt(l, a.listen)?,
            None => admin::bind(a.listen)?,
        };
        admin_addr = listener.local_addr().ok();
        let state = AdminState::new(metrics.clone(), set.clone(), tracker.clone(), a.top_ips);
        state.set_token(a.token.clone());
        if let Some(c) = &cluster {
            state.set_cluster(c.clone());
        }
        admin_state = Some(state.clone());
        admin_task = Some(tokio::spawn(admin::serve(listener, state, async move {
            let _ = admin_stopped.await;
        })));
        tracing::info!(listen = ?admin_addr, "admin API");
    }
    tracing::info!(listeners = ?addrs, plugins = set.chain().plugins().len(), "listening");
    let proxy = Proxy::new(
        Settings::from_config(&config),
        set.clone(),
        tracker.clone(),
        metrics.clone(),
    );
    proxy.set_tls(terminator);
    if let Some(c) = &cluster {
        proxy.set_cluster(c.clone());
    }
    if let Some(acme) = &acme {
        proxy.set_acme(acme.clone());
        // The listeners are bound: an ACME server's validation can connect.
        acme.start();
    }
    let (api_tx, api_rx) = tokio::sync::mpsc::channel(16);
    // The workers accept before any reconfigure can look at the listeners,
    // and both before `/readyz` says ready.
    let serving = proxy.start(listeners);
    if let Some(state) = &admin_state {
        state.set_tls(proxy.clone());
        state.set_config_owner(api_tx);
        state.set_ready(true);
    }
    ready(Started {
        listeners: addrs,
        admin: admin_addr,
        metrics,
        tracker,
    });
    // Draining: tell load balancers through `/readyz` first.
    let shutdown = {
        let admin_state = admin_state.clone();
        async move {
            shutdown.await;
            if let Some(state) = &admin_state {
                state.set_ready(false);
            }
        }
    };
    let watcher = tokio::spawn(set.clone().watch(config.plugins.poll_interval));
    let current_tls = certs::Current::new(config.tls.clone());
    let cert_watcher = tokio::spawn(certs::watch(proxy.clone(), current_tls.clone()));
    let reloader = tokio::spawn(
        reconfigure::Reconfigure {
            proxy: proxy.clone(),
            set: set.clone(),
            certs: current_tls,
            admin: admin_state.clone(),
            path: path.to_owned(),
            config,
            document,
            acme_port,
            version: 1,
        }
        .run(reload, api_rx),
    );
    proxy.clone().run(serving, shutdown).await;
    if let Some(acme) = &acme {
        acme.stop();
    }
    watcher.abort();
    cert_watcher.abort();
    reloader.abort();
    let _ = admin_stop.send(());
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    if let Some(c) = &cluster {
        // Off `/api/cluster` at once rather than when its heartbeat expires.
        c.leave().await;
    }
    Ok(())
}

/// The ports to listen on: every port a plugin declares, and `acme.port`
/// for HTTP-01 challenges (answered as HTTP even when no route uses it).
fn listen_ports(
    chain: &crate::plugins::Chain,
    acme_port: Option<u16>,
) -> std::collections::BTreeMap<u16, bool> {
    let mut ports = proxy::declared_ports(chain);
    if let Some(port) = acme_port {
        match ports.get(&port) {
            Some(false) => tracing::warn!(
                port,
                "acme.port is a port whose routes are plain TCP: HTTP-01 challenges cannot be answered there"
            ),
            _ => {
                ports.insert(port, true);
            }
        }
    }
    ports
}
