//! The HTTP proxy's limits and failures end to end: every error status the
//! proxy makes (400, 401, 404, 408, 413, 414, 429, 431, 502, 503, 504),
//! failover, slow and oversized clients — each while other clients keep
//! being served — a 100 MiB chunked upload, and the request metrics.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnout_tests::app::{Ports, RunningApp, admin_request};
use turnout_tests::http::{Kind, backend, checksum, curl};
use turnout_tests::l4::read_to_end;
use turnout_tests::tls::{config, settled, target};

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// A plaintext HTTP route for `domain` to `targets`.
fn route(name: &str, port: u16, domain: &str, targets: Value) -> Value {
    json!({ "name": name, "match": { "ports": port, "domains": domain },
            "action": { "type": "forward", "targets": targets } })
}

/// How many answers the proxy made itself for `label`.
fn errors(stats: &turnout::metrics::RequestsView, label: &str) -> u64 {
    stats
        .errors
        .iter()
        .find(|(l, _)| *l == label)
        .map_or(0, |(_, n)| *n)
}

/// Waits (bounded) until the backend has received `n` requests.
async fn arrived(up: &turnout_tests::http::Backend, n: usize) {
    turnout_tests::tls::wait_for("the request at the backend", || {
        up.requests.load(Ordering::Relaxed) >= n
    })
    .await;
}

/// Sends `raw` on a fresh connection and reads until the proxy closes it.
async fn raw(port: u16, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(raw).await.unwrap();
    String::from_utf8_lossy(&read_to_end(&mut s).await).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_fail_over_or_become_502_and_504() {
    let up = backend("up", Kind::H1).await;
    // A port nobody listens on: connections are refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut ports = Ports::default();
    let port = ports.take();
    let both = json!([{ "host": "127.0.0.1", "port": dead.port() },
                      { "host": "127.0.0.1", "port": up.addr.port() }]);
    let routes = json!([
        route("failover", port, "failover.test", both),
        route("dead", port, "dead.test", target(dead)),
        route("slow", port, "slow.test", target(up.addr)),
    ]);
    let extra = json!({ "http": { "responseTimeout": 300 } });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;

    let r = curl(&["-H", "Host: failover.test", &url(port, "/x")]).await;
    assert_eq!(
        (r.status, r.json()["backend"].as_str()),
        (200, Some("up")),
        "{r:?}"
    );
    // A request with a body is never replayed: the first refusal is final.
    let r = curl(&[
        "-H",
        "Host: failover.test",
        "--data",
        "once",
        &url(port, "/x"),
    ])
    .await;
    assert_eq!(r.status, 502, "{r:?}");
    let r = curl(&["-H", "Host: dead.test", &url(port, "/")]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.body, "502 Bad Gateway\n");
    let started = Instant::now();
    let r = curl(&["-H", "Host: slow.test", &url(port, "/sleep/3000")]).await;
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    settled(&app).await;
    let stats = app.metrics.requests();
    assert_eq!(
        Some(errors(&stats, "upstream-refused")),
        Some(2),
        "{stats:?}"
    );
    assert_eq!(
        Some(errors(&stats, "upstream-timeout")),
        Some(1),
        "{stats:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_malformed_clients_get_408_400_414_431_and_others_are_served() {
    let up = backend("up", Kind::H1).await;
    let mut ports = Ports::default();
    let port = ports.take();
    let routes = json!([route("app", port, "app.test", target(up.addr))]);
    let extra =
        json!({ "http": { "headerTimeout": 500, "idleTimeout": 400, "maxHeaderSize": 8192 } });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;

    // Slowloris: a head that never completes is answered 408 and closed,
    // and a normal client is served meanwhile.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: ")
        .await
        .unwrap();
    let r = curl(&["-H", "Host: app.test", &url(port, "/")]).await;
    assert_eq!(r.status, 200);
    let started = Instant::now();
    let answer = String::from_utf8_lossy(&read_to_end(&mut slow).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Keep-alive with nothing in flight closes at idleTimeout.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let rest = read_to_end(&mut idle).await;
    assert!(rest.is_empty() || rest.ends_with(b"}"), "{rest:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Both framings: a smuggling attempt is refused, never forwarded.
    let before = up.requests.load(Ordering::Relaxed);
    let answer = raw(port, b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert_eq!(up.requests.load(Ordering::Relaxed), before);
    // The same behind empty lines, which hyper skips before a request
    // line (found by the `http_head` fuzz target).
    let answer = raw(port, b"\r\n\nPOST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert_eq!(up.requests.load(Ordering::Relaxed), before);
    // Oversized head, overlong target.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let answer = raw(port, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        "a".repeat(9_000)
    );
    let answer = raw(port, long.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 414") || answer.starts_with("HTTP/1.1 431"),
        "{answer:?}"
    );
    // No Host at all.
    let answer = raw(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    // And the proxy still serves.
    assert_eq!(
        curl(&["-H", "Host: app.test", &url(port, "/")])
            .await
            .status,
        200
    );
    settled(&app).await;
    let stats = app.metrics.requests();
    assert_eq!(Some(errors(&stats, "header-timeout")), Some(1), "{stats:?}");
    assert!(errors(&stats, "bad-request") >= 2, "{stats:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_rate_limits_and_route_limits_answer_401_429_503() {
    let up = backend("up", Kind::H1).await;
    let mut ports = Ports::default();
    let port = ports.take();
    let mut auth = route("auth", port, "auth.test", target(up.addr));
    auth["security"] = json!({ "basicAuth": { "enabled": true, "realm": "staff",
        "users": [{ "username": "ann", "password": "s3cret" }], "excludePaths": ["/health"] } });
    let mut limited = route("limited", port, "rate.test", target(up.addr));
    limited["security"] = json!({ "rateLimit": { "enabled": true, "maxRequests": 3, "window": 60,
        "keyBy": "ip", "errorMessage": "slow down" } });
    let mut one = route("one", port, "one.test", target(up.addr));
    one["security"] = json!({ "maxConnections": 1 });
    let routes = json!([auth, limited, one]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;

    let r = curl(&["-H", "Host: auth.test", &url(port, "/")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"staff\""));
    let r = curl(&["-H", "Host: auth.test", "-u", "ann:wrong", &url(port, "/")]).await;
    assert_eq!(r.status, 401);
    let r = curl(&["-H", "Host: auth.test", "-u", "ann:s3cret", &url(port, "/")]).await;
    assert_eq!(r.status, 200);
    let r = curl(&["-H", "Host: auth.test", &url(port, "/health")]).await;
    assert_eq!(r.status, 200, "excluded path");

    for _ in 0..3 {
        assert_eq!(
            curl(&["-H", "Host: rate.test", &url(port, "/")])
                .await
                .status,
            200
        );
    }
    let r = curl(&["-H", "Host: rate.test", &url(port, "/")]).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some(), "{r:?}");
    assert!(r.body.contains("slow down"), "{r:?}");

    // One request in flight on the route: a second at the same time is a 503.
    let before = up.requests.load(Ordering::Relaxed);
    let slow = tokio::spawn(curl_owned(vec![
        "-H".into(),
        "Host: one.test".into(),
        url(port, "/sleep/1500"),
    ]));
    arrived(&up, before + 1).await;
    let r = curl(&["-H", "Host: one.test", &url(port, "/")]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(
        curl(&["-H", "Host: one.test", &url(port, "/")])
            .await
            .status,
        200
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_routes_limit_get_413_declared_or_chunked() {
    let up = backend("up", Kind::H1).await;
    let mut ports = Ports::default();
    let port = ports.take();
    let mut small = route("small", port, "small.test", target(up.addr));
    small["action"]["options"] = json!({ "maxBodySize": 1024 });
    let app = RunningApp::start_with(&config(json!([small]), json!({})), ports).await;
    let big = "x".repeat(4096);
    let r = curl(&["-H", "Host: small.test", "--data", &big, &url(port, "/")]).await;
    assert_eq!(r.status, 413, "declared length: {r:?}");
    assert_eq!(up.requests.load(Ordering::Relaxed), 0, "never sent");
    let r = curl(&[
        "-H",
        "Host: small.test",
        "-H",
        "Transfer-Encoding: chunked",
        "--data",
        &big,
        &url(port, "/"),
    ])
    .await;
    assert_eq!(r.status, 413, "chunked: {r:?}");
    let r = curl(&["-H", "Host: small.test", "--data", "small", &url(port, "/")]).await;
    assert_eq!((r.status, r.json()["bodyLen"].as_u64()), (200, Some(5)));
    app.stop().await;
}

async fn curl_owned(args: Vec<String>) -> turnout_tests::http::Curl {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_chunked_upload_arrives_intact_and_requests_are_counted() {
    let up = backend("up", Kind::H1).await;
    let mut ports = Ports::default();
    let port = ports.take();
    let routes = json!([route("up", port, "up.test", target(up.addr))]);
    let extra = json!({ "admin": { "listen": "127.0.0.1:0" } });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;

    // 100 MiB in 1 MiB chunks of a pattern, streamed (chunked encoding).
    const CHUNK: usize = 1 << 20;
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let mut whole = Vec::with_capacity(100 * CHUNK);
    for _ in 0..100 {
        whole.extend_from_slice(&chunk);
    }
    let expected = checksum(&whole);
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = whole
        .chunks(CHUNK)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    drop(whole);
    let body = StreamBody::new(futures_stream(chunks));
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("/upload")
        .header("host", "up.test")
        .body(body.boxed())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(120), send.send_request(req))
        .await
        .expect("answered in time")
        .unwrap();
    let (status, body) = turnout_tests::http::read(resp).await;
    assert_eq!(status, 200);
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["bodyLen"], 100 * CHUNK);
    assert_eq!(seen["bodySum"], expected.to_string());
    assert_eq!(seen["headers"]["transfer-encoding"], json!(["chunked"]));
    drop(send);

    settled(&app).await;
    let admin = app.admin.expect("admin configured");
    let (code, stats) = admin_request(admin, "GET", "/api/stats").await;
    assert_eq!(code, 200);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["requests"]["total"], 1, "{stats}");
    assert_eq!(stats["requests"]["byDomain"]["up.test"], 1, "{stats}");
    app.stop().await;
}

/// A stream over `items` (futures-util is not a dependency of the tests).
fn futures_stream<T: Unpin>(items: Vec<T>) -> impl futures_core::Stream<Item = T> + Unpin {
    struct Iter<T>(std::vec::IntoIter<T>);
    impl<T: Unpin> futures_core::Stream for Iter<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Iter(items.into_iter())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_finishes_requests_in_flight_and_does_not_wait_for_idle_keep_alive() {
    let up = backend("up", Kind::H1).await;
    let mut ports = Ports::default();
    let port = ports.take();
    let routes = json!([route("app", port, "app.test", target(up.addr))]);
    let extra = json!({ "gracefulShutdownTimeout": 20000 });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;
    // An idle keep-alive connection, and a request in flight.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let slow = tokio::spawn(curl_owned(vec![
        "-H".into(),
        "Host: app.test".into(),
        url(port, "/sleep/1000"),
    ]));
    arrived(&up, 2).await;
    let started = Instant::now();
    app.stop().await;
    let took = started.elapsed();
    assert_eq!(
        slow.await.unwrap().status,
        200,
        "the request in flight finished"
    );
    assert!(
        took < Duration::from_secs(5),
        "the drain waited {took:?} for idle keep-alive"
    );
    assert!(
        read_to_end(&mut idle).await.is_empty(),
        "the idle connection was closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_hold_after_slow_responses_and_stalled_clients_free_their_slot() {
    let up = backend("up", Kind::H1).await;
    let mut ports = Ports::default();
    let port = ports.take();
    let mut one = route("one", port, "one.test", target(up.addr));
    one["security"] = json!({ "maxConnections": 1 });
    let extra =
        json!({ "http": { "headerTimeout": 300, "idleTimeout": 500, "responseTimeout": 500 } });
    let app = RunningApp::start_with(&config(json!([one]), extra), ports).await;

    // A response slower than headerTimeout; then idle: closed at idleTimeout.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /sleep/400 HTTP/1.1\r\nHost: one.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let _ = read_to_end(&mut s).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "idle close took {took:?}");

    // A client that stops reading a large response: cut once nothing moves
    // for the stall time, and the route's only slot is free again.
    let before = up.requests.load(Ordering::Relaxed);
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stalled
        .write_all(b"GET /bytes/67108864 HTTP/1.1\r\nHost: one.test\r\n\r\n")
        .await
        .unwrap();
    arrived(&up, before + 1).await;
    let r = curl(&["-H", "Host: one.test", &url(port, "/")]).await;
    assert_eq!(r.status, 503, "the stalled request holds the slot");
    let freed = async {
        loop {
            if curl(&["-H", "Host: one.test", &url(port, "/")])
                .await
                .status
                == 200
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), freed)
        .await
        .expect("the stalled connection is cut and its slot freed");
    drop(stalled);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_sees_the_host_the_request_was_routed_on() {
    let (public, admin) = (
        backend("public", Kind::H1).await,
        backend("admin", Kind::H1).await,
    );
    let mut ports = Ports::default();
    let port = ports.take();
    let routes = json!([
        route("public", port, "public.test", target(public.addr)),
        route("admin", port, "admin.test", target(admin.addr)),
    ]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;
    // Absolute form names public.test; the Host line says admin.test.
    let answer = raw(
        port,
        b"GET http://public.test/x HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.contains("\"backend\":\"public\""), "{answer}");
    assert!(answer.contains("\"host\":[\"public.test\"]"), "{answer}");
    // Two Host lines: refused.
    let answer = raw(
        port,
        b"GET / HTTP/1.1\r\nHost: public.test\r\nHost: admin.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(admin.requests.load(Ordering::Relaxed), 0);
    app.stop().await;
}
