//! The L4 proxy: accept, admit, peek, route, connect, relay.

pub mod relay;
