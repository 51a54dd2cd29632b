//! `turnout-loadgen`: the load generator and backends of `cargo xtask
//! bench`. Each client mode prints one `result key=value …` line on
//! stdout; `backend` prints `ready tls=ADDR bulk=ADDR plain=ADDR http=ADDR ws=ADDR` once
//! listening; `cert` writes a certificate for the terminating proxies.
//! Everything is bounded by counts and time limits.

#![allow(clippy::print_stdout)] // the result lines are the interface

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use turnout_benches::loadgen::{backend, client, http_client, tls, ws_client};

#[derive(Parser)]
#[command(
    name = "turnout-loadgen",
    about = "TLS load generator and loopback backends"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Args, Clone)]
struct TargetArgs {
    /// The proxy (or backend) to connect to.
    #[arg(long)]
    target: SocketAddr,
    /// SNI to send in the ClientHello.
    #[arg(long)]
    sni: String,
}

impl TargetArgs {
    fn target(&self) -> client::Target {
        client::Target {
            addr: self.target,
            sni: self.sni.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Mode {
    /// Writes one of Turnout's embedded plugins (`routes`, `guard`,
    /// `keepalive`) as a `.wasm` file, for a bench that loads a second
    /// copy from a plugins directory.
    Plugin {
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes a self-signed ECDSA P-256 certificate: DIR/cert.pem,
    /// DIR/key.pem, DIR/bundle.pem (both).
    Cert {
        #[arg(long)]
        out: PathBuf,
        #[arg(long = "name", default_values_t = ["*.bench.test".to_owned()])]
        names: Vec<String>,
    },
    /// TLS echo, plain echo and bulk servers on loopback.
    Backend {
        #[arg(long, default_value = "127.0.0.1:0")]
        tls_listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:0")]
        bulk_listen: SocketAddr,
        /// Names in the self-signed certificate.
        #[arg(long = "name", default_values_t = ["echo.bench.test".to_owned(), "*.bench.test".to_owned()])]
        names: Vec<String>,
        /// Exit after this long whatever happens.
        #[arg(long, default_value_t = 7200)]
        max_secs: u64,
        /// Exit when stdin closes (the parent is gone).
        #[arg(long)]
        until_stdin_closes: bool,
    },
    /// New TLS connections: handshake, one echo, close; C at a time.
    TlsConns {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value_t = 64)]
        request_bytes: usize,
        #[arg(long, default_value_t = 300)]
        max_secs: u64,
    },
    /// Bulk transfer: S streams of B bytes (suffix K, M, G: binary).
    Bulk {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 1)]
        streams: usize,
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        bytes: u64,
        /// Backend → client instead of client → backend.
        #[arg(long)]
        download: bool,
        #[arg(long, default_value_t = 600)]
        max_secs: u64,
    },
    /// Opens N TLS connections and holds them; prints `open …` when all
    /// are open.
    Idle {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Longest hold.
        #[arg(long, default_value_t = 60)]
        hold_secs: u64,
        /// Release on a line on stdin (or its end) instead of waiting out the hold.
        #[arg(long)]
        release_on_stdin: bool,
    },
    /// HTTP/1.1 over TLS on keep-alive connections, one request in flight
    /// on each, until R responses have come back.
    HttpsKeepalive {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 50)]
        conns: usize,
        #[arg(long, default_value_t = 100_000)]
        requests: usize,
        #[arg(long, default_value = "/")]
        path: String,
        /// Every request on a new TLS connection, with `connection: close`.
        #[arg(long)]
        close: bool,
        #[arg(long, default_value_t = 600)]
        max_secs: u64,
    },
    /// WebSockets over TLS (HTTP/1.1 upgrade): binary messages echoed by
    /// the backend, at most W awaiting their echo on each connection,
    /// until M echoes have come back and been checked.
    WsEcho {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 50)]
        conns: usize,
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Payload bytes per message (at least 8).
        #[arg(long, default_value = "1K", value_parser = parse_size)]
        message_bytes: u64,
        /// Messages in flight per connection (1 to 64).
        #[arg(long, default_value_t = 1)]
        window: usize,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value_t = 600)]
        max_secs: u64,
    },
    /// Sequential new TLS connections, alternating with --direct if given.
    Latency {
        #[command(flatten)]
        target: TargetArgs,
        /// The backend itself, for the baseline.
        #[arg(long)]
        direct: Option<SocketAddr>,
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        #[arg(long, default_value_t = 64)]
        request_bytes: usize,
        #[arg(long, default_value_t = 300)]
        max_secs: u64,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = digits.parse().map_err(|e| format!("{s:?}: {e}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Resolves once a line arrives on stdin or stdin ends. A plain thread:
/// tokio's stdin would keep the runtime from shutting down.
fn stdin_signal() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    rx
}

fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn run(mode: Mode) -> Result<(), String> {
    let secs = Duration::from_secs;
    match mode {
        Mode::Cert { out, names } => tls::write_cert(&out, &names)?,
        Mode::Plugin { name, out } => {
            let plugin = turnout::plugins::embedded()
                .into_iter()
                .find(|p| p.name == name)
                .ok_or_else(|| format!("no embedded plugin {name:?}"))?;
            std::fs::write(&out, plugin.bytes)
                .map_err(|e| format!("write {}: {e}", out.display()))?;
        }
        Mode::Backend {
            tls_listen,
            bulk_listen,
            names,
            max_secs,
            until_stdin_closes,
        } => {
            let b = backend::start(tls_listen, bulk_listen, &names).await?;
            say(format_args!(
                "ready tls={} bulk={} plain={} http={} ws={}",
                b.tls, b.bulk, b.plain, b.http, b.ws
            ));
            let lifeline = async {
                if until_stdin_closes {
                    let _ = stdin_signal().await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = lifeline => {}
                () = tokio::time::sleep(secs(max_secs)) => {}
            }
        }
        Mode::TlsConns {
            target,
            conns,
            concurrency,
            request_bytes,
            max_secs,
        } => say(client::tls_conns(&client::TlsConns {
            target: target.target(),
            conns,
            concurrency,
            request_bytes,
            max_time: secs(max_secs),
        })
        .await),
        Mode::Bulk {
            target,
            streams,
            bytes,
            download,
            max_secs,
        } => say(client::bulk(&client::Bulk {
            target: target.target(),
            streams,
            bytes,
            download,
            max_time: secs(max_secs),
        })
        .await),
        Mode::Idle {
            target,
            conns,
            concurrency,
            hold_secs,
            release_on_stdin,
        } => {
            let release = async {
                if release_on_stdin {
                    let _ = stdin_signal().await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let o = client::Idle {
                target: target.target(),
                conns,
                concurrency,
                hold: secs(hold_secs),
            };
            let report = client::idle(
                &o,
                |r| say(r.to_string().replacen("result", "open", 1)),
                release,
            )
            .await;
            say(report);
        }
        Mode::HttpsKeepalive {
            target,
            conns,
            requests,
            path,
            close,
            max_secs,
        } => say(http_client::https_keepalive(&http_client::HttpsKeepalive {
            target: target.target(),
            conns,
            requests,
            path,
            close,
            max_time: secs(max_secs),
        })
        .await),
        Mode::WsEcho {
            target,
            conns,
            messages,
            message_bytes,
            window,
            path,
            max_secs,
        } => say(ws_client::ws_echo(&ws_client::WsEcho {
            target: target.target(),
            conns,
            messages,
            message_bytes: usize::try_from(message_bytes).map_err(|e| e.to_string())?,
            window,
            path,
            max_time: secs(max_secs),
        })
        .await),
        Mode::Latency {
            target,
            direct,
            samples,
            request_bytes,
            max_secs,
        } => say(client::latency(&client::Latency {
            target: target.target(),
            direct,
            samples,
            request_bytes,
            max_time: secs(max_secs),
        })
        .await),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("turnout-loadgen: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli.mode));
    // Tasks still serving (backend) or a thread blocked on stdin must not
    // hold the exit.
    rt.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turnout-loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
