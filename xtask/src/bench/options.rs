//! The command line (`cargo xtask bench …`) and how much load each
//! scenario gets.

use anyhow::{Context, Result, anyhow, bail};

use super::Proxy;
use super::scenario::Scenario;

pub(super) const USAGE: &str = "cargo xtask bench [--quick] [--scenario NAME[,NAME…]] [--proxies turnout,haproxy,nginx,caddy] [--repeats N] [--no-install] [--keep] [--no-build] [--haproxy-splice] [--cluster] [--hook] [--ws-conns N] [--ws-messages N] [--ws-window N]
  scenarios: new-tls, bulk (= bulk-1 + bulk-64), bulk-1, bulk-64, idle, latency,
             new-tls-terminate, idle-terminate (= terminate), https-keepalive (= http),
             ws-echo (= ws), https-new, h2
             (default: all; `web` = https-keepalive, https-new, h2, ws-echo)
  caddy        runs the HTTP scenarios only (https-keepalive, https-new, h2, ws-echo):
               Debian's Caddy has no layer-4 proxying
  --quick      tiny loads, 1 repeat: checks the harness, measures nothing worth keeping
  --repeats N  repeats per scenario and proxy (default 3, the minimum for a median and spread)
  --keep       keep the temporary directory (configs, proxy logs)
  --no-build   use the release binaries already built (turnout, turnout-loadgen)
  --haproxy-splice  HAProxy with `option splice-request` and `option splice-response`
               (its kernel splicing forced on; nginx's stream module has none)
  --cluster    adds the proxy turnout-cluster beside turnout: the same config plus a
               `cluster` store on a redis-server the bench starts (/usr/bin/redis-server);
               both Turnouts then run with connectionRateLimitPerMinute 100000000 (far above
               the load), so each new connection of turnout-cluster does one Redis round trip
               before `admit` and the cluster store is the only difference (issue 18);
               naming turnout-cluster in --proxies implies it
  --hook       adds the proxy turnout-hook beside turnout in the HTTP scenarios: the same
               config plus a second request plugin first in the chain (a copy of the
               embedded routes plugin whose one route is on another port and declares one
               request header), so each request gets one more hook call that is handed
               that header and passes; the report gives the extra CPU per request;
               naming turnout-hook in --proxies implies it
  --ws-conns N     ws-echo: WebSocket connections (default 50; --quick 8)
  --ws-messages N  ws-echo: 1 KiB messages echoed in each measured run (default 100000; --quick 2000)
  --ws-window N    ws-echo: messages awaiting their echo per connection, 1 to 64 (default 1)";

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
    /// Run `turnout-cluster` beside `turnout` (see [`super::cluster`]).
    pub(super) cluster: bool,
    /// Run `turnout-hook` beside `turnout` (see [`super::hook`]).
    pub(super) hook: bool,
    /// ws-echo's load, where given: connections, messages, window.
    pub(super) ws_conns: Option<usize>,
    pub(super) ws_messages: Option<usize>,
    pub(super) ws_window: Option<usize>,
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
            cluster: false,
            hook: false,
            ws_conns: None,
            ws_messages: None,
            ws_window: None,
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
                "--cluster" => o.cluster = true,
                "--hook" => o.hook = true,
                "--repeats" => o.repeats = value()?.parse().context("--repeats")?,
                "--ws-conns" => o.ws_conns = Some(positive(a, &value()?)?),
                "--ws-messages" => o.ws_messages = Some(positive(a, &value()?)?),
                "--ws-window" => {
                    let w = positive(a, &value()?)?;
                    if w > 64 {
                        bail!("--ws-window {w}: at most 64");
                    }
                    o.ws_window = Some(w);
                }
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
                            "ws-echo" | "ws" => vec![Scenario::WsEcho],
                            "https-new" => vec![Scenario::HttpsNew],
                            "h2" => vec![Scenario::H2],
                            "web" => vec![
                                Scenario::HttpsKeepalive,
                                Scenario::HttpsNew,
                                Scenario::H2,
                                Scenario::WsEcho,
                            ],
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
                                .chain([Proxy::TurnoutCluster, Proxy::TurnoutHook])
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
        o.cluster |= o.proxies.contains(&Proxy::TurnoutCluster);
        o.hook |= o.proxies.contains(&Proxy::TurnoutHook);
        for (on, variant) in [
            (o.hook, Proxy::TurnoutHook),
            (o.cluster, Proxy::TurnoutCluster),
        ] {
            if on && !o.proxies.contains(&variant) {
                // Beside `turnout`, so the two are next to each other in
                // every repeat's (rotated) order and in the tables.
                let at = o
                    .proxies
                    .iter()
                    .position(|p| *p == Proxy::Turnout)
                    .map_or(o.proxies.len(), |i| i + 1);
                o.proxies.insert(at, variant);
            }
        }
        if o.repeats == 0 {
            o.repeats = if o.quick { 1 } else { 3 };
        }
        Ok(o)
    }
}

fn positive(option: &str, v: &str) -> Result<usize> {
    match v.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("{option} {v:?}: a count above 0"),
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
    /// https-new: requests measured, each on its own connection.
    pub(super) https_new: usize,
    /// h2: requests measured (and a tenth of it as the warm-up).
    pub(super) h2_requests: usize,
    /// ws-echo: WebSocket connections, messages measured and of the
    /// warm-up, bytes per message, messages in flight per connection.
    pub(super) ws_conns: usize,
    pub(super) ws_messages: usize,
    pub(super) ws_warmup: usize,
    pub(super) ws_message_bytes: usize,
    pub(super) ws_window: usize,
}

impl Load {
    pub(super) fn new(opts: &Options, idle_cap: usize) -> Load {
        let quick = opts.quick;
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
                https_new: 300,
                h2_requests: 2_000,
                ws_conns: 8,
                ws_messages: 2_000,
                ws_warmup: 200,
                ws_message_bytes: 1024,
                ws_window: 1,
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
                https_new: 10_000,
                h2_requests: 200_000,
                ws_conns: 50,
                ws_messages: 100_000,
                ws_warmup: 5_000,
                ws_message_bytes: 1024,
                ws_window: 1,
            }
        };
        Load {
            idle: l.idle.min(idle_cap),
            ws_conns: opts.ws_conns.unwrap_or(l.ws_conns),
            ws_messages: opts.ws_messages.unwrap_or(l.ws_messages),
            ws_window: opts.ws_window.unwrap_or(l.ws_window),
            ..l
        }
    }
}
