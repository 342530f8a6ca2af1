//! A hibernating family: what the registry keeps of a family whose actor stopped while idle,
//! and how it wakes.

use prometheus::IntGauge;
use std::sync::Arc;
use std::time::Instant;

use super::series::Series;
use super::state::{release_series, Entry, FamilyState};
use super::{FamilyContext, FamilySpec};
use crate::rate::RateWindow;
use crate::update::LabelSet;

/// A hibernating family's state, as the registry keeps it: each series' value and when it was
/// last updated, in a slice rather than a hash map, its update count and rate, and nothing a
/// wake-up can rebuild (rendered lines, header, publishing times; it published as it
/// stopped). The series stay in the budget and in `tallyd_series`.
#[derive(Debug)]
pub struct Dormant {
    ctx: Arc<FamilyContext>,
    /// `tallyd_series{type}` for the family's type.
    series_gauge: IntGauge,
    series: Box<[(LabelSet, Series, Instant)]>,
    updates: u64,
    rate: RateWindow,
    /// Its batches in step (see `FamilyState::streak`).
    streak: u8,
}

impl Drop for Dormant {
    /// A family dropped while hibernating (at exit) gives its series back, as a live one does.
    fn drop(&mut self) {
        release_series(&self.ctx, &self.series_gauge, self.series.len());
    }
}

impl Dormant {
    /// The family of `spec` as it was when it hibernated.
    pub fn wake(mut self, spec: FamilySpec) -> FamilyState {
        let series = std::mem::take(&mut self.series);
        let mut state = FamilyState::new(spec, self.ctx.clone());
        state.series = series
            .into_vec()
            .into_iter()
            .map(|(labels, value, last_seen)| {
                let entry = Entry {
                    value,
                    last_seen,
                    text: String::new(),
                };
                (labels, entry)
            })
            .collect();
        // It published as it stopped, so nothing is dirty; its next update is published at
        // once, its render cost measured again. Its last batch came when its newest series
        // was updated, so the next batch can tell whether the family is steady.
        state.last_batch = state.series.values().map(|entry| entry.last_seen).max();
        state.updates = self.updates;
        state.streak = self.streak;
        state.rate = self.rate.clone();
        state
    }
}

impl FamilyState {
    /// The state to keep while the family hibernates.
    pub fn into_dormant(mut self) -> Dormant {
        // Taken out, the series are not given back when `self` drops (a reservation left
        // unused is).
        let series = std::mem::take(&mut self.series);
        Dormant {
            ctx: self.ctx.clone(),
            series_gauge: self.series_gauge.clone(),
            series: series
                .into_iter()
                .map(|(labels, entry)| (labels, entry.value, entry.last_seen))
                .collect(),
            updates: self.updates,
            rate: self.rate.clone(),
            streak: self.streak,
        }
    }
}
