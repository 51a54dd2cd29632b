//! The worker threads as `turnout run` starts them: a listening socket per
//! worker and port, connections spread over the workers, a second proxy on
//! the same port refused, and the drain ending connections on every worker.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnout_tests::app::{Ports, RunningApp};
use turnout_tests::l4::{STEP, echo_backend};

/// This process's threads named `turnout-wrk-*`.
fn worker_threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("turnout-wrk-"))
        .collect();
    names.sort();
    names
}

/// Listening sockets on `port` (IPv4), from `/proc/net/tcp`: what
/// `ss -ltn` shows.
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
        })
        .count()
}

async fn echo_once(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(STEP, s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&back, b"ping");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_has_a_socket_and_gets_connections_and_the_drain_reaches_all() {
    let (backend, _) = echo_backend().await;
    let mut ports = Ports::default();
    let port = ports.take_shared();
    let config = json!({
        "bind": ["127.0.0.1"],
        "workers": 3,
        "gracefulShutdownTimeout": 300,
        "maxConnectionsPerIP": 0,
        "connectionRateLimitPerMinute": 0,
        "routes": [{ "name": "echo", "match": { "ports": port },
                     "action": { "type": "forward",
                                 "targets": [{ "host": "127.0.0.1", "port": backend.port() }] } }]
    });
    let app = RunningApp::start_with(&config.to_string(), ports).await;
    // `ready` fires once the first socket is bound; the workers' copies
    // follow as serving starts (connections meanwhile wait in the first
    // socket's backlog).
    let deadline = std::time::Instant::now() + STEP;
    while (listening_sockets(port) < 3 || worker_threads().len() < 3)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        listening_sockets(port),
        3,
        "one listening socket per worker"
    );
    assert_eq!(
        worker_threads(),
        ["turnout-wrk-0", "turnout-wrk-1", "turnout-wrk-2"]
    );

    // 90 connections held open: the kernel spreads them over the three
    // sockets by address hash, so every worker gets some (the odds of one
    // getting none are about 3 × (2/3)⁹⁰ ≈ 10⁻¹⁵), and counts them.
    let mut held = Vec::new();
    for _ in 0..90 {
        held.push(echo_once(port).await);
    }
    let workers = app.metrics.workers();
    assert_eq!(workers.len(), 3);
    assert!(
        workers
            .iter()
            .all(|w| w.accepted > 0 && w.active == w.accepted),
        "every worker accepted some and holds them: {workers:?}"
    );
    assert_eq!(workers.iter().map(|w| w.accepted).sum::<u64>(), 90);
    assert_eq!(app.tracker.total(), 90);

    // A second proxy on the same port is refused, not let into the group.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("second.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let second = tokio::time::timeout(
        Duration::from_secs(60),
        turnout::app::run(
            &path,
            None,
            Default::default(),
            reload_rx,
            std::future::pending(),
            |_| {},
        ),
    )
    .await
    .expect("the second proxy gives up at once")
    .expect_err("port is taken");
    let message = second.to_string();
    assert!(
        message.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && message.contains("another process is listening there"),
        "{message}"
    );
    assert_eq!(listening_sockets(port), 3);

    // The drain outlasts its 300 ms and closes the held connections on
    // every worker; the proxy stops and its sockets are gone.
    let app_metrics = app.metrics.clone();
    app.stop().await;
    for mut s in held {
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(STEP, s.read(&mut buf))
            .await
            .expect("closed by the drain")
            .unwrap_or(0);
        assert_eq!(n, 0, "EOF after the drain");
    }
    assert_eq!(listening_sockets(port), 0);
    // A worker reports it is done just before its thread returns.
    let deadline = std::time::Instant::now() + STEP;
    while !worker_threads().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(worker_threads().is_empty(), "worker threads exited");
    assert!(app_metrics.workers().iter().all(|w| w.active == 0));
}
