//! The top-level `http` object: the HTTP proxy's limits against slow and
//! oversized clients and its upstream pool, in milliseconds and bytes.

use std::time::Duration;

use serde::Deserialize;

use super::validate::Problems;

/// HTTP settings (terminated TLS routes and plaintext HTTP ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// `headerTimeout` (10 s): a complete request head must arrive within
    /// this long of the first byte (or of accept), else 408 and close.
    pub header_timeout: Duration,
    /// `responseTimeout` (60 s): the upstream must start answering within
    /// this long of the request being sent, else 504.
    pub response_timeout: Duration,
    /// `idleTimeout` (60 s): a keep-alive connection with no request in
    /// flight closes after this long.
    pub idle_timeout: Duration,
    /// `maxHeaderSize` (64 KiB): a larger request head is a 431.
    pub max_header_size: usize,
    /// `maxConcurrentStreams` (128): HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
    /// `upstreamIdleTimeout` (90 s): idle pooled upstream connections
    /// close after this long.
    pub upstream_idle_timeout: Duration,
    /// `upstreamMaxIdle` (32): idle pooled connections kept per target.
    pub upstream_max_idle: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_millis(10_000),
            response_timeout: Duration::from_millis(60_000),
            idle_timeout: Duration::from_millis(60_000),
            max_header_size: 65_536,
            max_concurrent_streams: 128,
            upstream_idle_timeout: Duration::from_millis(90_000),
            upstream_max_idle: 32,
        }
    }
}

/// `http` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawHttp {
    header_timeout: Option<u64>,
    response_timeout: Option<u64>,
    idle_timeout: Option<u64>,
    max_header_size: Option<u64>,
    max_concurrent_streams: Option<u64>,
    upstream_idle_timeout: Option<u64>,
    upstream_max_idle: Option<u64>,
}

/// hyper cannot parse a request head in less than this (its minimum read
/// buffer).
const MIN_HEADER_SIZE: u64 = 8_192;

pub(super) fn check(raw: RawHttp, p: &mut Problems) -> HttpConfig {
    let mut c = HttpConfig::default();
    let times = [
        (
            "http.headerTimeout",
            raw.header_timeout,
            &mut c.header_timeout,
        ),
        (
            "http.responseTimeout",
            raw.response_timeout,
            &mut c.response_timeout,
        ),
        ("http.idleTimeout", raw.idle_timeout, &mut c.idle_timeout),
        (
            "http.upstreamIdleTimeout",
            raw.upstream_idle_timeout,
            &mut c.upstream_idle_timeout,
        ),
    ];
    for (key, value, slot) in times {
        if let Some(ms) = p.check(key, value, 1, u64::MAX) {
            *slot = Duration::from_millis(ms);
        }
    }
    if let Some(n) = p.check(
        "http.maxHeaderSize",
        raw.max_header_size,
        MIN_HEADER_SIZE,
        16 * 1024 * 1024,
    ) {
        c.max_header_size = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(n) = p.check(
        "http.maxConcurrentStreams",
        raw.max_concurrent_streams,
        1,
        10_000,
    ) {
        c.max_concurrent_streams = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(n) = p.check("http.upstreamMaxIdle", raw.upstream_max_idle, 0, 100_000) {
        c.upstream_max_idle = usize::try_from(n).unwrap_or(usize::MAX);
    }
    c
}
