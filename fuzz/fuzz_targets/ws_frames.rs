//! Any bytes as one direction of a WebSocket stream, read in pieces: the
//! frame follower reports the same frames, at the same boundaries, and
//! fails at the same byte, as a plain whole-buffer decoder written here
//! from RFC 6455 §5.2; and it never reads past a piece.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnout::http::websocket::frames::{Broken, Frames};

/// Frames decoded from the whole buffer: (opcode, offset just after its
/// header) for each, and the error with the offset of the header byte
/// that completed it.
fn reference(buf: &[u8], masked: bool) -> (Vec<(u8, usize)>, Option<(Broken, usize)>) {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 2 <= buf.len() {
        let (b0, b1) = (buf[at], buf[at + 1]);
        let ext = match b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        let head = 2 + ext + mask;
        if at + head > buf.len() {
            break;
        }
        let end = at + head;
        if (b1 & 0x80 != 0) != masked {
            return (out, Some((Broken::Masking, end)));
        }
        let len: u64 = match b1 & 0x7F {
            126 => u64::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]])),
            127 => {
                let n = u64::from_be_bytes(buf[at + 2..at + 10].try_into().unwrap());
                if n >> 63 != 0 {
                    return (out, Some((Broken::Length, end)));
                }
                n
            }
            n => u64::from(n),
        };
        if b0 & 0x08 != 0 && (b0 & 0x80 == 0 || len > 125) {
            return (out, Some((Broken::Control, end)));
        }
        out.push((b0 & 0x0F, end));
        let next = (end as u64).saturating_add(len);
        if next >= buf.len() as u64 {
            break;
        }
        at = next as usize;
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, buf)) = data.split_first() else {
        return;
    };
    let masked = cfg & 1 == 1;
    let stop = cfg & 2 == 2;
    // Piece sizes from the top bits: 1 to 32 bytes.
    let piece = usize::from(cfg >> 3) + 1;
    let (want, want_err) = reference(buf, masked);
    let mut f = Frames::new(masked);
    let mut got = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let end = (at + piece).min(buf.len());
        let mut pos = at;
        while pos < end {
            let base = pos;
            let mut seen = Vec::new();
            match f.advance(&buf[pos..end], stop, &mut |op| seen.push(op)) {
                Ok(n) => {
                    assert!(n <= end - pos && (n > 0 || pos == end));
                    pos += n;
                }
                Err(e) => {
                    // Frames completed earlier in this same call count.
                    got.extend(seen);
                    assert_eq!(got, want.iter().map(|(op, _)| *op).collect::<Vec<_>>());
                    let (kind, err_at) = want_err.expect("the follower failed where the reference did not");
                    assert_eq!(e, kind);
                    assert!(err_at > base && err_at <= end);
                    return;
                }
            }
            // Each reported frame's header ended inside this call.
            for op in seen {
                got.push(op);
            }
            if stop && pos < end {
                assert!(f.at_boundary(), "stopped between frames only");
            }
        }
        at = end;
    }
    let got_ops: Vec<u8> = got;
    let want_ops: Vec<u8> = want.iter().map(|(op, _)| *op).collect();
    assert_eq!(got_ops, want_ops);
    assert!(want_err.is_none(), "the reference failed where the follower did not");
});
