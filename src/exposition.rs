//! The exposition: what a family actor publishes ([`FamilySnapshot`]), what a scrape is
//! handed ([`Scrape`]: every snapshot and the aggregator's totals over them), and the whole
//! scrape written in the Prometheus text format ([`render`]), every line through [`text`], or
//! in the protobuf format ([`render_protobuf`], through [`proto`]) for a scraper that asks.

pub mod proto;
pub mod text;

use std::sync::Arc;

use crate::memory::prefetch_line;
use crate::rate::RateWindow;
use crate::telemetry::Telemetry;
use text::{header, sample};

pub(crate) use text::CONTENT_TYPE;

/// What a family publishes: its exposition text and its own statistics.
#[derive(Clone, Debug)]
pub struct FamilySnapshot {
    /// The family name.
    pub name: Arc<str>,
    /// The HELP text, escaped as the text format needs (see `text::escape_help`).
    pub help: Arc<str>,
    /// The TYPE.
    pub family_type: FamilyType,
    /// Every series in the text format, without the HELP and TYPE lines: [`render`] writes
    /// those from `help` and `family_type`, so a hibernating family's snapshot holds no copy.
    pub text: String,
    /// For a histogram with native buckets, every series as protobuf `Metric`s (each field 4
    /// of a `MetricFamily`), which the text cannot carry.
    pub native: Option<Box<[u8]>>,
    /// Updates applied since the family actor started.
    pub updates: u64,
    /// Number of series.
    pub series: usize,
    /// Sum of the series' values (counters, gauges) or observation sums (observers).
    pub value_sum: f64,
    /// Update counts, to be read as a rate at scrape time.
    pub rate: RateWindow,
}

/// A family's Prometheus type, as its TYPE line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyType {
    /// `counter`.
    Counter,
    /// `gauge` (sets too).
    Gauge,
    /// `summary`.
    Summary,
    /// `histogram`.
    Histogram,
}

impl FamilyType {
    /// The name the TYPE line gives.
    pub const fn as_str(self) -> &'static str {
        match self {
            FamilyType::Counter => "counter",
            FamilyType::Gauge => "gauge",
            FamilyType::Summary => "summary",
            FamilyType::Histogram => "histogram",
        }
    }
}

/// Every family's latest snapshot, sorted by family name.
pub type Snapshots = Arc<[Arc<FamilySnapshot>]>;

/// What a scrape shows of the families: their snapshots and the aggregator's figures over
/// them, read at one instant.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// Every family's latest snapshot, sorted by family name.
    pub families: Snapshots,
    /// Each family's updates per second, in the order of `families`.
    pub rates: Vec<f64>,
    /// Updates per second over every family.
    pub update_rate: f64,
    /// The families with per-family self-metrics, as indices into `families` in name order.
    pub listed: Vec<usize>,
}

/// The figures written for each listed family: name, help, type, and how to read the value.
type PerFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Scrape, usize) -> f64,
);

const PER_FAMILY: [PerFamily; 4] = [
    (
        "tallyd_metric_update_rate",
        "Updates per second applied by the family's actor, over the last 10 seconds.",
        "gauge",
        |scrape, i| scrape.rates[i],
    ),
    (
        "tallyd_metric_updates_total",
        "Updates applied by the family's actor.",
        "counter",
        |scrape, i| scrape.families[i].updates as f64,
    ),
    (
        "tallyd_metric_series",
        "Series (label sets) in the family.",
        "gauge",
        |scrape, i| scrape.families[i].series as f64,
    ),
    (
        "tallyd_metric_value",
        "Sum of the family's series values (counters, gauges, set sizes) or observation sums.",
        "gauge",
        |scrape, i| scrape.families[i].value_sum,
    ),
];

/// The aggregator's totals, each a gauge: name, help and value.
fn totals(scrape: &Scrape) -> [(&'static str, &'static str, f64); 3] {
    // In name order, as tallyd's own metrics are written.
    [
        (
            "tallyd_metric_families",
            "Metric families with a snapshot on /metrics.",
            scrape.families.len() as f64,
        ),
        (
            "tallyd_metric_families_unlisted",
            "Families left out of the per-family tallyd_metric_* series, which list the busiest limits.max_family_self_metrics families by update rate.",
            (scrape.families.len() - scrape.listed.len()) as f64,
        ),
        (
            "tallyd_update_rate",
            "Updates per second applied by all family actors, over the last 10 seconds.",
            scrape.update_rate,
        ),
    ]
}

/// How many families ahead a walk over every snapshot asks for the next ones' memory (see
/// [`prefetch_line`]): their snapshots this far ahead, their names and texts half as far.
pub(crate) const AHEAD: usize = 16;

/// Writes a whole scrape into `out`: every user family, then tallyd's own metrics (the
/// aggregator's totals among them, in name order), then the per-family self-metrics of the
/// listed families.
pub fn render(scrape: &Scrape, telemetry: &Telemetry, out: &mut String) {
    let families = &scrape.families;
    let per_family_bytes = scrape.listed.len() * PER_FAMILY.len() * 64;
    let header_bytes = |s: &FamilySnapshot| 2 * s.name.len() + s.help.len() + 30;
    let families_bytes: usize = families
        .iter()
        .map(|s| header_bytes(s) + s.text.len())
        .sum();
    out.reserve(families_bytes + per_family_bytes + 16 * 1024);
    for (i, snapshot) in families.iter().enumerate() {
        // Each snapshot and its text sit apart in memory: asked for some families ahead.
        if let Some(far) = families.get(i + AHEAD) {
            prefetch_line(Arc::as_ptr(far));
        }
        if let Some(near) = families.get(i + AHEAD / 2) {
            prefetch_line(near.name.as_ptr());
            prefetch_line(near.text.as_ptr());
        }
        header(
            out,
            &snapshot.name,
            &snapshot.help,
            snapshot.family_type.as_str(),
        );
        out.push_str(&snapshot.text);
    }
    render_own(scrape, telemetry, out);
}

/// Writes a whole scrape into `out` in the protobuf format: the same families, in the same
/// order, as [`render`] writes, each a length-delimited `MetricFamily`.
pub fn render_protobuf(scrape: &Scrape, telemetry: &Telemetry, out: &mut Vec<u8>) {
    for s in scrape.families.iter() {
        let head = (&*s.name, &*s.help, s.family_type.as_str());
        proto::family(out, head, &s.text, s.native.as_deref());
    }
    let mut own = String::new();
    render_own(scrape, telemetry, &mut own);
    let mut rest = own.as_str();
    while let Some(after) = rest.strip_prefix("# HELP ") {
        let (help_line, after) = after.split_once('\n').unwrap_or((after, ""));
        let (name, help) = help_line.split_once(' ').unwrap_or((help_line, ""));
        let (type_line, after) = after.split_once('\n').unwrap_or((after, ""));
        let type_name = type_line.rsplit(' ').next().unwrap_or_default();
        let end = after.find("# HELP ").unwrap_or(after.len());
        proto::family(out, (name, help, type_name), &after[..end], None);
        rest = &after[end..];
    }
}

/// tallyd's own metrics (the aggregator's totals among them, in name order), then the
/// per-family self-metrics of the listed families.
fn render_own(scrape: &Scrape, telemetry: &Telemetry, out: &mut String) {
    let families = &scrape.families;
    let own = telemetry.gather();
    let mut totals = totals(scrape).into_iter().peekable();
    for family in &own {
        while let Some((name, help, value)) = totals.next_if(|t| t.0 < family.name()) {
            write_total(out, name, help, value);
        }
        text::gathered(out, family);
    }
    for (name, help, value) in totals {
        write_total(out, name, help, value);
    }
    for (name, help, type_name, value) in PER_FAMILY {
        if scrape.listed.is_empty() {
            break;
        }
        header(out, name, help, type_name);
        for &i in &scrape.listed {
            // Family names are escaped: `[a-zA-Z0-9_]` only, nothing to quote.
            let labels = [("metric", &*families[i].name)];
            sample(out, (name, ""), labels, None, value(scrape, i));
        }
    }
}

fn write_total(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, help, "gauge");
    sample(out, (name, ""), [], None, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn snapshot(name: &str, updates: u64) -> Arc<FamilySnapshot> {
        Arc::new(FamilySnapshot {
            name: name.into(),
            help: "".into(),
            family_type: FamilyType::Counter,
            text: format!("{name} {updates}\n"),
            native: None,
            updates,
            series: 1,
            value_sum: updates as f64,
            rate: RateWindow::new(Instant::now()),
        })
    }

    #[test]
    fn a_scrape_writes_families_totals_in_name_order_then_the_listed_families() {
        let scrape = Scrape {
            families: [("a", 5), ("b", 50), ("c", 7)]
                .into_iter()
                .map(|(name, n)| snapshot(name, n))
                .collect(),
            rates: vec![0.5, 5.0, 0.7],
            update_rate: 6.2,
            listed: vec![1, 2],
        };
        let telemetry = Telemetry::new();
        let mut out = String::new();
        render(&scrape, &telemetry, &mut out);
        let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines[..3], ["a 5", "b 50", "c 7"]);
        let own: Vec<&str> = lines
            .iter()
            .filter(|l| !l.starts_with("tallyd_metric_") || !l.contains('{'))
            .map(|l| l.split([' ', '{']).next().unwrap())
            .skip(3)
            .collect();
        let mut sorted = own.clone();
        sorted.sort();
        assert_eq!(own, sorted, "tallyd's own metrics in name order");
        for want in [
            "tallyd_metric_families 3",
            "tallyd_metric_families_unlisted 1",
            "tallyd_update_rate 6.2",
            "tallyd_metric_update_rate{metric=\"b\"} 5",
            "tallyd_metric_update_rate{metric=\"c\"} 0.7",
            "tallyd_metric_updates_total{metric=\"c\"} 7",
            "tallyd_metric_series{metric=\"b\"} 1",
            "tallyd_metric_value{metric=\"c\"} 7",
        ] {
            assert!(lines.contains(&want), "{want} in\n{out}");
        }
        assert!(!out.contains("metric=\"a\""), "a is not listed");
        assert!(out.contains("# TYPE tallyd_metric_updates_total counter\n"));
    }
}
