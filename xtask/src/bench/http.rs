//! The HTTP scenario, `https-keepalive`: each proxy terminates TLS and
//! proxies HTTP/1.1 requests to the same plain HTTP/1.1 backend over a
//! keep-alive pool larger than the client's concurrency; the load is
//! `turnout-loadgen https-keepalive`. Besides the proxy's CPU it reads the
//! backend's connection count (did the pool hold?) and, for Turnout, the
//! `routes` plugin's call time from `/metrics` (the request hook's share).
//! `https-new` is the same setup with a new TLS connection per request.
//!
//! The proxies do the same per-request work: pick the backend by `Host`
//! (`*.bench.test`), keep `Host`, set `X-Forwarded-For`/`-Proto`/`-Host`/
//! `-Port` (Turnout does by default; HAProxy, nginx and Caddy are told to
//! where it is not their default, see `caddy.rs`), log
//! nothing.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::procs::{Proc, free_port};
use super::{Bench, CERT_NAME, ECHO, Figures, Proxy, num};

/// What differs between the HTTP scenarios' nginx configs.
pub(super) struct NginxSite<'a> {
    /// After `listen … ssl`.
    pub(super) listen_extra: &'a str,
    pub(super) backend: SocketAddr,
    /// Lines in the `upstream` block.
    pub(super) upstream_extra: &'a str,
    /// Lines in `location /`.
    pub(super) location_extra: &'a str,
}

/// Idle backend connections each proxy may keep: above the client's
/// concurrency, so that no proxy churns backend connections (peers.md).
const POOL: usize = 128;

impl Bench<'_> {
    /// One terminate route for `*.bench.test` (protocol http, the default)
    /// to the HTTP backend; the admin API on for `/metrics`.
    pub(super) fn turnout_http_config(&self, port: u16) -> Result<String> {
        let route = self.terminate_route(port, "", self.http)?;
        let extra = format!(
            "  \"http\": {{ \"upstreamMaxIdle\": {POOL} }},\n{}",
            self.turnout_admin()?
        );
        Ok(super::peers::turnout_config(&[route], &extra))
    }

    /// The `admin` line of an HTTP scenario's Turnout config, on a free
    /// port that [`Self::plugin_times`] then reads `/metrics` from.
    pub(super) fn turnout_admin(&self) -> Result<String> {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        self.admin.set(Some(admin));
        Ok(format!("  \"admin\": {{ \"listen\": \"{admin}\" }},\n"))
    }

    /// `mode http`, TLS as in the terminate scenarios with ALPN http/1.1
    /// (`h2`: h2 first), backend chosen by Host, `http-reuse always` (its
    /// idle pool is unbounded), keep-alive both sides.
    pub(super) fn haproxy_http_config(&self, port: u16, nproc: usize, h2: bool) -> Result<String> {
        let alpn = if h2 { "h2,http/1.1" } else { "http/1.1" };
        self.haproxy_http(port, nproc, alpn, self.http, "", "  http-reuse always\n")
    }

    /// The HTTP scenarios' HAProxy: TLS as in the terminate scenarios
    /// with ALPN `alpn`, the `X-Forwarded-*` headers, the backend chosen
    /// by Host; `defaults` and the backend section get the extra lines.
    pub(super) fn haproxy_http(
        &self,
        port: u16,
        nproc: usize,
        alpn: &str,
        backend: SocketAddr,
        defaults_extra: &str,
        backend_extra: &str,
    ) -> Result<String> {
        let bundle = self.cert_file("bundle.pem")?;
        let maxconn = self.haproxy_maxconn();
        let domain = CERT_NAME.trim_start_matches('*');
        Ok(format!(
            "global\n  nbthread {nproc}\n  maxconn {maxconn}\n  tune.ssl.cachesize 0\n\
             defaults\n  mode http\n  maxconn {maxconn}\n  option http-keep-alive\n  timeout connect 5s\n  \
             timeout client 1h\n  timeout server 1h\n  timeout http-request 10s\n  timeout http-keep-alive 1h\n{defaults_extra}\
             frontend https_in\n  bind 127.0.0.1:{port} ssl crt {} alpn {alpn} no-tls-tickets ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3\n  \
             option forwardfor\n  http-request set-header X-Forwarded-Proto https\n  \
             http-request set-header X-Forwarded-Host %[req.hdr(host)]\n  \
             http-request set-header X-Forwarded-Port %[dst_port]\n  \
             use_backend plain if {{ req.hdr(host),field(1,:) -m end -i {domain} }}\n\
             backend plain\n{backend_extra}  server s {backend}\n",
            bundle.display(),
        ))
    }

    /// `http { server { listen … ssl; location / { proxy_pass } } }` to an
    /// `upstream` with a keep-alive pool, HTTP/1.1 upstream, the request
    /// limits per connection raised (both default to 1000, for h2 too),
    /// access log off; `h2`: `listen … ssl http2` (nginx 1.22's form).
    pub(super) fn nginx_http_config(
        &self,
        port: u16,
        nproc: usize,
        prefix: &Path,
        h2: bool,
    ) -> Result<String> {
        self.nginx_http(
            port,
            nproc,
            prefix,
            &NginxSite {
                listen_extra: if h2 { " http2" } else { "" },
                backend: self.http,
                upstream_extra: &format!(
                    "    keepalive {POOL};\n    keepalive_requests 10000000;\n    keepalive_timeout 1h;\n"
                ),
                location_extra: "      proxy_set_header Connection \"\";\n",
            },
        )
    }

    /// The HTTP scenarios' nginx: TLS as in the terminate scenarios
    /// (`site.listen_extra` after `ssl`), `keepalive_requests` raised on
    /// the client side, HTTP/1.1 to the `upstream` (with the
    /// `site.upstream_extra` lines), `Host` kept and the `X-Forwarded-*`
    /// headers set, plus the `site.location_extra` lines.
    pub(super) fn nginx_http(
        &self,
        port: u16,
        nproc: usize,
        prefix: &Path,
        site: &NginxSite<'_>,
    ) -> Result<String> {
        let NginxSite {
            listen_extra,
            backend,
            upstream_extra,
            location_extra,
        } = site;
        let (cert, key) = (self.cert_file("cert.pem")?, self.cert_file("key.pem")?);
        let p = prefix.display();
        // Debian's compiled-in temp paths (/var/lib/nginx/…) may not exist.
        let temps: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .iter()
            .map(|t| format!("  {t}_temp_path {p}/{t}_temp;\n"))
            .collect();
        Ok(format!(
            "{}http {{\n  access_log off;\n{temps}  \
             upstream plain {{\n    server {backend};\n{upstream_extra}  }}\n  \
             server {{\n    listen 127.0.0.1:{port} ssl{listen_extra};\n    server_name {CERT_NAME};\n    \
             ssl_certificate {};\n    ssl_certificate_key {};\n    \
             ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_tickets off;\n    ssl_session_cache off;\n    \
             keepalive_requests 10000000;\n    keepalive_timeout 1h;\n    \
             location / {{\n      proxy_pass http://plain;\n      proxy_http_version 1.1;\n{location_extra}      \
             proxy_set_header Host $http_host;\n      \
             proxy_set_header X-Forwarded-For $remote_addr;\n      proxy_set_header X-Forwarded-Proto $scheme;\n      \
             proxy_set_header X-Forwarded-Host $http_host;\n      proxy_set_header X-Forwarded-Port $server_port;\n    \
             }}\n  }}\n}}\n",
            self.nginx_main(nproc, prefix),
            cert.display(),
            key.display(),
        ))
    }

    /// `requests` requests over the scenario's keep-alive connections, or
    /// with `close` each on a new connection (`connection: close`).
    pub(super) fn https_requests(
        &self,
        to: SocketAddr,
        requests: usize,
        close: bool,
    ) -> Result<BTreeMap<String, String>> {
        let mut args = vec!["https-keepalive".to_owned()];
        args.extend(Self::target(to, ECHO));
        args.extend([
            "--conns".into(),
            self.load.http_conns.to_string(),
            "--requests".into(),
            requests.to_string(),
            "--max-secs".into(),
            "600".into(),
        ]);
        if close {
            args.push("--close".into());
        }
        self.loadgen(&args)
    }

    /// `https-new`: proxy CPU per 10 000 requests that each came on a new
    /// TLS connection (a full handshake, then one request).
    pub(super) fn https_new(
        &self,
        p: &Proc,
        addr: SocketAddr,
        f: &mut Figures,
    ) -> Result<BTreeMap<String, String>> {
        let (r, used) =
            self.cpu_during(p, || self.https_requests(addr, self.load.https_new, true))?;
        f.insert("cpu_s_per_10k".into(), used / num(&r, "ok") * 1e4);
        f.insert("conns_per_s".into(), num(&r, "req_per_s"));
        for k in ["p50_us", "p99_us", "client_cores", "resumed"] {
            f.insert(k.into(), num(&r, k));
        }
        Ok(r)
    }

    /// The measured run: proxy CPU per 100 000 requests, the backend
    /// connections it opened, and for Turnout the request hook's share.
    pub(super) fn https_keepalive(
        &self,
        proxy: Proxy,
        p: &Proc,
        addr: SocketAddr,
        f: &mut Figures,
    ) -> Result<BTreeMap<String, String>> {
        let r = self.measured_http(proxy, p, self.http, f, || {
            self.https_requests(addr, self.load.http_requests, false)
        })?;
        f.insert("client_conns".into(), num(&r, "conns_opened"));
        for k in [
            "req_per_s",
            "p50_us",
            "p99_us",
            "client_cores",
            "resumed",
            "tickets_per_conn",
        ] {
            f.insert(k.into(), num(&r, k));
        }
        Ok(r)
    }

    /// A measured run of an HTTP scenario (`load`, through `proxy` to
    /// `backend`): the proxy's CPU per 100 000 answers (`ok`), the backend
    /// connections opened meanwhile, and Turnout's request-plugin figures.
    /// The backend's count and `/metrics` are read outside the CPU window:
    /// a scrape is the proxy's work too.
    pub(super) fn measured_http(
        &self,
        proxy: Proxy,
        p: &Proc,
        backend: SocketAddr,
        f: &mut Figures,
        load: impl FnOnce() -> Result<BTreeMap<String, String>>,
    ) -> Result<BTreeMap<String, String>> {
        let (conns0, hook0) = (backend_conns(backend)?, self.plugin_times(proxy)?);
        let (r, used) = self.cpu_during(p, load)?;
        let (conns1, hook1) = (backend_conns(backend)?, self.plugin_times(proxy)?);
        f.insert("cpu_s_per_100k".into(), used / num(&r, "ok") * 1e5);
        // The second `/_stats` connection came after the first count.
        f.insert("backend_conns".into(), conns1 - conns0 - 1.0);
        hook_share(&hook0, &hook1, used, f);
        Ok(r)
    }

    /// Turnout's request plugins' calls and call time so far: `routes`,
    /// and `hdr` in turnout-hook (nothing for the peers).
    pub(super) fn plugin_times(&self, proxy: Proxy) -> Result<Vec<(&'static str, f64, f64)>> {
        let admin = matches!(
            proxy,
            Proxy::Turnout | Proxy::TurnoutCluster | Proxy::TurnoutHook
        )
        .then(|| self.admin.get())
        .flatten();
        let Some(admin) = admin else {
            return Ok(Vec::new());
        };
        let mut names = vec!["routes"];
        if proxy == Proxy::TurnoutHook {
            names.push(super::hook::NAME);
        }
        names
            .into_iter()
            .map(|n| plugin_call_time(admin, n).map(|(calls, secs)| (n, calls, secs)))
            .collect()
    }
}

/// From the request plugins' counters before and after a run: the
/// `routes` plugin's time per call and share of the proxy's CPU (`used`
/// seconds), and turnout-hook's `hdr` calls per request and time per call.
pub(super) fn hook_share(
    before: &[(&str, f64, f64)],
    after: &[(&str, f64, f64)],
    used: f64,
    f: &mut Figures,
) {
    let routes_calls = after.first().zip(before.first()).map(|(a, b)| a.1 - b.1);
    for ((name, calls1, secs1), (_, calls0, secs0)) in after.iter().zip(before) {
        let (calls, secs) = (calls1 - calls0, secs1 - secs0);
        if *name == "routes" {
            f.insert("hook_us_per_call".into(), secs / calls * 1e6);
            f.insert("hook_pct".into(), secs / used * 100.0);
        } else {
            f.insert("hdr_us_per_call".into(), secs / calls * 1e6);
            if let Some(r) = routes_calls {
                f.insert("hdr_calls_per_routes_call".into(), calls / r);
            }
        }
    }
}

/// The body of `GET path` on a plain HTTP/1.1 server (Connection: close).
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connect to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .with_context(|| format!("GET {path} from {addr}"))?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => bail!(
            "GET {path} from {addr}: {}",
            text.lines().next().unwrap_or("")
        ),
    }
}

/// Connections the HTTP backend has accepted so far, this call's own
/// `/_stats` connection included.
pub(super) fn backend_conns(backend: SocketAddr) -> Result<f64> {
    let body = http_get(backend, "/_stats")?;
    let conns = body
        .split_whitespace()
        .find_map(|w| w.strip_prefix("conns="))
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("backend /_stats said {body:?}"))?;
    Ok(conns)
}

/// A plugin's calls and call time in seconds, from Turnout's `/metrics`
/// (`…plugin_call_duration_seconds_{count,sum}`; every hook, so also the
/// few connection-level `route` calls).
pub(super) fn plugin_call_time(admin: SocketAddr, plugin: &str) -> Result<(f64, f64)> {
    let label = format!("plugin=\"{plugin}\"");
    let text = http_get(admin, "/metrics")?;
    let value = |suffix: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| {
                l.split('{')
                    .next()
                    .is_some_and(|n| n.ends_with(&format!("plugin_call_duration_seconds_{suffix}")))
                    && l.contains(&label)
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| {
                format!("no {plugin} plugin_call_duration_seconds_{suffix} in /metrics")
            })
    };
    Ok((value("count")?, value("sum")?))
}
