//! Socket → pipe → socket with `splice(2)`: the kernel moves page
//! references, so the bytes of a bulk transfer never cross into user space
//! (two copies fewer per byte than `read` + `write`). Pipes are pooled per
//! worker thread and held only while bytes move, like the relay buffers;
//! a pipe that may still hold bytes (a failed write, a cancelled relay) is
//! closed, never reused.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for: 1 MiB, the most an unprivileged process may
/// ask for by default (`fs.pipe-max-size`); the kernel default is 64 KiB.
/// One stream cost about a quarter less CPU per GB than at 256 KiB (fewer
/// syscalls and wake-ups per byte; `benches/results/2026-11-22-0135.md`
/// against `-0051.md`).
/// Capacity is a reservation, not memory: pages are referenced only while
/// bytes are in flight. A user over `fs.pipe-user-pages-soft` gets smaller
/// pipes, which work the same.
const PIPE_SIZE: usize = 1024 * 1024;

/// Pipes kept for reuse per worker thread (beyond them, closed).
const POOLED: usize = 32;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// What the kernel granted.
    capacity: usize,
}

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// A pipe taken from the pool; it goes back on drop only when known to be
/// empty.
struct Lease {
    pipe: Option<Pipe>,
    empty: bool,
}

impl Lease {
    fn take() -> io::Result<Lease> {
        let pipe = match PIPES.with(|p| p.borrow_mut().pop()) {
            Some(pipe) => pipe,
            None => {
                let (read, write) =
                    rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
                // Best effort: over the per-user pipe quota the kernel
                // refuses, and the default capacity still works.
                let capacity = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE)
                    .or_else(|_| rustix::pipe::fcntl_getpipe_size(&write))
                    .unwrap_or(4096);
                Pipe {
                    read,
                    write,
                    capacity,
                }
            }
        };
        Ok(Lease {
            pipe: Some(pipe),
            empty: true,
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let (true, Some(pipe)) = (self.empty, self.pipe.take()) {
            PIPES.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOLED {
                    p.push(pipe);
                }
            });
        }
    }
}

/// How a burst ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Burst {
    /// `from` has nothing more for now (its readiness is cleared).
    Drained,
    /// `from` sent its FIN; everything before it was passed on.
    Eof,
}

/// Why a burst failed.
#[derive(Debug)]
pub(super) enum Error {
    /// No pipe could be made (out of descriptors): copy through a buffer.
    NoPipe,
    /// Reading `from` failed.
    Read(io::Error),
    /// Writing `to` failed.
    Write(io::Error),
}

/// Moves what `from` has to `to` until `from` runs dry or ends. `read` is
/// told of each chunk taken from `from`, `written` of each part that
/// reached `to`. Every chunk is written out in full before the next read,
/// so a cancelled burst loses at most the chunk in flight, as a buffered
/// copy would.
pub(super) async fn burst(
    from: &TcpStream,
    to: &TcpStream,
    mut read: impl FnMut(usize),
    mut written: impl FnMut(usize),
) -> Result<Burst, Error> {
    let mut lease = Lease::take().map_err(|e| {
        tracing::debug!(error = %e, "no pipe for splice; copying through a buffer");
        Error::NoPipe
    })?;
    let Some(pipe) = lease.pipe.as_ref() else {
        return Err(Error::NoPipe);
    };
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        // The pipe is empty here, so EAGAIN can only mean `from` has no
        // data; `try_io` then clears its readiness. Unlike `recv`, a short
        // splice does not mean the socket ran dry (it stops when the pipe
        // runs out of slots, which small segments use up first), so only
        // EAGAIN ends a burst: taking a short splice for "drained" could
        // wait for an edge that never comes while the sender waits for
        // window.
        let n = match from.try_io(Interest::READABLE, || {
            rustix::pipe::splice(from, None, &pipe.write, None, pipe.capacity, flags)
                .map_err(io::Error::from)
        }) {
            Ok(0) => return Ok(Burst::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Burst::Drained),
            Err(e) => return Err(Error::Read(e)),
        };
        lease.empty = false;
        read(n);
        let mut left = n;
        while left > 0 {
            let m = to
                .async_io(Interest::WRITABLE, || {
                    rustix::pipe::splice(&pipe.read, None, to, None, left, flags)
                        .map_err(io::Error::from)
                })
                .await
                .map_err(Error::Write)?;
            if m == 0 {
                return Err(Error::Write(io::ErrorKind::WriteZero.into()));
            }
            left -= m;
            written(m);
        }
        lease.empty = true;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::{Burst, Error, PIPES, burst};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// 8 MiB sender → [from … burst … to] → receiver, byte for byte, and
    /// the FIN comes out as `Eof` once everything is through.
    #[tokio::test(flavor = "current_thread")]
    async fn bursts_move_every_byte_and_see_the_fin() {
        let (mut sender, from) = pair().await;
        let (to, mut receiver) = pair().await;
        let data = pattern(8 << 20);
        let expected = data.clone();
        let send = tokio::spawn(async move {
            sender.write_all(&data).await.unwrap();
            sender.shutdown().await.unwrap();
        });
        let recv = tokio::spawn(async move {
            let mut got = Vec::new();
            receiver.read_to_end(&mut got).await.unwrap();
            got
        });
        let (mut read, mut written) = (0usize, 0usize);
        let mut bursts = 0;
        loop {
            from.readable().await.unwrap();
            bursts += 1;
            assert!(bursts < 1_000_000, "no end in sight");
            match burst(&from, &to, |n| read += n, |n| written += n).await {
                Ok(Burst::Drained) => continue,
                Ok(Burst::Eof) => break,
                Err(e) => panic!("burst failed: {e:?}"),
            }
        }
        drop(to);
        send.await.unwrap();
        let got = recv.await.unwrap();
        assert_eq!((read, written), (8 << 20, 8 << 20));
        assert!(got == expected, "bytes differ after splice");
        // The pipe went back to the pool, empty.
        assert_eq!(PIPES.with(|p| p.borrow().len()), 1);
    }

    /// A destination that reset: a write error, and the pipe that still
    /// holds the chunk is closed rather than pooled.
    #[tokio::test(flavor = "current_thread")]
    async fn a_reset_destination_is_a_write_error_and_the_pipe_is_not_reused() {
        let (mut sender, from) = pair().await;
        let (to, receiver) = pair().await;
        // RST on close: linger 0.
        socket2::SockRef::from(&receiver)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(receiver);
        // The RST makes `to` readable (error/hang-up): wait for that, not
        // for a while.
        tokio::time::timeout(std::time::Duration::from_secs(10), to.readable())
            .await
            .expect("the RST arrives")
            .unwrap();
        let before = PIPES.with(|p| p.borrow().len());
        let writer = tokio::spawn(async move {
            // Enough that the write side must fail before it is all out.
            let _ = sender.write_all(&pattern(4 << 20)).await;
            sender
        });
        let mut outcome = None;
        for _ in 0..10_000 {
            from.readable().await.unwrap();
            match burst(&from, &to, |_| {}, |_| {}).await {
                Ok(Burst::Drained) => continue,
                other => {
                    outcome = Some(other);
                    break;
                }
            }
        }
        assert!(
            matches!(outcome, Some(Err(Error::Write(_)))),
            "expected a write error, got {outcome:?}"
        );
        assert_eq!(PIPES.with(|p| p.borrow().len()), before);
        drop(from);
        let _ = writer.await;
    }
}
