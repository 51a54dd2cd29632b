//! The two directions of a relay: copying loops that note every chunk in
//! the connection's [`Traffic`] (which the timers read).
//!
//! * [`pump`] — the fast path for plain TCP sockets: it waits for
//!   readiness without holding a buffer, so an idle connection holds none,
//!   and a direction that fills a whole buffer switches to `splice(2)`.
//! * [`copy`] — any `AsyncRead` to any `AsyncWrite` (a TLS stream, an
//!   upgraded HTTP connection): such a stream cannot report readiness
//!   without being read, so each read takes a pooled buffer and gives it
//!   back when the read is pending.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

use super::{BUF, splice};
use crate::metrics::Traffic;

/// Which side of the relay an I/O error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
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
#[inline]
fn on_chunk(traffic: &Traffic, from_client: bool, n: usize, started: Instant) {
    traffic.record_chunk(from_client, n, ms_since(started));
}

/// Copies one direction until EOF (then shuts down the writer, passing
/// the FIN on, unless the other direction already ended: the close that
/// follows sends it) or an error, which says which side failed. Waits for
/// the socket to be readable without a buffer; takes one while data flows
/// and gives it back when the socket runs dry. A direction that fills a
/// whole buffer in one read is a bulk transfer: from then on it moves
/// bytes socket → pipe → socket with `splice(2)`, never copying them
/// through user space.
pub(super) async fn pump(
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
        // Asked before the read, never after it: only a FIN known before
        // the read started is sure to have all its bytes queued for it.
        let mut fin_known = fin_seen(&from);
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
            if n < BUF && fin_known {
                // The read that would return 0, skipped: as above.
                if !finished.swap(true, Ordering::Relaxed) {
                    let _ = to.shutdown().await;
                }
                return Ok(());
            }
            fin_known = false;
        }
    }
}

/// Whether tokio's cached readiness already holds the peer's FIN
/// (`EPOLLRDHUP`) and no socket error. Asked just before a read: TCP
/// queues every byte before a FIN before it reports the FIN, so if that
/// read is shorter than the buffer it emptied the queue for good and the
/// next read could only return 0 — one `recvfrom` per direction of every
/// connection, which HAProxy skips the same way (6 `recvfrom` per
/// passthrough connection against Turnout's 8,
/// `benches/results/2026-12-02-profile.md`). Asked after the read instead,
/// a FIN that came in meanwhile would stand for bytes not read yet. A
/// reset is left for a read to report, with its error.
fn fin_seen(from: &ReadHalf<'_>) -> bool {
    use futures_util::FutureExt;
    let stream = from.as_ref();
    // Just after `poll_read_ready` said ready, the first answers at once
    // from the cache; the second is asked only at a FIN, and when no error
    // is set its future is pending and dropped at once. Dropping either
    // takes the socket's uncontended waiter lock: tens of nanoseconds a
    // chunk, against the `recvfrom` saved once per direction.
    matches!(
        stream.ready(Interest::READABLE).now_or_never(),
        Some(Ok(r)) if r.is_read_closed()
    ) && stream.ready(Interest::ERROR).now_or_never().is_none()
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

/// Reads once from `from` into a pooled buffer taken for each poll and
/// given back while the read is pending: a `Pending` read has written
/// nothing, so an idle stream holds no relay buffer (a TLS stream cannot
/// say it is readable without being read, so this is how its idle
/// connections stay small).
async fn read_pooled<R: AsyncRead + Unpin>(from: &mut R) -> io::Result<(Buffer, usize)> {
    std::future::poll_fn(|cx| {
        let mut buf = Buffer::take();
        let mut rb = tokio::io::ReadBuf::new(buf.bytes());
        match std::pin::Pin::new(&mut *from).poll_read(cx, &mut rb) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(r) => {
                let n = rb.filled().len();
                std::task::Poll::Ready(r.map(|()| (buf, n)))
            }
        }
    })
    .await
}

/// Copies one direction between any two streams until EOF (then shuts
/// down the writer) or an error, which says which side failed. Notes
/// activity for the timers; bytes are counted by the client stream itself
/// (what crosses the socket, below any TLS).
pub(super) async fn copy<R, W>(
    mut from: R,
    mut to: W,
    from_client: bool,
    traffic: &Traffic,
    started: Instant,
) -> Result<(), (Side, io::ErrorKind)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (src, dst) = if from_client {
        (Side::Client, Side::Backend)
    } else {
        (Side::Backend, Side::Client)
    };
    loop {
        let (mut buf, n) = match read_pooled(&mut from).await {
            Ok(read) => read,
            // A TLS peer that closes its socket without close_notify: rustls
            // says UnexpectedEof. Most peers do it; treat it as the end of
            // this direction, not as a failure of the connection.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => (Buffer::take(), 0),
            Err(e) => return Err((src, e.kind())),
        };
        if n == 0 {
            // Always passed on, unlike on TCP: the close that follows may
            // not say it for such a stream (a TLS writer's close_notify is
            // sent by its shutdown, not by dropping it).
            let _ = to.shutdown().await;
            return Ok(());
        }
        traffic.record_activity(from_client, ms_since(started));
        to.write_all(&buf.bytes()[..n])
            .await
            .map_err(|e| (dst, e.kind()))?;
        // A TLS writer buffers: what was written must reach the socket
        // before this direction waits for more.
        to.flush().await.map_err(|e| (dst, e.kind()))?;
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::os::fd::AsFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
    use tokio::net::{TcpListener, TcpStream};

    use super::{Side, pump};
    use crate::metrics::Traffic;

    /// A connected pair: the end the test drives, the end the relay uses.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (relays, _) = l.accept().await.unwrap();
        (ours, relays)
    }

    /// Polls `done` (every millisecond, each a turn of the runtime's
    /// driver) until it holds, at most 5 s.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 5 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Until tokio's readiness for `s` holds the peer's end (a FIN or a
    /// reset): then a read shorter than the buffer may stand for the read
    /// that returns 0.
    async fn until_end_seen(s: &TcpStream) {
        use futures_util::FutureExt;
        until("the peer's end reaches tokio", || {
            matches!(
                s.ready(Interest::READABLE).now_or_never(),
                Some(Ok(r)) if r.is_read_closed()
            )
        })
        .await;
    }

    /// Relays `from` → `to` until the direction ends (at most 5 s).
    async fn relay(
        from: &mut TcpStream,
        to: &mut TcpStream,
        traffic: &Traffic,
    ) -> Result<(), (Side, io::ErrorKind)> {
        let finished = AtomicBool::new(false);
        let (r, _) = from.split();
        let (_, w) = to.split();
        let started = tokio::time::Instant::now();
        tokio::time::timeout(
            Duration::from_secs(5),
            pump(r, w, true, traffic, started, &finished),
        )
        .await
        .expect("the relay ends")
    }

    #[tokio::test]
    async fn bytes_and_fin_that_arrive_together_pass_on_in_order() {
        let (mut peer, mut from) = pair().await;
        let (mut sink, mut to) = pair().await;
        peer.write_all(b"last words").await.unwrap();
        peer.shutdown().await.unwrap();
        until_end_seen(&from).await;
        let relayed = relay(&mut from, &mut to, &Traffic::default()).await;
        assert_eq!(relayed, Ok(()));
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), sink.read_to_end(&mut got))
            .await
            .expect("the FIN is passed on")
            .unwrap();
        assert_eq!(got, b"last words");
    }

    /// A reset right after the last bytes is no FIN: the bytes are passed
    /// on and the reset is reported, not taken for a clean end.
    #[tokio::test]
    async fn bytes_then_a_reset_pass_on_and_the_reset_is_reported() {
        let (mut peer, mut from) = pair().await;
        let (mut sink, mut to) = pair().await;
        peer.write_all(b"bye").await.unwrap();
        // SO_LINGER 0 makes the close a reset (socket2's: tokio's
        // `set_linger` is deprecated for blocking on drop, which a zero
        // linger does not).
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
        until_end_seen(&from).await;
        assert_eq!(
            relay(&mut from, &mut to, &Traffic::default()).await,
            Err((Side::Client, io::ErrorKind::ConnectionReset))
        );
        let mut got = [0u8; 3];
        sink.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"bye");
    }

    /// The FIN that makes the read returning 0 skippable must be known
    /// before the short read, not after it: here bytes and a FIN arrive
    /// while the relay waits to write what it read before them.
    #[tokio::test]
    async fn bytes_that_come_with_a_fin_while_a_write_waits_are_not_lost() {
        let (mut peer, mut from) = pair().await;
        let (mut sink, mut to) = pair().await;
        // Fill the way to the sink, which reads nothing yet, until a write
        // would wait (bounded: loopback buffers are a few MiB).
        let filler = vec![7u8; 64 * 1024];
        let mut filled = 0usize;
        for _ in 0..4096 {
            match to.try_write(&filler) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling: {e}"),
            }
        }
        // The relay's socket, registered a second time: its readiness
        // events are the relay's, readable here while the relay holds it.
        let probe = std::net::TcpStream::from(from.as_fd().try_clone_to_owned().unwrap());
        let probe = TcpStream::from_std(probe).unwrap();
        let traffic = Traffic::default();
        peer.write_all(b"abc").await.unwrap();
        let steps = async {
            // The relay has read "abc"; its write of them waits.
            until("the relay reads the first bytes", || {
                traffic.bytes_in.load(Ordering::Relaxed) == 3
            })
            .await;
            peer.write_all(b"def").await.unwrap();
            peer.shutdown().await.unwrap();
            // The FIN is in the relay socket's readiness before its write
            // can finish, which the sink's first read below lets happen.
            until_end_seen(&probe).await;
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), sink.read_to_end(&mut got))
                .await
                .expect("the relay passes everything on, then the FIN")
                .unwrap();
            got
        };
        let (relayed, got) = tokio::join!(relay(&mut from, &mut to, &traffic), steps);
        assert_eq!(relayed, Ok(()));
        assert_eq!(got.len(), filled + 6);
        assert_eq!(&got[filled..], b"abcdef");
    }
}
