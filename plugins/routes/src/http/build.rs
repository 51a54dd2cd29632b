//! Building [`Http`] at `init`: which routes see requests, where, and
//! what the host is told (ports, header slots, upstreams).
//!
//! * A route with `action.tls` in a terminate mode sees the requests of the
//!   TLS connections it terminates, unless `match.protocol` is `"tcp"`.
//! * A route without `action.tls` is an *HTTP route* when it has
//!   `domains` (matched against Host), an HTTP-only key (`match.path`,
//!   `match.headers`, route `headers`, a redirect or static action,
//!   `basicAuth`, `rateLimit`) or `match.protocol: "http"`. Its ports are
//!   declared HTTP ports: plaintext clients there are served as HTTP.
//! * On those ports, plaintext clients get no connection-level verdict, so
//!   the other routes without `action.tls` that share a port (a catch-all
//!   forward) are served per request there too, rather than never.
//! * Passthrough routes never see requests: HTTP-only keys on them, or on
//!   a `"tcp"` route, are init errors.

use std::cmp::Reverse;

use turnout_plugin_sdk::{Interest, PortRange, TlsMode, Upstream};

use super::matching::Source;
use super::security::KeyBy;
use super::{Http, HttpRoute, Upstreams};
use crate::config::{Protocol, Result, Route, err};
use crate::table::merge;

/// Header slots the host accepts; further names are read by host call.
const MAX_SLOTS: usize = 64;
/// Ports one `"preserve"` HTTP route may serve: one upstream each.
const MAX_PRESERVED_PORTS: usize = 64;
/// Upstreams the host accepts from one plugin.
const MAX_UPSTREAMS: usize = 100_000;

/// See the module docs; errors name the route key at fault.
pub(crate) fn build(routes: &[Route]) -> Result<Http> {
    let enabled = || routes.iter().enumerate().filter(|(_, r)| r.enabled);
    let mut plain_ports = Vec::new();
    for (i, route) in enabled() {
        check(i, route)?;
        if http_route(route) {
            plain_ports.extend_from_slice(&route.ports);
        }
    }
    let ports = merge(plain_ports);
    let mut http = Http {
        ports,
        ..Http::default()
    };
    let mut next_upstream = 0;
    for (i, route) in enabled() {
        let Some(tls) = served(i, route, &http.ports)? else {
            continue;
        };
        let candidate = candidate(
            i,
            route,
            tls,
            &http.ports,
            &mut http.interest,
            &mut next_upstream,
        )?;
        http.candidates.push(candidate);
    }
    http.upstream_count = next_upstream;
    http.candidates.sort_by_key(|c| {
        (
            Reverse(routes.get(c.index).map_or(0, |r| r.priority)),
            c.index,
        )
    });
    if next_upstream as usize > MAX_UPSTREAMS {
        return err(
            "routes",
            format_args!(
                "{next_upstream} HTTP upstreams (at most {MAX_UPSTREAMS}; each preserved port and \
                 host-list rotation of a route is one)"
            ),
        );
    }
    Ok(http)
}

/// HTTP-only keys where no request will ever arrive.
fn check(i: usize, route: &Route) -> Result<()> {
    let Some(key) = route.http_feature() else {
        return Ok(());
    };
    if route.action.tls == Some(TlsMode::Passthrough) {
        return err(
            format_args!("routes[{i}].{key}"),
            "a \"passthrough\" route never sees HTTP requests (terminate TLS, or drop the key)",
        );
    }
    if route.protocol == Some(Protocol::Tcp) {
        return err(
            format_args!("routes[{i}].{key}"),
            "needs HTTP, but match.protocol is \"tcp\"",
        );
    }
    Ok(())
}

/// Whether the route makes its ports plaintext HTTP ports.
fn http_route(route: &Route) -> bool {
    route.action.tls.is_none()
        && route.protocol != Some(Protocol::Tcp)
        && route.tls_versions.is_empty()
        && (route.protocol == Some(Protocol::Http)
            || route.http_feature().is_some()
            || !route.domains.is_empty())
}

/// `Some(true)`: sees requests on terminated TLS; `Some(false)`: on
/// plaintext HTTP ports; `None`: never.
fn served(i: usize, route: &Route, http_ports: &[PortRange]) -> Result<Option<bool>> {
    match route.action.tls {
        Some(TlsMode::Terminate | TlsMode::TerminateAndReencrypt) => {
            return Ok((route.protocol != Some(Protocol::Tcp)).then_some(true));
        }
        Some(TlsMode::Passthrough) => return Ok(None),
        None => {}
    }
    if http_route(route) {
        return Ok(Some(false));
    }
    // A plain route that could match plaintext clients on an HTTP port.
    if !route.tls_versions.is_empty() || !route.domains.is_empty() {
        return Ok(None);
    }
    let shared = route
        .ports
        .iter()
        .find_map(|r| http_ports.iter().find_map(|h| overlap(*r, *h)));
    let Some(port) = shared else {
        return Ok(None);
    };
    if route.protocol == Some(Protocol::Tcp) {
        return err(
            format_args!("routes[{i}].match.protocol"),
            format_args!(
                "\"tcp\", but plaintext clients on port {port} are served as HTTP (an HTTP \
                 route shares it); give this route its own port"
            ),
        );
    }
    Ok(Some(false))
}

/// The first port in both ranges.
fn overlap(a: PortRange, b: PortRange) -> Option<u16> {
    let from = a.from.max(b.from);
    (from <= a.to.min(b.to)).then_some(from)
}

/// A declared header slot, or a host lookup once the slots run out.
fn source(interest: &mut Interest, name: &str) -> Source {
    if interest.request_headers.len() < MAX_SLOTS
        || interest.request_headers.iter().any(|n| n == name)
    {
        Source::Slot(interest.request_header(name))
    } else {
        Source::Lookup(name.to_owned())
    }
}

fn candidate(
    i: usize,
    route: &Route,
    tls: bool,
    http_ports: &[PortRange],
    interest: &mut Interest,
    next_upstream: &mut u32,
) -> Result<HttpRoute> {
    let headers = route
        .headers
        .iter()
        .map(|m| source(interest, &m.name))
        .collect();
    let security = &route.security;
    let authorization = security
        .basic_auth
        .is_some()
        .then(|| source(interest, "authorization"));
    let rate_key = match security.rate_limit.as_ref().map(|l| &l.key) {
        Some(KeyBy::Header(name)) => Some(source(interest, name)),
        _ => None,
    };
    let upstreams = if route.action.kind.is_forward() {
        Some(upstreams(i, route, tls, http_ports, next_upstream)?)
    } else {
        None
    };
    Ok(HttpRoute {
        index: i,
        tls,
        headers,
        authorization,
        rate_key,
        upstreams,
    })
}

/// Numbers a forward route's upstreams (from `next`): its targets as they
/// are for each port it may preserve and each rotation of its host lists.
/// The upstreams themselves are made only when the host asks ([`declare`]):
/// with ten thousand routes, keeping them too would not fit a plugin's
/// memory.
fn upstreams(
    i: usize,
    route: &Route,
    tls: bool,
    http_ports: &[PortRange],
    next: &mut u32,
) -> Result<Upstreams> {
    let action = &route.action;
    let mut ports = Vec::new();
    if action.preserves_port() {
        let serves = |p: u16| tls || http_ports.iter().any(|r| r.contains(p));
        'ranges: for r in &route.ports {
            for p in r.from..=r.to {
                if serves(p) {
                    ports.push(p);
                    if ports.len() > MAX_PRESERVED_PORTS {
                        break 'ranges;
                    }
                }
            }
        }
        if ports.len() > MAX_PRESERVED_PORTS {
            return err(
                format_args!("routes[{i}].action.targets"),
                format_args!(
                    "port \"preserve\" on an HTTP route needs one upstream per port: at most \
                     {MAX_PRESERVED_PORTS} ports in match.ports"
                ),
            );
        }
        ports.sort_unstable();
        ports.dedup();
    }
    let rotations = action.rotations();
    let base = *next;
    let count = u32::try_from(ports.len().max(1))
        .unwrap_or(u32::MAX)
        .saturating_mul(rotations);
    *next = next.saturating_add(count);
    Ok(Upstreams {
        base,
        ports,
        rotations,
    })
}

/// Appends `route`'s upstreams (as numbered by [`upstreams`]) to `interest`.
pub(super) fn declare(route: &Route, tls: bool, up: &Upstreams, interest: &mut Interest) {
    let action = &route.action;
    let max_requests = if tls {
        // Terminated connections already count against maxConnections.
        0
    } else {
        route.security.limits.max_connections
    };
    let listed: &[u16] = if up.ports.is_empty() { &[0] } else { &up.ports };
    for &port in listed {
        for turn in 0..up.rotations {
            let mut upstream =
                Upstream::new(route.name.clone(), action.backends(port, u64::from(turn)));
            upstream.tls = action.tls == Some(TlsMode::TerminateAndReencrypt);
            upstream.protocol = action.backend_protocol;
            upstream.max_requests = max_requests;
            upstream.max_body = action.max_body;
            upstream.websocket = action.websocket;
            interest.upstream(upstream);
        }
    }
}
