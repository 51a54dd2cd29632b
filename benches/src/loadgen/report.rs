//! What a load run prints: one line of `key=value` pairs, easy to read for
//! a person and for `cargo xtask bench` (which has no JSON parser).

use std::fmt;
use std::time::Duration;

/// One result line: `result mode=tls-conns ok=… errors=… …`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    fields: Vec<(String, String)>,
}

impl Report {
    /// A report for `mode`.
    pub fn new(mode: &str) -> Self {
        let mut r = Report::default();
        r.set("mode", mode);
        r
    }

    /// Adds or replaces a field (values must not contain spaces).
    pub fn set(&mut self, key: &str, value: impl fmt::Display) -> &mut Self {
        let value = value.to_string().replace(char::is_whitespace, "_");
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key.to_owned(), value)),
        }
        self
    }

    /// A field's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A numeric field.
    pub fn num(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(|v| v.parse().ok())
    }

    /// Parses a line printed by `Display` (the leading word is ignored).
    pub fn parse(line: &str) -> Report {
        let mut r = Report::default();
        for (k, v) in line.split_whitespace().filter_map(|w| w.split_once('=')) {
            r.set(k, v);
        }
        r
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("result")?;
        for (k, v) in &self.fields {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// Latency samples, reported as percentiles in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Records one.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// Takes in another set.
    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `q` quantile (nearest rank), in µs; 0 when empty.
    pub fn quantile_us(&mut self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let rank = ((self.0.len() as f64 * q).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1].as_secs_f64() * 1e6
    }

    /// Adds `prefix_p50_us` and `prefix_p99_us` to `report`.
    pub fn report(&mut self, report: &mut Report, prefix: &str) {
        report.set(
            &format!("{prefix}p50_us"),
            format!("{:.0}", self.quantile_us(0.50)),
        );
        report.set(
            &format!("{prefix}p99_us"),
            format!("{:.0}", self.quantile_us(0.99)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_what_it_printed() {
        let mut r = Report::new("bulk");
        r.set("bytes", 42)
            .set("gbps", "1.5")
            .set("first_error", "a b");
        let back = Report::parse(&r.to_string());
        assert_eq!(back, r);
        assert_eq!(back.num("bytes"), Some(42.0));
        assert_eq!(back.get("first_error"), Some("a_b"));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut s = Samples::default();
        for us in 1..=100 {
            s.push(Duration::from_micros(us));
        }
        assert_eq!(s.quantile_us(0.5), 50.0);
        assert_eq!(s.quantile_us(0.99), 99.0);
        assert_eq!(Samples::default().quantile_us(0.5), 0.0);
    }
}
