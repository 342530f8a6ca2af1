//! Parsing alone: lines per second through `parse_line` and its samples, for counter, timer
//! and tagged DogStatsD datagrams shaped like the load generator's (split on newlines here;
//! the batcher's own split is in the `pipeline` bench).
//!
//! `cargo bench --bench parse`

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tallyd::statsd::parse;

fn parse_all(datagram: &[u8]) -> usize {
    let mut n = 0;
    for line in datagram.split(|&b| b == b'\n') {
        if let Ok(parse::Datum::Metric(line)) = parse::parse_line(line) {
            for sample in line.samples().flatten() {
                n += black_box(sample).value as usize;
            }
            n += line.tags.iter().count();
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, datagram) in [
        ("counter", common::counters(1000, 1).remove(0)),
        ("timer", common::timers(1000, 1).remove(0)),
        ("dogstatsd_tagged", common::tagged(1000, 1).remove(0)),
    ] {
        group.throughput(Throughput::Elements(common::lines(&datagram)));
        group.bench_function(name, |b| b.iter(|| parse_all(black_box(&datagram))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
