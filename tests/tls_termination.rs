//! TLS termination end to end: the whole proxy from a config file, real
//! certificates (a CA made by rcgen, written to files), real clients
//! (rustls, `openssl s_client`, `curl`), real plaintext and TLS backends:
//! certificate choice, chains, versions, resumption, re-encryption, key
//! forms, closes. Operations (limits, reload, scale, admin) are in
//! `tls_operations.rs`.

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnout_tests::app::{Ports, RunningApp};
use turnout_tests::l4::{STEP, echo_backend, read_to_end};
use turnout_tests::pki::{Ca, write};
use turnout_tests::tls::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_by_sni_exact_wildcard_and_unknown_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Turnout Test CA");
    let (echo_addr, _) = echo_backend().await;
    let mut ports = Ports::default();
    let port = ports.take();
    let exact = ca.leaf(&["app.test"]);
    let wild = ca.leaf(&["*.wild.test"]);
    let routes = json!([
        terminate(
            "exact",
            port,
            &["app.test"],
            echo_addr,
            files(dir.path(), "exact", &exact)
        ),
        terminate(
            "wild",
            port,
            &["*.wild.test"],
            echo_addr,
            files(dir.path(), "wild", &wild)
        ),
    ]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let client = ca.client(&[]);

    let mut s = connect(proxy, "App.Test", client.clone())
        .await
        .expect("exact name, any case");
    echo(&mut s, b"hello exact").await;
    let mut w = connect(proxy, "a.wild.test", client.clone())
        .await
        .expect("wildcard");
    echo(&mut w, b"hello wildcard").await;
    assert_ne!(served_serial(&s), served_serial(&w));
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // Route matching's `*` spans dots, a certificate's does not: the route
    // matches, no certificate names the server, the client is told so.
    let mut raw = TcpStream::connect(proxy).await.unwrap();
    raw.write_all(&turnout_tests::l4::client_hello_bytes(Some(
        "a.b.wild.test",
    )))
    .await
    .unwrap();
    assert_eq!(read_to_end(&mut raw).await, [0x15, 3, 3, 0, 2, 2, 112]);
    // No SNI with two certificates on the port and no default: the same.
    let mut raw = TcpStream::connect(proxy).await.unwrap();
    raw.write_all(&turnout_tests::l4::client_hello_bytes(None))
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut raw).await, [0x15, 3, 3, 0, 2, 2, 112]);
    drop((s, w));
    settled(&app).await;
    let m = &app.metrics;
    assert_eq!(m.refusal_count("tls-handshake"), 1, "{:?}", m.refusals());
    assert_eq!(
        m.refusal_count("no-route"),
        1,
        "no SNI matches no route: {:?}",
        m.refusals()
    );
    let hs = m.handshakes();
    let count = |result: &str| {
        hs.iter()
            .filter(|(h, _)| h.result == result)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert_eq!(count("ok"), 2, "{hs:?}");
    assert_eq!(count("no-certificate"), 1, "{hs:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_verifies_with_openssl_and_versions_and_resumption_hold() {
    let dir = tempfile::tempdir().unwrap();
    let root = Ca::new("Turnout Root");
    let intermediate = root.intermediate("Turnout Intermediate");
    let leaf = intermediate.leaf(&["chain.test"]);
    let (echo_addr, _) = echo_backend().await;
    let mut ports = Ports::default();
    let (both, v12, v13) = (ports.take(), ports.take(), ports.take());
    let cert = json!({ "cert": write(dir.path(), "leaf.pem", &leaf.cert),
                       "key": write(dir.path(), "leaf.key", &leaf.key),
                       "ca": write(dir.path(), "intermediate.pem", &intermediate.pem) });
    let mut only12 = terminate("v12", v12, &["chain.test"], echo_addr, cert.clone());
    only12["action"]["tls"]["versions"] = json!(["TLSv1.2"]);
    let mut only13 = terminate("v13", v13, &["chain.test"], echo_addr, cert.clone());
    only13["action"]["tls"]["versions"] = json!(["TLSv1.3"]);
    let routes = json!([
        terminate("both", both, &["chain.test"], echo_addr, cert),
        only12,
        only13
    ]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;
    let root_file = write(dir.path(), "root.pem", &root.pem);
    let root_file = root_file.to_str().unwrap();
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

    let (out, ok) = s_client(
        at(both),
        &[
            "-servername",
            "chain.test",
            "-verify_return_error",
            "-CAfile",
            root_file,
        ],
    )
    .await;
    assert!(ok && out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains("TLSv1.3"), "{out}");

    // A TLS 1.2-only route: 1.3-only clients fail, 1.2 clients get through.
    let (out, ok) = s_client(at(v12), &["-servername", "chain.test", "-tls1_3"]).await;
    assert!(!ok || !out.contains("Cipher is"), "TLS 1.3 refused: {out}");
    let (out, ok) = s_client(
        at(v12),
        &[
            "-servername",
            "chain.test",
            "-tls1_2",
            "-verify_return_error",
            "-CAfile",
            root_file,
        ],
    )
    .await;
    assert!(ok && out.contains("TLSv1.2"), "{out}");

    // And the other way round.
    let (out, ok) = s_client(at(v13), &["-servername", "chain.test", "-tls1_2"]).await;
    assert!(!ok || !out.contains("Cipher is"), "TLS 1.2 refused: {out}");
    let (out, ok) = s_client(at(v13), &["-servername", "chain.test", "-tls1_3"]).await;
    assert!(ok && out.contains("TLSv1.3"), "{out}");

    // Resumption: the second connection reuses the session of the first.
    let sess = dir.path().join("session.pem");
    let sess = sess.to_str().unwrap();
    for (version, port) in [("-tls1_3", both), ("-tls1_2", v12)] {
        let (out, ok) = s_client(
            at(port),
            &["-servername", "chain.test", version, "-sess_out", sess],
        )
        .await;
        assert!(ok && out.contains("New,"), "{version} first: {out}");
        let (out, ok) = s_client(
            at(port),
            &["-servername", "chain.test", version, "-sess_in", sess],
        )
        .await;
        assert!(ok && out.contains("Reused,"), "{version} resumed: {out}");
    }
    settled(&app).await;
    let failed = app
        .metrics
        .handshakes()
        .iter()
        .filter(|(h, _)| h.result == "no-shared-version-or-cipher")
        .map(|(_, n)| *n)
        .sum::<u64>();
    assert_eq!(failed, 2, "{:?}", app.metrics.handshakes());
    app.stop().await;
}

/// A TLS backend for `names` with a certificate from `ca`, echoing.
async fn tls_echo_backend(ca: &Ca, names: &[&str]) -> SocketAddr {
    let leaf = ca.leaf(names);
    let acceptor = tokio_rustls::TlsAcceptor::from(leaf.server(&["echo/1"]));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let _ = tls.flush().await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reencrypt_verifies_the_backend_and_never_falls_back_to_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let front = Ca::new("Front CA");
    let back = Ca::new("Backend CA");
    let other = Ca::new("Some Other CA");
    let backend = tls_echo_backend(&back, &["backend.internal"]).await;
    let mut ports = Ports::default();
    let port = ports.take();
    let reencrypt = |name: &str, sni: &str, upstream: Value| {
        let leaf = front.leaf(&[sni]);
        json!({ "name": name, "match": { "ports": port, "domains": [sni], "protocol": "tcp" },
                "action": { "type": "forward", "targets": target(backend),
                            "tls": { "mode": "terminate-and-reencrypt", "certificate": files(dir.path(), name, &leaf),
                                     "upstream": upstream } } })
    };
    let back_ca = write(dir.path(), "back-ca.pem", &back.pem);
    let other_ca = write(dir.path(), "other-ca.pem", &other.pem);
    let routes = json!([
        reencrypt(
            "good",
            "good.test",
            json!({ "ca": back_ca, "serverName": "backend.internal" })
        ),
        reencrypt(
            "wrong-ca",
            "wrong.test",
            json!({ "ca": other_ca, "serverName": "backend.internal" })
        ),
        reencrypt("unverified", "loose.test", json!({ "verify": false })),
    ]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));

    // ALPN: the client offers two, the backend picks echo/1, the proxy
    // offers the client only that.
    let mut s = connect(proxy, "good.test", front.client(&["h2", "echo/1"]))
        .await
        .expect("verified backend");
    echo(&mut s, b"through two TLS hops").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"echo/1"[..]));
    let mut u = connect(proxy, "loose.test", front.client(&[]))
        .await
        .expect("verify: false");
    echo(&mut u, b"unverified").await;

    // The wrong CA: refused, counted, never relayed unverified.
    let refused = match connect(proxy, "wrong.test", front.client(&[])).await {
        Err(_) => true,
        Ok(mut s) => {
            let _ = s.write_all(b"x").await;
            let mut b = [0u8; 1];
            matches!(
                tokio::time::timeout(STEP, s.read(&mut b)).await,
                Ok(Ok(0) | Err(_))
            )
        }
    };
    assert!(
        refused,
        "a backend with an untrusted certificate is refused"
    );
    drop((s, u));
    settled(&app).await;
    assert_eq!(
        app.metrics.refusal_count("backend-unreachable"),
        1,
        "{:?}",
        app.metrics.refusals()
    );
    app.stop().await;
}

/// Keys in every PEM form an operator has lying around load: PKCS#1
/// (`BEGIN RSA PRIVATE KEY`), SEC1 (`BEGIN EC PRIVATE KEY`), PKCS#8 — made
/// by the `openssl` CLI, the way they usually are.
#[test]
fn pkcs1_sec1_and_pkcs8_keys_made_by_openssl_load() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("the openssl CLI (installed by .ci/run)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ec.key",
    ]);
    run(&["genpkey", "-algorithm", "ed25519", "-out", "ed.key"]);
    for (key, header) in [
        ("rsa.key", "BEGIN RSA PRIVATE KEY"),
        ("ec.key", "BEGIN EC PRIVATE KEY"),
        ("ed.key", "BEGIN PRIVATE KEY"),
    ] {
        let text = std::fs::read_to_string(dir.path().join(key)).unwrap();
        assert!(text.contains(header), "{key} is {header}");
        let cert = format!("{key}.pem");
        run(&[
            "req",
            "-x509",
            "-new",
            "-key",
            key,
            "-out",
            &cert,
            "-days",
            "30",
            "-subj",
            "/CN=forms.test",
            "-addext",
            "subjectAltName=DNS:forms.test",
        ]);
        let source = turnout::config::tls::CertSource {
            cert: turnout::config::tls::Pem::File(dir.path().join(&cert)),
            key: turnout::config::tls::Pem::File(dir.path().join(key)),
            ca: None,
            at: "routes[0].action.tls.certificate".into(),
        };
        let loaded = turnout::tls::certs::load(&source, &turnout::tls::provider())
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(loaded.names, ["forms.test"]);
        assert!((29..=30).contains(&loaded.days_left(std::time::SystemTime::now())));
    }
}

/// A plaintext HTTP server behind a terminated TCP route: curl, with the
/// test CA and the name resolved to loopback, gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_a_terminated_route() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Curl CA");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = http.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\nhello over tls\r\n")
                    .await;
            });
        }
    });
    let mut ports = Ports::default();
    let port = ports.take();
    let leaf = ca.leaf(&["curl.test"]);
    let routes = json!([terminate(
        "curl",
        port,
        &["curl.test"],
        http_addr,
        files(dir.path(), "c", &leaf)
    )]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;
    let root = write(dir.path(), "root.pem", &ca.pem);
    let out = tokio::time::timeout(
        STEP,
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "10", "--cacert"])
            .arg(&root)
            .arg("--resolve")
            .arg(format!("curl.test:{port}:127.0.0.1"))
            .arg(format!("https://curl.test:{port}/"))
            .output(),
    )
    .await
    .expect("curl ends in time")
    .expect("curl (installed by .ci/run)");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello over tls\r\n");
    settled(&app).await;
    app.stop().await;
}

/// A client that does not speak TLS, on a route that terminates TLS, is
/// refused: its cleartext is never relayed to the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleartext_client_on_a_terminating_route_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (echo_addr, mut first) = echo_backend().await;
    let mut ports = Ports::default();
    let port = ports.take();
    let leaf = ca.leaf(&["clear.test"]);
    let mut route = terminate(
        "clear",
        port,
        &["clear.test"],
        echo_addr,
        files(dir.path(), "c", &leaf),
    );
    // No domains: the route matches connections without SNI too.
    route["match"].as_object_mut().unwrap().remove("domains");
    let app = RunningApp::start_with(&config(json!([route]), json!({})), ports).await;
    let mut s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    assert_eq!(read_to_end(&mut s).await, b"", "closed, nothing echoed");
    assert!(first.try_recv().is_err(), "nothing reached the backend");
    settled(&app).await;
    assert_eq!(
        app.metrics.refusal_count("unsupported"),
        1,
        "{:?}",
        app.metrics.refusals()
    );
    app.stop().await;
}

/// A re-encrypted backend that sends its answer and drops the socket
/// without close_notify (most servers do): the client gets the answer and
/// a clean TLS close, not a reset connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_without_close_notify_ends_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let front = Ca::new("Front CA");
    let back = Ca::new("Backend CA");
    let leaf = back.leaf(&["abrupt.internal"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(leaf.server(&[]));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let _ = tls.write_all(b"bye").await;
                let _ = tls.flush().await;
                // Dropped without shutdown: no close_notify, just a FIN.
            });
        }
    });
    let mut ports = Ports::default();
    let port = ports.take();
    let front_leaf = front.leaf(&["abrupt.test"]);
    let route = json!({ "name": "abrupt", "match": { "ports": port, "domains": ["abrupt.test"], "protocol": "tcp" },
        "action": { "type": "forward", "targets": target(backend),
                    "tls": { "mode": "terminate-and-reencrypt", "certificate": files(dir.path(), "a", &front_leaf),
                             "upstream": { "ca": write(dir.path(), "back.pem", &back.pem), "serverName": "abrupt.internal" } } } });
    let app = RunningApp::start_with(&config(json!([route]), json!({})), ports).await;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = connect(proxy, "abrupt.test", front.client(&[]))
        .await
        .unwrap();
    let mut got = Vec::new();
    let end = tokio::time::timeout(STEP, s.read_to_end(&mut got))
        .await
        .expect("ends in time");
    assert_eq!(got, b"bye");
    assert!(end.is_ok(), "a clean TLS close from the proxy, got {end:?}");
    drop(s);
    settled(&app).await;
    app.stop().await;
}
