//! Changes to the running configuration, by where they came from and how
//! they ended.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Metrics;

/// Where a configuration change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeSource {
    /// SIGHUP: the file read again.
    Signal,
    /// The admin API (`PUT /api/config`, `PUT /api/routes`).
    Api,
}

/// How a configuration change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeResult {
    /// In force for new connections.
    Applied,
    /// Invalid, or a port could not be bound: nothing changed.
    Refused,
    /// Written against an older version (`If-Match`): nothing changed.
    Conflict,
}

impl ChangeSource {
    /// Every source with its label.
    pub const ALL: [(ChangeSource, &'static str); 2] =
        [(ChangeSource::Signal, "signal"), (ChangeSource::Api, "api")];
}

impl ChangeResult {
    /// Every result with its label.
    pub const ALL: [(ChangeResult, &'static str); 3] = [
        (ChangeResult::Applied, "applied"),
        (ChangeResult::Refused, "refused"),
        (ChangeResult::Conflict, "conflict"),
    ];
}

/// The counters, held by [`Metrics`].
#[derive(Debug, Default)]
pub(super) struct ConfigCounters {
    changes: [[AtomicU64; 3]; 2],
}

impl Metrics {
    /// Counts a configuration change.
    pub fn config_change(&self, source: ChangeSource, result: ChangeResult) {
        self.config.changes[source as usize][result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Configuration changes so far from `source` ending in `result`.
    pub fn config_changes(&self, source: ChangeSource, result: ChangeResult) -> u64 {
        self.config.changes[source as usize][result as usize].load(Ordering::Relaxed)
    }
}
