//! When a live family may be idle enough to hibernate, as a time its actor sets and the
//! registry's idle sweep reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// When a live family may first have been idle long enough to hibernate, shared by its actor,
/// which sets it as updates come, and the registry, whose periodic idle sweep asks the family
/// to check once it has passed: an atomic store per batch rather than a timer per family.
#[derive(Clone, Debug)]
pub struct IdleDue(Arc<AtomicU64>);

impl IdleDue {
    const NEVER: u64 = u64::MAX;

    /// Not due until set.
    pub fn new() -> Self {
        IdleDue(Arc::new(AtomicU64::new(Self::NEVER)))
    }

    pub(super) fn set(&self, due: Option<Instant>) {
        self.0
            .store(due.map_or(Self::NEVER, millis), Ordering::Relaxed);
    }

    /// `now` as [`IdleDue::take_due`] takes it: read once for a whole sweep.
    pub fn clock(now: Instant) -> u64 {
        millis(now)
    }

    /// The time set, if any, on the clock of [`IdleDue::clock`].
    pub fn at(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&due| due != Self::NEVER)
    }

    /// True once the time set has passed `now` (from [`IdleDue::clock`]); then it is unset,
    /// so the family is asked once.
    pub fn take_due(&self, now: u64) -> bool {
        let due = self.0.load(Ordering::Relaxed);
        due <= now
            && self
                .0
                .compare_exchange(due, Self::NEVER, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl Default for IdleDue {
    fn default() -> Self {
        IdleDue::new()
    }
}

/// Milliseconds from the first call to `at`.
fn millis(at: Instant) -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    at.saturating_duration_since(start).as_millis() as u64
}
