//! One connection's share of the registry: its entry in the live list,
//! the byte counters its relay feeds ([`Traffic`], [`Meters`]), the handle
//! that settles everything when the connection ends ([`ConnHandle`]), and
//! the per-route handle ([`RouteMeter`]) a connection takes for each route
//! it uses — one for an L4 connection, one per request on HTTP, where a
//! single HTTP/2 connection can carry requests for many routes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{ByteCounter, Metrics, Refusal, Usage, lock};

/// Byte counters of one connection, readable while it runs (admin API).
/// Client-side bytes: what crossed the client socket.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes read from the client.
    pub bytes_in: AtomicU64,
    /// Bytes written to the client.
    pub bytes_out: AtomicU64,
    /// Milliseconds after `started` of the last byte either way.
    last_activity_ms: AtomicU64,
    /// Milliseconds after `started` of the first client byte not yet
    /// followed by any backend byte; 0 = nothing pending.
    unanswered_since_ms: AtomicU64,
    /// The global, client-IP and route counters fed alongside.
    meters: Meters,
}

impl Traffic {
    /// Counters that also feed `meters`.
    pub fn metered(meters: Meters) -> Self {
        Self {
            meters,
            ..Self::default()
        }
    }

    /// Counts bytes read from the client.
    #[inline]
    pub fn count_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
        self.meters.add_in(n);
    }

    /// Counts bytes written to the client.
    #[inline]
    pub fn count_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
        self.meters.add_out(n);
    }

    /// Milliseconds after the start of the last byte either way (0: none
    /// yet).
    pub fn last_activity_ms(&self) -> u64 {
        self.last_activity_ms.load(Ordering::Relaxed)
    }

    /// Milliseconds after the start (+1) of the first client byte not yet
    /// followed by any backend byte; 0 when nothing is pending.
    pub fn unanswered_since_ms(&self) -> u64 {
        self.unanswered_since_ms.load(Ordering::Relaxed)
    }

    /// Notes activity without counting bytes: a chunk of `from_client`
    /// plaintext on a stream whose bytes on the wire are counted below it
    /// (a terminated TLS stream counts its records, see
    /// [`TrafficHandle`]).
    #[inline]
    pub fn record_activity(&self, from_client: bool, now_ms: u64) {
        self.last_activity_ms.store(now_ms, Ordering::Relaxed);
        if from_client {
            let _ = self.unanswered_since_ms.compare_exchange(
                0,
                now_ms,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            self.unanswered_since_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Notes one chunk that crossed the proxy, `now_ms` after the start
    /// (never 0): the activity clock, the stuck clock, and the client-side
    /// "in" count for a chunk from the client. (Bytes to the client are
    /// counted by the writer, once written: [`Traffic::count_out`].)
    #[inline]
    pub fn record_chunk(&self, from_client: bool, n: usize, now_ms: u64) {
        self.record_activity(from_client, now_ms);
        if from_client {
            self.count_in(n as u64);
        }
    }
}

/// The byte meters one connection's relay feeds: its own counters, and the
/// global, client-IP and route ones once known.
#[derive(Debug, Default)]
pub struct Meters {
    global: Option<Arc<ByteCounter>>,
    ip: OnceLock<Arc<Usage>>,
    route: OnceLock<Arc<Usage>>,
}

impl Meters {
    /// Adds bytes read from the client.
    #[inline]
    pub fn add_in(&self, n: u64) {
        self.each(|c| c.bytes_in.fetch_add(n, Ordering::Relaxed));
    }

    /// Adds bytes written to the client.
    #[inline]
    pub fn add_out(&self, n: u64) {
        self.each(|c| c.bytes_out.fetch_add(n, Ordering::Relaxed));
    }

    #[inline]
    fn each(&self, f: impl Fn(&ByteCounter) -> u64) {
        if let Some(g) = &self.global {
            f(g);
        }
        if let Some(u) = self.ip.get() {
            f(&u.bytes);
        }
        if let Some(u) = self.route.get() {
            f(&u.bytes);
        }
    }
}

/// Descriptive state of a live connection (changes a few times in its life).
#[derive(Debug, Clone)]
struct ConnInfo {
    client: SocketAddr,
    sni: Option<String>,
    route: Option<Arc<str>>,
    target: Option<SocketAddr>,
    phase: &'static str,
}

/// A live connection in the registry.
#[derive(Debug)]
pub struct ConnEntry {
    id: u64,
    started: Instant,
    started_unix_ms: u64,
    info: Mutex<ConnInfo>,
    /// The worker thread it runs on, once known.
    worker: OnceLock<usize>,
    /// The relay's counters.
    pub traffic: Traffic,
}

/// One live connection, as `/api/connections` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnView {
    /// Connection id (as in the log lines).
    pub id: u64,
    /// The client (after a PROXY header, the real one).
    pub client: SocketAddr,
    /// SNI, for TLS.
    pub sni: Option<String>,
    /// The route, once routed.
    pub route: Option<String>,
    /// The backend, once connected.
    pub target: Option<SocketAddr>,
    /// `handshake` (before routing), `connecting`, `relaying`.
    pub phase: &'static str,
    /// Milliseconds since the Unix epoch when accepted.
    pub started_unix_ms: u64,
    /// Age in milliseconds.
    pub age_ms: u64,
    /// Bytes from the client.
    pub bytes_in: u64,
    /// Bytes to the client.
    pub bytes_out: u64,
    /// Milliseconds since the last byte either way.
    pub idle_ms: u64,
    /// The worker thread running it.
    pub worker: Option<usize>,
}

impl ConnEntry {
    /// A connection from `peer` just accepted; its bytes also count in
    /// `global`.
    pub(super) fn new(id: u64, peer: SocketAddr, global: Arc<ByteCounter>) -> Self {
        Self {
            id,
            started: Instant::now(),
            started_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            info: Mutex::new(ConnInfo {
                client: peer,
                sni: None,
                route: None,
                target: None,
                phase: "handshake",
            }),
            worker: OnceLock::new(),
            traffic: Traffic::metered(Meters {
                global: Some(global),
                ..Meters::default()
            }),
        }
    }

    pub(super) fn view(&self) -> ConnView {
        let info = lock(&self.info).clone();
        let age_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        ConnView {
            id: self.id,
            client: info.client,
            sni: info.sni,
            route: info.route.map(|r| r.to_string()),
            target: info.target,
            phase: info.phase,
            started_unix_ms: self.started_unix_ms,
            age_ms,
            bytes_in: self.traffic.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.traffic.bytes_out.load(Ordering::Relaxed),
            idle_ms: age_ms.saturating_sub(self.traffic.last_activity_ms()),
            worker: self.worker.get().copied(),
        }
    }
}

/// One connection's registration. Dropping it removes the connection from
/// the live list and settles the active counts and the close histograms,
/// on every path.
#[derive(Debug)]
pub struct ConnHandle {
    metrics: Arc<Metrics>,
    entry: Arc<ConnEntry>,
    relayed: bool,
}

/// A shared reference to one connection's [`Traffic`], for a stream
/// wrapper that counts the bytes on the wire itself.
#[derive(Debug, Clone)]
pub struct TrafficHandle(Arc<ConnEntry>);

impl std::ops::Deref for TrafficHandle {
    type Target = Traffic;

    fn deref(&self) -> &Traffic {
        &self.0.traffic
    }
}

impl ConnHandle {
    /// The connection's counters, shared.
    pub fn traffic_handle(&self) -> TrafficHandle {
        TrafficHandle(self.entry.clone())
    }

    pub(super) fn new(metrics: Arc<Metrics>, entry: Arc<ConnEntry>) -> Self {
        Self {
            metrics,
            entry,
            relayed: false,
        }
    }

    /// The connection runs on worker thread `worker` (see
    /// [`Metrics::set_workers`]). Later calls are ignored.
    pub fn worker(&self, worker: usize) {
        if self.entry.worker.set(worker).is_ok()
            && let Some(w) = self.metrics.worker_usage(worker)
        {
            w.accepted.fetch_add(1, Ordering::Relaxed);
            w.active.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The byte counters the relay feeds.
    pub fn traffic(&self) -> &Traffic {
        &self.entry.traffic
    }

    /// The client is known (after any PROXY header): counts the connection
    /// for its IP. Later calls are ignored.
    pub fn client(&self, client: SocketAddr) {
        let meters = &self.entry.traffic.meters;
        if meters.ip.get().is_some() {
            return;
        }
        lock(&self.entry.info).client = client;
        let u = self.metrics.ip_usage(client.ip());
        u.active.fetch_add(1, Ordering::Relaxed);
        u.total.fetch_add(1, Ordering::Relaxed);
        u.last_seen
            .store(self.metrics.now_tick(), Ordering::Relaxed);
        let _ = meters.ip.set(u);
    }

    /// The ClientHello named this server.
    pub fn sni(&self, sni: &str) {
        lock(&self.entry.info).sni = Some(sni.to_owned());
    }

    /// A plugin routed the connection to `route`.
    pub fn routed(&self, route: &str) {
        let meters = &self.entry.traffic.meters;
        if meters.route.get().is_some() {
            return;
        }
        let u = self.metrics.route_usage(route);
        u.active.fetch_add(1, Ordering::Relaxed);
        u.total.fetch_add(1, Ordering::Relaxed);
        let mut info = lock(&self.entry.info);
        info.route = Some(Arc::from(route));
        info.phase = "connecting";
        drop(info);
        let _ = meters.route.set(u);
    }

    /// The backend answered; bytes start to flow.
    pub fn relaying(&mut self, target: SocketAddr) {
        self.relayed = true;
        let mut info = lock(&self.entry.info);
        info.target = Some(target);
        info.phase = "relaying";
    }

    /// The connection was refused (counted under its reason).
    pub fn refused(&self, refusal: &Refusal) {
        let client = lock(&self.entry.info).client;
        self.client(client);
        self.metrics.count_refusal(refusal);
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        let m = &self.metrics;
        lock(m.conn_shard(self.entry.id)).remove(&self.entry.id);
        let tick = m.now_tick();
        let meters = &self.entry.traffic.meters;
        for u in [meters.ip.get(), meters.route.get()].into_iter().flatten() {
            u.active.fetch_sub(1, Ordering::Relaxed);
            u.last_seen.store(tick, Ordering::Relaxed);
        }
        if self.relayed {
            let t = &self.entry.traffic;
            m.durations_ms.record(
                u64::try_from(self.entry.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            );
            m.conn_bytes
                .record(t.bytes_in.load(Ordering::Relaxed) + t.bytes_out.load(Ordering::Relaxed));
        }
        if let Some(w) = self.entry.worker.get().and_then(|&w| m.worker_usage(w)) {
            w.active.fetch_sub(1, Ordering::Relaxed);
        }
        m.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One use of a route by a connection, beside the connection's own
/// handle: an HTTP request (several can be in flight on one HTTP/2
/// connection, each on its own route). Counts the route's active and
/// total figures while held, and feeds its byte counters; settles on drop.
#[derive(Debug)]
pub struct RouteMeter {
    metrics: Arc<Metrics>,
    usage: Arc<Usage>,
}

impl RouteMeter {
    /// Adds bytes read from the client for this use of the route.
    #[inline]
    pub fn add_in(&self, n: u64) {
        self.usage.bytes.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds bytes written to the client for this use of the route.
    #[inline]
    pub fn add_out(&self, n: u64) {
        self.usage.bytes.bytes_out.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for RouteMeter {
    fn drop(&mut self) {
        self.usage.active.fetch_sub(1, Ordering::Relaxed);
        self.usage
            .last_seen
            .store(self.metrics.now_tick(), Ordering::Relaxed);
    }
}

impl ConnHandle {
    /// Counts one use of `route` (an HTTP request), held by the returned
    /// meter; independent of [`ConnHandle::routed`], which an L4
    /// connection calls once for the route of all its bytes.
    pub fn route_meter(&self, route: &str) -> RouteMeter {
        let usage = self.metrics.route_usage(route);
        usage.active.fetch_add(1, Ordering::Relaxed);
        usage.total.fetch_add(1, Ordering::Relaxed);
        RouteMeter {
            metrics: self.metrics.clone(),
            usage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Metrics;

    #[test]
    fn route_meters_count_each_use_and_settle_on_drop() {
        let m = Metrics::new();
        let conn = m.open(1, "192.0.2.1:1".parse().unwrap());
        let a = conn.route_meter("api");
        let b = conn.route_meter("api");
        let c = conn.route_meter("web");
        a.add_in(10);
        c.add_out(5);
        let view = |name: &str| m.routes().into_iter().find(|r| r.0 == name).unwrap().1;
        assert_eq!((view("api").active, view("api").total), (2, 2));
        assert_eq!(view("api").bytes_in, 10);
        assert_eq!(view("web").bytes_out, 5);
        drop((a, c));
        assert_eq!((view("api").active, view("web").active), (1, 0));
        drop(b);
        assert_eq!(view("api").active, 0);
        assert_eq!(view("api").total, 2);
    }
}
