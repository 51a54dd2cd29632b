//! The `turnout` binary: argument parsing and logging only; the library
//! does the work.

// Printing to stdout is what a CLI does.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use turnout::plugins::{NoCounters, Origin, PluginSet, PluginSettings, Runtime, RuntimeConfig};

/// mimalloc rather than glibc's malloc: on the request paths (hyper's
/// buffers and header maps, the upstream client's per-request state)
/// glibc's malloc, free and consolidation were ~11 % of the proxy's CPU
/// under HTTP/2 load.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "turnout",
    version,
    about = "A WebAssembly-pluggable TCP/TLS/HTTP proxy"
)]
struct Cli {
    /// Log lines as text (default) or one JSON object per line (the access
    /// log's fields included), for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy. SIGTERM/SIGINT drain and stop; SIGHUP reloads FILE.
    Run {
        /// Config file (.json or .toml).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Plugins directory (overrides `plugins.dir`).
        #[arg(long, value_name = "DIR")]
        plugins: Option<PathBuf>,
    },
    /// Validate the config file and load every plugin; list every problem.
    Check {
        /// Config file (.json or .toml).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Plugins directory (overrides `plugins.dir`).
        #[arg(long, value_name = "DIR")]
        plugins: Option<PathBuf>,
    },
    /// Change the routes of a running proxy through its admin API.
    Routes {
        #[command(subcommand)]
        command: RoutesCommand,
    },
    /// Load the embedded plugins and those in DIR, and list them (or every
    /// problem, exiting non-zero).
    Plugins {
        /// Directory of `.wasm` plugins that add to or override the embedded ones.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep running and report every change in DIR (hot reload), until Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
}

#[derive(Subcommand)]
enum RoutesCommand {
    /// Replace the running route list (`PUT /api/routes`): validated like
    /// `turnout check`, applied like SIGHUP, or refused with every problem.
    Apply {
        /// Routes: a JSON array, or a JSON or TOML document with `routes`
        /// (a config file will do); `-` reads JSON from standard input.
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
        /// The admin API.
        #[arg(
            long,
            value_name = "URL",
            env = "TURNOUT_ADMIN",
            default_value = "http://127.0.0.1:9900"
        )]
        admin: String,
        /// `admin.token` (prefer the environment or --token-file: a command
        /// line is visible to other users).
        #[arg(long, env = "TURNOUT_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A file whose first line is the token.
        #[arg(long, value_name = "FILE", conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// Apply only if the running version is still this one (the `ETag`
        /// of `GET /api/config`).
        #[arg(long, value_name = "VERSION")]
        if_match: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    match cli.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            // Colour codes only for a terminal: files, journald and log
            // shippers get plain text.
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stderr())
                    && std::env::var_os("NO_COLOR").is_none(),
            )
            .init(),
    }
    let result = match cli.command {
        Command::Plugins { dir, watch } => plugins(dir, watch),
        Command::Run { config, plugins } => run(config, plugins),
        Command::Check { config, plugins } => check(&config, plugins),
        Command::Routes {
            command:
                RoutesCommand::Apply {
                    file,
                    admin,
                    token,
                    token_file,
                    if_match,
                },
        } => routes_apply(&file, &admin, token, token_file, if_match),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The message is the interface here; a backtrace is noise even
            // when RUST_BACKTRACE happens to be set.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn check(config: &std::path::Path, plugins: Option<PathBuf>) -> Result<()> {
    let (cfg, set) = turnout::app::prepare(
        config,
        plugins,
        Arc::new(turnout::limits::ConnectionTracker::default()),
    )
    .map_err(|e| anyhow::anyhow!("{} is not usable:\n{e}", config.display()))?;
    for w in cfg.warnings() {
        eprintln!("warning: {}: {}", w.path, w.message);
    }
    // Every certificate of a terminated route, read and matched to its key.
    let (terminator, report) = turnout::tls::Terminator::new(&cfg.tls);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if !report.errors.is_empty() {
        let list: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        anyhow::bail!("{} is not usable:\n{}", config.display(), list.join("\n"));
    }
    let certificates = terminator.store().certs().len();
    let names: Vec<String> = set
        .chain()
        .plugins()
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    println!(
        "{}: ok ({} routes, {certificates} certificates, plugins: {})",
        config.display(),
        cfg.routes.len(),
        names.join(", ")
    );
    Ok(())
}

fn run(config: PathBuf, plugins: Option<PathBuf>) -> Result<()> {
    // The control thread: signals, reload, the admin API, the drain.
    // Connections run on the proxy's worker threads (`workers`), each with
    // a runtime of its own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the config");
                if reload_tx.send(()).await.is_err() {
                    break;
                }
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: draining"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
            }
            // A second signal during the drain means "now".
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tracing::warn!("second signal: exiting without waiting for the drain");
                std::process::exit(1);
            });
        };
        turnout::app::run(&config, plugins, Default::default(), reload_rx, shutdown, |started| {
            let list: Vec<String> = started.listeners.iter().map(ToString::to_string).collect();
            eprintln!("turnout listening on {}", list.join(", "));
            if let Some(admin) = started.admin {
                eprintln!("admin API on http://{admin}/ (/metrics, /api/stats, /api/connections, /api/plugins, /api/config)");
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
    })
}

fn routes_apply(
    file: &std::path::Path,
    admin: &str,
    token: Option<String>,
    token_file: Option<PathBuf>,
    if_match: Option<String>,
) -> Result<()> {
    use turnout::admin::client;
    let routes = client::read_routes(file).map_err(anyhow::Error::msg)?;
    let token = match token_file {
        Some(f) => Some(
            std::fs::read_to_string(&f)
                .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", f.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .trim_end()
                .to_owned(),
        ),
        None => token,
    };
    let body = serde_json::to_vec(&routes)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = rt.block_on(client::put(
        admin,
        "/api/routes",
        token.as_deref(),
        if_match.as_deref(),
        body,
    ))?;
    let b = &answer.body;
    let list = |v: &serde_json::Value| -> String {
        let items: Vec<&str> = v
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    if answer.status == 200 {
        println!(
            "{} routes applied; version {}\n  added: {}\n  removed: {}\n  changed: {}\n  listening on: {}\n  stopped listening on: {}",
            routes.len(),
            b["version"],
            list(&b["routes"]["added"]),
            list(&b["routes"]["removed"]),
            list(&b["routes"]["changed"]),
            list(&b["listeners"]["added"]),
            list(&b["listeners"]["removed"]),
        );
        if b["persisted"] == true {
            println!("  written to the config file (admin.persist)");
        }
        return Ok(());
    }
    let mut message = b["error"]
        .as_str()
        .map_or_else(|| format!("HTTP {}", answer.status), str::to_owned);
    for p in b["problems"].as_array().into_iter().flatten() {
        message.push_str(&format!(
            "\n  {}: {}",
            p["path"].as_str().unwrap_or("?"),
            p["message"].as_str().unwrap_or("?")
        ));
    }
    bail!("{admin} answered {}: {message}", answer.status)
}

fn plugins(dir: Option<PathBuf>, watch: bool) -> Result<()> {
    if let Some(d) = &dir
        && !d.is_dir()
    {
        bail!(
            "plugins directory {} does not exist or is not a directory",
            d.display()
        );
    }
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let settings = PluginSettings {
        dir,
        ..PluginSettings::default()
    };
    let set = match PluginSet::load(
        runtime,
        settings,
        turnout::plugins::embedded(),
        Arc::new(NoCounters),
    ) {
        Ok(set) => set,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            bail!("{} plugin problem(s)", errors.len());
        }
    };
    let mut out = String::new();
    for p in set.chain().plugins() {
        let origin = match p.origin() {
            Origin::Embedded => "embedded".to_owned(),
            Origin::File(path) => path.display().to_string(),
        };
        let info = p.info();
        out.push_str(&format!(
            "{:<16} {:<10} hooks={:#07b} ports={:?} sha256={} from {}\n",
            p.name(),
            info.version,
            info.hooks.bits(),
            info.listen
                .iter()
                .map(|r| (r.from, r.to))
                .collect::<Vec<_>>(),
            &p.sha256()[..16],
            origin
        ));
    }
    if out.is_empty() {
        out.push_str("no plugins loaded\n");
    }
    std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes())?;
    if watch {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            tokio::select! {
                () = set.watch(Duration::from_millis(500)) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        });
    }
    Ok(())
}
