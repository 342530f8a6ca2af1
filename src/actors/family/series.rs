//! One series' value, by the family's type, and how it is written.

use std::time::Instant;

use super::observer::Observer;
use super::set::SetSeries;
use super::FamilyContext;
use crate::config::ObserverSettings;
use crate::exposition::text;
use crate::update::{FamilyMeta, Kind, LabelSet, Observation, Op};

/// One series' value.
#[derive(Clone, Debug)]
pub(crate) enum Series {
    /// A counter's total.
    Counter(f64),
    /// A gauge's value.
    Gauge(f64),
    /// A summary's or histogram's observations.
    Observer(Observer),
    /// A set's members over a sliding window (boxed: every series of every type is as large
    /// as the largest, and sets are rare).
    Set(Box<SetSeries>),
}

impl Series {
    pub(super) fn new(kind: Kind, meta: &FamilyMeta, ctx: &FamilyContext, now: Instant) -> Self {
        match kind {
            Kind::Counter => Series::Counter(0.0),
            Kind::Gauge => Series::Gauge(0.0),
            Kind::Observer => Series::Observer(Observer::new(&meta.observer)),
            Kind::Set => Series::Set(Box::new(SetSeries::new(ctx.set_window, now))),
        }
    }

    /// Applies one operation of this series' kind; the caller has checked the kind.
    /// `observations` are those of the batch the operation came in. Returns how many times a
    /// native histogram halved its resolution.
    pub(super) fn apply(
        &mut self,
        op: Op,
        observations: &[Observation],
        buckets: &[f64],
        now: Instant,
    ) -> u32 {
        match (self, op) {
            (Series::Counter(total), Op::Add(v)) => *total += v,
            (Series::Gauge(value), Op::Set(v)) => *value = v,
            (Series::Gauge(value), Op::Shift(v)) => *value += v,
            (Series::Observer(o), Op::Observe { value, count }) => {
                return o.observe(value, count, buckets)
            }
            (Series::Observer(o), Op::Observations { start, len }) => {
                let start = start as usize;
                return observations[start..start + len as usize]
                    .iter()
                    .map(|one| o.observe(one.value, one.count, buckets))
                    .sum();
            }
            (Series::Set(set), Op::Insert(hash)) => set.insert(hash, now),
            (series, op) => unreachable!("{op:?} applied to {series:?} after the kind check"),
        }
        0
    }

    /// Asks for the memory behind the series' value (an observer's state), without waiting.
    pub(super) fn prefetch_state(&self) {
        if let Series::Observer(o) = self {
            o.prefetch_state();
        }
    }

    /// Asks for the memory that applying `op` will write, beyond the series' state, without
    /// waiting for it.
    pub(super) fn prefetch(&self, op: Op, observations: &[Observation]) {
        match (self, op) {
            (Series::Observer(o), Op::Observe { value, .. }) => o.prefetch(value),
            (Series::Observer(o), Op::Observations { start, len }) => {
                let start = start as usize;
                for one in observations
                    .get(start..start + len as usize)
                    .unwrap_or_default()
                {
                    o.prefetch(one.value);
                }
            }
            _ => {}
        }
    }

    /// The series' value as a gauge or counter would show it, or its observations' sum.
    pub(super) fn value_sum(&self, now: Instant) -> f64 {
        match self {
            Series::Counter(v) | Series::Gauge(v) => *v,
            Series::Observer(o) => o.sum(),
            Series::Set(set) => set.distinct(now) as f64,
        }
    }

    /// Writes the series' lines in the text format: `name` with `labels`, and an observer's
    /// `_sum`, `_count` and quantiles or buckets as `observer` says.
    pub(super) fn write(
        &self,
        out: &mut String,
        name: &str,
        labels: &LabelSet,
        observer: &ObserverSettings,
        now: Instant,
    ) {
        match self {
            Series::Counter(v) => text::series_sample(out, (name, ""), labels, None, *v),
            Series::Gauge(_) | Series::Set(_) => {
                text::series_sample(out, (name, ""), labels, None, self.value_sum(now));
            }
            Series::Observer(o) => o.write(out, name, labels, observer),
        }
    }
}
