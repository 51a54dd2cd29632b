//! Moves bytes both ways between client and backend and enforces the
//! connection's timers: inactivity (with the `on-idle` hook able to extend
//! it), maximum lifetime, half-open grace and stuck detection.
//!
//! Both directions and the timer run in one task: a FIN from one side is
//! passed on with `shutdown(Write)` and the other direction keeps flowing.
//! No application-level heartbeat is ever injected — on passthrough the
//! proxy cannot speak inside the encrypted stream.
//!
//! Two entry points share the timers ([`supervise`]): [`relay`] for two
//! plain TCP sockets (the L4 fast path: readiness without buffers, splice
//! for bulk) and [`relay_streams`] for any pair of streams (a terminated
//! TLS stream, an upgraded HTTP connection). The copying loops are in
//! `relay/pump.rs`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use crate::metrics::Traffic;
use pump::Side;
pub use pump::spliced_bytes;

mod pump;
mod splice;

/// Buffer per direction. Larger buffers did not raise loopback throughput
/// measurably; smaller ones cost syscalls.
const BUF: usize = 32 * 1024;

/// The shortest extension `on-idle` gets: asked again sooner, a plugin
/// answering `extend(0)` would be called in a loop on the worker thread.
pub const MIN_EXTENSION: Duration = Duration::from_millis(100);

/// The timers of one connection (from the policy). `None` is never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// No bytes either way for this long: ask `on-idle`, then close.
    pub inactivity: Option<Duration>,
    /// Hard cap on age, counted from `started`.
    pub max_lifetime: Option<Duration>,
    /// After one side has closed, wait this long for the other.
    pub half_open_grace: Duration,
    /// Client bytes unanswered for this long: close.
    pub stuck: Option<Duration>,
}

impl Timers {
    /// The timers a policy sets (milliseconds; `None` is never).
    pub fn from_policy(policy: &turnout_plugin_sdk::Policy) -> Self {
        let ms = Duration::from_millis;
        Self {
            inactivity: policy.inactivity_timeout.map(ms),
            max_lifetime: policy.max_lifetime.map(ms),
            half_open_grace: ms(policy.half_open_grace),
            stuck: policy.stuck_timeout.map(ms),
        }
    }
}

/// Why a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides closed their write side cleanly.
    Completed,
    /// Inactivity timeout (and `on-idle` did not extend).
    Inactivity,
    /// Maximum lifetime reached.
    Lifetime,
    /// One side closed and the other did not within the grace period.
    HalfOpen,
    /// The backend stopped answering the client.
    Stuck,
    /// Reading from or writing to the client failed (reset, …).
    ClientError(io::ErrorKind),
    /// Reading from or writing to the backend failed.
    BackendError(io::ErrorKind),
    /// The proxy is shutting down.
    Shutdown,
}

impl CloseReason {
    /// Stable label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::Completed => "completed",
            CloseReason::Inactivity => "inactivity",
            CloseReason::Lifetime => "lifetime",
            CloseReason::HalfOpen => "half-open",
            CloseReason::Stuck => "stuck",
            CloseReason::ClientError(_) => "client-error",
            CloseReason::BackendError(_) => "backend-error",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// What `on-idle` answered, in host terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleVerdict {
    /// Close now.
    Close,
    /// Keep going; check again after this long.
    Extend(Duration),
}

fn error_reason((side, kind): (Side, io::ErrorKind)) -> CloseReason {
    match side {
        Side::Client => CloseReason::ClientError(kind),
        Side::Backend => CloseReason::BackendError(kind),
    }
}

/// Drives both directions and the connection's timers until both
/// directions are done, one fails, a timer fires or `shutdown` resolves;
/// evaluates to the [`CloseReason`].
///
/// A macro, expanded inside each entry point's own `async` block, rather
/// than a function returning a future: a nested future keeps its own copy
/// of the timers, the `on-idle` closure and the shutdown future beside the
/// caller's (the relay future grew from ≤ 800 to 864 bytes that way), and
/// this future is most of an idle connection's memory.
macro_rules! supervise {
    ($up:ident, $down:ident, $timers:ident, $traffic:ident, $started:ident,
     $on_idle:ident, $shutdown:ident) => {{
        let (mut up_done, mut down_done) = (false, false);
        let mut half_open_since: Option<Instant> = None;
        // `on-idle` may extend the connection by any amount, shorter or
        // longer than the inactivity timeout: until this instant the
        // inactivity check waits even with no bytes moving.
        let mut extended_until = $started;
        let lifetime_end = $timers.max_lifetime.map(|d| $started + d);
        let last_byte = || $started + Duration::from_millis($traffic.last_activity_ms());
        // When the inactivity check is due: `d` after the last byte, or the
        // end of an extension, whichever is later.
        let idle_due = |d: Duration, extended_until: Instant| (last_byte() + d).max(extended_until);

        loop {
            if up_done && down_done {
                return CloseReason::Completed;
            }
            let now = Instant::now();
            let mut next = now + Duration::from_secs(3600);
            if let Some(d) = $timers.inactivity {
                next = next.min(idle_due(d, extended_until));
            }
            if let Some(end) = lifetime_end {
                next = next.min(end);
            }
            if let Some(since) = half_open_since {
                next = next.min(since + $timers.half_open_grace);
            }
            let unanswered = $traffic.unanswered_since_ms();
            if let (Some(d), true) = ($timers.stuck, unanswered > 0) {
                next = next.min($started + Duration::from_millis(unanswered) + d);
            }

            tokio::select! {
                r = $up.as_mut(), if !up_done => {
                    up_done = true;
                    if let Err(e) = r {
                        return error_reason(e);
                    }
                    half_open_since.get_or_insert_with(Instant::now);
                }
                r = $down.as_mut(), if !down_done => {
                    down_done = true;
                    if let Err(e) = r {
                        return error_reason(e);
                    }
                    half_open_since.get_or_insert_with(Instant::now);
                }
                () = $shutdown.as_mut() => return CloseReason::Shutdown,
                () = tokio::time::sleep_until(next) => {
                    let now = Instant::now();
                    if lifetime_end.is_some_and(|end| now >= end) {
                        return CloseReason::Lifetime;
                    }
                    if half_open_since.is_some_and(|s| now >= s + $timers.half_open_grace) {
                        return CloseReason::HalfOpen;
                    }
                    let unanswered = $traffic.unanswered_since_ms();
                    if let Some(d) = $timers.stuck
                        && unanswered > 0
                        && now >= $started + Duration::from_millis(unanswered) + d
                    {
                        return CloseReason::Stuck;
                    }
                    if let Some(d) = $timers.inactivity
                        && now >= idle_due(d, extended_until)
                    {
                        match $on_idle(now.saturating_duration_since(last_byte())) {
                            IdleVerdict::Close => return CloseReason::Inactivity,
                            // Next check `extra` from now, however short.
                            IdleVerdict::Extend(extra) => {
                                extended_until = now + extra.max(MIN_EXTENSION);
                            }
                        }
                    }
                }
            }
        }
    }};
}

/// Relays between two plain TCP sockets until both sides are done or a
/// timer fires. `on_idle` is asked when the inactivity timer fires;
/// `shutdown` ends the relay early.
///
/// A plain `fn` returning an `async move` block, not an `async fn`: an
/// `async fn` moves its arguments into locals and keeps both copies in its
/// state, and this future lives as long as the connection.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments"
)]
pub fn relay<'a, I, S>(
    client: &'a mut TcpStream,
    backend: &'a mut TcpStream,
    timers: Timers,
    traffic: &'a Traffic,
    started: Instant,
    mut on_idle: I,
    mut shutdown: Pin<&'a mut S>,
) -> impl Future<Output = CloseReason> + 'a
where
    I: FnMut(Duration) -> IdleVerdict + 'a,
    S: Future<Output = ()> + ?Sized + 'a,
{
    async move {
        // Borrowed halves: no lock around each read and write, unlike
        // `tokio::io::split`.
        let (client_r, client_w) = client.split();
        let (backend_r, backend_w) = backend.split();
        // Set by the first direction to end (see `pump`).
        let finished = AtomicBool::new(false);
        let up = pump::pump(client_r, backend_w, true, traffic, started, &finished);
        let down = pump::pump(backend_r, client_w, false, traffic, started, &finished);
        tokio::pin!(up, down);
        supervise!(up, down, timers, traffic, started, on_idle, shutdown)
    }
}

/// [`relay`] for any two streams: a terminated TLS stream toward the
/// client, a TLS client toward the backend, an upgraded HTTP connection.
/// The same timers; each direction holds a buffer while the connection
/// lives (such streams cannot say they are readable without being read).
/// Bytes are not counted here: the client stream counts what crosses its
/// socket (TLS records, not plaintext).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments"
)]
pub fn relay_streams<'a, C, B, I, S>(
    client: &'a mut C,
    backend: &'a mut B,
    timers: Timers,
    traffic: &'a Traffic,
    started: Instant,
    mut on_idle: I,
    mut shutdown: Pin<&'a mut S>,
) -> impl Future<Output = CloseReason> + 'a
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
    I: FnMut(Duration) -> IdleVerdict + 'a,
    S: Future<Output = ()> + ?Sized + 'a,
{
    async move {
        let (client_r, client_w) = tokio::io::split(client);
        let (backend_r, backend_w) = tokio::io::split(backend);
        let up = pump::copy(client_r, backend_w, true, traffic, started);
        let down = pump::copy(backend_r, client_w, false, traffic, started);
        tokio::pin!(up, down);
        supervise!(up, down, timers, traffic, started, on_idle, shutdown)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{IdleVerdict, Timers, Traffic};

    /// An idle connection's task holds these futures: a guard against them
    /// growing unnoticed (the connection future's own test covers the sum).
    #[tokio::test]
    async fn the_relay_futures_stay_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut a = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (mut b, _) = l.accept().await.unwrap();
        let traffic = Traffic::default();
        let started = Instant::now();
        let finished = AtomicBool::new(false);
        {
            let (ar, _) = a.split();
            let (_, bw) = b.split();
            let pump = super::pump::pump(ar, bw, true, &traffic, started, &finished);
            eprintln!("pump future: {} bytes", std::mem::size_of_val(&pump));
        }
        let timers = Timers {
            inactivity: None,
            max_lifetime: None,
            half_open_grace: Duration::from_secs(1),
            stuck: None,
        };
        let never = std::pin::pin!(std::future::pending());
        let relay = super::relay(
            &mut a,
            &mut b,
            timers,
            &traffic,
            started,
            |_| IdleVerdict::Close,
            never,
        );
        let size = std::mem::size_of_val(&relay);
        eprintln!("relay future: {size} bytes");
        assert!(size <= 800, "the relay future grew to {size} bytes");
    }

    fn timers(inactivity: Option<Duration>) -> Timers {
        Timers {
            inactivity,
            max_lifetime: None,
            half_open_grace: Duration::from_secs(1),
            stuck: None,
        }
    }

    /// Any pair of streams relays both ways, passes each FIN on, and
    /// notes the activity.
    #[tokio::test]
    async fn streams_relay_both_ways_and_complete() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client_app, mut client_side) = tokio::io::duplex(1024);
        let (mut backend_side, mut backend_app) = tokio::io::duplex(1024);
        let traffic = Traffic::default();
        let started = Instant::now();
        let never = std::pin::pin!(std::future::pending());
        let relay = super::relay_streams(
            &mut client_side,
            &mut backend_side,
            timers(None),
            &traffic,
            started,
            |_| IdleVerdict::Close,
            never,
        );
        let peers = async {
            client_app.write_all(b"hello").await.unwrap();
            client_app.shutdown().await.unwrap();
            let mut got = Vec::new();
            backend_app.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello");
            backend_app.write_all(b"world!").await.unwrap();
            backend_app.shutdown().await.unwrap();
            let mut back = Vec::new();
            client_app.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, b"world!");
        };
        let (reason, ()) = tokio::join!(relay, peers);
        assert_eq!(reason, super::CloseReason::Completed);
        assert!(traffic.last_activity_ms() > 0, "activity noted");
    }

    /// Relays two idle streams with a 300 ms inactivity timeout, `on-idle`
    /// answering each of `extensions` in turn and then closing; returns
    /// when (virtual ms after the start) it was asked.
    async fn asked_at(extensions: &[Duration]) -> Vec<u128> {
        let (_client_app, mut client_side) = tokio::io::duplex(64);
        let (mut backend_side, _backend_app) = tokio::io::duplex(64);
        let traffic = Traffic::default();
        let started = Instant::now();
        let never = std::pin::pin!(std::future::pending());
        let mut asked = Vec::new();
        let reason = super::relay_streams(
            &mut client_side,
            &mut backend_side,
            timers(Some(Duration::from_millis(300))),
            &traffic,
            started,
            |_| {
                asked.push(started.elapsed().as_millis());
                extensions
                    .get(asked.len() - 1)
                    .map_or(IdleVerdict::Close, |&d| IdleVerdict::Extend(d))
            },
            never,
        )
        .await;
        assert_eq!(reason, super::CloseReason::Inactivity);
        asked
    }

    /// `on-idle` extending by less than the inactivity timeout is asked
    /// again after the extension, not after another full timeout.
    #[tokio::test(start_paused = true)]
    async fn a_short_extension_fires_after_its_own_length() {
        let asked = asked_at(&[Duration::from_millis(150)]).await;
        assert_eq!(asked, [300, 450], "on-idle asked at (virtual) ms");
    }

    /// A long extension still waits its whole length.
    #[tokio::test(start_paused = true)]
    async fn a_long_extension_waits_its_whole_length() {
        assert_eq!(asked_at(&[Duration::from_secs(1)]).await, [300, 1300]);
    }

    /// `extend(0)` (a plugin computing what is left of a budget) waits the
    /// shortest extension instead of asking again at once, in a loop.
    #[tokio::test(start_paused = true)]
    async fn a_zero_extension_waits_the_shortest_one() {
        let step = super::MIN_EXTENSION.as_millis();
        assert_eq!(
            asked_at(&[Duration::ZERO, Duration::ZERO]).await,
            [300, 300 + step, 300 + 2 * step]
        );
    }
}
