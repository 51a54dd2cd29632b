//! The relay of an upgraded connection (HTTP/1.1 `Upgrade`, or an HTTP/2
//! extended CONNECT), and — when the protocol is WebSocket and the route
//! asks for it — the proxy's heartbeat: a ping to the client every
//! `pingInterval`, and when neither a pong nor any other byte comes from
//! the client within `pingTimeout`, a close frame (1001) to both sides and
//! the end of both connections.
//!
//! Bytes are forwarded as they come. Each direction follows its frame
//! headers (`frames`) only to know where frames end: a ping or a close
//! frame is written between two frames, never inside one, and a pong from
//! the client is seen. Pongs are forwarded too (RFC 6455 §5.5.3 lets a
//! server receive unsolicited ones), so no byte of either side is dropped
//! or rewritten. A stream whose framing breaks is relayed on untouched and
//! never pinged.
//!
//! The connection's timers apply as to any connection: inactivity (reset
//! by bytes either way, pings included), lifetime, and the half-open
//! grace once one side has closed.

pub mod frames;
mod relay;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Bytes read at once per direction: one TLS record's plaintext.
const BUF: usize = 16 * 1024;
/// After a close frame was sent, the connections end within this long.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The connection's timers once it is upgraded (the connection policy's).
#[derive(Debug, Clone, Copy, Default)]
pub struct UpgradeTimers {
    /// No byte either way for this long: close.
    pub idle: Option<Duration>,
    /// The connection's end of life (its lifetime counted from accept).
    pub deadline: Option<Instant>,
    /// After one side has closed, wait this long for the other.
    pub half_open_grace: Duration,
}

/// The proxy's WebSocket heartbeat on one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heartbeat {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// What one relay needs.
pub(crate) struct Relay {
    pub(crate) conn: u64,
    /// The upstream's route (metrics).
    pub(crate) route: String,
    pub(crate) timers: UpgradeTimers,
    /// The protocol is WebSocket: frames are followed, and counted in the
    /// metrics.
    pub(crate) websocket: bool,
    /// Pings (set only for WebSocket); `None`: none.
    pub(crate) heartbeat: Option<Heartbeat>,
    pub(crate) metrics: Arc<Metrics>,
}

/// Why a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The client closed (or failed) first.
    Client,
    /// The upstream closed (or failed) first.
    Backend,
    /// No pong within `pingTimeout`.
    PingTimeout,
    /// The connection's lifetime is over.
    Lifetime,
    /// Nothing moved for the inactivity timeout.
    Idle,
}

impl End {
    /// The metrics label (one of `metrics::WEBSOCKET_CLOSES`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            End::Client => "client",
            End::Backend => "backend",
            End::PingTimeout => "ping-timeout",
            End::Lifetime => "lifetime",
            End::Idle => "idle",
        }
    }
}

/// Counts a WebSocket open until it is dropped; a relay aborted by the
/// proxy's shutdown counts as `shutdown`.
struct Counted {
    metrics: Arc<Metrics>,
    end: Option<End>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics
            .websocket_closed(self.end.map_or("shutdown", End::as_str));
    }
}

/// Relays `client` and `upstream` until one of the ends above.
pub(crate) async fn relay<C, U>(client: C, upstream: U, r: Relay) -> End
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut counted = r.websocket.then(|| {
        r.metrics.websocket_opened(&r.route);
        Counted {
            metrics: r.metrics.clone(),
            end: None,
        }
    });
    let end = relay::Relaying::new(client, upstream, &r).await;
    tracing::debug!(
        conn = r.conn,
        end = end.as_str(),
        "upgraded connection ended"
    );
    if let Some(c) = &mut counted {
        c.end = Some(end);
    }
    end
}

/// A masking key for the one frame the proxy writes toward an upstream
/// (RFC 6455 §5.3 wants it unpredictable).
pub(super) fn mask_key() -> [u8; 4] {
    let mut key = [0; 4];
    crate::net::random(&mut key);
    key
}
