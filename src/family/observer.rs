//! The state of one observer series (timer, histogram or distribution): a summary backed by a
//! DDSketch, or a histogram with fixed buckets, each rendered into the Prometheus model.

use prometheus::proto;
use sketches_ddsketch::{Config as SketchConfig, DDSketch};

use crate::config::{ObserverSettings, ObserverType};

/// One series of an observer family.
#[derive(Clone)]
pub enum Observer {
    /// Quantiles from a DDSketch: every reported quantile is within 1% (relative) of a value
    /// at that rank, in memory bounded by the sketch's bin limit, whatever the number of
    /// observations. `_sum` and `_count` are exact.
    Summary {
        /// The sketch of every observation.
        sketch: Box<DDSketch>,
        /// Exact sum of observations.
        sum: f64,
        /// Exact number of observations.
        count: u64,
    },
    /// Fixed-bucket counts, cheap per observation.
    Histogram {
        /// Observations per bucket (not cumulative), one per configured bound plus `+Inf`.
        buckets: Box<[u64]>,
        /// Exact sum of observations.
        sum: f64,
        /// Exact number of observations.
        count: u64,
    },
}

/// The quantile to ask the sketch for so that it answers with the observation of rank
/// `ceil(q * n)` (1-based), as Prometheus client summaries do, rather than the sketch's own
/// `floor(q * (n - 1))` (0-based), which for few observations reads low: the 0.99 quantile of
/// two observations is then the larger one, not the smaller.
fn sketch_rank(q: f64, n: u64) -> f64 {
    if n <= 1 {
        return q;
    }
    let n = n as f64;
    let index = ((q * n).ceil() - 1.0).max(0.0);
    // Half a rank up, so that the sketch's floor lands on `index` despite rounding.
    ((index + 0.5) / (n - 1.0)).min(1.0)
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The sketch has no Debug; its count and sum say enough.
        let (kind, sum, count) = match self {
            Observer::Summary { sum, count, .. } => ("Summary", sum, count),
            Observer::Histogram { sum, count, .. } => ("Histogram", sum, count),
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
        match settings.observer_type {
            ObserverType::Summary => Observer::Summary {
                sketch: Box::new(DDSketch::new(SketchConfig::defaults())),
                sum: 0.0,
                count: 0,
            },
            ObserverType::Histogram => Observer::Histogram {
                buckets: vec![0; settings.buckets.len() + 1].into_boxed_slice(),
                sum: 0.0,
                count: 0,
            },
        }
    }

    /// Records `value` `n` times. `bounds` are the histogram's upper bounds, sorted.
    pub fn observe(&mut self, value: f64, n: u64, bounds: &[f64]) {
        match self {
            Observer::Summary { sketch, sum, count } => {
                sketch.add_with_count(value, n);
                *sum += value * n as f64;
                *count = count.saturating_add(n);
            }
            Observer::Histogram {
                buckets,
                sum,
                count,
            } => {
                let i = bounds.partition_point(|&bound| bound < value);
                buckets[i] = buckets[i].saturating_add(n);
                *sum += value * n as f64;
                *count = count.saturating_add(n);
            }
        }
    }

    /// Sum of every observation.
    pub fn sum(&self) -> f64 {
        match self {
            Observer::Summary { sum, .. } | Observer::Histogram { sum, .. } => *sum,
        }
    }

    /// Writes the series into `metric` as a summary or a histogram.
    pub fn fill(&self, settings: &ObserverSettings, metric: &mut proto::Metric) {
        match self {
            Observer::Summary { sketch, sum, count } => {
                let mut summary = proto::Summary::default();
                summary.set_sample_sum(*sum);
                summary.set_sample_count(*count);
                let quantiles = settings
                    .quantiles
                    .iter()
                    .map(|q| {
                        let mut out = proto::Quantile::default();
                        out.set_quantile(q.quantile);
                        // A bin's value may lie just outside what was observed; clamping to
                        // the exact min and max makes one observation read as itself.
                        let value = sketch
                            .quantile(sketch_rank(q.quantile, *count))
                            .ok()
                            .flatten()
                            .zip(sketch.min().zip(sketch.max()))
                            .map_or(f64::NAN, |(v, (lo, hi))| v.clamp(lo, hi));
                        out.set_value(value);
                        out
                    })
                    .collect();
                summary.set_quantile(quantiles);
                metric.set_summary(summary);
            }
            Observer::Histogram {
                buckets,
                sum,
                count,
            } => {
                let mut histogram = proto::Histogram::default();
                histogram.set_sample_sum(*sum);
                histogram.set_sample_count(*count);
                let mut cumulative: u64 = 0;
                let bounds = settings.buckets.iter().copied().chain([f64::INFINITY]);
                let out = bounds
                    .zip(buckets.iter())
                    .filter(|(bound, _)| bound.is_finite())
                    .map(|(bound, n)| {
                        cumulative = cumulative.saturating_add(*n);
                        let mut bucket = proto::Bucket::default();
                        bucket.set_upper_bound(bound);
                        bucket.set_cumulative_count(cumulative);
                        bucket
                    })
                    .collect();
                histogram.set_bucket(out);
                metric.set_histogram(histogram);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut metric = proto::Metric::default();
        h.fill(&settings, &mut metric);
        let hist = metric.get_histogram();
        assert_eq!(hist.get_sample_count(), 8);
        assert!((hist.get_sample_sum() - 2.0 * 21.011).abs() < 1e-9);
        let counts: Vec<u64> = hist
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        // .005 | .01 .025 .05 .1 .25 .5 1 2.5 5 | 10; the +Inf bucket is implied by _count.
        assert_eq!(counts, [2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 6]);
    }

    #[test]
    fn few_observations_read_like_a_prometheus_summary() {
        let settings = ObserverSettings::default();
        let quantiles = |values: &[f64]| {
            let mut s = Observer::new(&settings);
            for v in values {
                s.observe(*v, 1, &[]);
            }
            let mut metric = proto::Metric::default();
            s.fill(&settings, &mut metric);
            let got: Vec<f64> = metric
                .get_summary()
                .get_quantile()
                .iter()
                .map(|q| q.value())
                .collect();
            got
        };
        let two = quantiles(&[300.0, 500.0]);
        assert!((two[0] - 300.0).abs() <= 3.0, "{two:?}");
        assert_eq!(two[1..], [500.0, 500.0]);
        let one_to_ten: Vec<f64> = (1..=10).map(f64::from).collect();
        let got = quantiles(&one_to_ten);
        assert_eq!(got[2], 10.0, "p99 of ten is the largest");
        assert!(
            (got[0] - 5.0).abs() <= 0.05 && (got[1] - 9.0).abs() <= 0.09,
            "{got:?}"
        );
    }

    #[test]
    fn summary_quantiles_within_one_percent() {
        let settings = ObserverSettings::default();
        let mut s = Observer::new(&settings);
        for v in 1..=1000 {
            s.observe(f64::from(v), 1, &[]);
        }
        let mut metric = proto::Metric::default();
        s.fill(&settings, &mut metric);
        let summary = metric.get_summary();
        assert_eq!(summary.sample_count(), 1000);
        assert_eq!(summary.sample_sum(), 500_500.0);
        for (q, want) in summary.get_quantile().iter().zip([500.0, 900.0, 990.0]) {
            let got = q.value();
            assert!(
                (got - want).abs() / want <= 0.011,
                "q{} = {got}",
                q.quantile()
            );
        }
    }
}
