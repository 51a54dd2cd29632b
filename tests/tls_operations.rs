//! Terminated TLS connections in operation: limits, hot certificate
//! reload, 2 000 at once, the admin API and metrics, socket options. The
//! handshake itself is `tls_termination.rs`'s.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use turnout_tests::app::{Ports, RunningApp, admin_request};
use turnout_tests::l4::echo_backend;
use turnout_tests::pki::{Ca, write};
use turnout_tests::tls::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_limits_count_terminated_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (echo_addr, _) = echo_backend().await;
    let mut ports = Ports::default();
    let port = ports.take();
    let leaf = ca.leaf(&["limit.test"]);
    let routes = json!([terminate(
        "l",
        port,
        &["limit.test"],
        echo_addr,
        files(dir.path(), "l", &leaf)
    )]);
    let app =
        RunningApp::start_with(&config(routes, json!({ "maxConnectionsPerIP": 2 })), ports).await;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let mut a = connect(proxy, "limit.test", ca.client(&[])).await.unwrap();
    echo(&mut a, b"1").await;
    let mut b = connect(proxy, "limit.test", ca.client(&[])).await.unwrap();
    echo(&mut b, b"2").await;
    let third = connect(proxy, "limit.test", ca.client(&[])).await;
    assert!(
        third.is_err(),
        "a third terminated connection from one IP is refused"
    );
    assert_eq!(app.tracker.total(), 2);
    drop((a, b));
    settled(&app).await;
    assert_eq!(
        app.metrics.refusal_count("denied"),
        1,
        "{:?}",
        app.metrics.refusals()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_file_serves_new_handshakes_and_a_broken_one_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (echo_addr, _) = echo_backend().await;
    let mut ports = Ports::default();
    let port = ports.take();
    let first = ca.leaf(&["reload.test"]);
    let cert = files(dir.path(), "r", &first);
    let routes = json!([terminate("r", port, &["reload.test"], echo_addr, cert)]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let client = ca.client(&[]);
    let mut old = connect(proxy, "reload.test", client.clone()).await.unwrap();
    let old_serial = served_serial(&old);

    // A new certificate and key (written key first, then the certificate,
    // the way an ACME client or an operator replaces them).
    let second = ca.leaf(&["reload.test"]);
    write(dir.path(), "r.key", &second.key);
    write(dir.path(), "r.pem", &second.cert);
    // The watcher picks it up (a reload applied; a look that saw the new
    // key beside the old certificate is refused, not applied).
    let before = app.metrics.certificate_reloads();
    wait_for("the new certificate to load", || {
        app.metrics.certificate_reloads().0 > before.0
    })
    .await;
    let fresh = connect(proxy, "reload.test", client.clone()).await.unwrap();
    let new_serial = served_serial(&fresh);
    drop(fresh);
    assert_ne!(
        new_serial, old_serial,
        "new handshakes get the new certificate"
    );
    echo(&mut old, b"the old connection is still up").await;

    // A broken file: reported, and the certificate in use keeps serving.
    let before = app.metrics.certificate_reloads();
    write(
        dir.path(),
        "r.pem",
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    );
    wait_for("the broken file to be refused", || {
        app.metrics.certificate_reloads().1 > before.1
    })
    .await;
    let mut s = connect(proxy, "reload.test", client.clone())
        .await
        .expect("still served");
    assert_eq!(served_serial(&s), new_serial);
    echo(&mut s, b"ok").await;
    drop((old, s));
    settled(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_terminated_connections_leave_no_count() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (echo_addr, _) = echo_backend().await;
    let mut ports = Ports::default();
    let port = ports.take();
    let leaf = ca.leaf(&["many.test"]);
    let routes = json!([terminate(
        "many",
        port,
        &["many.test"],
        echo_addr,
        files(dir.path(), "m", &leaf)
    )]);
    let app = RunningApp::start_with(&config(routes, json!({ "maxConnections": 0 })), ports).await;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let client = ca.client(&[]);
    const N: usize = 2000;
    let mut tasks = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..N {
        let (client, gate) = (client.clone(), gate.clone());
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let mut s = connect(proxy, "many.test", client)
                .await
                .expect("handshake");
            echo(&mut s, format!("conn {i}").as_bytes()).await;
            drop(permit);
            s
        });
    }
    let mut open = Vec::with_capacity(N);
    while let Some(s) = tasks.join_next().await {
        open.push(s.unwrap());
    }
    assert_eq!(app.tracker.total() as usize, N, "all held at once");
    drop(open);
    settled(&app).await;
    assert_eq!(app.tracker.tracked_routes(), 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_handshakes_are_shown_by_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Admin Test CA");
    let (echo_addr, _) = echo_backend().await;
    let mut ports = Ports::default();
    let port = ports.take();
    let leaf = ca.leaf(&["shown.test", "*.shown.test"]);
    let routes = json!([terminate(
        "shown",
        port,
        &["shown.test"],
        echo_addr,
        files(dir.path(), "shown", &leaf)
    )]);
    let app = RunningApp::start_with(
        &config(routes, json!({ "admin": { "listen": "127.0.0.1:0" } })),
        ports,
    )
    .await;
    let admin = app.admin.expect("admin configured");
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = connect(proxy, "shown.test", ca.client(&["x-test"]))
        .await
        .unwrap();
    echo(&mut s, b"hi").await;
    drop(s);
    settled(&app).await;

    let (status, body) = admin_request(admin, "GET", "/api/certificates").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let c = &v["certificates"][0];
    assert_eq!(c["names"], json!(["shown.test", "*.shown.test"]), "{v}");
    assert_eq!(c["source"], "static");
    assert!(c["file"].as_str().unwrap().ends_with("shown.pem"), "{v}");
    assert!(
        c["issuer"].as_str().unwrap().contains("Admin Test CA"),
        "{v}"
    );
    assert!(c["daysLeft"].as_i64().unwrap() > 300, "{v}");
    assert!(c["notAfter"].as_str().unwrap().ends_with('Z'), "{v}");
    assert_eq!(c["routes"], json!(["shown"]));

    let (status, text) = admin_request(admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"turnout_tls_handshakes_total{result="ok",version="TLSv1.3",alpn="-"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"turnout_tls_certificate_reloads_total{result="refused"} 0"#),
        "{text}"
    );
    assert!(
        text.contains("turnout_tls_certificate_expiry_timestamp_seconds{"),
        "{text}"
    );
    app.stop().await;
}

/// The policy's socket options reach both sockets of a terminated
/// connection too (TCP_NODELAY on by default: a fresh backend socket has it
/// off until the host sets it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_connection_gets_the_policys_socket_options() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (echo_addr, _) = echo_backend().await;
    let mut ports = Ports::default();
    let port = ports.take();
    let leaf = ca.leaf(&["opts.test"]);
    let routes = json!([terminate(
        "opts",
        port,
        &["opts.test"],
        echo_addr,
        files(dir.path(), "o", &leaf)
    )]);
    let app = RunningApp::start_with(&config(routes, json!({ "noDelay": true })), ports).await;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = connect(proxy, "opts.test", ca.client(&[])).await.unwrap();
    echo(&mut s, b"options").await;
    let backend = turnout_tests::l4::socket_to(echo_addr).expect("the proxy's backend socket");
    assert!(
        rustix::net::sockopt::tcp_nodelay(&backend).unwrap(),
        "TCP_NODELAY on the backend socket"
    );
    assert!(
        rustix::net::sockopt::socket_keepalive(&backend).unwrap(),
        "keep-alive on the backend socket"
    );
    drop((backend, s));
    settled(&app).await;
    app.stop().await;
}
