//! Reading the maintenance plugin's JSON config; every error names its key
//! path (`windows[1].from: "25:00" is not a time of day (00:00 to 23:59)`).

use serde_json::{Map, Value};
use turnout_plugin_sdk::config::{
    alert, domain, error_at, field as get, kind, list, string, unknown_keys,
};
use turnout_plugin_sdk::prelude::*;

use crate::schedule::{self, Days, Window};

const KEYS: [&str; 6] = [
    "windows",
    "timezoneOffsetMinutes",
    "reason",
    "alert",
    "ports",
    "domains",
];
const WINDOW_KEYS: [&str; 3] = ["days", "from", "to"];
/// ±23:59; real zones are within -12:00 and +14:00.
const MAX_OFFSET: i64 = 23 * 60 + 59;

/// The checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) windows: Vec<Window>,
    pub(crate) offset_minutes: i16,
    pub(crate) reason: String,
    pub(crate) alert: Option<TlsAlert>,
    /// Empty: every port.
    pub(crate) ports: Vec<u16>,
    /// Empty: every connection, with or without SNI.
    pub(crate) domains: Vec<DomainPattern>,
}

fn port(v: &Value, path: &str) -> Result<u16, InitError> {
    match v.as_u64().map(u16::try_from) {
        Some(Ok(p)) if p != 0 => Ok(p),
        _ if v.is_number() => Err(error_at(path, format_args!("{v} is not a port 1-65535"))),
        _ => Err(error_at(
            path,
            format_args!("expected a port number, got {}", kind(v)),
        )),
    }
}

fn day(v: &Value, path: &str) -> Result<Days, InitError> {
    let name = string(v, path)?;
    Days::parse_one(name).ok_or_else(|| {
        let names: Vec<&str> = schedule::DAYS.iter().map(|(short, _)| *short).collect();
        error_at(
            path,
            format_args!("{name:?} is not a day ({})", names.join(", ")),
        )
    })
}

fn time(map: &Map<String, Value>, path: &str, key: &str) -> Result<u16, InitError> {
    let at = format!("{path}.{key}");
    let text = match get(map, key) {
        Some(v) => string(v, &at)?,
        None => return Err(error_at(at, "required")),
    };
    schedule::parse_time(text, key == "to").map_err(|e| error_at(&at, e))
}

fn window(v: &Value, path: &str) -> Result<Window, InitError> {
    let Value::Object(map) = v else {
        return Err(error_at(
            path,
            format_args!("expected an object, got {}", kind(v)),
        ));
    };
    unknown_keys(map, &format!("{path}."), &WINDOW_KEYS)?;
    let days = match get(map, "days") {
        None => Days::ALL,
        Some(v) => list(v, &format!("{path}.days"), day)?
            .into_iter()
            .fold(Days::NONE, Days::with),
    };
    let from = time(map, path, "from")?;
    let to = time(map, path, "to")?;
    if from == to {
        return Err(error_at(
            path,
            "from and to are equal (for a whole day use 00:00 to 24:00)",
        ));
    }
    Ok(Window { days, from, to })
}

fn offset(v: &Value) -> Result<i16, InitError> {
    match v.as_i64() {
        Some(m) if m.abs() <= MAX_OFFSET => Ok(i16::try_from(m).unwrap_or(0)),
        Some(m) => Err(error_at(
            "timezoneOffsetMinutes",
            format_args!("{m} is out of range -{MAX_OFFSET} to {MAX_OFFSET}"),
        )),
        None if v.is_number() => Err(error_at(
            "timezoneOffsetMinutes",
            format_args!("{v} is not a whole number of minutes"),
        )),
        None => Err(error_at(
            "timezoneOffsetMinutes",
            format_args!("expected a number, got {}", kind(v)),
        )),
    }
}

/// Reads and checks the config text.
pub(crate) fn parse(text: &str) -> Result<Config, InitError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| InitError::new(format!("maintenance config: {e}")))?;
    let Value::Object(map) = &value else {
        return Err(InitError::new(format!(
            "maintenance config: expected an object, got {}",
            kind(&value)
        )));
    };
    unknown_keys(map, "", &KEYS)?;
    let windows = match get(map, "windows") {
        // `[]` is allowed here: a deployed plugin with no window scheduled.
        Some(Value::Array(items)) if items.is_empty() => Vec::new(),
        Some(v) => list(v, "windows", window)?,
        None => return Err(error_at("windows", "required (a list; [] for none)")),
    };
    Ok(Config {
        windows,
        offset_minutes: get(map, "timezoneOffsetMinutes").map_or(Ok(0), offset)?,
        reason: match get(map, "reason") {
            Some(v) => string(v, "reason")?.to_owned(),
            None => "maintenance".to_owned(),
        },
        alert: get(map, "alert").map_or(Ok(Some(TlsAlert::AccessDenied)), |v| alert(v, "alert"))?,
        ports: match get(map, "ports") {
            Some(v) => list(v, "ports", port)?,
            None => Vec::new(),
        },
        domains: match get(map, "domains") {
            Some(v) => list(v, "domains", domain)?,
            None => Vec::new(),
        },
    })
}
