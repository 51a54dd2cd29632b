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

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use self::frames::{Frames, PONG};
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
    /// Pings (WebSocket only); `None`: none.
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
    let sh = Shared::new(r.websocket);
    let (client_rd, client_wr) = tokio::io::split(client);
    let (upstream_rd, upstream_wr) = tokio::io::split(upstream);
    let up = pump(client_rd, upstream_wr, Dir::Up, &sh, r.conn);
    let down = pump(upstream_rd, client_wr, Dir::Down, &sh, r.conn);
    let beat = beat(r.heartbeat.filter(|_| r.websocket), &sh, &r.metrics);
    let end = run(Pumps { up, down }, beat, &sh, r.timers).await;
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

/// State the two directions and the heartbeat share. They run in one task
/// (`run` polls them all on every wake), so a flag set by one is seen by
/// the others at their next poll: whoever sets one yields once so that
/// poll comes. (A `Notify` per read cost a waiter registration per
/// message, measured at ~2 % of the relay's CPU.) Atomics only, so the
/// future stays `Send`.
struct Shared {
    started: Instant,
    /// Milliseconds from `started` to the last byte either way.
    last: AtomicU64,
    /// Frames are followed (WebSocket, framing intact).
    tracking: AtomicBool,
    /// A ping is wanted toward the client.
    ping: AtomicBool,
    /// Close frames are wanted toward both sides, then the end.
    closing: AtomicBool,
    /// Pongs seen from the client.
    pongs: AtomicU64,
    /// Reads from the client so far: a client still sending (say, a long
    /// frame its pong must wait behind) is alive.
    client_reads: AtomicU64,
    /// Pings the down direction wrote.
    pinged: AtomicU64,
}

impl Shared {
    fn new(tracking: bool) -> Self {
        Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
            tracking: AtomicBool::new(tracking),
            ping: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            pongs: AtomicU64::new(0),
            client_reads: AtomicU64::new(0),
            pinged: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// Something is to be written into `dir` at its next frame boundary.
    fn wanted(&self, dir: Dir) -> bool {
        self.closing.load(Ordering::Relaxed)
            || (dir == Dir::Down && self.ping.load(Ordering::Relaxed))
    }

    /// Close frames are wanted: `run` polls the directions right after.
    fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }
}

/// A read from a direction's source, or `None` as soon as something is
/// wanted in that direction (checked on every poll, before reading).
struct ReadOrWanted<'a, R> {
    from: &'a mut R,
    buf: &'a mut [u8],
    sh: &'a Shared,
    dir: Dir,
}

impl<R: AsyncRead + Unpin> Future for ReadOrWanted<'_, R> {
    type Output = Option<std::io::Result<usize>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.sh.wanted(this.dir) {
            return Poll::Ready(None);
        }
        let mut rb = ReadBuf::new(this.buf);
        match Pin::new(&mut *this.from).poll_read(cx, &mut rb) {
            Poll::Ready(r) => Poll::Ready(Some(r.map(|()| rb.filled().len()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A direction: client to upstream (`Up`) or upstream to client (`Down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Up = 0,
    Down = 1,
}

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// Its source closed (or failed): the source's side ended first.
    Source,
    /// Writing to its destination failed.
    Destination,
    /// It wrote its close frame (or could not, mid-frame) and shut down.
    Closed,
}

/// Forwards `from` to `to`, writing the wanted ping or close frame at
/// frame boundaries.
async fn pump<R, W>(mut from: R, mut to: W, dir: Dir, sh: &Shared, conn: u64) -> Done
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let tracking = sh.tracking.load(Ordering::Relaxed);
    let mut frames = tracking.then(|| Frames::new(dir == Dir::Up));
    let mut buf = vec![0; BUF];
    loop {
        if let Some(done) = inject(&mut to, dir, frames.as_ref(), sh).await {
            return done;
        }
        let read = ReadOrWanted {
            from: &mut from,
            buf: &mut buf,
            sh,
            dir,
        };
        let n = match read.await {
            // Wanted here: written at the top of the loop once at a
            // boundary (or after the frame in flight).
            None if frames.as_ref().is_some_and(Frames::at_boundary)
                || sh.closing.load(Ordering::Relaxed) =>
            {
                continue;
            }
            None => match (ReadOnly {
                from: &mut from,
                buf: &mut buf,
            })
            .await
            {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return Done::Source;
                }
                Ok(n) => n,
            },
            Some(Ok(0) | Err(_)) => {
                let _ = to.shutdown().await;
                return Done::Source;
            }
            Some(Ok(n)) => n,
        };
        sh.touch();
        if dir == Dir::Up {
            sh.client_reads.fetch_add(1, Ordering::Relaxed);
        }
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let k = match follow(&mut frames, rest, dir, sh) {
                Ok(k) => k,
                Err(broken) => {
                    tracing::debug!(
                        conn,
                        ?broken,
                        ?dir,
                        "not WebSocket framing: relayed untouched, no heartbeat"
                    );
                    sh.tracking.store(false, Ordering::Relaxed);
                    frames = None;
                    rest.len()
                }
            };
            if to.write_all(&rest[..k]).await.is_err() {
                return Done::Destination;
            }
            rest = &rest[k..];
            if let Some(done) = inject(&mut to, dir, frames.as_ref(), sh).await {
                return done;
            }
        }
        if to.flush().await.is_err() {
            return Done::Destination;
        }
    }
}

/// Follows the frames of `bytes`, up to the next boundary when something
/// is to be written there; the bytes to forward now.
fn follow(
    frames: &mut Option<Frames>,
    bytes: &[u8],
    dir: Dir,
    sh: &Shared,
) -> Result<usize, frames::Broken> {
    let Some(f) = frames else {
        return Ok(bytes.len());
    };
    let stop = sh.wanted(dir);
    f.advance(bytes, stop, &mut |opcode| {
        if dir == Dir::Up && opcode == PONG {
            sh.pongs.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// At a frame boundary, writes what is wanted in `dir`: the close frame
/// (then shuts `to` down: the direction is done), or a ping.
async fn inject<W: AsyncWrite + Unpin>(
    to: &mut W,
    dir: Dir,
    frames: Option<&Frames>,
    sh: &Shared,
) -> Option<Done> {
    let at_boundary = frames.is_some_and(Frames::at_boundary);
    if sh.closing.load(Ordering::Relaxed) {
        // Mid-frame (or not WebSocket), a close frame would corrupt the
        // stream: the connection just ends.
        if at_boundary {
            let _ = match dir {
                Dir::Down => to.write_all(&frames::SERVER_GOING_AWAY).await,
                Dir::Up => to.write_all(&frames::client_going_away(mask_key())).await,
            };
        }
        let _ = to.shutdown().await;
        return Some(Done::Closed);
    }
    if dir == Dir::Down && at_boundary && sh.ping.swap(false, Ordering::Relaxed) {
        if to.write_all(&frames::SERVER_PING).await.is_err() || to.flush().await.is_err() {
            return Some(Done::Destination);
        }
        sh.touch();
        sh.pinged.fetch_add(1, Ordering::Relaxed);
        // The beat waits for this in the same task: have it polled again.
        tokio::task::yield_now().await;
    }
    None
}

/// A plain read (mid-frame, where nothing can be written yet).
struct ReadOnly<'a, R> {
    from: &'a mut R,
    buf: &'a mut [u8],
}

impl<R: AsyncRead + Unpin> Future for ReadOnly<'_, R> {
    type Output = std::io::Result<usize>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut rb = ReadBuf::new(this.buf);
        match Pin::new(&mut *this.from).poll_read(cx, &mut rb) {
            Poll::Ready(r) => Poll::Ready(r.map(|()| rb.filled().len())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A masking key for the one frame the proxy writes toward an upstream
/// (RFC 6455 §5.3 wants it unpredictable).
fn mask_key() -> [u8; 4] {
    let mut key = [0; 4];
    crate::net::random(&mut key);
    key
}

/// Pings every `interval`; returns when a ping went unanswered for
/// `timeout`. Never returns without a heartbeat or once framing broke.
async fn beat(hb: Option<Heartbeat>, sh: &Shared, metrics: &Metrics) {
    let Some(hb) = hb else {
        return std::future::pending().await;
    };
    let mut next = Instant::now() + hb.interval;
    loop {
        tokio::time::sleep_until(next).await;
        if !sh.tracking.load(Ordering::Relaxed) {
            return std::future::pending().await;
        }
        let seen = sh.pongs.load(Ordering::Relaxed);
        let reads = sh.client_reads.load(Ordering::Relaxed);
        let written = sh.pinged.load(Ordering::Relaxed);
        sh.ping.store(true, Ordering::Relaxed);
        // The down direction sees the flag when it is next polled.
        tokio::task::yield_now().await;
        // Counted from when it went out: a long frame may delay it.
        std::future::poll_fn(|_| {
            if sh.pinged.load(Ordering::Relaxed) == written {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        metrics.websocket_ping();
        let sent = Instant::now();
        next = sent + hb.interval;
        tokio::time::sleep_until(sent + hb.timeout).await;
        // No pong, and nothing else from the client either: it is gone.
        // (Bytes count too: a pong may wait behind a long frame, or behind
        // a backend that does not read.)
        let silent = sh.pongs.load(Ordering::Relaxed) == seen
            && sh.client_reads.load(Ordering::Relaxed) == reads;
        if silent && sh.tracking.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// The two directions of a relay.
struct Pumps<A, B> {
    up: A,
    down: B,
}

/// Runs the directions and the heartbeat under the connection's timers.
async fn run<A, B, H>(pumps: Pumps<A, B>, beat: H, sh: &Shared, t: UpgradeTimers) -> End
where
    A: Future<Output = Done>,
    B: Future<Output = Done>,
    H: Future<Output = ()>,
{
    let Pumps { up, down } = pumps;
    tokio::pin!(up, down, beat);
    let (mut up_done, mut down_done) = (false, false);
    // The side that closed first, and when the other must be gone.
    let mut first: Option<(End, Instant)> = None;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let end = loop {
        // One timer for the three deadlines (each is polled on every wake).
        let idle_at = t.idle.map_or(far, |idle| sh.last() + idle);
        let grace_at = first.map_or(far, |(_, at)| at);
        let life_at = t.deadline.unwrap_or(far);
        let next = idle_at.min(grace_at).min(life_at);
        // In order, no random start: the directions are what moves.
        tokio::select! {
            biased;
            d = &mut up, if !up_done => {
                up_done = true;
                let by = if d == Done::Destination { End::Backend } else { End::Client };
                first.get_or_insert((by, Instant::now() + t.half_open_grace));
            }
            d = &mut down, if !down_done => {
                down_done = true;
                let by = if d == Done::Destination { End::Client } else { End::Backend };
                first.get_or_insert((by, Instant::now() + t.half_open_grace));
            }
            () = &mut beat => break End::PingTimeout,
            () = tokio::time::sleep_until(next) => {
                let now = Instant::now();
                if life_at <= now {
                    break End::Lifetime;
                }
                if grace_at <= now {
                    break first.map_or(End::Client, |(by, _)| by);
                }
                if let Some(idle) = t.idle && sh.last() + idle <= now {
                    break End::Idle;
                }
            }
        }
        if up_done && down_done {
            break first.map_or(End::Client, |(by, _)| by);
        }
    };
    if !(up_done && down_done) {
        // Close frames where the framing allows, then both ends go.
        sh.close();
        // Both at once: a side that does not read must not keep the other
        // from getting its close frame.
        let rest = async {
            tokio::join!(
                async {
                    if !up_done {
                        up.await;
                    }
                },
                async {
                    if !down_done {
                        down.await;
                    }
                }
            )
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, rest).await;
    }
    end
}
