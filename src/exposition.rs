//! The Prometheus text format (0.0.4): encoding families with the `prometheus` crate's
//! `TextEncoder`, and assembling a whole scrape from the aggregator's snapshots, the
//! aggregator's per-family statistics and tallyd's own metrics.

use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::TextEncoder;
use std::time::Instant;

use crate::aggregator::{FamilySnapshot, ScrapeView};
use crate::telemetry::Telemetry;
use crate::update::LabelSet;

/// The `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The label pairs of a series, in the Prometheus model.
pub fn label_pairs(labels: &LabelSet) -> Vec<proto::LabelPair> {
    labels
        .iter()
        .map(|(name, value)| {
            let mut pair = proto::LabelPair::default();
            pair.set_name(name.to_owned());
            pair.set_value(value.to_owned());
            pair
        })
        .collect()
}

/// Encodes families into the text format, appending to `out`.
pub fn encode_into(families: &[MetricFamily], out: &mut String) {
    // The encoder only fails on families it cannot represent (no metrics, no name), which
    // tallyd never builds; such a family is left out rather than failing the scrape.
    if let Err(error) = TextEncoder::new().encode_utf8(families, out) {
        tracing::error!(%error, "could not encode a metric family");
    }
}

fn single(name: &str, help: &str, field_type: MetricType, value: f64) -> MetricFamily {
    let mut metric = proto::Metric::default();
    set_value(&mut metric, field_type, value);
    family(name, help, field_type, vec![metric])
}

fn set_value(metric: &mut proto::Metric, field_type: MetricType, value: f64) {
    if field_type == MetricType::COUNTER {
        let mut c = proto::Counter::default();
        c.set_value(value);
        metric.set_counter(c);
    } else {
        let mut g = proto::Gauge::default();
        g.set_value(value);
        metric.set_gauge(g);
    }
}

fn family(
    name: &str,
    help: &str,
    field_type: MetricType,
    metrics: Vec<proto::Metric>,
) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(field_type);
    family.set_metric(metrics);
    family
}

/// The aggregator's overall figures, read at `now`.
fn totals(view: &ScrapeView, now: Instant) -> Vec<MetricFamily> {
    vec![
        single(
            "tallyd_update_rate",
            "Updates per second applied by all family actors, over the last 10 seconds.",
            MetricType::GAUGE,
            view.iter().map(|s| s.rate.per_second(now)).sum(),
        ),
        single(
            "tallyd_metric_families",
            "Metric families with a snapshot on /metrics.",
            MetricType::GAUGE,
            view.len() as f64,
        ),
    ]
}

/// A sample value as the text format spells it.
fn write_value(out: &mut String, value: f64) {
    use std::fmt::Write;
    let _ = match value {
        f64::INFINITY => write!(out, "+Inf"),
        f64::NEG_INFINITY => write!(out, "-Inf"),
        v => write!(out, "{v}"),
    };
}

/// One self-metric family with a series per user family, labelled `metric`, written straight
/// into the text format: with 100,000 families, building it through the encoder's model at
/// every scrape cost more than copying every family's own text.
fn write_per_family(
    out: &mut String,
    (name, help, kind): (&str, &str, &str),
    view: &ScrapeView,
    value: impl Fn(&FamilySnapshot) -> f64,
) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for snapshot in view.iter() {
        // Family names are escaped: `[a-zA-Z0-9_]` only, nothing to quote.
        let _ = write!(out, "{name}{{metric=\"{}\"}} ", snapshot.name);
        write_value(out, value(snapshot));
        out.push('\n');
    }
}

/// Writes a whole scrape into `out`: every user family, then tallyd's own metrics.
pub fn render(view: &ScrapeView, telemetry: &Telemetry, now: Instant, out: &mut String) {
    let per_family_bytes = view.len() * 4 * 64;
    out.reserve(view.iter().map(|s| s.text.len()).sum::<usize>() + per_family_bytes + 16 * 1024);
    for snapshot in view.iter() {
        out.push_str(&snapshot.text);
    }
    let mut own = totals(view, now);
    own.extend(telemetry.gather());
    own.sort_by(|a, b| a.name().cmp(b.name()));
    encode_into(&own, out);
    if view.is_empty() {
        return;
    }
    write_per_family(
        out,
        (
            "tallyd_metric_update_rate",
            "Updates per second applied by the family's actor, over the last 10 seconds.",
            "gauge",
        ),
        view,
        |s| s.rate.per_second(now),
    );
    write_per_family(
        out,
        (
            "tallyd_metric_updates_total",
            "Updates applied by the family's actor.",
            "counter",
        ),
        view,
        |s| s.updates as f64,
    );
    write_per_family(
        out,
        (
            "tallyd_metric_series",
            "Series (label sets) in the family.",
            "gauge",
        ),
        view,
        |s| s.series as f64,
    );
    write_per_family(
        out,
        (
            "tallyd_metric_value",
            "Sum of the family's series values (counters, gauges, set sizes) or observation sums.",
            "gauge",
        ),
        view,
        |s| s.value_sum,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_spelled_as_the_text_format_wants() {
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
            write_value(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "1 0.25 1000000000000000000000 +Inf -Inf NaN -0.5 ");
    }
}
