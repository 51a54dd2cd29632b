//! Counters of terminated TLS: handshakes by (result, version, ALPN) and
//! certificate reloads by outcome, ACME orders by outcome.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Metrics, OTHER, lock};

/// One kind of terminated handshake, as counted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handshake {
    /// `ok`, or why it failed (`no-certificate`, `timeout`, …).
    pub result: &'static str,
    /// `TLSv1.2`, `TLSv1.3`, or `-` when it failed before one was agreed.
    pub version: &'static str,
    /// The protocol agreed by ALPN, or `-`.
    pub alpn: String,
}

/// Distinct (result, version, ALPN) triples kept; more count under
/// [`OTHER`] (ALPN values come from clients).
const HANDSHAKE_KINDS_CAP: usize = 64;

/// The counters, held by [`Metrics`].
#[derive(Debug, Default)]
pub(super) struct TlsCounters {
    /// Handshakes by kind (bounded: [`HANDSHAKE_KINDS_CAP`]).
    handshakes: Mutex<HashMap<Handshake, u64>>,
    /// Certificate (re)loads after start: applied, refused.
    cert_reloads: [AtomicU64; 2],
    /// ACME orders finished: issued, failed.
    acme_orders: [AtomicU64; 2],
}

impl Metrics {
    /// Counts a certificate reload (a changed file, SIGHUP): applied, or
    /// refused because a file was broken.
    pub fn certificate_reload(&self, applied: bool) {
        self.tls.cert_reloads[usize::from(!applied)].fetch_add(1, Ordering::Relaxed);
    }

    /// Certificate reloads so far: (applied, refused).
    pub fn certificate_reloads(&self) -> (u64, u64) {
        let n = |i: usize| self.tls.cert_reloads[i].load(Ordering::Relaxed);
        (n(0), n(1))
    }

    /// Counts an ACME order that ended: issued or failed.
    pub fn acme_order(&self, issued: bool) {
        self.tls.acme_orders[usize::from(!issued)].fetch_add(1, Ordering::Relaxed);
    }

    /// ACME orders so far: (issued, failed).
    pub fn acme_orders(&self) -> (u64, u64) {
        let n = |i: usize| self.tls.acme_orders[i].load(Ordering::Relaxed);
        (n(0), n(1))
    }

    /// Counts one terminated handshake.
    pub fn handshake(&self, result: &'static str, version: &'static str, alpn: &str) {
        let mut h = lock(&self.tls.handshakes);
        let mut key = Handshake {
            result,
            version,
            alpn: alpn.to_owned(),
        };
        if h.len() >= HANDSHAKE_KINDS_CAP && !h.contains_key(&key) {
            key.alpn = OTHER.to_owned();
        }
        *h.entry(key).or_default() += 1;
    }

    /// Terminated handshakes by kind, sorted.
    pub fn handshakes(&self) -> Vec<(Handshake, u64)> {
        let mut v: Vec<_> = lock(&self.tls.handshakes)
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        v.sort();
        v
    }
}
