//! What the file's `defaults` resolve to, and each rule's observer (`observer_type`,
//! `histogram_options`, `summary_options`) resolved against them, as statsd_exporter does.

use serde_saphyr::{Location, Spanned};
use std::sync::Arc;
use std::time::Duration;

use super::{MatchType, RawDefaults, RawHistogram, RawSummary};
use crate::config::ObserverType;
use crate::mapping::{HistogramOptions, ObserverChoice, Quantile, SummaryOptions};
use crate::yaml::{Errors, Problem};

/// Prometheus's default histogram buckets (client_golang's `DefBuckets`).
const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// statsd_exporter's default native histogram bucket factor and most buckets.
const DEFAULT_NATIVE: (f64, u32) = (1.1, 256);

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

/// What `defaults` resolves to, shared by the rules that take it.
pub(super) struct Shared {
    pub(super) kind: ObserverType,
    pub(super) histogram: Arc<ObserverChoice>,
    pub(super) summary: Arc<ObserverChoice>,
    pub(super) ttl: Option<Duration>,
    pub(super) match_type: MatchType,
}

impl Shared {
    pub(super) fn resolve(defaults: &RawDefaults, errors: &Errors<'_>) -> Result<Shared, Problem> {
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
        let base = HistogramOptions {
            buckets,
            native_bucket_factor: DEFAULT_NATIVE.0,
            native_max_buckets: DEFAULT_NATIVE.1,
        };
        let histogram = match histogram {
            Some(raw) => native_options(
                &raw.value,
                base,
                false,
                ("defaults", raw.referenced, errors),
            )?,
            None => base,
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
            histogram: Arc::new(ObserverChoice::Histogram(histogram)),
            summary: Arc::new(ObserverChoice::Summary(summary)),
            ttl: defaults.ttl.map(|d| d.0).filter(|d| !d.is_zero()),
            match_type: defaults.match_type.unwrap_or(MatchType::Glob),
        })
    }
}

/// A rule's observer, resolved against the defaults as statsd_exporter does: a histogram takes
/// the rule's buckets or the default ones; a summary takes each option from the rule or, when
/// unset (or 0), from the defaults. Options of the other observer type are an error.
pub(super) fn rule_observer(
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
            let Some(raw) = histogram else {
                return Ok(shared.histogram.clone());
            };
            let ObserverChoice::Histogram(base) = &*shared.histogram else {
                unreachable!("the shared histogram is a histogram")
            };
            let buckets = match non_empty(&raw.value.buckets) {
                Some(buckets) => check_buckets(
                    buckets,
                    &format!("{key}.histogram_options.buckets"),
                    Some(raw.referenced),
                    errors,
                )?,
                None => base.buckets.clone(),
            };
            let base = HistogramOptions {
                buckets,
                ..base.clone()
            };
            let options = native_options(&raw.value, base, true, (key, raw.referenced, errors))?;
            Ok(Arc::new(ObserverChoice::Histogram(options)))
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

/// The native options of `raw` over `base`'s, as statsd_exporter takes them: a most buckets
/// unset or 0 keeps the base's, and so does a factor unset or 0 in `defaults`, or not above 0
/// in a rule. A factor of 1 or less turns native histograms off.
/// A factor that is not a finite number is refused.
fn native_options(
    raw: &RawHistogram,
    base: HistogramOptions,
    rule: bool,
    (key, at, errors): (&str, Location, &Errors<'_>),
) -> Result<HistogramOptions, Problem> {
    if let Some(factor) = raw
        .native_histogram_bucket_factor
        .filter(|f| !f.is_finite())
    {
        return Err(errors.located(
            format!("{key}.histogram_options.native_histogram_bucket_factor"),
            Some(at),
            format!("`{factor}` is not a finite number"),
        ));
    }
    Ok(HistogramOptions {
        native_bucket_factor: raw
            .native_histogram_bucket_factor
            .filter(|&f| if rule { f > 0.0 } else { f != 0.0 })
            .unwrap_or(base.native_bucket_factor),
        native_max_buckets: raw
            .native_histogram_max_buckets
            .filter(|&n| n != 0)
            .unwrap_or(base.native_max_buckets),
        ..base
    })
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
pub(super) fn non_empty<T>(list: &Option<Vec<T>>) -> Option<&[T]> {
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
