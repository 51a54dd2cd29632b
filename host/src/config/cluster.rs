//! The top-level `cluster` object: several instances sharing limits,
//! plugin state and ACME certificates through one Redis. Without it
//! nothing is shared and nothing connects.

use std::time::Duration;

use serde::Deserialize;

use super::validate::Problems;

/// What every key the proxy writes starts with when `cluster.prefix` does
/// not say.
pub const DEFAULT_PREFIX: &str = "turnout:";

/// `cluster`: the shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `cluster.redis`: `redis://[user:password@]host:port/db`.
    pub redis: String,
    /// `cluster.prefix` (default `turnout:`): several deployments can share
    /// one Redis.
    pub prefix: String,
    /// `cluster.instance` (default: the host name, else `turnout-<pid>`):
    /// this process's name in `/api/cluster` and its heartbeat key.
    pub instance: String,
    /// `cluster.timeout` (25 ms): the longest one Redis call on the
    /// connection path may take before the store counts as down.
    pub timeout: Duration,
    /// `cluster.kvReadCacheMs` (1000 ms): how long a `kv-get` answer is
    /// reused without asking Redis (0: every call asks).
    pub kv_read_cache: Duration,
    /// `cluster.heartbeat` (2000 ms): how often this instance says it is
    /// alive; its key expires after three missed beats.
    pub heartbeat: Duration,
}

/// `cluster` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawCluster {
    redis: Option<String>,
    prefix: Option<String>,
    instance: Option<String>,
    timeout: Option<u64>,
    kv_read_cache_ms: Option<u64>,
    heartbeat: Option<u64>,
}

pub(super) fn check(raw: RawCluster, p: &mut Problems) -> Option<ClusterConfig> {
    let redis = match raw.redis.map(|s| s.trim().to_owned()) {
        None => {
            p.add(
                "cluster.redis",
                "is required: the Redis the instances share, e.g. \"redis://127.0.0.1:6379/0\"",
            );
            None
        }
        Some(url) => check_url(&url)
            .map_err(|m| p.add("cluster.redis", m))
            .ok()
            .map(|()| url),
    };
    let prefix = raw.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
    if prefix.len() > 64 || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.add(
            "cluster.prefix",
            "must be at most 64 characters with no spaces or control characters",
        );
    }
    let instance = raw.instance.unwrap_or_else(default_instance);
    if instance.is_empty()
        || instance.len() > 128
        || instance
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        p.add(
            "cluster.instance",
            "must be 1 to 128 characters with no spaces or control characters",
        );
    }
    let timeout = p
        .check("cluster.timeout", raw.timeout, 1, 10_000)
        .unwrap_or(25);
    let cache = p
        .check("cluster.kvReadCacheMs", raw.kv_read_cache_ms, 0, 60_000)
        .unwrap_or(1000);
    let heartbeat = p
        .check("cluster.heartbeat", raw.heartbeat, 100, 60_000)
        .unwrap_or(2000);
    Some(ClusterConfig {
        redis: redis?,
        prefix,
        instance,
        timeout: Duration::from_millis(timeout),
        kv_read_cache: Duration::from_millis(cache),
        heartbeat: Duration::from_millis(heartbeat),
    })
}

/// The URL forms the client connects to; the rest are refused by name
/// rather than failing at the first connection.
fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("rediss://") {
        return Err(format!(
            "{url:?}: TLS to Redis (rediss://) is not built in; reach Redis over a private \
             network or a local TLS tunnel and use redis://"
        ));
    }
    if url.starts_with("redis+unix://") || url.starts_with("unix://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("redis://") else {
        return Err(format!(
            "{url:?} is not a Redis URL like \"redis://127.0.0.1:6379/0\""
        ));
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    if host.is_empty() || host.starts_with('/') {
        return Err(format!("{url:?} names no host"));
    }
    Ok(())
}

/// The host name (`/proc/sys/kernel/hostname`), else `turnout-<pid>`.
fn default_instance() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("turnout-{}", std::process::id()))
}

/// `url` with any password replaced, for logs and the admin API.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:[redacted]@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ClusterConfig, Vec<String>> {
        let raw: RawCluster = serde_json::from_str(json).unwrap();
        let mut p = Problems::default();
        let c = check(raw, &mut p);
        if p.0.is_empty() {
            Ok(c.unwrap())
        } else {
            Err(p
                .0
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect())
        }
    }

    #[test]
    fn defaults_and_names() {
        let c = parse(r#"{"redis": "redis://127.0.0.1:6379/0", "instance": "edge-1"}"#).unwrap();
        assert_eq!(c.prefix, "turnout:");
        assert_eq!(c.instance, "edge-1");
        assert_eq!(c.timeout, Duration::from_millis(25));
        assert_eq!(c.kv_read_cache, Duration::from_millis(1000));
        assert_eq!(c.heartbeat, Duration::from_millis(2000));
        assert!(
            !parse(r#"{"redis": "redis://h:1"}"#)
                .unwrap()
                .instance
                .is_empty()
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse(r#"{"instance": "a b", "timeout": 0}"#).unwrap_err();
        assert!(
            e.iter()
                .any(|m| m.starts_with("cluster.redis: is required")),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.starts_with("cluster.instance")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("cluster.timeout")), "{e:?}");
        let e = parse(r#"{"redis": "rediss://h:1"}"#).unwrap_err();
        assert!(e[0].contains("rediss://"), "{e:?}");
        let e = parse(r#"{"redis": "http://h:1"}"#).unwrap_err();
        assert!(e[0].contains("not a Redis URL"), "{e:?}");
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redacted_url("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://:[redacted]@10.0.0.1:6379/0"
        );
        assert_eq!(
            redacted_url("redis://app:s3cret@r:6379"),
            "redis://app:[redacted]@r:6379"
        );
        assert_eq!(redacted_url("redis://r:6379/1"), "redis://r:6379/1");
    }
}
