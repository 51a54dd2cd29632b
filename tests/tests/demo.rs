//! What `cargo xtask demo` shows, minus its fixed ports: the
//! `demo-backends` binary behind the proxy running
//! `examples/configs/quickstart.json` (ports remapped to free ones), one TLS
//! request routed by SNI, one plain request, and an unknown SNI refused with
//! `unrecognized_name`.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnout_tests::app::{Ports, RunningApp};
use turnout_tests::l4::{STEP, client_config};

/// The `demo-backends` process; killed on drop, so a failed test leaves
/// nothing running.
struct Backends {
    child: Child,
    tls: SocketAddr,
    plain: SocketAddr,
}

impl Drop for Backends {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a `demo-backends: … backend on ADDR …` line.
fn listening_on(line: &str) -> Option<SocketAddr> {
    let rest = line.split(" backend on ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn start_backends() -> Backends {
    let mut child = Command::new(env!("CARGO_BIN_EXE_demo-backends"))
        .args(["--tls", "127.0.0.1:0", "--plain", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start demo-backends");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut backends = Backends {
        child,
        tls: SocketAddr::from(([0, 0, 0, 0], 0)),
        plain: SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    while backends.tls.port() == 0 || backends.plain.port() == 0 {
        let line = rx
            .recv_timeout(STEP)
            .expect("demo-backends prints where it listens");
        let addr = listening_on(&line);
        match addr {
            Some(a) if line.contains("TLS backend") => backends.tls = a,
            Some(a) if line.contains("plain backend") => backends.plain = a,
            _ => panic!("unexpected line from demo-backends: {line}"),
        }
    }
    backends
}

/// Replaces the numbers under `port` / `ports` keys found in `map`,
/// recording which were seen.
fn remap(v: &mut Value, key: Option<&str>, map: &HashMap<u64, u16>, seen: &mut HashSet<u64>) {
    match v {
        Value::Number(n) if matches!(key, Some("port" | "ports")) => {
            if let Some(new) = n.as_u64().and_then(|old| map.get(&old).map(|p| (old, *p))) {
                seen.insert(new.0);
                *v = Value::from(new.1);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| remap(i, key, map, seen)),
        Value::Object(fields) => {
            for (k, child) in fields.iter_mut() {
                remap(child, Some(k), map, seen);
            }
        }
        _ => {}
    }
}

/// The quickstart config with its four fixed ports moved.
fn quickstart(map: &HashMap<u64, u16>) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/configs/quickstart.json");
    let text = std::fs::read_to_string(&path).expect("read quickstart.json");
    let mut config: Value = serde_json::from_str(&text).expect("quickstart.json is JSON");
    let mut seen = HashSet::new();
    remap(&mut config, None, map, &mut seen);
    let mut missing: Vec<_> = map.keys().filter(|p| !seen.contains(p)).collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "quickstart.json no longer uses ports {missing:?}: update this test and `cargo xtask demo`"
    );
    config.to_string()
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: app.localhost\r\nconnection: close\r\n\r\n";

async fn https_get(proxy: SocketAddr, sni: &str) -> std::io::Result<String> {
    let connector = tokio_rustls::TlsConnector::from(client_config());
    let tcp = TcpStream::connect(proxy).await?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).expect("a DNS name");
    let mut tls = tokio::time::timeout(STEP, connector.connect(name, tcp)).await??;
    tls.write_all(GET).await?;
    let mut out = Vec::new();
    tokio::time::timeout(STEP, tls.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

async fn http_get(proxy: SocketAddr) -> std::io::Result<String> {
    let mut tcp = TcpStream::connect(proxy).await?;
    tcp.write_all(GET).await?;
    let mut out = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn the_quickstart_routes_to_the_demo_backends() {
    let backends = start_backends();
    let mut ports = Ports::default();
    let (proxy_tls, proxy_plain) = (ports.take(), ports.take());
    let map = HashMap::from([
        (8443, proxy_tls),
        (8080, proxy_plain),
        (9443, backends.tls.port()),
        (9080, backends.plain.port()),
    ]);
    let app = RunningApp::start_with(&quickstart(&map), ports).await;
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], proxy_tls));
    let plain_addr = SocketAddr::from(([127, 0, 0, 1], proxy_plain));

    let reply = https_get(tls_addr, "app.localhost")
        .await
        .expect("TLS request");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(
        reply.contains("TLS demo backend") && reply.contains("SNI app.localhost"),
        "the TLS backend answers, having seen the SNI (passthrough): {reply}"
    );
    let reply = https_get(tls_addr, "api.app.localhost")
        .await
        .expect("wildcard");
    assert!(reply.contains("SNI api.app.localhost"), "{reply}");

    let reply = http_get(plain_addr).await.expect("plain request");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains("plain demo backend"), "{reply}");

    let refused = https_get(tls_addr, "nope.localhost")
        .await
        .expect_err("no route for this name");
    let alert = refused
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert_eq!(
        alert,
        Some(&rustls::Error::AlertReceived(
            rustls::AlertDescription::UnrecognisedName
        )),
        "{refused}"
    );

    app.stop().await;
    drop(backends);
}

#[test]
fn demo_backends_explains_a_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_demo-backends"))
        .args(["--tls", &addr, "--plain", "127.0.0.1:0"])
        .output()
        .expect("run demo-backends");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains("ss -ltnp"),
        "{stderr}"
    );
}
