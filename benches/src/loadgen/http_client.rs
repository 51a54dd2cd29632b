//! `https-keepalive`: HTTP/1.1 over TLS on long-lived connections — `conns`
//! connections, one request in flight on each (no pipelining), until
//! `requests` responses have come back in total.
//!
//! Hand-written and minimal so the client stays cheap on the cores it
//! shares with the proxy: one fixed `GET`, responses framed by
//! `Content-Length` only (what all three proxies send for the backend's
//! fixed answer; anything else is an error, not a guess). The report
//! carries the client's own CPU time, so a run shows whether the client,
//! not the proxy, was the limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::client::{Errors, Handshakes, Target, close};
use super::report::{Report, Samples};
use super::tls::NoResumption;

/// Bound on connect + handshake, and on one request's round trip.
const STEP: Duration = Duration::from_secs(10);
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// What to send and how much.
#[derive(Debug, Clone)]
pub struct HttpsKeepalive {
    /// The proxy; its SNI is also the `Host`.
    pub target: Target,
    /// Keep-alive connections, each with one request in flight.
    pub conns: usize,
    /// Responses to receive in total.
    pub requests: usize,
    /// The request target.
    pub path: String,
    /// Send `connection: close`: every request on a new TLS connection
    /// (full handshake, no resumption), the server closing after it.
    pub close: bool,
    /// Stop sending after this long.
    pub max_time: Duration,
}

struct Shared {
    connector: TlsConnector,
    name: ServerName<'static>,
    addr: SocketAddr,
    request: Vec<u8>,
    close: bool,
    handshakes: Handshakes,
    next: AtomicUsize,
    total: usize,
    deadline: Instant,
}

/// One worker's tally.
#[derive(Default)]
struct Tally {
    samples: Samples,
    errors: Errors,
    /// Connections opened (1 unless the server closed or an error did).
    opened: usize,
}

/// Runs [`HttpsKeepalive`]. Latency is request written → response body
/// read, on an open connection.
pub async fn https_keepalive(o: &HttpsKeepalive) -> Report {
    let mut report = Report::new("https-keepalive");
    let store = Arc::new(NoResumption::default());
    let name = match ServerName::try_from(o.target.sni.clone()) {
        Ok(n) => n,
        Err(e) => {
            report.set("ok", 0).set("errors", 1).set("first_error", e);
            return report;
        }
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\nuser-agent: turnout-loadgen\r\naccept: */*\r\n{}\r\n",
        o.path,
        o.target.sni,
        if o.close { "connection: close\r\n" } else { "" }
    );
    let sh = Arc::new(Shared {
        connector: TlsConnector::from(super::tls::client_config_counting(store.clone())),
        name,
        addr: o.target.addr,
        request: request.into_bytes(),
        close: o.close,
        handshakes: Handshakes::default(),
        next: AtomicUsize::new(0),
        total: o.requests,
        deadline: Instant::now() + o.max_time,
    });
    let cpu_before = own_cpu_secs();
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..o.conns.max(1) {
        workers.spawn(worker(sh.clone()));
    }
    let mut all = Tally::default();
    while let Some(r) = workers.join_next().await {
        match r {
            Ok(t) => {
                all.samples.extend(t.samples);
                all.errors.merge(t.errors);
                all.opened += t.opened;
            }
            Err(e) => all.errors.add(format!("worker: {e}")),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = own_cpu_secs() - cpu_before;
    let ok = all.samples.len();
    report
        .set("ok", ok)
        .set("secs", format!("{secs:.3}"))
        .set("req_per_s", format!("{:.0}", ok as f64 / secs))
        .set("conns_opened", all.opened)
        .set("client_cpu_s", format!("{cpu:.2}"))
        // Of the 2 cores' time, how much the client itself used.
        .set("client_cores", format!("{:.2}", cpu / secs));
    all.errors.report(&mut report);
    sh.handshakes.report(&mut report, store.tickets());
    all.samples.report(&mut report, "");
    report
}

async fn worker(sh: Arc<Shared>) -> Tally {
    let mut t = Tally::default();
    let mut conn: Option<TlsStream<TcpStream>> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    while sh.next.fetch_add(1, Ordering::Relaxed) < sh.total && Instant::now() < sh.deadline {
        let tls = match conn.as_mut() {
            Some(c) => c,
            None => match tokio::time::timeout(STEP, connect(&sh)).await {
                Ok(Ok(c)) => {
                    t.opened += 1;
                    conn.insert(c)
                }
                Ok(Err(e)) => {
                    t.errors.add(e);
                    continue;
                }
                Err(_) => {
                    t.errors.add(format!("no handshake within {STEP:?}"));
                    continue;
                }
            },
        };
        let began = Instant::now();
        match tokio::time::timeout(STEP, exchange(tls, &sh.request, &mut buf)).await {
            Ok(Ok(keep)) => {
                t.samples.push(began.elapsed());
                // With `close`, the server was told to close: its answer
                // saying so or not, the next request needs a new connection.
                if !keep || sh.close {
                    conn = None;
                }
            }
            Ok(Err(e)) => {
                t.errors.add(e);
                conn = None;
            }
            Err(_) => {
                t.errors.add(format!("no response within {STEP:?}"));
                conn = None;
            }
        }
    }
    if let Some(c) = conn {
        close(c).await;
    }
    t
}

async fn connect(sh: &Shared) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(sh.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let tls = sh
        .connector
        .connect(sh.name.clone(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    sh.handshakes.note(tls.get_ref().1);
    Ok(tls)
}

/// Sends the request and reads one response; whether the connection stays
/// open.
async fn exchange(
    tls: &mut TlsStream<TcpStream>,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<bool, String> {
    tls.write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    tls.flush().await.map_err(|e| format!("write: {e}"))?;
    // One request in flight: nothing of another response can be here.
    buf.clear();
    let head = loop {
        if let Some(h) = parse_head(buf)? {
            break h;
        }
        read_more(tls, buf).await?;
    };
    while buf.len() < head.len + head.body {
        read_more(tls, buf).await?;
    }
    if head.status != 200 {
        return Err(format!("status {}", head.status));
    }
    Ok(!head.close)
}

async fn read_more(tls: &mut TlsStream<TcpStream>, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.reserve(16 * 1024);
    match tls.read_buf(buf).await {
        Ok(0) => Err("connection closed mid-response".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// A response head: status, body length, whether the server closes.
#[derive(Debug, PartialEq)]
struct Head {
    len: usize,
    status: u16,
    body: usize,
    close: bool,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err("response head too large".into())
        } else {
            Ok(None)
        };
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let (mut body, mut close) = (None, !status_line.starts_with("HTTP/1.1 "));
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            body = Some(value.parse().map_err(|_| "bad content-length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!(
                "transfer-encoding {value} (only content-length is read)"
            ));
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let body = body.ok_or("response without content-length")?;
    Ok(Some(Head {
        len: end + 4,
        status,
        body,
        close,
    }))
}

/// This process's CPU time (utime + stime, all threads) from
/// `/proc/self/stat`, in seconds; USER_HZ is 100 on Linux.
pub(super) fn own_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised name: state is the first, utime the 12th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads_give_length_and_keep_alive() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 128\r\n\r\nxx")
            .unwrap()
            .unwrap();
        assert_eq!(
            h,
            Head {
                len: 40,
                status: 200,
                body: 128,
                close: false
            }
        );
        let h = parse_head(b"HTTP/1.1 503 x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.close && h.status == 503);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(own_cpu_secs() >= 0.0);
    }
}
