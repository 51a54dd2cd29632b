//! A route's `action` (where to forward, how to treat TLS, the PROXY
//! header) and the limits read from its `security`.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use turnout_plugin_sdk::matching::IpList;
use turnout_plugin_sdk::{ProxyProtocol, RouteLimits, Target, TlsMode};

use crate::config::{Result, err, kind, strict, strings};
use crate::matcher::port;

/// Backends one verdict may carry (the host's limit).
const MAX_BACKENDS: usize = 64;
/// Longest host name.
const MAX_HOST: usize = 253;

/// SmartProxy action keys Turnout does not implement.
const ACTION_UNSUPPORTED: &[&str] = &[
    "advanced",
    "forwardingEngine",
    "loadBalancing",
    "nftables",
    "options",
    "redirect",
    "socketHandler",
    "static",
    "websocket",
];
/// SmartProxy per-target keys Turnout does not implement.
const TARGET_UNSUPPORTED: &[&str] = &[
    "advanced",
    "headers",
    "loadBalancing",
    "match",
    "priority",
    "sendProxyProtocol",
    "tls",
    "websocket",
];
/// SmartProxy TLS keys Turnout does not implement.
const TLS_UNSUPPORTED: &[&str] = &["acme", "ciphers", "honorCipherOrder", "sessionTimeout"];

/// A checked `action`.
#[derive(Debug, Default)]
pub(crate) struct Action {
    /// In failover order; never empty once the config is read.
    targets: Vec<TargetSpec>,
    /// `targets`' hosts, counted.
    backends: usize,
    /// `tls.mode`; `None` when the route has no `tls`.
    pub(crate) tls: Option<TlsMode>,
    /// `sendProxyProtocol`; `None` until the global default fills it.
    pub(crate) proxy_protocol: Option<ProxyProtocol>,
}

/// One `{host, port}` target.
#[derive(Debug, Clone)]
pub(crate) struct TargetSpec {
    /// Round-robin across these.
    hosts: Vec<String>,
    port: Port,
}

/// A target port.
#[derive(Debug, Clone, Copy)]
enum Port {
    Fixed(u16),
    /// The port the client connected to.
    Preserve,
}

impl Action {
    pub(crate) fn set_targets(&mut self, targets: Vec<TargetSpec>) {
        self.backends = targets.iter().map(|t| t.hosts.len()).sum();
        self.targets = targets;
    }

    /// Whether it has targets (a route may leave them to `defaults.target`).
    pub(crate) fn has_targets(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Whether any target lists more than one host.
    pub(crate) fn round_robin(&self) -> bool {
        self.targets.iter().any(|t| t.hosts.len() > 1)
    }

    /// Every backend in the order to try: each target in turn, its hosts
    /// rotated to start at `turn`.
    pub(crate) fn backends(&self, listener_port: u16, turn: u64) -> Vec<Target> {
        let mut out = Vec::with_capacity(self.backends);
        for t in &self.targets {
            let port = match t.port {
                Port::Fixed(p) => p,
                Port::Preserve => listener_port,
            };
            let len = t.hosts.len();
            // `len` is at least 1 and at most MAX_BACKENDS: both casts are lossless.
            let start = (turn % len as u64) as usize;
            for k in 0..len {
                out.push(Target::new(t.hosts[(start + k) % len].clone(), port));
            }
        }
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAction {
    #[serde(rename = "type")]
    kind: Option<Value>,
    targets: Option<Value>,
    target: Option<Value>,
    tls: Option<Value>,
    send_proxy_protocol: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    host: Option<Value>,
    port: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    mode: Option<Value>,
    // For the terminating host, which checks them; accepted here.
    #[serde(rename = "certificate")]
    _certificate: Option<IgnoredAny>,
    #[serde(rename = "versions")]
    _versions: Option<IgnoredAny>,
    #[serde(rename = "upstream")]
    _upstream: Option<IgnoredAny>,
}

/// Reads `action`. A route without `targets`/`target` gets an empty list,
/// filled from `defaults.target` later.
pub(crate) fn parse(v: &Value, at: &str) -> Result<Action> {
    let raw: RawAction = strict(v, at, ACTION_UNSUPPORTED)?;
    match &raw.kind {
        Some(Value::String(s)) if s == "forward" => {}
        Some(Value::String(s)) => {
            return err(
                format_args!("{at}.type"),
                format_args!("{s:?} is not supported by Turnout (only \"forward\")"),
            );
        }
        Some(other) => {
            return err(
                format_args!("{at}.type"),
                format_args!("must be \"forward\", got {}", kind(other)),
            );
        }
        None => return err(format_args!("{at}.type"), "required (\"forward\")"),
    }
    let targets = match (&raw.targets, &raw.target) {
        (Some(_), Some(_)) => return err(at, "has both targets and target; keep one"),
        (Some(Value::Array(list)), None) => {
            let path = format!("{at}.targets");
            if list.is_empty() {
                return err(path, "empty");
            }
            list.iter()
                .enumerate()
                .map(|(j, t)| target(t, &format!("{path}[{j}]")))
                .collect::<Result<Vec<_>>>()?
        }
        (Some(other), None) => {
            return err(
                format_args!("{at}.targets"),
                format_args!("must be a list of {{host, port}}, got {}", kind(other)),
            );
        }
        (None, Some(t)) => vec![target(t, &format!("{at}.target"))?],
        (None, None) => Vec::new(),
    };
    let mut action = Action::default();
    action.set_targets(targets);
    if action.backends > MAX_BACKENDS {
        return err(
            format_args!("{at}.targets"),
            format_args!("{} backends (at most {MAX_BACKENDS})", action.backends),
        );
    }
    if let Some(t) = &raw.tls {
        action.tls = Some(tls_mode(t, &format!("{at}.tls"))?);
    }
    if let Some(pp) = &raw.send_proxy_protocol {
        action.proxy_protocol = Some(proxy_protocol(pp, &format!("{at}.sendProxyProtocol"))?);
    }
    Ok(action)
}

/// Reads one `{host, port}`: `host` a string or list, `port` a number or
/// `"preserve"`.
pub(crate) fn target(v: &Value, at: &str) -> Result<TargetSpec> {
    let raw: RawTarget = strict(v, at, TARGET_UNSUPPORTED)?;
    let Some(host) = &raw.host else {
        return err(format_args!("{at}.host"), "required");
    };
    let path = format!("{at}.host");
    let hosts = strings(host, &path)?
        .into_iter()
        .map(|h| {
            let h = h.trim();
            if h.is_empty() || h.len() > MAX_HOST || h.chars().any(|c| c.is_whitespace()) {
                err(
                    &path,
                    format_args!("{h:?} is not a host name or IP address"),
                )
            } else {
                Ok(h.to_owned())
            }
        })
        .collect::<Result<_>>()?;
    let port = match &raw.port {
        None => return err(format_args!("{at}.port"), "required"),
        Some(Value::String(s)) if s == "preserve" => Port::Preserve,
        Some(Value::String(s)) => {
            return err(
                format_args!("{at}.port"),
                format_args!("{s:?}: a port is a number or \"preserve\""),
            );
        }
        Some(p) => Port::Fixed(port(p, &format!("{at}.port"))?),
    };
    Ok(TargetSpec { hosts, port })
}

fn tls_mode(v: &Value, at: &str) -> Result<TlsMode> {
    let raw: RawTls = strict(v, at, TLS_UNSUPPORTED)?;
    match &raw.mode {
        Some(Value::String(s)) => match s.as_str() {
            "passthrough" => Ok(TlsMode::Passthrough),
            "terminate" => Ok(TlsMode::Terminate),
            "terminate-and-reencrypt" => Ok(TlsMode::TerminateAndReencrypt),
            other => err(
                format_args!("{at}.mode"),
                format_args!(
                    "{other:?} is not one of \"passthrough\", \"terminate\", \"terminate-and-reencrypt\""
                ),
            ),
        },
        Some(other) => err(
            format_args!("{at}.mode"),
            format_args!("must be a string, got {}", kind(other)),
        ),
        None => err(format_args!("{at}.mode"), "required"),
    }
}

/// `true` (v1), `false`, `"v1"` or `"v2"`.
pub(crate) fn proxy_protocol(v: &Value, at: &str) -> Result<ProxyProtocol> {
    match v {
        Value::Bool(false) => Ok(ProxyProtocol::None),
        Value::Bool(true) => Ok(ProxyProtocol::V1),
        Value::String(s) if s.eq_ignore_ascii_case("v1") => Ok(ProxyProtocol::V1),
        Value::String(s) if s.eq_ignore_ascii_case("v2") => Ok(ProxyProtocol::V2),
        other => err(
            at,
            format_args!("must be true, false, \"v1\" or \"v2\", got {other}"),
        ),
    }
}

/// What a route's `security` says that the routes plugin enforces.
#[derive(Debug, Clone, Default)]
pub(crate) struct Security {
    /// `maxConnections` / `maxConnectionsPerIP` (0 or missing = unlimited),
    /// handed to the host, which counts.
    pub(crate) limits: RouteLimits,
    /// `ipAllowList`; empty allows everyone.
    pub(crate) allow: IpList,
    /// `ipBlockList`; wins over the allow list.
    pub(crate) block: IpList,
}

/// Reads `security`; keys other than the limits and the two lists
/// (`rateLimit`, `basicAuth`, …) are HTTP concerns and ignored here.
pub(crate) fn security(v: &Value, at: &str) -> Result<Security> {
    let Value::Object(map) = v else {
        return err(at, format_args!("must be an object, got {}", kind(v)));
    };
    let read = |key: &str| -> Result<u32> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Ok(n),
                None => err(
                    format_args!("{at}.{key}"),
                    format_args!("must be a whole number 0-{}, got {n}", u32::MAX),
                ),
            },
        }
    };
    let list = |key: &str| -> Result<IpList> {
        let path = format!("{at}.{key}");
        match map.get(key) {
            None | Some(Value::Null) => Ok(IpList::default()),
            Some(Value::Array(a)) if a.is_empty() => Ok(IpList::default()),
            Some(v) => IpList::parse(&strings(v, &path)?).or_else(|e| err(&path, e)),
        }
    };
    Ok(Security {
        limits: RouteLimits::new(read("maxConnections")?, read("maxConnectionsPerIP")?),
        allow: list("ipAllowList")?,
        block: list("ipBlockList")?,
    })
}
