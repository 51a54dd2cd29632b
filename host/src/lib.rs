//! Turnout: a WebAssembly-pluggable TCP/TLS/HTTP proxy.
//!
//! Map of the crate:
//! * [`limits`] — connection counters (per IP, per route, total), exact by construction.
//! * [`plugins`] — the plugin runtime (wasmtime lives only there): engine,
//!   loaded plugins, the chain, the watched plugins directory.
//! * [`proxy`] — the connection path: relay with timers.
//! * [`testing`] — run a plugin's SDK harness tests against its `.wasm`.

pub mod limits;
pub mod plugins;
pub mod proxy;
pub mod testing;
