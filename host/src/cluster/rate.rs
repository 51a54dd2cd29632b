//! New connections per client IP over the last 60 seconds, counted by
//! every instance together (`connectionRateLimitPerMinute`).
//!
//! One hash per IP (`{prefix}rate:{ip}`): a field per second holding the
//! connections accepted in it, fields older than the window deleted as the
//! script passes. So a key holds at most about 60 fields however fast one
//! client connects, and expires a second after its last connection leaves
//! the window. The same sliding window as the local counters (`limits/`).

use std::net::IpAddr;
use std::sync::LazyLock;

use redis::Script;

use super::{Cluster, Unavailable};

/// The window, in seconds (what "per minute" means everywhere).
const WINDOW_S: u64 = 60;

/// KEYS: the IP's hash. ARGV: now (unix seconds), window (seconds).
/// Counts one connection now; returns the connections in the window.
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
  if tonumber(fields[i]) <= now - window then
    redis.call('HDEL', KEYS[1], fields[i])
  else
    total = total + tonumber(fields[i + 1])
  end
end
redis.call('PEXPIRE', KEYS[1], (window + 1) * 1000)
return total
",
    )
});

impl Cluster {
    /// Counts a new connection from `ip` and returns the connections from
    /// it in the last minute across every instance (this one included).
    /// Awaited on the connection's task, never blocking its worker.
    pub async fn count_connection(&self, ip: IpAddr) -> Result<u32, Unavailable> {
        let key = self.key(format_args!(
            "rate:{}",
            turnout_plugin_sdk::canonical_ip(ip)
        ));
        let now = super::unix_ms() / 1000;
        let total: u64 = self
            .client
            .call(self.config.timeout, move |mut c| async move {
                COUNT
                    .key(key)
                    .arg(now)
                    .arg(WINDOW_S)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(u32::try_from(total).unwrap_or(u32::MAX))
    }
}
