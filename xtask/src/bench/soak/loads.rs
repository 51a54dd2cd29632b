//! The soak's loads and misbehaving backends: each load runs one bounded
//! batch per call and adds to its [`Tally`].

use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;

use super::super::parse_report;
use super::super::procs::command;

/// One kind of load: batches run, and what failed that should not have.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) batches: AtomicU64,
    pub(super) ok: AtomicU64,
    pub(super) failed: AtomicU64,
    /// The first failure, for the report.
    pub(super) first: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn fail(&self, n: u64, what: String) {
        self.failed.fetch_add(n, Ordering::Relaxed);
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(what);
    }
}

pub(super) fn loadgen_batch(lg: &Path, args: &[String], ok_key: &str, t: &Tally) {
    t.batches.fetch_add(1, Ordering::Relaxed);
    let out = command(lg, args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let line = out.as_ref().ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find(|l| l.starts_with("result "))
            .map(str::to_owned)
    });
    let Some(line) = line else {
        t.fail(1, format!("{} printed no result", args[0]));
        return;
    };
    let r = parse_report(&line);
    let n = |k: &str| r.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    t.ok.fetch_add(n(ok_key), Ordering::Relaxed);
    let errors = n("errors");
    if errors > 0 {
        t.fail(
            errors,
            r.get("first_error")
                .cloned()
                .unwrap_or_else(|| line.clone()),
        );
    }
}

pub(super) fn h2load_batch(port: u16, t: &Tally) {
    t.batches.fetch_add(1, Ordering::Relaxed);
    let out = Command::new("timeout")
        .args([
            "150",
            "h2load",
            "-n",
            "20000",
            "-c",
            "4",
            "-m",
            "10",
            &format!("https://127.0.0.1:{port}/"),
        ])
        .output();
    let Ok(out) = out else {
        t.fail(1, "h2load did not run (install nghttp2-client)".into());
        std::thread::sleep(Duration::from_secs(5));
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // "requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, 0 errored, 0 timeout"
    let line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or("");
    let field = |name: &str| {
        line.split(',').find_map(|p| {
            p.trim()
                .strip_suffix(name)?
                .split_whitespace()
                .last()?
                .parse::<u64>()
                .ok()
        })
    };
    let (ok, failed) = (
        field("succeeded").unwrap_or(0),
        field("failed").unwrap_or(1)
            + field("errored").unwrap_or(0)
            + field("timeout").unwrap_or(0),
    );
    t.ok.fetch_add(ok, Ordering::Relaxed);
    if failed > 0 || ok == 0 {
        t.fail(failed.max(1), format!("h2load: {line}"));
    }
}

/// One request on the plain HTTP port for `host`; its status must be `want`.
pub(super) fn expect_status(port: u16, host: &str, want: u16, t: &Tally) {
    t.batches.fetch_add(1, Ordering::Relaxed);
    let status = (|| -> Result<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(String::from_utf8_lossy(&head[9..12]).parse()?)
    })();
    match status {
        Ok(s) if s == want => {
            t.ok.fetch_add(1, Ordering::Relaxed);
        }
        other => t.fail(1, format!("{host}: wanted {want}, got {other:?}")),
    }
}

/// Half a request head on the plain port, half a ClientHello on the TLS
/// port, each closed at once.
pub(super) fn vanish_once(plain: u16, tls: u16, t: &Tally) {
    t.batches.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", plain)) {
        let _ = s.write_all(b"GET /slow HTTP/1.1\r\nHost: web.te");
        t.ok.fetch_add(1, Ordering::Relaxed);
    }
    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", tls)) {
        let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]);
        t.ok.fetch_add(1, Ordering::Relaxed);
    }
}

/// A backend that closes every connection with a reset.
pub(super) fn resetting_backend() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            // SO_LINGER 0: the close is a RST.
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        }
    });
    Ok(addr)
}

/// A backend that reads and never answers (each connection is held until
/// the proxy closes it).
pub(super) fn stalling_backend() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    Ok(addr)
}
