//! The keepalive plugin through the SDK harness, natively and as `.wasm`.

use turnout_plugin_keepalive::KeepAlive;
use turnout_plugin_sdk::prelude::*;
use turnout_plugin_sdk::testing::{CallError, Harness, plain_conn, tls_conn};

const CONFIG: &str = r#"{
    "inactivityTimeout": 1000,
    "keepAliveInactivityMultiplier": 3,
    "extendedKeepAliveLifetime": 50000,
    "maxConnectionLifetime": 9000,
    "keepAliveInitialDelay": 2000,
    "routes": {
        "ws": { "keepAliveTreatment": "immortal" },
        "api": { "keepAliveTreatment": "standard", "keepAlive": false, "noDelay": false }
    }
}"#;

fn routed(name: &str) -> Routed {
    Routed::new(name, Target::new("10.0.0.1", 443), TlsMode::Passthrough)
}

fn policy(h: &mut Harness, conn: &Connection, route: &str) -> Policy {
    match h.policy(conn, &routed(route), &Policy::new(Some(1))) {
        PolicyDecision::Set(p) => p,
        PolicyDecision::Pass => panic!("keepalive always answers"),
    }
}

fn cases(h: &mut Harness) {
    assert_eq!(h.info().hooks, Hooks::POLICY);
    let tls = tls_conn("10.1.1.1:5000", 443, "a.example.com");
    let plain = plain_conn("10.1.1.1:5000", 80);

    // Global: extended (the default treatment), multiplied inactivity.
    let p = policy(h, &tls, "other");
    assert_eq!(p.keep_alive_treatment, KeepAliveTreatment::Extended);
    assert_eq!(p.inactivity_timeout, Some(3000));
    assert_eq!(p.max_lifetime, Some(50_000));
    assert_eq!(
        (p.half_open_grace, p.stuck_timeout),
        (300_000, Some(300_000)),
        "TLS: 5 min"
    );
    assert_eq!(p.tcp_keep_alive, Some(2000));
    assert!(p.no_delay);
    let p = policy(h, &plain, "other");
    assert_eq!(
        (p.half_open_grace, p.stuck_timeout),
        (30_000, Some(60_000)),
        "plain: 30 s / 60 s"
    );

    // Per-route overrides.
    let p = policy(h, &tls, "ws");
    assert_eq!(p.keep_alive_treatment, KeepAliveTreatment::Immortal);
    assert_eq!((p.inactivity_timeout, p.max_lifetime), (None, None));
    assert_eq!(
        p.tcp_keep_alive,
        Some(2000),
        "immortal passthrough relies on TCP keep-alive"
    );
    let p = policy(h, &plain, "api");
    assert_eq!(p.keep_alive_treatment, KeepAliveTreatment::Standard);
    assert_eq!(
        (p.inactivity_timeout, p.max_lifetime),
        (Some(1000), Some(9000))
    );
    assert_eq!((p.tcp_keep_alive, p.no_delay), (None, false));
}

fn defaults_cases(h: &mut Harness) {
    let p = policy(h, &tls_conn("10.1.1.1:5000", 443, "x"), "r");
    assert_eq!(
        p.inactivity_timeout,
        Some(14_400_000 * 6),
        "behaviour.md defaults"
    );
    assert_eq!(p.max_lifetime, Some(604_800_000));
    assert_eq!(p.tcp_keep_alive, Some(10_000));
}

fn bad_configs(init: impl Fn(&str) -> Result<Harness, CallError>) {
    for (config, text) in [
        (
            r#"{"keepAliveTreatment":"forever"}"#,
            "keepAliveTreatment: \"forever\" is not one of",
        ),
        (
            r#"{"inactivityTimeot":5}"#,
            "unknown field `inactivityTimeot`",
        ),
        (
            r#"{"routes":{"a":{"keepAliveInactivityMultiplier":0}}}"#,
            "routes.a.keepAliveInactivityMultiplier: must be at least 1",
        ),
        (r#"{"inactivityTimeout":-1}"#, "invalid value"),
    ] {
        match init(config) {
            Err(CallError::Init(msg)) => assert!(msg.contains(text), "{config}: {msg}"),
            Err(other) => panic!("{config}: expected an init error, got {other}"),
            Ok(_) => panic!("{config}: expected an init error"),
        }
    }
}

#[test]
fn native() {
    cases(&mut Harness::native::<KeepAlive>(CONFIG).unwrap());
    defaults_cases(&mut Harness::native::<KeepAlive>("{}").unwrap());
    bad_configs(Harness::native::<KeepAlive>);
}

#[test]
fn wasm() {
    let dir = env!("CARGO_MANIFEST_DIR");
    cases(&mut turnout::testing::wasm_harness(dir, CONFIG).unwrap());
    defaults_cases(&mut turnout::testing::wasm_harness(dir, "{}").unwrap());
    bad_configs(|c| turnout::testing::wasm_harness(dir, c));
}
