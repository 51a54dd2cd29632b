//! The `routes` default plugin: SmartProxy route lists, pasted unchanged,
//! decide where each connection goes.
//!
//! Config (the host passes it): `{"routes": [...], "defaults": {...} | null}`,
//! optionally `"sendProxyProtocol"` (the default for routes that do not say)
//! and `"allowSessionTicket"` (default `true`; `false` refuses a TLS
//! resumption that carries no SNI with `session-ticket-without-sni` and a
//! handshake-failure alert, so the client retries with a full handshake).
//!
//! A route is `{ name, priority, match, action, security }`:
//!
//! * `match.ports` (required): `443`, `[80, 443]`, `[{"from": 8000, "to":
//!   8010}]` or a mix. The plugin asks the host to listen on the union; ports
//!   of routes that need the ClientHello (`domains`, `tlsVersion` or
//!   `action.tls`) are declared TLS ports.
//! * `match.domains`: a string or list; absent = every domain. Case, outer
//!   whitespace and one trailing dot are ignored; `*` matches any run of
//!   characters including dots (`*.example.com` matches `a.b.example.com`,
//!   not `example.com`). A route with domains never matches a connection
//!   without SNI (plain connections included).
//! * `match.clientIp`: exact addresses, CIDR, `a-b` ranges, `192.168.*`;
//!   `::ffff:1.2.3.4` is `1.2.3.4`.
//! * `match.tlsVersion`: e.g. `["TLSv1.3"]`; matches when the ClientHello
//!   offers any listed version; never matches a plain connection.
//! * `match.path` / `match.headers` select HTTP requests, which exist only
//!   on terminated HTTP routes: they are checked and kept, but such a route
//!   never matches a connection at L4.
//! * An empty list (`ports`, `domains`, `clientIp`, `tlsVersion`,
//!   `targets`) is an error rather than a guess at what it means.
//!
//! Choosing among matches: highest `priority` (missing = 0); then the most
//! specific — exact domain over wildcard over none, more criteria over
//! fewer, a longer wildcard over a shorter one; then config order. The
//! order is fixed at `init` and the lookup is indexed (see `table`), so a
//! route call costs about the same with ten routes or ten thousand.
//!
//! `action`: `type` must be `"forward"`; `targets` (or the older single
//! `target`, or `defaults.target`) are `{host, port}` with `host` a string or
//! a list and `port` a number or `"preserve"` (the port the client hit).
//! Targets are tried in order; a host list is round-robin, shared by every
//! instance through the host store (`rr:<route index>`), and the verdict
//! lists the remaining hosts after the chosen one so the host fails over to
//! them. `tls.mode` is `passthrough`, `terminate` or
//! `terminate-and-reencrypt` (`tls.certificate` is the host's concern);
//! `sendProxyProtocol` is `true` (v1), `"v2"` or `false`.
//!
//! `security.maxConnections` / `maxConnectionsPerIP` become the route's
//! limits (0 = unlimited, counted by the host); `security.ipBlockList` and
//! `ipAllowList` are checked against the client once the route is chosen
//! (block wins; an empty allow list allows all) and refuse with
//! `ip-blocked` / `ip-not-allowed` and an `access_denied` alert. Proxy-wide
//! lists and limits are the `guard` plugin's.
//! `enabled: false` turns a route off; `id`, `description`, `tags` are
//! ignored. SmartProxy keys Turnout does not implement (`action.nftables`,
//! `action.websocket`, …) are refused by name, unknown keys too, and every
//! error names its path (`routes[2].match.ports: port 0 is out of range
//! 1-65535`).
//!
//! No route matches → `pass`: the host sends TLS clients `unrecognized_name`
//! and closes plain connections.

mod action;
mod config;
mod matcher;
mod table;

use turnout_plugin_sdk::prelude::*;

use crate::table::Table;

/// See the crate docs.
#[derive(Debug)]
pub struct Routes {
    table: Table,
    allow_session_ticket: bool,
}

impl Plugin for Routes {
    fn init(config: &str) -> Result<Self, InitError> {
        let parsed = config::parse(config)?;
        Ok(Routes {
            table: Table::new(parsed.routes),
            allow_session_ticket: parsed.allow_session_ticket,
        })
    }

    fn info(&self) -> PluginInfo {
        let (plain, tls) = self.table.listen();
        PluginInfo::new("routes", env!("CARGO_PKG_VERSION"))
            .hooks(Hooks::ROUTE)
            .listen(plain)
            .listen_tls(tls)
    }

    fn route(&self, conn: &Connection) -> RouteDecision {
        // SmartProxy's `allowSessionTicket: false`: a resumption that names
        // no server cannot be routed by SNI, so it is refused and the
        // client retries with a full handshake (and its SNI).
        if !self.allow_session_ticket
            && conn
                .tls
                .as_ref()
                .is_some_and(|h| h.sni.is_none() && h.resumption_without_sni)
        {
            return RouteDecision::reject(
                "session-ticket-without-sni",
                Some(TlsAlert::HandshakeFailure),
            );
        }
        let Some(index) = self.table.select(conn) else {
            return RouteDecision::Pass;
        };
        let route = self.table.route(index);
        let client = conn.peer.ip();
        if route.security.block.matches(client) {
            return RouteDecision::reject("ip-blocked", Some(TlsAlert::AccessDenied));
        }
        if !route.security.allow.is_empty() && !route.security.allow.matches(client) {
            return RouteDecision::reject("ip-not-allowed", Some(TlsAlert::AccessDenied));
        }
        let action = &route.action;
        let turn = if action.round_robin() {
            next_turn(index)
        } else {
            0
        };
        let targets = action.backends(conn.peer.listener_port, turn);
        RouteDecision::Forward(
            Forward::new(route.name.clone(), targets)
                .tls_mode(action.tls.unwrap_or_default())
                .proxy_protocol(action.proxy_protocol.unwrap_or_default())
                .limits(route.security.limits),
        )
    }
}

/// The round-robin turn of route `index`, shared by every instance: 0 for
/// the first connection, then 1, 2… (0 if the store fails).
fn next_turn(index: usize) -> u64 {
    host::kv_increment(&format!("rr:{index}"), 1, None)
        .ok()
        .and_then(|n| u64::try_from(n.saturating_sub(1)).ok())
        .unwrap_or(0)
}

turnout_plugin_sdk::export_plugin!(Routes);
