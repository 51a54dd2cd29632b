//! Scale-out end to end: several `turnout run` processes sharing one real
//! Redis (`cluster`), as an operator runs them — limits that hold across
//! instances (an HTTP tenant limit, the connection rate per client IP), a
//! round-robin turn shared by all, and an outage of Redis survived (every
//! instance serves, counting locally) and recovered from. ACME across
//! instances is in `cluster_acme.rs`; rolling restarts and drains behind
//! HAProxy in `cluster_rollout.rs`.
//!
//! Processes rather than in-process apps: the instances must not share
//! anything but Redis, and a drain ends in an exit status. Everything
//! listens on loopback; every wait has a deadline; the logs of the
//! processes are printed when a test fails. Shared helpers:
//! `turnout_tests::cluster`.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use turnout_tests::cluster::{
    PREFIX, REQUEST, answer, cluster_state, config, eventually, metric, port, target, three,
};
use turnout_tests::http::{Kind, backend};
use turnout_tests::node::Node;
use turnout_tests::redis::Redis;

/// A plain HTTP route for `api.test` on `port` to `to`, `maxRequests`
/// per minute per `x-tenant` header value.
fn tenant_limited(port: u16, to: SocketAddr, max: u32) -> Value {
    json!([{ "name": "api", "match": { "ports": port, "domains": "api.test" },
             "action": { "type": "forward", "targets": target(to) },
             "security": { "rateLimit": { "enabled": true, "maxRequests": max, "window": 60,
                                           "keyBy": "header", "headerName": "x-tenant" } } }])
}

/// An echo round trip on a new connection to `port`; `Err` when the
/// proxy refused it (closed without relaying).
async fn echo(port: u16) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut back = [0u8; 4];
    match tokio::time::timeout(REQUEST, s.read_exact(&mut back)).await {
        Ok(Ok(_)) if &back == b"ping" => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_limit_holds_across_three_instances() {
    let redis = Redis::start();
    let app = backend("app", Kind::H1).await;
    let mut nodes = three(|name, s| {
        let (traffic, admin) = (s.port(), s.port());
        config(
            &redis,
            name,
            admin,
            tenant_limited(traffic, app.addr, 5),
            json!({}),
        )
    })
    .await;

    // Rotating over the instances: the first five of the tenant pass,
    // whichever instance counted them; the sixth and seventh do not.
    for i in 0..7 {
        let node = &nodes[i % 3];
        let r = answer(node, "api.test", &[("x-tenant", "acme")]).await;
        let expected = if i < 5 { 200 } else { 429 };
        assert_eq!(
            r.status,
            expected,
            "request {} of tenant acme, on {}: {r:?}",
            i + 1,
            node.name()
        );
        if expected == 429 {
            assert_eq!(r.header("retry-after"), Some("60"), "{r:?}");
        }
    }
    // Another tenant has a count of its own, on every instance.
    for node in &nodes {
        let r = answer(node, "api.test", &[("x-tenant", "globex")]).await;
        assert_eq!(r.status, 200, "tenant globex on {}: {r:?}", node.name());
    }
    // The count is Redis's (the routes plugin's counter through kv-increment).
    let key = format!("{PREFIX}kv:routes:c:rl:0:acme");
    let counted: i64 = redis
        .get(&key)
        .unwrap_or_else(|| panic!("no {key} in {:?}", redis.keys("*")))
        .parse()
        .expect("a counter");
    assert!(counted >= 5, "{key} = {counted}");
    for node in &nodes {
        assert_eq!(
            metric(node, "turnout_cluster_fallbacks_total", &[]).await,
            0.0
        );
    }
    for node in &mut nodes {
        node.stop().await;
    }

    // The connection rate per client IP: 4 a minute across all three.
    let (echo_addr, _) = turnout_tests::l4::echo_backend().await;
    let nodes = three(|name, s| {
        let (traffic, admin) = (s.port(), s.port());
        let routes = json!([{ "name": "tcp", "match": { "ports": traffic },
                              "action": { "type": "forward", "targets": target(echo_addr) } }]);
        config(
            &redis,
            name,
            admin,
            routes,
            json!({ "connectionRateLimitPerMinute": 4 }),
        )
    })
    .await;
    for i in 0..6 {
        let node = &nodes[i % 3];
        let relayed = echo(port(node)).await;
        if i < 4 {
            relayed
                .unwrap_or_else(|e| panic!("connection {} on {} refused: {e}", i + 1, node.name()));
        } else {
            assert!(
                relayed.is_err(),
                "connection {} on {} relayed past the cluster-wide rate of 4",
                i + 1,
                node.name()
            );
        }
    }
    assert_eq!(
        redis.keys(&format!("{PREFIX}rate:*")),
        vec![format!("{PREFIX}rate:127.0.0.1")],
        "one shared window, for the one client IP"
    );
}

/// A backend on `ip:port` answering every request with `name`, counting
/// them.
fn named_backend(l: TcpListener, name: &'static str, hits: Arc<AtomicUsize>) {
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let hits = hits.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    hits.fetch_add(1, Ordering::Relaxed);
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(name))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
}

/// Backends `b1`, `b2`, `b3` on 127.0.0.1, 127.0.0.2 and 127.0.0.3, one
/// port (a host list shares its target's port): the port.
async fn three_hosts_one_port() -> u16 {
    for _ in 0..20 {
        let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        let (Ok(second), Ok(third)) = (
            TcpListener::bind(("127.0.0.2", port)).await,
            TcpListener::bind(("127.0.0.3", port)).await,
        ) else {
            continue;
        };
        for (l, name) in [(first, "b1"), (second, "b2"), (third, "b3")] {
            named_backend(l, name, Arc::default());
        }
        return port;
    }
    panic!("no port free on 127.0.0.1, 127.0.0.2 and 127.0.0.3 at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_robin_counter_is_shared() {
    let redis = Redis::start();
    let up = three_hosts_one_port().await;
    let nodes = three(|name, s| {
        let (traffic, admin) = (s.port(), s.port());
        let routes = json!([{ "name": "rr", "match": { "ports": traffic, "domains": "rr.test" },
            "action": { "type": "forward",
                        "targets": [{ "host": ["127.0.0.1", "127.0.0.2", "127.0.0.3"], "port": up }] } }]);
        config(&redis, name, admin, routes, json!({}))
    })
    .await;

    // Every instance lists the three, itself marked.
    let names: BTreeSet<&str> = ["edge-1", "edge-2", "edge-3"].into();
    for node in &nodes {
        let c = eventually(
            &format!("{} lists three instances", node.name()),
            Duration::from_secs(10),
            || async move {
                let c = node.json("/api/cluster").await;
                (c["instances"].as_array().map(Vec::len) == Some(3)).then_some(c)
            },
        )
        .await;
        assert_eq!(
            (&c["enabled"], &c["state"], &c["instance"], &c["prefix"]),
            (
                &json!(true),
                &json!("up"),
                &json!(node.name()),
                &json!(PREFIX)
            ),
            "{c}"
        );
        let listed = c["instances"].as_array().unwrap();
        let seen: BTreeSet<&str> = listed
            .iter()
            .filter_map(|i| i["instance"].as_str())
            .collect();
        assert_eq!(seen, names, "{c}");
        for i in listed {
            assert_eq!(i["self"], json!(i["instance"] == node.name()), "{c}");
            assert!(
                i["pid"].as_u64().is_some() && i["seen"].as_u64().is_some(),
                "{i}"
            );
        }
        assert_eq!(
            metric(node, "turnout_cluster_instances", &[]).await,
            3.0,
            "{}",
            node.name()
        );
    }

    // Nine requests rotating over the instances: one turn, shared.
    let mut hit = Vec::new();
    for i in 0..9 {
        let node = &nodes[i % 3];
        let r = answer(node, "rr.test", &[]).await;
        assert_eq!(r.status, 200, "request {} on {}: {r:?}", i + 1, node.name());
        hit.push(r.body);
    }
    let order = ["b1", "b2", "b3"];
    let first = order
        .iter()
        .position(|b| *b == hit[0])
        .unwrap_or_else(|| panic!("{hit:?}"));
    let expected: Vec<&str> = (0..9).map(|i| order[(first + i) % 3]).collect();
    assert_eq!(hit, expected, "strict rotation across the instances");
    assert!(
        redis.get(&format!("{PREFIX}kv:routes:c:rr:0")).is_some(),
        "the turn is in Redis: {:?}",
        redis.keys("*")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_is_survived_and_recovered() {
    let mut redis = Redis::start();
    let app = backend("app", Kind::H1).await;
    let nodes = three(|name, s| {
        let (traffic, admin) = (s.port(), s.port());
        config(
            &redis,
            name,
            admin,
            tenant_limited(traffic, app.addr, 3),
            json!({}),
        )
    })
    .await;
    let tenant = |t: &'static str| [("x-tenant", t)];
    // Shared while Redis is up.
    for i in 0..4 {
        let r = answer(&nodes[i % 3], "api.test", &tenant("before")).await;
        assert_eq!(r.status, if i < 3 { 200 } else { 429 }, "request {}", i + 1);
    }

    redis.kill();
    // Every instance keeps serving, counting on its own: two requests of
    // one tenant on each (six in all, over the limit of three had they
    // been counted together) all pass.
    for round in 0..2 {
        for node in &nodes {
            let r = answer(node, "api.test", &tenant("during")).await;
            assert_eq!(
                r.status,
                200,
                "round {round} on {} with Redis gone: {r:?}",
                node.name()
            );
        }
    }
    for node in &nodes {
        let c = cluster_state(node, "down", Duration::from_secs(10)).await;
        assert_eq!(c["instances"], json!([]), "{c}");
        let (status, _) = node.get("/readyz").await;
        assert_eq!(status, 200, "{}: ready without Redis", node.name());
        // A kv call now is answered locally at once.
        let r = answer(node, "api.test", &tenant("during-2")).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(metric(node, "turnout_cluster_up", &[]).await, 0.0);
        let fallbacks = metric(node, "turnout_cluster_fallbacks_total", &[]).await;
        assert!(fallbacks > 0.0, "{}: {fallbacks} fallbacks", node.name());
        assert!(metric(node, "turnout_cluster_transitions_total", &[("to", "down")]).await >= 1.0);
    }
    node_logged(&nodes, "cluster store unreachable").await;

    redis.restart();
    for node in &nodes {
        cluster_state(node, "up", Duration::from_secs(10)).await;
        assert_eq!(metric(node, "turnout_cluster_up", &[]).await, 1.0);
    }
    node_logged(&nodes, "cluster store reachable again").await;
    // Shared again: a fresh tenant's limit holds across the instances.
    for i in 0..5 {
        let node = &nodes[i % 3];
        let r = answer(node, "api.test", &tenant("after")).await;
        assert_eq!(
            r.status,
            if i < 3 { 200 } else { 429 },
            "request {} of tenant after, on {}, Redis back: {r:?}",
            i + 1,
            node.name()
        );
    }
    // And each instance's heartbeat is back in the (emptied) store.
    let redis = &redis;
    eventually(
        "three heartbeats again",
        Duration::from_secs(10),
        || async move { (redis.keys(&format!("{PREFIX}instance:*")).len() == 3).then_some(()) },
    )
    .await;
}

/// Waits until every node has logged `what`.
async fn node_logged(nodes: &[Node], what: &str) {
    for node in nodes {
        node.wait_log(what, Duration::from_secs(10)).await;
    }
}
