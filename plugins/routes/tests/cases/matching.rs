//! Each `match` criterion on its own.

use turnout_plugin_sdk::prelude::*;
use turnout_plugin_sdk::testing::{peer, plain_conn, tls_conn};

use super::{Init, config, expect, forward, load, no_sni, raw_sni, route, sorted};

pub(crate) fn domains(init: Init<'_>) {
    let mut h = load(
        init,
        &config(&[
            route(
                "api",
                r#"{"ports": 443, "domains": ["api.example.com", "*.api.example.com"]}"#,
            ),
            route("wild", r#"{"ports": 443, "domains": "*.example.com"}"#),
            route(
                "shop",
                r#"{"ports": 443, "domains": " Shop.Example.ORG. "}"#,
            ),
            route("glob", r#"{"ports": 443, "domains": ["img*.cdn.net"]}"#),
            route("any", r#"{"ports": [443, 8080]}"#),
        ]),
    );
    let h = &mut h;
    assert_eq!(h.info().name, "routes");
    // Domain routes without `action.tls` also route plaintext HTTP by Host.
    assert_eq!(h.info().hooks, Hooks::ROUTE | Hooks::REQUEST);
    assert_eq!(
        sorted(&h.info().tls_ports),
        [(443, 443)],
        "domains need the ClientHello"
    );
    assert_eq!(sorted(&h.info().http_ports), [(443, 443)]);
    assert_eq!(sorted(&h.info().listen), [(443, 443), (8080, 8080)]);

    // `*` spans dots; the wildcard needs something before the dot.
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 443, "a.example.com"),
        Some("wild"),
    );
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 443, "a.b.example.com"),
        Some("wild"),
    );
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 443, "example.com"),
        Some("any"),
    );
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 443, "example.com.evil"),
        Some("any"),
    );
    // Exact beats wildcard; the longer wildcard beats the shorter.
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 443, "api.example.com"),
        Some("api"),
    );
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 443, "x.y.api.example.com"),
        Some("api"),
    );
    // Case, whitespace and one trailing dot are ignored on both sides.
    expect(h, &raw_sni(443, "API.Example.COM."), Some("api"));
    expect(h, &raw_sni(443, "shop.example.org"), Some("shop"));
    expect(h, &raw_sni(443, "SHOP.EXAMPLE.ORG."), Some("shop"));
    expect(h, &raw_sni(443, "shop.example.org.."), Some("any"));
    // Other wildcards.
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 443, "img7.cdn.net"),
        Some("glob"),
    );
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 443, "img.cdn.net"),
        Some("glob"),
    );
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 443, "video.cdn.net"),
        Some("any"),
    );
    // No SNI, or no TLS at all: only routes without domains.
    expect(h, &no_sni(443), Some("any"));
    expect(h, &plain_conn("10.0.0.1:5000", 443), Some("any"));
    // The catch-all also serves its other port, whatever the SNI.
    expect(
        h,
        &tls_conn("10.0.0.1:5000", 8080, "api.example.com"),
        Some("any"),
    );
    expect(h, &plain_conn("10.0.0.1:5000", 8080), Some("any"));
    // Nothing listens there: pass (the host answers unrecognized_name / closes).
    expect(h, &tls_conn("10.0.0.1:5000", 9999, "api.example.com"), None);

    // Without a catch-all, a domain route ignores connections without SNI.
    let mut h = load(
        init,
        &config(&[route("only", r#"{"ports": 443, "domains": "*"}"#)]),
    );
    expect(
        &mut h,
        &tls_conn("10.0.0.1:5000", 443, "anything.at.all"),
        Some("only"),
    );
    expect(&mut h, &no_sni(443), None);
    expect(&mut h, &plain_conn("10.0.0.1:5000", 443), None);
}

pub(crate) fn client_ips(init: Init<'_>) {
    let mut h = load(
        init,
        &config(&[
            route("cidr", r#"{"ports": 2000, "clientIp": ["10.0.0.0/24"]}"#),
            route(
                "range",
                r#"{"ports": 2000, "clientIp": ["172.16.0.5-172.16.0.9"]}"#,
            ),
            route("star", r#"{"ports": 2000, "clientIp": ["192.168.*"]}"#),
            route(
                "v6",
                r#"{"ports": 2000, "clientIp": ["2001:db8::/32", "::1"]}"#,
            ),
            route(
                "mapped",
                r#"{"ports": 2000, "clientIp": "::ffff:203.0.113.7"}"#,
            ),
        ]),
    );
    let h = &mut h;
    assert_eq!(
        sorted(&h.info().tls_ports),
        [],
        "clientIp alone is a plain port"
    );
    let cases = [
        ("10.0.0.0:1", Some("cidr")),
        ("10.0.0.255:1", Some("cidr")),
        ("10.0.1.0:1", None),
        ("9.255.255.255:1", None),
        ("[::ffff:10.0.0.7]:1", Some("cidr")),
        ("172.16.0.5:1", Some("range")),
        ("172.16.0.9:1", Some("range")),
        ("172.16.0.4:1", None),
        ("172.16.0.10:1", None),
        ("192.168.44.1:1", Some("star")),
        ("192.169.0.1:1", None),
        ("[2001:db8:ffff::1]:1", Some("v6")),
        ("[::1]:1", Some("v6")),
        ("[2001:db9::1]:1", None),
        ("203.0.113.7:1", Some("mapped")),
        ("203.0.113.8:1", None),
    ];
    for (client, want) in cases {
        expect(h, &plain_conn(client, 2000), want);
        expect(h, &tls_conn(client, 2000, "any.test"), want);
    }
    // An IPv4-mapped client the host did not fold still matches IPv4 patterns.
    let mut p = peer("10.0.0.7:1", 2000);
    p.client = "[::ffff:10.0.0.7]:1".parse().unwrap();
    expect(h, &Connection::plain(1, p), Some("cidr"));
    expect(h, &plain_conn("10.0.0.7:1", 2001), None);
}

pub(crate) fn ports(init: Init<'_>) {
    let mut h = load(
        init,
        &config(&[
            r#"{"name": "range", "match": {"ports": [{"from": 8000, "to": 8010}]},
                "action": {"type": "forward", "targets": [{"host": "10.0.0.8", "port": "preserve"}]}}"#
                .to_owned(),
            route("mixed", r#"{"ports": [80, {"from": 30000, "to": 40000}]}"#),
            route("listed", r#"{"ports": [81, 82]}"#),
            route("named", r#"{"ports": 80, "domains": "x.test"}"#),
            route("edge", r#"{"ports": [1, 65535]}"#),
        ]),
    );
    let h = &mut h;
    // 80 is routed plain and by SNI: declared TLS (non-TLS bytes still route on port).
    assert_eq!(sorted(&h.info().tls_ports), [(80, 80)]);
    assert_eq!(
        sorted(&h.info().listen),
        [
            (1, 1),
            (80, 80),
            (81, 82),
            (8000, 8010),
            (30000, 40000),
            (65535, 65535)
        ]
    );
    for (port, want) in [
        (7999, None),
        (8000, Some("range")),
        (8005, Some("range")),
        (8010, Some("range")),
        (8011, None),
        (29999, None),
        (30000, Some("mixed")),
        (40000, Some("mixed")),
        (40001, None),
        (80, Some("mixed")),
        (81, Some("listed")),
        (82, Some("listed")),
        (83, None),
        (1, Some("edge")),
        (65535, Some("edge")),
    ] {
        expect(h, &plain_conn("10.0.0.1:5000", port), want);
    }
    expect(h, &tls_conn("10.0.0.1:5000", 80, "x.test"), Some("named"));
    expect(h, &tls_conn("10.0.0.1:5000", 80, "y.test"), Some("mixed"));
    // "preserve": the backend port is the port the client hit.
    for port in [8000, 8007, 8010] {
        let f = forward(h, &plain_conn("10.0.0.1:5000", port));
        assert_eq!(f.targets, [Target::new("10.0.0.8", port)]);
    }
}

pub(crate) fn tls_versions(init: Init<'_>) {
    let mut h = load(
        init,
        &config(&[
            route("modern", r#"{"ports": 4443, "tlsVersion": ["TLSv1.3"]}"#),
            route(
                "old",
                r#"{"ports": 4443, "tlsVersion": ["TLSv1", "TLSv1.1"]}"#,
            ),
            route(
                "sni-12",
                r#"{"ports": 4444, "domains": "v.test", "tlsVersion": "TLSv1.2"}"#,
            ),
        ]),
    );
    let h = &mut h;
    assert_eq!(sorted(&h.info().tls_ports), [(4443, 4444)]);
    let hello = |versions: &[TlsVersion]| {
        Connection::tls(
            1,
            peer("10.0.0.1:5000", 4443),
            ClientHello::without_sni().versions(versions),
        )
    };
    expect(h, &hello(&[TlsVersion::Tls13]), Some("modern"));
    expect(
        h,
        &hello(&[TlsVersion::Tls12, TlsVersion::Tls13]),
        Some("modern"),
    );
    expect(h, &hello(&[TlsVersion::Tls12]), None);
    expect(h, &hello(&[TlsVersion::Tls10]), Some("old"));
    expect(h, &hello(&[]), None);
    expect(h, &plain_conn("10.0.0.1:5000", 4443), None);
    let sni = |versions: &[TlsVersion]| {
        Connection::tls(
            1,
            peer("10.0.0.1:5000", 4444),
            ClientHello::with_sni("V.test").versions(versions),
        )
    };
    expect(h, &sni(&[TlsVersion::Tls12]), Some("sni-12"));
    expect(h, &sni(&[TlsVersion::Tls13]), None);
}
