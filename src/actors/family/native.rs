//! A native (exponential) histogram, as client_golang keeps one for statsd_exporter: sparse
//! buckets whose bounds grow by a factor of `2^(2^-schema)`, the schema chosen from the
//! bucket factor, a zero bucket for values within `2^-128` of 0, and, after an observation
//! that leaves more buckets than allowed, the schema lowered by one (every two buckets
//! merged), down to the coarsest schema.
//!
//! Bucket `k` of schema `s` holds the values `v` with `2^((k-1)/2^s) < |v| <= 2^(k/2^s)`;
//! positive and negative values have buckets of their own. The buckets are kept as sorted
//! `(key, count)` pairs, so a series costs 16 bytes per bucket in use, at most
//! `max_buckets` of them, whatever values arrive.

/// client_golang's `DefNativeHistogramZeroThreshold`: `2^-128`.
pub const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;

/// The coarsest and finest schemas Prometheus defines.
const SCHEMAS: std::ops::RangeInclusive<i32> = -4..=8;

/// The schema client_golang picks for a bucket factor (greater than 1): the finest whose
/// bucket growth does not exceed it, computed with Go's `math.Log2`, as the edge cases
/// (a factor of exactly `2^(1/4)`, say) come out of it.
pub fn schema_for(factor: f64) -> i32 {
    let floor = go_log2(go_log2(factor)).floor();
    if floor <= -8.0 {
        *SCHEMAS.end()
    } else if floor >= 4.0 {
        *SCHEMAS.start()
    } else {
        -(floor as i32)
    }
}

/// The observations of one series, in exponential buckets.
#[derive(Clone, Debug, PartialEq)]
pub struct Native {
    schema: i32,
    max_buckets: usize,
    zero_count: u64,
    /// Buckets of positive values, by key, ascending.
    positive: Vec<(i32, u64)>,
    /// Buckets of negative values, by key (of the absolute value), ascending.
    negative: Vec<(i32, u64)>,
}

/// For each schema above 0, the bucket bounds within one power of two, as fractions of it:
/// `2^(i/2^schema) / 2` for `i` in `0..2^schema`.
static BOUNDS: std::sync::LazyLock<Vec<Vec<f64>>> = std::sync::LazyLock::new(|| {
    (0..=*SCHEMAS.end())
        .map(|schema| {
            let per_power = 1u32 << schema;
            (0..per_power)
                .map(|i| 0.5 * (f64::from(i) / f64::from(per_power)).exp2())
                .collect()
        })
        .collect()
});

/// The key of the bucket of `v` (positive, finite, above the zero threshold) in `schema`.
fn key(v: f64, schema: i32) -> i32 {
    let (frac, exp) = frexp(v);
    if schema > 0 {
        // The bucket is the first bound within the power of two not below `frac`
        // (upper-inclusive), continued across powers of two.
        let bounds = &BOUNDS[schema as usize];
        let index = bounds.partition_point(|&bound| bound < frac) as i32;
        index + (exp - 1) * bounds.len() as i32
    } else {
        // Powers of two (schema 0), or every 2^-schema of them merged.
        let mut key = exp;
        if frac == 0.5 {
            key -= 1;
        }
        let offset = (1 << -schema) - 1;
        (key + offset) >> -schema
    }
}

/// Go's `math.Log2`: exact for powers of two, else `ln(frac) / ln 2 + exp`.
fn go_log2(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return x.log2();
    }
    let (frac, exp) = frexp(x);
    if frac == 0.5 {
        return f64::from(exp - 1);
    }
    frac.ln() * (1.0 / std::f64::consts::LN_2) + f64::from(exp)
}

/// `v = frac * 2^exp` with `frac` in `[0.5, 1)`, as Go's `math.Frexp`, for finite `v > 0`.
fn frexp(v: f64) -> (f64, i32) {
    let bits = v.to_bits();
    let exp_bits = ((bits >> 52) & 0x7ff) as i32;
    if exp_bits == 0 {
        // Subnormal: scale into the normal range first.
        let (frac, exp) = frexp(v * 2f64.powi(64));
        return (frac, exp - 64);
    }
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (frac, exp_bits - 1022)
}

impl Native {
    /// An empty histogram for a bucket factor above 1 and at most `max_buckets` buckets (0:
    /// no limit).
    pub fn new(factor: f64, max_buckets: u32) -> Self {
        Native {
            schema: schema_for(factor),
            max_buckets: max_buckets as usize,
            zero_count: 0,
            positive: Vec::new(),
            negative: Vec::new(),
        }
    }

    /// Records `value` `n` times, as `n` observations in a row; returns how many times the
    /// resolution was halved.
    pub fn observe(&mut self, value: f64, n: u64) -> u32 {
        let magnitude = value.abs();
        if magnitude <= ZERO_THRESHOLD {
            self.zero_count = self.zero_count.saturating_add(n);
            // Each observation may halve once (see `limit`), the zero bucket's too.
            return (0..n.min(64)).map(|_| self.limit()).sum();
        }
        let mut halvings = 0;
        let mut left = n;
        while left > 0 {
            // The key moves when the schema does.
            let key = key(magnitude, self.schema);
            let positive = value > 0.0;
            let buckets = self.side(positive);
            let i = match buckets.binary_search_by_key(&key, |&(k, _)| k) {
                Ok(i) => i,
                Err(i) => {
                    buckets.insert(i, (key, 0));
                    i
                }
            };
            // Until the buckets fit or cannot shrink, observations go one at a time, as
            // each may halve the resolution; then the rest go at once.
            let one_by_one = self.over() && self.schema > *SCHEMAS.start();
            let take = if one_by_one { 1 } else { left };
            let bucket = &mut self.side(positive)[i].1;
            *bucket = bucket.saturating_add(take);
            left -= take;
            halvings += self.limit();
        }
        halvings
    }

    fn side(&mut self, positive: bool) -> &mut Vec<(i32, u64)> {
        if positive {
            &mut self.positive
        } else {
            &mut self.negative
        }
    }

    fn over(&self) -> bool {
        self.max_buckets > 0 && self.positive.len() + self.negative.len() > self.max_buckets
    }

    /// After each observation, with more buckets than `max_buckets`, halves the resolution
    /// once, as client_golang does when neither a reset nor a wider zero bucket is allowed
    /// (statsd_exporter allows neither); not below the coarsest schema. So the buckets may
    /// stay over the limit until later observations.
    fn limit(&mut self) -> u32 {
        if !self.over() || self.schema == *SCHEMAS.start() {
            return 0;
        }
        self.schema -= 1;
        for buckets in [&mut self.positive, &mut self.negative] {
            merge_pairs(buckets);
        }
        1
    }

    /// The schema.
    pub fn schema(&self) -> i32 {
        self.schema
    }

    /// Observations in the zero bucket.
    pub fn zero_count(&self) -> u64 {
        self.zero_count
    }

    /// The positive buckets, then the negative ones, as `(key, count)` ascending by key.
    pub fn buckets(&self) -> [&[(i32, u64)]; 2] {
        [&self.positive, &self.negative]
    }
}

/// Bucket `k` of a schema becomes bucket `ceil(k / 2)` of the next coarser one.
fn merge_pairs(buckets: &mut Vec<(i32, u64)>) {
    let mut merged: Vec<(i32, u64)> = Vec::with_capacity(buckets.len());
    for &(key, count) in buckets.iter() {
        let key = key.div_euclid(2) + key.rem_euclid(2);
        match merged.last_mut() {
            Some(last) if last.0 == key => last.1 = last.1.saturating_add(count),
            _ => merged.push((key, count)),
        }
    }
    *buckets = merged;
}

/// Spans and deltas, as client_golang writes a side of buckets: each span an offset (from 0
/// for the first, from the end of the last for the others) and a length, a gap of one or two
/// empty buckets being carried in the span rather than starting a new one; each delta a
/// bucket's count less the one before.
pub fn spans_and_deltas(buckets: &[(i32, u64)]) -> (Vec<(i32, u32)>, Vec<i64>) {
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut deltas = Vec::with_capacity(buckets.len());
    let (mut next_key, mut last_count) = (0i32, 0i64);
    for (i, &(key, count)) in buckets.iter().enumerate() {
        let gap = key - next_key;
        match spans.last_mut() {
            Some(span) if i > 0 && gap <= 2 => {
                span.1 += gap as u32 + 1;
                for _ in 0..gap {
                    deltas.push(-last_count);
                    last_count = 0;
                }
            }
            _ => spans.push((if i == 0 { key } else { gap }, 1)),
        }
        let count = count.min(i64::MAX as u64) as i64;
        deltas.push(count - last_count);
        (next_key, last_count) = (key + 1, count);
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    //! Expectations from statsd_exporter 0.30.0 itself (its client_golang): scraped in the
    //! protobuf format after the same observations, or computed by client_golang's code.
    use super::*;

    /// Nine observations of every kind: positive, negative, zero, tiny, large.
    const S9: [f64; 9] = [1.0, 1.5, 2.0, 3.0, -1.0, 0.0, 0.001, 100.0, 1000.0];

    fn observed(factor: f64, max_buckets: u32, values: &[f64]) -> Native {
        let mut h = Native::new(factor, max_buckets);
        for &v in values {
            h.observe(v, 1);
        }
        h
    }

    type Side = (Vec<(i32, u32)>, Vec<i64>);

    /// Schema, zero count, positive and negative spans and deltas.
    fn exposed(h: &Native) -> (i32, u64, Side, Side) {
        let [positive, negative] = h.buckets().map(spans_and_deltas);
        (h.schema(), h.zero_count(), positive, negative)
    }

    fn side(spans: &[(i32, u32)], deltas: &[i64]) -> Side {
        (spans.to_vec(), deltas.to_vec())
    }

    #[test]
    fn schemas_follow_the_bucket_factor_as_in_client_golang() {
        for (factor, schema) in [
            (1.0000001, 8),
            (1.0054, 8),
            (1.01, 7),
            (1.05, 4),
            (1.09, 4),
            (1.0905, 4),
            (1.0906, 3),
            (1.1, 3),
            (1.2, 2),
            (1.5, 1),
            (1.99, 1),
            (2.0, 0),
            (3.0, 0),
            (4.0, -1),
            (15.9, -1),
            (16.0, -2),
            (256.0, -3),
            (65535.0, -3),
            (65536.0, -4),
            (1e9, -4),
            // Where Go's Log2 decides, not the mathematics: 2^(1/4), 2^(1/16), 2^(1/128).
            (1.189207115002721, 3),
            (1.0442737824274138, 5),
            (1.0054299011128027, 8),
        ] {
            assert_eq!(schema_for(factor), schema, "factor {factor}");
        }
    }

    #[test]
    fn keys_are_client_golangs() {
        let cases: [(f64, [i32; 3]); 11] = [
            (1.0, [0, 0, 0]),
            (1.5, [5, 1, 1]),
            (2.0, [8, 1, 1]),
            (3.0, [13, 2, 1]),
            (0.001, [-79, -9, 0]),
            (0.25, [-16, -2, 0]),
            (0.5, [-8, -1, 0]),
            (100.0, [54, 7, 1]),
            (1000.0, [80, 10, 1]),
            (2.9387358770557195e-39, [-1023, -127, -7]),
            (f64::MAX, [8192, 1024, 64]),
        ];
        for (v, keys) in cases {
            assert_eq!([3, 0, -4].map(|schema| key(v, schema)), keys, "{v}");
        }
        assert_eq!(key(4.0, 3), 16);
        // On a bound (2^(1/8)) the bucket below; just past it, the next.
        assert_eq!(key(1.0905077326652577, 3), 1);
        assert_eq!(
            key(f64::from_bits(1.0905077326652577f64.to_bits() + 1), 3),
            2
        );
    }

    #[test]
    fn frexp_is_gos() {
        for (v, frac, exp) in [
            (1.0, 0.5, 1),
            (2.0, 0.5, 2),
            (3.0, 0.75, 2),
            (0.001, 0.512, -9),
            (f64::MIN_POSITIVE / 4.0, 0.5, -1023),
        ] {
            let (f, e) = frexp(v);
            assert!((f - frac).abs() < 1e-12 && e == exp, "{v}: {f} {e}");
        }
    }

    #[test]
    fn observations_land_as_in_statsd_exporter() {
        let negative = side(&[(0, 1)], &[1]);
        assert_eq!(
            exposed(&observed(1.1, 256, &S9)),
            (
                3,
                1,
                side(
                    &[(-79, 1), (78, 1), (4, 4), (4, 1), (40, 1), (25, 1)],
                    &[1, 0, 0, -1, 0, 1, 0, 0, 0]
                ),
                negative.clone()
            )
        );
        assert_eq!(
            exposed(&observed(2.0, 256, &S9)),
            (
                0,
                1,
                side(&[(-9, 1), (8, 3), (4, 4)], &[1, 0, 1, -1, 0, -1, 0, 1]),
                negative.clone()
            )
        );
        assert_eq!(
            exposed(&observed(4.0, 256, &S9)),
            (
                -1,
                1,
                side(&[(-4, 1), (3, 6)], &[1, 0, 2, -3, 0, 1, 0]),
                negative.clone()
            )
        );
        for factor in [65536.0, 1e9] {
            assert_eq!(
                exposed(&observed(factor, 256, &S9)),
                (-4, 1, side(&[(0, 2)], &[2, 3]), negative.clone())
            );
        }
        // A timer of 250 ms.
        assert_eq!(
            exposed(&observed(1.1, 256, &[0.25])),
            (3, 0, side(&[(-16, 1)], &[1]), side(&[], &[]))
        );
    }

    #[test]
    fn past_the_most_buckets_the_resolution_halves_once_per_observation() {
        // statsd_exporter scraped after each observation, at most 4 buckets.
        let steps: [(f64, i32, u64, Side, Side); 9] = [
            (1.0, 3, 0, side(&[(0, 1)], &[1]), side(&[], &[])),
            (1.5, 3, 0, side(&[(0, 1), (4, 1)], &[1, 0]), side(&[], &[])),
            (
                2.0,
                3,
                0,
                side(&[(0, 1), (4, 4)], &[1, 0, -1, 0, 1]),
                side(&[], &[]),
            ),
            (
                3.0,
                3,
                0,
                side(&[(0, 1), (4, 4), (4, 1)], &[1, 0, -1, 0, 1, 0]),
                side(&[], &[]),
            ),
            (
                -1.0,
                2,
                0,
                side(&[(0, 8)], &[1, -1, 0, 1, 0, -1, 0, 1]),
                side(&[(0, 1)], &[1]),
            ),
            (
                0.0,
                1,
                1,
                side(&[(0, 5)], &[1, -1, 2, -2, 1]),
                side(&[(0, 1)], &[1]),
            ),
            (
                0.001,
                0,
                1,
                side(&[(-9, 1), (8, 3)], &[1, 0, 1, -1]),
                side(&[(0, 1)], &[1]),
            ),
            (
                100.0,
                -1,
                1,
                side(&[(-4, 1), (3, 5)], &[1, 0, 2, -3, 0, 1]),
                side(&[(0, 1)], &[1]),
            ),
            (
                1000.0,
                -2,
                1,
                side(&[(-2, 6)], &[1, -1, 1, 2, -2, 0]),
                side(&[(0, 1)], &[1]),
            ),
        ];
        let mut h = Native::new(1.1, 4);
        let mut halvings = 0;
        for (value, schema, zero, positive, negative) in steps {
            halvings += h.observe(value, 1);
            assert_eq!(
                exposed(&h),
                (schema, zero, positive, negative),
                "after {value}"
            );
        }
        assert_eq!(halvings, 5);
        // At most 5 buckets; at most 1, down to the coarsest schema and no further.
        assert_eq!(
            exposed(&observed(1.1, 5, &S9)).2,
            side(&[(-9, 1), (8, 3), (4, 4)], &[1, 0, 1, -1, 0, -1, 0, 1])
        );
        assert_eq!(
            exposed(&observed(1.1, 1, &S9)),
            (-4, 1, side(&[(0, 2)], &[2, 3]), side(&[(0, 1)], &[1]))
        );
        // An observation counted n times halves as n observations would.
        let mut once = Native::new(1.1, 4);
        let mut one_by_one = Native::new(1.1, 4);
        for v in [1.0, 1.5, 2.0, 3.0, 4.5] {
            once.observe(v, 1);
            one_by_one.observe(v, 1);
        }
        once.observe(-1.0, 3);
        for _ in 0..3 {
            one_by_one.observe(-1.0, 1);
        }
        assert_eq!(once, one_by_one);
    }

    #[test]
    fn options_resolved_from_defaults_give_statsd_exporters_buckets() {
        // S9 and a 250 ms timer, under a mapping file whose defaults give factor 2 and 4
        // buckets, and rules overriding one or the other (factor 1.1; 100 buckets).
        let values: Vec<f64> = S9.iter().copied().chain([0.25]).collect();
        assert_eq!(
            exposed(&observed(2.0, 4, &values)).2,
            side(&[(0, 2)], &[3, 2])
        );
        assert_eq!(
            exposed(&observed(1.1, 4, &values)),
            (
                -3,
                1,
                side(&[(-1, 4)], &[1, 1, 2, -3]),
                side(&[(0, 1)], &[1])
            )
        );
        assert_eq!(
            exposed(&observed(2.0, 100, &values)).2,
            side(
                &[(-9, 1), (6, 5), (4, 4)],
                &[1, 0, -1, 1, 1, -1, 0, -1, 0, 1]
            )
        );
    }

    #[test]
    fn spans_carry_gaps_of_up_to_two_buckets() {
        let buckets = [(-2, 3), (-1, 5), (2, 1), (3, 1), (7, 4)];
        let (spans, deltas) = spans_and_deltas(&buckets);
        assert_eq!(spans, [(-2, 6), (3, 1)]);
        assert_eq!(deltas, [3, 2, -5, 0, 1, 0, 3]);
        assert_eq!(spans_and_deltas(&[]), (vec![], vec![]));
    }
}
