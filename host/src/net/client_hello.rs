//! Incremental TLS ClientHello parser: peeks at the first bytes a client sends
//! and says whether they are TLS and, once complete, what the hello offers.
//!
//! The caller owns buffering: append each read to one buffer and call [`parse`]
//! again. The parser is stateless, so a hello split across many TLS records and
//! any TCP segmentation both come out the same.

use std::borrow::Cow;

use turnout_plugin_sdk::TlsVersion;

/// The largest handshake message (4-byte header included) we agree to buffer;
/// real hellos, even with post-quantum key shares, are a few kilobytes.
pub const MAX_HELLO_LEN: usize = 64 * 1024;

/// RFC 8446 §5.1: a plaintext record never carries more than 2^14 bytes.
const MAX_RECORD_LEN: usize = 1 << 14;
/// The most records a ClientHello may span. Real clients send one record,
/// or a few when the hello is larger than 2^14 bytes (four hold the whole
/// [`MAX_HELLO_LEN`]); the cap keeps the walk in [`locate`], which starts
/// from byte 0 on every read, linear in what one connection can make the
/// host do: a hello trickled as thousands of one-byte records would
/// otherwise cost O(n²) on the worker that serves it.
pub const MAX_RECORDS: usize = 64;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SESSION_TICKET: u16 = 35;
const EXT_PRE_SHARED_KEY: u16 = 41;
const EXT_SUPPORTED_VERSIONS: u16 = 43;

/// What the bytes received so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A plausible TLS handshake that has not fully arrived yet.
    Incomplete {
        /// A lower bound on how many more bytes must arrive before `parse` can
        /// answer anything but Incomplete (an error included), so waiting for
        /// that many never stalls. Always `Some` today; treat `None` as 1.
        needed_hint: Option<usize>,
    },
    /// The stream does not start with a TLS handshake record.
    NotTls,
    /// The complete ClientHello.
    Hello(HelloInfo),
}

/// What the proxy needs from a ClientHello to route the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloInfo {
    /// The host_name from server_name, lower-cased, one trailing dot removed.
    pub sni: Option<String>,
    /// ALPN protocols in the client's order; entries that are not UTF-8 are
    /// skipped so that they cannot be mistaken for a protocol we know.
    pub alpn: Vec<String>,
    /// Versions offered, in the client's order, without duplicates or GREASE.
    pub versions: Vec<TlsVersion>,
    /// No SNI, yet the client tries to resume (session ticket or PSK): the
    /// backend it resumes with can only be guessed.
    pub resumption_without_sni: bool,
    /// How many bytes at the start of the buffer the hello's records occupy.
    pub record_bytes: usize,
}

/// Why the bytes are a broken TLS handshake rather than merely incomplete.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HelloError {
    #[error("handshake message is not a ClientHello (type {0})")]
    NotClientHello(u8),
    #[error("ClientHello larger than {} bytes", MAX_HELLO_LEN)]
    TooLarge,
    #[error("TLS record of content type {0} arrived before the ClientHello was complete")]
    InterleavedRecord(u8),
    #[error("TLS record version {0:#06x} is not valid for a handshake record")]
    BadRecordVersion(u16),
    #[error("TLS handshake record is empty")]
    EmptyRecord,
    #[error("ClientHello spread over more than {} TLS records", MAX_RECORDS)]
    TooManyRecords,
    #[error("TLS record length {0} exceeds the 16384-byte limit")]
    RecordTooLong(usize),
    #[error("{0} bytes follow the ClientHello in its last record")]
    TrailingData(usize),
    #[error("ClientHello is truncated inside the {0}")]
    Truncated(&'static str),
    #[error("invalid ClientHello: {0}")]
    Invalid(&'static str),
    #[error("extension length overruns the ClientHello")]
    ExtensionOverrun,
    #[error("extension {0} appears more than once")]
    DuplicateExtension(u16),
    #[error("malformed {ext} extension: {what}")]
    MalformedExtension {
        ext: &'static str,
        what: &'static str,
    },
    #[error("SNI is not a valid host name")]
    InvalidSni,
}

/// Classifies `buf`, the bytes received so far from a client.
pub fn parse(buf: &[u8]) -> Result<Parsed, HelloError> {
    match locate(buf)? {
        Located::NotTls => Ok(Parsed::NotTls),
        Located::Incomplete(needed) => Ok(Parsed::Incomplete {
            needed_hint: Some(needed),
        }),
        Located::Complete {
            message,
            record_bytes,
        } => {
            let mut info = parse_message(&message)?;
            info.record_bytes = record_bytes;
            Ok(Parsed::Hello(info))
        }
    }
}

enum Located<'a> {
    NotTls,
    Incomplete(usize),
    Complete {
        message: Cow<'a, [u8]>,
        record_bytes: usize,
    },
}

/// Walks the records and reassembles the handshake message, borrowing when the
/// whole message sits in the first record (the usual case).
///
/// The Incomplete count is the fewest further bytes after which the answer
/// could be anything but Incomplete, errors included, so a caller that waits
/// for exactly that many never stalls on a client that has said all it will.
fn locate(buf: &[u8]) -> Result<Located<'_>, HelloError> {
    let mut pos = 0;
    let mut header = [0u8; HANDSHAKE_HEADER_LEN];
    let mut header_len = 0;
    // Handshake bytes in the records walked so far, and the message's full
    // size once its header has been seen.
    let mut seen = 0usize;
    let mut total: Option<usize> = None;
    let mut first_body = 0..0;
    let mut records = 0usize;

    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        if rest.len() < RECORD_HEADER_LEN {
            return partial_record_header(rest, records == 0);
        }
        let mut r = Reader::new(rest);
        let (content_type, version, len) = match (r.u8(), r.u16(), r.u16()) {
            (Some(t), Some(v), Some(l)) => (t, v, usize::from(l)),
            _ => return Err(HelloError::Truncated("record header")),
        };
        if records == 0 {
            if !plausible_first_header(rest) {
                return Ok(Located::NotTls);
            }
        } else if content_type != CONTENT_HANDSHAKE {
            return Err(HelloError::InterleavedRecord(content_type));
        } else if !valid_record_version(version) {
            return Err(HelloError::BadRecordVersion(version));
        }
        if len == 0 {
            return Err(HelloError::EmptyRecord);
        }
        if len > MAX_RECORD_LEN {
            return Err(HelloError::RecordTooLong(len));
        }

        let body = r.rest();
        let body = body.get(..len).unwrap_or(body);
        for &b in body.iter().take(HANDSHAKE_HEADER_LEN - header_len) {
            if let Some(slot) = header.get_mut(header_len) {
                *slot = b;
                header_len += 1;
            }
        }
        // A wrong message type is rejected as soon as its first byte shows.
        if header_len >= 1 && header[0] != HANDSHAKE_CLIENT_HELLO {
            return Err(HelloError::NotClientHello(header[0]));
        }
        if total.is_none() && header_len == HANDSHAKE_HEADER_LEN {
            let body_len = u32::from_be_bytes([0, header[1], header[2], header[3]]);
            let t = HANDSHAKE_HEADER_LEN.saturating_add(body_len as usize);
            if t > MAX_HELLO_LEN {
                return Err(HelloError::TooLarge);
            }
            total = Some(t);
        }
        // The record header alone tells whether it runs past the message.
        if let Some(t) = total
            && seen + len > t
        {
            return Err(HelloError::TrailingData(seen + len - t));
        }
        if records == 0 {
            let start = pos + RECORD_HEADER_LEN;
            first_body = start..start + body.len();
        }
        records += 1;

        if body.len() < len {
            let record_left = len - body.len();
            let needed = match total {
                Some(_) => record_left,
                None if header_len == 0 => 1,
                None => record_left.min(HANDSHAKE_HEADER_LEN - header_len),
            };
            return Ok(Located::Incomplete(needed));
        }
        seen += len;
        pos += RECORD_HEADER_LEN + len;
        let complete = total.is_some_and(|t| seen == t);
        if !complete && records == MAX_RECORDS {
            return Err(HelloError::TooManyRecords);
        }
        if let Some(t) = total
            && seen == t
        {
            let message = if records == 1 {
                Cow::Borrowed(buf.get(first_body).unwrap_or_default())
            } else {
                Cow::Owned(gather(buf.get(..pos).unwrap_or_default(), t))
            };
            return Ok(Located::Complete {
                message,
                record_bytes: pos,
            });
        }
    }
}

/// Judges a record header that has not fully arrived: the first record's
/// opening bytes may already show another protocol, a later record's type
/// byte may already show the handshake was interrupted.
fn partial_record_header(rest: &[u8], first: bool) -> Result<Located<'_>, HelloError> {
    if first {
        if !plausible_first_header(rest) {
            return Ok(Located::NotTls);
        }
        // Each of the first three bytes could still turn out not to be TLS.
        if rest.len() < 3 {
            return Ok(Located::Incomplete(1));
        }
    } else {
        match rest.first() {
            None => return Ok(Located::Incomplete(1)),
            Some(&t) if t != CONTENT_HANDSHAKE => return Err(HelloError::InterleavedRecord(t)),
            Some(_) => {}
        }
    }
    Ok(Located::Incomplete(RECORD_HEADER_LEN - rest.len()))
}

/// Concatenates the bodies of records already validated by [`locate`].
fn gather(records: &[u8], total: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(total);
    let mut r = Reader::new(records);
    while r.skip(3).is_some() {
        let Some(body) = r.u16().and_then(|len| r.take(usize::from(len))) else {
            break;
        };
        out.extend_from_slice(body);
    }
    out
}

/// Judges a possibly partial first record header: anything but a handshake
/// record with an SSL 3.0 to TLS 1.3 version is some other protocol.
fn plausible_first_header(header: &[u8]) -> bool {
    let ok_type = header.first().is_none_or(|&t| t == CONTENT_HANDSHAKE);
    let ok_major = header.get(1).is_none_or(|&m| m == 3);
    let ok_minor = header.get(2).is_none_or(|&m| m <= 4);
    ok_type && ok_major && ok_minor
}

fn valid_record_version(version: u16) -> bool {
    (0x0300..=0x0304).contains(&version)
}

fn parse_message(message: &[u8]) -> Result<HelloInfo, HelloError> {
    let mut r = Reader::new(message.get(HANDSHAKE_HEADER_LEN..).unwrap_or_default());
    let legacy_version = r.u16().ok_or(HelloError::Truncated("legacy version"))?;
    r.take(32).ok_or(HelloError::Truncated("random"))?;
    let session_id = r.u8_vec().ok_or(HelloError::Truncated("session id"))?;
    if session_id.len() > 32 {
        return Err(HelloError::Invalid("session id longer than 32 bytes"));
    }
    let suites = r.u16_vec().ok_or(HelloError::Truncated("cipher suites"))?;
    if suites.is_empty() || !suites.len().is_multiple_of(2) {
        return Err(HelloError::Invalid(
            "cipher suite list is empty or odd-length",
        ));
    }
    let compression = r
        .u8_vec()
        .ok_or(HelloError::Truncated("compression methods"))?;
    if compression.is_empty() {
        return Err(HelloError::Invalid("no compression methods"));
    }

    let mut info = HelloInfo {
        sni: None,
        alpn: Vec::new(),
        versions: Vec::new(),
        resumption_without_sni: false,
        record_bytes: 0,
    };
    let mut resuming = false;
    let mut supported_versions_seen = false;
    // Pre-TLS 1.2 clients may stop before the extensions block.
    if !r.is_empty() {
        let declared = r.u16().ok_or(HelloError::Truncated("extensions length"))?;
        let mut exts = Reader::new(
            r.take(usize::from(declared))
                .ok_or(HelloError::ExtensionOverrun)?,
        );
        if !r.is_empty() {
            return Err(HelloError::Invalid("bytes follow the extensions block"));
        }
        let mut seen = Seen::default();
        while !exts.is_empty() {
            let (ty, data) = match (exts.u16(), exts.u16()) {
                (Some(ty), Some(len)) => (
                    ty,
                    exts.take(usize::from(len))
                        .ok_or(HelloError::ExtensionOverrun)?,
                ),
                _ => return Err(HelloError::ExtensionOverrun),
            };
            seen.check(ty)?;
            match ty {
                EXT_SERVER_NAME => info.sni = parse_sni(data)?,
                EXT_ALPN => info.alpn = parse_alpn(data)?,
                EXT_SUPPORTED_VERSIONS => {
                    info.versions = parse_supported_versions(data)?;
                    supported_versions_seen = true;
                }
                EXT_SESSION_TICKET => resuming |= !data.is_empty(),
                EXT_PRE_SHARED_KEY => resuming = true,
                _ => {}
            }
        }
    }
    if !supported_versions_seen {
        info.versions
            .extend(legacy_version_from_wire(legacy_version));
    }
    info.resumption_without_sni = resuming && info.sni.is_none();
    Ok(info)
}

/// Duplicates are illegal (RFC 8446 §4.2); for the ones we read they would also
/// let two parties disagree about where the connection goes.
#[derive(Default)]
struct Seen(u8);

impl Seen {
    fn check(&mut self, ty: u16) -> Result<(), HelloError> {
        let bit = match ty {
            EXT_SERVER_NAME => 1,
            EXT_ALPN => 2,
            EXT_SESSION_TICKET => 4,
            EXT_PRE_SHARED_KEY => 8,
            EXT_SUPPORTED_VERSIONS => 16,
            _ => return Ok(()),
        };
        if self.0 & bit != 0 {
            return Err(HelloError::DuplicateExtension(ty));
        }
        self.0 |= bit;
        Ok(())
    }
}

fn parse_sni(data: &[u8]) -> Result<Option<String>, HelloError> {
    let malformed = |what| HelloError::MalformedExtension {
        ext: "server_name",
        what,
    };
    let mut outer = Reader::new(data);
    let mut list = Reader::new(
        outer
            .u16_vec()
            .ok_or(malformed("list overruns the extension"))?,
    );
    if !outer.is_empty() {
        return Err(malformed("bytes follow the name list"));
    }
    if list.is_empty() {
        return Err(malformed("empty name list"));
    }
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8().ok_or(malformed("entry overruns the list"))?;
        let name = list.u16_vec().ok_or(malformed("entry overruns the list"))?;
        // Other name types are undefined; RFC 6066 says to skip them.
        if name_type != 0 {
            continue;
        }
        if host.is_some() {
            return Err(malformed("more than one host_name"));
        }
        host = Some(normalise_host(name)?);
    }
    Ok(host)
}

/// Lower-cases and drops one trailing dot so that `Example.COM.` and
/// `example.com` route alike; rejects anything a DNS name cannot be.
fn normalise_host(name: &[u8]) -> Result<String, HelloError> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(HelloError::InvalidSni);
    }
    for label in name.split(|&b| b == b'.') {
        let chars_ok = label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !chars_ok {
            return Err(HelloError::InvalidSni);
        }
    }
    let lower = name.to_ascii_lowercase();
    String::from_utf8(lower).map_err(|_| HelloError::InvalidSni)
}

fn parse_alpn(data: &[u8]) -> Result<Vec<String>, HelloError> {
    let malformed = |what| HelloError::MalformedExtension { ext: "ALPN", what };
    let mut outer = Reader::new(data);
    let mut list = Reader::new(
        outer
            .u16_vec()
            .ok_or(malformed("list overruns the extension"))?,
    );
    if !outer.is_empty() {
        return Err(malformed("bytes follow the protocol list"));
    }
    if list.is_empty() {
        return Err(malformed("empty protocol list"));
    }
    let mut out = Vec::new();
    while !list.is_empty() {
        let name = list
            .u8_vec()
            .ok_or(malformed("protocol name overruns the list"))?;
        if name.is_empty() {
            return Err(malformed("empty protocol name"));
        }
        if let Ok(name) = std::str::from_utf8(name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

fn parse_supported_versions(data: &[u8]) -> Result<Vec<TlsVersion>, HelloError> {
    let malformed = |what| HelloError::MalformedExtension {
        ext: "supported_versions",
        what,
    };
    let mut outer = Reader::new(data);
    let mut list = Reader::new(
        outer
            .u8_vec()
            .ok_or(malformed("list overruns the extension"))?,
    );
    if !outer.is_empty() {
        return Err(malformed("bytes follow the version list"));
    }
    if list.is_empty() || !list.remaining().is_multiple_of(2) {
        return Err(malformed("version list is empty or odd-length"));
    }
    let mut out = Vec::new();
    while let Some(v) = list.u16() {
        // GREASE and drafts are skipped: they are not versions anyone speaks.
        if let Some(v) = version_from_wire(v)
            && !out.contains(&v)
        {
            out.push(v);
        }
    }
    Ok(out)
}

fn version_from_wire(v: u16) -> Option<TlsVersion> {
    Some(match v {
        0x0300 => TlsVersion::Ssl3,
        0x0301 => TlsVersion::Tls10,
        0x0302 => TlsVersion::Tls11,
        0x0303 => TlsVersion::Tls12,
        0x0304 => TlsVersion::Tls13,
        _ => return None,
    })
}

/// Without supported_versions, legacy_version is the client's highest
/// version; RFC 8446 §4.2.1 has anything above 0x0303 negotiate TLS 1.2.
fn legacy_version_from_wire(v: u16) -> Option<TlsVersion> {
    match v {
        0x0304..=0x03ff => Some(TlsVersion::Tls12),
        v => version_from_wire(v),
    }
}

/// A cursor whose every read is checked, so hostile lengths yield `None`.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn rest(&self) -> &'a [u8] {
        self.buf
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.buf.split_at_checked(n)?;
        self.buf = tail;
        Some(head)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }

    /// A vector with a one-byte length prefix.
    fn u8_vec(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// A vector with a two-byte length prefix.
    fn u16_vec(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

#[cfg(test)]
#[path = "client_hello_tests.rs"]
mod tests;
