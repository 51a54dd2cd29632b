//! The `keepalive` default plugin: turns SmartProxy's keep-alive options
//! (global, with per-route overrides) into the policy the host enforces.
//!
//! | treatment | inactivity | lifetime |
//! | --- | --- | --- |
//! | `standard` | `inactivityTimeout` | `maxConnectionLifetime` |
//! | `extended` | `inactivityTimeout` × `keepAliveInactivityMultiplier` | `extendedKeepAliveLifetime` |
//! | `immortal` | never | never |
//!
//! Half-open grace and stuck detection are 30 s / 60 s on plain
//! connections and 5 min on TLS ones (passthrough or terminated), as
//! SmartProxy does. No application heartbeat is ever asked for.

use std::collections::HashMap;

use serde::Deserialize;
use turnout_plugin_sdk::prelude::*;

/// Options, with SmartProxy's names; every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Options {
    inactivity_timeout: Option<u64>,
    keep_alive_treatment: Option<String>,
    keep_alive_inactivity_multiplier: Option<u64>,
    extended_keep_alive_lifetime: Option<u64>,
    max_connection_lifetime: Option<u64>,
    keep_alive: Option<bool>,
    keep_alive_initial_delay: Option<u64>,
    no_delay: Option<bool>,
    /// Per-route overrides, by route name (top level only). One struct for
    /// both levels because serde cannot combine `flatten` with
    /// `deny_unknown_fields`, and a typo must be an error.
    routes: Option<HashMap<String, Options>>,
}

/// Fully resolved options for one route.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    inactivity: u64,
    treatment: KeepAliveTreatment,
    multiplier: u64,
    extended_lifetime: u64,
    lifetime: u64,
    keep_alive: bool,
    keep_alive_delay: u64,
    no_delay: bool,
}

const DEFAULTS: Resolved = Resolved {
    inactivity: 14_400_000,
    treatment: KeepAliveTreatment::Extended,
    multiplier: 6,
    extended_lifetime: 604_800_000,
    lifetime: 86_400_000,
    keep_alive: true,
    keep_alive_delay: 10_000,
    no_delay: true,
};

fn treatment(s: &str, key: &str) -> Result<KeepAliveTreatment, InitError> {
    match s {
        "standard" => Ok(KeepAliveTreatment::Standard),
        "extended" => Ok(KeepAliveTreatment::Extended),
        "immortal" => Ok(KeepAliveTreatment::Immortal),
        other => Err(InitError::new(format!(
            "{key}: {other:?} is not one of \"standard\", \"extended\", \"immortal\""
        ))),
    }
}

impl Resolved {
    fn apply(&self, o: &Options, at: &str) -> Result<Resolved, InitError> {
        let key = |k: &str| {
            if at.is_empty() {
                k.to_owned()
            } else {
                format!("{at}.{k}")
            }
        };
        if !at.is_empty() && o.routes.is_some() {
            return Err(InitError::new(format!(
                "{}: route overrides cannot nest",
                key("routes")
            )));
        }
        if o.keep_alive_inactivity_multiplier == Some(0) {
            return Err(InitError::new(format!(
                "{}: must be at least 1",
                key("keepAliveInactivityMultiplier")
            )));
        }
        Ok(Resolved {
            inactivity: o.inactivity_timeout.unwrap_or(self.inactivity),
            treatment: match &o.keep_alive_treatment {
                Some(t) => treatment(t, &key("keepAliveTreatment"))?,
                None => self.treatment,
            },
            multiplier: o
                .keep_alive_inactivity_multiplier
                .unwrap_or(self.multiplier),
            extended_lifetime: o
                .extended_keep_alive_lifetime
                .unwrap_or(self.extended_lifetime),
            lifetime: o.max_connection_lifetime.unwrap_or(self.lifetime),
            keep_alive: o.keep_alive.unwrap_or(self.keep_alive),
            keep_alive_delay: o.keep_alive_initial_delay.unwrap_or(self.keep_alive_delay),
            no_delay: o.no_delay.unwrap_or(self.no_delay),
        })
    }

    fn policy(&self, tls: bool) -> Policy {
        let mut p = Policy::new(None);
        p.keep_alive_treatment = self.treatment;
        (p.inactivity_timeout, p.max_lifetime) = match self.treatment {
            KeepAliveTreatment::Standard => (Some(self.inactivity), Some(self.lifetime)),
            KeepAliveTreatment::Extended => (
                Some(self.inactivity.saturating_mul(self.multiplier)),
                Some(self.extended_lifetime),
            ),
            KeepAliveTreatment::Immortal => (None, None),
        };
        p.half_open_grace = if tls { 300_000 } else { 30_000 };
        p.stuck_timeout = Some(if tls { 300_000 } else { 60_000 });
        p.tcp_keep_alive = self.keep_alive.then_some(self.keep_alive_delay);
        p.no_delay = self.no_delay;
        p
    }
}

/// See the crate docs.
pub struct KeepAlive {
    global: Resolved,
    routes: HashMap<String, Resolved>,
}

impl Plugin for KeepAlive {
    fn init(config: &str) -> Result<Self, InitError> {
        let config: Options = serde_json::from_str(config)
            .map_err(|e| InitError::new(format!("keepalive config: {e}")))?;
        let global = DEFAULTS.apply(&config, "")?;
        let routes = config
            .routes
            .iter()
            .flatten()
            .map(|(name, o)| Ok((name.clone(), global.apply(o, &format!("routes.{name}"))?)))
            .collect::<Result<_, InitError>>()?;
        Ok(KeepAlive { global, routes })
    }

    fn info(&self) -> PluginInfo {
        PluginInfo::new("keepalive", env!("CARGO_PKG_VERSION")).hooks(Hooks::POLICY)
    }

    fn policy(&self, conn: &Connection, route: &Routed, _defaults: &Policy) -> PolicyDecision {
        let resolved = self.routes.get(&route.route).unwrap_or(&self.global);
        PolicyDecision::Set(resolved.policy(conn.tls.is_some()))
    }
}

turnout_plugin_sdk::export_plugin!(KeepAlive);
