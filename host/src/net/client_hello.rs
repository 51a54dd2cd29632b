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
mod tests {
    use super::*;
    use TlsVersion::*;
    use proptest::prelude::*;

    /// `openssl s_client -connect 127.0.0.1:48443 -servername example.com
    /// -alpn h2,http/1.1` (OpenSSL 3.0.19), captured by a plain TCP listener.
    const OPENSSL_HELLO: &str = "\
        160301014a0100014603036d4333f9f161888a5607a8a5d33069ab85d89a9cdb7f05acd60733a69d9c321b205e0b303b\
        195bcf9103834d645021401ee89af5b5f13c4c9bc2a24bd0ddb928a7003e130213031301c02cc030009fcca9cca8ccaa\
        c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff010000bf\
        00000010000e00000b6578616d706c652e636f6d000b000403000102000a00160014001d0017001e0019001801000101\
        010201030104002300000010000e000c02683208687474702f312e310016000000170000000d002a0028040305030603\
        080708080809080a080b080408050806040105010601030303010302040205020602002b000908030403030302030100\
        2d00020101003300260024001d0020639632008a16d75472324f305f36847ea9a6f6472ad0e54d64e68c47e45fc721";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[derive(Debug, Clone)]
    struct Spec {
        sni: Option<String>,
        alpn: Vec<String>,
        versions: Option<Vec<u16>>,
        legacy: u16,
        ticket: Option<Vec<u8>>,
        psk: bool,
        grease: bool,
        padding: usize,
    }

    impl Default for Spec {
        fn default() -> Self {
            Spec {
                sni: None,
                alpn: Vec::new(),
                versions: None,
                legacy: 0x0303,
                ticket: None,
                psk: false,
                grease: false,
                padding: 0,
            }
        }
    }

    fn put16(out: &mut Vec<u8>, v: usize) {
        out.extend_from_slice(&u16::try_from(v).unwrap().to_be_bytes());
    }

    fn ext(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
        out.extend_from_slice(&ty.to_be_bytes());
        put16(out, data.len());
        out.extend_from_slice(data);
    }

    fn sni_ext(name: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        put16(&mut d, name.len() + 3);
        d.push(0);
        put16(&mut d, name.len());
        d.extend_from_slice(name);
        d
    }

    /// The ClientHello body (everything after the handshake header) up to
    /// and including the compression methods.
    fn prefix(legacy: u16, grease: bool) -> Vec<u8> {
        let mut b = legacy.to_be_bytes().to_vec();
        b.extend_from_slice(&[0x11; 32]);
        b.push(32);
        b.extend_from_slice(&[0x22; 32]);
        let suites: &[u8] = if grease {
            &[0x0a, 0x0a, 0x13, 0x01, 0xc0, 0x2f]
        } else {
            &[0x13, 0x01, 0xc0, 0x2f]
        };
        put16(&mut b, suites.len());
        b.extend_from_slice(suites);
        b.extend_from_slice(&[1, 0]);
        b
    }

    fn message(body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut m = vec![HANDSHAKE_CLIENT_HELLO, len[1], len[2], len[3]];
        m.extend_from_slice(body);
        m
    }

    fn with_exts(legacy: u16, exts: &[u8]) -> Vec<u8> {
        let mut b = prefix(legacy, false);
        put16(&mut b, exts.len());
        b.extend_from_slice(exts);
        message(&b)
    }

    fn build(spec: &Spec) -> Vec<u8> {
        let mut e = Vec::new();
        if spec.grease {
            ext(&mut e, 0x1a1a, &[]);
        }
        if let Some(sni) = &spec.sni {
            ext(&mut e, EXT_SERVER_NAME, &sni_ext(sni.as_bytes()));
        }
        if !spec.alpn.is_empty() {
            let mut list = Vec::new();
            for p in &spec.alpn {
                list.push(u8::try_from(p.len()).unwrap());
                list.extend_from_slice(p.as_bytes());
            }
            let mut d = Vec::new();
            put16(&mut d, list.len());
            d.extend_from_slice(&list);
            ext(&mut e, EXT_ALPN, &d);
        }
        if let Some(versions) = &spec.versions {
            let mut list: Vec<u16> = versions.clone();
            if spec.grease {
                list.insert(0, 0x3a3a);
            }
            let mut d = vec![u8::try_from(list.len() * 2).unwrap()];
            for v in list {
                d.extend_from_slice(&v.to_be_bytes());
            }
            ext(&mut e, EXT_SUPPORTED_VERSIONS, &d);
        }
        if let Some(ticket) = &spec.ticket {
            ext(&mut e, EXT_SESSION_TICKET, ticket);
        }
        if spec.padding > 0 {
            ext(&mut e, 21, &vec![0; spec.padding]);
        }
        if spec.psk {
            // One identity (4 bytes, age 0) and one 32-byte binder.
            let mut d = Vec::new();
            d.extend_from_slice(&[0, 10, 0, 4, 9, 9, 9, 9, 0, 0, 0, 0]);
            d.extend_from_slice(&[0, 33, 32]);
            d.extend_from_slice(&[0x33; 32]);
            ext(&mut e, EXT_PRE_SHARED_KEY, &d);
        }
        let mut b = prefix(spec.legacy, spec.grease);
        put16(&mut b, e.len());
        b.extend_from_slice(&e);
        message(&b)
    }

    /// Wraps a handshake message into records holding `sizes` bytes each,
    /// the last record taking whatever is left.
    fn records(msg: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = msg;
        let mut sizes = sizes.iter();
        while !rest.is_empty() {
            let n = sizes.next().copied().unwrap_or(rest.len()).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
            put16(&mut out, chunk.len());
            out.extend_from_slice(chunk);
            rest = tail;
        }
        out
    }

    fn one_record(msg: &[u8]) -> Vec<u8> {
        records(msg, &[])
    }

    fn hello(buf: &[u8]) -> HelloInfo {
        match parse(buf) {
            Ok(Parsed::Hello(info)) => info,
            other => panic!("expected a hello, got {other:?}"),
        }
    }

    fn err(buf: &[u8]) -> HelloError {
        match parse(buf) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Feeds every prefix of `buf`; checks that each Incomplete hint is a true
    /// lower bound on the bytes before the first non-Incomplete answer.
    fn check_hints(buf: &[u8]) {
        let results: Vec<_> = (0..=buf.len()).map(|k| parse(&buf[..k])).collect();
        let mut next_answer = None;
        for k in (0..=buf.len()).rev() {
            match &results[k] {
                Ok(Parsed::Incomplete { needed_hint }) => {
                    let n = needed_hint.unwrap_or(1);
                    assert!(n >= 1, "hint 0 at {k}");
                    if let Some(j) = next_answer {
                        assert!(k + n <= j, "hint {n} at {k} overshoots the answer at {j}");
                    }
                }
                _ => next_answer = Some(k),
            }
        }
    }

    fn expected(spec: &Spec, record_bytes: usize) -> HelloInfo {
        let sni = spec.sni.as_ref().map(|s| {
            let s = s.strip_suffix('.').unwrap_or(s);
            s.to_ascii_lowercase()
        });
        let mut versions = Vec::new();
        let wire = match &spec.versions {
            Some(list) => list.iter().copied().filter_map(version_from_wire).collect(),
            None => Vec::from_iter(legacy_version_from_wire(spec.legacy)),
        };
        for v in wire {
            if !versions.contains(&v) {
                versions.push(v);
            }
        }
        let ticket = spec.ticket.as_ref().is_some_and(|t| !t.is_empty());
        HelloInfo {
            resumption_without_sni: sni.is_none() && (ticket || spec.psk),
            sni,
            alpn: spec.alpn.clone(),
            versions,
            record_bytes,
        }
    }

    #[test]
    fn parses_a_real_openssl_hello() {
        let buf = unhex(OPENSSL_HELLO);
        let info = hello(&buf);
        assert_eq!(info.sni.as_deref(), Some("example.com"));
        assert_eq!(info.alpn, ["h2", "http/1.1"]);
        assert_eq!(info.versions, [Tls13, Tls12, Tls11, Tls10]);
        assert!(!info.resumption_without_sni);
        assert_eq!(info.record_bytes, 335);
    }

    #[test]
    fn byte_at_a_time_is_incomplete_until_the_last_byte() {
        let buf = unhex(OPENSSL_HELLO);
        for k in 0..buf.len() {
            assert!(
                matches!(
                    parse(&buf[..k]),
                    Ok(Parsed::Incomplete {
                        needed_hint: Some(_)
                    })
                ),
                "prefix {k}"
            );
        }
        check_hints(&buf);
        let mut more = buf.clone();
        more.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
        assert_eq!(hello(&more), hello(&buf));
    }

    #[test]
    fn reassembles_a_hello_split_across_many_records() {
        let real = unhex(OPENSSL_HELLO);
        let msg = &real[5..];
        let split = records(msg, &[1, 3, 2, 50, 7]);
        let info = hello(&split);
        assert_eq!(info.record_bytes, split.len());
        assert_eq!(
            info,
            HelloInfo {
                record_bytes: split.len(),
                ..hello(&real)
            }
        );
        check_hints(&split);

        let spec = Spec {
            sni: Some("big.example".into()),
            padding: 40_000,
            ..Spec::default()
        };
        let msg = build(&spec);
        let buf = records(&msg, &[MAX_RECORD_LEN, MAX_RECORD_LEN]);
        assert_eq!(hello(&buf), expected(&spec, buf.len()));
    }

    #[test]
    fn no_sni_and_resumption() {
        let plain = Spec {
            alpn: vec!["h2".into()],
            ..Spec::default()
        };
        let info = hello(&one_record(&build(&plain)));
        assert_eq!((info.sni, info.resumption_without_sni), (None, false));

        let cases = [
            (Some(vec![1, 2, 3]), false, None, true),
            (Some(vec![]), false, None, false),
            (None, true, None, true),
            (Some(vec![1]), true, Some("a.example".to_string()), false),
        ];
        for (ticket, psk, sni, want) in cases {
            let spec = Spec {
                ticket,
                psk,
                sni,
                ..Spec::default()
            };
            assert_eq!(
                hello(&one_record(&build(&spec))).resumption_without_sni,
                want,
                "{spec:?}"
            );
        }
    }

    #[test]
    fn sni_is_lowercased_and_loses_one_trailing_dot() {
        for (name, want) in [
            ("Example.COM.", "example.com"),
            ("WWW.example.com", "www.example.com"),
            ("_acme.x-1.example", "_acme.x-1.example"),
            ("localhost", "localhost"),
        ] {
            let spec = Spec {
                sni: Some(name.into()),
                ..Spec::default()
            };
            assert_eq!(hello(&one_record(&build(&spec))).sni.as_deref(), Some(want));
        }
        for bad in [
            "",
            ".",
            "example.com..",
            "a..b",
            "exämple.com",
            "a b",
            "a/b",
            &"x".repeat(64),
        ] {
            let spec = Spec {
                sni: Some(bad.into()),
                ..Spec::default()
            };
            assert_eq!(
                err(&one_record(&build(&spec))),
                HelloError::InvalidSni,
                "{bad:?}"
            );
        }
        let raw = with_exts(0x0303, &{
            let mut e = Vec::new();
            ext(&mut e, EXT_SERVER_NAME, &sni_ext(b"a\xffb"));
            e
        });
        assert_eq!(
            err(&one_record(&raw)).to_string(),
            "SNI is not a valid host name"
        );
    }

    #[test]
    fn grease_is_ignored() {
        let spec = Spec {
            sni: Some("g.example".into()),
            versions: Some(vec![0x0304, 0x2a2a, 0x0303, 0x7f1c, 0x0303]),
            grease: true,
            ..Spec::default()
        };
        let info = hello(&one_record(&build(&spec)));
        assert_eq!(info.versions, [Tls13, Tls12]);
        assert_eq!(info.sni.as_deref(), Some("g.example"));
    }

    #[test]
    fn legacy_version_when_supported_versions_is_absent() {
        for (legacy, want) in [
            (0x0303, vec![Tls12]),
            (0x0302, vec![Tls11]),
            (0x0301, vec![Tls10]),
            (0x0300, vec![Ssl3]),
            (0x0304, vec![Tls12]),
            (0x03ff, vec![Tls12]),
            (0x0200, vec![]),
        ] {
            let spec = Spec {
                legacy,
                ..Spec::default()
            };
            assert_eq!(hello(&one_record(&build(&spec))).versions, want);
        }
        // Old clients may end the hello right after the compression methods.
        let info = hello(&one_record(&message(&prefix(0x0301, false))));
        assert_eq!((info.sni, info.versions), (None, vec![Tls10]));
    }

    #[test]
    fn other_protocols_are_not_tls() {
        for buf in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"G",
            b"\x16\x02",
            b"\x16\x03\x05",
            b"\x17\x03\x03\x00\x05hello",
            b"\x80\x2e\x01\x00\x02",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert_eq!(parse(buf), Ok(Parsed::NotTls), "{buf:?}");
        }
        for buf in [&b""[..], b"\x16", b"\x16\x03", b"\x16\x03\x01\x00"] {
            assert!(
                matches!(parse(buf), Ok(Parsed::Incomplete { .. })),
                "{buf:?}"
            );
        }
    }

    #[test]
    fn record_layer_errors() {
        let msg = build(&Spec {
            sni: Some("r.example".into()),
            ..Spec::default()
        });
        let split = records(&msg, &[10]);
        let mut interleaved = split[..15].to_vec();
        interleaved.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
        assert_eq!(err(&interleaved), HelloError::InterleavedRecord(0x17));
        assert_eq!(err(&interleaved[..16]), HelloError::InterleavedRecord(0x17));

        let mut bad_version = split.clone();
        bad_version[16] = 2;
        assert_eq!(err(&bad_version), HelloError::BadRecordVersion(0x0201));

        assert_eq!(err(b"\x16\x03\x01\x00\x00"), HelloError::EmptyRecord);
        assert_eq!(
            err(b"\x16\x03\x01\x40\x01"),
            HelloError::RecordTooLong(16385)
        );

        let mut trailing = msg.clone();
        trailing.extend_from_slice(&[2, 0, 0, 0]);
        assert_eq!(err(&one_record(&trailing)), HelloError::TrailingData(4));
        assert_eq!(
            HelloError::TrailingData(4).to_string(),
            "4 bytes follow the ClientHello in its last record"
        );

        let server_hello = b"\x16\x03\x03\x00\x04\x02\x00\x00\x00";
        assert_eq!(err(server_hello), HelloError::NotClientHello(2));
        assert_eq!(err(&server_hello[..6]), HelloError::NotClientHello(2));
        assert_eq!(
            HelloError::NotClientHello(2).to_string(),
            "handshake message is not a ClientHello (type 2)"
        );
    }

    #[test]
    fn too_large() {
        let limit = u32::try_from(MAX_HELLO_LEN - HANDSHAKE_HEADER_LEN)
            .unwrap()
            .to_be_bytes();
        let at_limit = [0x16, 3, 1, 0, 4, 1, limit[1], limit[2], limit[3]];
        assert!(matches!(parse(&at_limit), Ok(Parsed::Incomplete { .. })));
        let over = [0x16, 3, 1, 0, 4, 1, limit[1], limit[2], limit[3] + 1];
        assert_eq!(err(&over), HelloError::TooLarge);
        assert_eq!(
            err(&over).to_string(),
            "ClientHello larger than 65536 bytes"
        );
        assert_eq!(
            err(b"\x16\x03\x01\x00\x04\x01\xff\xff\xff"),
            HelloError::TooLarge
        );
    }

    #[test]
    fn malformed_bodies() {
        let truncated = message(&prefix(0x0303, false)[..40]);
        assert_eq!(
            err(&one_record(&truncated)),
            HelloError::Truncated("session id")
        );

        let mut overrun = Vec::new();
        ext(&mut overrun, 0xff01, &[0]);
        overrun[3] = 9;
        let m = with_exts(0x0303, &overrun);
        assert_eq!(err(&one_record(&m)), HelloError::ExtensionOverrun);
        assert_eq!(
            HelloError::ExtensionOverrun.to_string(),
            "extension length overruns the ClientHello"
        );

        let mut body = prefix(0x0303, false);
        body.extend_from_slice(&[0, 9, 0xff, 0x01, 0, 1, 0]);
        assert_eq!(
            err(&one_record(&message(&body))),
            HelloError::ExtensionOverrun
        );
        let mut body = prefix(0x0303, false);
        body.extend_from_slice(&[0, 4, 0xff, 0x01, 0, 0, 7]);
        assert_eq!(
            err(&one_record(&message(&body))),
            HelloError::Invalid("bytes follow the extensions block")
        );

        let mut dup = Vec::new();
        ext(&mut dup, EXT_SERVER_NAME, &sni_ext(b"a.example"));
        ext(&mut dup, EXT_SERVER_NAME, &sni_ext(b"b.example"));
        assert_eq!(
            err(&one_record(&with_exts(0x0303, &dup))),
            HelloError::DuplicateExtension(0)
        );

        let malformed = |ty, data: &[u8]| {
            let mut e = Vec::new();
            ext(&mut e, ty, data);
            err(&one_record(&with_exts(0x0303, &e))).to_string()
        };
        assert_eq!(
            malformed(EXT_SERVER_NAME, &[]),
            "malformed server_name extension: list overruns the extension"
        );
        assert_eq!(
            malformed(EXT_SERVER_NAME, &[0, 5, 0, 0, 9, b'a', b'b']),
            "malformed server_name extension: entry overruns the list"
        );
        assert_eq!(
            malformed(EXT_ALPN, &[0, 3, 0, 1, b'a']),
            "malformed ALPN extension: empty protocol name"
        );
        assert_eq!(
            malformed(EXT_ALPN, &[0, 0]),
            "malformed ALPN extension: empty protocol list"
        );
        assert_eq!(
            malformed(EXT_SUPPORTED_VERSIONS, &[3, 3, 4, 3]),
            "malformed supported_versions extension: version list is empty or odd-length"
        );
        assert_eq!(
            malformed(EXT_SUPPORTED_VERSIONS, &[4, 3, 4]),
            "malformed supported_versions extension: list overruns the extension"
        );

        let mut no_suites = 0x0303u16.to_be_bytes().to_vec();
        no_suites.extend_from_slice(&[0; 33]);
        no_suites.extend_from_slice(&[0, 0, 1, 0]);
        assert_eq!(
            err(&one_record(&message(&no_suites))),
            HelloError::Invalid("cipher suite list is empty or odd-length")
        );
    }

    #[test]
    fn non_utf8_alpn_entries_are_skipped() {
        let mut e = Vec::new();
        ext(&mut e, EXT_ALPN, &[0, 6, 2, 0xff, 0xfe, 2, b'h', b'2']);
        assert_eq!(hello(&one_record(&with_exts(0x0303, &e))).alpn, ["h2"]);
    }

    fn spec_strategy() -> impl Strategy<Value = Spec> {
        let version = prop_oneof![
            Just(0x0304u16),
            Just(0x0303),
            Just(0x0302),
            Just(0x0301),
            Just(0x0300),
            Just(0x7f1c),
            Just(0xfafa),
        ];
        (
            proptest::option::of("[a-zA-Z0-9_-]{1,12}(\\.[a-zA-Z0-9-]{1,12}){0,3}\\.?"),
            proptest::collection::vec("[a-z0-9/.-]{1,10}", 0..4),
            proptest::option::of(proptest::collection::vec(version, 1..6)),
            0x0300u16..=0x0304,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(sni, alpn, versions, legacy, ticket, psk, grease)| Spec {
                sni,
                alpn,
                versions,
                legacy,
                ticket,
                psk,
                grease,
                padding: 0,
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&buf);
        }

        #[test]
        fn arbitrary_hello_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&one_record(&message(&body)));
            let mut full = prefix(0x0303, true);
            full.extend_from_slice(&body);
            let _ = parse(&one_record(&message(&full)));
        }

        #[test]
        fn mutated_hellos_never_panic_and_hints_hold(
            spec in spec_strategy(),
            sizes in proptest::collection::vec(1usize..40, 0..6),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let mut buf = records(&build(&spec), &sizes);
            for (at, x) in flips {
                let i = at.index(buf.len());
                buf[i] ^= x;
            }
            check_hints(&buf);
        }

        #[test]
        fn splitting_into_records_does_not_change_the_hello(
            spec in spec_strategy(),
            sizes in proptest::collection::vec(1usize..64, 0..12),
        ) {
            let msg = build(&spec);
            let whole = one_record(&msg);
            prop_assert_eq!(hello(&whole), expected(&spec, whole.len()));
            let split = records(&msg, &sizes);
            prop_assert_eq!(hello(&split), expected(&spec, split.len()));
        }
    }
}
