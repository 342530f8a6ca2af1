//! Where a line's samples go: its name mapped by the rules in force (or escaped when none
//! applies), its tags and the rule's labels made a label set, and so its series' slot in the
//! batch being gathered ([`Pending`]). Mapping results are cached by raw name, escaped names
//! too, and family settings per rule.

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Duration;

use super::pending::Pending;
use super::IngestConfig;
use crate::config::{ObserverSettings, ObserverType, QuantileSetting};
use crate::mapping::{
    MapCache, Mapped, Mapper, MetricClass, ObserverChoice, Outcome, RuleSettings,
};
use crate::names;
use crate::statsd::parse::{MetricType, RejectReason, Tags};
use crate::telemetry::Telemetry;
use crate::update::{FamilyMeta, LabelPairs, LabelSet, DEFAULT_HELP};

/// How many raw names a resolver remembers, per cache; past this a cache starts over, which
/// keeps memory bounded when an application sends endless distinct names.
const NAME_CACHE_LIMIT: usize = 100_000;

/// What a line's name and tags resolve to, for one class of sample.
#[derive(Clone, Copy, Debug)]
pub(super) enum Target {
    /// A series slot of [`Pending`], and the mapping rule's `scale`, if any.
    Series { series: u32, scale: Option<f64> },
    /// Dropped by an `action: drop` rule.
    Drop,
    /// Refused.
    Reject(RejectReason),
}

/// The family a name goes to, with the rule that mapped it, if any.
struct Destination {
    family: Arc<str>,
    meta: Arc<FamilyMeta>,
    mapped: Option<Arc<Mapped>>,
}

/// What resolving has counted since the batcher last took it.
#[derive(Debug, Default)]
pub(super) struct Tallies {
    /// Tags and labels dropped (see [`Resolver::tag_pairs`], [`Resolver::target`]).
    pub(super) tag_errors: u64,
    /// Names that matched no rule while a mapping file is in force.
    pub(super) unmapped: u64,
}

/// A batcher's way from a name and tags to a series slot, with its caches.
#[derive(Debug)]
pub(super) struct Resolver {
    telemetry: Arc<Telemetry>,
    config: Arc<IngestConfig>,
    /// The rules in force, refreshed from `config` at each receive.
    mapper: Arc<Mapper>,
    map_cache: MapCache,
    /// Unmapped raw name → family name, or `None` for a name that escapes to a reserved one.
    names: FxHashMap<Box<str>, Option<Arc<str>>>,
    /// Family settings per mapping rule (by the address of the rule's settings).
    metas: FxHashMap<usize, Arc<FamilyMeta>>,
    /// Counted since last taken.
    pub(super) tallies: Tallies,
}

impl Resolver {
    pub(super) fn new(telemetry: Arc<Telemetry>, config: Arc<IngestConfig>) -> Self {
        Resolver {
            telemetry,
            mapper: config.mapper.load_full(),
            map_cache: MapCache::new(config.cache.0, config.cache.1),
            config,
            names: FxHashMap::default(),
            metas: FxHashMap::default(),
            tallies: Tallies::default(),
        }
    }

    /// Picks up the rules of a reload, if there was one since the last call: true then, and
    /// every slot and line resolved with the old rules is to be forgotten.
    pub(super) fn reloaded(&mut self) -> bool {
        let current = self.config.mapper.load();
        if Arc::ptr_eq(&current, &self.mapper) {
            return false;
        }
        // Rule settings are new objects: forget the ones seen.
        self.mapper = current.clone();
        self.metas.clear();
        true
    }

    /// True while mapping rules are in force.
    pub(super) fn maps(&self) -> bool {
        !self.mapper.is_empty()
    }

    /// The mapping cache's hits and misses since it was made.
    pub(super) fn cache_counts(&self) -> (u64, u64) {
        (self.map_cache.hits(), self.map_cache.misses())
    }

    /// True when no name is cached.
    pub(super) fn is_empty(&self) -> bool {
        self.names.is_empty() && self.map_cache.is_empty()
    }

    /// Lets go of every cached name.
    pub(super) fn release(&mut self) {
        self.names = FxHashMap::default();
        self.map_cache.release();
    }

    /// Where samples of `class` with this name and these tags go: a series slot (its family's
    /// made if new), a drop, or a refusal.
    pub(super) fn target(
        &mut self,
        pending: &mut Pending,
        name: &str,
        tags: &[(Box<str>, Box<str>)],
        class: MetricClass,
    ) -> Target {
        let Destination {
            family,
            meta,
            mapped,
        } = match self.route(name, class) {
            Ok(destination) => destination,
            Err(target) => return target,
        };
        match self.labels(tags, mapped.as_deref(), class) {
            Ok(labels) => {
                let family = pending.family(&family, &meta);
                Target::Series {
                    series: pending.series(family, &labels),
                    scale: mapped.and_then(|m| m.settings.scale),
                }
            }
            Err(reason) => Target::Reject(reason),
        }
    }

    /// Where samples of `name` and `class` go: the mapping rule's family, or the escaped name;
    /// or the target that ends them there (a drop, a refusal).
    fn route(&mut self, name: &str, class: MetricClass) -> Result<Destination, Target> {
        let outcome = self.map_cache.get_or_map(&self.mapper, name, class);
        let (family, meta, mapped) = match outcome {
            Outcome::Drop => return Err(Target::Drop),
            Outcome::EmptyName => return Err(Target::Reject(RejectReason::EmptyName)),
            Outcome::Unmapped => {
                let Some(family) = self.escaped(name) else {
                    return Err(Target::Reject(RejectReason::ReservedName));
                };
                // With a mapping file, even one without rules, its defaults apply.
                let meta = if self.config.mapping_file {
                    self.tallies.unmapped += 1;
                    let defaults = self.mapper.defaults().clone();
                    self.meta_for(&defaults)
                } else {
                    self.config.default_meta.clone()
                };
                (family, meta, None)
            }
            Outcome::Mapped(mapped) => {
                if self.telemetry.is_reserved(&mapped.name) {
                    return Err(Target::Reject(RejectReason::ReservedName));
                }
                let meta = self.meta_for(&mapped.settings);
                (mapped.name.clone(), meta, Some(mapped))
            }
        };
        Ok(Destination {
            family,
            meta,
            mapped,
        })
    }

    fn meta_for(&mut self, settings: &Arc<RuleSettings>) -> Arc<FamilyMeta> {
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
    pub(super) fn tag_pairs(
        &mut self,
        tags: Tags<'_>,
        observer: bool,
    ) -> Result<LabelPairs, RejectReason> {
        if tags.is_empty() {
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
                _ => self.tallies.tag_errors += 1,
            }
        }
        Ok(pairs)
    }

    /// The series' labels: the tags, with the mapping rule's labels merged in (whose values,
    /// expanded from the name, are held to the same length limit as tags, and dropped and
    /// counted as tag errors when they hold a control character).
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
        // A value expanded from the name may hold what a tag value may not (see `Tags::iter`).
        let before = pairs.len();
        pairs.retain(|(name, value)| {
            !(class == MetricClass::Observer && observer_label(name)
                || value.bytes().any(|b| b.is_ascii_control()))
        });
        self.tallies.tag_errors += (before - pairs.len()) as u64;
        Ok(LabelSet::from_pairs(pairs))
    }
}

/// The class a mapping rule's `match_metric_type` sees; sets are exposed as gauges.
pub(super) fn class_of(metric_type: MetricType) -> MetricClass {
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
fn meta_from(settings: &RuleSettings, default_ttl: Option<Duration>) -> FamilyMeta {
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
            native_histogram_bucket_factor: histogram.native_bucket_factor,
            native_histogram_max_buckets: histogram.native_max_buckets,
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
