//! The state of one set series: distinct members over a sliding window, in bounded memory.
//!
//! The window is cut into four slots, each a HyperLogLog++ sketch (`cardinality-estimator`:
//! exact up to a few members, then 2^12 six-bit registers, about 3 KiB, with a standard error
//! of about 1.6%). The count is the union of the slots that overlap the last window, so it
//! covers between one window and one window plus a quarter; a member stops counting at most
//! a quarter window after the window has passed since it was last seen.

use cardinality_estimator::CardinalityEstimator;
use std::time::{Duration, Instant};

const SLOTS: usize = 4;

type Sketch = CardinalityEstimator<str>;

/// Distinct members of one set series.
#[derive(Clone, Debug)]
pub struct SetSeries {
    epoch: Instant,
    slot: Duration,
    /// Slot index (since `epoch`) of the newest slot.
    head: u64,
    slots: [Sketch; SLOTS],
}

impl SetSeries {
    /// An empty set counting over `window` from `now`.
    pub fn new(window: Duration, now: Instant) -> Self {
        SetSeries {
            epoch: now,
            slot: (window / SLOTS as u32).max(Duration::from_millis(1)),
            head: 0,
            slots: Default::default(),
        }
    }

    fn index(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.epoch).as_nanos() / self.slot.as_nanos()) as u64
    }

    fn advance(&mut self, now: Instant) {
        let index = self.index(now);
        if index > self.head {
            let stale = (index - self.head).min(SLOTS as u64);
            for i in 1..=stale {
                self.slots[((self.head + i) % SLOTS as u64) as usize] = Sketch::new();
            }
            self.head = index;
        }
    }

    /// Adds a member by its hash.
    pub fn insert(&mut self, hash: u64, now: Instant) {
        self.advance(now);
        self.slots[(self.head % SLOTS as u64) as usize].insert_hash(hash);
    }

    /// Distinct members seen in the slots overlapping the last window before `now`.
    pub fn distinct(&self, now: Instant) -> usize {
        let index = self.index(now);
        let oldest = index.saturating_sub(SLOTS as u64 - 1);
        let mut union = Sketch::new();
        for slot in oldest..=self.head.min(index) {
            if self.head - slot < SLOTS as u64 {
                union.merge(&self.slots[(slot % SLOTS as u64) as usize]);
            }
        }
        union.estimate()
    }

    /// True while some member still counts, so the count will change without new members.
    pub fn is_live(&self, now: Instant) -> bool {
        self.index(now) < self.head + SLOTS as u64
    }

    /// How long a quarter window lasts: how often a live set's count is republished.
    pub fn slot(&self) -> Duration {
        self.slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u64) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&n, &mut h);
        std::hash::Hasher::finish(&h)
    }

    #[test]
    fn counts_distinct_members_and_forgets_them() {
        let t0 = Instant::now();
        let mut set = SetSeries::new(Duration::from_secs(60), t0);
        for n in [1, 2, 3, 2, 1] {
            set.insert(hash(n), t0);
        }
        assert_eq!(set.distinct(t0), 3);
        set.insert(hash(4), t0 + Duration::from_secs(30));
        assert_eq!(set.distinct(t0 + Duration::from_secs(59)), 4);
        // 75 s on, the first slot has left the window; member 4 (seen at 30 s) remains.
        assert_eq!(set.distinct(t0 + Duration::from_secs(75)), 1);
        assert!(set.is_live(t0 + Duration::from_secs(75)));
        assert_eq!(set.distinct(t0 + Duration::from_secs(200)), 0);
        assert!(!set.is_live(t0 + Duration::from_secs(200)));
    }

    #[test]
    fn large_sets_stay_within_the_error_bound() {
        let t0 = Instant::now();
        let mut set = SetSeries::new(Duration::from_secs(60), t0);
        for n in 0..100_000 {
            set.insert(hash(n), t0);
        }
        let got = set.distinct(t0) as f64;
        assert!((got - 100_000.0).abs() / 100_000.0 < 0.05, "{got}");
    }
}
