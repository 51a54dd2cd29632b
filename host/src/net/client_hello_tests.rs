//! Tests of `client_hello`, kept apart so the parser reads on its own.

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
fn a_hello_over_too_many_records_is_refused_once_the_cap_is_reached() {
    let msg = build(&Spec {
        sni: Some("many.example".into()),
        ..Spec::default()
    });
    assert!(
        msg.len() > MAX_RECORDS + 1,
        "the hello must need more records"
    );
    // At the cap the hello still parses.
    let mut sizes = vec![1; MAX_RECORDS - 1];
    let at_cap = records(&msg, &sizes);
    assert_eq!(hello(&at_cap).sni.as_deref(), Some("many.example"));
    // One-byte records: refused as soon as the cap's last record is in,
    // whatever follows (the walk never goes past it).
    sizes.resize(msg.len(), 1);
    let trickled = records(&msg, &sizes);
    let cap_end = MAX_RECORDS * (5 + 1);
    assert_eq!(err(&trickled[..cap_end]), HelloError::TooManyRecords);
    assert_eq!(err(&trickled), HelloError::TooManyRecords);
    assert!(matches!(
        parse(&trickled[..cap_end - 1]),
        Ok(Parsed::Incomplete { .. })
    ));
    check_hints(&trickled[..cap_end + 20]);
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
