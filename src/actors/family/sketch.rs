//! A summary series' quantile sketch: a DDSketch (Masson, Rim and Lee, 2019) with DataDog's
//! defaults, so that every quantile it reports is within 1% (relative) of a value at that
//! rank, in at most 2,048 bins per sign, whatever the number of observations.
//!
//! A value `v` above `1e-9` goes to bin `floor(ln v / ln γ)`, `γ = 1.01 / 0.99`, and reads back
//! as `γ^k · 2γ / (γ + 1)`, within 1% of every value of its bin; negative values have bins of
//! their own, by magnitude, and values within `1e-9` of 0 a count of their own. A sign's bins
//! are dense, from the lowest key they cover: they start at one cache line and grow as values
//! land outside them. Past 2,048 bins the lowest keys are merged into the lowest kept, so the
//! quantiles near the top stay within 1%.
//!
//! An observation's bin is found apart from adding to it: a family asks for the bins of a
//! batch's observations ([`Sketch::prefetch`]) before it adds them, so that their cache misses
//! overlap rather than come one after another.

/// The relative accuracy.
const ALPHA: f64 = 0.01;
/// The ratio of a bin's upper bound to its lower one.
const GAMMA: f64 = (1.0 + ALPHA) / (1.0 - ALPHA);
/// Magnitudes at most this are counted as 0.
const MIN_VALUE: f64 = 1.0e-9;
/// The most bins one sign keeps.
const MAX_BINS: usize = 2048;
/// The fewest bins a sign allocates: one cache line.
const MIN_BINS: usize = 8;

/// The key of the bin of a magnitude above [`MIN_VALUE`]: from -1,037 up to 35,488 for a
/// finite one; an infinite one's is above them all, and far enough from `i32::MAX` that a
/// sign's bins never cover a key past it.
fn key(magnitude: f64) -> i32 {
    let log = magnitude.ln() / GAMMA.ln();
    // `floor`, without a call to the C library's: truncated, then one less for a negative
    // with a fraction.
    let truncated = log as i32;
    let floor = truncated - i32::from(f64::from(truncated) > log);
    floor.min(i32::MAX / 2)
}

/// The value a bin reads as.
fn value(key: i32) -> f64 {
    (f64::from(key) * GAMMA.ln()).exp() * (2.0 * GAMMA / (1.0 + GAMMA))
}

/// A DDSketch of observations (see the module's documentation).
#[derive(Clone, Debug)]
pub(super) struct Sketch {
    positive: Bins,
    /// Negative values, by magnitude.
    negative: Bins,
    /// Values within [`MIN_VALUE`] of 0 (and NaN).
    zero: u64,
    /// The smallest and largest values observed, which the quantiles are clamped to.
    min: f64,
    max: f64,
}

/// The bins of one sign: `counts[i]` holds the values of key `offset + i`.
#[derive(Clone, Debug, Default)]
struct Bins {
    counts: Vec<u64>,
    offset: i32,
    /// The sum of `counts`.
    total: u64,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch {
            positive: Bins::default(),
            negative: Bins::default(),
            zero: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

/// Whether `v` goes to the negative bins, and its key there; `None` for a value counted as 0.
fn place(v: f64) -> Option<(bool, i32)> {
    if v > MIN_VALUE {
        Some((false, key(v)))
    } else if v < -MIN_VALUE {
        Some((true, key(-v)))
    } else {
        None
    }
}

impl Sketch {
    /// Asks for the memory that adding `v` will write, without waiting for it.
    pub(super) fn prefetch(&self, v: f64) {
        if let Some((negative, key)) = place(v) {
            let bins = if negative {
                &self.negative
            } else {
                &self.positive
            };
            if let Some(i) = bins.index(key) {
                crate::memory::prefetch_line(&bins.counts[i]);
            }
        }
    }

    /// Records `v` `n` times.
    pub(super) fn add(&mut self, v: f64, n: u64) {
        if n == 0 {
            return;
        }
        match place(v) {
            Some((true, key)) => self.negative.add(key, n),
            Some((false, key)) => self.positive.add(key, n),
            None => self.zero = self.zero.saturating_add(n),
        }
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// How many observations it holds.
    pub(super) fn count(&self) -> u64 {
        self.negative
            .total
            .saturating_add(self.zero)
            .saturating_add(self.positive.total)
    }

    /// The `q` quantile (`0 <= q <= 1`): the observation of rank `ceil(q * n)` (1-based, at
    /// least 1), as Prometheus client summaries define it, within 1%, and never outside the
    /// smallest and largest observed; exactly the largest for the top rank; NaN for none.
    pub(super) fn quantile(&self, q: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return f64::NAN;
        }
        // 0-based.
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n) - 1;
        if rank == n - 1 {
            return self.max;
        }
        let negative = self.negative.total;
        let v = if rank < negative {
            -value(self.negative.key_at(negative - 1 - rank))
        } else if rank - negative < self.zero {
            0.0
        } else {
            value(self.positive.key_at(rank - negative - self.zero))
        };
        v.clamp(self.min, self.max)
    }
}

impl Bins {
    /// Where `key`'s count is, if the bins cover it.
    fn index(&self, key: i32) -> Option<usize> {
        let i = i64::from(key) - i64::from(self.offset);
        usize::try_from(i).ok().filter(|&i| i < self.counts.len())
    }

    fn add(&mut self, key: i32, n: u64) {
        let i = match self.index(key) {
            Some(i) => i,
            None => self.make_room(key),
        };
        self.counts[i] = self.counts[i].saturating_add(n);
        self.total = self.total.saturating_add(n);
    }

    /// Grows (or, past [`MAX_BINS`], shifts) the bins to cover `key`, or the lowest bin kept
    /// when `key` is below what the bins may cover; returns `key`'s index.
    #[cold]
    fn make_room(&mut self, key: i32) -> usize {
        let key = i64::from(key);
        let len = self.counts.len();
        let (low, top) = if len == 0 {
            (key, key)
        } else {
            let offset = i64::from(self.offset);
            (key.min(offset), key.max(offset + len as i64 - 1))
        };
        let span = usize::try_from(top - low + 1).unwrap_or(usize::MAX);
        // Twice as many as before, at least what the keys span, whole cache lines, at most
        // the limit.
        let new_len = span
            .max(2 * len)
            .max(MIN_BINS)
            .next_multiple_of(MIN_BINS)
            .min(MAX_BINS);
        let offset = if len == 0 {
            // The first key, in the middle.
            key - (new_len / 2) as i64
        } else if key < i64::from(self.offset) || span > new_len {
            // Room to grow downwards; or, past the limit, the top keys kept.
            top + 1 - new_len as i64
        } else {
            // Room to grow upwards.
            low
        };
        if len != new_len || i64::from(self.offset) != offset {
            let mut counts = vec![0u64; new_len];
            for (i, &n) in self.counts.iter().enumerate().filter(|(_, &n)| n > 0) {
                // Keys below the new range go to its lowest bin.
                let at = (i64::from(self.offset) + i as i64 - offset).max(0) as usize;
                counts[at] = counts[at].saturating_add(n);
            }
            self.counts = counts;
            // Within i32: keys lie within ±i32::MAX / 2, and the bins span at most MAX_BINS.
            self.offset = offset as i32;
        }
        (key - offset).max(0) as usize
    }

    /// The key of the observation of 0-based rank `rank` (below `total`).
    fn key_at(&self, rank: u64) -> i32 {
        let mut seen = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(n);
            if seen > rank {
                return self.offset + i as i32;
            }
        }
        self.offset + self.counts.len() as i32 - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact observation of 1-based rank `ceil(q * n)` among `values`.
    fn exact(values: &[f64], q: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    fn sketch_of(values: &[f64]) -> Sketch {
        let mut sketch = Sketch::default();
        for &v in values {
            sketch.add(v, 1);
        }
        sketch
    }

    fn within_one_percent(got: f64, want: f64) -> bool {
        (got - want).abs() <= 0.01 * want.abs() + f64::EPSILON
    }

    #[test]
    fn every_quantile_is_within_one_percent_of_the_observation_at_its_rank() {
        let values: Vec<f64> = (0..10_000)
            .map(|i| {
                let v = 1e-6 * 1.001f64.powi(i * 7 % 10_007);
                if i % 5 == 0 {
                    -v
                } else {
                    v
                }
            })
            .chain([0.0; 40])
            .collect();
        let sketch = sketch_of(&values);
        assert_eq!(sketch.count(), 10_040);
        for q in [
            0.0, 0.001, 0.1, 0.19, 0.2, 0.201, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0,
        ] {
            let (got, want) = (sketch.quantile(q), exact(&values, q));
            assert!(within_one_percent(got, want), "q {q}: {got} for {want}");
        }
    }

    #[test]
    fn the_top_rank_reads_the_largest_observation_and_none_reads_nan() {
        let sketch = sketch_of(&[3.0, 1.0, 2.0]);
        assert_eq!(sketch.quantile(1.0), 3.0);
        assert_eq!(sketch.quantile(0.99), 3.0);
        assert!((sketch.quantile(0.5) - 2.0).abs() <= 0.02);
        assert_eq!(sketch_of(&[7.5]).quantile(0.5), 7.5);
        assert!(Sketch::default().quantile(0.5).is_nan());
    }

    #[test]
    fn bins_grow_on_the_side_values_come_from_and_stop_at_the_limit() {
        let mut sketch = Sketch::default();
        sketch.add(1.0, 1);
        assert_eq!(sketch.positive.counts.len(), MIN_BINS);
        // Values a factor of 1e6 apart: about 700 keys.
        for i in 0..=60 {
            sketch.add(10f64.powf(f64::from(i) / 10.0), 1);
        }
        let covered = sketch.positive.counts.len();
        assert!((700..=1024).contains(&covered), "{covered}");
        assert_eq!(sketch.positive.total, 62);
        // 1e-9 to 1e300: far more keys than the limit; the lowest merge.
        sketch.add(1e300, 2);
        sketch.add(1e-8, 3);
        assert_eq!(sketch.positive.counts.len(), MAX_BINS);
        assert_eq!(sketch.positive.total, 67);
        assert_eq!(
            sketch.positive.counts[0], 65,
            "all but the top value, merged"
        );
        assert_eq!(sketch.quantile(1.0), 1e300);
        // Rank 66 of 67: the 1e300s, at the top of the bins.
        assert!(within_one_percent(sketch.quantile(0.98), 1e300));
    }

    #[test]
    fn counts_and_magnitudes_saturate_rather_than_overflow() {
        let mut sketch = Sketch::default();
        sketch.add(f64::MAX, u64::MAX);
        sketch.add(f64::INFINITY, u64::MAX);
        sketch.add(-f64::MAX, 1);
        sketch.add(f64::NAN, 1);
        assert_eq!(sketch.count(), u64::MAX);
        assert_eq!(sketch.quantile(1.0), f64::INFINITY);
        assert!(within_one_percent(sketch.quantile(0.0), -f64::MAX));
    }

    #[test]
    fn a_prefetch_changes_nothing() {
        let mut sketch = sketch_of(&[1.0, 2.0]);
        let before = sketch.positive.counts.clone();
        for v in [1.5, -4.0, 0.0, 1e300, f64::NAN] {
            sketch.prefetch(v);
        }
        assert_eq!(sketch.positive.counts, before);
        sketch.add(1.5, 1);
        assert_eq!(sketch.count(), 3);
    }
}
