//! Connecting to a route's targets: in order, each within the connect
//! timeout, moving on after a refusal, reset or timeout.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use turnout_plugin_sdk::Target;

/// Why no target could be reached (the last failure, and how many were tried).
#[derive(Debug, thiserror::Error)]
#[error("no target reachable ({tried} tried); last: {target}: {reason}")]
pub struct ConnectError {
    /// Targets tried.
    pub tried: usize,
    /// The last target, as `host:port`.
    pub target: String,
    /// What happened to it.
    pub reason: String,
}

/// Connects to the first target that answers.
pub async fn connect_any(
    targets: &[Target],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    connect_first(targets, timeout)
        .await
        .map(|(s, addr, _)| (s, addr))
}

/// [`connect_any`], also saying which target answered (re-encryption
/// verifies the backend as that target's name).
pub(super) async fn connect_first(
    targets: &[Target],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr, &Target), ConnectError> {
    let mut last = ConnectError {
        tried: 0,
        target: String::new(),
        reason: "route has no targets".to_owned(),
    };
    for t in targets {
        last.tried += 1;
        last.target = format!("{}:{}", t.host, t.port);
        match tokio::time::timeout(timeout, connect_one(t)).await {
            Ok(Ok((s, addr))) => return Ok((s, addr, t)),
            Ok(Err(e)) => last.reason = e.to_string(),
            Err(_) => last.reason = format!("connect timed out after {} ms", timeout.as_millis()),
        }
    }
    Err(last)
}

async fn connect_one(t: &Target) -> io::Result<(TcpStream, SocketAddr)> {
    // Host names resolve to several addresses; try each, like a browser
    // would, within the same overall timeout.
    let mut err = io::Error::new(io::ErrorKind::NotFound, "host name resolved to no address");
    for addr in tokio::net::lookup_host((t.host.as_str(), t.port)).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok((s, addr)),
            Err(e) => err = e,
        }
    }
    Err(err)
}
