//! Where WebSocket frames begin and end in one direction of a relayed
//! stream (RFC 6455 §5.2), without decoding payloads: the relay forwards
//! bytes as they come and needs only the boundaries, to put a ping or a
//! close frame between two frames, and the opcodes, to see pongs.
//!
//! Per frame this reads its 2–14 header bytes; payload bytes are skipped
//! by arithmetic, so the cost does not grow with the message size
//! (`benches/ws_frames.rs` measures it; public for that bench).

/// Opcodes (RFC 6455 §5.2).
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// A ping with no payload, server to client (unmasked).
pub(crate) const SERVER_PING: [u8; 2] = [0x80 | PING, 0];
/// A close frame with status 1001 ("going away"), server to client.
pub(crate) const SERVER_GOING_AWAY: [u8; 4] = [0x88, 2, 0x03, 0xE9];

/// A close frame with status 1001, client to server: clients must mask
/// (§5.3), with a fresh key.
pub(crate) fn client_going_away(key: [u8; 4]) -> [u8; 8] {
    let [a, b, c, d] = key;
    [0x88, 0x80 | 2, a, b, c, d, 0x03 ^ a, 0xE9 ^ b]
}

/// The stream is not WebSocket framing as this direction must carry it:
/// boundaries can no longer be trusted, so nothing may be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// A client frame without a mask, or a server frame with one.
    Masking,
    /// A control frame that is fragmented or longer than 125 bytes.
    Control,
    /// A 64-bit length with its top bit set.
    Length,
}

/// One direction's position in its frame sequence.
#[derive(Debug, Clone)]
pub struct Frames {
    /// Frames in this direction are masked (client to server).
    masked: bool,
    /// Header bytes of the frame being read, and how many there are.
    head: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to come.
    left: u64,
}

impl Frames {
    /// Client-to-server frames when `masked`, server-to-client otherwise.
    pub fn new(masked: bool) -> Self {
        Self {
            masked,
            head: [0; 14],
            have: 0,
            left: 0,
        }
    }

    /// Between two frames: something may be written here.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.left == 0
    }

    /// Follows `buf`, calling `frame` with the opcode of every frame whose
    /// header completes in it. With `stop` it stops at the first boundary
    /// reached after at least one byte; it returns the bytes consumed.
    pub fn advance(
        &mut self,
        buf: &[u8],
        stop: bool,
        frame: &mut impl FnMut(u8),
    ) -> Result<usize, Broken> {
        let mut at = 0;
        while at < buf.len() {
            if self.left > 0 {
                let skip = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(buf.len() - at);
                at += skip;
                self.left -= skip as u64;
            } else {
                self.head[self.have] = buf[at];
                self.have += 1;
                at += 1;
                if self.have >= 2 && self.have == self.head_len() {
                    self.left = self.payload_len()?;
                    frame(self.head[0] & 0x0F);
                    self.have = 0;
                }
            }
            if stop && self.at_boundary() {
                break;
            }
        }
        Ok(at)
    }

    /// The full header's length, once its first two bytes are in.
    fn head_len(&self) -> usize {
        let ext = match self.head[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + if self.head[1] & 0x80 != 0 { 4 } else { 0 }
    }

    /// The payload length of a complete header, checked.
    fn payload_len(&self) -> Result<u64, Broken> {
        let (b0, b1) = (self.head[0], self.head[1]);
        if (b1 & 0x80 != 0) != self.masked {
            return Err(Broken::Masking);
        }
        let len = match b1 & 0x7F {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => {
                let mut b = [0; 8];
                b.copy_from_slice(&self.head[2..10]);
                let n = u64::from_be_bytes(b);
                if n >> 63 != 0 {
                    return Err(Broken::Length);
                }
                n
            }
            n => u64::from(n),
        };
        // Control frames (opcodes 0x8-0xF) are short and never fragmented.
        if b0 & 0x08 != 0 && (b0 & 0x80 == 0 || len > 125) {
            return Err(Broken::Control);
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a peer would send it (payload left unmasked: only the
    /// bits matter here).
    fn frame(fin: bool, opcode: u8, masked: bool, len: usize) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let m = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(m | len as u8),
            126..=65535 => {
                f.push(m | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.resize(f.len() + len, 0xAB);
        f
    }

    /// Opcodes seen and boundaries found feeding `bytes` in `chunk`-sized
    /// reads, stopping at every boundary.
    fn walk(f: &mut Frames, bytes: &[u8], chunk: usize) -> (Vec<u8>, Vec<usize>) {
        let (mut ops, mut ends, mut pos) = (Vec::new(), Vec::new(), 0);
        for piece in bytes.chunks(chunk) {
            let mut rest = piece;
            while !rest.is_empty() {
                let n = f.advance(rest, true, &mut |op| ops.push(op)).unwrap();
                pos += n;
                rest = &rest[n..];
                if f.at_boundary() {
                    ends.push(pos);
                }
            }
        }
        (ops, ends)
    }

    #[test]
    fn boundaries_are_found_whatever_the_read_sizes() {
        let frames = [
            frame(true, 0x1, true, 5),
            frame(false, 0x2, true, 300),
            frame(true, PONG, true, 0),
            frame(true, 0x0, true, 70_000),
            frame(true, 0x8, true, 2),
        ];
        let bytes: Vec<u8> = frames.concat();
        let mut want_ends = Vec::new();
        let mut end = 0;
        for f in &frames {
            end += f.len();
            want_ends.push(end);
        }
        for chunk in [1, 2, 3, 7, 13, 1000, 1 << 20] {
            let (ops, ends) = walk(&mut Frames::new(true), &bytes, chunk);
            assert_eq!(ops, [0x1, 0x2, PONG, 0x0, 0x8], "chunk {chunk}");
            assert_eq!(ends, want_ends, "chunk {chunk}");
        }
    }

    #[test]
    fn without_stop_a_whole_read_is_consumed() {
        let bytes = [frame(true, 0x2, false, 10), frame(true, 0x2, false, 10)].concat();
        let mut f = Frames::new(false);
        let mut n = 0;
        assert_eq!(f.advance(&bytes[..15], false, &mut |_| n += 1), Ok(15));
        assert!(!f.at_boundary());
        assert_eq!(f.advance(&bytes[15..], false, &mut |_| n += 1), Ok(9));
        assert!(f.at_boundary());
        assert_eq!(n, 2);
    }

    #[test]
    fn broken_framing_is_reported() {
        let ok = |_| {};
        let unmasked = frame(true, 0x1, false, 3);
        assert_eq!(
            Frames::new(true).advance(&unmasked, false, &mut { ok }),
            Err(Broken::Masking)
        );
        let long_ping = frame(true, PING, false, 126);
        assert_eq!(
            Frames::new(false).advance(&long_ping, false, &mut { ok }),
            Err(Broken::Control)
        );
        let fragmented_close = frame(false, 0x8, false, 0);
        assert_eq!(
            Frames::new(false).advance(&fragmented_close, false, &mut { ok }),
            Err(Broken::Control)
        );
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            Frames::new(false).advance(&huge, false, &mut { ok }),
            Err(Broken::Length)
        );
    }

    #[test]
    fn the_frames_the_proxy_writes_are_well_formed() {
        let mut ops = Vec::new();
        let mut server = Frames::new(false);
        let both = [&SERVER_PING[..], &SERVER_GOING_AWAY[..]].concat();
        assert_eq!(server.advance(&both, false, &mut |o| ops.push(o)), Ok(6));
        let close = client_going_away([9, 8, 7, 6]);
        let mut client = Frames::new(true);
        assert_eq!(client.advance(&close, false, &mut |o| ops.push(o)), Ok(8));
        assert_eq!(ops, [PING, 0x8, 0x8]);
        assert!(server.at_boundary() && client.at_boundary());
        // The masked payload unmasks to 1001.
        assert_eq!([close[6] ^ 9, close[7] ^ 8], [0x03, 0xE9]);
    }
}
