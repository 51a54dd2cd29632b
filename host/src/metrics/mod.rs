//! What the proxy is doing, for the admin API: connection and byte
//! counters, throughput windows, per-route and per-client tables, refusals
//! by reason, connection-duration and size percentiles, the live
//! connection list, HTTP requests (`http.rs`) and WebSockets
//! (`websocket.rs`).
//!
//! Collection is atomics on the hot path: a relay adds each chunk to its
//! connection, its client IP, its route and the global counters (four
//! relaxed adds per read, never a lock). Locks are taken once per
//! connection (register, route, close) and by the 1 Hz sampler. The
//! per-IP and per-route tables are bounded: an IP stays only while it has
//! a connection or for a minute after, and a table at its cap first drops
//! every idle entry.

mod config;
mod conn;
mod histogram;
mod http;
mod refusal;
mod series;
mod throttle;
mod tls;
mod usage;
mod websocket;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Instant;

pub use config::{ChangeResult, ChangeSource};
pub use conn::{ConnEntry, ConnHandle, ConnView, Meters, RouteMeter, Traffic, TrafficHandle};
pub use histogram::{HistogramSnapshot, LogHistogram};
pub use http::{DurationPercentiles, REQUEST_ERRORS, RequestRecord, RequestsView, RouteRequests};
pub use refusal::{PLUGIN_FAILURE, Refusal};
pub use series::{Rate, Sample, Series};
pub use throttle::LogThrottle;
pub use tls::Handshake;
use turnout_plugin_sdk::canonical_ip;
pub use usage::{ByteCounter, Usage, UsageView};
pub use websocket::{WEBSOCKET_CLOSES, WebSocketView};

const SHARDS: usize = 16;
/// Global throughput history: an hour of 1 Hz samples (+1 for the base).
pub const HISTORY_SECS: usize = 3600;
/// Per-route and per-IP throughput windows go up to a minute.
const TABLE_WINDOW_SECS: usize = 60;
/// An idle client IP is forgotten this long after its last connection.
const IP_LINGER_SECS: u64 = 60;
/// Distinct route names tracked; more are counted under [`OTHER`].
const ROUTE_CAP: usize = 1024;
/// Distinct (plugin, reason) refusal pairs tracked; more under [`OTHER`].
const VERDICT_CAP: usize = 256;
/// The label for what falls beyond a table's cap.
pub const OTHER: &str = "(other)";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One worker thread's connections: how evenly the kernel spreads them.
#[derive(Debug, Default)]
struct WorkerUsage {
    accepted: AtomicU64,
    active: AtomicU64,
}

/// One worker thread's connections, as the admin API shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerCounts {
    /// Accepted since start.
    pub accepted: u64,
    /// Open now.
    pub active: u64,
}

/// The proxy's metrics registry. Shared as `Arc`.
#[derive(Debug)]
pub struct Metrics {
    epoch: Instant,
    /// The sampler's last tick (seconds since `epoch`).
    tick: AtomicU64,
    accepted: AtomicU64,
    active: AtomicU64,
    bytes: Arc<ByteCounter>,
    refusals: [AtomicU64; Refusal::LABELS.len()],
    verdicts: Mutex<HashMap<(String, String), u64>>,
    routes: RwLock<HashMap<Arc<str>, Arc<Usage>>>,
    ips: [Mutex<HashMap<IpAddr, Arc<Usage>>>; SHARDS],
    ip_cap_per_shard: usize,
    conns: [Mutex<HashMap<u64, Arc<ConnEntry>>>; SHARDS],
    hasher: std::collections::hash_map::RandomState,
    durations_ms: LogHistogram,
    conn_bytes: LogHistogram,
    global: Mutex<Series>,
    workers: OnceLock<Box<[WorkerUsage]>>,
    /// Handshakes and certificate reloads of terminated TLS (`tls.rs`).
    tls: tls::TlsCounters,
    /// HTTP requests and upstream connections (`http.rs`).
    http: http::HttpCounters,
    /// WebSockets the proxy speaks itself (`websocket.rs`).
    websocket: websocket::WebSocketCounters,
    /// Changes to the running configuration (`config.rs`).
    config: config::ConfigCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::with_ip_capacity(10_000)
    }
}

impl Metrics {
    /// A registry keeping at most about `ip_capacity` client IPs without a
    /// live connection (IPs with one are always kept).
    pub fn with_ip_capacity(ip_capacity: usize) -> Self {
        let mut global = Series::new(HISTORY_SECS + 1);
        global.push(Sample {
            tick: 0,
            bytes_in: 0,
            bytes_out: 0,
        });
        Self {
            epoch: Instant::now(),
            tick: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            active: AtomicU64::new(0),
            bytes: Arc::default(),
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            verdicts: Mutex::default(),
            routes: RwLock::default(),
            ips: std::array::from_fn(|_| Mutex::default()),
            ip_cap_per_shard: ip_capacity.div_ceil(SHARDS).max(1),
            conns: std::array::from_fn(|_| Mutex::default()),
            hasher: Default::default(),
            durations_ms: LogHistogram::default(),
            conn_bytes: LogHistogram::default(),
            global: Mutex::new(global),
            workers: OnceLock::new(),
            tls: tls::TlsCounters::default(),
            http: http::HttpCounters::default(),
            websocket: websocket::WebSocketCounters::default(),
            config: config::ConfigCounters::default(),
        }
    }

    /// How many worker threads there are; set once, when the proxy starts
    /// serving (later calls are ignored).
    pub fn set_workers(&self, count: usize) {
        let _ = self
            .workers
            .set((0..count).map(|_| WorkerUsage::default()).collect());
    }

    /// Per worker thread, in order: connections accepted and open now.
    pub fn workers(&self) -> Vec<WorkerCounts> {
        self.workers.get().map_or_else(Vec::new, |w| {
            w.iter()
                .map(|u| WorkerCounts {
                    accepted: u.accepted.load(Ordering::Relaxed),
                    active: u.active.load(Ordering::Relaxed),
                })
                .collect()
        })
    }

    fn worker_usage(&self, worker: usize) -> Option<&WorkerUsage> {
        self.workers.get().and_then(|w| w.get(worker))
    }

    /// A shared registry with the default bounds.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn now_tick(&self) -> u64 {
        self.tick.load(Ordering::Relaxed)
    }

    /// Registers an accepted connection; everything it counts is settled
    /// when the handle drops.
    pub fn open(self: &Arc<Self>, id: u64, peer: SocketAddr) -> ConnHandle {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(ConnEntry::new(id, peer, self.bytes.clone()));
        lock(self.conn_shard(id)).insert(id, entry.clone());
        ConnHandle::new(self.clone(), entry)
    }

    fn conn_shard(&self, id: u64) -> &Mutex<HashMap<u64, Arc<ConnEntry>>> {
        &self.conns[(id as usize) % SHARDS]
    }

    fn ip_shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, Arc<Usage>>> {
        &self.ips[(self.hasher.hash_one(ip) as usize) % SHARDS]
    }

    fn ip_usage(&self, ip: IpAddr) -> Arc<Usage> {
        let ip = canonical_ip(ip);
        let tick = self.now_tick();
        let mut shard = lock(self.ip_shard(&ip));
        if let Some(u) = shard.get(&ip) {
            return u.clone();
        }
        if shard.len() >= self.ip_cap_per_shard {
            // A flood of distinct clients: forget the idle ones now rather
            // than grow; only IPs with live connections are kept.
            shard.retain(|_, u| u.active.load(Ordering::Relaxed) > 0);
        }
        let u = Arc::new(Usage::new(tick));
        shard.insert(ip, u.clone());
        u
    }

    fn route_usage(&self, route: &str) -> Arc<Usage> {
        if let Some(u) = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(route)
        {
            return u.clone();
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let key: Arc<str> = if routes.len() >= ROUTE_CAP && !routes.contains_key(route) {
            Arc::from(OTHER)
        } else {
            Arc::from(route)
        };
        let tick = self.now_tick();
        routes
            .entry(key)
            .or_insert_with(|| Arc::new(Usage::new(tick)))
            .clone()
    }

    fn count_refusal(&self, refusal: &Refusal) {
        self.refusals[refusal.index()].fetch_add(1, Ordering::Relaxed);
        if let Some((plugin, reason)) = refusal.plugin_verdict() {
            let mut v = lock(&self.verdicts);
            let key = (plugin.to_owned(), reason.to_owned());
            let key = if v.len() >= VERDICT_CAP && !v.contains_key(&key) {
                (OTHER.to_owned(), OTHER.to_owned())
            } else {
                key
            };
            *v.entry(key).or_default() += 1;
        }
    }

    /// Takes the 1 Hz sample behind every throughput figure; every tenth
    /// call also forgets client IPs idle for a minute. The host calls this
    /// once a second.
    pub fn sample(&self) {
        let tick = self.epoch.elapsed().as_secs_f64().round() as u64;
        self.tick.store(tick, Ordering::Relaxed);
        lock(&self.global).push(Sample {
            tick,
            bytes_in: self.bytes.bytes_in(),
            bytes_out: self.bytes.bytes_out(),
        });
        for u in self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            u.sample(tick);
        }
        self.http.sample(tick);
        for shard in &self.ips {
            let shard = lock(shard);
            for u in shard.values() {
                u.sample(tick);
            }
        }
        if tick.is_multiple_of(10) {
            self.prune(tick);
        }
    }

    fn prune(&self, tick: u64) {
        for shard in &self.ips {
            lock(shard).retain(|_, u| {
                u.active.load(Ordering::Relaxed) > 0
                    || u.last_seen.load(Ordering::Relaxed) + IP_LINGER_SECS > tick
            });
        }
    }

    /// Client IPs in the per-IP table (live or seen in the last minute).
    pub fn tracked_ips(&self) -> usize {
        self.ips.iter().map(|s| lock(s).len()).sum()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now (from accept to close, refused ones included
    /// until they are closed).
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Bytes from and to clients, whole proxy.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes.bytes_in(), self.bytes.bytes_out())
    }

    /// Refusals by reason label (every label, zeros included).
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        Refusal::LABELS
            .iter()
            .zip(&self.refusals)
            .map(|(l, c)| (*l, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// Refusals of one reason label.
    pub fn refusal_count(&self, label: &str) -> u64 {
        Refusal::LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.refusals[i].load(Ordering::Relaxed))
    }

    /// Plugin denials and rejections by (plugin, reason).
    pub fn plugin_refusals(&self) -> Vec<((String, String), u64)> {
        let mut v: Vec<_> = lock(&self.verdicts)
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        v.sort();
        v
    }

    /// Throughput over the last `window` seconds (1 ..= 3600).
    pub fn rate(&self, window: u64) -> Rate {
        lock(&self.global).rate(window)
    }

    /// Per-second throughput for the last `seconds` seconds, oldest first,
    /// as (seconds since start, rate).
    pub fn history(&self, seconds: usize) -> Vec<(u64, Rate)> {
        lock(&self.global).history(seconds)
    }

    /// Every route seen, by name.
    pub fn routes(&self) -> Vec<(String, UsageView)> {
        let mut v: Vec<_> = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, u)| (k.to_string(), u.view()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The `n` client IPs with the most open connections (then the most
    /// bytes).
    pub fn top_ips(&self, n: usize) -> Vec<(IpAddr, UsageView)> {
        let mut all: Vec<(IpAddr, Arc<Usage>)> = self
            .ips
            .iter()
            .flat_map(|s| {
                lock(s)
                    .iter()
                    .map(|(ip, u)| (*ip, u.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let key = |u: &Usage| {
            (
                u.active.load(Ordering::Relaxed),
                u.bytes.bytes_in() + u.bytes.bytes_out(),
            )
        };
        all.sort_by(|a, b| key(&b.1).cmp(&key(&a.1)).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all.into_iter().map(|(ip, u)| (ip, u.view())).collect()
    }

    /// One client IP's counters, if it is in the table.
    pub fn ip(&self, ip: IpAddr) -> Option<UsageView> {
        let ip = canonical_ip(ip);
        lock(self.ip_shard(&ip)).get(&ip).map(|u| u.view())
    }

    /// Durations (ms) of relayed connections that have closed.
    pub fn durations_ms(&self) -> &LogHistogram {
        &self.durations_ms
    }

    /// Bytes (in + out) of relayed connections that have closed.
    pub fn connection_bytes(&self) -> &LogHistogram {
        &self.conn_bytes
    }

    /// Seconds since the registry was created.
    pub fn uptime(&self) -> std::time::Duration {
        self.epoch.elapsed()
    }

    /// The live connections, oldest first, at most `limit`.
    pub fn connections(&self, limit: usize) -> Vec<ConnView> {
        let entries: Vec<Arc<ConnEntry>> = self
            .conns
            .iter()
            .flat_map(|s| lock(s).values().cloned().collect::<Vec<_>>())
            .collect();
        let mut views: Vec<ConnView> = entries.iter().map(|e| e.view()).collect();
        views.sort_by_key(|v| v.id);
        views.truncate(limit);
        views
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_are_counted_by_worker_and_settle_on_drop() {
        let m = Metrics::new();
        m.set_workers(2);
        m.set_workers(5); // ignored: the count is fixed at start
        let a = m.open(1, addr("10.0.0.1:1"));
        a.worker(1);
        a.worker(0); // ignored: a connection does not move
        let b = m.open(2, addr("10.0.0.2:1"));
        b.worker(1);
        let stray = m.open(3, addr("10.0.0.3:1"));
        stray.worker(7); // no such worker: counted nowhere, harmless
        let counts = |m: &Metrics| -> Vec<(u64, u64)> {
            m.workers().iter().map(|w| (w.accepted, w.active)).collect()
        };
        assert_eq!(counts(&m), vec![(0, 0), (2, 2)]);
        assert_eq!(m.connections(10)[0].worker, Some(1));
        drop((a, stray));
        assert_eq!(counts(&m), vec![(0, 0), (2, 1)]);
        drop(b);
        assert_eq!(counts(&m), vec![(0, 0), (2, 0)]);
    }

    #[test]
    fn a_connection_counts_everywhere_and_settles_on_drop() {
        let m = Metrics::new();
        let mut c = m.open(1, addr("10.0.0.1:5000"));
        assert_eq!(m.connections(10).len(), 1);
        c.client(addr("192.0.2.7:4000"));
        c.sni("a.test");
        c.routed("web");
        c.relaying(addr("127.0.0.1:80"));
        c.traffic().count_in(100);
        c.traffic().count_out(7);
        let view = &m.connections(10)[0];
        assert_eq!(view.client, addr("192.0.2.7:4000"));
        assert_eq!(
            (view.sni.as_deref(), view.route.as_deref()),
            (Some("a.test"), Some("web"))
        );
        assert_eq!((view.phase, view.bytes_in), ("relaying", 100));
        let ip = m.ip("192.0.2.7".parse().unwrap()).unwrap();
        assert_eq!(
            (ip.active, ip.total, ip.bytes_in, ip.bytes_out),
            (1, 1, 100, 7)
        );
        assert_eq!(m.routes()[0].1.bytes_out, 7);
        assert_eq!(m.bytes(), (100, 7));
        drop(c);
        assert_eq!((m.active(), m.accepted()), (0, 1));
        assert!(m.connections(10).is_empty());
        assert_eq!(m.routes()[0].1.active, 0);
        assert_eq!(m.ip("192.0.2.7".parse().unwrap()).unwrap().active, 0);
        assert_eq!(m.durations_ms().count(), 1);
        assert_eq!(
            (m.connection_bytes().count(), m.connection_bytes().sum()),
            (1, 107)
        );
        // The proxy's own address never got a row.
        assert!(m.ip("10.0.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn the_ip_table_stays_bounded_under_many_distinct_clients() {
        let m = Arc::new(Metrics::with_ip_capacity(160));
        let live: Vec<ConnHandle> = (0..50u32)
            .map(|i| {
                let c = m.open(u64::from(i), addr(&format!("10.1.0.{i}:1")));
                c.client(addr(&format!("10.1.0.{i}:1")));
                c
            })
            .collect();
        for i in 0..50_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
            let c = m.open(1000 + u64::from(i), SocketAddr::new(ip.into(), 1));
            c.client(SocketAddr::new(ip.into(), 1));
            drop(c);
            assert!(m.tracked_ips() <= 160 + 50 + SHARDS, "{}", m.tracked_ips());
        }
        // Live clients are never dropped.
        for i in 0..50u32 {
            let v = m.ip(format!("10.1.0.{i}").parse().unwrap()).unwrap();
            assert_eq!(v.active, 1);
        }
        drop(live);
        assert_eq!(m.active(), 0);
    }

    #[test]
    fn idle_ips_are_forgotten_after_a_minute() {
        let m = Metrics::new();
        drop({
            let c = m.open(1, addr("192.0.2.1:1"));
            c.client(addr("192.0.2.1:1"));
            c
        });
        m.prune(30);
        assert_eq!(m.tracked_ips(), 1, "kept for the rate windows");
        m.prune(IP_LINGER_SECS + 1);
        assert_eq!(m.tracked_ips(), 0);
    }

    #[test]
    fn refusals_count_under_their_reason_and_plugin_verdicts_are_capped() {
        let m = Metrics::new();
        for i in 0..(VERDICT_CAP + 10) {
            let c = m.open(i as u64, addr("192.0.2.1:1"));
            c.refused(&Refusal::Denied {
                plugin: "guard".into(),
                reason: format!("r{i}"),
            });
        }
        m.open(9999, addr("192.0.2.1:1")).refused(&Refusal::NoRoute);
        assert_eq!(m.refusal_count("denied"), VERDICT_CAP as u64 + 10);
        assert_eq!(m.refusal_count("no-route"), 1);
        let v = m.plugin_refusals();
        assert_eq!(v.len(), VERDICT_CAP + 1);
        assert!(v.contains(&((OTHER.into(), OTHER.into()), 10)));
        assert_eq!(
            m.ip("192.0.2.1".parse().unwrap()).unwrap().total,
            VERDICT_CAP as u64 + 11
        );
    }

    #[test]
    fn route_names_beyond_the_cap_share_one_row() {
        let m = Metrics::new();
        for i in 0..(ROUTE_CAP + 5) {
            m.open(i as u64, addr("192.0.2.1:1"))
                .routed(&format!("r{i}"));
        }
        let routes = m.routes();
        assert_eq!(routes.len(), ROUTE_CAP + 1);
        assert_eq!(routes.iter().find(|r| r.0 == OTHER).unwrap().1.total, 5);
    }
}
