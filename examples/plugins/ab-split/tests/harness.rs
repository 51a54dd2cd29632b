//! The A/B split through the SDK harness: every case runs natively and
//! against the compiled `.wasm` (where the host also checks each answer:
//! header names, values, upstream ids).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use example_ab_split::{AbSplit, bucket};
use turnout_plugin_sdk::prelude::*;
use turnout_plugin_sdk::testing::{CallError, Harness, Request};

/// Builds a harness from a config: natively or from the `.wasm`.
type Make<'a> = &'a dyn Fn(&str) -> Result<Harness, CallError>;

fn harness(make: Make<'_>, config: &str) -> Harness {
    make(config).unwrap_or_else(|e| panic!("{config}: {e}"))
}

/// On port 8080, A on two targets, B on one, `extra` keys added.
fn config(extra: &str) -> String {
    format!(
        r#"{{"route": "shop", "port": 8080{extra},
            "a": {{"targets": [{{"host": "10.0.0.10", "port": 80}}, {{"host": "10.0.0.11", "port": 80}}]}},
            "b": {{"targets": [{{"host": "10.0.0.20", "port": 8000}}]}}}}"#
    )
}

/// A GET on port 8080 from `client`.
fn get(client: &str) -> Request {
    Request::get("shop.example", "/cart")
        .port(8080)
        .client(client)
}

/// What the plugin did with a request: the upstream id, the variant it told
/// the backend, and the cookie it set (if any).
#[derive(Debug, PartialEq, Eq)]
struct Split {
    upstream: u32,
    variant: String,
    set_cookie: Option<String>,
}

fn split(h: &mut Harness, req: &Request) -> Split {
    let RequestDecision::Forward(f) = h.request(req) else {
        panic!("{req:?}: expected a forward");
    };
    let text = |v: &[u8]| String::from_utf8(v.to_vec()).unwrap();
    let [HeaderEdit::Set(variant)] = f.request_edits.as_slice() else {
        panic!("expected one request edit, got {:?}", f.request_edits);
    };
    assert_eq!(variant.name, "x-ab-variant");
    let set_cookie = match f.response_edits.as_slice() {
        [] => None,
        [HeaderEdit::Append(c)] if c.name == "set-cookie" => Some(text(&c.value)),
        other => panic!("unexpected response edits {other:?}"),
    };
    assert_eq!((f.path, f.context), (None, None), "nothing else changes");
    Split {
        upstream: f.upstream.expect("a declared upstream"),
        variant: text(&variant.value),
        set_cookie,
    }
}

fn sticky(upstream: u32, variant: &str) -> Split {
    Split {
        upstream,
        variant: variant.to_owned(),
        set_cookie: None,
    }
}

fn info(make: Make<'_>) {
    let h = harness(make, &config(""));
    let info = h.info();
    assert_eq!(info.name, "ab-split");
    assert_eq!(info.hooks, Hooks::REQUEST);
    assert_eq!(info.http_ports, vec![PortRange::single(8080)]);
    assert!(info.listen.contains(&PortRange::single(8080)));
    assert_eq!(info.interest.request_headers, ["x-ab", "cookie"]);
    assert!(info.interest.response_headers.is_empty());
    let ups = &info.interest.upstreams;
    assert_eq!(ups.len(), 2);
    assert_eq!(ups[0].route, "shop-a");
    assert_eq!(
        ups[0].targets,
        vec![Target::new("10.0.0.10", 80), Target::new("10.0.0.11", 80)]
    );
    assert_eq!(ups[1].route, "shop-b");
    assert_eq!(ups[1].targets, vec![Target::new("10.0.0.20", 8000)]);

    let h = harness(make, &config(r#", "header": "X-Variant", "cookie": "exp""#));
    assert_eq!(h.info().interest.request_headers, ["x-variant", "cookie"]);
}

fn the_header_forces_a_side(make: Make<'_>) {
    let mut h = harness(make, &config(r#", "percentB": 0"#));
    let client = "192.0.2.1:4000";
    assert_eq!(
        split(&mut h, &get(client).header("x-ab", "b")),
        sticky(1, "b")
    );
    assert_eq!(
        split(&mut h, &get(client).header("X-AB", " B ")),
        sticky(1, "b")
    );
    // Over a cookie, too.
    let req = get(client).header("x-ab", "a").header("cookie", "ab=b");
    assert_eq!(split(&mut h, &req), sticky(0, "a"));
    // A value that is not a side is ignored: the cookie decides.
    let req = get(client).header("x-ab", "c").header("cookie", "ab=b");
    assert_eq!(split(&mut h, &req), sticky(1, "b"));
    // Twice (joined as `b, b`) is not one side either: hashing decides.
    let req = get(client).header("x-ab", "b").header("x-ab", "b");
    assert_eq!(split(&mut h, &req).variant, "a", "percentB 0");
    // The header's name is configurable.
    let mut h = harness(make, &config(r#", "percentB": 0, "header": "X-Variant""#));
    let req = get(client).header("x-variant", "b").header("x-ab", "a");
    assert_eq!(split(&mut h, &req), sticky(1, "b"));
}

fn the_cookie_keeps_a_side(make: Make<'_>) {
    // Hashing would send everyone to B: the cookie must win.
    let mut h = harness(make, &config(r#", "percentB": 100"#));
    let client = "192.0.2.1:4000";
    for cookie in [
        "ab=a",
        "session=xyz; ab=a; theme=dark",
        "session=xyz;ab=a",
        "ab=\"a\"",
        "xab=b; abc=b; ab=a",
        "ab=c; ab=a",
    ] {
        let req = get(client).header("cookie", cookie);
        assert_eq!(split(&mut h, &req), sticky(0, "a"), "{cookie}");
    }
    // Two Cookie headers (as HTTP/2 sends them), joined by the host.
    let req = get(client)
        .header("cookie", "session=xyz")
        .header("cookie", "ab=a");
    assert_eq!(split(&mut h, &req), sticky(0, "a"));
    // The cookie's name is configurable (and case-sensitive).
    let mut h = harness(make, &config(r#", "percentB": 100, "cookie": "Exp""#));
    let req = get(client).header("cookie", "ab=a; Exp=a");
    assert_eq!(split(&mut h, &req), sticky(0, "a"));
    let req = get(client).header("cookie", "exp=a");
    assert_eq!(split(&mut h, &req).variant, "b", "exp is not Exp");
}

fn a_hashed_side_sets_the_cookie(make: Make<'_>) {
    let mut h = harness(make, &config(r#", "percentB": 100"#));
    let want = Split {
        upstream: 1,
        variant: "b".into(),
        set_cookie: Some("ab=b; Path=/; Max-Age=86400; HttpOnly".into()),
    };
    assert_eq!(
        split(&mut h, &get("192.0.2.1:4000")),
        want,
        "no cookie header"
    );
    for cookie in ["session=xyz", "ab=", "ab=c", "ab=ab", "AB=a"] {
        let req = get("192.0.2.1:4000").header("cookie", cookie);
        assert_eq!(split(&mut h, &req), want, "{cookie}: no usable cookie");
    }
    let mut h = harness(make, &config(r#", "percentB": 0, "cookie": "exp""#));
    assert_eq!(
        split(&mut h, &get("192.0.2.1:4000")).set_cookie.as_deref(),
        Some("exp=a; Path=/; Max-Age=86400; HttpOnly")
    );
}

/// 10.1.0.0 – 10.1.3.249: 1 000 addresses.
fn clients() -> impl Iterator<Item = IpAddr> {
    (0..4u8).flat_map(|x| (0..250u8).map(move |y| IpAddr::V4(Ipv4Addr::new(10, 1, x, y))))
}

fn variant_of(h: &mut Harness, ip: IpAddr, port: u16) -> String {
    let client = SocketAddr::new(ip, port).to_string();
    let s = split(h, &get(&client));
    let want = format!("ab={}; Path=/; Max-Age=86400; HttpOnly", s.variant);
    assert_eq!(s.set_cookie.as_deref(), Some(want.as_str()), "{client}");
    assert_eq!(s.upstream, u32::from(s.variant == "b"), "{client}");
    s.variant
}

fn hashing_gives_b_its_share(make: Make<'_>) {
    for percent in [0u8, 10, 25, 50, 90, 100] {
        let mut h = harness(make, &config(&format!(r#", "percentB": {percent}"#)));
        let got = clients()
            .filter(|&ip| variant_of(&mut h, ip, 40_000) == "b")
            .count();
        let want = usize::from(percent) * 10;
        assert!(got.abs_diff(want) <= 50, "{percent}%: {got} of 1000 on B");
    }
    // The default is an even split.
    let mut h = harness(make, &config(""));
    let got = clients()
        .filter(|&ip| variant_of(&mut h, ip, 1) == "b")
        .count();
    assert!(got.abs_diff(500) <= 50, "default: {got} of 1000 on B");
}

/// Same address, any port, any instance: same side; IPv4-mapped IPv6 is
/// the IPv4 client; IPv6 clients are split too.
fn hashing_is_stable(make: Make<'_>) {
    let mut a = harness(make, &config(r#", "percentB": 30"#));
    let mut b = harness(make, &config(r#", "percentB": 30"#));
    for ip in clients().step_by(7) {
        let first = variant_of(&mut a, ip, 1);
        assert_eq!(first, if bucket(ip) < 30 { "b" } else { "a" }, "{ip}");
        for port in [443, 65_535] {
            assert_eq!(variant_of(&mut a, ip, port), first, "{ip}:{port}");
        }
        assert_eq!(variant_of(&mut b, ip, 1), first, "{ip} on another instance");
        let IpAddr::V4(v4) = ip else { unreachable!() };
        assert_eq!(
            variant_of(&mut a, IpAddr::V6(v4.to_ipv6_mapped()), 1),
            first
        );
    }
    let v6 = (0..1000u16).map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)));
    let on_b = v6.filter(|&ip| variant_of(&mut a, ip, 1) == "b").count();
    assert!(on_b.abs_diff(300) <= 50, "30% of 1000 IPv6 clients: {on_b}");
}

fn other_ports_are_passed_on(make: Make<'_>) {
    let mut h = harness(make, &config(""));
    let req = Request::get("shop.example", "/")
        .port(80)
        .header("x-ab", "b");
    assert_eq!(h.request(&req), RequestDecision::Pass);
    let req = Request::get("shop.example", "/")
        .port(8443)
        .tls("shop.example");
    assert_eq!(h.request(&req), RequestDecision::Pass);
}

fn bad_configs(make: Make<'_>) {
    let a = r#""a": {"targets": [{"host": "h", "port": 1}]}"#;
    let b = r#""b": {"targets": [{"host": "h", "port": 2}]}"#;
    let ok = format!(r#""route": "r", "port": 80, {a}, {b}"#);
    let cases: Vec<(String, &str)> = vec![
        (format!(r#"{{"port": 80, {a}, {b}}}"#), "route: required"),
        (
            format!(r#"{{"route": " ", "port": 80, {a}, {b}}}"#),
            "route: must not be empty",
        ),
        (format!(r#"{{"route": "r", {a}, {b}}}"#), "port: required"),
        (
            format!(r#"{{"route": "r", "port": 0, {a}, {b}}}"#),
            "port: 0 is out of range 1-65535",
        ),
        (
            format!(r#"{{"route": "r", "port": "80", {a}, {b}}}"#),
            "port: expected a number, got a string",
        ),
        (
            format!(r#"{{"route": "r", "port": 80, {a}}}"#),
            "b: required",
        ),
        (
            format!(r#"{{"route": "r", "port": 80, "a": [], {b}}}"#),
            "a: expected an object {\"targets\": [...]}, got a list",
        ),
        (
            format!(r#"{{"route": "r", "port": 80, "a": {{}}, {b}}}"#),
            "a.targets: required",
        ),
        (
            format!(r#"{{"route": "r", "port": 80, "a": {{"targets": []}}, {b}}}"#),
            "a.targets: must not be empty",
        ),
        (
            format!(r#"{{"route": "r", "port": 80, "a": {{"targets": [], "weight": 1}}, {b}}}"#),
            "a.weight: unknown key (expected one of targets)",
        ),
        (
            format!(
                r#"{{"route": "r", "port": 80, {a}, "b": {{"targets": [{{"host": "h", "port": 70000}}]}}}}"#
            ),
            "b.targets[0].port: 70000 is out of range 1-65535",
        ),
        (
            format!(r#"{{"route": "r", "port": 80, {a}, "b": {{"targets": [{{"host": "h"}}]}}}}"#),
            "b.targets[0].port: required",
        ),
        (
            format!(
                r#"{{"route": "r", "port": 80, {a}, "b": {{"targets": [{{"host": "", "port": 1}}]}}}}"#
            ),
            "b.targets[0].host: must not be empty",
        ),
        (
            format!(
                r#"{{"route": "r", "port": 80, {a}, "b": {{"targets": [{{"host": "h", "port": 1, "tls": true}}]}}}}"#
            ),
            "b.targets[0].tls: unknown key",
        ),
        (
            format!(r#"{{"route": "r", "port": 80, {a}, "b": {{"targets": ["h:1"]}}}}"#),
            "b.targets[0]: expected an object {\"host\", \"port\"}, got a string",
        ),
        (
            format!(r#"{{{ok}, "percentB": 101}}"#),
            "percentB: 101 is out of range 0-100",
        ),
        (
            format!(r#"{{{ok}, "percentB": 12.5}}"#),
            "percentB: 12.5 is not a whole number",
        ),
        (
            format!(r#"{{{ok}, "percentb": 10}}"#),
            "percentb: unknown key (expected one of route, port, a, b, cookie, header, percentB)",
        ),
        (
            format!(r#"{{{ok}, "cookie": "a b"}}"#),
            "cookie: \"a b\" is not a cookie name",
        ),
        (
            format!(r#"{{{ok}, "cookie": "ab="}}"#),
            "cookie: \"ab=\" is not a cookie name",
        ),
        (
            format!(r#"{{{ok}, "header": "x-ab:"}}"#),
            "header: \"x-ab:\" is not a header name",
        ),
        (
            format!(r#"{{{ok}, "header": 7}}"#),
            "header: expected a string, got a number",
        ),
        (
            "[]".into(),
            "ab-split config: expected an object, got a list",
        ),
        ("{".into(), "ab-split config: EOF while parsing"),
    ];
    for (config, text) in cases {
        match make(&config) {
            Err(CallError::Init(msg)) => assert!(msg.starts_with(text), "{config}: {msg}"),
            Err(other) => panic!("{config}: expected an init error, got {other}"),
            Ok(_) => panic!("{config}: expected an init error"),
        }
    }
    // `null` is absent: the defaults.
    let mut h = harness(
        make,
        &format!(r#"{{{ok}, "cookie": null, "header": null, "percentB": null}}"#),
    );
    let req = Request::get("a", "/").port(80).header("x-ab", "b");
    assert_eq!(split(&mut h, &req).variant, "b");
}

// Each case runs natively and against the built `.wasm`.
turnout::natively_and_as_wasm!(
    AbSplit:
    info,
    the_header_forces_a_side,
    the_cookie_keeps_a_side,
    a_hashed_side_sets_the_cookie,
    hashing_gives_b_its_share,
    hashing_is_stable,
    other_ports_are_passed_on,
    bad_configs,
);
