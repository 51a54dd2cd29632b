//! The command line (`cargo xtask bench …`) and how much load each
//! scenario gets.

use anyhow::{Context, Result, anyhow, bail};

use super::Proxy;
use super::scenario::Scenario;

pub(super) const USAGE: &str = "cargo xtask bench [--quick] [--scenario NAME[,NAME…]] [--proxies turnout,haproxy,nginx] [--repeats N] [--no-install] [--keep] [--no-build] [--haproxy-splice]
  scenarios: new-tls, bulk (= bulk-1 + bulk-64), bulk-1, bulk-64, idle, latency,
             new-tls-terminate, idle-terminate (= terminate), https-keepalive (= http)
             (default: all)
  --quick      tiny loads, 1 repeat: checks the harness, measures nothing worth keeping
  --repeats N  repeats per scenario and proxy (default 3, the minimum for a median and spread)
  --keep       keep the temporary directory (configs, proxy logs)
  --no-build   use the release binaries already built (turnout, turnout-loadgen)
  --haproxy-splice  HAProxy with `option splice-request` and `option splice-response`
               (its kernel splicing forced on; nginx's stream module has none)";

pub(super) struct Options {
    /// As given, for the results file.
    pub(super) args: String,
    pub(super) quick: bool,
    pub(super) scenarios: Vec<Scenario>,
    pub(super) proxies: Vec<Proxy>,
    pub(super) repeats: usize,
    pub(super) install: bool,
    pub(super) keep: bool,
    pub(super) build: bool,
    /// Force HAProxy's splice on.
    pub(super) haproxy_splice: bool,
}

impl Options {
    pub(super) fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            args: args.join(" "),
            quick: false,
            scenarios: Vec::new(),
            proxies: Proxy::ALL.to_vec(),
            repeats: 0,
            install: true,
            keep: false,
            build: true,
            haproxy_splice: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| anyhow!("{a} needs a value\n\n{USAGE}"))
            };
            match a.as_str() {
                "--quick" => o.quick = true,
                "--no-install" => o.install = false,
                "--keep" => o.keep = true,
                "--no-build" => o.build = false,
                "--haproxy-splice" => o.haproxy_splice = true,
                "--repeats" => o.repeats = value()?.parse().context("--repeats")?,
                "--scenario" => {
                    for name in value()?.split(',') {
                        o.scenarios.extend(match name {
                            "new-tls" | "tls" => vec![Scenario::NewTls],
                            "bulk" => vec![Scenario::Bulk1, Scenario::Bulk64],
                            "bulk-1" => vec![Scenario::Bulk1],
                            "bulk-64" => vec![Scenario::Bulk64],
                            "idle" => vec![Scenario::Idle],
                            "latency" => vec![Scenario::Latency],
                            "new-tls-terminate" => vec![Scenario::NewTlsTerminate],
                            "idle-terminate" => vec![Scenario::IdleTerminate],
                            "terminate" => {
                                vec![Scenario::NewTlsTerminate, Scenario::IdleTerminate]
                            }
                            "https-keepalive" | "http" => vec![Scenario::HttpsKeepalive],
                            _ => bail!("unknown scenario {name:?}\n\n{USAGE}"),
                        });
                    }
                }
                "--proxies" => {
                    o.proxies = value()?
                        .split(',')
                        .map(|n| {
                            Proxy::ALL
                                .into_iter()
                                .find(|p| p.name() == n)
                                .ok_or_else(|| anyhow!("unknown proxy {n:?}\n\n{USAGE}"))
                        })
                        .collect::<Result<_>>()?;
                }
                "-h" | "--help" => {
                    eprintln!("{USAGE}");
                    std::process::exit(0);
                }
                _ => bail!("unknown option {a:?}\n\n{USAGE}"),
            }
        }
        if o.scenarios.is_empty() {
            o.scenarios = Scenario::ALL.to_vec();
        }
        if o.repeats == 0 {
            o.repeats = if o.quick { 1 } else { 3 };
        }
        Ok(o)
    }
}

/// How much load: `--quick` checks that everything works, the full one
/// runs long enough for 10 ms CPU ticks to be a rounding error.
pub(super) struct Load {
    pub(super) warmup: usize,
    pub(super) tls_conns: usize,
    pub(super) concurrency: usize,
    pub(super) bulk_total: u64,
    pub(super) idle: usize,
    pub(super) latency: usize,
    /// https-keepalive: keep-alive connections, requests measured, and
    /// requests of the warm-up (which also fills the backend pools).
    pub(super) http_conns: usize,
    pub(super) http_requests: usize,
    pub(super) http_warmup: usize,
}

impl Load {
    pub(super) fn new(quick: bool, idle_cap: usize) -> Load {
        let l = if quick {
            Load {
                warmup: 50,
                tls_conns: 300,
                concurrency: 8,
                bulk_total: 64 << 20,
                idle: 200,
                latency: 50,
                http_conns: 8,
                http_requests: 2_000,
                http_warmup: 200,
            }
        } else {
            Load {
                warmup: 500,
                tls_conns: 20_000,
                concurrency: 32,
                bulk_total: 4 << 30,
                idle: 10_000,
                latency: 5_000,
                http_conns: 50,
                http_requests: 100_000,
                http_warmup: 5_000,
            }
        };
        Load {
            idle: l.idle.min(idle_cap),
            ..l
        }
    }
}
