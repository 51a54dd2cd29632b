//! One client connection, from accept to close: the phases before the
//! relay (`pending.rs`: PROXY header in, `admit`, ClientHello peek,
//! `route`, route limits, `policy`), where the routed connection goes
//! ([`dispatch`]), and the relay with its closing log line. Every exit path
//! logs one line with the close reason, and the counters are released by
//! their guards whatever happens.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use turnout_plugin_sdk::{Connection, IdleDecision, IdleStats, TlsMode};

use super::pending::{Pending, Ready, Verdict};
use super::relay::{self, IdleVerdict, Timers, Traffic};
use super::terminate::{self, Terminated};
use super::{Proxy, Settings};
use crate::metrics::Refusal;
use crate::plugins::Chain;

/// State carried from accept to close.
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) tls_port: bool,
    /// The options the socket got from its listener.
    pub(crate) inherited: super::socket::Inherited,
    /// The worker thread it was accepted on.
    pub(crate) worker: usize,
}

/// Runs one connection to the end.
///
/// Two phases, so that an idle connection's task stays small: everything
/// before the relay (PROXY header and ClientHello reads, plugin verdicts,
/// connect with its timeout) runs in a heap allocation of its own, freed
/// when the relay starts; the task itself holds only [`Relaying`] and the
/// relay (a terminated connection's relay, with its TLS state, lives in an
/// allocation of its own, so the L4 path's task does not grow with it). (A
/// plain `fn` returning an `async move` block: an `async fn` would keep a
/// second copy of its arguments in its state.)
pub(crate) fn handle(proxy: Arc<Proxy>, accepted: Accepted) -> impl Future<Output = ()> + Send {
    use futures_util::FutureExt;
    use futures_util::future::Either;
    // `then`, not `if let Some(r) = prepared.await { r.run().await }`:
    // that would keep a moved-from copy of `Relaying` beside the future
    // that owns it.
    Box::pin(prepare(proxy, accepted)).then(|prepared| match prepared {
        Some(Next::Relay(relaying)) => Either::Left(relaying.run()),
        Some(Next::Terminated(t)) => Either::Right(Either::Left(boxed((*t).run()))),
        Some(Next::Http(p)) => Either::Right(Either::Left(boxed(super::serve_http::plain(*p)))),
        Some(Next::Challenge(answer)) => Either::Right(Either::Left(answer)),
        None => Either::Right(Either::Right(std::future::ready(()))),
    })
}

/// A path that owns its connection in an allocation of its own.
type Owned = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

fn boxed(f: impl Future<Output = ()> + Send + 'static) -> Owned {
    Box::pin(f)
}

/// Where a connection goes after the phases before its relay.
#[expect(
    clippy::large_enum_variant,
    reason = "lives only between the phases and the relay; boxing Relaying would cost every L4 connection an allocation"
)]
enum Next {
    /// Passthrough: two TCP sockets.
    Relay(Relaying),
    /// TLS terminated here (boxed: its TLS state is large, and the L4
    /// path's task must not grow with it).
    Terminated(Box<Terminated>),
    /// Plaintext HTTP on an HTTP port (boxed, as `Terminated`).
    Http(Box<Pending>),
    /// An ACME TLS-ALPN-01 validation, answered.
    Challenge(Owned),
}

/// The phase before the relay: `Some` when the connection is to be
/// relayed; a refusal is counted and logged here (or by the path that took
/// the connection over).
async fn prepare(proxy: Arc<Proxy>, accepted: Accepted) -> Option<Next> {
    let mut pending = Pending::new(proxy, accepted);
    let routed = match pending.route_phases().await {
        Ok(Verdict::Routed(r)) => r,
        Ok(Verdict::Http) => return Some(Next::Http(Box::new(pending))),
        Ok(Verdict::AcmeChallenge(cert)) => {
            return Some(Next::Challenge(boxed(terminate::acme_challenge(
                pending, cert,
            ))));
        }
        Err(refusal) => {
            pending.refuse(&refusal);
            return None;
        }
    };
    // Where a routed connection goes: a TLS client on a terminating route
    // to the terminator; everything else to a backend socket and the L4
    // relay.
    if routed.forward.tls_mode != TlsMode::Passthrough {
        if routed.conn.tls.is_none() {
            // A client that does not speak TLS on a route that terminates
            // it: relaying its cleartext would quietly downgrade a route
            // the operator meant to be encrypted.
            pending.refuse(&Refusal::Unsupported(
                "a client that does not speak TLS, routed to a route that terminates TLS",
            ));
            return None;
        }
        let tls = pending.held.proxy.tls.load_full();
        return terminate::start(pending, routed, tls)
            .await
            .map(|t| Next::Terminated(Box::new(t)));
    }
    match pending.connect(routed).await {
        Ok(ready) => Some(Next::Relay(Relaying::new(pending, ready))),
        Err(refusal) => {
            pending.refuse(&refusal);
            None
        }
    }
}

/// A connection being relayed: what its task holds for as long as it
/// lives, so only what the relay, `on-idle` and the closing log need.
struct Relaying {
    // Fields drop in this order: the sockets close, then the metrics
    // handle settles, then the limit counters are released (so once the
    // tracker says no connection is left, the metrics have settled too).
    stream: TcpStream,
    backend: TcpStream,
    meter: crate::metrics::ConnHandle,
    /// Held for their drop: release the route's slot, then the client's
    /// counters.
    _slot: crate::limits::RouteGuard,
    _guard: crate::limits::ClientGuard,
    proxy: Arc<Proxy>,
    chain: Arc<Chain>,
    /// For `on-idle`.
    conn: Connection,
    route: String,
    target: SocketAddr,
    timers: Timers,
    client: SocketAddr,
    sni: Option<String>,
    id: u64,
    started: Instant,
}

impl Relaying {
    fn new(pending: Pending, ready: Ready) -> Self {
        let (stream, _, held) = pending.split();
        Self {
            stream,
            backend: ready.backend,
            meter: held.meter,
            _slot: ready.slot,
            _guard: held.guard,
            proxy: held.proxy,
            chain: held.chain,
            conn: ready.conn,
            route: ready.route,
            target: ready.target,
            timers: ready.timers,
            client: held.client,
            sni: held.sni,
            id: held.id,
            started: held.started,
        }
    }

    /// Relays until the connection ends, then logs how it ended. (`fn` +
    /// `async move`, using `self`'s fields in place: see [`handle`].)
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps a second copy of its arguments"
    )]
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            // Through `this`, the block captures all of `self` (a field
            // it never names, the limit guard, would otherwise be dropped
            // before the relay starts).
            let this = &mut self;
            let traffic = this.meter.traffic();
            let (chain, conn, route, started) =
                (&this.chain, &this.conn, &this.route, this.started);
            let on_idle = |idle| ask_on_idle(chain, conn, route, started, traffic, idle);
            let mut stop = this.proxy.stop.subscribe();
            let stop = std::pin::pin!(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            let reason = relay::relay(
                &mut this.stream,
                &mut this.backend,
                this.timers,
                traffic,
                started,
                on_idle,
                stop,
            )
            .await;
            tracing::info!(
                conn = this.id, client = %this.client, sni = this.sni.as_deref().unwrap_or("-"),
                route = %this.route, target = %this.target,
                bytes_in = traffic.bytes_in.load(Ordering::Relaxed),
                bytes_out = traffic.bytes_out.load(Ordering::Relaxed),
                duration_ms = started.elapsed().as_millis(), reason = reason.as_str(), "closed"
            );
        }
    }
}

/// Asks the chain's `on-idle` about a connection idle for `idle` (the
/// relay's inactivity timer fired): close, or how much longer to wait.
pub(super) fn ask_on_idle(
    chain: &Chain,
    conn: &Connection,
    route: &str,
    started: Instant,
    traffic: &Traffic,
    idle: Duration,
) -> IdleVerdict {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let stats = IdleStats::new(
        route.to_owned(),
        ms(started.elapsed()),
        ms(idle),
        traffic.bytes_in.load(Ordering::Relaxed),
        traffic.bytes_out.load(Ordering::Relaxed),
    );
    match chain.on_idle(conn, &stats) {
        IdleDecision::Extend(ms) => IdleVerdict::Extend(Duration::from_millis(ms)),
        IdleDecision::Close | IdleDecision::Pass => IdleVerdict::Close,
    }
}

impl Settings {
    /// The policy the host applies when no plugin answers `policy`.
    pub fn policy_for(&self, tls: bool) -> turnout_plugin_sdk::Policy {
        let mut p = self.default_policy.clone();
        if tls {
            p.half_open_grace = p.half_open_grace.max(300_000);
            p.stuck_timeout = p.stuck_timeout.map(|s| s.max(300_000));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::limits::ConnectionTracker;
    use crate::metrics::Metrics;
    use crate::plugins::{NoCounters, PluginSet, PluginSettings, Runtime, RuntimeConfig};

    /// Every idle connection is one task holding this future: its size is
    /// most of a connection's memory besides the sockets (the load bench's
    /// RSS per idle connection). A guard against it growing unnoticed.
    #[tokio::test]
    async fn the_connection_future_stays_small() {
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: None,
            pooling: false,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let set = PluginSet::load(
            runtime,
            PluginSettings::default(),
            Vec::new(),
            Arc::new(NoCounters),
        )
        .unwrap();
        let proxy = super::super::Proxy::new(
            super::Settings::default(),
            set,
            ConnectionTracker::new(),
            Metrics::new(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(local).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let fut = super::handle(
            proxy,
            super::Accepted {
                stream,
                peer,
                local,
                tls_port: true,
                inherited: super::super::socket::Inherited::default(),
                worker: 0,
            },
        );
        let size = std::mem::size_of_val(&fut);
        eprintln!("connection future: {size} bytes");
        // 2 488 bytes before the pre-relay phase moved to its own
        // allocation; 1 488 after.
        assert!(size <= 1600, "the connection future grew to {size} bytes");
    }
}
