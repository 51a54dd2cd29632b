//! The `routes` default plugin: SmartProxy route lists, pasted unchanged,
//! decide where each connection goes and how each HTTP request is served.
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
//! * `match.path` (exact, `*`, `:param`, prefix when ending in `/` or `*`)
//!   and `match.headers` (name → exact value or `/regex/`; an absent
//!   header never matches) select HTTP requests only.
//! * `match.protocol`: `"http"` (the default for terminated routes) or
//!   `"tcp"` (relay the decrypted bytes; no requests).
//! * An empty list (`ports`, `domains`, `clientIp`, `tlsVersion`,
//!   `targets`) is an error rather than a guess at what it means.
//!
//! Choosing among matches: highest `priority` (missing = 0); then the most
//! specific — exact domain over wildcard over none, more criteria over
//! fewer, a longer wildcard over a shorter one; then config order. The
//! order is fixed at `init` and the lookup is indexed (see `table`), so a
//! route call costs about the same with ten routes or ten thousand.
//!
//! `action`: `type` is `"forward"` (or, for HTTP, `"redirect"` /
//! `"static"`: see below); `targets` (or the older single
//! `target`, or `defaults.target`) are `{host, port}` with `host` a string or
//! a list and `port` a number or `"preserve"` (the port the client hit).
//! Targets are tried in order; a host list is round-robin, shared by every
//! instance through the host store (`rr:<route index>`), and the verdict
//! lists the remaining hosts after the chosen one so the host fails over to
//! them. `tls.mode` is `passthrough`, `terminate` or
//! `terminate-and-reencrypt` (`tls.certificate` is the host's to load;
//! compared here for 421, and `"auto"` approves on-demand certificates:
//! see below);
//! `sendProxyProtocol` is `true` (v1), `"v2"` or `false`.
//!
//! `security.maxConnections` / `maxConnectionsPerIP` become the route's
//! limits (0 = unlimited, counted by the host); `security.ipBlockList` and
//! `ipAllowList` are checked against the client once the route is chosen
//! (block wins; an empty allow list allows all) and refuse with
//! `ip-blocked` / `ip-not-allowed` and an `access_denied` alert (per
//! request on HTTP, with 403). `basicAuth` and `rateLimit` are per request;
//! `authentication` and `jwtAuth` are refused. Proxy-wide lists and limits
//! are the `guard` plugin's.
//! `enabled: false` turns a route off; `id`, `description`, `tags` are
//! ignored. SmartProxy keys Turnout does not implement (`action.nftables`,
//! `action.websocket.maxPayloadSize`, …) are refused by name, unknown keys too, and every
//! error names its path (`routes[2].match.ports: port 0 is out of range
//! 1-65535`).
//!
//! No route matches → `pass`: the host sends TLS clients `unrecognized_name`
//! and closes plain connections.
//!
//! # HTTP requests (the `request` hook; see `http`)
//!
//! Which routes see requests: terminate-mode routes (`action.tls`) on the
//! TLS connections they terminate, unless `match.protocol` is `"tcp"`; and
//! *HTTP routes* — no `action.tls`, and `domains`, an HTTP-only key
//! (`path`, `match.headers`, route `headers`, a redirect or static action,
//! `basicAuth`, `rateLimit`) or `match.protocol: "http"`. HTTP routes'
//! ports are declared HTTP ports (`listen_http`): plaintext clients there
//! are served as HTTP; TLS clients there still go through `route` by SNI.
//! A plain forward route sharing such a port is served per request there
//! (a `"tcp"` one is an init error: it could never be reached). A plaintext
//! route with an HTTP-only key is left out of connection routing (it would
//! bypass its path, auth or redirect); passthrough routes never see
//! requests, so HTTP-only keys on them are init errors.
//!
//! A request is matched on its port and scheme (HTTPS only to terminate
//! routes, HTTP only to routes without `action.tls`), Host (port and one
//! trailing dot stripped; SmartProxy wildcards), path (query ignored),
//! headers and client IP; ranked by priority, then exact domain over
//! wildcard over none, longer path, more criteria, longer wildcard, config
//! order. Then:
//!
//! 1. on TLS, when the Host is not the SNI and the SNI picks another route
//!    at connection level whose `action.tls.certificate` differs (absent =
//!    the default certificate): `421 Misdirected Request`;
//! 2. `ipBlockList` / `ipAllowList` → `403`;
//! 3. `security.basicAuth: { enabled, users: [{username, password}], realm,
//!    excludePaths }` (`enabled` defaults to true; realm `"Restricted"`;
//!    excluded paths use the path patterns) → `401` with
//!    `WWW-Authenticate: Basic realm="…"`;
//! 4. `security.rateLimit: { enabled, maxRequests, window (s), keyBy:
//!    "ip" | "path" | "header", headerName, errorMessage }`: a fixed window
//!    counted in the host store (`rl:<route index>:<key>`; a request without
//!    the header is keyed by its IP; a store failure lets it through) →
//!    `429` with `Retry-After: <window>` and `errorMessage` ("Too Many
//!    Requests");
//! 5. the action: `forward` → the route's declared upstream (one per
//!    preserved port — at most 64 — and per host-list rotation, round robin
//!    on `rr:<route index>` as connections are), with route `headers: {
//!    request, response }` as set edits (`""` removes); `redirect` →
//!    `action.redirect: { to, status (301; 301/302/303/307/308) }`; `static`
//!    → `action.static: { status (200), headers, body }` (text/plain when a
//!    body has no content-type; route response edits apply). Redirect and
//!    static routes take no targets; SmartProxy's file keys (`root`, …) are
//!    refused: Turnout serves no files.
//!
//! Templates in header values, `redirect.to` and static headers and body:
//! `{clientIp}`, `{domain}`, `{port}` (listener), `{path}`, `{query}` (`?…`
//! or empty), `{routeName}`, `{connectionId}`; any other `{name}` is an init
//! error, other braces are text. `action.options.backendProtocol`: `"auto"`,
//! `"http1"`, `"http2"`; `action.options.maxBodySize`: bytes (a larger
//! request body is a 413, from the host). An upstream's `max_requests` is the route's
//! `maxConnections` on plaintext HTTP (terminated connections are already
//! counted). The declared header slots: every `match.headers` name,
//! `authorization` for basic auth, `rateLimit.headerName`s.
//! No route for a request → `pass` (the host answers 404).
//!
//! # On-demand certificates (the `approve-certificate` hook; see `certificates`)
//!
//! When a TLS client names a server the host has no certificate for and
//! the host may order one (ACME), it asks whether to. The answer is
//! `approve` when an enabled terminate or terminate-and-reencrypt route with
//! `action.tls.certificate: "auto"` lists a `match.domains` pattern covering
//! the name — matched as SNI routing matches (`api.example.com`,
//! `*.example.com` for `a.b.example.com`), whatever the route's ports or
//! client IPs; `refuse` (`no-auto-route`) when only routes without `"auto"`
//! list it; `pass` when no route lists it (everyone passing is a refusal).
//! A route without `match.domains` approves nothing. The hook is declared
//! only when some `"auto"` route lists domains.

mod action;
mod certificates;
mod config;
mod http;
mod matcher;
mod table;

use turnout_plugin_sdk::prelude::*;

use crate::certificates::Certificates;
use crate::http::Http;
use crate::table::{Table, subtract};

/// See the crate docs.
#[derive(Debug)]
pub struct Routes {
    table: Table,
    http: Http,
    certificates: Certificates,
    allow_session_ticket: bool,
}

impl Plugin for Routes {
    fn init(config: &str) -> Result<Self, InitError> {
        let parsed = config::parse(config)?;
        let http = http::build(&parsed.routes)?;
        let certificates = Certificates::new(&parsed.routes);
        Ok(Routes {
            table: Table::new(parsed.routes),
            http,
            certificates,
            allow_session_ticket: parsed.allow_session_ticket,
        })
    }

    fn info(&self) -> PluginInfo {
        let (plain, tls) = self.table.listen();
        let http_ports = self.http.ports();
        // HTTP ports are declared once, as such (they are TLS ports too).
        let mut hooks = if self.http.serves() {
            Hooks::ROUTE | Hooks::REQUEST
        } else {
            // A pure L4 table: no request ever needs this plugin.
            Hooks::ROUTE
        };
        if self.certificates.any_auto() {
            hooks = hooks | Hooks::APPROVE_CERTIFICATE;
        }
        PluginInfo::new("routes", env!("CARGO_PKG_VERSION"))
            .hooks(hooks)
            .listen(subtract(&plain, http_ports))
            .listen_tls(subtract(&tls, http_ports))
            .listen_http(http_ports.iter().copied())
            .interest(self.http.interest(self.table.routes()))
    }

    fn request(&self, head: &RequestHead) -> RequestDecision {
        self.http.request(&self.table, head)
    }

    fn approve_certificate(
        &self,
        name: &str,
        _client: std::net::SocketAddr,
    ) -> CertificateDecision {
        self.certificates.decide(name)
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
pub(crate) fn next_turn(index: usize) -> u64 {
    host::kv_increment(&format!("rr:{index}"), 1, None)
        .ok()
        .and_then(|n| u64::try_from(n.saturating_sub(1)).ok())
        .unwrap_or(0)
}

turnout_plugin_sdk::export_plugin!(Routes);
