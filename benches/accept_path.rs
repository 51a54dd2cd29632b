//! The whole accept-to-connect path, in-process: a client connects to
//! Turnout (started as `turnout run` starts it, with the embedded default
//! plugins `guard` → `routes` → `keepalive`), sends a real rustls
//! ClientHello, and the time stops when the backend has accepted, read the
//! hello and answered one byte. The same exchange straight to the backend
//! is the baseline; the difference is what the proxy adds per connection
//! (accept, admit, peek, route, policy, connect, relay setup).
//!
//! Criterion reports means; a second pass prints p50/p99 one by one.
//!
//! `cargo bench -p turnout-benches --bench accept_path`

#![allow(clippy::print_stdout)] // a benchmark's output is its report

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use turnout_tests::app::{Ports, RunningApp};

const SNI: &str = "svc5.bench.test";

/// Reads the hello, answers one byte, waits for the client to close.
async fn backend(hello_len: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut hello = vec![0u8; hello_len];
                if s.read_exact(&mut hello).await.is_err() || s.write_all(b"k").await.is_err() {
                    return;
                }
                let mut rest = [0u8; 64];
                while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// Ten SNI routes like a small deployment; `svc5` goes to the backend.
fn config(port: u16, backend: SocketAddr) -> String {
    let routes: Vec<String> = (0..10)
        .map(|i| {
            let to = if i == 5 { backend.port() } else { 9 };
            format!(
                r#"{{"name":"r{i}","match":{{"ports":{port},"domains":["svc{i}.bench.test"]}},"action":{{"type":"forward","targets":[{{"host":"127.0.0.1","port":{to}}}],"tls":{{"mode":"passthrough"}}}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"routes":[{}],"bind":["127.0.0.1"],"maxConnectionsPerIP":0,"connectionRateLimitPerMinute":0,"maxConnections":0,"gracefulShutdownTimeout":1000}}"#,
        routes.join(",")
    )
}

async fn one(to: SocketAddr, hello: &[u8]) {
    let mut s = TcpStream::connect(to).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(hello).await.unwrap();
    let mut k = [0u8; 1];
    s.read_exact(&mut k).await.expect("backend answers");
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hello: Arc<[u8]> = turnout_benches::loadgen::tls::client_hello(SNI)
        .unwrap()
        .into();
    let (direct, proxied, app) = rt.block_on(async {
        let direct = backend(hello.len()).await;
        let mut ports = Ports::default();
        let port = ports.take();
        let app = RunningApp::start_with(&config(port, direct), ports).await;
        (direct, SocketAddr::from(([127, 0, 0, 1], port)), app)
    });
    let paths = [("direct", direct), ("turnout-default-plugins", proxied)];

    let mut g = c.benchmark_group("accept_path");
    g.measurement_time(Duration::from_secs(5));
    for (name, to) in paths {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        one(to, &hello).await;
                    }
                    t.elapsed()
                })
            })
        });
    }
    g.finish();

    for (name, to) in paths {
        let mut samples: Vec<Duration> = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..3000 {
                let t = Instant::now();
                one(to, &hello).await;
                v.push(t.elapsed());
            }
            v
        });
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        println!(
            "accept_path/{name:<28} p50 {:>9.2?}  p99 {:>9.2?}  (n = {}, one by one)",
            at(0.5),
            at(0.99),
            samples.len()
        );
    }
    rt.block_on(app.stop());
}

criterion_group!(accept_path, benches);
criterion_main!(accept_path);
