//! The production implementation of the plugin host imports: tracing for
//! logs, the process clocks, the proxy's connection counters and one
//! key-value store per plugin name — in memory, or shared by every
//! instance through a [`SharedKv`] (`cluster`), with the memory store as
//! the fallback while the shared one is unreachable.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use turnout_plugin_sdk::host::HostApi;
use turnout_plugin_sdk::kv::{KvLimits, KvStore};
use turnout_plugin_sdk::{KvError, LogLevel};

pub use crate::limits::{Counters, NoCounters};

/// The shared store did not answer (down, slow or broken): the caller
/// falls back to its memory store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared key-value store did not answer")]
pub struct NotShared;

/// The shared store behind the `kv-*` imports when instances share state
/// (`cluster`). Keys are the plugin's own; the store keeps each plugin's
/// apart. Bounds are checked before a call reaches it. [`NotShared`]: the
/// caller falls back to its memory store; the implementation counts and
/// logs that.
pub trait SharedKv: Send + Sync + std::fmt::Debug {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, NotShared>;
    fn set(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
        max_entries: usize,
    ) -> Result<(), NotShared>;
    /// `Ok(Err(NotACounter))` when the value is not an 8-byte counter.
    fn increment(
        &self,
        plugin: &str,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
        max_entries: usize,
    ) -> Result<Result<i64, KvError>, NotShared>;
    fn delete(&self, plugin: &str, key: &str) -> Result<bool, NotShared>;
    /// How long a `get` answer may be reused locally (zero: never).
    fn read_cache(&self) -> Duration;
}

/// A [`SharedKv`] and this process's copy of recent answers.
struct Shared {
    store: Arc<dyn SharedKv>,
    /// Answers of `get` and the results of this process's writes, each kept
    /// for the store's read-cache time (or the entry's TTL, if shorter).
    cache: KvStore,
    cache_ms: u64,
}

/// What one plugin (by name, across its versions and instances) sees.
pub(crate) struct PluginHost {
    name: String,
    limits: KvLimits,
    /// The store, or the fallback while the shared one does not answer.
    kv: KvStore,
    shared: Option<Shared>,
    counters: Arc<dyn Counters>,
    epoch: Instant,
}

impl PluginHost {
    pub(crate) fn new(
        name: &str,
        counters: Arc<dyn Counters>,
        limits: KvLimits,
        shared: Option<Arc<dyn SharedKv>>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            limits,
            kv: KvStore::new(limits),
            shared: shared.map(|store| Shared {
                cache_ms: u64::try_from(store.read_cache().as_millis()).unwrap_or(u64::MAX),
                store,
                cache: KvStore::new(limits),
            }),
            counters,
            epoch: Instant::now(),
        }
    }

    /// Keeps `value` as the latest known for `key`, for the read cache.
    fn remember(&self, shared: &Shared, key: &str, value: &[u8], ttl_ms: Option<u64>) {
        if shared.cache_ms == 0 {
            return;
        }
        let ttl = ttl_ms.map_or(shared.cache_ms, |t| t.min(shared.cache_ms));
        let _ = shared.cache.set(key, value, Some(ttl), self.now_ms());
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl HostApi for PluginHost {
    fn log(&self, level: LogLevel, message: &str) {
        // Plugin text is untrusted: cap it so one call cannot write megabytes.
        let mut end = message.len().min(4096);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = &message[..end];
        let plugin = self.name.as_str();
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn monotonic_now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn wall_now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn active_connections_for_ip(&self, ip: IpAddr) -> u32 {
        self.counters.active_for_ip(ip)
    }

    fn active_connections_for_route(&self, route: &str) -> u32 {
        self.counters.active_for_route(route)
    }

    fn active_connections_total(&self) -> u32 {
        self.counters.active_total()
    }

    fn recent_connections_for_ip(&self, ip: IpAddr) -> u32 {
        self.counters.recent_for_ip(ip)
    }

    fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        let now = self.now_ms();
        if let Some(shared) = &self.shared {
            if let Some(v) = shared.cache.get(key, now) {
                return Some(v);
            }
            if self.limits.check(key, None).is_ok()
                && let Ok(answer) = shared.store.get(&self.name, key)
            {
                if let Some(v) = &answer {
                    self.remember(shared, key, v, None);
                }
                return answer;
            }
        }
        self.kv.get(key, now)
    }

    fn kv_set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        if let Some(shared) = &self.shared {
            self.limits.check(key, Some(value))?;
            let max = self.limits.max_entries;
            if shared
                .store
                .set(&self.name, key, value, ttl_ms, max)
                .is_ok()
            {
                self.remember(shared, key, value, ttl_ms);
                return Ok(());
            }
            let _ = shared.cache.delete(key, self.now_ms());
        }
        self.kv.set(key, value, ttl_ms, self.now_ms())
    }

    fn kv_increment(&self, key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        if let Some(shared) = &self.shared {
            self.limits.check(key, None)?;
            let max = self.limits.max_entries;
            if let Ok(answer) = shared.store.increment(&self.name, key, delta, ttl_ms, max) {
                match answer {
                    Ok(n) => self.remember(shared, key, &n.to_le_bytes(), ttl_ms),
                    Err(_) => {
                        let _ = shared.cache.delete(key, self.now_ms());
                    }
                }
                return answer;
            }
            let _ = shared.cache.delete(key, self.now_ms());
        }
        self.kv.increment(key, delta, ttl_ms, self.now_ms())
    }

    fn kv_delete(&self, key: &str) -> bool {
        let now = self.now_ms();
        if let Some(shared) = &self.shared {
            let _ = shared.cache.delete(key, now);
            if self.limits.check(key, None).is_ok()
                && let Ok(existed) = shared.store.delete(&self.name, key)
            {
                return existed;
            }
        }
        self.kv.delete(key, now)
    }
}
