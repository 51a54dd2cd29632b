//! Moves bytes both ways between client and backend and enforces the
//! connection's timers: inactivity (with the `on-idle` hook able to extend
//! it), maximum lifetime, half-open grace and stuck detection.
//!
//! Both directions and the timer run in one task: a FIN from one side is
//! passed on with `shutdown(Write)` and the other direction keeps flowing.
//! No application-level heartbeat is ever injected — on passthrough the
//! proxy cannot speak inside the encrypted stream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

use crate::metrics::Meters;

mod splice;

/// Buffer per direction. Larger buffers did not raise loopback throughput
/// measurably; smaller ones cost syscalls.
const BUF: usize = 32 * 1024;

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

/// Byte counters of one connection, readable while it runs (admin API).
/// Client-side bytes: what crossed the client socket.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes read from the client.
    pub bytes_in: AtomicU64,
    /// Bytes written to the client.
    pub bytes_out: AtomicU64,
    /// Milliseconds after `started` of the last byte either way.
    last_activity_ms: AtomicU64,
    /// Milliseconds after `started` of the first client byte not yet
    /// followed by any backend byte; 0 = nothing pending.
    unanswered_since_ms: AtomicU64,
    /// The global, client-IP and route counters fed alongside.
    pub(crate) meters: Meters,
}

impl Traffic {
    /// Counters that also feed `meters`.
    pub(crate) fn metered(meters: Meters) -> Self {
        Self {
            meters,
            ..Self::default()
        }
    }

    /// Counts bytes read from the client.
    #[inline]
    pub fn count_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
        self.meters.add_in(n);
    }

    /// Counts bytes written to the client.
    #[inline]
    pub fn count_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
        self.meters.add_out(n);
    }

    /// Milliseconds after the start of the last byte either way (0: none
    /// yet).
    pub fn last_activity_ms(&self) -> u64 {
        self.last_activity_ms.load(Ordering::Relaxed)
    }
}

/// Which side of the relay an I/O error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Backend,
}

fn ms_since(start: Instant) -> u64 {
    // +1 so that "0" can mean "unset" in `unanswered_since_ms`.
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// Buffers kept for reuse per worker thread (beyond them, freed).
const POOLED_BUFFERS: usize = 32;

thread_local! {
    static BUFFERS: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A relay buffer, held only while bytes are moving: an idle connection
/// holds none, which is what keeps its memory to the sockets and the task.
struct Buffer(Option<Box<[u8]>>);

impl Buffer {
    fn take() -> Self {
        let pooled = BUFFERS.with(|b| b.borrow_mut().pop());
        Buffer(Some(
            pooled.unwrap_or_else(|| vec![0u8; BUF].into_boxed_slice()),
        ))
    }

    fn bytes(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or_default()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(buf) = self.0.take() {
            BUFFERS.with(|b| {
                let mut b = b.borrow_mut();
                if b.len() < POOLED_BUFFERS {
                    b.push(buf);
                }
            });
        }
    }
}

/// Bytes moved by `splice(2)` since start, all connections (tests check
/// that bulk transfers take that path).
static SPLICED: AtomicU64 = AtomicU64::new(0);

/// Total bytes relayed through pipes so far.
pub fn spliced_bytes() -> u64 {
    SPLICED.load(Ordering::Relaxed)
}

/// Notes one chunk that crossed the proxy in the direction `from_client`.
fn on_chunk(traffic: &Traffic, from_client: bool, n: usize, started: Instant) {
    let now = ms_since(started);
    traffic.last_activity_ms.store(now, Ordering::Relaxed);
    if from_client {
        traffic.count_in(n as u64);
        let _ = traffic.unanswered_since_ms.compare_exchange(
            0,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    } else {
        traffic.unanswered_since_ms.store(0, Ordering::Relaxed);
    }
}

/// Copies one direction until EOF (then shuts down the writer, passing
/// the FIN on, unless the other direction already ended: the close that
/// follows sends it) or an error, which says which side failed. Waits for
/// the socket to be readable without a buffer; takes one while data flows
/// and gives it back when the socket runs dry. A direction that fills a
/// whole buffer in one read is a bulk transfer: from then on it moves
/// bytes socket → pipe → socket with `splice(2)`, never copying them
/// through user space.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    from_client: bool,
    traffic: &Traffic,
    started: Instant,
    finished: &AtomicBool,
) -> Result<(), (Side, io::ErrorKind)> {
    let (src, dst) = if from_client {
        (Side::Client, Side::Backend)
    } else {
        (Side::Backend, Side::Client)
    };
    // `bulk`: this direction moves by splice; `no_pipe`: it could not get
    // a pipe once (out of descriptors) and stays with buffers.
    let (mut bulk, mut no_pipe) = (false, false);
    loop {
        // `poll_read_ready`, not `readable()`: it honours tokio's
        // cooperative budget, so when `read_once` below is refused for
        // budget (not for lack of data) this yields to the scheduler
        // instead of spinning between the two.
        std::future::poll_fn(|cx| from.as_ref().poll_read_ready(cx))
            .await
            .map_err(|e| (src, e.kind()))?;
        if bulk {
            // Boxed: one allocation per burst of a bulk stream, and the
            // burst's state is not part of every idle connection's task.
            let moved = Box::pin(splice::burst(
                from.as_ref(),
                to.as_ref(),
                |n| on_chunk(traffic, from_client, n, started),
                |n| {
                    SPLICED.fetch_add(n as u64, Ordering::Relaxed);
                    if !from_client {
                        traffic.count_out(n as u64);
                    }
                },
            ))
            .await;
            match moved {
                Ok(splice::Burst::Drained) => continue,
                Ok(splice::Burst::Eof) => {
                    if !finished.swap(true, Ordering::Relaxed) {
                        let _ = to.shutdown().await;
                    }
                    return Ok(());
                }
                // Out of descriptors for a pipe: copy through a buffer.
                Err(splice::Error::NoPipe) => (bulk, no_pipe) = (false, true),
                Err(splice::Error::Read(e)) => return Err((src, e.kind())),
                Err(splice::Error::Write(e)) => return Err((dst, e.kind())),
            }
        }
        let mut buf = Buffer::take();
        loop {
            // One poll of `poll_read`, not `try_read`: after a short read
            // tokio clears the readiness itself, so the next poll is
            // `Pending` without the `recvfrom` that would return EAGAIN.
            let n = match read_once(&mut from, buf.bytes()).await {
                None => break,
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err((src, e.kind())),
            };
            if n == 0 {
                // A peer that already went away cannot take our FIN; that
                // is not a failure of this direction. When the other
                // direction is over too, the close right after sends it.
                if !finished.swap(true, Ordering::Relaxed) {
                    let _ = to.shutdown().await;
                }
                return Ok(());
            }
            on_chunk(traffic, from_client, n, started);
            to.write_all(&buf.bytes()[..n])
                .await
                .map_err(|e| (dst, e.kind()))?;
            if !from_client {
                traffic.count_out(n as u64);
            }
            if n == BUF && !no_pipe {
                bulk = true;
                break;
            }
        }
    }
}

/// Reads what is there now: `None` when nothing is (the socket's
/// readiness is then cleared) or when the task has used up its
/// cooperative budget; either way the caller waits on `poll_read_ready`.
async fn read_once(from: &mut ReadHalf<'_>, buf: &mut [u8]) -> Option<io::Result<usize>> {
    std::future::poll_fn(|cx| {
        let mut rb = tokio::io::ReadBuf::new(buf);
        match std::pin::Pin::new(&mut *from).poll_read(cx, &mut rb) {
            std::task::Poll::Pending => std::task::Poll::Ready(None),
            std::task::Poll::Ready(r) => {
                std::task::Poll::Ready(Some(r.map(|()| rb.filled().len())))
            }
        }
    })
    .await
}

fn error_reason((side, kind): (Side, io::ErrorKind)) -> CloseReason {
    match side {
        Side::Client => CloseReason::ClientError(kind),
        Side::Backend => CloseReason::BackendError(kind),
    }
}

/// Relays until both sides are done or a timer fires. `on_idle` is asked
/// when the inactivity timer fires; `shutdown` ends the relay early.
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
        let up = pump(client_r, backend_w, true, traffic, started, &finished);
        let down = pump(backend_r, client_w, false, traffic, started, &finished);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        let mut half_open_since: Option<Instant> = None;
        // Inactivity is measured from the later of the last byte and the last
        // extension granted by `on-idle`.
        let mut idle_base = started;
        let lifetime_end = timers.max_lifetime.map(|d| started + d);

        loop {
            if up_done && down_done {
                return CloseReason::Completed;
            }
            let now = Instant::now();
            let last_byte =
                started + Duration::from_millis(traffic.last_activity_ms.load(Ordering::Relaxed));
            let idle_from = last_byte.max(idle_base);
            let mut next = now + Duration::from_secs(3600);
            if let Some(d) = timers.inactivity {
                next = next.min(idle_from + d);
            }
            if let Some(end) = lifetime_end {
                next = next.min(end);
            }
            if let Some(since) = half_open_since {
                next = next.min(since + timers.half_open_grace);
            }
            let unanswered = traffic.unanswered_since_ms.load(Ordering::Relaxed);
            if let (Some(d), true) = (timers.stuck, unanswered > 0) {
                next = next.min(started + Duration::from_millis(unanswered) + d);
            }

            tokio::select! {
                r = &mut up, if !up_done => {
                    up_done = true;
                    if let Err(e) = r {
                        return error_reason(e);
                    }
                    half_open_since.get_or_insert_with(Instant::now);
                }
                r = &mut down, if !down_done => {
                    down_done = true;
                    if let Err(e) = r {
                        return error_reason(e);
                    }
                    half_open_since.get_or_insert_with(Instant::now);
                }
                () = shutdown.as_mut() => return CloseReason::Shutdown,
                () = tokio::time::sleep_until(next) => {
                    let now = Instant::now();
                    if lifetime_end.is_some_and(|end| now >= end) {
                        return CloseReason::Lifetime;
                    }
                    if half_open_since.is_some_and(|s| now >= s + timers.half_open_grace) {
                        return CloseReason::HalfOpen;
                    }
                    let unanswered = traffic.unanswered_since_ms.load(Ordering::Relaxed);
                    if let Some(d) = timers.stuck
                        && unanswered > 0
                        && now >= started + Duration::from_millis(unanswered) + d
                    {
                        return CloseReason::Stuck;
                    }
                    if let Some(d) = timers.inactivity {
                        let last = started + Duration::from_millis(traffic.last_activity_ms.load(Ordering::Relaxed));
                        let idle_for = now.saturating_duration_since(last.max(idle_base));
                        if idle_for >= d {
                            match on_idle(now.saturating_duration_since(last)) {
                                IdleVerdict::Close => return CloseReason::Inactivity,
                                // Next check `extra` from now.
                                IdleVerdict::Extend(extra) => {
                                    idle_base = now + extra.saturating_sub(d);
                                }
                            }
                        }
                    }
                }
            }
        }
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
            let pump = super::pump(ar, bw, true, &traffic, started, &finished);
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
}
