//! The smuggling check on HTTP/1.1 request heads: whether a head carries
//! both `Content-Length` and `Transfer-Encoding`, found as its bytes
//! arrive (`timers::Timed` feeds it every read).

/// Finds, in the bytes of an HTTP/1.1 request head as they arrive, whether
/// it carries both `Content-Length` and `Transfer-Encoding`. hyper
/// resolves that conflict itself (RFC 9112: chunked wins, the length is
/// dropped), but a request framed both ways is how smuggling is attempted
/// against chains where some hop reads the other framing: it gets a 400
/// and is never forwarded. Only the first head after each idle period is
/// scanned (a pipelined head behind a body is left to hyper's rule).
/// Empty lines before the request line are skipped, as httparse (hyper's
/// parser) skips them: were they taken for the head's end, a head framed
/// both ways behind a CRLF would pass unseen (found by the `http_head`
/// fuzz target's comparison with httparse).
#[derive(Debug)]
pub(crate) struct HeadScan {
    active: bool,
    /// A line with content has been seen (the request line has begun).
    started: bool,
    /// The current line's first bytes, lower-cased.
    line: [u8; 18],
    len: usize,
    content_length: bool,
    transfer_encoding: bool,
}

impl HeadScan {
    pub(crate) fn new() -> Self {
        Self {
            active: true,
            started: false,
            line: [0; 18],
            len: 0,
            content_length: false,
            transfer_encoding: false,
        }
    }

    /// `Some(conflict)` when the head ended in `bytes`.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<bool> {
        if !self.active {
            return None;
        }
        let mut i = 0;
        while i < bytes.len() {
            if self.len >= self.line.len() {
                // Past the names we look for: skip to the line's end.
                match bytes[i..].iter().position(|&b| b == b'\n') {
                    Some(at) => i += at,
                    None => return None,
                }
            }
            let b = bytes[i];
            i += 1;
            if b == b'\n' {
                if self.len == 0 || (self.len == 1 && self.line[0] == b'\r') {
                    if !self.started {
                        self.len = 0;
                        continue;
                    }
                    self.active = false;
                    return Some(self.content_length && self.transfer_encoding);
                }
                self.started = true;
                self.len = 0;
                continue;
            }
            self.line[self.len] = b.to_ascii_lowercase();
            self.len += 1;
            match &self.line[..self.len] {
                b"content-length:" => self.content_length = true,
                b"transfer-encoding:" => self.transfer_encoding = true,
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::HeadScan;

    fn scan(chunks: &[&[u8]]) -> Option<bool> {
        let mut s = HeadScan::new();
        chunks.iter().find_map(|c| s.feed(c))
    }

    #[test]
    fn both_framings_are_found_across_reads_and_cases() {
        let head: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nHost: a\r\nconTent-Len",
            b"gth: 4\r\nTransfer-Encoding: chunked\r",
            b"\n\r\n0\r\n",
        ];
        assert_eq!(scan(head), Some(true));
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"]),
            Some(false)
        );
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\nTransfer-Encoding: chunked\n\n"]),
            Some(false)
        );
        // A header whose value mentions the other does not count.
        assert_eq!(
            scan(&[
                b"GET / HTTP/1.1\r\nX-A: content-length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            ]),
            Some(false)
        );
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r\nHost: a\r\n"]),
            None,
            "not ended yet"
        );
    }

    /// httparse skips empty lines before the request line; so does the
    /// scan, or a head framed both ways behind them would not be seen.
    #[test]
    fn empty_lines_before_the_request_line_do_not_end_the_head() {
        let framed_both_ways: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        for lead in [&b"\r\n"[..], b"\n", b"\r\n\r\n\n"] {
            let mut head = lead.to_vec();
            head.extend_from_slice(framed_both_ways);
            assert_eq!(scan(&[&head]), Some(true), "{lead:?}");
            // Split inside the leading lines too.
            let (a, b) = head.split_at(1);
            assert_eq!(scan(&[a, b]), Some(true), "{lead:?}");
        }
        assert_eq!(scan(&[b"\r\n\r\n"]), None, "only empty lines: no head yet");
    }
}
