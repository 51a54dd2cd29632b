//! Per-request security (IP lists, basic auth, rate limits), 421
//! Misdirected Request on terminated TLS, and bad HTTP configs.

use turnout_plugin_sdk::prelude::*;
use turnout_plugin_sdk::testing::{CallError, Request, tls_conn};

use super::http::{header, responded, served};
use super::{Init, forward, load};

pub(crate) fn basic_auth_and_ip_lists(init: Init<'_>) {
    let config = r#"{"routes": [
      { "name": "ops", "match": { "ports": 80, "domains": "ops.test" },
        "action": { "type": "forward", "targets": [{ "host": "10.0.0.1", "port": 1 }] },
        "security": { "basicAuth": { "enabled": true, "realm": "Ops",
                        "users": [{ "username": "alice", "password": "secret" },
                                  { "username": "bob", "password": "hunter2" }],
                        "excludePaths": ["/health", "/public/*"] } } },
      { "name": "plain-realm", "match": { "ports": 80, "domains": "r.test" },
        "action": { "type": "forward", "targets": [{ "host": "10.0.0.2", "port": 1 }] },
        "security": { "basicAuth": { "users": [{ "username": "a", "password": "b" }] } } },
      { "name": "auth-off", "match": { "ports": 80, "domains": "off.test" },
        "action": { "type": "forward", "targets": [{ "host": "10.0.0.3", "port": 1 }] },
        "security": { "basicAuth": { "enabled": false, "users": [{ "username": "a", "password": "b" }] } } },
      { "name": "lists", "match": { "ports": 80, "domains": "ip.test" },
        "action": { "type": "forward", "targets": [{ "host": "10.0.0.4", "port": 1 }] },
        "security": { "ipAllowList": ["10.0.0.0/8"], "ipBlockList": ["10.66.*"] } }
    ]}"#;
    let mut h = load(init, config);
    let h = &mut h;
    assert!(
        h.info()
            .interest
            .request_headers
            .contains(&"authorization".to_owned())
    );
    let ops = |path: &str| Request::get("ops.test", path);
    // alice:secret, bob:hunter2
    let alice = "Basic YWxpY2U6c2VjcmV0";
    let bob = "basic Ym9iOmh1bnRlcjI=";
    assert_eq!(served(h, &ops("/").header("authorization", alice)), "ops");
    assert_eq!(served(h, &ops("/").header("Authorization", bob)), "ops");
    for bad in [
        "Basic YWxpY2U6c2VjcmV1",
        "Bearer YWxpY2U6c2VjcmV0",
        "Basic",
        "",
    ] {
        let r = responded(h, &ops("/").header("authorization", bad));
        assert_eq!(r.status, 401, "{bad:?}");
    }
    let r = responded(h, &ops("/private"));
    assert_eq!(r.status, 401);
    assert_eq!(header(&r, "www-authenticate"), Some(r#"Basic realm="Ops""#));
    assert_eq!(served(h, &ops("/health")), "ops", "excluded path");
    assert_eq!(
        served(h, &ops("/public/x.css?v=1")),
        "ops",
        "excluded prefix"
    );
    assert_eq!(served(h, &ops("/healthz")), "respond 401");

    let r = responded(h, &Request::get("r.test", "/"));
    assert_eq!(
        header(&r, "www-authenticate"),
        Some(r#"Basic realm="Restricted""#)
    );
    assert_eq!(served(h, &Request::get("off.test", "/")), "auth-off");

    let mut ip = |client: &str| served(h, &Request::get("ip.test", "/").client(client));
    assert_eq!(ip("10.1.1.1:1"), "lists");
    assert_eq!(ip("10.66.1.1:1"), "respond 403", "block list wins");
    assert_eq!(ip("192.0.2.9:1"), "respond 403", "not on the allow list");
}

pub(crate) fn rate_limits(init: Init<'_>) {
    let config = r#"{"routes": [
      { "name": "by-ip", "match": { "ports": 80, "domains": "ip.test" },
        "action": { "type": "forward", "targets": [{ "host": "10.0.0.1", "port": 1 }] },
        "security": { "rateLimit": { "enabled": true, "maxRequests": 2, "window": 60 } } },
      { "name": "by-key", "match": { "ports": 80, "domains": "key.test" },
        "action": { "type": "forward", "targets": [{ "host": "10.0.0.2", "port": 1 }] },
        "security": { "rateLimit": { "maxRequests": 1, "window": 10, "keyBy": "header",
                                     "headerName": "X-Api-Key", "errorMessage": "slow down" } } },
      { "name": "by-path", "match": { "ports": 80, "domains": "path.test" },
        "action": { "type": "forward", "targets": [{ "host": "10.0.0.3", "port": 1 }] },
        "security": { "rateLimit": { "maxRequests": 1, "window": 10, "keyBy": "path" } } }
    ]}"#;
    let mut h = load(init, config);
    let h = &mut h;
    assert!(
        h.info()
            .interest
            .request_headers
            .contains(&"x-api-key".to_owned())
    );
    let ip = |client: &str| Request::get("ip.test", "/").client(client);
    assert_eq!(served(h, &ip("10.0.0.1:1")), "by-ip");
    assert_eq!(served(h, &ip("10.0.0.1:2")), "by-ip");
    let r = responded(h, &ip("10.0.0.1:3"));
    assert_eq!(r.status, 429);
    assert_eq!(header(&r, "retry-after"), Some("60"));
    assert_eq!(r.body, b"Too Many Requests");
    assert_eq!(served(h, &ip("10.0.0.2:1")), "by-ip", "per client");
    h.host().advance_ms(60_001);
    assert_eq!(served(h, &ip("10.0.0.1:1")), "by-ip", "a new window");

    let key = |k: &str| Request::get("key.test", "/").header("x-api-key", k);
    assert_eq!(served(h, &key("a")), "by-key");
    let r = responded(h, &key("a"));
    assert_eq!(
        (r.status, r.body.as_slice()),
        (429, b"slow down".as_slice())
    );
    assert_eq!(header(&r, "retry-after"), Some("10"));
    assert_eq!(served(h, &key("b")), "by-key", "per header value");

    let path = |p: &str| Request::get("path.test", p);
    assert_eq!(served(h, &path("/a?x=1")), "by-path");
    assert_eq!(
        served(h, &path("/a?x=2")),
        "respond 429",
        "the query is not the path"
    );
    assert_eq!(served(h, &path("/b")), "by-path");
}

/// A request whose Host is the SNI is never 421, even when the connection
/// was routed to another route of that domain with another certificate:
/// the certificate was chosen for that very name, and a 421 would send the
/// client back to the same answer for ever.
pub(crate) fn host_that_is_the_sni(init: Init<'_>) {
    let routes = [
        r#"{"name": "site", "match": {"ports": 443, "domains": "a.test"},
            "action": {"type": "forward", "targets": [{"host": "site.internal", "port": 80}],
                       "tls": {"mode": "terminate", "certificate": {"key": "a.key", "cert": "a.pem"}}}}"#,
        r#"{"name": "api", "match": {"ports": 443, "domains": "a.test", "path": "/api/*"},
            "action": {"type": "forward", "targets": [{"host": "api.internal", "port": 80}],
                       "tls": {"mode": "terminate", "certificate": {"key": "api.key", "cert": "api.pem"}}}}"#,
        r#"{"name": "b", "match": {"ports": 443, "domains": "b.test"},
            "action": {"type": "forward", "targets": [{"host": "b.internal", "port": 80}],
                       "tls": {"mode": "terminate", "certificate": {"key": "b.key", "cert": "b.pem"}}}}"#,
    ];
    let routes = routes.map(String::from);
    let mut h = load(init, &super::config(&routes));
    let h = &mut h;
    let req = |sni: &str, host: &str, path: &str| Request::get(host, path).port(443).tls(sni);
    assert_eq!(served(h, &req("a.test", "a.test", "/")), "site");
    assert_eq!(served(h, &req("a.test", "a.test", "/api/x")), "api");
    assert_eq!(
        served(h, &req("a.test", "A.Test.:443", "/api/x")),
        "api",
        "case, port and trailing dot do not make it another name"
    );
    assert_eq!(served(h, &req("a.test.", "a.test", "/api/x")), "api");
    assert_eq!(served(h, &req("b.test", "a.test", "/")), "respond 421");
}

pub(crate) fn terminated(init: Init<'_>) {
    let route = |name: &str, domain: &str, tls: &str, extra: &str| {
        format!(
            r#"{{"name": "{name}", "match": {{"ports": 443, "domains": "{domain}"{extra}}},
                "action": {{"type": "forward", "targets": [{{"host": "{name}.internal", "port": 8443}}],
                            "tls": {tls}}}}}"#
        )
    };
    let cert_a = r#"{"mode": "terminate", "certificate": {"key": "a.key", "cert": "a.pem"}}"#;
    let cert_b =
        r#"{"mode": "terminate-and-reencrypt", "certificate": {"key": "b.key", "cert": "b.pem"}}"#;
    let routes = [
        route("a", "a.test", cert_a, ""),
        route("b", "b.test", cert_b, ""),
        route("c", "c.test", cert_a, ""),
        route("d", "d.test", r#"{"mode": "terminate"}"#, ""),
        route("e", "e.test", r#"{"mode": "terminate"}"#, ""),
        route(
            "raw",
            "raw.test",
            r#"{"mode": "terminate"}"#,
            r#", "protocol": "tcp""#,
        ),
        route("pass", "pass.test", r#"{"mode": "passthrough"}"#, ""),
    ];
    let mut h = load(init, &super::config(&routes));
    let h = &mut h;
    assert!(
        h.info().http_ports.is_empty(),
        "terminated routes serve HTTP on TLS"
    );
    let ups = &h.info().interest.upstreams;
    let routes_up: Vec<(&str, bool)> = ups.iter().map(|u| (u.route.as_str(), u.tls)).collect();
    assert_eq!(
        routes_up,
        [
            ("a", false),
            ("b", true),
            ("c", false),
            ("d", false),
            ("e", false)
        ],
        "one upstream per terminated HTTP route; TLS to the backend when re-encrypting"
    );
    assert!(ups.iter().all(|u| u.max_requests == 0));

    let req = |sni: &str, host: &str| Request::get(host, "/").port(443).tls(sni);
    assert_eq!(served(h, &req("a.test", "a.test")), "a");
    assert_eq!(served(h, &req("a.test", "b.test")), "respond 421");
    assert_eq!(served(h, &req("a.test", "c.test")), "c", "same certificate");
    assert_eq!(served(h, &req("d.test", "e.test")), "e", "both default");
    assert_eq!(served(h, &req("d.test", "a.test")), "respond 421");
    assert_eq!(
        served(h, &req("nothing.test", "a.test")),
        "a",
        "SNI of no route"
    );
    assert_eq!(
        served(h, &req("raw.test", "raw.test")),
        "pass",
        "protocol tcp"
    );
    assert_eq!(served(h, &req("pass.test", "pass.test")), "pass");
    assert_eq!(
        served(h, &Request::get("a.test", "/").port(443)),
        "pass",
        "no plaintext HTTP here"
    );
    let r = responded(h, &req("b.test", "a.test"));
    assert_eq!(r.body, b"Misdirected Request");
    // Connections are still routed by SNI.
    let f = forward(h, &tls_conn("10.0.0.1:5000", 443, "b.test"));
    assert_eq!(
        (f.route.as_str(), f.tls_mode),
        ("b", TlsMode::TerminateAndReencrypt)
    );
}

/// A config of one route on port 80 with these `match` additions, action
/// and route-level extras.
fn http_route(matches: &str, action: &str, extra: &str) -> String {
    format!(r#"{{"routes": [{{"match": {{"ports": 80{matches}}}, "action": {action}{extra}}}]}}"#)
}

const FWD: &str = r#"{"type": "forward", "targets": [{"host": "h", "port": 1}]}"#;

pub(crate) fn bad_configs(init: Init<'_>) {
    let sec = |s: &str| http_route("", FWD, &format!(r#", "security": {s}"#));
    let act = |a: &str| http_route("", a, "");
    let hdr = |h: &str| http_route("", FWD, &format!(r#", "headers": {h}"#));
    let cases: Vec<(String, &str)> = vec![
        (act(r#"{"type": "redirect", "redirect": {"to": "/x", "status": 300}}"#), "routes[0].action.redirect.status: must be one of 301, 302, 303, 307, 308, got 300"),
        (act(r#"{"type": "redirect", "redirect": {"to": "{domain}/x"}}"#), "routes[0].action.redirect.to: must be an absolute URL"),
        (act(r#"{"type": "redirect", "redirect": {"to": "https://{host}/"}}"#), "routes[0].action.redirect.to: unknown template {host}"),
        (act(r#"{"type": "redirect"}"#), "routes[0].action.redirect: required with \"type\": \"redirect\""),
        (act(r#"{"type": "redirect", "redirect": {"to": "/"}, "targets": [{"host": "h", "port": 1}]}"#), "routes[0].action.targets: a \"redirect\" route answers itself"),
        (act(r#"{"type": "forward", "targets": [{"host": "h", "port": 1}], "static": {}}"#), "routes[0].action.static: only with \"type\": \"static\""),
        (act(r#"{"type": "static", "static": {"root": "/var/www"}}"#), "routes[0].action.static.root: not supported by Turnout: Turnout serves no files"),
        (act(r#"{"type": "static", "static": {"status": 700}}"#), "routes[0].action.static.status: must be a status 200-599"),
        (act(r#"{"type": "static", "static": {"headers": {"content-length": "1"}}}"#), "routes[0].action.static.headers.content-length: the proxy frames"),
        (act(r#"{"type": "static", "static": {"body": "{nope}"}}"#), "routes[0].action.static.body: unknown template {nope}"),
        (act(r#"{"type": "forward", "targets": [{"host": "h", "port": 1}], "options": {"backendProtocol": "h3"}}"#), "routes[0].action.options.backendProtocol: \"h3\" is not one of"),
        (act(r#"{"type": "forward", "targets": [{"host": "h", "port": 1}], "options": {"timeout": 1}}"#), "routes[0].action.options: unknown field `timeout`"),
        (act(r#"{"type": "forward", "targets": [{"host": "h", "port": 1}], "options": {"maxBodySize": -1}}"#), "routes[0].action.options.maxBodySize: must be a whole number of bytes"),
        (hdr(r#"{"request": {"x-a": "{host}"}}"#), "routes[0].headers.request.x-a: unknown template {host}"),
        (hdr(r#"{"response": []}"#), "routes[0].headers.response: must be an object"),
        (hdr(r#"{"request": {"bad name": "1"}}"#), "routes[0].headers.request.bad name: \"bad name\" is not a header name"),
        (hdr(r#"{"request": {"x-a": 1}}"#), "routes[0].headers.request.x-a: must be a string"),
        (hdr(r#"{"request": {"x-a": "a\nb"}}"#), "routes[0].headers.request.x-a: '\\n' is not allowed here"),
        (http_route(r#", "headers": {"x-a": "/(/"}"#, FWD, ""), "routes[0].match.headers.x-a: invalid regex"),
        (http_route(r#", "protocol": "udp""#, FWD, ""), "routes[0].match.protocol: must be \"tcp\" or \"http\""),
        (sec(r#"{"basicAuth": {"users": []}}"#), "routes[0].security.basicAuth.users: required"),
        (sec(r#"{"basicAuth": {"users": [{"username": "a:b", "password": "c"}]}}"#), "routes[0].security.basicAuth.users[0].username: must be non-empty and without ':'"),
        (sec(r#"{"basicAuth": {"users": [{"username": "a", "pass": "c"}]}}"#), "routes[0].security.basicAuth.users[0]: unknown field `pass`"),
        (sec(r#"{"basicAuth": {"users": [{"username": "a", "password": "c"}], "realm": "a\"b"}}"#), "routes[0].security.basicAuth.realm: must not contain quotes"),
        (sec(r#"{"rateLimit": {"maxRequests": 1, "window": 1, "keyBy": "header"}}"#), "routes[0].security.rateLimit.headerName: required when keyBy is \"header\""),
        (sec(r#"{"rateLimit": {"maxRequests": 1, "window": 1, "keyBy": "cookie"}}"#), "routes[0].security.rateLimit.keyBy: \"cookie\" is not one of"),
        (sec(r#"{"rateLimit": {"maxRequests": 0, "window": 1}}"#), "routes[0].security.rateLimit.maxRequests: must be a whole number 1-"),
        (sec(r#"{"rateLimit": {"maxRequests": 1}}"#), "routes[0].security.rateLimit.window: required"),
        (sec(r#"{"jwtAuth": {}}"#), "routes[0].security.jwtAuth: not supported by Turnout"),
        (sec(r#"{"maxConnection": 1}"#), "routes[0].security.maxConnection: unknown key"),
        (
            http_route(r#", "path": "/x""#, r#"{"type": "forward", "targets": [{"host": "h", "port": 1}], "tls": {"mode": "passthrough"}}"#, ""),
            "routes[0].match.path: a \"passthrough\" route never sees HTTP requests",
        ),
        (
            http_route(r#", "protocol": "tcp""#, FWD, r#", "security": {"rateLimit": {"maxRequests": 1, "window": 1}}"#),
            "routes[0].security.rateLimit: needs HTTP, but match.protocol is \"tcp\"",
        ),
        (
            r#"{"routes": [{"match": {"ports": 80, "domains": "a.test"}, "action": {"type": "forward", "targets": [{"host": "h", "port": 1}]}},
                           {"match": {"ports": [80, 81], "protocol": "tcp"}, "action": {"type": "forward", "targets": [{"host": "h", "port": 1}]}}]}"#.to_owned(),
            "routes[1].match.protocol: \"tcp\", but plaintext clients on port 80 are served as HTTP",
        ),
        (
            r#"{"routes": [{"match": {"ports": [{"from": 1000, "to": 1100}], "protocol": "http"}, "action": {"type": "forward", "targets": [{"host": "h", "port": "preserve"}]}}]}"#.to_owned(),
            "routes[0].action.targets: port \"preserve\" on an HTTP route needs one upstream per port",
        ),
    ];
    for (config, text) in &cases {
        match init(config) {
            Err(CallError::Init(msg)) => {
                assert!(
                    msg.starts_with(text),
                    "{config}\n  want: {text}\n  got:  {msg}"
                );
            }
            Err(other) => panic!("{config}: expected an init error, got {other}"),
            Ok(_) => panic!("{config}: expected an init error starting {text:?}"),
        }
    }
}
