//! HTTP/1.1 upgrades (WebSocket): the request goes upstream with its
//! `Upgrade` and `Connection: upgrade`, and when the upstream answers 101
//! both connections are handed over and their bytes relayed as they are —
//! no frame is parsed or injected here.
//!
//! The relay runs beside the client connection's HTTP task, which waits
//! for it (`ConnState::relay`), so the connection's counters, the drain and
//! its closing log line cover the upgraded life too. Its only timer is the
//! connection policy's inactivity timeout (the keep-alive treatment's):
//! the HTTP timers stop at the upgrade.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The protocol a request asks to upgrade to, when it does.
pub(super) fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// Puts the upgrade back on a message whose hop-by-hop headers were
/// stripped: this hop's `Connection: upgrade` and `Upgrade`.
pub(super) fn restore(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol.clone());
}

/// Relays between the client and the upstream once both have upgraded,
/// until either side closes or nothing moves for `idle`.
pub(super) async fn relay(
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: Option<Duration>,
    conn: u64,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(conn, error = %e, "upgrade not completed");
            return;
        }
    };
    let last = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut client = Active {
        io: TokioIo::new(client),
        last: last.clone(),
        started,
    };
    let mut upstream = TokioIo::new(upstream);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    let Some(idle) = idle else {
        let _ = copy.await;
        return;
    };
    loop {
        let since = Duration::from_millis(last.load(Ordering::Relaxed));
        tokio::select! {
            _ = &mut copy => return,
            () = tokio::time::sleep_until(started + since + idle) => {
                let now = Duration::from_millis(last.load(Ordering::Relaxed));
                if now == since {
                    tracing::debug!(conn, idle_ms = idle.as_millis(), "upgraded connection idle: closed");
                    return;
                }
            }
        }
    }
}

/// The client side of a relay, noting when bytes last moved either way.
struct Active<S> {
    io: S,
    last: Arc<AtomicU64>,
    started: Instant,
}

impl<S> Active<S> {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A 101 toward the client from the upstream's: its headers less
/// hop-by-hop ones, with the upgrade restored.
pub(super) fn switching<B>(resp: &Response<B>, protocol: &HeaderValue) -> HeaderMap {
    let mut headers = resp.headers().clone();
    super::headers::strip_hop_by_hop(&mut headers);
    let upstream_protocol = resp.headers().get(header::UPGRADE).unwrap_or(protocol);
    restore(&mut headers, upstream_protocol);
    headers
}
