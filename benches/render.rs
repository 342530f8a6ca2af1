//! Rendering for scrapes.
//!
//! - `snapshot/*`: `FamilyState::snapshot`, which a family actor runs at most once per publish
//!   interval after an update: the family in the Prometheus text format. One family of 1,000
//!   or 100,000 counter series, or of 10,000 summary series (ten observations each, three
//!   quantiles); `all_changed` after an update to every series (every series rendered),
//!   `one_changed` after an update to one (its lines rendered, the others' copied).
//! - `exposition/*`: what every `GET /metrics` runs once its barrier has passed: the
//!   aggregator's answer for 10,000 families (one counter series each; their rates, which are
//!   listed) and `exposition::render`, which concatenates them and writes the per-family
//!   self-metrics and tallyd's own.
//!
//! `cargo bench --bench render`

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tallyd::actors::aggregator::AggregatorMsg;
use tallyd::actors::family::FamilyState;
use tallyd::config::ObserverType;
use tallyd::exposition;
use tallyd::telemetry::Telemetry;
use tallyd::update::{Kind, Op, Update};

/// `series * updates` updates over `series` series, `op(k)` each.
fn updates(series: usize, updates: usize, op: impl Fn(usize) -> Op) -> Vec<Update> {
    let labels: Vec<_> = (0..series).map(common::series).collect();
    (0..series * updates)
        .map(|k| Update {
            labels: labels[k % series].clone(),
            op: op(k),
            samples: 1,
        })
        .collect()
}

/// A family of `series` series, each updated `updates` times with `op(k)`.
fn populated(
    name: &str,
    kind: Kind,
    series: usize,
    n: usize,
    op: impl Fn(usize) -> Op,
    ctx: &Arc<tallyd::actors::family::FamilyContext>,
) -> FamilyState {
    let mut state = common::family(name, kind, ObserverType::Summary, ctx);
    state.apply(&mut updates(series, n, op).into(), Instant::now());
    state
}

fn snapshot(c: &mut Criterion, ctx: &Arc<tallyd::actors::family::FamilyContext>) {
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(20);
    let observe = |k: usize| Op::Observe {
        value: 0.0005 * (1 + k % 100) as f64,
        count: 1,
    };
    let add = |_| Op::Add(1.0);
    for (name, kind, series, n) in [
        ("counter/1k_series", Kind::Counter, 1_000, 1),
        ("counter/100k_series", Kind::Counter, 100_000, 1),
        ("summary/10k_series", Kind::Observer, 10_000, 10),
    ] {
        let op: &dyn Fn(usize) -> Op = if kind == Kind::Counter {
            &add
        } else {
            &observe
        };
        let mut state = populated(name, kind, series, n, op, ctx);
        let every = updates(series, 1, op);
        let one = updates(1, 1, op);
        group.throughput(Throughput::Elements(series as u64));
        group.bench_function(format!("{name}/all_changed"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    state.apply(&mut every.clone().into(), Instant::now());
                    let started = Instant::now();
                    black_box(state.snapshot(started));
                    spent += started.elapsed();
                }
                spent
            })
        });
        group.bench_function(format!("{name}/one_changed"), |b| {
            b.iter(|| {
                state.apply(&mut one.clone().into(), Instant::now());
                state.snapshot(Instant::now())
            })
        });
    }
    group.finish();
}

fn render(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    ctx: &Arc<tallyd::actors::family::FamilyContext>,
) {
    const FAMILIES: usize = 10_000;
    let now = Instant::now();
    for i in 0..FAMILIES {
        let mut state = populated(
            &format!("app_req_{i}"),
            Kind::Counter,
            1,
            1,
            |_| Op::Add(1.0),
            ctx,
        );
        let snapshot = Arc::new(state.snapshot(now));
        ctx.aggregator
            .cast(AggregatorMsg::Publish(snapshot))
            .expect("aggregator runs");
    }
    let telemetry = Telemetry::new();
    let mut group = c.benchmark_group("exposition");
    group.sample_size(20);
    group.throughput(Throughput::Elements(FAMILIES as u64));
    group.bench_function("scrape/10k_families", |b| {
        b.iter(|| {
            let scrape = rt
                .block_on(ctx.aggregator.call(AggregatorMsg::Scrape, None))
                .expect("aggregator answers")
                .expect("aggregator answers");
            assert_eq!(scrape.families.len(), FAMILIES);
            // A new String per scrape, as the HTTP handler does.
            let mut out = String::new();
            exposition::render(&scrape, &telemetry, &mut out);
            black_box(out)
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ctx = common::family_context(&rt, Arc::new(Telemetry::new()), Duration::from_millis(20));
    snapshot(c, &ctx);
    render(c, &rt, &ctx);
}

criterion_group!(benches, bench);
criterion_main!(benches);
