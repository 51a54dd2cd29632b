//! WebSockets the proxy speaks itself (upgrades on terminated and
//! plaintext HTTP routes): open now, upgrades by route, heartbeat pings
//! sent, and how they closed. Passthrough WebSockets are plain connections
//! and count only there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Metrics, OTHER, ROUTE_CAP, lock};

/// Why a WebSocket closed, as counted: the side that closed first, the
/// heartbeat (no pong within `pingTimeout`), the connection's lifetime or
/// inactivity timer, or the proxy's shutdown.
pub const WEBSOCKET_CLOSES: [&str; 6] = [
    "client",
    "backend",
    "ping-timeout",
    "lifetime",
    "idle",
    "shutdown",
];

/// The counters, held by [`Metrics`].
#[derive(Debug, Default)]
pub(super) struct WebSocketCounters {
    active: AtomicU64,
    /// By route (bounded: [`ROUTE_CAP`], then [`OTHER`]).
    upgrades: Mutex<HashMap<String, u64>>,
    pings: AtomicU64,
    closes: [AtomicU64; WEBSOCKET_CLOSES.len()],
}

/// A snapshot of the WebSocket counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebSocketView {
    pub active: u64,
    /// Upgrades by route, sorted by route.
    pub upgrades: Vec<(String, u64)>,
    pub pings_sent: u64,
    /// Closes by reason, in [`WEBSOCKET_CLOSES`] order, zeros included.
    pub closes: Vec<(&'static str, u64)>,
}

impl Metrics {
    /// A WebSocket on `route` was upgraded and is relayed from now on.
    pub fn websocket_opened(&self, route: &str) {
        let w = &self.websocket;
        w.active.fetch_add(1, Ordering::Relaxed);
        let mut up = lock(&w.upgrades);
        if let Some(n) = up.get_mut(route) {
            *n += 1;
            return;
        }
        let key = if up.len() >= ROUTE_CAP { OTHER } else { route };
        *up.entry(key.to_owned()).or_default() += 1;
    }

    /// A WebSocket counted by [`Metrics::websocket_opened`] closed, for
    /// `reason` (one of [`WEBSOCKET_CLOSES`]; another label is a bug and
    /// counts as `shutdown`).
    pub fn websocket_closed(&self, reason: &'static str) {
        let w = &self.websocket;
        w.active.fetch_sub(1, Ordering::Relaxed);
        let i = WEBSOCKET_CLOSES
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(WEBSOCKET_CLOSES.len() - 1);
        w.closes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The heartbeat sent a ping.
    pub fn websocket_ping(&self) {
        self.websocket.pings.fetch_add(1, Ordering::Relaxed);
    }

    /// The WebSocket counters now.
    pub fn websockets(&self) -> WebSocketView {
        let w = &self.websocket;
        let mut upgrades: Vec<_> = lock(&w.upgrades)
            .iter()
            .map(|(r, n)| (r.clone(), *n))
            .collect();
        upgrades.sort();
        WebSocketView {
            active: w.active.load(Ordering::Relaxed),
            upgrades,
            pings_sent: w.pings.load(Ordering::Relaxed),
            closes: WEBSOCKET_CLOSES
                .iter()
                .zip(&w.closes)
                .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_and_closes_balance_and_reasons_are_kept_apart() {
        let m = Metrics::new();
        m.websocket_opened("chat");
        m.websocket_opened("chat");
        m.websocket_opened("feed");
        m.websocket_ping();
        m.websocket_closed("ping-timeout");
        m.websocket_closed("client");
        let v = m.websockets();
        assert_eq!(v.active, 1);
        assert_eq!(v.upgrades, [("chat".into(), 2), ("feed".into(), 1)]);
        assert_eq!(v.pings_sent, 1);
        let n = |r: &str| v.closes.iter().find(|(k, _)| *k == r).map(|(_, n)| *n);
        assert_eq!(
            (n("ping-timeout"), n("client"), n("idle")),
            (Some(1), Some(1), Some(0))
        );
    }

    #[test]
    fn route_names_are_bounded() {
        let m = Metrics::new();
        for i in 0..ROUTE_CAP + 3 {
            m.websocket_opened(&format!("r{i}"));
        }
        let v = m.websockets();
        assert_eq!(v.upgrades.len(), ROUTE_CAP + 1);
        assert_eq!(
            v.upgrades.iter().find(|(r, _)| r == OTHER).map(|(_, n)| *n),
            Some(3)
        );
    }
}
