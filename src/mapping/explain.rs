//! How a StatsD name maps, said in full (`tallyd --explain NAME[:TYPE]`): the rule that
//! matched, if one did, and what tallyd makes of the name with it: the metric, its labels and
//! type, the TTL, the observer and its options, or why the sample would be refused. One JSON
//! object per name.

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

use super::{Mapper, MetricClass, ObserverChoice, Outcome, RuleSettings};
use crate::config::{ObserverSettings, ObserverType};
use crate::names;

/// What the caller's settings add to the mapping file: where nothing in the file applies,
/// tallyd's own observer and TTL.
#[derive(Clone, Copy, Debug)]
pub struct Fallback<'a> {
    /// A mapping file is in force: unmapped names take its defaults, not `observer`.
    pub mapping_file: bool,
    /// `[observer]`, for unmapped names without a mapping file.
    pub observer: &'a ObserverSettings,
    /// `statsd.default_ttl`, where the mapping sets none.
    pub default_ttl: Option<Duration>,
}

/// The explanation of one name, as `--explain` prints it.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// The StatsD name asked about.
    pub name: String,
    /// The StatsD type asked about: `c`, `g`, `ms`, `h`, `d` or `s`.
    #[serde(rename = "type")]
    pub statsd_type: String,
    /// The rule that matched, or `null`.
    pub rule: Option<RuleJson>,
    /// `map` or `drop`.
    pub action: &'static str,
    /// Why tallyd would refuse the sample (`empty_name`, `reserved_name`), if it would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<&'static str>,
    /// The Prometheus metric name, unless dropped or refused for an empty name.
    pub metric: Option<String>,
    /// The labels the rule adds (tags add theirs).
    pub labels: BTreeMap<String, String>,
    /// `counter`, `gauge`, `summary` or `histogram`.
    pub metric_type: Option<&'static str>,
    /// How long an idle series is kept (`10m`), or `null`: forever.
    pub ttl: Option<String>,
    /// The rule's `help`.
    pub help: Option<String>,
    /// The rule's `scale`.
    pub scale: Option<f64>,
    /// For a timer, histogram or distribution: what it becomes.
    pub observer: Option<ObserverJson>,
}

/// The rule that matched.
#[derive(Debug, Serialize)]
pub struct RuleJson {
    /// Its position in `mappings`, from 0.
    pub index: usize,
    /// Its `match`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// `glob` or `regex`.
    pub match_type: &'static str,
}

/// An observer's type and options.
#[derive(Debug, Serialize)]
pub struct ObserverJson {
    /// `summary` or `histogram`.
    #[serde(rename = "type")]
    pub observer_type: &'static str,
    /// A summary's quantiles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<Vec<f64>>,
    /// A histogram's bucket bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<f64>>,
    /// A histogram's native bucket factor (1 or less: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_histogram_bucket_factor: Option<f64>,
    /// A histogram's most native buckets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_histogram_max_buckets: Option<u32>,
}

/// The class a StatsD type is mapped as, and whether it observes.
fn class_of(statsd_type: &str) -> Option<MetricClass> {
    match statsd_type {
        "c" => Some(MetricClass::Counter),
        "g" | "s" => Some(MetricClass::Gauge),
        "ms" | "h" | "d" => Some(MetricClass::Observer),
        _ => None,
    }
}

/// `NAME[:TYPE]` (TYPE `c` when left out) explained; an error names what is wrong with it.
pub fn explain(
    mapper: &Mapper,
    fallback: Fallback<'_>,
    is_reserved: impl Fn(&str) -> bool,
    asked: &str,
) -> Result<Explanation, String> {
    let (name, statsd_type) = asked.split_once(':').unwrap_or((asked, "c"));
    let class = class_of(statsd_type).ok_or_else(|| {
        format!("{asked:?}: the type {statsd_type:?} is not one of c, g, ms, h, d, s")
    })?;
    if name.is_empty() {
        return Err(format!("{asked:?}: the name is empty"));
    }
    let (rule, outcome) = mapper.explain(name, class);
    let mut out = Explanation {
        name: name.to_owned(),
        statsd_type: statsd_type.to_owned(),
        rule: rule.map(|r| RuleJson {
            index: r.index,
            pattern: r.pattern.to_owned(),
            match_type: r.match_type,
        }),
        action: "map",
        refused: None,
        metric: None,
        labels: BTreeMap::new(),
        metric_type: None,
        ttl: None,
        help: None,
        scale: None,
        observer: None,
    };
    let settings = match &outcome {
        Outcome::Drop => {
            out.action = "drop";
            return Ok(out);
        }
        Outcome::EmptyName => {
            out.refused = Some("empty_name");
            return Ok(out);
        }
        Outcome::Unmapped => {
            out.metric = Some(names::escape(name).into_owned());
            fallback.mapping_file.then(|| mapper.defaults().clone())
        }
        Outcome::Mapped(mapped) => {
            out.metric = Some(mapped.name.to_string());
            out.labels = mapped
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Some(mapped.settings.clone())
        }
    };
    if out.metric.as_deref().is_some_and(&is_reserved) {
        out.refused = Some("reserved_name");
    }
    let observer = describe(settings.as_deref(), fallback.observer);
    out.metric_type = Some(match class {
        MetricClass::Counter => "counter",
        MetricClass::Gauge => "gauge",
        MetricClass::Observer => observer.observer_type,
    });
    if class == MetricClass::Observer {
        out.observer = Some(observer);
    }
    let ttl = settings
        .as_ref()
        .and_then(|s| s.ttl)
        .or(fallback.default_ttl);
    out.ttl = ttl.map(|t| humantime_serde::re::humantime::format_duration(t).to_string());
    out.help = settings
        .as_ref()
        .and_then(|s| s.help.as_deref().map(str::to_owned));
    out.scale = settings.as_ref().and_then(|s| s.scale);
    Ok(out)
}

/// The observer a rule (or the file's defaults) makes, or `[observer]` without a file.
fn describe(settings: Option<&RuleSettings>, own: &ObserverSettings) -> ObserverJson {
    let summary = |quantiles: Vec<f64>| ObserverJson {
        observer_type: "summary",
        quantiles: Some(quantiles),
        buckets: None,
        native_histogram_bucket_factor: None,
        native_histogram_max_buckets: None,
    };
    let histogram = |buckets: Vec<f64>, factor: f64, max: u32| ObserverJson {
        observer_type: "histogram",
        quantiles: None,
        buckets: Some(buckets),
        native_histogram_bucket_factor: Some(factor),
        native_histogram_max_buckets: Some(max),
    };
    match settings.map(|s| &*s.observer) {
        Some(ObserverChoice::Summary(s)) => {
            summary(s.quantiles.iter().map(|q| q.quantile).collect())
        }
        Some(ObserverChoice::Histogram(h)) => histogram(
            h.buckets.clone(),
            h.native_bucket_factor,
            h.native_max_buckets,
        ),
        None => match own.observer_type {
            ObserverType::Summary => summary(own.quantiles.iter().map(|q| q.quantile).collect()),
            ObserverType::Histogram => histogram(
                own.buckets.clone(),
                own.native_histogram_bucket_factor,
                own.native_histogram_max_buckets,
            ),
        },
    }
}
