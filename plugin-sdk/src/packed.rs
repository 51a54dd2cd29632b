//! The packed part of WIT 0.3's `request-head`: the client, SNI, authority,
//! path and declared header slots in one buffer (the layout is documented on
//! `request-head.packed` in `wit/plugin.wit`).
//!
//! Why packed: in 0.2 each of those strings and lists was lowered on its own,
//! one allocation call from the host into the guest apiece (six per
//! request), and those calls and the field-by-field lowering were a third
//! of a warm `request` call. One buffer is one call. The host packs
//! ([`pack`]) into a buffer it keeps; the SDK's export glue unpacks
//! ([`unpack_into`]) into a [`RequestHead`] it keeps, so in steady state
//! neither side allocates for the head.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::http::RequestHead;
use crate::types::canonical_ip;

/// The length that marks an absent SNI or header slot.
const ABSENT: u32 = u32::MAX;

/// A buffer that does not follow the layout (only a broken host sends one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(&'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed packed request head: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// Writes `head`'s client, SNI, authority, path and header slots to `out`
/// (cleared first). The other fields travel as the record's own.
pub fn pack(head: &RequestHead, out: &mut Vec<u8>) {
    out.clear();
    match head.client {
        SocketAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.port().to_le_bytes());
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.port().to_le_bytes());
            out.extend_from_slice(&a.ip().octets());
        }
    }
    put(out, head.sni.as_deref().map(str::as_bytes));
    put(out, Some(head.authority.as_bytes()));
    put(out, Some(head.path.as_bytes()));
    // Slots are declared at `init` and bounded by the host: far below u32.
    let count = u32::try_from(head.headers.len()).unwrap_or(ABSENT - 1);
    out.extend_from_slice(&count.to_le_bytes());
    for slot in head.headers.iter().take(count as usize) {
        put(out, slot.as_deref());
    }
}

/// A length and bytes, or the absent marker. Values longer than a u32 can
/// hold (never: heads are capped far below) are cut rather than panicking.
fn put(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&ABSENT.to_le_bytes()),
        Some(v) => {
            let n = u32::try_from(v.len()).unwrap_or(ABSENT - 1);
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&v[..n as usize]);
        }
    }
}

/// Reads `packed` into `head`'s client, SNI, authority, path and header
/// slots, reusing the allocations they already hold. On an error `head` is
/// left partly overwritten.
pub fn unpack_into(packed: &[u8], head: &mut RequestHead) -> Result<(), Malformed> {
    let mut r = Reader(packed);
    head.client = r.client()?;
    match r.field()? {
        None => head.sni = None,
        Some(b) => refill_str(head.sni.get_or_insert_with(String::new), b)?,
    }
    let authority = r.field()?.ok_or(Malformed("no authority"))?;
    refill_str(&mut head.authority, authority)?;
    let path = r.field()?.ok_or(Malformed("no path"))?;
    refill_str(&mut head.path, path)?;
    let count = r.u32()? as usize;
    // Each slot takes at least its 4-byte length: a count past that is a lie
    // that must not size an allocation.
    if count > r.0.len() / 4 {
        return Err(Malformed("more slots than bytes"));
    }
    head.headers.truncate(count);
    head.headers.resize_with(count, || None);
    for slot in &mut head.headers {
        match r.field()? {
            None => *slot = None,
            Some(b) => {
                let v = slot.get_or_insert_with(Vec::new);
                v.clear();
                v.extend_from_slice(b);
            }
        }
    }
    if !r.0.is_empty() {
        return Err(Malformed("bytes after the last slot"));
    }
    Ok(())
}

fn refill_str(s: &mut String, bytes: &[u8]) -> Result<(), Malformed> {
    let text = std::str::from_utf8(bytes).map_err(|_| Malformed("a string is not UTF-8"))?;
    s.clear();
    s.push_str(text);
    Ok(())
}

/// The unread rest of the buffer.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(Malformed("truncated"))?;
        self.0 = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        self.take::<4>().map(u32::from_le_bytes)
    }

    fn client(&mut self) -> Result<SocketAddr, Malformed> {
        let [family] = self.take::<1>()?;
        let port = u16::from_le_bytes(self.take::<2>()?);
        match family {
            4 => Ok(SocketAddr::new(
                Ipv4Addr::from(self.take::<4>()?).into(),
                port,
            )),
            // As everywhere in the contract: one client, one address.
            6 => Ok(SocketAddr::new(
                canonical_ip(Ipv6Addr::from(self.take::<16>()?).into()),
                port,
            )),
            _ => Err(Malformed("unknown address family")),
        }
    }

    /// A length-prefixed value, `None` when marked absent.
    fn field(&mut self) -> Result<Option<&'a [u8]>, Malformed> {
        let n = self.u32()?;
        if n == ABSENT {
            return Ok(None);
        }
        let n = n as usize;
        if n > self.0.len() {
            return Err(Malformed("truncated"));
        }
        let (value, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Method, Scheme};

    fn head(client: &str) -> RequestHead {
        let mut h = RequestHead::new(
            client.parse().unwrap(),
            443,
            Method::Get,
            "api.example.com:8443",
            "/v1/items?page=2",
        );
        h.sni = Some("api.example.com".into());
        h.scheme = Scheme::Https;
        h.headers = vec![Some(b"a=1; b=\xff".to_vec()), None, Some(Vec::new())];
        h
    }

    fn round_trip(h: &RequestHead) -> RequestHead {
        let mut buf = Vec::new();
        pack(h, &mut buf);
        let mut out = RequestHead::new(
            "0.0.0.0:0".parse().unwrap(),
            h.listener_port,
            h.method.clone(),
            "",
            "",
        );
        out.connection_id = h.connection_id;
        out.scheme = h.scheme;
        unpack_into(&buf, &mut out).unwrap();
        out
    }

    #[test]
    fn every_field_survives_the_trip_v4_and_v6() {
        for client in ["192.0.2.7:50123", "[2001:db8::1]:443"] {
            let h = head(client);
            assert_eq!(round_trip(&h), h);
        }
        let mut h = head("127.0.0.1:1");
        h.sni = None;
        h.headers.clear();
        assert_eq!(round_trip(&h), h);
        // An IPv4-mapped client arrives as its IPv4 address (as in 0.2).
        h.client = "[::ffff:192.0.2.9]:7".parse().unwrap();
        assert_eq!(round_trip(&h).client, "192.0.2.9:7".parse().unwrap());
    }

    #[test]
    fn unpacking_reuses_what_the_head_holds_and_clears_what_is_gone() {
        let mut buf = Vec::new();
        let mut target = head("10.0.0.1:1");
        target.path = "/a-much-longer-path-than-the-next-one".into();
        let capacity = target.path.capacity();
        let mut next = head("10.0.0.2:2");
        next.path = "/".into();
        next.sni = None;
        next.headers = vec![None];
        pack(&next, &mut buf);
        unpack_into(&buf, &mut target).unwrap();
        assert_eq!(target.path, "/");
        assert_eq!(target.path.capacity(), capacity);
        assert_eq!(target.sni, None);
        assert_eq!(target.headers, vec![None]);
        assert_eq!(target.client, next.client);
    }

    #[test]
    fn every_truncation_and_bad_byte_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        pack(&head("[::1]:5"), &mut buf);
        let mut out = head("10.0.0.1:1");
        for cut in 0..buf.len() {
            assert!(unpack_into(&buf[..cut], &mut out).is_err(), "cut at {cut}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(
            unpack_into(&longer, &mut out),
            Err(Malformed("bytes after the last slot"))
        );
        let mut family = buf.clone();
        family[0] = 5;
        assert_eq!(
            unpack_into(&family, &mut out),
            Err(Malformed("unknown address family"))
        );
        // The authority is not UTF-8.
        let mut h = head("10.0.0.1:1");
        h.authority = "é".into();
        pack(&h, &mut buf);
        let at = buf.iter().position(|&b| b == 0xc3).unwrap();
        buf[at] = 0xff;
        assert_eq!(
            unpack_into(&buf, &mut out),
            Err(Malformed("a string is not UTF-8"))
        );
    }

    #[test]
    fn a_slot_count_larger_than_the_buffer_allocates_nothing() {
        let mut buf = Vec::new();
        let mut h = head("10.0.0.1:1");
        h.headers.clear();
        pack(&h, &mut buf);
        let n = buf.len();
        buf[n - 4..].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        assert_eq!(
            unpack_into(&buf, &mut h),
            Err(Malformed("more slots than bytes"))
        );
    }
}
