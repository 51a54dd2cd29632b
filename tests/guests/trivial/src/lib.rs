//! The smallest useful plugin: every connection to one target. Used to
//! measure the cost of a warm `route` call.

use turnout_plugin_sdk::prelude::*;

/// See the crate docs.
pub struct Trivial;

impl Plugin for Trivial {
    fn init(_config: &str) -> Result<Self, InitError> {
        Ok(Trivial)
    }

    fn info(&self) -> PluginInfo {
        PluginInfo::new("trivial", env!("CARGO_PKG_VERSION"))
            .hooks(Hooks::ROUTE)
            .listen_tls([PortRange::single(8443)])
    }

    fn route(&self, _conn: &Connection) -> RouteDecision {
        RouteDecision::Forward(Forward::new(
            "trivial",
            vec![Target::new("127.0.0.1", 9000)],
        ))
    }
}

turnout_plugin_sdk::export_plugin!(Trivial);
