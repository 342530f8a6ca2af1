//! What tallyd keeps to show a person what it is doing (`/api/v1/` and the status page at `/`),
//! each in bounded memory, whatever arrives:
//! - the last [`REJECTED_KEPT`] refused lines, each cut at [`REJECTED_LINE_BYTES`];
//! - the StatsD names no mapping rule matched, with how many lines each sent: a top-k sketch
//!   (filtered space-saving, the `topk` crate) of [`UNMAPPED_KEPT`] names, so a flood of new
//!   names costs no more than a few;
//! - the outcome of the last mapping file load;
//! - [`HISTORY_POINTS`] totals, one every [`HISTORY_STEP`], for the chart of the last minutes.
//!
//! Listener tasks hand over their refused lines once per datagram ([`Refused`]) and their
//! unmapped names once per flush (see `ingest::unmapped`); the history is sampled by a task
//! of its own ([`sample`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use topk::FilteredSpaceSaving;

use super::{ListenerKind, Telemetry};
use crate::statsd::parse::RejectReason;

/// Refused lines kept.
pub const REJECTED_KEPT: usize = 1000;
/// Bytes of a refused line kept.
pub const REJECTED_LINE_BYTES: usize = 512;
/// Unmapped names the sketch follows.
pub const UNMAPPED_KEPT: usize = 1000;
/// Time between two points of the history.
pub const HISTORY_STEP: Duration = Duration::from_secs(2);
/// Points of history kept: ten minutes.
pub const HISTORY_POINTS: usize = 300;

/// A refused line.
#[derive(Clone, Debug)]
pub struct Rejected {
    /// When it was refused.
    pub at: SystemTime,
    /// The listener that read it.
    pub listener: ListenerKind,
    /// Why.
    pub reason: RejectReason,
    /// Its first [`REJECTED_LINE_BYTES`] bytes.
    pub line: Vec<u8>,
    /// Its whole length, in bytes.
    pub length: usize,
}

/// The loads of the mapping file: the last that worked, and the last that failed after it.
#[derive(Clone, Debug, Default)]
pub struct MappingLoads {
    /// When the rules in force were loaded.
    pub loaded: Option<SystemTime>,
    /// When a later load failed, and why (the rules in force stay).
    pub failed: Option<(SystemTime, String)>,
}

/// Totals at one moment of the history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Seconds since the Unix epoch.
    pub at: f64,
    /// `tallyd_lines_total`.
    pub lines: u64,
    /// `tallyd_lines_rejected_total`, every reason.
    pub rejected: u64,
    /// `tallyd_samples_total`.
    pub samples: u64,
}

/// A listener task's refused lines, gathered for [`Recent`]'s ring: each cut at
/// [`REJECTED_LINE_BYTES`] into one buffer, handed over together (one lock, one clock read,
/// per datagram with refused lines rather than per line).
#[derive(Debug, Default)]
pub struct Refused {
    bytes: Vec<u8>,
    /// Each line's reason, end in `bytes`, and whole length.
    lines: Vec<(RejectReason, usize, usize)>,
}

impl Refused {
    /// Gathers a refused line; true when as many are gathered as the ring keeps.
    pub fn add(&mut self, reason: RejectReason, raw: &[u8]) -> bool {
        self.bytes
            .extend_from_slice(&raw[..raw.len().min(REJECTED_LINE_BYTES)]);
        self.lines.push((reason, self.bytes.len(), raw.len()));
        self.lines.len() >= REJECTED_KEPT
    }

    /// Hands the lines gathered to `recent`'s ring, refused now by `listener`. (Nothing is
    /// gathered when the ring keeps nothing: see [`Recent::keeps_refused`].)
    pub fn hand_over(&mut self, recent: &Recent, listener: ListenerKind) {
        if self.lines.is_empty() {
            return;
        }
        let bytes = &self.bytes;
        let mut start = 0;
        let lines = self.lines.iter().map(|&(reason, end, length)| {
            let line = &bytes[start..end];
            start = end;
            (reason, line, length)
        });
        recent.keep(listener, SystemTime::now(), lines);
        self.bytes.clear();
        self.lines.clear();
    }
}

/// The bounded memories of [`Telemetry`] (see the module).
#[derive(Debug)]
pub struct Recent {
    started: SystemTime,
    /// Whether refused lines are kept (the API is on).
    keeping: AtomicBool,
    rejected: Mutex<VecDeque<Rejected>>,
    /// The sketch, with its generation: one more at each clear.
    unmapped: Mutex<(u64, Option<Sketch>)>,
    mapping: Mutex<MappingLoads>,
    history: Mutex<VecDeque<Point>>,
}

/// The unmapped names' sketch (which has no `Debug` of its own).
struct Sketch(FilteredSpaceSaving<Box<str>>);

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sketch").field("k", &self.0.k()).finish()
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            started: SystemTime::now(),
            keeping: AtomicBool::new(true),
            rejected: Mutex::default(),
            unmapped: Mutex::default(),
            mapping: Mutex::default(),
            history: Mutex::default(),
        }
    }
}

impl Recent {
    /// When tallyd started.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Keeps no refused line (the API that shows them is off).
    pub fn keep_nothing(&self) {
        self.keeping.store(false, Ordering::Relaxed);
    }

    /// True when refused lines are kept.
    pub fn keeps_refused(&self) -> bool {
        self.keeping.load(Ordering::Relaxed)
    }

    /// Keeps refused lines, all refused `at` by `listener`, forgetting the oldest past
    /// [`REJECTED_KEPT`] (whose buffers it reuses: once full, keeping a line allocates
    /// nothing).
    fn keep<'a>(
        &self,
        listener: ListenerKind,
        at: SystemTime,
        lines: impl Iterator<Item = (RejectReason, &'a [u8], usize)>,
    ) {
        let mut ring = locked(&self.rejected);
        for (reason, kept, length) in lines {
            let mut line = match ring.len() >= REJECTED_KEPT {
                true => ring.pop_front().map(|old| old.line).unwrap_or_default(),
                false => Vec::new(),
            };
            line.clear();
            line.extend_from_slice(kept);
            ring.push_back(Rejected {
                at,
                listener,
                reason,
                line,
                length,
            });
        }
    }

    /// The refused lines kept, newest first, at most `limit`.
    pub fn rejected(&self, limit: usize) -> Vec<Rejected> {
        locked(&self.rejected)
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// The unmapped names' generation: one more each time they are forgotten.
    pub fn unmapped_generation(&self) -> u64 {
        locked(&self.unmapped).0
    }

    /// Adds lines to unmapped names' counts, unless they were counted for an older
    /// `generation` (under the mapping rules before a reload).
    pub fn unmapped(&self, generation: u64, names: impl IntoIterator<Item = (Box<str>, u64)>) {
        let mut sketch = locked(&self.unmapped);
        if sketch.0 != generation {
            return;
        }
        let sketch = sketch
            .1
            .get_or_insert_with(|| Sketch(FilteredSpaceSaving::new(UNMAPPED_KEPT)));
        for (name, lines) in names {
            sketch.0.insert(name, lines);
        }
    }

    /// The unmapped names with the most lines, most first, at most `limit`: each with its
    /// count, which may be over by at most its error (zero while fewer than
    /// [`UNMAPPED_KEPT`] names were seen), and that error.
    pub fn top_unmapped(&self, limit: usize) -> Vec<(Box<str>, u64, u64)> {
        let sketch = locked(&self.unmapped);
        let mut top: Vec<_> = sketch
            .1
            .iter()
            .flat_map(|s| s.0.iter())
            .map(|(name, c)| (name.clone(), c.estimated_count(), c.associated_error()))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(limit);
        top
    }

    /// Forgets the unmapped names, for new mapping rules (what matched nothing may now):
    /// called before the rules are swapped, so counts made under the new rules are of the
    /// new generation.
    pub fn clear_unmapped(&self) {
        let mut sketch = locked(&self.unmapped);
        *sketch = (sketch.0 + 1, None);
    }

    /// Records a load of the mapping file that worked.
    pub fn mapping_loaded(&self, at: SystemTime) {
        *locked(&self.mapping) = MappingLoads {
            loaded: Some(at),
            failed: None,
        };
    }

    /// Records a load of the mapping file that failed, and why.
    pub fn mapping_failed(&self, at: SystemTime, error: String) {
        locked(&self.mapping).failed = Some((at, error));
    }

    /// The loads of the mapping file.
    pub fn mapping(&self) -> MappingLoads {
        locked(&self.mapping).clone()
    }

    /// Adds a point to the history, forgetting the oldest past [`HISTORY_POINTS`].
    pub fn record(&self, point: Point) {
        let mut history = locked(&self.history);
        if history.len() >= HISTORY_POINTS {
            history.pop_front();
        }
        history.push_back(point);
    }

    /// The history, oldest first.
    pub fn history(&self) -> Vec<Point> {
        locked(&self.history).iter().copied().collect()
    }
}

/// The totals now, as a point of the history.
pub fn point(telemetry: &Telemetry) -> Point {
    let at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Point {
        at,
        lines: telemetry.lines.get(),
        rejected: telemetry.rejected_total(),
        samples: telemetry.samples.get(),
    }
}

/// Records a point of history every [`HISTORY_STEP`], until dropped.
pub async fn sample(telemetry: std::sync::Arc<Telemetry>) {
    let mut every = tokio::time::interval(HISTORY_STEP);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        telemetry.recent.record(point(&telemetry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_refused_lines_cut() {
        let recent = Recent::default();
        let long = vec![b'x'; 2000];
        let mut refused = Refused::default();
        for n in 0..REJECTED_KEPT + 5 {
            let line = format!("line{n}");
            if refused.add(RejectReason::BadValue, line.as_bytes()) {
                refused.hand_over(&recent, ListenerKind::Udp);
            }
        }
        refused.hand_over(&recent, ListenerKind::Udp);
        refused.add(RejectReason::LineTooLong, &long);
        refused.hand_over(&recent, ListenerKind::Tcp);
        let kept = recent.rejected(usize::MAX);
        assert_eq!(kept.len(), REJECTED_KEPT);
        assert_eq!(kept[0].line.len(), REJECTED_LINE_BYTES);
        assert_eq!(kept[0].length, 2000);
        assert_eq!(kept[0].listener, ListenerKind::Tcp);
        assert_eq!(
            kept[1].line,
            format!("line{}", REJECTED_KEPT + 4).as_bytes()
        );
        assert_eq!(kept.last().unwrap().line, b"line6");
        assert_eq!(recent.rejected(2).len(), 2);
    }

    #[test]
    fn unmapped_names_are_counted_and_bounded() {
        let recent = Recent::default();
        recent.unmapped(0, [("a.b".into(), 5), ("c".into(), 2)]);
        recent.unmapped(0, [("a.b".into(), 1)]);
        for n in 0..10 * UNMAPPED_KEPT {
            recent.unmapped(0, [(format!("flood.{n}").into(), 1)]);
        }
        let top = recent.top_unmapped(2);
        assert_eq!(top[0].0.as_ref(), "a.b");
        assert!(top[0].1 >= 6 && top[0].1 - top[0].2 <= 6, "{top:?}");
        assert_eq!(recent.top_unmapped(usize::MAX).len(), UNMAPPED_KEPT);
        recent.clear_unmapped();
        assert!(recent.top_unmapped(10).is_empty());
    }

    #[test]
    fn history_is_bounded() {
        let recent = Recent::default();
        for n in 0..HISTORY_POINTS as u64 + 3 {
            recent.record(Point {
                at: n as f64,
                lines: n,
                rejected: 0,
                samples: n,
            });
        }
        let history = recent.history();
        assert_eq!(history.len(), HISTORY_POINTS);
        assert_eq!(history[0].lines, 3);
    }
}
