//! A lock-free log-linear histogram for connection durations and sizes:
//! four buckets per power of two (≤ 19 % relative error), exact below 16,
//! constant memory whatever the number of observations.

use std::sync::atomic::{AtomicU64, Ordering};

/// Values below this get one bucket each.
const LINEAR: u64 = 16;
/// Sub-buckets per power of two above `LINEAR`.
const SUB: u32 = 4;
const BUCKETS: usize = LINEAR as usize + (64 - 4) * SUB as usize;

/// Observations of a `u64` quantity.
#[derive(Debug)]
pub struct LogHistogram {
    buckets: Box<[AtomicU64; BUCKETS]>,
    count: AtomicU64,
    sum: AtomicU64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        Self {
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // ≥ 4
    let sub = (v >> (exp - 2)) & u64::from(SUB - 1);
    LINEAR as usize + (exp as usize - 4) * SUB as usize + sub as usize
}

/// The largest value that lands in bucket `i`.
fn upper_bound(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let k = i - LINEAR as usize;
    let exp = 4 + (k / SUB as usize) as u32;
    let sub = (k % SUB as usize) as u64;
    let step = 1u64 << (exp - 2);
    (1u64 << exp).wrapping_add((sub + 1) * step).wrapping_sub(1)
}

impl LogHistogram {
    /// Records one value.
    pub fn record(&self, v: u64) {
        self.buckets[index(v)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of the values recorded (wrapping).
    pub fn sum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }

    /// The value below which a fraction `q` (0..=1) of the observations
    /// fall, as the upper bound of its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the q-quantile, 1-based: ceil(q × n), at least 1.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper_bound(i));
            }
        }
        counts.iter().rposition(|&c| c > 0).map(upper_bound)
    }

    /// A consistent copy for a Prometheus histogram: cumulative counts at
    /// each power-of-two boundary up to the largest observation, `(le,
    /// count ≤ le)`, and the total. The total is the sum of the same bucket
    /// reads, never the separate counter: `record` bumps a bucket before
    /// the counter, so a counter read after the buckets can lag them, and a
    /// scrape would show `+Inf` below the last bucket.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total = counts.iter().sum();
        let sum = self.sum();
        let Some(last) = counts.iter().rposition(|&c| c > 0) else {
            return HistogramSnapshot {
                cumulative: Vec::new(),
                count: 0,
                sum,
            };
        };
        let mut cumulative = Vec::new();
        let mut acc = 0;
        let mut i = 0;
        let mut le = 1u64;
        loop {
            while i < counts.len() && upper_bound(i) <= le {
                acc += counts[i];
                i += 1;
            }
            cumulative.push((le, acc));
            if i > last || le >= 1 << 62 {
                break;
            }
            le *= 2;
        }
        HistogramSnapshot {
            cumulative,
            count: total,
            sum,
        }
    }
}

/// See [`LogHistogram::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// `(le, count ≤ le)` at powers of two.
    pub cumulative: Vec<(u64, u64)>,
    /// Every observation in the buckets read (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the values (read separately: may include an observation the
    /// buckets did not yet show).
    pub sum: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_whose_bound_covers_it() {
        for v in (0..5000).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let i = index(v);
            assert!(upper_bound(i) >= v, "{v} in bucket {i}");
            if i > 0 {
                assert!(upper_bound(i - 1) < v, "{v}: bucket {i} is not the first");
            }
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_within_the_bucket_error() {
        let h = LogHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.sum(), 500_500);
        for (q, exact) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!(
                got >= exact && got <= exact * 1.26,
                "p{q}: {got} vs {exact}"
            );
        }
        assert_eq!(h.quantile(1.0), Some(1023));
    }

    #[test]
    fn small_values_are_exact() {
        let h = LogHistogram::default();
        for v in [3, 3, 3, 7] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), Some(3));
        assert_eq!(h.quantile(0.99), Some(7));
    }

    #[test]
    fn cumulative_counts_end_at_the_total() {
        let h = LogHistogram::default();
        for v in [0, 1, 2, 900, 70_000] {
            h.record(v);
        }
        let c = h.snapshot().cumulative;
        assert_eq!(c.first(), Some(&(1, 2)));
        assert_eq!(c.iter().find(|(le, _)| *le == 1024).unwrap().1, 4);
        assert_eq!(c.last().unwrap().1, 5);
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1 && w[0].0 < w[1].0));
    }
}
