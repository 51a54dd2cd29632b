//! `{{name}}`: a Turnout plugin. It sends TLS connections whose SNI matches
//! one of `domains`, on TLS port `port`, to `target`; it has no opinion
//! about any other connection, so the rest of the chain (the default
//! `routes` plugin) decides those.
//!
//! It also shows the per-request hook (WIT 0.2 and later): on the routes the host
//! serves HTTP for, a request for one of `domains` that carries the header
//! `x-{{name}}` is answered by the plugin itself; every other request is
//! left to the chain.
//!
//! Config (`plugins.config.{{name}}` in the proxy's config file); every key
//! is optional and these are the defaults:
//!
//! ```json
//! { "port": 8443, "domains": ["{{name}}.localhost"], "target": { "host": "127.0.0.1", "port": 9443 } }
//! ```

use serde_json::{Map, Value};
use turnout_plugin_sdk::config::{error_at, kind};
use turnout_plugin_sdk::prelude::*;

/// See the crate docs.
#[derive(Debug)]
pub struct {{Type}} {
    port: u16,
    domains: Vec<DomainPattern>,
    target: Target,
    /// What the HTTP hooks are handed; built once, sent by `info`.
    interest: Interest,
    /// Where `x-{{name}}` is in a request head's `headers`.
    hello_slot: usize,
}

impl Plugin for {{Type}} {
    fn init(config: &str) -> Result<Self, InitError> {
        let config: Value =
            serde_json::from_str(config).map_err(|e| error_at("{{name}} config", e))?;
        let Value::Object(fields) = config else {
            return Err(error_at(
                "{{name}} config",
                format_args!("expected an object, got {}", kind(&config)),
            ));
        };
        // A request lowers only the headers declared here, each into its
        // slot; reading any other one is a host call (`host::header`).
        let mut interest = Interest::default();
        let hello_slot = interest.request_header("x-{{name}}");
        let mut plugin = {{Type}} {
            port: 8443,
            domains: vec![
                DomainPattern::parse("{{name}}.localhost").map_err(|e| error_at("domains", e))?,
            ],
            target: Target::new("127.0.0.1", 9443),
            interest,
            hello_slot,
        };
        for (key, value) in &fields {
            match key.as_str() {
                "port" => plugin.port = port(value, "port")?,
                "domains" => plugin.domains = domains(value)?,
                "target" => plugin.target = target(value)?,
                other => {
                    return Err(error_at(
                        other,
                        "unknown key (expected port, domains, target)",
                    ));
                }
            }
        }
        Ok(plugin)
    }

    fn info(&self) -> PluginInfo {
        PluginInfo::new("{{name}}", env!("CARGO_PKG_VERSION"))
            .hooks(Hooks::ROUTE | Hooks::REQUEST)
            .listen_tls([PortRange::single(self.port)])
            .interest(self.interest.clone())
    }

    fn route(&self, conn: &Connection) -> RouteDecision {
        match conn.sni() {
            Some(sni)
                if conn.peer.listener_port == self.port
                    && self.domains.iter().any(|d| d.matches(sni)) =>
            {
                RouteDecision::Forward(Forward::new("{{name}}", vec![self.target.clone()]))
            }
            _ => RouteDecision::Pass,
        }
    }

    fn request(&self, head: &RequestHead) -> RequestDecision {
        if !self.domains.iter().any(|d| d.matches(head.host())) {
            return RequestDecision::Pass;
        }
        // Header values are bytes (a header need not be UTF-8). To send the
        // request on instead, declare an `Upstream` in the interest and
        // answer `RequestDecision::Forward(HttpForward::to(id))`.
        match head.slot(self.hello_slot) {
            Some(value) => RequestDecision::Respond(
                Response::text(
                    200,
                    format!("hello from {{name}}, {}\n", String::from_utf8_lossy(value)),
                )
                .header("x-plugin", "{{name}}"),
            ),
            None => RequestDecision::Pass,
        }
    }
}

fn port(value: &Value, path: &str) -> Result<u16, InitError> {
    let Some(n) = value.as_u64() else {
        return Err(error_at(
            path,
            format_args!("expected a port number, got {}", kind(value)),
        ));
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| error_at(path, format_args!("port {n} is out of range 1-65535")))
}

fn domains(value: &Value) -> Result<Vec<DomainPattern>, InitError> {
    let Some(items) = value.as_array().filter(|a| !a.is_empty()) else {
        return Err(error_at(
            "domains",
            "expected a non-empty list of domain patterns",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("domains[{i}]");
            let text = item.as_str().ok_or_else(|| {
                error_at(&path, format_args!("expected a string, got {}", kind(item)))
            })?;
            DomainPattern::parse(text).map_err(|e| error_at(&path, e))
        })
        .collect()
}

fn target(value: &Value) -> Result<Target, InitError> {
    let Some(fields) = value.as_object() else {
        return Err(error_at(
            "target",
            format_args!("expected an object, got {}", kind(value)),
        ));
    };
    let field = |fields: &Map<String, Value>, key: &str| {
        fields
            .get(key)
            .cloned()
            .ok_or_else(|| error_at(format_args!("target.{key}"), "missing"))
    };
    if let Some(other) = fields.keys().find(|k| *k != "host" && *k != "port") {
        return Err(error_at(
            format_args!("target.{other}"),
            "unknown key (expected host, port)",
        ));
    }
    let host = field(fields, "host")?;
    let host = host.as_str().filter(|h| !h.is_empty()).ok_or_else(|| {
        error_at(
            "target.host",
            format_args!("expected a host name or IP, got {}", kind(&host)),
        )
    })?;
    let port = port(&field(fields, "port")?, "target.port")?;
    Ok(Target::new(host, port))
}

turnout_plugin_sdk::export_plugin!({{Type}});
