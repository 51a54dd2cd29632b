//! Turnout: a WebAssembly-pluggable TCP/TLS/HTTP proxy.
//!
//! Map of the crate:
//! * [`plugins`] — the plugin runtime (wasmtime lives only there): engine,
//!   loaded plugins, the chain, the watched plugins directory.
//! * [`testing`] — run a plugin's SDK harness tests against its `.wasm`.

pub mod plugins;
pub mod testing;
