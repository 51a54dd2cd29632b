//! Wire parsers: pure functions over the bytes a connection has sent so far,
//! with no I/O, so that the connection path decides when to read and how long
//! to wait.

pub mod client_hello;
pub mod proxy_protocol;

/// Fills `buf` from the TLS stack's random source (the workspace's one
/// crypto provider), or from the clock if that ever fails: these bytes
/// (WebSocket handshake keys and masks, timer jitter) guard against
/// confused intermediaries and herds, not attackers.
pub fn random(buf: &mut [u8]) {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    if provider.secure_random.fill(buf).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8;
        }
    }
}
