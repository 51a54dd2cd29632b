//! The client connection's timers, kept under hyper in the stream it
//! reads: `headerTimeout` (a request head must be complete this long after
//! its first byte, or after accept: 408 and close, against slowloris),
//! `idleTimeout` (no request in flight this long: close), and, while
//! requests are in flight, a stall timer (no byte either way on the client
//! socket for the longer of `idleTimeout` and `responseTimeout`: a client
//! that stops reading, or a body that stops coming, cannot hold the
//! connection and its route's request slot forever).
//!
//! hyper's own header timeout starts when it starts waiting for a head,
//! idle time included, so it cannot tell a slow head from an idle
//! keep-alive connection, and it closes without a response; hence these.
//! The request service marks requests in flight in [`ConnState`]; a
//! request stays in flight until its response body is sent, and the last
//! one to finish wakes the connection so the idle timer is armed even if
//! hyper is not reading.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::head_scan::HeadScan;

/// What the service tells the stream about the connection.
#[derive(Debug)]
pub(crate) struct ConnState {
    started: Instant,
    inflight: AtomicUsize,
    /// Requests seen (to tell the first head from later ones).
    served: AtomicU64,
    /// Milliseconds from `started` to when the last request finished.
    idle_since_ms: AtomicU64,
    /// Requests finished: each starts a new idle period.
    finished: AtomicU64,
    /// HTTP/2: multiplexed, so only the idle timer applies.
    h2: AtomicBool,
    /// Which timer ended the connection: 0 none, 1 head, 2 idle.
    expired: std::sync::atomic::AtomicU8,
    /// The head just read had both `Content-Length` and
    /// `Transfer-Encoding` (see [`HeadScan`]).
    conflicting_framing: AtomicBool,
    /// The connection's task, woken when the last request in flight ends.
    waker: std::sync::Mutex<Option<std::task::Waker>>,
    /// Upgraded (101): the HTTP timers stop; the relay has its own.
    upgraded: AtomicBool,
    /// The upgraded connection's relay, which the connection waits for.
    relay: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// HTTP/2 streams relayed as WebSockets now: while there are any, the
    /// idle timer is off (each relay has the connection policy's timers).
    tunnels: AtomicUsize,
    /// Their relays, ended with the connection.
    tunnel_relays: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The proxy is draining: HTTP/1.1 answers say `Connection: close`.
    draining: AtomicBool,
    /// Notified when a request begins during the drain.
    began: tokio::sync::Notify,
}

impl ConnState {
    /// `h2`: the connection speaks HTTP/2 from the start (ALPN).
    pub(crate) fn new(h2: bool) -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            inflight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            h2: AtomicBool::new(h2),
            expired: std::sync::atomic::AtomicU8::new(0),
            conflicting_framing: AtomicBool::new(false),
            waker: std::sync::Mutex::new(None),
            upgraded: AtomicBool::new(false),
            relay: std::sync::Mutex::new(None),
            tunnels: AtomicUsize::new(0),
            tunnel_relays: std::sync::Mutex::default(),
            draining: AtomicBool::new(false),
            began: tokio::sync::Notify::new(),
        })
    }

    /// The proxy began to drain: every answer from now on closes its
    /// HTTP/1.1 connection.
    pub(crate) fn drain(&self) {
        // SeqCst with `served` in `begin`: either the drain sees the
        // request, or the request sees the drain and notifies.
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Returns once a request has begun (call after [`ConnState::drain`]).
    pub(crate) async fn first_request(&self) {
        if self.served.load(Ordering::SeqCst) == 0 {
            self.began.notified().await;
        }
    }

    /// The connection was upgraded; `relay` moves its bytes from now on.
    pub(crate) fn upgraded(&self, relay: tokio::task::JoinHandle<()>) {
        self.upgraded.store(true, Ordering::Release);
        *self.relay.lock().unwrap_or_else(|e| e.into_inner()) = Some(relay);
    }

    /// The upgraded connection's relay, if there is one.
    pub(crate) fn take_relay(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.relay.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// An HTTP/2 stream became a WebSocket; it is one until the guard
    /// drops.
    pub(crate) fn tunnel(self: &Arc<Self>) -> Tunnel {
        self.tunnels.fetch_add(1, Ordering::AcqRel);
        Tunnel(self.clone())
    }

    /// Keeps an HTTP/2 WebSocket's relay, to end it with the connection
    /// (finished ones are let go).
    pub(crate) fn add_tunnel(&self, relay: tokio::task::JoinHandle<()>) {
        let mut relays = self.tunnel_relays.lock().unwrap_or_else(|e| e.into_inner());
        relays.retain(|r| !r.is_finished());
        relays.push(relay);
    }

    /// Lets the HTTP/2 WebSockets still relayed see their connection's
    /// end (and count it as the client's) for up to `grace`, then ends
    /// them.
    pub(crate) async fn end_tunnels(&self, grace: Duration) {
        let relays =
            std::mem::take(&mut *self.tunnel_relays.lock().unwrap_or_else(|e| e.into_inner()));
        let deadline = Instant::now() + grace;
        for mut relay in relays {
            if tokio::time::timeout_at(deadline, &mut relay).await.is_err() {
                relay.abort();
            }
        }
    }

    /// Ends the HTTP/2 WebSockets still relayed.
    pub(crate) fn abort_tunnels(&self) {
        let relays =
            std::mem::take(&mut *self.tunnel_relays.lock().unwrap_or_else(|e| e.into_inner()));
        relays.iter().for_each(tokio::task::JoinHandle::abort);
    }

    fn lock_waker(&self) -> std::sync::MutexGuard<'_, Option<std::task::Waker>> {
        self.waker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the request whose head was just read framed its body both
    /// ways (clears the mark).
    pub(crate) fn take_conflicting_framing(&self) -> bool {
        self.conflicting_framing.swap(false, Ordering::AcqRel)
    }

    /// Which timer, if any, ended the connection.
    pub(crate) fn expired(&self) -> Option<Expired> {
        match self.expired.load(Ordering::Relaxed) {
            1 => Some(Expired::Head),
            2 => Some(Expired::Idle),
            3 => Some(Expired::Stalled),
            _ => None,
        }
    }

    /// A request arrived; it is in flight until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>, h2: bool) -> InFlight {
        if h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.served.fetch_add(1, Ordering::SeqCst);
        self.inflight.fetch_add(1, Ordering::AcqRel);
        if self.draining.load(Ordering::SeqCst) {
            // `notify_one` keeps a permit: `first_request` cannot miss it.
            self.began.notify_one();
        }
        InFlight(self.clone())
    }

    /// Requests seen so far.
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

/// One request in flight.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(ms, Ordering::Relaxed);
        self.0.finished.fetch_add(1, Ordering::Relaxed);
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(w) = self.0.lock_waker().take()
        {
            // hyper may not read again on its own: the idle timer needs a poll.
            w.wake();
        }
    }
}

/// One HTTP/2 stream relayed as a WebSocket.
#[derive(Debug)]
pub(crate) struct Tunnel(Arc<ConnState>);

impl Drop for Tunnel {
    fn drop(&mut self) {
        // The idle period starts when the last one ends.
        let ms = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(ms, Ordering::Relaxed);
        if self.0.tunnels.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(w) = self.0.lock_waker().take()
        {
            w.wake();
        }
    }
}

/// Which timer ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// A request head did not complete in time (a 408 was sent).
    Head,
    /// No request for `idleTimeout`.
    Idle,
    /// Requests in flight, and no byte either way for the stall time.
    Stalled,
}

/// The client stream with the timers.
pub(crate) struct Timed<S> {
    io: S,
    state: Arc<ConnState>,
    header_timeout: Duration,
    idle_timeout: Duration,
    stall_timeout: Duration,
    /// The last byte read or written on the client socket.
    progress: Instant,
    sleep: Pin<Box<Sleep>>,
    /// The idle period the fields below belong to.
    seen_period: u64,
    /// When the first byte of the next head arrived.
    head_started: Option<Instant>,
    done: bool,
    scan: HeadScan,
}

impl<S> Timed<S> {
    /// `stall`: how long requests in flight may go without a byte either
    /// way on the client socket.
    pub(crate) fn new(
        io: S,
        state: Arc<ConnState>,
        header: Duration,
        idle: Duration,
        stall: Duration,
    ) -> Self {
        Self {
            io,
            state,
            header_timeout: header,
            idle_timeout: idle,
            stall_timeout: stall,
            progress: Instant::now(),
            sleep: Box::pin(tokio::time::sleep(header)),
            seen_period: 0,
            head_started: None,
            done: false,
            scan: HeadScan::new(),
        }
    }

    /// A request finished since we last looked: a new idle period, whose
    /// next bytes start a new head (its clock, its scan).
    fn follow_period(&mut self) {
        let period = self.state.finished.load(Ordering::Relaxed);
        if period != self.seen_period {
            self.seen_period = period;
            self.head_started = None;
            self.scan = HeadScan::new();
        }
    }

    /// The deadline now, and what it is for.
    fn deadline(&mut self) -> (Instant, Expired) {
        if self.state.upgraded.load(Ordering::Acquire) {
            // Not HTTP any more: the relay's inactivity timer applies.
            return (Instant::now() + UPGRADED, Expired::Idle);
        }
        if self.state.inflight.load(Ordering::Acquire) > 0 {
            return (self.progress + self.stall_timeout, Expired::Stalled);
        }
        if self.state.tunnels.load(Ordering::Acquire) > 0 {
            // HTTP/2 WebSockets: their relays' timers apply.
            return (Instant::now() + UPGRADED, Expired::Idle);
        }
        self.follow_period();
        let since = self.state.idle_since_ms.load(Ordering::Relaxed);
        let idle_start = self.state.started + Duration::from_millis(since);
        if self.state.h2.load(Ordering::Relaxed) {
            return (idle_start + self.idle_timeout, Expired::Idle);
        }
        if self.state.served() == 0 {
            // The first head is timed from accept: a client that sends
            // nothing, or trickles, is held to the head timeout.
            return (self.state.started + self.header_timeout, Expired::Head);
        }
        match self.head_started {
            Some(t) => (t + self.header_timeout, Expired::Head),
            None => (idle_start + self.idle_timeout, Expired::Idle),
        }
    }
}

/// How far the HTTP timers look ahead on an upgraded connection (they are
/// re-checked, and pushed out again, whenever this passes).
const UPGRADED: Duration = Duration::from_secs(3600);

/// Sent when a head does not complete in time (HTTP/1.1 only; nothing is
/// written to an HTTP/2 client mid-frame).
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 20\r\nconnection: close\r\n\r\n408 Request Timeout\n";

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.state.upgraded.load(Ordering::Relaxed) {
            // Not HTTP any more: no head to scan, no HTTP timer to keep
            // (the relay has the connection's own), on every byte relayed.
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        if this.done {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.progress = Instant::now();
            this.saw(&buf.filled()[before..]);
        }
        if polled.is_ready() {
            return polled;
        }
        *this.state.lock_waker() = Some(cx.waker().clone());
        // The timer is moved earlier at once, later only when it fires
        // (progress on a busy connection would otherwise reset it on every
        // read and write).
        let (at, _) = this.deadline();
        if at < this.sleep.deadline() {
            this.sleep.as_mut().reset(at);
        }
        loop {
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let (at, kind) = this.deadline();
            if at > Instant::now() {
                this.sleep.as_mut().reset(at);
                continue;
            }
            this.expire(cx, kind);
            // End of stream: hyper closes the connection.
            return Poll::Ready(Ok(()));
        }
    }
}

impl<S: AsyncWrite + Unpin> Timed<S> {
    /// What the bytes just read say: HTTP/2's preface, the start of a head
    /// (its clock), a head framed both ways.
    fn saw(&mut self, bytes: &[u8]) {
        if self.state.served() == 0 && bytes.starts_with(b"PRI * HTTP/2.0") {
            // h2c with prior knowledge: multiplexed, only the idle timer.
            self.state.h2.store(true, Ordering::Relaxed);
        }
        if self.state.h2.load(Ordering::Relaxed) {
            return;
        }
        let idle = self.state.inflight.load(Ordering::Acquire) == 0;
        if idle {
            self.follow_period();
        }
        if self.scan.feed(bytes) == Some(true) {
            self.state
                .conflicting_framing
                .store(true, Ordering::Release);
        }
        if idle && self.head_started.is_none() {
            // Bytes of a new head (or, before the first request, of the
            // first): its clock starts now.
            self.head_started = Some(Instant::now());
        }
    }

    /// Ends the connection for `kind`: a 408 first when a head timed out
    /// on HTTP/1.1.
    fn expire(&mut self, cx: &mut Context<'_>, kind: Expired) {
        self.done = true;
        let code = match kind {
            Expired::Head => 1,
            Expired::Idle => 2,
            Expired::Stalled => 3,
        };
        self.state.expired.store(code, Ordering::Relaxed);
        if kind == Expired::Head && !self.state.h2.load(Ordering::Relaxed) {
            // Best effort, once: a client too slow to send its head may
            // well be too slow to read this, and must not hold us up.
            let _ = Pin::new(&mut self.io).poll_write(cx, REQUEST_TIMEOUT);
            let _ = Pin::new(&mut self.io).poll_flush(cx);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.state.upgraded.load(Ordering::Relaxed) {
            return Pin::new(&mut self.io).poll_write(cx, buf);
        }
        if self.done {
            // A timer ended the connection: nothing more goes out.
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.progress = Instant::now();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.state.upgraded.load(Ordering::Relaxed) {
            return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        }
        if self.done {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.progress = Instant::now();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
