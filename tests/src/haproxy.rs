//! A real L4 load balancer in front of several Turnout processes: Debian's
//! HAProxy 2.6, `mode tcp`, round robin, the PROXY protocol (v1) toward the
//! servers, and an HTTP health check of each server's admin API
//! (`GET /readyz`, every 200 ms, down after one failure, up after one
//! success) — what an operator puts in front of a scaled-out proxy.
//!
//! A connection refused by a server that is draining, before its check
//! has failed, is retried on another server (`option redispatch 1`,
//! `retries 3`); a connection a server accepted and then dropped is not
//! (in `mode tcp` HAProxy cannot know what was already sent), so a proxy
//! that drops accepted connections on a drain shows up as a failed
//! request. Checks go to the admin port without a PROXY header (HAProxy
//! sends one to checks only on the traffic port).
//!
//! HAProxy runs in the foreground (`-db`: one process, no master) from a
//! config file in a temporary directory, logs (`option tcplog`, server
//! state changes) to a file there, answers on a stats socket there
//! ([`HaProxy::servers`]), and is killed when the [`HaProxy`] is dropped;
//! a test that panics prints its log's tail.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long HAProxy gets to answer on its stats socket.
const STARTUP: Duration = Duration::from_secs(10);
/// Its frontend port is found by binding and releasing it; another
/// process may take it first, then it starts again on another.
const ATTEMPTS: usize = 3;
/// What HAProxy logs when its frontend port is taken.
const PORT_TAKEN: &str = "cannot bind socket";
/// Lines of the log printed when a test panics.
const TAIL: usize = 60;

/// One server behind the balancer: a Turnout process.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    /// Where it serves (it must accept the PROXY protocol from 127.0.0.1).
    pub port: u16,
    /// Its admin API, whose `/readyz` is the health check.
    pub admin: u16,
}

/// A running HAProxy; dropping it kills it.
pub struct HaProxy {
    child: Child,
    frontend: SocketAddr,
    socket: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    /// Starts HAProxy balancing over `servers` (named `s1`, `s2`, … in
    /// order) and waits (bounded) until its stats socket answers. Panics
    /// with its log when it does not come up, and saying what to install
    /// when it is missing.
    pub async fn start(servers: &[Server]) -> HaProxy {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match try_start(servers).await {
                Ok(h) => return h,
                Err(why) if why.contains(PORT_TAKEN) => last = why,
                Err(why) => panic!("{why}"),
            }
        }
        panic!("haproxy did not start after {ATTEMPTS} attempts; last: {last}");
    }

    /// The frontend clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.frontend
    }

    /// Each server's name and status as HAProxy sees it now (`UP`,
    /// `DOWN`, …), from `show stat` on the stats socket.
    pub fn servers(&self) -> Vec<(String, String)> {
        let csv = self
            .command("show stat")
            .unwrap_or_else(|e| panic!("haproxy stats socket: {e}"));
        let header: Vec<&str> = csv
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (Some(px), Some(sv), Some(st)) = (col("pxname"), col("svname"), col("status")) else {
            panic!("unexpected `show stat` output:\n{csv}");
        };
        csv.lines()
            .skip(1)
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| {
                f.get(px) == Some(&"nodes") && !matches!(f.get(sv), Some(&"BACKEND") | None)
            })
            .map(|f| {
                (
                    f[sv].to_owned(),
                    f.get(st).copied().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// Waits (bounded by `within`) until every server is `UP`.
    pub async fn wait_all_up(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let servers = self.servers();
            if servers.iter().all(|(_, status)| status == "UP") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "haproxy's servers are not all UP after {within:?}: {servers:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// One command on the stats socket; its whole answer.
    fn command(&self, cmd: &str) -> std::io::Result<String> {
        command(&self.socket, cmd)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.tail(TAIL));
        }
    }
}

async fn try_start(servers: &[Server]) -> Result<HaProxy, String> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let socket = dir.path().join("admin.sock");
    let log = dir.path().join("haproxy.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let frontend = SocketAddr::from(([127, 0, 0, 1], port));
    let mut config = format!(
        "global
    log stderr format raw daemon
    maxconn 4096
    stats socket {socket} mode 600 level admin

defaults
    mode tcp
    log global
    option tcplog
    # A connection refused (a server draining before its check failed) is
    # retried, each time on another server, after min(timeout connect, 1 s).
    option redispatch 1
    retries 3
    timeout connect 500ms
    timeout client 30s
    timeout server 30s
    timeout check 1s

frontend fe
    bind {frontend}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 200ms fall 1 rise 1
",
        socket = socket.display()
    );
    for (i, s) in servers.iter().enumerate() {
        config.push_str(&format!(
            "    server s{} 127.0.0.1:{} send-proxy check port {}\n",
            i + 1,
            s.port,
            s.admin
        ));
    }
    let config_path = dir.path().join("haproxy.cfg");
    std::fs::write(&config_path, &config).expect("write haproxy.cfg");
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(binary())
        .arg("-db")
        .arg("-f")
        .arg(&config_path)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                "`haproxy` is not installed: the scale-out tests need Debian's \
                        `haproxy` package (`apt-get install haproxy`)"
                    .to_owned(),
            );
        }
        Err(e) => return Err(format!("running haproxy: {e}")),
    };
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "haproxy exited ({status}); config:\n{config}\n{}",
                tail(&log, TAIL)
            ));
        }
        if command(&socket, "show info").is_ok_and(|info| info.contains("Name: HAProxy")) {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "haproxy's stats socket did not answer within {STARTUP:?}\n{}",
                tail(&log, TAIL)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(HaProxy {
        child,
        frontend,
        socket,
        log,
        _dir: dir,
    })
}

fn command(socket: &std::path::Path, cmd: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut out = String::new();
    // Without `prompt`, HAProxy answers one command and closes.
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn tail(log: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    format!("--- haproxy ---\n{}", all[from..].join("\n"))
}

/// Debian installs HAProxy in `/usr/sbin`, which is not on a non-root
/// user's `PATH`: that one when it is there, else `haproxy` from `PATH`.
fn binary() -> &'static str {
    const DEBIAN: &str = "/usr/sbin/haproxy";
    if std::path::Path::new(DEBIAN).is_file() {
        DEBIAN
    } else {
        "haproxy"
    }
}
