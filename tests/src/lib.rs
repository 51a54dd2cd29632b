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
