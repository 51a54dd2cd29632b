//! HTTP requests: choosing the route, templates and header edits,
//! redirects, static responses, declared ports and upstreams.

use turnout_plugin_sdk::prelude::*;
use turnout_plugin_sdk::testing::{Harness, Request, plain_conn};

use super::{Init, expect, load, sorted};

/// What a request got, in one comparable line: the route name of the
/// upstream it was forwarded to, a response status, a redirect or a pass.
pub(crate) fn served(h: &mut Harness, req: &Request) -> String {
    match h.request(req) {
        RequestDecision::Forward(f) => {
            let id = f.upstream.unwrap_or_else(|| panic!("no upstream: {f:?}"));
            let upstream = &h.info().interest.upstreams[id as usize];
            upstream.route.clone()
        }
        RequestDecision::Respond(r) => format!("respond {}", r.status),
        RequestDecision::Redirect(r) => format!("redirect {} {}", r.status, r.location),
        RequestDecision::Pass => "pass".to_owned(),
    }
}

/// The forward a request got; panics on anything else.
pub(crate) fn forwarded(h: &mut Harness, req: &Request) -> HttpForward {
    match h.request(req) {
        RequestDecision::Forward(f) => f,
        other => panic!("expected a forward for {req:?}, got {other:?}"),
    }
}

/// The response a request got; panics on anything else.
pub(crate) fn responded(h: &mut Harness, req: &Request) -> Response {
    match h.request(req) {
        RequestDecision::Respond(r) => r,
        other => panic!("expected a response for {req:?}, got {other:?}"),
    }
}

/// A response header's value as text.
pub(crate) fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .and_then(|f| std::str::from_utf8(&f.value).ok())
}

/// An HTTP route: `name`, a `match` object, forwarding to `host:1`.
fn fwd(name: &str, matches: &str) -> String {
    format!(
        r#"{{"name": "{name}", "match": {matches}, "action": {{"type": "forward", "targets": [{{"host": "{name}.internal", "port": 1}}]}}}}"#
    )
}

pub(crate) fn routing(init: Init<'_>) {
    let routes = [
        fwd("site", r#"{"ports": 8080, "domains": "example.com"}"#),
        fwd(
            "api",
            r#"{"ports": 8080, "domains": "example.com", "path": "/api/*"}"#,
        ),
        fwd(
            "apiv1",
            r#"{"ports": 8080, "domains": "example.com", "path": "/api/v1/*"}"#,
        ),
        fwd("wild", r#"{"ports": 8080, "domains": "*.example.com"}"#),
        fwd(
            "wildapi",
            r#"{"ports": 8080, "domains": "*.example.com", "path": "/api/*"}"#,
        ),
        fwd("www", r#"{"ports": 8080, "domains": "www.example.com"}"#),
        fwd(
            "canary",
            r#"{"ports": 8080, "domains": "example.com", "headers": {"X-Canary": "1"}}"#,
        ),
        fwd(
            "mobile",
            r#"{"ports": 8080, "domains": "example.com", "headers": {"user-agent": "/Mobile|Android/"}}"#,
        ),
        fwd(
            "office",
            r#"{"ports": 8080, "domains": "example.com", "path": "/", "clientIp": ["10.1.0.0/16"]}"#,
        ),
        r#"{"name": "admin", "priority": 5, "match": {"ports": 8080, "path": "/admin"}, "action": {"type": "forward", "targets": [{"host": "admin.internal", "port": 1}]}}"#
            .to_owned(),
        fwd("catch", r#"{"ports": 8080, "protocol": "http"}"#),
        fwd("twin", r#"{"ports": 8080, "protocol": "http"}"#),
        fwd(
            "users",
            r#"{"ports": 8080, "domains": "u.test", "path": "/users/:id"}"#,
        ),
    ];
    let mut h = load(init, &super::config(&routes));
    let h = &mut h;
    assert_eq!(sorted(&h.info().http_ports), [(8080, 8080)]);
    assert!(h.info().hooks.contains(Hooks::REQUEST | Hooks::ROUTE));
    let names = &h.info().interest.request_headers;
    assert!(names.contains(&"x-canary".to_owned()) && names.contains(&"user-agent".to_owned()));

    let get = |host: &str, path: &str| Request::get(host, path).port(8080);
    for (req, want) in [
        (get("example.com", "/"), "site"),
        (get("EXAMPLE.com:8080", "/x?y=1"), "site"),
        (get("example.com.", "/x"), "site"),
        (get("example.com", "/api/users"), "api"),
        (get("example.com", "/api/v1/users?x=/api"), "apiv1"),
        (get("example.com", "/api"), "site"),
        (get("a.b.example.com", "/"), "wild"),
        (get("a.example.com", "/api/x"), "wildapi"),
        // Exact domain beats wildcard, whatever the path.
        (get("www.example.com", "/api/x"), "www"),
        // More criteria beat fewer.
        (get("example.com", "/").header("x-canary", "1"), "canary"),
        (get("example.com", "/").header("x-canary", "2"), "site"),
        (
            get("example.com", "/").header("user-agent", "Foo Android 14"),
            "mobile",
        ),
        (
            get("example.com", "/").header("user-agent", "curl/8"),
            "site",
        ),
        (get("example.com", "/").client("10.1.2.3:5000"), "office"),
        // Priority beats specificity.
        (get("example.com", "/admin"), "admin"),
        (get("example.com", "/admin/x"), "site"),
        // No domain; then config order between equals.
        (get("other.org", "/"), "catch"),
        (get("", "/"), "catch"),
        (get("u.test", "/users/42"), "users"),
        (get("u.test", "/users/42/x"), "catch"),
    ] {
        assert_eq!(served(h, &req), want, "{req:?}");
    }
    // HTTPS requests only go to routes that terminate TLS.
    assert_eq!(
        served(h, &get("example.com", "/").tls("example.com")),
        "pass"
    );
    // Another port: nothing there.
    assert_eq!(
        served(h, &Request::get("example.com", "/").port(8081)),
        "pass"
    );

    // A domain route serves plain HTTP only to hosts it names.
    let mut h = load(
        init,
        &super::config(&[fwd("only", r#"{"ports": 80, "domains": "a.test"}"#)]),
    );
    let h = &mut h;
    assert_eq!(served(h, &Request::get("b.test", "/")), "pass");
    assert_eq!(served(h, &Request::get("", "/")), "pass");
    assert_eq!(served(h, &Request::get("a.test", "/")), "only");
}

pub(crate) fn edits_and_templates(init: Init<'_>) {
    let config = r#"{"routes": [
      { "name": "edit", "match": { "ports": 80, "domains": "*.example.com" },
        "headers": {
          "request": { "X-Client": "{clientIp}", "x-route": "{routeName}:{port}", "x-gone": "" },
          "response": { "x-seen": "{domain}{path}{query} #{connectionId}", "server": "" } },
        "action": { "type": "forward", "targets": [{ "host": "10.0.0.1", "port": 8080 }],
                    "options": { "backendProtocol": "http2", "maxBodySize": 1048576 },
                    "websocket": { "pingInterval": 5000, "pingTimeout": 2000 } },
        "security": { "maxConnections": 9 } }
    ]}"#;
    let mut h = load(init, config);
    let h = &mut h;
    let upstream = &h.info().interest.upstreams[0];
    assert_eq!(upstream.route, "edit");
    assert_eq!(upstream.targets, [Target::new("10.0.0.1", 8080)]);
    assert_eq!(upstream.protocol, BackendProtocol::Http2);
    assert_eq!(upstream.max_body, Some(1_048_576));
    assert_eq!(
        upstream.websocket,
        WebSocketPolicy {
            enabled: true,
            ping_interval: Some(5000),
            ping_timeout: 2000
        }
    );
    assert!(!upstream.tls);
    assert_eq!(
        upstream.max_requests, 9,
        "maxConnections of a plaintext route"
    );

    let req = Request::get("www.example.com:80", "/a/b?q=1")
        .client("[::ffff:192.0.2.7]:4000")
        .connection(77);
    let f = forwarded(h, &req);
    assert_eq!(f.upstream, Some(0));
    let mut request_edits = f.request_edits.clone();
    request_edits.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        request_edits,
        [
            HeaderEdit::remove("x-gone"),
            HeaderEdit::set("x-client", "192.0.2.7"),
            HeaderEdit::set("x-route", "edit:80"),
        ]
    );
    let mut response_edits = f.response_edits.clone();
    response_edits.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        response_edits,
        [
            HeaderEdit::remove("server"),
            HeaderEdit::set("x-seen", "www.example.com/a/b?q=1 #77"),
        ]
    );
}

pub(crate) fn redirect_and_static(init: Init<'_>) {
    let config = r#"{"routes": [
      { "name": "to-https", "match": { "ports": 80 },
        "action": { "type": "redirect", "redirect": { "to": "https://{domain}{path}{query}" } } },
      { "name": "moved", "match": { "ports": 81, "path": "/old/*" },
        "action": { "type": "redirect", "redirect": { "to": "/new{query}", "status": 308 } } },
      { "name": "maint", "match": { "ports": 82 },
        "headers": { "response": { "x-by": "{routeName}" } },
        "action": { "type": "static", "static": { "status": 503,
          "headers": { "Retry-After": "120", "Content-Type": "application/json" },
          "body": "{\"down\": \"{domain}\", \"port\": {port}}" } } },
      { "name": "plain", "match": { "ports": 83 },
        "action": { "type": "static", "static": { "body": "hello {clientIp}" } } },
      { "name": "empty", "match": { "ports": 84 },
        "action": { "type": "static", "static": {} } }
    ]}"#;
    let mut h = load(init, config);
    let h = &mut h;
    assert_eq!(sorted(&h.info().http_ports), [(80, 84)]);
    assert!(
        h.info().interest.upstreams.is_empty(),
        "nothing to forward to"
    );
    // Redirect and static routes answer requests, never connections.
    expect(h, &plain_conn("10.0.0.1:5000", 80), None);

    assert_eq!(
        served(h, &Request::get("example.com:80", "/a?b=1")),
        "redirect 301 https://example.com/a?b=1"
    );
    assert_eq!(
        served(h, &Request::get("x", "/old/page?q=2").port(81)),
        "redirect 308 /new?q=2"
    );
    assert_eq!(served(h, &Request::get("x", "/other").port(81)), "pass");

    let r = responded(h, &Request::get("site.test", "/").port(82));
    assert_eq!(r.status, 503);
    assert_eq!(header(&r, "retry-after"), Some("120"));
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    assert_eq!(
        header(&r, "x-by"),
        Some("maint"),
        "route response edits apply"
    );
    assert_eq!(r.body, br#"{"down": "site.test", "port": 82}"#);

    let r = responded(h, &Request::get("x", "/").port(83).client("10.2.3.4:1"));
    assert_eq!(r.status, 200);
    assert_eq!(
        header(&r, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(r.body, b"hello 10.2.3.4");

    let r = responded(h, &Request::get("x", "/").port(84));
    assert_eq!((r.status, r.headers.len(), r.body.len()), (200, 0, 0));
}

pub(crate) fn upstreams(init: Init<'_>) {
    let config = r#"{"routes": [
      { "name": "keep", "match": { "ports": [{ "from": 8000, "to": 8002 }], "protocol": "http" },
        "action": { "type": "forward", "targets": [{ "host": "10.0.0.1", "port": "preserve" }] } },
      { "name": "rr", "match": { "ports": 9000, "domains": "rr.test" },
        "action": { "type": "forward",
                    "targets": [{ "host": ["a.internal", "b.internal"], "port": 1 },
                                { "host": "c.internal", "port": 2 }] } },
      { "name": "tcp", "match": { "ports": 9001 },
        "action": { "type": "forward", "targets": [{ "host": "10.0.0.9", "port": 1 }] } },
      { "name": "tcp-too", "match": { "ports": [9000, 9002] },
        "action": { "type": "forward", "targets": [{ "host": "10.0.0.8", "port": 1 }],
                    "websocket": { "enabled": false, "pingInterval": 0 } } }
    ]}"#;
    let mut h = load(init, config);
    let h = &mut h;
    assert_eq!(sorted(&h.info().http_ports), [(8000, 8002), (9000, 9000)]);
    assert_eq!(
        sorted(&h.info().listen),
        [(8000, 8002), (9000, 9000), (9001, 9002)]
    );
    let ups = &h.info().interest.upstreams;
    let summary: Vec<(String, String)> = ups
        .iter()
        .map(|u| {
            let t: Vec<String> = u
                .targets
                .iter()
                .map(|t| format!("{}:{}", t.host, t.port))
                .collect();
            (u.route.clone(), t.join(","))
        })
        .collect();
    let want = [
        ("keep", "10.0.0.1:8000"),
        ("keep", "10.0.0.1:8001"),
        ("keep", "10.0.0.1:8002"),
        ("rr", "a.internal:1,b.internal:1,c.internal:2"),
        ("rr", "b.internal:1,a.internal:1,c.internal:2"),
        // A plain route sharing an HTTP port is served per request there.
        ("tcp-too", "10.0.0.8:1"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(summary, want);
    // `action.websocket`: SmartProxy's defaults, or the route's own.
    assert_eq!(ups[0].websocket, WebSocketPolicy::default());
    assert_eq!(
        (
            ups[0].websocket.ping_interval,
            ups[0].websocket.ping_timeout
        ),
        (Some(30_000), 10_000)
    );
    let off = ups[5].websocket;
    assert!(!off.enabled && off.ping_interval.is_none());

    let f = forwarded(h, &Request::get("x", "/").port(8001));
    assert_eq!(f.upstream, Some(1), "the upstream preserving port 8001");
    // Round robin shares the connection path's counter.
    let turns: Vec<Option<u32>> = (0..3)
        .map(|_| forwarded(h, &Request::get("rr.test", "/").port(9000)).upstream)
        .collect();
    assert_eq!(turns, [Some(3), Some(4), Some(3)]);
    assert_eq!(
        served(h, &Request::get("other.test", "/").port(9000)),
        "tcp-too"
    );
    // The port's TCP route still routes connections on other ports.
    expect(h, &plain_conn("10.0.0.1:5000", 9002), Some("tcp-too"));
    expect(h, &plain_conn("10.0.0.1:5000", 9001), Some("tcp"));
}
