//! A real Redis for the cluster tests: Debian's `redis-server` on a free
//! loopback port, in a temporary directory, without persistence (a
//! restart comes back empty, as a Redis without disk would), stopped when
//! the [`Redis`] is dropped.
//!
//! [`Redis::kill`] and [`Redis::restart`] (on the same port, so the
//! proxies' configured URL stays right) are what the outage tests need.
//! [`Redis::keys`] and [`Redis::get`] read what the proxies wrote. The
//! calls are synchronous: each is one loopback round trip, or a start
//! bounded by [`STARTUP`]. Its log goes to a file in the temporary
//! directory; a test that panics prints its tail.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `redis-server` gets to answer after it is started.
const STARTUP: Duration = Duration::from_secs(10);
/// Upper bound of one command of the helpers.
const COMMAND: Duration = Duration::from_secs(5);
/// Starts on a fresh port (or, for a restart, the same one after a pause)
/// when the port was taken in between.
const ATTEMPTS: usize = 5;
/// What `redis-server` logs when its port is taken.
const PORT_TAKEN: &str = "address already in use";
/// Lines of the log printed when a test panics.
const TAIL: usize = 30;

/// A running (or killed, until restarted) `redis-server`.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    starts: usize,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts `redis-server` on a free port and waits (bounded) until it
    /// answers. Panics with its log when it does not come up, and
    /// saying what to install when it is missing.
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = dir.path().join("redis.log");
        let mut redis = Redis {
            child: None,
            port: 0,
            log,
            starts: 0,
            dir,
        };
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            redis.port = free_port();
            match redis.spawn() {
                Ok(()) => return redis,
                Err(why) if why.contains(PORT_TAKEN) => last = why,
                Err(why) => panic!("{why}"),
            }
        }
        panic!("redis-server did not start after {ATTEMPTS} attempts; last: {last}");
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL, and waits until it is gone: every connection to it breaks
    /// at once and nothing answers on its port until [`Redis::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty, and waits until it answers
    /// (killing it first if it runs). A port still held a moment is
    /// retried a few times.
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match self.spawn() {
                Ok(()) => return,
                Err(why) if why.contains(PORT_TAKEN) => {
                    last = why;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(why) => panic!("{why}"),
            }
        }
        panic!(
            "redis-server did not start again on port {} after {ATTEMPTS} attempts; last: {last}",
            self.port
        );
    }

    /// The keys matching `pattern` (`KEYS`: fine for a test's few keys),
    /// sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self.query(::redis::cmd("KEYS").arg(pattern));
        keys.sort();
        keys
    }

    /// The string value of `key`, if it exists.
    pub fn get(&self, key: &str) -> Option<String> {
        self.query(::redis::cmd("GET").arg(key))
    }

    /// Runs `cmd` on a fresh connection; panics (with the log) on failure.
    pub fn query<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> T {
        self.try_query(cmd)
            .unwrap_or_else(|e| panic!("redis {cmd:?}: {e}\n{}", self.tail(TAIL)))
    }

    fn try_query<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> ::redis::RedisResult<T> {
        let mut con = ::redis::Client::open(self.url())?
            .get_connection_with_timeout(Duration::from_secs(1))?;
        con.set_read_timeout(Some(COMMAND))?;
        con.set_write_timeout(Some(COMMAND))?;
        cmd.query(&mut con)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!("--- redis-server ---\n{}", all[from..].join("\n"))
    }

    /// One start on `self.port`: `Ok` once it answers; `Err` with the
    /// log when it exited or did not answer in time.
    fn spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let (out, err) = crate::append_log(
            &self.log,
            &format!("=== start {} on port {} ===", self.starts, self.port),
        );
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            // No RDB snapshots, no append-only file: a restart is empty.
            .args(["--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--logfile", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(
                    "`redis-server` is not installed: the cluster tests need Debian's \
                            `redis-server` package (`apt-get install redis-server`)"
                        .to_owned(),
                );
            }
            Err(e) => return Err(format!("running redis-server: {e}")),
        };
        let pid = format!("process_id:{}\r\n", child.id());
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                let log = self.tail(TAIL);
                let why = format!("redis-server exited ({status}); its log:\n{log}");
                return Err(if log.to_ascii_lowercase().contains(PORT_TAKEN) {
                    format!("{PORT_TAKEN}: {why}")
                } else {
                    why
                });
            }
            // Up, and this process (not another one that took the port).
            match self.try_query::<String>(::redis::cmd("INFO").arg("server")) {
                Ok(info) if info.contains(&pid) => return Ok(()),
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                other => {
                    self.kill();
                    return Err(format!(
                        "redis-server did not answer within {STARTUP:?} ({other:?}); its log:\n{}",
                        self.tail(TAIL)
                    ));
                }
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.tail(TAIL));
        }
    }
}

/// A loopback port free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
