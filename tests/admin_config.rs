//! The running configuration through the admin API (`GET /api/config`,
//! `PUT /api/config`, `PUT /api/routes`): the token, routes replaced under
//! load with nothing dropped, ports bound and closed, every problem of a
//! bad body listed with nothing changed, `If-Match`, secrets redacted and
//! kept, `admin.persist`, and SIGHUP on the same path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnout_tests::app::{AdminAnswer, Ports, RunningApp, admin_call};
use turnout_tests::l4::{STEP, closed_port};

const TOKEN: &str = "test-token-0123456789abcdef";

/// A backend that greets every connection with `tag` (3 bytes), then
/// echoes.
async fn tagged(tag: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if s.write_all(tag.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn route(name: &str, port: u16, backend: SocketAddr) -> Value {
    json!({
        "name": name,
        "match": { "ports": port },
        "action": { "type": "forward", "targets": [{ "host": "127.0.0.1", "port": backend.port() }] }
    })
}

fn config(routes: &[Value], admin: Value) -> String {
    json!({
        "bind": ["127.0.0.1"],
        "gracefulShutdownTimeout": 500,
        // The load below comes from one address, far past the defaults.
        "connectionRateLimitPerMinute": 0,
        "maxConnectionsPerIP": 0,
        "admin": admin,
        "routes": routes,
    })
    .to_string()
}

fn admin_with_token() -> Value {
    json!({ "listen": "127.0.0.1:0", "token": TOKEN })
}

const BEARER: (&str, &str) = ("Authorization", "Bearer test-token-0123456789abcdef");

/// Connects to `port` and reads the backend's 3-byte greeting.
async fn greeting(port: u16) -> std::io::Result<(TcpStream, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tag = [0u8; 3];
    tokio::time::timeout(STEP, s.read_exact(&mut tag))
        .await
        .map_err(|_| std::io::Error::other("no greeting in time"))??;
    Ok((s, String::from_utf8_lossy(&tag).into_owned()))
}

async fn greets(port: u16) -> String {
    greeting(port)
        .await
        .unwrap_or_else(|e| panic!("port {port}: {e}"))
        .1
}

/// Sends `msg` and reads it back.
async fn echoes(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(STEP, s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, msg);
}

async fn put(admin: SocketAddr, path: &str, body: &Value, headers: &[(&str, &str)]) -> AdminAnswer {
    admin_call(admin, "PUT", path, headers, &body.to_string()).await
}

/// The proxy with route `a` on a port of its own to `backend`, and a
/// token: (the app, its admin API, the port).
async fn one_route(backend: SocketAddr) -> (RunningApp, SocketAddr, u16) {
    let mut ports = Ports::default();
    let port = ports.take();
    let app = RunningApp::start_with(
        &config(&[route("a", port, backend)], admin_with_token()),
        ports,
    )
    .await;
    let admin = app.admin.unwrap();
    (app, admin, port)
}

/// `turnout_config_changes_total` from the admin API's source with `result`.
async fn api_changes(admin: SocketAddr, result: &str) -> u64 {
    changes(admin, "api", result).await
}

/// `turnout_config_changes_total{source, result}`.
async fn changes(admin: SocketAddr, source: &str, result: &str) -> u64 {
    let (_, metrics) = turnout_tests::app::admin_request(admin, "GET", "/metrics").await;
    let series = format!(r#"turnout_config_changes_total{{source="{source}",result="{result}"}} "#);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
}

async fn get_config(admin: SocketAddr) -> AdminAnswer {
    let a = admin_call(admin, "GET", "/api/config", &[BEARER], "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    a
}

#[tokio::test]
async fn write_endpoints_are_off_without_a_token_and_need_the_right_one() {
    let b = tagged("one").await;
    let mut ports = Ports::default();
    let port = ports.take();
    let routes = [route("a", port, b)];
    let app =
        RunningApp::start_with(&config(&routes, json!({ "listen": "127.0.0.1:0" })), ports).await;
    let admin = app.admin.unwrap();
    let list = json!([route("a", port, b)]);
    // Reading is open (loopback); writing is off.
    let shown = get_config(admin).await;
    assert!(shown.header("etag").is_some());
    assert_eq!(shown.json()["routes"][0]["name"], "a");
    for path in ["/api/routes", "/api/config"] {
        let a = put(admin, path, &list, &[BEARER]).await;
        assert_eq!(a.status, 403, "{}", a.body);
        assert!(a.body.contains("admin.token"), "{}", a.body);
    }
    app.stop().await;

    let mut ports = Ports::default();
    let port = ports.take();
    let app =
        RunningApp::start_with(&config(&[route("a", port, b)], admin_with_token()), ports).await;
    let admin = app.admin.unwrap();
    let list = json!([route("a", port, b)]);
    let a = put(admin, "/api/routes", &list, &[]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.header("www-authenticate").unwrap().starts_with("Bearer"));
    let a = put(
        admin,
        "/api/routes",
        &list,
        &[("Authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = put(admin, "/api/routes", &list, &[("Authorization", TOKEN)]).await;
    assert_eq!(
        a.status, 401,
        "a token without the Bearer scheme: {}",
        a.body
    );
    let a = put(admin, "/api/routes", &list, &[BEARER]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // With a token, reading the configuration needs it too.
    let a = admin_call(admin, "GET", "/api/config", &[], "").await;
    assert_eq!(a.status, 401, "{}", a.body);
    // The token itself is never shown.
    let shown = get_config(admin).await;
    assert_eq!(shown.json()["admin"]["token"], "[redacted]");
    assert!(!shown.body.contains(TOKEN));
    // Other methods are named.
    let a = admin_call(admin, "DELETE", "/api/routes", &[BEARER], "").await;
    assert_eq!((a.status, a.header("allow")), (405, Some("PUT")));
    app.stop().await;
}

/// Clients connect, read the greeting and echo, without pause, until told
/// to stop; every failure is counted.
fn load(port: u16, stop: Arc<AtomicU64>) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let (mut ok, mut failed) = (0u64, 0u64);
        // Bounded: stops when told, or after 60 000 connections.
        for _ in 0..60_000 {
            if stop.load(Ordering::Relaxed) != 0 {
                break;
            }
            match greeting(port).await {
                Ok((mut s, _)) => {
                    s.write_all(b"ping").await.unwrap();
                    let mut back = [0u8; 4];
                    match tokio::time::timeout(STEP, s.read_exact(&mut back)).await {
                        Ok(Ok(_)) if &back == b"ping" => ok += 1,
                        _ => failed += 1,
                    }
                }
                Err(_) => failed += 1,
            }
        }
        (ok, failed)
    })
}

/// A TLS passthrough route for `held.test` on `port`.
fn passthrough(port: u16, backend: SocketAddr) -> Value {
    json!({
        "name": "tls",
        "match": { "ports": port, "domains": ["held.test"] },
        "action": { "type": "forward", "tls": { "mode": "passthrough" },
                    "targets": [{ "host": "127.0.0.1", "port": backend.port() }] }
    })
}

/// A TLS session with the backend behind a passthrough route, greeted.
async fn tls_session(port: u16) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(turnout_tests::l4::client_config());
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("held.test").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let mut hi = [0u8; 3];
    tokio::time::timeout(STEP, tls.read_exact(&mut hi))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&hi, b"hi!");
    tls
}

async fn tls_echoes(s: &mut tokio_rustls::client::TlsStream<TcpStream>, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(STEP, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, msg);
}

/// The connections held across the updates (plain, TLS passthrough) both
/// still echo.
async fn still_flowing(
    plain: &mut TcpStream,
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    msg: &[u8],
) {
    echoes(plain, msg).await;
    tls_echoes(tls, msg).await;
}

#[tokio::test]
async fn routes_replaced_under_load_drop_nothing_and_ports_follow_the_routes() {
    let (one, two) = (tagged("one").await, tagged("two").await);
    let secure = turnout_tests::l4::tls_backend("held.test", "hi!").await;
    let mut ports = Ports::default();
    let (port, tport) = (ports.take(), ports.take());
    let tls = passthrough(tport, secure);
    let app = RunningApp::start_with(
        &config(&[route("a", port, one), tls.clone()], admin_with_token()),
        ports,
    )
    .await;
    let admin = app.admin.unwrap();
    // Connections held across every update: plain and TLS passthrough.
    let (mut held, tag) = greeting(port).await.unwrap();
    assert_eq!(tag, "one");
    let mut held_tls = tls_session(tport).await;
    let stop = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = (0..4).map(|_| load(port, stop.clone())).collect();

    // 1: a second route on a new port: bound at once.
    let extra = closed_port().await.port();
    let a = put(
        admin,
        "/api/routes",
        &json!([route("a", port, one), tls.clone(), route("b", extra, two)]),
        &[BEARER],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["routes"]["added"], json!(["b"]));
    assert_eq!(
        v["listeners"]["added"],
        json!([format!("127.0.0.1:{extra}")])
    );
    assert_eq!(greets(extra).await, "two");
    still_flowing(&mut held, &mut held_tls, b"after update 1").await;
    let (mut on_extra, _) = greeting(extra).await.unwrap();

    // 2: route a moves to the other backend, in the {"routes": …} form.
    let body = json!({"routes": [route("a", port, two), tls.clone(), route("b", extra, two)]});
    let a = put(admin, "/api/routes", &body, &[BEARER]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["routes"]["changed"], json!(["a"]));
    assert_eq!(greets(port).await, "two");
    still_flowing(&mut held, &mut held_tls, b"after update 2").await;

    // 3: route b goes: its port stops accepting, its connection runs on.
    let a = put(
        admin,
        "/api/routes",
        &json!([route("a", port, two), tls.clone()]),
        &[BEARER],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["routes"]["removed"], json!(["b"]));
    assert_eq!(
        v["listeners"]["removed"],
        json!([format!("127.0.0.1:{extra}")])
    );
    let refused = TcpStream::connect(("127.0.0.1", extra)).await;
    assert_eq!(
        refused.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    echoes(&mut on_extra, b"still here").await;
    still_flowing(&mut held, &mut held_tls, b"after update 3").await;
    // New TLS sessions still pass through.
    drop(tls_session(tport).await);

    stop.store(1, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for l in loaders {
        let (o, f) = l.await.unwrap();
        ok += o;
        failed += f;
    }
    assert_eq!(failed, 0, "{ok} connections succeeded, {failed} failed");
    assert!(ok > 0);
    assert_eq!(api_changes(admin, "applied").await, 3);
    drop((held, on_extra, held_tls));
    app.stop().await;
}

#[tokio::test]
async fn a_bad_body_is_refused_with_every_problem_and_nothing_changes() {
    let one = tagged("one").await;
    let (app, admin, port) = one_route(one).await;
    let before = get_config(admin).await;

    // The routes plugin's problems, each with its key path.
    let bad = json!([
        { "name": "x", "match": { "ports": 0 }, "action": { "type": "forward", "targets": [{ "host": "h", "port": 1 }] } },
        { "name": "y", "match": { "ports": 1 }, "action": { "type": "teleport" } }
    ]);
    let a = put(admin, "/api/routes", &bad, &[BEARER]).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let problems = a.json()["problems"].as_array().unwrap().clone();
    let paths: Vec<&str> = problems
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"routes[0].match.ports"), "{problems:?}");
    assert!(paths.contains(&"routes[1].action.type"), "{problems:?}");

    // The host's own checks: a typo and a bad value, both listed.
    let mut doc: Value = serde_json::from_str(&before.body).unwrap();
    doc["inactivityTimout"] = json!(5);
    let a = put(admin, "/api/config", &doc, &[BEARER]).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(
        a.json()["problems"][0]["path"],
        "inactivityTimout",
        "{}",
        a.body
    );
    let mut doc: Value = serde_json::from_str(&before.body).unwrap();
    doc["keepAliveInactivityMultiplier"] = json!(0);
    doc["connectionTimeout"] = json!(0);
    let a = put(admin, "/api/config", &doc, &[BEARER]).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(
        a.json()["problems"].as_array().unwrap().len(),
        2,
        "{}",
        a.body
    );

    // Not JSON; the wrong shape.
    let a = admin_call(admin, "PUT", "/api/routes", &[BEARER], "[{").await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("not JSON"), "{}", a.body);
    let a = put(admin, "/api/routes", &json!({"route": []}), &[BEARER]).await;
    assert_eq!(a.status, 400, "{}", a.body);

    // A port another process holds: nothing changes, and the error says
    // who to ask.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let a = put(
        admin,
        "/api/routes",
        &json!([route("a", port, one), route("t", taken_port, one)]),
        &[BEARER],
    )
    .await;
    assert_eq!(a.status, 500, "{}", a.body);
    assert!(
        a.body
            .contains(&format!("cannot listen on 127.0.0.1:{taken_port}")),
        "{}",
        a.body
    );

    let after = get_config(admin).await;
    assert_eq!(after.body, before.body);
    assert_eq!(after.header("etag"), before.header("etag"));
    assert_eq!(greets(port).await, "one");
    assert_eq!(api_changes(admin, "refused").await, 4);
    assert_eq!(api_changes(admin, "applied").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_writer_behind_another_gets_409() {
    let one = tagged("one").await;
    let (app, admin, port) = one_route(one).await;
    let v1 = get_config(admin).await.header("etag").unwrap().to_owned();
    let list = json!([
        route("a", port, one),
        route("b", closed_port().await.port(), one)
    ]);
    // Both read v1; the first write wins, the second is told.
    let a = put(admin, "/api/routes", &list, &[BEARER, ("If-Match", &v1)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v2 = a.header("etag").unwrap().to_owned();
    assert_ne!(v1, v2);
    let a = put(
        admin,
        "/api/routes",
        &json!([route("a", port, one)]),
        &[BEARER, ("If-Match", &v1)],
    )
    .await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert_eq!(a.json()["version"], v2.as_str());
    assert_eq!(
        get_config(admin).await.json()["routes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // `*` and no If-Match at all: last writer wins.
    let a = put(
        admin,
        "/api/routes",
        &json!([route("a", port, one)]),
        &[BEARER, ("If-Match", "*")],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(api_changes(admin, "conflict").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn secrets_are_redacted_and_a_document_sent_back_keeps_them() {
    let backend = turnout_tests::http::backend("b", turnout_tests::http::Kind::H1).await;
    let mut ports = Ports::default();
    let port = ports.take();
    let http_route = json!({
        "name": "web",
        "match": { "ports": port, "domains": ["app.test"] },
        "action": { "type": "forward", "targets": [{ "host": "127.0.0.1", "port": backend.addr.port() }] },
        "security": { "basicAuth": { "users": [{ "username": "ann", "password": "open sesame" }] } }
    });
    let app = RunningApp::start_with(&config(&[http_route], admin_with_token()), ports).await;
    let admin = app.admin.unwrap();
    let shown = get_config(admin).await;
    assert!(!shown.body.contains("open sesame"), "{}", shown.body);
    let mut doc = shown.json();
    assert_eq!(
        doc["routes"][0]["security"]["basicAuth"]["users"][0]["password"],
        "[redacted]"
    );
    // Edit something else and send the document back whole.
    doc["inactivityTimeout"] = json!(60_000);
    let a = put(admin, "/api/config", &doc, &[BEARER]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let url = format!("http://app.test:{port}/");
    let resolve = format!("app.test:{port}:127.0.0.1");
    let ok =
        turnout_tests::http::curl(&["-s", "--resolve", &resolve, "-u", "ann:open sesame", &url])
            .await;
    assert_eq!(ok.status, 200, "the password was kept");
    let denied =
        turnout_tests::http::curl(&["-s", "--resolve", &resolve, "-u", "ann:[redacted]", &url])
            .await;
    assert_eq!(denied.status, 401, "the placeholder is not a password");
    // A placeholder where nothing was running (a new user) is refused by
    // path: a secret never moves to another user.
    doc["routes"][0]["security"]["basicAuth"]["users"]
        .as_array_mut()
        .unwrap()
        .push(json!({"username": "bob", "password": "[redacted]"}));
    let a = put(admin, "/api/config", &doc, &[BEARER]).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(
        a.json()["problems"][0]["path"],
        "routes[0].security.basicAuth.users[1].password"
    );
    app.stop().await;
}

#[tokio::test]
async fn persist_writes_the_file_in_its_format_and_a_restart_keeps_the_change() {
    let (one, two) = (tagged("one").await, tagged("two").await);
    let mut ports = Ports::default();
    let port = ports.take();
    let toml = format!(
        "bind = [\"127.0.0.1\"]\ngracefulShutdownTimeout = 500\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\npersist = true\n\n\
         [[routes]]\nname = \"a\"\nmatch = {{ ports = {port} }}\naction = {{ type = \"forward\", targets = [{{ host = \"127.0.0.1\", port = {} }}] }}\n",
        one.port()
    );
    let app = RunningApp::start_file("turnout.toml", &toml, ports).await;
    let admin = app.admin.unwrap();
    let a = put(
        admin,
        "/api/routes",
        &json!([route("a", port, two)]),
        &[BEARER],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["persisted"], true);
    let written = std::fs::read_to_string(&app.config_path).unwrap();
    let back: Value = toml::from_str(&written).unwrap_or_else(|e| panic!("{e}: {written}"));
    assert_eq!(
        back["routes"][0]["action"]["targets"][0]["port"],
        two.port()
    );
    assert_eq!(
        back["admin"]["token"], TOKEN,
        "the file keeps the real secret"
    );
    // SIGHUP reads the written file: the same configuration.
    app.reload().await;
    assert_eq!(greets(port).await, "two");
    app.stop().await;

    // A restart from the written file serves the change.
    let mut ports = Ports::default();
    let port2 = ports.take();
    let restarted = written.replace(&format!("ports = {port}"), &format!("ports = {port2}"));
    let app = RunningApp::start_file("turnout.toml", &restarted, ports).await;
    assert_eq!(greets(port2).await, "two");
    app.stop().await;
}

#[tokio::test]
async fn without_persist_the_file_is_untouched_and_sighup_goes_back_to_it() {
    let (one, two) = (tagged("one").await, tagged("two").await);
    let mut ports = Ports::default();
    let port = ports.take();
    let text = config(&[route("a", port, one)], admin_with_token());
    let app = RunningApp::start_with(&text, ports).await;
    let admin = app.admin.unwrap();
    let a = put(
        admin,
        "/api/routes",
        &json!([route("a", port, two)]),
        &[BEARER],
    )
    .await;
    assert_eq!(
        (a.status, a.json()["persisted"].clone()),
        (200, json!(false))
    );
    assert_eq!(greets(port).await, "two");
    assert_eq!(std::fs::read_to_string(&app.config_path).unwrap(), text);
    let v = get_config(admin).await.header("etag").unwrap().to_owned();
    app.reload().await;
    // The reload is applied by the same task as API writes: once the
    // version moves, it is in force.
    for _ in 0..200 {
        if get_config(admin).await.header("etag") != Some(v.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_ne!(get_config(admin).await.header("etag"), Some(v.as_str()));
    assert_eq!(greets(port).await, "one");
    assert_eq!(changes(admin, "signal", "applied").await, 1);
    // A file that does not parse is refused, and counted.
    std::fs::write(&app.config_path, "{ not json").unwrap();
    app.reload().await;
    for _ in 0..200 {
        if changes(admin, "signal", "refused").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(changes(admin, "signal", "refused").await, 1);
    assert_eq!(greets(port).await, "one");
    app.stop().await;
}
