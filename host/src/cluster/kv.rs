//! The plugin key-value store in Redis: the same semantics as the memory
//! store (`turnout_plugin_sdk::kv`), one round trip per call.
//!
//! Each plugin's keys live under `{prefix}kv:{plugin}:`, in two spaces:
//! `c:{key}` holds counters as Redis integers (so `INCRBY` is exact over
//! the whole i64 range) and `b:{key}` any other value. A value set with
//! exactly 8 bytes *is* a counter in the memory store (an i64, little
//! endian), so it is stored as one here too. `index` is a sorted set of
//! the plugin's keys by last write: past `max_entries` the oldest writes
//! are evicted, as the memory store does.
//!
//! Writes are Lua scripts, so each is atomic cluster-wide and costs one
//! round trip (`EVALSHA`; the script is loaded again if Redis restarted).
//! Scripts name keys they did not get in `KEYS` only when evicting, which
//! a standalone Redis allows (Redis Cluster is not supported).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;
use turnout_plugin_sdk::KvError;

use super::Cluster;
use crate::plugins::{NotShared, SharedKv};

/// Drops the oldest writes past `max` (ARGV[3]) from the index (KEYS[3])
/// and their values; shared by the write scripts.
const EVICT: &str = r"
redis.call('ZADD', KEYS[3], ARGV[4], KEYS[1])
redis.call('ZREM', KEYS[3], KEYS[2])
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[3])
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[3], over)
  for i = 1, #old, 2 do
    if old[i] ~= KEYS[1] then redis.call('DEL', old[i]) end
  end
end
";

/// KEYS: counter, bytes, index. ARGV: delta, ttl ms (0: none), max
/// entries, now ms. Returns `n<value>` or `nac` (not a counter).
static INCREMENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 'nac' end
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('SET', KEYS[1], '0', 'NX', 'PX', ttl) end
local ok = pcall(redis.call, 'INCRBY', KEYS[1], ARGV[1])
if not ok then
  local cur = redis.call('GET', KEYS[1])
  if cur == false or not string.match(cur, '^%-?%d+$') then return 'nac' end
  -- Past the i64 range: saturate, as the memory store does.
  local bound = '9223372036854775807'
  if string.sub(ARGV[1], 1, 1) == '-' then bound = '-9223372036854775808' end
  redis.call('SET', KEYS[1], bound, 'KEEPTTL')
end
{EVICT}
return 'n' .. redis.call('GET', KEYS[1])
"
    ))
});

/// KEYS: the key written, the other space's key, index. ARGV: value, ttl
/// ms (0: none), max entries, now ms.
static SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
redis.call('DEL', KEYS[2])
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
{EVICT}
return 1
"
    ))
});

/// The plugin key-value store of a [`Cluster`].
#[derive(Debug)]
pub(super) struct RedisKv {
    cluster: Arc<Cluster>,
}

/// The three keys of one plugin key.
struct Keys {
    counter: String,
    bytes: String,
    index: String,
}

impl RedisKv {
    pub(super) fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }

    fn keys(&self, plugin: &str, key: &str) -> Keys {
        let base = self.cluster.key(format_args!("kv:{plugin}:"));
        Keys {
            counter: format!("{base}c:{key}"),
            bytes: format!("{base}b:{key}"),
            index: format!("{base}index"),
        }
    }

    fn timeout(&self) -> Duration {
        self.cluster.config.timeout
    }
}

fn now_ms() -> u64 {
    super::unix_ms()
}

fn ttl_arg(ttl_ms: Option<u64>) -> u64 {
    // `PX 0` is an error in Redis; a zero TTL expires at once in the
    // memory store, which 1 ms matches.
    ttl_ms.map_or(0, |t| t.max(1))
}

/// A counter's value as Redis holds it (decimal text).
fn parse_counter(text: &str) -> Option<i64> {
    text.parse().ok()
}

impl SharedKv for RedisKv {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, NotShared> {
        let k = self.keys(plugin, key);
        let (counter, bytes) = self
            .cluster
            .client
            .call_blocking(self.timeout(), move |mut c| async move {
                redis::cmd("MGET")
                    .arg(&k.counter)
                    .arg(&k.bytes)
                    .query_async::<(Option<String>, Option<Vec<u8>>)>(&mut c)
                    .await
            })
            .map_err(|_| NotShared)?;
        Ok(match counter.as_deref().and_then(parse_counter) {
            Some(n) => Some(n.to_le_bytes().to_vec()),
            None => bytes,
        })
    }

    fn set(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
        max_entries: usize,
    ) -> Result<(), NotShared> {
        let k = self.keys(plugin, key);
        // Eight bytes are an i64 counter to the memory store: kept as one.
        let (target, other, stored): (String, String, Vec<u8>) = match <[u8; 8]>::try_from(value) {
            Ok(le) => (
                k.counter,
                k.bytes,
                i64::from_le_bytes(le).to_string().into_bytes(),
            ),
            Err(_) => (k.bytes, k.counter, value.to_vec()),
        };
        let index = k.index;
        self.cluster
            .client
            .call_blocking(self.timeout(), move |mut c| async move {
                SET.key(target)
                    .key(other)
                    .key(index)
                    .arg(stored)
                    .arg(ttl_arg(ttl_ms))
                    .arg(max_entries.max(1))
                    .arg(now_ms())
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .map(drop)
            .map_err(|_| NotShared)
    }

    fn increment(
        &self,
        plugin: &str,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
        max_entries: usize,
    ) -> Result<Result<i64, KvError>, NotShared> {
        let k = self.keys(plugin, key);
        let answer: String = self
            .cluster
            .client
            .call_blocking(self.timeout(), move |mut c| async move {
                INCREMENT
                    .key(k.counter)
                    .key(k.bytes)
                    .key(k.index)
                    .arg(delta)
                    .arg(ttl_arg(ttl_ms))
                    .arg(max_entries.max(1))
                    .arg(now_ms())
                    .invoke_async(&mut c)
                    .await
            })
            .map_err(|_| NotShared)?;
        match answer.strip_prefix('n').and_then(parse_counter) {
            Some(n) => Ok(Ok(n)),
            None => Ok(Err(KvError::NotACounter)),
        }
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<bool, NotShared> {
        let k = self.keys(plugin, key);
        let (deleted, _): (u64, u64) = self
            .cluster
            .client
            .call_blocking(self.timeout(), move |mut c| async move {
                redis::pipe()
                    .atomic()
                    .del(&[&k.counter, &k.bytes])
                    .zrem(&k.index, &[&k.counter, &k.bytes])
                    .query_async(&mut c)
                    .await
            })
            .map_err(|_| NotShared)?;
        Ok(deleted > 0)
    }

    fn read_cache(&self) -> Duration {
        self.cluster.config.kv_read_cache
    }
}

impl Cluster {
    /// The plugin key-value store on this cluster's Redis.
    pub fn shared_kv(self: &Arc<Self>) -> Arc<dyn SharedKv> {
        Arc::new(RedisKv::new(self.clone()))
    }
}
