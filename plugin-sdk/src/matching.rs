//! Matching helpers with SmartProxy's rules: domain wildcards, client IP
//! patterns and HTTP path patterns.
//!
//! Patterns are parsed once (at `init`) and matched per connection without
//! allocating.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::types::canonical_ip;

mod ip_list;
pub use ip_list::IpList;

/// Why a pattern did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid pattern {:?}: {}", self.pattern, self.reason)
    }
}

impl std::error::Error for PatternError {}

fn err(pattern: &str, reason: &'static str) -> PatternError {
    PatternError {
        pattern: pattern.to_owned(),
        reason,
    }
}

/// Lower-cases, trims surrounding whitespace and drops one trailing dot,
/// borrowing when the name is already normal.
pub fn normalize_domain(name: &str) -> Cow<'_, str> {
    // Per request (and per candidate route) in plugins: one pass over the
    // bytes answers the usual case, a name that is already normal.
    // Printable ASCII other than upper case: `!`..=`@` and `[`..=`~`.
    let normal = |b: &u8| matches!(b, b'!'..=b'@' | b'['..=b'~');
    if name.as_bytes().iter().all(normal) && !name.ends_with('.') {
        return Cow::Borrowed(name);
    }
    let trimmed = name.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// `*` matches any run of characters (dots included), anchored at both ends.
/// Both sides must already be normalised.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` seen and the text index it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// A domain pattern: an exact name or one with `*` wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainPattern {
    normalized: String,
    /// Whether it contains `*`, asked per request.
    wildcard: bool,
}

impl DomainPattern {
    /// Parses (normalises) a pattern; empty patterns are refused.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let normalized = normalize_domain(pattern).into_owned();
        if normalized.is_empty() {
            return Err(err(pattern, "empty domain"));
        }
        if normalized
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'/')
        {
            return Err(err(pattern, "domains cannot contain whitespace or '/'"));
        }
        let wildcard = normalized.contains('*');
        Ok(Self {
            normalized,
            wildcard,
        })
    }

    /// The normalised pattern text.
    pub fn as_str(&self) -> &str {
        &self.normalized
    }

    /// Whether it contains `*`.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// Whether `name` (normalised here) matches.
    pub fn matches(&self, name: &str) -> bool {
        self.matches_normalized(&normalize_domain(name))
    }

    /// Whether `name`, already normalised ([`normalize_domain`]), matches:
    /// for a name tried against many patterns.
    pub fn matches_normalized(&self, name: &str) -> bool {
        if self.wildcard {
            glob_match(&self.normalized, name)
        } else {
            self.normalized == name
        }
    }
}

/// A client IP pattern: exact address, CIDR (v4 or v6), `a-b` range, or
/// `*` wildcards by octet (`192.168.*`, `10.*.0.1`, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpPattern {
    /// Matches every address.
    Any,
    /// Inclusive range of IPv4 addresses (exact and CIDR become this too).
    V4Range(u32, u32),
    /// Inclusive range of IPv6 addresses.
    V6Range(u128, u128),
    /// Per-octet match; `None` is `*`.
    V4Octets([Option<u8>; 4]),
}

impl IpPattern {
    /// Parses a pattern. IPv4-mapped IPv6 forms are folded to IPv4.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let p = pattern.trim();
        if p.is_empty() {
            return Err(err(pattern, "empty IP pattern"));
        }
        if p == "*" {
            return Ok(IpPattern::Any);
        }
        if let Some((addr, len)) = p.split_once('/') {
            let ip: IpAddr = addr
                .trim()
                .parse()
                .map_err(|_| err(pattern, "CIDR base is not an IP address"))?;
            let len: u32 = len
                .trim()
                .parse()
                .map_err(|_| err(pattern, "CIDR prefix length is not a number"))?;
            return match ip {
                IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && len >= 96 => {
                    let v4 = u32::from(
                        v6.to_ipv4_mapped()
                            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                    );
                    Ok(v4_cidr(v4, len - 96))
                }
                IpAddr::V4(v4) if len <= 32 => Ok(v4_cidr(u32::from(v4), len)),
                IpAddr::V6(v6) if len <= 128 => {
                    let base = u128::from(v6);
                    let mask = if len == 0 {
                        0
                    } else {
                        u128::MAX << (128 - len)
                    };
                    Ok(IpPattern::V6Range(base & mask, (base & mask) | !mask))
                }
                _ => Err(err(
                    pattern,
                    "CIDR prefix length too long for the address family",
                )),
            };
        }
        if p.contains('*') {
            let parts: Vec<&str> = p.split('.').collect();
            if parts.len() > 4 {
                return Err(err(pattern, "more than four octets"));
            }
            let mut octets = [None; 4];
            for (i, part) in parts.iter().enumerate() {
                octets[i] = match *part {
                    "*" => None,
                    n => Some(
                        n.parse::<u8>()
                            .map_err(|_| err(pattern, "octet is not 0-255 or '*'"))?,
                    ),
                };
            }
            return Ok(IpPattern::V4Octets(octets));
        }
        if let Some((a, b)) = p.split_once('-') {
            let a: IpAddr = a
                .trim()
                .parse()
                .map_err(|_| err(pattern, "range start is not an IP address"))?;
            let b: IpAddr = b
                .trim()
                .parse()
                .map_err(|_| err(pattern, "range end is not an IP address"))?;
            return match (canonical_ip(a), canonical_ip(b)) {
                (IpAddr::V4(a), IpAddr::V4(b)) if u32::from(a) <= u32::from(b) => {
                    Ok(IpPattern::V4Range(a.into(), b.into()))
                }
                (IpAddr::V6(a), IpAddr::V6(b)) if u128::from(a) <= u128::from(b) => {
                    Ok(IpPattern::V6Range(a.into(), b.into()))
                }
                (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                    Err(err(pattern, "range start is after its end"))
                }
                _ => Err(err(pattern, "range mixes IPv4 and IPv6")),
            };
        }
        let ip: IpAddr = p
            .parse()
            .map_err(|_| err(pattern, "not an address, CIDR, range or wildcard"))?;
        Ok(match canonical_ip(ip) {
            IpAddr::V4(v4) => IpPattern::V4Range(v4.into(), v4.into()),
            IpAddr::V6(v6) => IpPattern::V6Range(v6.into(), v6.into()),
        })
    }

    /// Whether `ip` matches (IPv4-mapped IPv6 is treated as IPv4).
    pub fn matches(&self, ip: IpAddr) -> bool {
        match (self, canonical_ip(ip)) {
            (IpPattern::Any, _) => true,
            (IpPattern::V4Range(lo, hi), IpAddr::V4(v4)) => (*lo..=*hi).contains(&u32::from(v4)),
            (IpPattern::V6Range(lo, hi), IpAddr::V6(v6)) => (*lo..=*hi).contains(&u128::from(v6)),
            (IpPattern::V4Octets(pat), IpAddr::V4(v4)) => pat
                .iter()
                .zip(v4.octets())
                .all(|(p, o)| p.is_none_or(|p| p == o)),
            _ => false,
        }
    }
}

fn v4_cidr(base: u32, len: u32) -> IpPattern {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    IpPattern::V4Range(base & mask, (base & mask) | !mask)
}

/// An HTTP path pattern: `*` alone matches everything; `:name` matches one
/// non-empty segment; a pattern ending in `/` or `*` is a prefix match,
/// anything else is exact. The query string is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    raw: String,
    segments: Vec<String>,
    prefix: bool,
}

impl PathPattern {
    /// Parses a pattern; it must be `*` or start with `/`.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern == "*" {
            return Ok(Self {
                raw: pattern.to_owned(),
                segments: Vec::new(),
                prefix: true,
            });
        }
        if !pattern.starts_with('/') {
            return Err(err(pattern, "a path pattern starts with '/' or is '*'"));
        }
        let (body, prefix) = match pattern.strip_suffix('*') {
            Some(body) => (body, true),
            None => (pattern, pattern.ends_with('/')),
        };
        if body.contains('*') {
            return Err(err(pattern, "'*' is only allowed at the end"));
        }
        Ok(Self {
            raw: pattern.to_owned(),
            segments: body.split('/').map(str::to_owned).collect(),
            prefix,
        })
    }

    /// The pattern as written; its length is its specificity.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether `path` (query ignored) matches.
    pub fn matches(&self, path: &str) -> bool {
        if self.segments.is_empty() {
            return true;
        }
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let mut parts = path.split('/');
        let last = self.segments.len() - 1;
        for (i, seg) in self.segments.iter().enumerate() {
            let Some(part) = parts.next() else {
                return false;
            };
            let ok = if let Some(_name) = seg.strip_prefix(':') {
                !part.is_empty()
            } else if i == last && self.prefix {
                part.starts_with(seg.as_str())
            } else {
                part == seg
            };
            if !ok {
                return false;
            }
        }
        self.prefix || parts.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn domains_follow_smartproxy_rules() {
        let wild = DomainPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com"), "* spans dots");
        assert!(
            !wild.matches("example.com"),
            "wildcard needs something before the dot"
        );
        assert!(!wild.matches("a.example.com.evil"), "anchored at the end");
        let exact = DomainPattern::parse(" Example.COM. ").unwrap();
        assert!(exact.matches("example.com"));
        assert!(
            exact.matches("EXAMPLE.com."),
            "case and one trailing dot ignored"
        );
        assert!(!exact.matches("example.com.."));
        assert!(exact.matches_normalized("example.com"));
        assert!(wild.matches_normalized("a.example.com"));
        assert!(DomainPattern::parse("  ").is_err());
        for (name, normal) in [
            ("a-b.example.com", "a-b.example.com"),
            ("[::1]", "[::1]"),
            ("A.b", "a.b"),
            ("a.b.", "a.b"),
            (" a.b ", "a.b"),
            ("Ünï.b", "Ünï.b"),
        ] {
            assert_eq!(normalize_domain(name), normal, "{name:?}");
        }
        assert!(matches!(normalize_domain("a.b"), Cow::Borrowed(_)));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn ip_patterns_cover_every_form() {
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("0.0.0.0/0", "1.2.3.4", true),
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7", "::ffff:192.168.1.7", true),
            ("::ffff:192.168.1.7", "192.168.1.7", true),
            ("::ffff:10.0.0.0/104", "10.9.9.9", true),
            ("192.168.*", "192.168.44.1", true),
            ("192.168.*", "192.169.0.1", false),
            ("10.*.0.1", "10.77.0.1", true),
            ("10.*.0.1", "10.77.0.2", false),
            ("10.0.0.5-10.0.0.9", "10.0.0.9", true),
            ("10.0.0.5-10.0.0.9", "10.0.0.10", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::1", "::1", true),
            ("*", "::1", true),
            ("192.168.*", "::1", false),
        ];
        for (pat, addr, want) in cases {
            let p = IpPattern::parse(pat).unwrap();
            assert_eq!(p.matches(ip(addr)), want, "{pat} vs {addr}");
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "1.2.3",
            "a.b.c.d",
            "10.0.0.9-10.0.0.1",
            "1.2.3.4-::1",
            "1.2.3.4.*",
        ] {
            assert!(IpPattern::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn paths_exact_prefix_and_params() {
        let cases = [
            ("*", "/anything", true),
            ("/api", "/api", true),
            ("/api", "/api/x", false),
            ("/api/", "/api/x", true),
            ("/api/", "/api", false),
            ("/api/*", "/api/x/y", true),
            ("/api*", "/apis", true),
            ("/users/:id", "/users/42", true),
            ("/users/:id", "/users/", false),
            ("/users/:id", "/users/42/posts", false),
            ("/users/:id/*", "/users/42/posts", true),
            ("/a", "/a?x=1", true),
        ];
        for (pat, path, want) in cases {
            let p = PathPattern::parse(pat).unwrap();
            assert_eq!(p.matches(path), want, "{pat} vs {path}");
        }
        assert!(PathPattern::parse("api").is_err());
        assert!(PathPattern::parse("/a*/b").is_err());
    }
}
