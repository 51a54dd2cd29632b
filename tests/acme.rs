//! ACME end to end against a real ACME server: pebble and its DNS server
//! (`turnout_tests::pebble`, every name resolving to 127.0.0.1), validating
//! challenges against Turnout's own listeners — never "always valid".
//! Issuance by HTTP-01 and by TLS-ALPN-01 then a verified `curl` through
//! the proxy; a restart serving the stored certificate without a second
//! order; a corrupt store file re-ordered; renewal swapping the
//! certificate while a connection stays up; an unreachable server
//! reported with backoff while other routes keep serving; on-demand
//! issuance at the first handshake.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use turnout_tests::app::{Ports, RunningApp, admin_request};
use turnout_tests::http::{Kind, backend, curl};
use turnout_tests::pebble::{self, Pebble, PebbleOptions};
use turnout_tests::tls::{config, target};

/// Longest wait for an order (pebble delays validations up to 1 s, and
/// rejects a share of nonces, which the client retries).
const ORDER: Duration = Duration::from_secs(60);

/// The `acme` object pointing at `pebble`.
fn acme(pebble: &Pebble, store: &Path, extra: Value) -> Value {
    let mut a = json!({
        "email": "ops@example.test",
        "directoryUrl": pebble.directory_url(),
        "directoryCa": pebble.directory_ca_path(),
        "certificateStore": store,
    });
    if let (Some(a), Some(extra)) = (a.as_object_mut(), extra.as_object()) {
        a.extend(extra.clone());
    }
    a
}

/// A terminated HTTP route with `certificate: "auto"`.
fn auto_route(name: &str, port: u16, domains: &[&str], to: SocketAddr) -> Value {
    json!({ "name": name, "match": { "ports": port, "domains": domains },
            "action": { "type": "forward", "targets": target(to),
                        "tls": { "mode": "terminate", "certificate": "auto" } } })
}

/// Waits (bounded by `within`) until `done` holds, looking every 100 ms.
async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let waiting = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if tokio::time::timeout(within, waiting).await.is_err() {
        panic!("timed out waiting for {what}");
    }
}

/// `curl` over HTTPS to `name` on the proxy, verifying against `root`.
async fn https(name: &str, port: u16, root: &Path) -> turnout_tests::http::Curl {
    let resolve = format!("{name}:{port}:127.0.0.1");
    let url = format!("https://{name}:{port}/hello");
    curl(&[
        "--cacert",
        &root.display().to_string(),
        "--resolve",
        &resolve,
        &url,
    ])
    .await
}

/// The leaf certificate (DER) the proxy serves for `name`, verified
/// against `root`.
async fn served(port: u16, name: &str, root: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(root.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let client = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let s = turnout_tests::tls::connect(proxy, name, client)
        .await
        .expect("a handshake verified against pebble's root");
    turnout_tests::tls::served_serial(&s)
}

/// `/api/certificates`' ACME entry for `name`.
async fn status(app: &RunningApp, name: &str) -> Value {
    let (code, body) = admin_request(app.admin.unwrap(), "GET", "/api/certificates").await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["source"] == "acme" && c["names"][0] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn issued(app: &RunningApp) -> u64 {
    app.metrics.acme_orders().0
}

use rustls::pki_types::pem::PemObject as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issues_a_certificate_curl_verifies_and_a_restart_reuses_it() {
    let store = tempfile::tempdir().unwrap();
    let app_backend = backend("app", Kind::H1).await;
    let mut ports = Ports::default();
    let (http_port, tls_port) = (ports.take(), ports.take());
    let pebble = pebble::start(PebbleOptions::new(http_port, tls_port)).await;
    let routes = json!([auto_route(
        "app",
        tls_port,
        &["app.example.test"],
        app_backend.addr
    )]);
    let extra = json!({ "acme": acme(&pebble, store.path(), json!({ "port": http_port })),
                        "admin": { "listen": "127.0.0.1:0" } });
    let text = config(routes.clone(), extra.clone());
    let app = RunningApp::start_with(&text, ports).await;
    until("the certificate", ORDER, || issued(&app) == 1).await;
    let root = pebble.issuing_root_path().await;
    let r = https("app.example.test", tls_port, &root).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["backend"], "app");
    let s = status(&app, "app.example.test").await;
    assert_eq!(s["status"], "valid", "{s}");
    assert!(s["notAfter"].is_string() && s["lastError"].is_null(), "{s}");
    let first = served(
        tls_port,
        "app.example.test",
        &pebble.issuing_root_pem().await,
    )
    .await;
    // Stored: key first, then the chain; private.
    let file = store.path().join("certificates/app.example.test.pem");
    let pem = std::fs::read_to_string(&file).unwrap();
    assert!(
        pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{}",
        &pem[..40]
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    app.stop().await;

    // A restart serves the stored certificate and orders nothing.
    let mut ports = Ports::default();
    let tls_port2 = ports.take();
    let _http_port2 = ports.take();
    let routes = json!([auto_route(
        "app",
        tls_port2,
        &["app.example.test"],
        app_backend.addr
    )]);
    let extra = json!({ "acme": acme(&pebble, store.path(), json!({ "port": _http_port2 })),
                        "admin": { "listen": "127.0.0.1:0" } });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;
    let again = served(
        tls_port2,
        "app.example.test",
        &pebble.issuing_root_pem().await,
    )
    .await;
    assert_eq!(again, first, "the stored certificate is served");
    // Orders start before the proxy reports ready: none is in flight.
    let s = status(&app, "app.example.test").await;
    assert_eq!(s["status"], "valid", "no order in flight: {s}");
    assert_eq!(app.metrics.acme_orders(), (0, 0), "no second order");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_a_certificate_on_the_routes_own_port() {
    let store = tempfile::tempdir().unwrap();
    let app_backend = backend("alpn", Kind::H1).await;
    let mut ports = Ports::default();
    let tls_port = ports.take();
    // Nothing listens on pebble's HTTP-01 port: only TLS-ALPN-01 can pass.
    let pebble = pebble::start(PebbleOptions::new(1, tls_port)).await;
    let routes = json!([auto_route(
        "alpn",
        tls_port,
        &["alpn.example.test"],
        app_backend.addr
    )]);
    let extra =
        json!({ "acme": acme(&pebble, store.path(), json!({ "challenge": "tls-alpn-01" })) });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;
    until("the certificate", ORDER, || issued(&app) == 1).await;
    let r = https(
        "alpn.example.test",
        tls_port,
        &pebble.issuing_root_path().await,
    )
    .await;
    assert_eq!(
        (r.status, r.json()["backend"].clone()),
        (200, json!("alpn")),
        "{r:?}"
    );
    assert_eq!(app.metrics.acme_orders().1, 0, "no failed order");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_stored_certificate_is_reported_and_ordered_again() {
    let store = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(store.path().join("certificates")).unwrap();
    std::fs::write(
        store.path().join("certificates/fix.example.test.pem"),
        "-----BEGIN PRIVATE KEY-----\nbroken\n",
    )
    .unwrap();
    let app_backend = backend("fix", Kind::H1).await;
    let mut ports = Ports::default();
    let (http_port, tls_port) = (ports.take(), ports.take());
    let pebble = pebble::start(PebbleOptions::new(http_port, tls_port)).await;
    let routes = json!([auto_route(
        "fix",
        tls_port,
        &["fix.example.test"],
        app_backend.addr
    )]);
    let extra = json!({ "acme": acme(&pebble, store.path(), json!({ "port": http_port })) });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;
    until("the certificate", ORDER, || issued(&app) == 1).await;
    let r = https(
        "fix.example.test",
        tls_port,
        &pebble.issuing_root_path().await,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let pem =
        std::fs::read_to_string(store.path().join("certificates/fix.example.test.pem")).unwrap();
    assert!(
        pem.contains("-----BEGIN CERTIFICATE-----"),
        "the broken file was replaced"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_acme_server_is_reported_and_other_routes_keep_serving() {
    let store = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = turnout_tests::pki::Ca::new("Static CA");
    let cert = turnout_tests::tls::files(dir.path(), "static", &ca.leaf(&["static.test"]));
    let app_backend = backend("static", Kind::H1).await;
    let mut ports = Ports::default();
    let (http_port, tls_port) = (ports.take(), ports.take());
    // A directory nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!(
        "https://127.0.0.1:{}/dir",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let routes = json!([
        auto_route("auto", tls_port, &["down.example.test"], app_backend.addr),
        { "name": "static", "match": { "ports": tls_port, "domains": "static.test" },
          "action": { "type": "forward", "targets": target(app_backend.addr),
                      "tls": { "mode": "terminate", "certificate": cert } } }
    ]);
    let extra = json!({
        "acme": { "directoryUrl": dead, "certificateStore": store.path(), "port": http_port },
        "admin": { "listen": "127.0.0.1:0" } });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;
    until("the failed order", Duration::from_secs(20), || {
        app.metrics.acme_orders().1 >= 1
    })
    .await;
    let s = status(&app, "down.example.test").await;
    assert_eq!(s["status"], "failed", "{s}");
    assert!(
        s["lastError"].as_str().unwrap().starts_with("account: "),
        "{s}"
    );
    assert!(s["nextAttempt"].is_string(), "{s}");
    // Backoff: no tight loop of retries.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.metrics.acme_orders().1, 1, "retried too soon");
    // The auto route's name gets a clear failure, never another certificate.
    let proxy = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let refused = turnout_tests::tls::connect(proxy, "down.example.test", ca.client(&[])).await;
    assert!(
        refused.is_err(),
        "no certificate may be served before ACME's"
    );
    // Counted once the alert is out (the client may see it first).
    let pending = || {
        app.metrics
            .handshakes()
            .iter()
            .filter(|(h, _)| h.result == "certificate-pending")
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    until(
        "the certificate-pending count",
        Duration::from_secs(5),
        || pending() == 1,
    )
    .await;
    // The other route is served all along.
    let tls = turnout_tests::tls::connect(proxy, "static.test", ca.client(&["http/1.1"]))
        .await
        .expect("the static route still terminates");
    drop(tls);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_orders_an_approved_name_at_its_first_handshake() {
    let store = tempfile::tempdir().unwrap();
    let app_backend = backend("wild", Kind::H1).await;
    let mut ports = Ports::default();
    let (http_port, tls_port, open_port) = (ports.take(), ports.take(), ports.take());
    let pebble = pebble::start(PebbleOptions::new(http_port, tls_port)).await;
    // An `auto` route without domains: the routes plugin approves nothing
    // for it (any client could otherwise make the proxy order any name).
    let open = json!({ "name": "open", "match": { "ports": open_port },
        "action": { "type": "forward", "targets": target(app_backend.addr),
                    "tls": { "mode": "terminate", "certificate": "auto" } } });
    let routes = json!([
        auto_route("wild", tls_port, &["*.example.test"], app_backend.addr),
        open
    ]);
    let extra = json!({ "acme": acme(&pebble, store.path(),
                                     json!({ "port": http_port, "onDemand": true, "onDemandTimeout": 45000 })),
                        "admin": { "listen": "127.0.0.1:0" } });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;
    assert_eq!(
        app.metrics.acme_orders(),
        (0, 0),
        "a wildcard is not ordered up front"
    );
    // The first handshake waits for the order, then succeeds.
    let root = pebble.issuing_root_path().await;
    let r = https("shop.example.test", tls_port, &root).await;
    assert_eq!(
        (r.status, r.json()["backend"].clone()),
        (200, json!("wild")),
        "{r:?}"
    );
    assert_eq!(issued(&app), 1);
    let s = status(&app, "shop.example.test").await;
    assert_eq!(
        (s["status"].clone(), s["onDemand"].clone()),
        (json!("valid"), json!(true)),
        "{s}"
    );
    // The next one is served from the issued certificate.
    let r = https("shop.example.test", tls_port, &root).await;
    assert_eq!(r.status, 200);
    assert_eq!(issued(&app), 1);
    // Not approved: refused at once, nothing ordered.
    let proxy = SocketAddr::from(([127, 0, 0, 1], open_port));
    let any = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let refused = turnout_tests::tls::connect(proxy, "stranger.test", Arc::new(any)).await;
    assert!(refused.is_err());
    assert!(
        status(&app, "stranger.test").await.is_null(),
        "no order was started"
    );
    assert_eq!(app.metrics.acme_orders(), (1, 0));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_swaps_the_certificate_while_a_connection_stays_up() {
    let store = tempfile::tempdir().unwrap();
    let app_backend = backend("renew", Kind::H1).await;
    let mut ports = Ports::default();
    let (http_port, tls_port) = (ports.take(), ports.take());
    let mut opts = PebbleOptions::new(http_port, tls_port);
    // Valid 30 s: renewal is due two thirds in, at 20 s.
    opts.cert_validity = Some(Duration::from_secs(30));
    let pebble = pebble::start(opts).await;
    let routes = json!([auto_route(
        "renew",
        tls_port,
        &["renew.example.test"],
        app_backend.addr
    )]);
    let extra = json!({ "acme": acme(&pebble, store.path(), json!({
        "port": http_port, "renewThresholdDays": 30, "renewCheckIntervalHours": 0.0005 })) });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;
    until("the certificate", ORDER, || issued(&app) == 1).await;
    let root = pebble.issuing_root_pem().await;
    let first = served(tls_port, "renew.example.test", &root).await;
    // A keep-alive connection opened on the first certificate.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(root.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let proxy = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let tls = turnout_tests::tls::connect(proxy, "renew.example.test", Arc::new(client))
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = || {
        hyper::Request::get("/")
            .header("host", "renew.example.test")
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap()
    };
    assert_eq!(send.send_request(get()).await.unwrap().status(), 200);
    until("the renewal", ORDER, || issued(&app) >= 2).await;
    let second = served(tls_port, "renew.example.test", &root).await;
    assert_ne!(second, first, "new handshakes get the renewed certificate");
    let r = send
        .send_request(get())
        .await
        .expect("the old connection is still up");
    assert_eq!(r.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_is_answered_before_admit_and_nothing_else_rides_along() {
    let store = tempfile::tempdir().unwrap();
    let app_backend = backend("blocked", Kind::H1).await;
    let mut ports = Ports::default();
    let (http_port, tls_port) = (ports.take(), ports.take());
    let pebble = pebble::start(PebbleOptions::new(http_port, tls_port)).await;
    let routes = json!([auto_route(
        "blocked",
        tls_port,
        &["blocked.example.test"],
        app_backend.addr
    )]);
    // The guard refuses every loopback client — pebble's validation too,
    // were it asked.
    let extra = json!({ "acme": acme(&pebble, store.path(), json!({ "port": http_port })),
                        "defaults": { "security": { "ipBlockList": ["127.0.0.1"] } } });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;
    until("the certificate", ORDER, || issued(&app) == 1).await;
    assert!(
        store
            .path()
            .join("certificates/blocked.example.test.pem")
            .exists()
    );
    // An ordinary request on the ACME port is still the guard's: refused.
    let url = format!("http://127.0.0.1:{http_port}/.well-known/acme-challenge/guess");
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "000",
        "no answer for a blocked client"
    );
    app.stop().await;
}
