//! Update rates: a family's updates per second over a recent window, kept by the family actor
//! that counts them and read by whoever renders them, at any later instant.

use std::time::{Duration, Instant};

/// Width of one bucket; the window is [`BUCKETS`] of them.
const BUCKET: Duration = Duration::from_secs(1);
const BUCKETS: usize = 10;

/// Counts in one-second buckets over the last ten seconds.
///
/// The rate is the count in the window divided by the window's length (nine whole seconds and
/// the current one so far), whatever the family's age: what a family applied over the last
/// ten seconds, spread over them, so the same updates read about the same whenever they are
/// read within the window (ten updates are about 1/s, not ten thousand a second a millisecond
/// after they came).
#[derive(Clone, Debug)]
pub struct RateWindow {
    /// Index (seconds since [`EPOCH`]) of the newest bucket: a window is 44 bytes, as every
    /// family keeps one, a hibernating family's included.
    head: u32,
    counts: [u32; BUCKETS],
}

/// The instant the seconds of every window count from.
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// An instant to the millisecond, in six bytes (seconds and milliseconds since `EPOCH`),
/// for what is kept per family by the million: an `Instant` takes sixteen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed(2))]
pub struct Moment {
    seconds: u32,
    millis: u16,
}

impl Moment {
    /// `at`, to the millisecond below.
    pub fn new(at: Instant) -> Self {
        let since = at.saturating_duration_since(*EPOCH);
        Moment {
            seconds: u32::try_from(since.as_secs()).unwrap_or(u32::MAX),
            // Below 1,000.
            millis: since.subsec_millis() as u16,
        }
    }

    /// The instant it stands for.
    pub fn instant(self) -> Instant {
        *EPOCH
            + Duration::from_secs(u64::from(self.seconds))
            + Duration::from_millis(u64::from(self.millis))
    }
}

/// The second of `at`, counted from [`EPOCH`].
fn slot(at: Instant) -> u32 {
    let seconds = at.saturating_duration_since(*EPOCH).as_nanos() / BUCKET.as_nanos();
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

impl RateWindow {
    /// An empty window starting at `now`.
    pub fn new(now: Instant) -> Self {
        RateWindow {
            head: slot(now),
            counts: [0; BUCKETS],
        }
    }

    /// Records `n` updates at `now`.
    pub fn record(&mut self, now: Instant, n: u64) {
        let slot = slot(now);
        if slot > self.head {
            let stale = (slot - self.head).min(BUCKETS as u32);
            for i in 0..stale {
                self.counts[((self.head + 1 + i) % BUCKETS as u32) as usize] = 0;
            }
            self.head = slot;
        }
        let bucket = &mut self.counts[(self.head % BUCKETS as u32) as usize];
        *bucket = bucket.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// Updates per second at `now`, over the last ten seconds.
    pub fn per_second(&self, now: Instant) -> f64 {
        self.per_second_at(RateAt::new(now))
    }

    /// Updates per second at the instant `at` was made for, over the last ten seconds.
    pub fn per_second_at(&self, at: RateAt) -> f64 {
        let slot = at.slot;
        if self.head.saturating_add(BUCKETS as u32) <= slot {
            // Every count has left the window (a family idle for ten seconds).
            return 0.0;
        }
        let oldest_live = slot.saturating_sub(BUCKETS as u32 - 1);
        let total: u64 = (oldest_live..=self.head.min(slot))
            .filter(|s| self.head - s < BUCKETS as u32)
            .map(|s| u64::from(self.counts[(s % BUCKETS as u32) as usize]))
            .sum();
        total as f64 / at.span
    }
}

/// What the rate of every window at one instant shares: the second it falls in, and the
/// window's length in seconds (the nine buckets before the current one, and the current one
/// so far, whether or not a family lived through them all). Made once for a scrape of a
/// million families.
#[derive(Clone, Copy, Debug)]
pub struct RateAt {
    slot: u32,
    span: f64,
}

impl RateAt {
    /// For the instant `now`.
    pub fn new(now: Instant) -> Self {
        let slot = slot(now);
        let into_bucket = now.saturating_duration_since(*EPOCH + BUCKET * slot);
        let span = BUCKET * (BUCKETS as u32 - 1) + into_bucket;
        RateAt {
            slot,
            span: span.as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A start on a bucket's edge, as the figures below count whole buckets.
    fn start() -> Instant {
        *EPOCH + Duration::from_secs(5)
    }

    #[test]
    fn a_young_window_reads_as_ten_seconds() {
        let t0 = start();
        let mut w = RateWindow::new(t0);
        w.record(t0, 50);
        // The same 50 updates read about 5/s a millisecond, half a second or nine seconds
        // later: over nine seconds and the current one so far.
        for (ms, span) in [(1, 9.001), (500, 9.5), (9_000, 9.0)] {
            let rate = w.per_second(t0 + Duration::from_millis(ms));
            assert!((rate - 50.0 / span).abs() < 1e-9, "{ms} ms: {rate}");
        }
    }

    #[test]
    fn old_counts_leave_the_window() {
        let t0 = start();
        let mut w = RateWindow::new(t0);
        w.record(t0, 100);
        w.record(t0 + Duration::from_secs(12), 20);
        // Window now covers seconds 3..=12 of life: only the 20 updates, over 9.5 s.
        let rate = w.per_second(t0 + Duration::from_millis(12_500));
        assert!((rate - 20.0 / 9.5).abs() < 1e-9, "{rate}");
        // Long idle: rate decays to zero.
        assert_eq!(w.per_second(t0 + Duration::from_secs(60)), 0.0);
        // A count stays in the window for the nine seconds after its own, to the edge.
        let mut w = RateWindow::new(t0);
        w.record(t0, 100);
        let rate = w.per_second(t0 + Duration::from_millis(9_999));
        assert!((rate - 100.0 / 9.999).abs() < 1e-9, "{rate}");
        assert_eq!(w.per_second(t0 + Duration::from_secs(10)), 0.0);
        // Read for many windows at once, the same.
        let at = RateAt::new(t0 + Duration::from_millis(9_999));
        assert_eq!(w.per_second_at(at), rate);
    }

    #[test]
    fn steady_rate_reads_steady() {
        let t0 = start();
        let mut w = RateWindow::new(t0);
        for ms in (0..30_000).step_by(100) {
            w.record(t0 + Duration::from_millis(ms), 10);
        }
        let rate = w.per_second(t0 + Duration::from_secs(30));
        assert!((rate - 100.0).abs() < 1e-6, "{rate}");
    }
}
