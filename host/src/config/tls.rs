//! The part of each route the host itself acts on when it terminates TLS:
//! `action.tls` (mode, certificate, versions, upstream verification) and
//! `match.protocol`, plus the top-level `defaultCertificate`. Read from the
//! route JSON the `routes` plugin also reads; the plugin decides which route
//! a connection takes, the host how to terminate it.
//!
//! Only the shape is checked here (every problem collected with its key
//! path); reading the PEM files and matching keys to certificates is
//! `tls/`'s, so that a reload can re-read them.

use std::path::PathBuf;

use serde_json::{Map, Value};
use turnout_plugin_sdk::config::kind;

use super::ConfigError;

/// PEM given inline or as a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    /// The PEM text itself (it starts with `-----BEGIN`).
    Text(String),
    /// A file holding it.
    File(PathBuf),
}

impl Pem {
    /// SmartProxy's convention: text starting with `-----BEGIN` is PEM, any
    /// other text is a path.
    fn from_text(s: &str) -> Pem {
        if s.trim_start().starts_with("-----BEGIN") {
            Pem::Text(s.to_owned())
        } else {
            Pem::File(PathBuf::from(s))
        }
    }

    /// For messages: the file, or "inline PEM".
    pub fn describe(&self) -> String {
        match self {
            Pem::Text(_) => "inline PEM".to_owned(),
            Pem::File(p) => p.display().to_string(),
        }
    }
}

/// A certificate chain and its key (`certificate` objects, and
/// `defaultCertificate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSource {
    /// The chain (leaf first; more certificates in it are intermediates).
    pub cert: Pem,
    /// The private key.
    pub key: Pem,
    /// More intermediates, appended to the chain.
    pub ca: Option<Pem>,
    /// Where in the config it was given (`routes[2].action.tls.certificate`).
    pub at: String,
}

/// The TLS versions a terminated route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Versions {
    /// TLS 1.2.
    pub tls12: bool,
    /// TLS 1.3.
    pub tls13: bool,
}

impl Versions {
    /// Both, the default.
    pub const ALL: Versions = Versions {
        tls12: true,
        tls13: true,
    };
}

/// How a terminated route's decrypted stream is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Relayed as bytes (stunnel-style).
    Tcp,
    /// Served as HTTP (the default for terminated routes, as in
    /// SmartProxy).
    Http,
}

/// `action.tls.upstream`, for `terminate-and-reencrypt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Trust roots added to the system's.
    pub ca: Option<Pem>,
    /// Verify the backend's certificate (the default).
    pub verify: bool,
    /// The name expected in the backend's certificate (default: the
    /// target host if it is a name, else the client's SNI).
    pub server_name: Option<String>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            ca: None,
            verify: true,
            server_name: None,
        }
    }
}

/// A route the host terminates TLS for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRoute {
    /// Its position in `routes`.
    pub index: usize,
    /// The route's name (`name`, or `route-<index>` as the `routes` plugin
    /// names it).
    pub name: String,
    /// `false`: terminate; `true`: terminate and re-encrypt.
    pub reencrypt: bool,
    /// `match.domains` as written (lower-cased).
    pub domains: Vec<String>,
    /// `match.ports` as written (the ports this route's certificate serves
    /// on; `None` when the value could not be read, which the `routes`
    /// plugin reports).
    pub ports: Vec<(u16, u16)>,
    /// `action.tls.certificate`; `None` when absent or `"auto"`.
    pub certificate: Option<CertSource>,
    /// `certificate: "auto"`: its names' certificates come from ACME.
    pub acme: bool,
    /// `action.tls.versions`.
    pub versions: Versions,
    /// `match.protocol`.
    pub protocol: Protocol,
    /// `action.tls.upstream`.
    pub upstream: Upstream,
}

/// Collects the terminated routes out of `routes`, and every problem.
pub(super) fn routes(routes: &[Value], problems: &mut Vec<ConfigError>) -> Vec<TlsRoute> {
    let mut out = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let Some(route) = route.as_object() else {
            continue;
        };
        if let Some(r) = route_tls(i, route, problems) {
            out.push(r);
        }
    }
    out
}

fn route_tls(i: usize, route: &Map<String, Value>, p: &mut Vec<ConfigError>) -> Option<TlsRoute> {
    let at = format!("routes[{i}]");
    let tls = route.get("action")?.as_object()?.get("tls")?.as_object()?;
    let reencrypt = match tls.get("mode").and_then(Value::as_str) {
        Some("terminate") => false,
        Some("terminate-and-reencrypt") => true,
        // Passthrough, or a bad mode the `routes` plugin reports.
        _ => return None,
    };
    let at_tls = format!("{at}.action.tls");
    let name = match route.get("name").and_then(Value::as_str) {
        Some(n) => n.to_owned(),
        None => format!("route-{i}"),
    };
    let matcher = route.get("match").and_then(Value::as_object);
    let domains = match matcher.and_then(|m| m.get("domains")) {
        Some(Value::String(s)) => vec![s.trim().to_ascii_lowercase()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(|s| s.trim().to_ascii_lowercase())
            .collect(),
        _ => Vec::new(),
    };
    let ports = matcher
        .and_then(|m| m.get("ports"))
        .map(port_ranges)
        .unwrap_or_default();
    let protocol = match matcher.and_then(|m| m.get("protocol")) {
        None => Protocol::Http,
        Some(Value::String(s)) if s == "tcp" => Protocol::Tcp,
        Some(Value::String(s)) if s == "http" => Protocol::Http,
        Some(other) => {
            p.push(ConfigError::new(
                format!("{at}.match.protocol"),
                format!("must be \"tcp\" or \"http\", got {other}"),
            ));
            Protocol::Http
        }
    };
    // No certificate: the route loads (a warning says so) and its
    // handshakes fail with `no-certificate` unless another certificate
    // covers the name. "auto": ACME's (`acme/`).
    // A disabled route (`enabled: false`) has no names to order.
    let acme = tls.get("certificate").and_then(Value::as_str) == Some("auto")
        && route.get("enabled") != Some(&Value::Bool(false));
    let certificate = match tls.get("certificate") {
        None => None,
        Some(Value::String(s)) if s == "auto" => None,
        Some(v) => cert_source(v, &format!("{at_tls}.certificate"), p),
    };
    let versions = match tls.get("versions") {
        None => Versions::ALL,
        Some(v) => versions(v, &format!("{at_tls}.versions"), p),
    };
    let upstream = match tls.get("upstream") {
        None => Upstream::default(),
        Some(v) => upstream(v, &format!("{at_tls}.upstream"), p),
    };
    if upstream != Upstream::default() && !reencrypt {
        p.push(ConfigError::new(
            format!("{at_tls}.upstream"),
            "only applies to mode \"terminate-and-reencrypt\"",
        ));
    }
    Some(TlsRoute {
        index: i,
        name,
        reencrypt,
        domains,
        ports,
        certificate,
        acme,
        versions,
        protocol,
        upstream,
    })
}

fn port_ranges(v: &Value) -> Vec<(u16, u16)> {
    let one = |v: &Value| -> Option<(u16, u16)> {
        match v {
            Value::Number(n) => {
                let p = u16::try_from(n.as_u64()?).ok()?;
                Some((p, p))
            }
            Value::Object(o) => {
                let from = u16::try_from(o.get("from")?.as_u64()?).ok()?;
                let to = u16::try_from(o.get("to")?.as_u64()?).ok()?;
                Some((from, to))
            }
            _ => None,
        }
    };
    match v {
        Value::Array(list) => list.iter().filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    }
}

/// A `{ cert, key, ca, certFile, keyFile }` object.
pub(super) fn cert_source(v: &Value, at: &str, p: &mut Vec<ConfigError>) -> Option<CertSource> {
    let Value::Object(o) = v else {
        p.push(ConfigError::new(
            at,
            format!("must be an object {{ \"cert\", \"key\" }}, got {}", kind(v)),
        ));
        return None;
    };
    for key in o.keys() {
        if !["cert", "key", "ca", "certFile", "keyFile"].contains(&key.as_str()) {
            p.push(ConfigError::new(
                format!("{at}.{key}"),
                "unknown key (expected cert, key, ca, certFile, keyFile)",
            ));
        }
    }
    let text = |key: &str, p: &mut Vec<ConfigError>| -> Option<String> {
        match o.get(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            other => {
                p.push(ConfigError::new(
                    format!("{at}.{key}"),
                    format!("must be a non-empty string, got {}", kind(other)),
                ));
                None
            }
        }
    };
    let pick = |inline: &str, file: &str, p: &mut Vec<ConfigError>| -> Option<Pem> {
        match (text(inline, p), text(file, p)) {
            (Some(_), Some(_)) => {
                p.push(ConfigError::new(
                    format!("{at}.{file}"),
                    format!("give {inline} or {file}, not both"),
                ));
                None
            }
            (Some(s), None) => Some(Pem::from_text(&s)),
            (None, Some(path)) => Some(Pem::File(PathBuf::from(path))),
            (None, None) => {
                p.push(ConfigError::new(
                    format!("{at}.{inline}"),
                    format!("required (PEM text or a file path; or {file})"),
                ));
                None
            }
        }
    };
    let cert = pick("cert", "certFile", p);
    let key = pick("key", "keyFile", p);
    let ca = text("ca", p).map(|s| Pem::from_text(&s));
    Some(CertSource {
        cert: cert?,
        key: key?,
        ca,
        at: at.to_owned(),
    })
}

fn versions(v: &Value, at: &str, p: &mut Vec<ConfigError>) -> Versions {
    let Value::Array(list) = v else {
        p.push(ConfigError::new(
            at,
            format!(
                "must be a list like [\"TLSv1.2\", \"TLSv1.3\"], got {}",
                kind(v)
            ),
        ));
        return Versions::ALL;
    };
    let mut out = Versions::default();
    for (i, item) in list.iter().enumerate() {
        match item.as_str() {
            Some("TLSv1.2") => out.tls12 = true,
            Some("TLSv1.3") => out.tls13 = true,
            _ => p.push(ConfigError::new(
                format!("{at}[{i}]"),
                format!(
                    "{item} is not one of \"TLSv1.2\", \"TLSv1.3\" (the versions rustls speaks)"
                ),
            )),
        }
    }
    if out == Versions::default() {
        p.push(ConfigError::new(at, "names no TLS version"));
        return Versions::ALL;
    }
    out
}

fn upstream(v: &Value, at: &str, p: &mut Vec<ConfigError>) -> Upstream {
    let mut out = Upstream::default();
    let Value::Object(o) = v else {
        p.push(ConfigError::new(
            at,
            format!("must be an object, got {}", kind(v)),
        ));
        return out;
    };
    for (key, value) in o {
        match (key.as_str(), value) {
            ("ca", Value::String(s)) if !s.trim().is_empty() => out.ca = Some(Pem::from_text(s)),
            ("verify", Value::Bool(b)) => out.verify = *b,
            ("serverName", Value::String(s)) if !s.trim().is_empty() => {
                let name = s.trim();
                match rustls::pki_types::ServerName::try_from(name) {
                    Ok(_) => out.server_name = Some(name.to_owned()),
                    Err(e) => p.push(ConfigError::new(
                        format!("{at}.serverName"),
                        format!("{name:?} is not a DNS name or IP address: {e}"),
                    )),
                }
            }
            ("ca" | "serverName", other) => p.push(ConfigError::new(
                format!("{at}.{key}"),
                format!("must be a non-empty string, got {}", kind(other)),
            )),
            ("verify", other) => p.push(ConfigError::new(
                format!("{at}.verify"),
                format!("must be true or false, got {}", kind(other)),
            )),
            _ => p.push(ConfigError::new(
                format!("{at}.{key}"),
                "unknown key (expected ca, verify, serverName)",
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(routes: Value) -> (Vec<TlsRoute>, Vec<String>) {
        let mut p = Vec::new();
        let list = routes.as_array().unwrap().clone();
        let r = super::routes(&list, &mut p);
        (r, p.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_terminated_route_reads_every_key() {
        let (r, problems) = read(json!([
            { "match": { "ports": 443 }, "action": { "tls": { "mode": "passthrough" } } },
            { "name": "app", "match": { "ports": [8443, { "from": 9000, "to": 9001 }], "domains": ["App.Example.com"], "protocol": "tcp" },
              "action": { "type": "forward", "tls": { "mode": "terminate-and-reencrypt",
                  "certificate": { "cert": "/etc/app.pem", "key": "-----BEGIN PRIVATE KEY-----\nx", "ca": "/etc/ca.pem" },
                  "versions": ["TLSv1.3"],
                  "upstream": { "verify": false, "serverName": "backend.internal" } } } }
        ]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(r.len(), 1);
        let app = &r[0];
        assert_eq!(app.name, "app");
        assert!(app.reencrypt);
        assert_eq!(app.domains, ["app.example.com"]);
        assert_eq!(app.ports, [(8443, 8443), (9000, 9001)]);
        assert_eq!(app.protocol, Protocol::Tcp);
        let c = app.certificate.as_ref().unwrap();
        assert_eq!(c.cert, Pem::File("/etc/app.pem".into()));
        assert!(matches!(c.key, Pem::Text(_)));
        assert_eq!(c.ca, Some(Pem::File("/etc/ca.pem".into())));
        assert_eq!(
            app.versions,
            Versions {
                tls12: false,
                tls13: true
            }
        );
        assert!(!app.upstream.verify);
        assert_eq!(
            app.upstream.server_name.as_deref(),
            Some("backend.internal")
        );
    }

    #[test]
    fn problems_name_their_key_path() {
        let (_, problems) = read(json!([
            { "match": { "ports": 1, "protocol": "udp" }, "action": { "tls": { "mode": "terminate",
                "certificate": { "cert": "a", "certFile": "b", "kee": "x" }, "versions": ["TLSv1.1"] } } },
            { "match": { "ports": 2 }, "action": { "tls": { "mode": "terminate" } } },
            { "match": { "ports": 3 }, "action": { "tls": { "mode": "terminate", "certificate": "auto",
                "upstream": { "verify": false } } } },
            { "match": { "ports": 4 }, "action": { "tls": { "mode": "terminate-and-reencrypt",
                "upstream": { "serverName": "not a name" } } } }
        ]));
        let want = [
            "routes[0].match.protocol",
            "routes[0].action.tls.certificate.kee",
            "routes[0].action.tls.certificate.certFile",
            "routes[0].action.tls.certificate.key",
            "routes[0].action.tls.versions[0]",
            "routes[2].action.tls.upstream",
            "routes[3].action.tls.upstream.serverName",
        ];
        for w in want {
            assert!(
                problems.iter().any(|p| p.starts_with(w)),
                "{w} missing from {problems:#?}"
            );
        }
        assert_eq!(problems.len(), want.len() + 1, "{problems:#?}");
    }
}
