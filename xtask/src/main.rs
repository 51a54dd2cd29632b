//! `cargo xtask …`: the project's tasks, so that a fresh machine with only a
//! Rust toolchain needs no other setup.
//!
//! * `test` — installs the `wasm32-wasip2` target if missing, checks
//!   formatting and clippy, builds every plugin for wasm, runs every test,
//!   and every fuzz target for a few seconds.
//! * `build-plugins` — builds the default plugins, example plugins and test
//!   fixtures for `wasm32-wasip2` into `target/wasm`.
//! * `demo` — the proxy on the quickstart config with local backends
//!   (`demo.rs`).
//! * `new-plugin`, `build-plugin` — scaffold and build one plugin crate
//!   (`scaffold.rs`).
//! * `bench` — the load benchmark against HAProxy and nginx (`bench/`).
//! * `fuzz` — the libFuzzer targets in `fuzz/` on the stable toolchain
//!   (`fuzz.rs`).
//! * `soak` — a long mixed load with reconfigures, then leak checks
//!   (`bench/soak/`).
//! * `abuse` — what abusive clients cost well-behaved ones
//!   (`bench/abuse.rs`).

mod bench;
mod demo;
mod fuzz;
mod scaffold;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> std::process::ExitCode {
    // The message is the interface (as in `turnout`): no backtrace, even
    // when RUST_BACKTRACE happens to be set.
    match task() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn task() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("build-plugins") => build_plugins().map(|_| ()),
        Some("demo") => demo::demo(&args[1..]),
        Some("bench") => bench::bench(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("soak") => bench::soak(&args[1..]),
        Some("abuse") => bench::abuse(&args[1..]),
        Some("new-plugin") => scaffold::new_plugin(&args[1..]),
        Some("build-plugin") => scaffold::build_plugin(&args[1..]),
        Some("check-new-plugin") => scaffold::check(),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 test            install the wasm target, fmt + clippy, build plugins, run every test\n  \
                 build-plugins   build every plugin crate for wasm32-wasip2\n  \
                 bench [--quick] [--scenario NAME] …\n                  \
                 load benchmark against HAProxy and nginx → benches/results/\n  \
                 abuse [--secs S] [--no-build]\n                  \
                 well-behaved latency alone and beside each abuse → benches/results/\n  \
                 soak [--minutes N] [--no-build]\n                  \
                 mixed load + a reconfigure every minute, then leak checks → benches/results/\n  \
                 fuzz [TARGET…] [--time S | --runs N]\n                  \
                 run the fuzz targets (default: all, 60 s each) on the stable toolchain\n  \
                 demo [--release] [--check]\n                  \
                 run the proxy on examples/configs/quickstart.json with demo backends\n  \
                 new-plugin NAME [--dir PATH]\n                  \
                 scaffold a plugin crate (default dir: examples/plugins/NAME)\n  \
                 build-plugin PATH\n                  \
                 build one plugin crate for wasm32-wasip2 and say how to deploy it\n  \
                 check-new-plugin\n                  \
                 scaffold a plugin outside the workspace, test and build it"
            );
            bail!("unknown or missing task")
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is inside the workspace")
        .to_path_buf()
}

fn step(what: &str) {
    eprintln!("\n==> {what}");
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("    $ {}", format!("{cmd:?}").replace('"', ""));
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Installs the wasm target through rustup if it is not there yet.
fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the wasm32-wasip2 target; install Rust with rustup")?;
    if String::from_utf8_lossy(&installed.stdout).contains("wasm32-wasip2") {
        return Ok(());
    }
    step("installing the wasm32-wasip2 target (plugins compile to it)");
    run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))
}

/// Every crate that is a plugin: default plugins, examples, test fixtures.
fn plugin_crates() -> Result<Vec<PathBuf>> {
    let mut crates = Vec::new();
    for dir in ["plugins", "examples/plugins", "tests/guests"] {
        let Ok(entries) = std::fs::read_dir(root().join(dir)) else {
            continue;
        };
        for e in entries {
            let path = e?.path();
            if path.join("Cargo.toml").is_file() {
                crates.push(path);
            }
        }
    }
    crates.sort();
    Ok(crates)
}

fn build_plugins() -> Result<Vec<PathBuf>> {
    ensure_wasm_target()?;
    step("building plugins for wasm32-wasip2");
    let crates = plugin_crates()?;
    for krate in &crates {
        run(cargo()
            .args([
                "build",
                "--target",
                "wasm32-wasip2",
                "--profile",
                "plugin",
                "--lib",
            ])
            .arg("--manifest-path")
            .arg(krate.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(root().join("target/wasm")))?;
    }
    eprintln!("    built {} plugin crates into target/wasm", crates.len());
    Ok(crates)
}

fn test() -> Result<()> {
    ensure_wasm_target()?;
    step("checking formatting");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    build_plugins()?;
    step("clippy (all targets, warnings are errors)");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("clippy on the host's fuzzing entry points (cargo feature `fuzzing`)");
    run(cargo().args([
        "clippy",
        "-p",
        "turnout",
        "--features",
        "fuzzing",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("clippy on the plugins as wasm32-wasip2");
    run(cargo()
        .args([
            "clippy",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "plugin",
            "--target-dir",
        ])
        .arg(root().join("target/wasm"))
        .args([
            "-p",
            "turnout-plugin-sdk",
            "-p",
            "turnout-plugin-*",
            "-p",
            "guest-*",
            "-p",
            "example-*",
            "--",
            "-D",
            "warnings",
        ]))?;
    let nextest = cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if nextest {
        step("tests (cargo nextest)");
        let profile = if std::env::var_os("CI").is_some() {
            "ci"
        } else {
            "default"
        };
        run(cargo().args(["nextest", "run", "--workspace", "--profile", profile]))?;
        step("doc tests");
        run(cargo().args(["test", "--workspace", "--doc"]))?;
    } else {
        step("tests (cargo test; install cargo-nextest for per-test time limits)");
        run(cargo().args(["test", "--workspace"]))?;
    }
    // A plugin scaffolded outside the workspace builds and passes its tests.
    scaffold::check()?;
    // Every fuzz target over its seeds and a few seconds of new inputs, so
    // a broken harness (or a regression a seed holds) fails here; the long
    // runs are `cargo xtask fuzz`.
    step("fuzz targets, briefly");
    fuzz::run_targets(&fuzz::TARGETS, fuzz::Budget::Time(5))?;
    eprintln!("\nall checks passed");
    Ok(())
}
