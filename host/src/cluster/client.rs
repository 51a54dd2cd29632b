//! The one Redis connection of a process, on a thread of its own.
//!
//! Why a thread: callers are of two kinds. Plugin host imports are
//! synchronous and run on the workers' single-threaded runtimes, so they
//! wait on a channel for an answer driven elsewhere; ACME, the connection
//! rate and the admin API await it. Driving the connection on its own
//! runtime serves both without a worker ever driving another worker's I/O,
//! and a blocked caller can never be the thread its answer needs.
//!
//! Every call is bounded by a timeout. A call that fails or times out
//! marks the store down (see [`Health`]); while it is down calls are not
//! sent at all, they fail at once and the caller counts locally, and the
//! supervisor reconnects in the background.

use std::future::Future;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;

use super::health::Health;

/// Why a call was not answered by the shared store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// The store is down (or not reached yet): nothing was sent.
    #[error("the cluster store is down")]
    Down,
    /// No answer within the call's timeout.
    #[error("no answer from the cluster store within {0:?}")]
    Timeout(Duration),
    /// The connection broke.
    #[error("cluster store error: {0}")]
    Failed(String),
    /// Redis answered with an error (a key of another type, a script
    /// error): the store is up, this call failed.
    #[error("cluster store refused the call: {0}")]
    Rejected(String),
}

impl Unavailable {
    /// Whether this says the store is unreachable (not one call refused).
    pub(super) fn is_outage(&self) -> bool {
        !matches!(self, Unavailable::Rejected(_))
    }
}

/// The connection and the runtime that drives it.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) handle: tokio::runtime::Handle,
    pub(super) conn: ArcSwapOption<MultiplexedConnection>,
    pub(super) health: Arc<Health>,
    /// Stops the runtime thread when the client is dropped.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Client {
    /// Starts the runtime thread (`turnout-cluster`); nothing connects yet.
    pub(super) fn start(health: Arc<Health>) -> std::io::Result<Client> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("turnout-cluster".into())
            .spawn(move || {
                rt.block_on(async move {
                    let _ = stopped.await;
                });
            })?;
        Ok(Client {
            handle,
            conn: ArcSwapOption::empty(),
            health,
            _stop: stop,
        })
    }

    /// The connection, when the store is up.
    fn ready(&self) -> Result<MultiplexedConnection, Unavailable> {
        if !self.health.is_up() {
            self.health.fell_back();
            return Err(Unavailable::Down);
        }
        match self.conn.load_full() {
            Some(c) => Ok(MultiplexedConnection::clone(&c)),
            None => {
                self.health.fell_back();
                Err(Unavailable::Down)
            }
        }
    }

    /// Runs `op` on the connection within `timeout`, from async code.
    pub(super) async fn call<T, F, Fut>(&self, timeout: Duration, op: F) -> Result<T, Unavailable>
    where
        T: Send + 'static,
        F: FnOnce(MultiplexedConnection) -> Fut + Send + 'static,
        Fut: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        let conn = self.ready()?;
        let health = self.health.clone();
        let task = self
            .handle
            .spawn(async move { timed(&health, timeout, op(conn)).await });
        task.await
            .unwrap_or_else(|e| Err(Unavailable::Failed(e.to_string())))
    }

    /// [`Client::call`] for synchronous callers (plugin host imports):
    /// the calling thread waits at most `timeout` (plus a margin for the
    /// cluster thread to be scheduled).
    pub(super) fn call_blocking<T, F, Fut>(
        &self,
        timeout: Duration,
        op: F,
    ) -> Result<T, Unavailable>
    where
        T: Send + 'static,
        F: FnOnce(MultiplexedConnection) -> Fut + Send + 'static,
        Fut: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        let conn = self.ready()?;
        let health = self.health.clone();
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(timed(&health, timeout, op(conn)).await);
        });
        match rx.recv_timeout(timeout + Duration::from_millis(5)) {
            Ok(answer) => answer,
            Err(_) => {
                // The cluster thread did not even run the call in time.
                let e = Unavailable::Timeout(timeout);
                self.health.failed(&e);
                Err(e)
            }
        }
    }
}

/// `fut` within `timeout`, its round trip and outcome recorded.
async fn timed<T>(
    health: &Health,
    timeout: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Unavailable> {
    let start = Instant::now();
    let result = match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(Unavailable::Timeout(timeout)),
        Ok(Err(e))
            if e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
                || e.is_unrecoverable_error() =>
        {
            Err(Unavailable::Failed(e.to_string()))
        }
        Ok(Err(e)) => Err(Unavailable::Rejected(e.to_string())),
        Ok(Ok(v)) => Ok(v),
    };
    match &result {
        Ok(_) => health.answered(start.elapsed()),
        Err(e) => health.failed(e),
    }
    result
}
