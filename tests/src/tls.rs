//! Helpers for the TLS termination tests: configs with terminated routes,
//! rustls connections through the proxy, `openssl s_client`, waiting on a
//! condition.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::app::RunningApp;
use crate::l4::STEP;
use crate::pki::{Leaf, write};

/// A config on 127.0.0.1 with `routes`, no per-IP or rate limits, and
/// `extra`'s top-level keys.
pub fn config(routes: Value, extra: Value) -> String {
    let mut c = json!({ "bind": ["127.0.0.1"], "gracefulShutdownTimeout": 500, "routes": routes,
                        "maxConnectionsPerIP": 0, "connectionRateLimitPerMinute": 0 });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c.to_string()
}

/// `targets` for one backend.
pub fn target(addr: SocketAddr) -> Value {
    json!([{ "host": addr.ip().to_string(), "port": addr.port() }])
}

/// A terminated route relaying the decrypted stream to `to`.
pub fn terminate(name: &str, port: u16, domains: &[&str], to: SocketAddr, cert: Value) -> Value {
    json!({ "name": name, "match": { "ports": port, "domains": domains, "protocol": "tcp" },
            "action": { "type": "forward", "targets": target(to),
                        "tls": { "mode": "terminate", "certificate": cert } } })
}

/// A `certificate` object naming `leaf` written to files in `dir`.
pub fn files(dir: &Path, name: &str, leaf: &Leaf) -> Value {
    json!({ "cert": write(dir, &format!("{name}.pem"), &leaf.cert),
            "key": write(dir, &format!("{name}.key"), &leaf.key) })
}

/// A TLS connection through the proxy, trusting `ca`; `Err` when the
/// handshake failed.
pub async fn connect(
    proxy: SocketAddr,
    sni: &str,
    client: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(proxy).await?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    tokio::time::timeout(
        STEP,
        tokio_rustls::TlsConnector::from(client).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// Echo round trip over an established TLS stream.
pub async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    s.flush().await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(STEP, s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(back, msg);
}

/// The serial of the certificate the server presented.
pub fn served_serial(s: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    let certs = s.get_ref().1.peer_certificates().unwrap();
    certs[0].as_ref().to_vec()
}

/// Waits (bounded) until no connection is counted.
pub async fn settled(app: &RunningApp) {
    if tokio::time::timeout(STEP, app.tracker.wait_idle())
        .await
        .is_err()
    {
        panic!("{} connections still counted", app.tracker.total());
    }
}

/// Waits (bounded by [`STEP`]) until `done` holds, looking every 20 ms.
pub async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let waiting = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(STEP, waiting).await.is_err() {
        panic!("timed out waiting for {what}");
    }
}

/// `openssl s_client` against the proxy (whose backend echoes): sends a
/// line, waits for it to come back — by then any TLS 1.3 session ticket,
/// sent before application data, has been read — then ends the session.
/// Returns stdout+stderr and whether it exited 0.
pub async fn s_client(proxy: SocketAddr, args: &[&str]) -> (String, bool) {
    use tokio::io::AsyncBufReadExt;
    const MARK: &str = "turnout-echo-check";
    let mut child = tokio::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(proxy.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the openssl CLI (installed by .ci/run)");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(format!("{MARK}\n").as_bytes()).await;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    let read = async {
        // Until the echo (a live session) or the end (a failed one).
        while let Ok(Some(line)) = lines.next_line().await {
            out.push_str(&line);
            out.push('\n');
            if line.trim() == MARK {
                break;
            }
        }
    };
    tokio::time::timeout(STEP, read)
        .await
        .expect("openssl answers in time");
    drop(stdin);
    let status = tokio::time::timeout(STEP, child.wait())
        .await
        .expect("openssl ends in time")
        .unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err).await;
    }
    (format!("{out}{err}"), status.success())
}
