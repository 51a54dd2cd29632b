//! The load generator: real rustls handshakes with a chosen SNI through a
//! proxy ([`client`], HTTPS [`http_client`], WebSocket [`ws_client`]), and
//! the backends behind it ([`backend`], [`http_backend`], [`ws_backend`];
//! the WebSocket frame codec both ends share is [`ws`]). Results
//! are [`Report`] lines. The `turnout-loadgen` binary is a thin CLI over
//! this module; the smoke test drives it in-process.

pub mod backend;
pub mod client;
pub mod http_backend;
pub mod http_client;
pub mod report;
pub mod tls;
pub mod ws;
pub mod ws_backend;
pub mod ws_client;

pub use report::{Report, Samples};
