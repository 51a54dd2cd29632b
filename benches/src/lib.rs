//! Benchmarks live in `plugin_calls.rs`; run them with `cargo bench -p turnout-benches`.
