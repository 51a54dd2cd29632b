//! A test router for the L4 end-to-end tests: routes on (listener port,
//! SNI) from its config. Not the SmartProxy-compatible `routes` plugin.
//!
//! ```json
//! { "tlsPorts": [8443], "plainPorts": [8080],
//!   "routes": [ { "name": "a", "port": 8443, "sni": "a.test",
//!                 "targets": [["127.0.0.1", 9000]], "proxyProtocol": "v1",
//!                 "maxConnections": 0 } ],
//!   "policy": { "inactivityMs": 500, "halfOpenMs": 300, "noDelay": false } }
//! ```

use serde::Deserialize;
use turnout_plugin_sdk::prelude::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Route {
    name: String,
    port: u16,
    sni: Option<String>,
    targets: Vec<(String, u16)>,
    proxy_protocol: Option<String>,
    #[serde(default)]
    max_connections: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyOverride {
    inactivity_ms: Option<u64>,
    half_open_ms: Option<u64>,
    stuck_ms: Option<u64>,
    lifetime_ms: Option<u64>,
    no_delay: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    #[serde(default)]
    tls_ports: Vec<u16>,
    #[serde(default)]
    plain_ports: Vec<u16>,
    routes: Vec<Route>,
    policy: Option<PolicyOverride>,
}

/// See the crate docs.
pub struct Router(Config);

impl Plugin for Router {
    fn init(config: &str) -> Result<Self, InitError> {
        serde_json::from_str(config)
            .map(Router)
            .map_err(|e| InitError::new(format!("router config: {e}")))
    }

    fn info(&self) -> PluginInfo {
        PluginInfo::new("router", env!("CARGO_PKG_VERSION"))
            .hooks(Hooks::ROUTE | Hooks::POLICY)
            .listen(self.0.plain_ports.iter().map(|&p| PortRange::single(p)))
            .listen_tls(self.0.tls_ports.iter().map(|&p| PortRange::single(p)))
    }

    fn route(&self, conn: &Connection) -> RouteDecision {
        let port = conn.peer.listener_port;
        let hit = self
            .0
            .routes
            .iter()
            .find(|r| r.port == port && (r.sni.is_none() || r.sni.as_deref() == conn.sni()));
        match hit {
            None => RouteDecision::Pass,
            Some(r) => {
                let pp = match r.proxy_protocol.as_deref() {
                    Some("v1") => ProxyProtocol::V1,
                    Some("v2") => ProxyProtocol::V2,
                    _ => ProxyProtocol::None,
                };
                let targets = r
                    .targets
                    .iter()
                    .map(|(h, p)| Target::new(h.clone(), *p))
                    .collect();
                RouteDecision::Forward(
                    Forward::new(r.name.clone(), targets)
                        .proxy_protocol(pp)
                        .limits(RouteLimits::new(r.max_connections, 0)),
                )
            }
        }
    }

    fn policy(&self, _conn: &Connection, _route: &Routed, defaults: &Policy) -> PolicyDecision {
        let Some(o) = &self.0.policy else {
            return PolicyDecision::Pass;
        };
        let mut p = defaults.clone();
        if let Some(ms) = o.inactivity_ms {
            p.inactivity_timeout = Some(ms);
        }
        if let Some(ms) = o.half_open_ms {
            p.half_open_grace = ms;
        }
        if let Some(ms) = o.stuck_ms {
            p.stuck_timeout = Some(ms);
        }
        if let Some(ms) = o.lifetime_ms {
            p.max_lifetime = Some(ms);
        }
        if let Some(on) = o.no_delay {
            p.no_delay = on;
        }
        PolicyDecision::Set(p)
    }
}

turnout_plugin_sdk::export_plugin!(Router);
