//! WebSockets under load and over time, end to end with tokio-tungstenite
//! on both sides: 16 MiB messages and fragmented ones through HTTP/1.1
//! upgrades (cleartext and terminated TLS) come back byte-identical; a
//! thousand concurrent sockets on one route open, echo and close, and the
//! active-connection counters return to zero; a passthrough WebSocket
//! lives exactly as long as its keep-alive treatment says, and the proxy
//! never injects a frame into it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::Data;
use turnout_tests::app::{Ports, RunningApp, admin_request};
use turnout_tests::l4::STEP;
use turnout_tests::pki::Ca;
use turnout_tests::prometheus_value;
use turnout_tests::tls::{config, files, settled, target, wait_for};
use turnout_tests::ws::{
    Echo, EchoServer, TlsWs, assert_same, big_config, close, describe, echo, echo_server, next,
    open_plain, open_tls, send_fragmented, small_config,
};

const SIXTEEN_MIB: usize = 16 << 20;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ------------------------------------------------- HTTP/1.1 upgrade routes

/// The proxy with one WebSocket backend behind two routes for `ws.test`: a
/// cleartext HTTP route on `plain` and a terminated TLS one on `tls`.
struct Upgrades {
    app: RunningApp,
    plain: u16,
    tls: u16,
    ca: Ca,
    _dir: tempfile::TempDir,
}

async fn upgrades(backend: SocketAddr) -> Upgrades {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("WS scale CA");
    let cert = files(dir.path(), "ws", &ca.leaf(&["ws.test"]));
    let mut ports = Ports::default();
    let (plain, tls) = (ports.take(), ports.take());
    let routes = json!([
        { "name": "ws", "match": { "ports": plain, "domains": "ws.test" },
          "action": { "type": "forward", "targets": target(backend) } },
        { "name": "wss", "match": { "ports": tls, "domains": "ws.test" },
          "action": { "type": "forward", "targets": target(backend),
                      "tls": { "mode": "terminate", "certificate": cert } } }
    ]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;
    Upgrades {
        app,
        plain,
        tls,
        ca,
        _dir: dir,
    }
}

/// 16 MiB of UTF-8, multi-byte characters included, never periodic.
fn big_text() -> String {
    let mut s = String::with_capacity(SIXTEEN_MIB);
    for i in 0u64.. {
        let chunk = format!("{i:08x} é✓𝄞 ");
        if s.len() + chunk.len() > SIXTEEN_MIB {
            break;
        }
        s.push_str(&chunk);
    }
    while s.len() < SIXTEEN_MIB {
        s.push('x');
    }
    s
}

/// 16 MiB of bytes, every value, never periodic.
fn big_binary() -> Vec<u8> {
    (0..SIXTEEN_MIB)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 16)) as u8)
        .collect()
}

async fn sixteen_mib_round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    text: &str,
    binary: &[u8],
    route: &str,
) {
    let sent = tokio::time::timeout(STEP, ws.send(Message::text(text)));
    sent.await.expect("sent in time").expect("send text");
    assert_same(next(ws).await, true, text.as_bytes(), route);
    let sent = tokio::time::timeout(STEP, ws.send(Message::binary(binary.to_vec())));
    sent.await.expect("sent in time").expect("send binary");
    assert_same(next(ws).await, false, binary, route);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_messages_come_back_byte_identical_on_cleartext_and_terminated_routes() {
    let backend = echo_server(Echo::Whole, big_config(), None).await;
    let u = upgrades(backend.addr).await;
    let (text, binary) = (big_text(), big_binary());
    assert_eq!((text.len(), binary.len()), (SIXTEEN_MIB, SIXTEEN_MIB));

    let mut ws = open_plain(u.plain, big_config()).await.unwrap();
    sixteen_mib_round_trip(&mut ws, &text, &binary, "cleartext HTTP route").await;
    close(ws).await;

    let mut ws = open_tls(u.tls, "ws.test", &u.ca, big_config()).await;
    sixteen_mib_round_trip(&mut ws, &text, &binary, "terminated TLS route").await;
    close(ws).await;

    wait_for("the backend to see both sockets end", || {
        backend.ended() == 2
    })
    .await;
    settled(&u.app).await;
    u.app.stop().await;
}

/// Fragmented messages both ways: the client sends each as several frames
/// (a ping between the first two), the backend echoes each in 5 frames.
async fn fragments<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, route: &str) {
    let text = "héllo wörld ✓ 𝄞 ".repeat(20_000);
    let binary: Vec<u8> = (0..300_001u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let tiny = "one byte per frame: é✓𝄞";
    let ping: &[u8] = b"between fragments";

    let send = send_fragmented(ws, Data::Text, text.as_bytes(), 7, Some(ping));
    tokio::time::timeout(STEP, send).await.unwrap().unwrap();
    // The backend's pong to the interleaved ping and the whole message,
    // and nothing else.
    let (mut pong, mut echoed) = (false, false);
    for _ in 0..2 {
        match next(ws).await {
            Message::Pong(p) if !pong => {
                assert_eq!(&p[..], ping, "{route}: the pong's payload");
                pong = true;
            }
            m if !echoed => {
                assert_same(m, true, text.as_bytes(), route);
                echoed = true;
            }
            m => panic!("{route}: unexpected {}", describe(&m)),
        }
    }

    let send = send_fragmented(ws, Data::Binary, &binary, 12, None);
    tokio::time::timeout(STEP, send).await.unwrap().unwrap();
    assert_same(next(ws).await, false, &binary, route);

    // One byte per frame, each flushed on its own: multi-byte characters
    // split across frames (and across TCP segments through the proxy).
    let send = send_fragmented(ws, Data::Text, tiny.as_bytes(), tiny.len(), None);
    tokio::time::timeout(STEP, send).await.unwrap().unwrap();
    assert_same(next(ws).await, true, tiny.as_bytes(), route);

    // A whole message after the fragmented ones is still framed right.
    echo(ws, "whole again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_messages_are_relayed_intact_both_ways() {
    let backend = echo_server(Echo::Fragments(5), big_config(), None).await;
    let u = upgrades(backend.addr).await;

    let mut ws = open_plain(u.plain, big_config()).await.unwrap();
    fragments(&mut ws, "cleartext HTTP route").await;
    close(ws).await;

    let mut ws = open_tls(u.tls, "ws.test", &u.ca, big_config()).await;
    fragments(&mut ws, "terminated TLS route").await;
    close(ws).await;

    wait_for("the backend to see both sockets end", || {
        backend.ended() == 2
    })
    .await;
    settled(&u.app).await;
    u.app.stop().await;
}

// ------------------------------------------------------- a thousand at once

const SOCKETS: usize = 1000;

/// Raises the soft RLIMIT_NOFILE toward `want` (this process holds both
/// ends of every connection: client, proxy ×2, backend).
fn raise_nofile_limit(want: u64, need: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current.is_none_or(|c| c >= want) {
        return;
    }
    let raised = lim.maximum.map_or(want, |m| m.min(want));
    assert!(
        raised >= need,
        "RLIMIT_NOFILE hard limit {:?} is below the {need} descriptors this test needs",
        lim.maximum
    );
    lim.current = Some(raised);
    setrlimit(Resource::Nofile, lim).expect("raise RLIMIT_NOFILE");
}

async fn stats(admin: SocketAddr) -> Value {
    let (status, body) = admin_request(admin, "GET", "/api/stats").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Runs every task of `set` to completion within [`STEP`], returning
/// their results (a panicking task fails the test with its message).
async fn join_all<T: 'static>(mut set: JoinSet<T>, what: &str) -> Vec<T> {
    let mut out = Vec::with_capacity(set.len());
    let all = async {
        while let Some(r) = set.join_next().await {
            match r {
                Ok(v) => out.push(v),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("{what}: {e}"),
            }
        }
    };
    if tokio::time::timeout(STEP, all).await.is_err() {
        panic!("{what}: {} of them not done within {STEP:?}", set.len());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_websockets_echo_close_and_leave_no_active_count() {
    raise_nofile_limit(16_384, 4 * SOCKETS as u64 + 512);
    let backend = Arc::new(echo_server(Echo::Whole, small_config(), None).await);
    let mut ports = Ports::default();
    // Its backlog takes a burst of connects; turnout's workers share it.
    let port = ports.take_shared();
    let routes = json!([{ "name": "ws", "match": { "ports": port, "domains": "ws.test" },
                          "action": { "type": "forward", "targets": target(backend.addr) },
                          "security": { "maxConnections": SOCKETS } }]);
    let extra = json!({ "admin": { "listen": "127.0.0.1:0" }, "maxConnections": 4 * SOCKETS });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;
    let admin = app.admin.expect("admin API configured");

    // Open all of them (64 handshakes in flight at a time) and keep them.
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut opening = JoinSet::new();
    for i in 0..SOCKETS {
        let gate = gate.clone();
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            (i, open_plain(port, small_config()).await)
        });
    }
    let mut sockets = Vec::with_capacity(SOCKETS);
    let mut failed = Vec::new();
    for (i, r) in join_all(opening, "opening").await {
        match r {
            Ok(ws) => sockets.push((i, ws)),
            Err(e) => failed.push((i, e)),
        }
    }
    failed.sort();
    assert!(
        failed.is_empty(),
        "{} of {SOCKETS} upgrades failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(backend.opened(), SOCKETS);
    let st = stats(admin).await;
    assert_eq!(
        st["connections"]["active"].as_u64(),
        Some(SOCKETS as u64),
        "all open at once: {:#}",
        st["connections"]
    );

    // Each echoes one message of its own, all at once.
    let mut echoing = JoinSet::new();
    for (i, mut ws) in sockets {
        echoing.spawn(async move {
            echo(&mut ws, &format!("socket {i} says hello")).await;
            ws
        });
    }
    let sockets = join_all(echoing, "echoing").await;
    assert_eq!(sockets.len(), SOCKETS);

    // Then all close, all at once.
    let mut closing = JoinSet::new();
    for ws in sockets {
        closing.spawn(close(ws));
    }
    join_all(closing, "closing").await;
    let b = backend.clone();
    wait_for("the backend to see every socket end", move || {
        b.ended() == SOCKETS
    })
    .await;

    // The counters come back to zero (bounded wait: the relays finish
    // their bookkeeping just after the sockets close).
    let deadline = Instant::now() + STEP;
    let st = loop {
        let st = stats(admin).await;
        let zero = st["connections"]["active"] == 0 && st["limits"]["active"] == 0;
        if zero || Instant::now() > deadline {
            break st;
        }
        tokio::time::sleep(ms(50)).await;
    };
    let conns = &st["connections"];
    assert_eq!(conns["active"].as_u64(), Some(0), "{conns:#}");
    assert_eq!(st["limits"]["active"].as_u64(), Some(0), "{st:#}");
    assert_eq!(conns["total"].as_u64(), Some(SOCKETS as u64), "{conns:#}");
    for (route, c) in conns["byRoute"].as_object().unwrap() {
        assert_eq!(c["active"].as_u64(), Some(0), "route {route}: {conns:#}");
    }
    for w in conns["byWorker"].as_array().unwrap() {
        assert_eq!(w["active"].as_u64(), Some(0), "{conns:#}");
    }
    for (reason, n) in st["totals"]["refusals"].as_object().unwrap() {
        assert_eq!(n.as_u64(), Some(0), "refusals[{reason}]: {st:#}");
    }
    let (status, text) = admin_request(admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        prometheus_value(&text, "turnout_connections_active", &[]),
        Some(0.0),
        "{text}"
    );
    settled(&app).await;
    app.stop().await;
}

// ------------------------------------------------------------- passthrough

/// The inactivity timeout configured for the passthrough tests.
const INACTIVITY: u64 = 400;

/// A passthrough route for `pass.test` to a TLS WebSocket backend, with
/// top-level keep-alive options `keep_alive`.
struct Passthrough {
    app: RunningApp,
    backend: EchoServer,
    ca: Ca,
    port: u16,
}

impl Passthrough {
    async fn start(keep_alive: Value) -> Passthrough {
        let ca = Ca::new("WS passthrough CA");
        let server = ca.leaf(&["pass.test"]).server(&["http/1.1"]);
        let backend = echo_server(Echo::Whole, WebSocketConfig::default(), Some(server)).await;
        let mut ports = Ports::default();
        let port = ports.take();
        let routes = json!([{ "name": "pass", "match": { "ports": port, "domains": "pass.test" },
            "action": { "type": "forward", "targets": target(backend.addr),
                        "tls": { "mode": "passthrough" } } }]);
        let app = RunningApp::start_with(&config(routes, keep_alive), ports).await;
        Passthrough {
            app,
            backend,
            ca,
            port,
        }
    }

    /// A WebSocket spoken over TLS with the backend itself (the client
    /// trusts only the backend's CA; the proxy holds no certificate).
    async fn open(&self) -> TlsWs {
        open_tls(self.port, "pass.test", &self.ca, WebSocketConfig::default()).await
    }

    async fn finish(self) {
        let backend = &self.backend;
        wait_for("the backend to see its socket end", || backend.ended() == 1).await;
        assert_eq!(self.backend.opened(), 1);
        settled(&self.app).await;
        self.app.stop().await;
    }
}

/// Nothing at all may arrive for `d`: no frame (the proxy cannot and must
/// not inject pings into a passthrough stream), no close.
async fn silent_for(ws: &mut TlsWs, d: Duration, what: &str) {
    if let Ok(got) = tokio::time::timeout(d, ws.next()).await {
        let got = match got {
            Some(Ok(m)) => describe(&m),
            Some(Err(e)) => format!("the error {e}"),
            None => "the end of the stream".to_owned(),
        };
        panic!("{what}: {got} arrived within {d:?} of silence");
    }
}

/// Waits until the socket ends, at most until `by`; how long after `from`.
async fn ends(ws: &mut TlsWs, from: Instant, by: Instant, what: &str) -> Duration {
    match tokio::time::timeout_at(by.into(), ws.next()).await {
        Err(_) => panic!("{what}: still open {:?} after the last byte", by - from),
        Ok(Some(Ok(m))) if !m.is_close() => {
            panic!("{what}: {} arrived instead of the end", describe(&m))
        }
        // EOF without a close frame (the proxy closes the TCP connection:
        // a TLS stream without close_notify), or the backend's own close.
        Ok(_) => from.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_websocket_under_standard_closes_at_its_inactivity_timeout() {
    let p = Passthrough::start(json!({
        "keepAliveTreatment": "standard", "inactivityTimeout": INACTIVITY
    }))
    .await;
    let mut ws = p.open().await;
    echo(&mut ws, "before idling").await;
    let last = Instant::now();
    silent_for(&mut ws, ms(INACTIVITY / 2), "standard, half the timeout").await;
    let took = ends(
        &mut ws,
        last,
        last + ms(INACTIVITY) + Duration::from_secs(2),
        "standard",
    )
    .await;
    assert!(
        took >= ms(INACTIVITY / 2),
        "closed after {took:?}, before half the {INACTIVITY} ms timeout"
    );
    drop(ws);
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_websocket_under_extended_outlives_the_plain_timeout_by_its_multiplier() {
    const MULTIPLIER: u64 = 6;
    let p = Passthrough::start(json!({
        "keepAliveTreatment": "extended", "inactivityTimeout": INACTIVITY,
        "keepAliveInactivityMultiplier": MULTIPLIER
    }))
    .await;
    let mut ws = p.open().await;
    echo(&mut ws, "before idling").await;
    silent_for(
        &mut ws,
        ms(3 * INACTIVITY + 100),
        "extended, 3× the timeout",
    )
    .await;
    echo(&mut ws, "still here after idling").await;
    // It does end, at the multiplied timeout.
    let (extended, last) = (INACTIVITY * MULTIPLIER, Instant::now());
    silent_for(&mut ws, ms(extended / 2), "extended, half its timeout").await;
    let by = last + ms(extended) + Duration::from_secs(2);
    ends(&mut ws, last, by, "extended").await;
    drop(ws);
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_websocket_under_immortal_stays_open_while_idle() {
    // Were `immortal` read as `extended` (×2) or held to a lifetime cap,
    // the socket would close during the silences below.
    let p = Passthrough::start(json!({
        "keepAliveTreatment": "immortal", "inactivityTimeout": INACTIVITY,
        "keepAliveInactivityMultiplier": 2, "maxConnectionLifetime": 1000,
        "extendedKeepAliveLifetime": 1000
    }))
    .await;
    let mut ws = p.open().await;
    echo(&mut ws, "before idling").await;
    silent_for(
        &mut ws,
        ms(3 * INACTIVITY + 100),
        "immortal, 3× the timeout",
    )
    .await;
    echo(&mut ws, "still here after idling").await;
    silent_for(&mut ws, ms(3 * INACTIVITY + 100), "immortal, again").await;
    echo(&mut ws, "and again").await;
    close(ws).await;
    p.finish().await;
}
