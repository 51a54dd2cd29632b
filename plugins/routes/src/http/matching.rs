//! Choosing the route for one HTTP request: `match.headers` values, where a
//! header's value comes from, and the ranking.
//!
//! Ranking (larger wins), in the spirit of the connection table:
//! 1. higher `priority`;
//! 2. exact domain, then wildcard, then no domain;
//! 3. a longer `path` pattern;
//! 4. more criteria (`domains`, `clientIp`, `path`, each header);
//! 5. a longer wildcard (more literal characters);
//! 6. config order.
//!
//! The candidates are scanned in priority order and the scan stops at the
//! first priority below a match's; a port with thousands of HTTP routes of
//! one priority is scanned whole (an index like the connection table's is
//! the next step if that ever matters).

use std::borrow::Cow;
use std::cmp::Reverse;

use regex::bytes::{Regex, RegexBuilder};
use turnout_plugin_sdk::{RequestHead, Scheme, host};

use super::HttpRoute;
use super::config::token;
use crate::config::{Result, Route, err};

/// Compiled regexes are bounded: a config cannot make a plugin instance
/// run out of memory with one pattern.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One `match.headers` entry.
#[derive(Debug, Clone)]
pub(crate) struct HeaderMatch {
    /// Lower-case.
    pub(crate) name: String,
    value: Expected,
}

#[derive(Debug, Clone)]
enum Expected {
    Exact(Vec<u8>),
    Regex(Regex),
}

impl HeaderMatch {
    /// `name: value`, where `/…/` is a regex (unanchored, as in
    /// SmartProxy) and anything else an exact value.
    pub(crate) fn parse(name: &str, value: &str, at: &str) -> Result<HeaderMatch> {
        let name = token(name, at)?;
        let value = match value.strip_prefix('/').and_then(|v| v.strip_suffix('/')) {
            Some(pattern) => Expected::Regex(
                RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .or_else(|e| err(at, format_args!("invalid regex: {e}")))?,
            ),
            None => Expected::Exact(value.as_bytes().to_vec()),
        };
        Ok(HeaderMatch { name, value })
    }

    /// Whether the header's value matches; an absent header never does.
    pub(crate) fn matches(&self, value: Option<&[u8]>) -> bool {
        match (value, &self.value) {
            (None, _) => false,
            (Some(v), Expected::Exact(want)) => v == want.as_slice(),
            (Some(v), Expected::Regex(re)) => re.is_match(v),
        }
    }
}

/// Where a request header's value is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A declared slot of the head.
    Slot(usize),
    /// A host call (past the host's slot limit).
    Lookup(String),
}

impl Source {
    /// The value (several joined with `, `, as in a slot), if present.
    pub(crate) fn value<'a>(&self, head: &'a RequestHead) -> Option<Cow<'a, [u8]>> {
        match self {
            Source::Slot(i) => head.slot(*i).map(Cow::Borrowed),
            Source::Lookup(name) => {
                let values = host::header(name);
                let mut iter = values.into_iter();
                let mut out = iter.next()?;
                for v in iter {
                    out.extend_from_slice(b", ");
                    out.extend_from_slice(&v);
                }
                Some(Cow::Owned(out))
            }
        }
    }
}

/// How well a route fits a request; larger is better.
type Rank = (i64, u8, usize, usize, usize, Reverse<usize>);

/// The best candidate for `head`, if any (`routes`: the whole config, which
/// candidates index; `host`: the head's host, normalised).
pub(crate) fn select<'a>(
    candidates: &'a [HttpRoute],
    routes: &[Route],
    head: &RequestHead,
    host: &str,
) -> Option<&'a HttpRoute> {
    let path = head.path_only();
    let tls = head.scheme == Scheme::Https;
    let mut best: Option<(Rank, &HttpRoute)> = None;
    for c in candidates {
        let Some(route) = routes.get(c.index) else {
            continue;
        };
        if best
            .as_ref()
            .is_some_and(|(rank, _)| route.priority < rank.0)
        {
            break;
        }
        if c.tls != tls || !route.ports.iter().any(|r| r.contains(head.listener_port)) {
            continue;
        }
        let Some(rank) = fit(c, route, head, host, path) else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| rank > *b) {
            best = Some((rank, c));
        }
    }
    best.map(|(_, c)| c)
}

/// The rank of `route` for this request, or `None` when it does not match.
fn fit(c: &HttpRoute, route: &Route, head: &RequestHead, host: &str, path: &str) -> Option<Rank> {
    let (kind, literal) = if route.domains.is_empty() {
        (0, 0)
    } else {
        // The most specific matching pattern ranks the route.
        route
            .domains
            .iter()
            .filter(|d| !host.is_empty() && d.matches_normalized(host))
            .map(|d| {
                if d.is_wildcard() {
                    (1, d.as_str().bytes().filter(|&b| b != b'*').count())
                } else {
                    (2, 0)
                }
            })
            .max()?
    };
    if route.path.as_ref().is_some_and(|p| !p.matches(path)) {
        return None;
    }
    if let Some(ips) = &route.client_ip
        && !ips.matches(head.client.ip())
    {
        return None;
    }
    let headers_ok = route
        .headers
        .iter()
        .zip(&c.headers)
        .all(|(m, source)| m.matches(source.value(head).as_deref()));
    if !headers_ok {
        return None;
    }
    let criteria = usize::from(!route.domains.is_empty())
        + usize::from(route.client_ip.is_some())
        + usize::from(route.path.is_some())
        + route.headers.len();
    let path_len = route.path.as_ref().map_or(0, |p| p.as_str().len());
    Some((
        route.priority,
        kind,
        path_len,
        criteria,
        literal,
        Reverse(c.index),
    ))
}
