//! What `bench`, `soak` and `abuse` share: their arguments, the release
//! build, the loopback backends, and where a report goes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::parse_report;
use super::procs::{Proc, command, output};
use crate::{cargo, root, run, step};

/// `[FLAG N] [--no-build]` with N ≥ 1 (default `default`): (N, build?).
pub(super) fn amount_and_build(
    args: &[String],
    flag: &str,
    default: u64,
    usage: &str,
) -> Result<(u64, bool)> {
    let (mut n, mut build) = (default, true);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--no-build" => build = false,
            f if f == flag => {
                n = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&v| v > 0)
                    .with_context(|| format!("{flag} needs a whole number above 0"))?;
            }
            other => bail!("unknown argument {other:?}; usage: {usage}"),
        }
    }
    Ok((n, build))
}

/// Builds `turnout` and `turnout-loadgen` in release.
pub(super) fn build_release() -> Result<()> {
    step("building turnout and turnout-loadgen (release)");
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "turnout",
        "-p",
        "turnout-benches",
        "--bins",
    ]))
}

/// [`build_release`], and the plugins (the soak and the abuse run load
/// example and fixture plugins).
pub(super) fn build_release_and_plugins() -> Result<()> {
    build_release()?;
    crate::build_plugins()?;
    Ok(())
}

/// The loopback backends' addresses, by name (`tls`, `bulk`, `plain`,
/// `http`, `ws`).
pub(super) struct Backends(BTreeMap<String, String>, String);

impl Backends {
    pub(super) fn addr(&self, name: &str) -> Result<SocketAddr> {
        self.0
            .get(name)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow!("the backend said {:?}", self.1))
    }
}

/// Starts `turnout-loadgen backend` (it stops when the returned process is
/// dropped) and reads where each server listens.
pub(super) fn start_backend(bin: &Path, dir: &Path) -> Result<(Proc, Backends)> {
    step("starting the backends (turnout-loadgen backend)");
    let backend = Proc::spawn(
        "backend",
        command(
            &bin.join("turnout-loadgen"),
            &["backend".into(), "--until-stdin-closes".into()],
        ),
        Some(dir.join("backend.log")),
    )?;
    let ready = backend
        .lines
        .as_ref()
        .context("backend stdout")?
        .expect("ready", Duration::from_secs(30))
        .with_context(|| format!("backend did not start: {}", backend.log_tail()))?;
    let addrs = Backends(parse_report(&ready), ready);
    Ok((backend, addrs))
}

/// Writes `markdown` to `benches/results/YYYY-MM-DD-HHMM{suffix}.md` (UTC).
pub(super) fn write_report(suffix: &str, markdown: &str) -> Result<PathBuf> {
    let stamp = output(Command::new("date").args(["-u", "+%Y-%m-%d-%H%M"]))?;
    let results = root().join("benches/results");
    std::fs::create_dir_all(&results)?;
    let path = results.join(format!("{}{suffix}.md", stamp.trim()));
    std::fs::write(&path, markdown)?;
    eprintln!("\n{markdown}\nwritten to {}", path.display());
    Ok(path)
}
