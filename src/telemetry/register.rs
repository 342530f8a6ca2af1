//! Registering the self-metrics, one area at a time (ingest, the TCP listener, the family
//! actors, the mapping file, HTTP), each with its help text and its label values exported at 0
//! from the start.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::udp_drops::UdpDrops;
use super::{DropStage, ListenerKind, Telemetry, PREFIX};
use crate::statsd::parse::RejectReason;

/// Registers a self-metric: its name is static and unique, so registering cannot fail.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique static metric");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    registered(
        registry,
        IntCounter::new(name, help).expect("valid static metric"),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(
        registry,
        IntGauge::new(name, help).expect("valid static metric"),
    )
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid static metric");
    registered(registry, c)
}

/// A labelled counter with its `values` exported at 0 from the start.
fn counter_vec_with(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> IntCounterVec {
    let vec = counter_vec(registry, name, help, &[label]);
    for value in values {
        vec.with_label_values(&[value]);
    }
    vec
}

/// What ingest counts: lines, samples, packets, rejections, and updates it could not deliver.
struct IngestMetrics {
    lines: IntCounter,
    samples: IntCounter,
    packets: IntCounterVec,
    rejected: Vec<IntCounter>,
    tag_errors: IntCounter,
    events: IntCounterVec,
    type_conflicts: IntCounterVec,
    updates_dropped: IntCounterVec,
}

impl IngestMetrics {
    fn register(registry: &Registry) -> Self {
        let reasons: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        let rejected = counter_vec_with(
            registry,
            "tallyd_lines_rejected_total",
            "StatsD lines (or samples of a multi-value line) rejected, by reason.",
            "reason",
            &reasons,
        );
        let stages = DropStage::ALL.map(DropStage::as_str);
        IngestMetrics {
            lines: counter(registry, "tallyd_lines_total", "StatsD lines received."),
            samples: counter(
                registry,
                "tallyd_samples_total",
                "StatsD samples accepted and routed to their family actor.",
            ),
            packets: counter_vec_with(
                registry,
                "tallyd_packets_total",
                "UDP and Unix datagrams and non-empty TCP reads received, by listener.",
                "listener",
                &[ListenerKind::Udp, ListenerKind::Tcp, ListenerKind::Unixgram].map(ListenerKind::as_str),
            ),
            rejected: reasons.iter().map(|r| rejected.with_label_values(&[r])).collect(),
            tag_errors: counter(
                registry,
                "tallyd_tag_errors_total",
                "Tags dropped because they cannot become labels.",
            ),
            events: counter_vec_with(
                registry,
                "tallyd_events_total",
                "DogStatsD events and service checks received (not metrics; not exported).",
                "type",
                &["event", "service_check"],
            ),
            type_conflicts: counter_vec(
                registry,
                "tallyd_type_conflicts_total",
                "Samples refused because their family has another type, or because a new family's names would collide with another family's.",
                &["metric", "type"],
            ),
            updates_dropped: counter_vec_with(
                registry,
                "tallyd_updates_dropped_total",
                "Accepted updates not delivered to their family actor, by where they were dropped.",
                "stage",
                &stages,
            ),
        }
    }
}

/// The StatsD TCP listener's connections.
struct TcpMetrics {
    tcp_connections: IntCounter,
    tcp_connection_errors: IntCounter,
    tcp_too_long_lines: IntCounter,
    tcp_connections_open: IntGauge,
    tcp_connections_limit: IntGauge,
    tcp_connections_refused: IntCounter,
    tcp_connections_evicted: IntCounter,
    tcp_idle_closed: IntCounter,
    accept_errors: IntCounterVec,
}

impl TcpMetrics {
    fn register(registry: &Registry) -> Self {
        TcpMetrics {
            tcp_connections: counter(
                registry,
                "tallyd_tcp_connections_total",
                "StatsD TCP connections accepted.",
            ),
            tcp_connection_errors: counter(
                registry,
                "tallyd_tcp_connection_errors_total",
                "StatsD TCP connections ended by a read error.",
            ),
            tcp_too_long_lines: counter(
                registry,
                "tallyd_tcp_too_long_lines_total",
                "StatsD TCP connections closed because a line exceeded the length limit.",
            ),
            tcp_connections_open: gauge(
                registry,
                "tallyd_tcp_connections_open",
                "StatsD TCP connections open now.",
            ),
            tcp_connections_limit: gauge(
                registry,
                "tallyd_tcp_connections_limit",
                "StatsD TCP connections open at once, at most (statsd.tcp_max_connections).",
            ),
            tcp_connections_refused: counter(
                registry,
                "tallyd_tcp_connections_refused_total",
                "StatsD TCP connections closed as they were accepted: statsd.tcp_max_connections were open.",
            ),
            tcp_connections_evicted: counter(
                registry,
                "tallyd_tcp_connections_evicted_total",
                "StatsD TCP connections closed, having completed no line for a second or sent nothing yet, to make room for a new one when statsd.tcp_max_connections were open.",
            ),
            tcp_idle_closed: counter(
                registry,
                "tallyd_tcp_idle_closed_total",
                "StatsD TCP connections closed after statsd.tcp_idle_timeout without a complete line.",
            ),
            accept_errors: counter_vec_with(
                registry,
                "tallyd_accept_errors_total",
                "Failed accepts (out of file descriptors, most often), by listener.",
                "listener",
                &["statsd_tcp", "http"],
            ),
        }
    }
}

/// The family actors: their lives, their updates and their series.
struct FamilyMetrics {
    updates: IntCounter,
    family_restarts: IntCounter,
    metric_actors: IntGauge,
    families_hibernating: IntGauge,
    family_wakeups: IntCounter,
    hibernating_updates: IntCounter,
    family_retirements: IntCounter,
    family_evictions: IntCounter,
    native_halvings: IntCounter,
    max_live_families: IntGauge,
    lookups_waiting: IntGauge,
    peak_memory: IntGauge,
    series: IntGaugeVec,
    series_refused: IntCounterVec,
    series_expired: IntCounter,
}

impl FamilyMetrics {
    fn register(registry: &Registry) -> Self {
        let series = registered(
            registry,
            IntGaugeVec::new(
                Opts::new("tallyd_series", "Series on /metrics now, by family type."),
                &["type"],
            )
            .expect("valid static metric"),
        );
        for kind in ["counter", "gauge", "observer", "set"] {
            series.with_label_values(&[kind]);
        }
        FamilyMetrics {
            updates: counter(
                registry,
                "tallyd_updates_total",
                "Updates applied by all family actors.",
            ),
            family_restarts: counter(
                registry,
                "tallyd_family_restarts_total",
                "Family actors restarted by the registry after a failure.",
            ),
            metric_actors: gauge(registry, "tallyd_metric_actors", "Live family actors."),
            families_hibernating: gauge(
                registry,
                "tallyd_metric_families_hibernating",
                "Families without a live actor: stopped while idle, or to make room, or born so past limits.max_live_families; their series stay on /metrics, and an update brings the actor back.",
            ),
            family_wakeups: counter(
                registry,
                "tallyd_family_wakeups_total",
                "Hibernating families whose actor an update brought back.",
            ),
            hibernating_updates: counter(
                registry,
                "tallyd_family_hibernating_updates_total",
                "Batches applied to a family kept hibernating, without an actor: it is new or not updated steadily, and limits.max_live_families left no room for its actor.",
            ),
            family_retirements: counter(
                registry,
                "tallyd_family_retirements_total",
                "Family actors that stopped because every series expired.",
            ),
            native_halvings: counter(
                registry,
                "tallyd_native_histogram_halvings_total",
                "Times a native histogram series halved its resolution (its schema lowered by one, two buckets merged into one) to keep within its most buckets.",
            ),
            family_evictions: counter(
                registry,
                "tallyd_family_evictions_total",
                "Live families hibernated before they were idle long enough, to make room for another family's actor under limits.max_live_families.",
            ),
            max_live_families: gauge(
                registry,
                "tallyd_metric_actors_limit",
                "Live family actors at most (limits.max_live_families).",
            ),
            lookups_waiting: gauge(
                registry,
                "tallyd_family_lookups_waiting",
                "Families waiting for room for their actor under limits.max_live_families.",
            ),
            peak_memory: gauge(
                registry,
                "tallyd_resident_memory_peak_bytes",
                "The most resident memory tallyd has held since it started (VmHWM): what a container's memory limit must allow.",
            ),
            series,
            series_refused: counter_vec_with(
                registry,
                "tallyd_series_refused_total",
                "Updates refused because they would create a series past a limit, by limit.",
                "limit",
                &["max_series", "max_series_per_family"],
            ),
            series_expired: counter(
                registry,
                "tallyd_series_expired_total",
                "Series removed from /metrics after their TTL without updates.",
            ),
        }
    }
}

/// The mapping file: its rules, the listeners' caches, what it leaves unmapped or drops, and
/// its reloads.
struct MappingMetrics {
    mapping_loaded: IntGauge,
    mapping_cache_hits: IntCounter,
    mapping_cache_misses: IntCounter,
    mapping_unmapped: IntCounter,
    mapping_dropped: IntCounter,
    reloads: IntCounterVec,
}

impl MappingMetrics {
    fn register(registry: &Registry) -> Self {
        MappingMetrics {
            mapping_loaded: gauge(
                registry,
                "tallyd_mapping_loaded",
                "Rules in the mapping file in force.",
            ),
            mapping_cache_hits: counter(
                registry,
                "tallyd_mapping_cache_hits_total",
                "Mapping look-ups answered from the listeners' caches.",
            ),
            mapping_cache_misses: counter(
                registry,
                "tallyd_mapping_cache_misses_total",
                "Mapping look-ups that ran the rules.",
            ),
            mapping_unmapped: counter(
                registry,
                "tallyd_mapping_unmapped_total",
                "Samples whose name no mapping rule matched (counted when a mapping file is configured).",
            ),
            mapping_dropped: counter(
                registry,
                "tallyd_mapping_dropped_total",
                "Samples dropped by a mapping rule with action: drop.",
            ),
            reloads: counter_vec_with(
                registry,
                "tallyd_config_reloads_total",
                "Mapping file reloads, by outcome.",
                "outcome",
                &["success", "failure"],
            ),
        }
    }
}

/// The HTTP server and the scrapes it serves.
struct HttpMetrics {
    http_connections_rejected: IntCounter,
    http_connections_evicted: IntCounter,
    http_auth_failures: IntCounter,
    http_password_checks_refused: IntCounter,
    tls_reloads: IntCounterVec,
    http_requests: IntCounterVec,
    scrape_barrier_timeouts: IntCounter,
    scrape_renders: IntCounter,
}

impl HttpMetrics {
    fn register(registry: &Registry) -> Self {
        HttpMetrics {
            http_connections_rejected: counter(
                registry,
                "tallyd_http_connections_rejected_total",
                "HTTP connections closed unserved because web.max_connections were open.",
            ),
            http_connections_evicted: counter(
                registry,
                "tallyd_http_connections_evicted_total",
                "HTTP connections closed, after waiting at least a second for a request, to make room for a new one.",
            ),
            http_auth_failures: counter(
                registry,
                "tallyd_http_auth_failures_total",
                "HTTP requests refused for missing or wrong basic-auth credentials.",
            ),
            tls_reloads: counter_vec_with(
                registry,
                "tallyd_tls_reloads_total",
                "Loads of the TLS certificates after the web config file or a file it names changed, by outcome.",
                "outcome",
                &["success", "failure"],
            ),
            http_password_checks_refused: counter(
                registry,
                "tallyd_http_password_checks_refused_total",
                "HTTP requests answered 503 unchecked because web.max_password_checks were running or waiting.",
            ),
            http_requests: counter_vec(
                registry,
                "tallyd_http_requests_total",
                "HTTP requests answered by tallyd's handlers, by status code.",
                &["code"],
            ),
            scrape_barrier_timeouts: counter(
                registry,
                "tallyd_scrape_barrier_timeouts_total",
                "Scrapes that stopped waiting for the listeners and families to publish what they held, and showed what was published by then.",
            ),
            scrape_renders: counter(
                registry,
                "tallyd_scrape_renders_total",
                "Expositions rendered for scrapes; scrapes that ask at once share one.",
            ),
        }
    }
}

impl Telemetry {
    /// Registers every self-metric, and the process collector where the platform has one.
    pub fn new() -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
        let ingest = IngestMetrics::register(&registry);
        let tcp = TcpMetrics::register(&registry);
        let families = FamilyMetrics::register(&registry);
        let mapping = MappingMetrics::register(&registry);
        let http = HttpMetrics::register(&registry);
        Telemetry {
            lines: ingest.lines,
            samples: ingest.samples,
            updates: families.updates,
            packets: ingest.packets,
            rejected: ingest.rejected,
            tag_errors: ingest.tag_errors,
            events: ingest.events,
            family_restarts: families.family_restarts,
            metric_actors: families.metric_actors,
            families_hibernating: families.families_hibernating,
            family_wakeups: families.family_wakeups,
            hibernating_updates: families.hibernating_updates,
            series: families.series,
            series_refused: families.series_refused,
            series_expired: families.series_expired,
            family_retirements: families.family_retirements,
            family_evictions: families.family_evictions,
            native_halvings: families.native_halvings,
            max_live_families: families.max_live_families,
            lookups_waiting: families.lookups_waiting,
            peak_memory: families.peak_memory,
            type_conflicts: ingest.type_conflicts,
            conflict_metrics: Default::default(),
            conflict_metrics_limit: std::sync::atomic::AtomicUsize::new(usize::MAX),
            updates_dropped: ingest.updates_dropped,
            tcp_connections: tcp.tcp_connections,
            tcp_connection_errors: tcp.tcp_connection_errors,
            tcp_too_long_lines: tcp.tcp_too_long_lines,
            tcp_connections_open: tcp.tcp_connections_open,
            tcp_connections_limit: tcp.tcp_connections_limit,
            tcp_connections_refused: tcp.tcp_connections_refused,
            tcp_connections_evicted: tcp.tcp_connections_evicted,
            tcp_idle_closed: tcp.tcp_idle_closed,
            accept_errors: tcp.accept_errors,
            mapping_loaded: mapping.mapping_loaded,
            mapping_cache_hits: mapping.mapping_cache_hits,
            mapping_cache_misses: mapping.mapping_cache_misses,
            mapping_unmapped: mapping.mapping_unmapped,
            mapping_dropped: mapping.mapping_dropped,
            reloads: mapping.reloads,
            http_connections_rejected: http.http_connections_rejected,
            http_connections_evicted: http.http_connections_evicted,
            http_auth_failures: http.http_auth_failures,
            http_password_checks_refused: http.http_password_checks_refused,
            tls_reloads: http.tls_reloads,
            http_requests: http.http_requests,
            scrape_barrier_timeouts: http.scrape_barrier_timeouts,
            scrape_renders: http.scrape_renders,
            udp_drops: registered(&registry, UdpDrops::new()),
            recent: Default::default(),
            foreign_names: Vec::new(),
            registry,
        }
        .with_foreign_names()
    }

    fn with_foreign_names(mut self) -> Self {
        self.foreign_names = self
            .registry
            .gather()
            .into_iter()
            .map(|f| f.name().to_owned())
            .filter(|name| !name.starts_with(PREFIX))
            .collect();
        self
    }
}

impl Telemetry {
    /// Registers the relay's counters for `target` (only when a relay is configured):
    /// lines and packets sent, packets the send failed for, and lines dropped as too long and
    /// in failed packets.
    pub fn relay(&self, target: &str) -> [IntCounter; 5] {
        let registry = &self.registry;
        let with_target = |name: &str, help: &str| {
            counter_vec(registry, name, help, &["target"]).with_label_values(&[target])
        };
        let dropped = counter_vec(
            registry,
            "tallyd_relay_lines_dropped_total",
            "Lines not relayed: too_long (longer than a relay packet holds) or send_failed (in a packet the kernel refused).",
            &["target", "reason"],
        );
        [
            with_target(
                "tallyd_relay_lines_total",
                "Lines relayed to the target, in packets the kernel took.",
            ),
            with_target(
                "tallyd_relay_packets_total",
                "Packets relayed to the target.",
            ),
            with_target(
                "tallyd_relay_send_errors_total",
                "Relay packets the kernel refused to send (the target is down, or the send buffer is full); their lines are dropped.",
            ),
            dropped.with_label_values(&[target, "too_long"]),
            dropped.with_label_values(&[target, "send_failed"]),
        ]
    }
}

/// The remote write's self-metrics (see [`Telemetry::remote_write`]).
#[derive(Clone, Debug)]
pub struct RemoteWriteMetrics {
    /// `tallyd_remote_write_samples_total{outcome="sent"}`.
    pub sent: IntCounter,
    /// `tallyd_remote_write_samples_total{outcome="failed"}`: refused by the receiver.
    pub failed: IntCounter,
    /// `tallyd_remote_write_samples_total{outcome="dropped"}`: dropped from a full queue.
    pub dropped: IntCounter,
    /// `tallyd_remote_write_retries_total`.
    pub retries: IntCounter,
    /// `tallyd_remote_write_queue_bytes`.
    pub queue_bytes: IntGauge,
    /// `tallyd_remote_write_queue_bytes_limit`.
    pub queue_bytes_limit: IntGauge,
    /// `tallyd_remote_write_last_success_timestamp_seconds`.
    pub last_success: IntGauge,
}

impl Telemetry {
    /// Registers the remote write's metrics (only when a push is configured).
    pub fn remote_write(&self) -> RemoteWriteMetrics {
        let registry = &self.registry;
        let samples = counter_vec_with(
            registry,
            "tallyd_remote_write_samples_total",
            "Samples pushed by remote write, by outcome: sent (the receiver took them), failed (it refused them for good, a 4xx other than 429), dropped (the queue was full).",
            "outcome",
            &["sent", "failed", "dropped"],
        );
        RemoteWriteMetrics {
            sent: samples.with_label_values(&["sent"]),
            failed: samples.with_label_values(&["failed"]),
            dropped: samples.with_label_values(&["dropped"]),
            retries: counter(
                registry,
                "tallyd_remote_write_retries_total",
                "Remote write requests sent again after a network error, a timeout, a 5xx or a 429.",
            ),
            queue_bytes: gauge(
                registry,
                "tallyd_remote_write_queue_bytes",
                "Bytes of compressed remote write requests waiting to be sent, the one being sent included.",
            ),
            queue_bytes_limit: gauge(
                registry,
                "tallyd_remote_write_queue_bytes_limit",
                "Most bytes of remote write requests waiting (remote_write.queue_bytes).",
            ),
            last_success: gauge(
                registry,
                "tallyd_remote_write_last_success_timestamp_seconds",
                "When a remote write request last succeeded, in seconds since the Unix epoch (0: never).",
            ),
        }
    }
}
