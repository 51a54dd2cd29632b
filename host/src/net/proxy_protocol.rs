//! PROXY protocol v1 (text) and v2 (binary): parse the header a load balancer
//! puts in front of a connection, and encode one for a backend.
//!
//! Follows haproxy's `proxy-protocol.txt`. Like the ClientHello parser this is
//! stateless: the caller appends what it reads and calls [`parse`] again.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v1 line, CRLF included, never exceeds this (the spec's own bound).
const V1_MAX_LEN: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_HEADER_LEN: usize = 16;

const V2_LOCAL: u8 = 0x0;
const V2_PROXY: u8 = 0x1;
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;
const V2_INET_LEN: usize = 12;
const V2_INET6_LEN: usize = 36;
const V2_UNIX_LEN: usize = 216;

/// What the bytes received so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyParse {
    /// A plausible header that has not fully arrived yet.
    Incomplete,
    /// A complete header; the connection's own data starts at `len`.
    Header { header: ProxyHeader, len: usize },
}

/// The original connection's endpoints, when the sender disclosed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client; `None` when the sender had none to give (v1 `UNKNOWN`, v2
    /// `LOCAL`, or a family other than TCP over IPv4/IPv6), in which case the
    /// socket's own peer address is the truth.
    pub source: Option<SocketAddr>,
    /// The address the client connected to; `None` exactly when `source` is.
    pub destination: Option<SocketAddr>,
}

/// Why the bytes are not an acceptable PROXY header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("PROXY v1 header has no CRLF within 107 bytes")]
    V1NoCrlf,
    #[error("PROXY v1 header has a lone CR or LF before its end")]
    V1StrayLineBreak,
    #[error("PROXY v1 header contains byte {0:#04x}, which is not printable ASCII")]
    V1BadByte(u8),
    #[error("PROXY v1 protocol {0:?} is not TCP4, TCP6 or UNKNOWN")]
    V1Protocol(String),
    #[error("PROXY v1 header has {0} fields after the protocol, expected 4")]
    V1FieldCount(usize),
    #[error("PROXY v1 {field} address {value:?} is not an {family} address")]
    V1Address {
        field: &'static str,
        value: String,
        family: &'static str,
    },
    #[error("PROXY v1 {field} port {value:?} is not a number from 0 to 65535")]
    V1Port { field: &'static str, value: String },
    #[error("PROXY v2 version {0} is not supported")]
    V2Version(u8),
    #[error("PROXY v2 command {0:#x} is neither LOCAL nor PROXY")]
    V2Command(u8),
    #[error("PROXY v2 address family {0:#04x} is not supported")]
    V2Family(u8),
    #[error(
        "PROXY v2 address block of {len} bytes is too short for family {family:#04x}, which needs {needed}"
    )]
    V2ShortAddresses {
        family: u8,
        len: usize,
        needed: usize,
    },
    #[error("PROXY v2 TLV at offset {0} overruns the header")]
    V2TlvOverrun(usize),
}

/// Classifies `buf`, the bytes received so far on a connection that must
/// start with a PROXY header.
pub fn parse(buf: &[u8]) -> Result<ProxyParse, ProxyError> {
    if buf.starts_with(V2_SIGNATURE) {
        parse_v2(buf)
    } else if buf.starts_with(V1_PREFIX) {
        parse_v1(buf)
    } else if V2_SIGNATURE.starts_with(buf) || V1_PREFIX.starts_with(buf) {
        Ok(ProxyParse::Incomplete)
    } else {
        Err(ProxyError::NotProxy)
    }
}

/// Whether `buf`, not empty, is a strict prefix of the v1 or the v2
/// signature: a caller deciding whether the client sent a PROXY header
/// must read more before it decides.
pub fn is_signature_prefix(buf: &[u8]) -> bool {
    let strict = |sig: &[u8]| buf.len() < sig.len() && sig.starts_with(buf);
    !buf.is_empty() && (strict(V1_PREFIX) || strict(V2_SIGNATURE))
}

/// Whether `buf` opens with a complete v1 or v2 signature, so that a header
/// from a peer not trusted to send one is refused instead of forwarded as data.
pub fn looks_like_header(buf: &[u8]) -> bool {
    buf.starts_with(V1_PREFIX) || buf.starts_with(V2_SIGNATURE)
}

fn parse_v1(buf: &[u8]) -> Result<ProxyParse, ProxyError> {
    let window = buf.get(..V1_MAX_LEN).unwrap_or(buf);
    let mut end = None;
    // Bytes are vetted as they arrive so that garbage fails before 107 bytes.
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\r' => match window.get(i + 1) {
                Some(b'\n') => {
                    end = Some(i);
                    break;
                }
                Some(_) => return Err(ProxyError::V1StrayLineBreak),
                None => break,
            },
            b'\n' => return Err(ProxyError::V1StrayLineBreak),
            0x20..=0x7e => {}
            other => return Err(ProxyError::V1BadByte(other)),
        }
    }
    let Some(end) = end else {
        return if buf.len() >= V1_MAX_LEN {
            Err(ProxyError::V1NoCrlf)
        } else {
            Ok(ProxyParse::Incomplete)
        };
    };
    let line = buf.get(..end).unwrap_or_default();
    // Every byte was checked to be printable ASCII above.
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::NotProxy)?;
    let mut fields = line.split(' ').skip(1);
    let protocol = fields.next().unwrap_or_default();
    let v4 = match protocol {
        // The spec tells receivers to ignore whatever follows UNKNOWN.
        "UNKNOWN" => return Ok(header(None, None, end + 2)),
        "TCP4" => true,
        "TCP6" => false,
        other => return Err(ProxyError::V1Protocol(other.to_owned())),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyError::V1FieldCount(
            line.split(' ').count().saturating_sub(2),
        ));
    };
    // Checked in line order, so the error names the first bad field.
    let src = v1_ip(src, v4, "source")?;
    let dst = v1_ip(dst, v4, "destination")?;
    let sport = v1_port(sport, "source")?;
    let dport = v1_port(dport, "destination")?;
    Ok(header(
        Some(SocketAddr::new(src, sport)),
        Some(SocketAddr::new(dst, dport)),
        end + 2,
    ))
}

fn v1_ip(s: &str, v4: bool, field: &'static str) -> Result<IpAddr, ProxyError> {
    let ip = if v4 {
        s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    };
    ip.ok_or_else(|| ProxyError::V1Address {
        field,
        value: s.to_owned(),
        family: if v4 { "IPv4" } else { "IPv6" },
    })
}

fn v1_port(s: &str, field: &'static str) -> Result<u16, ProxyError> {
    // u16's parser would also take "+80"; the spec allows digits only.
    let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| s.parse::<u16>().ok())
        .flatten()
        .ok_or_else(|| ProxyError::V1Port {
            field,
            value: s.to_owned(),
        })
}

fn parse_v2(buf: &[u8]) -> Result<ProxyParse, ProxyError> {
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(ProxyParse::Incomplete);
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2Version(ver_cmd >> 4));
    }
    let command = ver_cmd & 0x0f;
    if command != V2_LOCAL && command != V2_PROXY {
        return Err(ProxyError::V2Command(command));
    }
    let Some(&family) = buf.get(13) else {
        return Ok(ProxyParse::Incomplete);
    };
    // LOCAL (health checks from the balancer itself) ignores the family.
    let addr_len = if command == V2_PROXY {
        v2_address_len(family)?
    } else {
        None
    };
    let Some(&[hi, lo]) = buf.get(14..16) else {
        return Ok(ProxyParse::Incomplete);
    };
    let block_len = usize::from(u16::from_be_bytes([hi, lo]));
    if let Some(needed) = addr_len
        && block_len < needed
    {
        return Err(ProxyError::V2ShortAddresses {
            family,
            len: block_len,
            needed,
        });
    }
    let len = V2_HEADER_LEN + block_len;
    let Some(block) = buf.get(V2_HEADER_LEN..len) else {
        return Ok(ProxyParse::Incomplete);
    };
    let Some(addr_len) = addr_len else {
        return Ok(header(None, None, len));
    };
    check_tlvs(block, addr_len)?;
    let mut r = block;
    let (source, destination) = match family {
        V2_TCP4 => {
            let (s, d) = (take_array::<4>(&mut r), take_array::<4>(&mut r));
            let (sp, dp) = (take_port(&mut r), take_port(&mut r));
            (
                SocketAddr::new(Ipv4Addr::from(s).into(), sp),
                SocketAddr::new(Ipv4Addr::from(d).into(), dp),
            )
        }
        V2_TCP6 => {
            let (s, d) = (take_array::<16>(&mut r), take_array::<16>(&mut r));
            let (sp, dp) = (take_port(&mut r), take_port(&mut r));
            (
                SocketAddr::new(Ipv6Addr::from(s).into(), sp),
                SocketAddr::new(Ipv6Addr::from(d).into(), dp),
            )
        }
        // UDP and unix sockets say nothing a TCP proxy could use; the spec
        // asks receivers to treat them as UNSPEC.
        _ => return Ok(header(None, None, len)),
    };
    Ok(header(Some(source), Some(destination), len))
}

/// The address block size for a PROXY-command family, `None` for UNSPEC;
/// combinations the spec does not define are errors.
fn v2_address_len(family: u8) -> Result<Option<usize>, ProxyError> {
    Ok(match family {
        0x00 => None,
        0x11 | 0x12 => Some(V2_INET_LEN),
        0x21 | 0x22 => Some(V2_INET6_LEN),
        0x31 | 0x32 => Some(V2_UNIX_LEN),
        other => return Err(ProxyError::V2Family(other)),
    })
}

/// TLVs carry nothing we use, but a broken chain means a broken sender.
fn check_tlvs(block: &[u8], start: usize) -> Result<(), ProxyError> {
    let mut at = start;
    while at < block.len() {
        let value_len = match block.get(at + 1..at + 3) {
            Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => return Err(ProxyError::V2TlvOverrun(at)),
        };
        let next = at + 3 + value_len;
        if next > block.len() {
            return Err(ProxyError::V2TlvOverrun(at));
        }
        at = next;
    }
    Ok(())
}

/// Reads from a block whose length was already checked; a short read would
/// give zeros rather than a panic.
fn take_array<const N: usize>(r: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some((head, tail)) = r.split_first_chunk::<N>() {
        out = *head;
        *r = tail;
    }
    out
}

fn take_port(r: &mut &[u8]) -> u16 {
    u16::from_be_bytes(take_array::<2>(r))
}

fn header(source: Option<SocketAddr>, destination: Option<SocketAddr>, len: usize) -> ProxyParse {
    ProxyParse::Header {
        header: ProxyHeader {
            source,
            destination,
        },
        len,
    }
}

/// Both addresses in one family: a v4 address next to a v6 one becomes
/// v4-mapped v6, since a header has a single family.
enum Pair {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

fn pair(src: IpAddr, dst: IpAddr) -> Pair {
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Pair::V4(s, d),
        (s, d) => Pair::V6(v6(s), v6(d)),
    }
}

/// A v1 line such as `PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\n`.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (sp, dp) = (src.port(), dst.port());
    let line = match pair(src.ip(), dst.ip()) {
        Pair::V4(s, d) => format!("PROXY TCP4 {s} {d} {sp} {dp}\r\n"),
        Pair::V6(s, d) => format!("PROXY TCP6 {s} {d} {sp} {dp}\r\n"),
    };
    line.into_bytes()
}

/// A v2 PROXY-command header for TCP, with no TLVs.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_HEADER_LEN + V2_INET6_LEN);
    out.extend_from_slice(V2_SIGNATURE);
    out.push(0x20 | V2_PROXY);
    match pair(src.ip(), dst.ip()) {
        Pair::V4(s, d) => {
            out.push(V2_TCP4);
            out.extend_from_slice(&(V2_INET_LEN as u16).to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        Pair::V6(s, d) => {
            out.push(V2_TCP6);
            out.extend_from_slice(&(V2_INET6_LEN as u16).to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

#[cfg(test)]
#[path = "proxy_protocol_tests.rs"]
mod tests;
