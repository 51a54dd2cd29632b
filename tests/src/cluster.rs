//! What the scale-out tests (`tests/cluster*.rs`) share: a node's config
//! with the cluster store on a test's Redis, three nodes started at once,
//! one HTTP request on a new connection, a metric, and waiting (bounded)
//! for something to become true.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::node::{Node, Setup};
use crate::redis::Redis;

/// The key prefix every test's instances share.
pub const PREFIX: &str = "t1:";
/// Upper bound of one request through a proxy.
pub const REQUEST: Duration = Duration::from_secs(10);

/// The `cluster` object of instance `instance`. The call timeout is
/// generous (the default 25 ms is for a quiet production network; a busy
/// 2-core test machine running three proxies must not see a timeout and
/// start counting locally); heartbeats are frequent so `/api/cluster`
/// lists a new instance soon.
pub fn cluster(redis: &Redis, instance: &str) -> Value {
    json!({ "redis": redis.url(), "prefix": PREFIX, "instance": instance,
            "timeout": 500, "heartbeat": 500 })
}

/// A node's config: 127.0.0.1 only, its admin API on `admin`, `routes`,
/// the cluster store as `instance`, no per-IP or rate limits, a short
/// drain; then `extra`'s top-level keys.
pub fn config(redis: &Redis, instance: &str, admin: u16, routes: Value, extra: Value) -> Value {
    let mut c = json!({
        "bind": ["127.0.0.1"],
        "gracefulShutdownTimeout": 5000,
        "maxConnectionsPerIP": 0,
        "connectionRateLimitPerMinute": 0,
        "admin": { "listen": format!("127.0.0.1:{admin}") },
        "cluster": cluster(redis, instance),
        "routes": routes,
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c
}

/// `targets` for one backend.
pub fn target(addr: SocketAddr) -> Value {
    json!([{ "host": addr.ip().to_string(), "port": addr.port() }])
}

/// Three instances, `edge-1` to `edge-3`, started at once; `make` gets the
/// instance name and its ports (the first port taken is its traffic port
/// by this file's convention: [`port`]).
pub async fn three(make: impl Fn(&str, &mut Setup<'_>) -> Value) -> Vec<Node> {
    let (a, b, c) = tokio::join!(
        Node::start("edge-1", |s| make("edge-1", s)),
        Node::start("edge-2", |s| make("edge-2", s)),
        Node::start("edge-3", |s| make("edge-3", s)),
    );
    vec![a, b, c]
}

/// A node's traffic port (the first its config took).
pub fn port(node: &Node) -> u16 {
    node.ports()[0]
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET /` with `Host: host` and `headers` on a new connection to
/// `127.0.0.1:port` (`Connection: close`), read to the end; bounded by
/// [`REQUEST`]. `Err` says what went wrong (refused, reset, no answer).
pub async fn request(port: u16, host: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
    let exchange = async {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // Named in every error: the client port finds the connection in
        // a balancer's log.
        let me = s.local_addr().map_err(|e| e.to_string())?;
        let mut head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("{me}: write: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("{me}: read (after {} bytes): {e}", raw.len()))?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let Some((head, body)) = raw.split_once("\r\n\r\n") else {
            return Err(format!("{me}: no HTTP response: {raw:?}"));
        };
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status: {head:?}"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(Answer {
            status,
            headers,
            body: body.to_owned(),
        })
    };
    tokio::time::timeout(REQUEST, exchange)
        .await
        .map_err(|_| format!("no answer within {REQUEST:?}"))?
}

/// [`request`] that must get an answer.
pub async fn answer(node: &Node, host: &str, headers: &[(&str, &str)]) -> Answer {
    request(port(node), host, headers)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", node.name()))
}

/// A sample of `node`'s `/metrics`; panics when the series is absent.
pub async fn metric(node: &Node, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (status, text) = node.get("/metrics").await;
    assert_eq!(status, 200, "{}: /metrics: {text}", node.name());
    crate::prometheus_value(&text, name, labels)
        .unwrap_or_else(|| panic!("{}: no {name}{labels:?} in\n{text}", node.name()))
}

/// Polls `check` every 50 ms until it returns `Some`, for up to `within`.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `node`'s `/api/cluster` says `state`; returns the answer.
pub async fn cluster_state(node: &Node, state: &str, within: Duration) -> Value {
    let what = format!("{} reports the cluster store {state}", node.name());
    eventually(&what, within, || async move {
        let c = node.json("/api/cluster").await;
        (c["state"] == state).then_some(c)
    })
    .await
}
