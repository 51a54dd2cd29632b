//! The whole proxy as `turnout run` starts it (config file → embedded
//! default plugins → listeners), in-process, on free loopback ports.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// Listening sockets on free loopback ports, bound by the test and handed
/// to the proxy when it starts ([`RunningApp::start_with`]): the config
/// names their ports, and no other process can take one in between.
#[derive(Debug, Default)]
pub struct Ports(Vec<std::net::TcpListener>);

impl Ports {
    /// Binds one more `127.0.0.1` port and returns its number.
    pub fn take(&mut self) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        self.0.push(l);
        port
    }

    /// [`Ports::take`] with `SO_REUSEPORT`, as Turnout binds its own
    /// listeners: each worker thread then gets a sibling socket of its own
    /// (a listener without it is shared by all workers).
    pub fn take_shared(&mut self) -> u16 {
        use rustix::net::{AddressFamily, SocketType, bind, listen, socket, sockopt};
        let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        sockopt::set_socket_reuseport(&fd, true).unwrap();
        bind(&fd, &std::net::SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        listen(&fd, 1024).unwrap();
        let l = std::net::TcpListener::from(fd);
        let port = l.local_addr().unwrap().port();
        self.0.push(l);
        port
    }
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
    /// The config file it runs from.
    pub config_path: std::path::PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
    reload: mpsc::Sender<()>,
    _dir: tempfile::TempDir,
}

impl RunningApp {
    /// Starts the proxy with `config` (JSON text), binding what it names.
    pub async fn start(config: &str) -> RunningApp {
        Self::start_with(config, Ports::default()).await
    }

    /// Starts the proxy with `config` (JSON text) on the listeners in
    /// `ports` (the config's routes name their ports).
    pub async fn start_with(config: &str, ports: Ports) -> RunningApp {
        Self::start_file("turnout.json", config, ports).await
    }

    /// Starts the proxy from a config file named `name` (its extension
    /// picks the format) holding `config`, in a directory of its own.
    pub async fn start_file(name: &str, config: &str, ports: Ports) -> RunningApp {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, config).unwrap();
        let config_path = path.clone();
        let (reload_tx, reload_rx) = mpsc::channel(1);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            turnout::app::run(
                &path,
                None,
                turnout::app::Bound {
                    listeners: ports.0,
                    admin: None,
                },
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
            config_path,
            stop: Some(stop_tx),
            task,
            reload: reload_tx,
            _dir: dir,
        }
    }

    /// What SIGHUP does: read the config file again.
    pub async fn reload(&self) {
        self.reload.send(()).await.unwrap();
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

/// `method path` on the admin API at `admin`: (status, body).
pub async fn admin_request(admin: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let raw = String::from_utf8(crate::l4::read_to_end(&mut s).await).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}

/// An admin API answer.
#[derive(Debug)]
pub struct AdminAnswer {
    /// Status code.
    pub status: u16,
    /// Response headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl AdminAnswer {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// `method path` on the admin API with `headers` and `body`.
pub async fn admin_call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> AdminAnswer {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    let raw = tokio::time::timeout(Duration::from_secs(120), crate::l4::read_to_end(&mut s))
        .await
        .expect("the admin API answers");
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    AdminAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}
