//! The `guard` default plugin: SmartProxy's proxy-wide admission checks,
//! made in the `admit` hook — right after accept (and after a trusted PROXY
//! header), before anything else is read from the client.
//!
//! In order, the first that applies refuses the connection:
//!
//! | check | reason |
//! | --- | --- |
//! | client IP in `defaults.security.ipBlockList` (the block list wins) | `ip-blocked` |
//! | `defaults.security.ipAllowList` is not empty and the IP is not in it | `ip-not-allowed` |
//! | more than `maxConnections` active connections, whole proxy | `max-connections` |
//! | more than `maxConnectionsPerIP` active connections from this IP | `max-connections-per-ip` |
//! | more than `connectionRateLimitPerMinute` connections from this IP in the last minute | `rate-limit` |
//!
//! Otherwise the answer is "no opinion" (never "allow"), so plugins later in
//! the chain still get asked. With no list and every limit 0 there is
//! nothing to check, and the plugin declares no hook at all: the host then
//! never calls it.
//!
//! The host counts the connection being admitted before it calls `admit`,
//! so every count includes it: with `maxConnectionsPerIP: 100` the 100th
//! connection from one IP sees 100 and is admitted, the 101st sees 101 and
//! is refused. The same goes for the other two limits.
//!
//! # Configuration
//!
//! JSON with SmartProxy's names; every key is optional and `null` means
//! absent:
//!
//! ```json
//! {
//!   "maxConnectionsPerIP": 100,
//!   "connectionRateLimitPerMinute": 300,
//!   "maxConnections": 10000,
//!   "defaults": { "security": { "ipAllowList": ["10.0.0.0/8"], "ipBlockList": ["10.6.6.*"] } }
//! }
//! ```
//!
//! * The limits default to 100, 300 and 10000 (as in SmartProxy); 0 means
//!   unlimited.
//! * The IP lists take the route `clientIp` pattern forms: exact addresses,
//!   CIDR (v4 and v6), `a-b` ranges and `*` octet wildcards.
//!   `::ffff:1.2.3.4` and `1.2.3.4` are the same client.
//! * `defaults` is SmartProxy's whole `defaults` object, so any other key in
//!   it (`target`, `preserveSourceIP`, …) is accepted and ignored, as is
//!   every key of `defaults.security` other than the two lists
//!   (`maxConnections`, `rateLimit`, `basicAuth`, … are route and HTTP
//!   matters).
//! * Any other top-level key, a bad pattern or a value of the wrong type is
//!   an init error naming its path, e.g.
//!   `defaults.security.ipBlockList[2]: invalid pattern "10.0.0.0/33": …`.
//!
//! Per-route `security.ipAllowList` / `ipBlockList` (and the route limits)
//! are not applied here: the `routes` plugin applies them when it picks a
//! route, since only then is the route known.

use std::net::IpAddr;

use serde_json::{Map, Value};
use turnout_plugin_sdk::config::kind;
use turnout_plugin_sdk::prelude::*;

/// SmartProxy's default for `maxConnectionsPerIP`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 100;
/// SmartProxy's default for `connectionRateLimitPerMinute`.
pub const DEFAULT_CONNECTION_RATE_LIMIT_PER_MINUTE: u32 = 300;
/// SmartProxy's default for `maxConnections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;

const KEYS: [&str; 4] = [
    "maxConnectionsPerIP",
    "connectionRateLimitPerMinute",
    "maxConnections",
    "defaults",
];

/// See the crate docs.
#[derive(Debug, Clone)]
pub struct Guard {
    block: IpList,
    allow: IpList,
    /// 0 = unlimited, as are the other two.
    max_connections: u32,
    max_connections_per_ip: u32,
    rate_limit_per_minute: u32,
}

fn fail(path: &str, message: impl std::fmt::Display) -> InitError {
    InitError::new(format!("{path}: {message}"))
}

/// A limit: absent or `null` is `default`; otherwise a whole number that
/// fits the host's `u32` counters.
fn limit(config: &Map<String, Value>, key: &str, default: u32) -> Result<u32, InitError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(n), _) => {
                u32::try_from(n).map_err(|_| fail(key, format!("{n} is more than {}", u32::MAX)))
            }
            (None, Some(n)) => Err(fail(key, format!("{n} is negative (0 means unlimited)"))),
            (None, None) => Err(fail(key, format!("{n} is not a whole number"))),
        },
        Some(other) => Err(fail(key, format!("expected a number, got {}", kind(other)))),
    }
}

/// An optional object: absent or `null` is `None`.
fn object<'a>(
    value: Option<&'a Value>,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, InitError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(fail(
            path,
            format!("expected an object, got {}", kind(other)),
        )),
    }
}

/// An optional list of IP patterns: absent or `null` is empty.
fn ip_list(value: Option<&Value>, path: &str) -> Result<IpList, InitError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(IpList::default()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(fail(
                path,
                format!("expected a list of IP patterns, got {}", kind(other)),
            ));
        }
    };
    let patterns = items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.as_str()),
            other => Err(fail(
                &format!("{path}[{i}]"),
                format!("expected an IP pattern string, got {}", kind(other)),
            )),
        })
        .collect::<Result<Vec<&str>, InitError>>()?;
    IpList::parse(&patterns).map_err(|e| {
        // `IpList::parse` stops at the first bad pattern: find its index.
        let i = patterns
            .iter()
            .position(|p| IpPattern::parse(p).is_err())
            .unwrap_or(0);
        fail(&format!("{path}[{i}]"), e)
    })
}

fn unknown_key(key: &str) -> InitError {
    let expected = format!("expected one of {}", KEYS.join(", "));
    let lower = key.to_ascii_lowercase();
    let near = KEYS
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|&(d, _)| d <= 3)
        .min();
    match near {
        Some((_, k)) => fail(key, format!("unknown key; did you mean {k}? ({expected})")),
        None => fail(key, format!("unknown key ({expected})")),
    }
}

/// Levenshtein distance; only ever run on short config keys at init.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

impl Guard {
    /// Builds the guard from its JSON configuration (see the crate docs).
    pub fn from_config(config: &str) -> Result<Self, InitError> {
        let config: Value = serde_json::from_str(config)
            .map_err(|e| InitError::new(format!("guard config: {e}")))?;
        let Value::Object(config) = config else {
            return Err(InitError::new(format!(
                "guard config: expected an object, got {}",
                kind(&config)
            )));
        };
        if let Some(key) = config.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(unknown_key(key));
        }
        let security = match object(config.get("defaults"), "defaults")? {
            Some(defaults) => object(defaults.get("security"), "defaults.security")?,
            None => None,
        };
        let list = |key: &str| {
            ip_list(
                security.and_then(|s| s.get(key)),
                &format!("defaults.security.{key}"),
            )
        };
        Ok(Guard {
            allow: list("ipAllowList")?,
            block: list("ipBlockList")?,
            max_connections_per_ip: limit(
                &config,
                "maxConnectionsPerIP",
                DEFAULT_MAX_CONNECTIONS_PER_IP,
            )?,
            rate_limit_per_minute: limit(
                &config,
                "connectionRateLimitPerMinute",
                DEFAULT_CONNECTION_RATE_LIMIT_PER_MINUTE,
            )?,
            max_connections: limit(&config, "maxConnections", DEFAULT_MAX_CONNECTIONS)?,
        })
    }

    /// Whether any list or limit is set: with none, `admit` would pass
    /// every client.
    fn checks_anything(&self) -> bool {
        !self.block.is_empty()
            || !self.allow.is_empty()
            || self.max_connections != 0
            || self.max_connections_per_ip != 0
            || self.rate_limit_per_minute != 0
    }

    /// The refusal reason for a client at `ip`, if any. Only asks the host
    /// for the counters a configured limit needs.
    fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        if self.block.matches(ip) {
            return Some("ip-blocked");
        }
        if !self.allow.is_empty() && !self.allow.matches(ip) {
            return Some("ip-not-allowed");
        }
        // Counts include the connection being admitted: `count > max` refuses.
        if self.max_connections != 0 && host::active_connections_total() > self.max_connections {
            return Some("max-connections");
        }
        if self.max_connections_per_ip != 0
            && host::active_connections_for_ip(ip) > self.max_connections_per_ip
        {
            return Some("max-connections-per-ip");
        }
        if self.rate_limit_per_minute != 0
            && host::recent_connections_for_ip(ip) > self.rate_limit_per_minute
        {
            return Some("rate-limit");
        }
        None
    }
}

impl Plugin for Guard {
    fn init(config: &str) -> Result<Self, InitError> {
        Guard::from_config(config)
    }

    fn info(&self) -> PluginInfo {
        // Nothing to check declares no hook, so the host skips the call for
        // every connection (a reload with a limit set brings it back).
        let hooks = if self.checks_anything() {
            Hooks::ADMIT
        } else {
            Hooks::NONE
        };
        PluginInfo::new("guard", env!("CARGO_PKG_VERSION")).hooks(hooks)
    }

    fn admit(&self, peer: &Peer) -> AdmitDecision {
        match self.refusal(peer.ip()) {
            Some(reason) => AdmitDecision::Deny(reason.to_owned()),
            None => AdmitDecision::Pass,
        }
    }
}

turnout_plugin_sdk::export_plugin!(Guard);
