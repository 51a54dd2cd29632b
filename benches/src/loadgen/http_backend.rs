//! The plain HTTP/1.1 backend behind the proxies in the HTTP scenarios:
//! keep-alive, one fixed small answer per request, and a `/_stats` path
//! that says how many connections and requests it has seen, so a run can
//! report how many backend connections each proxy opened.
//!
//! Hand-written rather than hyper: it must cost as little as possible on
//! the two cores the proxy and the client share, and the proxies only send
//! it `GET`s without bodies. It still honours `Content-Length` bodies and
//! `Connection: close`/HTTP/1.0, and refuses chunked bodies (never sent).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes of the body every request gets (as peers.md's runs: 128).
pub const BODY_BYTES: usize = 128;
/// The path answering `conns=N requests=M`.
pub const STATS_PATH: &str = "/_stats";
/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Connections accepted and requests answered since start.
#[derive(Debug, Default)]
pub struct Stats {
    conns: AtomicU64,
    requests: AtomicU64,
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

fn fixed_response() -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {BODY_BYTES}\r\n\r\n"
    )
    .into_bytes();
    r.extend((0..BODY_BYTES).map(|i| b'a' + (i % 26) as u8));
    r
}

/// What the backend needs from a request head.
struct Head {
    /// Bytes of the head, the blank line included.
    len: usize,
    body: usize,
    close: bool,
    stats: bool,
}

fn parse(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err("request head too large".into())
        } else {
            Ok(None)
        };
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut words = line.split(' ');
    let (_method, path, version) = (words.next(), words.next(), words.next());
    let mut head = Head {
        len: end + 4,
        body: 0,
        close: version != Some("HTTP/1.1"),
        stats: path == Some(STATS_PATH),
    };
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.body = value.parse().map_err(|_| "bad content-length")?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked request bodies are not supported".into());
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            head.close = v.contains("close") || (head.close && !v.contains("keep-alive"));
        }
    }
    Ok(Some(head))
}

async fn serve(mut s: TcpStream, stats: &Stats) -> io::Result<()> {
    let fixed = fixed_response();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let head = loop {
            match parse(&buf).map_err(io::Error::other)? {
                Some(h) => break h,
                None => {
                    let n = s.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        };
        while buf.len() < head.len + head.body {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..head.len + head.body);
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if head.stats {
            let body = format!(
                "conns={} requests={}\n",
                stats.conns.load(Ordering::Relaxed),
                stats.requests.load(Ordering::Relaxed)
            );
            let r = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(r.as_bytes()).await?;
        } else {
            s.write_all(&fixed).await?;
        }
        if head.close {
            return s.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_for_length_and_keep_alive() {
        let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert_eq!((h.body, h.close, h.stats), (3, false, false));
        assert_eq!(h.len, 46);
        let h = parse(b"GET /_stats HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(h.close && h.stats);
        let h = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.close);
        let h = parse(b"GET / HTTP/1.1\r\nconnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.close);
        assert!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        assert!(parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }
}
