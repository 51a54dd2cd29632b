//! HTTP requests (terminated TLS or plaintext): the total and its rates,
//! status classes per route, the answers the proxy made itself because
//! something failed, request durations, requests per domain, and the
//! upstream connection pool.
//!
//! [`Metrics::request`] is on the hot path: relaxed atomics and a
//! read-locked lookup in two bounded maps. The write lock is taken only the
//! first time a route or domain is seen. Domains come from clients, so that
//! table is capped: when it is full, domains idle for a minute are folded
//! into [`OTHER`] (at most one sweep a second), and what still does not fit
//! is counted there too.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use super::{LogHistogram, Metrics, OTHER, ROUTE_CAP, TABLE_WINDOW_SECS, lock};

/// One finished HTTP request (terminated TLS or plaintext), as counted.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord<'a> {
    /// Host without port, lower-case; "-" when the request had none.
    pub domain: &'a str,
    /// The route that answered (upstream's route, or "-" when none matched
    /// / a plugin answered directly).
    pub route: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// From request head received to response body finished (or dropped).
    pub duration: Duration,
    /// When the proxy made the answer itself because something failed: a
    /// short stable label (one of [`REQUEST_ERRORS`]; any other counts
    /// under [`OTHER`]); None for a normal answer (including plugin
    /// respond/redirect).
    pub error: Option<&'static str>,
}

/// The labels [`RequestRecord::error`] takes. A fixed list keeps the
/// lookup lock-free and lets every label show from the start, zeros
/// included, like the refusal reasons.
pub const REQUEST_ERRORS: [&str; 13] = [
    "no-route",
    "upstream-refused",
    "upstream-reset",
    "upstream-timeout",
    "route-limit",
    "body-too-large",
    "header-timeout",
    "bad-request",
    "uri-too-long",
    "headers-too-large",
    "plugin-failure",
    "misdirected",
    "websocket-disabled",
];

/// Status classes by index; a status outside 100..=599 counts under
/// [`OTHER`].
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", OTHER];
/// Distinct domains tracked (more are folded into [`OTHER`]).
const DOMAIN_CAP: usize = 1024;
/// The longest name DNS allows: a longer Host is not a domain, and keeping
/// its bytes would let a client grow the table by the header limit.
const DOMAIN_MAX_LEN: usize = 253;
/// A full domain table forgets domains idle this long.
const DOMAIN_LINGER_SECS: u64 = 60;

fn class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => CLASSES.len() - 1,
    }
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Requests by status class.
#[derive(Debug, Default)]
struct Classes([AtomicU64; CLASSES.len()]);

impl Classes {
    fn count(&self, status: u16) {
        self.0[class(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// The five classes, zeros included, then [`OTHER`] if it was used.
    fn view(&self) -> Vec<(&'static str, u64)> {
        CLASSES
            .iter()
            .zip(&self.0)
            .map(|(l, n)| (*l, n.load(Ordering::Relaxed)))
            .filter(|(l, n)| *l != OTHER || *n > 0)
            .collect()
    }
}

#[derive(Debug, Default)]
struct DomainCount {
    total: AtomicU64,
    /// Sampler tick of the last request.
    last_seen: AtomicU64,
}

impl DomainCount {
    fn hit(&self, tick: u64) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.last_seen.store(tick, Ordering::Relaxed);
    }
}

/// The counters, held by [`Metrics`].
#[derive(Debug)]
pub(super) struct HttpCounters {
    total: AtomicU64,
    classes: Classes,
    /// By [`REQUEST_ERRORS`] index; the last slot is [`OTHER`].
    errors: [AtomicU64; REQUEST_ERRORS.len() + 1],
    durations_us: LogHistogram,
    routes: RwLock<HashMap<Box<str>, Classes>>,
    domains: RwLock<HashMap<Box<str>, DomainCount>>,
    /// Tick of the last sweep of idle domains: one a tick at most, so a
    /// flood of made-up hosts cannot make every request scan the table.
    swept: AtomicU64,
    upstream_open: AtomicU64,
    upstream_opened: AtomicU64,
    /// `(tick, total)` at each 1 Hz sample, a minute of them.
    samples: Mutex<VecDeque<(u64, u64)>>,
}

impl Default for HttpCounters {
    fn default() -> Self {
        Self {
            total: AtomicU64::new(0),
            classes: Classes::default(),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            durations_us: LogHistogram::default(),
            routes: RwLock::default(),
            domains: RwLock::default(),
            swept: AtomicU64::new(u64::MAX),
            upstream_open: AtomicU64::new(0),
            upstream_opened: AtomicU64::new(0),
            // Nothing was counted before tick 0: a zero base makes the
            // first windows exact.
            samples: Mutex::new(VecDeque::from([(0, 0)])),
        }
    }
}

impl HttpCounters {
    fn count_route(&self, route: &str, status: u16) {
        if let Some(c) = read(&self.routes).get(route) {
            c.count(status);
            return;
        }
        let mut routes = write(&self.routes);
        let key = if routes.len() >= ROUTE_CAP && !routes.contains_key(route) {
            OTHER
        } else {
            route
        };
        routes.entry(key.into()).or_default().count(status);
    }

    fn count_domain(&self, domain: &str, tick: u64) {
        let domain = if domain.len() > DOMAIN_MAX_LEN {
            OTHER
        } else {
            domain
        };
        {
            let map = read(&self.domains);
            if let Some(d) = map.get(domain) {
                d.hit(tick);
                return;
            }
            // Full and already swept this tick: straight to OTHER, without
            // the write lock.
            if map.len() >= DOMAIN_CAP
                && self.swept.load(Ordering::Relaxed) == tick
                && let Some(d) = map.get(OTHER)
            {
                d.hit(tick);
                return;
            }
        }
        let mut map = write(&self.domains);
        if map.len() >= DOMAIN_CAP
            && !map.contains_key(domain)
            && self.swept.swap(tick, Ordering::Relaxed) != tick
        {
            sweep(&mut map, tick);
        }
        let key = if map.len() >= DOMAIN_CAP && !map.contains_key(domain) {
            OTHER
        } else {
            domain
        };
        map.entry(key.into()).or_default().hit(tick);
    }

    /// Records the total at `tick`; a tick not after the newest replaces it.
    pub(super) fn sample(&self, tick: u64) {
        let total = self.total.load(Ordering::Relaxed);
        let mut s = lock(&self.samples);
        if let Some(last) = s.back_mut()
            && tick <= last.0
        {
            last.1 = total;
            return;
        }
        if s.len() > TABLE_WINDOW_SECS {
            s.pop_front();
        }
        s.push_back((tick, total));
    }

    /// Requests per second over the last sampled second, and requests in
    /// the last minute: differences between samples of the total, never
    /// the total over the age.
    fn rates(&self) -> (f64, u64) {
        let s = lock(&self.samples);
        let Some(&(now, newest)) = s.back() else {
            return (0.0, 0);
        };
        // The newest sample at least `window` older (or the oldest kept):
        // (seconds between, requests between).
        let since = |window: u64| {
            let from = now.saturating_sub(window);
            let (t, n) = s
                .iter()
                .rev()
                .find(|(t, _)| *t <= from)
                .or_else(|| s.front())
                .copied()
                .unwrap_or((now, newest));
            (now.saturating_sub(t), newest.saturating_sub(n))
        };
        let (secs, n) = since(1);
        let per_second = if secs == 0 {
            0.0
        } else {
            n as f64 / secs as f64
        };
        let (secs, n) = since(TABLE_WINDOW_SECS as u64);
        // A stalled sampler can leave more than a minute between samples:
        // scale down to a minute rather than report the longer span.
        let per_minute = if secs > TABLE_WINDOW_SECS as u64 {
            (u128::from(n) * TABLE_WINDOW_SECS as u128 / u128::from(secs)) as u64
        } else {
            n
        };
        (per_second, per_minute)
    }
}

/// Forgets domains idle for [`DOMAIN_LINGER_SECS`], adding their counts to
/// [`OTHER`] so the rows still sum to the total.
fn sweep(map: &mut HashMap<Box<str>, DomainCount>, tick: u64) {
    let mut folded = 0u64;
    map.retain(|k, d| {
        let keep = &**k == OTHER
            || d.last_seen
                .load(Ordering::Relaxed)
                .saturating_add(DOMAIN_LINGER_SECS)
                > tick;
        if !keep {
            folded = folded.saturating_add(d.total.load(Ordering::Relaxed));
        }
        keep
    });
    if folded > 0 {
        map.entry(OTHER.into())
            .or_default()
            .total
            .fetch_add(folded, Ordering::Relaxed);
    }
}

/// One route's requests, as [`Metrics::requests`] reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRequests {
    /// The route name, or [`OTHER`] for routes beyond the cap.
    pub route: String,
    /// Requests answered on it.
    pub total: u64,
    /// By status class (`1xx` … `5xx`, zeros included; [`OTHER`] when a
    /// status was outside 100..=599).
    pub by_status_class: Vec<(&'static str, u64)>,
}

/// Request duration percentiles in milliseconds (µs precision, each the
/// upper bound of its histogram bucket); `None` before any request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DurationPercentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// A point-in-time copy of the HTTP counters, for the admin API.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestsView {
    /// Requests finished so far.
    pub total: u64,
    /// Requests per second over the last sampled second.
    pub per_second: f64,
    /// Requests in the last 60 s (from the 1 Hz samples).
    pub per_minute: u64,
    /// Requests by domain, busiest first (then by name); every tracked
    /// domain, at most 1 025 rows: callers show the first N.
    pub by_domain: Vec<(String, u64)>,
    /// Requests by route, by name.
    pub by_route: Vec<RouteRequests>,
    /// Requests by status class, as in [`RouteRequests::by_status_class`].
    pub by_status_class: Vec<(&'static str, u64)>,
    /// Answers the proxy made itself, by [`REQUEST_ERRORS`] label (zeros
    /// included), then [`OTHER`] if an unknown label was counted.
    pub errors: Vec<(&'static str, u64)>,
    /// Request durations.
    pub duration_ms: DurationPercentiles,
    /// Upstream connections open now.
    pub upstream_open: u64,
    /// Upstream connections opened so far.
    pub upstream_opened: u64,
}

impl Metrics {
    /// Counts one finished HTTP request.
    pub fn request(&self, r: &RequestRecord<'_>) {
        let h = &self.http;
        h.durations_us
            .record(u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX));
        h.total.fetch_add(1, Ordering::Relaxed);
        h.classes.count(r.status);
        h.count_route(r.route, r.status);
        h.count_domain(r.domain, self.now_tick());
        if let Some(label) = r.error {
            let i = REQUEST_ERRORS
                .iter()
                .position(|l| *l == label)
                .unwrap_or(REQUEST_ERRORS.len());
            h.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an upstream connection added to the pool.
    pub fn upstream_connection_opened(&self) {
        self.http.upstream_open.fetch_add(1, Ordering::Relaxed);
        self.http.upstream_opened.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an upstream connection closed. Never below zero: an extra
    /// close is ignored rather than wrapping the gauge.
    pub fn upstream_connection_closed(&self) {
        let _ = self
            .http
            .upstream_open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Durations (µs) of finished HTTP requests.
    pub fn request_durations_us(&self) -> &LogHistogram {
        &self.http.durations_us
    }

    /// The HTTP counters, for the admin API.
    pub fn requests(&self) -> RequestsView {
        let h = &self.http;
        let (per_second, per_minute) = h.rates();
        let mut by_domain: Vec<(String, u64)> = read(&h.domains)
            .iter()
            .map(|(k, d)| (k.to_string(), d.total.load(Ordering::Relaxed)))
            .collect();
        by_domain.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut by_route: Vec<RouteRequests> = read(&h.routes)
            .iter()
            .map(|(k, c)| {
                let by_status_class = c.view();
                RouteRequests {
                    route: k.to_string(),
                    total: by_status_class.iter().map(|(_, n)| n).sum(),
                    by_status_class,
                }
            })
            .collect();
        by_route.sort_by(|a, b| a.route.cmp(&b.route));
        let ms = |q: f64| h.durations_us.quantile(q).map(|us| us as f64 / 1000.0);
        RequestsView {
            total: h.total.load(Ordering::Relaxed),
            per_second,
            per_minute,
            by_domain,
            by_route,
            by_status_class: h.classes.view(),
            errors: REQUEST_ERRORS
                .iter()
                .chain([&OTHER])
                .zip(&h.errors)
                .map(|(l, n)| (*l, n.load(Ordering::Relaxed)))
                .filter(|(l, n)| *l != OTHER || *n > 0)
                .collect(),
            duration_ms: DurationPercentiles {
                p50: ms(0.50),
                p90: ms(0.90),
                p99: ms(0.99),
            },
            upstream_open: h.upstream_open.load(Ordering::Relaxed),
            upstream_opened: h.upstream_opened.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
