//! Socket options tokio does not expose, and the accept that does not
//! assume readiness.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

/// Accepts one connection (cancel-safe: the `accept4` runs whole or not at
/// all). Not tokio's `TcpListener::accept`, which marks every accepted
/// stream readable before the kernel says so: a TLS client's ClientHello
/// is rarely there yet when its connection is accepted, so the first read
/// of nearly every connection was an `EAGAIN` — 8.0 `recvfrom` per
/// passthrough connection where HAProxy makes 6.1
/// (`benches/results/2026-12-02-profile.md`). A stream registered here
/// waits for its first readiness event, which the epoll wait that follows
/// delivers anyway.
pub(crate) async fn accept(
    listener: &AsyncFd<std::net::TcpListener>,
) -> io::Result<(TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        let accepted = ready.try_io(|l| {
            socket2::SockRef::from(l.get_ref()).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
        });
        // `Err`: it would block, and the readiness is cleared.
        let Ok(accepted) = accepted else { continue };
        let (socket, addr) = accepted?;
        let peer = addr.as_socket().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "accepted a non-IP socket")
        })?;
        return Ok((TcpStream::from_std(socket.into())?, peer));
    }
}

/// Turns on OS TCP keep-alive with this idle time. Best effort: a socket
/// that refuses (already closed) is about to fail anyway.
pub(crate) fn keepalive(stream: &TcpStream, idle: Duration) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(Duration::from_secs(10));
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "cannot set TCP keep-alive");
    }
}

/// The options an accepted socket starts with, copied by Linux from its
/// listener: set there once, they save two to four `setsockopt` calls per
/// connection, made only when a connection's policy differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Inherited {
    /// `TCP_NODELAY`.
    pub(crate) no_delay: bool,
    /// Keep-alive idle time, if `SO_KEEPALIVE` is on (interval 10 s).
    pub(crate) keep_alive: Option<Duration>,
}

/// Sets `want` on a listener and returns what its accepted sockets will
/// have: what the listener reports back, or the fresh-socket defaults if it
/// cannot say (then every connection sets its own).
pub(crate) fn prepare_listener(listener: &std::net::TcpListener, want: Inherited) -> Inherited {
    let sock = socket2::SockRef::from(listener);
    let _ = sock.set_tcp_nodelay(want.no_delay);
    match want.keep_alive {
        Some(idle) => {
            let ka = socket2::TcpKeepalive::new()
                .with_time(idle)
                .with_interval(Duration::from_secs(10));
            let _ = sock.set_tcp_keepalive(&ka);
        }
        None => {
            let _ = sock.set_keepalive(false);
        }
    }
    read_back(&sock).unwrap_or_default()
}

fn read_back(sock: &socket2::SockRef<'_>) -> std::io::Result<Inherited> {
    let keep_alive = if sock.keepalive()? {
        if sock.tcp_keepalive_interval()? != Duration::from_secs(10) {
            // Not the interval `keepalive` sets: let connections set theirs.
            return Ok(Inherited::default());
        }
        Some(sock.tcp_keepalive_time()?)
    } else {
        None
    };
    Ok(Inherited {
        no_delay: sock.tcp_nodelay()?,
        keep_alive,
    })
}

/// Brings an accepted socket from `had` to `want` (no syscall when equal).
pub(crate) fn apply(stream: &TcpStream, had: Inherited, want: Inherited) {
    if had.no_delay != want.no_delay {
        let _ = stream.set_nodelay(want.no_delay);
    }
    if had.keep_alive != want.keep_alive {
        match want.keep_alive {
            Some(idle) => keepalive(stream, idle),
            None => {
                let _ = socket2::SockRef::from(stream).set_keepalive(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Inherited, prepare_listener, read_back};

    /// The premise of [`Inherited`]: Linux copies these options from a
    /// listener to the sockets it accepts.
    #[tokio::test]
    async fn accepted_sockets_inherit_the_listeners_options() {
        for want in [
            Inherited {
                no_delay: true,
                keep_alive: Some(Duration::from_secs(42)),
            },
            Inherited {
                no_delay: false,
                keep_alive: None,
            },
        ] {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            assert_eq!(prepare_listener(&l, want), want);
            l.set_nonblocking(true).unwrap();
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            let _c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
                .await
                .unwrap();
            let (s, _) = l.accept().await.unwrap();
            let got = read_back(&socket2::SockRef::from(&s)).unwrap();
            assert_eq!(got, want);
        }
    }

    #[tokio::test]
    async fn apply_changes_only_what_differs() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let had = prepare_listener(
            &l,
            Inherited {
                no_delay: true,
                keep_alive: Some(Duration::from_secs(30)),
            },
        );
        l.set_nonblocking(true).unwrap();
        let l = tokio::net::TcpListener::from_std(l).unwrap();
        let _c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (s, _) = l.accept().await.unwrap();
        let want = Inherited {
            no_delay: false,
            keep_alive: None,
        };
        super::apply(&s, had, want);
        assert_eq!(read_back(&socket2::SockRef::from(&s)).unwrap(), want);
    }

    fn listener(addr: &str) -> tokio::io::unix::AsyncFd<std::net::TcpListener> {
        let l = std::net::TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        // SAFETY: as in `accept_loop`: the `AsyncFd` owns the listener.
        #[allow(unsafe_code)]
        unsafe {
            tokio::io::unix::AsyncFd::register(l).unwrap()
        }
    }

    /// The stream `accept` hands over is not assumed readable, so its reads
    /// must come from readiness events: bytes sent before the accept (already
    /// queued when the socket is registered) and after it both arrive, and
    /// the peer is the client's address, on IPv4 and IPv6.
    #[tokio::test]
    async fn accepted_streams_read_what_came_before_and_after_the_accept() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(probe) = std::net::TcpListener::bind(addr) else {
                continue; // no IPv6 on this machine
            };
            drop(probe);
            let l = listener(addr);
            let to = l.get_ref().local_addr().unwrap();
            let mut c = tokio::net::TcpStream::connect(to).await.unwrap();
            c.write_all(b"early").await.unwrap();
            let (mut s, peer) = super::accept(&l).await.unwrap();
            assert_eq!(peer, c.local_addr().unwrap());
            let mut got = [0u8; 5];
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
                .await
                .expect("bytes queued before the accept are read")
                .unwrap();
            assert_eq!(&got, b"early");
            let late = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                c.write_all(b"late!").await.unwrap();
                c
            });
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
                .await
                .expect("bytes sent after the accept wake the reader")
                .unwrap();
            assert_eq!(&got, b"late!");
            drop(late.await.unwrap());
        }
    }
}
