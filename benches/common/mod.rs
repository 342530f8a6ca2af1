//! Datagrams shaped like the load generator's (`benches/statsd_loadgen.c`): lines for
//! `<prefix>.<i>` with i cycling over `names`, packed into datagrams of at most 1,400 bytes.
#![allow(dead_code)] // each bench uses a part

/// Datagrams of `lines_per_datagram` lines each, `count` of them, cycling over `names` names.
pub fn datagrams(
    suffix: &str,
    prefix: &str,
    names: usize,
    max_bytes: usize,
    count: usize,
) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(count);
    let mut seq = 0usize;
    for _ in 0..count {
        let mut d = Vec::with_capacity(max_bytes);
        loop {
            let line = format!("{prefix}.{}{suffix}", seq % names);
            if !d.is_empty() && d.len() + 1 + line.len() > max_bytes {
                break;
            }
            if !d.is_empty() {
                d.push(b'\n');
            }
            d.extend_from_slice(line.as_bytes());
            seq += 1;
        }
        out.push(d);
    }
    out
}

/// Lines in a datagram.
pub fn lines(datagram: &[u8]) -> u64 {
    datagram.split(|&b| b == b'\n').count() as u64
}

/// Counter datagrams as the load generator sends them (~88 lines each).
pub fn counters(names: usize, count: usize) -> Vec<Vec<u8>> {
    datagrams(":1|c", "app.req", names, 1400, count)
}

/// Timer datagrams as the load generator sends them (~70 lines each).
pub fn timers(names: usize, count: usize) -> Vec<Vec<u8>> {
    datagrams(":12.5|ms", "app.lat", names, 1400, count)
}

/// DogStatsD counters with two tags and a sample rate.
pub fn tagged(names: usize, count: usize) -> Vec<Vec<u8>> {
    datagrams(
        ":1|c|@0.5|#region:eu,tier:web",
        "app.req",
        names,
        1400,
        count,
    )
}

// Family state for the benches that drive `FamilyState` directly.

use std::sync::Arc;
use std::time::Duration;
use tallyd::actors::aggregator::AggregatorActor;
use tallyd::actors::family::{FamilyContext, FamilySpec, FamilyState};
use tallyd::config::{LimitSettings, ObserverSettings, ObserverType};
use tallyd::limits::SeriesBudget;
use tallyd::telemetry::Telemetry;
use tallyd::update::{FamilyMeta, Kind, LabelSet, DEFAULT_HELP};

/// What families share, with a real aggregator actor spawned on `rt` (publishing is not
/// benched here, but the context needs one) and no series limits.
pub fn family_context(
    rt: &tokio::runtime::Runtime,
    telemetry: Arc<Telemetry>,
    publish_interval: Duration,
) -> Arc<FamilyContext> {
    let (aggregator, _) = rt
        .block_on(ractor::Actor::spawn(
            None,
            AggregatorActor,
            LimitSettings::default().max_family_self_metrics,
        ))
        .expect("aggregator starts");
    Arc::new(FamilyContext {
        aggregator,
        telemetry,
        publish_interval,
        flush_interval: Duration::from_secs(2),
        hibernate_after: None,
        set_window: Duration::from_secs(60),
        budget: Arc::new(SeriesBudget::new(usize::MAX, usize::MAX)),
    })
}

/// An empty family; `observer` says how an observer family is exposed (default quantiles
/// and buckets).
pub fn family(
    name: &str,
    kind: Kind,
    observer: ObserverType,
    ctx: &Arc<FamilyContext>,
) -> FamilyState {
    let meta = FamilyMeta {
        help: DEFAULT_HELP.into(),
        observer: ObserverSettings {
            observer_type: observer,
            ..ObserverSettings::default()
        },
        ttl: None,
    };
    let spec = FamilySpec {
        name: name.into(),
        kind,
        meta: Arc::new(meta),
    };
    FamilyState::new(spec, ctx.clone())
}

/// Series `i` of a family: `{series="<i>"}`.
pub fn series(i: usize) -> LabelSet {
    LabelSet::from_pairs(vec![("series".into(), i.to_string().into())])
}
