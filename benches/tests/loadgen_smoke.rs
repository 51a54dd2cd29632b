//! A smoke run of the load harness with a tiny load: the backends and every
//! load mode through Turnout, in-process, with the default plugins (HTTPS
//! keep-alive and WebSocket echo through a terminating HTTP route to the
//! HTTP and WebSocket backends). No HAProxy or nginx needed; a few seconds.
//! Checks that the loads work and route, not how fast they are.

use std::net::SocketAddr;
use std::time::Duration;

use turnout_benches::loadgen::{backend, client, http_client, tls, ws_client};
use turnout_tests::app::{Ports, RunningApp};

/// Turnout's config for the load: SNI routes to the two backends. A
/// generous plugin deadline: on a loaded CI machine (or a debug build) a
/// hook call can be stretched past 10 ms, and this test is about the
/// harness, not about plugin deadlines.
fn config(port: u16, b: backend::Backends) -> String {
    let route = |name: &str, domain: &str, to: SocketAddr| {
        format!(
            r#"{{"name":"{name}","match":{{"ports":{port},"domains":["{domain}"]}},"action":{{"type":"forward","targets":[{{"host":"{}","port":{}}}],"tls":{{"mode":"passthrough"}}}}}}"#,
            to.ip(),
            to.port()
        )
    };
    format!(
        r#"{{"routes":[{},{}],"bind":["127.0.0.1"],"maxConnectionsPerIP":0,"connectionRateLimitPerMinute":0,"maxConnections":0,"gracefulShutdownTimeout":1000,"plugins":{{"deadlineMs":2000}}}}"#,
        route("echo", "echo.bench.test", b.tls),
        route("bulk", "bulk.bench.test", b.bulk)
    )
}

fn assert_clean(r: &turnout_benches::loadgen::Report, ok: f64) {
    assert_eq!(r.num("errors"), Some(0.0), "{r}");
    assert_eq!(r.num("ok"), Some(ok), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_load_mode_runs_through_turnout() {
    let any = "127.0.0.1:0".parse().unwrap();
    let names = ["echo.bench.test".to_owned(), "*.bench.test".to_owned()];
    let b = backend::start(any, any, &names).await.unwrap();
    let mut ports = Ports::default();
    let port = ports.take();
    let app = RunningApp::start_with(&config(port, b), ports).await;
    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();
    let target = |sni: &str| client::Target {
        addr: proxy,
        sni: sni.to_owned(),
    };
    let limit = Duration::from_secs(20);

    let r = client::tls_conns(&client::TlsConns {
        target: target("echo.bench.test"),
        conns: 40,
        concurrency: 4,
        request_bytes: 64,
        max_time: limit,
    })
    .await;
    assert_clean(&r, 40.0);
    assert!(r.num("p99_us").unwrap() > 0.0, "{r}");

    for download in [false, true] {
        let r = client::bulk(&client::Bulk {
            target: target("bulk.bench.test"),
            streams: 4,
            bytes: 1 << 20,
            download,
            max_time: limit,
        })
        .await;
        assert_clean(&r, 4.0);
        assert_eq!(r.num("bytes"), Some(4.0 * (1 << 20) as f64), "{r}");
    }

    let mut seen_open = None;
    let r = client::idle(
        &client::Idle {
            target: target("echo.bench.test"),
            conns: 20,
            concurrency: 4,
            hold: limit,
        },
        |open| seen_open = open.num("ok"),
        async {},
    )
    .await;
    assert_clean(&r, 20.0);
    assert_eq!(seen_open, Some(20.0));

    let r = client::latency(&client::Latency {
        target: target("echo.bench.test"),
        direct: Some(b.tls),
        samples: 10,
        request_bytes: 64,
        max_time: limit,
    })
    .await;
    assert_clean(&r, 10.0);
    assert!(r.get("added_p99_us").is_some(), "{r}");

    // An unknown name is refused by the proxy, and counted as an error.
    let r = client::tls_conns(&client::TlsConns {
        target: target("nowhere.example"),
        conns: 2,
        concurrency: 1,
        request_bytes: 8,
        max_time: limit,
    })
    .await;
    assert_eq!(r.num("errors"), Some(2.0), "{r}");

    app.stop().await;
}

/// One terminating HTTP route for `*.bench.test` on `port` to `target`,
/// with a certificate written to `dir`.
fn terminate_config(port: u16, target: SocketAddr, dir: &std::path::Path) -> String {
    tls::write_cert(dir, &["*.bench.test".to_owned()]).unwrap();
    format!(
        r#"{{"routes":[{{"name":"h","match":{{"ports":{port},"domains":["*.bench.test"]}},"action":{{"type":"forward","targets":[{{"host":"{}","port":{}}}],"tls":{{"mode":"terminate","certificate":{{"cert":{:?},"key":{:?}}}}}}}}}],"bind":["127.0.0.1"],"maxConnectionsPerIP":0,"connectionRateLimitPerMinute":0,"maxConnections":0,"gracefulShutdownTimeout":1000,"plugins":{{"deadlineMs":2000}}}}"#,
        target.ip(),
        target.port(),
        dir.join("cert.pem").display().to_string(),
        dir.join("key.pem").display().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_keepalive_runs_through_a_terminating_http_route() {
    let any = "127.0.0.1:0".parse().unwrap();
    let b = backend::start(any, any, &["echo.bench.test".to_owned()])
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("turnout-smoke-{}", std::process::id()));
    let mut ports = Ports::default();
    let port = ports.take();
    let app = RunningApp::start_with(&terminate_config(port, b.http, &dir), ports).await;
    let run = |requests, close| async move {
        http_client::https_keepalive(&http_client::HttpsKeepalive {
            target: client::Target {
                addr: ([127, 0, 0, 1], port).into(),
                sni: "echo.bench.test".to_owned(),
            },
            conns: 4,
            requests,
            path: "/".to_owned(),
            close,
            max_time: Duration::from_secs(20),
        })
        .await
    };
    let r = run(200, false).await;
    assert_clean(&r, 200.0);
    assert_eq!(r.num("conns_opened"), Some(4.0), "keep-alive held: {r}");
    assert!(
        r.get("negotiated")
            .is_some_and(|n| n.ends_with("alpn:http/1.1")),
        "{r}"
    );
    // `https-new`: one request per connection, every one a full handshake.
    let r = run(40, true).await;
    assert_clean(&r, 40.0);
    assert_eq!(
        r.num("conns_opened"),
        Some(40.0),
        "a connection per request: {r}"
    );
    assert_eq!(r.num("resumed"), Some(0.0), "{r}");
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_echo_runs_through_a_terminating_http_route() {
    let any = "127.0.0.1:0".parse().unwrap();
    let b = backend::start(any, any, &["echo.bench.test".to_owned()])
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("turnout-smoke-ws-{}", std::process::id()));
    let mut ports = Ports::default();
    let port = ports.take();
    let app = RunningApp::start_with(&terminate_config(port, b.ws, &dir), ports).await;
    // A window of 3, so more than one message is in flight on each.
    let r = ws_client::ws_echo(&ws_client::WsEcho {
        target: client::Target {
            addr: ([127, 0, 0, 1], port).into(),
            sni: "echo.bench.test".to_owned(),
        },
        conns: 4,
        messages: 300,
        message_bytes: 1024,
        window: 3,
        path: "/".to_owned(),
        max_time: Duration::from_secs(20),
    })
    .await;
    assert_clean(&r, 300.0);
    assert_eq!(r.num("conns_opened"), Some(4.0), "{r}");
    assert_eq!(r.num("lost"), Some(0.0), "{r}");
    assert!(
        r.get("negotiated")
            .is_some_and(|n| n.ends_with("alpn:http/1.1")),
        "{r}"
    );
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
