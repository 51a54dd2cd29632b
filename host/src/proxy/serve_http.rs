//! Hands a connection that speaks HTTP to `crate::http`: a plaintext
//! client on an HTTP port (right after the peek), or a terminated TLS
//! client on an HTTP route (after the handshake). The connection's
//! bookkeeping (`Held`: limit counters, metrics handle) lives until the
//! HTTP connection ends, and one closing line is logged as on every path.

use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncWrite};
use turnout_plugin_sdk::Upstream;

use super::pending::{Held, Pending};
use super::terminate::Metered;
use crate::http::{self, Session};
use crate::tls::Prefixed;

/// What an HTTP connection needs from the path that found it.
pub(super) struct HttpConn {
    pub(super) local: std::net::SocketAddr,
    pub(super) peer: std::net::SocketAddr,
    pub(super) https: bool,
    pub(super) alpn: Option<Vec<u8>>,
    pub(super) route: Option<Upstream>,
    /// The connection policy's timers, for upgraded (WebSocket)
    /// connections.
    pub(super) timers: super::relay::Timers,
    /// Let in before `admit` as an ACME validation: only that is answered.
    pub(super) acme_only: bool,
}

/// A plaintext client on an HTTP port: the bytes the peek read are replayed
/// to hyper first.
pub(super) async fn plain(pending: Pending) {
    let (local, peer, acme_only) = (pending.local, pending.peer, pending.acme_only);
    let (stream, peeked, held) = pending.split();
    // The peeked bytes crossed the client socket: they count as "in", once.
    held.meter.traffic().count_in(peeked.len() as u64);
    let io = Metered::new(Prefixed::new(peeked, stream), held.meter.traffic_handle());
    // No route, so no `policy` answer: the host's default policy.
    let settings = held.proxy.settings.load();
    let timers = super::relay::Timers::from_policy(&settings.policy_for(false));
    let conn = HttpConn {
        local,
        peer,
        https: false,
        alpn: None,
        route: None,
        timers,
        acme_only,
    };
    run(io, conn, held).await;
}

/// Serves HTTP on `io` until it ends, then logs the connection's close.
pub(super) async fn run<IO>(io: IO, conn: HttpConn, held: Held)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let proxy = &held.proxy;
    let settings = proxy.settings.load_full();
    let route = conn.route.as_ref().map(|r| r.route.clone());
    let session = Session {
        chain: held.chain.clone(),
        metrics: proxy.metrics.clone(),
        config: settings.http,
        connect_timeout: settings.connect_timeout,
        trusted: settings.trusted_proxies.clone(),
        routes: held.guard.route_entry(),
        tls: proxy.tls.load_full(),
        id: held.id,
        client: held.client,
        peer: conn.peer,
        local: conn.local,
        forwarded: http::Session::forwarded_values(held.client, conn.local),
        sni: held.sni.clone(),
        https: conn.https,
        alpn: conn.alpn,
        route: conn.route,
        upgrade: http::UpgradeTimers {
            idle: conn.timers.inactivity,
            // A lifetime counts from accept, upgraded or not.
            deadline: conn.timers.max_lifetime.map(|l| held.started + l),
            half_open_grace: conn.timers.half_open_grace,
        },
        acme: proxy.acme().map(|a| a.challenges().clone()),
        acme_only: conn.acme_only,
    };
    let (mut draining, mut stop) = (proxy.draining.subscribe(), proxy.stop.subscribe());
    let ends = http::Ends {
        draining: async move {
            let _ = draining.wait_for(|d| *d).await;
        },
        stop: async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    };
    let closed = http::serve(io, session, ends).await;
    let traffic = held.meter.traffic();
    tracing::info!(
        conn = held.id, client = %held.client, sni = held.sni.as_deref().unwrap_or("-"),
        route = route.as_deref().unwrap_or("-"), protocol = "http",
        bytes_in = traffic.bytes_in.load(Ordering::Relaxed),
        bytes_out = traffic.bytes_out.load(Ordering::Relaxed),
        duration_ms = held.started.elapsed().as_millis(), reason = closed.as_str(), "closed"
    );
}
