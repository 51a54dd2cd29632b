//! Helpers for reading a plugin's JSON configuration with errors that name
//! the key path, the way the default plugins and the host do: each reader
//! takes the value and its path and answers `path: what is wrong`.

use std::fmt::Display;

use crate::plugin::InitError;

pub use serde_json::Value;

/// How a JSON value is described in an error message: `"a string"`,
/// `"a list"`, …
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// An [`InitError`] reading `path: message`, e.g.
/// `routes[2].match.ports: port 0 is out of range 1-65535`.
pub fn error_at(path: impl Display, message: impl Display) -> InitError {
    InitError::new(format!("{path}: {message}"))
}

/// `key` of `map`, with JSON `null` read as absent.
pub fn field<'a>(map: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

/// `Err` naming the first key of `map` not in `known`: `{prefix}{key}:
/// unknown key (expected one of …)`; `prefix` is the object's path with
/// its trailing dot (`"windows[0]."`, or `""` at the top).
pub fn unknown_keys(
    map: &serde_json::Map<String, Value>,
    prefix: &str,
    known: &[&str],
) -> Result<(), InitError> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(error_at(
            format_args!("{prefix}{key}"),
            format_args!("unknown key (expected one of {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// A non-blank string.
pub fn string<'a>(v: &'a Value, path: &str) -> Result<&'a str, InitError> {
    match v {
        Value::String(s) if s.trim().is_empty() => Err(error_at(path, "must not be empty")),
        Value::String(s) => Ok(s),
        other => Err(error_at(
            path,
            format_args!("expected a string, got {}", kind(other)),
        )),
    }
}

/// A whole number in `min..=max`.
pub fn number(v: &Value, path: &str, min: u64, max: u64) -> Result<u64, InitError> {
    let Value::Number(n) = v else {
        return Err(error_at(
            path,
            format_args!("expected a number, got {}", kind(v)),
        ));
    };
    match n.as_u64() {
        Some(x) if (min..=max).contains(&x) => Ok(x),
        _ if n.is_f64() => Err(error_at(path, format_args!("{n} is not a whole number"))),
        _ => Err(error_at(
            path,
            format_args!("{n} is out of range {min}-{max}"),
        )),
    }
}

/// A non-empty list, each item read by `item` with its path (`path[i]`).
pub fn list<T>(
    v: &Value,
    path: &str,
    item: impl Fn(&Value, &str) -> Result<T, InitError>,
) -> Result<Vec<T>, InitError> {
    match v {
        Value::Array(items) if items.is_empty() => Err(error_at(path, "must not be empty")),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| item(x, &format!("{path}[{i}]")))
            .collect(),
        other => Err(error_at(
            path,
            format_args!("expected a list, got {}", kind(other)),
        )),
    }
}

/// A domain pattern (`example.com`, `*.example.com`).
pub fn domain(v: &Value, path: &str) -> Result<crate::matching::DomainPattern, InitError> {
    crate::matching::DomainPattern::parse(string(v, path)?).map_err(|e| error_at(path, e))
}

/// A TLS alert by name (`"access-denied"`, `"handshake-failure"`,
/// `"unrecognized-name"`, `"internal-error"`), or `"none"` for no alert.
pub fn alert(v: &Value, path: &str) -> Result<Option<crate::TlsAlert>, InitError> {
    use crate::TlsAlert as A;
    const NAMES: &str = "\"access-denied\", \"handshake-failure\", \"unrecognized-name\", \"internal-error\", \"none\"";
    Ok(Some(match string(v, path)? {
        "access-denied" => A::AccessDenied,
        "handshake-failure" => A::HandshakeFailure,
        "unrecognized-name" => A::UnrecognizedName,
        "internal-error" => A::InternalError,
        "none" => return Ok(None),
        other => {
            return Err(error_at(
                path,
                format_args!("{other:?} is not one of {NAMES}"),
            ));
        }
    }))
}

/// serde's "unknown field `x`, expected one of `a`, `b`, …" with the
/// closest valid name suggested first, when one is close enough to be a
/// typo: "unknown field `maxConection` (did you mean `maxConnections`?),
/// expected one of …". Other messages come back unchanged.
pub fn suggest_field(message: &str) -> String {
    let Some((field, rest)) = message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split_once('`'))
    else {
        return message.to_owned();
    };
    // The valid names are the other backticked words.
    let best = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|c| (edit_distance(&field.to_lowercase(), &c.to_lowercase()), c))
        .min();
    match best {
        Some((d, c)) if d <= (field.chars().count() / 3).max(2) => {
            format!("unknown field `{field}` (did you mean `{c}`?){rest}")
        }
        _ => message.to_owned(),
    }
}

/// Levenshtein distance, for typo suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn unknown_fields_get_the_closest_valid_name() {
        let m = "unknown field `keepAliveTreatmnt`, expected one of `bind`, `keepAliveTreatment`, `keepAlive` at line 2 column 5";
        assert_eq!(
            super::suggest_field(m),
            "unknown field `keepAliveTreatmnt` (did you mean `keepAliveTreatment`?), expected one of `bind`, `keepAliveTreatment`, `keepAlive` at line 2 column 5"
        );
        let m = "unknown field `domain`, expected `ports` or `domains`";
        assert!(super::suggest_field(m).contains("did you mean `domains`?"));
        let m = "unknown field `zzzzzz`, expected `ports` or `domains`";
        assert_eq!(super::suggest_field(m), m, "nothing close: no guess");
        assert_eq!(super::suggest_field("invalid type"), "invalid type");
        assert_eq!(super::edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn messages_name_the_path_and_the_kind() {
        let v = serde_json::json!([1]);
        let e = super::error_at(
            "a.b[0]",
            format_args!("expected a string, got {}", super::kind(&v)),
        );
        assert_eq!(e.0, "a.b[0]: expected a string, got a list");
    }
}
