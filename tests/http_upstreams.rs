//! The HTTP proxy toward upstreams and against abusive HTTP/2 clients:
//! pooled keep-alive connections, re-encryption to a TLS upstream that
//! picks HTTP/2 by ALPN (verified with the route's CA and `serverName`),
//! and HTTP/2 rapid reset and CONTINUATION floods, each closing only the
//! abuser's connection while other clients are served.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnout_tests::app::{Ports, RunningApp};
use turnout_tests::http::{Kind, backend, curl};
use turnout_tests::pki::{Ca, write};
use turnout_tests::tls::{config, files, target};

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_pooled_and_tls_upstreams_get_h2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (Ca::new("Front CA"), Ca::new("Backend CA"));
    let plain = backend("plain", Kind::H1).await;
    let secure = backend(
        "secure",
        Kind::Tls(back.leaf(&["backend.internal"]).server(&["h2", "http/1.1"])),
    )
    .await;
    let mut ports = Ports::default();
    let (port, tls_port) = (ports.take(), ports.take());
    let back_ca = write(dir.path(), "back-ca.pem", &back.pem);
    let front_ca = write(dir.path(), "front-ca.pem", &front.pem);
    let routes = json!([
        { "name": "plain", "match": { "ports": port, "domains": "plain.test" },
          "action": { "type": "forward", "targets": target(plain.addr) } },
        { "name": "secure", "match": { "ports": tls_port, "domains": "secure.test" },
          "action": { "type": "forward", "targets": target(secure.addr),
                      "tls": { "mode": "terminate-and-reencrypt",
                               "certificate": files(dir.path(), "secure", &front.leaf(&["secure.test"])),
                               "upstream": { "ca": back_ca, "serverName": "backend.internal" } } } },
    ]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;

    // Twenty client connections, one after another: the upstream sees the
    // pool's connections (one per worker thread at most), not twenty.
    for _ in 0..20 {
        let r = curl(&["-H", "Host: plain.test", &url(port, "/")]).await;
        assert_eq!(r.status, 200);
    }
    let opened = plain.connections.load(Ordering::Relaxed);
    assert!(
        (1..=2).contains(&opened),
        "{opened} upstream connections for 20 requests"
    );
    assert_eq!(plain.requests.load(Ordering::Relaxed), 20);

    // An HTTP/1.1 client; the TLS upstream chose h2 by ALPN.
    let resolve = format!("secure.test:{tls_port}:127.0.0.1");
    let r = curl(&[
        "--http1.1",
        "--cacert",
        front_ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &format!("https://secure.test:{tls_port}/x"),
    ])
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["backend"], "secure");
    assert_eq!(r.json()["version"], "HTTP/2.0");
    settled_stats(&app);
    app.stop().await;
}

fn settled_stats(app: &RunningApp) {
    let v = app.metrics.requests();
    assert!(v.upstream_opened >= 2, "{v:?}");
}

/// An HPACK literal header field without indexing, new name (RFC 7541 §6.2.2).
fn hpack_literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    int(&mut out, name.len(), 7, 0);
    out.extend_from_slice(name);
    int(&mut out, value.len(), 7, 0);
    out.extend_from_slice(value);
    out
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn int(out: &mut Vec<u8>, mut v: usize, n: u8, flags: u8) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `bytes` (frames from the server) hold a GOAWAY.
fn has_goaway(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = (usize::from(bytes[at]) << 16)
            | (usize::from(bytes[at + 1]) << 8)
            | usize::from(bytes[at + 2]);
        if bytes[at + 3] == 0x7 {
            return true;
        }
        at += 9 + len;
    }
    false
}

/// Reads what the server sends until it closes, or 10 s.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_floods_and_rapid_resets_close_only_the_abuser() {
    let up = backend("up", Kind::H1).await;
    let mut ports = Ports::default();
    let port = ports.take();
    let routes = json!([{ "name": "app", "match": { "ports": port, "domains": "app.test" },
                          "action": { "type": "forward", "targets": target(up.addr) } }]);
    let app = RunningApp::start_with(
        &config(routes, json!({ "http": { "maxHeaderSize": 16384 } })),
        ports,
    )
    .await;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));

    // CONTINUATION flood: a header block that never ends, 16 KiB a frame.
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let mut block = vec![0x82, 0x86, 0x84]; // GET, http, /
    block.extend(hpack_literal(b":authority", b"app.test"));
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    out.extend(frame(0x1, 0x1, 1, &block)); // HEADERS, END_STREAM, no END_HEADERS
    s.write_all(&out).await.unwrap();
    let filler = hpack_literal(b"x-flood", &vec![b'a'; 16_000]);
    let mut sent = 0;
    for _ in 0..1_000 {
        if s.write_all(&frame(0x9, 0, 1, &filler)).await.is_err() {
            break;
        }
        sent += 1;
    }
    let got = read_until_closed(&mut s).await;
    assert!(
        has_goaway(&got),
        "no GOAWAY after {sent} CONTINUATION frames: {got:?}"
    );
    assert!(
        sent < 1_000,
        "the proxy read a 16 MB header block to the end"
    );
    assert_eq!(up.requests.load(Ordering::Relaxed), 0, "never forwarded");
    assert_eq!(
        curl(&["-H", "Host: app.test", &url(port, "/")])
            .await
            .status,
        200
    );

    // Rapid reset: streams opened and cancelled at once, over and over.
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let mut head = vec![0x82, 0x86, 0x84];
    head.extend(hpack_literal(b":authority", b"app.test"));
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    for i in 0..5_000u32 {
        let id = 2 * i + 1;
        out.extend(frame(0x1, 0x5, id, &head)); // HEADERS, END_STREAM | END_HEADERS
        out.extend(frame(0x3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    let _ = s.write_all(&out).await;
    let got = read_until_closed(&mut s).await;
    assert!(has_goaway(&got), "no GOAWAY after 5 000 reset streams");
    let served = up.requests.load(Ordering::Relaxed);
    assert!(
        served < 5_000,
        "{served} of 5 000 cancelled requests reached the upstream"
    );
    assert_eq!(
        curl(&["-H", "Host: app.test", &url(port, "/")])
            .await
            .status,
        200
    );
    app.stop().await;
}
