//! What one HTTP request's plugin decision costs: the `request` hook of
//! the embedded `routes` plugin through the real wasm runtime, warm
//! (pooled instance), answering `forward`.
//!
//! * `request/routes/plugin-call`: `LoadedPlugin::request` with a head
//!   built once (authority, path, SNI and the one declared header slot
//!   already filled) — the hook's own price: lowering the head, the guest's
//!   match, lifting the answer, the headers moved into the store and back.
//! * `request/routes/chain-per-request`: what the server does per request
//!   (`http::service`): a fresh `RequestHead`, `HeadSlots` filling the slot
//!   from the `HeaderMap`, `Chain::request` over the default chain
//!   (guard → routes → keepalive; only routes has the hook).
//!
//! * `request/probe/forward`: the floor — the `probe` test guest, whose
//!   `request` answers a fixed forward without matching anything, through
//!   the same `LoadedPlugin::request`; the difference to the routes call is
//!   the routes plugin's own work.
//!
//! The plugin has one route, as a terminated HTTPS route is configured,
//! with `match.headers` so that the head carries a declared slot; the head
//! is the HTTPS request a terminated connection would hand it (scheme
//! https, SNI = Host, so the 421 check runs and passes).
//!
//! Goal: ≤ 1 µs median for the plugin call. Criterion reports medians; a
//! second pass times calls one by one for p50/p99.
//!
//! `cargo bench -p turnout-benches --bench request_hook`
//!
//! Times on a shared 2-core machine move by ±30 % from run to run, so
//! changes to the call path are compared by instructions, which do not:
//! with `TURNOUT_BENCH_CALLS=N` (and `TURNOUT_BENCH_ONLY=routes|probe|chain`)
//! the bench makes just N calls, for
//! `valgrind --tool=callgrind --collect-atstart=no
//! '--toggle-collect=*LoadedPlugin*request*'` (`routes`, `probe`) to count
//! per call (Ir ÷ N).

#![allow(clippy::print_stdout)] // a benchmark's output is its report

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use turnout::plugins::{
    Chain, FailurePolicy, HeadSlots, LoadedPlugin, Requested, Runtime, RuntimeConfig,
};
use turnout_benches::plugin_bench::{embedded, percentiles};
use turnout_plugin_sdk::testing::FakeHost;
use turnout_plugin_sdk::{Method, RequestDecision, RequestHead, Scheme};

const PORT: u16 = 8443;
const HOST: &str = "app.test";
const PATH: &str = "/api/v1/items?id=7";

/// The routes plugin's config: one terminated HTTPS route.
fn routes_config() -> String {
    format!(
        r#"{{"routes":[{{"name":"app","match":{{"ports":{PORT},"domains":"{HOST}","headers":{{"x-env":"prod"}}}},
            "action":{{"type":"forward","targets":[{{"host":"127.0.0.1","port":9000}}],
            "tls":{{"mode":"terminate","certificate":{{"cert":"/bench/app.pem","key":"/bench/app.key"}}}}}}}}]}}"#
    )
}

fn load(rt: &Arc<Runtime>, name: &str, config: &str) -> Arc<LoadedPlugin> {
    load_bytes(rt, name, embedded(name), config)
}

fn load_bytes(rt: &Arc<Runtime>, name: &str, bytes: &[u8], config: &str) -> Arc<LoadedPlugin> {
    rt.load_plugin(
        name,
        bytes,
        config,
        FailurePolicy::Closed,
        Arc::new(FakeHost::new()),
    )
    .unwrap_or_else(|e| panic!("{name} loads: {e}"))
}

/// A browser-ish request's headers: the declared one among others, so
/// that filling the slot is a lookup, not the only entry.
fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", HOST),
        ("user-agent", "turnout-bench/1.0"),
        ("accept", "*/*"),
        ("accept-encoding", "gzip, br"),
        ("x-env", "prod"),
        ("x-request-id", "0123456789abcdef"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

/// The head `http::service::answer` builds for a terminated request.
fn head() -> RequestHead {
    let client: SocketAddr = "10.0.0.1:40000".parse().expect("address");
    let mut head = RequestHead::new(client, PORT, Method::parse("GET"), HOST, PATH);
    head.connection_id = 42;
    head.sni = Some(HOST.to_owned());
    head.scheme = Scheme::Https;
    head
}

fn forwarded(d: RequestDecision) {
    match d {
        RequestDecision::Forward(f) => {
            black_box(f);
        }
        other => panic!("expected a forward, got {other:?}"),
    }
}

/// The server's per-request path, from building the head to the verdict.
fn per_request(chain: &Chain, headers: &mut HeaderMap) {
    let mut slots = HeadSlots::new(head());
    match chain.request(&mut slots, black_box(headers)) {
        Requested::Decided { decision, .. } => forwarded(decision),
        other => panic!("expected a decision, got {other:?}"),
    }
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let routes = load(&rt, "routes", &routes_config());
    // The server's default chain; guard with the limits off as the load
    // benchmark runs it, keepalive with its defaults.
    let guard = load(
        &rt,
        "guard",
        r#"{"maxConnectionsPerIP":0,"connectionRateLimitPerMinute":0,"maxConnections":0}"#,
    );
    let chain = Chain::new(vec![guard, routes.clone(), load(&rt, "keepalive", "{}")]);
    let mut hdrs = headers();
    let mut filled = head();
    filled.headers = routes.request_slot_values(&hdrs);
    assert_eq!(
        filled.headers,
        vec![Some(b"prod".to_vec())],
        "the route declares exactly the x-env slot"
    );

    let probe = load_bytes(&rt, "probe", &turnout_tests::guest_bytes("probe"), "bench");
    let mut probe_head = head();
    probe_head.path = "/forward".to_owned();
    probe_head.headers = probe.request_slot_values(&hdrs);

    if let Some(n) = env_calls() {
        // Instruction counts (see the module docs): just the calls.
        let which = std::env::var("TURNOUT_BENCH_ONLY").unwrap_or_default();
        for _ in 0..n {
            match which.as_str() {
                "probe" => forwarded(probe.request(&mut probe_head, &mut hdrs).expect("call")),
                "chain" => per_request(&chain, &mut hdrs),
                _ => forwarded(routes.request(&mut filled, &mut hdrs).expect("call")),
            }
        }
        return;
    }
    let mut group = c.benchmark_group("request");
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("routes/plugin-call", |b| {
        b.iter(|| {
            forwarded(
                routes
                    .request(black_box(&mut filled), &mut hdrs)
                    .expect("call"),
            )
        })
    });
    group.bench_function("routes/chain-per-request", |b| {
        b.iter(|| per_request(&chain, &mut hdrs))
    });
    group.bench_function("probe/forward", |b| {
        b.iter(|| {
            forwarded(
                probe
                    .request(black_box(&mut probe_head), &mut hdrs)
                    .expect("call"),
            )
        })
    });
    group.finish();

    percentiles("request/routes/plugin-call", 200_000, || {
        forwarded(routes.request(&mut filled, &mut hdrs).expect("call"))
    });
    percentiles("request/routes/chain-per-request", 200_000, || {
        per_request(&chain, &mut hdrs)
    });
    percentiles("request/probe/forward", 200_000, || {
        forwarded(probe.request(&mut probe_head, &mut hdrs).expect("call"))
    });

    for p in chain.plugins().iter().chain([&probe]) {
        let snap = p.metrics().snapshot();
        assert_eq!(
            snap.failures.iter().map(|(_, n)| n).sum::<u64>(),
            0,
            "{}: calls failed during the benchmark",
            p.name()
        );
    }
    assert_eq!(hdrs.len(), 6, "the headers came back from the store intact");
}

/// `TURNOUT_BENCH_CALLS=N`: make N calls and nothing else.
fn env_calls() -> Option<usize> {
    std::env::var("TURNOUT_BENCH_CALLS").ok()?.parse().ok()
}

criterion_group!(request_hook, benches);
criterion_main!(request_hook);
