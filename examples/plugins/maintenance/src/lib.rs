//! `example-maintenance`: refuses new connections *during* configured weekly
//! maintenance windows, and has no opinion outside them (so the next plugin
//! in the chain, usually `routes`, routes as usual).
//!
//! The check runs in the `route` hook, by the host's wall clock
//! (`host::wall_now`), shifted by a fixed UTC offset. A refused connection
//! gets a `reject` with `reason` (a metrics label) and, on TLS connections,
//! the TLS alert `alert` before the host closes it; plain connections are
//! just closed. Connections already open when a window starts are not
//! touched (plugins decide at routing only).
//!
//! # Configuration
//!
//! ```json
//! {
//!   "windows": [
//!     { "days": ["sat", "sun"], "from": "02:00", "to": "04:00" },
//!     { "days": ["fri"], "from": "23:30", "to": "00:30" }
//!   ],
//!   "timezoneOffsetMinutes": 60,
//!   "reason": "maintenance",
//!   "alert": "access-denied",
//!   "ports": [8443],
//!   "domains": ["shop.example.com"]
//! }
//! ```
//!
//! | key | meaning |
//! | --- | --- |
//! | `windows` (required) | weekly windows; `[]` turns the plugin off |
//! | `windows[].from`, `to` | local times `"HH:MM"` (24-hour); `from` is inside the window, `to` is not; `to` may be `"24:00"` |
//! | `windows[].days` (default every day) | the days a window *starts* on: `mon`…`sun` or full names, any case. When `to` is not after `from` the window crosses midnight and ends on the next day: `fri 23:30–00:30` is Friday 23:30 to Saturday 00:30 |
//! | `timezoneOffsetMinutes` (default 0, UTC) | the local zone, minutes east of UTC (`60` for UTC+1, `-300` for UTC-5). Fixed: daylight-saving changes need a config change |
//! | `reason` (default `"maintenance"`) | the reject reason |
//! | `alert` (default `"access-denied"`) | `access-denied`, `handshake-failure`, `unrecognized-name`, `internal-error` or `none` |
//! | `ports` (optional) | only connections to these listener ports are refused |
//! | `domains` (optional) | only TLS connections whose SNI matches one of these patterns are refused |
//!
//! `null` is the same as absent. An unknown key, a wrong type, a bad time or
//! day, or a window with `from` equal to `to` is an init error naming its
//! path, e.g. `windows[0].days[1]: "sonday" is not a day (mon, …)`.
//!
//! # Where it goes in the Turnout config
//!
//! The plugin declares no ports: it only refuses connections on the ports
//! other plugins (`routes`) listen on. Copy
//! `target/wasm/wasm32-wasip2/plugin/example_maintenance.wasm` (from
//! `cargo xtask build-plugins`) into the plugins directory as
//! `maintenance.wasm` — the file name is the plugin's name — and put it
//! **before** `routes`, since the first `route` answer that is not "pass"
//! wins:
//!
//! ```json
//! {
//!   "plugins": {
//!     "dir": "./plugins",
//!     "order": ["maintenance", "routes"],
//!     "config": { "maintenance": { "windows": [{ "days": ["sun"], "from": "02:00", "to": "04:00" }] } }
//!   }
//! }
//! ```

mod config;
mod schedule;

use turnout_plugin_sdk::prelude::*;

use crate::config::Config;

/// See the crate docs.
#[derive(Debug)]
pub struct Maintenance {
    config: Config,
}

impl Maintenance {
    /// Whether this connection is one the windows apply to.
    fn applies_to(&self, conn: &Connection) -> bool {
        let c = &self.config;
        if !c.ports.is_empty() && !c.ports.contains(&conn.peer.listener_port) {
            return false;
        }
        c.domains.is_empty()
            || conn
                .sni()
                .is_some_and(|sni| c.domains.iter().any(|d| d.matches(sni)))
    }
}

impl Plugin for Maintenance {
    fn init(config: &str) -> Result<Self, InitError> {
        Ok(Maintenance {
            config: config::parse(config)?,
        })
    }

    fn info(&self) -> PluginInfo {
        PluginInfo::new("maintenance", env!("CARGO_PKG_VERSION")).hooks(Hooks::ROUTE)
    }

    fn route(&self, conn: &Connection) -> RouteDecision {
        let c = &self.config;
        if c.windows.is_empty() || !self.applies_to(conn) {
            return RouteDecision::Pass;
        }
        if !schedule::in_any(&c.windows, host::wall_now(), c.offset_minutes) {
            return RouteDecision::Pass;
        }
        let alert = if conn.tls.is_some() { c.alert } else { None };
        RouteDecision::reject(c.reason.clone(), alert)
    }
}

turnout_plugin_sdk::export_plugin!(Maintenance);
