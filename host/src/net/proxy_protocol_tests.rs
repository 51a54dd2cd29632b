//! Tests of `proxy_protocol`, kept apart so the parser reads on its own.

use super::*;
use proptest::prelude::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn parsed(buf: &[u8]) -> (ProxyHeader, usize) {
    match parse(buf) {
        Ok(ProxyParse::Header { header, len }) => (header, len),
        other => panic!("expected a header, got {other:?} for {buf:?}"),
    }
}

fn err(buf: &[u8]) -> ProxyError {
    match parse(buf) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?} for {buf:?}"),
    }
}

fn known(src: &str, dst: &str) -> ProxyHeader {
    ProxyHeader {
        source: Some(addr(src)),
        destination: Some(addr(dst)),
    }
}

const NONE: ProxyHeader = ProxyHeader {
    source: None,
    destination: None,
};

/// Every proper prefix is Incomplete, and bytes after the header are not
/// counted in `len`.
fn assert_streams(header: &[u8]) {
    for k in 0..header.len() {
        assert_eq!(
            parse(&header[..k]),
            Ok(ProxyParse::Incomplete),
            "prefix {k}"
        );
    }
    let mut with_data = header.to_vec();
    with_data.extend_from_slice(b"\x16\x03\x01GET / HTTP/1.1\r\n\0\xff");
    assert_eq!(parsed(&with_data), parsed(header));
    assert_eq!(parsed(header).1, header.len());
}

fn v2(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(ver_cmd);
    out.push(family);
    out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    out.extend_from_slice(block);
    out
}

#[test]
fn v1_round_trips() {
    for (src, dst) in [
        ("192.0.2.1:51000", "198.51.100.2:443"),
        ("[2001:db8::1]:0", "[::1]:65535"),
        ("0.0.0.0:1", "255.255.255.255:65535"),
    ] {
        let line = encode_v1(addr(src), addr(dst));
        assert_eq!(parsed(&line), (known(src, dst), line.len()));
        assert_streams(&line);
    }
    assert_eq!(
        encode_v1(addr("192.0.2.1:51000"), addr("198.51.100.2:443")),
        b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\n"
    );
}

#[test]
fn v2_round_trips() {
    for (src, dst) in [
        ("192.0.2.1:51000", "198.51.100.2:443"),
        (
            "[2001:db8::1]:0",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        ),
    ] {
        let header = encode_v2(addr(src), addr(dst));
        assert_eq!(parsed(&header), (known(src, dst), header.len()));
        assert_streams(&header);
    }
    let header = encode_v2(addr("192.0.2.1:1"), addr("198.51.100.2:2"));
    assert_eq!(header.len(), 28);
    assert_eq!(&header[12..16], &[0x21, 0x11, 0, 12]);
}

#[test]
fn mixed_families_become_v4_mapped_v6() {
    let (src, dst) = (addr("192.0.2.1:1000"), addr("[2001:db8::2]:443"));
    let want = known("[::ffff:192.0.2.1]:1000", "[2001:db8::2]:443");
    let line = encode_v1(src, dst);
    assert!(line.starts_with(b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 "));
    assert_eq!(parsed(&line).0, want);
    assert_eq!(parsed(&encode_v2(src, dst)).0, want);
    assert_eq!(parsed(&encode_v2(dst, src)).0.destination, want.source);
}

#[test]
fn v1_unknown_has_no_addresses() {
    let longest = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    assert_eq!(parsed(b"PROXY UNKNOWN\r\n"), (NONE, 15));
    assert_eq!(parsed(longest), (NONE, longest.len()));
    // The spec's worst case is exactly 107 bytes and must fit.
    let mut max = b"PROXY UNKNOWN ".to_vec();
    max.resize(V1_MAX_LEN - 2, b'x');
    max.extend_from_slice(b"\r\n");
    assert_eq!(parsed(&max), (NONE, V1_MAX_LEN));
    assert_streams(&max);
}

#[test]
fn v2_local_unspec_unix_and_udp_have_no_addresses() {
    let local = v2(0x20, 0x00, &[]);
    assert_eq!(parsed(&local), (NONE, 16));
    assert_streams(&local);
    // LOCAL ignores the family, even an undefined one.
    assert_eq!(parsed(&v2(0x20, 0x77, &[1, 2, 3])), (NONE, 19));
    assert_eq!(parsed(&v2(0x21, 0x00, &[9; 5])), (NONE, 21));
    assert_eq!(parsed(&v2(0x21, 0x31, &[0; 216])), (NONE, 232));
    assert_eq!(parsed(&v2(0x21, 0x12, &[0; 12])), (NONE, 28));
    assert_eq!(parsed(&v2(0x21, 0x22, &[0; 36])), (NONE, 52));
}

#[test]
fn v2_tlvs_are_skipped() {
    let mut block = vec![192, 0, 2, 1, 198, 51, 100, 2, 0x1f, 0x90, 0x01, 0xbb];
    block.extend_from_slice(&[0x01, 0, 2, b'h', b'2', 0x04, 0, 0, 0x20, 0, 1, 0]);
    let header = v2(0x21, 0x11, &block);
    assert_eq!(
        parsed(&header),
        (known("192.0.2.1:8080", "198.51.100.2:443"), header.len())
    );
    assert_streams(&header);

    block.extend_from_slice(&[0x05, 0, 9, 1]);
    assert_eq!(err(&v2(0x21, 0x11, &block)), ProxyError::V2TlvOverrun(24));
    block.truncate(block.len() - 2);
    assert_eq!(err(&v2(0x21, 0x11, &block)), ProxyError::V2TlvOverrun(24));
}

#[test]
fn malformed_v1() {
    let cases: &[(&[u8], ProxyError)] = &[
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            ProxyError::V1StrayLineBreak,
        ),
        (
            b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
            ProxyError::V1StrayLineBreak,
        ),
        (b"PROXY TCP4 1.2.3.4 \t", ProxyError::V1BadByte(b'\t')),
        (b"PROXY TCP4 \xc3\xa9", ProxyError::V1BadByte(0xc3)),
        (
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            ProxyError::V1Protocol("UDP4".into()),
        ),
        (
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            ProxyError::V1Protocol("tcp4".into()),
        ),
        (b"PROXY \r\n", ProxyError::V1Protocol(String::new())),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            ProxyError::V1FieldCount(3),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            ProxyError::V1FieldCount(5),
        ),
        (b"PROXY TCP4\r\n", ProxyError::V1FieldCount(0)),
    ];
    for (buf, want) in cases {
        assert_eq!(&err(buf), want, "{:?}", String::from_utf8_lossy(buf));
    }

    let address = |line: &[u8], field, value: &str, family| {
        assert_eq!(
            err(line),
            ProxyError::V1Address {
                field,
                value: value.into(),
                family
            }
        );
    };
    address(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "source", "::1", "IPv4");
    address(
        b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n",
        "destination",
        "5.6.7.8",
        "IPv6",
    );
    address(
        b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
        "source",
        "1.2.3",
        "IPv4",
    );
    address(
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1\r\n",
        "destination",
        "",
        "IPv4",
    );
    address(
        b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
        "source",
        "1.2.3.256",
        "IPv4",
    );

    for port in ["65536", "+80", "-1", "", "8o", "000443"] {
        let line = format!("PROXY TCP4 1.2.3.4 5.6.7.8 {port} 2\r\n");
        assert_eq!(
            err(line.as_bytes()),
            ProxyError::V1Port {
                field: "source",
                value: port.into()
            }
        );
    }
    assert_eq!(
        parsed(b"PROXY TCP4 1.2.3.4 5.6.7.8 080 0\r\n").0,
        known("1.2.3.4:80", "5.6.7.8:0")
    );

    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(V1_MAX_LEN - 1, b'x');
    assert_eq!(parse(&long), Ok(ProxyParse::Incomplete));
    long.push(b'\r');
    assert_eq!(err(&long), ProxyError::V1NoCrlf);
    long.push(b'\n');
    assert_eq!(err(&long), ProxyError::V1NoCrlf);
    assert_eq!(
        err(&long).to_string(),
        "PROXY v1 header has no CRLF within 107 bytes"
    );
}

#[test]
fn malformed_v2() {
    assert_eq!(err(&v2(0x11, 0x11, &[0; 12])), ProxyError::V2Version(1));
    assert_eq!(
        err(&V2_SIGNATURE
            .iter()
            .copied()
            .chain([0x22])
            .collect::<Vec<_>>()),
        ProxyError::V2Command(2)
    );
    for family in [0x31u8, 0x32] {
        assert!(parse(&v2(0x21, family, &[0; 216])).is_ok());
    }
    for family in [0x41u8, 0x13, 0x10, 0x01, 0xff] {
        assert_eq!(err(&v2(0x21, family, &[])), ProxyError::V2Family(family));
    }
    assert_eq!(
        err(&v2(0x21, 0x41, &[])).to_string(),
        "PROXY v2 address family 0x41 is not supported"
    );
    let short = v2(0x21, 0x21, &[0; 12]);
    assert_eq!(
        err(&short),
        ProxyError::V2ShortAddresses {
            family: 0x21,
            len: 12,
            needed: 36
        }
    );
    // The declared length alone is enough to tell.
    assert!(parse(&short[..16]).is_err());
    assert_eq!(
        err(&v2(0x21, 0x31, &[0; 215])).to_string(),
        "PROXY v2 address block of 215 bytes is too short for family 0x31, which needs 216"
    );
}

#[test]
fn other_protocols_are_not_proxy() {
    for buf in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"\x16\x03\x01\x02\x00",
        b"PROXYTCP4",
        b"proxy ",
        b"\r\n\r\n\0\r\nQUIX",
        b"\r\n\r\n\x01",
    ] {
        assert_eq!(err(buf), ProxyError::NotProxy, "{buf:?}");
    }
    assert_eq!(
        ProxyError::NotProxy.to_string(),
        "not a PROXY protocol header"
    );
    assert!(looks_like_header(b"PROXY UNKNOWN\r\n"));
    assert!(looks_like_header(&v2(0x20, 0, &[])[..12]));
    assert!(!looks_like_header(b"PROXY"));
    assert!(!looks_like_header(b"\x16\x03\x01"));
    // While the bytes are a strict prefix of a signature, nobody can tell.
    for buf in [&b"P"[..], b"PROX", b"PROXY", b"\r", b"\r\n\r\n\0\r\nQUIT"] {
        assert!(is_signature_prefix(buf), "{buf:?}");
    }
    let whole_v2 = v2(0x20, 0, &[]);
    for buf in [
        &b""[..],
        b"PROXY ",
        b"PROXY TCP4",
        b"Q",
        b"PX",
        b"\x16\x03",
        &whole_v2[..12],
    ] {
        assert!(!is_signature_prefix(buf), "{buf:?}");
    }
    for buf in [&b""[..], b"P", b"PROXY", b"\r\n\r\n\0\r\nQUIT"] {
        assert_eq!(parse(buf), Ok(ProxyParse::Incomplete), "{buf:?}");
    }
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    (any::<IpAddr>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

/// What a header carries once both addresses share one family.
fn same_family(src: SocketAddr, dst: SocketAddr) -> ProxyHeader {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(ip.to_ipv6_mapped().into(), a.port()),
        IpAddr::V6(_) => a,
    };
    let (src, dst) = if src.is_ipv4() && dst.is_ipv4() {
        (src, dst)
    } else {
        (v6(src), v6(dst))
    };
    ProxyHeader {
        source: Some(src),
        destination: Some(dst),
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&buf);
        let mut v1 = V1_PREFIX.to_vec();
        v1.extend_from_slice(&buf);
        let _ = parse(&v1);
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&buf);
        let _ = parse(&v2);
    }

    #[test]
    fn printable_v1_lines_never_panic(line in "PROXY (TCP4|TCP6|UNKNOWN)[ -~]{0,110}") {
        let mut buf = line.into_bytes();
        buf.extend_from_slice(b"\r\n");
        let _ = parse(&buf);
    }

    #[test]
    fn encoded_headers_round_trip(
        src in socket_addr(),
        dst in socket_addr(),
        payload in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let want = same_family(src, dst);
        let v2 = encode_v2(src, dst);
        prop_assert!(v2.len() == 28 || v2.len() == 52);
        for mut header in [encode_v1(src, dst), v2] {
            prop_assert!(header.len() <= V1_MAX_LEN);
            let len = header.len();
            let cut = payload.len() % len;
            prop_assert_eq!(parse(&header[..cut]), Ok(ProxyParse::Incomplete));
            header.extend_from_slice(&payload);
            prop_assert_eq!(parse(&header), Ok(ProxyParse::Header { header: want, len }));
        }
    }
}
