//! Socket options tokio does not expose.

use std::time::Duration;

use tokio::net::TcpStream;

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
pub(crate) fn prepare_listener(listener: &tokio::net::TcpListener, want: Inherited) -> Inherited {
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
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            assert_eq!(prepare_listener(&l, want), want);
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
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let had = prepare_listener(
            &l,
            Inherited {
                no_delay: true,
                keep_alive: Some(Duration::from_secs(30)),
            },
        );
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
}
