//! Reading the canary's JSON config; every error names its key path
//! (`primary[1].port: 70000 is out of range 1-65535`).

use serde_json::{Map, Value};
use turnout_plugin_sdk::config::{self, domain, error_at, field as get, kind, list, number};
use turnout_plugin_sdk::prelude::*;

const KEYS: [&str; 9] = [
    "ports",
    "tls",
    "domains",
    "route",
    "canaryRoute",
    "primary",
    "canary",
    "percent",
    "salt",
];

/// The checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) ports: Vec<u16>,
    pub(crate) tls: bool,
    /// Empty: every connection on `ports`.
    pub(crate) domains: Vec<DomainPattern>,
    pub(crate) route: String,
    pub(crate) canary_route: String,
    pub(crate) primary: Vec<Target>,
    pub(crate) canary: Vec<Target>,
    /// 0..=100.
    pub(crate) percent: u8,
    pub(crate) salt: String,
}

fn required<'a>(map: &'a Map<String, Value>, key: &str) -> Result<&'a Value, InitError> {
    get(map, key).ok_or_else(|| error_at(key, "required"))
}

fn string(v: &Value, path: &str) -> Result<String, InitError> {
    config::string(v, path).map(str::to_owned)
}

fn port(v: &Value, path: &str) -> Result<u16, InitError> {
    // The range check makes the conversion infallible.
    number(v, path, 1, 65_535).map(|p| u16::try_from(p).unwrap_or(u16::MAX))
}

fn target(v: &Value, path: &str) -> Result<Target, InitError> {
    let Value::Object(map) = v else {
        return Err(error_at(
            path,
            format_args!("expected an object {{\"host\", \"port\"}}, got {}", kind(v)),
        ));
    };
    if let Some(key) = map.keys().find(|k| !["host", "port"].contains(&k.as_str())) {
        return Err(error_at(
            format_args!("{path}.{key}"),
            "unknown key (expected host, port)",
        ));
    }
    let at = |key: &str| format!("{path}.{key}");
    let host = match get(map, "host") {
        Some(h) => string(h, &at("host"))?,
        None => return Err(error_at(at("host"), "required")),
    };
    let port = match get(map, "port") {
        Some(p) => port(p, &at("port"))?,
        None => return Err(error_at(at("port"), "required")),
    };
    Ok(Target::new(host, port))
}

/// Reads and checks the config text.
pub(crate) fn parse(text: &str) -> Result<Config, InitError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| InitError::new(format!("canary config: {e}")))?;
    let Value::Object(map) = &value else {
        return Err(InitError::new(format!(
            "canary config: expected an object, got {}",
            kind(&value)
        )));
    };
    if let Some(key) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(error_at(
            key,
            format_args!("unknown key (expected one of {})", KEYS.join(", ")),
        ));
    }
    let ports = match required(map, "ports")? {
        one @ Value::Number(_) => vec![port(one, "ports")?],
        many => list(many, "ports", port)?,
    };
    let tls = match get(map, "tls") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(error_at(
                "tls",
                format_args!("expected true or false, got {}", kind(other)),
            ));
        }
    };
    let domains = match get(map, "domains") {
        None => Vec::new(),
        Some(v) => list(v, "domains", domain)?,
    };
    if !domains.is_empty() && !tls {
        return Err(error_at(
            "domains",
            "matching on SNI needs \"tls\": true (plain connections carry no SNI)",
        ));
    }
    let route = string(required(map, "route")?, "route")?;
    let canary_route = match get(map, "canaryRoute") {
        Some(v) => string(v, "canaryRoute")?,
        None => format!("{route}-canary"),
    };
    let percent = number(required(map, "percent")?, "percent", 0, 100)?;
    let salt = match get(map, "salt") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(error_at(
                "salt",
                format_args!("expected a string, got {}", kind(other)),
            ));
        }
    };
    Ok(Config {
        ports,
        tls,
        domains,
        primary: list(required(map, "primary")?, "primary", target)?,
        canary: list(required(map, "canary")?, "canary", target)?,
        route,
        canary_route,
        percent: u8::try_from(percent).unwrap_or(100),
        salt,
    })
}
