//! HTTP requests: which route serves one, its per-request security, and the
//! answer (forward with header edits, redirect, fixed response).
//!
//! * [`build()`] (at `init`): which routes see requests, the ports served as
//!   plaintext HTTP, the declared header slots and upstreams.
//! * [`matching`]: choosing the route for a request.
//! * [`security`]: `basicAuth` and `rateLimit`.
//! * [`templates`]: `{domain}`-style templates, parsed once.
//! * [`config`]: reading the HTTP keys of a route.
//! * [`websocket`]: reading `action.websocket`.
//!
//! A request's order: choose the route → 421 when Host and SNI name routes
//! with different certificates → IP lists (403) → basic auth (401) → rate
//! limit (429) → the action.

mod build;
pub(crate) mod config;
pub(crate) mod matching;
pub(crate) mod security;
pub(crate) mod templates;
pub(crate) mod websocket;

pub(crate) use build::build;

use turnout_plugin_sdk::matching::normalize_domain;
use turnout_plugin_sdk::{
    ClientHello, Connection, Field, HeaderEdit, HttpForward, Interest, Peer, PortRange, Redirect,
    RequestDecision, RequestHead, Response, Scheme,
};

use self::config::{Edit, Kind, StaticSpec};
use self::matching::Source;
use self::templates::{Context, Use};
use crate::config::Route;
use crate::table::Table;

/// The routes that see requests and what they were given at `init`.
#[derive(Debug, Default)]
pub(crate) struct Http {
    /// By priority (highest first), then config order.
    candidates: Vec<HttpRoute>,
    /// The header slots (the upstreams are made by [`Http::interest`]).
    interest: Interest,
    /// Upstreams numbered at `init`.
    upstream_count: u32,
    /// Ports where plaintext clients are served as HTTP.
    ports: Vec<PortRange>,
}

/// A route that sees requests.
#[derive(Debug)]
pub(crate) struct HttpRoute {
    /// Config index.
    pub(crate) index: usize,
    /// Served on terminated TLS (else on plaintext HTTP ports).
    pub(crate) tls: bool,
    /// Where each `match.headers` entry's value comes from, in order.
    pub(crate) headers: Vec<Source>,
    /// `Authorization`, when the route has basic auth.
    authorization: Option<Source>,
    /// The `rateLimit.headerName` header, when keyed by one.
    rate_key: Option<Source>,
    /// Forward routes: their declared upstreams.
    upstreams: Option<Upstreams>,
}

/// A forward route's upstreams: one per (preserved port, rotation of its
/// host lists), declared consecutively from `base`.
#[derive(Debug)]
struct Upstreams {
    base: u32,
    /// Sorted; empty when no target preserves the port.
    ports: Vec<u16>,
    /// At least 1.
    rotations: u32,
}

impl Upstreams {
    fn id(&self, port: u16, turn: u64) -> Option<u32> {
        let port_index = if self.ports.is_empty() {
            0
        } else {
            u32::try_from(self.ports.binary_search(&port).ok()?).ok()?
        };
        let rotations = self.rotations.max(1);
        // `turn % rotations` is below a u32.
        let turn = u32::try_from(turn % u64::from(rotations)).ok()?;
        self.base
            .checked_add(port_index.checked_mul(rotations)?)?
            .checked_add(turn)
    }
}

impl Http {
    /// Whether any route sees requests (else the hook is not declared).
    pub(crate) fn serves(&self) -> bool {
        !self.candidates.is_empty()
    }

    /// Header slots and upstreams for `PluginInfo`, the upstreams made
    /// from `routes` in the order their ids were given.
    pub(crate) fn interest(&self, routes: &[Route]) -> Interest {
        let mut interest = Interest {
            request_headers: self.interest.request_headers.clone(),
            response_headers: self.interest.response_headers.clone(),
            upstreams: Vec::with_capacity(self.upstream_count as usize),
        };
        let mut forwards: Vec<(&Upstreams, &HttpRoute)> = self
            .candidates
            .iter()
            .filter_map(|c| c.upstreams.as_ref().map(|u| (u, c)))
            .collect();
        forwards.sort_by_key(|(u, _)| u.base);
        for (up, c) in forwards {
            if let Some(route) = routes.get(c.index) {
                build::declare(route, c.tls, up, &mut interest);
            }
        }
        interest
    }

    /// The plaintext HTTP ports, sorted and disjoint.
    pub(crate) fn ports(&self) -> &[PortRange] {
        &self.ports
    }

    /// The `request` hook.
    pub(crate) fn request(&self, table: &Table, head: &RequestHead) -> RequestDecision {
        let host = normalize_domain(head.host());
        let Some(c) = matching::select(&self.candidates, table.routes(), head, &host) else {
            return RequestDecision::Pass;
        };
        let route = table.route(c.index);
        if misdirected(table, c.index, route, head, &host) {
            return RequestDecision::Respond(Response::text(421, "Misdirected Request"));
        }
        if let Some(refusal) = guard(c, route, head) {
            return RequestDecision::Respond(refusal);
        }
        act(c, route, head)
    }
}

/// On TLS, whether the route the SNI picks at connection level is another
/// one with another certificate: the client reused a connection whose
/// certificate does not cover this Host (RFC 9110 §15.5.20). When the SNI
/// picks no route of ours the certificate is unknown and the request goes on.
///
/// A Host that is the SNI is never misdirected: the certificate was chosen
/// for that very name, and a 421 would only send the client back with the
/// same SNI to the same answer. It is also nearly every request, and this
/// check skips the connection-level selection for it. `host` is the head's
/// host, normalised.
fn misdirected(table: &Table, index: usize, route: &Route, head: &RequestHead, host: &str) -> bool {
    let (Scheme::Https, Some(sni)) = (head.scheme, head.sni.as_deref()) else {
        return false;
    };
    let sni_name = sni.strip_suffix('.').unwrap_or(sni);
    if host.eq_ignore_ascii_case(sni_name) {
        return false;
    }
    let conn = Connection::tls(
        head.connection_id,
        Peer::new(head.client, head.listener_port),
        ClientHello::with_sni(sni),
    );
    table.select(&conn).is_some_and(|by_sni| {
        by_sni != index && table.route(by_sni).action.certificate != route.action.certificate
    })
}

/// IP lists, basic auth, rate limit: the refusal, if any.
fn guard(c: &HttpRoute, route: &Route, head: &RequestHead) -> Option<Response> {
    let security = &route.security;
    let ip = head.client.ip();
    if security.block.matches(ip) || (!security.allow.is_empty() && !security.allow.matches(ip)) {
        return Some(Response::text(403, "Forbidden"));
    }
    if let Some(auth) = &security.basic_auth {
        let value = c.authorization.as_ref().and_then(|s| s.value(head));
        if !auth.allows(head.path_only(), value.as_deref()) {
            return Some(auth.challenge());
        }
    }
    let limit = security.rate_limit.as_ref()?;
    let key = c.rate_key.as_ref().and_then(|s| s.value(head));
    limit.check(c.index, head, key.as_deref())
}

/// The route's action for this request.
fn act(c: &HttpRoute, route: &Route, head: &RequestHead) -> RequestDecision {
    let cx = Context {
        head,
        route: &route.name,
    };
    match &route.action.kind {
        Kind::Forward => {
            let turn = if route.action.round_robin() {
                crate::next_turn(c.index)
            } else {
                0
            };
            let Some(id) = c
                .upstreams
                .as_ref()
                .and_then(|u| u.id(head.listener_port, turn))
            else {
                // Every forward candidate declared upstreams for every
                // port it serves; nothing to send to means no opinion.
                return RequestDecision::Pass;
            };
            let mut forward = HttpForward::to(id);
            forward.request_edits = edits(&route.edits.request, &cx);
            forward.response_edits = edits(&route.edits.response, &cx);
            RequestDecision::Forward(forward)
        }
        Kind::Redirect(r) => RequestDecision::Redirect(Redirect {
            status: r.status,
            location: r.to.expand(&cx, Use::Location),
        }),
        Kind::Static(s) => RequestDecision::Respond(fixed(s, &route.edits.response, &cx)),
    }
}

fn edits(list: &[Edit], cx: &Context<'_>) -> Vec<HeaderEdit> {
    // Per request, and most routes edit nothing (see `edits_to_wit`).
    if list.is_empty() {
        return Vec::new();
    }
    list.iter()
        .map(|e| match &e.value {
            Some(t) => HeaderEdit::set(e.name.clone(), t.expand(cx, Use::Header)),
            None => HeaderEdit::remove(e.name.clone()),
        })
        .collect()
}

/// A static response. It stands in for a backend's, so the route's
/// `headers.response` edits apply to it as they would to a forwarded one.
fn fixed(s: &StaticSpec, response_edits: &[Edit], cx: &Context<'_>) -> Response {
    let mut headers: Vec<Field> = s
        .headers
        .iter()
        .map(|(name, t)| Field::new(name.clone(), t.expand(cx, Use::Header)))
        .collect();
    if s.default_content_type {
        headers.push(Field::new("content-type", "text/plain; charset=utf-8"));
    }
    for e in response_edits {
        headers.retain(|f| f.name != e.name);
        if let Some(t) = &e.value {
            headers.push(Field::new(e.name.clone(), t.expand(cx, Use::Header)));
        }
    }
    Response {
        status: s.status,
        headers,
        body: s.body.expand(cx, Use::Body).into_bytes(),
    }
}
