//! Prometheus names: turning StatsD metric names and tag keys into valid Prometheus metric and
//! label names exactly the way statsd_exporter does, so existing dashboards keep working.

use std::borrow::Cow;

/// Escapes a StatsD name into a Prometheus metric or label name, as statsd_exporter's
/// `EscapeMetricName` does: every character outside `[a-zA-Z0-9_]` becomes `_` (one `_` per
/// character, not per byte), except that a run of dashes becomes a single `_`, and a name that
/// starts with a digit gets a leading `_`.
///
/// Borrows when the name is already valid, which is the common case on the hot path.
pub fn escape(name: &str) -> Cow<'_, str> {
    let starts_with_digit = name.as_bytes().first().is_some_and(u8::is_ascii_digit);
    if !starts_with_digit && name.bytes().all(is_name_byte) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 1);
    if starts_with_digit {
        out.push('_');
    }
    let mut previous = None;
    for c in name.chars() {
        if c.is_ascii() && is_name_byte(c as u8) {
            out.push(c);
        } else if !(c == '-' && previous == Some('-')) {
            out.push('_');
        }
        previous = Some(c);
    }
    Cow::Owned(out)
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// True when `name` is a valid Prometheus metric name as produced by [`escape`]
/// (non-empty, `[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty() && !bytes[0].is_ascii_digit() && bytes.iter().copied().all(is_name_byte)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_like_statsd_exporter() {
        let cases = [
            ("a.b-c", "a_b_c"),
            ("checkout.requests", "checkout_requests"),
            ("already_valid_Name9", "already_valid_Name9"),
            ("9lives", "_9lives"),
            ("héllo", "h_llo"),
            ("a b/c:d", "a_b_c_d"),
            ("_x", "_x"),
            ("with--doubledash", "with_doubledash"),
            ("with---multiple-dashes", "with_multiple_dashes"),
            ("a.-b", "a__b"),
        ];
        for (input, want) in cases {
            assert_eq!(escape(input), want, "escape({input:?})");
        }
    }

    #[test]
    fn valid_names_are_borrowed() {
        assert!(matches!(escape("http_requests"), Cow::Borrowed(_)));
        assert!(matches!(escape("http.requests"), Cow::Owned(_)));
    }

    proptest! {
        #[test]
        fn escaped_non_empty_names_are_valid(name in "\\PC{1,40}") {
            prop_assert!(is_valid(&escape(&name)));
        }

        #[test]
        fn escaping_is_idempotent(name in "\\PC{1,40}") {
            let once = escape(&name).into_owned();
            prop_assert_eq!(escape(&once), once.as_str());
        }
    }
}
