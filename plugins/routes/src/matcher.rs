//! A route's `match`: ports, domains, client IPs, TLS versions, and the
//! HTTP-only `path` and `headers`.

use serde::Deserialize;
use serde_json::Value;
use turnout_plugin_sdk::matching::{DomainPattern, IpList, PathPattern};
use turnout_plugin_sdk::{PortRange, TlsVersion};

use crate::action::Action;
use crate::config::{Protocol, Result, Route, err, kind, strict, strings};
use crate::http::matching::HeaderMatch;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMatch {
    ports: Option<Value>,
    domains: Option<Value>,
    path: Option<Value>,
    client_ip: Option<Value>,
    tls_version: Option<Value>,
    headers: Option<Value>,
    /// `"tcp"` or `"http"`: how a terminated route is served (the host
    /// reads it too), or that a plain route is HTTP.
    protocol: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    from: Value,
    to: Value,
}

/// Reads `match` into a route that has no name or action yet.
pub(crate) fn parse_match(v: &Value, at: &str) -> Result<Route> {
    let raw: RawMatch = strict(v, at, &[])?;
    let Some(ports_value) = &raw.ports else {
        return err(at, "has no ports (every route needs match.ports)");
    };
    let ports = ports(ports_value, &format!("{at}.ports"))?;
    let domains = match &raw.domains {
        None => Vec::new(),
        Some(d) => {
            let path = format!("{at}.domains");
            strings(d, &path)?
                .into_iter()
                .map(|s| DomainPattern::parse(s).or_else(|e| err(&path, e)))
                .collect::<Result<_>>()?
        }
    };
    let client_ip = match &raw.client_ip {
        None => None,
        Some(c) => {
            let path = format!("{at}.clientIp");
            Some(IpList::parse(&strings(c, &path)?).or_else(|e| err(&path, e))?)
        }
    };
    let tls_versions = match &raw.tls_version {
        None => Vec::new(),
        Some(t) => {
            let path = format!("{at}.tlsVersion");
            strings(t, &path)?
                .into_iter()
                .map(|s| {
                    TlsVersion::parse(s).map_or_else(
                        || {
                            err(
                                &path,
                                format_args!(
                                    "{s:?} is not one of SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3"
                                ),
                            )
                        },
                        Ok,
                    )
                })
                .collect::<Result<_>>()?
        }
    };
    let path = match &raw.path {
        None => None,
        Some(Value::String(p)) => {
            Some(PathPattern::parse(p).or_else(|e| err(format_args!("{at}.path"), e))?)
        }
        Some(other) => {
            return err(
                format_args!("{at}.path"),
                format_args!("must be a string, got {}", kind(other)),
            );
        }
    };
    let headers = headers(raw.headers.as_ref(), at)?;
    let protocol = protocol(raw.protocol.as_ref(), at)?;
    Ok(Route {
        name: String::new(),
        priority: 0,
        enabled: true,
        ports,
        domains,
        client_ip,
        tls_versions,
        path,
        headers,
        protocol,
        edits: crate::http::config::Edits::default(),
        action: Action::default(),
        security: crate::action::Security::default(),
    })
}

/// A port, a list of ports, or a list of `{from, to}` ranges (mixed lists too).
fn ports(v: &Value, at: &str) -> Result<Vec<PortRange>> {
    let items: Vec<&Value> = match v {
        Value::Array(list) if list.is_empty() => return err(at, "empty"),
        Value::Array(list) => list.iter().collect(),
        one => vec![one],
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Number(_) => Ok(PortRange::single(port(item, at)?)),
            Value::Object(_) => {
                let r: RawRange = strict(item, at, &[])?;
                let (from, to) = (port(&r.from, at)?, port(&r.to, at)?);
                if from > to {
                    return err(at, format_args!("range {from}-{to} starts after it ends"));
                }
                Ok(PortRange { from, to })
            }
            other => err(
                at,
                format_args!(
                    "expected a port number or a {{\"from\", \"to\"}} range, got {}",
                    kind(other)
                ),
            ),
        })
        .collect()
}

/// A port number, 1-65535.
pub(crate) fn port(v: &Value, at: &str) -> Result<u16> {
    match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
        Some(p) if p != 0 => Ok(p),
        _ if v.is_number() => err(at, format_args!("port {v} is out of range 1-65535")),
        _ => err(at, format_args!("a port is a number, got {}", kind(v))),
    }
}

/// `match.headers`: name → exact value or `/regex/`.
fn headers(headers: Option<&Value>, at: &str) -> Result<Vec<HeaderMatch>> {
    match headers {
        None => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, value)| match value {
                Value::String(s) => HeaderMatch::parse(name, s, &format!("{at}.headers.{name}")),
                other => err(
                    format_args!("{at}.headers.{name}"),
                    format_args!("must be a string, got {}", kind(other)),
                ),
            })
            .collect(),
        Some(other) => err(
            format_args!("{at}.headers"),
            format_args!("must be an object, got {}", kind(other)),
        ),
    }
}

/// `match.protocol`: `"tcp"` or `"http"`.
fn protocol(protocol: Option<&Value>, at: &str) -> Result<Option<Protocol>> {
    match protocol {
        None => Ok(None),
        Some(Value::String(s)) if s == "tcp" => Ok(Some(Protocol::Tcp)),
        Some(Value::String(s)) if s == "http" => Ok(Some(Protocol::Http)),
        Some(other) => err(
            format_args!("{at}.protocol"),
            format_args!("must be \"tcp\" or \"http\", got {other}"),
        ),
    }
}
