//! New connections per client IP over the last 60 seconds, counted by
//! every instance together (`connectionRateLimitPerMinute`).
//!
//! One hash per IP (`{prefix}rate:{ip}`): a field per second holding the
//! connections accepted in it, plus `total` (the sum of those fields) and
//! `oldest` (the oldest second not yet dropped). Each count drops the
//! seconds that left the window since the last one — usually none or one —
//! so a script costs a few hash operations however many seconds the
//! window holds. (It read the whole hash before: with a full window,
//! 56–59 µs inside Redis per connection against 17–18 µs now, side by
//! side in one `redis-server`; see docs/scaling.md.)
//! A key expires a second after its last connection leaves the window. The
//! same sliding window as the local counters (`limits/`).

use std::net::IpAddr;
use std::sync::LazyLock;

use redis::Script;

use super::{Cluster, Unavailable};

/// The window, in seconds (what "per minute" means everywhere).
const WINDOW_S: u64 = 60;

/// KEYS: the IP's hash. ARGV: now (unix seconds), window (seconds).
/// Counts one connection now; returns the connections in the window.
///
/// Each second's field is added to `total` once and taken out once, when
/// it is dropped, so `total` is always their sum. Instances' clocks may
/// differ: a connection from one behind the others is counted in the
/// oldest second still kept (never in one already dropped, which would
/// stay in `total` for good). The loop visits at most `window + 1` seconds
/// (a key lives `window + 1` s past its last write); it continues at the
/// next count where it stopped.
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local key, now, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local oldest = tonumber(redis.call('HGET', key, 'oldest')) or now
local total = tonumber(redis.call('HGET', key, 'total')) or 0
local cutoff = now - window
if oldest <= cutoff then
  local last = math.min(cutoff, oldest + window)
  for s = oldest, last do
    local n = redis.call('HGET', key, s)
    if n then
      total = total - tonumber(n)
      redis.call('HDEL', key, s)
    end
  end
  oldest = last + 1
end
redis.call('HINCRBY', key, math.max(now, oldest), 1)
total = total + 1
redis.call('HSET', key, 'oldest', oldest, 'total', total)
redis.call('PEXPIRE', key, (window + 1) * 1000)
return total
",
    )
});

impl Cluster {
    /// Counts a new connection from `ip` and returns the connections from
    /// it in the last minute across every instance (this one included).
    /// Awaited on the connection's task, never blocking its worker.
    pub async fn count_connection(&self, ip: IpAddr) -> Result<u32, Unavailable> {
        self.count_connection_at(ip, super::unix_ms() / 1000).await
    }

    /// [`Cluster::count_connection`] at the unix second `now` (the window's
    /// clock is each instance's own): what the tests drive across minutes.
    pub async fn count_connection_at(&self, ip: IpAddr, now: u64) -> Result<u32, Unavailable> {
        let key = self.key(format_args!(
            "rate:{}",
            turnout_plugin_sdk::canonical_ip(ip)
        ));
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
