//! The Prometheus text format (0.0.4): encoding families with the `prometheus` crate's
//! `TextEncoder`, and assembling a whole scrape from the aggregator's snapshots, the
//! aggregator's per-family statistics and tallyd's own metrics.

use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::TextEncoder;
use std::time::Instant;

use crate::aggregator::ScrapeView;
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

/// Encodes families into the text format.
pub fn encode(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    encode_into(families, &mut out);
    out
}

fn encode_into(families: &[MetricFamily], out: &mut String) {
    // The encoder only fails on families it cannot represent (no metrics, no name), which
    // tallyd never builds; such a family is left out rather than failing the scrape.
    if let Err(error) = TextEncoder::new().encode_utf8(families, out) {
        tracing::error!(%error, "could not encode a metric family");
    }
}

/// One self-metric family with one series per user family, labelled `metric`.
fn per_family<'a>(
    name: &str,
    help: &str,
    field_type: MetricType,
    values: impl Iterator<Item = (&'a str, f64)>,
) -> MetricFamily {
    let metrics = values
        .map(|(family, value)| {
            let mut pair = proto::LabelPair::default();
            pair.set_name("metric".to_owned());
            pair.set_value(family.to_owned());
            let mut metric = proto::Metric::from_label(vec![pair]);
            set_value(&mut metric, field_type, value);
            metric
        })
        .collect();
    family(name, help, field_type, metrics)
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

/// The aggregator's figures, per family and overall, read at `now`.
fn aggregates(view: &ScrapeView, now: Instant) -> Vec<MetricFamily> {
    let rates: Vec<f64> = view.iter().map(|s| s.rate.per_second(now)).collect();
    let mut families = vec![
        single(
            "tallyd_update_rate",
            "Updates per second applied by all family actors, over the last 10 seconds.",
            MetricType::GAUGE,
            rates.iter().sum(),
        ),
        single(
            "tallyd_metric_families",
            "Metric families with a snapshot on /metrics.",
            MetricType::GAUGE,
            view.len() as f64,
        ),
    ];
    if !view.is_empty() {
        families.extend([
            per_family(
                "tallyd_metric_updates_total",
                "Updates applied by the family's actor.",
                MetricType::COUNTER,
                view.iter().map(|s| (&*s.name, s.updates as f64)),
            ),
            per_family(
                "tallyd_metric_update_rate",
                "Updates per second applied by the family's actor, over the last 10 seconds.",
                MetricType::GAUGE,
                view.iter().map(|s| &*s.name).zip(rates.iter().copied()),
            ),
            per_family(
                "tallyd_metric_series",
                "Series (label sets) in the family.",
                MetricType::GAUGE,
                view.iter().map(|s| (&*s.name, s.series as f64)),
            ),
            per_family(
                "tallyd_metric_value",
                "Sum of the family's series values (counters, gauges, set sizes) or observation sums.",
                MetricType::GAUGE,
                view.iter().map(|s| (&*s.name, s.value_sum)),
            ),
        ]);
    }
    families
}

/// Writes a whole scrape into `out`: every user family, then tallyd's own metrics.
pub fn render(view: &ScrapeView, telemetry: &Telemetry, now: Instant, out: &mut String) {
    out.reserve(view.iter().map(|s| s.text.len()).sum::<usize>() + 16 * 1024);
    for snapshot in view.iter() {
        out.push_str(&snapshot.text);
    }
    let mut own = aggregates(view, now);
    own.extend(telemetry.gather());
    own.sort_by(|a, b| a.name().cmp(b.name()));
    encode_into(&own, out);
}
