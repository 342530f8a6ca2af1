//! The StatsD / DogStatsD line protocol: one line of bytes in, a [`Line`] borrowing those bytes
//! out, or a [`RejectReason`]. Pure and allocation-free, so it can run per line on the hot path.
//!
//! Grammar (see the Etsy StatsD docs and the DogStatsD datagram spec):
//! `<name>:<value>|<type>[|@<rate>][|#<tags>][|c:<container>][|T<unix-seconds>]`, plus the
//! legacy `name:1|c:2|ms` form (several `value|type` groups) and DogStatsD v1.1 packing
//! `name:1:2:3|d` (several values sharing one type). The container id becomes a
//! `container_id` label, as in statsd_exporter; the timestamp and unknown `|` fields are
//! ignored, as DogStatsD servers do.
//!
//! Tags come in four styles, each of which can be switched off ([`TagStyles`]): DogStatsD
//! `name:1|c|#k:v,k2:v2` (every `|#` section), InfluxDB `name,k=v,k2=v2:1|c`, Librato
//! `name#k=v,k2=v2:1|c` and SignalFX `name[k=v,k2=v2]:1|c`. A line with name tags and `|#`
//! tags is rejected. DogStatsD events (`_e{…}`) and service checks (`_sc|…`) are recognised
//! as such, not as metrics.

use std::borrow::Cow;

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
    /// `s`: a set; the number of distinct values over a window becomes a gauge.
    Set,
}

/// One value of a line with everything needed to apply it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample<'a> {
    /// The StatsD type of the value.
    pub metric_type: MetricType,
    /// The value as sent (a timer's value is still in milliseconds); 0 for a set.
    pub value: f64,
    /// The value's text: a set's member.
    pub text: &'a str,
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
    /// No `:` after the name, an empty name, no `|type` field, an empty `|` field, or a
    /// `|c` container field without an id.
    MalformedLine,
    /// The value is empty, not a number, or not finite.
    BadValue,
    /// The type is not one StatsD defines.
    BadType,
    /// Tags in more than one style on one line.
    MixedTaggingStyles,
    /// The `@rate` field is not a number in `(0, 1]`.
    BadSampleRate,
    /// A counter increment below zero: Prometheus counters never go down.
    NegativeCounter,
    /// The name escapes to one of tallyd's own metric names.
    ReservedName,
    /// A TCP line longer than the configured limit.
    LineTooLong,
    /// A mapping rule turned the name into an empty one.
    EmptyName,
    /// More tags than `limits.max_tags_per_line`.
    TooManyTags,
    /// A label name or value longer than `limits.max_label_bytes`.
    LabelTooLong,
    /// A datagram longer than `limits.max_datagram_bytes` (counted once per datagram).
    DatagramTooLarge,
    /// Several values on a counter, gauge or set line: DogStatsD packs only observations.
    PackedValues,
}

impl RejectReason {
    /// Every reason, in the order they are exported.
    pub const ALL: [RejectReason; 14] = [
        RejectReason::InvalidUtf8,
        RejectReason::MalformedLine,
        RejectReason::BadValue,
        RejectReason::BadType,
        RejectReason::MixedTaggingStyles,
        RejectReason::BadSampleRate,
        RejectReason::NegativeCounter,
        RejectReason::ReservedName,
        RejectReason::LineTooLong,
        RejectReason::EmptyName,
        RejectReason::TooManyTags,
        RejectReason::LabelTooLong,
        RejectReason::DatagramTooLarge,
        RejectReason::PackedValues,
    ];

    /// The `reason` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::MalformedLine => "malformed_line",
            RejectReason::BadValue => "bad_value",
            RejectReason::BadType => "bad_type",
            RejectReason::MixedTaggingStyles => "mixed_tagging_styles",
            RejectReason::BadSampleRate => "bad_sample_rate",
            RejectReason::NegativeCounter => "negative_counter",
            RejectReason::ReservedName => "reserved_name",
            RejectReason::LineTooLong => "line_too_long",
            RejectReason::EmptyName => "empty_name",
            RejectReason::TooManyTags => "too_many_tags",
            RejectReason::LabelTooLong => "label_too_long",
            RejectReason::DatagramTooLarge => "datagram_too_large",
            RejectReason::PackedValues => "packed_values",
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

/// Which tag styles are parsed; a style switched off leaves its text in the metric name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagStyles {
    /// `name:1|c|#k:v`
    pub dogstatsd: bool,
    /// `name,k=v:1|c`
    pub influxdb: bool,
    /// `name#k=v:1|c`
    pub librato: bool,
    /// `name[k=v]:1|c`
    pub signalfx: bool,
}

impl TagStyles {
    /// Every style on, as statsd_exporter's defaults.
    pub const ALL: TagStyles = TagStyles {
        dogstatsd: true,
        influxdb: true,
        librato: true,
        signalfx: true,
    };
}

impl Default for TagStyles {
    fn default() -> Self {
        TagStyles::ALL
    }
}

/// What a line is.
#[derive(Clone, Debug, PartialEq)]
pub enum Datum<'a> {
    /// A metric line.
    Metric(Line<'a>),
    /// A DogStatsD event, `_e{…}`.
    Event,
    /// A DogStatsD service check, `_sc|…`.
    ServiceCheck,
}

/// The tags of a line; see [`Tags::iter`]. A line carries tags from its name (InfluxDB,
/// Librato or SignalFX style) or from `|#` fields (DogStatsD), not both, except that name
/// tags none of which is valid do not keep `|#` tags out, as in statsd_exporter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tags<'a> {
    /// `k=v,k2=v2` from the name.
    named: &'a str,
    /// The line's fields after its type, read for `#` tag sections (when `dogstatsd`) and a
    /// `c:` container id; empty when none is there.
    fields: &'a str,
    /// Whether the `#` sections of `fields` are tags.
    dogstatsd: bool,
    /// A SignalFX bracket without its partner: the name is left as it is, and the tags it
    /// meant count as one tag error.
    broken: bool,
}
/// A parsed metric line: its name, its tags and its samples, borrowed from the input.
#[derive(Clone, Debug, PartialEq)]
pub struct Line<'a> {
    /// The metric name as sent without its tags, not yet escaped. Borrowed, except for a
    /// SignalFX name with text after its `[…]`.
    pub name: Cow<'a, str>,
    /// The line's tags.
    pub tags: Tags<'a>,
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

/// Parses one line (without its `\n`), with every tag style on.
pub fn parse_line(line: &[u8]) -> Result<Datum<'_>, RejectReason> {
    parse(line, TagStyles::ALL)
}

/// Parses one line (without its `\n`), with the given tag styles.
pub fn parse(line: &[u8], styles: TagStyles) -> Result<Datum<'_>, RejectReason> {
    let line = std::str::from_utf8(line).map_err(|_| RejectReason::InvalidUtf8)?;
    if let Some(event) = line.strip_prefix("_e{") {
        return is_event(event)
            .then_some(Datum::Event)
            .ok_or(RejectReason::MalformedLine);
    }
    if line.starts_with("_sc|") {
        return Ok(Datum::ServiceCheck);
    }
    let (name, body) = line.split_once(':').ok_or(RejectReason::MalformedLine)?;
    if name.is_empty() || body.is_empty() {
        return Err(RejectReason::MalformedLine);
    }
    let (values, fields) = body.split_once('|').ok_or(RejectReason::MalformedLine)?;
    let (name, named_tags) = split_name_tags(name, styles);
    if name.is_empty() {
        return Err(RejectReason::MalformedLine);
    }
    if !values.contains(':') && is_legacy(fields) {
        // Each group carries its own type; validate them lazily in `samples()`.
        return Ok(Datum::Metric(Line {
            name,
            tags: named_tags,
            body: Body::Legacy { groups: body },
        }));
    }
    let parsed = parse_fields(fields)?;
    if values.contains(':')
        && !matches!(
            parsed.metric_type,
            MetricType::Timer | MetricType::Histogram | MetricType::Distribution
        )
    {
        return Err(RejectReason::PackedValues);
    }
    let mut tags = named_tags;
    // statsd_exporter refuses `|#` tags beside name tags, whether it reads them or not, but
    // only when the name gave a label.
    if tags.has_valid_named() && body.contains("|#") {
        return Err(RejectReason::MixedTaggingStyles);
    }
    if let Some(extensions) = parsed.extensions {
        tags.fields = extensions;
        tags.dogstatsd = styles.dogstatsd;
    }
    Ok(Datum::Metric(Line {
        name,
        tags,
        body: Body::Packed {
            values,
            metric_type: parsed.metric_type,
            sample_rate: parsed.sample_rate,
        },
    }))
}

/// `_e{<title length>,<text length>}:<title>|<text>…`: checks the header's shape only.
fn is_event(rest: &str) -> bool {
    let Some((lengths, body)) = rest.split_once("}:") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    lengths
        .split_once(',')
        .is_some_and(|(title, text)| digits(title) && digits(text))
        && !body.is_empty()
}

/// Takes InfluxDB, Librato or SignalFX tags out of a name, as statsd_exporter does: a SignalFX
/// `[…]` first (a bracket without its partner leaves the name as it is); otherwise whichever
/// of a Librato `#` and an InfluxDB `,` comes first starts the tags.
fn split_name_tags(name: &str, styles: TagStyles) -> (Cow<'_, str>, Tags<'_>) {
    // Most names carry no tags: one pass to find that out.
    if !name.bytes().any(|b| matches!(b, b'[' | b']' | b'#' | b',')) {
        return (Cow::Borrowed(name), Tags::default());
    }
    if styles.signalfx {
        match (name.find('['), name.find(']')) {
            (Some(open), Some(close)) if open < close => {
                let (before, after) = (&name[..open], &name[close + 1..]);
                let joined = if after.is_empty() {
                    Cow::Borrowed(before)
                } else {
                    Cow::Owned(format!("{before}{after}"))
                };
                let tags = Tags {
                    named: &name[open + 1..close],
                    ..Tags::default()
                };
                return (joined, tags);
            }
            (None, None) => {}
            _ => {
                let tags = Tags {
                    broken: true,
                    ..Tags::default()
                };
                return (Cow::Borrowed(name), tags);
            }
        }
    }
    let start = name
        .bytes()
        .position(|b| (b == b'#' && styles.librato) || (b == b',' && styles.influxdb));
    match start {
        Some(at) => (
            Cow::Borrowed(&name[..at]),
            Tags {
                named: &name[at + 1..],
                ..Tags::default()
            },
        ),
        None => (Cow::Borrowed(name), Tags::default()),
    }
}

/// The legacy multi-sample form puts the `:` that starts the next group in the type field or
/// in a sample-rate field (`1|c:2|ms`, `1|c|@0.1:2|ms`). DogStatsD extension fields hold `:`
/// of their own (`|c:<container>`, `|card:low`, `|e:<external env>`) and do not make a line
/// legacy; nor do tags, as in statsd_exporter, because tag values may hold `:`.
fn is_legacy(fields: &str) -> bool {
    if fields.contains("|#") || fields.starts_with('#') {
        return false;
    }
    fields
        .split('|')
        .enumerate()
        .any(|(i, field)| field.contains(':') && (i == 0 || field.starts_with('@')))
}

struct Fields<'a> {
    metric_type: MetricType,
    sample_rate: f64,
    /// The fields after the type, when one of them is a `#` tag section or a `c:` container id.
    extensions: Option<&'a str>,
}

/// Parses `type[|@rate][|#tags][|c:container][|…]`.
fn parse_fields(fields: &str) -> Result<Fields<'_>, RejectReason> {
    let (metric_type, rest) = fields.split_once('|').unwrap_or((fields, ""));
    let mut out = Fields {
        metric_type: parse_type(metric_type)?,
        sample_rate: 1.0,
        extensions: None,
    };
    for field in fields.split('|').skip(1) {
        if field.is_empty() || field == "c" || field == "c:" {
            return Err(RejectReason::MalformedLine);
        }
        if let Some(rate) = field.strip_prefix('@') {
            out.sample_rate = parse_rate(rate)?;
        } else if field.starts_with('#') || is_container(field) {
            out.extensions = Some(rest);
        }
        // `T<timestamp>`, `card:`, `e:` and unknown fields are ignored, as DogStatsD does.
    }
    Ok(out)
}

/// `c:<container id>`, which statsd_exporter makes a `container_id` label.
fn is_container(field: &str) -> bool {
    field.len() > 2 && field.starts_with("c:")
}

fn parse_type(field: &str) -> Result<MetricType, RejectReason> {
    match field {
        "c" => Ok(MetricType::Counter),
        "g" => Ok(MetricType::Gauge),
        "ms" => Ok(MetricType::Timer),
        "h" => Ok(MetricType::Histogram),
        "d" => Ok(MetricType::Distribution),
        "s" => Ok(MetricType::Set),
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

/// Powers of ten, each exact as an f64.
const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The value of `text` if it is 1 to 15 decimal digits with at most one `.` among them: the
/// usual counter increment and timer value (`1`, `12.5`, `.25`). The digits make an integer
/// exact as an f64, and so is the power of ten it is divided by; one division of two exact
/// numbers is correctly rounded, so this is the same as `text.parse::<f64>()`, but several
/// times faster.
#[inline]
fn small_decimal(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let (mut n, mut digits, mut point) = (0u64, 0, None);
    for (i, &b) in bytes.iter().enumerate() {
        let digit = b.wrapping_sub(b'0');
        if digit <= 9 {
            n = n * 10 + u64::from(digit);
            digits += 1;
        } else if b == b'.' && point.is_none() {
            point = Some(i);
        } else {
            return None;
        }
    }
    if digits == 0 || digits > 15 {
        return None;
    }
    let decimals = point.map_or(0, |at| bytes.len() - at - 1);
    Some(n as f64 / POWERS_OF_TEN[decimals])
}

/// Parses one value of a line of `metric_type` and `sample_rate`: a number (not for a set),
/// finite, not negative for a counter.
#[inline]
pub fn parse_sample(
    text: &str,
    metric_type: MetricType,
    sample_rate: f64,
) -> Result<Sample<'_>, RejectReason> {
    if metric_type == MetricType::Set {
        // A set member is any non-empty text; it is counted, never added.
        if text.is_empty() {
            return Err(RejectReason::BadValue);
        }
        return Ok(Sample {
            metric_type,
            value: 0.0,
            text,
            relative: false,
            sample_rate,
        });
    }
    let number = match small_decimal(text) {
        Some(number) => number,
        None => text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or(RejectReason::BadValue)?,
    };
    if metric_type == MetricType::Counter && number < 0.0 {
        return Err(RejectReason::NegativeCounter);
    }
    Ok(Sample {
        metric_type,
        value: number,
        text,
        relative: metric_type == MetricType::Gauge && text.starts_with(['+', '-']),
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

    /// True for a line of one value in the usual form, `name:value|type…`: a later line with
    /// the same name and fields differs only by the value, which [`parse_sample`] reads with
    /// this line's type and rate.
    pub fn is_single(&self) -> bool {
        matches!(self.body, Body::Packed { values, .. } if !values.contains(':'))
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

impl<'a> Iterator for Samples<'a> {
    type Item = Result<Sample<'a>, RejectReason>;

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

impl<'a> Tags<'a> {
    /// A line without tags.
    pub const NONE: Tags<'static> = Tags {
        named: "",
        fields: "",
        dogstatsd: false,
        broken: false,
    };

    /// True when the line has no tags and no broken tag section.
    pub fn is_empty(&self) -> bool {
        self.named.is_empty() && !self.broken && !self.has_field_tags()
    }

    fn has_field_tags(&self) -> bool {
        self.fields
            .split('|')
            .any(|f| (self.dogstatsd && f.starts_with('#')) || is_container(f))
    }

    /// True when the name's tags hold at least one `k=v` with neither side empty.
    fn has_valid_named(&self) -> bool {
        self.named.split(',').any(|tag| {
            tag.split_once('=')
                .is_some_and(|(k, v)| !k.is_empty() && !v.is_empty())
        })
    }

    /// The `(name, value)` pairs, in the order the line gives them: `k=v` from the name, then
    /// `k:v` from each `|#` section (a tag's leading `#` dropped, as statsd_exporter does)
    /// and `container_id` from a `|c:` field. A tag without a value (`k`, or `k:` with an
    /// empty one) or with an empty name cannot become a label and yields [`TagError`], as
    /// statsd_exporter drops it; so does a value with a control character (a NUL, a carriage
    /// return, an escape sequence), which the text format would carry raw to every reader of
    /// the exposition, and a SignalFX bracket without its partner.
    pub fn iter(self) -> impl Iterator<Item = Result<(&'a str, &'a str), TagError>> {
        let broken = self.broken.then_some(Err(TagError));
        let named = split_tags(self.named, '=', false);
        let fields = self.fields.split('|').flat_map(move |field| {
            let (tags, container) = match field.strip_prefix('#') {
                Some(tags) if self.dogstatsd => (tags, None),
                _ if is_container(field) => ("", Some(Ok(("container_id", &field[2..])))),
                _ => ("", None),
            };
            split_tags(tags, ':', true).chain(container)
        });
        broken.into_iter().chain(named).chain(fields)
    }
}

/// `k<separator>v,…` into pairs, each checked as [`Tags::iter`] says; an empty tag before a
/// `,` is an error too, as in statsd_exporter. `trim_hash` drops one leading `#` of each tag.
fn split_tags(
    raw: &str,
    separator: char,
    trim_hash: bool,
) -> impl Iterator<Item = Result<(&str, &str), TagError>> {
    let raw = raw.strip_suffix(',').unwrap_or(raw);
    raw.split(',')
        .filter(move |_| !raw.is_empty())
        .map(move |tag| {
            let tag = if trim_hash {
                tag.strip_prefix('#').unwrap_or(tag)
            } else {
                tag
            };
            tag.split_once(separator)
                .filter(|(key, value)| {
                    !key.is_empty()
                        && !value.is_empty()
                        && !value.bytes().any(|b| b.is_ascii_control())
                })
                .ok_or(TagError)
        })
}

#[cfg(test)]
mod tests;
