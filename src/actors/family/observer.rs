//! The state of one observer series (timer, histogram or distribution): a summary backed by a
//! DDSketch (the family's `sketch` module), or a histogram with fixed buckets and, unless its
//! bucket factor is 1 or less, native ones too ([`Native`]); written in the text format, and
//! a histogram with native buckets as a protobuf `Metric` too.

use super::native::{spans_and_deltas, Native, ZERO_THRESHOLD};
use super::sketch::Sketch;
use crate::config::{ObserverSettings, ObserverType};
use crate::exposition::proto;
use crate::exposition::text::{self, Extra};
use crate::update::LabelSet;

/// One series of an observer family: one pointer, so that every series, of any type, is
/// small (a `Series` is 16 bytes).
#[derive(Clone)]
pub struct Observer(Box<State>);

/// An observer series' state.
#[derive(Clone)]
enum State {
    /// Quantiles from a DDSketch: every reported quantile is within 1% (relative) of a value
    /// at that rank, in memory bounded by the sketch's bin limit, whatever the number of
    /// observations. `_sum` and `_count` are exact.
    Summary {
        /// The sketch of every observation.
        sketch: Sketch,
        /// Exact sum of observations.
        sum: f64,
        /// Exact number of observations.
        count: u64,
    },
    /// Fixed-bucket counts, cheap per observation, and native buckets.
    Histogram {
        /// Observations per bucket (not cumulative), one per configured bound plus `+Inf`.
        buckets: Box<[u64]>,
        /// Exact sum of observations.
        sum: f64,
        /// Exact number of observations.
        count: u64,
        /// The native buckets, unless the bucket factor is 1 or less.
        native: Option<Native>,
    },
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Brief: the sketch's or the buckets' counts would fill pages; count and sum say enough.
        let (kind, sum, count) = match &*self.0 {
            State::Summary { sum, count, .. } => ("Summary", sum, count),
            State::Histogram { sum, count, .. } => ("Histogram", sum, count),
        };
        f.debug_struct(kind)
            .field("sum", sum)
            .field("count", count)
            .finish()
    }
}

impl Observer {
    /// An empty series of the configured observer type.
    pub fn new(settings: &ObserverSettings) -> Self {
        Observer(Box::new(match settings.observer_type {
            ObserverType::Summary => State::Summary {
                sketch: Sketch::default(),
                sum: 0.0,
                count: 0,
            },
            ObserverType::Histogram => State::Histogram {
                buckets: vec![0; settings.buckets.len() + 1].into_boxed_slice(),
                sum: 0.0,
                count: 0,
                native: (settings.native_histogram_bucket_factor > 1.0).then(|| {
                    Native::new(
                        settings.native_histogram_bucket_factor,
                        settings.native_histogram_max_buckets,
                    )
                }),
            },
        }))
    }

    /// Records `value` `n` times. `bounds` are the histogram's upper bounds, sorted. Returns
    /// how many times the native buckets halved their resolution to make room.
    pub fn observe(&mut self, value: f64, n: u64, bounds: &[f64]) -> u32 {
        match &mut *self.0 {
            State::Summary { sketch, sum, count } => {
                sketch.add(value, n);
                *sum += value * n as f64;
                *count = count.saturating_add(n);
                0
            }
            State::Histogram {
                buckets,
                sum,
                count,
                native,
            } => {
                let i = bounds.partition_point(|&bound| bound < value);
                buckets[i] = buckets[i].saturating_add(n);
                *sum += value * n as f64;
                *count = count.saturating_add(n);
                native.as_mut().map_or(0, |native| native.observe(value, n))
            }
        }
    }

    /// Asks for the memory that observing `value` will write, without waiting for it.
    pub fn prefetch(&self, value: f64) {
        if let State::Summary { sketch, .. } = &*self.0 {
            sketch.prefetch(value);
        }
    }

    /// Asks for the series' state, without waiting for it.
    pub fn prefetch_state(&self) {
        crate::memory::prefetch_line(&*self.0);
    }

    /// A histogram with native buckets as a protobuf `Metric`, its classic buckets too;
    /// `None` for a summary or a histogram without native buckets.
    pub fn native_metric(
        &self,
        labels: &LabelSet,
        settings: &ObserverSettings,
    ) -> Option<proto::Metric> {
        let State::Histogram {
            buckets,
            sum,
            count,
            native: Some(native),
        } = &*self.0
        else {
            return None;
        };
        let mut cumulative = 0u64;
        let bucket = settings
            .buckets
            .iter()
            .zip(buckets.iter())
            .map(|(&bound, &n)| {
                cumulative = cumulative.saturating_add(n);
                proto::Bucket {
                    cumulative_count: Some(cumulative),
                    upper_bound: Some(bound),
                }
            })
            .collect();
        let [positive, negative] = native.buckets().map(spans_and_deltas);
        let span = |spans: Vec<(i32, u32)>| -> Vec<proto::BucketSpan> {
            spans
                .into_iter()
                .map(|(offset, length)| proto::BucketSpan {
                    offset: Some(offset),
                    length: Some(length),
                })
                .collect()
        };
        Some(proto::Metric {
            label: proto::labels(labels.iter()),
            histogram: Some(proto::Histogram {
                sample_count: Some(*count),
                sample_sum: Some(*sum),
                bucket,
                schema: Some(native.schema()),
                zero_threshold: Some(ZERO_THRESHOLD),
                zero_count: Some(native.zero_count()),
                negative_span: span(negative.0),
                negative_delta: negative.1,
                positive_span: span(positive.0),
                positive_delta: positive.1,
            }),
            ..proto::Metric::default()
        })
    }

    /// Sum of every observation.
    pub fn sum(&self) -> f64 {
        match &*self.0 {
            State::Summary { sum, .. } | State::Histogram { sum, .. } => *sum,
        }
    }

    /// Writes the series' lines as a summary (its quantiles, `_sum`, `_count`) or a histogram
    /// (its cumulative `_bucket`s up to `+Inf`, `_sum`, `_count`).
    pub fn write(
        &self,
        out: &mut String,
        name: &str,
        labels: &LabelSet,
        settings: &ObserverSettings,
    ) {
        let (sum, count) = match &*self.0 {
            State::Summary { sketch, sum, count } => {
                for q in &settings.quantiles {
                    let value = sketch.quantile(q.quantile);
                    text::series_sample(
                        out,
                        (name, ""),
                        labels,
                        Some(Extra::Quantile(q.quantile)),
                        value,
                    );
                }
                (*sum, *count)
            }
            State::Histogram {
                buckets,
                sum,
                count,
                ..
            } => {
                let mut cumulative: u64 = 0;
                let bounds = settings.buckets.iter().copied().chain([f64::INFINITY]);
                for (bound, n) in bounds.zip(buckets.iter()) {
                    cumulative = cumulative.saturating_add(*n);
                    if !bound.is_finite() {
                        continue;
                    }
                    let le = Some(Extra::Le(bound));
                    text::series_sample(out, (name, "_bucket"), labels, le, cumulative as f64);
                }
                let le = Some(Extra::Le(f64::INFINITY));
                text::series_sample(out, (name, "_bucket"), labels, le, *count as f64);
                (*sum, *count)
            }
        };
        text::series_sample(out, (name, "_sum"), labels, None, sum);
        text::series_sample(out, (name, "_count"), labels, None, count as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The series' lines, written with no labels: (name, extra label, value).
    fn lines(o: &Observer, settings: &ObserverSettings) -> Vec<(String, String, f64)> {
        let mut out = String::new();
        o.write(&mut out, "x", &LabelSet::default(), settings);
        out.lines()
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let (name, extra) = series.split_once('{').unwrap_or((series, ""));
                (
                    name.into(),
                    extra.trim_end_matches('}').into(),
                    value.parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn histogram_buckets_are_upper_inclusive() {
        let settings = ObserverSettings {
            observer_type: ObserverType::Histogram,
            ..ObserverSettings::default()
        };
        let mut h = Observer::new(&settings);
        for v in [0.005, 0.006, 10.0, 11.0] {
            h.observe(v, 2, &settings.buckets);
        }
        let lines = lines(&h, &settings);
        let buckets: Vec<(&str, f64)> = lines
            .iter()
            .filter(|(name, _, _)| name == "x_bucket")
            .map(|(_, le, n)| (le.as_str(), *n))
            .collect();
        // .005 | .01 .025 .05 .1 .25 .5 1 2.5 5 | 10 | +Inf
        let want = [
            ("le=\"0.005\"", 2.0),
            ("le=\"0.01\"", 4.0),
            ("le=\"0.025\"", 4.0),
            ("le=\"0.05\"", 4.0),
            ("le=\"0.1\"", 4.0),
            ("le=\"0.25\"", 4.0),
            ("le=\"0.5\"", 4.0),
            ("le=\"1\"", 4.0),
            ("le=\"2.5\"", 4.0),
            ("le=\"5\"", 4.0),
            ("le=\"10\"", 6.0),
            ("le=\"+Inf\"", 8.0),
        ];
        assert_eq!(buckets, want);
        let (sum, count) = (&lines[lines.len() - 2], &lines[lines.len() - 1]);
        assert_eq!((sum.0.as_str(), count.0.as_str()), ("x_sum", "x_count"));
        assert!((sum.2 - 2.0 * 21.011).abs() < 1e-9);
        assert_eq!(count.2, 8.0);
    }

    /// The summary's quantile values, in the order configured.
    fn quantiles(values: &[f64], settings: &ObserverSettings) -> Vec<f64> {
        let mut s = Observer::new(settings);
        for v in values {
            s.observe(*v, 1, &[]);
        }
        lines(&s, settings)
            .into_iter()
            .filter(|(_, extra, _)| extra.starts_with("quantile="))
            .map(|(_, _, v)| v)
            .collect()
    }

    #[test]
    fn few_observations_read_like_a_prometheus_summary() {
        let settings = ObserverSettings::default();
        let two = quantiles(&[300.0, 500.0], &settings);
        assert!((two[0] - 300.0).abs() <= 3.0, "{two:?}");
        assert_eq!(two[1..], [500.0, 500.0]);
        let one_to_ten: Vec<f64> = (1..=10).map(f64::from).collect();
        let got = quantiles(&one_to_ten, &settings);
        assert_eq!(got[2], 10.0, "p99 of ten is the largest");
        assert!(
            (got[0] - 5.0).abs() <= 0.05 && (got[1] - 9.0).abs() <= 0.09,
            "{got:?}"
        );
        assert!(quantiles(&[], &settings).iter().all(|q| q.is_nan()));
    }

    #[test]
    fn summary_quantiles_within_one_percent() {
        let settings = ObserverSettings::default();
        let mut s = Observer::new(&settings);
        for v in 1..=1000 {
            s.observe(f64::from(v), 1, &[]);
        }
        let lines = lines(&s, &settings);
        let names: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
        assert_eq!(names, ["x", "x", "x", "x_sum", "x_count"]);
        assert_eq!((lines[3].2, lines[4].2), (500_500.0, 1000.0));
        for ((_, q, got), want) in lines.iter().zip([500.0, 900.0, 990.0]) {
            assert!((got - want).abs() / want <= 0.011, "{q} = {got}");
        }
    }
}
