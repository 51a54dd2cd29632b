//! The tenant limiter through the SDK harness: every case runs natively and
//! against the compiled `.wasm` — where the counters live in the host's
//! store, reached through the `kv-*` imports — driving the fake clock
//! across window boundaries.

use std::sync::Arc;

use example_tenant_limit::{TenantLimit, UNKNOWN_TENANT, window_key};
use turnout_plugin_sdk::host::HostApi;
use turnout_plugin_sdk::prelude::*;
use turnout_plugin_sdk::testing::{CallError, FakeHost, Harness, plain_conn, tls_conn};

/// Builds a harness from a host and a config: natively or from the `.wasm`.
type Make<'a> = &'a dyn Fn(Arc<FakeHost>, &str) -> Result<Harness, CallError>;

fn harness(make: Make<'_>, config: &str) -> Harness {
    make(Arc::new(FakeHost::new()), config).unwrap_or_else(|e| panic!("{config}: {e}"))
}

const CONFIG: &str = r#"{
    "tenants": [
        {"name": "acme", "domains": ["acme.example.com", "*.acme.example.com"]},
        {"name": "Globex", "domains": ["globex.example.net"], "limit": 5},
        {"name": "free", "domains": ["free.example.org"], "limit": 0}
    ],
    "suffix": "tenants.example.com",
    "limit": 3,
    "windowMs": 1000
}"#;

fn over() -> RouteDecision {
    RouteDecision::reject("tenant-rate-limit", Some(TlsAlert::AccessDenied))
}

/// A TLS connection to port 443 with this SNI.
fn sni(name: &str) -> Connection {
    tls_conn("192.0.2.1:40000", 443, name)
}

fn now_ms(h: &Harness) -> u64 {
    h.host().monotonic_now() / 1_000_000
}

/// Moves the fake clock to `ms_before` milliseconds before the next
/// `window`-ms boundary (0: onto it).
fn to_window_end(h: &Harness, window: u64, ms_before: u64) {
    let now = now_ms(h);
    let end = (now / window + 1) * window;
    h.host().advance_ms(end - ms_before - now);
}

/// Routes `n` connections with `name` as SNI; how many were refused.
fn refused(h: &mut Harness, name: &str, n: usize) -> usize {
    (0..n)
        .filter(|_| match h.route(&sni(name)) {
            RouteDecision::Pass => false,
            d if d == over() => true,
            other => panic!("{name}: unexpected {other:?}"),
        })
        .count()
}

fn info(make: Make<'_>) {
    let h = harness(make, CONFIG);
    assert_eq!(h.info().name, "tenant-limit");
    assert_eq!(h.info().hooks, Hooks::ROUTE);
    assert!(h.info().listen.is_empty(), "refuses on others' ports only");
}

fn under_and_over_the_limit(make: Make<'_>) {
    let mut h = harness(make, CONFIG);
    to_window_end(&h, 1000, 500);
    for i in 1..=3 {
        assert_eq!(
            h.route(&sni("acme.example.com")),
            RouteDecision::Pass,
            "#{i}"
        );
    }
    assert_eq!(
        h.route(&sni("www.acme.example.com")),
        over(),
        "#4, same tenant"
    );
    assert_eq!(h.route(&sni("acme.example.com")), over(), "#5");
    assert_eq!(
        h.route(&plain_conn("192.0.2.1:1", 443)),
        RouteDecision::Pass,
        "no SNI: unknown, passed by default"
    );
    // The counter is where the docs say, and the limit was logged once.
    let index = now_ms(&h) / 1000;
    let count = h.host().kv().get(&window_key("acme", index), now_ms(&h));
    assert_eq!(count, Some(5i64.to_le_bytes().to_vec()));
    let logs: Vec<_> = h
        .host()
        .logs()
        .into_iter()
        .filter(|(_, m)| m.contains("tenant acme reached its limit of 3"))
        .collect();
    assert_eq!(logs.len(), 1, "{:?}", h.host().logs());
}

fn windows_roll_over(make: Make<'_>) {
    let mut h = harness(make, CONFIG);
    to_window_end(&h, 1000, 999);
    assert_eq!(refused(&mut h, "acme.example.com", 5), 2);
    to_window_end(&h, 1000, 1);
    assert_eq!(
        refused(&mut h, "acme.example.com", 1),
        1,
        "last ms of the window"
    );
    h.host().advance_ms(1);
    assert_eq!(refused(&mut h, "acme.example.com", 3), 0, "a new window");
    assert_eq!(refused(&mut h, "acme.example.com", 2), 2);
    // Skipping whole windows is the same as one.
    h.host().advance_ms(10_000);
    assert_eq!(refused(&mut h, "acme.example.com", 4), 1);

    // Old windows' counters expire with their window: the store stays small.
    for _ in 0..20 {
        h.host().advance_ms(1000);
        refused(&mut h, "a.acme.example.com", 4);
        refused(&mut h, "globex.example.net", 1);
    }
    h.host().kv().purge_expired(now_ms(&h));
    assert_eq!(h.host().kv().len(), 2, "one counter per tenant");
}

fn longer_windows(make: Make<'_>) {
    let mut h = harness(
        make,
        r#"{"suffix": "tenants.example.com", "limit": 2, "windowMs": 60000}"#,
    );
    to_window_end(&h, 60_000, 59_000);
    assert_eq!(refused(&mut h, "a.tenants.example.com", 3), 1);
    h.host().advance_ms(58_999);
    assert_eq!(
        refused(&mut h, "a.tenants.example.com", 1),
        1,
        "same minute"
    );
    h.host().advance_ms(1);
    assert_eq!(
        refused(&mut h, "a.tenants.example.com", 3),
        1,
        "next minute"
    );
}

fn tenants_are_independent(make: Make<'_>) {
    let mut h = harness(make, CONFIG);
    to_window_end(&h, 1000, 900);
    assert_eq!(refused(&mut h, "acme.example.com", 10), 7, "limit 3");
    assert_eq!(refused(&mut h, "globex.example.net", 10), 5, "own limit 5");
    assert_eq!(
        refused(&mut h, "free.example.org", 50),
        0,
        "limit 0: unlimited"
    );
    // Suffix tenants, each its own, with the global limit...
    assert_eq!(refused(&mut h, "initech.tenants.example.com", 4), 1);
    assert_eq!(refused(&mut h, "eu.hooli.tenants.example.com", 4), 1);
    assert_eq!(
        refused(&mut h, "us.hooli.tenants.example.com", 1),
        1,
        "same tenant"
    );
    // ...and a configured name reached through the suffix is that tenant.
    assert_eq!(refused(&mut h, "globex.tenants.example.com", 1), 1);
    assert_eq!(refused(&mut h, "acme.tenants.example.com", 1), 1);

    // A configured tenant reached through the suffix keeps its own limit
    // and its counter.
    let mut h = harness(make, CONFIG);
    to_window_end(&h, 1000, 900);
    assert_eq!(
        refused(&mut h, "globex.tenants.example.com", 6),
        1,
        "limit 5, not 3"
    );
    assert_eq!(
        refused(&mut h, "globex.example.net", 1),
        1,
        "the same counter"
    );
}

/// Two instances (here two harnesses on one host, as the proxy's pool
/// shares one store per plugin) count together.
fn instances_share_the_count(make: Make<'_>) {
    let host = Arc::new(FakeHost::new());
    let mut a = make(host.clone(), CONFIG).unwrap();
    let mut b = make(host, CONFIG).unwrap();
    to_window_end(&a, 1000, 900);
    assert_eq!(refused(&mut a, "acme.example.com", 2), 0);
    assert_eq!(refused(&mut b, "acme.example.com", 1), 0);
    assert_eq!(refused(&mut a, "acme.example.com", 1), 1);
    assert_eq!(refused(&mut b, "acme.example.com", 1), 1);
}

fn unknown_tenants(make: Make<'_>) {
    let base = r#""tenants": [{"name": "acme", "domains": ["acme.example.com"]}],
                  "suffix": "tenants.example.com", "limit": 2, "windowMs": 1000"#;
    let unknown = [
        sni("example.org"),
        sni("tenants.example.com"),
        sni("acme.tenants.example.com.evil.test"),
        sni("a_b.tenants.example.com"),
        Connection::tls(
            1,
            Peer::new("192.0.2.1:1".parse().unwrap(), 443),
            ClientHello::without_sni(),
        ),
        plain_conn("192.0.2.1:1", 443),
    ];

    for config in [
        format!("{{{base}}}"),
        format!(r#"{{{base}, "unknown": "pass"}}"#),
    ] {
        let mut h = harness(make, &config);
        for conn in unknown.iter().chain(unknown.iter()) {
            assert_eq!(h.route(conn), RouteDecision::Pass, "{config}: {conn:?}");
        }
        assert!(h.host().kv().is_empty(), "nothing counted");
    }

    let mut h = harness(make, &format!(r#"{{{base}, "unknown": "reject"}}"#));
    for conn in &unknown {
        let alert = conn.tls.is_some().then_some(TlsAlert::AccessDenied);
        assert_eq!(
            h.route(conn),
            RouteDecision::reject("unknown-tenant", alert),
            "{conn:?}"
        );
    }
    assert_eq!(
        refused(&mut h, "acme.example.com", 2),
        0,
        "known ones count"
    );

    let mut h = harness(make, &format!(r#"{{{base}, "unknown": "limit"}}"#));
    to_window_end(&h, 1000, 900);
    let got: Vec<bool> = unknown
        .iter()
        .map(|c| h.route(c) != RouteDecision::Pass)
        .collect();
    assert_eq!(
        got,
        [false, false, true, true, true, true],
        "all one tenant"
    );
    let index = now_ms(&h) / 1000;
    assert!(
        h.host()
            .kv()
            .get(&window_key(UNKNOWN_TENANT, index), now_ms(&h))
            .is_some()
    );
    assert_eq!(
        h.route(&plain_conn("192.0.2.1:1", 80)),
        RouteDecision::reject("tenant-rate-limit", None),
        "no alert on a plain connection"
    );
    assert_eq!(
        refused(&mut h, "acme.example.com", 2),
        0,
        "acme has its own"
    );
}

fn ports_reason_and_alert(make: Make<'_>) {
    let mut h = harness(
        make,
        r#"{"suffix": "t.example", "limit": 1, "ports": [443, 8443],
            "reason": "slow-down", "alert": "handshake-failure"}"#,
    );
    let refuse = RouteDecision::reject("slow-down", Some(TlsAlert::HandshakeFailure));
    assert_eq!(
        h.route(&tls_conn("192.0.2.1:1", 443, "a.t.example")),
        RouteDecision::Pass
    );
    assert_eq!(
        h.route(&tls_conn("192.0.2.1:1", 8443, "a.t.example")),
        refuse
    );
    for _ in 0..3 {
        assert_eq!(
            h.route(&tls_conn("192.0.2.1:1", 9443, "a.t.example")),
            RouteDecision::Pass,
            "another port is not counted"
        );
    }
    let mut h = harness(
        make,
        r#"{"suffix": "t.example", "limit": 0, "alert": "none"}"#,
    );
    assert_eq!(refused(&mut h, "a.t.example", 100), 0, "limit 0");
}

fn bad_configs(make: Make<'_>) {
    for (config, text) in [
        (
            r#"{"limit": 5}"#,
            "tenant-limit config: set \"tenants\", \"suffix\" or both",
        ),
        (r#"{"suffix": "t.example"}"#, "limit: required"),
        (
            r#"{"suffix": "t.example", "limit": -1}"#,
            "limit: -1 is out of range 0-4294967295",
        ),
        (
            r#"{"suffix": "t.example", "limit": "10"}"#,
            "limit: expected a number, got a string",
        ),
        (
            r#"{"suffix": "*.t.example", "limit": 1}"#,
            r#"suffix: "*.t.example" is not a domain name"#,
        ),
        (
            r#"{"suffix": "t.example", "limit": 1, "windowMs": 0}"#,
            "windowMs: 0 is out of range 1-86400000",
        ),
        (
            r#"{"suffix": "t.example", "limit": 1, "unknown": "drop"}"#,
            r#"unknown: "drop" is not one of "pass", "reject", "limit""#,
        ),
        (
            r#"{"suffix": "t.example", "limit": 1, "ports": [0]}"#,
            "ports[0]: 0 is out of range 1-65535",
        ),
        (
            r#"{"suffix": "t.example", "limit": 1, "alert": "denied"}"#,
            r#"alert: "denied" is not one of"#,
        ),
        (
            r#"{"suffix": "t.example", "limit": 1, "window": 5}"#,
            "window: unknown key (expected one of tenants, suffix,",
        ),
        (
            r#"{"tenants": [], "limit": 1}"#,
            "tenants: must not be empty",
        ),
        (
            r#"{"tenants": [{"name": "a", "domains": ["a.example"]}, {"domains": ["b.example"]}], "limit": 1}"#,
            "tenants[1].name: required",
        ),
        (
            r#"{"tenants": [{"name": "a b", "domains": ["a.example"]}], "limit": 1}"#,
            r#"tenants[0].name: "a b" is not a tenant name"#,
        ),
        (
            r#"{"tenants": [{"name": "*", "domains": ["a.example"]}], "limit": 1}"#,
            r#"tenants[0].name: "*" is not a tenant name"#,
        ),
        (
            r#"{"tenants": [{"name": "a", "domains": ["a.example"]}, {"name": "A", "domains": ["b.example"]}], "limit": 1}"#,
            r#"tenants[1].name: "a" is listed twice"#,
        ),
        (
            r#"{"tenants": [{"name": "a", "domains": []}], "limit": 1}"#,
            "tenants[0].domains: must not be empty",
        ),
        (
            r#"{"tenants": [{"name": "a", "domains": ["a.example", 7]}], "limit": 1}"#,
            "tenants[0].domains[1]: expected a string, got a number",
        ),
        (
            r#"{"tenants": [{"name": "a", "domains": ["a.example"], "limit": 1.5}], "limit": 1}"#,
            "tenants[0].limit: 1.5 is not a whole number",
        ),
        (
            r#"{"tenants": [{"name": "a", "domain": ["a.example"]}], "limit": 1}"#,
            "tenants[0].domain: unknown key (expected one of name, domains, limit)",
        ),
        ("[]", "tenant-limit config: expected an object, got a list"),
        ("{", "tenant-limit config: "),
    ] {
        match make(Arc::new(FakeHost::new()), config) {
            Err(CallError::Init(msg)) => assert!(msg.starts_with(text), "{config}: {msg}"),
            Err(other) => panic!("{config}: expected an init error, got {other}"),
            Ok(_) => panic!("{config}: expected an init error"),
        }
    }
}

/// Runs each case natively (`native::<case>`) and from the `.wasm`
/// (`wasm::<case>`).
macro_rules! natively_and_as_wasm {
    ($($case:ident),* $(,)?) => {
        mod native {
            use super::{Harness, TenantLimit};
            $(
                #[test]
                fn $case() {
                    super::$case(&|host, config| {
                        Harness::native_with_host::<TenantLimit>(host, config)
                    });
                }
            )*
        }
        mod wasm {
            $(
                #[test]
                fn $case() {
                    super::$case(&|host, config| {
                        turnout::testing::wasm_harness_with_host(
                            env!("CARGO_MANIFEST_DIR"),
                            host,
                            config,
                        )
                    });
                }
            )*
        }
    };
}

natively_and_as_wasm!(
    info,
    under_and_over_the_limit,
    windows_roll_over,
    longer_windows,
    tenants_are_independent,
    instances_share_the_count,
    unknown_tenants,
    ports_reason_and_alert,
    bad_configs,
);
