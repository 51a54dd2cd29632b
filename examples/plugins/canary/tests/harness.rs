//! The canary plugin through the SDK harness: every case runs natively and
//! against the compiled `.wasm`.
//!
//! The expected buckets and counts below were computed with an independent
//! FNV-1a implementation, so a change to the hash (which would reshuffle
//! every client in production) fails these tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use example_canary::{Canary, bucket, fnv1a64};
use turnout_plugin_sdk::prelude::*;
use turnout_plugin_sdk::testing::{CallError, Harness, plain_conn, tls_conn};

/// Builds a harness from a config: natively or from the `.wasm`.
type Make<'a> = &'a dyn Fn(&str) -> Result<Harness, CallError>;

fn harness(make: Make<'_>, config: &str) -> Harness {
    make(config).unwrap_or_else(|e| panic!("{config}: {e}"))
}

/// A plain config on port 9000 sending `percent` to the canary.
fn plain(percent: u8) -> String {
    format!(
        r#"{{"ports": [9000], "route": "web", "percent": {percent},
            "primary": [{{"host": "10.9.0.1", "port": 80}}, {{"host": "10.9.0.2", "port": 80}}],
            "canary": [{{"host": "10.9.1.1", "port": 8080}}]}}"#
    )
}

/// Which route a plain connection from `ip` (any port) is given.
fn side(h: &mut Harness, ip: IpAddr, client_port: u16) -> String {
    let conn = Connection::plain(1, Peer::new(SocketAddr::new(ip, client_port), 9000));
    match h.route(&conn) {
        RouteDecision::Forward(f) => f.route,
        other => panic!("{ip}: expected a forward, got {other:?}"),
    }
}

/// 10.0.0.0 – 10.0.39.249: 10 000 addresses.
fn v4_sample() -> impl Iterator<Item = IpAddr> {
    (0..40u8).flat_map(|x| (0..250u8).map(move |y| IpAddr::V4(Ipv4Addr::new(10, 0, x, y))))
}

/// 2001:db8::0:0 – 2001:db8::7:cf: 2 000 addresses.
fn v6_sample() -> impl Iterator<Item = IpAddr> {
    (0..2000u16).map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, i >> 8, i & 0xff)))
}

fn canaries(h: &mut Harness, ips: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    ips.filter(|&ip| side(h, ip, 40_000) == "web-canary")
        .collect()
}

fn info(make: Make<'_>) {
    let h = harness(make, &plain(10));
    assert_eq!(h.info().name, "canary");
    assert_eq!(h.info().hooks, Hooks::ROUTE);
    assert_eq!(h.info().listen, vec![PortRange::single(9000)]);
    assert!(h.info().tls_ports.is_empty(), "plain unless tls: true");

    let h = harness(
        make,
        r#"{"ports": [8443, 9443], "tls": true, "route": "shop", "percent": 5,
            "primary": [{"host": "a", "port": 1}], "canary": [{"host": "b", "port": 2}]}"#,
    );
    let want = vec![PortRange::single(8443), PortRange::single(9443)];
    assert_eq!(h.info().listen, want);
    assert_eq!(h.info().tls_ports, want);
}

fn forwards_to_the_configured_targets(make: Make<'_>) {
    // 192.0.2.2 is in bucket 65.
    let client = "192.0.2.2:5000";
    let mut h = harness(make, &plain(66));
    assert_eq!(
        h.route(&plain_conn(client, 9000)),
        RouteDecision::Forward(Forward::new(
            "web-canary",
            vec![Target::new("10.9.1.1", 8080)]
        ))
    );
    let mut h = harness(make, &plain(65));
    assert_eq!(
        h.route(&plain_conn(client, 9000)),
        RouteDecision::Forward(Forward::new(
            "web",
            vec![Target::new("10.9.0.1", 80), Target::new("10.9.0.2", 80)]
        ))
    );
    let mut h = harness(
        make,
        r#"{"ports": 9000, "route": "web", "canaryRoute": "web-next", "percent": 100,
            "primary": [{"host": "a", "port": 1}], "canary": [{"host": "b", "port": 2}]}"#,
    );
    assert_eq!(side(&mut h, "192.0.2.2".parse().unwrap(), 1), "web-next");
    assert_eq!(
        h.route(&plain_conn(client, 9001)),
        RouteDecision::Pass,
        "another port is someone else's"
    );
}

/// Buckets of known addresses, and the exact percent boundary for each.
fn buckets_are_fixed(make: Make<'_>) {
    for (ip, want) in [
        ("192.0.2.1", 32),
        ("192.0.2.2", 65),
        ("198.51.100.7", 79),
        ("10.1.2.3", 59),
        ("2001:db8::1", 68),
        ("2001:db8::2", 1),
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(bucket(ip, ""), want, "{ip}");
        let mut below = harness(make, &plain(want));
        let mut above = harness(make, &plain(want + 1));
        assert_eq!(side(&mut below, ip, 1), "web", "{ip} at {want}%");
        assert_eq!(
            side(&mut above, ip, 1),
            "web-canary",
            "{ip} at {}%",
            want + 1
        );
    }
}

fn zero_and_hundred_percent(make: Make<'_>) {
    let mut none = harness(make, &plain(0));
    let mut all = harness(make, &plain(100));
    for ip in v4_sample().step_by(7).chain(v6_sample().step_by(7)) {
        assert_eq!(side(&mut none, ip, 1), "web", "{ip} at 0%");
        assert_eq!(side(&mut all, ip, 1), "web-canary", "{ip} at 100%");
    }
}

fn share_of_a_large_sample(make: Make<'_>) {
    for (percent, want) in [(10, 998), (25, 2496), (50, 5000)] {
        let mut h = harness(make, &plain(percent));
        let got = canaries(&mut h, v4_sample()).len();
        assert_eq!(got, want, "{percent}% of 10 000 IPv4 clients");
        // And the point of the exact count: within 0.5 % of the target.
        let target = usize::from(percent) * 100;
        assert!(got.abs_diff(target) <= 50, "{percent}%: {got}");
    }
}

fn ipv6_clients(make: Make<'_>) {
    let mut h = harness(make, &plain(10));
    assert_eq!(canaries(&mut h, v6_sample()).len(), 200, "10% of 2 000");
    // An IPv4-mapped address is the IPv4 client.
    for ip in v4_sample().step_by(97) {
        let IpAddr::V4(v4) = ip else { unreachable!() };
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        assert_eq!(side(&mut h, mapped, 2), side(&mut h, ip, 1), "{mapped}");
    }
}

/// Same address, any port, any instance, any time: same side.
fn sticky(make: Make<'_>) {
    let mut a = harness(make, &plain(30));
    let mut b = harness(make, &plain(30));
    for ip in v4_sample().step_by(13).chain(v6_sample().step_by(13)) {
        let first = side(&mut a, ip, 1);
        for port in [2, 443, 50_000, 65_535] {
            assert_eq!(side(&mut a, ip, port), first, "{ip}:{port}");
        }
        assert_eq!(side(&mut b, ip, 1), first, "{ip} on another instance");
    }
}

/// Raising the share only moves clients to the canary.
fn raising_the_share_only_adds(make: Make<'_>) {
    let mut at10 = harness(make, &plain(10));
    let mut at25 = harness(make, &plain(25));
    let small = canaries(&mut at10, v4_sample().step_by(3));
    let large = canaries(&mut at25, v4_sample().step_by(3));
    assert!(
        small.len() > 250 && large.len() > 700,
        "{} {}",
        small.len(),
        large.len()
    );
    assert!(small.iter().all(|ip| large.contains(ip)));
}

fn salt_picks_other_clients(make: Make<'_>) {
    let mut plain_h = harness(make, &plain(10));
    let salted = plain(10).replace(
        r#""route": "web""#,
        r#""route": "web", "salt": "release-42""#,
    );
    let mut salted_h = harness(make, &salted);
    let a = canaries(&mut plain_h, v4_sample());
    let b = canaries(&mut salted_h, v4_sample());
    assert_eq!((a.len(), b.len()), (998, 995));
    let shared = a.iter().filter(|ip| b.contains(ip)).count();
    // Independent 10% choices share about 10% of their members.
    assert!(shared < 200, "{shared} of {} clients in both", a.len());
    assert_eq!(bucket("192.0.2.1".parse().unwrap(), "release-42"), 22);
}

fn domains_filter(make: Make<'_>) {
    let mut h = harness(
        make,
        r#"{"ports": [8443], "tls": true, "domains": ["shop.example.com", "*.shop.example.com"],
            "route": "shop", "percent": 100,
            "primary": [{"host": "a", "port": 1}], "canary": [{"host": "b", "port": 2}]}"#,
    );
    let canary = RouteDecision::Forward(Forward::new("shop-canary", vec![Target::new("b", 2)]));
    for sni in ["shop.example.com", "EU.Shop.Example.com."] {
        assert_eq!(
            h.route(&tls_conn("192.0.2.1:1", 8443, sni)),
            canary,
            "{sni}"
        );
    }
    for sni in ["example.com", "shop.example.org", "notshop.example.com"] {
        assert_eq!(
            h.route(&tls_conn("192.0.2.1:1", 8443, sni)),
            RouteDecision::Pass,
            "{sni}"
        );
    }
    let no_sni = Connection::tls(
        1,
        Peer::new("192.0.2.1:1".parse().unwrap(), 8443),
        ClientHello::without_sni(),
    );
    assert_eq!(h.route(&no_sni), RouteDecision::Pass, "no SNI");
    assert_eq!(
        h.route(&tls_conn("192.0.2.1:1", 443, "shop.example.com")),
        RouteDecision::Pass,
        "other port"
    );
}

fn bad_configs(make: Make<'_>) {
    let good = r#""route": "r", "percent": 1, "primary": [{"host": "a", "port": 1}], "canary": [{"host": "b", "port": 2}]"#;
    let cases: Vec<(String, &str)> = vec![
        (format!(r#"{{{good}}}"#), "ports: required"),
        (
            format!(r#"{{"ports": [], {good}}}"#),
            "ports: must not be empty",
        ),
        (
            format!(r#"{{"ports": [80, 0], {good}}}"#),
            "ports[1]: 0 is out of range 1-65535",
        ),
        (
            format!(r#"{{"ports": "80", {good}}}"#),
            "ports: expected a list, got a string",
        ),
        (
            format!(r#"{{"ports": 80, "tls": "yes", {good}}}"#),
            "tls: expected true or false, got a string",
        ),
        (
            format!(r#"{{"ports": 80, "domains": ["a.example"], {good}}}"#),
            "domains: matching on SNI needs \"tls\": true",
        ),
        (
            format!(r#"{{"ports": 80, "tls": true, "domains": ["ok", " "], {good}}}"#),
            "domains[1]: must not be empty",
        ),
        (
            format!(r#"{{"ports": 80, "prcent": 5, {good}}}"#),
            "prcent: unknown key (expected one of ports, tls,",
        ),
        (
            r#"{"ports": 80, "route": "r", "percent": 101, "primary": [{"host": "a", "port": 1}], "canary": [{"host": "b", "port": 2}]}"#.into(),
            "percent: 101 is out of range 0-100",
        ),
        (
            r#"{"ports": 80, "route": "r", "percent": -1, "primary": [{"host": "a", "port": 1}], "canary": [{"host": "b", "port": 2}]}"#.into(),
            "percent: -1 is out of range 0-100",
        ),
        (
            r#"{"ports": 80, "route": "r", "percent": 2.5, "primary": [{"host": "a", "port": 1}], "canary": [{"host": "b", "port": 2}]}"#.into(),
            "percent: 2.5 is not a whole number",
        ),
        (
            r#"{"ports": 80, "route": "r", "primary": [{"host": "a", "port": 1}], "canary": [{"host": "b", "port": 2}]}"#.into(),
            "percent: required",
        ),
        (
            r#"{"ports": 80, "route": "", "percent": 1, "primary": [{"host": "a", "port": 1}], "canary": [{"host": "b", "port": 2}]}"#.into(),
            "route: must not be empty",
        ),
        (
            r#"{"ports": 80, "route": "r", "percent": 1, "primary": [{"host": "a", "port": 1}, {"host": "c"}], "canary": [{"host": "b", "port": 2}]}"#.into(),
            "primary[1].port: required",
        ),
        (
            r#"{"ports": 80, "route": "r", "percent": 1, "primary": [{"host": "a", "port": 1}], "canary": [{"host": "b", "port": 70000}]}"#.into(),
            "canary[0].port: 70000 is out of range 1-65535",
        ),
        (
            r#"{"ports": 80, "route": "r", "percent": 1, "primary": [{"host": "a", "port": 1}], "canary": [{"host": "b", "port": 2, "weight": 3}]}"#.into(),
            "canary[0].weight: unknown key (expected host, port)",
        ),
        (
            r#"{"ports": 80, "route": "r", "percent": 1, "primary": [{"host": "a", "port": 1}], "canary": "b:2"}"#.into(),
            "canary: expected a list, got a string",
        ),
        (
            r#"{"ports": 80, "route": "r", "percent": 1, "primary": [], "canary": [{"host": "b", "port": 2}]}"#.into(),
            "primary: must not be empty",
        ),
        (
            format!(r#"{{"ports": 80, "salt": 7, {good}}}"#),
            "salt: expected a string, got a number",
        ),
        ("[]".into(), "canary config: expected an object, got a list"),
        ("{".into(), "canary config: "),
    ];
    for (config, text) in cases {
        match make(&config) {
            Err(CallError::Init(msg)) => assert!(msg.starts_with(text), "{config}: {msg}"),
            Err(other) => panic!("{config}: expected an init error, got {other}"),
            Ok(_) => panic!("{config}: expected an init error"),
        }
    }
}

/// Published FNV-1a 64 test vectors: the hash is the documented one.
#[test]
fn fnv1a64_matches_the_reference_vectors() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

// Each case runs natively and against the built `.wasm`.
turnout::natively_and_as_wasm!(
    Canary:
    info,
    forwards_to_the_configured_targets,
    buckets_are_fixed,
    zero_and_hundred_percent,
    share_of_a_large_sample,
    ipv6_clients,
    sticky,
    raising_the_share_only_adds,
    salt_picks_other_clients,
    domains_filter,
    bad_configs,
);
