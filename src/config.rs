//! Settings: built-in defaults, then an optional TOML file (`--config.file`), then `TALLYD_…`
//! environment variables, then command-line flags named as statsd_exporter names them, merged
//! with the `config` crate. Every field is documented where it is declared; the commented file
//! `config/tallyd.toml` repeats the defaults and a test keeps the two equal.
//!
//! A bad file, variable or flag fails start-up with a message naming its source (file and line,
//! variable or flag) and the field.
//!
//! This module declares the settings; `cli` the flags, `load` the merge and `validate` the
//! checks types cannot express.

mod cli;
mod load;
mod validate;

pub use cli::Cli;

use clap::ValueEnum;
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::statsd::parse::TagStyles;
#[cfg(test)]
use {clap::Parser, load::environment};

/// The UDP receive buffer asked for unless set: 8 MiB, which the kernel doubles: a quarter of
/// it holds the default 100 ms receive pause up to about 18,000 datagrams of 1,400 bytes a
/// second (see `statsd.receive_coalesce`).
pub const DEFAULT_READ_BUFFER: usize = 8 << 20;

/// Every setting of tallyd.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// StatsD listeners.
    pub statsd: StatsdSettings,
    /// HTTP server.
    pub web: WebSettings,
    /// Logging.
    pub log: LogSettings,
    /// How timers, histograms and distributions are exposed.
    pub observer: ObserverSettings,
    /// Family actors.
    pub actors: ActorSettings,
    /// What happens on SIGTERM.
    pub shutdown: ShutdownSettings,
    /// Bounds on what applications can make tallyd hold.
    pub limits: LimitSettings,
    /// Pushing every series to a Prometheus remote-write receiver.
    pub remote_write: RemoteWriteSettings,
}

/// `[remote_write]`: every series on /metrics, pushed at each interval to a receiver of
/// Prometheus remote write 1.0 (protobuf, snappy), as a scrape would read it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteWriteSettings {
    /// Where to push (`http://` or `https://`); empty: no push. Default empty.
    pub url: String,
    /// Time between two pushes. Default `15s`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Time one request may take, connection included. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra request headers, each `Name: value` (e.g. `X-Scope-OrgID: team-a`).
    /// Default none.
    pub headers: Vec<String>,
    /// Labels added to every series that has no label of that name, each `name=value`
    /// (e.g. `instance=pod-a`). Default none.
    pub labels: Vec<String>,
    /// A file holding the bearer token sent as `Authorization: Bearer …`, read at each push.
    /// Default empty.
    pub bearer_token_file: String,
    /// Basic auth user name. Default empty (no basic auth).
    pub basic_auth_username: String,
    /// A file holding the basic auth password, read at each push. Default empty.
    pub basic_auth_password_file: String,
    /// PEM file of the CAs that sign the receiver's certificate; empty: the system's.
    /// Default empty.
    pub tls_ca_file: String,
    /// PEM file of a client certificate, with `tls_key_file`. Default empty.
    pub tls_cert_file: String,
    /// PEM file of the client certificate's key. Default empty.
    pub tls_key_file: String,
    /// The name the receiver's certificate must hold; empty: the URL's host. Default empty.
    pub tls_server_name: String,
    /// Accept any certificate from the receiver (testing only). Default off.
    pub tls_insecure_skip_verify: bool,
    /// Most samples in one request. Default 2,000.
    pub max_samples_per_send: usize,
    /// Most bytes of compressed requests waiting to be sent; past it the oldest waiting is
    /// dropped and its samples counted. Default 16 MiB.
    pub queue_bytes: usize,
}

impl Default for RemoteWriteSettings {
    fn default() -> Self {
        RemoteWriteSettings {
            url: String::new(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(30),
            headers: Vec::new(),
            labels: Vec::new(),
            bearer_token_file: String::new(),
            basic_auth_username: String::new(),
            basic_auth_password_file: String::new(),
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_server_name: String::new(),
            tls_insecure_skip_verify: false,
            max_samples_per_send: 2_000,
            queue_bytes: 16 << 20,
        }
    }
}

/// `[limits]`: every bound has a counted outcome on /metrics when it is hit.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Series in all families together; past it new series are refused
    /// (`tallyd_series_refused_total{limit="max_series"}`), existing ones keep updating.
    /// Default 1,000,000.
    pub max_series: usize,
    /// Series in one family (`limit="max_series_per_family"`). Default 100,000.
    pub max_series_per_family: usize,
    /// Tags on one line; a line with more is rejected (`too_many_tags`). Default 64.
    pub max_tags_per_line: usize,
    /// Bytes in a label name or value; a longer one rejects its line (`label_too_long`).
    /// Default 1024.
    pub max_label_bytes: usize,
    /// Bytes in a UDP or Unix datagram; a longer one is rejected whole and counted once
    /// (`datagram_too_large`). At most 65,535. Default 65,535.
    pub max_datagram_bytes: usize,
    /// Updates waiting in family actors' mailboxes, observations counted one each; a batch
    /// that would go past it is dropped and counted (`tallyd_updates_dropped_total{stage="queue_full"}`). Default 1,000,000.
    pub max_queued_updates: usize,
    /// Live family actors at once, retiring ones included (each holds about 10 KB). Past it,
    /// a family that needs no actor yet (a new one, or a hibernating one, whose batch does
    /// not make it steady) is kept hibernating and its batch applied there
    /// (`tallyd_family_hibernating_updates_total`); one that needs an actor has the least
    /// recently updated live families hibernate at once (`tallyd_family_evictions_total`),
    /// and waits until one has stopped (`tallyd_family_lookups_waiting`). Bounds what a burst
    /// of new names costs. Default 4,096.
    pub max_live_families: usize,
    /// Families listed in the per-family self-metrics (`tallyd_metric_*{metric}`, four series
    /// each); past it, the busiest by update rate are, and `tallyd_metric_families_unlisted`
    /// counts the rest. `0` lists none. Default 1,000.
    pub max_family_self_metrics: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_series: 1_000_000,
            max_series_per_family: 100_000,
            max_tags_per_line: 64,
            max_label_bytes: 1024,
            max_datagram_bytes: 65_535,
            max_queued_updates: 1_000_000,
            max_live_families: 4_096,
            max_family_self_metrics: 1_000,
        }
    }
}

/// `[shutdown]`: SIGTERM and SIGINT.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    /// After the last update is applied, keep serving /metrics (with `/-/ready` at 503) this
    /// long, so a last scrape sees the final values. Default `0s`.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

/// `[statsd]`: where StatsD arrives.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StatsdSettings {
    /// UDP listen address; empty disables UDP. Default `127.0.0.1:9125`.
    pub listen_udp: String,
    /// TCP listen address; empty disables TCP. Default `127.0.0.1:9125`.
    pub listen_tcp: String,
    /// Longest TCP line in bytes; a longer one is counted and its connection closed.
    pub tcp_max_line_bytes: usize,
    /// StatsD TCP connections open at once, at most; one past it is closed as it is accepted,
    /// and counted. Default 1,024.
    pub tcp_max_connections: usize,
    /// How long a StatsD TCP connection may go without completing a line before it is
    /// closed (counted); `0s`: forever. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// Datagrams read in one go from a ready socket (at most) before the listener looks at
    /// its flush window again. Default 64.
    pub receive_batch: usize,
    /// The pause after a read of the UDP socket that found fewer than `receive_batch`
    /// datagrams, before the next read: a steady stream is then read in batches, at one
    /// wake-up per pause rather than one per datagram, which saves a third of the CPU time at
    /// moderate rates. Scrapes do not wait for it (every listener reads what its socket holds
    /// first), and a full read is followed by another at once. The socket buffer
    /// (`read_buffer`) holds what comes meanwhile; the pause follows the traffic, the time in
    /// which the rate the last pause saw fills a quarter of it, down to what it holds at
    /// 2 GiB/s (logged at start-up; see `sockets::Pause`). Unix datagram readers do not
    /// pause. `0s` reads each datagram as it comes; at most `100ms`. Default `100ms`: at
    /// 100,000 lines a second it takes about a tenth off the CPU time of `50ms`.
    #[serde(with = "humantime_serde")]
    pub receive_coalesce: Duration,
    /// Longest time a sample waits at its listener before it is sent to its family actor.
    /// Meanwhile the listener combines the samples of each series (counter increments summed,
    /// gauge sets and shifts folded) and gathers the rest, then sends each family one message.
    /// A scrape does not wait for it: every listener sends what it holds first (see
    /// [`crate::barrier`]). A family updated in every window stays live across windows (see
    /// [`crate::actors::family::FamilyContext`]). `0s` sends after every receive. Default `2s`: a
    /// thousand families cost 500 messages a second rather than 2,000 at `500ms`.
    #[serde(with = "humantime_serde")]
    pub event_flush_interval: Duration,
    /// Updates a listener holds (after combining) before it flushes early; an observation
    /// gathered into a series' update after its first counts by its room, 16 bytes against an
    /// update's 56. Default 10,000.
    pub event_flush_threshold: usize,
    /// UDP socket receive buffer in bytes (`SO_RCVBUF`), what absorbs bursts while the
    /// reader is busy; 0 keeps the system default (`net.core.rmem_default`). The kernel caps
    /// it at `net.core.rmem_max`, unless tallyd has `CAP_NET_ADMIN` (as root on a host), which
    /// lets it go past (`SO_RCVBUFFORCE`). Default [`DEFAULT_READ_BUFFER`] (8 MiB).
    pub read_buffer: usize,
    /// Tasks reading the UDP socket in parallel; 0 means one per CPU. More than one reads
    /// faster but may apply two datagrams in another order than they arrived, which matters
    /// for absolute gauges sent in separate datagrams. Default 1.
    pub udp_readers: usize,
    /// Unix datagram socket path; empty disables it. Default empty.
    pub listen_unixgram: String,
    /// Permissions of the Unix datagram socket, octal. Default `755`.
    pub unixsocket_mode: String,
    /// statsd_exporter mapping file (YAML); empty means no mapping. Default empty.
    pub mapping_config: String,
    /// Parse DogStatsD tags `|#k:v`. Default true.
    pub parse_dogstatsd_tags: bool,
    /// Parse InfluxDB tags `name,k=v`. Default true.
    pub parse_influxdb_tags: bool,
    /// Parse Librato tags `name#k=v`. Default true.
    pub parse_librato_tags: bool,
    /// Parse SignalFX tags `name[k=v]`. Default true.
    pub parse_signalfx_tags: bool,
    /// Series idle this long disappear from /metrics, unless their mapping rule (or the
    /// mapping file's defaults) sets a `ttl`; `0s` keeps them forever. Counted from when the
    /// family last applied the series, plus `event_flush_interval`, the longest a line waits
    /// at its listener before that. Default `0s`.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Names each listener task remembers the mapping of (statsd_exporter's
    /// `--statsd.cache-size`); 0 maps every name afresh. Only used with a mapping file.
    /// Default 100,000.
    pub cache_size: usize,
    /// Which name a full mapping cache forgets for a new one: `lru` or `random`
    /// (statsd_exporter's `--statsd.cache-type`). Default `lru`.
    pub cache_type: CacheType,
    /// Window over which a set (`s`) counts distinct members. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub set_window: Duration,
    /// Where every line read is relayed over UDP (`host:port`, statsd_exporter's
    /// `--statsd.relay.address`); empty: nowhere. Default empty.
    pub relay_address: String,
    /// Most bytes in a relay packet; a longer line is not relayed. Default 1,400.
    pub relay_packet_length: usize,
}

impl StatsdSettings {
    /// The tag styles to parse.
    pub fn tag_styles(&self) -> TagStyles {
        TagStyles {
            dogstatsd: self.parse_dogstatsd_tags,
            influxdb: self.parse_influxdb_tags,
            librato: self.parse_librato_tags,
            signalfx: self.parse_signalfx_tags,
        }
    }
}

impl Default for StatsdSettings {
    fn default() -> Self {
        StatsdSettings {
            listen_udp: "127.0.0.1:9125".into(),
            listen_tcp: "127.0.0.1:9125".into(),
            tcp_max_line_bytes: 65_536,
            tcp_max_connections: 1024,
            tcp_idle_timeout: Duration::from_secs(600),
            receive_batch: 64,
            receive_coalesce: Duration::from_millis(100),
            event_flush_interval: Duration::from_secs(2),
            event_flush_threshold: 10_000,
            read_buffer: DEFAULT_READ_BUFFER,
            udp_readers: 1,
            listen_unixgram: String::new(),
            unixsocket_mode: "755".into(),
            mapping_config: String::new(),
            parse_dogstatsd_tags: true,
            parse_influxdb_tags: true,
            parse_librato_tags: true,
            parse_signalfx_tags: true,
            default_ttl: Duration::ZERO,
            cache_size: 100_000,
            cache_type: CacheType::Lru,
            set_window: Duration::from_secs(60),
            relay_address: String::new(),
            relay_packet_length: 1400,
        }
    }
}

/// `[web]`: the HTTP server.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebSettings {
    /// Listen address; `:9102` means every interface, IPv6 and IPv4 (see [`resolve`]).
    /// Default `:9102`.
    pub listen_address: String,
    /// Path of the exposition. Default `/metrics`.
    pub telemetry_path: String,
    /// Serve `POST /-/fault?family=NAME`, which makes that family actor fail. Default off.
    pub enable_fault_injection: bool,
    /// Serve `POST /-/reload`, which reloads the mapping file. Default off.
    pub enable_lifecycle: bool,
    /// Serve the status page at `/` and the JSON API under `/api/v1/` (`status`, `families`,
    /// `rejected`, `unmapped`, `mapping`). Default on.
    pub enable_api: bool,
    /// Serve HTTP on the listening socket systemd passes (socket activation, `LISTEN_FDS`),
    /// as exporter-toolkit's `--web.systemd-socket`; `listen_address` is then not bound.
    /// Default off.
    pub systemd_socket: bool,
    /// Prometheus exporter-toolkit's web configuration file (YAML): TLS, client
    /// certificates, basic auth, extra response headers, rate limit. Empty: plain HTTP, no
    /// authentication. Default empty.
    pub config_file: String,
    /// Connections served at once; past it a new connection is closed unserved (plain HTTP
    /// gets a 503 first) and counted in `tallyd_http_connections_rejected_total`. Default 64.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from the connection's start (or
    /// the TLS handshake's) and, on a kept-alive connection, from the previous response; so it
    /// is also how long an idle connection is kept. A client that is slower is disconnected.
    /// Default `10s`.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time from a request's headers to the last byte of its response, handler included. A
    /// handler that is slower answers 503; a client that reads the response slower is
    /// disconnected. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; a larger one gets 431. At
    /// least 8192. Default 16384.
    pub max_header_bytes: usize,
    /// Keep connections open between requests (HTTP keep-alive), for at most
    /// `header_timeout` of idleness. Default on.
    pub keep_alive: bool,
    /// With basic auth, password checks (bcrypt) running or waiting at once; a request that
    /// would need another answers 503 unchecked, and is counted in
    /// `tallyd_http_password_checks_refused_total`. Remembered passwords need none. Default 4.
    pub max_password_checks: usize,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            listen_address: ":9102".into(),
            telemetry_path: "/metrics".into(),
            enable_fault_injection: false,
            enable_lifecycle: false,
            enable_api: true,
            systemd_socket: false,
            config_file: String::new(),
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_header_bytes: 16_384,
            keep_alive: true,
            max_password_checks: 4,
        }
    }
}

/// `[log]`: logging.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `error`, `warn`, `info` (default), `debug` or `trace`.
    pub level: LogLevel,
    /// `logfmt` (default, human-readable) or `json`.
    pub format: LogFormat,
}

/// What a full mapping cache forgets to make room, as statsd_exporter's `--statsd.cache-type`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CacheType {
    /// The name looked up least recently.
    #[default]
    Lru,
    /// A name picked at random: no bookkeeping on a hit.
    Random,
}

/// Log levels, as statsd_exporter's `--log.level` takes them.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Start-up, shutdown and problems.
    #[default]
    Info,
    /// Also every rejected line (rate-limited).
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The `tracing` filter directive.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Log formats.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event with `key=value` fields.
    #[default]
    Logfmt,
    /// One JSON object per event.
    Json,
}

impl LogFormat {
    /// The name `--log.format` and `log.format` take.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogFormat::Logfmt => "logfmt",
            LogFormat::Json => "json",
        }
    }
}

/// `[observer]`: timers (`ms`), histograms (`h`) and distributions (`d`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ObserverSettings {
    /// `summary` (default, like statsd_exporter) or `histogram`.
    pub observer_type: ObserverType,
    /// Histogram upper bounds, ascending; `+Inf` is implied.
    pub buckets: Vec<f64>,
    /// Summary quantiles.
    pub quantiles: Vec<QuantileSetting>,
    /// A histogram's native buckets grow by at most this factor (statsd_exporter's
    /// `native_histogram_bucket_factor`); 1 or less: no native histogram. Default 1.1.
    pub native_histogram_bucket_factor: f64,
    /// Most native buckets a histogram series keeps; past it their width doubles. 0: no
    /// limit. Default 256.
    pub native_histogram_max_buckets: u32,
}

impl Default for ObserverSettings {
    fn default() -> Self {
        ObserverSettings {
            observer_type: ObserverType::Summary,
            buckets: vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
            quantiles: [(0.5, 0.05), (0.9, 0.01), (0.99, 0.001)]
                .map(|(quantile, error)| QuantileSetting { quantile, error })
                .to_vec(),
            native_histogram_bucket_factor: 1.1,
            native_histogram_max_buckets: 256,
        }
    }
}

/// How observers are exposed.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ObserverType {
    /// A Prometheus summary with quantiles.
    #[default]
    Summary,
    /// A Prometheus histogram with fixed buckets.
    Histogram,
}

/// One summary quantile. `error` is statsd_exporter's allowed rank error; tallyd's sketch
/// guarantees a 1% relative value error instead and keeps the field for compatibility.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuantileSetting {
    /// The quantile, in (0, 1).
    pub quantile: f64,
    /// Allowed error, in (0, 1).
    pub error: f64,
}

/// `[actors]`: the family actors.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ActorSettings {
    /// Longest time from a family applying an update to publishing it when no scrape asks
    /// first (a scrape has every family with something new publish, see [`crate::barrier`]),
    /// for a family that renders in under a twentieth of it; a family of many series waits
    /// twenty times its last render time instead, so rendering never takes over between
    /// scrapes (each scrape has every family with something new render once). Expired series
    /// are published at once, within the same render budget, and so is a set's count as it
    /// falls, at most once a second. Default `15s`: with the scrape barrier it only bounds how
    /// stale a scrape can be when the barrier times out, and a family that publishes more
    /// often than it is scraped renders for nothing. At most `60s`.
    #[serde(with = "humantime_serde")]
    pub publish_interval: Duration,
    /// A family with no update for this long, no TTL and no set members still counting,
    /// hibernates: its actor stops and hands its state to the registry, its series stay on
    /// /metrics, and the next update brings the actor back with that state. Live actors thus
    /// follow the active names, not every name ever seen. A family that gets a batch in every
    /// flush window stays live until it misses one, however short this is. `0s` keeps every
    /// actor. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub hibernate_after: Duration,
}

impl Default for ActorSettings {
    fn default() -> Self {
        ActorSettings {
            publish_interval: Duration::from_secs(15),
            hibernate_after: Duration::from_secs(1),
        }
    }
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a bad or unknown field.
    #[error("invalid config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// The parser's message: line, column, field and problem.
        message: String,
    },
    /// A merged value (from the file, the environment or a flag) is of the wrong type.
    #[error("invalid settings: {0}")]
    Merge(#[from] config::ConfigError),
    /// The web configuration file (`web.config_file`) cannot be used.
    #[error(transparent)]
    WebConfig(#[from] crate::webconfig::WebConfigError),
    /// A value parses but makes no sense.
    #[error("invalid value for `{key}` from {source_name}: {message}")]
    Invalid {
        /// The dotted field name.
        key: String,
        /// File and line, environment variable or flag.
        source_name: String,
        /// What is wrong.
        message: String,
    },
}

/// Resolves a listen address: `host:port`, `ip:port`, or `:port` for every interface, IPv6
/// and IPv4 (`[::]:port`, bound dual-stack, as Go binds `:port`).
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let full = match addr.strip_prefix(':') {
        Some(port) => format!("[::]:{port}"),
        None => addr.to_owned(),
    };
    full.to_socket_addrs()
        .map_err(|e| format!("{addr:?} is not a usable address: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

#[cfg(test)]
mod tests;
