//! Go's `time.ParseDuration` syntax, as statsd_exporter reads `ttl` and `max_age`.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A Go duration (`ttl: 1h30m`, `max_age: 500ms`), as statsd_exporter reads `time.Duration`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct GoDuration(pub(super) Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = GoDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `90s`, `10m` or `1h30m`")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<GoDuration, E> {
                parse_go_duration(s).map(GoDuration).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<GoDuration, E> {
                // Go would read a bare number as nanoseconds, which is never what is meant.
                if n == 0 {
                    Ok(GoDuration(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "`{n}` has no unit; write e.g. `{n}s` (statsd_exporter would read it as \
                         {n} nanoseconds)"
                    )))
                }
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<GoDuration, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom("a duration may not be negative")),
                }
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// Parses Go's `time.ParseDuration` syntax: `0`, or one or more decimal numbers (with an
/// optional fraction) each followed by a unit: `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`.
/// Negative durations are refused.
fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration such as `90s`, `10m`, `1h30m` or `500ms`");
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(len)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let unit_len = after
            .char_indices()
            .find(|&(_, c)| c.is_ascii_digit() || c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let too_long = || format!("`{s}` is too long a duration");
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| too_long())?
        };
        let mut part = whole.checked_mul(nanos_per).ok_or_else(too_long)?;
        // Fractions beyond nanoseconds are cut, as Go does.
        let mut scale = nanos_per;
        for digit in frac.bytes().take(30) {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(part).ok_or_else(too_long)?;
        rest = after;
    }
    if negative && total > 0 {
        return Err(format!("`{s}`: a duration may not be negative"));
    }
    // Go's limit: an int64 of nanoseconds.
    if total > i64::MAX as u128 {
        return Err(format!("`{s}` is too long a duration"));
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = [
            ("0", 0),
            ("0s", 0),
            ("-0", 0),
            ("+5s", 5_000_000_000),
            ("10m", 600_000_000_000),
            ("1h30m", 5_400_000_000_000),
            ("1m2s", 62_000_000_000),
            ("500ms", 500_000_000),
            ("1.5h", 5_400_000_000_000),
            (".5s", 500_000_000),
            ("5.s", 5_000_000_000),
            ("2h45m30.5s", 9_930_500_000_000),
            ("1us", 1_000),
            ("1µs", 1_000),
            ("3ns", 3),
            ("1.0000000009s", 1_000_000_000),
        ];
        for (text, nanos) in ok {
            assert_eq!(
                parse_go_duration(text),
                Ok(Duration::from_nanos(nanos)),
                "{text}"
            );
        }
        for bad in [
            "",
            "5",
            "1d",
            "-1s",
            "s",
            ".s",
            "1h30",
            "1 h",
            "9999999999999h",
            "1e3s",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }
}
