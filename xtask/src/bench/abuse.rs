//! `cargo xtask abuse [--secs S] [--no-build]`: what abusive clients (and
//! a plugin that always runs out of time) cost the well-behaved ones.
//!
//! Turnout (release) serves a terminated HTTPS route, a plaintext HTTP
//! port (HTTP/1.1 and h2c) and a passthrough port. The well-behaved load is
//! fixed — `turnout-loadgen https-keepalive`, 8 keep-alive connections, for
//! S seconds (default 20) — and its p50/p99 latency and request rate are
//! measured alone, then beside each abuse in turn:
//!
//! * TLS connections held open (passthrough): 10 000, or as many as the
//!   open-file limit leaves room for (two descriptors each in the proxy);
//! * slowloris: 1 000 connections sending a request head a byte a second;
//! * HTTP/2 rapid reset: h2c connections sending HEADERS + RST_STREAM as
//!   fast as they can;
//! * HTTP/2 CONTINUATION flood: a header block that never ends;
//! * request smuggling: heads framed both ways, as fast as they can;
//! * huge headers: 70 KB heads, as fast as they can;
//! * a plugin whose `route` hook runs to its deadline on every call, with
//!   new plain TCP connections arriving as fast as they can (its failure
//!   policy `open`, so they are still served).
//!
//! Each abuse reports its own volume (connections, streams, requests), so
//! the rate it ran at is in the report. The report goes to
//! `benches/results/YYYY-MM-DD-HHMM-abuse.md`.

use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::harness::{amount_and_build, build_release_and_plugins, start_backend, write_report};
use super::parse_report;
use super::peers::turnout_config;
use super::procs::{Proc, command, free_port};
use super::soak::{get, rotate_cert};
use crate::{root, step};

const WEB: &str = "web.bench.test";
const ECHO: &str = "echo.bench.test";

/// One abuse: its name, and a function that runs it until told to stop,
/// returning what it did.
type Attack = (&'static str, fn(&Ports, &AtomicBool) -> String);

#[derive(Debug, Clone, Copy)]
struct Ports {
    tls: u16,
    plain: u16,
    pass: u16,
    /// A plain TCP route: every connection is routed by the `route` hook
    /// (HTTP ports decide per request instead).
    tcp: u16,
}

pub(crate) fn abuse(args: &[String]) -> Result<()> {
    let usage = "cargo xtask abuse [--secs S] [--no-build]";
    let (secs, build) = amount_and_build(args, "--secs", 20, usage)?;
    if build {
        build_release_and_plugins()?;
    }
    let bin = root().join("target/release");
    let dir = std::env::temp_dir().join(format!("turnout-abuse-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("plugins"))?;
    let mut rows = Vec::new();
    let (backend, backends) = start_backend(&bin, &dir)?;
    let addr = |k: &str| backends.addr(k);
    let (http, tls_echo) = (addr("http")?, addr("tls")?);
    rotate_cert(&bin, &dir)?;
    let ports = Ports {
        tls: free_port()?,
        plain: free_port()?,
        pass: free_port()?,
        tcp: free_port()?,
    };
    let attacks: [Attack; 6] = [
        (
            "TLS connections held (passthrough): as many as the open-file limit allows, up to 10 000",
            held_many,
        ),
        ("slowloris: 1 000 heads at a byte a second", slowloris),
        ("HTTP/2 rapid reset (h2c, 4 connections)", rapid_reset),
        (
            "HTTP/2 CONTINUATION flood (h2c, 4 connections)",
            continuation_flood,
        ),
        ("request smuggling: CL + TE heads (4 clients)", smuggling),
        ("huge headers: 70 KB heads (4 clients)", huge_headers),
    ];
    {
        let mut proxy = start_turnout(&bin, &dir, &ports, http, tls_echo, false)?;
        let base = probe(&bin, &ports, secs)?;
        rows.push(("none (baseline)".to_owned(), String::new(), base.clone()));
        for (name, attack) in attacks {
            step(name);
            let stop = Arc::new(AtomicBool::new(false));
            let s2 = stop.clone();
            let handle = std::thread::spawn(move || attack(&ports, &s2));
            std::thread::sleep(Duration::from_secs(3));
            let measured = probe(&bin, &ports, secs);
            stop.store(true, Ordering::Relaxed);
            let did = handle
                .join()
                .unwrap_or_else(|_| "the attack thread panicked".into());
            rows.push((
                name.to_owned(),
                did,
                measured.unwrap_or_else(|e| Probe::failed(&e)),
            ));
            if let Ok(Some(status)) = proxy.child.try_wait() {
                bail!(
                    "turnout exited under {name} ({status}): {}",
                    proxy.log_tail()
                );
            }
        }
    }
    {
        let name = "a plugin at its 10 ms deadline on every `route` call, new plain TCP connections (4 clients, one request each)";
        step(name);
        let _proxy = start_turnout(&bin, &dir, &ports, http, tls_echo, true)?;
        let base = probe(&bin, &ports, secs)?;
        rows.push((
            "none (baseline, the same proxy with that plugin)".to_owned(),
            String::new(),
            base,
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || new_connections(&ports, &s2));
        std::thread::sleep(Duration::from_secs(3));
        let measured = probe(&bin, &ports, secs);
        stop.store(true, Ordering::Relaxed);
        let did = handle.join().unwrap_or_default();
        rows.push((
            name.to_owned(),
            did,
            measured.unwrap_or_else(|e| Probe::failed(&e)),
        ));
    }
    drop(backend);
    write_report("-abuse", &report(secs, &rows))?;
    Ok(())
}

/// The well-behaved load's figures.
#[derive(Debug, Clone)]
struct Probe {
    p50_us: String,
    p99_us: String,
    req_per_s: String,
    errors: String,
}

impl Probe {
    fn failed(e: &anyhow::Error) -> Probe {
        Probe {
            p50_us: "-".into(),
            p99_us: "-".into(),
            req_per_s: "-".into(),
            errors: format!("{e:#}"),
        }
    }
}

fn probe(bin: &Path, ports: &Ports, secs: u64) -> Result<Probe> {
    let out = command(
        &bin.join("turnout-loadgen"),
        &[
            "https-keepalive".into(),
            "--target".into(),
            format!("127.0.0.1:{}", ports.tls),
            "--sni".into(),
            WEB.into(),
            "--conns".into(),
            "8".into(),
            "--requests".into(),
            "100000000".into(),
            "--max-secs".into(),
            secs.to_string(),
        ],
    )
    .stdin(std::process::Stdio::null())
    .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("result "))
        .ok_or_else(|| anyhow!("https-keepalive printed no result"))?;
    let r = parse_report(line);
    let f = |k: &str| r.get(k).cloned().unwrap_or_else(|| "?".into());
    Ok(Probe {
        p50_us: f("p50_us"),
        p99_us: f("p99_us"),
        req_per_s: f("req_per_s"),
        errors: r.get("errors").map_or("0".into(), |e| {
            format!(
                "{e} ({})",
                r.get("first_error").cloned().unwrap_or_default()
            )
        }),
    })
}

fn start_turnout(
    bin: &Path,
    dir: &Path,
    ports: &Ports,
    http: SocketAddr,
    echo: SocketAddr,
    deadline_plugin: bool,
) -> Result<Proc> {
    let (cert, key) = (
        dir.join("cert/cert.pem").display().to_string(),
        dir.join("cert/key.pem").display().to_string(),
    );
    let to = |a: SocketAddr| format!(r#"[{{ "host": "{}", "port": {} }}]"#, a.ip(), a.port());
    let routes = [
        format!(
            r#"{{ "name": "web", "match": {{ "ports": {}, "domains": ["{WEB}"] }}, "action": {{ "type": "forward", "targets": {}, "tls": {{ "mode": "terminate", "certificate": {{ "cert": {cert:?}, "key": {key:?} }} }} }} }}"#,
            ports.tls,
            to(http)
        ),
        format!(
            r#"{{ "name": "plain", "match": {{ "ports": {}, "domains": ["web.test"] }}, "action": {{ "type": "forward", "targets": {} }} }}"#,
            ports.plain,
            to(http)
        ),
        format!(
            r#"{{ "name": "pass", "match": {{ "ports": {}, "domains": ["{ECHO}"] }}, "action": {{ "type": "forward", "targets": {}, "tls": {{ "mode": "passthrough" }} }} }}"#,
            ports.pass,
            to(echo)
        ),
        format!(
            r#"{{ "name": "tcp", "match": {{ "ports": {} }}, "action": {{ "type": "forward", "targets": {} }} }}"#,
            ports.tcp,
            to(http)
        ),
    ];
    let plugins = if deadline_plugin {
        let wasm = root().join("target/wasm/wasm32-wasip2/plugin/guest_misbehave.wasm");
        std::fs::copy(&wasm, dir.join("plugins/misbehave.wasm"))
            .with_context(|| format!("{} (cargo xtask build-plugins)", wasm.display()))?;
        r#"  "plugins": { "dir": "plugins", "order": ["guard", "misbehave", "routes", "keepalive"], "config": { "misbehave": { "route": "loop" } }, "failure": { "misbehave": "open" } },
"#
    } else {
        let _ = std::fs::remove_file(dir.join("plugins/misbehave.wasm"));
        ""
    };
    let admin = free_port()?;
    let extra = format!("  \"admin\": {{ \"listen\": \"127.0.0.1:{admin}\" }},\n{plugins}");
    std::fs::write(dir.join("turnout.json"), turnout_config(&routes, &extra))?;
    let mut cmd = command(
        &bin.join("turnout"),
        &[
            "run".into(),
            "-c".into(),
            dir.join("turnout.json").display().to_string(),
        ],
    );
    cmd.env("RUST_LOG", "error");
    let proxy = Proc::spawn("turnout", cmd, Some(dir.join("turnout.log")))?;
    let admin = SocketAddr::from(([127, 0, 0, 1], admin));
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(admin, "/readyz").is_err() {
        if Instant::now() > deadline {
            bail!("turnout did not become ready: {}", proxy.log_tail());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(proxy)
}

fn report(secs: u64, rows: &[(String, String, Probe)]) -> String {
    let mut md = format!(
        "# Abuse, measured\n\n`cargo xtask abuse --secs {secs}`: the well-behaved load (`turnout-loadgen https-keepalive`, 8 keep-alive HTTPS/1.1 connections, {secs} s) alone and beside each abuse, started 3 s before it; Turnout release build, this machine ({} CPUs, loopback; the abusers share the cores with the proxy).\n\n",
        std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get)
    );
    md.push_str("| abuse | what the abuser did | well-behaved p50 µs | p99 µs | requests/s | errors |\n| --- | --- | ---: | ---: | ---: | --- |\n");
    for (name, did, p) in rows {
        md.push_str(&format!(
            "| {name} | {did} | {} | {} | {} | {} |\n",
            p.p50_us, p.p99_us, p.req_per_s, p.errors
        ));
    }
    md
}

// ------------------------------------------------------------ the abusers

fn connect(port: u16) -> Option<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(s)
}

/// Runs `each` on `threads` threads until `stop`, summing what they count.
fn threads(
    n: usize,
    stop: &AtomicBool,
    each: fn(&Ports, &AtomicBool, &AtomicU64, &AtomicU64),
    ports: &Ports,
) -> (u64, u64) {
    let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| each(ports, stop, &a, &b));
        }
    });
    (a.into_inner(), b.into_inner())
}

/// How many connections the proxy can hold: two descriptors each (client
/// and backend) within its open-file limit, less some for everything else.
fn holdable() -> usize {
    let (soft, _) = super::procs::nofile_limits();
    (soft.saturating_sub(500) / 2).min(10_000)
}

fn held_many(ports: &Ports, stop: &AtomicBool) -> String {
    let bin = root().join("target/release/turnout-loadgen");
    let mut cmd = command(
        &bin,
        &[
            "idle".into(),
            "--target".into(),
            format!("127.0.0.1:{}", ports.pass),
            "--sni".into(),
            ECHO.into(),
            "--conns".into(),
            holdable().to_string(),
            "--concurrency".into(),
            "64".into(),
            "--hold-secs".into(),
            "600".into(),
            "--release-on-stdin".into(),
        ],
    );
    cmd.env("RUST_LOG", "error");
    let mut proc = match Proc::spawn("idle", cmd, None) {
        Ok(p) => p,
        Err(e) => return format!("could not start: {e:#}"),
    };
    let opened = proc
        .lines
        .as_ref()
        .and_then(|l| l.expect("open", Duration::from_secs(120)).ok())
        .unwrap_or_else(|| "not all opened".into());
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    proc.stop();
    let r = parse_report(&opened);
    format!(
        "{} held (opened in {} s, {} errors)",
        r.get("ok").map_or("?", String::as_str),
        r.get("open_secs").map_or("?", String::as_str),
        r.get("errors").map_or("0", String::as_str)
    )
}

fn slowloris(ports: &Ports, stop: &AtomicBool) -> String {
    let head = b"GET / HTTP/1.1\r\nHost: web.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut conns: Vec<(TcpStream, usize)> = Vec::new();
    let (mut opened, mut cut) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        while conns.len() < 1000 {
            match connect(ports.plain) {
                Some(s) => {
                    let _ = s.set_nonblocking(true);
                    conns.push((s, 0));
                    opened += 1;
                }
                None => break,
            }
        }
        conns.retain_mut(|(s, at)| {
            let byte = head[*at % head.len()];
            *at += 1;
            match s.write(&[byte]) {
                Ok(1) => true,
                Ok(_) | Err(_) => {
                    cut += 1;
                    false
                }
            }
        });
        std::thread::sleep(Duration::from_secs(1));
    }
    format!("{opened} connections opened, {cut} closed by the proxy (headerTimeout)")
}

/// An h2c connection, prefaced, with the client's SETTINGS sent.
fn h2c(port: u16) -> Option<TcpStream> {
    let mut s = connect(port)?;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").ok()?;
    s.write_all(&frame(4, 0, 0, &[])).ok()?;
    // Whatever the server says is read and dropped on a thread, so its
    // writes never block on us.
    let mut r = s.try_clone().ok()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
    });
    Some(s)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET http://web.test/` in HPACK: static-table indices, a literal authority.
fn request_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x84, 0x01, 8];
    b.extend_from_slice(b"web.test");
    b
}

fn rapid_reset(ports: &Ports, stop: &AtomicBool) -> String {
    let (streams, conns) = threads(
        4,
        stop,
        |ports, stop, streams, conns| {
            while !stop.load(Ordering::Relaxed) {
                let Some(mut s) = h2c(ports.plain) else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                conns.fetch_add(1, Ordering::Relaxed);
                let mut id = 1u32;
                while !stop.load(Ordering::Relaxed) && id < (1 << 30) {
                    let mut batch = Vec::new();
                    for _ in 0..100 {
                        batch.extend(frame(1, 0x5, id, &request_block()));
                        batch.extend(frame(3, 0, id, &8u32.to_be_bytes()));
                        id += 2;
                    }
                    if s.write_all(&batch).is_err() {
                        break;
                    }
                    streams.fetch_add(100, Ordering::Relaxed);
                }
            }
        },
        ports,
    );
    format!(
        "{conns} connections; {streams} HEADERS + RST_STREAM pairs written (the proxy reads up to its reset limit, then closes)"
    )
}

fn continuation_flood(ports: &Ports, stop: &AtomicBool) -> String {
    let (bytes, conns) = threads(
        4,
        stop,
        |ports, stop, bytes, conns| {
            // Literal headers without indexing, new names: `x-flood: aaaa…`.
            let mut junk = Vec::new();
            while junk.len() < 16_000 {
                junk.extend_from_slice(&[0x00, 7]);
                junk.extend_from_slice(b"x-flood");
                junk.extend_from_slice(&[100]);
                junk.extend_from_slice(&[b'a'; 100]);
            }
            while !stop.load(Ordering::Relaxed) {
                let Some(mut s) = h2c(ports.plain) else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                conns.fetch_add(1, Ordering::Relaxed);
                if s.write_all(&frame(1, 0, 1, &request_block())).is_err() {
                    continue;
                }
                let cont = frame(9, 0, 1, &junk);
                while !stop.load(Ordering::Relaxed) && s.write_all(&cont).is_ok() {
                    bytes.fetch_add(cont.len() as u64, Ordering::Relaxed);
                }
            }
        },
        ports,
    );
    format!(
        "{conns} connections; {} MB of CONTINUATION written (the proxy reads to its header limit, then closes)",
        bytes / 1_000_000
    )
}

/// Sends `request` on fresh connections until `stop`; counts answers
/// starting with `want`, and the rest.
fn flood(
    port: u16,
    stop: &AtomicBool,
    request: &[u8],
    want: &str,
    ok: &AtomicU64,
    other: &AtomicU64,
) {
    while !stop.load(Ordering::Relaxed) {
        let Some(mut s) = connect(port) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let mut head = [0u8; 12];
        let answered = s.write_all(request).is_ok() && s.read_exact(&mut head).is_ok();
        if answered && head.starts_with(want.as_bytes()) {
            ok.fetch_add(1, Ordering::Relaxed);
        } else {
            other.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn smuggling(ports: &Ports, stop: &AtomicBool) -> String {
    let (ok, other) = threads(
        4,
        stop,
        |ports, stop, ok, other| {
            let req = b"POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
            flood(ports.plain, stop, req, "HTTP/1.1 400", ok, other);
        },
        ports,
    );
    format!("{ok} refused with 400, {other} otherwise")
}

fn huge_headers(ports: &Ports, stop: &AtomicBool) -> String {
    let (ok, other) = threads(
        4,
        stop,
        |ports, stop, ok, other| {
            let mut req = b"GET / HTTP/1.1\r\nHost: web.test\r\nX-Big: ".to_vec();
            req.extend(std::iter::repeat_n(b'a', 70_000));
            req.extend_from_slice(b"\r\n\r\n");
            flood(ports.plain, stop, &req, "HTTP/1.1 431", ok, other);
        },
        ports,
    );
    format!("{ok} refused with 431, {other} otherwise")
}

/// New connections to the plain TCP route, each a full request to the
/// backend, as fast as they come: every one costs the deadline-bound
/// plugin a `route` call.
fn new_connections(ports: &Ports, stop: &AtomicBool) -> String {
    let (ok, other) = threads(
        4,
        stop,
        |ports, stop, ok, other| {
            let req = b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n";
            flood(ports.tcp, stop, req, "HTTP/1.1 200", ok, other);
        },
        ports,
    );
    format!("{ok} new connections served, {other} not")
}
