//! WebSocket upgrades through the HTTP proxy, end to end with a real
//! client and server (tokio-tungstenite): the handshake goes through the
//! request hook like any request, then bytes are relayed; the HTTP timers
//! stop at the upgrade and the connection policy's timers apply; closes
//! propagate with their codes; the proxy's heartbeat pings clients and
//! closes (1001) one that stops answering; `websocket.enabled: false` is a
//! 403; HTTP/2 clients open WebSockets with extended CONNECT (RFC 8441).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use turnout_tests::app::{Ports, RunningApp};
use turnout_tests::tls::{config, settled, target};

/// A WebSocket server echoing every message, closing with code 4000 when
/// it receives the text "bye".
async fn echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let echo = match &msg {
                        Message::Text(t) if t.as_str() == "bye" => false,
                        Message::Text(_) | Message::Binary(_) => true,
                        _ => continue,
                    };
                    if !echo {
                        let frame = CloseFrame {
                            code: CloseCode::from(4000),
                            reason: "done".into(),
                        };
                        let _ = ws.close(Some(frame)).await;
                    } else if ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_relayed_and_live_by_the_connection_policy() {
    let backend = echo_server().await;
    let mut ports = Ports::default();
    let port = ports.take();
    let routes = json!([{ "name": "ws", "match": { "ports": port, "domains": "ws.test" },
                          "action": { "type": "forward", "targets": target(backend) } }]);
    // HTTP timers far shorter than the connection's inactivity timeout.
    let extra = json!({ "keepAliveTreatment": "standard", "inactivityTimeout": 1500,
                        "http": { "headerTimeout": 200, "idleTimeout": 200 } });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.test/chat", tcp)
        .await
        .expect("the upgrade goes through");
    assert_eq!(resp.status(), 101);

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    let big: Vec<u8> = (0..(4 << 20)).map(|i| (i % 253) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));

    // Past the HTTP timers: still open.
    tokio::time::sleep(Duration::from_millis(700)).await;
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );

    // The backend's close, with its code, reaches the client.
    ws.send(Message::text("bye")).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4000),
        other => panic!("expected the backend's close, got {other:?}"),
    }

    // A second WebSocket left idle closes at the inactivity timeout.
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut idle, _) = tokio_tungstenite::client_async("ws://ws.test/", tcp)
        .await
        .unwrap();
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), idle.next()).await;
    let took = started.elapsed();
    assert!(end.is_ok(), "never closed");
    assert!(
        took >= Duration::from_millis(1200) && took < Duration::from_secs(5),
        "closed after {took:?}, not at the 1.5 s inactivity timeout"
    );
    drop((ws, idle));
    settled(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_on_a_terminated_route_are_relayed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = turnout_tests::pki::Ca::new("WS CA");
    let backend = echo_server().await;
    let mut ports = Ports::default();
    let port = ports.take();
    let cert = turnout_tests::tls::files(dir.path(), "ws", &ca.leaf(&["ws.test"]));
    let routes = json!([{ "name": "wss", "match": { "ports": port, "domains": "ws.test" },
        "action": { "type": "forward", "targets": target(backend),
                    "tls": { "mode": "terminate", "certificate": cert } } }]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let tls = turnout_tests::tls::connect(proxy, "ws.test", ca.client(&["http/1.1"]))
        .await
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://ws.test/", tls)
        .await
        .expect("the upgrade goes through over TLS");
    assert_eq!(resp.status(), 101);
    for i in 0..100 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    }
    // The client's close comes back from the backend.
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
    .await
    .unwrap();
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the close echoed, got {other:?}"),
    }
    drop(ws);
    settled(&app).await;
    app.stop().await;
}

/// Waits (bounded) until no connection and no WebSocket is counted.
async fn all_closed(app: &RunningApp) {
    settled(app).await;
    turnout_tests::tls::wait_for("the WebSocket gauge back to zero", || {
        app.metrics.websockets().active == 0
    })
    .await;
}

/// A WebSocket server that never answers pings and reports the close
/// code of every close frame it receives (and 0 for a connection that
/// ended without one).
async fn close_recorder() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<u16>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                let mut code = 0;
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Close(f) => code = f.map_or(1005, |f| u16::from(f.code)),
                        m @ (Message::Text(_) | Message::Binary(_)) => {
                            let _ = ws.send(m).await;
                        }
                        _ => {}
                    }
                }
                let _ = tx.send(code);
            });
        }
    });
    (addr, rx)
}

/// A WebSocket handshake by hand on `port`, so that nothing answers the
/// proxy's pings: returns the socket after the 101.
async fn silent_client(port: u16) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(
        b"GET /quiet HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "the proxy closed mid-handshake"
        );
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_closes_a_client_that_stops_answering_and_keeps_one_that_answers() {
    let (backend, mut closes) = close_recorder().await;
    let mut ports = Ports::default();
    let port = ports.take();
    let routes = json!([{ "name": "beat", "match": { "ports": port, "domains": "ws.test" },
        "action": { "type": "forward", "targets": target(backend),
                    "websocket": { "pingInterval": 300, "pingTimeout": 300 } } }]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;

    // tungstenite answers pings whenever it reads.
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut alive, _) = tokio_tungstenite::client_async("ws://ws.test/", tcp)
        .await
        .unwrap();
    // It keeps talking (and so answering pings) across several intervals
    // while the silent one is pinged.
    let talker = tokio::spawn(async move {
        for i in 0..8 {
            let text = format!("still here {i}");
            alive.send(Message::text(text.clone())).await.unwrap();
            let echoed = loop {
                match alive.next().await.unwrap().unwrap() {
                    Message::Ping(_) | Message::Pong(_) => continue,
                    m => break m,
                }
            };
            assert_eq!(echoed, Message::text(text));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        alive
    });
    let mut silent = silent_client(port).await;
    let started = Instant::now();

    // The silent one sees pings, then a close frame with 1001, then EOF.
    let mut seen = Vec::new();
    let read_all = async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the silent client was never closed");
    let took = started.elapsed();
    assert!(
        seen.starts_with(&[0x89, 0x00]) && seen.ends_with(&[0x88, 0x02, 0x03, 0xE9]),
        "expected pings then a 1001 close, got {seen:02x?}"
    );
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_millis(3500),
        "closed after {took:?}, not about interval + timeout (600 ms) later"
    );
    // The backend got the proxy's close frame too.
    let code = tokio::time::timeout(Duration::from_secs(5), closes.recv())
        .await
        .unwrap();
    assert_eq!(code, Some(1001));

    // The one that answers outlived several intervals, echoing all along.
    let mut alive = talker
        .await
        .expect("the answering client was served throughout");
    let w = app.metrics.websockets();
    assert!(w.pings_sent >= 4, "{w:?}");
    let closed = |r: &str| w.closes.iter().find(|(k, _)| *k == r).map(|(_, n)| *n);
    assert_eq!(closed("ping-timeout"), Some(1), "{w:?}");
    assert_eq!(w.active, 1, "{w:?}");
    assert_eq!(w.upgrades, [("beat".to_owned(), 2)]);

    alive.close(None).await.unwrap();
    drop(alive);
    all_closed(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_websockets_disabled_refuses_upgrades_with_403() {
    let backend = echo_server().await;
    let mut ports = Ports::default();
    let port = ports.take();
    let routes = json!([{ "name": "nows", "match": { "ports": port, "domains": "ws.test" },
        "action": { "type": "forward", "targets": target(backend),
                    "websocket": { "enabled": false } } }]);
    let app = RunningApp::start_with(&config(routes, json!({})), ports).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    match tokio_tungstenite::client_async("ws://ws.test/", tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected a 403, got {other:?}"),
    }
    let errors = app.metrics.requests().errors;
    assert!(errors.contains(&("websocket-disabled", 1)), "{errors:?}");
    assert_eq!(app.metrics.websockets().upgrades, []);
    settled(&app).await;
    app.stop().await;
}

/// An HTTP/2 extended CONNECT (RFC 8441) for a WebSocket on `send`'s
/// connection; the stream once the proxy answered 200.
async fn h2_websocket(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
) -> tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>> {
    let req = hyper::Request::builder()
        .method(hyper::Method::CONNECT)
        .version(hyper::Version::HTTP_2)
        .uri("https://ws.test/chat")
        .header("sec-websocket-version", "13")
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .body(http_body_util::Full::default())
        .unwrap();
    let resp = send.send_request(req).await.expect("extended CONNECT");
    assert_eq!(resp.status(), 200);
    let io = hyper::upgrade::on(resp).await.expect("the stream");
    tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(io),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        Some(turnout_tests::ws::big_config()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_over_http2_extended_connect_are_relayed_to_an_http1_backend() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::Data;
    use turnout_tests::ws::{Echo, big_config, echo_server as echo, send_fragmented};
    let dir = tempfile::tempdir().unwrap();
    let ca = turnout_tests::pki::Ca::new("WS CA");
    let backend = echo(Echo::Whole, big_config(), None).await;
    let mut ports = Ports::default();
    let port = ports.take();
    let cert = turnout_tests::tls::files(dir.path(), "ws", &ca.leaf(&["ws.test"]));
    let routes = json!([{ "name": "h2ws", "match": { "ports": port, "domains": "ws.test" },
        "action": { "type": "forward", "targets": target(backend.addr),
                    "tls": { "mode": "terminate", "certificate": cert } } }]);
    // The connection's HTTP idle timer far shorter than the test.
    let extra = json!({ "http": { "idleTimeout": 200 } });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut send = turnout_tests::http::h2_tls(proxy, "ws.test", ca.client(&["h2"])).await;
    // The server's SETTINGS (ENABLE_CONNECT_PROTOCOL) arrive with the
    // first exchange.
    let _ = send
        .send_request(
            hyper::Request::get("https://ws.test/")
                .body(http_body_util::Full::default())
                .unwrap(),
        )
        .await;

    let mut ws = h2_websocket(&mut send).await;
    ws.send(Message::text("over h2")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over h2"));
    let big: Vec<u8> = (0..(16 << 20)).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    let text = "fragmented ✓ ".repeat(1000);
    send_fragmented(&mut ws, Data::Text, text.as_bytes(), 5, Some(b"mid"))
        .await
        .unwrap();
    let echoed = loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Pong(_) => continue,
            m => break m,
        }
    };
    assert_eq!(echoed, Message::text(text));

    // A second WebSocket on the same connection, past the idle timer.
    let mut second = h2_websocket(&mut send).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    second.send(Message::text("two")).await.unwrap();
    assert_eq!(second.next().await.unwrap().unwrap(), Message::text("two"));
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("one"));

    let w = app.metrics.websockets();
    assert_eq!(
        (w.active, w.upgrades.clone()),
        (2, vec![("h2ws".to_owned(), 2)])
    );
    ws.close(None).await.unwrap();
    second.close(None).await.unwrap();
    drop((ws, second, send));
    all_closed(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_ends_at_the_connections_lifetime_with_a_close_frame() {
    let (backend, mut closes) = close_recorder().await;
    let mut ports = Ports::default();
    let port = ports.take();
    let routes = json!([{ "name": "short", "match": { "ports": port, "domains": "ws.test" },
        "action": { "type": "forward", "targets": target(backend),
                    "websocket": { "pingInterval": 0 } } }]);
    let extra = json!({ "keepAliveTreatment": "standard", "maxConnectionLifetime": 1000 });
    let app = RunningApp::start_with(&config(routes, extra), ports).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let started = Instant::now();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://ws.test/", tcp)
        .await
        .unwrap();
    // Busy the whole time: the lifetime, not inactivity, ends it.
    let end = loop {
        if ws.send(Message::text("tick")).await.is_err() {
            break None;
        }
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => {}
            Ok(other) => break Some(other),
            Err(_) => panic!("no answer"),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = started.elapsed();
    match end {
        Some(Some(Ok(Message::Close(Some(f))))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected the proxy's 1001, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3000),
        "ended after {took:?}, not at the 1 s lifetime"
    );
    let code = tokio::time::timeout(Duration::from_secs(5), closes.recv())
        .await
        .unwrap();
    assert_eq!(code, Some(1001), "the backend is told too");
    let w = app.metrics.websockets();
    assert_eq!(w.pings_sent, 0, "pingInterval 0: no heartbeat");
    assert!(w.closes.contains(&("lifetime", 1)), "{w:?}");
    drop(ws);
    settled(&app).await;
    app.stop().await;
}
