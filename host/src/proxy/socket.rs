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
