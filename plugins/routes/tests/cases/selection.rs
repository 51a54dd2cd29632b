//! Choosing among several matching routes, and a large table.

use turnout_plugin_sdk::prelude::*;
use turnout_plugin_sdk::testing::{peer, plain_conn, tls_conn};

use super::{Init, config, expect, forward, load, route, route_with};

pub(crate) fn priority_and_specificity(init: Init<'_>) {
    let mut h = load(
        init,
        &config(&[
            // Priority beats specificity.
            route("exact-p", r#"{"ports": 443, "domains": "a.p.test"}"#),
            route_with(
                "wild-p",
                r#"{"ports": 443, "domains": "*.p.test"}"#,
                r#", "priority": 10"#,
            ),
            // Equal priority: exact beats wildcard, whatever the order.
            route("wild-q", r#"{"ports": 443, "domains": "*.q.test"}"#),
            route("exact-q", r#"{"ports": 443, "domains": "a.q.test"}"#),
            // More criteria beat fewer.
            route("wild-r", r#"{"ports": 443, "domains": "*.r.test"}"#),
            route(
                "wild-r-ip",
                r#"{"ports": 443, "domains": "*.r.test", "clientIp": ["10.0.0.0/8"]}"#,
            ),
            // Config order is the last tiebreak.
            route("first-s", r#"{"ports": 443, "domains": "*.s.test"}"#),
            route("second-s", r#"{"ports": 443, "domains": ["*.s.test"]}"#),
            // A domain beats a route without one, even one with more criteria.
            route(
                "ip-only",
                r#"{"ports": 443, "clientIp": ["10.0.0.0/8"], "tlsVersion": ["TLSv1.3"]}"#,
            ),
            route("exact-t", r#"{"ports": 443, "domains": "t.test"}"#),
            // Among routes without domains: criteria, then order.
            route("catch", r#"{"ports": 7000}"#),
            route("tls13", r#"{"ports": 7000, "tlsVersion": ["TLSv1.3"]}"#),
            route(
                "ip-tls13",
                r#"{"ports": 7000, "clientIp": ["192.168.0.0/16"], "tlsVersion": ["TLSv1.3"]}"#,
            ),
            // Missing priority is 0; negative priorities come after it.
            route_with("neg", r#"{"ports": 7100}"#, r#", "priority": -5"#),
            route("zero", r#"{"ports": 7100}"#),
            route_with("neg-only", r#"{"ports": 6200}"#, r#", "priority": -1"#),
            // Priority also orders a wide range against a single port.
            route("wide", r#"{"ports": [{"from": 7000, "to": 7999}]}"#),
            route_with(
                "wide-high",
                r#"{"ports": [{"from": 7300, "to": 7999}]}"#,
                r#", "priority": 1"#,
            ),
        ]),
    );
    let h = &mut h;
    let sni = |name: &str| tls_conn("10.1.2.3:5000", 443, name);
    expect(h, &sni("a.p.test"), Some("wild-p"));
    expect(h, &sni("b.p.test"), Some("wild-p"));
    expect(h, &sni("a.q.test"), Some("exact-q"));
    expect(h, &sni("b.q.test"), Some("wild-q"));
    expect(h, &sni("a.r.test"), Some("wild-r-ip"));
    expect(
        h,
        &tls_conn("192.168.1.1:5000", 443, "a.r.test"),
        Some("wild-r"),
    );
    expect(h, &sni("a.s.test"), Some("first-s"));
    expect(h, &sni("t.test"), Some("exact-t"));
    expect(h, &sni("u.test"), Some("ip-only"));

    let tls13 = |client: &str| {
        Connection::tls(
            1,
            peer(client, 7000),
            ClientHello::without_sni().versions(&[TlsVersion::Tls13]),
        )
    };
    expect(h, &tls13("10.0.0.1:1"), Some("tls13"));
    expect(h, &tls13("192.168.3.3:1"), Some("ip-tls13"));
    expect(h, &plain_conn("192.168.3.3:1", 7000), Some("catch"));
    expect(h, &plain_conn("10.0.0.1:1", 7100), Some("zero"));
    expect(h, &plain_conn("10.0.0.1:1", 6200), Some("neg-only"));
    expect(h, &plain_conn("10.0.0.1:1", 7299), Some("wide"));
    expect(h, &plain_conn("10.0.0.1:1", 7300), Some("wide-high"));
    expect(h, &plain_conn("10.0.0.1:1", 7999), Some("wide-high"));
}

/// 10 000 exact routes plus wildcards: indexed lookups stay correct.
pub(crate) fn scaling(init: Init<'_>) {
    const N: usize = 10_000;
    let mut routes: Vec<String> = (0..N)
        .map(|i| {
            format!(
                r#"{{"name": "svc{i}", "match": {{"ports": 443, "domains": "svc{i}.example.com"}},
                "action": {{"type": "forward", "targets": [{{"host": "10.0.{}.{}", "port": {}}}]}}}}"#,
                i / 256,
                i % 256,
                10_000 + i
            )
        })
        .collect();
    for z in 0..100 {
        routes.push(route(
            &format!("zone{z}"),
            &format!(r#"{{"ports": 443, "domains": "*.zone{z}.example.com"}}"#),
        ));
    }
    routes.push(route(
        "glob",
        r#"{"ports": 443, "domains": "svc*.example.net"}"#,
    ));
    routes.push(route("rest", r#"{"ports": 443}"#));
    let mut h = load(init, &super::config(&routes));
    let h = &mut h;
    for i in [0, 1, 4321, 9999] {
        let f = forward(
            h,
            &tls_conn("10.0.0.1:5000", 443, &format!("svc{i}.example.com")),
        );
        assert_eq!(f.route, format!("svc{i}"));
        assert_eq!(
            f.targets,
            [Target::new(
                format!("10.0.{}.{}", i / 256, i % 256),
                10_000 + i as u16
            )]
        );
    }
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 443, "SVC77.example.com"),
        Some("svc77"),
    );
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 443, "svc10000.example.com"),
        Some("rest"),
    );
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 443, "a.b.zone42.example.com"),
        Some("zone42"),
    );
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 443, "svc1.zone99.example.com"),
        Some("zone99"),
    );
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 443, "svc5.example.net"),
        Some("glob"),
    );
    expect(h, &plain_conn("10.0.0.1:5000", 443), Some("rest"));
    expect(h, &plain_conn("10.0.0.1:5000", 444), None);
    assert_eq!(h.info().tls_ports, [PortRange::single(443)]);
    assert_eq!(h.info().listen, [PortRange::single(443)]);
}
