//! The guard plugin through the SDK harness: every case runs natively and
//! against the compiled `.wasm`.

use std::net::IpAddr;

use turnout_plugin_guard::Guard;
use turnout_plugin_sdk::prelude::*;
use turnout_plugin_sdk::testing::{CallError, Harness, peer};

/// Builds a harness from a config: natively or from the `.wasm`.
type Make<'a> = &'a dyn Fn(&str) -> Result<Harness, CallError>;

fn harness(make: Make<'_>, config: &str) -> Harness {
    make(config).unwrap_or_else(|e| panic!("{config}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn deny(reason: &str) -> AdmitDecision {
    AdmitDecision::Deny(reason.to_owned())
}

/// What `admit` answers for a client (`"ip:port"`, `"[v6]:port"`) on port 443.
fn admit(h: &mut Harness, client: &str) -> AdmitDecision {
    h.admit(&peer(client, 443))
}

fn info(make: Make<'_>) {
    let h = harness(make, "{}");
    assert_eq!(h.info().name, "guard");
    assert_eq!(h.info().hooks, Hooks::ADMIT, "admission only");
    assert!(h.info().listen.is_empty(), "guard wants no ports");
}

/// behaviour.md: 100 per IP, 300 per IP per minute, 10000 in all. The host
/// has already counted the connection being admitted.
fn defaults(make: Make<'_>) {
    for config in [
        "{}",
        // The shape the host builds when the config file sets nothing.
        r#"{"maxConnectionsPerIP":100,"connectionRateLimitPerMinute":300,"maxConnections":10000,"defaults":null}"#,
        r#"{"maxConnectionsPerIP":null,"connectionRateLimitPerMinute":null,"maxConnections":null}"#,
    ] {
        let mut h = harness(make, config);
        let client = "10.0.0.1:5000";
        assert_eq!(admit(&mut h, client), AdmitDecision::Pass, "{config}");

        h.host().set_active_for_ip(ip("10.0.0.1"), 100);
        assert_eq!(
            admit(&mut h, client),
            AdmitDecision::Pass,
            "100th from one IP"
        );
        h.host().set_active_for_ip(ip("10.0.0.1"), 101);
        assert_eq!(
            admit(&mut h, client),
            deny("max-connections-per-ip"),
            "101st"
        );
        assert_eq!(
            admit(&mut h, "10.0.0.2:5000"),
            AdmitDecision::Pass,
            "another IP has its own count"
        );
        assert_eq!(
            admit(&mut h, "[::ffff:10.0.0.1]:6000"),
            deny("max-connections-per-ip"),
            "an IPv4-mapped client is the same client"
        );
        h.host().set_active_for_ip(ip("10.0.0.1"), 1);

        h.host().set_recent_for_ip(ip("10.0.0.1"), 300);
        assert_eq!(
            admit(&mut h, client),
            AdmitDecision::Pass,
            "300th this minute"
        );
        h.host().set_recent_for_ip(ip("10.0.0.1"), 301);
        assert_eq!(
            admit(&mut h, client),
            deny("rate-limit"),
            "301st this minute"
        );
        h.host().set_recent_for_ip(ip("10.0.0.1"), 1);

        h.host().set_active_total(10_000);
        assert_eq!(admit(&mut h, client), AdmitDecision::Pass, "10000th in all");
        h.host().set_active_total(10_001);
        assert_eq!(admit(&mut h, client), deny("max-connections"), "10001st");
        assert_eq!(admit(&mut h, "[2001:db8::1]:443"), deny("max-connections"));
    }
}

fn configured_limits(make: Make<'_>) {
    let mut h = harness(
        make,
        r#"{"maxConnectionsPerIP": 2, "connectionRateLimitPerMinute": 5, "maxConnections": 3}"#,
    );
    let (a, client) = (ip("192.0.2.7"), "192.0.2.7:40000");
    let host = h.host();
    host.set_active_total(3);
    host.set_active_for_ip(a, 2);
    host.set_recent_for_ip(a, 5);
    assert_eq!(
        admit(&mut h, client),
        AdmitDecision::Pass,
        "every count at its limit"
    );

    h.host().set_recent_for_ip(a, 6);
    assert_eq!(admit(&mut h, client), deny("rate-limit"));
    h.host().set_active_for_ip(a, 3);
    assert_eq!(
        admit(&mut h, client),
        deny("max-connections-per-ip"),
        "per-IP is checked before the rate"
    );
    h.host().set_active_total(4);
    assert_eq!(
        admit(&mut h, client),
        deny("max-connections"),
        "the proxy-wide limit is checked first"
    );

    // An IPv6 client's counters.
    h.host().set_active_total(1);
    h.host().set_active_for_ip(ip("2001:db8::5"), 3);
    assert_eq!(
        admit(&mut h, "[2001:db8::5]:1"),
        deny("max-connections-per-ip")
    );
    h.host().set_active_for_ip(ip("2001:db8::5"), 2);
    assert_eq!(admit(&mut h, "[2001:db8::5]:1"), AdmitDecision::Pass);
}

fn zero_is_unlimited(make: Make<'_>) {
    let mut h = harness(
        make,
        r#"{"maxConnectionsPerIP": 0, "connectionRateLimitPerMinute": 0, "maxConnections": 0}"#,
    );
    h.host().set_active_total(u32::MAX);
    h.host().set_active_for_ip(ip("10.0.0.1"), u32::MAX);
    h.host().set_recent_for_ip(ip("10.0.0.1"), u32::MAX);
    assert_eq!(admit(&mut h, "10.0.0.1:1"), AdmitDecision::Pass);
    // Nothing left to check: no hook, so the host does not call it at all.
    assert_eq!(h.info().hooks, Hooks::NONE);
    // A list alone keeps it.
    let h = harness(
        make,
        r#"{"maxConnectionsPerIP": 0, "connectionRateLimitPerMinute": 0, "maxConnections": 0,
            "defaults": {"security": {"ipBlockList": ["203.0.113.0/24"]}}}"#,
    );
    assert_eq!(h.info().hooks, Hooks::ADMIT);

    // Each limit on its own.
    for (config, reason) in [
        (r#"{"maxConnectionsPerIP": 0}"#, "rate-limit"),
        (
            r#"{"connectionRateLimitPerMinute": 0}"#,
            "max-connections-per-ip",
        ),
    ] {
        let mut h = harness(make, config);
        assert_eq!(h.info().hooks, Hooks::ADMIT, "{config}");
        h.host().set_active_total(5);
        h.host().set_active_for_ip(ip("10.0.0.1"), 1_000);
        h.host().set_recent_for_ip(ip("10.0.0.1"), 1_000);
        assert_eq!(admit(&mut h, "10.0.0.1:1"), deny(reason), "{config}");
    }
    let mut h = harness(make, r#"{"maxConnections": 0}"#);
    h.host().set_active_total(1_000_000);
    assert_eq!(admit(&mut h, "10.0.0.1:1"), AdmitDecision::Pass);
}

/// Every `clientIp` pattern form, the block list winning over the allow
/// list, and IPv4-mapped IPv6 clients and patterns.
fn ip_lists(make: Make<'_>) {
    let config = r#"{
        "defaults": {
            "target": { "host": "10.0.0.9", "port": 8080 },
            "preserveSourceIP": true,
            "security": {
                "ipAllowList": [
                    "10.0.0.0/8", "2001:db8::/32", "192.168.1.10-192.168.1.20",
                    "172.16.*", "::ffff:100.64.0.0/106", "198.51.100.1"
                ],
                "ipBlockList": ["10.6.6.6", "10.7.*", "2001:db8:bad::/48", "::ffff:10.9.9.9"],
                "maxConnections": 1,
                "maxConnectionsPerIP": 1,
                "rateLimit": { "maxRequests": 1, "window": 60 },
                "basicAuth": { "enabled": true, "users": [] }
            }
        }
    }"#;
    let mut h = harness(make, config);
    let pass = AdmitDecision::Pass;
    for (client, want) in [
        ("10.1.2.3:1", &pass),
        ("10.6.6.6:1", &deny("ip-blocked")),
        ("10.7.200.1:1", &deny("ip-blocked")),
        ("10.9.9.9:1", &deny("ip-blocked")),
        ("[::ffff:10.6.6.6]:1", &deny("ip-blocked")),
        ("[::ffff:10.1.2.3]:1", &pass),
        ("11.0.0.1:1", &deny("ip-not-allowed")),
        ("[::ffff:11.0.0.1]:1", &deny("ip-not-allowed")),
        ("[2001:db8::1]:1", &pass),
        ("[2001:db8:bad::1]:1", &deny("ip-blocked")),
        ("[2001:db8:bae::1]:1", &pass),
        ("[2001:db9::1]:1", &deny("ip-not-allowed")),
        ("[::1]:1", &deny("ip-not-allowed")),
        ("192.168.1.10:1", &pass),
        ("192.168.1.20:1", &pass),
        ("192.168.1.21:1", &deny("ip-not-allowed")),
        ("172.16.99.1:1", &pass),
        ("172.17.0.1:1", &deny("ip-not-allowed")),
        ("100.127.255.255:1", &pass),
        ("100.128.0.0:1", &deny("ip-not-allowed")),
        ("198.51.100.1:1", &pass),
        ("198.51.100.2:1", &deny("ip-not-allowed")),
    ] {
        assert_eq!(&admit(&mut h, client), want, "{client}");
    }

    // `defaults.security.maxConnections` etc. are route concerns: ignored.
    h.host().set_active_total(50);
    h.host().set_active_for_ip(ip("10.1.2.3"), 50);
    assert_eq!(admit(&mut h, "10.1.2.3:1"), AdmitDecision::Pass);

    // The lists are checked before any counter.
    h.host().set_active_total(1_000_000);
    assert_eq!(admit(&mut h, "10.6.6.6:1"), deny("ip-blocked"));
    assert_eq!(admit(&mut h, "11.0.0.1:1"), deny("ip-not-allowed"));
    assert_eq!(admit(&mut h, "10.1.2.3:1"), deny("max-connections"));
}

fn empty_allow_list_allows_all(make: Make<'_>) {
    for config in [
        r#"{"defaults": {"security": {"ipAllowList": [], "ipBlockList": ["203.0.113.0/24"]}}}"#,
        r#"{"defaults": {"security": {"ipAllowList": null, "ipBlockList": ["203.0.113.0/24"]}}}"#,
        r#"{"defaults": {"security": {"ipBlockList": ["203.0.113.0/24"]}}}"#,
    ] {
        let mut h = harness(make, config);
        assert_eq!(admit(&mut h, "8.8.8.8:1"), AdmitDecision::Pass, "{config}");
        assert_eq!(
            admit(&mut h, "[2001:db8::1]:1"),
            AdmitDecision::Pass,
            "{config}"
        );
        assert_eq!(
            admit(&mut h, "203.0.113.9:1"),
            deny("ip-blocked"),
            "{config}"
        );
        assert_eq!(
            admit(&mut h, "[::ffff:203.0.113.9]:1"),
            deny("ip-blocked"),
            "{config}"
        );
    }
    // No lists at all, or no security section.
    for config in [
        r#"{"defaults": {}}"#,
        r#"{"defaults": {"security": null}}"#,
        r#"{"defaults": {"security": {}}}"#,
    ] {
        let mut h = harness(make, config);
        assert_eq!(admit(&mut h, "8.8.8.8:1"), AdmitDecision::Pass, "{config}");
    }
}

fn block_beats_allow(make: Make<'_>) {
    let mut h = harness(
        make,
        r#"{"defaults": {"security": {"ipAllowList": ["*"], "ipBlockList": ["*"]}}}"#,
    );
    assert_eq!(admit(&mut h, "10.0.0.1:1"), deny("ip-blocked"));
    assert_eq!(admit(&mut h, "[2001:db8::1]:1"), deny("ip-blocked"));

    let mut h = harness(
        make,
        r#"{"defaults": {"security": {"ipAllowList": ["10.0.0.1"], "ipBlockList": ["10.0.0.0/24"]}}}"#,
    );
    assert_eq!(admit(&mut h, "10.0.0.1:1"), deny("ip-blocked"));
    assert_eq!(admit(&mut h, "10.0.1.1:1"), deny("ip-not-allowed"));
}

fn bad_configs(make: Make<'_>) {
    for (config, text) in [
        (
            r#"{"maxConectionsPerIP": 5}"#,
            "maxConectionsPerIP: unknown key; did you mean maxConnectionsPerIP?",
        ),
        (r#"{"routes": []}"#, "routes: unknown key (expected one of"),
        (
            r#"{"defaults": {"security": {"ipBlockList": ["1.2.3.4", "10.0.0.0/8", "10.0.0.0/33"]}}}"#,
            r#"defaults.security.ipBlockList[2]: invalid pattern "10.0.0.0/33": "#,
        ),
        (
            r#"{"defaults": {"security": {"ipAllowList": ["a.b.c.d"]}}}"#,
            r#"defaults.security.ipAllowList[0]: invalid pattern "a.b.c.d": "#,
        ),
        (
            r#"{"defaults": {"security": {"ipAllowList": ["1.2.3.4", 7]}}}"#,
            "defaults.security.ipAllowList[1]: expected an IP pattern string, got a number",
        ),
        (
            r#"{"defaults": {"security": {"ipAllowList": "1.2.3.4"}}}"#,
            "defaults.security.ipAllowList: expected a list of IP patterns, got a string",
        ),
        (
            r#"{"defaults": {"security": true}}"#,
            "defaults.security: expected an object, got a boolean",
        ),
        (
            r#"{"defaults": []}"#,
            "defaults: expected an object, got a list",
        ),
        (
            r#"{"maxConnectionsPerIP": -1}"#,
            "maxConnectionsPerIP: -1 is negative",
        ),
        (
            r#"{"maxConnections": 1.5}"#,
            "maxConnections: 1.5 is not a whole number",
        ),
        (
            r#"{"maxConnections": 4294967296}"#,
            "maxConnections: 4294967296 is more than 4294967295",
        ),
        (
            r#"{"connectionRateLimitPerMinute": "300"}"#,
            "connectionRateLimitPerMinute: expected a number, got a string",
        ),
        ("[]", "guard config: expected an object, got a list"),
        ("{", "guard config: "),
    ] {
        match make(config) {
            Err(CallError::Init(msg)) => assert!(msg.contains(text), "{config}: {msg}"),
            Err(other) => panic!("{config}: expected an init error, got {other}"),
            Ok(_) => panic!("{config}: expected an init error"),
        }
    }
}

// Each case runs natively and against the built `.wasm`.
turnout::natively_and_as_wasm!(
    Guard:
    info,
    defaults,
    configured_limits,
    zero_is_unlimited,
    ip_lists,
    empty_allow_list_allows_all,
    block_beats_allow,
    bad_configs,
);
