//! Bounds shared across tasks and actors:
//! - the series budget: how many series all families together, and each family alone, may
//!   hold. A family asks for a unit before it creates a series and returns it when the series
//!   expires or the family's state is dropped, so the count is exact and goes down as well as
//!   up. The registry takes the unit of a new family's first series as it spawns it (so a
//!   name past the limit costs no actor), and the family uses that unit, or gives it back;
//! - the queue bound: how many updates and observations may wait in family actors' mailboxes
//!   (which ractor does not bound). A router reserves room before it sends a batch and the batch gives it back
//!   when it is dropped, applied or not, so the count cannot leak;
//! - the room of maps that swell in a burst (live actors, routes): [`shrink`] gives it back.

use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::update::Updates;

/// Series limits shared by every family actor.
#[derive(Debug)]
pub struct SeriesBudget {
    max_total: usize,
    /// The most series one family may hold.
    pub max_per_family: usize,
    total: AtomicUsize,
}

impl SeriesBudget {
    /// A budget of `max_total` series, at most `max_per_family` in one family.
    pub fn new(max_total: usize, max_per_family: usize) -> Self {
        SeriesBudget {
            max_total,
            max_per_family,
            total: AtomicUsize::new(0),
        }
    }

    /// Takes one series from the budget; false when it is spent.
    pub fn try_take(&self) -> bool {
        self.total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_total).then_some(n + 1)
            })
            .is_ok()
    }

    /// Returns `n` series to the budget.
    pub fn give_back(&self, n: usize) {
        self.total.fetch_sub(n, Ordering::Relaxed);
    }

    /// Series held now.
    pub fn used(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// How many updates and observations may wait in family mailboxes at once.
#[derive(Debug)]
pub struct QueueBound {
    max: usize,
    queued: AtomicUsize,
}

impl QueueBound {
    /// Room for `max` queued updates and observations.
    pub fn new(max: usize) -> Self {
        QueueBound {
            max,
            queued: AtomicUsize::new(0),
        }
    }

    /// Updates waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// A batch of updates on its way to a family actor, holding its room in the [`QueueBound`]
/// until it is dropped.
#[derive(Debug)]
pub struct Queued {
    updates: Updates,
    reserved: usize,
    bound: Arc<QueueBound>,
}

impl Queued {
    /// Reserves room for `updates`; gives them back when the bound is full.
    pub fn reserve(bound: &Arc<QueueBound>, updates: Updates) -> Result<Queued, Updates> {
        let n = updates.len();
        let reserved = bound
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                (q + n <= bound.max).then_some(q + n)
            });
        match reserved {
            Ok(_) => Ok(Queued {
                updates,
                reserved: n,
                bound: bound.clone(),
            }),
            Err(_) => Err(updates),
        }
    }

    /// The updates, to apply; the room is given back when `self` is dropped.
    pub fn take(&mut self) -> Updates {
        std::mem::take(&mut self.updates)
    }

    /// How many updates and observations the batch holds room for.
    pub fn len(&self) -> usize {
        self.reserved
    }

    /// True for a batch of no updates.
    pub fn is_empty(&self) -> bool {
        self.reserved == 0
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.bound
            .queued
            .fetch_sub(self.reserved, Ordering::Relaxed);
    }
}

/// Shrinks a map holding under a quarter of its room (and more than a little room): after a
/// burst, so that each shrink is paid for by the removals before it.
pub fn shrink<K: Eq + std::hash::Hash, V>(map: &mut FxHashMap<K, V>) {
    if map.capacity() > 4 * map.len().max(256) {
        map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_never_overdrawn_and_comes_back() {
        let budget = SeriesBudget::new(2, 10);
        assert!(budget.try_take() && budget.try_take());
        assert!(!budget.try_take());
        budget.give_back(1);
        assert!(budget.try_take());
        assert_eq!(budget.used(), 2);
    }

    #[test]
    fn queued_batches_hold_room_until_dropped() {
        let bound = Arc::new(QueueBound::new(3));
        let update = || crate::update::Update {
            labels: Default::default(),
            op: crate::update::Op::Add(1.0),
            samples: 1,
        };
        let mut first = Queued::reserve(&bound, vec![update(), update()].into()).unwrap();
        assert!(Queued::reserve(&bound, vec![update(), update()].into()).is_err());
        assert_eq!(first.take().len(), 2);
        assert_eq!(
            bound.queued(),
            2,
            "taking the updates keeps the room until the drop"
        );
        drop(first);
        assert_eq!(bound.queued(), 0);
        assert!(Queued::reserve(&bound, vec![update(), update(), update()].into()).is_ok());
    }
}
