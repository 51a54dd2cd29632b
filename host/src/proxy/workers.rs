//! The proxy's worker threads: one single-threaded tokio runtime per
//! worker, each accepting on its own copy of every listener and running the
//! connections it accepted to their end, nginx-style.
//!
//! Why not tokio's work-stealing runtime: there, a connection's wake-ups
//! cross threads (an idle worker is woken to steal a task the busy one was
//! about to run), its state moves between cores' caches, and the per-thread
//! relay buffer and pipe pools serve whichever thread polls it. Here a
//! connection never leaves the thread that accepted it; what workers share
//! (plugins, limit counters, metrics) they already shared across tokio's
//! threads. The price: a plugin call that runs to its deadline delays the
//! other connections of its worker, where tokio would have moved them. On
//! the loopback benchmarks the CPU cost moved within their noise either way
//! (`benches/results/2026-11-21-profile.md`, second session).
//!
//! Each worker gets its own listening socket per listener: a sibling bound
//! to the same address with `SO_REUSEPORT` (the kernel spreads new
//! connections over the group and wakes one worker for each), or, for a
//! listener made elsewhere without that option, a duplicate descriptor of
//! the same socket (every worker is woken and one wins the `accept`).

use std::io;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::Proxy;
use super::listen::{Incoming, accept_loop};

/// The running workers, as the control side sees them.
pub(super) struct Workers {
    /// One per worker: its accept loops have ended (its listeners are closed).
    stopped_accepting: Vec<oneshot::Receiver<()>>,
    /// One per worker: it has finished (its runtime, and every task left on
    /// it, is dropped).
    exited: Vec<oneshot::Receiver<()>>,
    /// `true`: the drain is over, workers may drop what is left.
    finish: watch::Sender<bool>,
}

/// The worker count when the config sets none: one per CPU this process
/// may run on (affinity masks and cgroup CPU quotas included).
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl Workers {
    /// Starts `count` workers, and returns with them one channel per
    /// worker on which it receives its own socket for each listener to
    /// accept on (see `listen::Registry`). A worker whose thread or runtime
    /// cannot be made runs on the calling runtime instead, with an error
    /// logged: the proxy serves slower rather than not at all.
    pub(super) fn start(
        proxy: &Arc<Proxy>,
        count: usize,
        accepting: &watch::Receiver<bool>,
    ) -> (Workers, Vec<mpsc::UnboundedSender<Incoming>>) {
        let count = count.max(1);
        let (finish, finish_rx) = watch::channel(false);
        let mut stopped_accepting = Vec::with_capacity(count);
        let mut exited = Vec::with_capacity(count);
        let mut channels = Vec::with_capacity(count);
        for i in 0..count {
            let (stopped_tx, stopped_rx) = oneshot::channel();
            let (exit_tx, exit_rx) = oneshot::channel();
            let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
            stopped_accepting.push(stopped_rx);
            exited.push(exit_rx);
            channels.push(incoming_tx);
            let work = run(
                proxy.clone(),
                i,
                incoming_rx,
                accepting.clone(),
                finish_rx.clone(),
                stopped_tx,
            );
            if let Err((e, work)) = spawn_thread(i, work, exit_tx) {
                tracing::error!(worker = i, error = %e, "cannot start a worker thread; its share runs on the control thread");
                let (exit_tx, exit_rx) = oneshot::channel();
                exited[i] = exit_rx;
                tokio::spawn(async move {
                    work.await;
                    let _ = exit_tx.send(());
                });
            }
        }
        let workers = Workers {
            stopped_accepting,
            exited,
            finish,
        };
        (workers, channels)
    }

    /// Waits until every worker has stopped accepting.
    pub(super) async fn stopped_accepting(&mut self) {
        for rx in self.stopped_accepting.drain(..) {
            let _ = rx.await;
        }
    }

    /// Tells the workers to drop what is left and waits for them to exit.
    pub(super) async fn finish(self) {
        let _ = self.finish.send(true);
        for rx in self.exited {
            let _ = rx.await;
        }
    }
}

type Work = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs `work` on a new thread with its own single-threaded runtime; hands
/// `work` back if that cannot be made.
fn spawn_thread(
    index: usize,
    work: Work,
    exited: oneshot::Sender<()>,
) -> Result<(), (io::Error, Work)> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Err((e, work)),
    };
    // `work` goes over once the thread exists, so a failed spawn still has
    // it to hand back.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Work>(1);
    let spawned = std::thread::Builder::new()
        // Linux keeps 15 bytes of a thread name (what `top -H` shows).
        .name(format!("turnout-wrk-{index}"))
        .spawn(move || {
            if let Ok(work) = rx.recv() {
                rt.block_on(work);
            }
            // Tasks still on the runtime (connections cut at the end of the
            // drain) are dropped here, on their own thread, before the
            // control side hears that this worker is done.
            drop(rt);
            let _ = exited.send(());
        });
    match spawned {
        Ok(_) => {
            let _ = tx.send(work);
            Ok(())
        }
        Err(e) => Err((e, work)),
    }
}

/// One worker: accept on the listeners it is handed (at start and by
/// reconfigures) until told to stop, report that, then keep running its
/// connections until the drain is over.
fn run(
    proxy: Arc<Proxy>,
    index: usize,
    mut incoming: mpsc::UnboundedReceiver<Incoming>,
    mut accepting: watch::Receiver<bool>,
    mut finish: watch::Receiver<bool>,
    stopped_accepting: oneshot::Sender<()>,
) -> Work {
    Box::pin(async move {
        // Dropped (and so aborted) with this future, wherever it runs.
        let mut sentinel = tokio::task::JoinSet::new();
        sentinel.spawn(timer_sentinel());
        let mut loops = tokio::task::JoinSet::new();
        let stop = accepting.clone();
        loop {
            tokio::select! {
                Some(l) = incoming.recv() => {
                    loops.spawn(accept_loop(proxy.clone(), l, index, stop.clone()));
                }
                Some(_) = loops.join_next() => {}
                _ = accepting.wait_for(|open| !*open) => break,
            }
        }
        // Each loop takes what is queued on its socket before it ends.
        while loops.join_next().await.is_some() {}
        let _ = stopped_accepting.send(());
        let _ = finish.wait_for(|done| *done).await;
    })
}

/// The longest a worker's runtime sleeps with no timer due.
const SENTINEL_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps a deadline at most [`SENTINEL_PERIOD`] away in the worker's timer
/// wheel. tokio wakes its driver (an eventfd write, and one more
/// `epoll_wait` to consume it) whenever a timer is registered that is due
/// before the driver's planned wake-up; with only long relay timers
/// pending, that was every new connection's `initialDataTimeout` — 1.2
/// `write`s per new connection where HAProxy makes 0.16
/// (`benches/results/2026-12-02-profile.md`). With this one, every timer
/// longer than a second is due after the planned wake-up and registers
/// without a wake. Its price: one wake-up a second per idle worker.
async fn timer_sentinel() {
    let mut tick = tokio::time::interval(SENTINEL_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// `n` more listening sockets for the address `first` listens on. With
/// `SO_REUSEPORT` on `first`: siblings in its group, so the kernel picks
/// one worker per connection. Otherwise (or if a sibling cannot be bound):
/// duplicates of `first`'s descriptor.
pub(super) fn copies(first: &std::net::TcpListener, n: usize) -> Vec<std::net::TcpListener> {
    let reuse_port = socket2::SockRef::from(first).reuse_port().unwrap_or(false);
    let addr = first.local_addr();
    (0..n)
        .filter_map(|_| {
            if reuse_port && let Ok(addr) = addr {
                match super::listening_socket(addr, true) {
                    Ok(s) => return Some(s),
                    Err(e) => tracing::warn!(listener = %addr, error = %e,
                        "cannot bind a sibling listener; workers share one socket"),
                }
            }
            match first.try_clone() {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "cannot share a listener with a worker; it accepts on fewer");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::os::fd::AsRawFd;

    /// Which socket a descriptor refers to: Linux names it `socket:[inode]`.
    fn inode(l: &std::net::TcpListener) -> std::path::PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).expect("readlink")
    }

    /// Accepts everything queued on `l` without blocking.
    fn drain(l: &std::net::TcpListener) -> usize {
        let mut n = 0;
        loop {
            match l.accept() {
                Ok(_) => n += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// The premise of one socket per worker: siblings of a `listen`ed
    /// socket are distinct sockets of one `SO_REUSEPORT` group, and the
    /// kernel spreads connections over them (64 connections all landing on
    /// one of two sockets has odds of 2⁻⁶³).
    #[tokio::test]
    async fn siblings_of_a_reuseport_listener_share_the_connections() {
        let first = crate::proxy::listen::listen("127.0.0.1:0".parse().unwrap())
            .unwrap()
            .into_std()
            .unwrap();
        let addr = first.local_addr().unwrap();
        let sibling = super::copies(&first, 1).pop().expect("one sibling");
        assert_ne!(inode(&first), inode(&sibling), "a new socket, not a dup");
        assert_eq!(sibling.local_addr().unwrap(), addr);
        let clients: Vec<_> = (0..64)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // Connections complete in the kernel; give the last handshakes a
        // moment to reach the accept queues, bounded.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (mut a, mut b) = (0, 0);
        while a + b < clients.len() && std::time::Instant::now() < deadline {
            a += drain(&first);
            b += drain(&sibling);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(a + b, 64);
        assert!(a > 0 && b > 0, "both sockets accept: {a} and {b}");
    }

    /// A listener made without `SO_REUSEPORT` (a test's, an inherited one)
    /// is shared by duplicating its descriptor: same socket, new fd.
    #[test]
    fn a_plain_listener_is_shared_by_duplicates() {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let copies = super::copies(&first, 2);
        assert_eq!(copies.len(), 2);
        for c in &copies {
            assert_eq!(inode(c), inode(&first));
            assert_ne!(c.as_raw_fd(), first.as_raw_fd());
        }
    }

    /// `SO_REUSEPORT` must not let a second proxy (same user) join the
    /// group of a running one: it gets "address in use", as without it.
    #[test]
    fn a_second_listen_on_a_taken_port_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let first = crate::proxy::listen::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = crate::proxy::listen::listen(addr).expect_err("port is taken");
        assert_eq!(second.kind(), ErrorKind::AddrInUse, "{second}");
    }
}
