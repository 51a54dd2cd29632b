//! The relay as one hand-polled future: both directions, the heartbeat
//! and the timers share one struct, so a flag one part sets is plain data
//! the others read at their next poll, and a wake polls one timer. (The
//! first version — two async pumps over `tokio::io::split` halves, the
//! heartbeat and three timers in a `select!` — spent its user-space time
//! on split locks, waker and timer registration and select machinery on
//! every message: `perf` on `cargo xtask bench --scenario ws-echo`.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::frames::{self, Frames, PONG};
use super::{BUF, CLOSE_WAIT, End, Heartbeat, UpgradeTimers};
use crate::metrics::Metrics;

/// A direction: client to upstream (`Up`) or upstream to client (`Down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
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

/// What the directions and the heartbeat tell each other.
#[derive(Debug)]
struct Flags {
    /// Frames are followed (WebSocket, framing intact).
    tracking: bool,
    /// A ping is wanted toward the client.
    ping: bool,
    /// Close frames are wanted toward both sides, then the end.
    closing: bool,
    /// Pongs seen from the client, reads from the client, pings written.
    pongs: u64,
    client_reads: u64,
    pinged: u64,
    /// The last byte either way (or the start).
    last: Instant,
}

impl Flags {
    /// Something is to be written into `dir` at its next frame boundary.
    fn wanted(&self, dir: Dir) -> bool {
        self.closing || (dir == Dir::Down && self.ping)
    }
}

/// One direction's bytes in flight.
struct Half {
    dir: Dir,
    buf: Box<[u8]>,
    /// `buf[pos..cap]` was read and not written yet; frames are followed
    /// up to `followed` (written only that far, so that what the proxy
    /// writes itself goes at a boundary).
    pos: usize,
    followed: usize,
    cap: usize,
    frames: Option<Frames>,
    /// A frame of the proxy's own being written, and how far.
    own: Option<([u8; 8], usize, usize)>,
    close_queued: bool,
    eof: bool,
    need_flush: bool,
    done: Option<Done>,
}

impl Half {
    fn new(dir: Dir, tracking: bool) -> Self {
        Self {
            dir,
            buf: vec![0; BUF].into_boxed_slice(),
            pos: 0,
            followed: 0,
            cap: 0,
            frames: tracking.then(|| Frames::new(dir == Dir::Up)),
            own: None,
            close_queued: false,
            eof: false,
            need_flush: false,
            done: None,
        }
    }

    fn queue(&mut self, frame: &[u8]) {
        let mut bytes = [0u8; 8];
        bytes[..frame.len()].copy_from_slice(frame);
        self.own = Some((bytes, frame.len(), 0));
    }

    /// Moves bytes from `src` to `dst` until both would block, writing the
    /// wanted ping or close frame at a frame boundary.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
        f: &mut Flags,
        conn: u64,
    ) -> Poll<Done>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if let Some((bytes, len, at)) = &mut self.own {
                while *at < *len {
                    match ready!(Pin::new(&mut *dst).poll_write(cx, &bytes[*at..*len])) {
                        Ok(0) | Err(_) => return Poll::Ready(Done::Destination),
                        Ok(n) => *at += n,
                    }
                }
                self.own = None;
                self.need_flush = true;
                continue;
            }
            let at_boundary =
                self.pos == self.followed && self.frames.as_ref().is_some_and(Frames::at_boundary);
            if f.closing {
                let in_hand = self.pos < self.followed || self.followed < self.cap;
                if self.close_queued || (!at_boundary && !in_hand) {
                    // Sent, or mid-frame with nothing more in hand (or not
                    // WebSocket): a close frame now would corrupt the
                    // stream, so the connection just ends.
                    let _ = ready!(Pin::new(&mut *dst).poll_shutdown(cx));
                    return Poll::Ready(Done::Closed);
                }
                if at_boundary {
                    self.close_queued = true;
                    match self.dir {
                        Dir::Down => self.queue(&frames::SERVER_GOING_AWAY),
                        Dir::Up => self.queue(&frames::client_going_away(super::mask_key())),
                    }
                    continue;
                }
                // Else: what is in hand goes out, up to the next boundary.
            } else if self.dir == Dir::Down && at_boundary && f.ping {
                f.ping = false;
                f.pinged += 1;
                f.last = Instant::now();
                self.queue(&frames::SERVER_PING);
                continue;
            }
            if self.pos < self.followed {
                match ready!(Pin::new(&mut *dst).poll_write(cx, &self.buf[self.pos..self.followed]))
                {
                    Ok(0) | Err(_) => return Poll::Ready(Done::Destination),
                    Ok(n) => self.pos += n,
                }
                self.need_flush = true;
                continue;
            }
            if self.followed < self.cap {
                self.follow(f, conn);
                continue;
            }
            if self.eof {
                let _ = ready!(Pin::new(&mut *dst).poll_shutdown(cx));
                return Poll::Ready(Done::Source);
            }
            (self.pos, self.followed, self.cap) = (0, 0, 0);
            let mut rb = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut *src).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => self.eof = true,
                Poll::Ready(Ok(())) => {
                    self.cap = rb.filled().len();
                    f.last = Instant::now();
                    if self.dir == Dir::Up {
                        f.client_reads += 1;
                    }
                }
                Poll::Ready(Err(_)) => self.eof = true,
                Poll::Pending => {
                    if self.need_flush {
                        match Pin::new(&mut *dst).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.need_flush = false,
                            Poll::Ready(Err(_)) => return Poll::Ready(Done::Destination),
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Follows the frames of the unfollowed bytes: all of them, or up to
    /// the next boundary when something is to be written there.
    fn follow(&mut self, f: &mut Flags, conn: u64) {
        let Some(frames) = &mut self.frames else {
            self.followed = self.cap;
            return;
        };
        let (dir, stop) = (self.dir, f.wanted(self.dir));
        let mut pongs = 0;
        let r = frames.advance(&self.buf[self.followed..self.cap], stop, &mut |op| {
            if dir == Dir::Up && op == PONG {
                pongs += 1;
            }
        });
        f.pongs += pongs;
        match r {
            Ok(k) => self.followed += k,
            Err(broken) => {
                tracing::debug!(
                    conn,
                    ?broken,
                    ?dir,
                    "not WebSocket framing: relayed untouched, no heartbeat"
                );
                f.tracking = false;
                self.frames = None;
                self.followed = self.cap;
            }
        }
    }
}

/// Polls one direction that is still going; when it ends, notes the side
/// that closed first (and when the other must be gone).
fn drive<R, W>(
    half: &mut Half,
    cx: &mut Context<'_>,
    (src, dst): (&mut R, &mut W),
    f: &mut Flags,
    first: &mut Option<(End, Instant)>,
    grace: std::time::Duration,
    conn: u64,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if half.done.is_some() {
        return;
    }
    if let Poll::Ready(d) = half.poll(cx, src, dst, f, conn) {
        half.done = Some(d);
        // The destination failing is the far side's end; else the source's.
        let by = match (half.dir, d == Done::Destination) {
            (Dir::Up, true) | (Dir::Down, false) => End::Backend,
            (Dir::Up, false) | (Dir::Down, true) => End::Client,
        };
        first.get_or_insert((by, Instant::now() + grace));
    }
}

/// Where the heartbeat is.
#[derive(Debug, Clone, Copy)]
enum Beat {
    Off,
    /// The next ping is due then.
    Idle {
        next: Instant,
    },
    /// A ping is wanted; counted from when it goes out.
    Asked {
        seen: (u64, u64),
        written: u64,
    },
    /// A ping went out: a pong (or any client byte) is due by `deadline`.
    Waiting {
        seen: (u64, u64),
        deadline: Instant,
        next: Instant,
    },
}

/// The relay of one upgraded connection.
pub(super) struct Relaying<C, U> {
    client: C,
    upstream: U,
    up: Half,
    down: Half,
    flags: Flags,
    beat: Beat,
    heartbeat: Option<Heartbeat>,
    timers: UpgradeTimers,
    /// The side that closed first, and when the other must be gone.
    first: Option<(End, Instant)>,
    /// Decided: close frames are out, waiting (bounded) for both sides.
    ending: Option<(End, Instant)>,
    sleep: Pin<Box<Sleep>>,
    metrics: std::sync::Arc<Metrics>,
    conn: u64,
}

impl<C, U> Relaying<C, U> {
    pub(super) fn new(client: C, upstream: U, r: &super::Relay) -> Self {
        let now = Instant::now();
        let heartbeat = r.heartbeat;
        Self {
            client,
            upstream,
            up: Half::new(Dir::Up, r.websocket),
            down: Half::new(Dir::Down, r.websocket),
            flags: Flags {
                tracking: r.websocket,
                ping: false,
                closing: false,
                pongs: 0,
                client_reads: 0,
                pinged: 0,
                last: now,
            },
            beat: heartbeat.map_or(Beat::Off, |h| Beat::Idle {
                next: now + h.interval,
            }),
            heartbeat,
            timers: r.timers,
            first: None,
            ending: None,
            sleep: Box::pin(tokio::time::sleep_until(now)),
            metrics: r.metrics.clone(),
            conn: r.conn,
        }
    }

    /// Advances the heartbeat; `Err(())` when a ping went unanswered.
    /// Returns when it next needs looking at.
    fn beat(&mut self, now: Instant) -> Result<Option<Instant>, ()> {
        let Some(hb) = self.heartbeat else {
            return Ok(None);
        };
        let f = &mut self.flags;
        loop {
            match self.beat {
                Beat::Off => return Ok(None),
                _ if !f.tracking => {
                    self.beat = Beat::Off;
                    f.ping = false;
                }
                Beat::Idle { next } if now < next => return Ok(Some(next)),
                Beat::Idle { .. } => {
                    f.ping = true;
                    self.beat = Beat::Asked {
                        seen: (f.pongs, f.client_reads),
                        written: f.pinged,
                    };
                }
                // A long frame may hold it back; the directions wake us.
                Beat::Asked { written, .. } if f.pinged == written => return Ok(None),
                Beat::Asked { seen, .. } => {
                    self.metrics.websocket_ping();
                    self.beat = Beat::Waiting {
                        seen,
                        deadline: now + hb.timeout,
                        next: now + hb.interval,
                    };
                }
                Beat::Waiting {
                    seen,
                    deadline,
                    next,
                } => {
                    // A pong, or any byte from the client (a pong may wait
                    // behind a long frame, or a backend that does not
                    // read): alive.
                    if (f.pongs, f.client_reads) != seen {
                        self.beat = Beat::Idle { next };
                        continue;
                    }
                    if now < deadline {
                        return Ok(Some(deadline));
                    }
                    return Err(());
                }
            }
        }
    }

    /// The connection's timers: the end they call for, or when to look
    /// again.
    fn timers(&self, now: Instant) -> Result<Option<Instant>, End> {
        let t = &self.timers;
        let mut next: Option<Instant> = None;
        let mut consider = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        if let Some(at) = t.deadline {
            if at <= now {
                return Err(End::Lifetime);
            }
            consider(at);
        }
        if let Some((by, at)) = self.first {
            if at <= now {
                return Err(by);
            }
            consider(at);
        }
        if let Some(idle) = t.idle {
            let at = self.flags.last + idle;
            if at <= now {
                return Err(End::Idle);
            }
            consider(at);
        }
        Ok(next)
    }
}

impl<C, U> Future for Relaying<C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let this = self.get_mut();
        loop {
            let grace = this.timers.half_open_grace;
            let (f, first, conn) = (&mut this.flags, &mut this.first, this.conn);
            drive(
                &mut this.up,
                cx,
                (&mut this.client, &mut this.upstream),
                f,
                first,
                grace,
                conn,
            );
            drive(
                &mut this.down,
                cx,
                (&mut this.upstream, &mut this.client),
                f,
                first,
                grace,
                conn,
            );
            let both = this.up.done.is_some() && this.down.done.is_some();
            if let Some((end, _)) = this.ending
                && both
            {
                return Poll::Ready(end);
            }
            if both {
                return Poll::Ready(this.first.map_or(End::Client, |(by, _)| by));
            }
            let now = Instant::now();
            let asked_before = matches!(this.beat, Beat::Asked { .. });
            let wake_at = match this.ending {
                // Close frames are out: the directions finish, or time is up.
                Some((end, until)) if until <= now => return Poll::Ready(end),
                Some((_, until)) => Some(until),
                None => {
                    let decided = match (this.beat(now), this.timers(now)) {
                        (Err(()), _) => Err(End::PingTimeout),
                        (_, Err(end)) => Err(end),
                        (Ok(a), Ok(b)) => Ok(match (a, b) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        }),
                    };
                    match decided {
                        Ok(at) => at,
                        Err(end) => {
                            tracing::debug!(
                                conn = this.conn,
                                end = end.as_str(),
                                "closing the upgraded connection"
                            );
                            // Both directions write their close frame at
                            // their next boundary, polled right away.
                            this.flags.closing = true;
                            this.ending = Some((end, now + CLOSE_WAIT));
                            continue;
                        }
                    }
                }
            };
            if !asked_before && matches!(this.beat, Beat::Asked { .. }) {
                // A ping was just asked for: the directions, polled before,
                // see it on one more turn.
                continue;
            }
            let Some(at) = wake_at else {
                return Poll::Pending;
            };
            if this.sleep.deadline() != at {
                this.sleep.as_mut().reset(at);
            }
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}
