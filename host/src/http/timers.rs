//! The client connection's two timers, kept under hyper in the stream it
//! reads: `headerTimeout` (a request head must be complete this long after
//! its first byte, or after accept: 408 and close, against slowloris) and
//! `idleTimeout` (no request in flight this long: close).
//!
//! hyper's own header timeout starts when it starts waiting for a head,
//! idle time included, so it cannot tell a slow head from an idle
//! keep-alive connection, and it closes without a response; hence these.
//! The request service marks requests in flight in [`ConnState`]; a
//! request stays in flight until its response body is sent.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

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
}

impl ConnState {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            inflight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            expired: std::sync::atomic::AtomicU8::new(0),
            conflicting_framing: AtomicBool::new(false),
        })
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
            _ => None,
        }
    }

    /// A request arrived; it is in flight until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>, h2: bool) -> InFlight {
        if h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.served.fetch_add(1, Ordering::Relaxed);
        self.inflight.fetch_add(1, Ordering::AcqRel);
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
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which timer ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// A request head did not complete in time (a 408 was sent).
    Head,
    /// No request for `idleTimeout`.
    Idle,
}

/// The client stream with the timers.
pub(crate) struct Timed<S> {
    io: S,
    state: Arc<ConnState>,
    header_timeout: Duration,
    idle_timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// The idle period the fields below belong to.
    seen_period: u64,
    /// When the first byte of the next head arrived.
    head_started: Option<Instant>,
    done: bool,
    scan: HeadScan,
}

impl<S> Timed<S> {
    pub(crate) fn new(io: S, state: Arc<ConnState>, header: Duration, idle: Duration) -> Self {
        Self {
            io,
            state,
            header_timeout: header,
            idle_timeout: idle,
            sleep: Box::pin(tokio::time::sleep(header)),
            seen_period: 0,
            head_started: None,
            done: false,
            scan: HeadScan::new(),
        }
    }

    /// The deadline now, and what it is for; `None` while a request is in
    /// flight (the service's `responseTimeout` covers those).
    fn deadline(&mut self) -> Option<(Instant, Expired)> {
        if self.state.inflight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let period = self.state.finished.load(Ordering::Relaxed);
        if period != self.seen_period {
            self.seen_period = period;
            self.head_started = None;
        }
        let since = self.state.idle_since_ms.load(Ordering::Relaxed);
        let idle_start = self.state.started + Duration::from_millis(since);
        if self.state.h2.load(Ordering::Relaxed) {
            return Some((idle_start + self.idle_timeout, Expired::Idle));
        }
        if self.state.served() == 0 {
            // The first head is timed from accept: a client that sends
            // nothing, or trickles, is held to the head timeout.
            return Some((self.state.started + self.header_timeout, Expired::Head));
        }
        match self.head_started {
            Some(t) => Some((t + self.header_timeout, Expired::Head)),
            None => Some((idle_start + self.idle_timeout, Expired::Idle)),
        }
    }
}

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
        if this.done {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before && !this.state.h2.load(Ordering::Relaxed) {
            let period = this.state.finished.load(Ordering::Relaxed);
            if this.state.inflight.load(Ordering::Acquire) == 0 && period != this.scan.period {
                // A new idle period: the next bytes start a head.
                this.scan = HeadScan::new();
                this.scan.period = period;
            }
            if this.scan.feed(&buf.filled()[before..]) == Some(true) {
                this.state
                    .conflicting_framing
                    .store(true, Ordering::Release);
            }
        }
        if buf.filled().len() > before
            && this.head_started.is_none()
            && this.state.inflight.load(Ordering::Acquire) == 0
        {
            // Bytes of a new head (or, before the first request, of the
            // first): its clock starts now.
            let _ = this.deadline();
            this.head_started = Some(Instant::now());
        }
        if polled.is_ready() {
            return polled;
        }
        let Some((at, kind)) = this.deadline() else {
            return Poll::Pending;
        };
        if this.sleep.deadline() != at {
            this.sleep.as_mut().reset(at);
        }
        if this.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.done = true;
        let code = if kind == Expired::Head { 1 } else { 2 };
        this.state.expired.store(code, Ordering::Relaxed);
        if kind == Expired::Head && !this.state.h2.load(Ordering::Relaxed) {
            // Best effort, once: a client too slow to send its head may
            // well be too slow to read this, and must not hold us up.
            let _ = Pin::new(&mut this.io).poll_write(cx, REQUEST_TIMEOUT);
            let _ = Pin::new(&mut this.io).poll_flush(cx);
        }
        // End of stream: hyper closes the connection.
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
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
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Finds, in the bytes of an HTTP/1.1 request head as they arrive, whether
/// it carries both `Content-Length` and `Transfer-Encoding`. hyper
/// resolves that conflict itself (RFC 9112: chunked wins, the length is
/// dropped), but a request framed both ways is how smuggling is attempted
/// against chains where some hop reads the other framing: it gets a 400
/// and is never forwarded. Only the first head after each idle period is
/// scanned (a pipelined head behind a body is left to hyper's rule).
#[derive(Debug)]
struct HeadScan {
    active: bool,
    /// The idle period this scan belongs to.
    period: u64,
    /// The current line's first bytes, lower-cased.
    line: [u8; 18],
    len: usize,
    content_length: bool,
    transfer_encoding: bool,
}

impl HeadScan {
    fn new() -> Self {
        Self {
            active: true,
            period: 0,
            line: [0; 18],
            len: 0,
            content_length: false,
            transfer_encoding: false,
        }
    }

    /// `Some(conflict)` when the head ended in `bytes`.
    fn feed(&mut self, bytes: &[u8]) -> Option<bool> {
        if !self.active {
            return None;
        }
        let mut i = 0;
        while i < bytes.len() {
            if self.len >= self.line.len() {
                // Past the names we look for: skip to the line's end.
                match bytes[i..].iter().position(|&b| b == b'\n') {
                    Some(at) => i += at,
                    None => return None,
                }
            }
            let b = bytes[i];
            i += 1;
            if b == b'\n' {
                if self.len == 0 || (self.len == 1 && self.line[0] == b'\r') {
                    self.active = false;
                    return Some(self.content_length && self.transfer_encoding);
                }
                self.len = 0;
                continue;
            }
            self.line[self.len] = b.to_ascii_lowercase();
            self.len += 1;
            match &self.line[..self.len] {
                b"content-length:" => self.content_length = true,
                b"transfer-encoding:" => self.transfer_encoding = true,
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::HeadScan;

    fn scan(chunks: &[&[u8]]) -> Option<bool> {
        let mut s = HeadScan::new();
        chunks.iter().find_map(|c| s.feed(c))
    }

    #[test]
    fn both_framings_are_found_across_reads_and_cases() {
        let head: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nHost: a\r\nconTent-Len",
            b"gth: 4\r\nTransfer-Encoding: chunked\r",
            b"\n\r\n0\r\n",
        ];
        assert_eq!(scan(head), Some(true));
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"]),
            Some(false)
        );
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\nTransfer-Encoding: chunked\n\n"]),
            Some(false)
        );
        // A header whose value mentions the other does not count.
        assert_eq!(
            scan(&[
                b"GET / HTTP/1.1\r\nX-A: content-length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            ]),
            Some(false)
        );
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r\nHost: a\r\n"]),
            None,
            "not ended yet"
        );
    }
}
