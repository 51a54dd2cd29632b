//! Scale-out end to end: several `turnout run` processes sharing one real
//! Redis (`cluster`), as an operator runs them — limits that hold across
//! instances (an HTTP tenant limit, the connection rate per client IP), a
//! round-robin turn shared by all, ACME ordered once and a challenge
//! answered by whichever instance the ACME server reaches, an outage of
//! Redis survived (every instance serves, counting locally) and recovered
//! from, and a rolling restart behind HAProxy that fails no request.
//!
//! Processes rather than in-process apps: the instances must not share
//! anything but Redis, and a drain ends in an exit status. Everything
//! listens on loopback; every wait has a deadline; the logs of the
//! processes (Turnout, Redis, HAProxy, pebble) are printed when a test
//! fails.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use turnout_tests::haproxy::{HaProxy, Server};
use turnout_tests::http::{Kind, backend};
use turnout_tests::node::{Node, Setup};
use turnout_tests::pebble::{self, PebbleOptions};
use turnout_tests::redis::Redis;

/// The key prefix every test's instances share.
const PREFIX: &str = "t1:";
/// Upper bound of one request through a proxy.
const REQUEST: Duration = Duration::from_secs(10);
/// Longest wait for an ACME order (pebble delays each validation up to
/// 1 s and rejects a share of nonces).
const ORDER: Duration = Duration::from_secs(90);

/// The `cluster` object of instance `instance`. The call timeout is
/// generous (the default 25 ms is for a quiet production network; a busy
/// 2-core test machine running three proxies must not see a timeout and
/// start counting locally); heartbeats are frequent so `/api/cluster`
/// lists a new instance soon.
fn cluster(redis: &Redis, instance: &str) -> Value {
    json!({ "redis": redis.url(), "prefix": PREFIX, "instance": instance,
            "timeout": 500, "heartbeat": 500 })
}

/// A node's config: 127.0.0.1 only, its admin API on `admin`, `routes`,
/// the cluster store as `instance`, no per-IP or rate limits, a short
/// drain; then `extra`'s top-level keys.
fn config(redis: &Redis, instance: &str, admin: u16, routes: Value, extra: Value) -> Value {
    let mut c = json!({
        "bind": ["127.0.0.1"],
        "gracefulShutdownTimeout": 5000,
        "maxConnectionsPerIP": 0,
        "connectionRateLimitPerMinute": 0,
        "admin": { "listen": format!("127.0.0.1:{admin}") },
        "cluster": cluster(redis, instance),
        "routes": routes,
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c
}

/// `targets` for one backend.
fn target(addr: SocketAddr) -> Value {
    json!([{ "host": addr.ip().to_string(), "port": addr.port() }])
}

/// Three instances, `edge-1` to `edge-3`, started at once; `make` gets the
/// instance name and its ports (the first port taken is its traffic port
/// by this file's convention: [`port`]).
async fn three(make: impl Fn(&str, &mut Setup<'_>) -> Value) -> Vec<Node> {
    let (a, b, c) = tokio::join!(
        Node::start("edge-1", |s| make("edge-1", s)),
        Node::start("edge-2", |s| make("edge-2", s)),
        Node::start("edge-3", |s| make("edge-3", s)),
    );
    vec![a, b, c]
}

/// A node's traffic port (the first its config took).
fn port(node: &Node) -> u16 {
    node.ports()[0]
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET /` with `Host: host` and `headers` on a new connection to
/// `127.0.0.1:port` (`Connection: close`), read to the end; bounded by
/// [`REQUEST`]. `Err` says what went wrong (refused, reset, no answer).
async fn request(port: u16, host: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
    let exchange = async {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // Named in every error: the client port finds the connection in
        // a balancer's log.
        let me = s.local_addr().map_err(|e| e.to_string())?;
        let mut head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("{me}: write: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("{me}: read (after {} bytes): {e}", raw.len()))?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let Some((head, body)) = raw.split_once("\r\n\r\n") else {
            return Err(format!("{me}: no HTTP response: {raw:?}"));
        };
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status: {head:?}"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(Answer {
            status,
            headers,
            body: body.to_owned(),
        })
    };
    tokio::time::timeout(REQUEST, exchange)
        .await
        .map_err(|_| format!("no answer within {REQUEST:?}"))?
}

/// [`request`] that must get an answer.
async fn answer(node: &Node, host: &str, headers: &[(&str, &str)]) -> Answer {
    request(port(node), host, headers)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", node.name()))
}

/// A sample of `node`'s `/metrics`; panics when the series is absent.
async fn metric(node: &Node, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (status, text) = node.get("/metrics").await;
    assert_eq!(status, 200, "{}: /metrics: {text}", node.name());
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("{}: /metrics does not parse: {e}\n{text}", node.name()));
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        })
        .unwrap_or_else(|| panic!("{}: no {name}{labels:?} in\n{text}", node.name()))
}

/// Polls `check` every 50 ms until it returns `Some`, for up to `within`.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `node`'s `/api/cluster` says `state`; returns the answer.
async fn cluster_state(node: &Node, state: &str, within: Duration) -> Value {
    let what = format!("{} reports the cluster store {state}", node.name());
    eventually(&what, within, || async move {
        let c = node.json("/api/cluster").await;
        (c["state"] == state).then_some(c)
    })
    .await
}

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
async fn acme_orders_once_for_two_instances_and_any_instance_answers_the_challenge() {
    let redis = Redis::start();
    let app = backend("app", Kind::H1).await;
    // Pebble validates HTTP-01 on B's ACME port only (and TLS-ALPN-01
    // nowhere): what A orders, B must answer, from Redis.
    let b_http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pebble = pebble::start(PebbleOptions::new(b_http, 1)).await;
    let acme = |store: std::path::PathBuf, port: u16, extra: Value| {
        let mut a = json!({ "email": "ops@example.test", "directoryUrl": pebble.directory_url(),
                            "directoryCa": pebble.directory_ca_path(), "certificateStore": store,
                            "port": port });
        if let (Some(a), Some(extra)) = (a.as_object_mut(), extra.as_object()) {
            a.extend(extra.clone());
        }
        a
    };
    let auto = |name: &str, port: u16, domain: &str| {
        json!({ "name": name, "match": { "ports": port, "domains": domain },
                "action": { "type": "forward", "targets": target(app.addr),
                            "tls": { "mode": "terminate", "certificate": "auto" } } })
    };
    // Both start at once, each with a certificate store of its own.
    let (a, b) = tokio::join!(
        Node::start("edge-a", |s| {
            let (tls, admin, http) = (s.port(), s.port(), s.port());
            // A wildcard is not ordered up front: `*.dyn.test` names are
            // ordered on demand, by A only.
            let routes = json!([auto("a", tls, "a.test"), auto("dyn", tls, "*.dyn.test")]);
            let extra = json!({ "acme": acme(s.dir().join("acme"), http,
                                             json!({ "onDemand": true, "onDemandTimeout": 60000 })) });
            config(&redis, "edge-a", admin, routes, extra)
        }),
        Node::start("edge-b", |s| {
            let (tls, admin) = (s.port(), s.port());
            let routes = json!([auto("a", tls, "a.test")]);
            let extra = json!({ "acme": acme(s.dir().join("acme"), b_http, json!({})) });
            config(&redis, "edge-b", admin, routes, extra)
        }),
    );
    let root = pebble.issuing_root_pem().await;
    let client = verifying_client(&root);

    // Both serve a.test with the same certificate, ordered once.
    let mut served = Vec::new();
    for node in [&a, &b] {
        let cert = eventually(&format!("{} serves a.test", node.name()), ORDER, || {
            let client = client.clone();
            async move { handshake(port(node), "a.test", client).await.ok() }
        })
        .await;
        served.push(cert);
    }
    assert!(
        served[0] == served[1],
        "both serve the one certificate ordered"
    );
    let (node_a, node_b) = (&a, &b);
    let orders = move |result: &'static str| {
        let (a, b) = (node_a, node_b);
        async move {
            let labels = [("result", result)];
            metric(a, "turnout_acme_orders_total", &labels).await
                + metric(b, "turnout_acme_orders_total", &labels).await
        }
    };
    eventually(
        "the order is counted",
        Duration::from_secs(10),
        || async move { (orders("issued").await >= 1.0).then_some(()) },
    )
    .await;
    assert_eq!(orders("issued").await, 1.0, "exactly one order in total");
    assert_eq!(orders("failed").await, 0.0);
    for node in [&a, &b] {
        let s = certificate_status(node, "a.test").await;
        assert_eq!(s["status"], "valid", "{}: {s}", node.name());
    }
    assert!(
        redis.get(&format!("{PREFIX}acme:cert:a.test")).is_some(),
        "{:?}",
        redis.keys("*")
    );

    // On demand at A; pebble reaches only B, which answers from Redis.
    let issued_before = metric(&a, "turnout_acme_orders_total", &[("result", "issued")]).await;
    let cert = eventually("A serves b.dyn.test", ORDER, || {
        let client = client.clone();
        async move { handshake(port(node_a), "b.dyn.test", client).await.ok() }
    })
    .await;
    assert!(!cert.is_empty());
    assert_eq!(
        metric(&a, "turnout_acme_orders_total", &[("result", "issued")]).await,
        issued_before + 1.0,
        "A ordered b.dyn.test"
    );
    assert_eq!(
        metric(&b, "turnout_acme_orders_total", &[("result", "failed")]).await
            + metric(&a, "turnout_acme_orders_total", &[("result", "failed")]).await,
        0.0
    );
    assert!(
        redis
            .get(&format!("{PREFIX}acme:cert:b.dyn.test"))
            .is_some(),
        "{:?}",
        redis.keys("*")
    );
}

/// A rustls client trusting only `root` (PEM).
fn verifying_client(root: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(root.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A verified handshake with `sni` on `127.0.0.1:port`: the leaf
/// certificate served (DER). The first handshake of an on-demand name
/// waits for its order, hence the long bound.
async fn handshake(
    port: u16,
    sni: &str,
    client: Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, String> {
    let connect = async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        let tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        Ok(turnout_tests::tls::served_serial(&tls))
    };
    tokio::time::timeout(Duration::from_secs(70), connect)
        .await
        .map_err(|_| "handshake timed out".to_owned())?
}

/// `/api/certificates`' ACME entry for `name` on `node`.
async fn certificate_status(node: &Node, name: &str) -> Value {
    let v = node.json("/api/certificates").await;
    v["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["source"] == "acme" && c["names"][0] == name)
        .cloned()
        .unwrap_or(Value::Null)
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

/// What the load through HAProxy saw.
#[derive(Default)]
struct Load {
    /// Requests answered 200.
    ok: AtomicUsize,
    /// Requests that were not, with why.
    failures: Mutex<Vec<String>>,
    /// 200s per instance (`x-served-by`).
    by_node: Mutex<BTreeMap<String, usize>>,
    /// Set once edge-2 is ready again.
    restarted: AtomicBool,
    /// 200s from edge-2 to requests sent after `restarted`.
    by_restarted: AtomicUsize,
    /// Tells the loops to stop.
    stop: AtomicBool,
}

/// The most requests a load sends, and the longest it runs, whatever the
/// test does meanwhile.
const LOAD_MAX: usize = 20_000;
const LOAD_FOR: Duration = Duration::from_secs(90);

/// One client loop: new-connection requests one after the other.
async fn client_loop(load: Arc<Load>, port: u16) {
    let deadline = Instant::now() + LOAD_FOR;
    while !load.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let sent = load.ok.load(Ordering::Relaxed) + load.failures.lock().unwrap().len();
        if sent >= LOAD_MAX {
            break;
        }
        let after_restart = load.restarted.load(Ordering::Relaxed);
        let at = Instant::now();
        match request(port, "app.test", &[]).await {
            Ok(r) if r.status == 200 => {
                load.ok.fetch_add(1, Ordering::Relaxed);
                let node = r.header("x-served-by").unwrap_or("?").to_owned();
                if after_restart && node == "edge-2" {
                    load.by_restarted.fetch_add(1, Ordering::Relaxed);
                }
                *load.by_node.lock().unwrap().entry(node).or_default() += 1;
            }
            Ok(r) => load.failures.lock().unwrap().push(format!(
                "{} after {:?}: {r:?}",
                r.status,
                at.elapsed()
            )),
            Err(e) => load
                .failures
                .lock()
                .unwrap()
                .push(format!("{e} after {:?}", at.elapsed())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_request() {
    let redis = Redis::start();
    let app = backend("app", Kind::H1).await;
    let mut nodes = three(|name, s| {
        let (traffic, admin) = (s.port(), s.port());
        let routes = json!([{ "name": "web", "match": { "ports": traffic, "domains": "app.test" },
            "action": { "type": "forward", "targets": target(app.addr) },
            "headers": { "response": { "x-served-by": name } } }]);
        let extra = json!({ "acceptProxyProtocol": true, "proxyIPs": ["127.0.0.1"] });
        config(&redis, name, admin, routes, extra)
    })
    .await;
    let servers: Vec<Server> = nodes
        .iter()
        .map(|n| Server {
            port: port(n),
            admin: n.admin().port(),
        })
        .collect();
    let haproxy = HaProxy::start(&servers).await;
    haproxy.wait_all_up(Duration::from_secs(10)).await;

    let load = Arc::new(Load::default());
    let loops: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client_loop(load.clone(), haproxy.addr().port())))
        .collect();
    let progress = |n: usize| {
        let load = load.clone();
        move || {
            let load = load.clone();
            async move { (load.ok.load(Ordering::Relaxed) >= n).then_some(()) }
        }
    };
    eventually(
        "200 requests through haproxy",
        Duration::from_secs(30),
        progress(200),
    )
    .await;

    // edge-2 drains and exits cleanly while the load runs.
    nodes[1].sigterm();
    let status = nodes[1].wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "edge-2 exited with {status} after SIGTERM"
    );
    let during = load.ok.load(Ordering::Relaxed);
    eventually(
        "100 more requests while edge-2 is away",
        Duration::from_secs(30),
        progress(during + 100),
    )
    .await;
    // HAProxy's check found it gone (and not a failed request meanwhile:
    // see below).
    eventually("haproxy marks s2 down", Duration::from_secs(10), || async {
        haproxy.log().contains("nodes/s2 is DOWN").then_some(())
    })
    .await;
    nodes[1].restart().await;
    load.restarted.store(true, Ordering::Relaxed);
    eventually(
        "edge-2 serves again after its restart",
        Duration::from_secs(30),
        || {
            let load = load.clone();
            async move { (load.by_restarted.load(Ordering::Relaxed) >= 20).then_some(()) }
        },
    )
    .await;
    load.stop.store(true, Ordering::Relaxed);
    for l in loops {
        tokio::time::timeout(REQUEST * 2, l)
            .await
            .expect("the load stops")
            .expect("a client loop");
    }

    let failures = load.failures.lock().unwrap().clone();
    let by_node = load.by_node.lock().unwrap().clone();
    eprintln!(
        "load: {} answered 200, {} failed; by instance {by_node:?}; by edge-2 after its restart {}",
        load.ok.load(Ordering::Relaxed),
        failures.len(),
        load.by_restarted.load(Ordering::Relaxed)
    );
    if !failures.is_empty() {
        // What HAProxy logged for those connections (by client address),
        // and what edge-2 logged besides its access lines.
        let log = haproxy.log();
        let theirs: Vec<&str> = failures
            .iter()
            .take(10)
            .filter_map(|f| f.split(": ").next())
            .flat_map(|client| {
                log.lines()
                    .filter(move |l| l.starts_with(&format!("{client} ")))
            })
            .collect();
        let edge2: Vec<String> = nodes[1]
            .log()
            .lines()
            .filter(|l| !l.contains("turnout::access") && !l.contains("reason=\"client-closed\""))
            .map(str::to_owned)
            .collect();
        panic!(
            "{} of {} requests failed (first ones: {:?}); served by {by_node:?}\n\
             haproxy on them:\n{}\nedge-2 (but its access lines and connections closed by the client):\n{}",
            failures.len(),
            failures.len() + load.ok.load(Ordering::Relaxed),
            &failures[..failures.len().min(10)],
            theirs.join("\n"),
            edge2.join("\n")
        );
    }
    for name in ["edge-1", "edge-2", "edge-3"] {
        assert!(by_node.get(name).is_some_and(|n| *n > 0), "{by_node:?}");
    }
    // Its stats say so too (a fresh process: only what it served since).
    let stats = nodes[1].json("/api/stats").await;
    assert_eq!(stats["cluster"]["state"], "up", "{}", stats["cluster"]);
}

/// What the rolling restart above runs into now and then, made
/// deterministic: behind an L4 balancer, a connection the balancer has
/// already handed to an instance must get its answer even when its
/// request arrives just after SIGTERM (the balancer cannot send it
/// elsewhere any more: in `mode tcp` it already connected), and be told
/// that the connection closes. Both with the PROXY header already read
/// (as behind HAProxy) and without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_before_a_drain_gets_its_answer() {
    let redis = Redis::start();
    let app = backend("app", Kind::H1).await;
    let start = |name: &'static str, behind_balancer: bool| {
        let (redis, app) = (&redis, &app);
        Node::start(name, move |s| {
            let (traffic, admin) = (s.port(), s.port());
            let routes = json!([{ "name": "web",
                "match": { "ports": traffic, "domains": "app.test" },
                "action": { "type": "forward", "targets": target(app.addr) } }]);
            let extra = if behind_balancer {
                json!({ "acceptProxyProtocol": true, "proxyIPs": ["127.0.0.1"] })
            } else {
                json!({})
            };
            config(redis, name, admin, routes, extra)
        })
    };
    let (mut direct, mut balanced) = tokio::join!(start("direct", false), start("balanced", true));
    // Both first, then the verdicts: each case says something different.
    let mut seen = Vec::new();
    for (node, proxy_header) in [(&mut direct, false), (&mut balanced, true)] {
        let (answer, closed_after) = request_across_sigterm(node, proxy_header).await;
        let what = format!("{} (PROXY header: {proxy_header})", node.name());
        seen.push((what, answer, closed_after));
    }
    let mut wrong = Vec::new();
    for (what, answer, closed_after) in &seen {
        if !answer.starts_with("HTTP/1.1 200") {
            wrong.push(format!(
                "{what}: a request on a connection accepted before SIGTERM got {answer:?}"
            ));
        } else if !answer.to_ascii_lowercase().contains("connection: close") {
            wrong.push(format!(
                "{what}: the answer during a drain does not say the connection closes: {answer:?}"
            ));
        }
        if *closed_after >= Duration::from_secs(2) {
            wrong.push(format!(
                "{what}: the connection was closed {closed_after:?} after the answer began, \
                 not when it was done"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    for node in [&mut direct, &mut balanced] {
        let status = node.wait_exit(Duration::from_secs(30)).await;
        assert!(status.success(), "{}: {status}", node.name());
    }
}

/// Connects to `node` (sending a PROXY v1 header first when
/// `proxy_header`), waits until the connection is accepted, sends SIGTERM,
/// waits until the drain has begun, then sends a request: what came back
/// before the node closed the connection, and how long after the first
/// bytes of the answer it closed it.
async fn request_across_sigterm(node: &mut Node, proxy_header: bool) -> (String, Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", port(node))).await.unwrap();
    if proxy_header {
        let (me, them) = (s.local_addr().unwrap(), s.peer_addr().unwrap());
        let line = format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
            me.port(),
            them.port()
        );
        s.write_all(line.as_bytes()).await.unwrap();
    }
    let node_ref = &*node;
    eventually(
        "the connection is accepted",
        Duration::from_secs(10),
        || async move {
            let stats = node_ref.json("/api/stats").await;
            (stats["connections"]["active"] == 1).then_some(())
        },
    )
    .await;
    node.sigterm();
    let admin = node.admin();
    eventually(
        "the drain began (/readyz not 200)",
        Duration::from_secs(10),
        || async move {
            (!matches!(
                turnout_tests::node::get(admin, "/readyz").await,
                Ok((200, _))
            ))
            .then_some(())
        },
    )
    .await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut first_byte = None;
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + REQUEST;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                first_byte.get_or_insert_with(Instant::now);
                raw.extend_from_slice(&buf[..n]);
            }
            Err(_) => break,
        }
    }
    let closed_after = first_byte.map_or(Duration::ZERO, |t| t.elapsed());
    (String::from_utf8_lossy(&raw).into_owned(), closed_after)
}
