//! The HTTP/2 scenario, `h2`: each proxy terminates TLS offering h2 by
//! ALPN and proxies the requests to the plain HTTP/1.1 backend (the same
//! routes and headers as `https-keepalive`). The load is `h2load` (Debian's
//! `nghttp2-client`), a real HTTP/2 client: 10 connections × 10 concurrent
//! streams, one thread, each request a `GET /` with `:authority`
//! `echo.bench.test:PORT` and that SNI.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::peers::install_packages;
use super::procs::{Proc, output};
use super::{Bench, ECHO, Figures, Proxy, num};

const CONNS: usize = 10;
const STREAMS: usize = 10;

/// Installs `h2load` when it is missing (`--no-install` refuses instead).
pub(super) fn ensure_h2load(install: bool) -> Result<()> {
    let have = Command::new("h2load")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    install_packages(&["nghttp2-client"], install)
}

impl Bench<'_> {
    /// `requests` HTTP/2 requests through the proxy at `to`, as `h2load`
    /// reports them: `ok` (2xx answers), `errors`, `req_per_s`, `mean_us`,
    /// `negotiated` (the ALPN protocol).
    pub(super) fn h2_requests(
        &self,
        to: SocketAddr,
        requests: usize,
    ) -> Result<BTreeMap<String, String>> {
        let url = format!("https://{ECHO}:{}/", to.port());
        let mut cmd = Command::new("timeout");
        // A stalled run ends: 10 s without a byte closes a connection,
        // 600 s ends the whole run.
        cmd.args(["600", "h2load", "-t", "1", "-N", "10"])
            .args(["-c", &CONNS.to_string(), "-m", &STREAMS.to_string()])
            .args(["-n", &requests.max(CONNS).to_string()])
            .arg(format!("--connect-to={to}"))
            .arg(&url);
        let text = output(&mut cmd).with_context(|| format!("h2load {url}"))?;
        parse_h2load(&text).with_context(|| format!("h2load said:\n{text}"))
    }

    /// The measured run: proxy CPU per 100 000 HTTP/2 requests, the
    /// backend connections it opened, and for Turnout the request hook's
    /// share.
    pub(super) fn h2(
        &self,
        proxy: Proxy,
        p: &Proc,
        addr: SocketAddr,
        f: &mut Figures,
    ) -> Result<BTreeMap<String, String>> {
        let r = self.measured_http(proxy, p, self.http, f, || {
            self.h2_requests(addr, self.load.h2_requests)
        })?;
        for k in ["req_per_s", "mean_us"] {
            f.insert(k.into(), num(&r, k));
        }
        Ok(r)
    }
}

/// `h2load`'s summary as the loadgen's `key=value` report. Anything but
/// h2 negotiated is an error: the scenario measures HTTP/2.
fn parse_h2load(text: &str) -> Result<BTreeMap<String, String>> {
    let line = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .with_context(|| format!("no {prefix:?} line"))
    };
    let protocol = line("Application protocol:")?.trim();
    if protocol != "h2" {
        bail!("negotiated {protocol:?}, not h2");
    }
    // "requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, 0 errored, 0 timeout"
    let counts = line("requests:")?;
    let count = |what: &str| -> Result<f64> {
        counts
            .split(',')
            .map(str::trim)
            .find_map(|c| c.strip_suffix(what))
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("no {what:?} in requests: {counts}"))
    };
    let ok = line("status codes:")?
        .split(',')
        .map(str::trim)
        .find_map(|c| c.strip_suffix(" 2xx"))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .context("no 2xx count")?;
    // Every request asked for that did not get a 2xx: failed, errored,
    // timed out or answered otherwise.
    let errors = (count(" total")? - ok).max(0.0);
    // "finished in 1.23s, 81234.56 req/s, 3.10MB/s"
    let req_per_s = line("finished in")?
        .split(',')
        .map(str::trim)
        .find_map(|c| c.strip_suffix(" req/s"))
        .context("no req/s")?
        .to_owned();
    // "time for request:      271us     20.43ms      1.19ms       621us    76.43%"
    let mean_us = line("time for request:")?
        .split_whitespace()
        .nth(2)
        .and_then(micros)
        .context("no mean time for request")?;
    let mut r = BTreeMap::new();
    r.insert("ok".to_owned(), ok.to_string());
    r.insert("errors".to_owned(), errors.to_string());
    if errors > 0.0 {
        r.insert("first_error".to_owned(), format!("h2load: {counts}"));
    }
    r.insert("req_per_s".to_owned(), req_per_s);
    r.insert("mean_us".to_owned(), format!("{mean_us:.0}"));
    r.insert("negotiated".to_owned(), format!("alpn:{protocol}"));
    Ok(r)
}

/// `271us`, `1.19ms`, `2.5s` in microseconds.
fn micros(v: &str) -> Option<f64> {
    let (n, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else {
        (v.strip_suffix('s')?, 1e6)
    };
    n.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "starting benchmark...
spawning thread #0: 10 total client(s). 1000 total requests
TLS Protocol: TLSv1.3
Cipher: TLS_AES_256_GCM_SHA384
Server Temp Key: X25519 253 bits
Application protocol: h2
progress: 10% done

finished in 123.45ms, 8100.40 req/s, 1.02MB/s
requests: 1000 total, 1000 started, 1000 done, 998 succeeded, 2 failed, 0 errored, 0 timeout
status codes: 998 2xx, 0 3xx, 0 4xx, 2 5xx
traffic: 1.02MB (1070000) total, 20.00KB (20480) headers (space savings 90.00%), 100.00KB (102400) data
                     min         max         mean         sd        +/- sd
time for request:      271us     20.43ms      1.19ms       621us    76.43%
";

    #[test]
    fn h2load_summary_is_read() {
        let r = parse_h2load(SAMPLE).unwrap();
        assert_eq!(r["ok"], "998");
        assert_eq!(r["errors"], "2");
        assert_eq!(r["req_per_s"], "8100.40");
        assert_eq!(r["mean_us"], "1190");
        assert_eq!(r["negotiated"], "alpn:h2");
        let h1 = SAMPLE.replace("protocol: h2", "protocol: http/1.1");
        assert!(parse_h2load(&h1).is_err());
        assert_eq!(micros("2.5s"), Some(2.5e6));
        assert_eq!(micros("271us"), Some(271.0));
    }
}
