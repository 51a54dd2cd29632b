//! The config document as written: every key optional, unknown keys
//! rejected, deserialized through `serde_path_to_error` so a type error or
//! a typo names its key path (and its line and column).
//!
//! Reading takes two passes. The first parses the text into a plain value:
//! syntax errors stop there, and every SmartProxy option Turnout does not
//! support is named. The second deserializes the *text* (not the value) into
//! [`RawConfig`], so serde_json and toml can still say where an error is.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::{ConfigError, Format};

/// SmartProxy options Turnout recognises but does not implement. Each has a
/// slot in [`RawConfig`] too, so the typed pass does not call it unknown.
pub(super) const UNSUPPORTED: &[&str] = &[
    "useHttpProxy",
    "httpProxyPort",
    "networkProxyPort",
    "enableDetailedLogging",
    "enableTlsDebugLogging",
    "enableRandomizedTimeouts",
    "certProvisionFunction",
    "portProxyIntegration",
    "preserveSourceIP",
    "globalPortRanges",
    "forwardAllGlobalRanges",
    "targetIP",
];

const UNSUPPORTED_MESSAGE: &str = "not supported by Turnout (SmartProxy option); remove it";

/// The whole file. Names are SmartProxy's; times are milliseconds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawConfig {
    pub(super) bind: Option<Vec<String>>,
    pub(super) workers: Option<u64>,
    pub(super) routes: Option<Vec<Value>>,
    pub(super) defaults: Option<Map<String, Value>>,
    pub(super) initial_data_timeout: Option<u64>,
    pub(super) connection_timeout: Option<u64>,
    pub(super) socket_timeout: Option<u64>,
    pub(super) inactivity_timeout: Option<u64>,
    pub(super) max_connection_lifetime: Option<u64>,
    // Strings, not enums, so a bad value is one more collected problem
    // instead of the error that stops the typed pass.
    pub(super) keep_alive_treatment: Option<String>,
    pub(super) keep_alive_inactivity_multiplier: Option<u64>,
    pub(super) extended_keep_alive_lifetime: Option<u64>,
    pub(super) keep_alive: Option<bool>,
    pub(super) keep_alive_initial_delay: Option<u64>,
    pub(super) no_delay: Option<bool>,
    #[serde(rename = "maxConnectionsPerIP")]
    pub(super) max_connections_per_ip: Option<u32>,
    pub(super) connection_rate_limit_per_minute: Option<u32>,
    pub(super) max_connections: Option<u32>,
    pub(super) graceful_shutdown_timeout: Option<u64>,
    pub(super) max_pending_data_size: Option<u64>,
    pub(super) allow_session_ticket: Option<bool>,
    pub(super) default_certificate: Option<Value>,
    pub(super) tls_handshake_timeout: Option<u64>,
    pub(super) accept_proxy_protocol: Option<bool>,
    #[serde(rename = "proxyIPs")]
    pub(super) proxy_ips: Option<Vec<String>>,
    pub(super) send_proxy_protocol: Option<bool>,
    pub(super) plugins: Option<RawPlugins>,
    pub(super) admin: Option<super::admin::RawAdmin>,
    pub(super) http: Option<super::http::RawHttp>,
    pub(super) cluster: Option<super::cluster::RawCluster>,
    /// Checked by hand (`acme.rs`): SmartProxy keys are refused by name.
    pub(super) acme: Option<Value>,

    // Slots for UNSUPPORTED: reported from the first pass, ignored here.
    #[serde(rename = "useHttpProxy")]
    _use_http_proxy: Option<IgnoredAny>,
    #[serde(rename = "httpProxyPort")]
    _http_proxy_port: Option<IgnoredAny>,
    #[serde(rename = "networkProxyPort")]
    _network_proxy_port: Option<IgnoredAny>,
    #[serde(rename = "enableDetailedLogging")]
    _enable_detailed_logging: Option<IgnoredAny>,
    #[serde(rename = "enableTlsDebugLogging")]
    _enable_tls_debug_logging: Option<IgnoredAny>,
    #[serde(rename = "enableRandomizedTimeouts")]
    _enable_randomized_timeouts: Option<IgnoredAny>,
    #[serde(rename = "certProvisionFunction")]
    _cert_provision_function: Option<IgnoredAny>,
    #[serde(rename = "portProxyIntegration")]
    _port_proxy_integration: Option<IgnoredAny>,
    #[serde(rename = "preserveSourceIP")]
    _preserve_source_ip: Option<IgnoredAny>,
    #[serde(rename = "globalPortRanges")]
    _global_port_ranges: Option<IgnoredAny>,
    #[serde(rename = "forwardAllGlobalRanges")]
    _forward_all_global_ranges: Option<IgnoredAny>,
    #[serde(rename = "targetIP")]
    _target_ip: Option<IgnoredAny>,
}

/// `plugins`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawPlugins {
    pub(super) dir: Option<PathBuf>,
    pub(super) order: Option<Vec<String>>,
    pub(super) config: Option<HashMap<String, Value>>,
    pub(super) failure: Option<HashMap<String, String>>,
    pub(super) deadline_ms: Option<u64>,
    pub(super) memory_limit_mb: Option<u64>,
    pub(super) poll_interval_ms: Option<u64>,
}

/// Reads `text` as `format`. `Ok` holds the raw config, the document as a
/// plain value and one error per unsupported option (possibly none); `Err` holds those errors followed by
/// the syntax or deserialization error that stopped reading. `doc` names
/// the whole document in errors that have no key path.
pub(super) fn read(
    text: &str,
    format: Format,
    doc: &str,
) -> Result<(RawConfig, Value, Vec<ConfigError>), Vec<ConfigError>> {
    let value: Value =
        match format {
            Format::Json => serde_json::from_str(text)
                .map_err(|e| vec![ConfigError::new(doc, e.to_string())])?,
            Format::Toml => toml::from_str(text)
                .map_err(|e| vec![ConfigError::new(doc, toml_message(text, &e))])?,
        };
    let Value::Object(top) = &value else {
        return Err(vec![ConfigError::new(
            doc,
            "the top level must be an object of options",
        )]);
    };
    let mut errors: Vec<ConfigError> = UNSUPPORTED
        .iter()
        .filter(|key| top.contains_key(**key))
        .map(|key| ConfigError::new(*key, UNSUPPORTED_MESSAGE))
        .collect();

    let typed = match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de)
                .map_err(|e| (e.path().to_string(), e.inner().to_string()))
        }
        Format::Toml => toml::Deserializer::parse(text)
            .map_err(|e| (".".to_owned(), toml_message(text, &e)))
            .and_then(|de| {
                serde_path_to_error::deserialize(de)
                    .map_err(|e| (e.path().to_string(), toml_message(text, e.inner())))
            }),
    };
    match typed {
        Ok(raw) => Ok((raw, value, errors)),
        Err((path, message)) => {
            // serde_path_to_error spells the empty path ".".
            let path = if path == "." { doc.to_owned() } else { path };
            errors.push(ConfigError::new(
                path,
                turnout_plugin_sdk::config::suggest_field(&hide_unsupported(message)),
            ));
            Err(errors)
        }
    }
}

/// serde's "unknown field" message lists every field, the slots for
/// unsupported options included; offering those would mislead.
fn hide_unsupported(mut message: String) -> String {
    if message.starts_with("unknown field `") {
        for key in UNSUPPORTED {
            message = message.replace(&format!(", `{key}`"), "");
        }
    }
    message
}

/// toml's own `Display` draws a multi-line snippet; one line reads better in
/// a list, so say where the way serde_json does.
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(before) = e.span().and_then(|s| text.get(..s.start)) else {
        return message.to_owned();
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{message} at line {line} column {column}")
}

#[cfg(test)]
mod tests {
    use super::super::{FailurePolicy, parse};
    use super::*;
    use turnout_plugin_sdk::KeepAliveTreatment;

    fn json_err(text: &str) -> Vec<ConfigError> {
        read(text, Format::Json, "(config)").unwrap_err()
    }

    fn toml_err(text: &str) -> Vec<ConfigError> {
        read(text, Format::Toml, "(config)").unwrap_err()
    }

    #[test]
    fn a_typo_names_the_key_and_its_position() {
        let e = json_err("{\n  \"inactivityTimout\": 5\n}");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "inactivityTimout");
        assert!(
            e[0].message
                .starts_with("unknown field `inactivityTimout` (did you mean `inactivityTimeout`?), expected one of"),
            "{}",
            e[0].message
        );
        assert!(
            e[0].message.ends_with("at line 2 column 20"),
            "{}",
            e[0].message
        );
        assert!(!e[0].message.contains("`useHttpProxy`"), "{}", e[0].message);

        let e = toml_err("noDelay = true\ninactivityTimout = 5\n");
        assert_eq!(e[0].path, "inactivityTimout");
        assert!(e[0].message.contains("unknown field `inactivityTimout`"));
        assert!(
            e[0].message.ends_with("at line 2 column 1"),
            "{}",
            e[0].message
        );
    }

    #[test]
    fn a_nested_typo_names_the_full_path() {
        let e = json_err(r#"{"plugins": {"ordr": ["a"]}}"#);
        assert_eq!(e[0].path, "plugins.ordr");
        assert!(e[0].message.contains("unknown field `ordr`"));
        let e = toml_err("[plugins]\nordr = [\"a\"]\n");
        assert_eq!(e[0].path, "plugins.ordr");
        let e = json_err(r#"{"admin": {"listn": "127.0.0.1:1"}}"#);
        assert_eq!(e[0].path, "admin.listn");
    }

    #[test]
    fn a_wrong_type_names_the_path_and_value() {
        let e = json_err(r#"{"plugins": {"order": ["a", "b", 3]}}"#);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "plugins.order[2]");
        assert!(
            e[0].message
                .starts_with("invalid type: integer `3`, expected a string"),
            "{}",
            e[0].message
        );
        let e = toml_err("[plugins]\norder = [\"a\", \"b\", 3]\n");
        assert_eq!(e[0].path, "plugins.order[2]");
        assert!(
            e[0].message.contains("invalid type: integer `3`"),
            "{}",
            e[0].message
        );
        let e = json_err(r#"{"maxConnections": -1}"#);
        assert_eq!(e[0].path, "maxConnections");
    }

    #[test]
    fn syntax_errors_name_the_document_and_position() {
        let e = json_err("{\n  \"noDelay\": true,\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "(config)");
        assert!(e[0].message.contains("line 3"), "{}", e[0].message);
        let e = toml_err("noDelay = \n");
        assert_eq!(e[0].path, "(config)");
        assert!(e[0].message.contains("at line 1"), "{}", e[0].message);
        assert!(!e[0].message.contains('\n'), "{}", e[0].message);
        let e = json_err("[1, 2]");
        assert!(e[0].message.contains("top level"));
    }

    #[test]
    fn every_unsupported_option_is_named_and_has_a_slot() {
        let mut doc = Map::new();
        for key in UNSUPPORTED {
            doc.insert((*key).to_owned(), Value::Bool(true));
        }
        let text = Value::Object(doc).to_string();
        let (_, _, errors) = read(&text, Format::Json, "(config)").unwrap();
        let named: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(named, UNSUPPORTED);
        assert_eq!(
            errors[0].to_string(),
            "useHttpProxy: not supported by Turnout (SmartProxy option); remove it"
        );
    }

    #[test]
    fn unsupported_options_are_listed_even_when_reading_stops() {
        let e = json_err(r#"{"useHttpProxy": [80], "targetIP": "1.2.3.4", "noDelay": "yes"}"#);
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["useHttpProxy", "targetIP", "noDelay"]);
    }

    #[test]
    fn json_and_toml_give_the_same_config() {
        let json = r#"{
          "bind": ["127.0.0.1", "::1"],
          "routes": [{ "name": "web", "match": { "ports": [80, { "from": 8000, "to": 8010 }] },
                       "action": { "type": "forward", "targets": [{ "host": "10.0.0.1", "port": 80 }] } }],
          "defaults": { "target": { "host": "10.0.0.9", "port": 8080 } },
          "inactivityTimeout": 60000,
          "keepAliveTreatment": "immortal",
          "maxConnectionsPerIP": 0,
          "acceptProxyProtocol": true,
          "proxyIPs": ["10.0.0.0/8"],
          "plugins": { "dir": "/opt/plugins", "order": ["guard", "routes"],
                       "config": { "guard": { "deny": ["1.2.3.4"] } },
                       "failure": { "guard": "open" }, "deadlineMs": 5 },
          "admin": { "listen": "127.0.0.1:9901" }
        }"#;
        let toml = r#"
          bind = ["127.0.0.1", "::1"]
          inactivityTimeout = 60000
          keepAliveTreatment = "immortal"
          maxConnectionsPerIP = 0
          acceptProxyProtocol = true
          proxyIPs = ["10.0.0.0/8"]

          [[routes]]
          name = "web"
          match = { ports = [80, { from = 8000, to = 8010 }] }
          action = { type = "forward", targets = [{ host = "10.0.0.1", port = 80 }] }

          [defaults.target]
          host = "10.0.0.9"
          port = 8080

          [plugins]
          dir = "/opt/plugins"
          order = ["guard", "routes"]
          failure = { guard = "open" }
          deadlineMs = 5
          config.guard.deny = ["1.2.3.4"]

          [admin]
          listen = "127.0.0.1:9901"
        "#;
        let a = parse(json, Format::Json).unwrap();
        let b = parse(toml, Format::Toml).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.keep_alive.treatment, KeepAliveTreatment::Immortal);
        assert_eq!(a.plugins.failure.get("guard"), Some(&FailurePolicy::Open));
        assert_eq!(
            a.admin.as_ref().map(|a| a.listen),
            Some("127.0.0.1:9901".parse().unwrap())
        );
        assert!(
            a.proxy_protocol
                .trusted
                .matches("10.1.2.3".parse().unwrap())
        );
    }
}
