//! `{{name}}` through the SDK harness: every case runs natively (plain
//! `cargo test`, no wasm) and against the built `.wasm` in wasmtime, the way
//! the proxy runs it.

use {{crate}}::{{Type}};
use turnout_plugin_sdk::prelude::*;
use turnout_plugin_sdk::testing::{CallError, Harness, Request, plain_conn, tls_conn};

/// Builds a harness from a config: natively or from the `.wasm`.
type Make<'a> = &'a dyn Fn(&str) -> Result<Harness, CallError>;

fn harness(make: Make<'_>, config: &str) -> Harness {
    make(config).unwrap_or_else(|e| panic!("{config}: {e}"))
}

fn forward(h: &mut Harness, conn: &Connection) -> Forward {
    match h.route(conn) {
        RouteDecision::Forward(f) => f,
        other => panic!("expected a forward, got {other:?}"),
    }
}

fn info(make: Make<'_>) {
    let h = harness(make, "{}");
    assert_eq!(h.info().name, "{{name}}");
    assert_eq!(h.info().hooks, Hooks::ROUTE | Hooks::REQUEST);
    assert_eq!(h.info().tls_ports, vec![PortRange::single(8443)]);
    assert_eq!(h.info().interest.request_headers, ["x-{{name}}"]);
}

fn routes_its_domain(make: Make<'_>) {
    let mut h = harness(make, "{}");
    let f = forward(
        &mut h,
        &tls_conn("10.0.0.1:5000", 8443, "{{name}}.localhost"),
    );
    assert_eq!(f.route, "{{name}}");
    assert_eq!(f.targets, vec![Target::new("127.0.0.1", 9443)]);
}

fn no_opinion_on_other_connections(make: Make<'_>) {
    let mut h = harness(make, "{}");
    for (conn, why) in [
        (
            tls_conn("10.0.0.1:5000", 8443, "other.localhost"),
            "another name",
        ),
        (
            tls_conn("10.0.0.1:5000", 9999, "{{name}}.localhost"),
            "another port",
        ),
        (plain_conn("10.0.0.1:5000", 8443), "no SNI"),
    ] {
        assert_eq!(h.route(&conn), RouteDecision::Pass, "{why}");
    }
}

fn answers_requests_with_its_header(make: Make<'_>) {
    let mut h = harness(make, "{}");
    let req = Request::get("{{name}}.localhost:8443", "/")
        .tls("{{name}}.localhost")
        .header("X-{{name}}", "world");
    assert_eq!(
        h.request(&req),
        RequestDecision::Respond(
            Response::text(200, "hello from {{name}}, world\n").header("x-plugin", "{{name}}")
        )
    );
    // No header, or another domain: left to the rest of the chain.
    let plain = Request::get("{{name}}.localhost", "/");
    assert_eq!(h.request(&plain), RequestDecision::Pass);
    let other = Request::get("other.localhost", "/").header("x-{{name}}", "world");
    assert_eq!(h.request(&other), RequestDecision::Pass);
}

fn configured(make: Make<'_>) {
    let mut h = harness(
        make,
        r#"{"port": 443, "domains": ["*.example.com"], "target": {"host": "10.0.0.9", "port": 8443}}"#,
    );
    let f = forward(&mut h, &tls_conn("10.0.0.1:5000", 443, "a.b.example.com"));
    assert_eq!(f.targets, vec![Target::new("10.0.0.9", 8443)]);
    assert_eq!(
        h.route(&tls_conn("10.0.0.1:5000", 443, "example.com")),
        RouteDecision::Pass
    );
}

fn bad_configs(make: Make<'_>) {
    for (config, text) in [
        (r#"{"port": 0}"#, "port: port 0 is out of range"),
        (r#"{"domain": "x"}"#, "domain: unknown key"),
        (r#"{"domains": []}"#, "domains: expected a non-empty list"),
        (
            r#"{"domains": ["a", 7]}"#,
            "domains[1]: expected a string, got a number",
        ),
        (r#"{"target": {"host": "h"}}"#, "target.port: missing"),
        ("[]", "{{name}} config: expected an object, got a list"),
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
    {{Type}}:
    info,
    routes_its_domain,
    no_opinion_on_other_connections,
    answers_requests_with_its_header,
    configured,
    bad_configs,
);
