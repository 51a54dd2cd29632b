//! The load generator: real rustls handshakes with a chosen SNI through a
//! proxy ([`client`]), and the backends behind it ([`backend`]). Results
//! are [`Report`] lines. The `turnout-loadgen` binary is a thin CLI over
//! this module; the smoke test drives it in-process.

pub mod backend;
pub mod client;
pub mod http_backend;
pub mod http_client;
pub mod report;
pub mod tls;

pub use report::{Report, Samples};
