//! A list of client IP patterns, indexed so that a long one (a block list
//! of thousands) costs about what a short one does.
//!
//! Exact addresses, CIDRs, `a-b` ranges and trailing wildcards
//! (`192.168.*`) are all ranges of addresses: they are merged into sorted,
//! disjoint intervals and searched in O(log n). Only a wildcard before a
//! fixed octet (`10.*.0.1`) is not a range; those few are scanned. A
//! linear scan of every pattern measured 33 µs per `admit` with 1000
//! patterns in each of the guard's lists (`cargo bench -p turnout-benches
//! --bench plugin_calls`, `admit/guard/lists-1000`), inside the sandbox,
//! on every connection.

use std::net::IpAddr;

use super::{IpPattern, PatternError};
use crate::types::canonical_ip;

/// A list of IP patterns; matches when any of them does.
///
/// Empty, it is one null pointer: plugins hold one or two per route, and a
/// routes table of 10 000 must fit the default 16 MiB plugin memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList(Option<Box<Index>>);

/// A non-empty list, indexed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Index {
    /// A `*` is in the list.
    any: bool,
    /// Sorted, disjoint, non-adjacent inclusive IPv4 ranges.
    v4: Vec<(u32, u32)>,
    /// The same for IPv6.
    v6: Vec<(u128, u128)>,
    /// Per-octet patterns that are not ranges, scanned in order.
    octets: Vec<[Option<u8>; 4]>,
}

impl IpList {
    /// Parses every pattern; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let parsed = patterns
            .iter()
            .map(|p| IpPattern::parse(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_patterns(parsed))
    }

    /// The list of `patterns`, indexed.
    pub fn from_patterns(patterns: impl IntoIterator<Item = IpPattern>) -> Self {
        let mut list = Index::default();
        let mut empty = true;
        for p in patterns {
            empty = false;
            match p {
                IpPattern::Any => list.any = true,
                IpPattern::V4Range(lo, hi) => list.v4.push((lo, hi)),
                IpPattern::V6Range(lo, hi) => list.v6.push((lo, hi)),
                IpPattern::V4Octets(o) => match octets_range(o) {
                    Some(range) => list.v4.push(range),
                    None => list.octets.push(o),
                },
            }
        }
        if empty {
            return IpList(None);
        }
        list.v4 = merged(list.v4, |hi| hi.checked_add(1));
        list.v6 = merged(list.v6, |hi| hi.checked_add(1));
        list.octets.shrink_to_fit();
        IpList(Some(Box::new(list)))
    }

    /// Whether any pattern matches `ip` (IPv4-mapped IPv6 is IPv4).
    pub fn matches(&self, ip: IpAddr) -> bool {
        let Some(list) = &self.0 else {
            return false;
        };
        if list.any {
            return true;
        }
        match canonical_ip(ip) {
            IpAddr::V4(v4) => {
                within(&list.v4, u32::from(v4))
                    || list.octets.iter().any(|pat| {
                        pat.iter()
                            .zip(v4.octets())
                            .all(|(p, o)| p.is_none_or(|p| p == o))
                    })
            }
            IpAddr::V6(v6) => within(&list.v6, u128::from(v6)),
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// A per-octet pattern whose wildcards all come after its fixed octets
/// (`192.168.*`, `10.*`) as the range it covers.
fn octets_range(octets: [Option<u8>; 4]) -> Option<(u32, u32)> {
    let fixed = octets.iter().take_while(|o| o.is_some()).count();
    if octets[fixed..].iter().any(Option::is_some) {
        return None;
    }
    let mut lo = [0u8; 4];
    let mut hi = [255u8; 4];
    for (i, o) in octets.iter().enumerate().take(fixed) {
        let o = o.unwrap_or(0);
        (lo[i], hi[i]) = (o, o);
    }
    Some((u32::from_be_bytes(lo), u32::from_be_bytes(hi)))
}

/// `ranges` sorted and merged where they overlap or touch (`next(hi)` is
/// the address after `hi`, `None` past the last one).
fn merged<T: Ord + Copy>(mut ranges: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if next(last.1).is_none_or(|after| lo <= after) => {
                last.1 = last.1.max(hi);
            }
            _ => out.push((lo, hi)),
        }
    }
    out.shrink_to_fit();
    out
}

/// Whether `x` is in one of the sorted, disjoint `ranges`.
fn within<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|&(lo, _)| lo <= x);
    i > 0 && x <= ranges[i - 1].1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small xorshift: the same cases on every run, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A pattern over a small corner of the address space (so that
    /// patterns overlap, touch and nest), in every form.
    fn pattern(rng: &mut Rng) -> String {
        let a = |rng: &mut Rng| format!("10.0.{}.{}", rng.below(4), rng.below(256));
        match rng.below(9) {
            0 => a(rng),
            1 => format!("{}/{}", a(rng), 22 + rng.below(11)),
            2 => {
                let (x, y) = (rng.below(1024), rng.below(1024));
                let (lo, hi) = (x.min(y), x.max(y));
                format!(
                    "10.0.{}.{}-10.0.{}.{}",
                    lo / 256,
                    lo % 256,
                    hi / 256,
                    hi % 256
                )
            }
            3 => format!("10.0.{}.*", rng.below(4)),
            4 => format!("10.*.{}.{}", rng.below(4), rng.below(256)),
            5 => format!("2001:db8::{:x}", rng.below(1024)),
            6 => format!("2001:db8::{:x}/{}", rng.below(1024), 118 + rng.below(11)),
            7 => format!("::ffff:10.0.{}.{}", rng.below(4), rng.below(256)),
            _ => "255.255.255.255".to_owned(),
        }
    }

    fn address(rng: &mut Rng) -> IpAddr {
        match rng.below(4) {
            0 => format!("2001:db8::{:x}", rng.below(1100)),
            1 => format!("::ffff:10.0.{}.{}", rng.below(5), rng.below(256)),
            2 => format!("10.{}.{}.{}", rng.below(2), rng.below(5), rng.below(256)),
            _ => format!("10.0.{}.{}", rng.below(5), rng.below(256)),
        }
        .parse()
        .expect("an address")
    }

    #[test]
    fn the_index_answers_as_a_scan_of_every_pattern_would() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let texts: Vec<String> = (0..rng.below(40)).map(|_| pattern(&mut rng)).collect();
            let patterns: Vec<IpPattern> = texts
                .iter()
                .map(|t| IpPattern::parse(t).unwrap_or_else(|e| panic!("{t}: {e}")))
                .collect();
            let list = IpList::parse(&texts).expect("parses");
            assert_eq!(list.is_empty(), patterns.is_empty());
            for _ in 0..200 {
                let ip = address(&mut rng);
                let scan = patterns.iter().any(|p| p.matches(ip));
                assert_eq!(
                    list.matches(ip),
                    scan,
                    "round {round}: {ip} against {texts:?}"
                );
            }
        }
    }

    #[test]
    fn edges_of_the_address_space_and_wildcards() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        let list = IpList::parse(&["255.255.255.255", "0.0.0.0", "::/0"]).unwrap();
        assert!(list.matches(ip("255.255.255.255")));
        assert!(list.matches(ip("0.0.0.0")));
        assert!(!list.matches(ip("1.2.3.4")));
        assert!(list.matches(ip("ffff::1")), "::/0 is every IPv6 address");
        let all = IpList::parse(&["0.0.0.0/0", "255.255.255.0/24"]).unwrap();
        let index = |l: &IpList| l.0.clone().expect("not empty");
        assert_eq!(
            index(&all).v4,
            vec![(0, u32::MAX)],
            "merged, without overflow"
        );
        let octets = IpList::parse(&["192.168.*", "10.*.0.1", "*.1.2.3"]).unwrap();
        assert_eq!(
            index(&octets).octets.len(),
            2,
            "only wildcards before a fixed octet are scanned"
        );
        assert!(octets.matches(ip("192.168.200.1")));
        assert!(octets.matches(ip("10.99.0.1")));
        assert!(octets.matches(ip("7.1.2.3")));
        assert!(!octets.matches(ip("192.169.0.1")));
        assert!(IpList::parse(&["*"]).unwrap().matches(ip("::1")));
        assert!(IpList::parse::<&str>(&[]).unwrap().is_empty());
        assert!(!IpList::parse(&["*"]).unwrap().is_empty());
    }
}
