//! The Markdown report: medians and spreads, ratios to HAProxy per
//! repeat, machine facts, every run, the method.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::Result;

use super::method::{
    METHOD, METHOD_CADDY, METHOD_CLUSTER, METHOD_H2, METHOD_HOOK, METHOD_HTTP, METHOD_HTTPS_NEW,
    METHOD_TERMINATE, METHOD_WS,
};
use super::procs::output;
use super::{Bench, Proxy, Scenario};
use crate::root;

/// The header and rule of a table with a column per proxy.
fn table_head(proxies: &[Proxy]) -> (String, String) {
    let mut head = String::from("| scenario | figure |");
    let mut rule = String::from("| --- | --- |");
    for p in proxies {
        head += &format!(" {} |", p.name());
        rule += " ---: |";
    }
    (head, rule)
}

pub(super) fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "—".to_owned()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Median, min, max of the finite values.
fn summary(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((median, v[0], v[n - 1]))
}

pub(super) fn cell(v: Vec<f64>) -> String {
    match summary(v) {
        None => "—".to_owned(),
        Some((m, lo, hi)) if lo == hi => fmt_num(m),
        Some((m, lo, hi)) => format!("{} ({}–{})", fmt_num(m), fmt_num(lo), fmt_num(hi)),
    }
}

impl Bench<'_> {
    fn values(&self, s: Scenario, p: Proxy, key: &str) -> Vec<f64> {
        (0..self.opts.repeats)
            .map(|r| self.value(s, p, r, key))
            .collect()
    }

    pub(super) fn value(&self, s: Scenario, p: Proxy, repeat: usize, key: &str) -> f64 {
        self.runs
            .iter()
            .find(|x| x.scenario == s && x.proxy == p && x.repeat == repeat)
            .and_then(|x| x.figures.get(key).copied())
            .unwrap_or(f64::NAN)
    }

    /// Per repeat, `p` against HAProxy: a ratio, or for latency (where
    /// HAProxy's added time can be ~0) a difference.
    fn versus_haproxy(&self, s: Scenario, p: Proxy, key: &str) -> Vec<f64> {
        self.versus(s, p, Proxy::Haproxy, key)
    }

    /// Per repeat, `p` against `base`: as [`Self::versus_haproxy`].
    fn versus(&self, s: Scenario, p: Proxy, base: Proxy, key: &str) -> Vec<f64> {
        (0..self.opts.repeats)
            .map(|r| {
                let (x, b) = (self.value(s, p, r, key), self.value(s, base, r, key));
                if s == Scenario::Latency { x - b } else { x / b }
            })
            .collect()
    }

    /// `--cluster`: per scenario, turnout-cluster against turnout (same
    /// repeat), and what Redis says it ran for each connection.
    fn cluster_section(&self, md: &mut String) -> Result<()> {
        let (t, c) = (Proxy::Turnout, Proxy::TurnoutCluster);
        if !(self.opts.proxies.contains(&t) && self.opts.proxies.contains(&c)) {
            return Ok(());
        }
        writeln!(md, "\n## Cluster store: turnout-cluster against turnout\n")?;
        writeln!(
            md,
            "Both with `connectionRateLimitPerMinute` {}; turnout-cluster also with `cluster` on the bench's Redis, so each of its new connections awaits one rate script there before `admit`. \"cluster − plain\" is per repeat (a difference for latency, else a ratio), then the median (min–max). \"Redis scripts per conn\" and \"µs per script\" are the Redis server's own count and time (`INFO commandstats`, EVAL + EVALSHA) over the measured run: about 1 per connection means every connection's round trip happened (fewer: the store fell back to counting locally).\n",
            super::cluster::RATE_LIMIT
        )?;
        writeln!(
            md,
            "| scenario | figure | turnout | turnout-cluster | cluster − plain | Redis scripts per conn | Redis µs per script |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |"
        )?;
        for &s in &self.opts.scenarios {
            let h = s.headline();
            let mut figures = vec![(h.key, h.label)];
            if s == Scenario::Latency {
                figures.insert(0, ("added_p50_us", "added p50 µs per new conn"));
            }
            for (key, label) in figures {
                writeln!(
                    md,
                    "| {} | {label} | {} | {} | {} | {} | {} |",
                    s.name(),
                    cell(self.values(s, t, key)),
                    cell(self.values(s, c, key)),
                    cell(self.versus(s, c, t, key)),
                    cell(self.values(s, c, "redis_scripts_per_conn")),
                    cell(self.values(s, c, "redis_us_per_script")),
                )?;
            }
        }
        Ok(())
    }

    fn facts(&self) -> Vec<(&'static str, String)> {
        let sh = |cmd: &str, args: &[&str]| {
            output(Command::new(cmd).args(args))
                .map(|o| o.lines().next().unwrap_or("").trim().to_owned())
                .unwrap_or_else(|_| "not available".to_owned())
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        let mem = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:").map(|m| m.trim().to_owned()))
            .unwrap_or_default();
        let dirty = output(
            Command::new("git")
                .args(["status", "--porcelain"])
                .current_dir(root()),
        )
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false);
        let commit = sh(
            "git",
            &[
                "-C",
                &root().display().to_string(),
                "rev-parse",
                "--short",
                "HEAD",
            ],
        );
        vec![
            ("CPU", format!("{model} — nproc {}", sh("nproc", &[]))),
            ("kernel", sh("uname", &["-r"])),
            ("memory", mem),
            (
                "open files (soft/hard)",
                format!("{}/{}", self.nofile.0, self.nofile.1),
            ),
            (
                "turnout",
                format!(
                    "commit {commit}{}",
                    if dirty {
                        " (working tree had uncommitted changes)"
                    } else {
                        ""
                    }
                ),
            ),
            ("haproxy", sh("haproxy", &["-v"])),
            ("nginx", sh("nginx", &["-v"])),
            ("caddy", sh("caddy", &["version"])),
            ("h2load", sh("h2load", &["--version"])),
            ("rustc", sh("rustc", &["-V"])),
        ]
        .into_iter()
        .chain(self.redis.as_ref().map(|r| ("redis", r.version.clone())))
        .collect()
    }

    pub(super) fn markdown(&self) -> Result<String> {
        let mut md = String::new();
        let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
        let proxies = &self.opts.proxies;
        let has_haproxy = proxies.contains(&Proxy::Haproxy);
        writeln!(
            md,
            "# Turnout vs HAProxy vs nginx vs Caddy — {}\n",
            date.trim()
        )?;
        writeln!(
            md,
            "`cargo xtask bench {}` — {} repeat(s) per scenario and proxy, proxy order rotated every repeat; took {:.0} min.\n",
            self.opts.args,
            self.opts.repeats,
            self.started.elapsed().as_secs_f64() / 60.0
        )?;
        if self.opts.quick {
            writeln!(
                md,
                "**`--quick`: tiny loads. These numbers check the harness; they measure nothing.**\n"
            )?;
        }
        writeln!(md, "## Machine\n")?;
        for (k, v) in self.facts() {
            writeln!(md, "* {k}: {v}")?;
        }
        let l = &self.load;
        writeln!(
            md,
            "* load: new-tls and new-tls-terminate {} conns at concurrency {}; bulk {} MiB in total per run; idle and idle-terminate {} conns; latency {} conns per path; https-keepalive {} requests over {} keep-alive conns; https-new {} requests, each on a new conn, {} at a time; h2 {} requests ({} for the warm-up); ws-echo {} messages of {} bytes over {} WebSockets, {} in flight on each; warm-up {} conns per proxy start ({} requests for https-keepalive, {} messages for ws-echo)\n",
            l.tls_conns,
            l.concurrency,
            l.bulk_total >> 20,
            l.idle,
            l.latency,
            l.http_requests,
            l.http_conns,
            l.https_new,
            l.http_conns,
            l.h2_requests,
            l.h2_requests / 10,
            l.ws_messages,
            l.ws_message_bytes,
            l.ws_conns,
            l.ws_window,
            l.warmup,
            l.http_warmup,
            l.ws_warmup
        )?;

        writeln!(md, "## Headline: the proxy's own cost\n")?;
        writeln!(
            md,
            "Median (min–max) over the repeats. \"vs haproxy\" is computed per repeat against HAProxy's run in the same repeat — a ratio (lower is better for Turnout), for latency a difference in µs — then the median (min–max) of those.\n"
        )?;
        let (mut head, mut rule) = table_head(proxies);
        if has_haproxy {
            for p in proxies.iter().filter(|p| **p != Proxy::Haproxy) {
                head += &format!(" {} vs haproxy |", p.name());
                rule += " ---: |";
            }
            head += " goal (turnout vs haproxy) | met |";
            rule += " --- | --- |";
        }
        writeln!(md, "{head}\n{rule}")?;
        for &s in &self.opts.scenarios {
            let h = s.headline();
            let mut row = format!("| {} | {} |", s.name(), h.label);
            for &p in proxies {
                row += &format!(" {} |", cell(self.values(s, p, h.key)));
            }
            if has_haproxy {
                for &p in proxies.iter().filter(|p| **p != Proxy::Haproxy) {
                    row += &format!(" {} |", cell(self.versus_haproxy(s, p, h.key)));
                }
                let (goal, met) = match summary(self.versus_haproxy(s, Proxy::Turnout, h.key)) {
                    _ if !proxies.contains(&Proxy::Turnout) => (String::new(), "—"),
                    Some((m, ..)) if s == Scenario::Latency => (
                        "≤ haproxy's".to_owned(),
                        if m <= 0.0 { "yes" } else { "**no**" },
                    ),
                    Some((m, ..)) => (
                        format!("≤ {}×", h.goal),
                        if m <= h.goal { "yes" } else { "**no**" },
                    ),
                    None => (String::new(), "—"),
                };
                row += &format!(" {goal} | {met} |");
            }
            writeln!(md, "{row}")?;
        }

        self.cluster_section(&mut md)?;
        self.hook_section(&mut md)?;

        writeln!(
            md,
            "\n## Beside them: throughput and latency (noisy here)\n"
        )?;
        let (head, rule) = table_head(proxies);
        writeln!(md, "{head}\n{rule}")?;
        for &s in &self.opts.scenarios {
            for (key, label) in s.beside() {
                let mut row = format!("| {} | {label} |", s.name());
                for &p in proxies {
                    row += &format!(" {} |", cell(self.values(s, p, key)));
                }
                writeln!(md, "{row}")?;
            }
        }

        if self.opts.scenarios.iter().any(|s| s.terminates()) {
            writeln!(
                md,
                "\n## TLS as the client saw it (terminating scenarios)\n"
            )?;
            writeln!(
                md,
                "`version/cipher suite/key exchange group/ALPN` of every handshake (all runs), from the client's rustls. The client never offers resumption (its session store keeps nothing); tickets a server sends anyway are counted and dropped.\n"
            )?;
            writeln!(
                md,
                "| scenario | proxy | negotiated | resumed | tickets per conn |\n| --- | --- | --- | ---: | ---: |"
            )?;
            for &s in self.opts.scenarios.iter().filter(|s| s.terminates()) {
                for &p in proxies {
                    let runs: Vec<_> = self
                        .runs
                        .iter()
                        .filter(|r| r.scenario == s && r.proxy == p)
                        .collect();
                    let mut seen: Vec<&str> = runs
                        .iter()
                        .filter_map(|r| r.negotiated.as_deref())
                        .collect();
                    seen.sort_unstable();
                    seen.dedup();
                    let sum = |k: &str| runs.iter().filter_map(|r| r.figures.get(k)).sum::<f64>();
                    writeln!(
                        md,
                        "| {} | {} | {} | {} | {} |",
                        s.name(),
                        p.name(),
                        if seen.is_empty() {
                            "—".to_owned()
                        } else {
                            seen.join(", ")
                        },
                        fmt_num(sum("resumed")),
                        cell(self.values(s, p, "tickets_per_conn")),
                    )?;
                }
            }
        }

        writeln!(md, "\n## Every run, in the order run\n")?;
        writeln!(
            md,
            "| scenario | repeat | proxy | figures | negotiated | errors |\n| --- | ---: | --- | --- | --- | --- |"
        )?;
        for r in &self.runs {
            let figures: Vec<String> = r
                .figures
                .iter()
                .map(|(k, v)| format!("{k}={}", fmt_num(*v)))
                .collect();
            let errors = match (&r.first_error, r.errors) {
                (Some(e), n) => format!("{n} (first: {})", e.replace('|', "/")),
                (None, n) if n > 0.0 => n.to_string(),
                _ => "0".to_owned(),
            };
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {errors} |",
                r.scenario.name(),
                r.repeat + 1,
                r.proxy.name(),
                figures.join(" "),
                r.negotiated.as_deref().unwrap_or("—")
            )?;
        }
        writeln!(md, "\n## Method\n\n{METHOD}")?;
        if self.opts.scenarios.iter().any(|s| s.terminates()) {
            writeln!(md, "{METHOD_TERMINATE}")?;
        }
        if self.opts.scenarios.contains(&Scenario::HttpsKeepalive) {
            writeln!(md, "{METHOD_HTTP}")?;
        }
        if self.opts.scenarios.contains(&Scenario::WsEcho) {
            writeln!(md, "{METHOD_WS}")?;
        }
        if self.opts.scenarios.contains(&Scenario::HttpsNew) {
            writeln!(md, "{METHOD_HTTPS_NEW}")?;
        }
        if self.opts.scenarios.contains(&Scenario::H2) {
            writeln!(md, "{METHOD_H2}")?;
        }
        if self.opts.proxies.contains(&Proxy::Caddy) {
            writeln!(md, "{METHOD_CADDY}")?;
        }
        if self.opts.hook {
            writeln!(md, "{METHOD_HOOK}")?;
        }
        if self.opts.cluster {
            writeln!(md, "{METHOD_CLUSTER}")?;
        }
        Ok(md)
    }
}
