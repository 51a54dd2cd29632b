//! Reading the tenant limiter's JSON config; every error names its key
//! path (`tenants[2].domains[0]: must not be empty`).

use serde_json::Value;
use turnout_plugin_sdk::config::{
    alert, domain, error_at, field as get, kind, list, number, string, unknown_keys,
};
use turnout_plugin_sdk::matching::normalize_domain;
use turnout_plugin_sdk::prelude::*;

const KEYS: [&str; 8] = [
    "tenants", "suffix", "limit", "windowMs", "unknown", "ports", "alert", "reason",
];
const TENANT_KEYS: [&str; 3] = ["name", "domains", "limit"];
/// Longest tenant name: keeps store keys well under the host's 256 bytes.
pub(crate) const MAX_NAME: usize = 64;
/// One day.
const MAX_WINDOW_MS: u64 = 86_400_000;

/// One configured tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tenant {
    pub(crate) name: String,
    pub(crate) domains: Vec<DomainPattern>,
    /// Overrides the global limit; 0 = unlimited.
    pub(crate) limit: Option<u64>,
}

/// What to do with a connection that belongs to no tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// No opinion: the next plugin decides.
    Pass,
    /// Refuse it.
    Reject,
    /// Count every such connection against one shared tenant.
    Limit,
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) tenants: Vec<Tenant>,
    /// Normalised, without a leading dot.
    pub(crate) suffix: Option<String>,
    /// 0 = unlimited.
    pub(crate) limit: u64,
    pub(crate) window_ms: u64,
    pub(crate) unknown: Unknown,
    /// Empty: every port.
    pub(crate) ports: Vec<u16>,
    pub(crate) alert: Option<TlsAlert>,
    pub(crate) reason: String,
}

/// Whether `name` can be a tenant name: what a DNS label may hold, plus `_`
/// and `.`, so names from the config and from SNI labels share one space
/// and never collide with the `*` of unknown clients.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn tenant(v: &Value, path: &str) -> Result<Tenant, InitError> {
    let Value::Object(map) = v else {
        return Err(error_at(
            path,
            format_args!("expected an object, got {}", kind(v)),
        ));
    };
    unknown_keys(map, &format!("{path}."), &TENANT_KEYS)?;
    let at = |key: &str| format!("{path}.{key}");
    let name = match get(map, "name") {
        Some(v) => string(v, &at("name"))?,
        None => return Err(error_at(at("name"), "required")),
    };
    if !valid_name(name) {
        return Err(error_at(
            at("name"),
            format_args!(
                "{name:?} is not a tenant name (letters, digits, '-', '_', '.'; at most {MAX_NAME})"
            ),
        ));
    }
    let domains = match get(map, "domains") {
        Some(v) => list(v, &at("domains"), domain)?,
        None => return Err(error_at(at("domains"), "required")),
    };
    let limit = match get(map, "limit") {
        Some(v) => Some(number(v, &at("limit"), 0, u64::from(u32::MAX))?),
        None => None,
    };
    Ok(Tenant {
        // Lower-cased, like the SNI labels the suffix rule yields.
        name: name.to_ascii_lowercase(),
        domains,
        limit,
    })
}

fn suffix(v: &Value) -> Result<String, InitError> {
    let text = string(v, "suffix")?;
    let s = normalize_domain(text);
    let s = s.trim_start_matches('.');
    let label_ok =
        |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !s.split('.').all(label_ok) {
        return Err(error_at(
            "suffix",
            format_args!("{text:?} is not a domain name (no wildcards)"),
        ));
    }
    Ok(s.to_owned())
}

fn unknown(v: &Value) -> Result<Unknown, InitError> {
    match string(v, "unknown")? {
        "pass" => Ok(Unknown::Pass),
        "reject" => Ok(Unknown::Reject),
        "limit" => Ok(Unknown::Limit),
        other => Err(error_at(
            "unknown",
            format_args!("{other:?} is not one of \"pass\", \"reject\", \"limit\""),
        )),
    }
}

/// Reads and checks the config text.
pub(crate) fn parse(text: &str) -> Result<Config, InitError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| InitError::new(format!("tenant-limit config: {e}")))?;
    let Value::Object(map) = &value else {
        return Err(InitError::new(format!(
            "tenant-limit config: expected an object, got {}",
            kind(&value)
        )));
    };
    unknown_keys(map, "", &KEYS)?;
    let tenants = match get(map, "tenants") {
        Some(v) => list(v, "tenants", tenant)?,
        None => Vec::new(),
    };
    if let Some((i, t)) = tenants
        .iter()
        .enumerate()
        .find(|(i, t)| tenants[..*i].iter().any(|u| u.name == t.name))
    {
        return Err(error_at(
            format_args!("tenants[{i}].name"),
            format_args!(
                "{:?} is listed twice (give one entry all its domains)",
                t.name
            ),
        ));
    }
    let suffix = get(map, "suffix").map(suffix).transpose()?;
    if tenants.is_empty() && suffix.is_none() {
        return Err(InitError::new(
            "tenant-limit config: set \"tenants\", \"suffix\" or both (how tenants are told apart)",
        ));
    }
    let limit = match get(map, "limit") {
        Some(v) => number(v, "limit", 0, u64::from(u32::MAX))?,
        None => return Err(error_at("limit", "required (0 for unlimited)")),
    };
    Ok(Config {
        tenants,
        suffix,
        limit,
        window_ms: get(map, "windowMs")
            .map_or(Ok(60_000), |v| number(v, "windowMs", 1, MAX_WINDOW_MS))?,
        unknown: get(map, "unknown").map_or(Ok(Unknown::Pass), unknown)?,
        ports: match get(map, "ports") {
            Some(v) => list(v, "ports", |p, path| {
                // The range check makes the conversion infallible.
                number(p, path, 1, 65_535).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
            })?,
            None => Vec::new(),
        },
        alert: get(map, "alert").map_or(Ok(Some(TlsAlert::AccessDenied)), |v| alert(v, "alert"))?,
        reason: match get(map, "reason") {
            Some(v) => string(v, "reason")?.to_owned(),
            None => "tenant-rate-limit".to_owned(),
        },
    })
}
