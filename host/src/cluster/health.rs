//! Whether the shared store answers, and what it cost: the state machine
//! every call reports to, logged once per transition and counted, and the
//! round-trip histogram `/metrics` and `/api/cluster` show.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::client::Unavailable;
use crate::metrics::{LogHistogram, LogThrottle};

/// The store's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not reached yet (just started).
    Connecting,
    /// Calls go to Redis.
    Up,
    /// Calls are answered locally; the supervisor reconnects.
    Down,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Up => "up",
            State::Down => "down",
        }
    }
}

/// The state, counters and round trips.
#[derive(Debug)]
pub(super) struct Health {
    state: AtomicU8,
    /// Round trips of answered calls, in microseconds.
    pub(super) round_trip_us: LogHistogram,
    pub(super) errors: AtomicU64,
    pub(super) fallbacks: AtomicU64,
    pub(super) went_up: AtomicU64,
    pub(super) went_down: AtomicU64,
    pub(super) last_error: Mutex<Option<String>>,
    /// Wakes the supervisor when a call finds the store gone.
    pub(super) lost: Notify,
    /// A rejection (a full Redis, a script error) comes back on every
    /// call: logged at most once every 10 s; the error counter counts all.
    rejected_log: LogThrottle,
}

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl Health {
    pub(super) fn new() -> Self {
        Self {
            state: AtomicU8::new(CONNECTING),
            round_trip_us: LogHistogram::default(),
            errors: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            went_up: AtomicU64::new(0),
            went_down: AtomicU64::new(0),
            last_error: Mutex::new(None),
            lost: Notify::new(),
            rejected_log: LogThrottle::new(Duration::from_secs(10)),
        }
    }

    pub(super) fn state(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            UP => State::Up,
            DOWN => State::Down,
            _ => State::Connecting,
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    /// A call was answered locally because the store is not up.
    pub(super) fn fell_back(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn answered(&self, rtt: Duration) {
        self.round_trip_us
            .record(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
    }

    /// A call failed: an outage marks the store down (logged and counted
    /// once, on the transition).
    pub(super) fn failed(&self, e: &Unavailable) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        if !e.is_outage() {
            if let Some(suppressed) = self.rejected_log.allow() {
                tracing::warn!(target: "turnout::cluster", error = %e, suppressed,
                    "cluster store call failed (logged at most every 10 s; \
                     turnout_cluster_errors_total counts every one)");
            }
            return;
        }
        self.down(e);
    }

    /// The store cannot be reached (a failed call or a failed connect).
    pub(super) fn down(&self, e: &Unavailable) {
        let before = self.state.swap(DOWN, Ordering::Relaxed);
        if before != DOWN {
            self.went_down.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "turnout::cluster", error = %e,
                "cluster store unreachable: limits and plugin state are counted locally until it returns");
            self.lost.notify_one();
        }
    }

    /// The supervisor reached the store.
    pub(super) fn up(&self) {
        let before = self.state.swap(UP, Ordering::Relaxed);
        if before != UP {
            self.went_up.fetch_add(1, Ordering::Relaxed);
            if before == DOWN {
                tracing::info!(target: "turnout::cluster", "cluster store reachable again: shared state resumes");
            } else {
                tracing::info!(target: "turnout::cluster", "cluster store connected");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_call_is_counted_and_is_no_outage() {
        let health = Health::new();
        let rejected = Unavailable::Rejected("OOM command not allowed".into());
        for _ in 0..100 {
            health.failed(&rejected);
        }
        assert_eq!(health.errors.load(Ordering::Relaxed), 100);
        assert_eq!(
            health.state(),
            State::Connecting,
            "a rejection is no outage"
        );
        assert_eq!(
            health.rejected_log.allow(),
            None,
            "one line was logged; the rest within 10 s are held back"
        );
    }
}
