//! Per-plugin call statistics: lock-free counters and a fixed-bucket
//! call-time histogram, cheap enough for every call.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use super::error::FailureKind;

/// Upper bounds of the call-time buckets, in microseconds (the last bucket
/// is everything above).
pub const CALL_TIME_BUCKETS_US: [u64; 12] =
    [1, 2, 5, 10, 20, 50, 100, 250, 500, 1_000, 5_000, 25_000];

/// Counters for one loaded plugin version.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    calls: AtomicU64,
    failures: [AtomicU64; FailureKind::ALL.len()],
    buckets: [AtomicU64; CALL_TIME_BUCKETS_US.len() + 1],
    call_time_ns_sum: AtomicU64,
    instances_live: AtomicI64,
    instantiations: AtomicU64,
}

/// A point-in-time copy of [`PluginMetrics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginMetricsSnapshot {
    /// Hook calls made (failed ones included).
    pub calls: u64,
    /// Failures by kind, in [`FailureKind::ALL`] order.
    pub failures: Vec<(FailureKind, u64)>,
    /// Call-time histogram: (upper bound in µs, count); `None` is +Inf.
    pub call_time_buckets: Vec<(Option<u64>, u64)>,
    /// Sum of call times.
    pub call_time_sum: Duration,
    /// Instances alive now (warm in the pool or in a call).
    pub instances_live: i64,
    /// Instances created so far.
    pub instantiations: u64,
}

impl PluginMetrics {
    pub(crate) fn record_call(&self, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = CALL_TIME_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(CALL_TIME_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.call_time_ns_sum.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn record_failure(&self, kind: FailureKind) {
        self.failures[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn instance_created(&self) {
        self.instances_live.fetch_add(1, Ordering::Relaxed);
        self.instantiations.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn instance_dropped(&self) {
        self.instances_live.fetch_sub(1, Ordering::Relaxed);
    }

    /// Failures of one kind so far.
    pub fn failures(&self, kind: FailureKind) -> u64 {
        self.failures[kind.index()].load(Ordering::Relaxed)
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> PluginMetricsSnapshot {
        PluginMetricsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            failures: FailureKind::ALL
                .iter()
                .map(|&k| (k, self.failures(k)))
                .collect(),
            call_time_buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        CALL_TIME_BUCKETS_US.get(i).copied(),
                        c.load(Ordering::Relaxed),
                    )
                })
                .collect(),
            call_time_sum: Duration::from_nanos(self.call_time_ns_sum.load(Ordering::Relaxed)),
            instances_live: self.instances_live.load(Ordering::Relaxed),
            instantiations: self.instantiations.load(Ordering::Relaxed),
        }
    }
}
