//! HTTP backends and clients for the HTTP proxy's tests: real hyper
//! servers (HTTP/1.1, h2c, auto, TLS) that describe each request they get
//! as JSON, and `curl` plus hyper clients toward the proxy.

use std::convert::Infallible;
use std::hash::Hasher;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// How a backend speaks.
#[derive(Clone)]
pub enum Kind {
    /// HTTP/1.1 only.
    H1,
    /// HTTP/2 with prior knowledge only (h2c).
    H2c,
    /// TLS with this config (ALPN as it says), h1 or h2 by ALPN.
    Tls(Arc<rustls::ServerConfig>),
}

/// A running backend.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests answered.
    pub requests: Arc<AtomicUsize>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
}

/// A checksum of a body both sides compute (SipHash with fixed keys).
pub fn checksum(bytes: &[u8]) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    h.write(bytes);
    h.finish()
}

/// Starts a backend named `name`. Every request gets a JSON description of
/// itself: `{backend, method, path, version, headers: {name: [values]},
/// bodyLen, bodySum}`. `/status/<n>` answers status n; `/sleep/<ms>`
/// waits first; `/bytes/<n>` answers n bytes instead of JSON.
pub async fn backend(name: &str, kind: Kind) -> Backend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let (r, c, name) = (requests.clone(), connections.clone(), name.to_owned());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::Relaxed);
            let (r, name, kind) = (r.clone(), name.clone(), kind.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    r.fetch_add(1, Ordering::Relaxed);
                    describe(name.clone(), req)
                });
                match kind {
                    Kind::H1 => {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(s), svc)
                            .await;
                    }
                    Kind::H2c => {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(s), svc)
                            .await;
                    }
                    Kind::Tls(config) => {
                        let Ok(tls) = tokio_rustls::TlsAcceptor::from(config).accept(s).await
                        else {
                            return;
                        };
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    }
                }
            });
        }
    });
    Backend {
        addr,
        requests,
        connections,
    }
}

async fn describe(
    name: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if let Some(ms) = path.strip_prefix("/sleep/").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|v| v.parse::<usize>().ok())
    {
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; n]))));
    }
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        let list = headers
            .entry(k.as_str().to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.push(Value::String(
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ));
        }
    }
    let text = json!({
        "backend": name,
        "method": parts.method.as_str(),
        "path": path,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "bodyLen": body.len(),
        "bodySum": checksum(&body).to_string(),
    })
    .to_string();
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    if let Some(n) = path.strip_prefix("/status/").and_then(|v| v.parse().ok()) {
        *resp.status_mut() = hyper::StatusCode::from_u16(n).unwrap_or(hyper::StatusCode::OK);
    }
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp.headers_mut()
        .insert("server", "test-backend".parse().unwrap());
    Ok(resp)
}

/// What `curl` got.
#[derive(Debug)]
pub struct Curl {
    /// Status of the last response.
    pub status: u16,
    /// Its headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: String,
    /// The HTTP version, as curl reports it (`1.1`, `2`).
    pub version: String,
}

impl Curl {
    /// A header's first value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as the backend's JSON description.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not the backend's JSON ({e}): {self:?}"))
    }
}

/// Runs `curl` with `args` (bounded to 20 s) and parses the last response.
pub async fn curl(args: &[&str]) -> Curl {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "20", "-w", "\n%{http_version}"])
        .args(args)
        .output()
        .await
        .expect("curl runs (install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (text, version) = text.rsplit_once('\n').unwrap_or((&text, ""));
    // The last response's head (after 1xx ones).
    let mut rest = text;
    loop {
        let Some((head, body)) = rest.split_once("\r\n\r\n") else {
            panic!(
                "curl {args:?} gave no response: {text:?} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if (100..200).contains(&status) {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        return Curl {
            status,
            headers,
            body: body.to_owned(),
            version: version.trim().to_owned(),
        };
    }
}

/// An HTTP/2 connection to `addr` over TLS with `sni`, trusting `client`'s
/// roots (ALPN h2).
pub async fn h2_tls(
    addr: SocketAddr,
    sni: &str,
    client: Arc<rustls::ClientConfig>,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .expect("TLS to the proxy");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

/// An HTTP/1.1 connection to `addr` in cleartext.
pub async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    send
}

/// A request's status and body.
pub async fn read(resp: Response<Incoming>) -> (u16, Bytes) {
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, body)
}
