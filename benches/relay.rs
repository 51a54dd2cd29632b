//! Relay throughput and CPU per GiB: 1 GiB through `turnout::proxy::relay`
//! on loopback, against the same transfer with no proxy and, when
//! `haproxy` is installed, through HAProxy (TCP mode) in the same run.
//! Decides whether zero-copy `splice(2)` is worth its complexity.
//!
//! `cargo bench -p turnout-benches --bench relay`

#![allow(clippy::print_stdout)] // a benchmark's output is its report

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use turnout::proxy::relay::{IdleVerdict, Timers, Traffic, relay};

const TOTAL: usize = 1 << 30;

fn cpu_time() -> Duration {
    cpu_time_of("self")
}

fn cpu_time_of(pid: &str) -> Duration {
    // utime + stime, from /proc (clock ticks of 10 ms).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

async fn sink() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn proxy_to(target: std::net::SocketAddr) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut backend = TcpStream::connect(target).await.unwrap();
                let timers = Timers {
                    inactivity: Some(Duration::from_secs(60)),
                    max_lifetime: None,
                    half_open_grace: Duration::from_secs(30),
                    stuck: None,
                };
                let traffic = Traffic::default();
                relay(
                    &mut client,
                    &mut backend,
                    timers,
                    &traffic,
                    tokio::time::Instant::now(),
                    |_| IdleVerdict::Close,
                    std::pin::pin!(std::future::pending()),
                )
                .await;
            });
        }
    });
    addr
}

async fn send(to: std::net::SocketAddr) -> (Duration, Duration) {
    let chunk = vec![0x5au8; 256 * 1024];
    let cpu = cpu_time();
    let start = Instant::now();
    let mut s = TcpStream::connect(to).await.unwrap();
    for _ in 0..TOTAL / chunk.len() {
        s.write_all(&chunk).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    (start.elapsed(), cpu_time().saturating_sub(cpu))
}

/// HAProxy in TCP mode in front of `target`, if it is installed; killed on drop.
struct Haproxy {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: std::path::PathBuf,
}

impl Haproxy {
    fn start(target: std::net::SocketAddr) -> Option<Haproxy> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = std::env::temp_dir().join(format!("turnout-relay-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nlisten relay\n  bind 127.0.0.1:{port}\n  server sink {target}\n"
            ),
        )
        .ok()?;
        let child = std::process::Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Some(Haproxy {
                    child,
                    addr,
                    _dir: dir,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn cpu(&self) -> Duration {
        cpu_time_of(&self.child.id().to_string())
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let target = sink().await;
        let proxied = proxy_to(target).await;
        let haproxy = Haproxy::start(target);
        if haproxy.is_none() {
            println!("haproxy not installed: no peer comparison (apt-get install haproxy)");
        }
        for round in 1..=3 {
            let (direct, direct_cpu) = send(target).await;
            let (through, through_cpu) = send(proxied).await;
            let gib = |d: Duration| TOTAL as f64 / (1u64 << 30) as f64 / d.as_secs_f64();
            println!(
                "round {round}: direct {:.2} GiB/s (process CPU {:.2} s/GiB) | through relay {:.2} GiB/s (process CPU {:.2} s/GiB, relay adds {:.2} s/GiB)",
                gib(direct),
                direct_cpu.as_secs_f64(),
                gib(through),
                through_cpu.as_secs_f64(),
                (through_cpu.saturating_sub(direct_cpu)).as_secs_f64()
            );
            if let Some(h) = &haproxy {
                let before = h.cpu();
                let (peer, bench_cpu) = send(h.addr).await;
                // HAProxy's own CPU, read from its /proc entry; the bench
                // process's share is the client and sink, like `direct`.
                let peer_cpu = h.cpu().saturating_sub(before);
                let ours = through_cpu.saturating_sub(direct_cpu);
                println!(
                    "round {round}: haproxy {:.2} GiB/s, haproxy CPU {:.2} s/GiB (client+sink {:.2}) | turnout relay / haproxy CPU per GiB = {:.2}",
                    gib(peer),
                    peer_cpu.as_secs_f64(),
                    bench_cpu.as_secs_f64(),
                    ours.as_secs_f64() / peer_cpu.as_secs_f64().max(0.001)
                );
            }
        }
    });
}
