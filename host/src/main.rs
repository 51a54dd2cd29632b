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
                eprintln!("admin API on http://{admin}/ (/metrics, /api/stats, /api/connections, /api/plugins)");
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
    })
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
