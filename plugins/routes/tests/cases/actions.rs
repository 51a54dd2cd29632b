//! What a forward verdict carries: targets, TLS mode, PROXY header, limits.

use turnout_plugin_sdk::prelude::*;
use turnout_plugin_sdk::testing::{plain_conn, tls_conn};

use super::{Init, config, expect, forward, load, route, sorted};

const ACTIONS: &str = r#"{"routes": [
  { "name": "rr", "match": { "ports": 3000 },
    "action": { "type": "forward",
                "targets": [{ "host": ["a.internal", "b.internal"], "port": 1 },
                            { "host": "c.internal", "port": 2 }] } },
  { "name": "old", "match": { "ports": 3001 },
    "action": { "type": "forward", "target": { "host": "10.0.0.5", "port": 22 } } },
  { "name": "term", "match": { "ports": 3002, "domains": "www.example.com" },
    "action": { "type": "forward", "targets": [{ "host": "10.0.1.10", "port": 8080 }],
                "tls": { "mode": "terminate",
                         "certificate": { "key": "/etc/k.pem", "cert": "/etc/c.pem" } },
                "sendProxyProtocol": true },
    "security": { "maxConnections": 5, "maxConnectionsPerIP": 2,
                  "ipAllowList": ["10.0.0.0/8"], "ipBlockList": ["10.66.0.0/16"] } },
  { "name": "reenc", "match": { "ports": 3003 },
    "action": { "type": "forward", "targets": [{ "host": "10.0.1.11", "port": 8443 }],
                "tls": { "mode": "terminate-and-reencrypt", "certificate": "auto" },
                "sendProxyProtocol": "v2" },
    "security": { "maxConnections": 7 } },
  { "match": { "ports": 3004 }, "priority": 2, "id": "x", "description": "no name", "tags": ["t"],
    "action": { "type": "forward", "targets": [{ "host": " 10.0.1.12 ", "port": 1 }],
                "tls": { "mode": "passthrough" }, "sendProxyProtocol": false } },
  { "name": "off", "enabled": false, "match": { "ports": 3005 },
    "action": { "type": "forward", "targets": [{ "host": "10.0.1.13", "port": 1 }] } },
  { "name": "http", "match": { "ports": 3006, "path": "/api/*", "headers": { "x-env": "/^prod/" } },
    "action": { "type": "forward", "targets": [{ "host": "10.0.1.14", "port": 1 }] } },
  { "name": "on", "enabled": true, "match": { "ports": 3007 },
    "action": { "type": "forward", "targets": [{ "host": "10.0.1.15", "port": 1 }] } }
]}"#;

pub(crate) fn forward_fields(init: Init<'_>) {
    let mut h = load(init, ACTIONS);
    let h = &mut h;
    assert_eq!(
        sorted(&h.info().listen),
        [(3000, 3001), (3002, 3004), (3006, 3006), (3007, 3007)],
        "a disabled route is not listened for (3006 is declared as an HTTP port)"
    );
    assert_eq!(
        sorted(&h.info().tls_ports),
        [(3002, 3004), (3006, 3006)],
        "routes with action.tls, and the HTTP route's port (TLS clients there go the TLS way)"
    );
    assert_eq!(
        sorted(&h.info().http_ports),
        [(3006, 3006)],
        "the HTTP route"
    );

    let f = forward(h, &plain_conn("10.0.0.1:5000", 3001));
    assert_eq!(f.route, "old");
    assert_eq!(
        f.targets,
        [Target::new("10.0.0.5", 22)],
        "the older `target` form"
    );
    assert_eq!(f.tls_mode, TlsMode::Passthrough);
    assert_eq!(f.proxy_protocol, ProxyProtocol::None);
    assert_eq!(f.limits, RouteLimits::unlimited());

    let f = forward(h, &tls_conn("10.0.0.1:5000", 3002, "www.example.com"));
    assert_eq!(f.route, "term");
    assert_eq!(f.tls_mode, TlsMode::Terminate);
    assert_eq!(f.proxy_protocol, ProxyProtocol::V1);
    assert_eq!(f.limits, RouteLimits::new(5, 2));

    // The chosen route's own lists: block wins, then the allow list.
    for (client, reason) in [
        ("10.66.1.2:5000", "ip-blocked"),
        ("[::ffff:10.66.0.9]:5000", "ip-blocked"),
        ("192.0.2.1:5000", "ip-not-allowed"),
    ] {
        assert_eq!(
            h.route(&tls_conn(client, 3002, "www.example.com")),
            RouteDecision::reject(reason, Some(TlsAlert::AccessDenied)),
            "{client}"
        );
    }
    assert_eq!(
        forward(h, &tls_conn("10.65.0.1:5000", 3002, "www.example.com")).route,
        "term"
    );

    let f = forward(h, &tls_conn("10.0.0.1:5000", 3003, "any"));
    assert_eq!(f.route, "reenc");
    assert_eq!(f.tls_mode, TlsMode::TerminateAndReencrypt);
    assert_eq!(f.proxy_protocol, ProxyProtocol::V2);
    assert_eq!(f.limits, RouteLimits::new(7, 0));

    let f = forward(h, &tls_conn("10.0.0.1:5000", 3004, "any"));
    assert_eq!(f.route, "route-4", "unnamed routes are named by index");
    assert_eq!(f.targets, [Target::new("10.0.1.12", 1)], "host trimmed");
    assert_eq!(f.tls_mode, TlsMode::Passthrough);
    assert_eq!(f.proxy_protocol, ProxyProtocol::None);

    expect(h, &plain_conn("10.0.0.1:5000", 3005), None);
    // HTTP-only criteria never match at L4.
    expect(h, &plain_conn("10.0.0.1:5000", 3006), None);
    expect(h, &plain_conn("10.0.0.1:5000", 3007), Some("on"));
}

pub(crate) fn round_robin(init: Init<'_>) {
    let mut h = load(init, ACTIONS);
    let h = &mut h;
    let conn = plain_conn("10.0.0.1:5000", 3000);
    let mut firsts = Vec::new();
    for turn in 0..4 {
        let f = forward(h, &conn);
        assert_eq!(f.route, "rr");
        let (a, b) = (Target::new("a.internal", 1), Target::new("b.internal", 1));
        let c = Target::new("c.internal", 2);
        let want = if turn % 2 == 0 { [a, b, c] } else { [b, a, c] };
        assert_eq!(
            f.targets, want,
            "turn {turn}: rotated, then the next target"
        );
        firsts.push(f.targets[0].host.clone());
    }
    assert_eq!(
        firsts,
        ["a.internal", "b.internal", "a.internal", "b.internal"]
    );
    assert_eq!(
        h.host().kv().get("rr:0", 0),
        Some(4i64.to_le_bytes().to_vec()),
        "the turn is shared through the host store"
    );
    // A single-host route does not touch the store.
    forward(h, &plain_conn("10.0.0.1:5000", 3001));
    assert_eq!(h.host().kv().get("rr:1", 0), None);

    // Another instance continues the same rotation.
    h.host()
        .kv()
        .set("rr:0", &7i64.to_le_bytes(), None, 0)
        .unwrap();
    assert_eq!(forward(h, &conn).targets[0].host, "b.internal");
}

pub(crate) fn defaults(init: Init<'_>) {
    let mut h = load(
        init,
        r#"{"routes": [
             { "name": "bare", "match": { "ports": 5000 }, "action": { "type": "forward" } },
             { "name": "own", "match": { "ports": 5001 },
               "action": { "type": "forward", "targets": [{ "host": "10.0.0.1", "port": 1 }],
                           "sendProxyProtocol": false } }
           ],
           "defaults": { "target": { "host": "10.0.0.9", "port": "preserve" },
                         "security": { "ipAllowList": ["10.0.0.0/8"] } },
           "sendProxyProtocol": true }"#,
    );
    let f = forward(&mut h, &plain_conn("10.0.0.1:5000", 5000));
    assert_eq!(
        f.targets,
        [Target::new("10.0.0.9", 5000)],
        "defaults.target"
    );
    assert_eq!(
        f.proxy_protocol,
        ProxyProtocol::V1,
        "global sendProxyProtocol"
    );
    let f = forward(&mut h, &plain_conn("10.0.0.1:5000", 5001));
    assert_eq!(f.targets, [Target::new("10.0.0.1", 1)]);
    assert_eq!(
        f.proxy_protocol,
        ProxyProtocol::None,
        "the route's own choice"
    );
}

pub(crate) fn empty_configs(init: Init<'_>) {
    for config in [
        "{}",
        r#"{"routes": [], "defaults": null}"#,
        r#"{"routes": [], "defaults": {}}"#,
    ] {
        let mut h = load(init, config);
        assert!(h.info().listen.is_empty(), "{config}");
        assert!(h.info().tls_ports.is_empty(), "{config}");
        expect(&mut h, &tls_conn("10.0.0.1:5000", 443, "a.test"), None);
        expect(&mut h, &plain_conn("10.0.0.1:5000", 80), None);
    }
}

/// `allowSessionTicket: false` refuses a resumption without SNI, and only
/// that; the default lets it route on port and client.
pub(crate) fn session_tickets(init: Init<'_>) {
    let routes = [route("any", r#"{"ports": 443}"#)];
    let resumption = || {
        Connection::tls(
            1,
            turnout_plugin_sdk::testing::peer("10.0.0.1:5000", 443),
            ClientHello::without_sni().resumption_without_sni(true),
        )
    };
    let mut h = load(init, &config(&routes));
    assert_eq!(
        forward(&mut h, &resumption()).route,
        "any",
        "allowed by default"
    );

    let strict = format!(
        r#"{{"routes": [{}], "allowSessionTicket": false}}"#,
        routes.join(",")
    );
    let mut h = load(init, &strict);
    match h.route(&resumption()) {
        RouteDecision::Reject(r) => {
            assert_eq!(r.reason, "session-ticket-without-sni");
            assert_eq!(r.alert, Some(TlsAlert::HandshakeFailure));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // A full handshake without SNI, or a resumption with SNI, still routes.
    assert_eq!(forward(&mut h, &super::no_sni(443)).route, "any");
    assert_eq!(
        forward(&mut h, &tls_conn("10.0.0.1:5000", 443, "a.test")).route,
        "any"
    );
}
