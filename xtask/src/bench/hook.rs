//! `--hook`: what one more request hook costs per request (issue 17's
//! sixth scenario), measured on the running proxy rather than in a
//! micro-benchmark.
//!
//! The proxy `turnout-hook` is `turnout` with a second request plugin
//! first in the chain: `hdr`, a copy of the embedded `routes` plugin
//! (written out by `turnout-loadgen plugin`) whose one route is a
//! plaintext HTTP route on another port with `match.headers`, so it
//! declares one request header (`x-bench-variant`) in its interest. Every
//! request then gets one more `request` call that is handed that header
//! in its slot, matches nothing (wrong port) and passes; `routes` then
//! forwards as in `turnout`. The difference between the two in the same
//! repeat is the hook's price: the host filling the slot and lowering the
//! head, the guest's match and its answer — everything but a forward's
//! edits, which `routes` pays in both.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::procs::{command, free_port, output};
use super::scenario::Front;
use super::{Bench, Proxy};

/// The plugin's name in the chain and its file name.
pub(super) const NAME: &str = "hdr";
/// The header it declares.
const HEADER: &str = "x-bench-variant";

/// Writes `hdr.wasm` (the embedded `routes` plugin) into a new plugins
/// directory under `dir`.
pub(super) fn write_plugins(bin: &Path, dir: &Path) -> Result<PathBuf> {
    let plugins = dir.join("hook-plugins");
    std::fs::create_dir_all(&plugins).with_context(|| format!("create {}", plugins.display()))?;
    let out = plugins.join(format!("{NAME}.wasm"));
    output(&mut command(
        &bin.join("turnout-loadgen"),
        &[
            "plugin".into(),
            "--name".into(),
            "routes".into(),
            "--out".into(),
            out.display().to_string(),
        ],
    ))?;
    Ok(plugins)
}

impl Bench<'_> {
    /// `config` for `turnout-hook` with the `hdr` plugin first in the
    /// chain; the other proxies' configs unchanged.
    pub(super) fn hook_variant(&self, proxy: Proxy, config: String) -> Result<String> {
        if proxy != Proxy::TurnoutHook {
            return Ok(config);
        }
        let dir = self
            .hook_plugins
            .as_ref()
            .context("turnout-hook without its plugins directory")?;
        const AT: &str = "\"bind\": [";
        if config.matches(AT).count() != 1 {
            bail!("the Turnout config no longer has {AT} once:\n{config}");
        }
        // Its own port: the route is real (the host listens there) but no
        // bench request ever arrives on it.
        let port = free_port()?;
        let plugins = format!(
            r#""plugins": {{ "dir": {:?}, "order": ["{NAME}"], "config": {{ "{NAME}": {{ "routes": [
    {{ "name": "{NAME}", "match": {{ "ports": {port}, "headers": {{ "{HEADER}": "b" }} }},
      "action": {{ "type": "forward", "targets": [{{ "host": "127.0.0.1", "port": 9 }}] }} }} ] }} }} }},
  "#,
            dir.display().to_string()
        );
        Ok(config.replacen(AT, &format!("{plugins}{AT}"), 1))
    }

    /// `--hook`: per HTTP scenario, turnout-hook against turnout in the
    /// same repeat — the extra CPU per request in µs and as a share of
    /// turnout's own.
    pub(super) fn hook_section(&self, md: &mut String) -> Result<()> {
        let (t, h) = (Proxy::Turnout, Proxy::TurnoutHook);
        if !(self.opts.proxies.contains(&t) && self.opts.proxies.contains(&h)) {
            return Ok(());
        }
        writeln!(md, "\n## Request hook: turnout-hook against turnout\n")?;
        writeln!(
            md,
            "turnout-hook is turnout with one more request plugin first in the chain (`{NAME}`: a copy of the embedded `routes` plugin with one route on another port that declares `{HEADER}`), so every request gets one more `request` call that is handed that header and passes before `routes` forwards. Per repeat: the CPU difference per request, and that difference over turnout's CPU per request; then the median (min–max). Goal (issue 17): ≤ 1 µs and ≤ 5 %.\n"
        )?;
        writeln!(
            md,
            "| scenario | turnout CPU µs per request | turnout-hook | extra µs per request | extra % |\n| --- | ---: | ---: | ---: | ---: |"
        )?;
        for &s in &self.opts.scenarios {
            if !matches!(s.front(), Front::TerminateHttp | Front::TerminateH2) {
                continue;
            }
            let key = s.headline().key;
            // CPU-s per 10 000 or per 100 000 requests → µs per request.
            let per = if key.ends_with("10k") { 1e4 } else { 1e5 };
            let us = |p: Proxy, r: usize| self.value(s, p, r, key) / per * 1e6;
            let (mut plain, mut hooked, mut extra, mut pct) = (vec![], vec![], vec![], vec![]);
            for r in 0..self.opts.repeats {
                let (a, b) = (us(t, r), us(h, r));
                plain.push(a);
                hooked.push(b);
                extra.push(b - a);
                pct.push((b - a) / a * 100.0);
            }
            writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                s.name(),
                super::report::cell(plain),
                super::report::cell(hooked),
                super::report::cell(extra),
                super::report::cell(pct),
            )?;
        }
        Ok(())
    }
}
