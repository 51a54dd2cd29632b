//! `cargo xtask bench`: Turnout against HAProxy, nginx and Caddy (the
//! HTTP scenarios only, see [`caddy`]), same machine, same backends, same
//! loads, in one run.
//!
//! 1. Builds `turnout` and `turnout-loadgen` (benches crate) in release.
//! 2. Installs HAProxy, nginx and nginx's stream module from Debian's
//!    packages if missing (`--no-install` refuses instead).
//! 3. Starts the loopback backends (`turnout-loadgen backend`: TLS echo,
//!    plain echo, bulk, plain HTTP/1.1 and plain WebSocket echo servers)
//!    and, for the `*-terminate`, `https-keepalive` and `ws-echo` scenarios,
//!    writes one ECDSA P-256 certificate for `*.bench.test`
//!    (`turnout-loadgen cert`) that every proxy serves; then for every
//!    scenario, repeat and proxy — the proxy order rotating each repeat —
//!    starts that proxy fresh with equivalent SNI routing (passthrough) or
//!    equivalent TLS termination to the plain echo (`*-terminate`) or
//!    HTTPS proxying to the HTTP server (`https-keepalive`, see [`http`])
//!    or WebSocket upgrades to the WebSocket echo (`ws-echo`, see [`ws`]),
//!    warms it up, runs the load (`turnout-loadgen <mode>`)
//!    and reads the proxy's own CPU time (utime + stime) and RSS from
//!    `/proc` (nginx: master + workers), then stops it.
//! 4. Writes `benches/results/YYYY-MM-DD-HHMM.md` (UTC): medians, min–max,
//!    ratios to HAProxy from the same repeat, machine facts, every run.
//!
//! Fairness: each proxy gets as many threads/processes as there are cores
//! (Turnout: its `workers` default, one per core; HAProxy: `nbthread`;
//! nginx: `worker_processes`), none logs per connection (Turnout runs with
//! `RUST_LOG=warn`; HAProxy has no `log` line; nginx's stream access log
//! is off by default, its http one is turned off), and all share the cores with the load generator.
//! Turnout splices bulk transfers by default; HAProxy only when told
//! (`--haproxy-splice` forces it on, for a comparison with its best).
//!
//! `--cluster` adds `turnout-cluster`, Turnout with its cluster store on a
//! Redis the bench starts, run beside `turnout` in every repeat (see
//! [`cluster`]); `--hook` adds `turnout-hook`, Turnout with one more
//! request plugin, in the HTTP scenarios (see [`hook`]). `h2` runs
//! `h2load` (see [`h2`]).
//!
//! Everything started is stopped on success, on error (guards' `Drop`) and
//! when this process dies (children run under `setpriv --pdeathsig TERM`;
//! the backend also exits when its stdin closes).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::{root, step};
pub(crate) use abuse::abuse;
pub(crate) use soak::soak;

mod abuse;
mod caddy;
mod cluster;
mod h2;
mod harness;
mod hook;
mod http;
mod launch;
mod method;
mod options;
mod peers;
mod procs;
mod report;
mod scenario;
mod soak;
mod ws;

use options::{Load, Options};
use peers::ensure_peers;
use procs::{Proc, command, cpu_secs, nofile_limits, output, rss_kib};
use report::fmt_num;
use scenario::{Front, Scenario};

/// Names the routes answer to; the loads use `echo.` and `bulk.`.
const ECHO: &str = "echo.bench.test";
const BULK: &str = "bulk.bench.test";
const WILD: &str = "*.wild.bench.test";
/// Routes that are never hit, so that every proxy's table has some size.
const DECOYS: usize = 8;
/// Nothing listens there.
const NOWHERE: &str = "127.0.0.1:9";
/// How long after a load ends the proxy's CPU is read again: its
/// connections finish closing, and that work is the load's.
const SETTLE: Duration = Duration::from_millis(500);
/// The name in the certificate the terminating proxies serve.
const CERT_NAME: &str = "*.bench.test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proxy {
    Turnout,
    /// Turnout with the cluster store (`--cluster` only).
    TurnoutCluster,
    /// Turnout with one more request plugin (`--hook` only).
    TurnoutHook,
    Haproxy,
    Nginx,
    Caddy,
}

impl Proxy {
    /// The default set; `--cluster` adds [`Proxy::TurnoutCluster`] and
    /// `--hook` [`Proxy::TurnoutHook`].
    const ALL: [Proxy; 4] = [Proxy::Turnout, Proxy::Haproxy, Proxy::Nginx, Proxy::Caddy];

    fn name(self) -> &'static str {
        match self {
            Proxy::Turnout => "turnout",
            Proxy::TurnoutCluster => "turnout-cluster",
            Proxy::TurnoutHook => "turnout-hook",
            Proxy::Haproxy => "haproxy",
            Proxy::Nginx => "nginx",
            Proxy::Caddy => "caddy",
        }
    }

    /// Whether it runs scenarios of this kind: Debian's Caddy has no
    /// layer-4 proxying (that is the `layer4` plugin, not packaged), and
    /// the request hook exists on HTTP only.
    fn runs(self, front: Front) -> bool {
        let http = matches!(front, Front::TerminateHttp | Front::TerminateH2);
        match self {
            Proxy::Caddy => http || front == Front::TerminateWs,
            Proxy::TurnoutHook => http,
            _ => true,
        }
    }
}

pub(crate) fn bench(args: &[String]) -> Result<()> {
    let opts = Options::parse(args)?;
    if opts.build {
        harness::build_release()?;
    }
    let bin = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("release");
    let peers: Vec<Proxy> = opts
        .proxies
        .iter()
        .copied()
        .filter(|p| matches!(p, Proxy::Haproxy | Proxy::Nginx | Proxy::Caddy))
        .filter(|p| opts.scenarios.iter().any(|s| p.runs(s.front())))
        .collect();
    ensure_peers(&peers, opts.install)?;
    if opts.scenarios.contains(&Scenario::H2) {
        h2::ensure_h2load(opts.install)?;
    }
    let dir = std::env::temp_dir().join(format!("turnout-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let outcome = Bench::start(&opts, &bin, &dir).and_then(|mut b| b.run_all());
    match &outcome {
        Ok(_) if !opts.keep => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ => eprintln!("    configs and proxy logs kept in {}", dir.display()),
    }
    let markdown = outcome?;
    harness::write_report(if opts.quick { "-quick" } else { "" }, &markdown)?;
    Ok(())
}

type Figures = BTreeMap<String, f64>;

/// A `key=value` result line from the load generator.
fn parse_report(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn num(r: &BTreeMap<String, String>, key: &str) -> f64 {
    r.get(key).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

struct RunResult {
    scenario: Scenario,
    proxy: Proxy,
    repeat: usize,
    figures: Figures,
    /// What the client's handshakes negotiated (`version/suite/group/alpn`).
    negotiated: Option<String>,
    errors: f64,
    first_error: Option<String>,
}

struct Bench<'a> {
    opts: &'a Options,
    bin: PathBuf,
    dir: PathBuf,
    load: Load,
    nofile: (usize, usize),
    ticks: f64,
    /// Held so that it stops (on drop) when the bench ends.
    _backend: Proc,
    echo: SocketAddr,
    bulk: SocketAddr,
    /// The plain echo, behind the terminating proxies.
    plain: SocketAddr,
    /// The plain HTTP/1.1 server, behind the HTTP proxies.
    http: SocketAddr,
    /// The plain WebSocket echo, behind the proxies in `ws-echo`.
    ws: SocketAddr,
    /// The Redis of `turnout-cluster`, with `--cluster`.
    redis: Option<cluster::Redis>,
    /// The plugins directory of `turnout-hook`, with `--hook`.
    hook_plugins: Option<PathBuf>,
    /// The running Turnout's admin API, in the HTTP scenario.
    admin: std::cell::Cell<Option<SocketAddr>>,
    /// The directory with `cert.pem`, `key.pem`, `bundle.pem`, when a
    /// scenario terminates.
    cert: Option<PathBuf>,
    runs: Vec<RunResult>,
    started: Instant,
}

impl<'a> Bench<'a> {
    fn start(opts: &'a Options, bin: &Path, dir: &Path) -> Result<Bench<'a>> {
        let nofile = nofile_limits();
        // A proxy holds two descriptors per relayed connection.
        let idle_cap = nofile.0.saturating_sub(200) / 2 / 100 * 100;
        let ticks = output(Command::new("getconf").arg("CLK_TCK"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(100.0);
        let (backend, backends) = harness::start_backend(bin, dir)?;
        let addr = |k: &str| backends.addr(k);
        let (echo, bulk, plain, http, ws) = (
            addr("tls")?,
            addr("bulk")?,
            addr("plain")?,
            addr("http")?,
            addr("ws")?,
        );
        let redis = opts
            .cluster
            .then(|| cluster::Redis::start(dir))
            .transpose()?;
        let hook_plugins = opts
            .hook
            .then(|| hook::write_plugins(bin, dir))
            .transpose()?;
        let cert = if opts.scenarios.iter().any(|s| s.terminates()) {
            step(&format!(
                "writing an ECDSA P-256 certificate for {CERT_NAME} (turnout-loadgen cert)"
            ));
            let cert = dir.join("cert");
            let mut cmd = command(
                &bin.join("turnout-loadgen"),
                &[
                    "cert".into(),
                    "--out".into(),
                    cert.display().to_string(),
                    "--name".into(),
                    CERT_NAME.into(),
                ],
            );
            output(&mut cmd)?;
            Some(cert)
        } else {
            None
        };
        Ok(Bench {
            opts,
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            load: Load::new(opts, idle_cap),
            nofile,
            ticks,
            _backend: backend,
            echo,
            bulk,
            plain,
            http,
            ws,
            redis,
            hook_plugins,
            admin: std::cell::Cell::new(None),
            cert,
            runs: Vec::new(),
            started: Instant::now(),
        })
    }

    fn run_all(&mut self) -> Result<String> {
        for &scenario in &self.opts.scenarios {
            for repeat in 0..self.opts.repeats {
                let mut order = self.opts.proxies.clone();
                order.retain(|p| p.runs(scenario.front()));
                let n = order.len();
                order.rotate_left(repeat % n.max(1));
                for proxy in order {
                    step(&format!(
                        "{} · repeat {}/{} · {}",
                        scenario.name(),
                        repeat + 1,
                        self.opts.repeats,
                        proxy.name()
                    ));
                    let r = self.measure(scenario, proxy, repeat)?;
                    eprintln!(
                        "    {}",
                        r.figures
                            .iter()
                            .map(|(k, v)| format!("{k}={}", fmt_num(*v)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                    if r.errors > 0.0 {
                        eprintln!(
                            "    {} errors; first: {}",
                            r.errors,
                            r.first_error.as_deref().unwrap_or("?")
                        );
                    }
                    self.runs.push(r);
                }
            }
        }
        self.markdown()
    }

    fn loadgen(&self, args: &[String]) -> Result<BTreeMap<String, String>> {
        let mut cmd = command(&self.bin.join("turnout-loadgen"), args);
        let out = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.starts_with("result "))
            .ok_or_else(|| anyhow!("{cmd:?} printed no result ({})", out.status))?;
        Ok(parse_report(line))
    }

    fn target(addr: SocketAddr, sni: &str) -> Vec<String> {
        vec![
            "--target".into(),
            addr.to_string(),
            "--sni".into(),
            sni.into(),
        ]
    }

    fn tls_conns(&self, to: SocketAddr, conns: usize) -> Result<BTreeMap<String, String>> {
        let mut args = vec!["tls-conns".to_owned()];
        args.extend(Self::target(to, ECHO));
        args.extend([
            "--conns".into(),
            conns.to_string(),
            "--concurrency".into(),
            self.load.concurrency.to_string(),
            "--max-secs".into(),
            "600".into(),
        ]);
        self.loadgen(&args)
    }

    fn measure(&self, scenario: Scenario, proxy: Proxy, repeat: usize) -> Result<RunResult> {
        let (p, addr) = self.start_proxy(proxy, scenario.front())?;
        let warm = match scenario.front() {
            Front::TerminateHttp => self.https_requests(addr, self.load.http_warmup, false)?,
            Front::TerminateH2 => self.h2_requests(addr, self.load.h2_requests / 10)?,
            Front::TerminateWs => self.ws_messages(addr, self.load.ws_warmup)?,
            Front::Passthrough | Front::TerminateTcp => self.tls_conns(addr, self.load.warmup)?,
        };
        if num(&warm, "ok") < 1.0 {
            bail!(
                "{} routes nothing: {:?}\n{}",
                proxy.name(),
                warm.get("first_error"),
                p.log_tail()
            );
        }
        // The warm-up's connections finish closing outside the measured window.
        std::thread::sleep(SETTLE);
        let mut f = Figures::new();
        let scripts_before = self.redis_scripts(proxy)?;
        let report = match scenario {
            Scenario::NewTls | Scenario::NewTlsTerminate => {
                let (r, used) =
                    self.cpu_during(&p, || self.tls_conns(addr, self.load.tls_conns))?;
                f.insert("cpu_s_per_10k".into(), used / num(&r, "ok") * 1e4);
                for k in [
                    "conns_per_s",
                    "p50_us",
                    "p99_us",
                    "resumed",
                    "tickets_per_conn",
                ] {
                    f.insert(k.into(), num(&r, k));
                }
                let handshakes = num(&r, "full") + num(&r, "hrr") + num(&r, "resumed");
                f.insert("full_pct".into(), num(&r, "full") / handshakes * 100.0);
                r
            }
            Scenario::Bulk1 | Scenario::Bulk64 => {
                let streams: u64 = if scenario == Scenario::Bulk1 { 1 } else { 64 };
                let mut args = vec!["bulk".to_owned()];
                args.extend(Self::target(addr, BULK));
                args.extend([
                    "--streams".into(),
                    streams.to_string(),
                    "--bytes".into(),
                    (self.load.bulk_total / streams).to_string(),
                ]);
                let (r, used) = self.cpu_during(&p, || self.loadgen(&args))?;
                f.insert("cpu_s_per_gb".into(), used / (num(&r, "bytes") / 1e9));
                f.insert("gb_per_s".into(), num(&r, "gb_per_s"));
                r
            }
            Scenario::Idle | Scenario::IdleTerminate => {
                let r = self.idle(&p, addr, &mut f)?;
                for k in ["resumed", "tickets_per_conn"] {
                    f.insert(k.into(), num(&r, k));
                }
                r
            }
            Scenario::HttpsKeepalive => self.https_keepalive(proxy, &p, addr, &mut f)?,
            Scenario::HttpsNew => self.https_new(&p, addr, &mut f)?,
            Scenario::H2 => self.h2(proxy, &p, addr, &mut f)?,
            Scenario::WsEcho => self.ws_echo(proxy, &p, addr, &mut f)?,
            Scenario::Latency => {
                let mut args = vec!["latency".to_owned()];
                args.extend(Self::target(addr, ECHO));
                args.extend([
                    "--direct".into(),
                    self.echo.to_string(),
                    "--samples".into(),
                    self.load.latency.to_string(),
                    "--max-secs".into(),
                    "600".into(),
                ]);
                let r = self.loadgen(&args)?;
                for k in [
                    "added_p99_us",
                    "added_p50_us",
                    "p50_us",
                    "p99_us",
                    "direct_p50_us",
                    "direct_p99_us",
                ] {
                    f.insert(k.into(), num(&r, k));
                }
                r
            }
        };
        if let (Some((calls0, usec0)), Some((calls1, usec1))) =
            (scripts_before, self.redis_scripts(proxy)?)
        {
            // HTTP and WebSocket runs count requests or messages as `ok`.
            let conns = f
                .get("client_conns")
                .copied()
                .unwrap_or_else(|| num(&report, "ok"));
            f.insert("redis_scripts_per_conn".into(), (calls1 - calls0) / conns);
            f.insert(
                "redis_us_per_script".into(),
                (usec1 - usec0) / (calls1 - calls0),
            );
        }
        drop(p);
        Ok(RunResult {
            scenario,
            proxy,
            repeat,
            figures: f,
            negotiated: report.get("negotiated").cloned(),
            errors: num(&report, "errors"),
            first_error: report.get("first_error").cloned(),
        })
    }

    /// Runs `load` and returns its result with the CPU seconds the proxy
    /// `p` used from just before it until [`SETTLE`] after it.
    fn cpu_during<T>(&self, p: &Proc, load: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
        let pids = p.pids();
        let before = cpu_secs(&pids, self.ticks);
        let r = load()?;
        std::thread::sleep(SETTLE);
        Ok((r, cpu_secs(&pids, self.ticks) - before))
    }

    /// Opens the idle connections, reads RSS while they are held, releases.
    fn idle(
        &self,
        p: &Proc,
        addr: SocketAddr,
        f: &mut Figures,
    ) -> Result<BTreeMap<String, String>> {
        let pids = p.pids();
        // Long enough for 10 ms ticks to resolve a few ms per second.
        let window = Duration::from_secs(5);
        let cpu_a = cpu_secs(&pids, self.ticks);
        std::thread::sleep(window);
        let empty_cpu = cpu_secs(&pids, self.ticks) - cpu_a;
        let rss_before = rss_kib(&pids);
        let mut args = vec!["idle".to_owned()];
        args.extend(Self::target(addr, ECHO));
        args.extend([
            "--conns".into(),
            self.load.idle.to_string(),
            "--hold-secs".into(),
            "900".into(),
            "--release-on-stdin".into(),
        ]);
        let mut client = Proc::spawn(
            "loadgen idle",
            command(&self.bin.join("turnout-loadgen"), &args),
            None,
        )?;
        let lines = client.lines.take().context("loadgen stdout")?;
        let open = parse_report(&lines.expect("open", Duration::from_secs(600))?);
        let ok = num(&open, "ok");
        std::thread::sleep(Duration::from_secs(2));
        let rss_with = rss_kib(&pids);
        let cpu_a = cpu_secs(&pids, self.ticks);
        std::thread::sleep(window);
        let idle_cpu = cpu_secs(&pids, self.ticks) - cpu_a;
        if let Some(mut stdin) = client.stdin.take() {
            let _ = stdin.write_all(b"release\n");
        }
        let done = parse_report(&lines.expect("result", Duration::from_secs(120))?);
        drop(client);
        std::thread::sleep(Duration::from_secs(1));
        let rss_after = rss_kib(&pids);
        f.insert("rss_kib_per_conn".into(), (rss_with - rss_before) / ok);
        f.insert("rss_mib_with".into(), rss_with / 1024.0);
        f.insert(
            "retained_kib_per_conn".into(),
            (rss_after - rss_before) / ok,
        );
        f.insert(
            "idle_cpu_ms_per_s".into(),
            idle_cpu * 1000.0 / window.as_secs_f64(),
        );
        f.insert(
            "empty_cpu_ms_per_s".into(),
            empty_cpu * 1000.0 / window.as_secs_f64(),
        );
        f.insert("open_secs".into(), num(&open, "open_secs"));
        f.insert("conns".into(), ok);
        let mut report = done;
        report.insert("ok".into(), ok.to_string());
        Ok(report)
    }
}
