//! The updates a batcher holds until its next flush: one slot per family and one per series,
//! each found once by name and labels and then by number. A series' latest update is held in
//! its own slot until the flush (or until a sample that does not combine with it): counter
//! and gauge samples combine into one update, and a series' observations gather into one
//! update of several. A sample of a busy series thus touches that slot alone: no hashing of
//! its family or labels, no visit to its family's updates. Slots outlive a flush, so that the
//! batcher's line cache can point at them; they are dropped together past [`SLOT_LIMIT`]
//! series, or when told to.

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::update::{Batch, FamilyMeta, LabelSet, Observation, Op, Update, Updates};

/// Series slots past which all slots are dropped at the next flush, so that memory stays
/// bounded when applications send endless distinct series.
pub(super) const SLOT_LIMIT: usize = 32_768;

/// The observations a series slot keeps room for between flushes whatever it gathers. A slot
/// that gathered more keeps the room they took while it gathers as many in every flush
/// window, so that a busy series does not allocate it again in each; it lets go of it after a
/// window without observations, and of most of it after one with far fewer. The room kept
/// is then at most four times what the last window gathered.
const KEPT_OBSERVATIONS: usize = 8;

/// A family's slot: its name, what it is born with, and its updates since the last flush.
#[derive(Debug)]
struct FamilySlot {
    name: Arc<str>,
    meta: Arc<FamilyMeta>,
    updates: Updates,
}

/// A series' slot: its latest update, its family and its labels.
#[derive(Debug)]
struct SeriesSlot {
    /// `(flush, index)`: if `flush` is the current one, the series' latest update is `held`,
    /// and its place is `updates.list[index]` of its family.
    latest: (u64, u32),
    /// That update's operation and samples, written to its place by [`Pending::settle`]; for
    /// observations, the first of them.
    held: (Op, u64),
    /// The observations after the first, while `held` is an observation.
    more: Vec<Observation>,
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
    /// Series that keep room for more than [`KEPT_OBSERVATIONS`] observations, as of the
    /// last flush.
    roomy: Vec<u32>,
    /// Series that gathered observations into such room in this flush window.
    filled: Vec<u32>,
    /// Counts flushes, so that `latest` positions of an earlier flush are ignored.
    flush: u64,
    /// Updates held, after combining.
    held: usize,
    /// Observations gathered into a held update after its first.
    gathered: usize,
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
            updates: Updates::default(),
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
            more: Vec::new(),
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
    /// update when [`Op::combine`] allows, gathered with it when both are observations,
    /// appended otherwise.
    #[inline]
    pub(super) fn push(&mut self, series: u32, op: Op) {
        let slot = &mut self.series[series as usize];
        let holdable = !matches!(op, Op::Insert(_));
        if holdable && slot.latest.0 == self.flush {
            match (slot.held.0, op) {
                (Op::Observe { .. }, Op::Observe { value, count }) => {
                    slot.more.push(Observation { value, count });
                    slot.held.1 += 1;
                    self.gathered += 1;
                    return;
                }
                (held, op) => {
                    if let Some(combined) = held.combine(op) {
                        slot.held = (combined, slot.held.1 + 1);
                        return;
                    }
                }
            }
            self.settle(series);
        }
        self.append(series, op, holdable);
    }

    /// Appends `op` to its family's updates; one to combine or gather with is then held by
    /// its series.
    fn append(&mut self, series: u32, op: Op, holdable: bool) {
        let slot = &mut self.series[series as usize];
        let family = &mut self.families[slot.family as usize];
        if family.updates.is_empty() {
            self.touched.push(slot.family);
            if family.updates.list.capacity() == 0 {
                family.updates = Updates::spare();
            }
        }
        if holdable {
            if slot.latest.0 != self.flush {
                self.holding.push(series);
            }
            slot.latest = (self.flush, family.updates.list.len() as u32);
            slot.held = (op, 1);
        }
        family.updates.list.push(Update {
            labels: slot.labels.clone(),
            op,
            samples: 1,
        });
        self.held += 1;
    }

    /// Writes the update series `series` holds to its place in its family's updates; several
    /// observations go to the family's observations, in one run.
    fn settle(&mut self, series: u32) {
        let slot = &mut self.series[series as usize];
        let updates = &mut self.families[slot.family as usize].updates;
        let (mut op, samples) = slot.held;
        if let (Op::Observe { value, count }, false) = (op, slot.more.is_empty()) {
            let start = updates.observations.len();
            updates.observations.push(Observation { value, count });
            updates.observations.extend_from_slice(&slot.more);
            op = Op::Observations {
                start: start as u32,
                len: (updates.observations.len() - start) as u32,
            };
            let (len, room) = (slot.more.len(), slot.more.capacity());
            slot.more.clear();
            if room > KEPT_OBSERVATIONS {
                if room > 4 * len {
                    slot.more.shrink_to(2 * len);
                }
                self.filled.push(series);
            }
        }
        let update = &mut updates.list[slot.latest.1 as usize];
        (update.op, update.samples) = (op, samples);
    }

    /// Asks the processor to fetch series slot `series` into its cache, ahead of a
    /// [`Pending::push`] to it.
    #[inline]
    pub(super) fn prefetch(&self, series: u32) {
        if let Some(slot) = self.series.get(series as usize) {
            crate::memory::prefetch_line(slot);
        }
    }

    /// What is held, in updates: each update after combining, and the observations gathered
    /// into them by the room they take (an observation is a value and a count; an update
    /// holds its series' labels, its operation and its sample count, three and a half times
    /// as much).
    pub(super) fn held(&self) -> usize {
        self.held + self.gathered * size_of::<Observation>() / size_of::<Update>()
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
        // Room beyond the kept is let go of by the series that gathered nothing into it this
        // window.
        self.filled.sort_unstable();
        self.filled.dedup();
        for &i in &self.roomy {
            if self.filled.binary_search(&i).is_err() {
                self.series[i as usize].more = Vec::new();
            }
        }
        std::mem::swap(&mut self.roomy, &mut self.filled);
        self.filled.clear();
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
        (self.held, self.gathered) = (0, 0);
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
                .list
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
        // refuses) ends the counter's update: arrival order is kept.
        let observe = |value| Op::Observe { value, count: 1 };
        p.push(s1, Op::Add(1.0));
        p.push(s1, observe(1.0));
        p.push(s1, Op::Add(2.0));
        let (batches, _) = p.take();
        let ops: Vec<_> = batches[0]
            .1
            .updates
            .list
            .iter()
            .map(|u| (u.op, u.samples))
            .collect();
        assert_eq!(
            ops,
            [(Op::Add(1.0), 1), (observe(1.0), 1), (Op::Add(2.0), 1)]
        );
        // The next flush starts afresh, with the same slots.
        p.push(s1, Op::Add(1.0));
        let (batches, _) = p.take();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].1.updates.list[0].op, Op::Add(1.0));
        assert_eq!(p.held(), 0);
    }

    /// One observation of 1.
    const OBSERVE: Op = Op::Observe {
        value: 1.0,
        count: 1,
    };

    /// Slots for two series of one family: unlabelled, and `k="v"`.
    fn two_series() -> (Pending, u32, u32) {
        let mut p = Pending::default();
        let f = p.family(&"lat".into(), &meta());
        let a = p.series(f, &LabelSet::default());
        let b = p.series(f, &LabelSet::from_pairs(vec![("k".into(), "v".into())]));
        (p, a, b)
    }

    #[test]
    fn gathered_observations_weigh_towards_the_threshold_by_their_room() {
        let (mut p, a, _) = two_series();
        p.push(a, OBSERVE);
        assert_eq!(p.held(), 1);
        // Seven gathered observations take as much room as two updates.
        for _ in 0..7 {
            p.push(a, OBSERVE);
        }
        assert_eq!(p.held(), 3);
        // Any other update counts one.
        p.push(a, Op::Add(1.0));
        assert_eq!(p.held(), 4);
        p.take();
        assert_eq!(p.held(), 0);
    }

    #[test]
    fn a_busy_series_keeps_its_room_for_observations_and_an_idle_one_lets_go() {
        let (mut p, a, b) = two_series();
        let room = |p: &Pending, s: u32| p.series[s as usize].more.capacity();
        let window = |p: &mut Pending, counts: [usize; 2]| {
            for (s, n) in [a, b].into_iter().zip(counts) {
                for _ in 0..n {
                    p.push(s, OBSERVE);
                }
            }
            let (batches, _) = p.take();
            let samples: u64 = (batches.iter().flat_map(|(_, batch)| &batch.updates.list))
                .map(|update| update.samples)
                .sum();
            assert_eq!(samples, counts.iter().sum::<usize>() as u64);
        };
        window(&mut p, [100, 100]);
        let (ra, rb) = (room(&p, a), room(&p, b));
        assert!(ra >= 99 && rb >= 99, "{ra} {rb}");
        // Busy again: the same room, no allocation.
        window(&mut p, [100, 1]);
        assert_eq!(room(&p, a), ra);
        assert_eq!(
            room(&p, b),
            0,
            "one observation gathers nothing: the room goes"
        );
        // Far fewer: most of it goes; none: all of it.
        window(&mut p, [10, 0]);
        assert!(room(&p, a) <= 4 * 9, "{}", room(&p, a));
        window(&mut p, [0, 0]);
        assert_eq!(room(&p, a), 0);
    }

    #[test]
    fn a_series_observations_gather_into_one_update_in_one_run() {
        let (mut p, a, b) = two_series();
        let observe = |value, count| Op::Observe { value, count };
        p.push(a, observe(1.0, 1));
        p.push(b, observe(5.0, 1));
        p.push(a, observe(2.0, 10));
        p.push(a, observe(3.0, 1));
        // Two updates, and two observations gathered: each takes 16 bytes, an update 56.
        assert_eq!((size_of::<Observation>(), size_of::<Update>()), (16, 56));
        assert_eq!(p.held(), 2);
        let (batches, _) = p.take();
        let updates = &batches[0].1.updates;
        let ops: Vec<_> = updates.list.iter().map(|u| (u.op, u.samples)).collect();
        // Series a where its first observation came, with its three in one run; series b's
        // single observation as it came.
        assert_eq!(
            ops,
            [
                (Op::Observations { start: 0, len: 3 }, 3),
                (observe(5.0, 1), 1)
            ]
        );
        let values: Vec<_> = updates
            .observations
            .iter()
            .map(|o| (o.value, o.count))
            .collect();
        assert_eq!(values, [(1.0, 1), (2.0, 10), (3.0, 1)]);
        assert_eq!(batches[0].1.samples(), 4);
        // The next flush gathers afresh.
        p.push(a, observe(4.0, 1));
        p.push(a, observe(4.0, 1));
        let (batches, _) = p.take();
        let updates = &batches[0].1.updates;
        assert_eq!(updates.list[0].op, Op::Observations { start: 0, len: 2 });
        assert_eq!(updates.len(), 3);
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
        assert_eq!(batches[0].1.updates.list[0].op, Op::Add(1.0));
    }
}
