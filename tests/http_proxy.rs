//! The HTTP reverse proxy end to end: the whole proxy from a config file
//! (SmartProxy routes read by the default `routes` plugin), real clients
//! (`curl` with `--http1.1`/`--http2`, hyper) and real h1, h2c and TLS
//! backends: routing by host, path and header, the forwarding headers,
//! terminated HTTPS over h1 and h2, redirects, static answers, edits.
//! Limits, errors and abuse are in `http_limits.rs`.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use turnout_tests::app::{Ports, RunningApp};
use turnout_tests::http::{Kind, backend, curl, h2_tls, read};
use turnout_tests::pki::Ca;
use turnout_tests::tls::{config, files, target};

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

fn route(name: &str, port: u16, matching: Value, to: SocketAddr) -> Value {
    let mut m = matching;
    m["ports"] = json!(port);
    json!({ "name": name, "match": m, "action": { "type": "forward", "targets": target(to) } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_requests_are_routed_by_host_path_and_header() {
    let (api, web, canary) = (
        backend("api", Kind::H1).await,
        backend("web", Kind::H1).await,
        backend("canary", Kind::H2c).await,
    );
    let mut ports = Ports::default();
    let port = ports.take();
    let mut canary_route = route(
        "canary",
        port,
        json!({ "domains": "*.test", "headers": { "x-canary": "/^(yes|1)$/" } }),
        canary.addr,
    );
    canary_route["priority"] = json!(10);
    canary_route["action"]["options"] = json!({ "backendProtocol": "http2" });
    let routes = json!([
        route(
            "api",
            port,
            json!({ "domains": "api.test", "path": "/api/*" }),
            api.addr
        ),
        route("web", port, json!({ "domains": "*.test" }), web.addr),
        canary_route,
    ]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;

    let r = curl(&["-H", "Host: api.test", &url(port, "/api/users?id=7")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = r.json();
    assert_eq!(seen["backend"], "api");
    assert_eq!(seen["path"], "/api/users?id=7");
    let h = &seen["headers"];
    assert_eq!(h["host"], json!(["api.test"]), "Host is preserved");
    assert_eq!(h["x-forwarded-for"], json!(["127.0.0.1"]));
    assert_eq!(h["x-forwarded-proto"], json!(["http"]));
    assert_eq!(h["x-forwarded-host"], json!(["api.test"]));
    assert_eq!(h["x-forwarded-port"], json!([port.to_string()]));

    // Longer path beats none; another path on the same host goes to web.
    let r = curl(&["-H", "Host: api.test", &url(port, "/other")]).await;
    assert_eq!(r.json()["backend"], "web");
    // A header regex at a higher priority; to an h2c backend.
    let r = curl(&[
        "-H",
        "Host: www.test",
        "-H",
        "X-Canary: yes",
        &url(port, "/"),
    ])
    .await;
    assert_eq!(r.json()["backend"], "canary", "{r:?}");
    assert_eq!(r.json()["version"], "HTTP/2.0");
    let r = curl(&[
        "-H",
        "Host: www.test",
        "-H",
        "X-Canary: no",
        &url(port, "/"),
    ])
    .await;
    assert_eq!(r.json()["backend"], "web");

    // A forged X-Forwarded-For from an untrusted client is replaced, and
    // hop-by-hop headers (and those Connection names) do not cross.
    let r = curl(&[
        "-H",
        "Host: www.test",
        "-H",
        "X-Forwarded-For: 6.6.6.6",
        "-H",
        "Connection: keep-alive, X-Hop",
        "-H",
        "X-Hop: secret",
        "-H",
        "Keep-Alive: timeout=5",
        &url(port, "/"),
    ])
    .await;
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"], json!(["127.0.0.1"]));
    assert!(
        h.get("x-hop").is_none() && h.get("keep-alive").is_none(),
        "{h}"
    );

    // No route: a plain 404 naming nothing internal.
    let r = curl(&["-H", "Host: nowhere.example", &url(port, "/")]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "404 Not Found\n");
    // Upstream responses keep their status.
    let r = curl(&["-H", "Host: www.test", &url(port, "/status/418")]).await;
    assert_eq!(r.status, 418);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_https_over_h1_and_h2_with_100_streams_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Turnout HTTP CA");
    let leaf = ca.leaf(&["app.test"]);
    let ca_file = turnout_tests::pki::write(dir.path(), "ca.pem", &ca.pem);
    let up = backend("up", Kind::H1).await;
    let mut ports = Ports::default();
    let port = ports.take();
    let routes = json!([{ "name": "app", "match": { "ports": port, "domains": "app.test" },
        "action": { "type": "forward", "targets": target(up.addr),
                    "tls": { "mode": "terminate", "certificate": files(dir.path(), "app", &leaf) } } }]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;
    let resolve = format!("app.test:{port}:127.0.0.1");
    let https = format!("https://app.test:{port}/hello");
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let r = curl(&[
            flag,
            "--cacert",
            ca_file.to_str().unwrap(),
            "--resolve",
            &resolve,
            &https,
        ])
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.version, version);
        let seen = r.json();
        assert_eq!(seen["path"], "/hello");
        assert_eq!(seen["headers"]["x-forwarded-proto"], json!(["https"]));
        assert_eq!(seen["headers"]["host"], json!([format!("app.test:{port}")]));
    }

    // 100 concurrent streams on one HTTP/2 connection, each answered.
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let send = h2_tls(proxy, "app.test", ca.client(&["h2"])).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move {
            let req = hyper::Request::get(format!("https://app.test:{port}/sleep/50?i={i}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = send.send_request(req).await.expect("stream answered");
            read(resp).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["path"], format!("/sleep/50?i={i}"));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_static_answers_and_header_edits_with_templates() {
    let up = backend("up", Kind::H1).await;
    let mut ports = Ports::default();
    let port = ports.take();
    let routes = json!([
        { "name": "old", "match": { "ports": port, "domains": "old.test" },
          "action": { "type": "redirect",
                      "redirect": { "to": "https://new.test{path}{query}", "status": 308 } } },
        { "name": "teapot", "match": { "ports": port, "domains": "tea.test" },
          "action": { "type": "static",
                      "static": { "status": 418, "headers": { "x-pot": "{routeName}" },
                                  "body": "short and stout at {domain}{path}\n" } } },
        { "name": "edit", "match": { "ports": port, "domains": "edit.test" },
          "headers": { "request": { "x-client": "{clientIp}", "x-conn": "{connectionId}",
                                     "cookie": "" },
                       "response": { "x-served-by": "{routeName}", "server": "" } },
          "action": { "type": "forward", "targets": target(up.addr) } },
    ]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;

    let r = curl(&["-H", "Host: old.test", &url(port, "/a/b?c=d")]).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://new.test/a/b?c=d"));

    let r = curl(&["-H", "Host: tea.test:8080", &url(port, "/cup")]).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.header("x-pot"), Some("teapot"));
    assert_eq!(r.body, "short and stout at tea.test/cup\n");

    let r = curl(&[
        "-H",
        "Host: edit.test",
        "-H",
        "Cookie: secret=1",
        &url(port, "/"),
    ])
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-served-by"), Some("edit"));
    assert_eq!(r.header("server"), None, "removed from the response");
    let h = &r.json()["headers"];
    assert_eq!(h["x-client"], json!(["127.0.0.1"]));
    assert!(
        h["x-conn"][0].as_str().unwrap().parse::<u64>().is_ok(),
        "{h}"
    );
    assert!(h.get("cookie").is_none(), "removed from the request: {h}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_served_by_another_certificate_than_the_sni_got_is_421() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Turnout HTTP CA");
    let up = backend("up", Kind::H1).await;
    let mut ports = Ports::default();
    let port = ports.take();
    let site = |name: &str| {
        json!({ "name": name, "match": { "ports": port, "domains": format!("{name}.test") },
                "action": { "type": "forward", "targets": target(up.addr),
                            "tls": { "mode": "terminate",
                                     "certificate": files(dir.path(), name, &ca.leaf(&[&format!("{name}.test")])) } } })
    };
    let app =
        RunningApp::start_with(&config(json!([site("a"), site("b")]), json!({})), ports).await;
    let ca_file = turnout_tests::pki::write(dir.path(), "ca.pem", &ca.pem);
    let resolve = format!("a.test:{port}:127.0.0.1");
    let base = ["--cacert", ca_file.to_str().unwrap(), "--resolve", &resolve];
    let a = format!("https://a.test:{port}/");
    let r = curl(&[&base[..], &[a.as_str()]].concat()).await;
    assert_eq!(r.status, 200, "{r:?}");
    // Connection (and certificate) for a.test, request for b.test.
    let r = curl(&[&base[..], &["-H", "Host: b.test", a.as_str()]].concat()).await;
    assert_eq!(r.status, 421, "{r:?}");
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::Relaxed), 1);
    app.stop().await;
}
