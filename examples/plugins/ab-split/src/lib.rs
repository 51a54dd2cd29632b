//! `example-ab-split`: a `request` plugin that splits the HTTP requests on
//! one plaintext HTTP port between two upstreams, A and B, and keeps each
//! client on its side with a cookie.
//!
//! Each request on `port` gets its variant from, in order:
//!
//! 1. the override header (`x-ab: a` or `x-ab: b`, any case), for testers
//!    and health checks that must reach one side; it sets no cookie;
//! 2. the cookie (`Cookie: ab=b`), the client's earlier assignment;
//! 3. a stable hash of the client IP: FNV-1a (64-bit) over the address
//!    octets (4 for IPv4, 16 for IPv6; `::ffff:a.b.c.d` is `a.b.c.d`),
//!    `hash % 100 < percentB` is B. The response then sets the cookie
//!    (`Set-Cookie: ab=b; Path=/; Max-Age=86400; HttpOnly`, appended to the
//!    upstream's own), so the client stays put even if its address changes.
//!
//! A value other than `a` or `b` in the header or the cookie is ignored (the
//! next source decides, and a bad cookie is replaced). The request is
//! forwarded to the variant's upstream with `x-ab-variant: a|b` set (any such
//! header from the client is replaced), so the backend knows which side it is
//! serving. Requests on other ports are left to the next plugin.
//!
//! Both headers are declared in the plugin's interest, so the host hands
//! them over in slots with the request head and no call reads a header
//! through the host.
//!
//! # Configuration
//!
//! ```json
//! {
//!   "route": "shop",
//!   "port": 8080,
//!   "a": { "targets": [{ "host": "10.0.0.10", "port": 80 }] },
//!   "b": { "targets": [{ "host": "10.0.0.20", "port": 80 }] },
//!   "cookie": "ab",
//!   "header": "x-ab",
//!   "percentB": 10
//! }
//! ```
//!
//! | key | meaning |
//! | --- | --- |
//! | `route` (required) | names the two upstreams `<route>-a` and `<route>-b` in logs and metrics, so the sides are counted apart |
//! | `port` (required) | the plaintext HTTP port the plugin asks the host to listen on, and the only port it splits |
//! | `a`, `b` (required) | `{"targets": [...]}`: a non-empty list of `{"host", "port"}`, tried in order |
//! | `cookie` (default `"ab"`) | the cookie that keeps a client on its side (a token; case-sensitive) |
//! | `header` (default `"x-ab"`) | the request header that forces a side (a token) |
//! | `percentB` (default `50`) | whole number 0–100: the share of client addresses without a cookie sent to B |
//!
//! `null` is the same as absent. An unknown key, a wrong type or a value out
//! of range is an init error naming its path, e.g.
//! `b.targets[0].port: 0 is out of range 1-65535`.
//!
//! # Where it goes in the Turnout config
//!
//! Copy `example_ab_split.wasm` into the plugins directory as
//! `ab-split.wasm` and give its config as `plugins.config.ab-split`. It only
//! answers `request`, on its own port, so its place in `plugins.order`
//! matters only against other `request` plugins.

mod config;

use std::net::IpAddr;

use turnout_plugin_sdk::prelude::*;

use crate::config::Config;

/// A side of the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Side A.
    A,
    /// Side B.
    B,
}

impl Variant {
    /// `"a"` or `"b"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::A => "a",
            Variant::B => "b",
        }
    }

    /// `a` or `b`, any case, surrounding spaces ignored; anything else is
    /// `None`. Bytes, since header values need not be UTF-8.
    pub fn parse(value: &[u8]) -> Option<Variant> {
        match trim(value) {
            [b'a' | b'A'] => Some(Variant::A),
            [b'b' | b'B'] => Some(Variant::B),
            _ => None,
        }
    }
}

/// Where a request's variant came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Header,
    Cookie,
    Hash,
}

/// Strips RFC 9110's optional whitespace (spaces and tabs).
fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The values of every cookie called `name` in a `Cookie` header value, in
/// order, with surrounding double quotes removed (RFC 6265 allows them).
///
/// Pairs are split at `;` and also at `,`: the host joins repeated
/// headers with `, `, and an HTTP/2 client sends each cookie as a header of
/// its own (RFC 9113 §8.2.3). A cookie value cannot contain either.
pub fn cookie_values<'a>(header: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    header
        .split(|&b| b == b';' || b == b',')
        .filter_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            Some((trim(&pair[..eq]), trim(&pair[eq + 1..])))
        })
        .filter(move |(n, _)| *n == name.as_bytes())
        .map(|(_, v)| match v {
            [b'"', inner @ .., b'"'] => inner,
            v => v,
        })
}

/// FNV-1a, 64-bit: fixed constants, so a client hashes the same in every
/// instance, after restarts and across rebuilds (std's hasher is seeded
/// randomly).
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The bucket (0–99) of a client address; B gets the buckets below
/// `percentB`.
pub fn bucket(ip: IpAddr) -> u8 {
    let hash = match canonical_ip(ip) {
        IpAddr::V4(v4) => fnv1a64(&v4.octets()),
        IpAddr::V6(v6) => fnv1a64(&v6.octets()),
    };
    // `% 100` is below 100, so the conversion cannot fail.
    u8::try_from(hash % 100).unwrap_or(0)
}

/// See the crate docs.
#[derive(Debug)]
pub struct AbSplit {
    config: Config,
    interest: Interest,
    header_slot: usize,
    cookie_slot: usize,
    upstream_a: u32,
    upstream_b: u32,
}

impl AbSplit {
    fn choose(&self, head: &RequestHead) -> (Variant, Source) {
        if let Some(v) = head.slot(self.header_slot).and_then(Variant::parse) {
            return (v, Source::Header);
        }
        let from_cookie = head.slot(self.cookie_slot).and_then(|cookies| {
            cookie_values(cookies, &self.config.cookie).find_map(Variant::parse)
        });
        if let Some(v) = from_cookie {
            return (v, Source::Cookie);
        }
        let v = if bucket(head.client.ip()) < self.config.percent_b {
            Variant::B
        } else {
            Variant::A
        };
        (v, Source::Hash)
    }
}

impl Plugin for AbSplit {
    fn init(config: &str) -> Result<Self, InitError> {
        let config = config::parse(config)?;
        let mut interest = Interest::default();
        let header_slot = interest.request_header(&config.header);
        let cookie_slot = interest.request_header("cookie");
        let route = &config.route;
        let upstream_a = interest.upstream(Upstream::new(format!("{route}-a"), config.a.clone()));
        let upstream_b = interest.upstream(Upstream::new(format!("{route}-b"), config.b.clone()));
        Ok(AbSplit {
            config,
            interest,
            header_slot,
            cookie_slot,
            upstream_a,
            upstream_b,
        })
    }

    fn info(&self) -> PluginInfo {
        PluginInfo::new("ab-split", env!("CARGO_PKG_VERSION"))
            .hooks(Hooks::REQUEST)
            .listen_http([PortRange::single(self.config.port)])
            .interest(self.interest.clone())
    }

    fn request(&self, head: &RequestHead) -> RequestDecision {
        if head.listener_port != self.config.port {
            return RequestDecision::Pass;
        }
        let (variant, source) = self.choose(head);
        let upstream = match variant {
            Variant::A => self.upstream_a,
            Variant::B => self.upstream_b,
        };
        // `set`: a client's own `x-ab-variant` must not reach the backend.
        let forward = HttpForward::to(upstream)
            .edit_request(HeaderEdit::set("x-ab-variant", variant.as_str()));
        if source != Source::Hash {
            return RequestDecision::Forward(forward);
        }
        // `append`, not `set`: the upstream's own cookies must survive. No
        // `Secure`: the port is plaintext, and the cookie would never return.
        let cookie = format!(
            "{}={}; Path=/; Max-Age=86400; HttpOnly",
            self.config.cookie,
            variant.as_str()
        );
        RequestDecision::Forward(forward.edit_response(HeaderEdit::append("set-cookie", cookie)))
    }
}

turnout_plugin_sdk::export_plugin!(AbSplit);

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(header: &'a str, name: &'a str) -> Vec<&'a str> {
        cookie_values(header.as_bytes(), name)
            .map(|v| std::str::from_utf8(v).unwrap())
            .collect()
    }

    #[test]
    fn cookies_are_split_at_semicolons_and_joined_header_commas() {
        assert_eq!(values("ab=b", "ab"), ["b"]);
        assert_eq!(values("x=1; ab=a; y=2", "ab"), ["a"]);
        assert_eq!(values("x=1;ab=a", "ab"), ["a"], "no space after ;");
        assert_eq!(values("x=1, ab=b", "ab"), ["b"], "two headers, joined");
        assert_eq!(values("ab=\"b\"", "ab"), ["b"], "quoted");
        assert_eq!(values(" ab = a ; ab=b", "ab"), ["a", "b"]);
        assert_eq!(values("xab=b; abc=b; AB=b; ab", "ab"), Vec::<&str>::new());
        assert_eq!(values("", "ab"), Vec::<&str>::new());
        assert_eq!(values("ab=", "ab"), [""]);
    }

    #[test]
    fn variants_parse_from_bytes() {
        assert_eq!(Variant::parse(b"a"), Some(Variant::A));
        assert_eq!(Variant::parse(b" B\t"), Some(Variant::B));
        for bad in [&b""[..], b"c", b"ab", b"a, b", b"\xff"] {
            assert_eq!(Variant::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
