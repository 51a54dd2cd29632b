//! `example-canary`: a `route` plugin that sends a fixed percentage of
//! clients to a canary backend and everyone else to the primary one.
//!
//! A client's side is chosen by a stable hash of its IP address — never
//! the port, so every connection from one address lands on the same side:
//! FNV-1a (64-bit) over `salt` followed by the address octets (4 for IPv4,
//! 16 for IPv6; `::ffff:a.b.c.d` is folded to `a.b.c.d` first), reduced to a
//! bucket `hash % 100`. Buckets below `percent` go to the canary. The hash
//! is fixed (not std's randomly seeded one), so the split is the same in
//! every plugin instance, after restarts and across rebuilds; raising
//! `percent` only ever moves clients from the primary to the canary.
//!
//! # Configuration
//!
//! ```json
//! {
//!   "ports": [8443],
//!   "tls": true,
//!   "domains": ["shop.example.com", "*.shop.example.com"],
//!   "route": "shop",
//!   "primary": [{ "host": "10.0.0.10", "port": 443 }],
//!   "canary": [{ "host": "10.0.0.20", "port": 443 }],
//!   "percent": 10,
//!   "salt": "release-42"
//! }
//! ```
//!
//! | key | meaning |
//! | --- | --- |
//! | `ports` (required) | a port or a non-empty list of ports the plugin asks the host to listen on, and the only ports it routes |
//! | `tls` (default `false`) | the clients on `ports` speak TLS: the host reads the ClientHello first, and traffic is passed through undecrypted |
//! | `domains` (optional) | SNI patterns (`*` wildcards, as in routes); a connection whose SNI matches none (or has none) is left to the next plugin. Needs `tls: true` |
//! | `route` (required) | the route name of the primary side, for logs and metrics |
//! | `canaryRoute` (default `<route>-canary`) | the route name of the canary side |
//! | `primary`, `canary` (required) | non-empty lists of `{"host", "port"}`, tried in order |
//! | `percent` (required) | whole number 0–100: the share of client addresses sent to the canary |
//! | `salt` (default `""`) | changes which clients form the canary share, so two canaries at 10 % need not hit the same clients |
//!
//! `null` is the same as absent. An unknown key, a wrong type or a value out
//! of range is an init error naming its path, e.g.
//! `canary[0].port: 0 is out of range 1-65535`.
//!
//! # Where it goes in the Turnout config
//!
//! `cargo xtask build-plugins` writes
//! `target/wasm/wasm32-wasip2/plugin/example_canary.wasm`. The host names a
//! directory plugin after its file, so copy it into the plugins directory
//! as `canary.wasm` and give its config as `plugins.config.canary`:
//!
//! ```json
//! {
//!   "plugins": {
//!     "dir": "./plugins",
//!     "order": ["canary", "routes"],
//!     "config": { "canary": { "ports": [8443], "tls": true, "route": "shop", "...": "..." } }
//!   }
//! }
//! ```
//!
//! The first plugin whose `route` does not pass wins, so when a `routes`
//! route also matches these ports, list `canary` before `routes` in
//! `plugins.order` (`examples/configs/canary.json` is a complete file).

mod config;

use std::net::IpAddr;

use turnout_plugin_sdk::prelude::*;

use crate::config::Config;

/// See the crate docs.
#[derive(Debug)]
pub struct Canary {
    config: Config,
}

/// FNV-1a, 64-bit: fixed constants, so the same input hashes the same
/// everywhere and forever.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The bucket (0–99) of a client address under `salt`; the canary gets the
/// buckets below `percent`.
pub fn bucket(ip: IpAddr, salt: &str) -> u8 {
    let mut input = Vec::with_capacity(salt.len() + 16);
    input.extend_from_slice(salt.as_bytes());
    match canonical_ip(ip) {
        IpAddr::V4(v4) => input.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => input.extend_from_slice(&v6.octets()),
    }
    // `% 100` is below 100, so the conversion cannot fail.
    u8::try_from(fnv1a64(&input) % 100).unwrap_or(0)
}

impl Canary {
    fn applies_to(&self, conn: &Connection) -> bool {
        if !self.config.ports.contains(&conn.peer.listener_port) {
            return false;
        }
        if self.config.domains.is_empty() {
            return true;
        }
        conn.sni()
            .is_some_and(|sni| self.config.domains.iter().any(|d| d.matches(sni)))
    }
}

impl Plugin for Canary {
    fn init(config: &str) -> Result<Self, InitError> {
        Ok(Canary {
            config: config::parse(config)?,
        })
    }

    fn info(&self) -> PluginInfo {
        let ports = self.config.ports.iter().map(|&p| PortRange::single(p));
        let info = PluginInfo::new("canary", env!("CARGO_PKG_VERSION")).hooks(Hooks::ROUTE);
        if self.config.tls {
            info.listen_tls(ports)
        } else {
            info.listen(ports)
        }
    }

    fn route(&self, conn: &Connection) -> RouteDecision {
        if !self.applies_to(conn) {
            return RouteDecision::Pass;
        }
        let c = &self.config;
        let (route, targets) = if bucket(conn.peer.ip(), &c.salt) < c.percent {
            (&c.canary_route, &c.canary)
        } else {
            (&c.route, &c.primary)
        };
        RouteDecision::Forward(Forward::new(route.clone(), targets.clone()))
    }
}

turnout_plugin_sdk::export_plugin!(Canary);
