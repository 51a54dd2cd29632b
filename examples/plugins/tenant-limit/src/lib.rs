//! `example-tenant-limit`: limits how many new connections each tenant may
//! open per time window, counting in the host's key-value store so every
//! instance of the plugin (and every worker) shares one count.
//!
//! A connection's tenant comes from its SNI, in the `route` hook (`admit`
//! runs before the ClientHello is read, so it has no SNI):
//!
//! 1. the first entry of `tenants` with a domain pattern matching the SNI;
//! 2. else, with `suffix` set, the label right before it:
//!    `eu.acme.tenants.example.com` under `tenants.example.com` is `acme`;
//! 3. else the connection is *unknown* (no SNI — plain connections
//!    included — or an SNI matching neither rule), handled as `unknown`
//!    says.
//!
//! Counting uses fixed windows of `windowMs` on the host's monotonic clock:
//! the store key `tenant:<name>:<window number>` is incremented (with a TTL
//! that ends with the window, so the store only ever holds the current
//! windows) and a count above the tenant's limit refuses the connection
//! with the reject reason `reason` and, on TLS, the alert `alert`. Under the
//! limit the answer is "pass", so the next plugin routes the connection.
//! Every connection this plugin sees for a tenant counts, refused ones too:
//! a tenant over its limit stays refused until the window ends, and a
//! connection that a later plugin refuses has still used one. If the store
//! fails, the connection is let through (and a warning logged).
//!
//! # Configuration
//!
//! ```json
//! {
//!   "tenants": [
//!     { "name": "acme", "domains": ["acme.example.com", "*.acme.example.com"], "limit": 500 },
//!     { "name": "globex", "domains": ["globex.example.net"] }
//!   ],
//!   "suffix": "tenants.example.com",
//!   "limit": 100,
//!   "windowMs": 60000,
//!   "unknown": "pass",
//!   "ports": [443],
//!   "reason": "tenant-rate-limit",
//!   "alert": "access-denied"
//! }
//! ```
//!
//! | key | meaning |
//! | --- | --- |
//! | `tenants` | `{name, domains, limit?}` entries, checked in order. Names: letters, digits, `-`, `_`, `.`, at most 64, case-insensitive, each listed once |
//! | `suffix` | derive the tenant from the SNI label right before this domain. At least one of `tenants` and `suffix` is required |
//! | `limit` (required) | new connections per tenant per window; `0` is unlimited. A tenant's own `limit` overrides it — also for its name when found through `suffix` |
//! | `windowMs` (default 60000) | window length, 1 ms to one day |
//! | `unknown` (default `"pass"`) | `"pass"`: leave unknown connections to the next plugin; `"reject"`: refuse them (reason `unknown-tenant`); `"limit"`: count them all together as one tenant under `limit` |
//! | `ports` (optional) | only connections to these listener ports are considered; others pass |
//! | `reason` (default `"tenant-rate-limit"`) | the reject reason over the limit |
//! | `alert` (default `"access-denied"`) | `access-denied`, `handshake-failure`, `unrecognized-name`, `internal-error` or `none` |
//!
//! `null` is the same as absent; an unknown key, a wrong type or a value
//! out of range is an init error naming its path, e.g.
//! `tenants[1].domains[0]: expected a string, got a number`.
//!
//! With `suffix`, a client can invent tenants (`random1.tenants.example.com`,
//! …); each costs one store entry per window. A full store drops expired
//! windows first, but invented tenants within one window can still push
//! out the oldest live counters. List `tenants` explicitly where that
//! matters.
//!
//! # Where it goes in the Turnout config
//!
//! The plugin declares no ports and never forwards: it refuses or passes
//! connections on ports other plugins listen on, so it must come **before**
//! `routes` in `plugins.order`. Copy
//! `target/wasm/wasm32-wasip2/plugin/example_tenant_limit.wasm` (from
//! `cargo xtask build-plugins`) into the plugins directory as
//! `tenant-limit.wasm` — the file name is the plugin's name, which also
//! names its key-value store — and give its config as
//! `plugins.config.tenant-limit`:
//!
//! ```json
//! {
//!   "plugins": {
//!     "dir": "./plugins",
//!     "order": ["tenant-limit", "routes"],
//!     "config": { "tenant-limit": { "suffix": "tenants.example.com", "limit": 100 } }
//!   }
//! }
//! ```

mod config;

use turnout_plugin_sdk::prelude::*;

use crate::config::{Config, Unknown};

/// The tenant unknown connections are counted as with `"unknown": "limit"`;
/// `*` is not a valid tenant name, so it cannot collide with one.
pub const UNKNOWN_TENANT: &str = "*";

/// See the crate docs.
#[derive(Debug)]
pub struct TenantLimit {
    config: Config,
}

/// The store key counting `tenant`'s connections in window `index`.
pub fn window_key(tenant: &str, index: u64) -> String {
    format!("tenant:{tenant}:{index}")
}

/// Whether an SNI label can be a tenant name (a plain DNS label).
fn dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl TenantLimit {
    /// The tenant of a connection with this SNI, if any.
    fn tenant<'a>(&'a self, sni: &'a str) -> Option<&'a str> {
        if let Some(t) = self
            .config
            .tenants
            .iter()
            .find(|t| t.domains.iter().any(|d| d.matches(sni)))
        {
            return Some(&t.name);
        }
        let suffix = self.config.suffix.as_deref()?;
        let rest = sni.strip_suffix(suffix)?.strip_suffix('.')?;
        let label = rest.rsplit('.').next()?;
        dns_label(label).then_some(label)
    }

    /// `name`'s limit: its own, else the global one (0 = unlimited).
    fn limit_of(&self, name: &str) -> u64 {
        self.config
            .tenants
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.limit)
            .unwrap_or(self.config.limit)
    }

    /// Counts one connection for `tenant`; whether that puts it over `limit`.
    fn over_limit(&self, tenant: &str, limit: u64) -> bool {
        if limit == 0 {
            return false;
        }
        let window = self.config.window_ms;
        let now = host::monotonic_now() / 1_000_000;
        let index = now / window;
        // Ends with the window: the counter never outlives it.
        let ttl = (index + 1) * window - now;
        match host::kv_increment(&window_key(tenant, index), 1, Some(ttl)) {
            Ok(count) => {
                let count = u64::try_from(count).unwrap_or(0);
                if count == limit + 1 {
                    host::log(
                        LogLevel::Info,
                        &format!(
                            "tenant {tenant} reached its limit of {limit} new connections per {window} ms"
                        ),
                    );
                }
                count > limit
            }
            Err(e) => {
                host::log(
                    LogLevel::Warn,
                    &format!(
                        "cannot count a connection for tenant {tenant}: {e}; letting it through"
                    ),
                );
                false
            }
        }
    }
}

impl Plugin for TenantLimit {
    fn init(config: &str) -> Result<Self, InitError> {
        Ok(TenantLimit {
            config: config::parse(config)?,
        })
    }

    fn info(&self) -> PluginInfo {
        PluginInfo::new("tenant-limit", env!("CARGO_PKG_VERSION")).hooks(Hooks::ROUTE)
    }

    fn route(&self, conn: &Connection) -> RouteDecision {
        let c = &self.config;
        if !c.ports.is_empty() && !c.ports.contains(&conn.peer.listener_port) {
            return RouteDecision::Pass;
        }
        let alert = if conn.tls.is_some() { c.alert } else { None };
        let tenant = match conn.sni().and_then(|sni| self.tenant(sni)) {
            Some(name) => name,
            None => match c.unknown {
                Unknown::Pass => return RouteDecision::Pass,
                Unknown::Reject => return RouteDecision::reject("unknown-tenant", alert),
                Unknown::Limit => UNKNOWN_TENANT,
            },
        };
        if self.over_limit(tenant, self.limit_of(tenant)) {
            RouteDecision::reject(c.reason.clone(), alert)
        } else {
            RouteDecision::Pass
        }
    }
}

turnout_plugin_sdk::export_plugin!(TenantLimit);
