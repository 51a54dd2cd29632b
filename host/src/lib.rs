//! Turnout: a WebAssembly-pluggable TCP/TLS/HTTP proxy.
//!
//! Map of the crate:
//! * [`acme`] — ACME certificates for `certificate: "auto"`: orders, challenges, store, renewal, on-demand.
//! * [`admin`] — the admin HTTP API: Prometheus metrics, stats, live connections, plugins, health.
//! * [`app`] — `turnout run` / `turnout check` as functions: config → plugins → listeners → proxy.
//! * [`cluster`] — scale-out: plugin KV, the connection rate, ACME state shared through Redis.
//! * [`config`] — the config file: raw structs with unknown keys rejected, validated into [`config::Config`].
//! * [`limits`] — connection counters (per IP, per route, total), exact by construction.
//! * [`metrics`] — counters, throughput windows, per-route and per-IP tables, percentiles, the live connection list.
//! * [`net`] — wire parsers: TLS ClientHello peek, PROXY protocol v1/v2; random bytes.
//! * [`plugins`] — the plugin runtime (wasmtime lives only there): engine,
//!   loaded plugins, the chain, the watched plugins directory.
//! * [`proxy`] — the connection path: phases, relay with timers, and
//!   terminated connections (through [`tls`]).
//! * `testing` — run a plugin's SDK harness tests against its `.wasm`
//!   (cargo feature `testing`, for tests; not in the binary).
//! * `fuzzing` — entry points for the fuzz targets in `fuzz/` (cargo
//!   feature `fuzzing`; not in the binary).
//! * [`tls`] — TLS termination: certificates by SNI, handshakes, the
//!   client side of re-encryption.
//! * [`watch`] — files picked up once unchanged over two scans.

pub mod acme;
pub mod admin;
pub mod app;
pub mod cluster;
pub mod config;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod plugins;
pub mod proxy;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod watch;
