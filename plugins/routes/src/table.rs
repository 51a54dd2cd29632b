//! The route table: every route in decision order, and indexes that find
//! the few candidates for one connection without scanning the whole list.
//!
//! A route with several domains is entered once per domain pattern, each
//! entry ranked by its own specificity (`api.example.com` and
//! `*.api.example.com` on one route rank as exact and wildcard). Ranks are
//! fixed at `init`:
//!
//! 1. higher `priority`;
//! 2. exact domain, then wildcard, then no domain;
//! 3. more criteria (`domains`, `clientIp`, `tlsVersion`);
//! 4. a longer wildcard (more literal characters);
//! 5. config order.
//!
//! Entries with domains are indexed by domain: exact names in a hash map,
//! `*.suffix` patterns by suffix (the SNI's dot-suffixes are looked up), any
//! other wildcard in a short list matched with `glob_match`. Entries without
//! domains are indexed by port (single ports and short ranges in a hash map,
//! long ranges in a list). Every list is in rank order, so each is scanned
//! only until its first fit or until it cannot beat the best found so far.

use std::cmp::Reverse;
use std::collections::HashMap;

use turnout_plugin_sdk::matching::{glob_match, normalize_domain};
use turnout_plugin_sdk::{Connection, PortRange};

use crate::config::Route;

/// Port ranges up to this many ports are indexed port by port.
const EXPAND_RANGE: u32 = 64;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Table {
    routes: Vec<Route>,
    /// Rank → route index.
    order: Vec<usize>,
    /// Exact domain → ranks.
    exact: HashMap<String, Vec<usize>>,
    /// `suffix` of a `*.suffix` pattern → ranks.
    suffix: HashMap<String, Vec<usize>>,
    /// Other wildcard patterns, by rank.
    globs: Vec<(usize, String)>,
    /// Port → ranks of entries without domains.
    any_domain_ports: HashMap<u16, Vec<usize>>,
    /// Long ranges of entries without domains, by rank.
    any_domain_ranges: Vec<(PortRange, usize)>,
}

/// How an entry's domain is looked up (here and in `certificates`).
pub(crate) enum Domain<'a> {
    Any,
    Exact(&'a str),
    Suffix(&'a str),
    Glob(&'a str),
}

impl<'a> Domain<'a> {
    /// How `pattern` (normalised) is looked up: it never returns `Any`.
    pub(crate) fn classify(pattern: &'a str) -> Self {
        if !pattern.contains('*') {
            return Domain::Exact(pattern);
        }
        match pattern.strip_prefix("*.") {
            Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => Domain::Suffix(suffix),
            _ => Domain::Glob(pattern),
        }
    }
}

/// Sort key of an entry: smaller is tried first.
type Rank = (
    Reverse<i64>,
    Reverse<u8>,
    Reverse<u8>,
    Reverse<usize>,
    usize,
);

fn rank_key(index: usize, route: &Route, pattern: Option<&str>) -> Rank {
    let (kind, literal) = match pattern {
        None => (0, 0),
        Some(p) if p.contains('*') => (1, p.bytes().filter(|&b| b != b'*').count()),
        Some(_) => (2, 0),
    };
    (
        Reverse(route.priority),
        Reverse(kind),
        Reverse(route.criteria()),
        Reverse(literal),
        index,
    )
}

impl Table {
    /// Ranks and indexes `routes`; disabled and HTTP-only routes are left
    /// out of the indexes (they never match a connection).
    pub(crate) fn new(routes: Vec<Route>) -> Self {
        let mut entries: Vec<(Rank, usize, Option<usize>)> = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            if !route.enabled || route.http_only() {
                continue;
            }
            if route.domains.is_empty() {
                entries.push((rank_key(i, route, None), i, None));
            }
            for (d, pattern) in route.domains.iter().enumerate() {
                entries.push((rank_key(i, route, Some(pattern.as_str())), i, Some(d)));
            }
        }
        entries.sort_by_key(|e| e.0);

        let mut table = Table {
            order: Vec::with_capacity(entries.len()),
            exact: HashMap::new(),
            suffix: HashMap::new(),
            globs: Vec::new(),
            any_domain_ports: HashMap::new(),
            any_domain_ranges: Vec::new(),
            routes: Vec::new(),
        };
        for (rank, &(_, i, domain)) in entries.iter().enumerate() {
            table.order.push(i);
            let route = &routes[i];
            let domain =
                domain.map_or(Domain::Any, |d| Domain::classify(route.domains[d].as_str()));
            match domain {
                Domain::Exact(name) => push(&mut table.exact, name, rank),
                Domain::Suffix(suffix) => push(&mut table.suffix, suffix, rank),
                Domain::Glob(pattern) => table.globs.push((rank, pattern.to_owned())),
                Domain::Any => {
                    for r in &route.ports {
                        if u32::from(r.to) - u32::from(r.from) < EXPAND_RANGE {
                            for port in r.from..=r.to {
                                table.any_domain_ports.entry(port).or_default().push(rank);
                            }
                        } else {
                            table.any_domain_ranges.push((*r, rank));
                        }
                    }
                }
            }
        }
        table.routes = routes;
        table
    }

    /// Every route, in config order.
    pub(crate) fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route at `index` (config order).
    pub(crate) fn route(&self, index: usize) -> &Route {
        &self.routes[index]
    }

    /// The index of the route `conn` takes, if any.
    pub(crate) fn select(&self, conn: &Connection) -> Option<usize> {
        let mut best = usize::MAX;
        if let Some(sni) = conn.sni() {
            let sni = normalize_domain(sni);
            let sni: &str = &sni;
            if let Some(ranks) = self.exact.get(sni) {
                self.first_fit(ranks, conn, true, &mut best);
            }
            for (dot, _) in sni.match_indices('.') {
                if let Some(ranks) = self.suffix.get(&sni[dot + 1..]) {
                    self.first_fit(ranks, conn, true, &mut best);
                }
            }
            for (rank, pattern) in &self.globs {
                if *rank >= best {
                    break;
                }
                if glob_match(pattern, sni) && self.fits(*rank, conn, true) {
                    best = *rank;
                    break;
                }
            }
        }
        let port = conn.peer.listener_port;
        if let Some(ranks) = self.any_domain_ports.get(&port) {
            self.first_fit(ranks, conn, false, &mut best);
        }
        for &(range, rank) in &self.any_domain_ranges {
            if rank >= best {
                break;
            }
            if range.contains(port) && self.fits(rank, conn, false) {
                best = rank;
                break;
            }
        }
        self.order.get(best).copied()
    }

    /// Lowers `best` to the first rank in `ranks` that fits, if it beats it.
    fn first_fit(&self, ranks: &[usize], conn: &Connection, check_port: bool, best: &mut usize) {
        for &rank in ranks {
            if rank >= *best {
                return;
            }
            if self.fits(rank, conn, check_port) {
                *best = rank;
                return;
            }
        }
    }

    /// Whether the entry's route matches `conn`, its domain aside (the
    /// index already matched it).
    fn fits(&self, rank: usize, conn: &Connection, check_port: bool) -> bool {
        let route = &self.routes[self.order[rank]];
        let port = conn.peer.listener_port;
        (!check_port || route.ports.iter().any(|r| r.contains(port)))
            && route
                .client_ip
                .as_ref()
                .is_none_or(|ips| ips.matches(conn.peer.ip()))
            && (route.tls_versions.is_empty()
                || conn.tls.as_ref().is_some_and(|hello| {
                    hello
                        .versions
                        .iter()
                        .any(|v| route.tls_versions.contains(v))
                }))
    }

    /// `(plain, tls)`: disjoint sorted port ranges to listen on. A port any
    /// route needs the ClientHello on is a TLS port (plain bytes arriving
    /// there still route on port and client).
    pub(crate) fn listen(&self) -> (Vec<PortRange>, Vec<PortRange>) {
        let (mut all, mut tls) = (Vec::new(), Vec::new());
        for route in self.routes.iter().filter(|r| r.enabled) {
            all.extend_from_slice(&route.ports);
            if route.needs_client_hello() {
                tls.extend_from_slice(&route.ports);
            }
        }
        let tls = merge(tls);
        (subtract(&merge(all), &tls), tls)
    }
}

fn push(map: &mut HashMap<String, Vec<usize>>, key: &str, rank: usize) {
    match map.get_mut(key) {
        Some(ranks) => ranks.push(rank),
        None => {
            map.insert(key.to_owned(), vec![rank]);
        }
    }
}

/// Sorted, disjoint, with touching ranges joined.
pub(crate) fn merge(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if u32::from(r.from) <= u32::from(last.to) + 1 => {
                last.to = last.to.max(r.to);
            }
            _ => out.push(r),
        }
    }
    out
}

/// `all` minus `minus`; both sorted and disjoint, `minus` within `all`.
pub(crate) fn subtract(all: &[PortRange], minus: &[PortRange]) -> Vec<PortRange> {
    let range = |from: u32, to: u32| PortRange {
        from: u16::try_from(from).unwrap_or(u16::MAX),
        to: u16::try_from(to).unwrap_or(u16::MAX),
    };
    let mut out = Vec::new();
    for a in all {
        let (mut from, to) = (u32::from(a.from), u32::from(a.to));
        for m in minus.iter().filter(|m| m.to >= a.from && m.from <= a.to) {
            if u32::from(m.from) > from {
                out.push(range(from, u32::from(m.from) - 1));
            }
            from = from.max(u32::from(m.to) + 1);
        }
        if from <= to {
            out.push(range(from, to));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(from: u16, to: u16) -> PortRange {
        PortRange { from, to }
    }

    #[test]
    fn merge_and_subtract_ranges() {
        assert_eq!(
            merge(vec![
                r(443, 443),
                r(80, 80),
                r(81, 90),
                r(85, 100),
                r(443, 443)
            ]),
            [r(80, 100), r(443, 443)]
        );
        assert_eq!(
            subtract(&[r(1, 65535)], &[r(1, 1), r(443, 443), r(65535, 65535)]),
            [r(2, 442), r(444, 65534)]
        );
        assert_eq!(
            subtract(&[r(80, 80), r(443, 443)], &[r(443, 443)]),
            [r(80, 80)]
        );
        assert_eq!(subtract(&[r(8000, 8010)], &[r(8000, 8010)]), []);
    }

    #[test]
    fn domain_classes() {
        assert!(matches!(
            Domain::classify("a.example.com"),
            Domain::Exact(_)
        ));
        assert!(matches!(
            Domain::classify("*.example.com"),
            Domain::Suffix("example.com")
        ));
        assert!(matches!(
            Domain::classify("*.*.example.com"),
            Domain::Glob(_)
        ));
        assert!(matches!(
            Domain::classify("api*.example.com"),
            Domain::Glob(_)
        ));
        assert!(matches!(Domain::classify("*"), Domain::Glob(_)));
    }
}
