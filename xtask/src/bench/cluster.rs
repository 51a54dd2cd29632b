//! `--cluster`: what the cluster store (issue 18) adds per connection.
//!
//! The proxy `turnout-cluster` is `turnout` with a `cluster` object
//! pointing at a `redis-server` this bench starts (loopback, no
//! persistence, in the bench's temp dir, stopped with the bench). A cluster
//! store alone puts nothing on the connection path; a connection rate limit
//! does — each new connection then awaits one Lua script in Redis (its
//! client IP's window) before `admit` — so with `--cluster` both Turnouts
//! run with [`RATE_LIMIT`], far above any load here: the plain one counts
//! locally, the cluster one in Redis, and nothing else differs.
//!
//! The store falls back to local counting, silently for the load, when a
//! call fails or takes longer than its timeout; so the Redis server is
//! asked, around each measured run, how many scripts it ran and how long
//! they took (`INFO commandstats`): about one per connection means the
//! round trips really were in the numbers.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::procs::{Proc, command, free_port, output};
use super::{Bench, Proxy};
use crate::step;

/// `connectionRateLimitPerMinute` of both Turnouts with `--cluster`.
pub(super) const RATE_LIMIT: u32 = 100_000_000;

const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// The bench's Redis, stopped on drop.
pub(super) struct Redis {
    _proc: Proc,
    pub(super) addr: SocketAddr,
    pub(super) version: String,
}

impl Redis {
    /// Starts `redis-server` on a free loopback port, with no snapshots and
    /// no append-only file, and waits (at most 10 s) until it answers PING.
    pub(super) fn start(dir: &Path) -> Result<Redis> {
        step("starting redis-server for turnout-cluster (--cluster)");
        if !Path::new(REDIS_SERVER).is_file() {
            bail!("--cluster needs {REDIS_SERVER} (apt-get install redis-server)");
        }
        let version = output(std::process::Command::new(REDIS_SERVER).arg("--version"))?
            .trim()
            .to_owned();
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let data = dir.join("redis");
        std::fs::create_dir_all(&data)?;
        let log = data.join("redis.log");
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &data.display().to_string(),
            "--logfile",
            &log.display().to_string(),
        ]
        .map(str::to_owned)
        .into();
        let mut proc = Proc::spawn(
            "redis-server",
            command(Path::new(REDIS_SERVER), &args),
            Some(data.join("stderr.log")),
        )?;
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = proc.child.try_wait() {
                bail!(
                    "redis-server exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if query(addr, "PING").is_ok_and(|r| r == "PONG") {
                return Ok(Redis {
                    _proc: proc,
                    addr,
                    version,
                });
            }
            if Instant::now() > end {
                bail!("redis-server does not answer on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lua scripts run so far (`EVAL` + `EVALSHA`) and the server's time
    /// in them, in µs.
    pub(super) fn scripts(&self) -> Result<(f64, f64)> {
        let info = query(self.addr, "INFO commandstats")?;
        let (mut calls, mut usec) = (0.0, 0.0);
        for line in info.lines() {
            let Some(stats) = ["cmdstat_eval:", "cmdstat_evalsha:"]
                .iter()
                .find_map(|p| line.strip_prefix(p))
            else {
                continue;
            };
            for (k, v) in stats.split(',').filter_map(|kv| kv.split_once('=')) {
                match k {
                    "calls" => calls += v.parse::<f64>().unwrap_or(0.0),
                    "usec" => usec += v.parse::<f64>().unwrap_or(0.0),
                    _ => {}
                }
            }
        }
        Ok((calls, usec))
    }
}

/// One inline command; its reply as text (a simple or bulk string).
fn query(addr: SocketAddr, cmd: &str) -> Result<String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    (&s).write_all(format!("{cmd}\r\n").as_bytes())?;
    let mut r = BufReader::new(s);
    let mut head = String::new();
    r.read_line(&mut head)?;
    let head = head.trim_end();
    if let Some(simple) = head.strip_prefix('+') {
        return Ok(simple.to_owned());
    }
    let len: usize = head
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("redis answered {cmd:?} with {head:?}"))?;
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

impl Bench<'_> {
    /// A Turnout config for `proxy`: as written for `turnout` without
    /// `--cluster`; with it, the rate limit raised to [`RATE_LIMIT`], and
    /// for `turnout-cluster` the `cluster` object too.
    pub(super) fn turnout_variant(&self, proxy: Proxy, config: String) -> Result<String> {
        let Some(redis) = &self.redis else {
            return Ok(config);
        };
        const OFF: &str = "\"connectionRateLimitPerMinute\": 0,";
        if config.matches(OFF).count() != 1 {
            bail!("the Turnout config no longer has {OFF} once:\n{config}");
        }
        let mut keys = format!("\"connectionRateLimitPerMinute\": {RATE_LIMIT},");
        if proxy == Proxy::TurnoutCluster {
            keys += &format!(
                "\n  \"cluster\": {{ \"redis\": \"redis://{}/0\", \"prefix\": \"turnout:\", \"instance\": \"bench-1\" }},",
                redis.addr
            );
        }
        Ok(config.replacen(OFF, &keys, 1))
    }

    /// Around a measured run of `turnout-cluster`: Redis's script count
    /// and time so far (`None` for the other proxies).
    pub(super) fn redis_scripts(&self, proxy: Proxy) -> Result<Option<(f64, f64)>> {
        match &self.redis {
            Some(redis) if proxy == Proxy::TurnoutCluster => redis.scripts().map(Some),
            _ => Ok(None),
        }
    }
}
