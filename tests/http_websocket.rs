//! WebSocket upgrades through the HTTP proxy, end to end with a real
//! client and server (tokio-tungstenite): the handshake goes through the
//! request hook like any request, then bytes are relayed untouched; the
//! HTTP timers stop at the upgrade and the connection policy's inactivity
//! timeout applies; closes propagate with their codes.

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
