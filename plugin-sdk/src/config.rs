//! Helpers for reading a plugin's JSON configuration with errors that name
//! the key path, the way the default plugins and the host do.

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

#[cfg(test)]
mod tests {
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
