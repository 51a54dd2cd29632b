//! `ws-echo`: WebSockets over TLS through a terminating proxy — `conns`
//! connections, each a TLS handshake and an HTTP/1.1 `Upgrade: websocket`,
//! then binary messages of `message_bytes` with at most `window` awaiting
//! their echo on each, until `messages` echoes have come back in total.
//!
//! Every echo is checked: a binary, unfragmented, unmasked frame carrying
//! exactly the bytes sent (the message's sequence number, then a fixed
//! pattern), in order. The report carries the client's own CPU time, as
//! `https-keepalive`'s does, so a run shows whether the client was the
//! limit.

use std::collections::VecDeque;
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
use super::http_client::own_cpu_secs;
use super::report::{Report, Samples};
use super::tls::NoResumption;
use super::ws::{self, CLOSE_NORMAL, FIN, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG};

/// Bound on connect + handshake + upgrade, on one echo, and on the close.
const STEP: Duration = Duration::from_secs(10);
/// Connections a worker may fail to open in a row before it gives up.
const OPEN_FAILURES: usize = 3;
/// Most messages in flight per connection: the window's frames must fit
/// the socket buffers, since a connection writes them all before reading.
pub const MAX_WINDOW: usize = 64;
/// Smallest message: its sequence number.
pub const MIN_MESSAGE: usize = 8;

/// What to send and how much.
#[derive(Debug, Clone)]
pub struct WsEcho {
    /// The proxy; its SNI is also the `Host`.
    pub target: Target,
    /// WebSocket connections.
    pub conns: usize,
    /// Echoed messages to receive in total.
    pub messages: usize,
    /// Bytes of each message's payload.
    pub message_bytes: usize,
    /// Messages awaiting their echo per connection (1: one at a time).
    pub window: usize,
    /// The upgrade request's target.
    pub path: String,
    /// Stop sending after this long.
    pub max_time: Duration,
}

struct Shared {
    connector: TlsConnector,
    name: ServerName<'static>,
    addr: SocketAddr,
    host: String,
    path: String,
    /// Every message's bytes after its sequence number.
    pattern: Vec<u8>,
    window: usize,
    handshakes: Handshakes,
    next: AtomicUsize,
    total: usize,
    deadline: Instant,
}

impl Shared {
    /// Takes the next message to send, if any is left and time is.
    fn claim(&self) -> Option<u64> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n < self.total).then_some(n as u64)
    }

    fn exhausted(&self) -> bool {
        self.next.load(Ordering::Relaxed) >= self.total || Instant::now() >= self.deadline
    }
}

/// One worker's tally.
#[derive(Default)]
struct Tally {
    samples: Samples,
    errors: Errors,
    /// Messages sent whose echo never came (their connection failed).
    lost: usize,
    /// Connections upgraded (1 unless one failed).
    opened: usize,
}

/// Runs [`WsEcho`]. Latency is message written → its echo read.
pub async fn ws_echo(o: &WsEcho) -> Report {
    let mut report = Report::new("ws-echo");
    let fail = |mut r: Report, e: String| {
        r.set("ok", 0).set("errors", 1).set("first_error", e);
        r
    };
    if o.message_bytes < MIN_MESSAGE || o.window == 0 || o.window > MAX_WINDOW {
        let e = format!(
            "message bytes {} (at least {MIN_MESSAGE}), window {} (1 to {MAX_WINDOW})",
            o.message_bytes, o.window
        );
        return fail(report, e);
    }
    let name = match ServerName::try_from(o.target.sni.clone()) {
        Ok(n) => n,
        Err(e) => return fail(report, e.to_string()),
    };
    let store = Arc::new(NoResumption::default());
    let sh = Arc::new(Shared {
        connector: TlsConnector::from(super::tls::client_config_counting(store.clone())),
        name,
        addr: o.target.addr,
        host: o.target.sni.clone(),
        path: o.path.clone(),
        pattern: (MIN_MESSAGE..o.message_bytes)
            .map(|i| (i * 7 % 251) as u8)
            .collect(),
        window: o.window,
        handshakes: Handshakes::default(),
        next: AtomicUsize::new(0),
        total: o.messages,
        deadline: Instant::now() + o.max_time,
    });
    let cpu_before = own_cpu_secs();
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for id in 0..o.conns.max(1) {
        workers.spawn(worker(sh.clone(), id as u64));
    }
    let mut all = Tally::default();
    while let Some(r) = workers.join_next().await {
        match r {
            Ok(t) => {
                all.samples.extend(t.samples);
                all.errors.merge(t.errors);
                all.lost += t.lost;
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
        .set("msg_per_s", format!("{:.0}", ok as f64 / secs))
        .set(
            "mib_per_s",
            format!("{:.1}", (ok * o.message_bytes) as f64 / secs / 1048576.0),
        )
        .set("lost", all.lost)
        .set("conns_opened", all.opened)
        .set("client_cpu_s", format!("{cpu:.2}"))
        // Of the 2 cores' time, how much the client itself used.
        .set("client_cores", format!("{:.2}", cpu / secs));
    all.errors.report(&mut report);
    sh.handshakes.report(&mut report, store.tickets());
    all.samples.report(&mut report, "");
    report
}

/// One connection after another until the messages or the time run out.
async fn worker(sh: Arc<Shared>, id: u64) -> Tally {
    let mut t = Tally::default();
    // xorshift64* state for the masking keys: cheap, and never zero.
    let mut rng = (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut failures = 0;
    while !sh.exhausted() && failures < OPEN_FAILURES {
        let mut conn = match tokio::time::timeout(STEP, open(&sh, rng)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                t.errors.add(e);
                failures += 1;
                continue;
            }
            Err(_) => {
                t.errors.add(format!("no upgrade within {STEP:?}"));
                failures += 1;
                continue;
            }
        };
        failures = 0;
        t.opened += 1;
        match echo(&sh, &mut conn, &mut t, &mut rng).await {
            Ok(()) => {
                finish(conn, &mut rng).await;
                break;
            }
            // Dropped, not closed: the connection is broken anyway.
            Err(e) => t.errors.add(e),
        }
    }
    t
}

/// An upgraded connection: the TLS stream and what was read past the last
/// complete frame.
struct Conn {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

/// Connect, TLS handshake, the upgrade request, the 101 checked.
async fn open(sh: &Shared, seed: u64) -> Result<Conn, String> {
    let tcp = TcpStream::connect(sh.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut tls = sh
        .connector
        .connect(sh.name.clone(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    sh.handshakes.note(tls.get_ref().1);
    let key = ws::client_key(seed ^ sh.next.load(Ordering::Relaxed) as u64);
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\nuser-agent: turnout-loadgen\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n\r\n",
        sh.path, sh.host
    );
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    tls.flush().await.map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(16 * 1024);
    let end = loop {
        if let Some(end) = ws::head_end(&buf) {
            break end;
        }
        if buf.len() > ws::MAX_HEAD {
            return Err("upgrade response head too large".into());
        }
        read_more(&mut tls, &mut buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101 ") {
        return Err(format!("upgrade refused: {status}"));
    }
    let expected = ws::accept_key(&key);
    match ws::header(&head, "sec-websocket-accept") {
        Some(v) if v == expected => {}
        other => return Err(format!("sec-websocket-accept {other:?}, not {expected}")),
    }
    if !ws::has_token(ws::header(&head, "upgrade"), "websocket") {
        return Err("101 without upgrade: websocket".into());
    }
    buf.drain(..end);
    Ok(Conn { tls, buf })
}

async fn read_more(tls: &mut TlsStream<TcpStream>, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.reserve(16 * 1024);
    match tls.read_buf(buf).await {
        Ok(0) => Err("connection closed".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read: {e}")),
    }
}

fn next_mask(rng: &mut u64) -> [u8; 4] {
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    let v = rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
    ((v >> 32) as u32).to_le_bytes()
}

/// Appends message `seq` as one masked binary frame.
fn encode(out: &mut Vec<u8>, seq: u64, pattern: &[u8], key: [u8; 4]) {
    ws::write_header(out, FIN | OP_BINARY, MIN_MESSAGE + pattern.len(), Some(key));
    let start = out.len();
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(pattern);
    ws::apply_mask(&mut out[start..], key);
}

/// Sends and checks messages on `c` until none are left to claim and all
/// sent have come back. An error loses the messages in flight.
async fn echo(sh: &Shared, c: &mut Conn, t: &mut Tally, rng: &mut u64) -> Result<(), String> {
    let mut inflight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(sh.window);
    let mut out = Vec::with_capacity(sh.window * (sh.pattern.len() + MIN_MESSAGE + 14));
    let mut more = true;
    loop {
        while more && inflight.len() < sh.window {
            match sh.claim() {
                Some(seq) => {
                    encode(&mut out, seq, &sh.pattern, next_mask(rng));
                    inflight.push_back((seq, Instant::now()));
                }
                None => more = false,
            }
        }
        if inflight.is_empty() {
            return Ok(());
        }
        let step = async {
            if !out.is_empty() {
                c.tls
                    .write_all(&out)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                c.tls.flush().await.map_err(|e| format!("write: {e}"))?;
                out.clear();
            }
            // At least one echo back before sending the next.
            let before = inflight.len();
            while inflight.len() == before {
                read_more(&mut c.tls, &mut c.buf).await?;
                take_echoes(sh, c, &mut inflight, &mut t.samples, &mut out)?;
            }
            Ok::<(), String>(())
        };
        match tokio::time::timeout(STEP, step).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                t.lost += inflight.len();
                return Err(e);
            }
            Err(_) => {
                t.lost += inflight.len();
                return Err(format!("no echo within {STEP:?}"));
            }
        }
    }
}

/// Checks every complete frame in `c.buf` against the oldest message in
/// flight; pongs for pings go to `out`.
fn take_echoes(
    sh: &Shared,
    c: &mut Conn,
    inflight: &mut VecDeque<(u64, Instant)>,
    samples: &mut Samples,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut at = 0;
    while let Some(f) = ws::parse(&c.buf[at..])? {
        let payload = &c.buf[at + f.payload.start..at + f.payload.end];
        if f.mask.is_some() {
            return Err("the server sent a masked frame".into());
        }
        match f.opcode {
            OP_BINARY if f.fin => {
                let Some((seq, sent)) = inflight.pop_front() else {
                    return Err("an echo of nothing".into());
                };
                let (head, tail) = payload.split_at(payload.len().min(MIN_MESSAGE));
                if head != seq.to_be_bytes() || tail != sh.pattern {
                    return Err(format!(
                        "echo of message {seq} differs ({} bytes back)",
                        payload.len()
                    ));
                }
                samples.push(sent.elapsed());
            }
            OP_PING => {
                let mut pong = payload.to_vec();
                let key = [0x5a, 0xa5, 0x3c, 0xc3];
                ws::apply_mask(&mut pong, key);
                ws::write_header(out, FIN | OP_PONG, pong.len(), Some(key));
                out.extend_from_slice(&pong);
            }
            OP_PONG => {}
            OP_CLOSE => return Err(format!("closed by the server: {payload:?}")),
            op => return Err(format!("unexpected frame {op:#x}, fin {}", f.fin)),
        }
        at += f.payload.end;
    }
    c.buf.drain(..at);
    Ok(())
}

/// The closing handshake: our close (1000), the server's back, then
/// close_notify and FIN; bounded, and failures only cost the tidy close.
async fn finish(mut c: Conn, rng: &mut u64) {
    let key = next_mask(rng);
    let mut frame = Vec::with_capacity(8);
    ws::write_header(&mut frame, FIN | OP_CLOSE, 2, Some(key));
    let start = frame.len();
    frame.extend_from_slice(&CLOSE_NORMAL.to_be_bytes());
    ws::apply_mask(&mut frame[start..], key);
    let work = async {
        c.tls.write_all(&frame).await.map_err(|e| e.to_string())?;
        c.tls.flush().await.map_err(|e| e.to_string())?;
        loop {
            if let Some(f) = ws::parse(&c.buf)? {
                if f.opcode == OP_CLOSE {
                    return Ok::<(), String>(());
                }
                c.buf.drain(..f.payload.end);
                continue;
            }
            read_more(&mut c.tls, &mut c.buf).await?;
        }
    };
    let _ = tokio::time::timeout(STEP, work).await;
    close(c.tls).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_masked_frames_carrying_their_number() {
        let pattern = vec![7u8; 1016];
        let mut out = Vec::new();
        let mut rng = 99;
        let key = next_mask(&mut rng);
        encode(&mut out, 42, &pattern, key);
        let f = ws::parse(&out).unwrap().unwrap();
        assert_eq!((f.fin, f.opcode, f.mask), (true, OP_BINARY, Some(key)));
        assert_eq!(f.payload.end, out.len());
        let payload = &mut out[f.payload];
        ws::apply_mask(payload, key);
        assert_eq!(payload.len(), 1024);
        assert_eq!(payload[..8], 42u64.to_be_bytes());
        assert!(payload[8..].iter().all(|&b| b == 7));
        assert_ne!(next_mask(&mut rng), key);
    }
}
