//! A route's `action` (where to forward, how to treat TLS, the PROXY
//! header) and the limits read from its `security`.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use turnout_plugin_sdk::matching::IpList;
use turnout_plugin_sdk::{
    BackendProtocol, ProxyProtocol, RouteLimits, Target, TlsMode, WebSocketPolicy,
};

use crate::config::{Result, err, kind, strict, strings};
use crate::http::config::{self as http, Kind};
use crate::http::security::{self, BasicAuth, RateLimit};
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
    "socketHandler",
];
/// Hosts from one route's lists in one upstream rotation set: past this
/// many rotations, a route's HTTP upstreams rotate its longest list only.
const MAX_ROTATIONS: u32 = 64;
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
    /// `type` (and its `redirect` / `static`).
    pub(crate) kind: Kind,
    /// `tls.certificate` as given (`None`: the default certificate); two
    /// routes serve the same certificate when these are equal.
    pub(crate) certificate: Option<Value>,
    /// `options.backendProtocol`.
    pub(crate) backend_protocol: BackendProtocol,
    /// `options.maxBodySize`: a larger request body is a 413.
    pub(crate) max_body: Option<u64>,
    /// `websocket`.
    pub(crate) websocket: WebSocketPolicy,
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

    /// Whether any target has port `"preserve"`.
    pub(crate) fn preserves_port(&self) -> bool {
        self.targets
            .iter()
            .any(|t| matches!(t.port, Port::Preserve))
    }

    /// Distinct turns of [`Action::backends`]: the least common multiple of
    /// the host lists' lengths, or the longest one's when that is more than
    /// [`MAX_ROTATIONS`] (then the shorter lists rotate a little unevenly).
    pub(crate) fn rotations(&self) -> u32 {
        let lens = self
            .targets
            .iter()
            .map(|t| u32::try_from(t.hosts.len()).unwrap_or(1).max(1));
        let lcm = lens.clone().try_fold(1u32, |acc, n| {
            let l = acc / gcd(acc, n) * n;
            (l <= MAX_ROTATIONS).then_some(l)
        });
        lcm.unwrap_or_else(|| lens.max().unwrap_or(1))
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

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
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
    redirect: Option<Value>,
    #[serde(rename = "static")]
    fixed: Option<Value>,
    options: Option<Value>,
    websocket: Option<Value>,
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
    /// The host loads it; compared here for 421 Misdirected Request.
    certificate: Option<Value>,
    // For the terminating host, which checks them; accepted here.
    #[serde(rename = "versions")]
    _versions: Option<IgnoredAny>,
    #[serde(rename = "upstream")]
    _upstream: Option<IgnoredAny>,
}

/// Reads `action`. A route without `targets`/`target` gets an empty list,
/// filled from `defaults.target` later.
pub(crate) fn parse(v: &Value, at: &str) -> Result<Action> {
    let raw: RawAction = strict(v, at, ACTION_UNSUPPORTED)?;
    let action_kind = action_kind(&raw, at)?;
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
    let mut action = Action {
        kind: action_kind,
        ..Action::default()
    };
    action.set_targets(targets);
    if action.backends > MAX_BACKENDS {
        return err(
            format_args!("{at}.targets"),
            format_args!("{} backends (at most {MAX_BACKENDS})", action.backends),
        );
    }
    if let Some(t) = &raw.tls {
        let (mode, certificate) = tls_mode(t, &format!("{at}.tls"))?;
        action.tls = Some(mode);
        action.certificate = certificate;
    }
    if let Some(o) = &raw.options {
        (action.backend_protocol, action.max_body) = http::options(o, &format!("{at}.options"))?;
    }
    if let Some(w) = &raw.websocket {
        action.websocket = crate::http::websocket::websocket(w, &format!("{at}.websocket"))?;
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

/// `type` and the keys that go with it: `redirect`, `static`; a redirect or
/// static route has no targets or options (it sends nowhere).
fn action_kind(raw: &RawAction, at: &str) -> Result<Kind> {
    let name = match &raw.kind {
        Some(Value::String(s)) if ["forward", "redirect", "static"].contains(&s.as_str()) => s,
        Some(Value::String(s)) => {
            return err(
                format_args!("{at}.type"),
                format_args!(
                    "{s:?} is not supported by Turnout (one of \"forward\", \"redirect\", \"static\")"
                ),
            );
        }
        Some(other) => {
            return err(
                format_args!("{at}.type"),
                format_args!("must be a string, got {}", kind(other)),
            );
        }
        None => {
            return err(
                format_args!("{at}.type"),
                "required (\"forward\", \"redirect\" or \"static\")",
            );
        }
    };
    let keys = [
        ("redirect", raw.redirect.as_ref()),
        ("static", raw.fixed.as_ref()),
    ];
    for (key, value) in keys {
        match value {
            Some(_) if key != name => {
                return err(
                    format_args!("{at}.{key}"),
                    format_args!("only with \"type\": \"{key}\" (this route is {name:?})"),
                );
            }
            None if key == name => {
                return err(
                    format_args!("{at}.{key}"),
                    format_args!("required with \"type\": \"{key}\""),
                );
            }
            _ => {}
        }
    }
    if name != "forward" {
        let extra = [
            ("targets", raw.targets.is_some()),
            ("target", raw.target.is_some()),
            ("options", raw.options.is_some()),
            ("sendProxyProtocol", raw.send_proxy_protocol.is_some()),
        ];
        if let Some((key, _)) = extra.iter().find(|(_, present)| *present) {
            return err(
                format_args!("{at}.{key}"),
                format_args!("a {name:?} route answers itself and sends nowhere: remove it"),
            );
        }
    }
    Ok(match (name.as_str(), &raw.redirect, &raw.fixed) {
        ("redirect", Some(r), _) => Kind::Redirect(http::redirect(r, &format!("{at}.redirect"))?),
        ("static", _, Some(s)) => Kind::Static(http::static_response(s, &format!("{at}.static"))?),
        _ => Kind::Forward,
    })
}

fn tls_mode(v: &Value, at: &str) -> Result<(TlsMode, Option<Value>)> {
    let raw: RawTls = strict(v, at, TLS_UNSUPPORTED)?;
    let mode = match &raw.mode {
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
    }?;
    Ok((mode, raw.certificate))
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

/// SmartProxy security keys Turnout does not implement.
const SECURITY_UNSUPPORTED: &[&str] = &["authentication", "jwtAuth"];
const SECURITY_KEYS: &[&str] = &[
    "ipAllowList",
    "ipBlockList",
    "maxConnections",
    "maxConnectionsPerIP",
    "basicAuth",
    "rateLimit",
];

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
    /// `basicAuth` (HTTP requests), unless disabled.
    pub(crate) basic_auth: Option<BasicAuth>,
    /// `rateLimit` (HTTP requests), unless disabled.
    pub(crate) rate_limit: Option<RateLimit>,
}

/// Reads `security`. Proxy-wide limits are the `guard` plugin's; these are
/// the route's own.
pub(crate) fn security(v: &Value, at: &str) -> Result<Security> {
    let Value::Object(map) = v else {
        return err(at, format_args!("must be an object, got {}", kind(v)));
    };
    if let Some(key) = map
        .keys()
        .find(|k| SECURITY_UNSUPPORTED.contains(&k.as_str()))
    {
        return err(format_args!("{at}.{key}"), "not supported by Turnout");
    }
    if let Some(key) = map.keys().find(|k| !SECURITY_KEYS.contains(&k.as_str())) {
        return err(
            format_args!("{at}.{key}"),
            format_args!("unknown key (expected one of {})", SECURITY_KEYS.join(", ")),
        );
    }
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
    let basic_auth = match map.get("basicAuth") {
        None | Some(Value::Null) => None,
        Some(b) => security::basic_auth(b, &format!("{at}.basicAuth"))?,
    };
    let rate_limit = match map.get("rateLimit") {
        None | Some(Value::Null) => None,
        Some(r) => security::rate_limit(r, &format!("{at}.rateLimit"))?,
    };
    Ok(Security {
        limits: RouteLimits::new(read("maxConnections")?, read("maxConnectionsPerIP")?),
        allow: list("ipAllowList")?,
        block: list("ipBlockList")?,
        basic_auth,
        rate_limit,
    })
}
