//! What the cluster store (`cluster`) costs per call, against a real
//! `redis-server` on loopback started by the bench: the calls a plugin's
//! key-value imports make (each holds the calling worker thread for its
//! round trip) and the connection-rate count every new connection awaits.
//!
//! * `cluster/kv-increment`: `SharedKv::increment` with a TTL — one Lua
//!   script, what a `rateLimit` request or a round-robin pick costs.
//! * `cluster/kv-get`: `SharedKv::get` with the read cache off (the host's
//!   cache answers repeated reads locally for `kvReadCacheMs`).
//! * `cluster/kv-set`: `SharedKv::set` with a TTL — one Lua script.
//! * `cluster/connection-count`: `Cluster::count_connection` — one Lua
//!   script, awaited on a current-thread runtime here (on the proxy, on
//!   the connection's task).
//!
//! After the timed passes, Redis's own time per command (`INFO
//! commandstats`) says how much of a round trip is Redis's work and how
//! much the network and the client. Nothing is asserted on time.
//!
//! `cargo bench -p turnout-benches --bench cluster_store` (needs Debian's
//! `redis-server`)

#![allow(clippy::print_stdout)] // a benchmark's output is its report

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use turnout::cluster::Cluster;
use turnout::config::cluster::ClusterConfig;
use turnout::plugins::SharedKv;
use turnout_benches::plugin_bench::percentiles;
use turnout_tests::redis::Redis;

const PLUGIN: &str = "bench";
/// The per-plugin key bound the calls carry (the default `maxEntries`).
const MAX_ENTRIES: usize = 10_000;

fn benches(c: &mut Criterion) {
    let redis = Redis::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = Cluster::start(ClusterConfig {
        redis: redis.url(),
        prefix: "bench:".to_owned(),
        instance: "bench-1".to_owned(),
        // Generous: a timed-out call would be answered locally and
        // measure the fallback, not Redis.
        timeout: Duration::from_secs(1),
        kv_read_cache: Duration::ZERO,
        heartbeat: Duration::from_secs(2),
    })
    .expect("cluster store");
    assert!(
        rt.block_on(cluster.wait_connected(Duration::from_secs(10))),
        "the bench's redis-server answers"
    );
    let kv: Arc<dyn SharedKv> = cluster.shared_kv();
    let increment = || {
        let n = kv
            .increment(PLUGIN, "counter", 1, Some(60_000), MAX_ENTRIES)
            .expect("shared")
            .expect("a counter");
        black_box(n);
    };
    let get = || {
        black_box(kv.get(PLUGIN, "value").expect("shared"));
    };
    let set = || {
        kv.set(
            PLUGIN,
            "value",
            b"0123456789abcdef",
            Some(60_000),
            MAX_ENTRIES,
        )
        .expect("shared");
    };
    let ip: IpAddr = "192.0.2.10".parse().expect("address");
    let count = || {
        black_box(
            rt.block_on(cluster.count_connection(ip))
                .expect("counted in redis"),
        );
    };
    set();

    let mut group = c.benchmark_group("cluster");
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("kv-increment", |b| b.iter(increment));
    group.bench_function("kv-get", |b| b.iter(get));
    group.bench_function("kv-set", |b| b.iter(set));
    group.bench_function("connection-count", |b| b.iter(count));
    group.finish();

    redis.query::<()>(::redis::cmd("CONFIG").arg("RESETSTAT"));
    percentiles("cluster/kv-increment", 20_000, increment);
    percentiles("cluster/kv-get", 20_000, get);
    percentiles("cluster/kv-set", 20_000, set);
    percentiles("cluster/connection-count", 20_000, count);
    let stats: String = redis.query(::redis::cmd("INFO").arg("commandstats"));
    println!("redis-server's own time per command over the timed passes:");
    for line in stats.lines().filter(|l| l.starts_with("cmdstat_")) {
        println!("  {line}");
    }
    let view = cluster.view();
    println!(
        "the store's own round trips (µs, every call above): p50 {:?}, p99 {:?}",
        view.p50_us, view.p99_us
    );
    assert_eq!(
        (view.fallbacks, view.errors),
        (0, 0),
        "calls were answered locally: the numbers are not Redis's"
    );
}

criterion_group!(cluster_store, benches);
criterion_main!(cluster_store);
