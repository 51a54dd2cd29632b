//! Child processes and what `/proc` says about them: starting with a log
//! and a parent-death signal, reading output lines with a deadline, CPU
//! time and RSS.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Runs `cmd`, returns its stdout and stderr.
pub(super) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

pub(super) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The process's soft and hard open-file limits.
pub(super) fn nofile_limits() -> (usize, usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files"));
    let mut nums = line
        .into_iter()
        .flat_map(|l| l.split_whitespace())
        .filter_map(|w| w.parse().ok());
    let soft = nums.next().unwrap_or(1024);
    (soft, nums.next().unwrap_or(soft))
}

// ---------------------------------------------------------------- processes

/// A command that gets SIGTERM when this process dies (for any reason).
pub(super) fn command(program: &Path, args: &[String]) -> Command {
    if Path::new("/usr/bin/setpriv").is_file() {
        let mut c = Command::new("/usr/bin/setpriv");
        c.args(["--pdeathsig", "TERM", "--"])
            .arg(program)
            .args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

/// Lines of a child's stdout, read on a thread so waits can time out.
pub(super) struct Lines(mpsc::Receiver<String>);

impl Lines {
    pub(super) fn new(out: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The next line starting with `word`.
    pub(super) fn expect(&self, word: &str, within: Duration) -> Result<String> {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) if line.split_whitespace().next() == Some(word) => return Ok(line),
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => bail!("no {word:?} line within {within:?}"),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("exited before printing {word:?}")
                }
            }
        }
    }
}

/// A child we started, stopped on drop: SIGTERM, then SIGKILL for it and
/// any children of its own (nginx workers) still there after 10 s.
pub(super) struct Proc {
    name: String,
    pub(super) child: Child,
    /// Its stdin (closing it stops the loopback backend).
    pub(super) stdin: Option<ChildStdin>,
    /// Its stdout, line by line.
    pub(super) lines: Option<Lines>,
    log: Option<PathBuf>,
}

impl Proc {
    pub(super) fn spawn(name: &str, mut cmd: Command, log: Option<PathBuf>) -> Result<Proc> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        match &log {
            Some(path) => cmd.stderr(std::fs::File::create(path)?),
            None => cmd.stderr(Stdio::inherit()),
        };
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        let lines = child.stdout.take().map(Lines::new);
        Ok(Proc {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            log,
        })
    }

    /// Its pid and its children's (nginx: master and workers).
    pub(super) fn pids(&self) -> Vec<u32> {
        let pid = self.child.id();
        let mut all = vec![pid];
        all.extend(children_of(pid));
        all
    }

    pub(super) fn log_tail(&self) -> String {
        let text = self
            .log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub(super) fn stop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let kids = children_of(self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            eprintln!("    {} did not stop on SIGTERM; killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for k in kids {
            if Path::new(&format!("/proc/{k}")).exists() {
                let _ = Command::new("kill")
                    .args(["-KILL", &k.to_string()])
                    .status();
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fields of /proc/PID/stat after the command name (field 3 is index 0).
pub(super) fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

pub(super) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| stat_fields(p).get(1).and_then(|f| f.parse::<u32>().ok()) == Some(pid))
        .collect()
}

/// utime + stime of these processes, in seconds.
pub(super) fn cpu_secs(pids: &[u32], ticks_per_s: f64) -> f64 {
    pids.iter()
        .map(|&p| {
            let f = stat_fields(p);
            let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            tick(11) + tick(12)
        })
        .sum::<f64>()
        / ticks_per_s
}

/// VmRSS of these processes, in KiB.
pub(super) fn rss_kib(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .sum()
}

// ------------------------------------------------------------ the bench run
