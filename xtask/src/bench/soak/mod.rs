//! `cargo xtask soak [--minutes N] [--no-build]`: Turnout (release) under
//! a mixed load for N minutes (default 30) while it is reconfigured every
//! minute, then checked for what a long run gets wrong — not CI (it takes
//! the minutes it is given).
//!
//! The load, all at once, each kind looping in bounded batches:
//! new passthrough TLS connections; long-lived passthrough connections
//! (held two minutes, then replaced); HTTP/1.1 keep-alive requests and
//! WebSocket echoes on terminated TLS; HTTP/2 requests (`h2load`, from
//! Debian's `nghttp2-client`); clients that vanish mid-request (half a
//! request head, half a ClientHello, then a close); requests to a backend
//! that resets every connection (502 expected) and to one that never
//! answers (504 expected).
//!
//! Every minute: SIGHUP, the plugin file replaced (a new version loads),
//! the certificate rewritten (the watcher reloads it).
//!
//! Pass: no failure where success was expected, every connection, request
//! and WebSocket counter back to 0 at the end, RSS flat after warm-up (the
//! slope over the second half), no file-descriptor growth, the plugin
//! instances bounded. The report goes to
//! `benches/results/YYYY-MM-DD-HHMM-soak.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

mod loads;
mod setup;

use loads::{
    Tally, expect_status, h2load_batch, loadgen_batch, resetting_backend, stalling_backend,
    vanish_once,
};
use setup::{config, install_plugin};
pub(super) use setup::{get, rotate_cert};

use super::harness::{amount_and_build, build_release_and_plugins, start_backend, write_report};
use super::procs::{Proc, command, free_port, output, rss_kib};
use crate::{root, step};

/// A sample of the proxy's state.
#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    rss_mib: f64,
    fds: usize,
    active: f64,
    instances: f64,
}

pub(crate) fn soak(args: &[String]) -> Result<()> {
    let usage = "cargo xtask soak [--minutes N] [--no-build]";
    let (minutes, build) = amount_and_build(args, "--minutes", 30, usage)?;
    if build {
        build_release_and_plugins()?;
    }
    ensure_h2load();
    let bin = root().join("target/release");
    let dir = std::env::temp_dir().join(format!("turnout-soak-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("plugins"))?;
    let outcome = Soak::start(&bin, &dir)?.run(Duration::from_secs(minutes * 60));
    eprintln!("    configs and logs in {}", dir.display());
    let (markdown, passed) = outcome?;
    let path = write_report("-soak", &markdown)?;
    if !passed {
        bail!("the soak failed: see {}", path.display());
    }
    Ok(())
}

fn ensure_h2load() {
    if Command::new("h2load").arg("--version").output().is_ok() {
        return;
    }
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", "nghttp2-client"])
        .stdout(Stdio::null())
        .status();
}

struct Soak {
    bin: PathBuf,
    dir: PathBuf,
    _backend: Proc,
    turnout: Proc,
    admin: SocketAddr,
    /// Passthrough, terminated (SNI), terminated (no SNI: h2load), plain HTTP.
    ports: [u16; 4],
    stop: Arc<AtomicBool>,
}

const ECHO: &str = "echo.bench.test";
const WEB: &str = "web.bench.test";
const WS: &str = "ws.bench.test";

impl Soak {
    fn start(bin: &Path, dir: &Path) -> Result<Soak> {
        let (backend, backends) = start_backend(bin, dir)?;
        let addr = |k: &str| backends.addr(k);
        let (tls_echo, http, ws) = (addr("tls")?, addr("http")?, addr("ws")?);
        let (reset, stall) = (resetting_backend()?, stalling_backend()?);
        rotate_cert(bin, dir)?;
        install_plugin(dir)?;
        let ports = [free_port()?, free_port()?, free_port()?, free_port()?];
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let config = config(dir, ports, admin, [tls_echo, http, ws, reset, stall]);
        std::fs::write(dir.join("turnout.json"), config)?;
        step("starting turnout");
        let mut cmd = command(
            &bin.join("turnout"),
            &[
                "run".into(),
                "-c".into(),
                dir.join("turnout.json").display().to_string(),
            ],
        );
        cmd.env("RUST_LOG", "warn");
        let turnout = Proc::spawn("turnout", cmd, Some(dir.join("turnout.log")))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(admin, "/readyz").is_err() {
            if Instant::now() > deadline {
                bail!("turnout did not become ready: {}", turnout.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Soak {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            _backend: backend,
            turnout,
            admin,
            ports,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    fn run(mut self, length: Duration) -> Result<(String, bool)> {
        step(&format!("soaking for {} min", length.as_secs() / 60));
        let started = Instant::now();
        // Before any load: the descriptors an idle proxy holds.
        let pid0 = self.turnout.child.id();
        let idle_fds = self.sample(pid0, started)?.fds;
        let loads = self.spawn_loads();
        let pid = self.turnout.child.id();
        let mut samples = Vec::new();
        let mut next_change = started + Duration::from_secs(60);
        let mut changes = 0u32;
        while started.elapsed() < length {
            std::thread::sleep(Duration::from_secs(5));
            if let Ok(s) = self.sample(pid, started) {
                samples.push(s);
            }
            if Instant::now() >= next_change {
                self.reconfigure(pid)?;
                changes += 1;
                next_change += Duration::from_secs(60);
                eprintln!(
                    "    {:>4.0} s: reconfigured ({changes}); last sample {:?}",
                    started.elapsed().as_secs_f64(),
                    samples.last()
                );
            }
            if let Ok(Some(status)) = self.turnout.child.try_wait() {
                bail!(
                    "turnout exited during the soak ({status}): {}",
                    self.turnout.log_tail()
                );
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        step("stopping the load and waiting for every counter to reach 0");
        let tallies: Vec<(&str, Arc<Tally>)> = loads
            .into_iter()
            .map(|(name, tally, handle)| {
                let _ = handle.join();
                (name, tally)
            })
            .collect();
        let drained = self.wait_idle(Duration::from_secs(60));
        let end = self.sample(pid, started)?;
        samples.push(end);
        Ok(self.report(length, &samples, &tallies, drained, changes, idle_fds))
    }

    fn spawn_loads(&self) -> Vec<(&'static str, Arc<Tally>, std::thread::JoinHandle<()>)> {
        let [pass, term, h2, plain] = self.ports;
        let lg = self.bin.join("turnout-loadgen");
        let target = |port: u16, sni: &str| {
            vec![
                "--target".to_owned(),
                format!("127.0.0.1:{port}"),
                "--sni".to_owned(),
                sni.to_owned(),
            ]
        };
        let with = |mode: &str, t: Vec<String>, rest: &[&str]| {
            let mut a = vec![mode.to_owned()];
            a.extend(t);
            a.extend(rest.iter().map(|s| (*s).to_owned()));
            a
        };
        let loadgen_kinds: Vec<(&'static str, Vec<String>, &'static str)> = vec![
            (
                "passthrough, new connections",
                with(
                    "tls-conns",
                    target(pass, ECHO),
                    &["--conns", "3000", "--concurrency", "8", "--max-secs", "60"],
                ),
                "ok",
            ),
            (
                "passthrough, held 2 min",
                with(
                    "idle",
                    target(pass, ECHO),
                    &[
                        "--conns",
                        "200",
                        "--concurrency",
                        "16",
                        "--hold-secs",
                        "120",
                    ],
                ),
                "ok",
            ),
            (
                "HTTPS/1.1 keep-alive",
                with(
                    "https-keepalive",
                    target(term, WEB),
                    &["--conns", "8", "--requests", "30000", "--max-secs", "60"],
                ),
                "ok",
            ),
            (
                "WebSocket echo",
                with(
                    "ws-echo",
                    target(term, WS),
                    &["--conns", "8", "--messages", "30000", "--max-secs", "60"],
                ),
                "ok",
            ),
        ];
        let mut out = Vec::new();
        for (name, args, ok_key) in loadgen_kinds {
            let tally = Arc::new(Tally::default());
            let (t, stop, lg) = (tally.clone(), self.stop.clone(), lg.clone());
            out.push((
                name,
                tally,
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        loadgen_batch(&lg, &args, ok_key, &t);
                    }
                }),
            ));
        }
        let h2_tally = Arc::new(Tally::default());
        let (t, stop) = (h2_tally.clone(), self.stop.clone());
        out.push((
            "HTTP/2 (h2load)",
            h2_tally,
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    h2load_batch(h2, &t);
                }
            }),
        ));
        for (name, host, want) in [
            ("backend that resets (502 expected)", "reset.test", 502),
            ("backend that stalls (504 expected)", "stall.test", 504),
        ] {
            let tally = Arc::new(Tally::default());
            let (t, stop) = (tally.clone(), self.stop.clone());
            out.push((
                name,
                tally,
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        expect_status(plain, host, want, &t);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }),
            ));
        }
        let vanish = Arc::new(Tally::default());
        let (t, stop) = (vanish.clone(), self.stop.clone());
        out.push((
            "clients that vanish mid-request",
            vanish,
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    vanish_once(plain, term, &t);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }),
        ));
        out
    }

    fn reconfigure(&self, pid: u32) -> Result<()> {
        rotate_cert(&self.bin, &self.dir)?;
        install_plugin(&self.dir)?;
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()?;
        if !ok.success() {
            bail!("kill -HUP {pid} failed");
        }
        Ok(())
    }

    fn sample(&self, pid: u32, started: Instant) -> Result<Sample> {
        let stats = get(self.admin, "/api/stats")?;
        let plugins = get(self.admin, "/api/plugins")?;
        let active = json_number(&stats, "\"active\"").unwrap_or(f64::NAN);
        let instances = plugins
            .match_indices("\"instancesLive\":")
            .filter_map(|(i, k)| {
                plugins[i + k.len()..]
                    .trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .sum();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
        Ok(Sample {
            secs: started.elapsed().as_secs_f64(),
            rss_mib: rss_kib(&[pid]) / 1024.0,
            fds,
            active,
            instances,
        })
    }

    /// Waits until the proxy reports no connection, request or WebSocket.
    fn wait_idle(&self, within: Duration) -> Option<String> {
        let end = Instant::now() + within;
        loop {
            let stats = get(self.admin, "/api/stats").unwrap_or_default();
            let metrics = get(self.admin, "/metrics").unwrap_or_default();
            let left: Vec<String> = [
                "turnout_connections_active",
                "turnout_websockets",
                "turnout_http_requests_in_flight",
                "turnout_upstream_connections_open",
            ]
            .iter()
            .filter_map(|name| {
                let v = metrics
                    .lines()
                    .find(|l| l.starts_with(&format!("{name} ")))?;
                let n: f64 = v.split_whitespace().nth(1)?.parse().ok()?;
                (n != 0.0).then(|| v.to_owned())
            })
            .collect();
            let active = json_number(&stats, "\"active\"").unwrap_or(f64::NAN);
            if left.is_empty() && active == 0.0 {
                return Some(format!("connections.active 0; {}", "every gauge 0"));
            }
            if Instant::now() > end {
                eprintln!("    still open after {within:?}: active={active} {left:?}");
                return None;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn report(
        &self,
        length: Duration,
        samples: &[Sample],
        tallies: &[(&str, Arc<Tally>)],
        drained: Option<String>,
        changes: u32,
        idle_fds: usize,
    ) -> (String, bool) {
        // Under load only: the last sample is taken after it stopped.
        let during = &samples[..samples.len().saturating_sub(1)];
        let half = during
            .iter()
            .filter(|s| s.secs >= length.as_secs_f64() / 2.0)
            .copied()
            .collect::<Vec<_>>();
        let rss_slope = slope(&half, |s| s.rss_mib) * 60.0;
        let last = samples.last().copied();
        let fd_growth = last.map_or(0, |s| s.fds as i64 - idle_fds as i64);
        let max_instances = samples.iter().map(|s| s.instances).fold(0.0, f64::max);
        let failed: u64 = tallies
            .iter()
            .map(|(_, t)| t.failed.load(Ordering::Relaxed))
            .sum();
        // Flat: under 1 MiB a minute over the second half (noise on this
        // machine is a few MiB either way).
        let rss_flat = rss_slope.abs() < 1.0;
        // Descriptors not tied to a connection (all but two per open
        // connection: client and backend) must not grow under load. The
        // count after the drain may exceed the idle one by what the
        // bounded pools keep (splice pipes per worker, idle upstream
        // connections until `upstreamIdleTimeout`): reported, not judged.
        let extra_slope = slope(&half, |s: &Sample| s.fds as f64 - 2.0 * s.active) * 60.0;
        let fds_ok = extra_slope.abs() < 0.5;
        let instances_ok = max_instances <= 64.0;
        let passed = failed == 0 && drained.is_some() && rss_flat && fds_ok && instances_ok;
        let mut md = format!(
            "# Soak, {} minutes — {}\n\n`cargo xtask soak --minutes {}` (release build, `RUST_LOG=warn`), on {} ({} CPUs).\n\n",
            length.as_secs() / 60,
            if passed { "passed" } else { "FAILED" },
            length.as_secs() / 60,
            output(Command::new("uname").arg("-srm"))
                .unwrap_or_default()
                .trim(),
            std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get),
        );
        md.push_str("Method: all loads at once, each looping in bounded batches (see `xtask/src/bench/soak/`); every minute a SIGHUP, the plugin file `maintenance.wasm` copied in again (a new version loads), the certificate rewritten. Samples every 5 s from `/proc` and the admin API.\n\n");
        md.push_str("| check | result |\n| --- | --- |\n");
        md.push_str(&format!(
            "| failures where success was expected | {failed} |\n"
        ));
        md.push_str(&format!(
            "| every counter back to 0 at the end | {} |\n",
            drained.as_deref().unwrap_or("NO")
        ));
        md.push_str(&format!(
            "| RSS slope over the second half | {rss_slope:+.3} MiB/min ({}) |\n",
            if rss_flat { "flat" } else { "NOT flat" }
        ));
        md.push_str(&format!(
            "| descriptors beyond two per connection, slope over the second half | {extra_slope:+.3} per min ({}) |\n| file descriptors, after the drain − before the load (pools kept) | {fd_growth:+} |\n",
            if fds_ok { "flat" } else { "NOT flat" }
        ));
        md.push_str(&format!(
            "| plugin instances live, most seen | {max_instances} |\n"
        ));
        md.push_str(&format!(
            "| reconfigures (SIGHUP + plugin + certificate) | {changes} |\n\n"
        ));
        md.push_str("| load | batches | ok | failed | first failure |\n| --- | ---: | ---: | ---: | --- |\n");
        for (name, t) in tallies {
            md.push_str(&format!(
                "| {name} | {} | {} | {} | {} |\n",
                t.batches.load(Ordering::Relaxed),
                t.ok.load(Ordering::Relaxed),
                t.failed.load(Ordering::Relaxed),
                t.first
                    .lock()
                    .map(|f| f.clone().unwrap_or_default())
                    .unwrap_or_default(),
            ));
        }
        md.push_str("\n| minute | RSS MiB | fds | connections | plugin instances |\n| ---: | ---: | ---: | ---: | ---: |\n");
        let mut shown = -1i64;
        for s in samples {
            let minute = (s.secs / 60.0) as i64;
            if minute > shown || std::ptr::eq(s, samples.last().unwrap_or(s)) {
                shown = minute;
                md.push_str(&format!(
                    "| {:.1} | {:.1} | {} | {} | {} |\n",
                    s.secs / 60.0,
                    s.rss_mib,
                    s.fds,
                    s.active,
                    s.instances
                ));
            }
        }
        (md, passed)
    }
}

/// Least-squares slope of `y` over seconds.
fn slope(samples: &[Sample], y: impl Fn(&Sample) -> f64) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = samples.iter().map(|s| s.secs).sum::<f64>() / n;
    let my = samples.iter().map(&y).sum::<f64>() / n;
    let cov: f64 = samples.iter().map(|s| (s.secs - mx) * (y(s) - my)).sum();
    let var: f64 = samples.iter().map(|s| (s.secs - mx).powi(2)).sum();
    if var == 0.0 { 0.0 } else { cov / var }
}

fn json_number(text: &str, key: &str) -> Option<f64> {
    let at = text.find(key)? + key.len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    rest.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?
        .parse()
        .ok()
}
