//! The test harness: run a plugin's hooks against a fake host the test
//! controls, natively or (through `turnout::testing`) as the compiled `.wasm`.
//!
//! A test is written once against [`Harness`] and run twice:
//!
//! ```
//! use std::sync::Arc;
//! use turnout_plugin_sdk::prelude::*;
//! use turnout_plugin_sdk::testing::{tls_conn, FakeHost, Harness};
//!
//! struct Hello;
//! impl Plugin for Hello {
//!     fn init(_config: &str) -> Result<Self, InitError> { Ok(Hello) }
//!     fn info(&self) -> PluginInfo { PluginInfo::new("hello", "0.1.0").hooks(Hooks::ROUTE) }
//!     fn route(&self, conn: &Connection) -> RouteDecision {
//!         // Count connections per SNI in the shared store.
//!         let n = host::kv_increment(conn.sni().unwrap_or("-"), 1, None).unwrap_or(0);
//!         RouteDecision::Forward(Forward::new(format!("hello-{n}"), vec![Target::new("127.0.0.1", 8080)]))
//!     }
//! }
//!
//! fn cases(h: &mut Harness) {
//!     let conn = tls_conn("10.0.0.1:5000", 443, "a.example");
//!     let RouteDecision::Forward(f) = h.route(&conn) else { panic!("expected forward") };
//!     assert_eq!(f.route, "hello-1");
//!     assert_eq!(h.host().kv().get("a.example", 0), Some(1i64.to_le_bytes().to_vec()));
//! }
//!
//! // Natively:
//! cases(&mut Harness::native::<Hello>("{}").unwrap());
//! // Against the .wasm (in the plugin crate's tests, with `turnout` as a dev-dependency):
//! //   cases(&mut turnout::testing::wasm_harness(env!("CARGO_MANIFEST_DIR"), "{}").unwrap());
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::host::HostApi;
use crate::kv::{KvLimits, KvStore};
use crate::plugin::{Plugin, PluginInfo};
use crate::types::*;

mod request;
pub use request::{Request, response_head};

/// Why a hook call (or `init`) failed, as the harness reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// `init` returned an error.
    Init(String),
    /// The plugin panicked or trapped.
    Trap(String),
    /// The call ran past its deadline (wasm only).
    Deadline,
    /// The instance hit its memory limit (wasm only).
    MemoryLimit,
    /// The plugin answered something the host refuses.
    Malformed(String),
    /// The plugin could not be loaded (wasm only).
    Load(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Init(m) => write!(f, "init failed: {m}"),
            CallError::Trap(m) => write!(f, "trapped: {m}"),
            CallError::Deadline => f.write_str("deadline exceeded"),
            CallError::MemoryLimit => f.write_str("memory limit reached"),
            CallError::Malformed(m) => write!(f, "malformed answer: {m}"),
            CallError::Load(m) => write!(f, "could not load: {m}"),
        }
    }
}

impl std::error::Error for CallError {}

#[derive(Debug, Default)]
struct Counters {
    per_ip: HashMap<IpAddr, u32>,
    recent_per_ip: HashMap<IpAddr, u32>,
    per_route: HashMap<String, u32>,
    total: u32,
}

/// A host whose clock, counters and store the test controls. Log lines are
/// kept for inspection.
#[derive(Debug)]
pub struct FakeHost {
    real_time: Option<Instant>,
    monotonic_ns: AtomicU64,
    wall_ms: AtomicU64,
    counters: Mutex<Counters>,
    kv: KvStore,
    logs: Mutex<Vec<(LogLevel, String)>>,
    /// The request `request` is running for (for `host::header`).
    request: Mutex<Option<Request>>,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeHost {
    /// A fake host with a frozen clock (monotonic 1 s, wall 2023-11-14T22:13:20Z),
    /// zero counters and an empty store with default limits.
    pub fn new() -> Self {
        Self::with_kv_limits(KvLimits::default())
    }

    /// Same, with these store limits.
    pub fn with_kv_limits(limits: KvLimits) -> Self {
        Self {
            real_time: None,
            monotonic_ns: AtomicU64::new(1_000_000_000),
            wall_ms: AtomicU64::new(1_700_000_000_000),
            counters: Mutex::default(),
            kv: KvStore::new(limits),
            logs: Mutex::default(),
            request: Mutex::default(),
        }
    }

    /// A host with real clocks; what plugin code sees natively outside a harness.
    pub fn real_time() -> Self {
        Self {
            real_time: Some(Instant::now()),
            ..Self::new()
        }
    }

    /// Moves both clocks forward.
    pub fn advance_ms(&self, ms: u64) {
        self.monotonic_ns
            .fetch_add(ms.saturating_mul(1_000_000), Ordering::Relaxed);
        self.wall_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Sets the wall clock (milliseconds since the Unix epoch).
    pub fn set_wall_ms(&self, ms: u64) {
        self.wall_ms.store(ms, Ordering::Relaxed);
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the active-connection count for `ip`.
    pub fn set_active_for_ip(&self, ip: IpAddr, n: u32) {
        self.counters().per_ip.insert(canonical_ip(ip), n);
    }

    /// Sets the connections-in-the-last-minute count for `ip`.
    pub fn set_recent_for_ip(&self, ip: IpAddr, n: u32) {
        self.counters().recent_per_ip.insert(canonical_ip(ip), n);
    }

    /// Sets the active-connection count for `route`.
    pub fn set_active_for_route(&self, route: &str, n: u32) {
        self.counters().per_route.insert(route.to_owned(), n);
    }

    /// Sets the proxy-wide active-connection count.
    pub fn set_active_total(&self, n: u32) {
        self.counters().total = n;
    }

    /// The plugin's key-value store.
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// Log lines so far.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn now_ms(&self) -> u64 {
        self.monotonic_now() / 1_000_000
    }
}

impl HostApi for FakeHost {
    fn log(&self, level: LogLevel, message: &str) {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((level, message.to_owned()));
    }

    fn monotonic_now(&self) -> u64 {
        match self.real_time {
            Some(start) => u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
            None => self.monotonic_ns.load(Ordering::Relaxed),
        }
    }

    fn wall_now(&self) -> u64 {
        match self.real_time {
            Some(_) => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => self.wall_ms.load(Ordering::Relaxed),
        }
    }

    fn active_connections_for_ip(&self, ip: IpAddr) -> u32 {
        self.counters()
            .per_ip
            .get(&canonical_ip(ip))
            .copied()
            .unwrap_or(0)
    }

    fn active_connections_for_route(&self, route: &str) -> u32 {
        self.counters().per_route.get(route).copied().unwrap_or(0)
    }

    fn active_connections_total(&self) -> u32 {
        self.counters().total
    }

    fn recent_connections_for_ip(&self, ip: IpAddr) -> u32 {
        self.counters()
            .recent_per_ip
            .get(&canonical_ip(ip))
            .copied()
            .unwrap_or(0)
    }

    fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        self.kv.get(key, self.now_ms())
    }

    fn kv_set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        self.kv.set(key, value, ttl_ms, self.now_ms())
    }

    fn kv_increment(&self, key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        self.kv.increment(key, delta, ttl_ms, self.now_ms())
    }

    fn kv_delete(&self, key: &str) -> bool {
        self.kv.delete(key, self.now_ms())
    }

    fn header(&self, name: &str) -> Vec<Vec<u8>> {
        self.current_request()
            .map(|r| r.values(name))
            .unwrap_or_default()
    }

    fn header_names(&self) -> Vec<String> {
        self.current_request()
            .map(|r| r.names())
            .unwrap_or_default()
    }
}

impl FakeHost {
    fn current_request(&self) -> Option<Request> {
        self.request
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `request` the one `host::header` answers from while `f` runs
    /// (how a [`Target`] runs the `request` hook).
    pub fn during_request<R>(&self, request: &Request, f: impl FnOnce() -> R) -> R {
        struct Clear<'a>(&'a Mutex<Option<Request>>);
        impl Drop for Clear<'_> {
            fn drop(&mut self) {
                *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
        *self.request.lock().unwrap_or_else(|e| e.into_inner()) = Some(request.clone());
        let _clear = Clear(&self.request);
        f()
    }
}

/// Something that runs a plugin's hooks: the plugin compiled natively
/// ([`Harness::native`]) or its `.wasm` in wasmtime (`turnout::testing`).
pub trait Target {
    /// What `init` returned.
    fn info(&self) -> &PluginInfo;
    /// Calls `admit`.
    fn admit(&mut self, peer: &Peer) -> Result<AdmitDecision, CallError>;
    /// Calls `route`.
    fn route(&mut self, conn: &Connection) -> Result<RouteDecision, CallError>;
    /// Calls `policy`.
    fn policy(
        &mut self,
        conn: &Connection,
        route: &Routed,
        defaults: &Policy,
    ) -> Result<PolicyDecision, CallError>;
    /// Calls `on-idle`.
    fn on_idle(&mut self, conn: &Connection, stats: &IdleStats) -> Result<IdleDecision, CallError>;
    /// Calls `request` with the head the host would build from `request`
    /// (declared slots filled, other headers through `host::header`).
    fn request(&mut self, request: &Request) -> Result<RequestDecision, CallError>;
    /// Calls `response`.
    fn response(&mut self, head: &ResponseHead) -> Result<ResponseDecision, CallError>;
    /// Calls `approve-certificate`.
    fn approve_certificate(
        &mut self,
        name: &str,
        client: SocketAddr,
    ) -> Result<CertificateDecision, CallError>;
}

struct Native<P> {
    plugin: P,
    info: PluginInfo,
    host: Arc<FakeHost>,
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

fn guarded<R>(host: &Arc<FakeHost>, f: impl FnOnce() -> R) -> Result<R, CallError> {
    let host: Arc<dyn HostApi> = host.clone();
    crate::host::with_installed(host, || catch_unwind(AssertUnwindSafe(f)))
        .map_err(|p| CallError::Trap(panic_message(p)))
}

impl<P: Plugin> Target for Native<P> {
    fn info(&self) -> &PluginInfo {
        &self.info
    }
    fn admit(&mut self, peer: &Peer) -> Result<AdmitDecision, CallError> {
        guarded(&self.host, || self.plugin.admit(peer))
    }
    fn route(&mut self, conn: &Connection) -> Result<RouteDecision, CallError> {
        guarded(&self.host, || self.plugin.route(conn))
    }
    fn policy(
        &mut self,
        conn: &Connection,
        route: &Routed,
        defaults: &Policy,
    ) -> Result<PolicyDecision, CallError> {
        guarded(&self.host, || self.plugin.policy(conn, route, defaults))
    }
    fn on_idle(&mut self, conn: &Connection, stats: &IdleStats) -> Result<IdleDecision, CallError> {
        guarded(&self.host, || self.plugin.on_idle(conn, stats))
    }
    fn request(&mut self, request: &Request) -> Result<RequestDecision, CallError> {
        let head = request.head_for(&self.info.interest);
        let host = self.host.clone();
        host.during_request(request, || {
            guarded(&self.host, || self.plugin.request(&head))
        })
    }
    fn response(&mut self, head: &ResponseHead) -> Result<ResponseDecision, CallError> {
        guarded(&self.host, || self.plugin.response(head))
    }
    fn approve_certificate(
        &mut self,
        name: &str,
        client: SocketAddr,
    ) -> Result<CertificateDecision, CallError> {
        // As the host hands it: an IPv4-mapped IPv6 client folded to IPv4.
        let client = SocketAddr::new(canonical_ip(client.ip()), client.port());
        guarded(&self.host, || self.plugin.approve_certificate(name, client))
    }
}

/// Drives one plugin instance in a test. The plain methods panic with the
/// failure (a failed test); the `try_` ones return it.
pub struct Harness {
    target: Box<dyn Target>,
    host: Arc<FakeHost>,
}

impl Harness {
    /// The plugin compiled natively, with a fresh [`FakeHost`].
    pub fn native<P: Plugin>(config: &str) -> Result<Self, CallError> {
        Self::native_with_host::<P>(Arc::new(FakeHost::new()), config)
    }

    /// The plugin compiled natively, with this host.
    pub fn native_with_host<P: Plugin>(
        host: Arc<FakeHost>,
        config: &str,
    ) -> Result<Self, CallError> {
        let plugin = guarded(&host, || P::init(config))?.map_err(|e| CallError::Init(e.0))?;
        let info = guarded(&host, || plugin.info())?;
        Ok(Self::from_target(
            Box::new(Native {
                plugin,
                info,
                host: host.clone(),
            }),
            host,
        ))
    }

    /// Wraps another target (how `turnout::testing` provides the wasm one).
    pub fn from_target(target: Box<dyn Target>, host: Arc<FakeHost>) -> Self {
        Self { target, host }
    }

    /// The fake host.
    pub fn host(&self) -> &FakeHost {
        &self.host
    }

    /// What `init` returned.
    pub fn info(&self) -> &PluginInfo {
        self.target.info()
    }

    /// Calls `admit`.
    pub fn try_admit(&mut self, peer: &Peer) -> Result<AdmitDecision, CallError> {
        self.target.admit(peer)
    }
    /// Calls `route`.
    pub fn try_route(&mut self, conn: &Connection) -> Result<RouteDecision, CallError> {
        self.target.route(conn)
    }
    /// Calls `policy`.
    pub fn try_policy(
        &mut self,
        conn: &Connection,
        route: &Routed,
        defaults: &Policy,
    ) -> Result<PolicyDecision, CallError> {
        self.target.policy(conn, route, defaults)
    }
    /// Calls `on-idle`.
    pub fn try_on_idle(
        &mut self,
        conn: &Connection,
        stats: &IdleStats,
    ) -> Result<IdleDecision, CallError> {
        self.target.on_idle(conn, stats)
    }
    /// Calls `request`.
    pub fn try_request(&mut self, request: &Request) -> Result<RequestDecision, CallError> {
        self.target.request(request)
    }
    /// Calls `response`.
    pub fn try_response(&mut self, head: &ResponseHead) -> Result<ResponseDecision, CallError> {
        self.target.response(head)
    }
    /// Calls `approve-certificate` for `name` as given: the host hands it
    /// lower-cased and without a trailing dot, so write it that way.
    pub fn try_approve_certificate(
        &mut self,
        name: &str,
        client: SocketAddr,
    ) -> Result<CertificateDecision, CallError> {
        self.target.approve_certificate(name, client)
    }

    /// Calls `admit`; panics if the call fails.
    pub fn admit(&mut self, peer: &Peer) -> AdmitDecision {
        self.try_admit(peer)
            .unwrap_or_else(|e| panic!("admit failed: {e}"))
    }
    /// Calls `route`; panics if the call fails.
    pub fn route(&mut self, conn: &Connection) -> RouteDecision {
        self.try_route(conn)
            .unwrap_or_else(|e| panic!("route failed: {e}"))
    }
    /// Calls `policy`; panics if the call fails.
    pub fn policy(
        &mut self,
        conn: &Connection,
        route: &Routed,
        defaults: &Policy,
    ) -> PolicyDecision {
        self.try_policy(conn, route, defaults)
            .unwrap_or_else(|e| panic!("policy failed: {e}"))
    }
    /// Calls `on-idle`; panics if the call fails.
    pub fn on_idle(&mut self, conn: &Connection, stats: &IdleStats) -> IdleDecision {
        self.try_on_idle(conn, stats)
            .unwrap_or_else(|e| panic!("on-idle failed: {e}"))
    }
    /// Calls `request`; panics if the call fails.
    pub fn request(&mut self, request: &Request) -> RequestDecision {
        self.try_request(request)
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }
    /// Calls `response`; panics if the call fails.
    pub fn response(&mut self, head: &ResponseHead) -> ResponseDecision {
        self.try_response(head)
            .unwrap_or_else(|e| panic!("response failed: {e}"))
    }
    /// Calls `approve-certificate`; panics if the call fails.
    pub fn approve_certificate(&mut self, name: &str, client: SocketAddr) -> CertificateDecision {
        self.try_approve_certificate(name, client)
            .unwrap_or_else(|e| panic!("approve-certificate failed: {e}"))
    }
    /// A response head for the `response` hook, with this plugin's declared
    /// response slots filled from `headers`.
    pub fn response_head(
        &self,
        context: u64,
        status: u16,
        headers: &[(&str, &str)],
    ) -> ResponseHead {
        response_head(&self.info().interest, context, status, headers)
    }
}

/// A socket address from `"ip:port"` (`"[v6]:port"`); panics on a
/// malformed literal (test input).
pub fn addr(client: &str) -> SocketAddr {
    client
        .parse()
        .unwrap_or_else(|_| panic!("test address {client:?} is not ip:port"))
}

/// A direct peer from `"ip:port"` (panics on a malformed literal: test input).
pub fn peer(client: &str, listener_port: u16) -> Peer {
    Peer::new(addr(client), listener_port)
}

/// A TLS connection from `"ip:port"` to `listener_port` with this SNI.
pub fn tls_conn(client: &str, listener_port: u16, sni: &str) -> Connection {
    Connection::tls(1, peer(client, listener_port), ClientHello::with_sni(sni))
}

/// A plain (non-TLS) connection.
pub fn plain_conn(client: &str, listener_port: u16) -> Connection {
    Connection::plain(1, peer(client, listener_port))
}

#[cfg(test)]
mod tests;
