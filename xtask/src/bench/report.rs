//! The Markdown report: medians and spreads, ratios to HAProxy per
//! repeat, machine facts, every run, the method.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::Result;

use super::procs::output;
use super::{Bench, Proxy, Scenario};
use crate::root;

/// The header and rule of a table with a column per proxy.
fn table_head(proxies: &[Proxy]) -> (String, String) {
    let mut head = String::from("| scenario | figure |");
    let mut rule = String::from("| --- | --- |");
    for p in proxies {
        head += &format!(" {} |", p.name());
        rule += " ---: |";
    }
    (head, rule)
}

pub(super) fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "—".to_owned()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Median, min, max of the finite values.
fn summary(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((median, v[0], v[n - 1]))
}

pub(super) fn cell(v: Vec<f64>) -> String {
    match summary(v) {
        None => "—".to_owned(),
        Some((m, lo, hi)) if lo == hi => fmt_num(m),
        Some((m, lo, hi)) => format!("{} ({}–{})", fmt_num(m), fmt_num(lo), fmt_num(hi)),
    }
}

impl Bench<'_> {
    fn values(&self, s: Scenario, p: Proxy, key: &str) -> Vec<f64> {
        (0..self.opts.repeats)
            .map(|r| self.value(s, p, r, key))
            .collect()
    }

    pub(super) fn value(&self, s: Scenario, p: Proxy, repeat: usize, key: &str) -> f64 {
        self.runs
            .iter()
            .find(|x| x.scenario == s && x.proxy == p && x.repeat == repeat)
            .and_then(|x| x.figures.get(key).copied())
            .unwrap_or(f64::NAN)
    }

    /// Per repeat, `p` against HAProxy: a ratio, or for latency (where
    /// HAProxy's added time can be ~0) a difference.
    fn versus_haproxy(&self, s: Scenario, p: Proxy, key: &str) -> Vec<f64> {
        self.versus(s, p, Proxy::Haproxy, key)
    }

    /// Per repeat, `p` against `base`: as [`Self::versus_haproxy`].
    fn versus(&self, s: Scenario, p: Proxy, base: Proxy, key: &str) -> Vec<f64> {
        (0..self.opts.repeats)
            .map(|r| {
                let (x, b) = (self.value(s, p, r, key), self.value(s, base, r, key));
                if s == Scenario::Latency { x - b } else { x / b }
            })
            .collect()
    }

    /// `--cluster`: per scenario, turnout-cluster against turnout (same
    /// repeat), and what Redis says it ran for each connection.
    fn cluster_section(&self, md: &mut String) -> Result<()> {
        let (t, c) = (Proxy::Turnout, Proxy::TurnoutCluster);
        if !(self.opts.proxies.contains(&t) && self.opts.proxies.contains(&c)) {
            return Ok(());
        }
        writeln!(md, "\n## Cluster store: turnout-cluster against turnout\n")?;
        writeln!(
            md,
            "Both with `connectionRateLimitPerMinute` {}; turnout-cluster also with `cluster` on the bench's Redis, so each of its new connections awaits one rate script there before `admit`. \"cluster − plain\" is per repeat (a difference for latency, else a ratio), then the median (min–max). \"Redis scripts per conn\" and \"µs per script\" are the Redis server's own count and time (`INFO commandstats`, EVAL + EVALSHA) over the measured run: about 1 per connection means every connection's round trip happened (fewer: the store fell back to counting locally).\n",
            super::cluster::RATE_LIMIT
        )?;
        writeln!(
            md,
            "| scenario | figure | turnout | turnout-cluster | cluster − plain | Redis scripts per conn | Redis µs per script |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |"
        )?;
        for &s in &self.opts.scenarios {
            let h = s.headline();
            let mut figures = vec![(h.key, h.label)];
            if s == Scenario::Latency {
                figures.insert(0, ("added_p50_us", "added p50 µs per new conn"));
            }
            for (key, label) in figures {
                writeln!(
                    md,
                    "| {} | {label} | {} | {} | {} | {} | {} |",
                    s.name(),
                    cell(self.values(s, t, key)),
                    cell(self.values(s, c, key)),
                    cell(self.versus(s, c, t, key)),
                    cell(self.values(s, c, "redis_scripts_per_conn")),
                    cell(self.values(s, c, "redis_us_per_script")),
                )?;
            }
        }
        Ok(())
    }

    fn facts(&self) -> Vec<(&'static str, String)> {
        let sh = |cmd: &str, args: &[&str]| {
            output(Command::new(cmd).args(args))
                .map(|o| o.lines().next().unwrap_or("").trim().to_owned())
                .unwrap_or_else(|_| "not available".to_owned())
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        let mem = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:").map(|m| m.trim().to_owned()))
            .unwrap_or_default();
        let dirty = output(
            Command::new("git")
                .args(["status", "--porcelain"])
                .current_dir(root()),
        )
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false);
        let commit = sh(
            "git",
            &[
                "-C",
                &root().display().to_string(),
                "rev-parse",
                "--short",
                "HEAD",
            ],
        );
        vec![
            ("CPU", format!("{model} — nproc {}", sh("nproc", &[]))),
            ("kernel", sh("uname", &["-r"])),
            ("memory", mem),
            (
                "open files (soft/hard)",
                format!("{}/{}", self.nofile.0, self.nofile.1),
            ),
            (
                "turnout",
                format!(
                    "commit {commit}{}",
                    if dirty {
                        " (working tree had uncommitted changes)"
                    } else {
                        ""
                    }
                ),
            ),
            ("haproxy", sh("haproxy", &["-v"])),
            ("nginx", sh("nginx", &["-v"])),
            ("caddy", sh("caddy", &["version"])),
            ("h2load", sh("h2load", &["--version"])),
            ("rustc", sh("rustc", &["-V"])),
        ]
        .into_iter()
        .chain(self.redis.as_ref().map(|r| ("redis", r.version.clone())))
        .collect()
    }

    pub(super) fn markdown(&self) -> Result<String> {
        let mut md = String::new();
        let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
        let proxies = &self.opts.proxies;
        let has_haproxy = proxies.contains(&Proxy::Haproxy);
        writeln!(
            md,
            "# Turnout vs HAProxy vs nginx vs Caddy — {}\n",
            date.trim()
        )?;
        writeln!(
            md,
            "`cargo xtask bench {}` — {} repeat(s) per scenario and proxy, proxy order rotated every repeat; took {:.0} min.\n",
            self.opts.args,
            self.opts.repeats,
            self.started.elapsed().as_secs_f64() / 60.0
        )?;
        if self.opts.quick {
            writeln!(
                md,
                "**`--quick`: tiny loads. These numbers check the harness; they measure nothing.**\n"
            )?;
        }
        writeln!(md, "## Machine\n")?;
        for (k, v) in self.facts() {
            writeln!(md, "* {k}: {v}")?;
        }
        let l = &self.load;
        writeln!(
            md,
            "* load: new-tls and new-tls-terminate {} conns at concurrency {}; bulk {} MiB in total per run; idle and idle-terminate {} conns; latency {} conns per path; https-keepalive {} requests over {} keep-alive conns; https-new {} requests, each on a new conn, {} at a time; h2 {} requests ({} for the warm-up); ws-echo {} messages of {} bytes over {} WebSockets, {} in flight on each; warm-up {} conns per proxy start ({} requests for https-keepalive, {} messages for ws-echo)\n",
            l.tls_conns,
            l.concurrency,
            l.bulk_total >> 20,
            l.idle,
            l.latency,
            l.http_requests,
            l.http_conns,
            l.https_new,
            l.http_conns,
            l.h2_requests,
            l.h2_requests / 10,
            l.ws_messages,
            l.ws_message_bytes,
            l.ws_conns,
            l.ws_window,
            l.warmup,
            l.http_warmup,
            l.ws_warmup
        )?;

        writeln!(md, "## Headline: the proxy's own cost\n")?;
        writeln!(
            md,
            "Median (min–max) over the repeats. \"vs haproxy\" is computed per repeat against HAProxy's run in the same repeat — a ratio (lower is better for Turnout), for latency a difference in µs — then the median (min–max) of those.\n"
        )?;
        let (mut head, mut rule) = table_head(proxies);
        if has_haproxy {
            for p in proxies.iter().filter(|p| **p != Proxy::Haproxy) {
                head += &format!(" {} vs haproxy |", p.name());
                rule += " ---: |";
            }
            head += " goal (turnout vs haproxy) | met |";
            rule += " --- | --- |";
        }
        writeln!(md, "{head}\n{rule}")?;
        for &s in &self.opts.scenarios {
            let h = s.headline();
            let mut row = format!("| {} | {} |", s.name(), h.label);
            for &p in proxies {
                row += &format!(" {} |", cell(self.values(s, p, h.key)));
            }
            if has_haproxy {
                for &p in proxies.iter().filter(|p| **p != Proxy::Haproxy) {
                    row += &format!(" {} |", cell(self.versus_haproxy(s, p, h.key)));
                }
                let (goal, met) = match summary(self.versus_haproxy(s, Proxy::Turnout, h.key)) {
                    _ if !proxies.contains(&Proxy::Turnout) => (String::new(), "—"),
                    Some((m, ..)) if s == Scenario::Latency => (
                        "≤ haproxy's".to_owned(),
                        if m <= 0.0 { "yes" } else { "**no**" },
                    ),
                    Some((m, ..)) => (
                        format!("≤ {}×", h.goal),
                        if m <= h.goal { "yes" } else { "**no**" },
                    ),
                    None => (String::new(), "—"),
                };
                row += &format!(" {goal} | {met} |");
            }
            writeln!(md, "{row}")?;
        }

        self.cluster_section(&mut md)?;
        self.hook_section(&mut md)?;

        writeln!(
            md,
            "\n## Beside them: throughput and latency (noisy here)\n"
        )?;
        let (head, rule) = table_head(proxies);
        writeln!(md, "{head}\n{rule}")?;
        for &s in &self.opts.scenarios {
            for (key, label) in s.side() {
                let mut row = format!("| {} | {label} |", s.name());
                for &p in proxies {
                    row += &format!(" {} |", cell(self.values(s, p, key)));
                }
                writeln!(md, "{row}")?;
            }
        }

        if self.opts.scenarios.iter().any(|s| s.terminates()) {
            writeln!(
                md,
                "\n## TLS as the client saw it (terminating scenarios)\n"
            )?;
            writeln!(
                md,
                "`version/cipher suite/key exchange group/ALPN` of every handshake (all runs), from the client's rustls. The client never offers resumption (its session store keeps nothing); tickets a server sends anyway are counted and dropped.\n"
            )?;
            writeln!(
                md,
                "| scenario | proxy | negotiated | resumed | tickets per conn |\n| --- | --- | --- | ---: | ---: |"
            )?;
            for &s in self.opts.scenarios.iter().filter(|s| s.terminates()) {
                for &p in proxies {
                    let runs: Vec<_> = self
                        .runs
                        .iter()
                        .filter(|r| r.scenario == s && r.proxy == p)
                        .collect();
                    let mut seen: Vec<&str> = runs
                        .iter()
                        .filter_map(|r| r.negotiated.as_deref())
                        .collect();
                    seen.sort_unstable();
                    seen.dedup();
                    let sum = |k: &str| runs.iter().filter_map(|r| r.figures.get(k)).sum::<f64>();
                    writeln!(
                        md,
                        "| {} | {} | {} | {} | {} |",
                        s.name(),
                        p.name(),
                        if seen.is_empty() {
                            "—".to_owned()
                        } else {
                            seen.join(", ")
                        },
                        fmt_num(sum("resumed")),
                        cell(self.values(s, p, "tickets_per_conn")),
                    )?;
                }
            }
        }

        writeln!(md, "\n## Every run, in the order run\n")?;
        writeln!(
            md,
            "| scenario | repeat | proxy | figures | negotiated | errors |\n| --- | ---: | --- | --- | --- | --- |"
        )?;
        for r in &self.runs {
            let figures: Vec<String> = r
                .figures
                .iter()
                .map(|(k, v)| format!("{k}={}", fmt_num(*v)))
                .collect();
            let errors = match (&r.first_error, r.errors) {
                (Some(e), n) => format!("{n} (first: {})", e.replace('|', "/")),
                (None, n) if n > 0.0 => n.to_string(),
                _ => "0".to_owned(),
            };
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {errors} |",
                r.scenario.name(),
                r.repeat + 1,
                r.proxy.name(),
                figures.join(" "),
                r.negotiated.as_deref().unwrap_or("—")
            )?;
        }
        writeln!(md, "\n## Method\n\n{METHOD}")?;
        if self.opts.scenarios.iter().any(|s| s.terminates()) {
            writeln!(md, "{METHOD_TERMINATE}")?;
        }
        if self.opts.scenarios.contains(&Scenario::HttpsKeepalive) {
            writeln!(md, "{METHOD_HTTP}")?;
        }
        if self.opts.scenarios.contains(&Scenario::WsEcho) {
            writeln!(md, "{METHOD_WS}")?;
        }
        if self.opts.scenarios.contains(&Scenario::HttpsNew) {
            writeln!(md, "{METHOD_HTTPS_NEW}")?;
        }
        if self.opts.scenarios.contains(&Scenario::H2) {
            writeln!(md, "{METHOD_H2}")?;
        }
        if self.opts.proxies.contains(&Proxy::Caddy) {
            writeln!(md, "{METHOD_CADDY}")?;
        }
        if self.opts.hook {
            writeln!(md, "{METHOD_HOOK}")?;
        }
        if self.opts.cluster {
            writeln!(md, "{METHOD_CLUSTER}")?;
        }
        Ok(md)
    }
}

const METHOD: &str = "\
* Passthrough scenarios (new-tls, bulk-*, idle, latency): all three \
proxies route TLS on SNI to the same loopback backends \
(`turnout-loadgen backend`: a rustls echo server, and a bulk server that \
reads the ClientHello record and then moves raw bytes), with the same \
routes: `echo.`, `bulk.`, `*.wild.` and 8 decoys under `bench.test`. \
Turnout: `turnout run` with those routes and the embedded default plugins \
(guard → routes → keepalive), global limits off; HAProxy: `mode tcp`, \
`tcp-request inspect-delay` + `req.ssl_sni` ACLs; nginx: `stream`, \
`ssl_preread`, `map $ssl_preread_server_name` with `hostnames`.
* Threads: each proxy gets one thread or worker process per core \
(Turnout's `workers` default, HAProxy `nbthread`, nginx `worker_processes`). \
The load generator and backends run on the same cores; that is why the \
headline is CPU time per unit of work, read from the proxy's \
`/proc/PID/stat` (utime + stime, 10 ms ticks; nginx: master + workers), \
not throughput.
* Every run starts the proxy fresh, warms it up with a few hundred TLS \
connections, then measures. CPU is read before the load and 0.5 s after \
it ends (connections finish closing).
* new-tls: each connection is a full TLS 1.3 handshake (no resumption) \
through the proxy to the backend, a 64-byte request echoed back, then \
close_notify and FIN both ways. Latency there is connect → echo at \
concurrency.
* bulk: one stream, or 64 in parallel, each opened with a real \
ClientHello (so it is routed like TLS) and then carrying unencrypted \
bytes client → backend, so that neither end pays for encryption on the \
two shared cores.
* idle: RSS (VmRSS; nginx: master + workers) with all connections open \
minus RSS before opening them, divided by the connections; each was \
opened with a full TLS handshake and one echo, so it is routed and \
connected to a backend. The count is capped by the open-file limit \
(a proxy holds two descriptors per connection).
* latency: one connection at a time, alternating direct-to-backend and \
through-the-proxy; added = the proxy's percentile minus the direct one.
";

const METHOD_TERMINATE: &str = "\
* Terminating scenarios (new-tls-terminate, idle-terminate): each proxy \
terminates TLS 1.2/1.3 on one listener with the same certificate — one \
self-signed ECDSA P-256 certificate for `*.bench.test`, written once per \
run by `turnout-loadgen cert` (rcgen) — and relays the decrypted bytes to \
the same plain TCP echo (`turnout-loadgen backend`, no TLS). Turnout: one \
route `{ match: { ports, domains: [\"*.bench.test\"], protocol: \"tcp\" }, \
action: { type: forward, targets: [plain echo], tls: { mode: terminate, \
certificate: { cert, key } } } }`, rustls with aws-lc-rs, default \
plugins, global limits off; Turnout has no setting for session tickets or \
its session cache, so it runs with its defaults (tickets on: a client \
offering one would resume). HAProxy: \
`mode tcp`, `bind … ssl crt <cert+key PEM> no-tls-tickets ssl-min-ver \
TLSv1.2 ssl-max-ver TLSv1.3`, `tune.ssl.cachesize 0`, `nbthread` = cores, \
no ALPN. nginx: `stream { server { listen … ssl; ssl_certificate; \
ssl_certificate_key; ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets \
off; ssl_session_cache off; proxy_pass <plain echo>; } }`, \
`worker_processes` = cores, no ALPN. With these settings OpenSSL 3.0 \
(HAProxy, nginx) still sends two TLS 1.3 tickets per handshake, as rustls \
(Turnout) does — the table above counts them — but `openssl s_client \
-sess_out`/`-sess_in` gets \"New\" from HAProxy and nginx (they cannot \
resume) and \"Reused\" from Turnout. Cipher suites and groups: each \
peer's defaults; the client (rustls, aws-lc-rs, default order without \
post-quantum preference) offers a single X25519 key share, so no peer \
needs a HelloRetryRequest — what was negotiated is in the table above.
* The client never resumes: its rustls session store keeps nothing, so \
it offers no PSK and no TLS 1.2 session; every handshake is checked \
(`handshake_kind`) and counted as full, full after a HelloRetryRequest, \
or resumed. It skips certificate verification (the signature is still \
made by the server) to keep client CPU low on the shared cores.
* new-tls-terminate: per connection a full TLS 1.3 handshake with the \
proxy, the proxy's TCP connection to the plain echo, a 64-byte request \
echoed back, then close_notify and FIN. Headline: proxy CPU-s per 10 000 \
such connections; goal ≤ 0.7× HAProxy's.
* idle-terminate: as idle, but each connection is terminated by the \
proxy (TLS state held by the proxy) and relayed in plaintext to the \
echo; RSS with all open minus before, per connection. Goal ≤ HAProxy's.
";

const METHOD_HTTP: &str = "\
* https-keepalive: each proxy terminates TLS as above (same certificate, \
tickets and session cache off where there is a setting, ALPN \
`http/1.1`) and proxies HTTP/1.1 to the same plain HTTP/1.1 backend \
(`turnout-loadgen backend`: a minimal keep-alive server answering every \
`GET` with a 128-byte `Content-Length` body). The client \
(`turnout-loadgen https-keepalive`) opens the keep-alive connections \
(`--conns`) and sends one `GET /` at a time on each — no pipelining — \
until the total is reached; responses are read by `Content-Length`. Each \
proxy picks the backend by `Host` (`*.bench.test`), keeps `Host` and \
sets `X-Forwarded-For`, `-Proto`, `-Host`, `-Port` (Turnout by default; \
HAProxy `option forwardfor` + `http-request set-header`; nginx \
`proxy_set_header`), and logs nothing (HAProxy no `log`, nginx \
`access_log off`, Turnout `RUST_LOG=warn`). Backend keep-alive: Turnout \
`http.upstreamMaxIdle` 128, HAProxy `http-reuse always` (idle pool \
unbounded), nginx `upstream { keepalive 128; }` with `proxy_http_version \
1.1` and `Connection \"\"`; `keepalive_requests` raised on both nginx \
sides (default 1000). \"backend connections opened\" counts the \
backend's accepts during the measured run: near zero means the pool \
held. Turnout runs its default chain (guard → routes → keepalive); the \
routes plugin's `request` hook decides every request. Headline: proxy \
CPU-s per 100 000 requests (the measured run opens its client \
connections anew: one full handshake per connection, a rounding error \
at 2 000 requests per connection); goal ≤ 0.8× HAProxy's.
* The request hook's share (Turnout): the routes plugin's \
`turnout_plugin_call_duration_seconds` sum and count from `/metrics`, \
read before and after the measured run (outside its CPU window); the \
sum is the time spent in plugin calls — the request hook once per \
request, plus a connection-level `route` call per new connection — \
divided by the proxy's CPU time in that run. A call is synchronous on \
a worker thread, so its wall time is CPU time unless the thread was \
preempted.
";

const METHOD_WS: &str = "\
* ws-echo: each proxy terminates TLS as in https-keepalive (same \
certificate, tickets and session cache off where there is a setting, ALPN \
`http/1.1`, the same `X-Forwarded-*` headers on the upgrade request, no \
logging) and passes the HTTP/1.1 `Upgrade: websocket` request to the same \
plain WebSocket echo (`turnout-loadgen backend`: a minimal RFC 6455 \
server that answers the handshake, then echoes every frame unmasked, as it \
came). After the backend's 101 each proxy relays the bytes both ways; \
HAProxy and nginx without reading frames, Turnout following frame \
headers (not payloads) for its heartbeat, which is on with its defaults \
(a ping every 30 s: none falls inside a run). Turnout: the same terminate \
route as https-keepalive (protocol http), to the WebSocket backend; it \
relays upgrades on every HTTP route. HAProxy: the https-keepalive config \
(`mode http`, `bind … ssl crt … alpn http/1.1`) plus `timeout tunnel 1h`; \
it handles the upgrade natively. nginx: the https-keepalive `http` config \
with `proxy_http_version 1.1`, `proxy_set_header Upgrade $http_upgrade; \
proxy_set_header Connection \"upgrade\";`, `proxy_read_timeout`/\
`proxy_send_timeout 1h`, no upstream keep-alive pool (an upgraded \
connection is never reused). The client (`turnout-loadgen ws-echo`) opens \
the WebSockets (one full TLS 1.3 handshake and one upgrade each, checking \
`Sec-WebSocket-Accept`), then on each sends masked 1 KiB binary messages \
— its sequence number, then a fixed pattern — with at most the window \
(`--ws-window`, default 1: each waits for its echo) awaiting their echo, \
until the total is reached; every echo is checked byte for byte and in \
order, then each WebSocket is closed (close 1000 both ways, close_notify, \
FIN). Headline: proxy CPU-s per 100 000 echoed messages (each crosses the \
proxy twice: 1 KiB decrypted client → backend and 1 KiB encrypted back); \
goal ≤ 0.8× HAProxy's (issue 15). \"backend \
connections opened\" should equal the client's WebSockets.
";

const METHOD_HTTPS_NEW: &str = "\
* https-new: the https-keepalive setup (same configs, same backend), but \
the client (`turnout-loadgen https-keepalive --close`) sends every \
request with `connection: close` on a new TLS connection — a full \
handshake (never resumed), one `GET /`, the response, the proxy's close \
— with as many connections at a time as https-keepalive keeps open. \
Headline: proxy CPU-s per 10 000 such connections; goal ≤ 0.7× HAProxy's \
(issue 17). Latencies are request → response after the handshake.
";

const METHOD_H2: &str = "\
* h2: the https-keepalive setup (same backend, same `Host` routing and \
`X-Forwarded-*` headers, same upstream pools) with h2 offered by ALPN: \
Turnout's terminate route as it is (h2 and http/1.1 by ALPN is its \
default), HAProxy `alpn h2,http/1.1`, nginx `listen … ssl http2` (1.22's \
form; `keepalive_requests` raised, which bounds h2 requests per \
connection too), Caddy `protocols [h1, h2]`. The client is `h2load` \
(nghttp2-client): `-t 1 -c 10 -m 10 -n N --connect-to=127.0.0.1:PORT \
https://echo.bench.test:PORT/`, so 10 connections with up to 10 \
concurrent streams each, SNI and `:authority` `echo.bench.test`; a run \
that negotiates anything but h2 is an error. Every proxy speaks HTTP/1.1 \
to the backend. Headline: proxy CPU-s per 100 000 requests; goal ≤ 0.8× \
HAProxy's (issue 17). \"mean µs per request\" is h2load's.
";

const METHOD_CADDY: &str = "\
* Caddy (Debian's 2.6 package, the Go proxy): in the HTTP scenarios \
only (https-keepalive, https-new, h2, ws-echo) — Debian's build has no \
layer-4 proxying, so it has no passthrough or TCP-termination column. A \
JSON config (`caddy run --config`): admin API off, log level WARN and no \
access log, the same certificate loaded from files, `session_tickets \
disabled`, `protocol_min tls1.2`, `automatic_https disable`, protocols \
`h1` (`h1`, `h2` in h2; never h3), one route matching `Host` \
`*.bench.test` to `reverse_proxy` with the backend as upstream, an idle \
pool of 128 (`keep_alive max_idle_conns[_per_host]`), its default \
`X-Forwarded-For`/`-Proto`/`-Host` plus `X-Forwarded-Port` set. \
WebSocket upgrades are handled by `reverse_proxy` natively. Go's \
`GOMAXPROCS` defaults to the cores, as the others' thread counts.
";

const METHOD_HOOK: &str = "\
* `--hook` (issue 17's request-hook scenario): `turnout-hook` is \
`turnout` plus a plugins directory holding `hdr.wasm` — the embedded \
`routes` plugin written out by `turnout-loadgen plugin` — placed first by \
`plugins.order`, configured with one plaintext HTTP route on another \
port that declares one request header (`match.headers` \
`x-bench-variant`). Each request on the bench's port thus gets one more \
`request` call, handed that header in its slot, that passes (wrong port) \
before `routes` forwards. The section above gives turnout-hook's CPU per \
request minus turnout's, per repeat.
";

const METHOD_CLUSTER: &str = "\
* `--cluster` (issue 18): a `redis-server` started by the bench on a free \
loopback port (`--bind 127.0.0.1 --save \"\" --appendonly no`, in the \
temp dir, stopped at the end) serves every run of the proxy \
`turnout-cluster`: Turnout with exactly `turnout`'s config plus \
`\"cluster\": { \"redis\": \"redis://127.0.0.1:PORT/0\", \"prefix\": \
\"turnout:\", \"instance\": \"bench-1\" }` (the store's defaults otherwise: \
25 ms call timeout, 2 s heartbeat). A cluster store alone puts nothing on \
a connection's path; a connection rate limit does, so with `--cluster` \
both Turnouts run with `connectionRateLimitPerMinute` 100000000, far \
above any load here, and no connection is ever refused for it: \
`turnout` counts each new connection in its local window, \
`turnout-cluster` awaits one Lua script in Redis (the client IP's \
sliding 60 s window, `{prefix}rate:{ip}`) after accepting the connection \
and before the plugins' `admit`. That round trip is the only difference \
between the two. All connections come from 127.0.0.1, so every script \
updates the same key (at most ~60 per-second fields). Redis runs on the \
same two cores as everything else; its CPU is not in the proxy's CPU \
column, the time the connection waits for it is in the latencies. The \
two Turnouts run side by side in every repeat, in the rotated order.
";
