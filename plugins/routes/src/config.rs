//! Reading SmartProxy's route list into [`Route`]s.
//!
//! Every level is read strictly (`deny_unknown_fields`), SmartProxy keys
//! Turnout does not implement are refused by name, and every error names its
//! path: `routes[2].match.ports: port 0 is out of range 1-65535`.
//!
//! The list is read one route at a time (each route is a small
//! `serde_json::Value` only while it is checked), so a table of tens of
//! thousands of routes fits in a plugin instance's memory.

use std::fmt::{self, Display};

use serde::Deserialize;
use serde::de::{Deserializer, Error as _, IgnoredAny, SeqAccess, Visitor};
use serde_json::Value;
use turnout_plugin_sdk::matching::{DomainPattern, IpList, PathPattern};
use turnout_plugin_sdk::{InitError, PortRange, ProxyProtocol, TlsVersion};

use crate::action::{self, Action, TargetSpec};
use crate::http::config::Edits;
use crate::http::matching::HeaderMatch;
use crate::matcher;
pub(crate) use turnout_plugin_sdk::config::kind;

pub(crate) type Result<T, E = InitError> = std::result::Result<T, E>;

/// Route names longer than this are refused (the host's limit).
const MAX_NAME: usize = 256;

/// One checked route.
#[derive(Debug)]
pub(crate) struct Route {
    /// `name`, or `route-<index>`.
    pub(crate) name: String,
    /// `priority` (missing = 0); higher is tried first.
    pub(crate) priority: i64,
    /// `enabled: false` routes are neither listened for nor matched.
    pub(crate) enabled: bool,
    /// `match.ports`; never empty.
    pub(crate) ports: Vec<PortRange>,
    /// `match.domains`; empty = every domain (and no SNI needed).
    pub(crate) domains: Vec<DomainPattern>,
    /// `match.clientIp`.
    pub(crate) client_ip: Option<IpList>,
    /// `match.tlsVersion`; empty = any connection, TLS or not.
    pub(crate) tls_versions: Vec<TlsVersion>,
    /// `match.path` (HTTP routes).
    pub(crate) path: Option<PathPattern>,
    /// `match.headers` (HTTP routes): name → exact value or `/regex/`.
    pub(crate) headers: Vec<HeaderMatch>,
    /// `match.protocol`: how a terminated route is served, or whether a
    /// plain one is HTTP; `None` when not given.
    pub(crate) protocol: Option<Protocol>,
    /// Route-level `headers`: edits on requests and responses.
    pub(crate) edits: Edits,
    /// `action`.
    pub(crate) action: Action,
    /// `security`: limits and client lists.
    pub(crate) security: action::Security,
}

/// `match.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Tcp,
    Http,
}

impl Route {
    /// A plaintext route using an HTTP-only key serves requests only, never
    /// a connection: at L4 it would bypass its own path, auth or redirect.
    /// (A terminate route is still chosen at L4, by SNI, to be terminated.)
    pub(crate) fn http_only(&self) -> bool {
        self.action.tls.is_none() && self.http_feature().is_some()
    }

    /// The first key that only means something per HTTP request, as its
    /// path under the route (`match.path`, `security.basicAuth`, …).
    pub(crate) fn http_feature(&self) -> Option<&'static str> {
        let security = &self.security;
        [
            (self.path.is_some(), "match.path"),
            (!self.headers.is_empty(), "match.headers"),
            (!self.edits.is_empty(), "headers"),
            (!self.action.kind.is_forward(), "action.type"),
            (security.basic_auth.is_some(), "security.basicAuth"),
            (security.rate_limit.is_some(), "security.rateLimit"),
        ]
        .into_iter()
        .find_map(|(used, key)| used.then_some(key))
    }

    /// The host must read the ClientHello on this route's ports.
    pub(crate) fn needs_client_hello(&self) -> bool {
        self.action.tls.is_some() || !self.domains.is_empty() || !self.tls_versions.is_empty()
    }

    /// How many of `domains`, `clientIp`, `tlsVersion` the route sets.
    pub(crate) fn criteria(&self) -> u8 {
        u8::from(!self.domains.is_empty())
            + u8::from(self.client_ip.is_some())
            + u8::from(!self.tls_versions.is_empty())
    }
}

/// `Err` with `path: message`.
pub(crate) fn err<T>(path: impl Display, message: impl Display) -> Result<T> {
    Err(InitError::new(format!("{path}: {message}")))
}

/// Reads the object at `path` into `T` (which denies unknown fields), after
/// refusing the `unsupported` SmartProxy keys by name.
pub(crate) fn strict<'a, T: Deserialize<'a>>(
    v: &'a Value,
    path: &str,
    unsupported: &[&str],
) -> Result<T> {
    let Value::Object(map) = v else {
        return err(path, format_args!("must be an object, got {}", kind(v)));
    };
    if let Some(key) = map.keys().find(|k| unsupported.contains(&k.as_str())) {
        return err(format_args!("{path}.{key}"), "not supported by Turnout");
    }
    T::deserialize(v).map_err(|e| {
        InitError::new(format!(
            "{path}: {}",
            turnout_plugin_sdk::config::suggest_field(&e.to_string())
        ))
    })
}

/// A string, or a non-empty list of strings.
pub(crate) fn strings<'a>(v: &'a Value, path: &str) -> Result<Vec<&'a str>> {
    let items: Vec<&Value> = match v {
        Value::Array(list) if list.is_empty() => return err(path, "empty"),
        Value::Array(list) => list.iter().collect(),
        one => vec![one],
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) => Ok(s.as_str()),
            other => err(path, format_args!("expected a string, got {}", kind(other))),
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default, deserialize_with = "route_list")]
    routes: Vec<Route>,
    #[serde(default)]
    defaults: Option<Value>,
    /// Global default for routes without `action.sendProxyProtocol`.
    #[serde(default)]
    send_proxy_protocol: Option<Value>,
    /// SmartProxy's `allowSessionTicket` (default true).
    #[serde(default)]
    allow_session_ticket: Option<bool>,
}

/// What `init` reads: the routes and the proxy-wide options they need.
pub(crate) struct Parsed {
    pub(crate) routes: Vec<Route>,
    /// `false`: a TLS resumption without SNI is refused.
    pub(crate) allow_session_ticket: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    target: Option<Value>,
    /// The guard plugin's.
    #[serde(rename = "security")]
    _security: Option<IgnoredAny>,
}

/// Reads the plugin config `{"routes": [...], "defaults": {...} | null}`.
pub(crate) fn parse(config: &str) -> Result<Parsed> {
    let raw: RawConfig = serde_json::from_str(config).map_err(|e| {
        let text = e.to_string();
        let at = format!(" at line {} column {}", e.line(), e.column());
        match text.strip_suffix(&at) {
            // A route's own error already names its path.
            Some(message) if message.starts_with("routes[") => InitError::new(message),
            _ => InitError::new(format!("routes config: {text}")),
        }
    })?;
    let default_target: Option<TargetSpec> = match &raw.defaults {
        None | Some(Value::Null) => None,
        Some(v) => {
            let d: RawDefaults = strict(v, "defaults", &["preserveSourceIP"])?;
            d.target
                .as_ref()
                .map(|t| action::target(t, "defaults.target"))
                .transpose()?
        }
    };
    let global_pp = match &raw.send_proxy_protocol {
        Some(v) => action::proxy_protocol(v, "sendProxyProtocol")?,
        None => ProxyProtocol::None,
    };
    let mut routes = raw.routes;
    for (i, route) in routes.iter_mut().enumerate() {
        let action = &mut route.action;
        // Redirect and static routes answer themselves.
        if action.kind.is_forward() && !action.has_targets() {
            match &default_target {
                Some(t) => action.set_targets(vec![t.clone()]),
                None => {
                    return err(
                        format_args!("routes[{i}].action"),
                        "has no targets (and defaults.target is not set)",
                    );
                }
            }
        }
        action.proxy_protocol.get_or_insert(global_pp);
    }
    Ok(Parsed {
        routes,
        allow_session_ticket: raw.allow_session_ticket.unwrap_or(true),
    })
}

/// Reads `routes` element by element, checking each as it arrives. Every
/// route is checked: the error lists each bad route's problem, one
/// `routes[i]…: message` per line, so one run shows them all.
fn route_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Route>, D::Error> {
    struct List;
    impl<'de> Visitor<'de> for List {
        type Value = Vec<Route>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of routes")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Route>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            let mut problems: Vec<String> = Vec::new();
            let mut i = 0;
            while let Some(v) = seq.next_element::<Value>()? {
                match parse_route(i, &v) {
                    Ok(route) => out.push(route),
                    Err(e) => problems.push(e.0),
                }
                i += 1;
            }
            if problems.is_empty() {
                Ok(out)
            } else {
                Err(A::Error::custom(problems.join("\n")))
            }
        }
    }
    d.deserialize_seq(List)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<Value>,
    priority: Option<Value>,
    #[serde(rename = "match")]
    matches: Option<Value>,
    action: Option<Value>,
    security: Option<Value>,
    enabled: Option<Value>,
    headers: Option<Value>,
    // SmartProxy's metadata, accepted and ignored.
    #[serde(rename = "id")]
    _id: Option<IgnoredAny>,
    #[serde(rename = "description")]
    _description: Option<IgnoredAny>,
    #[serde(rename = "tags")]
    _tags: Option<IgnoredAny>,
}

fn parse_route(i: usize, v: &Value) -> Result<Route> {
    let at = format!("routes[{i}]");
    let raw: RawRoute = strict(v, &at, &[])?;
    let name = match &raw.name {
        None => format!("route-{i}"),
        Some(Value::String(s))
            if !s.trim().is_empty() && s.len() <= MAX_NAME && !s.chars().any(char::is_control) =>
        {
            s.clone()
        }
        Some(Value::String(_)) => {
            return err(
                format_args!("{at}.name"),
                format_args!("must be 1-{MAX_NAME} bytes without control characters"),
            );
        }
        Some(other) => {
            return err(
                format_args!("{at}.name"),
                format_args!("must be a string, got {}", kind(other)),
            );
        }
    };
    let priority = match &raw.priority {
        None => 0,
        Some(p) => match p.as_i64() {
            Some(n) => n,
            None => return err(format_args!("{at}.priority"), "must be a whole number"),
        },
    };
    let enabled = match &raw.enabled {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return err(
                format_args!("{at}.enabled"),
                format_args!("must be true or false, got {}", kind(other)),
            );
        }
    };
    let Some(m) = &raw.matches else {
        return err(at, "has no match (every route needs match.ports)");
    };
    let mut route = matcher::parse_match(m, &format!("{at}.match"))?;
    let Some(a) = &raw.action else {
        return err(at, "has no action");
    };
    route.action = action::parse(a, &format!("{at}.action"))?;
    if let Some(s) = &raw.security {
        route.security = action::security(s, &format!("{at}.security"))?;
    }
    if let Some(h) = &raw.headers {
        route.edits = crate::http::config::edits(h, &format!("{at}.headers"))?;
    }
    route.name = name;
    route.priority = priority;
    route.enabled = enabled;
    Ok(route)
}
