//! SmartProxy's documented scenarios through the embedded default plugins
//! (`routes`, `guard`, `keepalive`) and a pasted route list — real clients,
//! real backends, the proxy as `turnout run` starts it.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnout_tests::app::{Ports, RunningApp};
use turnout_tests::l4::{STEP, echo_backend, read_to_end, tls_backend, tls_greeting};

fn target(addr: std::net::SocketAddr) -> serde_json::Value {
    json!([{ "host": addr.ip().to_string(), "port": addr.port() }])
}

fn config(routes: serde_json::Value, extra: serde_json::Value) -> String {
    let mut c = json!({ "bind": ["127.0.0.1"], "gracefulShutdownTimeout": 500, "routes": routes });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c.to_string()
}

/// Echo round trip on a plain port; `Err` when the proxy refused.
async fn echo(port: u16) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut back = [0u8; 4];
    match tokio::time::timeout(STEP, s.read_exact(&mut back)).await {
        Ok(Ok(_)) if &back == b"ping" => Ok(s),
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_by_sni_wildcards_and_a_catch_all() {
    let a = tls_backend("a.test", "backend A").await;
    let b = tls_backend("b.test", "backend B").await;
    let w = tls_backend("x.wild.test", "backend W").await;
    let c = tls_backend("other.test", "backend C").await;
    let mut ports = Ports::default();
    let port = ports.take();
    let tls = json!({ "mode": "passthrough" });
    let routes = json!([
        { "name": "a", "match": { "ports": port, "domains": "a.test" }, "action": { "type": "forward", "targets": target(a), "tls": tls } },
        { "name": "b", "match": { "ports": port, "domains": ["b.test"] }, "action": { "type": "forward", "targets": target(b), "tls": tls } },
        { "name": "wild", "match": { "ports": port, "domains": "*.wild.test" }, "action": { "type": "forward", "targets": target(w), "tls": tls } },
        { "name": "rest", "priority": -1, "match": { "ports": port }, "action": { "type": "forward", "targets": target(c), "tls": tls } }
    ]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;
    let proxy = app.addrs[0];
    assert_eq!(tls_greeting(proxy, "a.test").await.unwrap(), "backend A");
    assert_eq!(tls_greeting(proxy, "b.test").await.unwrap(), "backend B");
    assert_eq!(
        tls_greeting(proxy, "x.y.wild.test").await.unwrap(),
        "backend W",
        "* spans dots"
    );
    assert_eq!(
        tls_greeting(proxy, "wild.test").await.unwrap(),
        "backend C",
        "bare domain is not the wildcard"
    );
    assert_eq!(
        tls_greeting(proxy, "anything.else").await.unwrap(),
        "backend C",
        "catch-all"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_block_lists_and_the_per_ip_limit() {
    let (echo_addr, _) = echo_backend().await;
    let mut ports = Ports::default();
    let (open, blocked, allowed_only) = (ports.take(), ports.take(), ports.take());
    let routes = json!([
        { "name": "open", "match": { "ports": open }, "action": { "type": "forward", "targets": target(echo_addr) } },
        { "name": "blocked", "match": { "ports": blocked }, "action": { "type": "forward", "targets": target(echo_addr) },
          "security": { "ipAllowList": ["127.0.0.0/8"], "ipBlockList": ["127.0.0.1"] } },
        { "name": "allowed-only", "match": { "ports": allowed_only }, "action": { "type": "forward", "targets": target(echo_addr) },
          "security": { "ipAllowList": ["10.0.0.0/8"] } }
    ]);
    let app = RunningApp::start_with(
        &config(routes, json!({ "maxConnectionsPerIP": 100 })),
        ports,
    )
    .await;
    echo(open).await.expect("no lists: allowed");
    echo(blocked)
        .await
        .expect_err("the block list wins over the allow list");
    echo(allowed_only).await.expect_err("not in the allow list");

    // 100 concurrent connections from 127.0.0.1 are fine; the 101st is refused.
    let mut held = Vec::new();
    for i in 0..100 {
        held.push(
            echo(open)
                .await
                .unwrap_or_else(|e| panic!("connection {}: {e}", i + 1)),
        );
    }
    echo(open)
        .await
        .expect_err("the 101st connection from one IP");
    held.pop();
    // Released slots are reusable (the count went down, not just up).
    let mut again = Err(String::new());
    let deadline = Instant::now() + STEP;
    while again.is_err() && Instant::now() < deadline {
        again = echo(open).await;
    }
    again.expect("a slot freed by a closed connection is reusable");
    drop(held);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_and_route_max_connections() {
    let (echo_addr, _) = echo_backend().await;
    let mut ports = Ports::default();
    let (rated, capped) = (ports.take(), ports.take());
    let routes = json!([
        { "name": "rated", "match": { "ports": rated }, "action": { "type": "forward", "targets": target(echo_addr) } },
        { "name": "capped", "match": { "ports": capped }, "action": { "type": "forward", "targets": target(echo_addr) },
          "security": { "maxConnections": 2 } }
    ]);
    let app = RunningApp::start_with(
        &config(routes, json!({ "connectionRateLimitPerMinute": 6 })),
        ports,
    )
    .await;
    let first = echo(capped).await.expect("1st on the capped route");
    let second = echo(capped).await.expect("2nd on the capped route");
    echo(capped)
        .await
        .expect_err("route maxConnections is enforced");
    drop((first, second));
    // Three new connections so far (the refused one counts too); at 6 a
    // minute, three more are allowed and the next is refused.
    let mut allowed = 0;
    for _ in 0..10 {
        match echo(rated).await {
            Ok(s) => {
                allowed += 1;
                drop(s);
            }
            Err(_) => break,
        }
    }
    assert_eq!(allowed, 3, "connectionRateLimitPerMinute: 6");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_treatments_standard_extended_and_immortal() {
    let (echo_addr, _) = echo_backend().await;
    let mut results = Vec::new();
    for (treatment, expect_closed_after) in [
        ("standard", Some(300)),
        ("extended", Some(600)),
        ("immortal", None),
    ] {
        let mut ports = Ports::default();
        let port = ports.take();
        let routes = json!([
            { "name": "idle", "match": { "ports": port }, "action": { "type": "forward", "targets": target(echo_addr) } }
        ]);
        let extra = json!({
            "inactivityTimeout": 300,
            "keepAliveTreatment": treatment,
            "keepAliveInactivityMultiplier": 2
        });
        let app = RunningApp::start_with(&config(routes, extra), ports).await;
        let mut s = echo(port).await.unwrap();
        let idle_since = Instant::now();
        match expect_closed_after {
            Some(ms) => {
                assert_eq!(read_to_end(&mut s).await, b"", "{treatment}");
                let waited = idle_since.elapsed();
                assert!(
                    waited >= Duration::from_millis(ms - 50),
                    "{treatment}: closed after {waited:?}, before its {ms} ms"
                );
                results.push((treatment, waited));
            }
            None => {
                // An idle connection outlives several inactivity timeouts.
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                s.write_all(b"late").await.unwrap();
                let mut back = [0u8; 4];
                tokio::time::timeout(STEP, s.read_exact(&mut back))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(&back, b"late", "immortal connections stay open");
            }
        }
        app.stop().await;
    }
    assert!(
        results[1].1 > results[0].1,
        "extended outlives standard: {results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smartproxy_example_config_checks_clean() {
    for file in ["smartproxy.json", "quickstart.json"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/configs")
            .join(file);
        let tracker = turnout::limits::ConnectionTracker::new();
        let (config, set) =
            turnout::app::prepare(&path, None, tracker).unwrap_or_else(|e| panic!("{file}: {e}"));
        let names: Vec<_> = set
            .chain()
            .plugins()
            .iter()
            .map(|p| p.name().to_owned())
            .collect();
        assert!(names.contains(&"routes".to_owned()), "{names:?}");
        assert!(!config.routes.is_empty());
        let ports: Vec<_> = set
            .chain()
            .plugins()
            .iter()
            .flat_map(|p| p.info().listen.clone())
            .collect();
        assert!(!ports.is_empty(), "{file}: the routes declare ports");
    }
}
