//! A hibernating family: what the registry keeps of a family whose actor stopped while idle
//! ([`Dormant`]), the table it keeps them in ([`Hibernating`]), and how one wakes.
//!
//! A hibernating family is one small record beside the snapshot the aggregator already holds:
//! the snapshot carries its name, exposition text, update count and rate, so the record keeps
//! only what a wake-up needs besides (its meta, type, series values), and the table holds a
//! pointer per family, found by the snapshot's name.

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Instant;

use super::series::Series;
use super::state::{is_steady, release_series, streak_after, Entry, FamilyState};
use super::{FamilyContext, FamilySpec};
use crate::exposition::FamilySnapshot;
use crate::rate::Moment;
use crate::update::{FamilyMeta, Kind, LabelSet};

/// A hibernating family's state, as the registry keeps it: its last snapshot (shared with the
/// aggregator), each series' value (the first in the record itself), when its last batch
/// came, and nothing a wake-up can rebuild (rendered lines, publishing times; it published as
/// it stopped). The series stay in the budget and in `tallyd_series`. One allocation of 64
/// bytes for a family of one series.
#[derive(Debug)]
pub struct Dormant {
    snapshot: Arc<FamilySnapshot>,
    meta: Arc<FamilyMeta>,
    series: Values,
    /// When its newest series was updated: a family with a TTL never hibernates, so the
    /// series' own times are of no further use.
    last_batch: Moment,
    kind: Kind,
    /// Its batches in step (see `FamilyState::streak`).
    streak: u8,
}

const _: () = assert!(std::mem::size_of::<Dormant>() == 64);

/// A hibernating family's series and their values: most families have one.
#[derive(Debug)]
enum Values {
    One(LabelSet, Series),
    Many(Box<[(LabelSet, Series)]>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::One(..) => 1,
            Values::Many(all) => all.len(),
        }
    }
}

impl Dormant {
    /// The family's name.
    pub fn name(&self) -> &Arc<str> {
        &self.snapshot.name
    }

    /// How many series it holds.
    pub fn series(&self) -> usize {
        self.series.len()
    }

    /// True when a batch at `now` (whose window closed on the clock when `clocked`) would make
    /// the family steady (see `FamilyState::steady`): updated all the time, it is to have its
    /// actor back rather than be updated where it hibernates.
    pub fn steady_with(&self, ctx: &FamilyContext, now: Instant, clocked: bool) -> bool {
        let streak = streak_after(ctx, Some(self.last_batch.instant()), self.streak, now);
        is_steady(streak, clocked)
    }

    /// The family as it was when it hibernated, its actor's state again.
    pub fn wake(self, ctx: Arc<FamilyContext>) -> FamilyState {
        let Dormant {
            snapshot,
            meta,
            series,
            last_batch,
            kind,
            streak,
        } = self;
        let spec = FamilySpec {
            name: snapshot.name.clone(),
            kind,
            meta,
        };
        let mut state = FamilyState::new(spec, ctx);
        let last_seen = last_batch.instant();
        let entry = |value| Entry {
            value,
            last_seen,
            text: String::new(),
        };
        state.series = match series {
            Values::One(labels, value) => [(labels, entry(value))].into_iter().collect(),
            Values::Many(all) => all
                .into_vec()
                .into_iter()
                .map(|(labels, value)| (labels, entry(value)))
                .collect(),
        };
        // It published as it stopped, so nothing is dirty; its next update is published at
        // once, its render cost measured again. Its last batch tells the next one whether
        // the family is steady.
        state.last_batch = Some(last_seen);
        state.updates = snapshot.updates;
        state.rate = snapshot.rate.clone();
        state.streak = streak;
        state.last_snapshot = Some(snapshot);
        state
    }
}

impl FamilyState {
    /// The state to keep while the family hibernates; its snapshot is published first if
    /// the aggregator does not hold the latest.
    pub fn into_dormant(mut self) -> Box<Dormant> {
        let now = Instant::now();
        self.dirty |= self.last_snapshot.is_none();
        self.publish(now);
        // Published unless it holds no series, which a family that hibernates does.
        let snapshot = (self.last_snapshot.take()).unwrap_or_else(|| Arc::new(self.snapshot(now)));
        // Taken out, the series are not given back when `self` drops (a reservation left
        // unused is).
        let mut series = std::mem::take(&mut self.series)
            .into_iter()
            .map(|(labels, entry)| (labels, entry.value));
        let series = match (series.next(), series.next()) {
            (Some((labels, value)), None) => Values::One(labels, value),
            (first, second) => {
                Values::Many(first.into_iter().chain(second).chain(series).collect())
            }
        };
        Box::new(Dormant {
            snapshot,
            meta: self.meta.clone(),
            series,
            last_batch: Moment::new(self.last_batch.unwrap_or(now)),
            kind: self.kind,
            streak: self.streak,
        })
    }
}

/// The hibernating families, by name: one pointer each in the table.
#[derive(Debug)]
pub struct Hibernating {
    ctx: Arc<FamilyContext>,
    table: HashTable<Box<Dormant>>,
}

fn hash(name: &str) -> u64 {
    FxBuildHasher.hash_one(name)
}

impl Hibernating {
    /// None yet.
    pub fn new(ctx: Arc<FamilyContext>) -> Self {
        Hibernating {
            ctx,
            table: HashTable::new(),
        }
    }

    /// Families hibernating.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// True when the family of this name hibernates.
    pub fn contains(&self, name: &str) -> bool {
        self.table
            .find(hash(name), |d| &**d.name() == name)
            .is_some()
    }

    /// Keeps a family that hibernates (one of its name is not).
    pub fn insert(&mut self, dormant: Box<Dormant>) {
        self.table
            .insert_unique(hash(dormant.name()), dormant, |d| hash(d.name()));
    }

    /// Takes the family of this name out, to wake it.
    pub fn take(&mut self, name: &str) -> Option<Box<Dormant>> {
        let entry = self
            .table
            .find_entry(hash(name), |d| &**d.name() == name)
            .ok()?;
        let (dormant, _) = entry.remove();
        if self.table.len() < self.table.capacity() / 4 {
            self.table.shrink_to_fit(|d| hash(d.name()));
        }
        Some(dormant)
    }
}

impl Drop for Hibernating {
    /// Families dropped while hibernating (at exit) give their series back, as live ones do.
    fn drop(&mut self) {
        for dormant in self.table.drain() {
            let gauge = self.ctx.telemetry.series_gauge(dormant.kind.as_str());
            release_series(&self.ctx, &gauge, dormant.series.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::family::state::tests::{context, spec, update};
    use crate::update::Op;
    use std::time::Duration;

    #[tokio::test]
    async fn a_family_wakes_as_it_hibernated_and_the_table_finds_it_by_name() {
        let ctx = context(Duration::from_secs(15), Some(Duration::from_secs(1))).await;
        let mut table = Hibernating::new(ctx.clone());
        let start = Instant::now();
        for series in [1, 3] {
            let mut family = FamilyState::new(spec(Kind::Counter), ctx.clone());
            family.name = format!("c{series}").into();
            for (i, at) in [0, 2_100, 4_200].into_iter().enumerate() {
                let batch = (0..series).map(|s| update(&s.to_string(), Op::Add(i as f64 + 1.0)));
                let now = start + Duration::from_millis(at);
                family.apply(&mut batch.collect::<Vec<_>>().into(), now);
            }
            let (updates, streak, last_batch) = (family.updates, family.streak, family.last_batch);
            let rate = family.rate.clone();
            let dormant = family.into_dormant();
            assert_eq!(dormant.series.len(), series);
            assert_eq!(matches!(dormant.series, Values::One(..)), series == 1);
            let snapshot = dormant.snapshot.clone();
            assert_eq!(snapshot.series, series);
            table.insert(dormant);
            assert!(table.contains(&format!("c{series}")));

            let woken = table.take(&format!("c{series}")).unwrap().wake(ctx.clone());
            assert!(!table.contains(&format!("c{series}")));
            assert_eq!(&*woken.name, &*format!("c{series}"));
            let mut values: Vec<(String, f64)> = woken
                .series
                .iter()
                .map(|(labels, entry)| (format!("{labels:?}"), entry.value.value_sum(start)))
                .collect();
            values.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(values.len(), series);
            assert!(values.iter().all(|(_, v)| *v == 6.0), "{values:?}");
            assert_eq!(woken.updates, updates);
            assert_eq!(woken.streak, streak);
            assert_eq!(woken.rate.per_second(start), rate.per_second(start));
            // The last batch, to the millisecond.
            let gap = last_batch.unwrap() - woken.last_batch.unwrap();
            assert!(gap < Duration::from_millis(1), "{gap:?}");
            // The snapshot the aggregator holds is the one it goes on from.
            assert!(Arc::ptr_eq(
                woken.last_snapshot.as_ref().unwrap(),
                &snapshot
            ));
            table.insert(woken.into_dormant());
        }
        assert_eq!(table.len(), 2);
        assert_eq!(ctx.budget.used(), 4);
        drop(table);
        assert_eq!(ctx.budget.used(), 0, "dropped, they give their series back");
    }
}
