//! The Prometheus text format (0.0.4): encoding families with the `prometheus` crate's
//! `TextEncoder`, and assembling a whole scrape from the aggregator's snapshots, the
//! aggregator's per-family statistics and tallyd's own metrics.

use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::TextEncoder;
use std::sync::Arc;
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

/// The HELP text as the text format writes it, escaped by the encoder itself: the same `Arc`
/// when nothing needs escaping, as is usual.
pub fn escaped_help(help: &Arc<str>) -> Arc<str> {
    let mut encoded = String::new();
    encode_into(&[single("x", help, MetricType::GAUGE, 0.0)], &mut encoded);
    match encoded
        .strip_prefix("# HELP x ")
        .and_then(|rest| rest.split_once('\n'))
    {
        Some((escaped, _)) if escaped != &**help => escaped.into(),
        _ => help.clone(),
    }
}

/// Writes a family's HELP and TYPE lines as the encoder does (no HELP line for no help).
fn write_header(out: &mut String, snapshot: &FamilySnapshot) {
    let name = &*snapshot.name;
    if !snapshot.help.is_empty() {
        for part in ["# HELP ", name, " ", &snapshot.help, "\n"] {
            out.push_str(part);
        }
    }
    for part in ["# TYPE ", name, " ", snapshot.type_name, "\n"] {
        out.push_str(part);
    }
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

/// The aggregator's overall figures, read at `now`; `unlisted` families have no per-family
/// series.
fn totals(view: &ScrapeView, now: Instant, unlisted: usize) -> Vec<MetricFamily> {
    vec![
        single(
            "tallyd_metric_families_unlisted",
            "Families left out of the per-family tallyd_metric_* series, which list the busiest limits.max_family_self_metrics families by update rate.",
            MetricType::GAUGE,
            unlisted as f64,
        ),
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
    listed: &[&FamilySnapshot],
    value: impl Fn(&FamilySnapshot) -> f64,
) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for snapshot in listed {
        // Family names are escaped: `[a-zA-Z0-9_]` only, nothing to quote.
        let _ = write!(out, "{name}{{metric=\"{}\"}} ", snapshot.name);
        write_value(out, value(snapshot));
        out.push('\n');
    }
}

/// The families the per-family self-metrics list, in name order: every family up to `max`,
/// past it the `max` busiest by update rate (the first in name order among equal rates, so
/// that the list holds still while rates do).
fn listed(view: &ScrapeView, max: usize, now: Instant) -> Vec<&FamilySnapshot> {
    if view.len() <= max {
        return view.iter().map(|s| &**s).collect();
    }
    let mut by_rate: Vec<(f64, usize)> = view
        .iter()
        .enumerate()
        .map(|(i, s)| (s.rate.per_second(now), i))
        .collect();
    let busier = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if max > 0 {
        by_rate.select_nth_unstable_by(max - 1, busier);
    }
    let mut chosen: Vec<usize> = by_rate[..max].iter().map(|&(_, i)| i).collect();
    chosen.sort_unstable();
    chosen.into_iter().map(|i| &*view[i]).collect()
}

/// Writes a whole scrape into `out`: every user family, then tallyd's own metrics, with
/// per-family series for at most `max_listed` families.
pub fn render(
    view: &ScrapeView,
    telemetry: &Telemetry,
    max_listed: usize,
    now: Instant,
    out: &mut String,
) {
    let listed = listed(view, max_listed, now);
    let per_family_bytes = listed.len() * 4 * 64;
    let header_bytes = |s: &FamilySnapshot| 2 * s.name.len() + s.help.len() + 30;
    let families_bytes: usize = view.iter().map(|s| header_bytes(s) + s.text.len()).sum();
    out.reserve(families_bytes + per_family_bytes + 16 * 1024);
    for snapshot in view.iter() {
        write_header(out, snapshot);
        out.push_str(&snapshot.text);
    }
    let mut own = totals(view, now, view.len() - listed.len());
    own.extend(telemetry.gather());
    own.sort_by(|a, b| a.name().cmp(b.name()));
    encode_into(&own, out);
    if listed.is_empty() {
        return;
    }
    write_per_family(
        out,
        (
            "tallyd_metric_update_rate",
            "Updates per second applied by the family's actor, over the last 10 seconds.",
            "gauge",
        ),
        &listed,
        |s| s.rate.per_second(now),
    );
    write_per_family(
        out,
        (
            "tallyd_metric_updates_total",
            "Updates applied by the family's actor.",
            "counter",
        ),
        &listed,
        |s| s.updates as f64,
    );
    write_per_family(
        out,
        (
            "tallyd_metric_series",
            "Series (label sets) in the family.",
            "gauge",
        ),
        &listed,
        |s| s.series as f64,
    );
    write_per_family(
        out,
        (
            "tallyd_metric_value",
            "Sum of the family's series values (counters, gauges, set sizes) or observation sums.",
            "gauge",
        ),
        &listed,
        |s| s.value_sum,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::RateWindow;
    use std::sync::Arc;

    fn snapshot(name: &str, updates: u64, now: Instant) -> Arc<FamilySnapshot> {
        let mut rate = RateWindow::new(now);
        rate.record(now, updates);
        Arc::new(FamilySnapshot {
            name: name.into(),
            help: "".into(),
            type_name: "counter",
            text: format!("{name} {updates}\n"),
            updates,
            series: 1,
            value_sum: updates as f64,
            rate,
        })
    }

    #[test]
    fn headers_are_written_as_the_encoder_writes_them() {
        for help in ["plain help", "a \\ backslash and a\nnewline", ""] {
            let help: Arc<str> = help.into();
            let mut snapshot = (*snapshot("x", 1, Instant::now())).clone();
            snapshot.help = escaped_help(&help);
            let mut ours = String::new();
            write_header(&mut ours, &snapshot);
            ours.push_str(&snapshot.text);
            let mut encoded = String::new();
            encode_into(
                &[single("x", &help, MetricType::COUNTER, 1.0)],
                &mut encoded,
            );
            assert_eq!(ours, encoded);
        }
        let plain: Arc<str> = "plain".into();
        assert!(
            Arc::ptr_eq(&escaped_help(&plain), &plain),
            "nothing to escape: shared"
        );
    }

    #[test]
    fn past_the_limit_only_the_busiest_families_are_listed() {
        let now = Instant::now();
        let view: ScrapeView = [("a", 5), ("b", 50), ("c", 5), ("d", 70), ("e", 5)]
            .into_iter()
            .map(|(name, n)| snapshot(name, n, now))
            .collect();
        let telemetry = Telemetry::new();
        let lines = |max| {
            let mut out = String::new();
            render(&view, &telemetry, max, now, &mut out);
            let listed: Vec<String> = out
                .lines()
                .filter_map(|l| l.strip_prefix("tallyd_metric_updates_total{metric=\""))
                .map(|l| l.replace("\"}", ""))
                .collect();
            let unlisted = out
                .lines()
                .find_map(|l| l.strip_prefix("tallyd_metric_families_unlisted "))
                .map(str::to_owned);
            // Every family's own series are there, listed or not.
            assert!(["a 5", "b 50", "c 5", "d 70", "e 5"]
                .iter()
                .all(|l| out.lines().any(|o| o == *l)));
            (listed, unlisted.unwrap())
        };
        assert_eq!(
            lines(10),
            (
                vec![
                    "a 5".into(),
                    "b 50".into(),
                    "c 5".into(),
                    "d 70".into(),
                    "e 5".into()
                ],
                "0".into()
            )
        );
        // The two busiest, then ties broken by name: b and d, then a.
        assert_eq!(lines(2), (vec!["b 50".into(), "d 70".into()], "3".into()));
        assert_eq!(
            lines(3),
            (vec!["a 5".into(), "b 50".into(), "d 70".into()], "2".into())
        );
        let (none, unlisted) = lines(0);
        assert!(none.is_empty());
        assert_eq!(unlisted, "5");
    }

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
