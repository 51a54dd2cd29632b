//! What a plugin decision costs.
//!
//! * a warm `route` call: trivial plugin, 1000-route table plugin;
//! * the same with deadlines (epoch interruption) off, to price them;
//! * a call that needs a fresh instance (instantiate from `InstancePre` +
//!   `init` + call + drop), with and without the pooling allocator;
//! * `admit` through the chain with the embedded `guard` plugin: no lists,
//!   allow/block lists of 4 and of 1000 patterns (admitted: not blocked,
//!   matches the last allow entry; denied: matches the last block entry —
//!   the worst cases when lists were scanned in order; `IpList` now
//!   searches merged ranges, so the length should barely show).
//!
//! Criterion reports medians; a second pass times calls one by one and
//! prints p50/p99 (criterion has no tail percentiles).
//!
//! `cargo bench -p turnout-benches --bench plugin_calls`

#![allow(clippy::print_stdout)] // a benchmark's output is its report

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use turnout::plugins::{Admission, Chain, FailurePolicy, LoadedPlugin, Runtime, RuntimeConfig};
use turnout_benches::plugin_bench::{embedded, percentiles};
use turnout_plugin_sdk::testing::{FakeHost, peer, tls_conn};
use turnout_plugin_sdk::{Connection, Peer, RouteDecision};
use turnout_tests::guest_bytes;

fn plugin(config: RuntimeConfig, fixture: &str, plugin_config: &str) -> Arc<LoadedPlugin> {
    load(config, fixture, &guest_bytes(fixture), plugin_config)
}

/// The embedded `routes` default plugin with `n` SmartProxy routes: exact
/// domains `svcI.example.com` plus one wildcard per hundred.
fn routes_plugin(n: usize) -> Arc<LoadedPlugin> {
    let routes: Vec<String> = (0..n)
        .map(|i| {
            let domain = if i % 100 == 99 {
                format!("*.zone{i}.example.com")
            } else {
                format!("svc{i}.example.com")
            };
            format!(
                r#"{{"name":"r{i}","match":{{"ports":443,"domains":"{domain}"}},"action":{{"type":"forward","targets":[{{"host":"10.0.{}.{}","port":443}}],"tls":{{"mode":"passthrough"}}}}}}"#,
                i / 250,
                i % 250
            )
        })
        .collect();
    let config = format!(r#"{{"routes":[{}]}}"#, routes.join(","));
    let bytes = embedded("routes");
    load(RuntimeConfig::default(), "routes", bytes, &config)
}

/// The embedded `guard` plugin (default limits) with `n` allow and `n`
/// block patterns, mixing exact addresses, CIDRs, ranges and wildcards.
/// `10.200.0.1` matches only the last allow pattern; `10.201.0.1` only the
/// last block pattern.
fn guard_chain(n: usize) -> Chain {
    let pattern = |i: usize, second: usize| match i % 4 {
        0 => format!("192.{second}.{}.{}", i / 250 % 250, i % 250),
        1 => format!("172.{second}.{}.0/24", i / 250 % 250),
        2 => format!("198.{second}.{0}.1-198.{second}.{0}.100", i % 250),
        _ => format!("203.{second}.{}.*", i % 250),
    };
    let lists = (n > 0).then(|| {
        let mut allow: Vec<String> = (0..n - 1).map(|i| pattern(i, 1)).collect();
        allow.push("10.200.0.0/16".to_owned());
        let mut block: Vec<String> = (0..n - 1).map(|i| pattern(i, 2)).collect();
        block.push("10.201.0.1".to_owned());
        format!(
            r#","defaults":{{"security":{{"ipAllowList":["{}"],"ipBlockList":["{}"]}}}}"#,
            allow.join(r#"",""#),
            block.join(r#"",""#)
        )
    });
    let config = format!(
        r#"{{"maxConnectionsPerIP":100{}}}"#,
        lists.unwrap_or_default()
    );
    let bytes = embedded("guard");
    Chain::new(vec![load(
        RuntimeConfig::default(),
        "guard",
        bytes,
        &config,
    )])
}

fn admit(chain: &Chain, peer: &Peer, admitted: bool) {
    match chain.admit(black_box(peer)) {
        Admission::Admit if admitted => {}
        Admission::Deny { reason, .. } if !admitted => {
            black_box(reason);
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn load(config: RuntimeConfig, name: &str, bytes: &[u8], plugin_config: &str) -> Arc<LoadedPlugin> {
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: None,
        // Building a 10 000-route table at init takes longer than a call.
        init_deadline: Duration::from_secs(30),
        ..config
    })
    .expect("runtime");
    rt.load_plugin(
        name,
        bytes,
        plugin_config,
        FailurePolicy::Closed,
        Arc::new(FakeHost::new()),
    )
    .expect("plugin loads")
}

fn route(p: &LoadedPlugin, conn: &Connection) {
    match p.route(black_box(conn)) {
        Ok(RouteDecision::Forward(f)) => {
            black_box(f);
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn benches(c: &mut Criterion) {
    // svc5 exists in every table size (10, 1000, 10 000 routes).
    let conn = tls_conn("10.0.0.1:40000", 443, "svc5.example.com");
    let pooled = RuntimeConfig::default();
    let on_demand = RuntimeConfig {
        pooling: false,
        ..RuntimeConfig::default()
    };
    let no_deadline = RuntimeConfig {
        deadlines: false,
        ..RuntimeConfig::default()
    };
    let fresh = |pooling| RuntimeConfig {
        pooling,
        max_calls_per_instance: 1,
        max_idle_instances: 0,
        ..RuntimeConfig::default()
    };

    let cases: Vec<(&str, Arc<LoadedPlugin>, usize)> = vec![
        (
            "route/warm/trivial",
            plugin(pooled.clone(), "trivial", "{}"),
            200_000,
        ),
        (
            "route/warm/table-1000",
            plugin(pooled.clone(), "table", r#"{"routes":1000}"#),
            200_000,
        ),
        (
            "route/warm/table-1000/no-deadline",
            plugin(no_deadline, "table", r#"{"routes":1000}"#),
            200_000,
        ),
        (
            "route/warm/trivial/on-demand-allocator",
            plugin(on_demand, "trivial", "{}"),
            200_000,
        ),
        ("route/warm/routes-plugin-10", routes_plugin(10), 200_000),
        (
            "route/warm/routes-plugin-1000",
            routes_plugin(1_000),
            200_000,
        ),
        (
            "route/warm/routes-plugin-10000",
            routes_plugin(10_000),
            200_000,
        ),
        (
            "route/fresh-instance/pooling",
            plugin(fresh(true), "trivial", "{}"),
            20_000,
        ),
        (
            "route/fresh-instance/on-demand",
            plugin(fresh(false), "trivial", "{}"),
            20_000,
        ),
    ];

    let mut group = c.benchmark_group("plugin");
    group.measurement_time(Duration::from_secs(4));
    for (name, p, _) in &cases {
        group.bench_function(*name, |b| b.iter(|| route(p, &conn)));
    }
    group.finish();

    for (name, p, n) in &cases {
        percentiles(name, *n, || route(p, &conn));
    }
    let admitted = peer("10.200.0.1:40000", 443);
    let blocked = peer("10.201.0.1:40000", 443);
    let admit_cases: Vec<(&str, Chain, &Peer, bool)> = vec![
        ("admit/guard/no-lists", guard_chain(0), &admitted, true),
        (
            "admit/guard/lists-4/admitted",
            guard_chain(4),
            &admitted,
            true,
        ),
        (
            "admit/guard/lists-4/blocked",
            guard_chain(4),
            &blocked,
            false,
        ),
        (
            "admit/guard/lists-1000/admitted",
            guard_chain(1000),
            &admitted,
            true,
        ),
        (
            "admit/guard/lists-1000/blocked",
            guard_chain(1000),
            &blocked,
            false,
        ),
    ];
    let mut group = c.benchmark_group("plugin");
    group.measurement_time(Duration::from_secs(4));
    for (name, chain, p, ok) in &admit_cases {
        group.bench_function(*name, |b| b.iter(|| admit(chain, p, *ok)));
    }
    group.finish();
    for (name, chain, p, ok) in &admit_cases {
        percentiles(name, 200_000, || admit(chain, p, *ok));
    }

    let guards = admit_cases
        .iter()
        .flat_map(|(name, chain, ..)| chain.plugins().iter().map(move |p| (*name, p)));
    for (name, p) in cases.iter().map(|(n, p, _)| (*n, p)).chain(guards) {
        let snap = p.metrics().snapshot();
        assert_eq!(
            snap.failures.iter().map(|(_, n)| n).sum::<u64>(),
            0,
            "{name}: calls failed during the benchmark"
        );
    }
}

criterion_group!(plugin_calls, benches);
criterion_main!(plugin_calls);
