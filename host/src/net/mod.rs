//! Wire parsers: pure functions over the bytes a connection has sent so far,
//! with no I/O, so that the connection path decides when to read and how long
//! to wait.

pub mod client_hello;
pub mod proxy_protocol;
