//! Benchmarks of Turnout and the load generator behind `cargo xtask bench`.
//!
//! * `*.rs` at the crate root — criterion micro-benchmarks:
//!   `client_hello` (the peek parser), `plugin_calls` (route and admit
//!   through the WASM chain), `request_hook` (one HTTP request's `request`
//!   decision through the routes plugin and the chain), `accept_path`
//!   (accept → ClientHello → backend, in-process), `relay` (bytes per
//!   CPU-second against HAProxy).
//! * [`loadgen`] — the `turnout-loadgen` binary's library: real rustls
//!   clients with a chosen SNI (TLS connections, bulk streams, HTTPS
//!   keep-alive requests, WebSocket echo) and the loopback backends that
//!   every proxy under test forwards to, so Turnout, HAProxy and nginx
//!   face the same load and the same servers.
//!
//! `cargo bench -p turnout-benches` runs the micro-benchmarks;
//! `cargo xtask bench` runs the load benchmark (see `xtask/src/bench/`).

pub mod loadgen;
pub mod plugin_bench;
