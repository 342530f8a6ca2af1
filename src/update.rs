//! What one accepted sample becomes on its way to its family actor: an [`Update`] of one
//! series, named by its [`LabelSet`], with an [`Op`] that already carries the StatsD semantics
//! (sample-rate scaling, timer units, relative gauges).

use crate::statsd::parse::{MetricType, Sample};

/// Label pairs as they arrive, unsorted: `(name, value)`.
pub type LabelPairs = Vec<(Box<str>, Box<str>)>;

/// The label pairs of one series, sorted by label name, each name at most once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSet(Box<[(Box<str>, Box<str>)]>);

impl LabelSet {
    /// Builds a label set from pairs in the order they were sent; when a name repeats, the last
    /// value wins (as a later DogStatsD tag overrides an earlier one in statsd_exporter).
    pub fn from_pairs(mut pairs: LabelPairs) -> Self {
        if pairs.len() > 1 {
            // Reverse, then a stable sort keeps the last-sent value first within equal names,
            // and dedup keeps the first of each run.
            pairs.reverse();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            pairs.dedup_by(|later, earlier| later.0 == earlier.0);
        }
        LabelSet(pairs.into_boxed_slice())
    }

    /// The `(name, value)` pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// True when the series has no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The Prometheus type of a family, fixed by the first update it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// From StatsD counters.
    Counter,
    /// From StatsD gauges.
    Gauge,
    /// From timers, histograms and distributions: a summary or a histogram.
    Observer,
    /// From sets: a gauge of distinct values over a window.
    Set,
}

impl Kind {
    /// The lower-case name used in labels and messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Observer => "observer",
            Kind::Set => "set",
        }
    }
}

/// What an update does to its series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// Add to a counter (already divided by the sample rate).
    Add(f64),
    /// Set a gauge.
    Set(f64),
    /// Change a gauge by this amount.
    Shift(f64),
    /// Record `value` `count` times (a timer's value already in seconds).
    Observe {
        /// The observed value.
        value: f64,
        /// How many observations it stands for: `floor(1 / sample rate)`, at most 2^32 - 1.
        count: u64,
    },
    /// Add a member, by its 64-bit hash, to a set.
    Insert(u64),
}

/// A set member's hash: SipHash with fixed keys, well mixed, as the HyperLogLog needs, and
/// stable. Out of line, so that [`Op::from_sample`] stays small enough to inline.
#[inline(never)]
fn member_hash(member: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(member, &mut hasher);
    std::hash::Hasher::finish(&hasher)
}

impl Op {
    /// Applies statsd_exporter's semantics to a parsed sample: counters are divided by the
    /// sample rate, timers go from milliseconds to seconds, observations are counted
    /// `floor(1/rate)` times, gauges ignore the rate.
    #[inline]
    pub fn from_sample(sample: &Sample<'_>) -> Op {
        match sample.metric_type {
            MetricType::Set => Op::Insert(member_hash(sample.text)),
            // Most lines have no rate: no division for them (one by 1 changes nothing).
            MetricType::Counter if sample.sample_rate == 1.0 => Op::Add(sample.value),
            MetricType::Counter => Op::Add(sample.value / sample.sample_rate),
            MetricType::Gauge if sample.relative => Op::Shift(sample.value),
            MetricType::Gauge => Op::Set(sample.value),
            MetricType::Timer | MetricType::Histogram | MetricType::Distribution => {
                let value = if sample.metric_type == MetricType::Timer {
                    sample.value / 1000.0
                } else {
                    sample.value
                };
                // The rate is in (0, 1], so this is at least 1. A tiny rate (`@1e-300`) would
                // stand for more observations than any counter holds: capped at 2^32 - 1, which
                // also keeps every sum of counts far from overflowing.
                let count = (1.0 / sample.sample_rate).floor().min(f64::from(u32::MAX)) as u64;
                Op::Observe { value, count }
            }
        }
    }

    /// The operation with its value multiplied by `factor` (a mapping rule's `scale`); a set
    /// member is not a quantity and stays as it is.
    #[inline]
    pub fn scaled(self, factor: f64) -> Op {
        match self {
            Op::Add(v) => Op::Add(v * factor),
            Op::Set(v) => Op::Set(v * factor),
            Op::Shift(v) => Op::Shift(v * factor),
            Op::Observe { value, count } => Op::Observe {
                value: value * factor,
                count,
            },
            Op::Insert(hash) => Op::Insert(hash),
        }
    }

    /// `self` followed by `next`, as one operation on the same series, when that is exact:
    /// counter increments add up, a gauge set absorbs the shifts after it and is replaced by a
    /// later set, shifts add up. Observations and set members stay apart (`None`), as do
    /// operations of different types.
    #[inline]
    pub fn combine(self, next: Op) -> Option<Op> {
        match (self, next) {
            (Op::Add(a), Op::Add(b)) => Some(Op::Add(a + b)),
            (Op::Set(_) | Op::Shift(_), Op::Set(b)) => Some(Op::Set(b)),
            (Op::Set(a), Op::Shift(d)) => Some(Op::Set(a + d)),
            (Op::Shift(a), Op::Shift(d)) => Some(Op::Shift(a + d)),
            _ => None,
        }
    }

    /// The family type this update needs.
    pub const fn kind(&self) -> Kind {
        match self {
            Op::Add(_) => Kind::Counter,
            Op::Set(_) | Op::Shift(_) => Kind::Gauge,
            Op::Observe { .. } => Kind::Observer,
            Op::Insert(_) => Kind::Set,
        }
    }
}

/// One update of one series of a family: what one sample does, or what several samples of
/// the series gathered at the edge do together (see [`Op::combine`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// The series.
    pub labels: LabelSet,
    /// What to do to it.
    pub op: Op,
    /// How many samples it stands for: what the family counts as applied or refused.
    pub samples: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        LabelSet::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        )
    }

    #[test]
    fn label_sets_are_sorted_and_last_value_wins() {
        let set = labels(&[("z", "1"), ("a", "2"), ("z", "3")]);
        assert_eq!(set.iter().collect::<Vec<_>>(), [("a", "2"), ("z", "3")]);
        assert_eq!(set, labels(&[("a", "2"), ("z", "3")]));
    }

    #[test]
    fn combining_keeps_the_meaning_of_the_sequence() {
        assert_eq!(Op::Add(1.0).combine(Op::Add(2.5)), Some(Op::Add(3.5)));
        assert_eq!(Op::Set(4.0).combine(Op::Shift(-1.0)), Some(Op::Set(3.0)));
        assert_eq!(Op::Shift(2.0).combine(Op::Shift(3.0)), Some(Op::Shift(5.0)));
        assert_eq!(Op::Shift(2.0).combine(Op::Set(7.0)), Some(Op::Set(7.0)));
        assert_eq!(Op::Set(2.0).combine(Op::Set(7.0)), Some(Op::Set(7.0)));
        let observe = Op::Observe {
            value: 1.0,
            count: 1,
        };
        assert_eq!(observe.combine(observe), None);
        assert_eq!(Op::Insert(1).combine(Op::Insert(2)), None);
        assert_eq!(Op::Add(1.0).combine(Op::Set(1.0)), None);
        assert_eq!(Op::Set(1.0).combine(Op::Add(1.0)), None);
    }

    #[test]
    fn statsd_semantics() {
        let s = |metric_type, value, relative, sample_rate| Sample {
            metric_type,
            value,
            text: "",
            relative,
            sample_rate,
        };
        assert_eq!(
            Op::from_sample(&s(MetricType::Counter, 1.0, false, 0.1)),
            Op::Add(10.0)
        );
        assert_eq!(
            Op::from_sample(&s(MetricType::Gauge, 5.0, false, 0.5)),
            Op::Set(5.0)
        );
        assert_eq!(
            Op::from_sample(&s(MetricType::Gauge, -2.0, true, 1.0)),
            Op::Shift(-2.0)
        );
        assert_eq!(
            Op::from_sample(&s(MetricType::Timer, 250.0, false, 0.3)),
            Op::Observe {
                value: 0.25,
                count: 3
            }
        );
        assert_eq!(
            Op::from_sample(&s(MetricType::Histogram, 250.0, false, 1.0)),
            Op::Observe {
                value: 250.0,
                count: 1
            }
        );
    }
}
