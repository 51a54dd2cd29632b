//! Metrics and the admin API through the whole proxy (`turnout run` as a
//! library, embedded default plugins): byte totals exact to the byte from
//! the clients' side, refusals under the right reason, a flat rate for a
//! constant stream, `/metrics` parsed by a Prometheus parser, bounded
//! per-IP tables after 50 000 distinct clients.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use turnout_tests::app::{Ports, RunningApp, admin_request};
use turnout_tests::l4::{
    STEP, client_config, client_hello_bytes, closed_port, echo_backend, read_to_end, tls_backend,
};

fn target(addr: SocketAddr) -> Value {
    json!([{ "host": addr.ip().to_string(), "port": addr.port() }])
}

/// A PROXY v1 header claiming `client` (excluded from every byte count).
fn proxy_header(client: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 {port}\r\n").into_bytes()
}

/// A TCP stream that counts what crosses it, as the client sees it.
struct Counted {
    inner: TcpStream,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Client-side byte totals across every connection of a test.
#[derive(Default, Clone)]
struct Tally {
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
}

impl Tally {
    /// Connects to `port` as `client` (through a PROXY header, not
    /// counted) and returns the counted stream.
    async fn connect(&self, port: u16, client: &str) -> Counted {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(&proxy_header(client, port)).await.unwrap();
        Counted {
            inner: s,
            read: self.received.clone(),
            written: self.sent.clone(),
        }
    }

    fn totals(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }
}

async fn read_all(s: &mut Counted) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(STEP, s.read_to_end(&mut out))
        .await
        .expect("peer closes in time");
    out
}

/// `GET path` on the admin API: (status, body).
async fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    admin_request(admin, "GET", path).await
}

async fn stats(admin: SocketAddr) -> Value {
    let (status, body) = get(admin, "/api/stats").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits (bounded) until no connection is open: every relay has counted
/// its last byte (a connection's metrics settle before its limit guard is
/// released, which is what `wait_idle` waits for).
async fn quiet(app: &RunningApp) {
    if tokio::time::timeout(STEP, app.tracker.wait_idle())
        .await
        .is_err()
    {
        panic!("{} connections still open", app.metrics.active());
    }
    assert_eq!(app.metrics.active(), 0);
}

fn base_config(routes: Value, extra: Value) -> String {
    let mut c = json!({
        "bind": ["127.0.0.1"],
        "gracefulShutdownTimeout": 500,
        "acceptProxyProtocol": true,
        "proxyIPs": ["127.0.0.1"],
        "admin": { "listen": "127.0.0.1:0" },
        "routes": routes,
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_totals_and_refusals_are_exact_and_exposed() {
    let (echo, _) = echo_backend().await;
    let tls_echo = tls_backend("a.test", "hello").await;
    let mut ports = Ports::default();
    let (plain, tls, dead) = (ports.take(), ports.take(), ports.take());
    let passthrough = json!({ "mode": "passthrough" });
    let routes = json!([
        { "name": "plain", "match": { "ports": plain }, "action": { "type": "forward", "targets": target(echo) } },
        { "name": "tls-a", "match": { "ports": tls, "domains": "a.test" },
          "action": { "type": "forward", "targets": target(tls_echo), "tls": passthrough } },
        { "name": "dead", "match": { "ports": dead }, "action": { "type": "forward", "targets": target(closed_port().await) } }
    ]);
    let app = RunningApp::start_with(
        &base_config(
            routes,
            json!({
                "initialDataTimeout": 500,
                "defaults": { "security": { "ipBlockList": ["192.0.2.66"] } }
            }),
        ),
        ports,
    )
    .await;
    let admin = app.admin.expect("admin API configured");
    let tally = Tally::default();

    // Plain: 100 000 bytes echoed, then a clean close.
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut s = tally.connect(plain, "192.0.2.10").await;
    s.write_all(&payload).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_all(&mut s).await, payload);

    // TLS passthrough: a real handshake, 50 000 bytes of application data
    // each way; the counts are TLS records as they crossed the socket.
    let connector = tokio_rustls::TlsConnector::from(client_config());
    let s = tally.connect(tls, "192.0.2.11").await;
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let mut t = connector.connect(name, s).await.unwrap();
    let mut greeting = [0u8; 5];
    t.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"hello");
    let data = vec![b'z'; 50_000];
    t.write_all(&data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    t.read_exact(&mut back).await.unwrap();
    t.shutdown().await.unwrap();
    let (mut s, _) = t.into_inner();
    read_all(&mut s).await;

    // One live connection for /api/connections.
    let mut live = tally.connect(plain, "192.0.2.20").await;
    live.write_all(b"hello").await.unwrap();
    let mut five = [0u8; 5];
    live.read_exact(&mut five).await.unwrap();
    // The relay counts bytes out once its write returns, which may be just
    // after the client has read them: look again until it has.
    let deadline = Instant::now() + STEP;
    let (conns, body) = loop {
        let (status, body) = get(admin, "/api/connections").await;
        assert_eq!(status, 200);
        let conns: Value = serde_json::from_str(&body).unwrap();
        if conns["connections"][0]["bytesOut"] == 5 || Instant::now() > deadline {
            break (conns, body);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let c = &conns["connections"][0];
    assert_eq!(conns["connections"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(c["client"], "192.0.2.20:40000");
    assert_eq!(
        (c["route"].as_str(), c["phase"].as_str()),
        (Some("plain"), Some("relaying"))
    );
    assert_eq!(c["target"], echo.to_string());
    assert_eq!(
        (c["bytesIn"].as_u64(), c["bytesOut"].as_u64()),
        (Some(5), Some(5))
    );
    assert!(c["ageMs"].as_u64().unwrap() >= c["idleMs"].as_u64().unwrap());
    let workers = turnout::proxy::default_workers() as u64;
    assert!(c["worker"].as_u64().is_some_and(|w| w < workers), "{c}");
    live.shutdown().await.unwrap();
    read_all(&mut live).await;

    // Refusals, one of each reason the client can cause.
    let mut s = tally.connect(tls, "192.0.2.12").await;
    s.write_all(&client_hello_bytes(Some("unknown.test")))
        .await
        .unwrap();
    assert_eq!(
        read_all(&mut s).await,
        [0x15, 3, 3, 0, 2, 2, 112],
        "unrecognized_name"
    );
    let mut s = tally.connect(tls, "192.0.2.13").await;
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x02, 0, 0, 1, 0])
        .await
        .unwrap();
    read_all(&mut s).await;
    let hello = client_hello_bytes(Some("a.test"));
    let mut s = tally.connect(tls, "192.0.2.14").await;
    s.write_all(&hello[..hello.len() / 2]).await.unwrap();
    read_all(&mut s).await;
    let mut s = tally.connect(plain, "192.0.2.66").await;
    read_all(&mut s).await;
    let mut s = tally.connect(dead, "192.0.2.15").await;
    read_all(&mut s).await;
    let mut raw = TcpStream::connect(("127.0.0.1", plain)).await.unwrap();
    raw.write_all(b"PROXY GARBAGE\r\n").await.unwrap();
    read_to_end(&mut raw).await;

    quiet(&app).await;
    let (sent, received) = tally.totals();
    let st = stats(admin).await;
    let totals = &st["totals"];
    assert_eq!(totals["bytesIn"].as_u64(), Some(sent), "{st:#}");
    assert_eq!(totals["bytesOut"].as_u64(), Some(received), "{st:#}");
    assert_eq!(totals["connections"].as_u64(), Some(9));
    assert_eq!(st["connections"]["active"].as_u64(), Some(0));
    // One entry per worker thread; together they saw every connection.
    let by_worker = st["connections"]["byWorker"].as_array().unwrap();
    assert_eq!(by_worker.len() as u64, workers, "{st:#}");
    assert_eq!(
        by_worker
            .iter()
            .map(|w| w["total"].as_u64().unwrap())
            .sum::<u64>(),
        9
    );
    assert!(by_worker.iter().all(|w| w["active"] == 0), "{st:#}");
    let refusals = &totals["refusals"];
    for (reason, n) in [
        ("no-route", 1),
        ("bad-client-hello", 1),
        ("timeout", 1),
        ("denied", 1),
        ("backend-unreachable", 1),
        ("bad-proxy-header", 1),
        ("plugin-failure", 0),
        ("route-limit", 0),
    ] {
        assert_eq!(refusals[reason].as_u64(), Some(n), "{reason}: {refusals:#}");
    }
    assert_eq!(
        totals["pluginRefusals"],
        json!([{ "plugin": "guard", "reason": "ip-blocked", "count": 1 }])
    );
    assert_eq!(
        totals["byRoute"]["plain"]["bytesIn"].as_u64(),
        Some(100_005)
    );
    assert_eq!(
        totals["byRoute"]["plain"]["bytesOut"].as_u64(),
        Some(100_005)
    );
    assert_eq!(
        st["connections"]["byRoute"]["plain"]["total"].as_u64(),
        Some(2)
    );
    assert_eq!(
        st["connections"]["byRoute"]["tls-a"]["total"].as_u64(),
        Some(1)
    );
    assert_eq!(
        st["connections"]["byRoute"]["dead"]["total"].as_u64(),
        Some(1)
    );
    // The busiest client by bytes is the plain one, under its PROXY address.
    assert_eq!(st["connections"]["topIPs"][0]["ip"], "192.0.2.10");
    assert_eq!(
        totals["byIP"]["192.0.2.10"]["bytesIn"].as_u64(),
        Some(100_000)
    );
    // The proxy in front (127.0.0.1) counts only for the connection whose
    // header was unreadable; the others count under the client it named.
    let front = st["connections"]["topIPs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ip"] == "127.0.0.1")
        .expect("the sender of the bad header");
    assert_eq!(front["total"].as_u64(), Some(1), "{front}");
    let durations = &st["percentiles"]["durationMs"];
    assert_eq!(
        durations["count"].as_u64(),
        Some(3),
        "relayed connections: {durations}"
    );
    let sizes = &st["percentiles"]["bytesPerConnection"];
    assert!(sizes["p99"].as_u64().unwrap() >= 200_000, "{sizes}");

    // The Prometheus exposition parses and agrees.
    let (status, text) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(
        value("turnout_bytes_total", &[("direction", "in")]),
        sent as f64
    );
    assert_eq!(
        value("turnout_bytes_total", &[("direction", "out")]),
        received as f64
    );
    assert_eq!(value("turnout_connections_total", &[]), 9.0);
    let per_worker: f64 = (0..workers)
        .map(|w| {
            value(
                "turnout_worker_connections_total",
                &[("worker", &w.to_string())],
            )
        })
        .sum();
    assert_eq!(per_worker, 9.0);
    assert_eq!(
        value(
            "turnout_connections_refused_total",
            &[("reason", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "turnout_plugin_refusals_total",
            &[("plugin", "guard"), ("reason", "ip-blocked")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "turnout_route_bytes_total",
            &[("route", "plain"), ("direction", "in")]
        ),
        100_005.0
    );
    assert_eq!(
        value("turnout_client_connections_active", &[("ip", "192.0.2.10")]),
        0.0
    );
    // `route` ran for the five connections that got that far.
    assert_eq!(
        value("turnout_plugin_calls_total", &[("plugin", "routes")]),
        5.0
    );
    assert_eq!(
        value(
            "turnout_plugin_failures_total",
            &[("plugin", "guard"), ("kind", "trap")]
        ),
        0.0
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "turnout_connection_duration_seconds"),
        "the duration histogram is exposed:\n{text}"
    );
    // Top-N only: 8 distinct clients, `?top=3` shows three.
    let (_, top3) = get(admin, "/metrics?top=3").await;
    assert_eq!(
        top3.matches("turnout_client_connections_active{").count(),
        3
    );

    // Plugins, health, readiness, errors.
    let (status, body) = get(admin, "/api/plugins").await;
    assert_eq!(status, 200);
    let plugins: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["guard", "keepalive", "routes"], "chain order");
    let routes_plugin = &plugins["plugins"][2];
    assert_eq!(routes_plugin["source"], "embedded");
    assert_eq!(routes_plugin["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(routes_plugin["calls"].as_u64(), Some(5));
    assert_eq!(routes_plugin["hooks"], json!(["route"]));
    assert_eq!(get(admin, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(admin, "/readyz").await.0, 200);
    assert_eq!(get(admin, "/nope").await.0, 404);
    assert_eq!(admin_request(admin, "POST", "/api/stats").await.0, 405);
    let (status, body) = get(admin, "/api/stats?window=0").await;
    assert_eq!(status, 400);
    assert!(body.contains("window"), "{body}");

    // Draining: /readyz says so while a connection finishes.
    let mut held = tally.connect(plain, "192.0.2.40").await;
    held.write_all(b"x").await.unwrap();
    held.read_exact(&mut [0u8; 1]).await.unwrap();
    let stopping = tokio::spawn(app.stop());
    let deadline = Instant::now() + STEP;
    while get(admin, "/readyz").await.0 != 503 {
        assert!(
            Instant::now() < deadline,
            "/readyz still ready while draining"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(held);
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constant_stream_shows_a_flat_rate() {
    let (echo, _) = echo_backend().await;
    let mut ports = Ports::default();
    let port = ports.take();
    let routes = json!([
        { "name": "stream", "match": { "ports": port }, "action": { "type": "forward", "targets": target(echo) } }
    ]);
    let app = RunningApp::start_with(&base_config(routes, json!({})), ports).await;
    let tally = Tally::default();
    let s = tally.connect(port, "192.0.2.30").await;
    let (mut r, mut w) = tokio::io::split(s);
    // The echo comes back; drain it so the stream never stalls.
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    // 20 KiB every 100 ms: 200 KiB/s, for 7 s.
    const RATE: f64 = 200.0 * 1024.0;
    let chunk = vec![7u8; 20 * 1024];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut readings = Vec::new();
    for i in 1..=70u32 {
        tick.tick().await;
        w.write_all(&chunk).await.unwrap();
        if i % 20 == 0 {
            // After 2, 4 and 6 s of streaming.
            let route = app
                .metrics
                .routes()
                .into_iter()
                .find(|r| r.0 == "stream")
                .unwrap()
                .1;
            readings.push((
                app.metrics.rate(1).bytes_in,
                route.rate_1s.bytes_in,
                route.rate_10s.bytes_in,
            ));
        }
    }
    w.shutdown().await.unwrap();
    let _ = tokio::time::timeout(STEP, drain).await;
    for (i, (global, route, route_10s)) in readings.iter().enumerate() {
        for (what, r) in [("global 1 s", global), ("route 1 s", route)] {
            assert!(
                (0.6 * RATE..=1.4 * RATE).contains(r),
                "reading {i}: {what} rate {r:.0} B/s, sending {RATE:.0} B/s ({readings:?})"
            );
        }
        // The 10 s window is partial here: never above the sending rate
        // (a lifetime-average bug would be ≤ too, but not flat — below).
        assert!(*route_10s <= 1.4 * RATE, "reading {i}: {route_10s}");
    }
    // No drift with age: the last reading is not systematically off the first.
    let (first, last) = (readings[0].1, readings[2].1);
    assert!(
        (last - first).abs() <= 0.4 * RATE,
        "rate drifted from {first:.0} to {last:.0} B/s"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_tables_stay_bounded_after_50_000_distinct_clients() {
    let (echo, _) = echo_backend().await;
    let mut ports = Ports::default();
    let port = ports.take();
    let routes = json!([
        { "name": "many", "match": { "ports": port }, "action": { "type": "forward", "targets": target(echo) } }
    ]);
    let app = RunningApp::start_with(&base_config(routes, json!({})), ports).await;
    const CLIENTS: u32 = 50_000;
    const WORKERS: u32 = 16;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        tasks.spawn(async move {
            let mut i = w;
            while i < CLIENTS {
                // 10.0.0.0/8 addresses, all distinct.
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i + 1);
                let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let mut msg = proxy_header(&ip.to_string(), port);
                msg.push(b'x');
                s.write_all(&msg).await.unwrap();
                let mut one = [0u8; 1];
                match tokio::time::timeout(STEP, s.read_exact(&mut one)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(format!("client {ip} (#{i}): {e}")),
                    Err(_) => return Err(format!("client {ip} (#{i}): no echo")),
                }
                i += WORKERS;
            }
            Ok(())
        });
    }
    let deadline = Instant::now() + Duration::from_secs(170);
    let mut max_metrics = 0;
    let mut max_limits = 0;
    while !tasks.is_empty() {
        tokio::select! {
            r = tasks.join_next() => match r {
                Some(Ok(Ok(()))) | None => {}
                Some(Ok(Err(e))) => {
                    let plugins = get(app.admin.unwrap(), "/api/plugins").await.1;
                    panic!("{e}; refusals: {:?}\n{plugins}", app.metrics.refusals());
                }
                Some(Err(e)) => panic!("worker: {e}"),
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        assert!(
            Instant::now() < deadline,
            "50 000 connections took too long"
        );
        max_metrics = max_metrics.max(app.metrics.tracked_ips());
        max_limits = max_limits.max(app.tracker.tracked_ips());
    }
    quiet(&app).await;
    max_metrics = max_metrics.max(app.metrics.tracked_ips());
    max_limits = max_limits.max(app.tracker.tracked_ips());
    eprintln!(
        "{CLIENTS} clients in {:?}; largest tables: metrics {max_metrics}, limits {max_limits}",
        started.elapsed()
    );
    assert_eq!(
        app.metrics.accepted(),
        u64::from(CLIENTS),
        "routes: {:?}, refusals: {:?}, bytes {:?}",
        app.metrics.routes(),
        app.metrics.refusals(),
        app.metrics.bytes()
    );
    assert_eq!(
        app.metrics.bytes(),
        (u64::from(CLIENTS), u64::from(CLIENTS))
    );
    // The default caps (10 000 for metrics, 16 384 for the limits), plus at
    // most one shard's worth of live clients over.
    assert!(
        max_metrics <= 10_000 + 1024,
        "metrics table grew to {max_metrics}"
    );
    assert!(
        max_limits <= 16_384 + 1024,
        "limits table grew to {max_limits}"
    );
    app.stop().await;
}
