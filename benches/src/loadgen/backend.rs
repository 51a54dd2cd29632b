//! The loopback backends every proxy under test forwards to:
//!
//! * a TLS echo server (rustls): handshake, then echo until EOF — what the
//!   new-connection, idle and latency loads talk to;
//! * a plain echo server: the same echo without TLS, behind proxies that
//!   terminate TLS themselves;
//! * a bulk server: reads the ClientHello record the client opens with
//!   (so proxies route it on SNI like any TLS stream), then a command —
//!   `U` + u64: read that many bytes and answer the count; `D` + u64:
//!   send that many bytes — without any encryption on the payload;
//! * a plain HTTP/1.1 keep-alive server ([`super::http_backend`]) behind
//!   the proxies in the HTTP scenarios;
//! * a plain WebSocket echo server ([`super::ws_backend`]) behind the
//!   proxies in the WebSocket scenario.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Upload: the client sends the bytes.
pub const OP_UPLOAD: u8 = b'U';
/// Download: the server sends the bytes.
pub const OP_DOWNLOAD: u8 = b'D';
/// Chunk size of bulk reads and writes.
pub const CHUNK: usize = 256 * 1024;

/// Where the backends listen.
#[derive(Debug, Clone, Copy)]
pub struct Backends {
    /// The TLS echo server.
    pub tls: SocketAddr,
    /// The bulk server.
    pub bulk: SocketAddr,
    /// The plain (unencrypted) echo server, on `tls`'s address, any port.
    pub plain: SocketAddr,
    /// The plain HTTP/1.1 server, on `tls`'s address, any port.
    pub http: SocketAddr,
    /// The plain WebSocket echo server, on `tls`'s address, any port.
    pub ws: SocketAddr,
}

/// A listener with a backlog deep enough for bursts of new connections.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(4096)
}

/// Accepts forever; on EMFILE and friends backs off instead of spinning.
pub(super) fn accept_loop<F, Fut>(l: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match l.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(serve(s));
                }
                Err(e) => {
                    eprintln!("backend: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
}

/// Starts the backends (port 0 picks free ports) on the current runtime.
pub async fn start(
    tls_listen: SocketAddr,
    bulk_listen: SocketAddr,
    names: &[String],
) -> Result<Backends, String> {
    let config = super::tls::server_config(names)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = listen(tls_listen).map_err(|e| format!("listen on {tls_listen}: {e}"))?;
    let bulk = listen(bulk_listen).map_err(|e| format!("listen on {bulk_listen}: {e}"))?;
    let plain_listen = SocketAddr::new(tls_listen.ip(), 0);
    let plain = listen(plain_listen).map_err(|e| format!("listen on {plain_listen}: {e}"))?;
    let http = listen(plain_listen).map_err(|e| format!("listen on {plain_listen}: {e}"))?;
    let ws = listen(plain_listen).map_err(|e| format!("listen on {plain_listen}: {e}"))?;
    let addrs = Backends {
        tls: tls.local_addr().map_err(|e| e.to_string())?,
        bulk: bulk.local_addr().map_err(|e| e.to_string())?,
        plain: plain.local_addr().map_err(|e| e.to_string())?,
        http: http.local_addr().map_err(|e| e.to_string())?,
        ws: ws.local_addr().map_err(|e| e.to_string())?,
    };
    let acceptor = Arc::new(acceptor);
    accept_loop(tls, move |s| {
        let acceptor = acceptor.clone();
        async move {
            let _ = echo(&acceptor, s).await;
        }
    });
    accept_loop(bulk, |s| async move {
        let _ = bulk_serve(s).await;
    });
    accept_loop(plain, |s| async move {
        let _ = plain_echo(s).await;
    });
    super::http_backend::spawn(http);
    super::ws_backend::spawn(ws);
    Ok(addrs)
}

/// Echo until EOF, then FIN; what a terminating proxy relays the
/// decrypted stream to.
async fn plain_echo(mut s: TcpStream) -> io::Result<()> {
    // Small: the idle load holds thousands of these open.
    let mut buf = vec![0u8; 4096];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        s.write_all(&buf[..n]).await?;
    }
}

async fn echo(acceptor: &tokio_rustls::TlsAcceptor, s: TcpStream) -> io::Result<()> {
    let mut tls = tokio::time::timeout(Duration::from_secs(30), acceptor.accept(s))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake"))??;
    // Small: the idle load holds thousands of these open.
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return tls.shutdown().await;
        }
        tls.write_all(&buf[..n]).await?;
        tls.flush().await?;
    }
}

/// Reads the one TLS record the client opens with, then the command.
async fn bulk_serve(mut s: TcpStream) -> io::Result<()> {
    let mut header = [0u8; 5];
    s.read_exact(&mut header).await?;
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let mut record = vec![0u8; len];
    s.read_exact(&mut record).await?;
    let mut cmd = [0u8; 9];
    s.read_exact(&mut cmd).await?;
    let mut count = [0u8; 8];
    count.copy_from_slice(&cmd[1..]);
    let total = u64::from_be_bytes(count);
    let mut buf = vec![0u8; CHUNK];
    match cmd[0] {
        OP_UPLOAD => {
            let mut got = 0u64;
            while got < total {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            s.write_all(&got.to_be_bytes()).await?;
        }
        OP_DOWNLOAD => {
            buf.fill(0x5a);
            let mut left = total;
            while left > 0 {
                let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                s.write_all(&buf[..n]).await?;
                left -= n as u64;
            }
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown bulk command {other:#x}"),
            ));
        }
    }
    s.shutdown().await?;
    // Wait for the client's FIN so it, not we, holds the TIME_WAIT.
    while s.read(&mut buf).await? > 0 {}
    Ok(())
}
