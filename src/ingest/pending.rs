//! The updates a batcher holds until its next flush: one slot per family and one per series,
//! each found once by name and labels and then by number. A series' latest combinable update
//! is held in its own slot until the flush (or until a counter or gauge sample that does not
//! combine with it), so a sample of a busy series touches that slot alone: no hashing of its
//! family or labels, no visit to its family's updates. Slots outlive a flush, so that the
//! batcher's line cache can point at them; they are dropped together past [`SLOT_LIMIT`]
//! series, or when told to.

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::update::Batch;
use crate::update::FamilyMeta;
use crate::update::{LabelSet, Op, Update};

/// Series slots past which all slots are dropped at the next flush, so that memory stays
/// bounded when applications send endless distinct series.
pub(super) const SLOT_LIMIT: usize = 32_768;

/// A family's slot: its name, what it is born with, and its updates since the last flush.
#[derive(Debug)]
struct FamilySlot {
    name: Arc<str>,
    meta: Arc<FamilyMeta>,
    updates: Vec<Update>,
}

/// A series' slot: its latest combinable update, its family and its labels.
#[derive(Debug)]
struct SeriesSlot {
    /// `(flush, index)`: if `flush` is the current one, the series' latest counter or gauge
    /// update is `held`, and its place is `updates[index]` of its family.
    latest: (u64, u32),
    /// That update's operation and samples, written to its place by [`Pending::settle`].
    held: (Op, u64),
    family: u32,
    labels: LabelSet,
}

/// Family and series slots, and the updates they hold.
#[derive(Debug, Default)]
pub(super) struct Pending {
    families: Vec<FamilySlot>,
    /// Family slots by name.
    family_index: HashTable<u32>,
    series: Vec<SeriesSlot>,
    /// Series slots by family and labels.
    series_index: HashTable<u32>,
    /// Families with updates, each once.
    touched: Vec<u32>,
    /// Series that held an update in this flush, to settle at the flush.
    holding: Vec<u32>,
    /// Counts flushes, so that `latest` positions of an earlier flush are ignored.
    flush: u64,
    /// Updates held, after combining.
    held: usize,
    /// Drop every slot at the next flush.
    reset: bool,
}

impl Pending {
    /// The slot of family `name`, made with `meta` if there is none.
    pub(super) fn family(&mut self, name: &Arc<str>, meta: &Arc<FamilyMeta>) -> u32 {
        let hash = FxBuildHasher.hash_one(&**name);
        let families = &self.families;
        let found = self
            .family_index
            .find(hash, |&i| *families[i as usize].name == **name);
        if let Some(&i) = found {
            return i;
        }
        let i = self.families.len() as u32;
        self.families.push(FamilySlot {
            name: name.clone(),
            meta: meta.clone(),
            updates: Vec::new(),
        });
        let families = &self.families;
        self.family_index.insert_unique(hash, i, |&j| {
            FxBuildHasher.hash_one(&*families[j as usize].name)
        });
        i
    }

    /// The slot of the series `labels` of family slot `family`, made if there is none.
    pub(super) fn series(&mut self, family: u32, labels: &LabelSet) -> u32 {
        let hash = FxBuildHasher.hash_one((family, labels));
        let series = &self.series;
        let found = self.series_index.find(hash, |&i| {
            let slot = &series[i as usize];
            slot.family == family && slot.labels == *labels
        });
        if let Some(&i) = found {
            return i;
        }
        let i = self.series.len() as u32;
        self.series.push(SeriesSlot {
            latest: (self.flush.wrapping_sub(1), 0),
            held: (Op::Add(0.0), 0),
            family,
            labels: labels.clone(),
        });
        let series = &self.series;
        self.series_index.insert_unique(hash, i, |&j| {
            let slot = &series[j as usize];
            FxBuildHasher.hash_one((slot.family, &slot.labels))
        });
        i
    }

    /// Adds one sample's operation to series slot `series`: combined into the series' latest
    /// update when [`Op::combine`] allows, appended otherwise.
    #[inline]
    pub(super) fn push(&mut self, series: u32, op: Op) {
        let slot = &mut self.series[series as usize];
        let combinable = matches!(op, Op::Add(_) | Op::Set(_) | Op::Shift(_));
        if combinable && slot.latest.0 == self.flush {
            if let Some(combined) = slot.held.0.combine(op) {
                slot.held = (combined, slot.held.1 + 1);
                return;
            }
            self.settle(series);
        }
        self.append(series, op, combinable);
    }

    /// Appends `op` to its family's updates; a combinable one is then held by its series.
    fn append(&mut self, series: u32, op: Op, combinable: bool) {
        let slot = &mut self.series[series as usize];
        let family = &mut self.families[slot.family as usize];
        if family.updates.is_empty() {
            self.touched.push(slot.family);
        }
        if combinable {
            if slot.latest.0 != self.flush {
                self.holding.push(series);
            }
            slot.latest = (self.flush, family.updates.len() as u32);
            slot.held = (op, 1);
        }
        family.updates.push(Update {
            labels: slot.labels.clone(),
            op,
            samples: 1,
        });
        self.held += 1;
    }

    /// Writes the update series `series` holds to its place in its family's updates.
    fn settle(&mut self, series: u32) {
        let slot = &self.series[series as usize];
        let update = &mut self.families[slot.family as usize].updates[slot.latest.1 as usize];
        (update.op, update.samples) = slot.held;
    }

    /// Asks the processor to fetch series slot `series` into its cache, ahead of a
    /// [`Pending::push`] to it.
    #[inline]
    pub(super) fn prefetch(&self, series: u32) {
        if let Some(slot) = self.series.get(series as usize) {
            super::lines::prefetch_line(slot);
        }
    }

    /// Updates held, after combining.
    pub(super) fn held(&self) -> usize {
        self.held
    }

    /// Drops every slot (the routes they were made from changed): now if no update is held,
    /// else at the next flush.
    pub(super) fn reset(&mut self) {
        if self.held == 0 {
            *self = Pending::default();
        } else {
            self.reset = true;
        }
    }

    /// Takes every family's updates, as one batch per family; past [`SLOT_LIMIT`] series, or
    /// when told to, drops every slot afterwards and returns true.
    pub(super) fn take(&mut self) -> (Vec<(Arc<str>, Batch)>, bool) {
        for i in 0..self.holding.len() {
            self.settle(self.holding[i]);
        }
        self.holding.clear();
        let batches = self
            .touched
            .drain(..)
            .map(|i| {
                let family = &mut self.families[i as usize];
                let batch = Batch {
                    meta: family.meta.clone(),
                    updates: std::mem::take(&mut family.updates),
                };
                (family.name.clone(), batch)
            })
            .collect();
        self.held = 0;
        self.flush = self.flush.wrapping_add(1);
        let dropped = self.reset || self.series.len() > SLOT_LIMIT;
        if dropped {
            *self = Pending::default();
        }
        (batches, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::DEFAULT_HELP;

    fn meta() -> Arc<FamilyMeta> {
        Arc::new(FamilyMeta {
            help: DEFAULT_HELP.into(),
            observer: Default::default(),
            ttl: None,
        })
    }

    #[test]
    fn a_series_latest_update_absorbs_what_combines_until_the_flush() {
        let mut p = Pending::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let fa = p.family(&a, &meta());
        let fb = p.family(&b, &meta());
        assert_eq!(p.family(&a, &meta()), fa);
        let tagged = LabelSet::from_pairs(vec![("k".into(), "v".into())]);
        let s1 = p.series(fa, &LabelSet::default());
        let s2 = p.series(fa, &tagged);
        let s3 = p.series(fb, &LabelSet::default());
        assert_eq!(p.series(fa, &tagged), s2);
        assert_ne!(s1, s3);
        p.push(s1, Op::Add(1.0));
        p.push(s2, Op::Add(2.0));
        p.push(s1, Op::Add(3.0));
        p.push(s3, Op::Set(5.0));
        p.push(s3, Op::Add(1.0));
        p.push(s3, Op::Set(7.0));
        assert_eq!(p.held(), 5);
        let (mut batches, dropped) = p.take();
        assert!(!dropped);
        batches.sort_by(|x, y| x.0.cmp(&y.0));
        let ops = |i: usize| -> Vec<(Op, u64)> {
            batches[i]
                .1
                .updates
                .iter()
                .map(|u| (u.op, u.samples))
                .collect()
        };
        assert_eq!(ops(0), [(Op::Add(4.0), 2), (Op::Add(2.0), 1)]);
        // A set after a counter sample is not folded into the earlier set: order is kept.
        assert_eq!(
            ops(1),
            [(Op::Set(5.0), 1), (Op::Add(1.0), 1), (Op::Set(7.0), 1)]
        );
        // An observation between two counter samples of a series (a type conflict its family
        // refuses) leaves the held update where it was, still absorbing.
        p.push(s1, Op::Add(1.0));
        p.push(
            s1,
            Op::Observe {
                value: 1.0,
                count: 1,
            },
        );
        p.push(s1, Op::Add(2.0));
        let (batches, _) = p.take();
        let ops: Vec<_> = batches[0]
            .1
            .updates
            .iter()
            .map(|u| (u.op, u.samples))
            .collect();
        assert_eq!(
            ops,
            [
                (Op::Add(3.0), 2),
                (
                    Op::Observe {
                        value: 1.0,
                        count: 1
                    },
                    1
                )
            ]
        );
        // The next flush starts afresh, with the same slots.
        p.push(s1, Op::Add(1.0));
        let (batches, _) = p.take();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].1.updates[0].op, Op::Add(1.0));
        assert_eq!(p.held(), 0);
    }

    #[test]
    fn slots_are_dropped_past_the_limit_or_when_told() {
        let mut p = Pending::default();
        let name: Arc<str> = "f".into();
        let f = p.family(&name, &meta());
        for i in 0..=SLOT_LIMIT {
            let labels = LabelSet::from_pairs(vec![("i".into(), i.to_string().into())]);
            p.series(f, &labels);
        }
        assert!(p.take().1);
        // Numbered from the start again.
        let f = p.family(&name, &meta());
        assert_eq!((f, p.series(f, &LabelSet::default())), (0, 0));
        assert!(!p.take().1);
        // With nothing held, a reset is immediate...
        p.family(&"g".into(), &meta());
        p.reset();
        assert_eq!(p.family(&"g".into(), &meta()), 0);
        // ...and otherwise waits for the flush, which hands over what is held.
        let s = p.series(0, &LabelSet::default());
        p.push(s, Op::Add(1.0));
        p.reset();
        let (batches, dropped) = p.take();
        assert!(dropped);
        assert_eq!(batches[0].1.updates[0].op, Op::Add(1.0));
    }
}
