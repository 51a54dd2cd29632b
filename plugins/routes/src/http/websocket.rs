//! Reading `action.websocket`: whether upgrades are allowed and the
//! heartbeat the host runs where it speaks WebSocket itself (terminated
//! and plaintext HTTP routes; on passthrough the keys have no effect, as
//! the host cannot see frames inside TLS it does not terminate).

use serde::Deserialize;
use serde_json::Value;
use turnout_plugin_sdk::WebSocketPolicy;

use crate::config::{Result, err, kind, strict};

/// SmartProxy `websocket` keys Turnout does not implement: refused by
/// name rather than ignored, so no one relies on them by mistake.
const UNSUPPORTED: &[&str] = &[
    "allowedOrigins",
    "authenticateRequest",
    "customHeaders",
    "maxPayloadSize",
    "rewritePath",
    "subprotocols",
];

/// Shortest `pingInterval` / `pingTimeout` (the host's floor).
const MIN_MS: u64 = 100;
/// Longest: a day (the host's ceiling).
const MAX_MS: u64 = 86_400_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawWebSocket {
    enabled: Option<Value>,
    ping_interval: Option<Value>,
    ping_timeout: Option<Value>,
}

/// Reads `action.websocket: { enabled, pingInterval, pingTimeout }`.
/// `pingInterval: 0` turns the heartbeat off.
pub(crate) fn websocket(v: &Value, at: &str) -> Result<WebSocketPolicy> {
    let raw: RawWebSocket = strict(v, at, UNSUPPORTED)?;
    let mut policy = WebSocketPolicy::default();
    match &raw.enabled {
        None => {}
        Some(Value::Bool(b)) => policy.enabled = *b,
        Some(other) => {
            return err(
                format_args!("{at}.enabled"),
                format_args!("must be true or false, got {}", kind(other)),
            );
        }
    }
    if let Some(v) = &raw.ping_interval {
        policy.ping_interval = match millis(v, &format!("{at}.pingInterval"), true)? {
            0 => None,
            ms => Some(ms),
        };
    }
    if let Some(v) = &raw.ping_timeout {
        policy.ping_timeout = millis(v, &format!("{at}.pingTimeout"), false)?;
    }
    Ok(policy)
}

/// A whole number of milliseconds in [`MIN_MS`]..=[`MAX_MS`] (or 0 when
/// `off` is allowed).
fn millis(v: &Value, at: &str, off: bool) -> Result<u64> {
    match v.as_u64() {
        Some(0) if off => Ok(0),
        Some(ms) if (MIN_MS..=MAX_MS).contains(&ms) => Ok(ms),
        _ if off => err(
            at,
            format_args!("must be 0 (no heartbeat) or {MIN_MS}-{MAX_MS} milliseconds, got {v}"),
        ),
        _ => err(
            at,
            format_args!("must be {MIN_MS}-{MAX_MS} milliseconds, got {v}"),
        ),
    }
}
