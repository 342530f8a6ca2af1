//! A family's state, owned by its actor: its series, applying batches to them, rendering its
//! snapshot, and when to publish, sweep and hibernate.

use prometheus::IntGauge;
use ractor::ActorRef;
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;

use super::idle::IdleDue;
use super::series::Series;
use super::timers::{Timer, Timers};
use super::{FamilyContext, FamilyMsg, FamilySpec, StopReason};
use crate::actors::aggregator::AggregatorMsg;
use crate::barrier::Ticket;
use crate::config::ObserverType;
use crate::exposition::{proto, text, FamilySnapshot, FamilyType};
use crate::rate::RateWindow;
use crate::telemetry::LogLimiter;
use crate::update::{FamilyMeta, Kind, LabelSet, Updates};

/// Series-limit warnings logged per second, across families.
static LIMIT_LOG: LogLimiter = LogLimiter::new(10);
/// Type-conflict warnings logged per second, across families.
static CONFLICT_LOG: LogLimiter = LogLimiter::new(10);
/// Updates whose series' memory is asked for before the first of them is applied.
const AHEAD: usize = 8;
/// A family waits at least this many times its last render before rendering again.
const RENDER_SHARE: u32 = 20;
/// A set family whose count falls with time publishes at most this often (or per
/// `publish_interval`, if shorter), however short `statsd.set_window` is.
const SET_REFRESH_FLOOR: Duration = Duration::from_secs(1);
/// How long a family born empty waits for its first batch before it retires (see
/// [`FamilyState::start`]).
const EMPTY_GRACE: Duration = Duration::from_secs(1);

/// A series, when it was last updated, and its lines as last rendered (empty once an update
/// changes them).
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) value: Series,
    pub(super) last_seen: Instant,
    pub(super) text: String,
}

/// Everything the family owns.
#[derive(Debug)]
pub struct FamilyState {
    pub(super) name: Arc<str>,
    pub(super) meta: Arc<FamilyMeta>,
    pub(super) ctx: Arc<FamilyContext>,
    pub(super) kind: Kind,
    pub(super) series: FxHashMap<LabelSet, Entry>,
    /// `tallyd_series{type}` for this family's type.
    pub(super) series_gauge: IntGauge,
    pub(super) updates: u64,
    /// The registry took this family's first series from the budget, not yet used.
    pub(super) reserved: bool,
    pub(super) rate: RateWindow,
    pub(super) dirty: bool,
    /// When the `Publish` on its way is due; one that comes before that was superseded by a
    /// sooner one, and is ignored.
    pub(super) publish_due: Option<Instant>,
    pub(super) sweep_scheduled: bool,
    pub(super) refresh_scheduled: bool,
    /// When it may be idle enough to hibernate, for the registry's idle sweep.
    pub(super) idle: IdleDue,
    /// When the last update was applied, or the family was born or woken: its idle time
    /// counts from there.
    pub(super) last_update: Instant,
    /// When the last update was applied, if one ever was (before it hibernated, too).
    pub(super) last_batch: Option<Instant>,
    /// Batches in a row, before the last, that each came within a flush window and a half of
    /// the one before (kept while the family hibernates).
    pub(super) streak: u8,
    /// The last three batches came each within a flush window and a half of the one before,
    /// or the last one's window closed on the clock (see [`FamilyContext::hibernate_after`]).
    pub(super) steady: bool,
    /// How long the last snapshot took to render.
    pub(super) render_cost: Duration,
    /// When the last snapshot was sent.
    pub(super) published_at: Option<Instant>,
    /// The last snapshot sent, which the aggregator holds: kept with the family's state if
    /// it hibernates.
    pub(super) last_snapshot: Option<Arc<FamilySnapshot>>,
    /// The HELP text as the exposition writes it.
    pub(super) help: Arc<str>,
    /// The timers pending, cancelled when the state is dropped.
    pub(super) timers: Timers,
}

/// The streak of a family's batches in step (see `FamilyState::streak`) after one at `now`,
/// given when the last one came and the streak before it.
pub(super) fn streak_after(
    ctx: &FamilyContext,
    last_batch: Option<Instant>,
    streak: u8,
    now: Instant,
) -> u8 {
    let in_step = last_batch.is_some_and(|last| ctx.steady(now.saturating_duration_since(last)));
    if in_step {
        streak.saturating_add(1)
    } else {
        0
    }
}

/// True when a family whose batches are in `streak` (the last one's window closed on the
/// clock when `clocked`) is steady: updated all the time, not by a burst.
pub(super) fn is_steady(streak: u8, clocked: bool) -> bool {
    streak >= 2 || clocked
}

/// `n` series leave the budget and `tallyd_series{type}` (`gauge`).
pub(super) fn release_series(ctx: &FamilyContext, gauge: &IntGauge, n: usize) {
    ctx.budget.give_back(n);
    gauge.sub(n as i64);
}

impl Drop for FamilyState {
    /// A family's series leave the budget and the gauge with it (failure, retirement, exit).
    fn drop(&mut self) {
        release_series(&self.ctx, &self.series_gauge, self.series.len());
        if self.reserved {
            self.ctx.budget.give_back(1);
        }
    }
}

impl FamilyState {
    /// An empty family that already holds one series of the budget, for its first series
    /// (given back if it never has one).
    pub fn with_reserved_series(spec: FamilySpec, ctx: Arc<FamilyContext>) -> Self {
        let mut state = FamilyState::new(spec, ctx);
        state.reserved = true;
        state
    }

    /// An empty family.
    pub fn new(spec: FamilySpec, ctx: Arc<FamilyContext>) -> Self {
        FamilyState {
            help: text::escape_help(&spec.meta.help),
            series_gauge: ctx.telemetry.series_gauge(spec.kind.as_str()),
            name: spec.name,
            meta: spec.meta,
            ctx,
            kind: spec.kind,
            series: FxHashMap::default(),
            updates: 0,
            reserved: false,
            rate: RateWindow::new(Instant::now()),
            dirty: false,
            publish_due: None,
            sweep_scheduled: false,
            refresh_scheduled: false,
            idle: IdleDue::new(),
            last_update: Instant::now(),
            last_batch: None,
            streak: 0,
            steady: false,
            render_cost: Duration::ZERO,
            published_at: None,
            last_snapshot: None,
            timers: Timers::default(),
        }
    }

    /// The family name.
    pub fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    /// What the family is: its name, type and meta.
    pub fn spec(&self) -> FamilySpec {
        FamilySpec {
            name: self.name.clone(),
            kind: self.kind,
            meta: self.meta.clone(),
        }
    }

    /// True when a new family's first batch, whose window closed on the clock when
    /// `clocked`, makes it steady (see `steady`): no batch came before it in step.
    pub fn first_batch_steady(clocked: bool) -> bool {
        is_steady(0, clocked)
    }

    /// True while the family holds no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Applies a batch, whose updates stay in it (see [`Updates::recycle`]); updates of
    /// another type than the family's are refused and counted.
    pub fn apply(&mut self, updates: &mut Updates, now: Instant) {
        // Counted in samples: an update combined at the edge stands for several.
        let mut applied = 0u64;
        let mut conflicts = [0u64; 4];
        // Samples refused for a new series: over the total, over the family's own limit.
        let mut refused = [0u64; 2];
        let mut halvings = 0u64;
        let Updates {
            list,
            observations,
            clocked,
        } = updates;
        for chunk in list.chunks(AHEAD) {
            // The memory of a chunk's series is asked for before any is applied, in stages,
            // each reading what the one before asked for (an observer's state, then the bins
            // of its observations): after the idle time between batches it is seldom in
            // cache, and the misses then overlap rather than come one after another.
            for update in chunk {
                if let Some(entry) = self.series.get(&update.labels) {
                    entry.value.prefetch_state();
                }
            }
            if self.kind == Kind::Observer {
                for update in chunk {
                    if let Some(entry) = self.series.get(&update.labels) {
                        entry.value.prefetch(update.op, observations);
                    }
                }
            }
            for update in chunk {
                let kind = update.op.kind();
                if kind != self.kind {
                    conflicts[kind as usize] += update.samples;
                    continue;
                }
                let (meta, ctx) = (&self.meta, &self.ctx);
                let held = self.series.len();
                // Found by reference: the update's label set is not dropped here (see
                // `Updates::recycle`), and a new series takes a reference of its own.
                let entry = match self.series.get_mut(&update.labels) {
                    Some(entry) => entry,
                    None => {
                        if held >= ctx.budget.max_per_family {
                            refused[1] += update.samples;
                            continue;
                        }
                        if self.reserved {
                            self.reserved = false;
                        } else if !ctx.budget.try_take() {
                            refused[0] += update.samples;
                            continue;
                        }
                        self.series_gauge.inc();
                        let entry = Entry {
                            value: Series::new(kind, meta, ctx, now),
                            last_seen: now,
                            text: String::new(),
                        };
                        self.series.entry(update.labels.clone()).or_insert(entry)
                    }
                };
                halvings += u64::from(entry.value.apply(
                    update.op,
                    observations,
                    &meta.observer.buckets,
                    now,
                ));
                entry.last_seen = now;
                entry.text.clear();
                applied += update.samples;
            }
        }
        observations.clear();
        self.count_refused(refused, conflicts);
        if halvings > 0 {
            self.ctx.telemetry.native_halvings.inc_by(halvings);
        }
        if applied > 0 {
            // This batch and the one before each came within a window and a half of the one
            // before them. However many samples they hold, two batches are not steady: a
            // burst of new names sends each a few times, over a window or two, and never
            // again. A batch whose window closed on the clock is: its listener holds less
            // than its threshold, and has a batch for a family sent to all the time once a
            // window, no sooner.
            self.streak = streak_after(&self.ctx, self.last_batch, self.streak, now);
            self.steady = is_steady(self.streak, *clocked);
            self.last_batch = Some(now);
            self.last_update = now;
            self.ctx.telemetry.updates.inc_by(applied);
            self.updates += applied;
            self.rate.record(now, applied);
            self.dirty = true;
        }
    }

    /// Counts and logs (rate-limited) the samples `apply` refused: for a new series over
    /// `limits.max_series` and over `limits.max_series_per_family`, and by type for a type
    /// other than the family's.
    fn count_refused(&self, refused: [u64; 2], conflicts: [u64; 4]) {
        for (limit, n) in ["max_series", "max_series_per_family"]
            .into_iter()
            .zip(refused)
        {
            if n > 0 {
                self.ctx.telemetry.series_refused(limit, n);
                if let Some(suppressed) = LIMIT_LOG.allow() {
                    warn!(metric = %self.name, limit, updates = n, suppressed, "series limit reached: new series refused");
                }
            }
        }
        for kind in [Kind::Counter, Kind::Gauge, Kind::Observer, Kind::Set] {
            let n = conflicts[kind as usize];
            if n > 0 {
                self.ctx
                    .telemetry
                    .type_conflict(&self.name, kind.as_str(), n);
                if let Some(suppressed) = CONFLICT_LOG.allow() {
                    warn!(
                        metric = %self.name,
                        family_type = self.kind.as_str(),
                        sample_type = kind.as_str(),
                        samples = n,
                        suppressed,
                        "type conflict: samples refused"
                    );
                }
            }
        }
    }

    /// Renders the family as it is at `now`. The lines of each series are kept from their
    /// last rendering until an update changes them, so a family of many series under a trickle
    /// of updates renders only what changed; a set's lines (its count falls with time) and a
    /// lone series' are rendered every time.
    pub fn snapshot(&mut self, now: Instant) -> FamilySnapshot {
        let family_type = match (self.kind, self.meta.observer.observer_type) {
            (Kind::Counter, _) => FamilyType::Counter,
            (Kind::Gauge | Kind::Set, _) => FamilyType::Gauge,
            (Kind::Observer, ObserverType::Summary) => FamilyType::Summary,
            (Kind::Observer, ObserverType::Histogram) => FamilyType::Histogram,
        };
        let keep = self.series.len() > 1;
        let observer = &self.meta.observer;
        let mut series: Vec<_> = self.series.iter_mut().collect();
        series.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut text = String::new();
        for (labels, entry) in series {
            if !entry.text.is_empty() && keep && !matches!(entry.value, Series::Set(_)) {
                text.push_str(&entry.text);
                continue;
            }
            let start = text.len();
            entry
                .value
                .write(&mut text, &self.name, labels, observer, now);
            if keep {
                entry.text.clear();
                entry.text.push_str(&text[start..]);
            }
        }
        // The aggregator keeps it until the next snapshot, for every family, hibernating
        // ones included: no spare capacity.
        text.shrink_to_fit();
        let native = self.native_series();
        FamilySnapshot {
            name: self.name.clone(),
            help: self.help.clone(),
            family_type,
            text,
            native,
            updates: self.updates,
            series: self.series.len(),
            value_sum: self.series.values().map(|e| e.value.value_sum(now)).sum(),
            rate: self.rate.clone(),
        }
    }

    /// A histogram family with native buckets: every series as protobuf `Metric`s, in label
    /// order; `None` for any other family.
    fn native_series(&self) -> Option<Box<[u8]>> {
        let observer = &self.meta.observer;
        let native = self.kind == Kind::Observer
            && observer.observer_type == ObserverType::Histogram
            && observer.native_histogram_bucket_factor > 1.0;
        if !native {
            return None;
        }
        let mut series: Vec<_> = self.series.iter().collect();
        series.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::new();
        for (labels, entry) in series {
            if let Series::Observer(o) = &entry.value {
                if let Some(metric) = o.native_metric(labels, observer) {
                    proto::append_metric(&mut out, &metric);
                }
            }
        }
        Some(out.into_boxed_slice())
    }

    pub(super) fn publish(&mut self, now: Instant) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        // A family with no series has nothing to show: it leaves /metrics.
        let message = if self.series.is_empty() {
            self.last_snapshot = None;
            AggregatorMsg::Remove(self.name.clone())
        } else {
            let started = Instant::now();
            let snapshot = Arc::new(self.snapshot(now));
            self.render_cost = started.elapsed();
            self.last_snapshot = Some(snapshot.clone());
            AggregatorMsg::Publish(snapshot)
        };
        self.published_at = Some(now);
        // The aggregator only stops after every family: a failed cast means shutdown.
        let _ = self.ctx.aggregator.cast(message);
    }
}

impl FamilyState {
    /// Publishes now if the last snapshot is at least `after` old, else when it will be (or
    /// at a publish already due sooner); or later for a family whose rendering is costly: at
    /// most one part in [`RENDER_SHARE`] of a family's time goes to rendering it, so a family
    /// of many series under steady updates cannot starve ingestion. An update to a quiet
    /// family is thus on /metrics at once, and a busy family renders at most once per `after`.
    fn schedule_publish(&mut self, myself: &ActorRef<FamilyMsg>, after: Duration, now: Instant) {
        let after = after.max(self.render_cost * RENDER_SHARE);
        match after.checked_sub(self.since_published(now)) {
            Some(wait) if !wait.is_zero() => {
                let due = now + wait;
                if self.publish_due.is_some_and(|scheduled| scheduled <= due) {
                    return;
                }
                self.publish_due = Some(due);
                self.timers.set(myself, Timer::Publish, wait);
            }
            _ => self.publish_and_follow(myself, now),
        }
    }

    /// Time since the last snapshot was sent (forever, if none was).
    fn since_published(&self, now: Instant) -> Duration {
        self.published_at
            .map_or(Duration::MAX, |at| now.saturating_duration_since(at))
    }

    /// Publishes; a set with members still in its window is refreshed when its count next
    /// falls.
    fn publish_and_follow(&mut self, myself: &ActorRef<FamilyMsg>, now: Instant) {
        self.publish(now);
        if !self.refresh_scheduled {
            if let Some(slot) = self.live_set_slot(now) {
                self.refresh_scheduled = true;
                self.timers.set(myself, Timer::Refresh, slot);
            }
        }
    }

    /// For a set family with members still in its window: how often to republish.
    fn live_set_slot(&self, now: Instant) -> Option<Duration> {
        if self.kind != Kind::Set {
            // Asked at every batch (for the idle check): no walk over other families' series.
            return None;
        }
        self.series.values().find_map(|entry| match &entry.value {
            Series::Set(set) if set.is_live(now) => Some(set.slot()),
            _ => None,
        })
    }

    /// How long until the family may hibernate, if it ever may: it has no TTL (its series
    /// must be swept, which a stopped actor cannot do) and no set members still counting.
    fn idle_left(&self, now: Instant) -> Option<Duration> {
        let limit = self.ctx.idle_limit(self.steady);
        if self.meta.ttl.is_some() || self.live_set_slot(now).is_some() {
            return None;
        }
        Some(limit.saturating_sub(now.saturating_duration_since(self.last_update)))
    }

    /// Tells the registry's idle sweep when to ask this family to check whether it is idle
    /// (never, while it may not hibernate).
    fn arm_idle_check(&self, now: Instant) {
        self.idle.set(self.idle_left(now).map(|left| now + left));
    }

    fn schedule_sweep(&mut self, myself: &ActorRef<FamilyMsg>) {
        if let Some(ttl) = self.meta.ttl {
            if !self.sweep_scheduled {
                self.sweep_scheduled = true;
                // A series leaves between `kept_for` its TTL and a quarter of a TTL after that.
                let every = (ttl / 4).max(Duration::from_millis(10));
                self.timers.set(myself, Timer::Expire, every);
            }
        }
    }

    /// Removes the series idle for their TTL; returns how many.
    fn sweep(&mut self, now: Instant) -> usize {
        let Some(ttl) = self.meta.ttl else {
            return 0;
        };
        let kept = self.ctx.kept_for(ttl);
        let before = self.series.len();
        self.series
            .retain(|_, entry| now.saturating_duration_since(entry.last_seen) < kept);
        let expired = before - self.series.len();
        if expired > 0 {
            release_series(&self.ctx, &self.series_gauge, expired);
            self.ctx.telemetry.series_expired.inc_by(expired as u64);
            self.dirty = true;
        }
        expired
    }
}

/// What the actor does with each message (see [`FamilyMsg`]); a handler that finds the family
/// should stop says why, and the actor asks its supervisor.
impl FamilyState {
    /// As the actor starts, new or woken: the timers of an earlier actor are cancelled.
    pub(super) fn start(&mut self, myself: &ActorRef<FamilyMsg>, idle: IdleDue) {
        let now = Instant::now();
        self.timers.cancel_all();
        self.idle = idle;
        self.publish_due = None;
        self.sweep_scheduled = false;
        self.refresh_scheduled = false;
        if self.dirty {
            self.schedule_publish(myself, self.ctx.publish_interval, now);
        }
        if self.is_empty() && self.meta.ttl.is_none() {
            // A new family whose first batch never comes (dropped on the way) must not keep
            // the series the registry took for it (with a TTL the regular sweeps let it go).
            self.timers.set(myself, Timer::FirstBatchDue, EMPTY_GRACE);
        }
        self.schedule_sweep(myself);
        if !self.is_empty() {
            // A new family is not idle until it has applied its first batch, which is on its
            // way: until then it is no candidate to hibernate, nor to make room.
            self.arm_idle_check(now);
        }
    }

    /// `Apply`: a batch of updates.
    pub(super) fn on_apply(
        &mut self,
        myself: &ActorRef<FamilyMsg>,
        mut updates: Updates,
    ) -> Option<StopReason> {
        let now = Instant::now();
        self.apply(&mut updates, now);
        updates.recycle();
        if self.is_empty() {
            // Every update was refused (series limit, type conflict): an actor with nothing
            // to hold must not linger.
            return Some(StopReason::Retire);
        }
        if self.dirty {
            self.schedule_publish(myself, self.ctx.publish_interval, now);
        }
        self.schedule_sweep(myself);
        self.arm_idle_check(now);
        None
    }

    /// `IdleCheck`: hibernates if idle long enough; else looks again once it has settled.
    pub(super) fn on_idle_check(&mut self) -> Option<StopReason> {
        let now = Instant::now();
        match self.idle_left(now) {
            Some(left) if left.is_zero() => Some(StopReason::Hibernate),
            // Updated since, or a set still counting (its refresh re-arms the check).
            _ => {
                self.arm_idle_check(now);
                None
            }
        }
    }

    /// `Expire`: removes the series past their TTL; a family left with none retires.
    pub(super) fn on_expire(&mut self, myself: &ActorRef<FamilyMsg>) -> Option<StopReason> {
        self.sweep_scheduled = false;
        let now = Instant::now();
        let expired = self.sweep(now);
        if self.is_empty() {
            self.publish(now);
            return Some(StopReason::Retire);
        }
        if expired > 0 {
            // No scrape asks a family about expiries: shown at once, as far as the render
            // budget allows.
            self.schedule_publish(myself, Duration::ZERO, now);
        } else if self.dirty {
            self.schedule_publish(myself, self.ctx.publish_interval, now);
        }
        self.schedule_sweep(myself);
        None
    }

    /// `FirstBatchDue`: a family still empty retires.
    pub(super) fn on_first_batch_due(&mut self) -> Option<StopReason> {
        self.is_empty().then_some(StopReason::Retire)
    }

    /// `Publish`: publishes unless a sooner publish superseded this one.
    pub(super) fn on_publish(&mut self, myself: &ActorRef<FamilyMsg>) {
        let now = Instant::now();
        if self.publish_due.is_some_and(|due| now >= due) {
            self.publish_due = None;
            self.publish_and_follow(myself, now);
        }
    }

    /// `Refresh`: a set's count fell without an update, and no scrape asks a family about
    /// that: shown at once, as expiries are, but at most once per [`SET_REFRESH_FLOOR`]
    /// however short the set window.
    pub(super) fn on_refresh(&mut self, myself: &ActorRef<FamilyMsg>) {
        self.refresh_scheduled = false;
        self.dirty = true;
        let now = Instant::now();
        let floor = SET_REFRESH_FLOOR.min(self.ctx.publish_interval);
        self.schedule_publish(myself, floor, now);
        self.arm_idle_check(now);
    }

    /// `Sync`: publishes what changed for a scrape, which waits until `ticket` is dropped.
    /// Rendering is not held back for a scrape; the snapshot is cast before the ticket goes,
    /// so it reaches the aggregator before the scrape's request.
    pub(super) fn on_sync(&mut self, myself: &ActorRef<FamilyMsg>, ticket: Ticket) {
        self.publish_and_follow(myself, Instant::now());
        drop(ticket);
    }

    /// As the actor stops, drained: publishes what it applied since its last snapshot.
    pub(super) fn stop(&mut self) {
        self.publish(Instant::now());
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::actors::aggregator::AggregatorActor;
    use crate::config::ObserverSettings;
    use crate::limits::SeriesBudget;
    use crate::telemetry::Telemetry;
    use crate::update::Op;
    use crate::update::Update;

    pub(in crate::actors::family) fn spec(kind: Kind) -> FamilySpec {
        FamilySpec {
            name: "lat".into(),
            kind,
            meta: Arc::new(FamilyMeta {
                help: "Help with a \\ backslash.".into(),
                observer: ObserverSettings::default(),
                ttl: None,
            }),
        }
    }

    pub(in crate::actors::family) fn update(value: &str, op: Op) -> Update {
        Update {
            labels: LabelSet::from_pairs(vec![("k".into(), value.into())]),
            op,
            samples: 1,
        }
    }

    /// A family context with an aggregator, `publish_interval` and `hibernate_after`, a 2 s
    /// flush window and room for 100 series.
    pub(in crate::actors::family) async fn context(
        publish_interval: Duration,
        hibernate_after: Option<Duration>,
    ) -> Arc<FamilyContext> {
        let (aggregator, _) = ractor::Actor::spawn(None, AggregatorActor, 0)
            .await
            .unwrap();
        Arc::new(FamilyContext {
            aggregator,
            telemetry: Arc::new(Telemetry::new()),
            publish_interval,
            flush_interval: Duration::from_secs(2),
            hibernate_after,
            set_window: Duration::from_secs(60),
            budget: Arc::new(SeriesBudget::new(100, 100)),
        })
    }

    #[tokio::test]
    async fn a_family_updated_within_a_window_and_a_half_stays_live_for_two_windows() {
        let (after, window) = (Duration::from_millis(100), Duration::from_secs(2));
        let ctx = context(Duration::from_secs(15), Some(after)).await;
        let ms = Duration::from_millis;
        let mut family = FamilyState::new(spec(Kind::Counter), ctx.clone());
        let start = Instant::now();
        // (batch at, samples in it, idle time allowed after it)
        for (at, samples, idle) in [
            // One sample, no batch before: sporadic.
            (ms(0), 1, after),
            // The next window's batch: two in step, still sporadic.
            (ms(2_100), 1, after),
            // A window and a half after the last, to the millisecond: three, steady.
            (ms(5_100), 1, window * 2),
            // Two windows after: sporadic again.
            (ms(9_100), 1, after),
            // Two samples in one batch, none the window before: sporadic (a burst of new
            // names sends a name twice and never again); the next window's too.
            (ms(20_000), 2, after),
            (ms(22_000), 1, after),
            // The third in step: steady.
            (ms(24_000), 1, window * 2),
        ] {
            let now = start + at;
            family.apply(&mut vec![update("a", Op::Add(1.0)); samples].into(), now);
            assert_eq!(family.idle_left(now), Some(idle), "batch at {at:?}");
        }
        assert_eq!(
            family.idle_left(start + ms(24_000) + window),
            Some(window),
            "idle time counts from the last batch"
        );
    }

    #[tokio::test]
    async fn a_batch_whose_window_closed_on_the_clock_keeps_its_family_for_two_windows() {
        let (after, window) = (Duration::from_millis(100), Duration::from_secs(2));
        let ctx = context(Duration::from_secs(15), Some(after)).await;
        let mut family = FamilyState::new(spec(Kind::Counter), ctx);
        let start = Instant::now();
        let batch = |clocked| {
            let mut updates: Updates = vec![update("a", Op::Add(1.0))].into();
            updates.clocked = clocked;
            updates
        };
        // (batch at, its window closed on the clock, idle time allowed after it)
        for (at, clocked, idle) in [
            // The first batch, on the clock: a family sent to all the time would get its
            // next one a window later.
            (0, true, window * 2),
            // Closed early (a scrape, the threshold), four windows later: sporadic.
            (8_000, false, after),
            (16_000, true, window * 2),
        ] {
            let now = start + Duration::from_millis(at);
            family.apply(&mut batch(clocked), now);
            assert_eq!(family.idle_left(now), Some(idle), "batch at {at} ms");
        }
    }

    #[tokio::test]
    async fn snapshots_render_changed_series_and_reuse_the_rest_exactly() {
        let ctx = context(Duration::from_millis(20), None).await;
        let observe = |ms: f64| Op::Observe {
            value: ms / 1000.0,
            count: 1,
        };
        for (kind, op) in [
            (Kind::Counter, Op::Add(2.0)),
            (Kind::Observer, observe(7.0)),
        ] {
            let now = Instant::now();
            let first = vec![update("a", op), update("b", op), update("c", op)];
            let second = vec![update("b", op), update("b", op)];
            let mut incremental = FamilyState::new(spec(kind), ctx.clone());
            incremental.apply(&mut first.clone().into(), now);
            let before = incremental.snapshot(now).text;
            incremental.apply(&mut second.clone().into(), now);
            let snapshot = incremental.snapshot(now);
            // The help as the text format escapes it; the exposition writes it.
            assert_eq!(&*snapshot.help, "Help with a \\\\ backslash.");
            let after = snapshot.text;
            let mut whole = FamilyState::new(spec(kind), ctx.clone());
            whole.apply(&mut first.into(), now);
            whole.apply(&mut second.into(), now);
            assert_eq!(after, whole.snapshot(now).text);
            assert_ne!(before, after, "the changed series is rendered again");
            assert!(after.starts_with("lat"), "no HELP or TYPE line: {after}");
            let b = if kind == Kind::Counter {
                "lat{k=\"b\"} 6\n"
            } else {
                "lat_count{k=\"b\"} 3\n"
            };
            assert!(after.contains(b), "{after}");
        }
    }

    #[tokio::test]
    async fn gathered_observations_count_each_with_its_weight() {
        let ctx = context(Duration::from_secs(15), None).await;
        let now = Instant::now();
        let mut family = FamilyState::new(spec(Kind::Observer), ctx);
        let observation = |value, count| crate::update::Observation { value, count };
        let mut updates = Updates {
            clocked: false,
            list: vec![
                update(
                    "a",
                    Op::Observe {
                        value: 9.0,
                        count: 1,
                    },
                ),
                update("a", Op::Observations { start: 1, len: 2 }),
            ],
            observations: vec![
                observation(100.0, 1),
                observation(1.0, 1),
                observation(2.0, 10),
            ],
        };
        updates.list[1].samples = 2;
        family.apply(&mut updates, now);
        assert!(
            updates.observations.is_empty() && updates.list.len() == 2,
            "the observations are spent, the updates stay for the batch's recycling"
        );
        assert_eq!(family.updates, 3);
        let text = family.snapshot(now).text;
        // 9 + 1 + 2 × 10; the observation before the run is not the update's.
        assert!(text.contains("lat_sum{k=\"a\"} 30\n"), "{text}");
        assert!(text.contains("lat_count{k=\"a\"} 12\n"), "{text}");
    }
}
