//! The production implementation of the plugin host imports: tracing for
//! logs, the process clocks, the proxy's connection counters and one
//! key-value store per plugin name.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use turnout_plugin_sdk::host::HostApi;
use turnout_plugin_sdk::kv::{KvLimits, KvStore};
use turnout_plugin_sdk::{KvError, LogLevel};

pub use crate::limits::{Counters, NoCounters};

/// What one plugin (by name, across its versions and instances) sees.
pub(crate) struct PluginHost {
    name: String,
    kv: KvStore,
    counters: Arc<dyn Counters>,
    epoch: Instant,
}

impl PluginHost {
    pub(crate) fn new(name: &str, counters: Arc<dyn Counters>, limits: KvLimits) -> Self {
        Self {
            name: name.to_owned(),
            kv: KvStore::new(limits),
            counters,
            epoch: Instant::now(),
        }
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
}
