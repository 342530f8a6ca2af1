//! From received bytes to per-family batches: splits lines, parses them, escapes each metric
//! name once (cached by the raw name), turns tags into labels and groups the updates by family,
//! so that each family actor gets one message per receive batch, never one per line.
//!
//! Counting happens here too, locally, and is added to the shared telemetry once per batch.

use rustc_hash::FxHashMap;
use std::sync::Arc;
use tracing::debug;

use crate::config::ObserverSettings;
use crate::family::{FamilyMeta, DEFAULT_HELP};
use crate::names;
use crate::statsd::parse::{self, Datum, RejectReason, TagStyles, Tags};
use crate::telemetry::{LogLimiter, Telemetry};
use crate::update::{LabelSet, Op, Update};

/// How many raw names a batcher remembers; past this the cache starts over, which keeps memory
/// bounded when an application sends endless distinct names.
const NAME_CACHE_LIMIT: usize = 100_000;

/// Rejected lines logged per second, per process.
static REJECT_LOG: LogLimiter = LogLimiter::new(10);

/// How lines become updates: shared by every listener.
#[derive(Debug)]
pub struct IngestConfig {
    /// Tag styles to parse.
    pub styles: TagStyles,
    /// Help and observer settings of families without a mapping.
    pub default_meta: Arc<FamilyMeta>,
}

impl IngestConfig {
    /// Parses `styles`; families without a mapping get the default help and `observer`.
    pub fn new(styles: TagStyles, observer: ObserverSettings) -> Self {
        IngestConfig {
            styles,
            default_meta: Arc::new(FamilyMeta {
                help: DEFAULT_HELP.into(),
                observer,
            }),
        }
    }
}

/// The updates of one family in one receive batch, with what the family is born with.
#[derive(Debug)]
pub struct Batch {
    /// Help and observer settings, used if the family does not exist yet.
    pub meta: Arc<FamilyMeta>,
    /// The updates, in arrival order.
    pub updates: Vec<Update>,
}

/// Accumulates the updates of one receive batch (one or more datagrams, or one TCP read).
#[derive(Debug)]
pub struct Batcher {
    telemetry: Arc<Telemetry>,
    config: Arc<IngestConfig>,
    /// Raw StatsD name → family name, or `None` for a name that escapes to a reserved one.
    names: FxHashMap<Box<str>, Option<Arc<str>>>,
    pending: FxHashMap<Arc<str>, Batch>,
    counts: Counts,
}

#[derive(Debug, Default)]
struct Counts {
    lines: u64,
    samples: u64,
    tag_errors: u64,
    /// DogStatsD events, then service checks.
    events: [u64; 2],
    rejected: [u64; RejectReason::ALL.len()],
}

impl Counts {
    fn reject(&mut self, reason: RejectReason, raw: &[u8]) {
        self.rejected[reason.index()] += 1;
        if let Some(suppressed) = REJECT_LOG.allow() {
            debug!(
                %reason,
                line = %String::from_utf8_lossy(&raw[..raw.len().min(256)]),
                suppressed,
                "rejected StatsD line"
            );
        }
    }
}

impl Batcher {
    /// An empty batcher reporting to `telemetry`.
    pub fn new(telemetry: Arc<Telemetry>, config: Arc<IngestConfig>) -> Self {
        Batcher {
            telemetry,
            config,
            names: FxHashMap::default(),
            pending: FxHashMap::default(),
            counts: Counts::default(),
        }
    }

    /// Adds every line of a datagram (or of a chunk of complete TCP lines).
    pub fn ingest(&mut self, datagram: &[u8]) {
        for line in parse::lines(datagram) {
            self.ingest_line(line);
        }
    }

    /// Adds one line (without its newline).
    pub fn ingest_line(&mut self, raw: &[u8]) {
        self.counts.lines += 1;
        let line = match parse::parse(raw, self.config.styles) {
            Ok(Datum::Metric(line)) => line,
            Ok(Datum::Event) => return self.counts.events[0] += 1,
            Ok(Datum::ServiceCheck) => return self.counts.events[1] += 1,
            Err(reason) => return self.counts.reject(reason, raw),
        };
        let Some(family) = self.family_name(&line.name) else {
            return self.counts.reject(RejectReason::ReservedName, raw);
        };
        let mut labels = self.labels(line.tags, line.observes());
        let meta = &self.config.default_meta;
        let updates = &mut self
            .pending
            .entry(family)
            .or_insert_with(|| Batch {
                meta: meta.clone(),
                updates: Vec::new(),
            })
            .updates;
        let mut samples = line.samples().peekable();
        while let Some(sample) = samples.next() {
            match sample {
                Ok(sample) => {
                    // Packed values share the line's labels; only the last one takes them.
                    let labels = if samples.peek().is_some() {
                        labels.clone()
                    } else {
                        std::mem::take(&mut labels)
                    };
                    updates.push(Update {
                        labels,
                        op: Op::from_sample(&sample),
                    });
                    self.counts.samples += 1;
                }
                Err(reason) => self.counts.reject(reason, raw),
            }
        }
    }

    fn family_name(&mut self, raw: &str) -> Option<Arc<str>> {
        if let Some(found) = self.names.get(raw) {
            return found.clone();
        }
        if self.names.len() >= NAME_CACHE_LIMIT {
            self.names.clear();
        }
        let escaped = names::escape(raw);
        let family = (!self.telemetry.is_reserved(&escaped)).then(|| Arc::from(&*escaped));
        self.names.insert(raw.into(), family.clone());
        family
    }

    /// Labels from tags. A tag that cannot be a label is dropped and counted: no value, no
    /// name, a name Prometheus reserves (`__…`), or on an observer the `quantile` or `le`
    /// label its summary or histogram series carry.
    fn labels(&mut self, tags: Tags<'_>, observer: bool) -> LabelSet {
        if tags == Tags::None {
            return LabelSet::default();
        }
        let mut pairs = Vec::new();
        for tag in tags.iter() {
            let label = tag.ok().map(|(key, value)| (names::escape(key), value));
            match label {
                Some((key, value))
                    if !key.starts_with("__")
                        && !(observer && (key == "quantile" || key == "le")) =>
                {
                    pairs.push((key.into(), value.into()));
                }
                _ => self.counts.tag_errors += 1,
            }
        }
        LabelSet::from_pairs(pairs)
    }

    /// Counts a line the listener refused before parsing (e.g. over-long on TCP).
    pub fn reject_unparsed(&mut self, reason: RejectReason, raw: &[u8]) {
        self.counts.lines += 1;
        self.counts.reject(reason, raw);
    }

    /// True when no update is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes the batches gathered so far, one per family, and adds the batch's counts to the
    /// shared telemetry.
    pub fn take(&mut self) -> impl Iterator<Item = (Arc<str>, Batch)> + '_ {
        self.flush_counts();
        self.pending
            .drain()
            .filter(|(_, batch)| !batch.updates.is_empty())
    }

    fn flush_counts(&mut self) {
        let counts = std::mem::take(&mut self.counts);
        let t = &self.telemetry;
        t.lines.inc_by(counts.lines);
        t.samples.inc_by(counts.samples);
        t.tag_errors.inc_by(counts.tag_errors);
        t.events(counts.events[0], counts.events[1]);
        for (reason, n) in RejectReason::ALL.iter().zip(counts.rejected) {
            if n > 0 {
                t.rejected(*reason, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(input: &[u8]) -> (Vec<(String, Vec<Update>)>, Arc<Telemetry>) {
        let telemetry = Arc::new(Telemetry::new());
        let config = IngestConfig::new(TagStyles::ALL, ObserverSettings::default());
        let mut b = Batcher::new(telemetry.clone(), Arc::new(config));
        b.ingest(input);
        let mut out: Vec<_> = b.take().map(|(k, v)| (k.to_string(), v.updates)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        (out, telemetry)
    }

    #[test]
    fn groups_updates_by_escaped_family() {
        let (got, t) = batches(b"a.b:1|c\nq:+2|g|#k:v\na-b:3|c|#x:y,flag\nbad\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "a_b");
        assert_eq!(got[0].1.len(), 2);
        assert_eq!(got[0].1[0].op, Op::Add(1.0));
        assert_eq!(got[0].1[1].labels.iter().collect::<Vec<_>>(), [("x", "y")]);
        assert_eq!(got[1].1[0].op, Op::Shift(2.0));
        assert_eq!(t.lines.get(), 4);
        assert_eq!(t.samples.get(), 3);
        assert_eq!(t.tag_errors.get(), 1);
    }

    #[test]
    fn packed_values_become_one_update_each() {
        let (got, _) = batches(b"lat:1:2:3|ms|#k:v");
        let ops: Vec<_> = got[0].1.iter().map(|u| u.op).collect();
        assert_eq!(
            ops,
            [0.001, 0.002, 0.003].map(|value| Op::Observe { value, count: 1 })
        );
        assert!(got[0].1.iter().all(|u| u.labels.iter().eq([("k", "v")])));
    }

    #[test]
    fn tags_that_cannot_be_labels_are_dropped_and_counted() {
        let (got, t) = batches(b"t:1|ms|#quantile:x,le:1,__name__:y,ok:1\nc:1|c|#quantile:x,le:1");
        let labels = |i: usize| got[i].1[0].labels.iter().collect::<Vec<_>>();
        assert_eq!(got[0].0, "c");
        assert_eq!(labels(0), [("le", "1"), ("quantile", "x")]);
        assert_eq!(labels(1), [("ok", "1")]);
        assert_eq!(t.tag_errors.get(), 3);
    }

    #[test]
    fn reserved_names_are_rejected() {
        let (got, t) = batches(b"tallyd.lines.total:1|c\nprocess_open_fds:1|g");
        assert!(got.is_empty());
        let families = t.gather();
        let rejected = families
            .iter()
            .find(|f| f.name() == "tallyd_lines_rejected_total")
            .unwrap();
        let reserved = rejected
            .get_metric()
            .iter()
            .find(|m| m.get_label()[0].value() == "reserved_name")
            .unwrap();
        assert_eq!(reserved.get_counter().get_value(), 2.0);
    }
}
