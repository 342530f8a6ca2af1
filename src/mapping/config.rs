//! Reading the file: its shape as serde types (every struct denies unknown keys), the checks
//! serde cannot express, and the resolution of every rule against `defaults`, as
//! statsd_exporter's `InitFromYAMLString` resolves them. The keys statsd_exporter 0.30 still
//! reads though it deprecated them (`timer_type`, and `buckets` and `quantiles` outside the
//! observer options) mean what they mean there; outside `defaults`, a warning says where.
//!
//! Submodules: `duration` (Go's duration syntax), `defaults` (what `defaults` resolves to, and
//! each rule's observer resolved against it), `rule` (one `mappings` entry).

mod defaults;
mod duration;
mod rule;

use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::glob::GlobSet;
use super::{next_id, Mapper, MappingError, MetricClass, RuleSettings};
use crate::config::ObserverType;
use crate::yaml::{self, Errors, Problem};
use defaults::{non_empty, Shared};
use duration::GoDuration;
use rule::{compile_rule, Matcher};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: Option<RawDefaults>,
    #[serde(default)]
    mappings: Option<Vec<Spanned<RawMapping>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    observer_type: Option<ObserverType>,
    /// Deprecated: `observer_type`, where that is not given.
    timer_type: Option<ObserverType>,
    /// Deprecated: `histogram_options.buckets`, where those are not given.
    buckets: Option<Spanned<Vec<f64>>>,
    /// Deprecated: `summary_options.quantiles`, where those are not given.
    quantiles: Option<Spanned<Vec<RawQuantile>>>,
    match_type: Option<MatchType>,
    glob_disable_ordering: Option<bool>,
    ttl: Option<GoDuration>,
    histogram_options: Option<Spanned<RawHistogram>>,
    summary_options: Option<Spanned<RawSummary>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    #[serde(rename = "match")]
    pattern: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    labels: Option<Spanned<BTreeMap<String, String>>>,
    honor_labels: Option<bool>,
    observer_type: Option<ObserverType>,
    /// Deprecated: `observer_type`, where that is not given.
    timer_type: Option<ObserverType>,
    /// Deprecated: `histogram_options.buckets`, for a histogram.
    buckets: Option<Spanned<Vec<f64>>>,
    /// Deprecated: `summary_options.quantiles`, for a summary.
    quantiles: Option<Spanned<Vec<RawQuantile>>>,
    match_type: Option<MatchType>,
    help: Option<String>,
    action: Option<RawAction>,
    match_metric_type: Option<MatchMetricType>,
    ttl: Option<GoDuration>,
    summary_options: Option<Spanned<RawSummary>>,
    histogram_options: Option<Spanned<RawHistogram>>,
    scale: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistogram {
    buckets: Option<Vec<f64>>,
    native_histogram_bucket_factor: Option<f64>,
    native_histogram_max_buckets: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSummary {
    quantiles: Option<Vec<RawQuantile>>,
    max_age: Option<GoDuration>,
    age_buckets: Option<u32>,
    buf_cap: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuantile {
    quantile: f64,
    /// Go reads a missing `error` as 0.
    #[serde(default)]
    error: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum MatchType {
    Glob,
    Regex,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawAction {
    Map,
    Drop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum MatchMetricType {
    Counter,
    Gauge,
    #[serde(alias = "timer")]
    Observer,
}

impl From<MatchMetricType> for MetricClass {
    fn from(t: MatchMetricType) -> MetricClass {
        match t {
            MatchMetricType::Counter => MetricClass::Counter,
            MatchMetricType::Gauge => MetricClass::Gauge,
            MatchMetricType::Observer => MetricClass::Observer,
        }
    }
}

/// Deserializes the document, keeping the key path and location of the first error.
fn parse(text: &str, errors: &Errors<'_>) -> Result<RawFile, Problem> {
    yaml::parse(text, key_path).map_err(|failure| {
        let mut problem = errors.failure(&failure);
        if let serde_saphyr::Error::DuplicateMappingKey { key: dup, .. } = &*failure.error {
            problem.message = match dup {
                Some(dup) => {
                    problem.key = yaml::join(&problem.key, dup);
                    format!("`{dup}` is given twice")
                }
                None => "a key is given twice".to_owned(),
            };
        }
        problem
    })
}

/// The key path as the user wrote it (`mappings[2].labels`), without the `value` level that
/// [`Spanned`] adds inside each value it wraps.
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut parts: Vec<Part> = Vec::new();
    // Each wrapper adds one `value` level; a second one at the same place is a real key.
    let mut unwrapped_at = None;
    for segment in path {
        match segment {
            Segment::Map { key }
                if key == "value" && unwrapped_at != Some(parts.len()) && is_spanned(&parts) =>
            {
                unwrapped_at = Some(parts.len());
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                parts.push(Part::Key(key.clone()));
            }
            Segment::Seq { index } => parts.push(Part::Index(*index)),
            Segment::Unknown => parts.push(Part::Key("?".to_owned())),
        }
    }
    // A trailing `?` stands for a key that was being read when the error struck.
    while matches!(parts.last(), Some(Part::Key(key)) if key == "?") {
        parts.pop();
    }
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&key);
            }
            Part::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

enum Part {
    Key(String),
    Index(usize),
}

/// Whether the value at `parts` is declared as a [`Spanned`] in the raw types above.
fn is_spanned(parts: &[Part]) -> bool {
    const IN_MAPPING: [&str; 6] = [
        "match",
        "name",
        "labels",
        "scale",
        "histogram_options",
        "summary_options",
    ];
    match parts {
        [Part::Key(list), Part::Index(_)] => list == "mappings",
        [Part::Key(list), Part::Index(_), Part::Key(field)] => {
            list == "mappings" && IN_MAPPING.contains(&field.as_str())
        }
        [Part::Key(defaults), Part::Key(field)] => {
            defaults == "defaults" && (field == "histogram_options" || field == "summary_options")
        }
        _ => false,
    }
}

impl RawDefaults {
    /// The deprecated keys, as statsd_exporter 0.30 reads them in `defaults` (silently):
    /// `timer_type` where `observer_type` is not given, `buckets` and `quantiles` where the
    /// observer options give none.
    fn adopt_deprecated(&mut self) {
        self.observer_type = self.observer_type.or(self.timer_type.take());
        if let Some(buckets) = self.buckets.take() {
            let histogram = self.histogram_options.get_or_insert_with(|| {
                Spanned::new(RawHistogram::default(), buckets.referenced, buckets.defined)
            });
            if non_empty(&histogram.value.buckets).is_none() {
                histogram.value.buckets = Some(buckets.value);
            }
        }
        if let Some(quantiles) = self.quantiles.take() {
            let summary = self.summary_options.get_or_insert_with(|| {
                Spanned::new(
                    RawSummary::default(),
                    quantiles.referenced,
                    quantiles.defined,
                )
            });
            if non_empty(&summary.value.quantiles).is_none() {
                summary.value.quantiles = Some(quantiles.value);
            }
        }
    }
}

/// An empty mapper: no rules, statsd_exporter's defaults.
pub(super) fn empty() -> Mapper {
    compile("", Path::new("")).expect("an empty file is valid")
}

/// Parses, checks and compiles a mapping file.
pub(super) fn compile(text: &str, origin: &Path) -> Result<Mapper, MappingError> {
    let errors = Errors::new(origin);
    let raw = parse(text, &errors)?;
    let mut defaults = raw.defaults.unwrap_or_default();
    defaults.adopt_deprecated();
    let shared = Shared::resolve(&defaults, &errors)?;
    let mut warnings = Vec::new();
    let mut rules = Vec::new();
    let mut globs = GlobSet::new(!defaults.glob_disable_ordering.unwrap_or(false));
    let mut regexes = Vec::new();
    for (index, item) in raw.mappings.unwrap_or_default().into_iter().enumerate() {
        let (rule, matcher) = compile_rule(index, item, &shared, &errors, &mut warnings)?;
        match matcher {
            Matcher::Glob(glob) => globs.insert(glob, index as u32, rule.class),
            Matcher::Regex(regex) => regexes.push((index, regex)),
        }
        rules.push(rule);
    }
    Ok(Mapper {
        id: next_id(),
        warnings,
        rules,
        globs,
        regexes,
        defaults: Arc::new(RuleSettings {
            help: None,
            ttl: shared.ttl,
            observer: match shared.kind {
                ObserverType::Summary => shared.summary.clone(),
                ObserverType::Histogram => shared.histogram.clone(),
            },
            honor_labels: false,
            scale: None,
        }),
    })
}
