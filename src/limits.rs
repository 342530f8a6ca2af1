//! The series budget: how many series all families together, and each family alone, may hold.
//! A family asks for a unit before it creates a series and returns it when the series expires
//! or the family's state is dropped, so the count is exact and goes down as well as up.

use std::sync::atomic::{AtomicUsize, Ordering};

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
}
