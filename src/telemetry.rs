//! tallyd's own metrics (`tallyd_*` and the process collector's `process_*`), kept in a
//! `prometheus::Registry` of their own, and the rate limiter for per-line log messages.
//!
//! Per-family figures (updates, rates, series) are not here: the aggregator owns them and the
//! exposition renders them from its snapshot.
//!
//! `register` registers every self-metric, by area; [`udp_drops`] reads the kernel's drop
//! counts for tallyd's UDP sockets at each scrape; [`recent`] keeps, in bounded memory, what
//! counts cannot say: the last refused lines, the unmapped names, the last mapping load, and
//! a few minutes of totals.

pub mod recent;
mod register;
pub mod udp_drops;
pub use register::RemoteWriteMetrics;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Instant;

use crate::statsd::parse::RejectReason;
use udp_drops::UdpDrops;

/// Prefix of every tallyd self-metric; user metrics that escape to a name with it are refused.
pub const PREFIX: &str = "tallyd_";

/// The listeners whose packets are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    /// UDP datagrams.
    Udp,
    /// TCP reads.
    Tcp,
    /// Unix datagrams.
    Unixgram,
}

impl ListenerKind {
    /// Every listener, in export order.
    pub const ALL: [ListenerKind; 3] =
        [ListenerKind::Udp, ListenerKind::Tcp, ListenerKind::Unixgram];

    /// The `listener` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Udp => "udp",
            ListenerKind::Tcp => "tcp",
            ListenerKind::Unixgram => "unixgram",
        }
    }
}

/// Where accepted updates can be dropped before a family actor applies them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropStage {
    /// The family mailboxes already hold `limits.max_queued_updates`.
    QueueFull,
    /// The family actor could not be found or reached (shutdown, registry timeout).
    Undeliverable,
}

impl DropStage {
    /// Every stage, in export order.
    pub const ALL: [DropStage; 2] = [DropStage::QueueFull, DropStage::Undeliverable];

    /// The `stage` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropStage::QueueFull => "queue_full",
            DropStage::Undeliverable => "undeliverable",
        }
    }
}

/// The most resident memory the process has held (`VmHWM`), in bytes.
pub fn peak_resident_bytes() -> Option<i64> {
    proc_status_bytes("VmHWM:")
}

/// The resident memory of the process now (`VmRSS`), in bytes.
pub fn resident_bytes() -> Option<i64> {
    proc_status_bytes("VmRSS:")
}

fn proc_status_bytes(field: &str) -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Every self-metric, registered once at start-up and shared by all tasks and actors.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    /// `tallyd_lines_total`: lines received, accepted or not.
    pub lines: IntCounter,
    /// `tallyd_samples_total`: samples accepted and sent to a family actor.
    pub samples: IntCounter,
    /// `tallyd_updates_total`: updates applied by family actors (never goes down, unlike the
    /// per-family counts, which restart with their actor).
    pub updates: IntCounter,
    packets: IntCounterVec,
    rejected: Vec<IntCounter>,
    /// `tallyd_tag_errors_total`: tags dropped because they cannot become labels.
    pub tag_errors: IntCounter,
    events: IntCounterVec,
    /// `tallyd_family_restarts_total`: family actors restarted after a failure.
    pub family_restarts: IntCounter,
    /// `tallyd_metric_actors`: live family actors.
    pub metric_actors: IntGauge,
    /// `tallyd_metric_families_hibernating`: families whose actor stopped while idle.
    pub families_hibernating: IntGauge,
    /// `tallyd_family_wakeups_total`: hibernating families brought back by an update.
    pub family_wakeups: IntCounter,
    /// `tallyd_family_hibernating_updates_total`: batches applied to families kept
    /// hibernating, for lack of room for an actor they did not need yet.
    pub hibernating_updates: IntCounter,
    series: IntGaugeVec,
    series_refused: IntCounterVec,
    /// `tallyd_series_expired_total`: series removed after their TTL.
    pub series_expired: IntCounter,
    /// `tallyd_family_retirements_total`: family actors that stopped with no series left.
    pub family_retirements: IntCounter,
    /// `tallyd_family_evictions_total`: live families hibernated early to make room.
    pub family_evictions: IntCounter,
    /// `tallyd_native_histogram_halvings_total`: native histogram series that lowered their
    /// schema by one to stay within their most buckets.
    pub native_halvings: IntCounter,
    /// `tallyd_metric_actors_limit`: `limits.max_live_families`.
    pub max_live_families: IntGauge,
    /// `tallyd_family_lookups_waiting`: families waiting for room for their actor.
    pub lookups_waiting: IntGauge,
    /// `tallyd_resident_memory_peak_bytes`: VmHWM, read at each scrape.
    peak_memory: IntGauge,
    type_conflicts: IntCounterVec,
    /// The metrics `type_conflicts` has a series for, at most `conflict_metrics_limit`: past
    /// it, conflicts are counted with `metric=""`.
    conflict_metrics: std::sync::Mutex<rustc_hash::FxHashSet<Box<str>>>,
    conflict_metrics_limit: std::sync::atomic::AtomicUsize,
    updates_dropped: IntCounterVec,
    /// `tallyd_tcp_connections_total`: StatsD TCP connections accepted.
    pub tcp_connections: IntCounter,
    /// `tallyd_tcp_connection_errors_total`: StatsD TCP connections ended by a read error.
    pub tcp_connection_errors: IntCounter,
    /// `tallyd_tcp_too_long_lines_total`: TCP connections closed for an over-long line.
    pub tcp_too_long_lines: IntCounter,
    /// `tallyd_tcp_connections_open`: StatsD TCP connections open now.
    pub tcp_connections_open: IntGauge,
    /// `tallyd_tcp_connections_limit`: `statsd.tcp_max_connections`.
    pub tcp_connections_limit: IntGauge,
    /// `tallyd_tcp_connections_refused_total`: StatsD TCP connections closed as they were
    /// accepted, `statsd.tcp_max_connections` being open.
    pub tcp_connections_refused: IntCounter,
    /// `tallyd_tcp_connections_evicted_total`: StatsD TCP connections closed, having
    /// completed no line for a second or sent nothing yet, to make room for a new one.
    pub tcp_connections_evicted: IntCounter,
    /// `tallyd_tcp_idle_closed_total`: StatsD TCP connections closed after
    /// `statsd.tcp_idle_timeout` without a complete line.
    pub tcp_idle_closed: IntCounter,
    /// `tallyd_accept_errors_total{listener}`: failed accepts (out of file descriptors, most
    /// often), by listener: `statsd_tcp`, `http`.
    pub accept_errors: IntCounterVec,
    /// `tallyd_mapping_loaded`: rules in the mapping file in force.
    pub mapping_loaded: IntGauge,
    /// `tallyd_mapping_cache_hits_total`.
    pub mapping_cache_hits: IntCounter,
    /// `tallyd_mapping_cache_misses_total`.
    pub mapping_cache_misses: IntCounter,
    /// `tallyd_mapping_unmapped_total`: samples no rule matched (with a mapping file).
    pub mapping_unmapped: IntCounter,
    /// `tallyd_mapping_dropped_total`: samples dropped by an `action: drop` rule.
    pub mapping_dropped: IntCounter,
    reloads: IntCounterVec,
    tls_reloads: IntCounterVec,
    /// `tallyd_http_connections_rejected_total`: HTTP connections closed unserved because
    /// `web.max_connections` were open.
    pub http_connections_rejected: IntCounter,
    /// `tallyd_http_connections_evicted_total`: HTTP connections closed, after waiting at
    /// least a second for a request, to make room for a new one.
    pub http_connections_evicted: IntCounter,
    /// `tallyd_http_auth_failures_total`: HTTP requests refused (401) for missing or wrong
    /// basic-auth credentials.
    pub http_auth_failures: IntCounter,
    /// `tallyd_http_password_checks_refused_total`: HTTP requests answered 503 unchecked
    /// because `web.max_password_checks` were running or waiting.
    pub http_password_checks_refused: IntCounter,
    http_requests: IntCounterVec,
    /// `tallyd_scrape_barrier_timeouts_total`: scrapes that stopped waiting for the
    /// listeners and families to publish what they held.
    pub scrape_barrier_timeouts: IntCounter,
    /// `tallyd_scrape_renders_total`: expositions rendered; scrapes that ask at once share one.
    pub scrape_renders: IntCounter,
    /// `tallyd_udp_kernel_drops_total`, read from /proc at each scrape.
    pub udp_drops: UdpDrops,
    /// The last refused lines, the unmapped names, the last mapping load, the history.
    pub recent: recent::Recent,
    /// Names of the families registered here that do not start with [`PREFIX`] (the process
    /// collector's), which user metrics must not take either.
    foreign_names: Vec<String>,
}

impl Telemetry {
    /// Counts packets received by a listener.
    pub fn packets(&self, kind: ListenerKind, n: u64) {
        self.packets_counter(kind).inc_by(n);
    }

    /// The packet counter of a listener, for a reader that counts at every read.
    pub fn packets_counter(&self, kind: ListenerKind) -> IntCounter {
        self.packets.with_label_values(&[kind.as_str()])
    }

    /// The `tallyd_series{type}` gauge of one family type.
    pub fn series_gauge(&self, kind: &str) -> IntGauge {
        self.series.with_label_values(&[kind])
    }

    /// Counts updates refused by a series limit (`max_series` or `max_series_per_family`).
    pub fn series_refused(&self, limit: &str, n: u64) {
        self.series_refused.with_label_values(&[limit]).inc_by(n);
    }

    /// Counts updates dropped at `stage`.
    pub fn dropped(&self, stage: DropStage, n: u64) {
        self.updates_dropped
            .with_label_values(&[stage.as_str()])
            .inc_by(n);
    }

    /// Updates dropped so far at `stage`.
    pub fn dropped_at(&self, stage: DropStage) -> u64 {
        self.updates_dropped
            .with_label_values(&[stage.as_str()])
            .get()
    }

    /// Updates dropped so far, at every stage.
    pub fn dropped_total(&self) -> u64 {
        DropStage::ALL
            .iter()
            .map(|s| self.updates_dropped.with_label_values(&[s.as_str()]).get())
            .sum()
    }

    /// Counts DogStatsD events and service checks.
    pub fn events(&self, events: u64, service_checks: u64) {
        if events > 0 {
            self.events.with_label_values(&["event"]).inc_by(events);
        }
        if service_checks > 0 {
            self.events
                .with_label_values(&["service_check"])
                .inc_by(service_checks);
        }
    }

    /// Counts a mapping file reload.
    pub fn reload(&self, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.reloads.with_label_values(&[outcome]).inc();
    }

    /// Counts a load of the TLS certificates after their files changed, by outcome.
    pub fn tls_reload(&self, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.tls_reloads.with_label_values(&[outcome]).inc();
    }

    /// Counts an HTTP response by its status code.
    pub fn http_request(&self, code: hyper::StatusCode) {
        self.http_requests.with_label_values(&[code.as_str()]).inc();
    }

    /// Counts rejected lines for one reason.
    pub fn rejected(&self, reason: RejectReason, n: u64) {
        self.rejected[reason.index()].inc_by(n);
    }

    /// Lines rejected so far, by reason, in [`RejectReason::ALL`]'s order.
    pub fn rejected_by_reason(&self) -> impl Iterator<Item = (RejectReason, u64)> + '_ {
        RejectReason::ALL
            .iter()
            .zip(&self.rejected)
            .map(|(reason, counter)| (*reason, counter.get()))
    }

    /// Lines rejected so far, for every reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected_by_reason().map(|(_, n)| n).sum()
    }

    /// Packets received so far by a listener.
    pub fn packets_of(&self, kind: ListenerKind) -> u64 {
        self.packets.with_label_values(&[kind.as_str()]).get()
    }

    /// Counts samples refused by a family of another type.
    pub fn type_conflict(&self, metric: &str, sample_kind: &str, n: u64) {
        let listed = {
            let mut metrics = self
                .conflict_metrics
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            metrics.contains(metric)
                || (metrics.len() < self.conflict_metrics_limit.load(Ordering::Relaxed)
                    && metrics.insert(metric.into()))
        };
        let metric = if listed { metric } else { "" };
        self.type_conflicts
            .with_label_values(&[metric, sample_kind])
            .inc_by(n);
    }

    /// `limits.max_family_self_metrics`: the metrics `tallyd_type_conflicts_total` names at
    /// most, so that a sender of endless conflicting names cannot grow tallyd's own series
    /// without bound; the conflicts of any other metric are counted with `metric=""`.
    pub fn limit_conflict_metrics(&self, limit: usize) {
        self.conflict_metrics_limit.store(limit, Ordering::Relaxed);
    }

    /// Every self-metric family, for the exposition.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        if let Some(peak) = peak_resident_bytes() {
            self.peak_memory.set(peak);
        }
        self.registry.gather()
    }

    /// True when a user metric named `name` would collide with a self-metric.
    pub fn is_reserved(&self, name: &str) -> bool {
        name.starts_with(PREFIX) || self.foreign_names.iter().any(|n| n == name)
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// Lets through at most `per_second` events each second, and says how many it held back, so a
/// flood of bad input produces a readable trickle of log lines rather than a log storm.
/// `const`-constructible, so each kind of message has its own `static` limiter.
#[derive(Debug)]
pub struct LogLimiter {
    per_second: u64,
    window: AtomicU64,
    seen: AtomicU64,
}

/// The process-wide clock the limiters count seconds on.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl LogLimiter {
    /// A limiter letting `per_second` events through each second.
    pub const fn new(per_second: u64) -> Self {
        LogLimiter {
            per_second,
            window: AtomicU64::new(0),
            seen: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed)` when this event may be logged, with how many were held back in the
    /// previous second; `None` when it must not be.
    pub fn allow(&self) -> Option<u64> {
        let now = EPOCH.elapsed().as_secs();
        let window = self.window.load(Ordering::Relaxed);
        let mut suppressed = 0;
        if now != window
            && self
                .window
                .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            suppressed = self
                .seen
                .swap(0, Ordering::Relaxed)
                .saturating_sub(self.per_second);
        }
        let seen = self.seen.fetch_add(1, Ordering::Relaxed);
        (seen < self.per_second).then_some(suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_caps_events_per_second() {
        let limiter = LogLimiter::new(3);
        let allowed = (0..100).filter(|_| limiter.allow().is_some()).count();
        assert_eq!(allowed, 3);
    }

    #[test]
    fn every_reject_reason_is_exported_at_zero() {
        let t = Telemetry::new();
        t.rejected(RejectReason::BadValue, 2);
        let families = t.gather();
        let rejected = families
            .iter()
            .find(|f| f.name() == "tallyd_lines_rejected_total")
            .unwrap();
        assert_eq!(rejected.get_metric().len(), RejectReason::ALL.len());
        let bad_value = rejected
            .get_metric()
            .iter()
            .find(|m| m.get_label()[0].value() == "bad_value")
            .unwrap();
        assert_eq!(bad_value.get_counter().get_value(), 2.0);
    }
}
