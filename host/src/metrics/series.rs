//! Throughput from cumulative byte counts sampled once a second.
//!
//! A rate is the bytes that crossed in a window divided by the window's
//! length, from two samples of monotonically growing counters — never a
//! lifetime total divided by age, which is how rates drift upward (or
//! down) as connections get older.

use std::collections::VecDeque;

use serde::Serialize;

/// Bytes per second each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rate {
    /// From clients.
    #[serde(rename = "in")]
    pub bytes_in: f64,
    /// To clients.
    #[serde(rename = "out")]
    pub bytes_out: f64,
}

/// One sample: cumulative bytes at a sampler tick (seconds since start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Sampler tick.
    pub tick: u64,
    /// Cumulative bytes in.
    pub bytes_in: u64,
    /// Cumulative bytes out.
    pub bytes_out: u64,
}

/// The last `capacity` samples of one set of counters.
#[derive(Debug, Clone)]
pub struct Series {
    samples: VecDeque<Sample>,
    capacity: usize,
}

impl Series {
    /// An empty series keeping `capacity` samples (≥ 2); the longest window
    /// it can answer is `capacity - 1` seconds.
    pub fn new(capacity: usize) -> Self {
        Self {
            samples: VecDeque::with_capacity(capacity.max(2)),
            capacity: capacity.max(2),
        }
    }

    /// Records the counters at `tick`; a tick not after the newest replaces it.
    pub fn push(&mut self, s: Sample) {
        if let Some(last) = self.samples.back_mut()
            && s.tick <= last.tick
        {
            *last = Sample {
                tick: last.tick,
                ..s
            };
            return;
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    /// The newest sample.
    pub fn last(&self) -> Option<Sample> {
        self.samples.back().copied()
    }

    /// Bytes per second over the last `window` seconds (or over the whole
    /// history when it is shorter): the difference between the newest
    /// sample and the newest one at least `window` older, divided by the
    /// seconds between them.
    pub fn rate(&self, window: u64) -> Rate {
        let Some(newest) = self.samples.back() else {
            return Rate::default();
        };
        let from = newest.tick.saturating_sub(window.max(1));
        let base = self
            .samples
            .iter()
            .rev()
            .find(|s| s.tick <= from)
            .or_else(|| self.samples.front())
            .copied()
            .unwrap_or(*newest);
        let secs = newest.tick - base.tick;
        if secs == 0 {
            return Rate::default();
        }
        Rate {
            bytes_in: newest.bytes_in.saturating_sub(base.bytes_in) as f64 / secs as f64,
            bytes_out: newest.bytes_out.saturating_sub(base.bytes_out) as f64 / secs as f64,
        }
    }

    /// Per-second rates for the last `seconds` ticks, oldest first:
    /// `(tick, rate)`.
    pub fn history(&self, seconds: usize) -> Vec<(u64, Rate)> {
        let pairs: Vec<(u64, Rate)> = self
            .samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|(a, b)| {
                let secs = (b.tick - a.tick).max(1) as f64;
                (
                    b.tick,
                    Rate {
                        bytes_in: b.bytes_in.saturating_sub(a.bytes_in) as f64 / secs,
                        bytes_out: b.bytes_out.saturating_sub(a.bytes_out) as f64 / secs,
                    },
                )
            })
            .collect();
        let skip = pairs.len().saturating_sub(seconds);
        pairs.into_iter().skip(skip).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(tick: u64, bytes_in: u64, bytes_out: u64) -> Sample {
        Sample {
            tick,
            bytes_in,
            bytes_out,
        }
    }

    /// SmartProxy's drift: a constant stream must show the same rate at
    /// minute one and at minute fifty.
    #[test]
    fn a_constant_stream_has_a_flat_rate_at_any_age() {
        let mut series = Series::new(3601);
        let mut early = None;
        for t in 0..=3600u64 {
            series.push(s(t, t * 1000, t * 10));
            if t == 60 {
                early = Some((series.rate(1), series.rate(10), series.rate(60)));
            }
        }
        let late = (series.rate(1), series.rate(10), series.rate(60));
        assert_eq!(Some(late), early);
        assert_eq!(
            late.0,
            Rate {
                bytes_in: 1000.0,
                bytes_out: 10.0
            }
        );
        assert_eq!(series.rate(3600).bytes_in, 1000.0);
    }

    #[test]
    fn a_burst_leaves_the_short_window_but_stays_in_the_long_one() {
        let mut series = Series::new(61);
        for t in 0..=30u64 {
            // 6000 bytes during second 10 only.
            let total = if t >= 10 { 6000 } else { 0 };
            series.push(s(t, total, 0));
        }
        assert_eq!(series.rate(1).bytes_in, 0.0);
        assert_eq!(series.rate(10).bytes_in, 0.0);
        assert_eq!(series.rate(60).bytes_in, 6000.0 / 30.0, "partial history");
    }

    #[test]
    fn missed_ticks_divide_by_the_real_gap() {
        let mut series = Series::new(10);
        series.push(s(0, 0, 0));
        series.push(s(3, 3000, 0));
        assert_eq!(series.rate(1).bytes_in, 1000.0);
        assert_eq!(
            series.history(10),
            vec![(
                3,
                Rate {
                    bytes_in: 1000.0,
                    bytes_out: 0.0
                }
            )]
        );
    }

    #[test]
    fn capacity_bounds_memory_and_history() {
        let mut series = Series::new(5);
        for t in 0..100 {
            series.push(s(t, t, t));
        }
        assert_eq!(series.samples.len(), 5);
        assert_eq!(series.history(100).len(), 4);
        assert_eq!(series.rate(1000).bytes_in, 1.0);
        // A second push in the same tick updates it.
        series.push(s(99, 500, 500));
        assert_eq!(series.last(), Some(s(99, 500, 500)));
        assert_eq!(Series::new(5).rate(10), Rate::default());
    }
}
