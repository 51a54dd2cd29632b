//! Logging a repeating failure at most once per interval, with the number
//! of lines held back: a broken plugin or a Redis that rejects every call
//! cannot flood the log, and its counter still counts every occurrence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one line per `every`.
#[derive(Debug)]
pub struct LogThrottle {
    every_ms: u64,
    /// The clock of `last_ms`.
    born: Instant,
    /// Milliseconds after `born` of the last line let through (`u64::MAX`:
    /// none yet).
    last_ms: AtomicU64,
    /// Lines held back since then.
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub fn new(every: Duration) -> Self {
        Self {
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            born: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be
    /// logged now; `None` (and one more held back) when not.
    pub fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= self.every_ms;
        // One of several racing callers wins the slot.
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let t = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(t.allow(), Some(0), "the first is logged");
        for _ in 0..5 {
            assert_eq!(t.allow(), None);
        }
        // The interval is over.
        let t = LogThrottle {
            born: t.born - Duration::from_secs(11),
            ..t
        };
        assert_eq!(t.allow(), Some(5));
        assert_eq!(t.allow(), None);
    }
}
