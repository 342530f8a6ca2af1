//! The Prometheus protobuf exposition (`io.prometheus.client.MetricFamily` messages, each
//! preceded by its length), which a scraper asks for to get native histograms. It is made
//! from the text exposition, family by family (`from_text`): the text holds every value, but
//! for a native histogram's buckets, which its family publishes encoded already
//! ([`crate::exposition::FamilySnapshot::native`]).
//!
//! The messages are those of `metrics.proto` in prometheus/client_model, the fields tallyd
//! writes only.

use prost::Message;

/// The Content-Type of the protobuf exposition, as client_golang's promhttp writes it.
pub(crate) const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// True when an `Accept` header prefers the delimited protobuf exposition: it lists it with a
/// quality (`q`) above 0 and not below that of any text format it also accepts.
pub(crate) fn accepted(accept: &str) -> bool {
    let (mut protobuf, mut text) = (0.0f64, 0.0f64);
    for range in accept.split(',') {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or_default().to_ascii_lowercase();
        let (mut quality, mut proto, mut delimited) = (1.0, false, false);
        for param in params {
            match param.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("q", q)) => quality = q.parse().unwrap_or(0.0),
                Some(("proto", "io.prometheus.client.MetricFamily")) => proto = true,
                Some(("encoding", "delimited")) => delimited = true,
                _ => {}
            }
        }
        match media.as_str() {
            "application/vnd.google.protobuf" if proto && delimited => {
                protobuf = protobuf.max(quality);
            }
            "text/plain" | "text/*" | "*/*" => text = text.max(quality),
            _ => {}
        }
    }
    protobuf > 0.0 && protobuf >= text
}

/// `MetricFamily`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricFamily {
    /// The family name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// The HELP text, unescaped.
    #[prost(string, optional, tag = "2")]
    pub help: Option<String>,
    /// `MetricType`.
    #[prost(enumeration = "MetricType", optional, tag = "3")]
    pub r#type: Option<i32>,
    /// The series.
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

/// `MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    /// A counter.
    Counter = 0,
    /// A gauge.
    Gauge = 1,
    /// A summary.
    Summary = 2,
    /// No type.
    Untyped = 3,
    /// A histogram.
    Histogram = 4,
}

/// `Metric`: one series.
#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    /// Its labels.
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    /// A gauge's value.
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Value>,
    /// A counter's value.
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Value>,
    /// A summary's.
    #[prost(message, optional, tag = "4")]
    pub summary: Option<Summary>,
    /// An untyped value.
    #[prost(message, optional, tag = "5")]
    pub untyped: Option<Value>,
    /// A histogram's.
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

/// `LabelPair`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    /// The label name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Its value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// `Counter`, `Gauge` and `Untyped`, which all hold their value in field 1.
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    /// The value.
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

/// `Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    /// `_count`.
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    /// `_sum`.
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    /// The quantiles.
    #[prost(message, repeated, tag = "3")]
    pub quantile: Vec<Quantile>,
}

/// `Quantile`.
#[derive(Clone, PartialEq, Message)]
pub struct Quantile {
    /// The quantile, in (0, 1).
    #[prost(double, optional, tag = "1")]
    pub quantile: Option<f64>,
    /// Its value.
    #[prost(double, optional, tag = "2")]
    pub value: Option<f64>,
}

/// `Histogram`: classic buckets, native buckets, or both.
#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    /// `_count`.
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    /// `_sum`.
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    /// The classic buckets, cumulative, without `+Inf`.
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    /// The native buckets' schema.
    #[prost(sint32, optional, tag = "5")]
    pub schema: Option<i32>,
    /// The zero bucket's half width.
    #[prost(double, optional, tag = "6")]
    pub zero_threshold: Option<f64>,
    /// Observations in the zero bucket.
    #[prost(uint64, optional, tag = "7")]
    pub zero_count: Option<u64>,
    /// The negative buckets' spans.
    #[prost(message, repeated, tag = "9")]
    pub negative_span: Vec<BucketSpan>,
    /// The negative buckets' counts, each less the one before.
    #[prost(sint64, repeated, packed = "false", tag = "10")]
    pub negative_delta: Vec<i64>,
    /// The positive buckets' spans.
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    /// The positive buckets' counts, each less the one before.
    #[prost(sint64, repeated, packed = "false", tag = "13")]
    pub positive_delta: Vec<i64>,
}

/// `Bucket`: a classic bucket.
#[derive(Clone, PartialEq, Message)]
pub struct Bucket {
    /// Observations up to `upper_bound`.
    #[prost(uint64, optional, tag = "1")]
    pub cumulative_count: Option<u64>,
    /// The upper bound.
    #[prost(double, optional, tag = "2")]
    pub upper_bound: Option<f64>,
}

/// `BucketSpan`: native buckets in a row.
#[derive(Clone, PartialEq, Message)]
pub struct BucketSpan {
    /// Keys skipped since the end of the last span (from 0 for the first).
    #[prost(sint32, optional, tag = "1")]
    pub offset: Option<i32>,
    /// Buckets in the span.
    #[prost(uint32, optional, tag = "2")]
    pub length: Option<u32>,
}

/// A `Metric`'s labels, from `(name, value)` pairs.
pub(crate) fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<LabelPair> {
    pairs
        .into_iter()
        .map(|(name, value)| LabelPair {
            name: Some(name.to_owned()),
            value: Some(value.to_owned()),
        })
        .collect()
}

/// Appends `metric` to `out` as field 4 of a `MetricFamily`.
pub(crate) fn append_metric(out: &mut Vec<u8>, metric: &Metric) {
    prost::encoding::message::encode(4, metric, out);
}

/// A family of the text exposition as one length-delimited `MetricFamily`: `help` and
/// `type_name` from its header, the series from `text` (its sample lines, as tallyd writes
/// them), or, when `native` is given, those bytes (every series, encoded already).
pub(crate) fn family(
    out: &mut Vec<u8>,
    (name, help, type_name): (&str, &str, &str),
    text: &str,
    native: Option<&[u8]>,
) {
    let kind = match type_name {
        "counter" => MetricType::Counter,
        "gauge" => MetricType::Gauge,
        "summary" => MetricType::Summary,
        "histogram" => MetricType::Histogram,
        _ => MetricType::Untyped,
    };
    let mut head = MetricFamily {
        name: Some(name.to_owned()),
        help: Some(unescape_help(help)),
        r#type: Some(kind as i32),
        metric: Vec::new(),
    };
    let series = match native {
        Some(bytes) => bytes,
        None => {
            head.metric = from_text(name, kind, text);
            &[]
        }
    };
    let len = head.encoded_len() + series.len();
    prost::encoding::encode_varint(len as u64, out);
    head.encode_raw(out);
    out.extend_from_slice(series);
}

/// The series of a family from its sample lines.
fn from_text(name: &str, kind: MetricType, text: &str) -> Vec<Metric> {
    let mut metrics: Vec<Metric> = Vec::new();
    let mut current: Option<(Vec<(String, String)>, Metric)> = None;
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value = parse_value(value);
        let (sample, mut pairs) = match series.split_once('{') {
            Some((sample, labels)) => (sample, parse_labels(labels.trim_end_matches('}'))),
            None => (series, Vec::new()),
        };
        let suffix = &sample[name.len().min(sample.len())..];
        // The label a summary's or histogram's line carries for itself.
        let mut own = None;
        pairs.retain(|(k, v)| match k.as_str() {
            "quantile" if kind == MetricType::Summary => {
                own = Some(parse_value(v));
                false
            }
            "le" if kind == MetricType::Histogram && suffix == "_bucket" => {
                own = Some(parse_value(v));
                false
            }
            _ => true,
        });
        if current.as_ref().is_none_or(|(labels, _)| *labels != pairs) {
            metrics.extend(current.take().map(|(_, m)| m));
            let metric = Metric {
                label: labels(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                ..Metric::default()
            };
            current = Some((pairs, metric));
        }
        let Some((_, metric)) = current.as_mut() else {
            continue;
        };
        match kind {
            MetricType::Counter => metric.counter = Some(Value { value: Some(value) }),
            MetricType::Gauge => metric.gauge = Some(Value { value: Some(value) }),
            MetricType::Untyped => metric.untyped = Some(Value { value: Some(value) }),
            MetricType::Summary => {
                let summary = metric.summary.get_or_insert_with(Summary::default);
                match (suffix, own) {
                    ("_sum", _) => summary.sample_sum = Some(value),
                    ("_count", _) => summary.sample_count = Some(value as u64),
                    (_, Some(q)) => summary.quantile.push(Quantile {
                        quantile: Some(q),
                        value: Some(value),
                    }),
                    _ => {}
                }
            }
            MetricType::Histogram => {
                let histogram = metric.histogram.get_or_insert_with(Histogram::default);
                match (suffix, own) {
                    ("_sum", _) => histogram.sample_sum = Some(value),
                    ("_count", _) => histogram.sample_count = Some(value as u64),
                    // `+Inf` is implied by the count, as client_golang leaves it out.
                    ("_bucket", Some(le)) if le.is_finite() => histogram.bucket.push(Bucket {
                        cumulative_count: Some(value as u64),
                        upper_bound: Some(le),
                    }),
                    _ => {}
                }
            }
        }
    }
    metrics.extend(current.map(|(_, m)| m));
    metrics
}

/// A sample value or a bound as the text format spells it.
fn parse_value(text: &str) -> f64 {
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().unwrap_or(f64::NAN),
    }
}

/// `a="x",b="y"` into pairs, values unescaped (`\\`, `\"`, `\n`).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        pairs.push((key.trim_start_matches(',').to_owned(), value));
        rest = &after[end..];
    }
    pairs
}

/// HELP text as the text format escapes it (`\\`, `\n`), unescaped.
fn unescape_help(help: &str) -> String {
    let mut out = String::with_capacity(help.len());
    let mut chars = help.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_is_chosen_only_when_preferred() {
        let prometheus = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(accepted(prometheus));
        assert!(accepted(
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
        ));
        for text in [
            "text/plain;version=0.0.4;q=1,*/*;q=0.1",
            "*/*",
            "",
            // Another protobuf message, or the text encoding of it, is not ours.
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
            "application/vnd.google.protobuf;proto=other;encoding=delimited",
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.4,text/plain;q=0.5",
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0",
        ] {
            assert!(!accepted(text), "{text}");
        }
    }

    #[test]
    fn text_lines_become_series() {
        let text = "s{a=\"x\\\"y\\\\z\\n\",quantile=\"0.5\"} 1.5\ns_sum{a=\"x\\\"y\\\\z\\n\"} 3\ns_count{a=\"x\\\"y\\\\z\\n\"} 2\ns{quantile=\"0.5\"} NaN\ns_sum 0\ns_count 0\n";
        let metrics = from_text("s", MetricType::Summary, text);
        assert_eq!(metrics.len(), 2);
        assert_eq!(metrics[0].label[0].value(), "x\"y\\z\n");
        let s = metrics[0].summary.as_ref().unwrap();
        assert_eq!((s.sample_count(), s.sample_sum()), (2, 3.0));
        assert_eq!(
            (s.quantile[0].quantile(), s.quantile[0].value()),
            (0.5, 1.5)
        );
        assert!(metrics[1].label.is_empty());
        assert!(metrics[1].summary.as_ref().unwrap().quantile[0]
            .value()
            .is_nan());
        assert_eq!(unescape_help("a\\nb\\\\c"), "a\nb\\c");
    }
}
