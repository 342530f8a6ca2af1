//! The Prometheus text format (0.0.4), written straight into a reusable buffer by small
//! functions: the one writer of every line on `/metrics`, user families and tallyd's own
//! metrics alike. Names are written as given (families are escaped on the way in, see
//! [`crate::names`]); HELP texts and label values are escaped as the format asks.

use prometheus::proto::{MetricFamily, MetricType};
use std::fmt::Write as _;
use std::sync::Arc;

use crate::update::LabelSet;

/// The `Content-Type` of a scrape.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Writes a family's HELP line (none for an empty help, whose text must already be escaped,
/// see [`escape_help`]) and its TYPE line.
pub(crate) fn header(out: &mut String, name: &str, help: &str, type_name: &str) {
    if !help.is_empty() {
        for part in ["# HELP ", name, " ", help, "\n"] {
            out.push_str(part);
        }
    }
    for part in ["# TYPE ", name, " ", type_name, "\n"] {
        out.push_str(part);
    }
}

/// The HELP text as the format writes it, backslashes and newlines escaped: the same `Arc`
/// when nothing needs escaping, as is usual.
pub(crate) fn escape_help(help: &Arc<str>) -> Arc<str> {
    if !help.contains(['\\', '\n']) {
        return help.clone();
    }
    let mut escaped = String::with_capacity(help.len() + 8);
    escape_into(&mut escaped, help, false);
    escaped.into()
}

/// Appends `text` with `\` and newlines escaped, and `"` too when `quotes`.
fn escape_into(out: &mut String, text: &str, quotes: bool) {
    let special = |c: char| c == '\\' || c == '\n' || (quotes && c == '"');
    let mut rest = text;
    while let Some(at) = rest.find(special) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'\\' => "\\\\",
            b'\n' => "\\n",
            _ => "\\\"",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// A label the series does not carry itself: `quantile` or `le`, with its bound.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Extra {
    /// A summary's quantile.
    Quantile(f64),
    /// A histogram bucket's upper bound (`+Inf` for the last).
    Le(f64),
}

/// Writes one sample line: `name` and `suffix` (`_sum`, `_count`, `_bucket` or none), the
/// series' labels then `extra`, and the value.
pub(crate) fn sample<'a>(
    out: &mut String,
    (name, suffix): (&str, &str),
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    extra: Option<Extra>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    let mut separator = '{';
    for (label, text) in labels {
        out.push(separator);
        out.push_str(label);
        out.push_str("=\"");
        escape_into(out, text, true);
        out.push('"');
        separator = ',';
    }
    if let Some(extra) = extra {
        out.push(separator);
        let (label, bound) = match extra {
            Extra::Quantile(q) => ("quantile=\"", q),
            Extra::Le(le) => ("le=\"", le),
        };
        out.push_str(label);
        number(out, bound);
        out.push('"');
        separator = ',';
    }
    if separator == ',' {
        out.push('}');
    }
    out.push(' ');
    number(out, value);
    out.push('\n');
}

/// Writes one sample line of a series named by a [`LabelSet`].
pub(crate) fn series_sample(
    out: &mut String,
    name: (&str, &str),
    labels: &LabelSet,
    extra: Option<Extra>,
    value: f64,
) {
    sample(out, name, labels.iter(), extra, value);
}

/// A number as the text format spells it: `+Inf`, `-Inf`, `NaN`, or in full decimal.
pub(crate) fn number(out: &mut String, value: f64) {
    let _ = match value {
        f64::INFINITY => out.write_str("+Inf"),
        f64::NEG_INFINITY => out.write_str("-Inf"),
        v => write!(out, "{v}"),
    };
}

/// Writes a family of tallyd's own metrics, as the `prometheus` crate's registry gathers
/// them: counters and gauges, which is every kind tallyd registers.
pub(crate) fn gathered(out: &mut String, family: &MetricFamily) {
    let type_name = match family.get_field_type() {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        other => {
            tracing::error!(family = family.name(), kind = ?other, "self-metric of a kind not written");
            return;
        }
    };
    let mut help = String::new();
    escape_into(&mut help, family.help(), false);
    header(out, family.name(), &help, type_name);
    for metric in family.get_metric() {
        let labels = metric.get_label().iter().map(|l| (l.name(), l.value()));
        let value = match family.get_field_type() {
            MetricType::COUNTER => metric.get_counter().get_value(),
            _ => metric.get_gauge().get_value(),
        };
        sample(out, (family.name(), ""), labels, None, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_spelled_as_the_format_wants() {
        let mut out = String::new();
        for v in [
            1.0,
            0.25,
            1e21,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -0.5,
        ] {
            number(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "1 0.25 1000000000000000000000 +Inf -Inf NaN -0.5 ");
    }

    #[test]
    fn help_and_label_values_are_escaped() {
        let plain: Arc<str> = "plain".into();
        assert!(Arc::ptr_eq(&escape_help(&plain), &plain));
        let odd: Arc<str> = "a \\ b\nc \"q\"".into();
        assert_eq!(&*escape_help(&odd), "a \\\\ b\\nc \"q\"");
        let mut out = String::new();
        header(&mut out, "x", &escape_help(&odd), "counter");
        header(&mut out, "y", "", "gauge");
        let labels = LabelSet::from_pairs(vec![("k".into(), "v\"\\\n".into())]);
        series_sample(&mut out, ("x", ""), &labels, None, 2.0);
        series_sample(
            &mut out,
            ("x", "_bucket"),
            &labels,
            Some(Extra::Le(0.5)),
            1.0,
        );
        sample(&mut out, ("y", "_sum"), [], None, 0.5);
        sample(&mut out, ("y", ""), [], Some(Extra::Quantile(0.99)), 3.0);
        sample(
            &mut out,
            ("y", "_bucket"),
            [],
            Some(Extra::Le(f64::INFINITY)),
            3.0,
        );
        assert_eq!(
            out,
            "# HELP x a \\\\ b\\nc \"q\"\n# TYPE x counter\n# TYPE y gauge\n\
             x{k=\"v\\\"\\\\\\n\"} 2\nx_bucket{k=\"v\\\"\\\\\\n\",le=\"0.5\"} 1\n\
             y_sum 0.5\ny{quantile=\"0.99\"} 3\ny_bucket{le=\"+Inf\"} 3\n"
        );
    }

    #[test]
    fn gathered_families_read_as_the_prometheus_encoder_writes_them() {
        let registry = prometheus::Registry::new();
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new("c_total", "A \\ counter\nwith help."),
            &["k"],
        )
        .unwrap();
        counter.with_label_values(&["a\"b"]).inc_by(3);
        let gauge = prometheus::Gauge::new("g", "A gauge.").unwrap();
        gauge.set(-1.5);
        registry.register(Box::new(counter)).unwrap();
        registry.register(Box::new(gauge)).unwrap();
        let families = registry.gather();
        let mut ours = String::new();
        for family in &families {
            gathered(&mut ours, family);
        }
        let theirs = prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap();
        assert_eq!(ours, theirs);
    }
}
