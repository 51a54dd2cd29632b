//! The whole proxy as `turnout run` starts it (config file → embedded
//! default plugins → listeners), in-process, on free loopback ports.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// A free loopback port (bound, then released: the config must name ports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `turnout::app::run`.
pub struct RunningApp {
    /// Bound listener addresses.
    pub addrs: Vec<SocketAddr>,
    /// The admin API, when configured.
    pub admin: Option<SocketAddr>,
    /// The metrics registry.
    pub metrics: std::sync::Arc<turnout::metrics::Metrics>,
    /// The limit counters.
    pub tracker: std::sync::Arc<turnout::limits::ConnectionTracker>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
    _reload: mpsc::Sender<()>,
    _dir: tempfile::TempDir,
}

impl RunningApp {
    /// Starts the proxy with `config` (JSON text).
    pub async fn start(config: &str) -> RunningApp {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turnout.json");
        std::fs::write(&path, config).unwrap();
        let (reload_tx, reload_rx) = mpsc::channel(1);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            turnout::app::run(
                &path,
                None,
                reload_rx,
                async move {
                    let _ = stop_rx.await;
                },
                move |started| {
                    let _ = ready_tx.send(started);
                },
            )
            .await
            .map_err(|e| e.to_string())
        });
        let started = match tokio::time::timeout(Duration::from_secs(60), ready_rx).await {
            Ok(Ok(started)) => started,
            _ => match task.await {
                Ok(Err(e)) => panic!("turnout did not start: {e}"),
                other => panic!("turnout did not start: {other:?}"),
            },
        };
        RunningApp {
            addrs: started.listeners,
            admin: started.admin,
            metrics: started.metrics,
            tracker: started.tracker,
            stop: Some(stop_tx),
            task,
            _reload: reload_tx,
            _dir: dir,
        }
    }

    /// Drains and stops.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("stops in time")
            .expect("task");
        result.expect("ran cleanly");
    }
}
