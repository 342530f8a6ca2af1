//! The in-process pipeline from datagram to family state.
//!
//! - `pipeline/inline/*`: one thread: batch a datagram (parse, escape, labels, group by family)
//!   and apply each family's batch to its state, as a family actor does, without the mailbox.
//! - `pipeline/ingest/*`: the batcher alone (parse, line cache, combine per series), taking
//!   its batches every 64 datagrams as a listener does; `cold` evicts the processor's caches
//!   before each datagram (untimed), as the idle time between datagrams does at moderate rates.
//! - `pipeline/actors/*`: the real path: batcher and router as a UDP listener runs them under
//!   full load (one dispatch per receive batch of 64 datagrams), casts to real family actors
//!   under a real registry; timed until the aggregator has seen every update.
//!
//! `cargo bench --bench pipeline`

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ractor::rpc::CallResult;
use ractor::Actor;
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tallyd::actors::aggregator::AggregatorMsg;
use tallyd::actors::family::{FamilySpec, FamilyState};
use tallyd::actors::registry::{RegistryActor, RegistryArgs};
use tallyd::config::Settings;
use tallyd::ingest::{Batcher, IngestConfig};
use tallyd::limits::QueueBound;
use tallyd::mapping::Mapper;
use tallyd::routing::Router;
use tallyd::telemetry::{ListenerKind, Telemetry};

const DATAGRAMS: usize = 256;
/// Datagrams per dispatch, as `statsd.receive_batch` defaults.
const RECEIVE_BATCH: usize = 64;

fn ingest_config() -> Arc<IngestConfig> {
    Arc::new(IngestConfig::new(&Settings::default(), Mapper::default()))
}

fn inline(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("pipeline/inline");
    for (name, datagrams) in [
        ("counter", common::counters(1000, DATAGRAMS)),
        ("timer", common::timers(1000, DATAGRAMS)),
        ("dogstatsd_tagged", common::tagged(1000, DATAGRAMS)),
    ] {
        let telemetry = Arc::new(Telemetry::new());
        let ctx = common::family_context(rt, telemetry.clone(), Duration::from_millis(1));
        let mut batcher = Batcher::new(telemetry, ingest_config(), ListenerKind::Udp);
        let mut families: FxHashMap<Arc<str>, FamilyState> = FxHashMap::default();
        let lines: u64 = datagrams.iter().map(|d| common::lines(d)).sum();
        group.throughput(Throughput::Elements(lines));
        group.bench_function(name, |b| {
            b.iter(|| {
                let now = Instant::now();
                for datagram in &datagrams {
                    batcher.ingest(datagram);
                    for (family, mut batch) in batcher.take() {
                        families
                            .entry(family.clone())
                            .or_insert_with(|| {
                                let spec = FamilySpec {
                                    name: family,
                                    kind: batch.updates.list[0].op.kind(),
                                    meta: batch.meta,
                                };
                                FamilyState::new(spec, ctx.clone())
                            })
                            .apply(&mut batch.updates, now);
                    }
                }
            })
        });
    }
    group.finish();
}

fn ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline/ingest");
    let datagrams = common::counters(1000, DATAGRAMS);
    let lines: u64 = datagrams.iter().map(|d| common::lines(d)).sum();
    group.throughput(Throughput::Elements(lines));
    // Larger than the processor's private caches.
    let mut evict = vec![0u8; 16 << 20];
    for (name, cold) in [("counter", false), ("counter_cold", true)] {
        let mut batcher = Batcher::new(
            Arc::new(Telemetry::new()),
            ingest_config(),
            ListenerKind::Udp,
        );
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    for (i, datagram) in datagrams.iter().enumerate() {
                        if cold {
                            evict
                                .iter_mut()
                                .step_by(64)
                                .for_each(|b| *b = b.wrapping_add(1));
                        }
                        let start = Instant::now();
                        batcher.ingest(datagram);
                        if i % RECEIVE_BATCH == RECEIVE_BATCH - 1 {
                            std::hint::black_box(batcher.take());
                        }
                        spent += start.elapsed();
                    }
                }
                spent
            })
        });
    }
    group.finish();
}

fn actors(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("pipeline/actors");
    group.sample_size(10);
    for (name, datagrams) in [
        ("counter", common::counters(1000, DATAGRAMS)),
        ("timer", common::timers(1000, DATAGRAMS)),
    ] {
        let telemetry = Arc::new(Telemetry::new());
        let ctx = common::family_context(rt, telemetry.clone(), Duration::from_millis(1));
        let aggregator = ctx.aggregator.clone();
        let (registry, _) = rt
            .block_on(Actor::spawn(
                None,
                RegistryActor,
                RegistryArgs {
                    families: ctx,
                    max_live: usize::MAX,
                },
            ))
            .expect("registry starts");
        let mut batcher = Batcher::new(telemetry.clone(), ingest_config(), ListenerKind::Udp);
        let queue = Arc::new(QueueBound::new(usize::MAX));
        let mut router = Router::new(registry, telemetry, queue);
        let lines: u64 = datagrams.iter().map(|d| common::lines(d)).sum();
        let mut sent = 0u64;
        group.throughput(Throughput::Elements(lines));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        for batch in datagrams.chunks(RECEIVE_BATCH) {
                            for datagram in batch {
                                batcher.ingest(datagram);
                            }
                            router.dispatch(batcher.take()).await;
                        }
                        sent += lines;
                    }
                    // Done when every update is in the aggregator's view.
                    loop {
                        let view = aggregator
                            .call(AggregatorMsg::Scrape, None)
                            .await
                            .expect("aggregator answers");
                        let CallResult::Success(view) = view else {
                            panic!("aggregator failed")
                        };
                        if view.families.iter().map(|s| s.updates).sum::<u64>() >= sent {
                            break;
                        }
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    inline(c, &rt);
    ingest(c);
    actors(c, &rt);
}

criterion_group!(benches, bench);
criterion_main!(benches);
