//! The counters kept per route and per client IP (and the global byte
//! counter): open and total connections, bytes each way, and a minute of
//! throughput samples.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Rate, Sample, Series, TABLE_WINDOW_SECS, lock};

/// Bytes each way.
#[derive(Debug, Default)]
pub struct ByteCounter {
    pub(super) bytes_in: AtomicU64,
    pub(super) bytes_out: AtomicU64,
}

impl ByteCounter {
    /// Bytes from clients.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Bytes to clients.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }
}

/// Counters of one route or one client IP.
#[derive(Debug)]
pub struct Usage {
    pub(super) active: AtomicU64,
    pub(super) total: AtomicU64,
    pub(super) bytes: ByteCounter,
    /// Sampler tick of the last connection's end (or start).
    pub(super) last_seen: AtomicU64,
    series: Mutex<Series>,
}

impl Usage {
    pub(super) fn new(tick: u64) -> Self {
        let mut series = Series::new(TABLE_WINDOW_SECS + 1);
        // Nothing crossed before this entry existed: a zero base makes the
        // first window exact instead of losing the bytes before the first
        // sample.
        series.push(Sample {
            tick,
            bytes_in: 0,
            bytes_out: 0,
        });
        Self {
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            bytes: ByteCounter::default(),
            last_seen: AtomicU64::new(tick),
            series: Mutex::new(series),
        }
    }

    pub(super) fn sample(&self, tick: u64) {
        lock(&self.series).push(Sample {
            tick,
            bytes_in: self.bytes.bytes_in(),
            bytes_out: self.bytes.bytes_out(),
        });
    }

    /// A copy for reporting.
    pub fn view(&self) -> UsageView {
        let series = lock(&self.series);
        UsageView {
            active: self.active.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            bytes_in: self.bytes.bytes_in(),
            bytes_out: self.bytes.bytes_out(),
            rate_1s: series.rate(1),
            rate_10s: series.rate(10),
            rate_60s: series.rate(60),
        }
    }
}

/// A point-in-time copy of a [`Usage`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    /// Open connections.
    pub active: u64,
    /// Connections so far.
    pub total: u64,
    /// Bytes from clients.
    pub bytes_in: u64,
    /// Bytes to clients.
    pub bytes_out: u64,
    /// Throughput over the last second.
    pub rate_1s: Rate,
    /// … the last 10 seconds.
    pub rate_10s: Rate,
    /// … the last minute.
    pub rate_60s: Rate,
}
