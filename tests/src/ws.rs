//! WebSocket pieces for the upgrade and passthrough tests: tungstenite
//! echo servers (cleartext or TLS) whose limits allow 16 MiB messages and
//! that can echo in fragments; clients through the proxy, a fragmented
//! send, and bounded reads with short failure messages (never a 16 MiB
//! payload in a panic).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::l4::STEP;
use crate::pki::Ca;

/// The message and frame size both ends accept: above the 16 MiB the tests
/// send in one frame (tungstenite's default frame limit is exactly 16 MiB).
pub const MAX_MESSAGE: usize = 32 << 20;

/// Limits that let 16 MiB messages through, in one frame or many.
pub fn big_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Small buffers for many idle-ish sockets (tungstenite allocates its
/// 128 KiB read buffer eagerly, per socket).
pub fn small_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
}

/// How the echo server sends each data message back.
#[derive(Clone, Copy, Debug)]
pub enum Echo {
    /// As one frame.
    Whole,
    /// As this many frames: the first with FIN=0, then continuations.
    Fragments(usize),
}

/// A running echo server.
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// WebSocket handshakes it completed.
    pub opened: Arc<AtomicUsize>,
    /// Those whose connection has since ended (close, EOF or error).
    pub ended: Arc<AtomicUsize>,
}

impl EchoServer {
    /// Handshakes completed so far.
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    /// Connections ended so far.
    pub fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }
}

/// A WebSocket server on `127.0.0.1` echoing every text and binary message
/// as `echo` says, over TLS when `tls` is given, with limits `config`.
/// Pings are answered by tungstenite; nothing else is ever sent.
pub async fn echo_server(
    echo: Echo,
    config: WebSocketConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> EchoServer {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let (o, e) = (opened.clone(), ended.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (o, e, tls) = (o.clone(), e.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => serve(s, echo, config, o, e).await,
                    Some(tls) => {
                        let Ok(s) = tokio_rustls::TlsAcceptor::from(tls).accept(s).await else {
                            return;
                        };
                        serve(s, echo, config, o, e).await;
                    }
                }
            });
        }
    });
    EchoServer {
        addr,
        opened,
        ended,
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    echo: Echo,
    config: WebSocketConfig,
    opened: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(s, Some(config)).await else {
        return;
    };
    opened.fetch_add(1, Ordering::SeqCst);
    while let Some(Ok(msg)) = ws.next().await {
        let sent = match (msg, echo) {
            (msg @ (Message::Text(_) | Message::Binary(_)), Echo::Whole) => ws.send(msg).await,
            (Message::Text(t), Echo::Fragments(n)) => {
                send_fragmented(&mut ws, Data::Text, t.as_bytes(), n, None).await
            }
            (Message::Binary(b), Echo::Fragments(n)) => {
                send_fragmented(&mut ws, Data::Binary, &b, n, None).await
            }
            _ => continue,
        };
        if sent.is_err() {
            break;
        }
    }
    ended.fetch_add(1, Ordering::SeqCst);
}

/// Sends `data` as one `kind` message split into `pieces` frames (at
/// least two): the first carries the opcode and FIN=0, the rest are
/// continuation frames, the last with FIN=1. Each frame is flushed on its
/// own; with `ping`, a ping with that payload goes between the first and
/// second fragments (control frames may be interleaved, RFC 6455 §5.4).
/// Text is split at byte offsets, so a fragment may end mid-character.
pub async fn send_fragmented<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    kind: Data,
    data: &[u8],
    pieces: usize,
    ping: Option<&[u8]>,
) -> Result<(), Error> {
    let pieces = pieces.max(2);
    let at = |i: usize| data.len() * i / pieces;
    for i in 0..pieces {
        let opcode = OpCode::Data(if i == 0 { kind } else { Data::Continue });
        let fin = i + 1 == pieces;
        let chunk = data[at(i)..at(i + 1)].to_vec();
        ws.send(Message::Frame(Frame::message(chunk, opcode, fin)))
            .await?;
        if i == 0
            && let Some(p) = ping
        {
            ws.send(Message::Ping(p.to_vec().into())).await?;
        }
    }
    Ok(())
}

// Clients.

/// A WebSocket to `ws.test` through the cleartext HTTP port `port`.
pub async fn open_plain(
    port: u16,
    config: WebSocketConfig,
) -> Result<WebSocketStream<TcpStream>, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let upgrade = tokio_tungstenite::client_async_with_config("ws://ws.test/", tcp, Some(config));
    let (ws, resp) = tokio::time::timeout(STEP, upgrade)
        .await
        .map_err(|_| "upgrade timed out".to_owned())?
        .map_err(|e| format!("upgrade: {e}"))?;
    if resp.status() != 101 {
        return Err(format!("status {}", resp.status()));
    }
    Ok(ws)
}

/// A client WebSocket over TLS.
pub type TlsWs = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A WebSocket over TLS to `port` with SNI `name`, trusting only `ca`.
pub async fn open_tls(port: u16, name: &str, ca: &Ca, config: WebSocketConfig) -> TlsWs {
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let tls = crate::tls::connect(proxy, name, ca.client(&["http/1.1"]))
        .await
        .expect("TLS handshake through the proxy");
    let url = format!("wss://{name}/");
    let upgrade = tokio_tungstenite::client_async_with_config(url, tls, Some(config));
    let (ws, resp) = tokio::time::timeout(STEP, upgrade)
        .await
        .expect("upgrade in time")
        .expect("the upgrade goes through over TLS");
    assert_eq!(resp.status(), 101);
    ws
}

/// A message in a few words (never its 16 MiB of payload).
pub fn describe(m: &Message) -> String {
    match m {
        Message::Text(t) => format!("Text({} bytes)", t.len()),
        Message::Binary(b) => format!("Binary({} bytes)", b.len()),
        Message::Ping(p) => format!("Ping({p:?})"),
        Message::Pong(p) => format!("Pong({p:?})"),
        Message::Close(c) => format!("Close({c:?})"),
        Message::Frame(f) => format!("Frame({:?})", f.header()),
    }
}

/// The next message, bounded by [`STEP`].
pub async fn next<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Message {
    match tokio::time::timeout(STEP, ws.next()).await {
        Ok(Some(Ok(m))) => m,
        Ok(Some(Err(e))) => panic!("expected a message, got the error {e}"),
        Ok(None) => panic!("expected a message, the WebSocket ended"),
        Err(_) => panic!("expected a message, none came within {STEP:?}"),
    }
}

/// Asserts `got` is a `text` (else binary) message carrying exactly `want`.
pub fn assert_same(got: Message, text: bool, want: &[u8], what: &str) {
    let kind_ok = if text { got.is_text() } else { got.is_binary() };
    assert!(
        kind_ok,
        "{what}: expected a {} message, got {}",
        if text { "text" } else { "binary" },
        describe(&got)
    );
    let data = got.into_data();
    assert_eq!(data.len(), want.len(), "{what}: length");
    if let Some(i) = data.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: the echo differs from what was sent at byte {i}");
    }
}

/// Sends `text` and expects exactly it back, nothing before it.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, text: &str) {
    tokio::time::timeout(STEP, ws.send(Message::text(text)))
        .await
        .expect("sent in time")
        .expect("send");
    assert_same(next(ws).await, true, text.as_bytes(), text);
}

/// Closes from the client side: the backend's close comes back, then the
/// stream ends.
pub async fn close<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
    tokio::time::timeout(STEP, ws.close(None))
        .await
        .expect("close sent in time")
        .expect("close");
    let got = next(&mut ws).await;
    assert!(
        got.is_close(),
        "expected the close echoed, got {}",
        describe(&got)
    );
    let end = tokio::time::timeout(STEP, ws.next())
        .await
        .expect("ends in time");
    assert!(
        !matches!(end, Some(Ok(_))),
        "nothing after the close: {end:?}"
    );
}
