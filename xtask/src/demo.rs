//! `cargo xtask demo [--release] [--check]`: builds `turnout` and the demo
//! backends, starts both with `examples/configs/quickstart.json`, prints the
//! commands that show SNI routing, and stops everything on Ctrl-C.
//!
//! `--check` runs those commands itself (needs `curl` and `openssl`), checks
//! what they print, and stops: the demo as a self-test.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, ensure_wasm_target, root, run, step};

/// The quickstart config's ports (`tests/tests/demo.rs` fails if the config
/// stops using them): what they are, for the port-in-use message.
const PORTS: [(u16, &str); 4] = [
    (8443, "the proxy's TLS port"),
    (8080, "the proxy's plain port"),
    (9443, "the TLS demo backend"),
    (9080, "the plain demo backend"),
];

const CONFIG: &str = "examples/configs/quickstart.json";

/// How long turnout gets to drain on Ctrl-C (the config says 5 s) before
/// it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A command to try against the running demo, and what its output shows.
struct Try {
    why: &'static str,
    argv: &'static [&'static str],
    /// Reads stdin from /dev/null (openssl would wait for input).
    no_stdin: bool,
    expect: &'static str,
}

const TRIES: [Try; 5] = [
    Try {
        why: "TLS, routed by SNI to the TLS backend (-k: its certificate is self-signed)",
        argv: &[
            "curl",
            "-sS",
            "-k",
            "--resolve",
            "app.localhost:8443:127.0.0.1",
            "https://app.localhost:8443/",
        ],
        no_stdin: false,
        expect: "Hello from the TLS demo backend on 127.0.0.1:9443 (SNI app.localhost",
    },
    Try {
        why: "plain TCP on 8080, to the plain backend",
        argv: &["curl", "-sS", "http://127.0.0.1:8080/"],
        no_stdin: false,
        expect: "Hello from the plain demo backend on 127.0.0.1:9080",
    },
    Try {
        why: "the handshake, end to end with the backend (the proxy never decrypts)",
        argv: &[
            "openssl",
            "s_client",
            "-connect",
            "127.0.0.1:8443",
            "-servername",
            "app.localhost",
            "-brief",
        ],
        no_stdin: true,
        expect: "Peer certificate: CN = app.localhost (Turnout demo backend)",
    },
    Try {
        why: "a name no route matches: refused with a TLS unrecognized_name alert",
        argv: &[
            "openssl",
            "s_client",
            "-connect",
            "127.0.0.1:8443",
            "-servername",
            "nope.localhost",
            "-brief",
        ],
        no_stdin: true,
        expect: "unrecognized name",
    },
    Try {
        why: "the same refusal as curl sees it",
        argv: &[
            "curl",
            "-sS",
            "-k",
            "--resolve",
            "nope.localhost:8443:127.0.0.1",
            "https://nope.localhost:8443/",
        ],
        no_stdin: false,
        expect: "unrecognized name",
    },
];

pub(crate) fn demo(args: &[String]) -> Result<()> {
    let (mut release, mut check) = (false, false);
    for a in args {
        match a.as_str() {
            "--release" => release = true,
            "--check" => check = true,
            other => bail!("demo: unknown option {other:?} (options: --release, --check)"),
        }
    }
    ports_free()?;
    ensure_wasm_target()?;
    // Debug by default: the dev profile already optimises cranelift and
    // wasmtime (see the root Cargo.toml), a clean release build takes about
    // 8 minutes on a 2-core machine against a few for debug, and the debug
    // artifacts are the ones `cargo test` has usually built already. A demo
    // moves a handful of requests; `--release` is there for measuring.
    let profile = if release { "release" } else { "debug" };
    step(&format!(
        "building turnout and the demo backends ({profile} build{})",
        if release {
            ""
        } else {
            "; --release for an optimised one"
        }
    ));
    let mut build = cargo();
    build.args([
        "build",
        "-p",
        "turnout",
        "--bin",
        "turnout",
        "-p",
        "turnout-tests",
        "--bin",
        "demo-backends",
    ]);
    if release {
        build.arg("--release");
    }
    run(&mut build)?;
    let bin = target_dir().join(profile);
    // The check starts from no directory plugins, whatever was dropped in
    // the demo's directory.
    let plugins = if check {
        let dir = target_dir().join("demo/check-plugins");
        let _ = std::fs::remove_dir_all(&dir);
        dir
    } else {
        plugins_dir()
    };
    std::fs::create_dir_all(&plugins)
        .with_context(|| format!("cannot create {}", plugins.display()))?;

    // From here on Ctrl-C (or SIGTERM) sets the flag instead of killing
    // xtask, so it can stop its children. A Ctrl-C typed in the terminal
    // reaches them too (same process group); `kill -INT` on xtask alone
    // reaches only xtask, which passes it on.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot handle signals")?;
    }

    step("starting the demo backends and the proxy");
    let mut children = Children(Vec::new());
    let mut backends = Command::new(bin.join("demo-backends"));
    backends.args(["--tls", "127.0.0.1:9443", "--plain", "127.0.0.1:9080"]);
    eprintln!(
        "    $ {} --tls 127.0.0.1:9443 --plain 127.0.0.1:9080",
        relative(&bin.join("demo-backends"))
    );
    children.start("demo-backends", backends, Stream::Stdout, |seen| {
        seen.iter().filter(|l| l.contains(" backend on ")).count() == 2
    })?;
    let mut proxy = Command::new(bin.join("turnout"));
    proxy.args(["run", "-c", CONFIG, "--plugins"]).arg(&plugins);
    eprintln!(
        "    $ {} run -c {CONFIG} --plugins {}",
        relative(&bin.join("turnout")),
        relative(&plugins)
    );
    children.start("turnout", proxy, Stream::Stderr, |seen| {
        seen.iter().any(|l| l.contains("turnout listening on"))
    })?;

    if check {
        let result = run_tries();
        children.stop();
        return result;
    }
    print_instructions(&plugins);
    let result = children.wait(&stop);
    children.stop();
    result?;
    eprintln!("\ndemo stopped; nothing is left running");
    Ok(())
}

/// The proxy's plugins directory: drop a `.wasm` here while it runs.
pub(crate) fn plugins_dir() -> PathBuf {
    target_dir().join("demo/plugins")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// `path` relative to the workspace root when it is inside it.
fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Refuses to start when a demo port is taken, naming the port and how to
/// find who holds it.
fn ports_free() -> Result<()> {
    let mut taken = Vec::new();
    for (port, what) in PORTS {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            taken.push(format!(
                "  127.0.0.1:{port} ({what}): {e}\n    \
                 find who holds it: ss -ltnp 'sport = :{port}'   (or: lsof -nP -iTCP:{port} -sTCP:LISTEN)"
            ));
        }
    }
    if taken.is_empty() {
        return Ok(());
    }
    bail!(
        "the demo needs ports 8443, 8080, 9443 and 9080 on 127.0.0.1, and some are not free:\n{}\n\
         Stop what listens there (another `cargo xtask demo`? Ctrl-C it) and run the demo again.",
        taken.join("\n")
    )
}

fn shell_line(t: &Try) -> String {
    let mut line = t.argv.join(" ");
    if t.no_stdin {
        line.push_str(" </dev/null");
    }
    line
}

fn print_instructions(plugins: &Path) {
    let mut out = String::from(
        "\n==> the demo is running; Ctrl-C stops all of it\n\n\
         \x20 proxy    127.0.0.1:8443  TLS, routed by SNI: app.localhost, *.app.localhost -> 127.0.0.1:9443 (passthrough)\n\
         \x20          127.0.0.1:8080  plain TCP -> 127.0.0.1:9080\n\
         \x20 backends 127.0.0.1:9443  TLS HTTP, self-signed certificate for app.localhost\n\
         \x20          127.0.0.1:9080  plain HTTP\n\n\
         Try, in another terminal:\n",
    );
    for t in &TRIES {
        out.push_str(&format!("\n  # {}\n  {}\n", t.why, shell_line(t)));
    }
    out.push_str(&format!(
        "\nPlugins: a .wasm dropped into {dir}/ is live for new connections within a second:\n\
         \x20 cargo xtask new-plugin hello       # routes SNI hello.localhost to the TLS backend\n\
         \x20 cargo xtask build-plugin examples/plugins/hello\n\
         \x20 (then the cp/mv line it prints)\n\
         \x20 curl -sS -k --resolve hello.localhost:8443:127.0.0.1 https://hello.localhost:8443/\n",
        dir = relative(plugins)
    ));
    eprint!("{out}");
}

/// Runs every [`TRIES`] command and checks its output.
fn run_tries() -> Result<()> {
    step("checking the commands the demo prints");
    for t in &TRIES {
        eprintln!("    $ {}", shell_line(t));
        let mut cmd = Command::new(t.argv[0]);
        cmd.args(&t.argv[1..]);
        if t.no_stdin {
            cmd.stdin(Stdio::null());
        }
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {} (is it installed?)", t.argv[0]))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for line in text.lines().filter(|l| !l.trim().is_empty()).take(4) {
            eprintln!("      {line}");
        }
        if !text.contains(t.expect) {
            bail!("`{}` did not print {:?}", shell_line(t), t.expect);
        }
    }
    eprintln!("\ndemo check passed");
    Ok(())
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// The demo's processes, each with the thread echoing its output; stopped
/// (and waited for) on drop.
struct Children(Vec<(&'static str, Child, JoinHandle<()>)>);

impl Children {
    /// Starts `cmd`, copies the chosen output stream to our stderr, and
    /// returns once `ready` holds for the lines seen so far. Fails, naming
    /// the exit status, when the process exits first.
    fn start(
        &mut self,
        name: &'static str,
        mut cmd: Command,
        stream: Stream,
        ready: impl Fn(&[String]) -> bool,
    ) -> Result<()> {
        match stream {
            Stream::Stdout => cmd.stdout(Stdio::piped()),
            Stream::Stderr => cmd.stderr(Stdio::piped()),
        };
        let mut child = cmd
            .current_dir(root())
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let pipe: Box<dyn Read + Send> = match stream {
            Stream::Stdout => Box::new(child.stdout.take().expect("piped")),
            Stream::Stderr => Box::new(child.stderr.take().expect("piped")),
        };
        let (tx, rx) = mpsc::channel();
        let echo = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                // Once the reader is gone, keep echoing.
                let _ = tx.send(line);
            }
        });
        self.0.push((name, child, echo));
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready(&seen) {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.0.last_mut().and_then(|(_, c, _)| c.wait().ok());
                    bail!(
                        "{name} exited before it was ready ({}); its messages are above",
                        status.map_or_else(|| "status unknown".to_owned(), |s| s.to_string())
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("{name} was not ready within a minute; its messages are above")
                }
            }
        }
        Ok(())
    }

    /// Waits for a stop signal; fails if a child exits on its own first
    /// (one killed by SIGINT counts as a stop: a Ctrl-C typed in the
    /// terminal reaches the children too).
    fn wait(&mut self, stop: &AtomicBool) -> Result<()> {
        loop {
            if stop.load(Ordering::SeqCst) {
                eprintln!("\n==> stopping the demo");
                return Ok(());
            }
            for (name, child, _) in &mut self.0 {
                if let Some(status) = child.try_wait()? {
                    if interrupted(status) || stop.load(Ordering::SeqCst) {
                        eprintln!("\n==> stopping the demo");
                        return Ok(());
                    }
                    bail!("{name} exited unexpectedly ({status}); stopping the demo");
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM to every child (turnout drains), newest first; SIGKILL after
    /// [`STOP_GRACE`].
    fn stop(&mut self) {
        while let Some((name, mut child, echo)) = self.0.pop() {
            if child.try_wait().ok().flatten().is_none() {
                let sent = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                let deadline = Instant::now() + STOP_GRACE;
                while sent && Instant::now() < deadline && child.try_wait().ok().flatten().is_none()
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if child.try_wait().ok().flatten().is_none() {
                    eprintln!("    {name} did not stop in time: killing it");
                    let _ = child.kill();
                }
            }
            let _ = child.wait();
            // Its last words (turnout's drain report) before ours.
            let _ = echo.join();
            eprintln!("    stopped {name}");
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

fn interrupted(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(signal_hook::consts::SIGINT)
}
