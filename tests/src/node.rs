//! Turnout as a separate process — the real `turnout run` binary — for the
//! tests that need several instances (scale-out), a process that exits
//! (drain, exit status) or one killed outright: things an in-process
//! [`crate::app::RunningApp`] cannot show.
//!
//! Map: [`binary`] finds `target/<profile>/turnout` next to the test
//! executable (cargo builds it for `cargo nextest run --workspace`, not for
//! `-p turnout-tests`: then the test says to build it, and a binary older
//! than the host's sources is refused rather than tested). [`Node::start`]
//! writes the config to a file in a temporary directory, runs `turnout run
//! -c FILE` with its output to a log file there, and waits (bounded) until
//! this process, not another one, serves `GET /readyz` with 200 on the
//! admin API (the config must have `admin.listen`). The process binds its
//! ports itself: they are picked free a moment before ([`Setup::port`]), so
//! another process may take one first; then the start is tried again with
//! fresh ports, up to [`ATTEMPTS`] times, as `pebble.rs` does.
//! [`Node::sigterm`], [`Node::wait_exit`], [`Node::restart`] (same config,
//! same ports), [`Node::kill`] drive its life; dropping the [`Node`] kills
//! it, and a test that panics prints the tail of its log (its access lines
//! left out) and keeps its directory, whole log included.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a start may take until `/readyz` answers 200.
const STARTUP: Duration = Duration::from_secs(60);
/// Upper bound of one admin API request.
const REQUEST: Duration = Duration::from_secs(10);
/// Starts tried when a port picked free was taken before the process bound
/// it.
pub const ATTEMPTS: usize = 3;
/// What the process logs when a port is taken (compared lowercased).
const PORT_TAKEN: &str = "address already in use";
/// Lines of the log printed when a test panics.
const TAIL: usize = 40;
/// The target of the access log's lines.
const ACCESS_LOG: &str = "turnout::access";

/// What a config is made with at each start attempt: free ports, and the
/// node's own directory (for files the config names).
pub struct Setup<'a> {
    held: Vec<std::net::TcpListener>,
    dir: &'a Path,
}

impl Setup<'_> {
    /// A `127.0.0.1` port free now and distinct from the others this
    /// attempt took (all are held until the process is spawned).
    pub fn port(&mut self) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = l.local_addr().expect("bound").port();
        self.held.push(l);
        port
    }

    /// The node's directory (it outlives restarts; removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir
    }
}

/// A `turnout run` process (running, or stopped until [`Node::restart`]).
pub struct Node {
    name: String,
    config: Value,
    ports: Vec<u16>,
    admin: SocketAddr,
    child: Option<Child>,
    starts: usize,
    config_path: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Node {
    /// Starts `turnout run` with the config `make` returns (called again
    /// with fresh ports when a port was taken) and waits until it is
    /// ready. `name` labels its log. Panics, with the log, when it does not
    /// become ready within 60 s.
    pub async fn start(name: &str, mut make: impl FnMut(&mut Setup<'_>) -> Value) -> Node {
        let dir = tempfile::Builder::new()
            .prefix(&format!("turnout-{name}-"))
            .tempdir()
            .expect("temporary directory");
        let mut node = Node {
            name: name.to_owned(),
            config: Value::Null,
            ports: Vec::new(),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
            starts: 0,
            config_path: dir.path().join("turnout.json"),
            log: dir.path().join("turnout.log"),
            dir,
        };
        let binary = binary();
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let mut setup = Setup {
                held: Vec::new(),
                dir: node.dir.path(),
            };
            let config = make(&mut setup);
            let held = setup.held;
            node.ports = held
                .iter()
                .map(|l| l.local_addr().expect("bound").port())
                .collect();
            node.admin = admin_addr(&config);
            node.config = config;
            std::fs::write(&node.config_path, node.config.to_string()).expect("write the config");
            // Released just before the process binds them.
            drop(held);
            match node.spawn(&binary).await {
                Ok(()) => return node,
                Err(why) if why.to_ascii_lowercase().contains(PORT_TAKEN) => last = why,
                Err(why) => panic!("{why}"),
            }
        }
        panic!("node {name} did not start after {ATTEMPTS} attempts; last: {last}");
    }

    /// Its name (as given to [`Node::start`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin API.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The ports [`Setup::port`] gave its config, in the order taken.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The config it runs with.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// Its directory (config, log, and whatever the config keeps there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM: it drains and exits ([`Node::wait_exit`]).
    pub fn sigterm(&self) {
        let child = self.child.as_ref().expect("the node runs");
        rustix::process::kill_process(
            rustix::process::Pid::from_child(child),
            rustix::process::Signal::TERM,
        )
        .unwrap_or_else(|e| panic!("SIGTERM to node {}: {e}", self.name));
    }

    /// Waits (bounded by `within`) until the process has exited, and
    /// returns how. Panics when it is still running.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut().expect("the node was running");
            if let Some(status) = child.try_wait().expect("wait for the node") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not exit within {within:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits (30 s) for a clean exit (status 0).
    pub async fn stop(&mut self) {
        self.sigterm();
        let status = self.wait_exit(Duration::from_secs(30)).await;
        assert!(
            status.success(),
            "node {} exited with {status} after SIGTERM",
            self.name
        );
    }

    /// SIGKILL, and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same config (same ports) and waits until it
    /// is ready. It must have exited ([`Node::wait_exit`], [`Node::kill`]).
    /// A port another process holds a moment is retried a few times.
    pub async fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "node {}: stop it before restarting it",
            self.name
        );
        let binary = binary();
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match self.spawn(&binary).await {
                Ok(()) => return,
                Err(why) if why.to_ascii_lowercase().contains(PORT_TAKEN) => {
                    last = why;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(why) => panic!("{why}"),
            }
        }
        panic!(
            "node {} did not start again after {ATTEMPTS} attempts; last: {last}",
            self.name
        );
    }

    /// `GET path` on the admin API: (status, body). Panics when it does not
    /// answer in time.
    pub async fn get(&self, path: &str) -> (u16, String) {
        get(self.admin, path)
            .await
            .unwrap_or_else(|e| panic!("node {}: GET {path}: {e}", self.name))
    }

    /// `GET path` on the admin API, which must answer 200 with JSON.
    pub async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "node {}: GET {path}: {body}", self.name);
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("node {}: GET {path}: {e}: {body}", self.name))
    }

    /// Its log so far (every start of it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded by `within`) until its log contains `what`; returns
    /// the first line that does.
    pub async fn wait_log(&self, what: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(what)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not log {what:?} within {within:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `lines` lines of its log but the access log's (one line
    /// per request: under load they would hide the rest).
    fn tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        let rest: Vec<&str> = all
            .iter()
            .copied()
            .filter(|l| !l.contains(ACCESS_LOG))
            .collect();
        let from = rest.len().saturating_sub(lines);
        format!(
            "--- node {} ({}; {} access lines left out) ---\n{}",
            self.name,
            self.log.display(),
            all.len() - rest.len(),
            rest[from..].join("\n")
        )
    }

    /// One start from the config file: `Ok` once this process serves
    /// `/readyz` with 200; `Err` with the log's tail when it exited or did
    /// not become ready in time (then it is killed).
    async fn spawn(&mut self, binary: &Path) -> Result<(), String> {
        self.starts += 1;
        let (out, err) = crate::append_log(
            &self.log,
            &format!("=== start {} of node {} ===", self.starts, self.name),
        );
        let child = Command::new(binary)
            .arg("run")
            .arg("-c")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
        self.child = Some(child);
        // The ready callback prints this once the admin API is bound: the
        // 200 below is then this process's, not another's on that port.
        let bound = format!("admin API on http://{}/", self.admin);
        let deadline = Instant::now() + STARTUP;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(format!(
                    "node {} exited ({status}) while starting:\n{}",
                    self.name,
                    self.tail(TAIL)
                ));
            }
            if self.log().contains(&bound)
                && matches!(get(self.admin, "/readyz").await, Ok((200, _)))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "node {} was not ready within {STARTUP:?}:\n{}",
                    self.name,
                    self.tail(TAIL)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // The whole log stays for a look (access lines included).
            self.dir.disable_cleanup(true);
            eprintln!("{}", self.tail(TAIL));
        }
    }
}

/// The `turnout` binary of this build (`target/<profile>/turnout`, next to
/// the `deps/` directory the test executable is in). Panics when it is
/// missing or older than the host's sources.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps");
    let binary = profile_dir.join("turnout");
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: build it first: cargo build -p turnout \
                 (`cargo nextest run --workspace` builds it)",
                binary.display()
            )
        });
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for dir in ["host/src", "plugins", "plugin-sdk/src", "wit"] {
        newest_file(&root.join(dir), &mut newest);
    }
    if let Some((changed, file)) = newest
        && changed > built
    {
        panic!(
            "{} is older than {}: build it again first: cargo build -p turnout",
            binary.display(),
            file.display()
        );
    }
    binary
}

/// The most recently modified file under `dir` (skipping `target/`).
fn newest_file(dir: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() {
            if entry.file_name() != "target" {
                newest_file(&path, newest);
            }
        } else if let Ok(modified) = meta.modified()
            && newest.as_ref().is_none_or(|(t, _)| modified > *t)
        {
            *newest = Some((modified, path));
        }
    }
}

/// `admin.listen` of `config`.
fn admin_addr(config: &Value) -> SocketAddr {
    config["admin"]["listen"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a node's config needs admin.listen (ip:port): {config}"))
}

/// `GET path` on `addr` over HTTP/1.1 (`Connection: close`), bounded by
/// [`REQUEST`]: (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("not an HTTP response: {raw:?}"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status in {head:?}"))?;
        Ok((status, body.to_owned()))
    };
    tokio::time::timeout(REQUEST, exchange)
        .await
        .map_err(|_| format!("no answer within {REQUEST:?}"))?
}
