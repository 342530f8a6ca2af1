//! `tallyd::ingest::Batcher::ingest` on arbitrary datagrams, then every batch applied to a
//! family's state and rendered, as a family actor would: the whole path from bytes to
//! exposition text, without sockets or mailboxes.
//!
//! Input: byte 0 picks the tag styles (bits 0-3, as in `parse_line`), the mapping file (bits
//! 4-5: none, `tests/data/mapping/valid.yml`, `tests/golden/mapping/mapping.yml`, none) and the
//! observer type of unmapped families (bit 6: summary or histogram); bit 7 sets tiny series
//! limits (4 in all, 2 per family) instead of none. The rest is the datagram;
//! the datagram is ingested twice, so that counters, observers and sets see repeated updates
//! (one call's batches, then the next's, into the same family states).
//!
//! Checked: family names are valid Prometheus names and never tallyd's own, label names are
//! valid, sorted, unique and never reserved, every batch is non-empty, the series budget and
//! the `tallyd_series` gauges count exactly the series held (and come back to where they were
//! when the families are dropped), and applying and rendering never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ractor::Actor;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tallyd::actors::aggregator::AggregatorActor;
use tallyd::config::{ObserverType, Settings};
use tallyd::actors::family::{FamilyContext, FamilySpec, FamilyState};
use tallyd::ingest::{Batcher, IngestConfig};
use tallyd::limits::SeriesBudget;
use tallyd::mapping::Mapper;
use tallyd::telemetry::{ListenerKind, Telemetry};

const VALID: &str = include_str!("../../data/mapping/valid.yml");
const GOLDEN: &str = include_str!("../../golden/mapping/mapping.yml");

/// Every combination of styles, mapping file and observer type, built on first use.
fn config(selector: u8) -> Arc<IngestConfig> {
    static CONFIGS: OnceLock<Vec<OnceLock<Arc<IngestConfig>>>> = OnceLock::new();
    let configs = CONFIGS.get_or_init(|| (0..128).map(|_| OnceLock::new()).collect());
    let selector = selector & 0x7f;
    configs[usize::from(selector)]
        .get_or_init(|| {
            let mut settings = Settings::default();
            settings.statsd.parse_dogstatsd_tags = selector & 1 != 0;
            settings.statsd.parse_influxdb_tags = selector & 2 != 0;
            settings.statsd.parse_librato_tags = selector & 4 != 0;
            settings.statsd.parse_signalfx_tags = selector & 8 != 0;
            if selector & 0x40 != 0 {
                settings.observer.observer_type = ObserverType::Histogram;
            }
            let mapper = match (selector >> 4) & 3 {
                1 => Mapper::from_yaml(VALID, Path::new("valid.yml")).expect("valid.yml"),
                2 => Mapper::from_yaml(GOLDEN, Path::new("mapping.yml")).expect("mapping.yml"),
                _ => Mapper::default(),
            };
            Arc::new(IngestConfig::new(&settings, mapper))
        })
        .clone()
}

struct Shared {
    /// Keeps the aggregator's runtime alive; nothing is ever published to it.
    _runtime: tokio::runtime::Runtime,
    aggregator: ractor::ActorRef<tallyd::actors::aggregator::AggregatorMsg>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (aggregator, _) = runtime
            .block_on(Actor::spawn(None, AggregatorActor, 0))
            .expect("aggregator starts");
        Shared {
            _runtime: runtime,
            aggregator,
        }
    })
}

thread_local! {
    /// Telemetry is costly to build (it reads /proc), so it is shared; but it keeps a counter
    /// per type-conflicting family name, so it is renewed now and then to keep memory flat.
    static TELEMETRY: std::cell::RefCell<(u32, Arc<Telemetry>)> =
        std::cell::RefCell::new((0, Arc::new(Telemetry::new())));
}

fn telemetry() -> Arc<Telemetry> {
    TELEMETRY.with(|t| {
        let mut t = t.borrow_mut();
        t.0 += 1;
        if t.0 % 4096 == 0 {
            t.1 = Arc::new(Telemetry::new());
        }
        t.1.clone()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, datagram)) = data.split_first() else {
        return;
    };
    let telemetry = telemetry();
    let gauges = |t: &Telemetry| {
        ["counter", "gauge", "observer", "set"].map(|kind| t.series_gauge(kind).get())
    };
    let gauges_before = gauges(&telemetry);
    let budget = Arc::new(if selector & 0x80 != 0 {
        SeriesBudget::new(4, 2)
    } else {
        SeriesBudget::new(usize::MAX, usize::MAX)
    });
    let ctx = Arc::new(FamilyContext {
        aggregator: shared().aggregator.clone(),
        telemetry: telemetry.clone(),
        publish_interval: Duration::from_millis(20),
        flush_interval: Duration::from_secs(2),
        hibernate_after: None,
        set_window: Duration::from_secs(60),
        budget: budget.clone(),
    });
    let mut batcher = Batcher::new(telemetry.clone(), config(selector), ListenerKind::Udp);
    let mut families: HashMap<Arc<str>, FamilyState> = HashMap::new();
    let now = Instant::now();
    for _ in 0..2 {
        batcher.ingest(datagram);
        for (family, mut batch) in batcher.take() {
            assert!(
                tallyd::names::is_valid(&family),
                "invalid family name {family:?}"
            );
            assert!(
                !telemetry.is_reserved(&family),
                "reserved family name {family:?}"
            );
            assert!(!batch.updates.is_empty(), "empty batch for {family:?}");
            for update in &batch.updates.list {
                let labels: Vec<_> = update.labels.iter().collect();
                for pair in labels.windows(2) {
                    assert!(
                        pair[0].0 < pair[1].0,
                        "labels not sorted/unique: {labels:?}"
                    );
                }
                for (name, _) in &labels {
                    assert!(tallyd::names::is_valid(name), "bad label name {name:?}");
                    assert!(!name.starts_with("__"), "reserved label name {name:?}");
                }
            }
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
    let mut held = 0;
    for state in families.values_mut() {
        let snapshot = state.snapshot(now);
        assert!(!snapshot.text.is_empty() || snapshot.series == 0);
        held += snapshot.series;
    }
    assert_eq!(budget.used(), held, "the budget counts the series held");
    if selector & 0x80 != 0 {
        assert!(held <= 4, "{held} series over a budget of 4");
    }
    let gauges_during = gauges(&telemetry);
    let added: i64 = (0..4).map(|i| gauges_during[i] - gauges_before[i]).sum();
    assert_eq!(added, held as i64, "tallyd_series counts the series held");
    drop(families);
    assert_eq!(budget.used(), 0, "dropped families give their series back");
    assert_eq!(
        gauges(&telemetry),
        gauges_before,
        "tallyd_series back where it was"
    );
});
