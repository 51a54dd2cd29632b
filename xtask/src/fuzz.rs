//! `cargo xtask fuzz [TARGET…] [--time S | --runs N]`: the libFuzzer
//! targets in `fuzz/` on this machine's stable toolchain.
//!
//! cargo-fuzz passes `-Z` flags to rustc (sanitizer coverage), which only a
//! nightly toolchain takes — or a stable one with `RUSTC_BOOTSTRAP=1`,
//! which is what this sets. No sanitizer is built in (`-s none`): the code
//! under test is safe Rust, and an AddressSanitizer build of wasmtime and
//! the rest costs a slower, much longer build. Leaks are caught by
//! libFuzzer's RSS limit instead: 512 MB over ten million runs is 50 bytes
//! a run. cargo-fuzz itself is installed from crates.io when missing.
//!
//! New inputs go to `target/fuzz-corpus/TARGET`; the committed seeds in
//! `fuzz/seeds/TARGET` are read, never written; `fuzz/dicts/TARGET.dict`,
//! when there is one, gives libFuzzer the format's tokens. A crash is saved under
//! `fuzz/artifacts/TARGET/` and fails the task.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::{cargo, root, run, step};

/// Every target, in `fuzz/Cargo.toml`'s order.
pub(crate) const TARGETS: [&str; 8] = [
    "client_hello",
    "proxy_protocol",
    "http_head",
    "plugin_answers",
    "ws_frames",
    "config",
    "pem",
    "wit_conversions",
];

/// How long each target runs, or for how many inputs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Budget {
    /// Seconds.
    Time(u64),
    /// Inputs.
    Runs(u64),
}

pub(crate) fn fuzz(args: &[String]) -> Result<()> {
    let mut targets = Vec::new();
    let mut budget = Budget::Time(60);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => budget = Budget::Time(number(it.next(), "--time")?),
            "--runs" => budget = Budget::Runs(number(it.next(), "--runs")?),
            t if TARGETS.contains(&t) => targets.push(t),
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask fuzz [TARGET…] [--time SECONDS | --runs N]\n\
                 targets: {}",
                TARGETS.join(", ")
            ),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    run_targets(&targets, budget)
}

fn number(v: Option<&String>, flag: &str) -> Result<u64> {
    v.and_then(|v| v.parse().ok())
        .with_context(|| format!("{flag} needs a whole number"))
}

/// Runs each target within `budget`; every one must finish clean.
pub(crate) fn run_targets(targets: &[&str], budget: Budget) -> Result<()> {
    ensure_cargo_fuzz()?;
    let mut failed = Vec::new();
    let mut report = Vec::new();
    for t in targets {
        step(&format!("fuzzing {t} ({budget:?})"));
        match one(t, budget) {
            Ok(stats) => report.push(format!("{t:<16} {stats}")),
            Err(e) => {
                eprintln!("    {t}: {e:#}");
                failed.push(*t);
            }
        }
    }
    eprintln!("\n{}", report.join("\n"));
    if !failed.is_empty() {
        bail!(
            "fuzz target(s) failed: {} (inputs under fuzz/artifacts/)",
            failed.join(", ")
        );
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        step("installing cargo-fuzz from crates.io");
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// One target; returns libFuzzer's final statistics in one line.
fn one(target: &str, budget: Budget) -> Result<String> {
    let scratch = root().join("target/fuzz-corpus").join(target);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let seeds: PathBuf = root().join("fuzz/seeds").join(target);
    let limit = match budget {
        Budget::Time(s) => format!("-max_total_time={s}"),
        Budget::Runs(n) => format!("-runs={n}"),
    };
    let mut cmd = cargo();
    cmd.env("RUSTC_BOOTSTRAP", "1")
        .args([
            "fuzz",
            "run",
            "--fuzz-dir",
            "fuzz",
            "-O",
            "-s",
            "none",
            target,
        ])
        .arg(&scratch);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--");
    let dict = root().join("fuzz/dicts").join(format!("{target}.dict"));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    cmd.args([
        &limit,
        // A run that takes a second is a hang; 512 MB catches a leak of
        // tens of bytes a run over millions of runs.
        "-timeout=5",
        "-rss_limit_mb=512",
        "-print_final_stats=1",
    ]);
    eprintln!("    $ {}", format!("{cmd:?}").replace('"', ""));
    let out = cmd
        .current_dir(root())
        .stderr(std::process::Stdio::piped())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    let stat = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .map_or("?".to_owned(), |v| v.trim().to_owned())
    };
    // The last status line carries coverage ("cov: N ft: M").
    let cov = text
        .lines()
        .rev()
        .find_map(|l| l.split_once("cov: "))
        .map_or("?".to_owned(), |(_, rest)| {
            rest.split_whitespace().next().unwrap_or("?").to_owned()
        });
    let summary = format!(
        "runs {:>12}  cov {cov:>6}  exec/s {:>8}  peak RSS {} MB",
        stat("number_of_executed_units"),
        stat("average_exec_per_sec"),
        stat("peak_rss_mb"),
    );
    if !out.status.success() {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{}\n{summary}", tail.join("\n"));
    }
    Ok(summary)
}
