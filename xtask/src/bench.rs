//! `cargo xtask bench`: Turnout against HAProxy and nginx, same machine,
//! same backends, same loads, in one run.
//!
//! 1. Builds `turnout` and `turnout-loadgen` (benches crate) in release.
//! 2. Installs HAProxy, nginx and nginx's stream module from Debian's
//!    packages if missing (`--no-install` refuses instead).
//! 3. Starts the loopback backends (`turnout-loadgen backend`: TLS echo and
//!    bulk servers), then for every scenario, repeat and proxy — the proxy
//!    order rotating each repeat — starts that proxy fresh with equivalent
//!    SNI routing, warms it up, runs the load (`turnout-loadgen <mode>`)
//!    and reads the proxy's own CPU time (utime + stime) and RSS from
//!    `/proc` (nginx: master + workers), then stops it.
//! 4. Writes `benches/results/YYYY-MM-DD-HHMM.md` (UTC): medians, min–max,
//!    ratios to HAProxy from the same repeat, machine facts, every run.
//!
//! Fairness: each proxy gets as many threads/processes as there are cores
//! (Turnout: tokio's default, one worker per core; HAProxy: `nbthread`;
//! nginx: `worker_processes`), none logs per connection (Turnout runs with
//! `RUST_LOG=warn`; HAProxy has no `log` line; nginx's stream access log
//! is off by default), and all share the cores with the load generator.
//! Turnout splices bulk transfers by default; HAProxy only when told
//! (`--haproxy-splice` forces it on, for a comparison with its best).
//!
//! Everything started is stopped on success, on error (guards' `Drop`) and
//! when this process dies (children run under `setpriv --pdeathsig TERM`;
//! the backend also exits when its stdin closes).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::{cargo, root, run, step};

const USAGE: &str = "cargo xtask bench [--quick] [--scenario NAME[,NAME…]] [--proxies turnout,haproxy,nginx] [--repeats N] [--no-install] [--keep] [--no-build] [--haproxy-splice]
  scenarios: new-tls, bulk (= bulk-1 + bulk-64), bulk-1, bulk-64, idle, latency (default: all)
  --quick      tiny loads, 1 repeat: checks the harness, measures nothing worth keeping
  --repeats N  repeats per scenario and proxy (default 3, the minimum for a median and spread)
  --keep       keep the temporary directory (configs, proxy logs)
  --no-build   use the release binaries already built (turnout, turnout-loadgen)
  --haproxy-splice  HAProxy with `option splice-request` and `option splice-response`
               (its kernel splicing forced on; nginx's stream module has none)";

/// Names the routes answer to; the loads use `echo.` and `bulk.`.
const ECHO: &str = "echo.bench.test";
const BULK: &str = "bulk.bench.test";
const WILD: &str = "*.wild.bench.test";
/// Routes that are never hit, so that every proxy's table has some size.
const DECOYS: usize = 8;
/// Nothing listens there.
const NOWHERE: &str = "127.0.0.1:9";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proxy {
    Turnout,
    Haproxy,
    Nginx,
}

impl Proxy {
    const ALL: [Proxy; 3] = [Proxy::Turnout, Proxy::Haproxy, Proxy::Nginx];

    fn name(self) -> &'static str {
        match self {
            Proxy::Turnout => "turnout",
            Proxy::Haproxy => "haproxy",
            Proxy::Nginx => "nginx",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    NewTls,
    Bulk1,
    Bulk64,
    Idle,
    Latency,
}

/// A scenario's headline figure and the goal for its ratio to HAProxy.
struct Headline {
    key: &'static str,
    label: &'static str,
    goal: f64,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::NewTls,
        Scenario::Bulk1,
        Scenario::Bulk64,
        Scenario::Idle,
        Scenario::Latency,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::NewTls => "new-tls",
            Scenario::Bulk1 => "bulk-1",
            Scenario::Bulk64 => "bulk-64",
            Scenario::Idle => "idle",
            Scenario::Latency => "latency",
        }
    }

    fn headline(self) -> Headline {
        let (key, label, goal) = match self {
            Scenario::NewTls => ("cpu_s_per_10k", "proxy CPU-s per 10 000 conns", 0.8),
            Scenario::Bulk1 | Scenario::Bulk64 => ("cpu_s_per_gb", "proxy CPU-s per GB", 0.7),
            Scenario::Idle => ("rss_kib_per_conn", "proxy RSS KiB per idle conn", 1.0),
            Scenario::Latency => ("added_p99_us", "added p99 µs per new conn", 1.0),
        };
        Headline { key, label, goal }
    }

    /// Figures reported beside the headline: (key, label).
    fn side(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Scenario::NewTls => &[
                ("conns_per_s", "conns/s"),
                ("p50_us", "p50 µs connect→echo"),
                ("p99_us", "p99 µs connect→echo"),
            ],
            Scenario::Bulk1 | Scenario::Bulk64 => &[("gb_per_s", "GB/s")],
            Scenario::Idle => &[
                ("rss_mib_with", "proxy RSS MiB with all open"),
                (
                    "retained_kib_per_conn",
                    "RSS KiB per conn still held 1 s after close",
                ),
                ("idle_cpu_ms_per_s", "proxy CPU ms/s while they idle"),
                ("empty_cpu_ms_per_s", "proxy CPU ms/s with no connections"),
                ("open_secs", "seconds to open them"),
            ],
            Scenario::Latency => &[
                ("added_p50_us", "added p50 µs"),
                ("p50_us", "p50 µs through proxy"),
                ("p99_us", "p99 µs through proxy"),
                ("direct_p50_us", "p50 µs direct"),
                ("direct_p99_us", "p99 µs direct"),
            ],
        }
    }
}

struct Options {
    /// As given, for the results file.
    args: String,
    quick: bool,
    scenarios: Vec<Scenario>,
    proxies: Vec<Proxy>,
    repeats: usize,
    install: bool,
    keep: bool,
    build: bool,
    /// Force HAProxy's splice on.
    haproxy_splice: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            args: args.join(" "),
            quick: false,
            scenarios: Vec::new(),
            proxies: Proxy::ALL.to_vec(),
            repeats: 0,
            install: true,
            keep: false,
            build: true,
            haproxy_splice: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| anyhow!("{a} needs a value\n\n{USAGE}"))
            };
            match a.as_str() {
                "--quick" => o.quick = true,
                "--no-install" => o.install = false,
                "--keep" => o.keep = true,
                "--no-build" => o.build = false,
                "--haproxy-splice" => o.haproxy_splice = true,
                "--repeats" => o.repeats = value()?.parse().context("--repeats")?,
                "--scenario" => {
                    for name in value()?.split(',') {
                        o.scenarios.extend(match name {
                            "new-tls" | "tls" => vec![Scenario::NewTls],
                            "bulk" => vec![Scenario::Bulk1, Scenario::Bulk64],
                            "bulk-1" => vec![Scenario::Bulk1],
                            "bulk-64" => vec![Scenario::Bulk64],
                            "idle" => vec![Scenario::Idle],
                            "latency" => vec![Scenario::Latency],
                            _ => bail!("unknown scenario {name:?}\n\n{USAGE}"),
                        });
                    }
                }
                "--proxies" => {
                    o.proxies = value()?
                        .split(',')
                        .map(|n| {
                            Proxy::ALL
                                .into_iter()
                                .find(|p| p.name() == n)
                                .ok_or_else(|| anyhow!("unknown proxy {n:?}\n\n{USAGE}"))
                        })
                        .collect::<Result<_>>()?;
                }
                "-h" | "--help" => {
                    eprintln!("{USAGE}");
                    std::process::exit(0);
                }
                _ => bail!("unknown option {a:?}\n\n{USAGE}"),
            }
        }
        if o.scenarios.is_empty() {
            o.scenarios = Scenario::ALL.to_vec();
        }
        if o.repeats == 0 {
            o.repeats = if o.quick { 1 } else { 3 };
        }
        Ok(o)
    }
}

/// How much load: `--quick` checks that everything works, the full one
/// runs long enough for 10 ms CPU ticks to be a rounding error.
struct Load {
    warmup: usize,
    tls_conns: usize,
    concurrency: usize,
    bulk_total: u64,
    idle: usize,
    latency: usize,
}

impl Load {
    fn new(quick: bool, idle_cap: usize) -> Load {
        let l = if quick {
            Load {
                warmup: 50,
                tls_conns: 300,
                concurrency: 8,
                bulk_total: 64 << 20,
                idle: 200,
                latency: 50,
            }
        } else {
            Load {
                warmup: 500,
                tls_conns: 20_000,
                concurrency: 32,
                bulk_total: 4 << 30,
                idle: 10_000,
                latency: 5_000,
            }
        };
        Load {
            idle: l.idle.min(idle_cap),
            ..l
        }
    }
}

pub(crate) fn bench(args: &[String]) -> Result<()> {
    let opts = Options::parse(args)?;
    if opts.build {
        step("building turnout and turnout-loadgen (release)");
        run(cargo().args([
            "build",
            "--release",
            "-p",
            "turnout",
            "-p",
            "turnout-benches",
            "--bins",
        ]))?;
    }
    let bin = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("release");
    if opts.proxies.contains(&Proxy::Haproxy) || opts.proxies.contains(&Proxy::Nginx) {
        ensure_peers(opts.install)?;
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
    let stamp = output(Command::new("date").args(["-u", "+%Y-%m-%d-%H%M"]))?;
    let results = root().join("benches/results");
    std::fs::create_dir_all(&results)?;
    let suffix = if opts.quick { "-quick" } else { "" };
    let path = results.join(format!("{}{suffix}.md", stamp.trim()));
    std::fs::write(&path, &markdown)?;
    eprintln!("\n{markdown}\nwritten to {}", path.display());
    Ok(())
}

/// Installs what is missing from Debian's packages.
fn ensure_peers(install: bool) -> Result<()> {
    let have = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let stream = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so").is_file()
        || output(Command::new("nginx").arg("-V")).is_ok_and(|v| v.contains("--with-stream "));
    if have("haproxy", "-v") && have("nginx", "-v") && stream {
        return Ok(());
    }
    if !install {
        bail!(
            "haproxy, nginx or nginx's stream module is missing (apt-get install haproxy nginx libnginx-mod-stream)"
        );
    }
    step("installing haproxy, nginx and nginx's stream module (Debian packages)");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let pkgs = ["install", "-y", "haproxy", "nginx", "libnginx-mod-stream"];
    // A stale package index is the usual reason for a failed install.
    let installed = apt(&pkgs) || (apt(&["update"]) && apt(&pkgs));
    if !installed {
        bail!("apt-get install haproxy nginx libnginx-mod-stream failed (root needed)");
    }
    Ok(())
}

/// Runs `cmd`, returns its stdout and stderr.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The process's soft and hard open-file limits.
fn nofile_limits() -> (usize, usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files"));
    let mut nums = line
        .into_iter()
        .flat_map(|l| l.split_whitespace())
        .filter_map(|w| w.parse().ok());
    let soft = nums.next().unwrap_or(1024);
    (soft, nums.next().unwrap_or(soft))
}

// ---------------------------------------------------------------- processes

/// A command that gets SIGTERM when this process dies (for any reason).
fn command(program: &Path, args: &[String]) -> Command {
    if Path::new("/usr/bin/setpriv").is_file() {
        let mut c = Command::new("/usr/bin/setpriv");
        c.args(["--pdeathsig", "TERM", "--"])
            .arg(program)
            .args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

/// Lines of a child's stdout, read on a thread so waits can time out.
struct Lines(mpsc::Receiver<String>);

impl Lines {
    fn new(out: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The next line starting with `word`.
    fn expect(&self, word: &str, within: Duration) -> Result<String> {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) if line.split_whitespace().next() == Some(word) => return Ok(line),
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => bail!("no {word:?} line within {within:?}"),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("exited before printing {word:?}")
                }
            }
        }
    }
}

/// A child we started, stopped on drop: SIGTERM, then SIGKILL for it and
/// any children of its own (nginx workers) still there after 10 s.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Option<Lines>,
    log: Option<PathBuf>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: Option<PathBuf>) -> Result<Proc> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        match &log {
            Some(path) => cmd.stderr(std::fs::File::create(path)?),
            None => cmd.stderr(Stdio::inherit()),
        };
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        let lines = child.stdout.take().map(Lines::new);
        Ok(Proc {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            log,
        })
    }

    /// Its pid and its children's (nginx: master and workers).
    fn pids(&self) -> Vec<u32> {
        let pid = self.child.id();
        let mut all = vec![pid];
        all.extend(children_of(pid));
        all
    }

    fn log_tail(&self) -> String {
        let text = self
            .log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn stop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let kids = children_of(self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            eprintln!("    {} did not stop on SIGTERM; killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for k in kids {
            if Path::new(&format!("/proc/{k}")).exists() {
                let _ = Command::new("kill")
                    .args(["-KILL", &k.to_string()])
                    .status();
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fields of /proc/PID/stat after the command name (field 3 is index 0).
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| stat_fields(p).get(1).and_then(|f| f.parse::<u32>().ok()) == Some(pid))
        .collect()
}

/// utime + stime of these processes, in seconds.
fn cpu_secs(pids: &[u32], ticks_per_s: f64) -> f64 {
    pids.iter()
        .map(|&p| {
            let f = stat_fields(p);
            let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            tick(11) + tick(12)
        })
        .sum::<f64>()
        / ticks_per_s
}

/// VmRSS of these processes, in KiB.
fn rss_kib(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .sum()
}

// ------------------------------------------------------------ the bench run

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
        step("starting the backends (turnout-loadgen backend)");
        let backend = Proc::spawn(
            "backend",
            command(
                &bin.join("turnout-loadgen"),
                &["backend".into(), "--until-stdin-closes".into()],
            ),
            Some(dir.join("backend.log")),
        )?;
        let ready = backend
            .lines
            .as_ref()
            .context("backend stdout")?
            .expect("ready", Duration::from_secs(30))
            .with_context(|| format!("backend did not start: {}", backend.log_tail()))?;
        let r = parse_report(&ready);
        let addr = |k: &str| -> Result<SocketAddr> {
            r.get(k)
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| anyhow!("backend said {ready:?}"))
        };
        let (echo, bulk) = (addr("tls")?, addr("bulk")?);
        Ok(Bench {
            opts,
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            load: Load::new(opts.quick, idle_cap),
            nofile,
            ticks,
            _backend: backend,
            echo,
            bulk,
            runs: Vec::new(),
            started: Instant::now(),
        })
    }

    fn run_all(&mut self) -> Result<String> {
        for &scenario in &self.opts.scenarios {
            for repeat in 0..self.opts.repeats {
                let mut order = self.opts.proxies.clone();
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
        let (p, addr) = self.start_proxy(proxy)?;
        let pids = p.pids();
        let warm = self.tls_conns(addr, self.load.warmup)?;
        if num(&warm, "ok") < 1.0 {
            bail!(
                "{} routes nothing: {:?}\n{}",
                proxy.name(),
                warm.get("first_error"),
                p.log_tail()
            );
        }
        let settle = || std::thread::sleep(Duration::from_millis(500));
        settle();
        let cpu = || cpu_secs(&pids, self.ticks);
        let mut f = Figures::new();
        let report = match scenario {
            Scenario::NewTls => {
                let before = cpu();
                let r = self.tls_conns(addr, self.load.tls_conns)?;
                settle();
                let used = cpu() - before;
                f.insert("cpu_s_per_10k".into(), used / num(&r, "ok") * 1e4);
                for k in ["conns_per_s", "p50_us", "p99_us"] {
                    f.insert(k.into(), num(&r, k));
                }
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
                let before = cpu();
                let r = self.loadgen(&args)?;
                settle();
                let used = cpu() - before;
                f.insert("cpu_s_per_gb".into(), used / (num(&r, "bytes") / 1e9));
                f.insert("gb_per_s".into(), num(&r, "gb_per_s"));
                r
            }
            Scenario::Idle => self.idle(&p, addr, &mut f)?,
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
        drop(p);
        Ok(RunResult {
            scenario,
            proxy,
            repeat,
            figures: f,
            errors: num(&report, "errors"),
            first_error: report.get("first_error").cloned(),
        })
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

    fn start_proxy(&self, proxy: Proxy) -> Result<(Proc, SocketAddr)> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stem = format!("{}-{port}", proxy.name());
        let log = self.dir.join(format!("{stem}.log"));
        let nproc = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut p = match proxy {
            Proxy::Turnout => {
                let cfg = self.dir.join(format!("{stem}.json"));
                std::fs::write(&cfg, self.turnout_config(port))?;
                let mut cmd = command(
                    &self.bin.join("turnout"),
                    &["run".into(), "-c".into(), cfg.display().to_string()],
                );
                cmd.env("RUST_LOG", "warn");
                Proc::spawn("turnout", cmd, Some(log))?
            }
            Proxy::Haproxy => {
                let cfg = self.dir.join(format!("{stem}.cfg"));
                std::fs::write(&cfg, self.haproxy_config(port, nproc))?;
                let cmd = command(
                    Path::new("haproxy"),
                    &["-db".into(), "-f".into(), cfg.display().to_string()],
                );
                Proc::spawn("haproxy", cmd, Some(log))?
            }
            Proxy::Nginx => {
                let prefix = self.dir.join(&stem);
                std::fs::create_dir_all(&prefix)?;
                let cfg = prefix.join("nginx.conf");
                std::fs::write(&cfg, self.nginx_config(port, nproc, &prefix))?;
                let cmd = command(
                    Path::new("nginx"),
                    &[
                        "-p".into(),
                        prefix.display().to_string(),
                        "-c".into(),
                        cfg.display().to_string(),
                        "-e".into(),
                        log.display().to_string(),
                    ],
                );
                // Its stderr and its error log (`-e`) share the file.
                Proc::spawn("nginx", cmd, Some(log))?
            }
        };
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!("{} exited ({status}):\n{}", proxy.name(), p.log_tail());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                // nginx binds in the master; give the workers a moment.
                std::thread::sleep(Duration::from_millis(200));
                return Ok((p, addr));
            }
            if Instant::now() > end {
                bail!(
                    "{} does not listen on {addr}:\n{}",
                    proxy.name(),
                    p.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn turnout_config(&self, port: u16) -> String {
        let route = |name: &str, domain: &str, to: &str| {
            let (host, tport) = to.rsplit_once(':').unwrap_or((to, "9"));
            format!(
                r#"    {{ "name": "{name}", "match": {{ "ports": {port}, "domains": ["{domain}"] }},
      "action": {{ "type": "forward", "targets": [{{ "host": "{host}", "port": {tport} }}], "tls": {{ "mode": "passthrough" }} }} }}"#
            )
        };
        let (echo, bulk) = (self.echo.to_string(), self.bulk.to_string());
        let mut routes = vec![
            route("echo", ECHO, &echo),
            route("bulk", BULK, &bulk),
            route("wild", WILD, &echo),
        ];
        routes.extend(
            (0..DECOYS)
                .map(|i| route(&format!("decoy{i}"), &format!("svc{i}.bench.test"), NOWHERE)),
        );
        format!(
            "{{\n  \"routes\": [\n{}\n  ],\n  \"bind\": [\"127.0.0.1\"],\n  \"maxConnectionsPerIP\": 0,\n  \"connectionRateLimitPerMinute\": 0,\n  \"maxConnections\": 0,\n  \"gracefulShutdownTimeout\": 1000\n}}\n",
            routes.join(",\n")
        )
    }

    fn haproxy_config(&self, port: u16, nproc: usize) -> String {
        // Two descriptors per connection (and per pipe, when splicing)
        // must fit the open-file limit.
        const MAXPIPES: usize = 1024;
        let mut maxconn = self.nofile.0.saturating_sub(100) / 2;
        let mut pipes = String::new();
        if self.opts.haproxy_splice {
            maxconn = maxconn.saturating_sub(MAXPIPES);
            pipes = format!("  maxpipes {MAXPIPES}\n");
        }
        let decoys: Vec<String> = (0..DECOYS).map(|i| format!("svc{i}.bench.test")).collect();
        format!(
            "global\n  nbthread {nproc}\n  maxconn {maxconn}\n{pipes}\
             defaults\n  mode tcp\n  maxconn {maxconn}\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n{splice}\
             frontend tls_in\n  bind 127.0.0.1:{port}\n  tcp-request inspect-delay 5s\n  \
             tcp-request content accept if {{ req.ssl_hello_type 1 }}\n  \
             use_backend echo if {{ req.ssl_sni -i {ECHO} }}\n  \
             use_backend bulk if {{ req.ssl_sni -i {BULK} }}\n  \
             use_backend echo if {{ req.ssl_sni -m end -i {} }}\n  \
             use_backend nowhere if {{ req.ssl_sni -i {} }}\n\
             backend echo\n  server s {}\n\
             backend bulk\n  server s {}\n\
             backend nowhere\n  server s {NOWHERE}\n",
            WILD.trim_start_matches('*'),
            decoys.join(" "),
            self.echo,
            self.bulk,
            splice = if self.opts.haproxy_splice {
                "  option splice-request\n  option splice-response\n"
            } else {
                ""
            },
        )
    }

    fn nginx_config(&self, port: u16, nproc: usize, prefix: &Path) -> String {
        let module = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so");
        let load = if module.is_file() {
            format!("load_module {};\n", module.display())
        } else {
            String::new()
        };
        let decoys: String = (0..DECOYS)
            .map(|i| format!("    svc{i}.bench.test {NOWHERE};\n"))
            .collect();
        let nofile = self.nofile.0;
        format!(
            "{load}worker_processes {nproc};\nworker_rlimit_nofile {nofile};\ndaemon off;\nmaster_process on;\n\
             pid {}/nginx.pid;\nevents {{ worker_connections {}; }}\n\
             stream {{\n  map $ssl_preread_server_name $upstream {{\n    hostnames;\n    default {NOWHERE};\n    \
             {ECHO} {};\n    {BULK} {};\n    {WILD} {};\n{decoys}  }}\n  \
             server {{\n    listen 127.0.0.1:{port};\n    ssl_preread on;\n    preread_timeout 5s;\n    \
             proxy_pass $upstream;\n    proxy_connect_timeout 5s;\n    proxy_timeout 1h;\n  }}\n}}\n",
            prefix.display(),
            nofile.saturating_sub(100),
            self.echo,
            self.bulk,
            self.echo
        )
    }
}

// ------------------------------------------------------------------ report

fn fmt_num(v: f64) -> String {
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

fn cell(v: Vec<f64>) -> String {
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

    fn value(&self, s: Scenario, p: Proxy, repeat: usize, key: &str) -> f64 {
        self.runs
            .iter()
            .find(|x| x.scenario == s && x.proxy == p && x.repeat == repeat)
            .and_then(|x| x.figures.get(key).copied())
            .unwrap_or(f64::NAN)
    }

    /// Per repeat, `p` against HAProxy: a ratio, or for latency (where
    /// HAProxy's added time can be ~0) a difference.
    fn versus_haproxy(&self, s: Scenario, p: Proxy, key: &str) -> Vec<f64> {
        (0..self.opts.repeats)
            .map(|r| {
                let (x, h) = (
                    self.value(s, p, r, key),
                    self.value(s, Proxy::Haproxy, r, key),
                );
                if s == Scenario::Latency { x - h } else { x / h }
            })
            .collect()
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
            ("rustc", sh("rustc", &["-V"])),
        ]
    }

    fn markdown(&self) -> Result<String> {
        let mut md = String::new();
        let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
        let proxies = &self.opts.proxies;
        let has_haproxy = proxies.contains(&Proxy::Haproxy);
        writeln!(md, "# Turnout vs HAProxy vs nginx — {}\n", date.trim())?;
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
            "* load: new-tls {} conns at concurrency {}; bulk {} MiB in total per run; idle {} conns; latency {} conns per path; warm-up {} conns per proxy start\n",
            l.tls_conns,
            l.concurrency,
            l.bulk_total >> 20,
            l.idle,
            l.latency,
            l.warmup
        )?;

        writeln!(md, "## Headline: the proxy's own cost\n")?;
        writeln!(
            md,
            "Median (min–max) over the repeats. \"vs haproxy\" is computed per repeat against HAProxy's run in the same repeat — a ratio (lower is better for Turnout), for latency a difference in µs — then the median (min–max) of those.\n"
        )?;
        let mut head = String::from("| scenario | figure |");
        let mut rule = String::from("| --- | --- |");
        for p in proxies {
            head += &format!(" {} |", p.name());
            rule += " ---: |";
        }
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

        writeln!(
            md,
            "\n## Beside them: throughput and latency (noisy here)\n"
        )?;
        let mut head = String::from("| scenario | figure |");
        let mut rule = String::from("| --- | --- |");
        for p in proxies {
            head += &format!(" {} |", p.name());
            rule += " ---: |";
        }
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

        writeln!(md, "\n## Every run, in the order run\n")?;
        writeln!(
            md,
            "| scenario | repeat | proxy | figures | errors |\n| --- | ---: | --- | --- | --- |"
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
                "| {} | {} | {} | {} | {errors} |",
                r.scenario.name(),
                r.repeat + 1,
                r.proxy.name(),
                figures.join(" ")
            )?;
        }
        writeln!(md, "\n## Method\n\n{METHOD}")?;
        Ok(md)
    }
}

const METHOD: &str = "\
* All three proxies route TLS on SNI to the same loopback backends \
(`turnout-loadgen backend`: a rustls echo server, and a bulk server that \
reads the ClientHello record and then moves raw bytes), with the same \
routes: `echo.`, `bulk.`, `*.wild.` and 8 decoys under `bench.test`. \
Turnout: `turnout run` with those routes and the embedded default plugins \
(guard → routes → keepalive), global limits off; HAProxy: `mode tcp`, \
`tcp-request inspect-delay` + `req.ssl_sni` ACLs; nginx: `stream`, \
`ssl_preread`, `map $ssl_preread_server_name` with `hostnames`.
* Threads: each proxy gets one thread or worker process per core \
(Turnout's tokio default, HAProxy `nbthread`, nginx `worker_processes`). \
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
