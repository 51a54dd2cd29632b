//! The plain WebSocket backend behind the proxies in `ws-echo`: accepts
//! the opening handshake, then echoes every data frame as it came (same
//! opcode, same fragmentation, unmasked), answers pings, and returns a
//! close. A plain `GET /_stats` answers `conns=N upgrades=M messages=K`,
//! so a run can count the backend connections each proxy opened.
//!
//! It echoes every complete frame of a read with one write, and parses in
//! place: it shares the two cores with the proxy being measured.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::ws::{self, FIN, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

/// Connections accepted, upgrades done and messages echoed since start.
#[derive(Debug, Default)]
pub struct Stats {
    conns: AtomicU64,
    upgrades: AtomicU64,
    messages: AtomicU64,
}

/// Serves `l` forever (on the current runtime).
pub fn spawn(l: TcpListener) -> Arc<Stats> {
    let stats = Arc::new(Stats::default());
    let s = stats.clone();
    super::backend::accept_loop(l, move |conn| {
        let s = s.clone();
        async move {
            s.conns.fetch_add(1, Ordering::Relaxed);
            let _ = serve(conn, &s).await;
        }
    });
    stats
}

/// Reads more into `buf`; `false` at EOF.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.reserve(16 * 1024);
    Ok(s.read_buf(buf).await? > 0)
}

async fn serve(mut s: TcpStream, stats: &Stats) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let end = loop {
        if let Some(end) = ws::head_end(&buf) {
            break end;
        }
        if buf.len() > ws::MAX_HEAD {
            return Err(io::Error::other("request head too large"));
        }
        if !read_more(&mut s, &mut buf).await? {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let path = head.split(' ').nth(1).unwrap_or_default();
    let key = ws::header(&head, "sec-websocket-key");
    let upgrade = ws::has_token(ws::header(&head, "connection"), "upgrade")
        && ws::has_token(ws::header(&head, "upgrade"), "websocket");
    let key = match key {
        Some(key) if upgrade && head.starts_with("GET ") => key,
        _ => {
            let (status, body) = if path == "/_stats" {
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                let body = format!(
                    "conns={} upgrades={} messages={}\n",
                    load(&stats.conns),
                    load(&stats.upgrades),
                    load(&stats.messages)
                );
                ("200 OK", body)
            } else {
                ("400 Bad Request", "WebSocket upgrades only\n".to_owned())
            };
            let r = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(r.as_bytes()).await?;
            return s.shutdown().await;
        }
    };
    let accept = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        ws::accept_key(key)
    );
    s.write_all(accept.as_bytes()).await?;
    stats.upgrades.fetch_add(1, Ordering::Relaxed);
    echo(s, buf, stats).await
}

/// Echoes frames until the client's close (returned) or EOF.
async fn echo(mut s: TcpStream, mut buf: Vec<u8>, stats: &Stats) -> io::Result<()> {
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let mut at = 0;
        let mut closing = false;
        while let Some(f) = ws::parse(&buf[at..]).map_err(io::Error::other)? {
            let payload = &mut buf[at + f.payload.start..at + f.payload.end];
            if let Some(key) = f.mask {
                ws::apply_mask(payload, key);
            }
            match f.opcode {
                OP_CONTINUATION | OP_TEXT | OP_BINARY => {
                    // Same fragmentation as received: the final bit too.
                    let fin = if f.fin { FIN } else { 0 };
                    ws::write_header(&mut out, fin | f.opcode, payload.len(), None);
                    out.extend_from_slice(payload);
                    if f.fin {
                        stats.messages.fetch_add(1, Ordering::Relaxed);
                    }
                }
                OP_PING => {
                    ws::write_header(&mut out, FIN | OP_PONG, payload.len(), None);
                    out.extend_from_slice(payload);
                }
                OP_PONG => {}
                OP_CLOSE => {
                    // Its code back (RFC 6455 §5.5.1), then our FIN.
                    let code = payload.get(..2).unwrap_or_default().to_vec();
                    ws::write_header(&mut out, FIN | OP_CLOSE, code.len(), None);
                    out.extend_from_slice(&code);
                    closing = true;
                }
                op => return Err(io::Error::other(format!("unknown opcode {op:#x}"))),
            }
            at += f.payload.end;
            if closing {
                break;
            }
        }
        buf.drain(..at);
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
        if closing {
            s.shutdown().await?;
            // Wait for the client's FIN so it, not we, holds the TIME_WAIT.
            while read_more(&mut s, &mut buf).await? {
                buf.clear();
            }
            return Ok(());
        }
        if !read_more(&mut s, &mut buf).await? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-process round trip on loopback: handshake, a fragmented
    /// message, a ping, the close.
    #[tokio::test]
    async fn echoes_frames_as_they_came() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stats = spawn(l);
        let mut c = TcpStream::connect(addr).await.unwrap();
        let key = ws::client_key(1);
        let req = format!(
            "GET / HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n\r\n"
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        while ws::head_end(&buf).is_none() {
            assert!(c.read_buf(&mut buf).await.unwrap() > 0);
        }
        let end = ws::head_end(&buf).unwrap();
        let head = std::str::from_utf8(&buf[..end]).unwrap().to_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(
            ws::header(&head, "sec-websocket-accept"),
            Some(ws::accept_key(&key).as_str())
        );
        buf.drain(..end);

        let mask = [9, 8, 7, 6];
        let mut out = Vec::new();
        for (first, op, data) in [
            (0u8, OP_BINARY, &b"hello "[..]),
            (FIN, OP_CONTINUATION, b"world"),
            (FIN, OP_PING, b"p"),
            (FIN, OP_CLOSE, &[0x03, 0xe8][..]),
        ] {
            ws::write_header(&mut out, first | op, data.len(), Some(mask));
            let p = out.len();
            out.extend_from_slice(data);
            ws::apply_mask(&mut out[p..], mask);
        }
        c.write_all(&out).await.unwrap();
        while c.read_buf(&mut buf).await.unwrap() > 0 {}
        let mut got = Vec::new();
        let mut at = 0;
        while let Some(f) = ws::parse(&buf[at..]).unwrap() {
            assert_eq!(f.mask, None);
            got.push((
                f.fin,
                f.opcode,
                buf[at + f.payload.start..at + f.payload.end].to_vec(),
            ));
            at += f.payload.end;
        }
        assert_eq!(at, buf.len());
        assert_eq!(
            got,
            vec![
                (false, OP_BINARY, b"hello ".to_vec()),
                (true, OP_CONTINUATION, b"world".to_vec()),
                (true, OP_PONG, b"p".to_vec()),
                (true, OP_CLOSE, vec![0x03, 0xe8]),
            ]
        );
        assert_eq!(stats.messages.load(Ordering::Relaxed), 1);
        assert_eq!(stats.upgrades.load(Ordering::Relaxed), 1);
    }
}
