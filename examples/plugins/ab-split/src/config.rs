//! Reading the A/B split's JSON config; every error names its key path
//! (`b.targets[0].port: 0 is out of range 1-65535`).

use serde_json::{Map, Value};
use turnout_plugin_sdk::config::{self, error_at, field as get, kind, list, number, unknown_keys};
use turnout_plugin_sdk::prelude::*;

const KEYS: [&str; 7] = ["route", "port", "a", "b", "cookie", "header", "percentB"];

/// The checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) route: String,
    pub(crate) port: u16,
    pub(crate) a: Vec<Target>,
    pub(crate) b: Vec<Target>,
    /// A cookie name (a token; case-sensitive, as cookie names are).
    pub(crate) cookie: String,
    /// A header name, lower-cased.
    pub(crate) header: String,
    /// 0..=100.
    pub(crate) percent_b: u8,
}

fn required<'a>(map: &'a Map<String, Value>, key: &str) -> Result<&'a Value, InitError> {
    get(map, key).ok_or_else(|| error_at(key, "required"))
}

fn port(v: &Value, path: &str) -> Result<u16, InitError> {
    // The range check makes the conversion infallible.
    number(v, path, 1, 65_535).map(|p| u16::try_from(p).unwrap_or(u16::MAX))
}

fn object<'a>(v: &'a Value, path: &str, want: &str) -> Result<&'a Map<String, Value>, InitError> {
    match v {
        Value::Object(map) => Ok(map),
        other => Err(error_at(
            path,
            format_args!("expected an object {want}, got {}", kind(other)),
        )),
    }
}

fn target(v: &Value, path: &str) -> Result<Target, InitError> {
    let map = object(v, path, "{\"host\", \"port\"}")?;
    unknown_keys(map, &format!("{path}."), &["host", "port"])?;
    let at = |key: &str| format!("{path}.{key}");
    let host = get(map, "host").ok_or_else(|| error_at(at("host"), "required"))?;
    let host = config::string(host, &at("host"))?;
    let port_value = get(map, "port").ok_or_else(|| error_at(at("port"), "required"))?;
    Ok(Target::new(host, port(port_value, &at("port"))?))
}

/// One side: `{"targets": [{"host", "port"}, …]}`, an object so that a side
/// can grow settings of its own without changing the shape.
fn side(map: &Map<String, Value>, key: &str) -> Result<Vec<Target>, InitError> {
    let side = object(required(map, key)?, key, "{\"targets\": [...]}")?;
    unknown_keys(side, &format!("{key}."), &["targets"])?;
    let path = format!("{key}.targets");
    let targets = get(side, "targets").ok_or_else(|| error_at(&path, "required"))?;
    list(targets, &path, target)
}

/// An RFC 9110 token: what both header and cookie names must be.
fn token(v: &Value, path: &str, what: &str) -> Result<String, InitError> {
    let s = config::string(v, path)?;
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !s.bytes().all(tchar) {
        return Err(error_at(
            path,
            format_args!("{s:?} is not {what} (letters, digits and !#$%&'*+-.^_`|~)"),
        ));
    }
    Ok(s.to_owned())
}

/// Reads and checks the config text.
pub(crate) fn parse(text: &str) -> Result<Config, InitError> {
    let value: Value = serde_json::from_str(text).map_err(|e| error_at("ab-split config", e))?;
    let Value::Object(map) = &value else {
        return Err(error_at(
            "ab-split config",
            format_args!("expected an object, got {}", kind(&value)),
        ));
    };
    unknown_keys(map, "", &KEYS)?;
    let route = config::string(required(map, "route")?, "route")?.to_owned();
    let port = port(required(map, "port")?, "port")?;
    let (a, b) = (side(map, "a")?, side(map, "b")?);
    let cookie = match get(map, "cookie") {
        Some(v) => token(v, "cookie", "a cookie name")?,
        None => "ab".to_owned(),
    };
    let header = match get(map, "header") {
        Some(v) => token(v, "header", "a header name")?.to_ascii_lowercase(),
        None => "x-ab".to_owned(),
    };
    let percent_b = match get(map, "percentB") {
        // The range check makes the conversion infallible.
        Some(v) => u8::try_from(number(v, "percentB", 0, 100)?).unwrap_or(100),
        None => 50,
    };
    Ok(Config {
        route,
        port,
        a,
        b,
        cookie,
        header,
        percent_b,
    })
}
