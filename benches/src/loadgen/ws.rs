//! The few pieces of RFC 6455 the `ws-echo` load needs, shared by its
//! client ([`super::ws_client`]) and its backend ([`super::ws_backend`]):
//! the opening handshake's key and accept value, and a frame codec —
//! header parse and write, masking.
//!
//! Hand-written rather than tungstenite: both ends run on the two cores the
//! proxy is measured on, so they parse in place, mask eight bytes at a time
//! and write every frame of a read in one call; no extensions, no UTF-8
//! check of text (the load only sends binary).

use std::ops::Range;

use sha1::{Digest as _, Sha1};

/// Continuation of a fragmented message.
pub const OP_CONTINUATION: u8 = 0x0;
/// A text message (or its first fragment).
pub const OP_TEXT: u8 = 0x1;
/// A binary message (or its first fragment).
pub const OP_BINARY: u8 = 0x2;
/// Close, with an optional code and reason.
pub const OP_CLOSE: u8 = 0x8;
/// Ping: answered with a pong carrying the same payload.
pub const OP_PING: u8 = 0x9;
/// Pong.
pub const OP_PONG: u8 = 0xA;
/// The first byte's final-fragment bit, for [`write_header`].
pub const FIN: u8 = 0x80;
/// Close code 1000: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;

/// Largest payload accepted in one frame: far above the load's messages,
/// small enough that a corrupt length is an error, not an allocation.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// Largest HTTP head accepted in the opening handshake.
pub const MAX_HEAD: usize = 64 * 1024;

/// RFC 6455 §1.3: appended to the client's key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    data_encoding::BASE64.encode(&h.finalize())
}

/// A `Sec-WebSocket-Key`: 16 bytes from `seed`, base64.
pub fn client_key(seed: u64) -> String {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&seed.to_be_bytes());
    raw[8..].copy_from_slice(
        &seed
            .rotate_left(29)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .to_le_bytes(),
    );
    data_encoding::BASE64.encode(&raw)
}

/// Where an HTTP head ends (the blank line included), if it has.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The first value of header `name` in a head's text.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Whether a header's comma-separated tokens include `token`.
pub fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// A frame at the start of a buffer: offsets into that buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Final fragment of its message.
    pub fin: bool,
    /// One of the `OP_*` values.
    pub opcode: u8,
    /// The masking key, if the frame is masked (client → server).
    pub mask: Option<[u8; 4]>,
    /// Where the payload is; the frame ends where it does.
    pub payload: Range<usize>,
}

/// Parses the frame at the start of `buf`: `None` until it is complete.
pub fn parse(buf: &[u8]) -> Result<Option<Frame>, String> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(format!(
            "reserved bits set ({b0:#04x}) without an extension"
        ));
    }
    let (fin, opcode, masked) = (b0 & 0x80 != 0, b0 & 0x0f, b1 & 0x80 != 0);
    let (len, mut at) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&buf[2..10]);
            let n = u64::from_be_bytes(n);
            (usize::try_from(n).unwrap_or(usize::MAX), 10)
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    if len > MAX_PAYLOAD {
        return Err(format!("frame of {len} bytes"));
    }
    if opcode >= OP_CLOSE && (len > 125 || !fin) {
        return Err(format!(
            "control frame {opcode:#x} of {len} bytes, fin {fin}"
        ));
    }
    let mask = if masked {
        let Some(key) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    Ok(Some(Frame {
        fin,
        opcode,
        mask,
        payload: at..at + len,
    }))
}

/// Appends a frame header for a `len`-byte payload; `first` is the
/// opcode, with [`FIN`] on the final fragment.
pub fn write_header(out: &mut Vec<u8>, first: u8, len: usize, mask: Option<[u8; 4]>) {
    out.push(first);
    let m = if mask.is_some() { 0x80 } else { 0 };
    match len {
        0..=125 => out.push(m | len as u8),
        126..=0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
}

/// XORs `data` with the masking key (masks and unmasks), the key's
/// position taken from the start of `data`.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut v = [0u8; 8];
        v.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(v) ^ wide).to_ne_bytes());
    }
    // Whole 8-byte chunks keep the key's phase: the tail starts at key[0].
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_value_is_rfc_6455s_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(client_key(7).len(), 24);
        assert_ne!(client_key(7), client_key(8));
    }

    #[test]
    fn frames_round_trip_masked_and_not() {
        for len in [0usize, 5, 125, 126, 1024, 70_000] {
            for mask in [None, Some([1, 2, 3, 0xfe])] {
                let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let mut out = Vec::new();
                write_header(&mut out, FIN | OP_BINARY, len, mask);
                let start = out.len();
                out.extend_from_slice(&payload);
                if let Some(k) = mask {
                    apply_mask(&mut out[start..], k);
                }
                // Incomplete until the last byte.
                assert_eq!(parse(&out[..out.len() - 1]).unwrap(), None);
                let f = parse(&out).unwrap().unwrap();
                assert!(f.fin && f.opcode == OP_BINARY && f.mask == mask);
                assert_eq!(f.payload.end, out.len());
                let got = &mut out[f.payload.clone()];
                if let Some(k) = f.mask {
                    apply_mask(got, k);
                }
                assert_eq!(got, &payload[..]);
            }
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        assert!(parse(&[0xc2, 0x00]).is_err(), "RSV1 without an extension");
        assert!(parse(&[0x09, 0x00]).is_err(), "fragmented ping");
        assert!(parse(&[0x89, 126, 0, 200]).is_err(), "long ping");
        let huge = [0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(parse(&huge).is_err());
        assert_eq!(parse(&[0x82]).unwrap(), None);
    }

    #[test]
    fn heads_are_read_for_the_upgrade() {
        let head = "GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n";
        assert!(has_token(header(head, "connection"), "upgrade"));
        assert!(has_token(header(head, "upgrade"), "websocket"));
        assert!(!has_token(header(head, "sec-websocket-key"), "x"));
        assert_eq!(head_end(b"a\r\n\r\nb"), Some(5));
        assert_eq!(head_end(b"a\r\n"), None);
    }
}
