//! What the WebSocket relay's frame following costs
//! (`turnout::http::websocket::frames::Frames`): the relay forwards bytes
//! as they come and reads only frame headers, to put a heartbeat ping or a
//! close frame between two frames and to see pongs.
//!
//! * `1KiB/per-read-of-16` — sixteen masked 1 KiB messages (client to
//!   server) in one 16.5 KiB read, followed to the end, as the relay does
//!   when nothing is to be injected; reported per message;
//! * `1KiB/stop-at-each` — the same read walked boundary by boundary, as
//!   when a ping is waiting (the worst case: a stop after every frame);
//! * `16MiB/one-frame` — one 16 MiB frame in 16 KiB reads: payload bytes
//!   are skipped by arithmetic, so this is ~1 000 constant-time steps.
//!
//! `cargo bench -p turnout-benches --bench ws_frames`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use turnout::http::websocket::frames::Frames;

/// A masked binary frame of `len` bytes (client to server).
fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0x82];
    match len {
        0..=125 => f.push(0x80 | len as u8),
        126..=65535 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[1, 2, 3, 4]);
    f.resize(f.len() + len, 0x5A);
    f
}

fn bench(c: &mut Criterion) {
    let read: Vec<u8> = (0..16).flat_map(|_| frame(1024)).collect();
    let mut g = c.benchmark_group("ws_frames");
    g.throughput(Throughput::Elements(16));
    g.bench_function("1KiB/per-read-of-16", |b| {
        let mut f = Frames::new(true);
        b.iter(|| {
            let mut n = 0u32;
            let used = f.advance(black_box(&read), false, &mut |_| n += 1);
            black_box((used, n))
        });
    });
    g.bench_function("1KiB/stop-at-each", |b| {
        let mut f = Frames::new(true);
        b.iter(|| {
            let mut rest = black_box(&read[..]);
            let mut n = 0u32;
            while !rest.is_empty() {
                let used = f.advance(rest, true, &mut |_| n += 1).unwrap();
                rest = &rest[used..];
            }
            black_box(n)
        });
    });
    let big = frame(16 << 20);
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("16MiB/one-frame", |b| {
        let mut f = Frames::new(true);
        b.iter(|| {
            for chunk in big.chunks(16 * 1024) {
                black_box(f.advance(black_box(chunk), false, &mut |_| {}).unwrap());
            }
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
