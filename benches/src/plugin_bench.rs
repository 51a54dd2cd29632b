//! What the plugin-call micro-benchmarks share: the embedded plugins'
//! bytes and a one-by-one timing pass for percentiles.

use std::time::{Duration, Instant};

/// The bytes of embedded plugin `name` (panics if there is none: a bench
/// setup error).
pub fn embedded(name: &str) -> &'static [u8] {
    turnout::plugins::embedded()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} is embedded"))
        .bytes
}

/// Times `n` calls of `f` one by one (after `n / 10` warm-up calls) and
/// prints p50 / p99 beside criterion's median.
#[allow(clippy::print_stdout)] // a benchmark's output is its report
pub fn percentiles(name: &str, n: usize, mut f: impl FnMut()) {
    for _ in 0..n / 10 {
        f();
    }
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{name:<44} p50 {:>9.2?}  p99 {:>9.2?}  (n = {n}, one-by-one timing)",
        at(0.50),
        at(0.99)
    );
}
