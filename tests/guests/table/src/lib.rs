//! A route table of `{"routes": N}` exact domains `svcI.example.com`
//! (looked up by hash), for measuring a `route` call with a large table.

use std::collections::HashMap;

use turnout_plugin_sdk::prelude::*;

/// See the crate docs.
pub struct Table {
    routes: HashMap<String, (String, Target)>,
}

impl Plugin for Table {
    fn init(config: &str) -> Result<Self, InitError> {
        let v: serde_json::Value =
            serde_json::from_str(config).map_err(|e| InitError::new(format!("config: {e}")))?;
        let n = v.get("routes").and_then(|n| n.as_u64()).unwrap_or(1000);
        let routes = (0..n)
            .map(|i| {
                (
                    format!("svc{i}.example.com"),
                    (
                        format!("svc{i}"),
                        Target::new("127.0.0.1", 10_000 + (i % 1000) as u16),
                    ),
                )
            })
            .collect();
        Ok(Table { routes })
    }

    fn info(&self) -> PluginInfo {
        PluginInfo::new("table", env!("CARGO_PKG_VERSION")).hooks(Hooks::ROUTE)
    }

    fn route(&self, conn: &Connection) -> RouteDecision {
        match conn.sni().and_then(|sni| self.routes.get(sni)) {
            Some((name, target)) => {
                RouteDecision::Forward(Forward::new(name.clone(), vec![target.clone()]))
            }
            None => RouteDecision::reject("no-route", Some(TlsAlert::UnrecognizedName)),
        }
    }
}

turnout_plugin_sdk::export_plugin!(Table);
