//! Rolling restarts behind a real L4 balancer (HAProxy, PROXY protocol,
//! health checks on `/readyz`): one instance drained and restarted under
//! load fails no request, and a connection accepted just before a drain
//! gets its answer.
//!
//! Processes rather than in-process apps: the instances must not share
//! anything but Redis, and a drain ends in an exit status. Everything
//! listens on loopback; every wait has a deadline; the logs of the
//! processes are printed when a test fails. Shared helpers:
//! `turnout_tests::cluster`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnout_tests::cluster::{REQUEST, config, eventually, port, request, target, three};
use turnout_tests::haproxy::{HaProxy, Server};
use turnout_tests::http::{Kind, backend};
use turnout_tests::node::Node;
use turnout_tests::redis::Redis;

/// What the load through HAProxy saw.
#[derive(Default)]
struct Load {
    /// Requests answered 200.
    ok: AtomicUsize,
    /// Requests that were not, with why.
    failures: Mutex<Vec<String>>,
    /// 200s per instance (`x-served-by`).
    by_node: Mutex<BTreeMap<String, usize>>,
    /// Set once edge-2 is ready again.
    restarted: AtomicBool,
    /// 200s from edge-2 to requests sent after `restarted`.
    by_restarted: AtomicUsize,
    /// Tells the loops to stop.
    stop: AtomicBool,
}

/// The most requests a load sends, and the longest it runs, whatever the
/// test does meanwhile.
const LOAD_MAX: usize = 20_000;
const LOAD_FOR: Duration = Duration::from_secs(90);

/// One client loop: new-connection requests one after the other.
async fn client_loop(load: Arc<Load>, port: u16) {
    let deadline = Instant::now() + LOAD_FOR;
    while !load.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let sent = load.ok.load(Ordering::Relaxed) + load.failures.lock().unwrap().len();
        if sent >= LOAD_MAX {
            break;
        }
        let after_restart = load.restarted.load(Ordering::Relaxed);
        let at = Instant::now();
        match request(port, "app.test", &[]).await {
            Ok(r) if r.status == 200 => {
                load.ok.fetch_add(1, Ordering::Relaxed);
                let node = r.header("x-served-by").unwrap_or("?").to_owned();
                if after_restart && node == "edge-2" {
                    load.by_restarted.fetch_add(1, Ordering::Relaxed);
                }
                *load.by_node.lock().unwrap().entry(node).or_default() += 1;
            }
            Ok(r) => load.failures.lock().unwrap().push(format!(
                "{} after {:?}: {r:?}",
                r.status,
                at.elapsed()
            )),
            Err(e) => load
                .failures
                .lock()
                .unwrap()
                .push(format!("{e} after {:?}", at.elapsed())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_request() {
    let redis = Redis::start();
    let app = backend("app", Kind::H1).await;
    let mut nodes = three(|name, s| {
        let (traffic, admin) = (s.port(), s.port());
        let routes = json!([{ "name": "web", "match": { "ports": traffic, "domains": "app.test" },
            "action": { "type": "forward", "targets": target(app.addr) },
            "headers": { "response": { "x-served-by": name } } }]);
        let extra = json!({ "acceptProxyProtocol": true, "proxyIPs": ["127.0.0.1"] });
        config(&redis, name, admin, routes, extra)
    })
    .await;
    let servers: Vec<Server> = nodes
        .iter()
        .map(|n| Server {
            port: port(n),
            admin: n.admin().port(),
        })
        .collect();
    let haproxy = HaProxy::start(&servers).await;
    haproxy.wait_all_up(Duration::from_secs(10)).await;

    let load = Arc::new(Load::default());
    let loops: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client_loop(load.clone(), haproxy.addr().port())))
        .collect();
    let progress = |n: usize| {
        let load = load.clone();
        move || {
            let load = load.clone();
            async move { (load.ok.load(Ordering::Relaxed) >= n).then_some(()) }
        }
    };
    eventually(
        "200 requests through haproxy",
        Duration::from_secs(30),
        progress(200),
    )
    .await;

    // edge-2 drains and exits cleanly while the load runs.
    nodes[1].sigterm();
    let status = nodes[1].wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "edge-2 exited with {status} after SIGTERM"
    );
    let during = load.ok.load(Ordering::Relaxed);
    eventually(
        "100 more requests while edge-2 is away",
        Duration::from_secs(30),
        progress(during + 100),
    )
    .await;
    // HAProxy's check found it gone (and not a failed request meanwhile:
    // see below).
    eventually("haproxy marks s2 down", Duration::from_secs(10), || async {
        haproxy.log().contains("nodes/s2 is DOWN").then_some(())
    })
    .await;
    nodes[1].restart().await;
    load.restarted.store(true, Ordering::Relaxed);
    eventually(
        "edge-2 serves again after its restart",
        Duration::from_secs(30),
        || {
            let load = load.clone();
            async move { (load.by_restarted.load(Ordering::Relaxed) >= 20).then_some(()) }
        },
    )
    .await;
    load.stop.store(true, Ordering::Relaxed);
    for l in loops {
        tokio::time::timeout(REQUEST * 2, l)
            .await
            .expect("the load stops")
            .expect("a client loop");
    }

    let failures = load.failures.lock().unwrap().clone();
    let by_node = load.by_node.lock().unwrap().clone();
    eprintln!(
        "load: {} answered 200, {} failed; by instance {by_node:?}; by edge-2 after its restart {}",
        load.ok.load(Ordering::Relaxed),
        failures.len(),
        load.by_restarted.load(Ordering::Relaxed)
    );
    if !failures.is_empty() {
        // What HAProxy logged for those connections (by client address),
        // and what edge-2 logged besides its access lines.
        let log = haproxy.log();
        let theirs: Vec<&str> = failures
            .iter()
            .take(10)
            .filter_map(|f| f.split(": ").next())
            .flat_map(|client| {
                log.lines()
                    .filter(move |l| l.starts_with(&format!("{client} ")))
            })
            .collect();
        let edge2: Vec<String> = nodes[1]
            .log()
            .lines()
            .filter(|l| !l.contains("turnout::access") && !l.contains("reason=\"client-closed\""))
            .map(str::to_owned)
            .collect();
        panic!(
            "{} of {} requests failed (first ones: {:?}); served by {by_node:?}\n\
             haproxy on them:\n{}\nedge-2 (but its access lines and connections closed by the client):\n{}",
            failures.len(),
            failures.len() + load.ok.load(Ordering::Relaxed),
            &failures[..failures.len().min(10)],
            theirs.join("\n"),
            edge2.join("\n")
        );
    }
    for name in ["edge-1", "edge-2", "edge-3"] {
        assert!(by_node.get(name).is_some_and(|n| *n > 0), "{by_node:?}");
    }
    // Its stats say so too (a fresh process: only what it served since).
    let stats = nodes[1].json("/api/stats").await;
    assert_eq!(stats["cluster"]["state"], "up", "{}", stats["cluster"]);
}

/// What the rolling restart above runs into now and then, made
/// deterministic: behind an L4 balancer, a connection the balancer has
/// already handed to an instance must get its answer even when its
/// request arrives just after SIGTERM (the balancer cannot send it
/// elsewhere any more: in `mode tcp` it already connected), and be told
/// that the connection closes. Both with the PROXY header already read
/// (as behind HAProxy) and without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_before_a_drain_gets_its_answer() {
    let redis = Redis::start();
    let app = backend("app", Kind::H1).await;
    let start = |name: &'static str, behind_balancer: bool| {
        let (redis, app) = (&redis, &app);
        Node::start(name, move |s| {
            let (traffic, admin) = (s.port(), s.port());
            let routes = json!([{ "name": "web",
                "match": { "ports": traffic, "domains": "app.test" },
                "action": { "type": "forward", "targets": target(app.addr) } }]);
            let extra = if behind_balancer {
                json!({ "acceptProxyProtocol": true, "proxyIPs": ["127.0.0.1"] })
            } else {
                json!({})
            };
            config(redis, name, admin, routes, extra)
        })
    };
    let (mut direct, mut balanced) = tokio::join!(start("direct", false), start("balanced", true));
    // Both first, then the verdicts: each case says something different.
    let mut seen = Vec::new();
    for (node, proxy_header) in [(&mut direct, false), (&mut balanced, true)] {
        let (answer, closed_after) = request_across_sigterm(node, proxy_header).await;
        let what = format!("{} (PROXY header: {proxy_header})", node.name());
        seen.push((what, answer, closed_after));
    }
    let mut wrong = Vec::new();
    for (what, answer, closed_after) in &seen {
        if !answer.starts_with("HTTP/1.1 200") {
            wrong.push(format!(
                "{what}: a request on a connection accepted before SIGTERM got {answer:?}"
            ));
        } else if !answer.to_ascii_lowercase().contains("connection: close") {
            wrong.push(format!(
                "{what}: the answer during a drain does not say the connection closes: {answer:?}"
            ));
        }
        if *closed_after >= Duration::from_secs(2) {
            wrong.push(format!(
                "{what}: the connection was closed {closed_after:?} after the answer began, \
                 not when it was done"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    for node in [&mut direct, &mut balanced] {
        let status = node.wait_exit(Duration::from_secs(30)).await;
        assert!(status.success(), "{}: {status}", node.name());
    }
}

/// Connects to `node` (sending a PROXY v1 header first when
/// `proxy_header`), waits until the connection is accepted, sends SIGTERM,
/// waits until the drain has begun, then sends a request: what came back
/// before the node closed the connection, and how long after the first
/// bytes of the answer it closed it.
async fn request_across_sigterm(node: &mut Node, proxy_header: bool) -> (String, Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", port(node))).await.unwrap();
    if proxy_header {
        let (me, them) = (s.local_addr().unwrap(), s.peer_addr().unwrap());
        let line = format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
            me.port(),
            them.port()
        );
        s.write_all(line.as_bytes()).await.unwrap();
    }
    let node_ref = &*node;
    eventually(
        "the connection is accepted",
        Duration::from_secs(10),
        || async move {
            let stats = node_ref.json("/api/stats").await;
            (stats["connections"]["active"] == 1).then_some(())
        },
    )
    .await;
    node.sigterm();
    let admin = node.admin();
    eventually(
        "the drain began (/readyz not 200)",
        Duration::from_secs(10),
        || async move {
            (!matches!(
                turnout_tests::node::get(admin, "/readyz").await,
                Ok((200, _))
            ))
            .then_some(())
        },
    )
    .await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut first_byte = None;
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + REQUEST;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                first_byte.get_or_insert_with(Instant::now);
                raw.extend_from_slice(&buf[..n]);
            }
            Err(_) => break,
        }
    }
    let closed_after = first_byte.map_or(Duration::ZERO, |t| t.elapsed());
    (String::from_utf8_lossy(&raw).into_owned(), closed_after)
}
