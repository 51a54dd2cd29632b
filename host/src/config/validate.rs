//! Raw config to typed [`Config`]: ranges, IP patterns, cross-checks and
//! the outline of each route. Every problem is collected rather than the
//! first returned, so `turnout check` can list them all in one run.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use turnout_plugin_sdk::KeepAliveTreatment;
use turnout_plugin_sdk::matching::{IpList, IpPattern};

use super::raw::{RawConfig, RawPlugins};
use super::{Config, ConfigError, FailurePolicy};
use turnout_plugin_sdk::config::kind;

/// Problems found so far.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<ConfigError>);

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }

    /// `value` when it lies in `lo..=hi`; otherwise a problem, and `None`
    /// so the default stays and validation goes on.
    pub(super) fn check(&mut self, key: &str, value: Option<u64>, lo: u64, hi: u64) -> Option<u64> {
        let v = value?;
        if (lo..=hi).contains(&v) {
            return Some(v);
        }
        let message = if hi == u64::MAX {
            format!("must be at least {lo}, got {v}")
        } else {
            format!("must be between {lo} and {hi}, got {v}")
        };
        self.add(key, message);
        None
    }
}

/// More threads than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

/// Validates `raw`; a relative `plugins.dir` is joined to `base_dir`.
pub(super) fn validate(
    raw: RawConfig,
    base_dir: Option<&Path>,
) -> Result<Config, Vec<ConfigError>> {
    let mut p = Problems::default();
    let mut c = Config::default();

    if let Some(bind) = raw.bind {
        c.bind = bind_addresses(&bind, &mut p);
    }
    if let Some(n) = raw.workers {
        match usize::try_from(n) {
            Ok(n @ 1..=MAX_WORKERS) => c.workers = Some(n),
            _ => p.add(
                "workers",
                format!(
                    "{n} is out of range: 1 to {MAX_WORKERS} threads (leave it out for one per CPU)"
                ),
            ),
        }
    }
    if let Some(routes) = raw.routes {
        for (i, route) in routes.iter().enumerate() {
            check_route_outline(i, route, &mut p);
        }
        c.tls.routes = super::tls::routes(&routes, &mut p.0);
        c.routes = routes;
    }
    if let Some(v) = &raw.default_certificate {
        c.tls.default_certificate = super::tls::cert_source(v, "defaultCertificate", &mut p.0);
    }
    if let Some(ms) = p.check(
        "tlsHandshakeTimeout",
        raw.tls_handshake_timeout,
        1,
        u64::MAX,
    ) {
        c.tls.handshake_timeout = Duration::from_millis(ms);
    }
    c.defaults = raw.defaults.map(Value::Object);
    if let Some(http) = raw.http {
        c.http = super::http::check(http, &mut p);
    }
    if let Some(acme) = &raw.acme {
        c.acme = super::acme::check(acme, base_dir, &mut p);
    }
    for r in c.tls.routes.iter().filter(|r| r.acme) {
        if c.acme.is_none() {
            p.add(
                format!("routes[{}].action.tls.certificate", r.index),
                "\"auto\" needs the top-level acme object (e.g. { \"email\": \"ops@example.com\" }), \
                 or acme.enabled is false",
            );
        }
    }

    let (t, k) = (&mut c.timeouts, &mut c.keep_alive);
    // Two may be 0: a graceful shutdown of 0 closes at once instead of
    // draining, and a keep-alive delay of 0 is Node's "the OS default".
    #[rustfmt::skip]
    let times: [(&str, Option<u64>, &mut Duration, u64); 8] = [
        ("initialDataTimeout", raw.initial_data_timeout, &mut t.initial_data, 1),
        ("connectionTimeout", raw.connection_timeout, &mut t.connect, 1),
        ("socketTimeout", raw.socket_timeout, &mut t.socket, 1),
        ("inactivityTimeout", raw.inactivity_timeout, &mut t.inactivity, 1),
        ("maxConnectionLifetime", raw.max_connection_lifetime, &mut t.max_lifetime, 1),
        ("extendedKeepAliveLifetime", raw.extended_keep_alive_lifetime, &mut t.extended_lifetime, 1),
        ("gracefulShutdownTimeout", raw.graceful_shutdown_timeout, &mut t.graceful_shutdown, 0),
        ("keepAliveInitialDelay", raw.keep_alive_initial_delay, &mut k.tcp_keep_alive_delay, 0),
    ];
    for (key, value, slot, min) in times {
        if let Some(ms) = p.check(key, value, min, u64::MAX) {
            *slot = Duration::from_millis(ms);
        }
    }

    if let Some(name) = &raw.keep_alive_treatment {
        match name.as_str() {
            "standard" => k.treatment = KeepAliveTreatment::Standard,
            "extended" => k.treatment = KeepAliveTreatment::Extended,
            "immortal" => k.treatment = KeepAliveTreatment::Immortal,
            _ => p.add(
                "keepAliveTreatment",
                format!("{name:?} is not one of \"standard\", \"extended\", \"immortal\""),
            ),
        }
    }
    let multiplier = raw.keep_alive_inactivity_multiplier;
    k.multiplier = p
        .check("keepAliveInactivityMultiplier", multiplier, 1, u64::MAX)
        .unwrap_or(k.multiplier);
    k.tcp_keep_alive = raw.keep_alive.unwrap_or(k.tcp_keep_alive);
    k.no_delay = raw.no_delay.unwrap_or(k.no_delay);

    let l = &mut c.limits;
    l.max_connections_per_ip = raw
        .max_connections_per_ip
        .unwrap_or(l.max_connections_per_ip);
    let rate = raw.connection_rate_limit_per_minute;
    l.connection_rate_per_minute = rate.unwrap_or(l.connection_rate_per_minute);
    l.max_connections = raw.max_connections.unwrap_or(l.max_connections);
    if let Some(n) = p.check("maxPendingDataSize", raw.max_pending_data_size, 1, u64::MAX) {
        match usize::try_from(n) {
            Ok(n) => l.max_pending_data = n,
            Err(_) => p.add(
                "maxPendingDataSize",
                format!("{n} is too large for this platform"),
            ),
        }
    }

    c.allow_session_ticket = raw.allow_session_ticket.unwrap_or(c.allow_session_ticket);

    let pp = &mut c.proxy_protocol;
    pp.accept = raw.accept_proxy_protocol.unwrap_or(pp.accept);
    pp.send = raw.send_proxy_protocol.unwrap_or(pp.send);
    if let Some(ips) = &raw.proxy_ips {
        pp.trusted = proxy_ips(ips, &mut p);
    }
    if pp.accept && raw.proxy_ips.as_ref().is_none_or(Vec::is_empty) {
        p.add(
            "proxyIPs",
            "acceptProxyProtocol is true but proxyIPs is empty: no peer may send a PROXY header",
        );
    }

    if let Some(plugins) = raw.plugins {
        plugins_section(plugins, base_dir, &mut c, &mut p);
    }

    if let Some(admin) = raw.admin {
        c.admin = super::admin::check(admin, base_dir, &mut p);
    }
    if let Some(cluster) = raw.cluster {
        c.cluster = super::cluster::check(cluster, &mut p);
    }

    if p.0.is_empty() { Ok(c) } else { Err(p.0) }
}

fn bind_addresses(list: &[String], p: &mut Problems) -> Vec<IpAddr> {
    if list.is_empty() {
        p.add("bind", "must list at least one address");
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        match text.trim().parse::<IpAddr>() {
            // The same address twice would make the second bind fail at start.
            Ok(ip) if out.contains(&ip) => {
                p.add(format!("bind[{i}]"), format!("{ip} is listed twice"))
            }
            Ok(ip) => out.push(ip),
            Err(_) => p.add(
                format!("bind[{i}]"),
                format!("{text:?} is not an IP address"),
            ),
        }
    }
    out
}

/// Each pattern on its own, so every bad one is named with its index
/// (`IpList::parse` stops at the first).
fn proxy_ips(list: &[String], p: &mut Problems) -> IpList {
    let mut ok = true;
    for (i, text) in list.iter().enumerate() {
        if let Err(e) = IpPattern::parse(text) {
            p.add(format!("proxyIPs[{i}]"), e.to_string());
            ok = false;
        }
    }
    if ok {
        IpList::parse(list).unwrap_or_default()
    } else {
        IpList::default()
    }
}

/// What the host itself needs from a route: that it is an object with
/// `match.ports`. The rest is the `routes` plugin's to judge.
fn check_route_outline(i: usize, route: &Value, p: &mut Problems) {
    let at = format!("routes[{i}]");
    let Value::Object(route) = route else {
        p.add(at, format!("must be an object, got {}", kind(route)));
        return;
    };
    match route.get("match") {
        None => p.add(at, "has no match (every route needs match.ports)"),
        Some(Value::Object(m)) if !m.contains_key("ports") => {
            p.add(
                format!("{at}.match"),
                "has no ports (every route needs match.ports)",
            );
        }
        Some(Value::Object(_)) => {}
        Some(other) => p.add(
            format!("{at}.match"),
            format!("must be an object, got {}", kind(other)),
        ),
    }
}

fn plugins_section(raw: RawPlugins, base_dir: Option<&Path>, c: &mut Config, p: &mut Problems) {
    let pc = &mut c.plugins;
    match raw.dir {
        Some(dir) if dir.as_os_str().is_empty() => p.add("plugins.dir", "must not be empty"),
        Some(dir) => {
            pc.dir = Some(match base_dir {
                Some(base) if dir.is_relative() => base.join(dir),
                _ => dir,
            });
        }
        None => {}
    }
    if let Some(order) = raw.order {
        let mut seen = HashSet::new();
        for (i, name) in order.iter().enumerate() {
            if name.trim().is_empty() {
                p.add(format!("plugins.order[{i}]"), "must not be empty");
            } else if !seen.insert(name.as_str()) {
                p.add(
                    format!("plugins.order[{i}]"),
                    format!("{name:?} is listed twice"),
                );
            }
        }
        pc.order = order;
    }
    pc.config = raw.config.unwrap_or_default();
    // Sorted so the problems come out in a stable order.
    let mut given: Vec<(String, String)> = raw.failure.unwrap_or_default().into_iter().collect();
    given.sort();
    for (name, policy) in given {
        let policy = match policy.as_str() {
            "closed" => FailurePolicy::Closed,
            "open" => FailurePolicy::Open,
            _ => {
                let message = format!("{policy:?} is not \"closed\" or \"open\"");
                p.add(format!("plugins.failure.{name}"), message);
                continue;
            }
        };
        pc.failure.insert(name, policy);
    }
    if let Some(ms) = p.check("plugins.deadlineMs", raw.deadline_ms, 1, 10_000) {
        pc.deadline = Duration::from_millis(ms);
    }
    if let Some(mb) = p.check("plugins.memoryLimitMb", raw.memory_limit_mb, 1, 4096) {
        match usize::try_from(mb << 20) {
            Ok(bytes) => pc.memory_limit = bytes,
            Err(_) => p.add(
                "plugins.memoryLimitMb",
                format!("{mb} is too large for this platform"),
            ),
        }
    }
    // Below 50 ms the directory scan would cost more than it saves.
    if let Some(ms) = p.check("plugins.pollIntervalMs", raw.poll_interval_ms, 50, u64::MAX) {
        pc.poll_interval = Duration::from_millis(ms);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigErrors, Format, parse};

    fn problems(text: &str) -> Vec<String> {
        let err: ConfigErrors = parse(text, Format::Json).unwrap_err();
        err.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_unsupported_key_and_problem_is_listed_at_once() {
        let got = problems(
            r#"{
              "acme": { "email": "a@b.c", "skipConfiguredCerts": true },
              "useHttpProxy": [80],
              "preserveSourceIP": true,
              "keepAliveTreatment": "forever",
              "keepAliveInactivityMultiplier": 0,
              "maxPendingDataSize": 0,
              "acceptProxyProtocol": true,
              "routes": [ 7, { "name": "x" }, { "match": { "domains": "a.b" } } ],
              "plugins": { "deadlineMs": 0, "memoryLimitMb": 9000, "pollIntervalMs": 10,
                           "failure": { "guard": "maybe" }, "order": ["a", "a"] },
              "admin": { "listen": "localhost" },
              "bind": ["0.0.0.0", "nope"],
              "workers": 0
            }"#,
        );
        let want = [
            "useHttpProxy: not supported by Turnout (SmartProxy option); remove it",
            "preserveSourceIP: not supported by Turnout (SmartProxy option); remove it",
            "bind[1]: \"nope\" is not an IP address",
            "workers: 0 is out of range: 1 to 1024 threads (leave it out for one per CPU)",
            "routes[0]: must be an object, got a number",
            "routes[1]: has no match (every route needs match.ports)",
            "routes[2].match: has no ports (every route needs match.ports)",
            "acme.skipConfiguredCerts: not supported by Turnout",
            "keepAliveTreatment: \"forever\" is not one of \"standard\", \"extended\", \"immortal\"",
            "keepAliveInactivityMultiplier: must be at least 1, got 0",
            "maxPendingDataSize: must be at least 1, got 0",
            "proxyIPs: acceptProxyProtocol is true but proxyIPs is empty: no peer may send a PROXY header",
            "plugins.order[1]: \"a\" is listed twice",
            "plugins.failure.guard: \"maybe\" is not \"closed\" or \"open\"",
            "plugins.deadlineMs: must be between 1 and 10000, got 0",
            "plugins.memoryLimitMb: must be between 1 and 4096, got 9000",
            "plugins.pollIntervalMs: must be at least 50, got 10",
            "admin.listen: \"localhost\" is not an address and port like \"127.0.0.1:9900\"",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_bad_proxy_ip_pattern_is_named_by_index() {
        let got = problems(
            r#"{"acceptProxyProtocol": true, "proxyIPs": ["10.0.0.0/8", "10.0.0.300", "::1/200"]}"#,
        );
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].starts_with("proxyIPs[1]: invalid pattern \"10.0.0.300\""),
            "{}",
            got[0]
        );
        assert!(got[1].starts_with("proxyIPs[2]: "), "{}", got[1]);
    }

    #[test]
    fn zero_means_unlimited_for_connection_limits() {
        let c = parse(
            r#"{"maxConnectionsPerIP": 0, "connectionRateLimitPerMinute": 0, "maxConnections": 0,
                "gracefulShutdownTimeout": 0, "keepAliveInitialDelay": 0}"#,
            Format::Json,
        )
        .unwrap();
        assert_eq!(c.limits.max_connections_per_ip, 0);
        assert_eq!(c.limits.connection_rate_per_minute, 0);
        assert_eq!(c.limits.max_connections, 0);
        assert!(c.timeouts.graceful_shutdown.is_zero());
    }

    #[test]
    fn zero_timeouts_are_refused() {
        let got = problems(r#"{"inactivityTimeout": 0, "connectionTimeout": 0}"#);
        assert_eq!(
            got,
            [
                "connectionTimeout: must be at least 1, got 0",
                "inactivityTimeout: must be at least 1, got 0",
            ]
        );
    }

    #[test]
    fn relative_plugins_dir_stays_relative_without_a_file() {
        let c = parse(
            r#"{"plugins": {"dir": "wasm", "memoryLimitMb": 64}}"#,
            Format::Json,
        )
        .unwrap();
        assert_eq!(c.plugins.dir, Some("wasm".into()));
        assert_eq!(c.plugins.memory_limit, 64 << 20);
        assert!(problems(r#"{"plugins": {"dir": ""}}"#)[0].starts_with("plugins.dir:"));
    }
}
