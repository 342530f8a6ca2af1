//! From received bytes to per-family batches: splits lines, parses them, routes each name
//! through the mapping rules (or escapes it when none applies), turns tags into labels and
//! groups the updates by family, so that each family actor gets one message per flush, never
//! one per line. Between flushes samples of one series are combined where that is exact
//! (counter increments summed, gauge sets and shifts folded), so a busy series costs its
//! family one update per flush. Routes are cached per batcher by raw name.
//!
//! Counting happens here too, locally, and is added to the shared telemetry once per flush.

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

use crate::config::{ObserverSettings, ObserverType, QuantileSetting, Settings};
use crate::family::{FamilyMeta, DEFAULT_HELP};
use crate::mapping::{self, MapCache, Mapped, Mapper, MetricClass, ObserverChoice, Outcome};
use crate::names;
use crate::statsd::parse::{self, Datum, MetricType, RejectReason, TagStyles, Tags};
use crate::telemetry::{LogLimiter, Telemetry};
use crate::update::{LabelPairs, LabelSet, Op, Update};

/// How many raw names a batcher remembers, per cache; past this a cache starts over, which
/// keeps memory bounded when an application sends endless distinct names.
const NAME_CACHE_LIMIT: usize = 100_000;

/// Rejected lines logged per second, per process.
static REJECT_LOG: LogLimiter = LogLimiter::new(10);

/// How lines become updates: shared by every listener.
#[derive(Debug)]
pub struct IngestConfig {
    /// Tag styles to parse.
    pub styles: TagStyles,
    /// Help, observer settings and TTL of unmapped families when there is no mapping file.
    pub default_meta: Arc<FamilyMeta>,
    /// The TTL of series whose mapping sets none; `None`: forever.
    pub default_ttl: Option<Duration>,
    /// Most tags on one line.
    pub max_tags: usize,
    /// Most bytes in a label name or value.
    pub max_label_bytes: usize,
    /// A mapping file is configured: unmapped names take its defaults and are counted.
    pub mapping_file: bool,
    /// The mapping rules; a reload swaps them whole, and each batcher picks the new ones up at
    /// its next receive.
    pub mapper: ArcSwap<Mapper>,
}

impl IngestConfig {
    /// Lines parsed and limited as `settings` say, names mapped with `mapper`.
    pub fn new(settings: &Settings, mapper: Mapper) -> Self {
        let default_ttl = Some(settings.statsd.default_ttl).filter(|ttl| !ttl.is_zero());
        IngestConfig {
            styles: settings.statsd.tag_styles(),
            default_meta: Arc::new(FamilyMeta {
                help: DEFAULT_HELP.into(),
                observer: settings.observer.clone(),
                ttl: default_ttl,
            }),
            default_ttl,
            max_tags: settings.limits.max_tags_per_line,
            max_label_bytes: settings.limits.max_label_bytes,
            mapping_file: !settings.statsd.mapping_config.is_empty(),
            mapper: ArcSwap::from_pointee(mapper),
        }
    }
}

/// The updates of one family since the last flush, with what the family is born with.
#[derive(Debug)]
pub struct Batch {
    /// Help and observer settings, used if the family does not exist yet.
    pub meta: Arc<FamilyMeta>,
    /// The updates, in arrival order (a combined update where its first sample arrived).
    pub updates: Vec<Update>,
    /// Where each series' latest counter or gauge update is in `updates`.
    latest: FxHashMap<LabelSet, usize>,
}

impl Batch {
    /// An empty batch of a family born with `meta`.
    pub fn new(meta: Arc<FamilyMeta>) -> Self {
        Batch {
            meta,
            updates: Vec::new(),
            latest: FxHashMap::default(),
        }
    }

    /// Adds one sample's operation on the series `labels`: combined into that series' latest
    /// update when [`Op::combine`] allows, appended otherwise. True when it was appended.
    pub fn push(&mut self, labels: &LabelSet, op: Op) -> bool {
        let combinable = matches!(op, Op::Add(_) | Op::Set(_) | Op::Shift(_));
        if combinable {
            if let Some(&i) = self.latest.get(labels) {
                let update = &mut self.updates[i];
                if let Some(combined) = update.op.combine(op) {
                    update.op = combined;
                    update.samples += 1;
                    return false;
                }
            }
            self.latest.insert(labels.clone(), self.updates.len());
        }
        self.updates.push(Update {
            labels: labels.clone(),
            op,
            samples: 1,
        });
        true
    }

    /// How many samples the batch's updates stand for.
    pub fn samples(&self) -> u64 {
        self.updates.iter().map(|u| u.samples).sum()
    }
}

/// Where the samples of one name and class go.
#[derive(Clone, Debug)]
enum Routing {
    /// To this family, with the rule that mapped it, if any.
    To {
        family: Arc<str>,
        meta: Arc<FamilyMeta>,
        mapped: Option<Arc<Mapped>>,
    },
    /// Dropped by an `action: drop` rule.
    Drop,
    /// Refused.
    Reject(RejectReason),
}

/// Accumulates the updates of one receive batch (one or more datagrams, or one TCP read).
#[derive(Debug)]
pub struct Batcher {
    telemetry: Arc<Telemetry>,
    config: Arc<IngestConfig>,
    /// The rules in force, refreshed from `config` at each receive.
    mapper: Arc<Mapper>,
    map_cache: MapCache,
    /// Unmapped raw name → family name, or `None` for a name that escapes to a reserved one.
    names: FxHashMap<Box<str>, Option<Arc<str>>>,
    /// Family settings per mapping rule (by the address of the rule's settings).
    metas: FxHashMap<usize, Arc<FamilyMeta>>,
    pending: FxHashMap<Arc<str>, Batch>,
    /// Updates in `pending`, after combining.
    held: usize,
    counts: Counts,
    /// The map cache's hit and miss counts already added to the telemetry.
    reported_cache: (u64, u64),
}

#[derive(Debug, Default, PartialEq)]
struct Counts {
    lines: u64,
    samples: u64,
    tag_errors: u64,
    /// DogStatsD events, then service checks.
    events: [u64; 2],
    unmapped: u64,
    dropped: u64,
    rejected: [u64; RejectReason::ALL.len()],
}

impl Counts {
    fn reject(&mut self, reason: RejectReason, raw: &[u8]) {
        self.rejected[reason.index()] += 1;
        if let Some(suppressed) = REJECT_LOG.allow() {
            debug!(
                %reason,
                line = %String::from_utf8_lossy(&raw[..raw.len().min(256)]),
                suppressed,
                "rejected StatsD line"
            );
        }
    }
}

/// The class a mapping rule's `match_metric_type` sees; sets are exposed as gauges.
fn class_of(metric_type: MetricType) -> MetricClass {
    match metric_type {
        MetricType::Counter => MetricClass::Counter,
        MetricType::Gauge | MetricType::Set => MetricClass::Gauge,
        MetricType::Timer | MetricType::Histogram | MetricType::Distribution => {
            MetricClass::Observer
        }
    }
}

/// A family's settings from a mapping rule's (or the mapping defaults'); `default_ttl` where
/// the mapping sets no TTL.
fn meta_from(settings: &mapping::Settings, default_ttl: Option<Duration>) -> FamilyMeta {
    let observer = match &*settings.observer {
        ObserverChoice::Summary(summary) => ObserverSettings {
            observer_type: ObserverType::Summary,
            quantiles: summary
                .quantiles
                .iter()
                .map(|q| QuantileSetting {
                    quantile: q.quantile,
                    error: q.error,
                })
                .collect(),
            ..ObserverSettings::default()
        },
        ObserverChoice::Histogram(histogram) => ObserverSettings {
            observer_type: ObserverType::Histogram,
            buckets: histogram.buckets.clone(),
            ..ObserverSettings::default()
        },
    };
    FamilyMeta {
        help: settings.help.clone().unwrap_or_else(|| DEFAULT_HELP.into()),
        observer,
        ttl: settings.ttl.filter(|ttl| !ttl.is_zero()).or(default_ttl),
    }
}

/// True for a label an observer's series carry themselves.
fn observer_label(name: &str) -> bool {
    name == "quantile" || name == "le"
}

impl Batcher {
    /// An empty batcher reporting to `telemetry`.
    pub fn new(telemetry: Arc<Telemetry>, config: Arc<IngestConfig>) -> Self {
        Batcher {
            telemetry,
            mapper: config.mapper.load_full(),
            config,
            map_cache: MapCache::new(NAME_CACHE_LIMIT),
            names: FxHashMap::default(),
            metas: FxHashMap::default(),
            pending: FxHashMap::default(),
            held: 0,
            counts: Counts::default(),
            reported_cache: (0, 0),
        }
    }

    /// Adds every line of a datagram (or of a chunk of complete TCP lines).
    pub fn ingest(&mut self, datagram: &[u8]) {
        let current = self.config.mapper.load();
        if !Arc::ptr_eq(&current, &self.mapper) {
            // A reload: rule settings are new objects, so forget the ones seen.
            self.mapper = current.clone();
            self.metas.clear();
        }
        drop(current);
        for line in parse::lines(datagram) {
            self.ingest_line(line);
        }
    }

    /// Adds one line (without its newline).
    pub fn ingest_line(&mut self, raw: &[u8]) {
        self.counts.lines += 1;
        let line = match parse::parse(raw, self.config.styles) {
            Ok(Datum::Metric(line)) => line,
            Ok(Datum::Event) => return self.counts.events[0] += 1,
            Ok(Datum::ServiceCheck) => return self.counts.events[1] += 1,
            Err(reason) => return self.counts.reject(reason, raw),
        };
        let tags = match self.tag_pairs(line.tags, line.observes()) {
            Ok(tags) => tags,
            Err(reason) => return self.counts.reject(reason, raw),
        };
        // Samples of one line share a class, except in the legacy multi-type form: route and
        // label once per class.
        let mut routed: Option<(MetricClass, Routing, LabelSet)> = None;
        for sample in line.samples() {
            let sample = match sample {
                Ok(sample) => sample,
                Err(reason) => {
                    self.counts.reject(reason, raw);
                    continue;
                }
            };
            let class = class_of(sample.metric_type);
            if routed.as_ref().is_none_or(|(c, _, _)| *c != class) {
                let mut routing = self.route(&line.name, class);
                let mut labels = LabelSet::default();
                if let Routing::To { mapped, .. } = &routing {
                    match self.labels(&tags, mapped.as_deref(), class) {
                        Ok(set) => labels = set,
                        Err(reason) => routing = Routing::Reject(reason),
                    }
                }
                routed = Some((class, routing, labels));
            }
            let Some((_, routing, labels)) = &routed else {
                continue;
            };
            match routing {
                Routing::Reject(reason) => self.counts.reject(*reason, raw),
                Routing::Drop => self.counts.dropped += 1,
                Routing::To {
                    family,
                    meta,
                    mapped,
                } => {
                    let mut op = Op::from_sample(&sample);
                    if let Some(scale) = mapped.as_ref().and_then(|m| m.settings.scale) {
                        op = op.scaled(scale);
                        // A negative scale must not make a counter go down.
                        if matches!(op, Op::Add(v) if v < 0.0) {
                            self.counts.reject(RejectReason::NegativeCounter, raw);
                            continue;
                        }
                    }
                    let batch = self
                        .pending
                        .entry(family.clone())
                        .or_insert_with(|| Batch::new(meta.clone()));
                    if batch.push(labels, op) {
                        self.held += 1;
                    }
                    self.counts.samples += 1;
                }
            }
        }
    }

    /// Where samples of `name` and `class` go: the mapping rule's family, or the escaped name.
    fn route(&mut self, name: &str, class: MetricClass) -> Routing {
        let outcome = self.map_cache.get_or_map(&self.mapper, name, class);
        let (family, meta, mapped) = match outcome {
            Outcome::Drop => return Routing::Drop,
            Outcome::EmptyName => return Routing::Reject(RejectReason::EmptyName),
            Outcome::Unmapped => {
                let Some(family) = self.escaped(name) else {
                    return Routing::Reject(RejectReason::ReservedName);
                };
                // With a mapping file, even one without rules, its defaults apply.
                let meta = if self.config.mapping_file {
                    self.counts.unmapped += 1;
                    let defaults = self.mapper.defaults().clone();
                    self.meta_for(&defaults)
                } else {
                    self.config.default_meta.clone()
                };
                (family, meta, None)
            }
            Outcome::Mapped(mapped) => {
                if self.telemetry.is_reserved(&mapped.name) {
                    return Routing::Reject(RejectReason::ReservedName);
                }
                let meta = self.meta_for(&mapped.settings);
                (mapped.name.clone(), meta, Some(mapped))
            }
        };
        Routing::To {
            family,
            meta,
            mapped,
        }
    }

    fn meta_for(&mut self, settings: &Arc<mapping::Settings>) -> Arc<FamilyMeta> {
        self.metas
            .entry(Arc::as_ptr(settings) as usize)
            .or_insert_with(|| Arc::new(meta_from(settings, self.config.default_ttl)))
            .clone()
    }

    /// The family name of an unmapped StatsD name: escaped, cached, `None` when reserved.
    fn escaped(&mut self, raw: &str) -> Option<Arc<str>> {
        if let Some(found) = self.names.get(raw) {
            return found.clone();
        }
        if self.names.len() >= NAME_CACHE_LIMIT {
            self.names.clear();
        }
        let escaped = names::escape(raw);
        let family = (!self.telemetry.is_reserved(&escaped)).then(|| Arc::from(&*escaped));
        self.names.insert(raw.into(), family.clone());
        family
    }

    /// Label pairs from tags. A tag that cannot be a label is dropped and counted: no value,
    /// no name, a name Prometheus reserves (`__…`), or on an observer the `quantile` or `le`
    /// label its summary or histogram series carry. Too many tags, or one too long, reject
    /// the line.
    fn tag_pairs(&mut self, tags: Tags<'_>, observer: bool) -> Result<LabelPairs, RejectReason> {
        if tags == Tags::None {
            return Ok(Vec::new());
        }
        let mut pairs = Vec::new();
        for (i, tag) in tags.iter().enumerate() {
            if i >= self.config.max_tags {
                return Err(RejectReason::TooManyTags);
            }
            if let Ok((key, value)) = tag {
                if key.len().max(value.len()) > self.config.max_label_bytes {
                    return Err(RejectReason::LabelTooLong);
                }
            }
            let label = tag.ok().map(|(key, value)| (names::escape(key), value));
            match label {
                Some((key, value))
                    if !(key.starts_with("__") || observer && observer_label(&key)) =>
                {
                    pairs.push((key.into(), value.into()));
                }
                _ => self.counts.tag_errors += 1,
            }
        }
        Ok(pairs)
    }

    /// The series' labels: the tags, with the mapping rule's labels merged in (whose values,
    /// expanded from the name, are held to the same length limit as tags).
    fn labels(
        &mut self,
        tags: &[(Box<str>, Box<str>)],
        mapped: Option<&Mapped>,
        class: MetricClass,
    ) -> Result<LabelSet, RejectReason> {
        let Some(mapped) = mapped.filter(|m| !m.labels.is_empty()) else {
            return Ok(LabelSet::from_pairs(tags.to_vec()));
        };
        let limit = self.config.max_label_bytes;
        if mapped
            .labels
            .iter()
            .any(|(k, v)| k.len().max(v.len()) > limit)
        {
            return Err(RejectReason::LabelTooLong);
        }
        let mut pairs = tags.to_vec();
        mapped.merge_labels(&mut pairs);
        if class == MetricClass::Observer {
            let before = pairs.len();
            pairs.retain(|(name, _)| !observer_label(name));
            self.counts.tag_errors += (before - pairs.len()) as u64;
        }
        Ok(LabelSet::from_pairs(pairs))
    }

    /// Counts a datagram the listener refused whole (over `limits.max_datagram_bytes`).
    pub fn reject_datagram(&mut self, raw: &[u8]) {
        self.counts.reject(RejectReason::DatagramTooLarge, raw);
    }

    /// Counts a line the listener refused before parsing (e.g. over-long on TCP).
    pub fn reject_unparsed(&mut self, reason: RejectReason, raw: &[u8]) {
        self.counts.lines += 1;
        self.counts.reject(reason, raw);
    }

    /// Updates held for the next flush, after combining.
    pub fn held(&self) -> usize {
        self.held
    }

    /// True when something was read since the last flush (held updates, or only counts).
    pub fn has_pending(&self) -> bool {
        self.held > 0 || self.counts != Counts::default()
    }

    /// Takes the batches gathered so far, one per family, and adds their counts to the
    /// shared telemetry.
    pub fn take(&mut self) -> impl Iterator<Item = (Arc<str>, Batch)> + '_ {
        self.flush_counts();
        self.held = 0;
        self.pending
            .drain()
            .filter(|(_, batch)| !batch.updates.is_empty())
    }

    fn flush_counts(&mut self) {
        let counts = std::mem::take(&mut self.counts);
        // The map cache counts since it was made; report what is new.
        let cache = (self.map_cache.hits(), self.map_cache.misses());
        let (hits, misses) = self.reported_cache;
        self.reported_cache = cache;
        let t = &self.telemetry;
        t.mapping_cache_hits.inc_by(cache.0.saturating_sub(hits));
        t.mapping_cache_misses
            .inc_by(cache.1.saturating_sub(misses));
        t.samples.inc_by(counts.samples);
        t.tag_errors.inc_by(counts.tag_errors);
        t.events(counts.events[0], counts.events[1]);
        t.mapping_unmapped.inc_by(counts.unmapped);
        t.mapping_dropped.inc_by(counts.dropped);
        for (reason, n) in RejectReason::ALL.iter().zip(counts.rejected) {
            if n > 0 {
                t.rejected(*reason, n);
            }
        }
        // Lines last: a scrape that sees them sees what became of them too.
        t.lines.inc_by(counts.lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(input: &[u8]) -> (Vec<(String, Vec<Update>)>, Arc<Telemetry>) {
        let telemetry = Arc::new(Telemetry::new());
        let config = IngestConfig::new(&Settings::default(), Mapper::default());
        let mut b = Batcher::new(telemetry.clone(), Arc::new(config));
        b.ingest(input);
        let mut out: Vec<_> = b.take().map(|(k, v)| (k.to_string(), v.updates)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        (out, telemetry)
    }

    #[test]
    fn groups_updates_by_escaped_family() {
        let (got, t) = batches(b"a.b:1|c\nq:+2|g|#k:v\na-b:3|c|#x:y,flag\nbad\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "a_b");
        assert_eq!(got[0].1.len(), 2);
        assert_eq!(got[0].1[0].op, Op::Add(1.0));
        assert_eq!(got[0].1[1].labels.iter().collect::<Vec<_>>(), [("x", "y")]);
        assert_eq!(got[1].1[0].op, Op::Shift(2.0));
        assert_eq!(t.lines.get(), 4);
        assert_eq!(t.samples.get(), 3);
        assert_eq!(t.tag_errors.get(), 1);
    }

    #[test]
    fn samples_of_a_series_combine_until_the_flush() {
        let (got, t) = batches(
            b"c:1|c\nc:2|c|@0.5\nc:1|c|#k:v\ng:5|g\ng:+2|g\ng:1|c\ng:-1|g\nt:1|ms\nt:1|ms\nc:3|c",
        );
        let ops = |i: usize| {
            got[i]
                .1
                .iter()
                .map(|u| (u.op, u.samples))
                .collect::<Vec<_>>()
        };
        assert_eq!(got[0].0, "c");
        assert_eq!(ops(0), [(Op::Add(8.0), 3), (Op::Add(1.0), 1)]);
        // The counter sample in the gauge family stays apart (and is refused there).
        assert_eq!(
            ops(1),
            [(Op::Set(7.0), 2), (Op::Add(1.0), 1), (Op::Shift(-1.0), 1)]
        );
        let observe = Op::Observe {
            value: 0.001,
            count: 1,
        };
        assert_eq!(ops(2), [(observe, 1), (observe, 1)]);
        assert_eq!(t.samples.get(), 10);
    }

    #[test]
    fn packed_values_become_one_update_each() {
        let (got, _) = batches(b"lat:1:2:3|ms|#k:v");
        let ops: Vec<_> = got[0].1.iter().map(|u| u.op).collect();
        assert_eq!(
            ops,
            [0.001, 0.002, 0.003].map(|value| Op::Observe { value, count: 1 })
        );
        assert!(got[0].1.iter().all(|u| u.labels.iter().eq([("k", "v")])));
    }

    #[test]
    fn tags_that_cannot_be_labels_are_dropped_and_counted() {
        let (got, t) = batches(b"t:1|ms|#quantile:x,le:1,__name__:y,ok:1\nc:1|c|#quantile:x,le:1");
        let labels = |i: usize| got[i].1[0].labels.iter().collect::<Vec<_>>();
        assert_eq!(got[0].0, "c");
        assert_eq!(labels(0), [("le", "1"), ("quantile", "x")]);
        assert_eq!(labels(1), [("ok", "1")]);
        assert_eq!(t.tag_errors.get(), 3);
    }

    #[test]
    fn reserved_names_are_rejected() {
        let (got, t) = batches(b"tallyd.lines.total:1|c\nprocess_open_fds:1|g");
        assert!(got.is_empty());
        let families = t.gather();
        let rejected = families
            .iter()
            .find(|f| f.name() == "tallyd_lines_rejected_total")
            .unwrap();
        let reserved = rejected
            .get_metric()
            .iter()
            .find(|m| m.get_label()[0].value() == "reserved_name")
            .unwrap();
        assert_eq!(reserved.get_counter().get_value(), 2.0);
    }
}
