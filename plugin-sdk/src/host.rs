//! Host capabilities: logging, clocks, the host's connection counters and the
//! per-plugin key-value store.
//!
//! Inside a `.wasm` plugin these call the host's imports. In a native build
//! (unit tests) they call the [`HostApi`] installed by the test harness — a
//! [`crate::testing::FakeHost`] the test controls — or, with none installed,
//! a stand-in with real clocks, zero counters and a private store.

use std::net::IpAddr;

use crate::types::{KvError, LogLevel};

/// Everything a plugin can ask of its host. The production host and the
/// test harness's fake host both implement it.
pub trait HostApi: Send + Sync {
    /// One log line from the plugin.
    fn log(&self, level: LogLevel, message: &str);
    /// Monotonic nanoseconds.
    fn monotonic_now(&self) -> u64;
    /// Wall-clock milliseconds since the Unix epoch.
    fn wall_now(&self) -> u64;
    /// Active connections from `ip`.
    fn active_connections_for_ip(&self, ip: IpAddr) -> u32;
    /// Active connections on `route`.
    fn active_connections_for_route(&self, route: &str) -> u32;
    /// Active connections, whole proxy.
    fn active_connections_total(&self) -> u32;
    /// Connections accepted from `ip` in the last minute.
    fn recent_connections_for_ip(&self, ip: IpAddr) -> u32;
    /// Key-value get.
    fn kv_get(&self, key: &str) -> Option<Vec<u8>>;
    /// Key-value set.
    fn kv_set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError>;
    /// Key-value atomic increment.
    fn kv_increment(&self, key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError>;
    /// Key-value delete.
    fn kv_delete(&self, key: &str) -> bool;
    /// During `request`: every value of a request header (case-insensitive
    /// name). The production host answers from the request itself (its
    /// per-call state), so only test hosts implement this.
    fn header(&self, _name: &str) -> Vec<Vec<u8>> {
        Vec::new()
    }
    /// During `request`: the request's header names, lower-case, each once.
    fn header_names(&self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::*;
    use crate::export::bindings::turnout::plugin::host;
    use crate::export::wit_conv::{ip_to_wit, kv_error_from_wit, log_level_to_wit};

    pub(super) fn log(level: LogLevel, message: &str) {
        host::log(log_level_to_wit(level), message)
    }
    pub(super) fn monotonic_now() -> u64 {
        host::monotonic_now()
    }
    pub(super) fn wall_now() -> u64 {
        host::wall_now()
    }
    pub(super) fn active_connections_for_ip(ip: IpAddr) -> u32 {
        host::active_connections_for_ip(ip_to_wit(ip))
    }
    pub(super) fn active_connections_for_route(route: &str) -> u32 {
        host::active_connections_for_route(route)
    }
    pub(super) fn active_connections_total() -> u32 {
        host::active_connections_total()
    }
    pub(super) fn recent_connections_for_ip(ip: IpAddr) -> u32 {
        host::recent_connections_for_ip(ip_to_wit(ip))
    }
    pub(super) fn kv_get(key: &str) -> Option<Vec<u8>> {
        host::kv_get(key)
    }
    pub(super) fn kv_set(key: &str, value: &[u8], ttl: Option<u64>) -> Result<(), KvError> {
        host::kv_set(key, value, ttl).map_err(kv_error_from_wit)
    }
    pub(super) fn kv_increment(key: &str, delta: i64, ttl: Option<u64>) -> Result<i64, KvError> {
        host::kv_increment(key, delta, ttl).map_err(kv_error_from_wit)
    }
    pub(super) fn kv_delete(key: &str) -> bool {
        host::kv_delete(key)
    }
    pub(super) fn header(name: &str) -> Vec<Vec<u8>> {
        host::header(name)
    }
    pub(super) fn header_names() -> Vec<String> {
        host::header_names()
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::*;
    use std::cell::RefCell;
    use std::sync::{Arc, OnceLock};

    thread_local! {
        static CURRENT: RefCell<Option<Arc<dyn HostApi>>> = const { RefCell::new(None) };
    }

    fn fallback() -> Arc<dyn HostApi> {
        static FALLBACK: OnceLock<Arc<dyn HostApi>> = OnceLock::new();
        FALLBACK
            .get_or_init(|| Arc::new(crate::testing::FakeHost::real_time()))
            .clone()
    }

    fn with<R>(f: impl FnOnce(&dyn HostApi) -> R) -> R {
        let host = CURRENT
            .with(|c| c.borrow().clone())
            .unwrap_or_else(fallback);
        f(&*host)
    }

    /// Installs `host` for the current thread while `f` runs.
    pub(crate) fn with_installed<R>(host: Arc<dyn HostApi>, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Arc<dyn HostApi>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let prev = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = prev);
            }
        }
        let prev = CURRENT.with(|c| c.borrow_mut().replace(host));
        let _restore = Restore(prev);
        f()
    }

    pub(super) fn log(level: LogLevel, message: &str) {
        with(|h| h.log(level, message))
    }
    pub(super) fn monotonic_now() -> u64 {
        with(|h| h.monotonic_now())
    }
    pub(super) fn wall_now() -> u64 {
        with(|h| h.wall_now())
    }
    pub(super) fn active_connections_for_ip(ip: IpAddr) -> u32 {
        with(|h| h.active_connections_for_ip(ip))
    }
    pub(super) fn active_connections_for_route(route: &str) -> u32 {
        with(|h| h.active_connections_for_route(route))
    }
    pub(super) fn active_connections_total() -> u32 {
        with(|h| h.active_connections_total())
    }
    pub(super) fn recent_connections_for_ip(ip: IpAddr) -> u32 {
        with(|h| h.recent_connections_for_ip(ip))
    }
    pub(super) fn kv_get(key: &str) -> Option<Vec<u8>> {
        with(|h| h.kv_get(key))
    }
    pub(super) fn kv_set(key: &str, value: &[u8], ttl: Option<u64>) -> Result<(), KvError> {
        with(|h| h.kv_set(key, value, ttl))
    }
    pub(super) fn kv_increment(key: &str, delta: i64, ttl: Option<u64>) -> Result<i64, KvError> {
        with(|h| h.kv_increment(key, delta, ttl))
    }
    pub(super) fn kv_delete(key: &str) -> bool {
        with(|h| h.kv_delete(key))
    }
    pub(super) fn header(name: &str) -> Vec<Vec<u8>> {
        with(|h| h.header(name))
    }
    pub(super) fn header_names() -> Vec<String> {
        with(|h| h.header_names())
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use imp::with_installed;

/// Logs one line, attributed to this plugin by the host.
pub fn log(level: LogLevel, message: &str) {
    imp::log(level, message)
}

/// Monotonic time in nanoseconds; only differences are meaningful.
pub fn monotonic_now() -> u64 {
    imp::monotonic_now()
}

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn wall_now() -> u64 {
    imp::wall_now()
}

/// Active connections from `ip`, whole proxy.
pub fn active_connections_for_ip(ip: IpAddr) -> u32 {
    imp::active_connections_for_ip(ip)
}

/// Active connections on `route`.
pub fn active_connections_for_route(route: &str) -> u32 {
    imp::active_connections_for_route(route)
}

/// Active connections, whole proxy.
pub fn active_connections_total() -> u32 {
    imp::active_connections_total()
}

/// Connections accepted from `ip` in the last 60 seconds.
pub fn recent_connections_for_ip(ip: IpAddr) -> u32 {
    imp::recent_connections_for_ip(ip)
}

/// Reads `key` from this plugin's shared store.
pub fn kv_get(key: &str) -> Option<Vec<u8>> {
    imp::kv_get(key)
}

/// Writes `key`, expiring after `ttl_ms` if given.
pub fn kv_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
    imp::kv_set(key, value, ttl_ms)
}

/// Atomically adds `delta` to the counter at `key` and returns the new value;
/// `ttl_ms` applies when the counter is created.
pub fn kv_increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
    imp::kv_increment(key, delta, ttl_ms)
}

/// Deletes `key`; whether it existed.
pub fn kv_delete(key: &str) -> bool {
    imp::kv_delete(key)
}

/// During `request`: every value of the request header `name` (any name,
/// case-insensitive), in arrival order; empty when absent. For headers
/// read on every request, declare them in [`crate::Interest`] instead: a
/// slot costs nothing extra, this is a host call.
pub fn header(name: &str) -> Vec<Vec<u8>> {
    imp::header(name)
}

/// During `request`: the request's header names, lower-case, each once.
pub fn header_names() -> Vec<String> {
    imp::header_names()
}
