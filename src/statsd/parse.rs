//! The StatsD / DogStatsD line protocol: one line of bytes in, a [`Line`] borrowing those bytes
//! out, or a [`RejectReason`]. Pure and allocation-free, so it can run per line on the hot path.
//!
//! Grammar (see `shared/PROTOCOL.md`, the Etsy StatsD docs and the DogStatsD datagram spec):
//! `<name>:<value>|<type>[|@<rate>][|#<tags>][|c:<container>][|T<unix-seconds>]`, plus the
//! legacy `name:1|c:2|ms` form (several `value|type` groups) and DogStatsD v1.1 packing
//! `name:1:2:3|d` (several values sharing one type). Unknown `|` fields are ignored, as
//! DogStatsD servers do; the container id and timestamp fields are accepted and ignored.

/// The StatsD metric types tallyd accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `c`: a Prometheus counter, the value is added.
    Counter,
    /// `g`: a Prometheus gauge, set, or changed when the value has a sign.
    Gauge,
    /// `ms`: an observation in milliseconds, recorded in seconds.
    Timer,
    /// `h`: an observation recorded unscaled.
    Histogram,
    /// `d`: a DogStatsD distribution, recorded like `h`.
    Distribution,
}

/// One value of a line with everything needed to apply it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// The StatsD type of the value.
    pub metric_type: MetricType,
    /// The value as sent (a timer's value is still in milliseconds).
    pub value: f64,
    /// A gauge value with a leading `+` or `-`: a change, not a new value.
    pub relative: bool,
    /// The `@rate` field, in `(0, 1]`; 1 when absent.
    pub sample_rate: f64,
}

/// Why a line (or one sample of it) was rejected. Each reason is counted on `/metrics` as
/// `tallyd_lines_rejected_total{reason="…"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// No `:` after the name, an empty name, or no `|type` field.
    MalformedLine,
    /// The value is empty, not a number, or not finite.
    BadValue,
    /// The type is not one StatsD defines.
    BadType,
    /// A valid StatsD type that tallyd does not support (yet): sets, `s`.
    UnsupportedType,
    /// The `@rate` field is not a number in `(0, 1]`.
    BadSampleRate,
    /// A counter increment below zero: Prometheus counters never go down.
    NegativeCounter,
    /// The name escapes to one of tallyd's own metric names.
    ReservedName,
    /// A TCP line longer than the configured limit.
    LineTooLong,
}

impl RejectReason {
    /// Every reason, in the order they are exported.
    pub const ALL: [RejectReason; 9] = [
        RejectReason::InvalidUtf8,
        RejectReason::MalformedLine,
        RejectReason::BadValue,
        RejectReason::BadType,
        RejectReason::UnsupportedType,
        RejectReason::BadSampleRate,
        RejectReason::NegativeCounter,
        RejectReason::ReservedName,
        RejectReason::LineTooLong,
    ];

    /// The `reason` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::MalformedLine => "malformed_line",
            RejectReason::BadValue => "bad_value",
            RejectReason::BadType => "bad_type",
            RejectReason::UnsupportedType => "unsupported_type",
            RejectReason::BadSampleRate => "bad_sample_rate",
            RejectReason::NegativeCounter => "negative_counter",
            RejectReason::ReservedName => "reserved_name",
            RejectReason::LineTooLong => "line_too_long",
        }
    }

    /// Position in [`RejectReason::ALL`], for per-reason counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splits a datagram (or a chunk of a TCP stream) into lines: `\n`-separated, a trailing `\r`
/// removed, empty lines skipped.
pub fn lines(datagram: &[u8]) -> impl Iterator<Item = &[u8]> {
    datagram
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty())
}

/// A parsed line: its name, its DogStatsD tags and its samples, all borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Line<'a> {
    /// The metric name as sent, not yet escaped.
    pub name: &'a str,
    /// The raw DogStatsD tag list (the text after `|#`), if any; see [`tags`].
    pub tags: Option<&'a str>,
    body: Body<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Body<'a> {
    /// One or more `:`-separated values sharing one type and rate.
    Packed {
        values: &'a str,
        metric_type: MetricType,
        sample_rate: f64,
    },
    /// Legacy `value|type[|@rate]` groups separated by `:`.
    Legacy { groups: &'a str },
}

/// Parses one line (without its `\n`).
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, RejectReason> {
    let line = std::str::from_utf8(line).map_err(|_| RejectReason::InvalidUtf8)?;
    let (name, body) = line.split_once(':').ok_or(RejectReason::MalformedLine)?;
    if name.is_empty() || body.is_empty() {
        return Err(RejectReason::MalformedLine);
    }
    let (values, fields) = body.split_once('|').ok_or(RejectReason::MalformedLine)?;
    if !values.contains(':') && is_legacy(fields) {
        // Each group carries its own type; validate them lazily in `samples()`.
        return Ok(Line {
            name,
            tags: None,
            body: Body::Legacy { groups: body },
        });
    }
    let parsed = parse_fields(fields)?;
    Ok(Line {
        name,
        tags: parsed.tags,
        body: Body::Packed {
            values,
            metric_type: parsed.metric_type,
            sample_rate: parsed.sample_rate,
        },
    })
}

/// The legacy multi-sample form puts a `:` in a field other than tags or the container id
/// (`1|c:2|ms`, `1|c|@0.1:2|ms`). A line with DogStatsD tags is never legacy, as in
/// statsd_exporter, because tag values may hold `:`.
fn is_legacy(fields: &str) -> bool {
    if fields.contains("|#") || fields.starts_with('#') {
        return false;
    }
    fields
        .split('|')
        .enumerate()
        .any(|(i, field)| field.contains(':') && (i == 0 || !field.starts_with("c:")))
}

struct Fields<'a> {
    metric_type: MetricType,
    sample_rate: f64,
    tags: Option<&'a str>,
}

/// Parses `type[|@rate][|#tags][|…]`.
fn parse_fields(fields: &str) -> Result<Fields<'_>, RejectReason> {
    let mut parts = fields.split('|');
    let metric_type = parse_type(parts.next().unwrap_or_default())?;
    let mut out = Fields {
        metric_type,
        sample_rate: 1.0,
        tags: None,
    };
    for field in parts {
        if let Some(rate) = field.strip_prefix('@') {
            out.sample_rate = parse_rate(rate)?;
        } else if let Some(tags) = field.strip_prefix('#') {
            out.tags = Some(tags);
        }
        // `c:<container id>`, `T<timestamp>` and unknown fields are ignored, as DogStatsD does.
    }
    Ok(out)
}

fn parse_type(field: &str) -> Result<MetricType, RejectReason> {
    match field {
        "c" => Ok(MetricType::Counter),
        "g" => Ok(MetricType::Gauge),
        "ms" => Ok(MetricType::Timer),
        "h" => Ok(MetricType::Histogram),
        "d" => Ok(MetricType::Distribution),
        "s" => Err(RejectReason::UnsupportedType),
        "" => Err(RejectReason::MalformedLine),
        _ => Err(RejectReason::BadType),
    }
}

fn parse_rate(text: &str) -> Result<f64, RejectReason> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= 1.0 => Ok(rate),
        _ => Err(RejectReason::BadSampleRate),
    }
}

fn parse_sample(
    value: &str,
    metric_type: MetricType,
    sample_rate: f64,
) -> Result<Sample, RejectReason> {
    let number = value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or(RejectReason::BadValue)?;
    if metric_type == MetricType::Counter && number < 0.0 {
        return Err(RejectReason::NegativeCounter);
    }
    Ok(Sample {
        metric_type,
        value: number,
        relative: metric_type == MetricType::Gauge && value.starts_with(['+', '-']),
        sample_rate,
    })
}

impl<'a> Line<'a> {
    /// True when the line's values are observations (timers, histograms, distributions),
    /// whose series get `quantile` or `le` labels of their own.
    pub fn observes(&self) -> bool {
        matches!(
            self.body,
            Body::Packed {
                metric_type: MetricType::Timer | MetricType::Histogram | MetricType::Distribution,
                ..
            }
        )
    }

    /// The samples of the line, each valid or rejected on its own: a bad value in a packed line
    /// rejects that value, not its neighbours.
    pub fn samples(&self) -> Samples<'a> {
        let (text, body) = match self.body {
            Body::Packed { values, .. } => (values, self.body),
            Body::Legacy { groups } => (groups, self.body),
        };
        Samples {
            parts: text.split(':'),
            body,
        }
    }
}

/// Iterator over the samples of a [`Line`].
#[derive(Clone, Debug)]
pub struct Samples<'a> {
    parts: std::str::Split<'a, char>,
    body: Body<'a>,
}

impl Iterator for Samples<'_> {
    type Item = Result<Sample, RejectReason>;

    fn next(&mut self) -> Option<Self::Item> {
        let part = self.parts.next()?;
        Some(match self.body {
            Body::Packed {
                metric_type,
                sample_rate,
                ..
            } => parse_sample(part, metric_type, sample_rate),
            Body::Legacy { .. } => match part.split_once('|') {
                None => Err(RejectReason::MalformedLine),
                Some((value, fields)) => parse_fields(fields)
                    .and_then(|f| parse_sample(value, f.metric_type, f.sample_rate)),
            },
        })
    }
}

/// A DogStatsD tag that cannot become a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagError;

/// Iterates the `k:v` pairs of a DogStatsD tag list (`k:v,k2:v2`). A tag without a value or
/// with an empty key cannot become a label and yields [`TagError`], as statsd_exporter drops it.
pub fn tags(raw: &str) -> impl Iterator<Item = Result<(&str, &str), TagError>> {
    raw.split(',').filter(|tag| !tag.is_empty()).map(|tag| {
        tag.split_once(':')
            .filter(|(key, _)| !key.is_empty())
            .ok_or(TagError)
    })
}

#[cfg(test)]
mod tests;
