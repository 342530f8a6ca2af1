//! Reading the file: its shape as serde types (every struct denies unknown keys, which also
//! rejects the deprecated ones), the checks serde cannot express, and the resolution of every
//! rule against `defaults`, as statsd_exporter's `InitFromYAMLString` resolves them.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::glob::{Glob, GlobSet};
use super::template::{self, Template, Token};
use super::{
    next_id, Action, HistogramOptions, Mapper, MappingError, MetricClass, ObserverChoice, Quantile,
    Rule, Settings, SummaryOptions,
};
use crate::yaml::{self, Errors, Problem};

/// Prometheus's default histogram buckets (client_golang's `DefBuckets`).
const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// statsd_exporter's default summary quantiles.
const DEFAULT_QUANTILES: [Quantile; 3] = [
    Quantile {
        quantile: 0.5,
        error: 0.05,
    },
    Quantile {
        quantile: 0.9,
        error: 0.01,
    },
    Quantile {
        quantile: 0.99,
        error: 0.001,
    },
];

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
enum ObserverType {
    Summary,
    Histogram,
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

/// A Go duration (`ttl: 1h30m`, `max_age: 500ms`), as statsd_exporter reads `time.Duration`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct GoDuration(Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = GoDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `90s`, `10m` or `1h30m`")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<GoDuration, E> {
                parse_go_duration(s).map(GoDuration).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<GoDuration, E> {
                // Go would read a bare number as nanoseconds, which is never what is meant.
                if n == 0 {
                    Ok(GoDuration(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "`{n}` has no unit; write e.g. `{n}s` (statsd_exporter would read it as \
                         {n} nanoseconds)"
                    )))
                }
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<GoDuration, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom("a duration may not be negative")),
                }
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// Parses Go's `time.ParseDuration` syntax: `0`, or one or more decimal numbers (with an
/// optional fraction) each followed by a unit: `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`.
/// Negative durations are refused.
pub(super) fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration such as `90s`, `10m`, `1h30m` or `500ms`");
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(len)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let unit_len = after
            .char_indices()
            .find(|&(_, c)| c.is_ascii_digit() || c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let too_long = || format!("`{s}` is too long a duration");
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| too_long())?
        };
        let mut part = whole.checked_mul(nanos_per).ok_or_else(too_long)?;
        // Fractions beyond nanoseconds are cut, as Go does.
        let mut scale = nanos_per;
        for digit in frac.bytes().take(30) {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(part).ok_or_else(too_long)?;
        rest = after;
    }
    if negative && total > 0 {
        return Err(format!("`{s}`: a duration may not be negative"));
    }
    // Go's limit: an int64 of nanoseconds.
    if total > i64::MAX as u128 {
        return Err(format!("`{s}` is too long a duration"));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Deserializes the document, keeping the key path and location of the first error.
fn parse(text: &str, errors: &Errors<'_>) -> Result<RawFile, Problem> {
    yaml::parse(text, key_path).map_err(|failure| {
        let mut problem = errors.failure(&failure);
        match &*failure.error {
            serde_saphyr::Error::SerdeUnknownField { field, .. } => {
                if let Some(hint) = deprecated(field) {
                    problem.message = format!("`{field}` is no longer accepted: {hint}");
                }
            }
            serde_saphyr::Error::DuplicateMappingKey { key: dup, .. } => {
                problem.message = match dup {
                    Some(dup) => {
                        problem.key = yaml::join(&problem.key, dup);
                        format!("`{dup}` is given twice")
                    }
                    None => "a key is given twice".to_owned(),
                };
            }
            _ => {}
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

/// What replaced a key statsd_exporter deprecated.
fn deprecated(field: &str) -> Option<&'static str> {
    match field {
        "timer_type" => Some("use `observer_type`"),
        "buckets" => Some("put `buckets` under `histogram_options`"),
        "quantiles" => Some("put `quantiles` under `summary_options`"),
        _ => None,
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
    let defaults = raw.defaults.unwrap_or_default();
    let shared = Shared::resolve(&defaults, &errors)?;
    let mut rules = Vec::new();
    let mut globs = GlobSet::new(!defaults.glob_disable_ordering.unwrap_or(false));
    let mut regexes = Vec::new();
    for (index, item) in raw.mappings.unwrap_or_default().into_iter().enumerate() {
        let (rule, matcher) = compile_rule(index, item, &shared, &errors)?;
        match matcher {
            Matcher::Glob(glob) => globs.insert(glob, index as u32, rule.class),
            Matcher::Regex(regex) => regexes.push((index, regex)),
        }
        rules.push(rule);
    }
    Ok(Mapper {
        id: next_id(),
        rules,
        globs,
        regexes,
        defaults: Arc::new(Settings {
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

/// What `defaults` resolves to, shared by the rules that take it.
struct Shared {
    kind: ObserverType,
    histogram: Arc<ObserverChoice>,
    summary: Arc<ObserverChoice>,
    ttl: Option<Duration>,
    match_type: MatchType,
}

impl Shared {
    fn resolve(defaults: &RawDefaults, errors: &Errors<'_>) -> Result<Shared, Problem> {
        let histogram = &defaults.histogram_options;
        let buckets = match histogram.as_ref().and_then(|h| non_empty(&h.value.buckets)) {
            Some(buckets) => check_buckets(
                buckets,
                "defaults.histogram_options.buckets",
                histogram.as_ref().map(|h| h.referenced),
                errors,
            )?,
            None => DEFAULT_BUCKETS.to_vec(),
        };
        let base = SummaryOptions {
            quantiles: DEFAULT_QUANTILES.to_vec(),
            max_age: None,
            age_buckets: None,
            buf_cap: None,
        };
        let summary = match &defaults.summary_options {
            Some(raw) => summary_options(
                &raw.value,
                &base,
                "defaults.summary_options",
                raw.referenced,
                errors,
            )?,
            None => base,
        };
        Ok(Shared {
            kind: defaults.observer_type.unwrap_or(ObserverType::Summary),
            histogram: Arc::new(ObserverChoice::Histogram(HistogramOptions { buckets })),
            summary: Arc::new(ObserverChoice::Summary(summary)),
            ttl: defaults.ttl.map(|d| d.0).filter(|d| !d.is_zero()),
            match_type: defaults.match_type.unwrap_or(MatchType::Glob),
        })
    }
}

/// How a rule matches names.
enum Matcher {
    Glob(Glob),
    Regex(regex::Regex),
}

/// Checks and compiles `mappings[index]`.
fn compile_rule(
    index: usize,
    item: Spanned<RawMapping>,
    shared: &Shared,
    errors: &Errors<'_>,
) -> Result<(Rule, Matcher), Problem> {
    let key = format!("mappings[{index}]");
    let m = item.value;
    let Some(pattern) = m.pattern else {
        return Err(errors.located(key, Some(item.referenced), "a mapping needs `match`"));
    };
    let match_at = Some(pattern.referenced);

    // The matcher, and how `$n` references resolve against it.
    let matcher = match m.match_type.unwrap_or(shared.match_type) {
        MatchType::Glob => {
            let glob = Glob::parse(&pattern.value)
                .map_err(|why| errors.located(format!("{key}.match"), match_at, why))?;
            Matcher::Glob(glob)
        }
        MatchType::Regex => {
            let regex = regex::Regex::new(&pattern.value).map_err(|e| {
                let why = format!(
                    "`{}` is not a valid regex: {}",
                    pattern.value,
                    regex_reason(&e)
                );
                errors.located(format!("{key}.match"), match_at, why)
            })?;
            Matcher::Regex(regex)
        }
    };
    let resolve = |token: Token<'_>| -> Option<usize> {
        match (&matcher, token) {
            (Matcher::Regex(regex), Token::Number(n)) => (n < regex.captures_len()).then_some(n),
            (Matcher::Regex(regex), Token::Name(name)) => {
                regex.capture_names().position(|group| group == Some(name))
            }
            // `$0` is the whole name; `$n` the n-th `*`.
            (Matcher::Glob(glob), Token::Number(n)) => (n <= glob.stars).then_some(n),
            _ => None,
        }
    };

    // Labels and a name are checked for drop rules too, as statsd_exporter does.
    let mut labels = Vec::new();
    if let Some(raw) = &m.labels {
        for (label, value) in &raw.value {
            check_label_name(label).map_err(|why| {
                errors.located(format!("{key}.labels.{label}"), Some(raw.referenced), why)
            })?;
            labels.push((Box::from(label.as_str()), Template::parse(value, resolve)));
        }
    }
    let name = match &m.name {
        Some(name) => {
            template::check_name(&name.value)
                .map_err(|why| errors.located(format!("{key}.name"), Some(name.referenced), why))?;
            Some(Template::parse(&name.value, resolve))
        }
        None => None,
    };
    let action = match (m.action, name) {
        (Some(RawAction::Drop), _) => Action::Drop,
        (_, Some(name)) => Action::Map { name, labels },
        (_, None) => {
            return Err(errors.located(
                key,
                Some(item.referenced),
                "a mapping needs a `name` (unless it has `action: drop`)",
            ));
        }
    };

    let observer = rule_observer(
        m.observer_type,
        &m.histogram_options,
        &m.summary_options,
        shared,
        &key,
        errors,
    )?;
    let scale = match m.scale {
        Some(scale) if !scale.value.is_finite() || scale.value == 0.0 => {
            let why = format!(
                "`{}` is not a usable scale: it must be finite and not 0",
                scale.value
            );
            return Err(errors.located(format!("{key}.scale"), Some(scale.referenced), why));
        }
        scale => scale.map(|s| s.value),
    };
    let settings = Settings {
        help: m.help.filter(|h| !h.is_empty()).map(Arc::from),
        ttl: m.ttl.map(|d| d.0).filter(|d| !d.is_zero()).or(shared.ttl),
        observer,
        honor_labels: m.honor_labels.unwrap_or(false),
        scale,
    };
    let rule = Rule {
        class: m.match_metric_type.map(MetricClass::from),
        action,
        settings: Arc::new(settings),
    };
    Ok((rule, matcher))
}

/// A rule's observer, resolved against the defaults as statsd_exporter does: a histogram takes
/// the rule's buckets or the default ones; a summary takes each option from the rule or, when
/// unset (or 0), from the defaults. Options of the other observer type are an error.
fn rule_observer(
    kind: Option<ObserverType>,
    histogram: &Option<Spanned<RawHistogram>>,
    summary: &Option<Spanned<RawSummary>>,
    shared: &Shared,
    key: &str,
    errors: &Errors<'_>,
) -> Result<Arc<ObserverChoice>, Problem> {
    let (kind, from) = match kind {
        Some(kind) => (kind, "this mapping's `observer_type`"),
        None => (shared.kind, "the default observer type"),
    };
    match kind {
        ObserverType::Histogram => {
            if let Some(summary) = summary {
                return Err(errors.located(
                    format!("{key}.summary_options"),
                    Some(summary.referenced),
                    format!("`summary_options` cannot be used with a histogram ({from})"),
                ));
            }
            match histogram
                .as_ref()
                .and_then(|h| non_empty(&h.value.buckets).map(|b| (b, h.referenced)))
            {
                Some((buckets, at)) => Ok(Arc::new(ObserverChoice::Histogram(HistogramOptions {
                    buckets: check_buckets(
                        buckets,
                        &format!("{key}.histogram_options.buckets"),
                        Some(at),
                        errors,
                    )?,
                }))),
                None => Ok(shared.histogram.clone()),
            }
        }
        ObserverType::Summary => {
            if let Some(histogram) = histogram {
                return Err(errors.located(
                    format!("{key}.histogram_options"),
                    Some(histogram.referenced),
                    format!(
                        "`histogram_options` cannot be used with a summary ({from}); \
                         add `observer_type: histogram`"
                    ),
                ));
            }
            let Some(raw) = summary else {
                return Ok(shared.summary.clone());
            };
            let ObserverChoice::Summary(base) = &*shared.summary else {
                unreachable!("the shared summary is a summary")
            };
            let options = summary_options(
                &raw.value,
                base,
                &format!("{key}.summary_options"),
                raw.referenced,
                errors,
            )?;
            Ok(Arc::new(ObserverChoice::Summary(options)))
        }
    }
}

/// `raw` over `base`: each option unset or 0 keeps the base's.
fn summary_options(
    raw: &RawSummary,
    base: &SummaryOptions,
    key: &str,
    at: Location,
    errors: &Errors<'_>,
) -> Result<SummaryOptions, Problem> {
    let quantiles = match non_empty(&raw.quantiles) {
        Some(quantiles) => {
            let mut out: Vec<Quantile> = Vec::with_capacity(quantiles.len());
            for q in quantiles {
                let problem = if !(q.quantile > 0.0 && q.quantile < 1.0) {
                    Some(format!("quantile `{}` is not between 0 and 1", q.quantile))
                } else if !(q.error >= 0.0 && q.error < 1.0) {
                    Some(format!(
                        "error `{}` of quantile {} is not in [0, 1)",
                        q.error, q.quantile
                    ))
                } else if out.iter().any(|o| o.quantile == q.quantile) {
                    Some(format!("quantile `{}` is listed twice", q.quantile))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(errors.located(format!("{key}.quantiles"), Some(at), problem));
                }
                out.push(Quantile {
                    quantile: q.quantile,
                    error: q.error,
                });
            }
            out
        }
        None => base.quantiles.clone(),
    };
    Ok(SummaryOptions {
        quantiles,
        max_age: raw
            .max_age
            .map(|d| d.0)
            .filter(|d| !d.is_zero())
            .or(base.max_age),
        age_buckets: raw.age_buckets.filter(|&n| n != 0).or(base.age_buckets),
        buf_cap: raw.buf_cap.filter(|&n| n != 0).or(base.buf_cap),
    })
}

/// `Some` when the list is present and not empty (an empty list means "the default" in Go).
fn non_empty<T>(list: &Option<Vec<T>>) -> Option<&[T]> {
    list.as_deref().filter(|l| !l.is_empty())
}

fn check_buckets(
    buckets: &[f64],
    key: &str,
    at: Option<Location>,
    errors: &Errors<'_>,
) -> Result<Vec<f64>, Problem> {
    for (i, &b) in buckets.iter().enumerate() {
        if !b.is_finite() {
            return Err(errors.located(
                key,
                at,
                format!("bucket `{b}` is not finite (`+Inf` is implicit)"),
            ));
        }
        if i > 0 && b <= buckets[i - 1] {
            return Err(errors.located(
                key,
                at,
                format!(
                    "buckets must be strictly ascending, but `{b}` follows `{}`",
                    buckets[i - 1]
                ),
            ));
        }
    }
    Ok(buckets.to_vec())
}

/// A label name must be a Prometheus one, `[a-zA-Z_][a-zA-Z0-9_]*`, and not reserved (`__…`).
fn check_label_name(label: &str) -> Result<(), String> {
    let bytes = label.as_bytes();
    let valid = !bytes.is_empty()
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    if !valid {
        return Err(format!(
            "`{label}` is not a valid label name: use letters, digits and `_`, not starting with a digit"
        ));
    }
    if label.starts_with("__") {
        return Err(format!(
            "`{label}` is not allowed: names starting with `__` are reserved"
        ));
    }
    Ok(())
}

/// The useful line of a regex error (the crate's message spans several lines).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .map_or_else(
            || text.split_whitespace().collect::<Vec<_>>().join(" "),
            str::to_owned,
        )
}
