//! Scale-out: several instances behind one address sharing what a single
//! process would keep in memory — plugin key-value state, the connection
//! rate per client IP, ACME's account, certificates, order locks and
//! HTTP-01 answers — through one Redis (`cluster` in the config).
//!
//! * `client.rs` — the connection, on a thread of its own; every call
//!   bounded by a timeout;
//! * `health.rs` — up / down, logged once per transition, counted, and
//!   the round-trip histogram;
//! * `kv.rs` — the plugin key-value store ([`crate::plugins::SharedKv`]);
//! * `rate.rs` — new connections per client IP over 60 s, cluster-wide;
//! * `acme.rs` — ACME's store, order lock and HTTP-01 answers;
//! * this file — [`Cluster`]: start, the supervisor (connect, heartbeat,
//!   reconnect) and what the admin API shows.
//!
//! The store is never required: until it answers, and whenever it stops,
//! every caller falls back to its local state at once (nothing is sent
//! while it is down) and the supervisor reconnects every second.
//!
//! Above `plugins` and `acme` (it implements their store traits); `proxy`,
//! `admin` and `app` ask it.

mod acme;
mod client;
mod health;
mod kv;
mod rate;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};

pub use self::acme::RedisAcmeStore;
use self::client::Client;
pub use self::client::Unavailable;
use self::health::Health;
pub use self::health::State;
use crate::config::cluster::{ClusterConfig, redacted_url};

/// How long a call off the connection path (heartbeat, ACME, the admin
/// API) may take.
const SLOW_CALL: Duration = Duration::from_secs(2);
/// Reconnect attempts while the store is down.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// Instances listed by `/api/cluster` at most (a bounded scan).
const MAX_INSTANCES: usize = 1000;

/// One instance's heartbeat, as stored and as `/api/cluster` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub instance: String,
    pub version: String,
    pub pid: u32,
    /// Unix seconds.
    pub started: u64,
    /// Unix milliseconds of its last heartbeat.
    pub seen: u64,
}

/// What `/api/stats`, `/api/cluster` and `/metrics` show.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub instance: String,
    pub redis: String,
    pub prefix: String,
    pub state: State,
    /// Round trips of answered calls (µs): count, p50, p99.
    pub round_trips: u64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub round_trip_sum_us: u64,
    pub round_trip_histogram: crate::metrics::HistogramSnapshot,
    pub errors: u64,
    pub fallbacks: u64,
    pub went_up: u64,
    pub went_down: u64,
    pub last_error: Option<String>,
    /// Instances seen by the last heartbeat (this one included).
    pub instances_seen: u64,
}

/// The shared store of one process.
#[derive(Debug)]
pub struct Cluster {
    config: ClusterConfig,
    client: Client,
    health: Arc<Health>,
    started: u64,
    instances_seen: std::sync::atomic::AtomicU64,
}

/// Why the cluster store could not be set up at all (Redis being down is
/// not one: that is served locally and retried).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.redis: {0}")]
    Url(String),
    #[error("cluster: cannot start its thread: {0}")]
    Thread(#[from] std::io::Error),
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Cluster {
    /// Starts the cluster thread and its supervisor, which connects (and
    /// keeps reconnecting) in the background.
    pub fn start(config: ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let redis_client = redis::Client::open(config.redis.as_str())
            .map_err(|e| ClusterError::Url(format!("{}: {e}", redacted_url(&config.redis))))?;
        let health = Arc::new(Health::new());
        let client = Client::start(health.clone())?;
        let cluster = Arc::new(Cluster {
            config,
            client,
            health,
            started: unix_ms() / 1000,
            instances_seen: Default::default(),
        });
        let me = Arc::downgrade(&cluster);
        cluster
            .client
            .handle
            .spawn(async move { supervise(me, redis_client).await });
        Ok(cluster)
    }

    /// Waits until the store is up, at most `limit`: a start waits a
    /// moment so that the first connections already count cluster-wide,
    /// and goes on without it when Redis is not there.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            match self.health.state() {
                State::Up => return true,
                State::Down => return false,
                State::Connecting => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        false
    }

    /// The settings it runs with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The store's state now.
    pub fn state(&self) -> State {
        self.health.state()
    }

    /// A key under the configured prefix.
    fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}{parts}", self.config.prefix)
    }

    /// Counters, round trips and state.
    pub fn view(&self) -> ClusterView {
        let h = &self.health;
        ClusterView {
            instance: self.config.instance.clone(),
            redis: redacted_url(&self.config.redis),
            prefix: self.config.prefix.clone(),
            state: h.state(),
            round_trips: h.round_trip_us.count(),
            p50_us: h.round_trip_us.quantile(0.5),
            p99_us: h.round_trip_us.quantile(0.99),
            round_trip_sum_us: h.round_trip_us.sum(),
            round_trip_histogram: h.round_trip_us.snapshot(),
            errors: h.errors.load(Ordering::Relaxed),
            fallbacks: h.fallbacks.load(Ordering::Relaxed),
            went_up: h.went_up.load(Ordering::Relaxed),
            went_down: h.went_down.load(Ordering::Relaxed),
            last_error: h
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            instances_seen: self.instances_seen.load(Ordering::Relaxed),
        }
    }

    /// The instances whose heartbeat has not expired, by name.
    pub async fn instances(&self) -> Result<Vec<Instance>, Unavailable> {
        let pattern = self.key(format_args!("instance:*"));
        let mut list: Vec<Instance> = self
            .client
            .call(SLOW_CALL, move |mut c| async move {
                let mut keys: Vec<String> = Vec::new();
                let mut cursor = 0u64;
                // Bounded: a prefix shared with something else cannot make
                // this scan forever.
                for _ in 0..100 {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut c)
                        .await?;
                    keys.extend(batch);
                    cursor = next;
                    if cursor == 0 || keys.len() >= MAX_INSTANCES {
                        break;
                    }
                }
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                let values: Vec<Option<String>> = c.mget(&keys).await?;
                Ok(values
                    .into_iter()
                    .flatten()
                    .filter_map(|v| serde_json::from_str::<Instance>(&v).ok())
                    .collect())
            })
            .await?;
        list.sort_by(|a, b| a.instance.cmp(&b.instance));
        self.instances_seen
            .store(list.len() as u64, Ordering::Relaxed);
        Ok(list)
    }

    /// This instance's heartbeat, written with a TTL of three beats.
    async fn heartbeat(&self) -> Result<(), Unavailable> {
        let me = Instance {
            instance: self.config.instance.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            started: self.started,
            seen: unix_ms(),
        };
        let key = self.key(format_args!("instance:{}", self.config.instance));
        let value = serde_json::to_string(&me).unwrap_or_default();
        let ttl = u64::try_from((self.config.heartbeat * 3).as_millis()).unwrap_or(u64::MAX);
        self.client
            .call(SLOW_CALL, move |mut c| async move {
                c.pset_ex::<_, _, ()>(key, value, ttl).await
            })
            .await
    }

    /// Removes this instance's heartbeat (a clean stop), best effort.
    pub async fn leave(&self) {
        let key = self.key(format_args!("instance:{}", self.config.instance));
        let _ = self
            .client
            .call(
                SLOW_CALL,
                move |mut c| async move { c.del::<_, ()>(key).await },
            )
            .await;
    }
}

/// Connects, beats and reconnects until the [`Cluster`] is dropped.
async fn supervise(cluster: std::sync::Weak<Cluster>, client: redis::Client) {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SLOW_CALL))
        .set_response_timeout(Some(SLOW_CALL));
    loop {
        let Some(me) = cluster.upgrade() else { return };
        if !me.health.is_up() {
            let connected = async {
                let mut c = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                redis::cmd("PING").query_async::<()>(&mut c).await?;
                Ok::<_, redis::RedisError>(c)
            };
            match tokio::time::timeout(SLOW_CALL, connected).await {
                Ok(Ok(c)) => {
                    me.client.conn.store(Some(Arc::new(c)));
                    me.health.up();
                }
                Ok(Err(e)) => me.health.down(&Unavailable::Failed(e.to_string())),
                Err(_) => me.health.down(&Unavailable::Timeout(SLOW_CALL)),
            }
        }
        if me.health.is_up() {
            // A failed beat marks the store down (and wakes this loop).
            if me.heartbeat().await.is_ok() {
                let _ = me.instances().await;
            }
            let beat = me.config.heartbeat;
            let lost = me.health.clone();
            drop(me);
            tokio::select! {
                () = tokio::time::sleep(beat) => {}
                () = lost.lost.notified() => {}
            }
        } else {
            drop(me);
            tokio::time::sleep(RECONNECT_EVERY).await;
        }
    }
}
