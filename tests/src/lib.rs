//! Helpers shared by the end-to-end tests: the guest fixtures under
//! `tests/guests/`, built for `wasm32-wasip2` on first use.

use std::path::{Path, PathBuf};

pub mod app;
pub mod cluster;
pub mod haproxy;
pub mod http;
pub mod l4;
pub mod node;
pub mod pebble;
pub mod pki;
pub mod redis;
pub mod tls;
pub mod ws;

/// The `.wasm` of fixture `tests/guests/<name>`, built if needed.
pub fn guest(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("guests")
        .join(name);
    turnout::testing::built_wasm(&dir).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The bytes of fixture `name`.
pub fn guest_bytes(name: &str) -> Vec<u8> {
    let path = guest(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The probe guest's directory, for `wasm_harness`.
pub fn guest_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("guests")
        .join(name)
}

/// The value of the sample `name` with `labels` in a Prometheus exposition
/// (`/metrics`), if it is there; panics when the text does not parse.
pub fn prometheus_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"));
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        })
}

/// A child process's stdout and stderr, both appended to the log at `path`
/// after a `banner` line (a test that restarts a process keeps one log).
pub fn append_log(path: &Path, banner: &str) -> (std::fs::File, std::fs::File) {
    use std::io::Write as _;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("log file {}: {e}", path.display()));
    let _ = writeln!(out, "{banner}");
    let err = out.try_clone().expect("log file");
    (out, err)
}
