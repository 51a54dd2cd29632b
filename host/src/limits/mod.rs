//! Connection counters: active per client IP, new per IP over the last
//! minute, active per route, and total.
//!
//! Every increment is owned by a guard whose `Drop` undoes it, so the
//! counters return to zero after any mix of successes, refusals, resets and
//! timeouts — there is no "remember to decrement" path to forget. The per-IP
//! table only holds IPs with an active connection or one accepted in the
//! last minute; everything else is swept, so memory follows the live client
//! set, not every client ever seen. It is also capped: when more distinct
//! clients than [`DEFAULT_IP_CAPACITY`] arrive within a minute, the idle
//! ones are forgotten first — their per-minute rate history is lost (the
//! rate limit is lenient for them), live connection counts never are.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use turnout_plugin_sdk::canonical_ip;

const SHARDS: usize = 16;
/// Distinct client IPs kept for the per-minute rate window.
pub const DEFAULT_IP_CAPACITY: usize = 16_384;
/// One-second buckets covering the rate window.
const WINDOW_SECS: usize = 60;

#[derive(Debug)]
struct IpEntry {
    active: u32,
    /// Connections accepted in each of the last 60 seconds; `buckets[s % 60]`
    /// belongs to second `s` only if `s` is within 60 s of `last_second`.
    buckets: [u16; WINDOW_SECS],
    last_second: u64,
    /// The count every instance together gave at the last accept
    /// (`cluster`), and the second it was noted.
    shared: Option<(u32, u64)>,
}

impl Default for IpEntry {
    fn default() -> Self {
        Self {
            active: 0,
            buckets: [0; WINDOW_SECS],
            last_second: 0,
            shared: None,
        }
    }
}

impl IpEntry {
    fn advance(&mut self, now_s: u64) {
        if now_s <= self.last_second {
            return;
        }
        let gap = (now_s - self.last_second).min(WINDOW_SECS as u64);
        for i in 1..=gap {
            self.buckets[((self.last_second + i) % WINDOW_SECS as u64) as usize] = 0;
        }
        self.last_second = now_s;
    }

    fn recent(&mut self, now_s: u64) -> u32 {
        self.advance(now_s);
        self.buckets.iter().map(|&b| u32::from(b)).sum()
    }

    /// [`IpEntry::recent`], or the cluster-wide count when one was noted
    /// within the last second and is higher.
    fn recent_anywhere(&mut self, now_s: u64) -> u32 {
        let local = self.recent(now_s);
        match self.shared {
            Some((n, at)) if now_s.saturating_sub(at) <= 1 => local.max(n),
            _ => local,
        }
    }

    fn idle(&mut self, now_s: u64) -> bool {
        self.active == 0 && self.recent(now_s) == 0
    }
}

/// The proxy's connection counters. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct ConnectionTracker {
    epoch: Instant,
    total: AtomicU32,
    ips: [Mutex<HashMap<IpAddr, IpEntry>>; SHARDS],
    routes: Mutex<HashMap<Arc<str>, u32>>,
    hasher: std::collections::hash_map::RandomState,
    ip_cap_per_shard: usize,
    /// Woken when the last active connection is released (drain, tests).
    idle: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a route slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLimitHit {
    /// The route's `maxConnections`.
    Route(u32),
    /// The route's per-IP limit.
    PerIp(u32),
}

impl Default for ConnectionTracker {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            total: AtomicU32::new(0),
            ips: std::array::from_fn(|_| Mutex::default()),
            routes: Mutex::default(),
            hasher: Default::default(),
            ip_cap_per_shard: DEFAULT_IP_CAPACITY / SHARDS,
            idle: tokio::sync::Notify::new(),
        }
    }
}

impl ConnectionTracker {
    /// An empty tracker.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An empty tracker keeping about `ip_capacity` client IPs.
    pub fn with_ip_capacity(ip_capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            ip_cap_per_shard: ip_capacity.div_ceil(SHARDS).max(1),
            ..Self::default()
        })
    }

    fn now_s(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, IpEntry>> {
        &self.ips[(self.hasher.hash_one(ip) as usize) % SHARDS]
    }

    /// Counts an accepted connection from `ip` (active and recent, and the
    /// total). Everything is undone when the guard drops.
    pub fn accept(self: &Arc<Self>, ip: IpAddr) -> ClientGuard {
        let ip = canonical_ip(ip);
        let now = self.now_s();
        {
            let mut shard = lock(self.shard(&ip));
            if shard.len() >= self.ip_cap_per_shard && !shard.contains_key(&ip) {
                shard.retain(|_, e| e.active > 0);
            }
            let e = shard.entry(ip).or_default();
            e.advance(now);
            e.active += 1;
            let b = &mut e.buckets[(now % WINDOW_SECS as u64) as usize];
            *b = b.saturating_add(1);
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        ClientGuard {
            tracker: self.clone(),
            ip,
        }
    }

    /// Notes the connections from `ip` in the last minute that every
    /// instance together counted (`cluster`): for about a second, plugins
    /// asking for the IP's recent connections get the higher of that and
    /// this process's own count. The IP must have an active connection
    /// here (its accept); otherwise nothing is noted.
    pub fn note_shared_recent(&self, ip: IpAddr, count: u32) {
        let ip = canonical_ip(ip);
        let now = self.now_s();
        if let Some(e) = lock(self.shard(&ip)).get_mut(&ip) {
            e.shared = Some((count, now));
        }
    }

    /// Active connections, whole proxy.
    pub fn total(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }

    /// Resolves once no connection is active (at once if none is).
    pub async fn wait_idle(&self) {
        loop {
            // Register before checking, so a release in between is not missed.
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.total() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Distinct IPs currently tracked (active or seen in the last minute).
    pub fn tracked_ips(&self) -> usize {
        self.ips.iter().map(|s| lock(s).len()).sum()
    }

    /// Routes with active connections.
    pub fn tracked_routes(&self) -> usize {
        lock(&self.routes).len()
    }

    /// Drops IPs with no active connection and none in the last minute.
    /// The host calls this periodically.
    pub fn sweep(&self) {
        let now = self.now_s();
        for shard in &self.ips {
            lock(shard).retain(|_, e| !e.idle(now));
        }
    }

    fn release_ip(&self, ip: IpAddr) {
        let now = self.now_s();
        let mut shard = lock(self.shard(&ip));
        if let Some(e) = shard.get_mut(&ip) {
            e.active = e.active.saturating_sub(1);
            if e.idle(now) {
                shard.remove(&ip);
            }
        }
        drop(shard);
        if self.total.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle.notify_waiters();
        }
    }

    fn release_route(&self, route: &Arc<str>) {
        let mut routes = lock(&self.routes);
        if let Some(n) = routes.get_mut(route) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                routes.remove(route);
            }
        }
    }
}

impl Counters for ConnectionTracker {
    fn active_for_ip(&self, ip: IpAddr) -> u32 {
        let ip = canonical_ip(ip);
        lock(self.shard(&ip)).get(&ip).map_or(0, |e| e.active)
    }

    fn active_for_route(&self, route: &str) -> u32 {
        lock(&self.routes).get(route).copied().unwrap_or(0)
    }

    fn active_total(&self) -> u32 {
        self.total()
    }

    fn recent_for_ip(&self, ip: IpAddr) -> u32 {
        let ip = canonical_ip(ip);
        let now = self.now_s();
        lock(self.shard(&ip))
            .get_mut(&ip)
            .map_or(0, |e| e.recent_anywhere(now))
    }
}

/// The host's live connection counters, read by plugins. [`ConnectionTracker`]
/// implements this; [`NoCounters`] answers zero everywhere.
pub trait Counters: Send + Sync {
    /// Active connections from `ip`.
    fn active_for_ip(&self, ip: IpAddr) -> u32;
    /// Active connections on `route`.
    fn active_for_route(&self, route: &str) -> u32;
    /// Active connections, whole proxy.
    fn active_total(&self) -> u32;
    /// Connections accepted from `ip` in the last minute.
    fn recent_for_ip(&self, ip: IpAddr) -> u32;
}

/// Counters that are always zero (tools, benches, `turnout check`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCounters;

impl Counters for NoCounters {
    fn active_for_ip(&self, _: IpAddr) -> u32 {
        0
    }
    fn active_for_route(&self, _: &str) -> u32 {
        0
    }
    fn active_total(&self) -> u32 {
        0
    }
    fn recent_for_ip(&self, _: IpAddr) -> u32 {
        0
    }
}

/// One accepted connection's share of the counters.
#[derive(Debug)]
pub struct ClientGuard {
    tracker: Arc<ConnectionTracker>,
    ip: IpAddr,
}

impl ClientGuard {
    /// Re-attributes the connection to another client IP (the one a trusted
    /// PROXY header carried). The socket's address stops counting.
    ///
    /// In place (`&mut self`), so the guard stays where its owner declared
    /// it and is released with the rest of the connection, not earlier.
    pub fn rebind(&mut self, ip: IpAddr) {
        // Count the new IP before releasing the old one: the total never
        // touches zero in between, or `wait_idle` (the drain) could see an
        // idle proxy while this connection is still open.
        let moved = self.tracker.accept(ip);
        drop(std::mem::replace(self, moved));
    }

    /// Takes a slot on `route` for this client, unless the route's limits
    /// are reached; the slot is held by the returned guard. A connection
    /// holds one per route it is on: one for an L4 connection, one per
    /// request in flight on HTTP (an HTTP/2 connection can be on several
    /// routes at once).
    pub fn enter_route(
        &self,
        route: &str,
        max_connections: u32,
        max_per_ip: u32,
    ) -> Result<RouteGuard, RouteLimitHit> {
        enter_route(&self.tracker, self.ip, route, max_connections, max_per_ip)
    }

    /// A handle that takes route slots for this client after the guard
    /// itself has moved on (HTTP: one slot per request in flight).
    pub fn route_entry(&self) -> RouteEntry {
        RouteEntry {
            tracker: self.tracker.clone(),
            ip: self.ip,
        }
    }

    /// The IP this connection counts against.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.tracker.release_ip(self.ip);
    }
}

/// A client's way onto routes, apart from its [`ClientGuard`] (which
/// stays with the connection's bookkeeping): see [`ClientGuard::route_entry`].
#[derive(Debug, Clone)]
pub struct RouteEntry {
    tracker: Arc<ConnectionTracker>,
    ip: IpAddr,
}

impl RouteEntry {
    /// As [`ClientGuard::enter_route`].
    pub fn enter_route(
        &self,
        route: &str,
        max_connections: u32,
        max_per_ip: u32,
    ) -> Result<RouteGuard, RouteLimitHit> {
        enter_route(&self.tracker, self.ip, route, max_connections, max_per_ip)
    }
}

fn enter_route(
    tracker: &Arc<ConnectionTracker>,
    ip: IpAddr,
    route: &str,
    max_connections: u32,
    max_per_ip: u32,
) -> Result<RouteGuard, RouteLimitHit> {
    if max_per_ip > 0 && tracker.active_for_ip(ip) > max_per_ip {
        // Note: per-IP counts are proxy-wide; a route's per-IP limit
        // caps this client's connections while one is on this route.
        return Err(RouteLimitHit::PerIp(max_per_ip));
    }
    let mut routes = lock(&tracker.routes);
    let key: Arc<str> = routes
        .get_key_value(route)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| Arc::from(route));
    let n = routes.entry(key.clone()).or_insert(0);
    if max_connections > 0 && *n >= max_connections {
        if *n == 0 {
            routes.remove(route);
        }
        return Err(RouteLimitHit::Route(max_connections));
    }
    *n += 1;
    drop(routes);
    Ok(RouteGuard {
        tracker: tracker.clone(),
        route: key,
    })
}

/// One slot on a route (see [`ClientGuard::enter_route`]), released on
/// drop. Held apart from the client's guard, and dropped before it, so that
/// once the total reaches zero no route is counted either.
#[derive(Debug)]
pub struct RouteGuard {
    tracker: Arc<ConnectionTracker>,
    route: Arc<str>,
}

impl RouteGuard {
    /// The route this slot is on.
    pub fn route(&self) -> &str {
        &self.route
    }
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.tracker.release_route(&self.route);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_count_raises_the_recent_count_for_a_second() {
        let t = ConnectionTracker::new();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let _g = t.accept(ip);
        assert_eq!(t.recent_for_ip(ip), 1);
        t.note_shared_recent(ip, 9);
        assert_eq!(t.recent_for_ip(ip), 9);
        // Lower than the local count: the local one stands.
        t.note_shared_recent(ip, 0);
        assert_eq!(t.recent_for_ip(ip), 1);
        // An IP with no entry is not created by a note.
        t.note_shared_recent("192.0.2.8".parse().unwrap(), 5);
        assert_eq!(t.recent_for_ip("192.0.2.8".parse().unwrap()), 0);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn guards_return_every_counter_to_zero() {
        let t = ConnectionTracker::new();
        let a = t.accept(ip("10.0.0.1"));
        let b = t.accept(ip("::ffff:10.0.0.1"));
        let c = t.accept(ip("10.0.0.2"));
        assert_eq!(
            t.active_for_ip(ip("10.0.0.1")),
            2,
            "mapped v6 is the same client"
        );
        assert_eq!(t.total(), 3);
        let a_api = a.enter_route("api", 0, 0).unwrap();
        let c_api = c.enter_route("api", 0, 0).unwrap();
        assert_eq!(t.active_for_route("api"), 2);
        // One client on two routes at once (two HTTP/2 requests).
        let c_web = c.enter_route("web", 0, 0).unwrap();
        assert_eq!(
            (t.active_for_route("api"), t.active_for_route("web")),
            (2, 1)
        );
        drop(c_api);
        assert_eq!(
            (t.active_for_route("api"), t.active_for_route("web")),
            (1, 1)
        );
        assert_eq!(c_web.route(), "web");
        drop((a_api, c_web));
        drop((a, b, c));
        assert_eq!(t.total(), 0);
        assert_eq!(t.active_for_ip(ip("10.0.0.1")), 0);
        assert_eq!(t.tracked_routes(), 0);
        assert_eq!(
            t.recent_for_ip(ip("10.0.0.1")),
            2,
            "the minute window remembers"
        );
    }

    #[test]
    fn route_limits_are_enforced_and_refusals_leave_nothing_behind() {
        let t = ConnectionTracker::new();
        let g1 = t.accept(ip("10.0.0.1"));
        let g2 = t.accept(ip("10.0.0.2"));
        let r1 = g1.enter_route("r", 1, 0).unwrap();
        assert_eq!(
            g2.enter_route("r", 1, 0).err(),
            Some(RouteLimitHit::Route(1))
        );
        assert_eq!(t.active_for_route("r"), 1);
        drop((r1, g1));
        let r2 = g2.enter_route("r", 1, 0).unwrap();
        let g3 = t.accept(ip("10.0.0.2"));
        assert_eq!(
            g3.enter_route("s", 0, 1).err(),
            Some(RouteLimitHit::PerIp(1))
        );
        drop((r2, g2, g3));
        assert_eq!((t.total(), t.tracked_routes()), (0, 0));
    }

    #[tokio::test]
    async fn wait_idle_wakes_when_the_last_connection_goes() {
        let t = ConnectionTracker::new();
        t.wait_idle().await; // nothing active: immediate
        let (a, b) = (t.accept(ip("10.0.0.1")), t.accept(ip("10.0.0.2")));
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.wait_idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one connection is still active");
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by the last release")
            .unwrap();
    }

    #[test]
    fn rebind_moves_the_connection_to_the_proxied_client() {
        let t = ConnectionTracker::new();
        let mut g = t.accept(ip("127.0.0.1"));
        g.rebind(ip("203.0.113.9"));
        assert_eq!(t.active_for_ip(ip("127.0.0.1")), 0);
        assert_eq!(t.active_for_ip(ip("203.0.113.9")), 1);
        assert_eq!(t.total(), 1);
        drop(g);
        assert_eq!(t.total(), 0);
    }

    #[test]
    fn the_ip_table_holds_only_live_or_recent_clients() {
        let t = ConnectionTracker::new();
        for i in 0..5_000u32 {
            drop(t.accept(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))));
        }
        assert_eq!(t.tracked_ips(), 5_000, "seen in the last minute");
        // Age every entry past the window instead of sleeping a minute.
        for shard in &t.ips {
            for e in super::lock(shard).values_mut() {
                e.last_second = 0;
                e.buckets = [0; WINDOW_SECS];
            }
        }
        t.sweep();
        assert_eq!(t.tracked_ips(), 0);
    }

    #[test]
    fn the_rate_window_slides() {
        let mut e = IpEntry::default();
        e.advance(10);
        e.buckets[10] = 3;
        assert_eq!(e.recent(69), 3);
        assert_eq!(e.recent(70), 0, "60 s later the bucket is reused");
    }

    #[test]
    fn the_ip_table_is_capped_and_keeps_live_clients() {
        let t = ConnectionTracker::with_ip_capacity(64);
        let live: Vec<ClientGuard> = (0..20u32)
            .map(|i| t.accept(IpAddr::from([10, 9, 0, i as u8])))
            .collect();
        for i in 0..50_000u32 {
            drop(t.accept(IpAddr::from((0x0a00_0000 + (i << 8)).to_be_bytes())));
            assert!(t.tracked_ips() <= 64 + 20 + SHARDS, "{}", t.tracked_ips());
        }
        for i in 0..20u32 {
            assert_eq!(t.active_for_ip(IpAddr::from([10, 9, 0, i as u8])), 1);
        }
        drop(live);
        assert_eq!(t.total(), 0);
    }
}
