//! The client loads. Every one is bounded: a count, a per-connection
//! timeout and an overall time limit.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::HandshakeKind;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::backend::{CHUNK, OP_DOWNLOAD, OP_UPLOAD};
use super::report::{Report, Samples};
use super::tls::NoResumption;

/// Bound on connect + handshake + one exchange.
const STEP: Duration = Duration::from_secs(10);

/// Where a load goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The proxy (or the backend, for a direct run).
    pub addr: SocketAddr,
    /// The SNI to send.
    pub sni: String,
}

/// Errors seen, and the first one in full.
#[derive(Debug, Default)]
pub(super) struct Errors {
    count: usize,
    first: Option<String>,
}

impl Errors {
    pub(super) fn add(&mut self, e: String) {
        self.count += 1;
        self.first.get_or_insert(e);
    }

    pub(super) fn merge(&mut self, other: Errors) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    pub(super) fn report(&self, r: &mut Report) {
        r.set("errors", self.count);
        if let Some(e) = &self.first {
            r.set("first_error", e);
        }
    }
}

/// What the handshakes were, as the client saw them: whether any was
/// resumed (none should be: the client offers no resumption) and what was
/// negotiated, so a report says what each server really did.
#[derive(Debug, Default)]
pub(super) struct Handshakes {
    full: AtomicUsize,
    retried: AtomicUsize,
    resumed: AtomicUsize,
    /// `version/suite/group/alpn` → connections.
    seen: Mutex<BTreeMap<String, usize>>,
}

impl Handshakes {
    pub(super) fn note(&self, c: &rustls::ClientConnection) {
        let kind = match c.handshake_kind() {
            Some(HandshakeKind::Full) => &self.full,
            Some(HandshakeKind::FullWithHelloRetryRequest) => &self.retried,
            Some(HandshakeKind::Resumed) => &self.resumed,
            None => return,
        };
        kind.fetch_add(1, Ordering::Relaxed);
        let version = c
            .protocol_version()
            .map_or_else(|| "?".to_owned(), |v| format!("{v:?}"));
        let suite = c
            .negotiated_cipher_suite()
            .map_or_else(|| "?".to_owned(), |s| format!("{:?}", s.suite()));
        let group = c
            .negotiated_key_exchange_group()
            .map_or_else(|| "?".to_owned(), |g| format!("{:?}", g.name()));
        let alpn = c.alpn_protocol().map_or_else(
            || "none".to_owned(),
            |a| String::from_utf8_lossy(a).into_owned(),
        );
        let key = format!("{version}/{suite}/{group}/alpn:{alpn}");
        if let Ok(mut seen) = self.seen.lock() {
            *seen.entry(key).or_default() += 1;
        }
    }
}

impl Handshakes {
    /// Adds `full`, `hrr`, `resumed`, `tickets`, `tickets_per_conn` and
    /// `negotiated` (see [`Client::report_tls`]).
    pub(super) fn report(&self, r: &mut Report, tickets: usize) {
        let load = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        let (full, hrr, resumed) = (load(&self.full), load(&self.retried), load(&self.resumed));
        let done = full + hrr + resumed;
        r.set("full", full)
            .set("hrr", hrr)
            .set("resumed", resumed)
            .set("tickets", tickets)
            .set(
                "tickets_per_conn",
                format!("{:.2}", tickets as f64 / done.max(1) as f64),
            );
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        let negotiated = if seen.len() == 1 {
            seen.into_keys().collect::<String>()
        } else {
            seen.iter()
                .map(|(k, n)| format!("{k}*{n}"))
                .collect::<Vec<_>>()
                .join("+")
        };
        if !negotiated.is_empty() {
            r.set("negotiated", negotiated);
        }
    }
}

struct Client {
    connector: TlsConnector,
    name: ServerName<'static>,
    request: Vec<u8>,
    store: Arc<NoResumption>,
    handshakes: Handshakes,
}

impl Client {
    fn new(sni: &str, request_bytes: usize) -> Result<Client, String> {
        let store = Arc::new(NoResumption::default());
        Ok(Client {
            connector: TlsConnector::from(super::tls::client_config_counting(store.clone())),
            name: ServerName::try_from(sni.to_owned()).map_err(|e| format!("SNI {sni:?}: {e}"))?,
            request: (0..request_bytes.max(1))
                .map(|i| b'a' + (i % 26) as u8)
                .collect(),
            store,
            handshakes: Handshakes::default(),
        })
    }

    /// Adds what the handshakes were: `full`, `hrr` (full after a
    /// HelloRetryRequest), `resumed`, `tickets` (TLS 1.3 tickets received,
    /// never used) and `tickets_per_conn`, `negotiated` (each distinct
    /// `version/suite/group/alpn`, `+`-separated, with a count when more
    /// than one).
    fn report_tls(&self, r: &mut Report) {
        self.handshakes.report(r, self.store.tickets());
    }

    /// Connect, handshake, send the request, read the echo: the stream is
    /// left open.
    async fn open(&self, addr: SocketAddr) -> Result<TlsStream<TcpStream>, String> {
        let work = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let mut tls = self
                .connector
                .connect(self.name.clone(), tcp)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            self.handshakes.note(tls.get_ref().1);
            tls.write_all(&self.request)
                .await
                .map_err(|e| format!("write: {e}"))?;
            tls.flush().await.map_err(|e| format!("write: {e}"))?;
            let mut echo = vec![0u8; self.request.len()];
            tls.read_exact(&mut echo)
                .await
                .map_err(|e| format!("read echo: {e}"))?;
            if echo != self.request {
                return Err("echo differs from the request".to_owned());
            }
            Ok(tls)
        };
        tokio::time::timeout(STEP, work)
            .await
            .map_err(|_| format!("no echo within {STEP:?}"))?
    }
}

/// Closes cleanly: close_notify and FIN, then waits (bounded) for the
/// backend's, so every proxy sees an orderly close, never a reset.
pub(super) async fn close(mut tls: TlsStream<TcpStream>) {
    let work = async {
        tls.shutdown().await?;
        let mut rest = [0u8; 256];
        while tls.read(&mut rest).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(STEP, work).await;
}

/// `tls-conns`: new TLS connections, each a full handshake and one small
/// exchange, `concurrency` at a time.
#[derive(Debug, Clone)]
pub struct TlsConns {
    /// Where to.
    pub target: Target,
    /// How many connections.
    pub conns: usize,
    /// How many at a time.
    pub concurrency: usize,
    /// Size of the request the backend echoes.
    pub request_bytes: usize,
    /// Stop starting new connections after this long.
    pub max_time: Duration,
}

/// Runs [`TlsConns`]; latency is connect → echo received.
pub async fn tls_conns(o: &TlsConns) -> Report {
    let mut report = Report::new("tls-conns");
    let client = match Client::new(&o.target.sni, o.request_bytes) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            report.set("ok", 0).set("errors", 1).set("first_error", e);
            return report;
        }
    };
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + o.max_time;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..o.concurrency.max(1) {
        let (client, next, addr, total) = (client.clone(), next.clone(), o.target.addr, o.conns);
        workers.spawn(async move {
            let (mut samples, mut errors) = (Samples::default(), Errors::default());
            while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let t = Instant::now();
                match client.open(addr).await {
                    Ok(tls) => {
                        samples.push(t.elapsed());
                        close(tls).await;
                    }
                    Err(e) => errors.add(e),
                }
            }
            (samples, errors)
        });
    }
    let (mut samples, mut errors) = (Samples::default(), Errors::default());
    while let Some(r) = workers.join_next().await {
        match r {
            Ok((s, e)) => {
                samples.extend(s);
                errors.merge(e);
            }
            Err(e) => errors.add(format!("worker: {e}")),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    report
        .set("ok", samples.len())
        .set("secs", format!("{secs:.3}"))
        .set("conns_per_s", format!("{:.1}", samples.len() as f64 / secs));
    errors.report(&mut report);
    client.report_tls(&mut report);
    samples.report(&mut report, "");
    report
}

/// `bulk`: `streams` parallel streams of `bytes` each, opened with a
/// ClientHello for `sni` (routed like TLS) and carrying unencrypted bytes.
#[derive(Debug, Clone)]
pub struct Bulk {
    /// Where to.
    pub target: Target,
    /// Parallel streams.
    pub streams: usize,
    /// Payload bytes per stream.
    pub bytes: u64,
    /// Backend → client instead of client → backend.
    pub download: bool,
    /// Overall time limit.
    pub max_time: Duration,
}

async fn one_stream(
    addr: SocketAddr,
    opening: Arc<Vec<u8>>,
    bytes: u64,
    download: bool,
) -> Result<u64, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    s.write_all(&opening)
        .await
        .map_err(|e| format!("write hello: {e}"))?;
    let mut buf = vec![0x5au8; CHUNK];
    if download {
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        Ok(got)
    } else {
        let mut left = bytes;
        while left > 0 {
            let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            s.write_all(&buf[..n])
                .await
                .map_err(|e| format!("write: {e}"))?;
            left -= n as u64;
        }
        let mut ack = [0u8; 8];
        s.read_exact(&mut ack)
            .await
            .map_err(|e| format!("read count: {e}"))?;
        let _ = s.shutdown().await;
        let mut rest = [0u8; 64];
        while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
        Ok(u64::from_be_bytes(ack))
    }
}

/// Runs [`Bulk`].
pub async fn bulk(o: &Bulk) -> Report {
    let mut report = Report::new("bulk");
    let mut opening = match super::tls::client_hello(&o.target.sni) {
        Ok(h) => h,
        Err(e) => {
            report.set("ok", 0).set("errors", 1).set("first_error", e);
            return report;
        }
    };
    opening.push(if o.download { OP_DOWNLOAD } else { OP_UPLOAD });
    opening.extend_from_slice(&o.bytes.to_be_bytes());
    let opening = Arc::new(opening);
    let start = Instant::now();
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..o.streams.max(1) {
        let (opening, addr) = (opening.clone(), o.target.addr);
        let (bytes, download) = (o.bytes, o.download);
        streams.spawn(async move { one_stream(addr, opening, bytes, download).await });
    }
    let (mut moved, mut ok, mut errors) = (0u64, 0usize, Errors::default());
    let collect = async {
        while let Some(r) = streams.join_next().await {
            match r {
                Ok(Ok(n)) if n == o.bytes => {
                    moved += n;
                    ok += 1;
                }
                Ok(Ok(n)) => {
                    moved += n;
                    errors.add(format!("stream moved {n} of {} bytes", o.bytes));
                }
                Ok(Err(e)) => errors.add(e),
                Err(e) => errors.add(format!("stream task: {e}")),
            }
        }
    };
    if tokio::time::timeout(o.max_time, collect).await.is_err() {
        errors.add(format!("not done within {:?}", o.max_time));
    }
    let secs = start.elapsed().as_secs_f64();
    report
        .set("ok", ok)
        .set("bytes", moved)
        .set("secs", format!("{secs:.3}"))
        .set("gb_per_s", format!("{:.3}", moved as f64 / 1e9 / secs));
    errors.report(&mut report);
    report
}

/// `idle`: opens `conns` TLS connections (`concurrency` handshakes at a
/// time), one small exchange each so that each is known to be routed, then
/// holds them all until released or `hold` passes.
#[derive(Debug, Clone)]
pub struct Idle {
    /// Where to.
    pub target: Target,
    /// How many to hold.
    pub conns: usize,
    /// Handshakes in flight while opening.
    pub concurrency: usize,
    /// Longest hold.
    pub hold: Duration,
}

/// Runs [`Idle`]: `opened` gets a report once all are open (the harness
/// reads the proxy's memory then), and `release` ends the hold early.
pub async fn idle(
    o: &Idle,
    opened: impl FnOnce(&Report),
    release: impl Future<Output = ()>,
) -> Report {
    let mut report = Report::new("idle");
    let client = match Client::new(&o.target.sni, 16) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            report.set("ok", 0).set("errors", 1).set("first_error", e);
            return report;
        }
    };
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..o.concurrency.max(1) {
        let (client, next, addr, total) = (client.clone(), next.clone(), o.target.addr, o.conns);
        workers.spawn(async move {
            let (mut open, mut errors) = (Vec::new(), Errors::default());
            while next.fetch_add(1, Ordering::Relaxed) < total {
                match client.open(addr).await {
                    Ok(tls) => open.push(tls),
                    Err(e) => errors.add(e),
                }
            }
            (open, errors)
        });
    }
    let (mut open, mut errors) = (Vec::new(), Errors::default());
    while let Some(r) = workers.join_next().await {
        match r {
            Ok((o, e)) => {
                open.extend(o);
                errors.merge(e);
            }
            Err(e) => errors.add(format!("worker: {e}")),
        }
    }
    report
        .set("ok", open.len())
        .set("open_secs", format!("{:.3}", start.elapsed().as_secs_f64()));
    errors.report(&mut report);
    client.report_tls(&mut report);
    opened(&report);
    let held = Instant::now();
    tokio::select! {
        () = release => {}
        () = tokio::time::sleep(o.hold) => {}
    }
    report.set("held_secs", format!("{:.3}", held.elapsed().as_secs_f64()));
    let mut closing = tokio::task::JoinSet::new();
    for tls in open {
        closing.spawn(close(tls));
    }
    while closing.join_next().await.is_some() {}
    report
}

/// `latency`: one connection at a time, alternating with `direct` when
/// given, so both see the same machine state; latency is connect → echo.
#[derive(Debug, Clone)]
pub struct Latency {
    /// Through the proxy.
    pub target: Target,
    /// The backend itself, for the baseline.
    pub direct: Option<SocketAddr>,
    /// Connections per path.
    pub samples: usize,
    /// Size of the request the backend echoes.
    pub request_bytes: usize,
    /// Overall time limit.
    pub max_time: Duration,
}

/// Runs [`Latency`]. Reports `p50_us`/`p99_us` through the target, the
/// same with `direct_` for the baseline, and `added_` for the difference.
pub async fn latency(o: &Latency) -> Report {
    let mut report = Report::new("latency");
    let client = match Client::new(&o.target.sni, o.request_bytes) {
        Ok(c) => c,
        Err(e) => {
            report.set("ok", 0).set("errors", 1).set("first_error", e);
            return report;
        }
    };
    let (mut through, mut direct, mut errors) =
        (Samples::default(), Samples::default(), Errors::default());
    let deadline = Instant::now() + o.max_time;
    for _ in 0..o.samples {
        if Instant::now() >= deadline {
            errors.add(format!("not done within {:?}", o.max_time));
            break;
        }
        let paths = o
            .direct
            .map(|d| (d, true))
            .into_iter()
            .chain([(o.target.addr, false)]);
        for (addr, is_direct) in paths {
            let t = Instant::now();
            match client.open(addr).await {
                Ok(tls) => {
                    let took = t.elapsed();
                    if is_direct {
                        direct.push(took);
                    } else {
                        through.push(took);
                    }
                    close(tls).await;
                }
                Err(e) => errors.add(e),
            }
        }
    }
    report.set("ok", through.len());
    errors.report(&mut report);
    client.report_tls(&mut report);
    through.report(&mut report, "");
    if o.direct.is_some() {
        direct.report(&mut report, "direct_");
        let (t50, t99) = (through.quantile_us(0.5), through.quantile_us(0.99));
        let (d50, d99) = (direct.quantile_us(0.5), direct.quantile_us(0.99));
        report
            .set("added_p50_us", format!("{:.0}", t50 - d50))
            .set("added_p99_us", format!("{:.0}", t99 - d99));
    }
    report
}
