//! `FamilyState::apply` alone, as a family actor runs it on one `Apply` message: batches of 64
//! updates (a family's share of one receive batch) spread evenly over 1, 100 or 10,000
//! series that already exist (so series creation is not in the figures), for counters,
//! gauges, summaries (timers, DDSketch) and histograms (default buckets). Each series has one
//! label. Building the batch is outside the timing; dropping its labels is inside, as in the
//! actor.
//!
//! The batcher's side, grouping many datagrams per family before dispatch ("edge
//! aggregation"), is `pipeline/inline/*` in `benches/pipeline.rs`.
//!
//! `cargo bench --bench apply`

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tallyd::config::ObserverType;
use tallyd::telemetry::Telemetry;
use tallyd::update::{Kind, Op, Update};

/// Updates per `Apply`.
const BATCH: usize = 64;

/// A family type to bench: name, kind, how an observer is exposed, the k-th update's op.
type Case = (&'static str, Kind, ObserverType, fn(usize) -> Op);

/// An observation between 0.5 ms and 50 ms (in seconds), varied so a sketch has many bins.
fn observe(k: usize) -> Op {
    Op::Observe {
        value: 0.0005 * (1 + k % 100) as f64,
        count: 1,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ctx = common::family_context(&rt, Arc::new(Telemetry::new()), Duration::from_millis(20));
    let cases: [Case; 4] = [
        ("counter", Kind::Counter, ObserverType::Summary, |_| {
            Op::Add(1.0)
        }),
        ("gauge", Kind::Gauge, ObserverType::Summary, |k| {
            Op::Set(k as f64)
        }),
        ("summary", Kind::Observer, ObserverType::Summary, observe),
        (
            "histogram",
            Kind::Observer,
            ObserverType::Histogram,
            observe,
        ),
    ];
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, kind, observer, op) in cases {
        for series in [1, 100, 10_000] {
            let mut state = common::family(name, kind, observer, &ctx);
            let labels: Vec<_> = (0..series).map(common::series).collect();
            let update = |k: usize| Update {
                labels: labels[k % series].clone(),
                op: op(k),
                samples: 1,
            };
            state.apply(
                &mut (0..series).map(update).collect::<Vec<_>>().into(),
                Instant::now(),
            );
            // Enough batches to touch every series before they repeat.
            let batches: Vec<Vec<Update>> = (0..series.div_ceil(BATCH).max(16))
                .map(|b| (b * BATCH..(b + 1) * BATCH).map(update).collect())
                .collect();
            let mut next = 0;
            group.bench_function(format!("{name}/{series}_series"), |b| {
                b.iter_batched(
                    || {
                        next = (next + 1) % batches.len();
                        batches[next].clone().into()
                    },
                    |mut batch| state.apply(&mut batch, Instant::now()),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
