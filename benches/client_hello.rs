//! The ClientHello peek (`turnout::net::client_hello::parse`), as the
//! connection path uses it: append what arrived, parse again.
//!
//! * `small` — the hello rustls sends (one record, a few hundred bytes);
//! * `large` — ~8 KiB in one record: 40 cipher suites, 32 ALPN protocols,
//!   a post-quantum-sized key share, 40 unknown extensions, padding;
//! * `fragmented/*` — the large hello split into 512-byte TLS records and
//!   delivered in 1460-byte TCP-sized chunks, and the small one delivered
//!   one byte at a time; each chunk appended and the buffer parsed again
//!   (the parser is stateless, so this is the real cost of a trickle);
//! * `adversarial/1B-records` — the large hello as one-byte TLS records,
//!   one record per read, until the parser refuses it: the cap on records
//!   (`MAX_RECORDS`) is what keeps this linear — without it the re-walk
//!   from byte 0 on every read made the ~8 KiB hello's 8 000 records cost
//!   O(n²), tens of millions of record steps on one worker.
//!
//! `cargo bench -p turnout-benches --bench client_hello`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use turnout::net::client_hello::{Parsed, parse};

const SNI: &str = "svc5.example.com";

fn u16_prefixed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn extension(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut v = ty.to_be_bytes().to_vec();
    v.extend(u16_prefixed(data));
    v
}

/// A handshake message (header included) for a big, browser-of-the-future
/// ClientHello.
fn large_hello_message() -> Vec<u8> {
    let mut exts = Vec::new();
    exts.extend(extension(0x0a0a, &[])); // GREASE
    let mut name = vec![0u8];
    name.extend(u16_prefixed(SNI.as_bytes()));
    exts.extend(extension(0, &u16_prefixed(&name)));
    let mut alpn = Vec::new();
    for p in ["h2", "http/1.1"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..30).map(|i| format!("x-proto-{i:02}")))
    {
        alpn.push(p.len() as u8);
        alpn.extend_from_slice(p.as_bytes());
    }
    exts.extend(extension(16, &u16_prefixed(&alpn)));
    exts.extend(extension(43, &[6, 0x1a, 0x1a, 0x03, 0x04, 0x03, 0x03]));
    let groups: Vec<u8> = [0x11ec_u16, 0x001d, 0x0017, 0x0018, 0x0019]
        .iter()
        .flat_map(|g| g.to_be_bytes())
        .collect();
    exts.extend(extension(10, &u16_prefixed(&groups)));
    let sigalgs: Vec<u8> = (0..30u16)
        .flat_map(|i| (0x0401 + i).to_be_bytes())
        .collect();
    exts.extend(extension(13, &u16_prefixed(&sigalgs)));
    let mut shares = Vec::new();
    for (group, len) in [(0x11ec_u16, 1216usize), (0x001d, 32)] {
        shares.extend(group.to_be_bytes());
        shares.extend(u16_prefixed(&vec![0x42; len]));
    }
    exts.extend(extension(51, &u16_prefixed(&shares)));
    for i in 0..40u16 {
        exts.extend(extension(0xff00 + i, &[i as u8; 64]));
    }
    exts.extend(extension(21, &vec![0u8; 3500])); // padding

    let mut body = vec![0x03, 0x03];
    body.extend([7u8; 32]); // random
    body.push(32);
    body.extend([9u8; 32]); // session id
    let suites: Vec<u8> = (0..40u16)
        .flat_map(|i| (0x1301 + i).to_be_bytes())
        .collect();
    body.extend(u16_prefixed(&suites));
    body.extend([1, 0]); // compression: null
    body.extend(u16_prefixed(&exts));

    let mut msg = vec![1u8];
    msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend(body);
    msg
}

/// `message` in TLS records of at most `record` bytes each.
fn records(message: &[u8], record: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in message.chunks(record) {
        out.extend([0x16, 0x03, 0x01]);
        out.extend(u16_prefixed(part));
    }
    out
}

/// What the connection path does: append each chunk, parse, until a hello.
fn feed(wire: &[u8], chunk: usize) -> usize {
    let mut buf = Vec::with_capacity(4096);
    for part in wire.chunks(chunk) {
        buf.extend_from_slice(part);
        match parse(black_box(&buf)) {
            Ok(Parsed::Incomplete { .. }) => continue,
            Ok(Parsed::Hello(info)) => return info.alpn.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("hello never completed")
}

/// The adversary's trickle: one record per read until the parser gives up;
/// returns how many bytes it took.
fn feed_until_refused(wire: &[u8], chunk: usize) -> usize {
    let mut buf = Vec::with_capacity(4096);
    for part in wire.chunks(chunk) {
        buf.extend_from_slice(part);
        match parse(black_box(&buf)) {
            Ok(Parsed::Incomplete { .. }) => continue,
            Err(_) => return buf.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("a hello in one-byte records was never refused")
}

fn expect_hello(wire: &[u8], alpn: usize) {
    match parse(wire) {
        Ok(Parsed::Hello(info)) => {
            assert_eq!(info.sni.as_deref(), Some(SNI));
            assert_eq!(info.alpn.len(), alpn);
            assert_eq!(info.record_bytes, wire.len());
        }
        other => panic!("test input does not parse: {other:?}"),
    }
}

fn benches(c: &mut Criterion) {
    let small = turnout_benches::loadgen::tls::client_hello(SNI).expect("rustls hello");
    let large = records(&large_hello_message(), 16_384);
    let large_fragmented = records(&large_hello_message(), 512);
    expect_hello(&small, 1);
    expect_hello(&large, 32);
    expect_hello(&large_fragmented, 32);
    assert!(large.len() > 8000, "large hello is {} bytes", large.len());

    let mut g = c.benchmark_group("client_hello");
    g.measurement_time(Duration::from_secs(3));
    let cases: [(&str, &[u8], usize); 4] = [
        ("small", &small, usize::MAX),
        ("large", &large, usize::MAX),
        (
            "fragmented/large-512B-records-1460B-chunks",
            &large_fragmented,
            1460,
        ),
        ("fragmented/small-1B-chunks", &small, 1),
    ];
    for (name, wire, chunk) in cases {
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(format!("{name}/{}B", wire.len()), |b| {
            b.iter(|| feed(wire, chunk))
        });
    }
    let trickle = records(&large_hello_message(), 1);
    g.throughput(Throughput::Bytes(trickle.len() as u64));
    g.bench_function(format!("adversarial/1B-records/{}B", trickle.len()), |b| {
        b.iter(|| feed_until_refused(&trickle, 6))
    });
    g.finish();
}

criterion_group!(client_hello, benches);
criterion_main!(client_hello);
