//! The batcher: parses a datagram's lines, has each name and its tags resolved to a series
//! slot ([`Resolver`]), and holds the updates for the next flush ([`Pending`]). A line whose
//! name and fields (all but its value) were seen before skips parsing its tags and resolving
//! altogether: its value goes straight into its series' slot ([`KnownLine`]). Counting happens
//! here too, locally, and is added to the shared telemetry once per flush.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

use super::lines::{self, LineCache};
use super::marks::{Line, Marks};
use super::pending::{self, Pending};
use super::relay::Relay;
use super::resolve::{class_of, Resolver, Target};
use super::unmapped::UnmappedTally;
use super::IngestConfig;
use crate::mapping::MetricClass;
use crate::statsd::parse::{self, Datum, MetricType, RejectReason, Sample, TagStyles};
use crate::telemetry::recent::Refused;
use crate::telemetry::{ListenerKind, LogLimiter, Telemetry};
use crate::update::{Batch, Op};

/// How many lines a batcher remembers by name and fields (see [`KnownLine`]); past this it
/// starts over.
const LINE_CACHE_LIMIT: usize = pending::SLOT_LIMIT;
/// Longest name and fields of a line remembered: so a batcher's line cache holds
/// about 32,768 × 256 bytes of keys (keys a growth could not place again stay until a clear).
const LINE_KEY_LIMIT: usize = 256;
/// Lines looked up in the line cache together (see [`Batcher::ingest`]): enough for their
/// cache misses to overlap, few enough that what was fetched for the first is still cached
/// when it is used, and that the look-up's scratch space stays small.
const LOOKAHEAD: usize = 32;
/// Time without input after which a batcher lets go of its caches.
const CACHE_IDLE: Duration = Duration::from_secs(1);

/// Rejected lines logged per second, per process.
static REJECT_LOG: LogLimiter = LogLimiter::new(10);

/// A line seen before, by its name and fields (everything but its value): what another line
/// with the same name and fields becomes, without parsing its tags or routing its name again.
/// Only lines of one value of a type other than a set are remembered, and only when they reached
/// a series.
#[derive(Clone, Copy, Debug)]
pub(super) struct KnownLine {
    series: u32,
    scale: Option<f64>,
    metric_type: MetricType,
    sample_rate: f64,
    /// Tags dropped from the line (counted for every line). A line has fewer than 32,768
    /// tags: it is at most 65,536 bytes long.
    tag_errors: u16,
    /// Labels dropped by routing (counted for every line that routes).
    route_errors: u16,
    /// The name matched no mapping rule while a mapping file is in force: its number in the
    /// batcher's [`UnmappedTally`].
    unmapped: Option<NonZeroU32>,
}

// The line cache holds one per line: it stays at 40 bytes.
const _: () = assert!(std::mem::size_of::<KnownLine>() == 40);

/// A line's name (with the `:` after it), value and fields (from the `|` after the value), as
/// [`parse::parse`] splits them; `None` for a line with no value and type, or with several
/// values (`name:1:2|c`).
pub(super) fn split_single(raw: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let colon = find_either(raw, b':', b':')?;
    let (name, body) = raw.split_at(colon + 1);
    let end = find_either(body, b'|', b':')?;
    if body[end] == b':' {
        return None;
    }
    let (value, fields) = body.split_at(end);
    Some((name, value, fields))
}

/// Where the first `a` or `b` is in `hay`. Names and values are short, too short for a
/// vectorised search's set-up to pay: this one looks at eight bytes at a time in a register,
/// then at the last few one by one.
#[inline]
fn find_either(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // The high bit of each zero byte of `x` (and maybe of bytes after the first zero one,
    // which a borrow reached: only the first flagged byte is looked at).
    let zeros = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let (wa, wb) = (ONES * u64::from(a), ONES * u64::from(b));
    let mut words = hay.chunks_exact(8);
    let mut at = 0;
    for word in words.by_ref() {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let found = zeros(w ^ wa) | zeros(w ^ wb);
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let rest = words.remainder();
    rest.iter().position(|&c| c == a || c == b).map(|i| at + i)
}

/// A line of the datagram being added, as [`Batcher::ingest`] looks it up in the line cache:
/// small, as the look-up passes over a datagram's lines several times.
#[derive(Debug)]
struct Scanned {
    /// The line, in the datagram.
    start: usize,
    end: usize,
    /// For a line the cache may know ([`split_single`]): where its value starts and ends (its
    /// name is before, its fields after, from the `|`), else `value_start == value_end == end`.
    value_start: usize,
    value_end: usize,
    /// The line cache's hash of its name and fields, unless `guessed`.
    hash: u64,
    /// The cache's entry for that hash (or the one found by place, see `guessed`), then only
    /// if that entry's key is the line's.
    entry: Option<u32>,
    /// `entry` was found by its place, after the line before's (see [`Batcher::guess`]), and
    /// holds the line's name and fields: `hash` was not needed.
    guessed: bool,
}

impl Scanned {
    /// True for a line the cache may know: it has fields after its value.
    fn single(&self) -> bool {
        self.value_end < self.end
    }

    fn name<'d>(&self, datagram: &'d [u8]) -> &'d [u8] {
        &datagram[self.start..self.value_start]
    }

    fn fields<'d>(&self, datagram: &'d [u8]) -> &'d [u8] {
        &datagram[self.value_end..self.end]
    }
}

/// A known line's value as text, if it is UTF-8. Values are short and most are ASCII (digits,
/// a sign, a point), which needs no call to the general check.
#[inline]
fn value_text(value: &[u8]) -> Option<&str> {
    if value.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(value) })
    } else {
        std::str::from_utf8(value).ok()
    }
}

/// A sample's operation, scaled by a mapping rule's `scale`.
#[inline]
fn op_for(sample: &Sample<'_>, scale: Option<f64>) -> Result<Op, RejectReason> {
    let op = Op::from_sample(sample);
    let Some(scale) = scale else {
        return Ok(op);
    };
    match op.scaled(scale) {
        // A negative scale must not make a counter go down.
        Op::Add(v) if v < 0.0 => Err(RejectReason::NegativeCounter),
        op => Ok(op),
    }
}

/// Accumulates the updates of one receive batch (one or more datagrams, or one TCP read).
#[derive(Debug)]
pub struct Batcher {
    telemetry: Arc<Telemetry>,
    /// The listener whose lines these are, for the refused lines kept.
    listener: ListenerKind,
    /// Tag styles to parse.
    styles: TagStyles,
    /// Where a line's name and tags go.
    resolver: Resolver,
    /// The updates held, by series slot, combined where exact.
    pending: Pending,
    /// Lines seen before, by name and fields (see [`KnownLine`]), each pointing at a slot of
    /// `pending`: cleared with its slots, on a reload and past [`LINE_CACHE_LIMIT`].
    lines: LineCache<KnownLine>,
    /// The lines of the datagram being added (see [`Batcher::ingest`]).
    scan: Vec<Scanned>,
    /// The separators of the datagram being added.
    marks: Marks,
    /// The entry of `lines` after the last line's looked up: the next line's, when lines
    /// come in the order they were first seen (entries are in that order).
    guess: Option<u32>,
    /// Lines answered by `lines` while a mapping file is in force: mapping cache hits.
    line_hits: u64,
    /// Input came since the last idle tick (a flag rather than a time: no clock read per
    /// datagram).
    fresh_input: bool,
    /// The first idle tick after the last input: the idle time counts from there.
    last_input: Instant,
    counts: Counts,
    /// The lines of each unmapped name since the last flush.
    unmapped: UnmappedTally,
    /// The lines refused in the datagram being added.
    refused: Refused,
    /// The map cache's hit and miss counts already added to the telemetry.
    reported_cache: (u64, u64),
    /// The packet of relayed lines being filled, when a relay is configured.
    relay: Option<Relay>,
}

#[derive(Debug, Default, PartialEq)]
struct Counts {
    lines: u64,
    samples: u64,
    tag_errors: u64,
    /// DogStatsD events, then service checks.
    events: [u64; 2],
    unmapped: u64,
    dropped: u64,
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
    /// An empty batcher for the lines of `listener`, reporting to `telemetry`.
    pub fn new(
        telemetry: Arc<Telemetry>,
        config: Arc<IngestConfig>,
        listener: ListenerKind,
    ) -> Self {
        let relay = config.relay.clone().map(Relay::new);
        Batcher {
            listener,
            unmapped: UnmappedTally::new(&telemetry.recent),
            refused: Refused::default(),
            styles: config.styles,
            resolver: Resolver::new(telemetry.clone(), config),
            telemetry,
            pending: Pending::default(),
            lines: LineCache::default(),
            scan: Vec::new(),
            marks: Marks::default(),
            guess: None,
            line_hits: 0,
            fresh_input: false,
            last_input: Instant::now(),
            counts: Counts::default(),
            reported_cache: (0, 0),
            relay,
        }
    }

    /// Adds every line of a datagram (or of a chunk of complete TCP lines).
    ///
    /// The lines are looked up in the line cache `LOOKAHEAD` at a time, in stages, each
    /// stage asking for the memory the next one reads, and only then added in order: the
    /// cache misses of a datagram's lines (the caches are often cold after the idle time
    /// between datagrams) overlap rather than come one after another.
    pub fn ingest(&mut self, datagram: &[u8]) {
        self.fresh_input = true;
        if self.resolver.reloaded() {
            self.lines.clear();
            self.pending.reset();
            // What matched no rule may match now: the tally starts over with the sketch.
            self.unmapped = UnmappedTally::new(&self.telemetry.recent);
        }
        let mut scan = std::mem::take(&mut self.scan);
        let mut marks = std::mem::take(&mut self.marks);
        marks.scan(datagram);
        let mut lines = marks.lines(datagram);
        loop {
            self.look_up(&mut scan, datagram, lines.by_ref().take(LOOKAHEAD));
            if scan.is_empty() {
                break;
            }
            self.probe(&mut scan, datagram);
            self.add(&mut scan, datagram);
        }
        self.scan = scan;
        self.marks = marks;
        self.keep_refused();
    }

    /// The first stage: each line is compared with the entry after the last line's, which
    /// holds it when the lines come in the order they were first seen (as a client that sends
    /// the same metrics in the same order does), and else its index bucket is asked for.
    fn look_up(
        &mut self,
        scan: &mut Vec<Scanned>,
        datagram: &[u8],
        lines: impl Iterator<Item = Line>,
    ) {
        let mut guess = self.guess;
        for line in lines {
            let (start, end) = (line.start, line.end);
            let mut scanned = Scanned {
                start,
                end,
                value_start: end,
                value_end: end,
                hash: 0,
                entry: None,
                guessed: false,
            };
            if let Some((value_start, value_end)) = line.value {
                (scanned.value_start, scanned.value_end) = (value_start, value_end);
                let (name, fields) = (scanned.name(datagram), scanned.fields(datagram));
                match guess.filter(|&entry| self.lines.holds(entry, name, fields)) {
                    Some(entry) => {
                        (scanned.entry, scanned.guessed) = (Some(entry), true);
                        guess = Some(entry + 1);
                    }
                    None => {
                        // Out of order: the rest of these lines are looked up.
                        guess = None;
                        scanned.hash = lines::hash(name, fields);
                        self.lines.prefetch(scanned.hash);
                    }
                }
            }
            scan.push(scanned);
        }
    }

    /// The next stages: each line's bucket is read, and its entry asked for; then the entry
    /// is checked, and the series slot of a line seen before asked for.
    fn probe(&mut self, scan: &mut [Scanned], datagram: &[u8]) {
        for scanned in scan.iter_mut() {
            if scanned.single() && !scanned.guessed {
                scanned.entry = self.lines.probe(scanned.hash);
            }
        }
        for scanned in scan.iter_mut() {
            if let Some(entry) = scanned.entry {
                let (name, fields) = (scanned.name(datagram), scanned.fields(datagram));
                let known = if scanned.guessed {
                    self.lines.value(entry)
                } else {
                    self.lines.get(entry, scanned.hash, name, fields)
                };
                match known {
                    Some(known) => self.pending.prefetch(known.series),
                    None => scanned.entry = None,
                }
            }
        }
        self.guess = scan
            .last()
            .and_then(|last| last.entry)
            .map(|entry| entry + 1);
    }

    /// The last stage: the lines are added, in order. A line that takes the long way may
    /// clear the cache, and so move its keys: the lines after it are then looked up again.
    fn add(&mut self, scan: &mut Vec<Scanned>, datagram: &[u8]) {
        let moves = self.lines.moves();
        for scanned in scan.drain(..) {
            let line = &datagram[scanned.start..scanned.end];
            if let Some(relay) = &mut self.relay {
                relay.push(line);
            }
            let known = scanned.entry.and_then(|entry| {
                let value = &datagram[scanned.value_start..scanned.value_end];
                let known = if self.lines.moves() != moves {
                    let (name, fields) = (scanned.name(datagram), scanned.fields(datagram));
                    // Rare: hashed again, whether it was by the look-up or not (see
                    // `guessed`).
                    self.lines.find(lines::hash(name, fields), name, fields)
                } else {
                    self.lines.value(entry)
                };
                Some((known?, value_text(value)?))
            });
            match known {
                Some((known, text)) => self.ingest_known(line, text, known),
                None => self.ingest_line(line),
            }
        }
    }

    /// Adds a line whose name and fields were seen before, with its value, as `known` found it.
    fn ingest_known(&mut self, raw: &[u8], text: &str, known: KnownLine) {
        // The counts of `ingest_line`, in its order.
        self.counts.lines += 1;
        self.counts.tag_errors += u64::from(known.tag_errors);
        let sample = match parse::parse_sample(text, known.metric_type, known.sample_rate) {
            Ok(sample) => sample,
            Err(reason) => return self.refuse(reason, raw),
        };
        self.counts.tag_errors += u64::from(known.route_errors);
        if let Some(name) = known.unmapped {
            self.counts.unmapped += 1;
            self.unmapped.count(name);
        }
        if self.resolver.maps() {
            self.line_hits += 1;
        }
        match op_for(&sample, known.scale) {
            Ok(op) => {
                self.pending.push(known.series, op);
                self.counts.samples += 1;
            }
            Err(reason) => self.refuse(reason, raw),
        }
    }

    /// Adds one line (without its newline), and remembers how it resolved when a line with
    /// the same name and fields can reuse that (see `KnownLine`).
    pub fn ingest_line(&mut self, raw: &[u8]) {
        self.counts.lines += 1;
        let line = match parse::parse(raw, self.styles) {
            Ok(Datum::Metric(line)) => line,
            Ok(Datum::Event) => return self.counts.events[0] += 1,
            Ok(Datum::ServiceCheck) => return self.counts.events[1] += 1,
            Err(reason) => return self.refuse(reason, raw),
        };
        let tag_errors = self.resolver.tallies.tag_errors;
        let tags = match self.resolver.tag_pairs(line.tags, line.observes()) {
            Ok(tags) => tags,
            Err(reason) => return self.refuse(reason, raw),
        };
        let tag_errors = self.resolver.tallies.tag_errors - tag_errors;
        // Samples of one line share a class, except in the legacy multi-type form: route and
        // label once per class.
        let mut routed: Option<(MetricClass, Target)> = None;
        let mut remember = None;
        for sample in line.samples() {
            let sample = match sample {
                Ok(sample) => sample,
                Err(reason) => {
                    self.refuse(reason, raw);
                    continue;
                }
            };
            let class = class_of(sample.metric_type);
            let target = match routed {
                Some((c, target)) if c == class => target,
                _ => {
                    let tallies = &self.resolver.tallies;
                    let (errors, unmapped) = (tallies.tag_errors, tallies.unmapped);
                    let target = self
                        .resolver
                        .target(&mut self.pending, &line.name, &tags, class);
                    let tallies = &self.resolver.tallies;
                    let route_errors = (tallies.tag_errors - errors) as u16;
                    let unmapped = match tallies.unmapped > unmapped {
                        true => self.count_unmapped(&line.name),
                        false => Ok(None),
                    };
                    if let (Target::Series { series, scale }, Ok(unmapped)) = (target, unmapped) {
                        remember = Some(KnownLine {
                            series,
                            scale,
                            metric_type: sample.metric_type,
                            sample_rate: sample.sample_rate,
                            tag_errors: tag_errors as u16,
                            route_errors,
                            unmapped,
                        });
                    }
                    routed = Some((class, target));
                    target
                }
            };
            match target {
                Target::Reject(reason) => self.refuse(reason, raw),
                Target::Drop => self.counts.dropped += 1,
                Target::Series { series, scale } => match op_for(&sample, scale) {
                    Ok(op) => {
                        self.pending.push(series, op);
                        self.counts.samples += 1;
                    }
                    Err(reason) => self.refuse(reason, raw),
                },
            }
        }
        if let (Some(resolved), true) = (remember, line.is_single()) {
            if resolved.metric_type != MetricType::Set {
                self.remember(raw, resolved);
            }
        }
    }

    /// Counts a line of a name no mapping rule matched, by the name's number (`Ok`), or,
    /// when the tally has no room for another number, straight into the shared sketch
    /// (`Err`: a line that must not be remembered, or its name would go uncounted).
    fn count_unmapped(&mut self, name: &str) -> Result<Option<NonZeroU32>, ()> {
        match self.unmapped.number(name) {
            Some(number) => {
                self.unmapped.count(number);
                Ok(Some(number))
            }
            None => {
                self.unmapped.count_unnumbered(name, &self.telemetry.recent);
                Err(())
            }
        }
    }

    /// Remembers what the line `raw` resolved to, for the next lines with its name and fields.
    fn remember(&mut self, raw: &[u8], resolved: KnownLine) {
        let Some((name, _, fields)) = split_single(raw) else {
            return;
        };
        let len = name.len() + fields.len();
        // A line with a timestamp (`|T…`) is never sent twice the same; a long one would let a
        // sender fill memory with keys.
        if len > LINE_KEY_LIMIT || memchr::memmem::find(fields, b"|T").is_some() {
            return;
        }
        if self.lines.len() >= LINE_CACHE_LIMIT {
            self.lines.clear();
        }
        self.lines
            .insert(lines::hash(name, fields), name, fields, resolved);
    }

    /// On the listener's idle tick: after `CACHE_IDLE` without input (counted from the first
    /// tick after the last input), with nothing held, lets go of every cache (lines, slots,
    /// names, mappings). An idle listener keeps no memory for names it may not see again;
    /// its next lines take the long way once.
    pub fn idle_tick(&mut self, now: Instant) {
        if std::mem::take(&mut self.fresh_input) {
            self.last_input = now;
        }
        let idle = now.saturating_duration_since(self.last_input) >= CACHE_IDLE;
        if !idle || self.held() > 0 || self.caches_empty() {
            return;
        }
        self.lines = LineCache::default();
        // The lines that carried the names' numbers are gone: the numbers may go too.
        self.unmapped.flush(&self.telemetry.recent);
        self.unmapped = UnmappedTally::new(&self.telemetry.recent);
        self.pending = Pending::default();
        self.resolver.release();
    }

    /// True when the batcher holds nothing: no update, no count, no cache (see
    /// [`Batcher::idle_tick`]).
    pub fn is_idle(&self) -> bool {
        !self.has_pending() && self.caches_empty()
    }

    fn caches_empty(&self) -> bool {
        self.lines.is_empty() && self.resolver.is_empty()
    }

    /// Counts a refused line, and keeps it for `/api/v1/rejected`.
    fn refuse(&mut self, reason: RejectReason, raw: &[u8]) {
        self.counts.reject(reason, raw);
        if self.telemetry.recent.keeps_refused() && self.refused.add(reason, raw) {
            self.keep_refused();
        }
    }

    /// Hands the refused lines gathered to the shared ring: at the end of each datagram (or
    /// TCP chunk), at each flush, and when as many are gathered as the ring keeps.
    fn keep_refused(&mut self) {
        self.refused
            .hand_over(&self.telemetry.recent, self.listener);
    }

    /// Counts a datagram the listener refused whole (over `limits.max_datagram_bytes`).
    pub fn reject_datagram(&mut self, raw: &[u8]) {
        self.refuse(RejectReason::DatagramTooLarge, raw);
        self.keep_refused();
    }

    /// Counts a line the listener refused before parsing (e.g. over-long on TCP).
    pub fn reject_unparsed(&mut self, reason: RejectReason, raw: &[u8]) {
        self.counts.lines += 1;
        self.refuse(reason, raw);
        self.keep_refused();
    }

    /// What is held for the next flush, in updates after combining; an observation gathered
    /// into a series' update after its first counts by its room, 16 bytes against an
    /// update's 56.
    pub fn held(&self) -> usize {
        self.pending.held()
    }

    /// True when something was read since the last flush (held updates, or only counts).
    pub fn has_pending(&self) -> bool {
        self.held() > 0 || self.counts != Counts::default()
    }

    /// Takes the batches gathered so far, one per family, and adds their counts to the
    /// shared telemetry.
    pub fn take(&mut self) -> Vec<(Arc<str>, Batch)> {
        self.flush_counts();
        if let Some(relay) = &mut self.relay {
            relay.send();
        }
        let (batches, dropped) = self.pending.take();
        if dropped {
            // The remembered lines point at the slots just dropped.
            self.lines = LineCache::default();
        }
        batches
    }

    fn flush_counts(&mut self) {
        self.keep_refused();
        self.unmapped.flush(&self.telemetry.recent);
        let counts = std::mem::take(&mut self.counts);
        let tallies = std::mem::take(&mut self.resolver.tallies);
        // The map cache counts since it was made; report what is new.
        let (hits, misses) = self.resolver.cache_counts();
        let cache = (hits + self.line_hits, misses);
        let (hits, misses) = self.reported_cache;
        self.reported_cache = cache;
        let t = &self.telemetry;
        t.mapping_cache_hits.inc_by(cache.0.saturating_sub(hits));
        t.mapping_cache_misses
            .inc_by(cache.1.saturating_sub(misses));
        t.samples.inc_by(counts.samples);
        t.tag_errors.inc_by(counts.tag_errors + tallies.tag_errors);
        t.events(counts.events[0], counts.events[1]);
        t.mapping_unmapped
            .inc_by(counts.unmapped + tallies.unmapped);
        t.mapping_dropped.inc_by(counts.dropped);
        for (reason, n) in RejectReason::ALL.iter().zip(counts.rejected) {
            if n > 0 {
                t.rejected(*reason, n);
            }
        }
        // Lines last: a scrape that sees them sees what became of them too.
        t.lines.inc_by(counts.lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::mapping::Mapper;
    use crate::update::{Update, Updates};

    fn batches(input: &[u8]) -> (Vec<(String, Vec<Update>)>, Arc<Telemetry>) {
        let (mut b, telemetry) = batcher("");
        b.ingest(input);
        (sorted_batches(&mut b), telemetry)
    }

    /// The batches taken, sorted by family, with a series' gathered observations as the
    /// samples they came from (see [`one_by_one`]).
    fn sorted_batches(b: &mut Batcher) -> Vec<(String, Vec<Update>)> {
        let mut out: Vec<_> = b
            .take()
            .into_iter()
            .map(|(k, v)| (k.to_string(), one_by_one(v.updates)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The updates with each gathered observation as an update of one sample.
    fn one_by_one(updates: Updates) -> Vec<Update> {
        let Updates {
            list, observations, ..
        } = updates;
        list.into_iter()
            .flat_map(|update| match update.op {
                Op::Observations { start, len } => observations
                    [start as usize..(start + len) as usize]
                    .iter()
                    .map(|o| Update {
                        labels: update.labels.clone(),
                        op: Op::Observe {
                            value: o.value,
                            count: o.count,
                        },
                        samples: 1,
                    })
                    .collect(),
                _ => vec![update],
            })
            .collect()
    }

    /// Each family's operations, as [`sorted_batches`] gives them.
    fn sorted_ops(b: &mut Batcher) -> Vec<(String, Vec<Op>)> {
        sorted_batches(b)
            .into_iter()
            .map(|(name, updates)| (name, updates.iter().map(|u| u.op).collect()))
            .collect()
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
    fn samples_of_a_series_combine_until_the_flush() {
        let (got, t) = batches(
            b"c:1|c\nc:2|c|@0.5\nc:1|c|#k:v\ng:5|g\ng:+2|g\ng:1|c\ng:-1|g\nt:1|ms\nt:1|ms\nc:3|c",
        );
        let ops = |i: usize| {
            got[i]
                .1
                .iter()
                .map(|u| (u.op, u.samples))
                .collect::<Vec<_>>()
        };
        assert_eq!(got[0].0, "c");
        assert_eq!(ops(0), [(Op::Add(8.0), 3), (Op::Add(1.0), 1)]);
        // The counter sample in the gauge family stays apart (and is refused there).
        assert_eq!(
            ops(1),
            [(Op::Set(7.0), 2), (Op::Add(1.0), 1), (Op::Shift(-1.0), 1)]
        );
        let observe = Op::Observe {
            value: 0.001,
            count: 1,
        };
        assert_eq!(ops(2), [(observe, 1), (observe, 1)]);
        assert_eq!(t.samples.get(), 10);
    }

    #[test]
    fn packed_values_are_observed_each_in_one_update() {
        let (mut b, _) = batcher("");
        b.ingest(b"lat:1:2:3|ms|#k:v");
        let batches = b.take();
        let updates = &batches[0].1.updates;
        assert_eq!(updates.list.len(), 1);
        let update = &updates.list[0];
        assert_eq!(
            (update.op, update.samples),
            (Op::Observations { start: 0, len: 3 }, 3)
        );
        assert!(update.labels.iter().eq([("k", "v")]));
        let values: Vec<_> = updates.observations.iter().map(|o| o.value).collect();
        assert_eq!(values, [0.001, 0.002, 0.003]);
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

    /// A batcher for `mapping` (YAML; none when empty).
    fn batcher(mapping: &str) -> (Batcher, Arc<Telemetry>) {
        let (b, telemetry, _) = batcher_and_config(mapping);
        (b, telemetry)
    }

    /// A batcher for `mapping`, and the configuration a reload would change.
    fn batcher_and_config(mapping: &str) -> (Batcher, Arc<Telemetry>, Arc<IngestConfig>) {
        let telemetry = Arc::new(Telemetry::new());
        let mut settings = Settings::default();
        let mapper = if mapping.is_empty() {
            Mapper::default()
        } else {
            settings.statsd.mapping_config = "mapping.yml".into();
            Mapper::from_yaml(mapping, std::path::Path::new("mapping.yml")).unwrap()
        };
        let config = Arc::new(IngestConfig::new(&settings, mapper));
        (
            Batcher::new(telemetry.clone(), config.clone(), ListenerKind::Udp),
            telemetry,
            config,
        )
    }

    /// The batches, sorted by family, and every self-metric sample the batcher counted.
    fn outcome(b: &mut Batcher, t: &Telemetry) -> (Vec<(String, Vec<Update>)>, Vec<String>) {
        let batches = sorted_batches(b);
        let counts = t
            .gather()
            .iter()
            .filter(|f| {
                f.name().starts_with("tallyd_") && f.name() != "tallyd_resident_memory_peak_bytes"
            })
            .flat_map(|f| {
                f.get_metric().iter().map(move |m| {
                    let labels: Vec<_> = m.get_label().iter().map(|l| l.value()).collect();
                    let value = m.get_counter().get_value() + m.get_gauge().get_value();
                    format!("{}{labels:?} {value}", f.name())
                })
            })
            .collect();
        (batches, counts)
    }

    const MAPPING: &str = "mappings:\n- match: m.*\n  name: mapped\n  scale: -1\n  \
                           labels:\n    which: $1\n    le: x\n";

    #[test]
    fn a_line_seen_before_takes_the_short_way_to_the_same_result() {
        let (mut b, t) = batcher(MAPPING);
        let lines: &[&[u8]] = &[
            b"m.a:2|ms|#flag",
            b"m.a:3|ms|#flag",
            b"m.a:4|c|#flag",
            b"m.a:5|c|#flag",
            b"u:1|c|@0.5",
            b"u:oops|c|@0.5",
            b"u:2|c|@0.5",
            b"u:1:2|c|@0.5",
        ];
        for line in lines {
            b.ingest(line);
        }
        assert_eq!(b.line_hits, 3, "m.a ms, m.a c and u were looked up again");
        let (batches, counts) = outcome(&mut b, &t);
        let observe = |value| Op::Observe { value, count: 1 };
        let ops: Vec<Vec<Op>> = batches
            .iter()
            .map(|(_, u)| u.iter().map(|u| u.op).collect())
            .collect();
        assert_eq!(batches[0].0, "mapped");
        assert_eq!(ops[0], [observe(-0.002), observe(-0.003)]);
        assert_eq!(batches[1].0, "u");
        // 2 + 4; the packed line is parsed afresh, and refused: a counter packs no values.
        assert_eq!(ops[1], [Op::Add(6.0)]);
        let count = |name: &str| counts.iter().find(|c| c.starts_with(name)).unwrap();
        assert!(count("tallyd_lines_total").ends_with(" 8"));
        assert!(count("tallyd_samples_total").ends_with(" 4"));
        // `flag` on every m.a line, `le` from the rule on the two timers.
        assert!(count("tallyd_tag_errors_total").ends_with(" 6"));
        let rejected: Vec<_> = counts
            .iter()
            .filter(|c| c.starts_with("tallyd_lines_rejected_total") && !c.ends_with(" 0"))
            .collect();
        assert_eq!(
            rejected,
            [
                "tallyd_lines_rejected_total[\"bad_value\"] 1",
                "tallyd_lines_rejected_total[\"negative_counter\"] 2",
                "tallyd_lines_rejected_total[\"packed_values\"] 1",
            ]
        );
    }

    #[test]
    fn lines_with_a_timestamp_or_a_long_name_are_not_remembered() {
        let (mut b, _) = batcher(MAPPING);
        let long = format!("{}:1|c", "x".repeat(300));
        for line in [b"u:1|c|T1700000000".as_slice(), long.as_bytes()] {
            b.ingest(line);
            b.ingest(line);
        }
        assert_eq!(b.line_hits, 0);
        assert!(b.lines.is_empty());
    }

    #[test]
    fn find_either_finds_the_first_of_two_bytes_at_every_position() {
        for len in 0..=20 {
            assert_eq!(find_either(&vec![b'x'; len], b':', b'|'), None, "{len}");
            for at in 0..len {
                for (first, later) in [(b':', b'|'), (b'|', b':'), (b':', b':')] {
                    let mut hay = vec![b'x'; len];
                    hay[at] = first;
                    // A byte after the first match, and bytes a borrow would flag.
                    for after in hay.iter_mut().skip(at + 1).step_by(3) {
                        *after = later;
                    }
                    if at + 2 < len {
                        hay[at + 2] = first + 1;
                    }
                    assert_eq!(find_either(&hay, b':', b'|'), Some(at), "{len} {at}");
                }
            }
        }
        // High bytes (UTF-8) are no match.
        assert_eq!(find_either("é€ñ:x".as_bytes(), b':', b':'), Some(7));
    }

    proptest::proptest! {
        #[test]
        fn find_either_is_a_search_for_either_byte(
            hay in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            a in proptest::prelude::any::<u8>(),
            b in proptest::prelude::any::<u8>(),
        ) {
            let want = hay.iter().position(|&c| c == a || c == b);
            proptest::prop_assert_eq!(find_either(&hay, a, b), want);
        }
    }

    #[test]
    fn lines_known_before_a_new_line_grows_the_cache_still_reach_their_series() {
        let (mut b, _) = batcher("");
        let known: Vec<String> = (0..31).map(|i| format!("k{i}:1|c")).collect();
        b.ingest(known.join("\n").as_bytes());
        assert_eq!((b.lines.len(), b.take().len()), (31, 31));
        // Looked up together: the known lines are found, then the new ones, added first,
        // grow the cache's index (its entries stay where they are).
        let mut datagram = vec!["n1:1|c".to_string(), "n2:1|c".into()];
        datagram.extend((0..29).map(|i| format!("k{i}:{}|c", i + 1)));
        b.ingest(datagram.join("\n").as_bytes());
        assert_eq!(b.lines.len(), 33);
        let got: Vec<(String, f64)> = sorted_batches(&mut b)
            .into_iter()
            .map(|(name, updates)| match updates[..] {
                [Update { op: Op::Add(v), .. }] => (name, v),
                _ => panic!("{name}: {updates:?}"),
            })
            .collect();
        let mut want: Vec<(String, f64)> =
            (0..29).map(|i| (format!("k{i}"), i as f64 + 1.0)).collect();
        want.extend([("n1".into(), 1.0), ("n2".into(), 1.0)]);
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want);
    }

    #[test]
    fn lines_found_by_place_or_out_of_order_reach_their_own_series() {
        let (mut b, _) = batcher("");
        b.ingest(b"a:1|c\nb:1|c\nc:1|c\nd:1|c");
        drop(b.take());
        // In the order first seen, each line is the entry after the line before's; then out
        // of order, where the entry after `a`'s holds `b`, not `c`, and after `d` comes none.
        b.ingest(b"a:1|c\nb:2|c\nc:3|c\nd:4|c");
        b.ingest(b"a:10|c\nc:30|c\nb:20|c\nd:40|c\na:100|c");
        b.ingest(b"c:300|c\nd:400|c|#k:v\nd:4000|c");
        assert_eq!(b.lines.len(), 5);
        let got = sorted_ops(&mut b);
        let want: Vec<(String, Vec<Op>)> = vec![
            ("a".into(), vec![Op::Add(111.0)]),
            ("b".into(), vec![Op::Add(22.0)]),
            ("c".into(), vec![Op::Add(333.0)]),
            ("d".into(), vec![Op::Add(4044.0), Op::Add(400.0)]),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_line_known_before_a_new_line_clears_the_cache_still_reaches_its_series() {
        let (mut b, _) = batcher("");
        // `k` is the cache's first entry; the others fill it to its limit.
        b.ingest(b"k:1|c");
        let others: Vec<String> = (1..LINE_CACHE_LIMIT).map(|i| format!("o{i}:1|c")).collect();
        for chunk in others.chunks(64) {
            b.ingest(chunk.join("\n").as_bytes());
        }
        assert_eq!(b.lines.len(), LINE_CACHE_LIMIT);
        drop(b.take());
        // `k` is found before `x` is added; remembering `x` clears the cache and makes `x`
        // its first entry, where `k` was.
        b.ingest(b"x:1|c\nk:5|c");
        assert_eq!(b.lines.len(), 2);
        let got = sorted_ops(&mut b);
        assert_eq!(
            got,
            [
                ("k".to_string(), vec![Op::Add(5.0)]),
                ("x".to_string(), vec![Op::Add(1.0)])
            ]
        );
    }

    #[test]
    fn an_idle_batcher_lets_go_of_every_cache_once_flushed() {
        // A mapped line with a timestamp is never remembered as a line: only the mapping
        // cache knows its name.
        let (mut b, t) = batcher(MAPPING);
        b.ingest(b"m.a:1|g|T1700000000");
        let now = Instant::now();
        let later = now + CACHE_IDLE;
        assert!(!b.is_idle());
        // Held updates are kept, caches too, until they are flushed; the idle time counts
        // from the first tick after the input.
        b.idle_tick(now);
        assert!(!b.is_idle());
        assert_eq!(outcome(&mut b, &t).0.len(), 1);
        b.idle_tick(later - Duration::from_millis(1));
        assert!(!b.is_idle(), "input came less than CACHE_IDLE ago");
        assert!(!b.resolver.is_empty());
        b.idle_tick(later);
        assert!(b.is_idle() && b.resolver.is_empty());
        // The next line takes the long way, to the same family.
        b.ingest(b"m.a:1|g");
        assert!(!b.is_idle());
        assert_eq!(outcome(&mut b, &t).0[0].0, "mapped");
    }

    #[test]
    fn a_reload_forgets_the_lines_seen() {
        let (mut b, t, config) = batcher_and_config("mappings:\n- match: a\n  name: first\n");
        b.ingest(b"a:1|c");
        b.ingest(b"a:1|c");
        let next = Mapper::from_yaml(
            "mappings:\n- match: a\n  name: second\n",
            std::path::Path::new("mapping.yml"),
        )
        .unwrap();
        config.mapper.store(Arc::new(next));
        b.ingest(b"a:1|c");
        let (batches, _) = outcome(&mut b, &t);
        let names: Vec<_> = batches.iter().map(|(n, u)| (n.as_str(), u.len())).collect();
        assert_eq!(names, [("first", 1), ("second", 1)]);
        b.ingest(b"a:1|c");
        assert_eq!(outcome(&mut b, &t).0[0].0, "second");
    }

    #[test]
    fn every_unmapped_line_counts_its_name_past_the_tally() {
        use crate::ingest::unmapped::NAMES_LIMIT;
        let (mut b, t, _) = batcher_and_config("mappings:\n- match: mapped\n  name: m\n");
        // Every name twice (the second time a known line when the name has a number), in
        // datagrams the line cache remembers; two names, one numbered and one past the
        // tally's room, 20 more times each.
        let names: Vec<String> = (0..NAMES_LIMIT + 10).map(|n| format!("u.{n}")).collect();
        let heavy = [names[0].clone(), names[NAMES_LIMIT + 9].clone()];
        for _ in 0..2 {
            for chunk in names.chunks(50) {
                let lines: Vec<String> = chunk.iter().map(|n| format!("{n}:1|c")).collect();
                b.ingest(lines.join("\n").as_bytes());
                b.ingest(b"mapped:1|c");
            }
            for name in &heavy {
                for _ in 0..10 {
                    b.ingest(format!("{name}:1|c\n{name}:1|c").as_bytes());
                }
            }
            b.take();
        }
        let top = t.recent.top_unmapped(2);
        for (name, lines, error) in &top {
            assert!(heavy.iter().any(|h| h.as_str() == &**name), "{top:?}");
            assert!(
                *lines >= 42 && lines - error <= 42,
                "{name}: 42 lines, {lines} ± {error}"
            );
        }
        assert_eq!(top.len(), 2);
        assert!(t
            .recent
            .top_unmapped(usize::MAX)
            .iter()
            .all(|(n, _, _)| &**n != "mapped"));
        assert_eq!(t.mapping_unmapped.get(), 2 * (names.len() as u64 + 40));
    }

    proptest::proptest! {
        /// Whatever the lines, and however they are packed into datagrams and flushed, a
        /// batcher that remembers lines gives the batches and counts of one that parses and
        /// routes every line afresh.
        #[test]
        fn remembering_lines_changes_no_outcome(
            picks in proptest::collection::vec(
                (0..4usize, 0..7usize, 0..7usize, 0..3usize, 0..4usize), 1..60),
            // After each line: 0 goes on with the datagram, 1 ends it, 2 ends it and flushes.
            ends in proptest::collection::vec(0..3usize, 60),
        ) {
            const NAMES: [&str; 4] = ["a", "m.b", "m.c#x=1", "t"];
            const VALUES: [&str; 7] = ["1", "-2", "+3", "x", "1:2", "0.5", ""];
            const TYPES: [&str; 7] = ["c", "g", "ms", "h", "s", "d", "zz"];
            const RATES: [&str; 3] = ["", "|@0.5", "|@2"];
            const TAGS: [&str; 4] = ["", "|#k:v", "|#k:v,flag", "|#quantile:1"];
            let lines: Vec<String> = picks
                .iter()
                .map(|&(n, v, ty, r, tg)| {
                    format!("{}:{}|{}{}{}", NAMES[n], VALUES[v], TYPES[ty], RATES[r], TAGS[tg])
                })
                .collect();
            let (mut cached, t1) = batcher(MAPPING);
            let (mut fresh, t2) = batcher(MAPPING);
            let (mut flushed1, mut flushed2) = (Vec::new(), Vec::new());
            let mut datagram = String::new();
            for (i, line) in lines.iter().enumerate() {
                if !datagram.is_empty() {
                    // Every third line ends in CRLF, and an empty line is skipped.
                    datagram.push_str(["\n", "\r\n", "\n\n"][i % 3]);
                }
                datagram.push_str(line);
                fresh.ingest_line(line.as_bytes());
                if ends[i] > 0 || i == lines.len() - 1 {
                    cached.ingest(datagram.as_bytes());
                    datagram.clear();
                }
                if ends[i] == 2 {
                    flushed1.push(sorted_batches(&mut cached));
                    flushed2.push(sorted_batches(&mut fresh));
                }
            }
            proptest::prop_assert_eq!(flushed1, flushed2);
            let (b1, mut c1) = outcome(&mut cached, &t1);
            let (b2, mut c2) = outcome(&mut fresh, &t2);
            // The fresh batcher maps every line, the other answers repeats from memory: both
            // are mapping-cache hits or misses, in other proportions.
            c1.retain(|c| !c.starts_with("tallyd_mapping_cache"));
            c2.retain(|c| !c.starts_with("tallyd_mapping_cache"));
            proptest::prop_assert_eq!(b1, b2);
            proptest::prop_assert_eq!(c1, c2);
        }
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
