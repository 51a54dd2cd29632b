//! ACME across instances sharing one real Redis: a name two instances
//! want is ordered once (pebble), both serve the certificate, and an
//! HTTP-01 challenge is answered by the instance that did not order.
//!
//! Processes rather than in-process apps: the instances must not share
//! anything but Redis, and a drain ends in an exit status. Everything
//! listens on loopback; every wait has a deadline; the logs of the
//! processes are printed when a test fails. Shared helpers:
//! `turnout_tests::cluster`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpStream;
use turnout_tests::cluster::{PREFIX, config, eventually, metric, port, target};
use turnout_tests::http::{Kind, backend};
use turnout_tests::node::Node;
use turnout_tests::pebble::{self, PebbleOptions};
use turnout_tests::redis::Redis;

/// Longest wait for an ACME order (pebble delays each validation up to
/// 1 s and rejects a share of nonces).
const ORDER: Duration = Duration::from_secs(90);

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
