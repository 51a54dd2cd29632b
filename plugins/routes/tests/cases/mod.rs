//! Test cases shared by the native and the wasm run, and their helpers.

mod actions;
mod certificates;
mod errors;
mod http;
mod http_security;
mod matching;
mod selection;

use turnout_plugin_sdk::prelude::*;
use turnout_plugin_sdk::testing::{CallError, Harness, peer};

/// Builds a harness for a config: native or wasm.
pub(crate) type Init<'a> = &'a dyn Fn(&str) -> Result<Harness, CallError>;

/// Every case, in order.
pub(crate) fn all(init: Init<'_>) {
    matching::domains(init);
    matching::client_ips(init);
    matching::ports(init);
    matching::tls_versions(init);
    selection::priority_and_specificity(init);
    selection::scaling(init);
    actions::forward_fields(init);
    actions::round_robin(init);
    actions::defaults(init);
    actions::empty_configs(init);
    actions::session_tickets(init);
    errors::bad_configs(init);
    http::routing(init);
    http::edits_and_templates(init);
    http::redirect_and_static(init);
    http::upstreams(init);
    http_security::basic_auth_and_ip_lists(init);
    http_security::rate_limits(init);
    http_security::terminated(init);
    http_security::host_that_is_the_sni(init);
    http_security::bad_configs(init);
    certificates::approval(init);
    certificates::declared_only_with_auto_routes(init);
}

/// A harness for `config`; panics if `init` fails.
pub(crate) fn load(init: Init<'_>, config: &str) -> Harness {
    init(config).unwrap_or_else(|e| panic!("init failed: {e}\nconfig: {config}"))
}

/// `{"routes": [...]}` from route objects.
pub(crate) fn config(routes: &[String]) -> String {
    format!(r#"{{"routes": [{}]}}"#, routes.join(",\n"))
}

/// A route named `name` with this `match` object, forwarding to 10.9.9.9:9000.
pub(crate) fn route(name: &str, matches: &str) -> String {
    route_with(name, matches, "")
}

/// Same, with extra route-level keys (`, "priority": 3`).
pub(crate) fn route_with(name: &str, matches: &str, extra: &str) -> String {
    format!(
        r#"{{"name": "{name}", "match": {matches}, "action": {{"type": "forward", "targets": [{{"host": "10.9.9.9", "port": 9000}}]}}{extra}}}"#
    )
}

/// The verdict's forward; panics on anything else.
pub(crate) fn forward(h: &mut Harness, conn: &Connection) -> Forward {
    match h.route(conn) {
        RouteDecision::Forward(f) => f,
        other => panic!("expected a forward for {conn:?}, got {other:?}"),
    }
}

/// The chosen route's name, `None` on pass.
pub(crate) fn chosen(h: &mut Harness, conn: &Connection) -> Option<String> {
    match h.route(conn) {
        RouteDecision::Forward(f) => Some(f.route),
        RouteDecision::Pass => None,
        RouteDecision::Reject(r) => panic!("the routes plugin never rejects, got {r:?}"),
    }
}

/// Asserts the route `conn` takes.
#[track_caller]
pub(crate) fn expect(h: &mut Harness, conn: &Connection, want: Option<&str>) {
    assert_eq!(chosen(h, conn).as_deref(), want, "{conn:?}");
}

/// A TLS connection from 10.0.0.1 with this SNI, taken as given (not
/// normalised the way the host does).
pub(crate) fn raw_sni(port: u16, sni: &str) -> Connection {
    let mut hello = ClientHello::without_sni();
    hello.sni = Some(sni.to_owned());
    Connection::tls(1, peer("10.0.0.1:5000", port), hello)
}

/// A TLS connection from 10.0.0.1 without SNI.
pub(crate) fn no_sni(port: u16) -> Connection {
    Connection::tls(1, peer("10.0.0.1:5000", port), ClientHello::without_sni())
}

/// Ranges as a sorted list, for comparing declared ports.
pub(crate) fn sorted(ranges: &[PortRange]) -> Vec<(u16, u16)> {
    let mut v: Vec<(u16, u16)> = ranges.iter().map(|r| (r.from, r.to)).collect();
    v.sort_unstable();
    v
}
