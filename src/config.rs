//! Settings: built-in defaults, then an optional TOML file (`--config.file`), then `TALLYD_…`
//! environment variables, then command-line flags named as statsd_exporter names them, merged
//! with the `config` crate. Every field is documented where it is declared; the commented file
//! `config/tallyd.toml` repeats the defaults and a test keeps the two equal.
//!
//! A bad file, variable or flag fails start-up with a message naming its source (file and line,
//! variable or flag) and the field.

use clap::{Parser, ValueEnum};

use crate::statsd::parse::TagStyles;
use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The UDP receive buffer asked for unless set: 8 MiB, which the kernel doubles, room for the
/// default 100 ms receive pause at 128 MiB/s (see `statsd.receive_coalesce`).
pub const DEFAULT_READ_BUFFER: usize = 8 << 20;

/// Command-line flags. Every flag overrides the file and the environment.
#[derive(Debug, Default, Parser)]
#[command(
    name = "tallyd",
    version,
    about = "StatsD/DogStatsD to Prometheus, one actor per metric family."
)]
pub struct Cli {
    /// TOML settings file (see config/tallyd.toml); without it, built-in defaults apply.
    #[arg(long = "config.file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// UDP address to receive StatsD on ("" disables UDP).
    #[arg(long = "statsd.listen-udp", value_name = "ADDR")]
    pub listen_udp: Option<String>,
    /// TCP address to receive StatsD on, one line per "\n" ("" disables TCP).
    #[arg(long = "statsd.listen-tcp", value_name = "ADDR")]
    pub listen_tcp: Option<String>,
    /// UDP receive buffer size in bytes (SO_RCVBUF; default 8 MiB, capped by net.core.rmem_max unless tallyd has CAP_NET_ADMIN; 0 = system default).
    #[arg(long = "statsd.read-buffer", value_name = "BYTES")]
    pub read_buffer: Option<String>,
    /// Tasks reading the UDP socket in parallel (0 = one per CPU; more than one may reorder datagrams).
    #[arg(long = "statsd.udp-readers", value_name = "N")]
    pub udp_readers: Option<String>,
    /// Longest time a received sample waits at its listener before going to its family (0s = after every receive).
    #[arg(long = "statsd.event-flush-interval", value_name = "DURATION")]
    pub event_flush_interval: Option<String>,
    /// Updates a listener holds, after combining, before it flushes them early.
    #[arg(long = "statsd.event-flush-threshold", value_name = "N")]
    pub event_flush_threshold: Option<String>,
    /// Unix datagram socket path to receive StatsD on ("" disables it).
    #[arg(long = "statsd.listen-unixgram", value_name = "PATH")]
    pub listen_unixgram: Option<String>,
    /// Permissions of the Unix datagram socket, in octal.
    #[arg(long = "statsd.unixsocket-mode", value_name = "MODE")]
    pub unixsocket_mode: Option<String>,
    /// statsd_exporter mapping file (YAML).
    #[arg(long = "statsd.mapping-config", value_name = "FILE")]
    pub mapping_config: Option<String>,
    /// Parse DogStatsD tags (`|#k:v`); `--no-statsd.parse-dogstatsd-tags` turns it off.
    #[arg(long = "statsd.parse-dogstatsd-tags", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub parse_dogstatsd_tags: Option<bool>,
    #[arg(long = "no-statsd.parse-dogstatsd-tags", hide = true)]
    #[doc(hidden)]
    pub no_parse_dogstatsd_tags: bool,
    /// Parse InfluxDB tags (`name,k=v`); `--no-statsd.parse-influxdb-tags` turns it off.
    #[arg(long = "statsd.parse-influxdb-tags", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub parse_influxdb_tags: Option<bool>,
    #[arg(long = "no-statsd.parse-influxdb-tags", hide = true)]
    #[doc(hidden)]
    pub no_parse_influxdb_tags: bool,
    /// Parse Librato tags (`name#k=v`); `--no-statsd.parse-librato-tags` turns it off.
    #[arg(long = "statsd.parse-librato-tags", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub parse_librato_tags: Option<bool>,
    #[arg(long = "no-statsd.parse-librato-tags", hide = true)]
    #[doc(hidden)]
    pub no_parse_librato_tags: bool,
    /// Parse SignalFX tags (`name[k=v]`); `--no-statsd.parse-signalfx-tags` turns it off.
    #[arg(long = "statsd.parse-signalfx-tags", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub parse_signalfx_tags: Option<bool>,
    #[arg(long = "no-statsd.parse-signalfx-tags", hide = true)]
    #[doc(hidden)]
    pub no_parse_signalfx_tags: bool,
    /// Series idle this long leave /metrics (0s = never), unless a mapping sets a ttl.
    #[arg(long = "statsd.default-ttl", value_name = "DURATION")]
    pub default_ttl: Option<String>,
    /// Most series in all families together; new series past it are refused and counted.
    #[arg(long = "limits.max-series", value_name = "N")]
    pub max_series: Option<String>,
    /// Most series in one family.
    #[arg(long = "limits.max-series-per-family", value_name = "N")]
    pub max_series_per_family: Option<String>,
    /// Most families with their own tallyd_metric_* series (the busiest by update rate).
    #[arg(long = "limits.max-family-self-metrics", value_name = "N")]
    pub max_family_self_metrics: Option<String>,
    /// After SIGTERM, keep serving the final values this long (e.g. 10s).
    #[arg(long = "shutdown.grace-period", value_name = "DURATION")]
    pub shutdown_grace_period: Option<String>,
    /// Check the settings and the mapping file, then exit (0 when valid).
    #[arg(long = "check-config")]
    pub check_config: bool,
    /// Address of the HTTP server (/metrics, /-/healthy, /-/ready, /-/reload).
    #[arg(long = "web.listen-address", value_name = "ADDR")]
    pub web_listen_address: Option<String>,
    /// Path of the metrics exposition.
    #[arg(long = "web.telemetry-path", value_name = "PATH")]
    pub web_telemetry_path: Option<String>,
    /// exporter-toolkit web config file (YAML): TLS, basic auth, response headers, rate limit.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<String>,
    /// Enable POST /-/reload, which reloads the mapping file.
    #[arg(long = "web.enable-lifecycle")]
    pub web_enable_lifecycle: bool,
    /// Enable POST /-/fault?family=NAME, which makes a family actor fail (chaos drills).
    #[arg(long = "web.enable-fault-injection")]
    pub web_enable_fault_injection: bool,
    /// Log level.
    #[arg(long = "log.level", value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// Log format.
    #[arg(long = "log.format", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

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
    /// Updates waiting in family actors' mailboxes; a batch that would go past it is dropped
    /// and counted (`tallyd_updates_dropped_total{stage="queue_full"}`). Default 1,000,000.
    pub max_queued_updates: usize,
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
    /// Datagrams read in one go from a ready socket (at most) before the listener looks at
    /// its flush window again. Default 64.
    pub receive_batch: usize,
    /// The pause after a read of the UDP socket that found fewer than `receive_batch`
    /// datagrams, before the next read: a steady stream is then read in batches, at one
    /// wake-up per pause rather than one per datagram, which saves a third of the CPU time at
    /// moderate rates. Scrapes do not wait for it (every listener reads what its socket holds
    /// first), and a full read is followed by another at once. The socket buffer
    /// (`read_buffer`) holds what comes meanwhile; the pause is shortened to what it holds at
    /// 128 MiB/s, what tallyd reads flat out (logged at start-up). Unix datagram readers do not
    /// pause. `0s` reads each datagram as it comes; at most `100ms`. Default `100ms`: at
    /// 100,000 lines a second it takes about a tenth off the CPU time of `50ms`.
    #[serde(with = "humantime_serde")]
    pub receive_coalesce: Duration,
    /// Longest time a sample waits at its listener before it is sent to its family actor.
    /// Meanwhile the listener combines the samples of each series (counter increments summed,
    /// gauge sets and shifts folded) and gathers the rest, then sends each family one message.
    /// A scrape does not wait for it: every listener sends what it holds first (see
    /// [`crate::barrier`]). A family updated in every window stays live across windows (see
    /// [`crate::family::FamilyContext`]). `0s` sends after every receive. Default `2s`: a
    /// thousand families cost 500 messages a second rather than 2,000 at `500ms`.
    #[serde(with = "humantime_serde")]
    pub event_flush_interval: Duration,
    /// Updates a listener holds (after combining) before it flushes early. Default 10,000.
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
    /// Window over which a set (`s`) counts distinct members. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub set_window: Duration,
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
            set_window: Duration::from_secs(60),
        }
    }
}

/// `[web]`: the HTTP server.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebSettings {
    /// Listen address; `:9102` means every IPv4 interface. Default `:9102`.
    pub listen_address: String,
    /// Path of the exposition. Default `/metrics`.
    pub telemetry_path: String,
    /// Serve `POST /-/fault?family=NAME`, which makes that family actor fail. Default off.
    pub enable_fault_injection: bool,
    /// Serve `POST /-/reload`, which reloads the mapping file. Default off.
    pub enable_lifecycle: bool,
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
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            listen_address: ":9102".into(),
            telemetry_path: "/metrics".into(),
            enable_fault_injection: false,
            enable_lifecycle: false,
            config_file: String::new(),
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_header_bytes: 16_384,
            keep_alive: true,
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

/// Environment variables: `TALLYD_<SECTION>__<FIELD>`, e.g. `TALLYD_STATSD__LISTEN_UDP`.
///
/// Only variables of that shape are read. Others that merely start with `TALLYD_`, such as
/// the `TALLYD_PORT` and `TALLYD_SERVICE_HOST` Kubernetes injects for a Service named
/// `tallyd`, are not settings and must not fail start-up.
fn environment(vars: impl Iterator<Item = (String, String)>) -> Environment {
    let settings = vars
        .filter(|(key, _)| {
            key.strip_prefix("TALLYD_")
                .is_some_and(|rest| rest.contains("__"))
        })
        .collect();
    Environment::with_prefix("TALLYD")
        .prefix_separator("_")
        .separator("__")
        .list_separator(",")
        .with_list_parse_key("observer.buckets")
        .try_parsing(true)
        .source(Some(settings))
}

impl Settings {
    /// Loads defaults, the file named by `--config.file`, the environment, then the flags.
    pub fn load(cli: &Cli) -> Result<Settings, ConfigError> {
        Self::load_from(cli, environment(std::env::vars()))
    }

    fn load_from(cli: &Cli, env: Environment) -> Result<Settings, ConfigError> {
        let mut builder = Config::builder();
        let mut file_text = None;
        if let Some(path) = &cli.config_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            // The `config` crate loses line numbers; check the file alone first so a mistake
            // in it is reported with its line, column and field.
            toml::from_str::<Settings>(&text).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.to_string().trim_end().to_owned(),
            })?;
            builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
            file_text = Some((path.as_path(), text));
        }
        let env_keys: Vec<String> = config::Source::collect(&env)?.into_keys().collect();
        builder = builder.add_source(env);
        let tag_flag = |on: Option<bool>, off: bool| match (on, off) {
            (_, true) | (Some(false), _) => Some("false"),
            (Some(true), false) => Some("true"),
            (None, false) => None,
        };
        let flags: [(&str, Option<&str>); 22] = [
            ("statsd.default_ttl", cli.default_ttl.as_deref()),
            ("limits.max_series", cli.max_series.as_deref()),
            (
                "limits.max_series_per_family",
                cli.max_series_per_family.as_deref(),
            ),
            (
                "limits.max_family_self_metrics",
                cli.max_family_self_metrics.as_deref(),
            ),
            ("statsd.read_buffer", cli.read_buffer.as_deref()),
            ("statsd.udp_readers", cli.udp_readers.as_deref()),
            (
                "statsd.event_flush_interval",
                cli.event_flush_interval.as_deref(),
            ),
            (
                "statsd.event_flush_threshold",
                cli.event_flush_threshold.as_deref(),
            ),
            (
                "shutdown.grace_period",
                cli.shutdown_grace_period.as_deref(),
            ),
            ("statsd.listen_udp", cli.listen_udp.as_deref()),
            ("statsd.listen_tcp", cli.listen_tcp.as_deref()),
            ("statsd.listen_unixgram", cli.listen_unixgram.as_deref()),
            ("statsd.unixsocket_mode", cli.unixsocket_mode.as_deref()),
            ("statsd.mapping_config", cli.mapping_config.as_deref()),
            (
                "statsd.parse_dogstatsd_tags",
                tag_flag(cli.parse_dogstatsd_tags, cli.no_parse_dogstatsd_tags),
            ),
            (
                "statsd.parse_influxdb_tags",
                tag_flag(cli.parse_influxdb_tags, cli.no_parse_influxdb_tags),
            ),
            (
                "statsd.parse_librato_tags",
                tag_flag(cli.parse_librato_tags, cli.no_parse_librato_tags),
            ),
            (
                "statsd.parse_signalfx_tags",
                tag_flag(cli.parse_signalfx_tags, cli.no_parse_signalfx_tags),
            ),
            ("web.listen_address", cli.web_listen_address.as_deref()),
            ("web.telemetry_path", cli.web_telemetry_path.as_deref()),
            ("log.level", cli.log_level.map(LogLevel::as_str)),
            (
                "log.format",
                cli.log_format.map(|f| match f {
                    LogFormat::Logfmt => "logfmt",
                    LogFormat::Json => "json",
                }),
            ),
        ];
        let mut flags_given = Vec::new();
        for (key, value) in flags {
            if let Some(value) = value {
                builder = builder.set_override(key, value)?;
                flags_given.push(key);
            }
        }
        if cli.web_enable_lifecycle {
            builder = builder.set_override("web.enable_lifecycle", true)?;
        }
        if cli.web_enable_fault_injection {
            builder = builder.set_override("web.enable_fault_injection", true)?;
        }
        if let Some(file) = &cli.web_config_file {
            builder = builder.set_override("web.config_file", file.as_str())?;
        }
        let merged = builder.build()?;
        let settings: Settings = merged.try_deserialize()?;
        settings
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                source_name: source_of(&flags_given, &env_keys, key, file_text.as_ref()),
                key: key.to_owned(),
                message,
            })?;
        // Read now, so a bad web config file fails start-up (and --check-config) like a bad
        // setting; the daemon reads it again when it starts the HTTP server.
        crate::webconfig::WebConfig::from_setting(&settings.web.config_file)?;
        Ok(settings)
    }

    /// Checks what types cannot: returns the offending key and what is wrong with it.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, addr, may_be_empty) in [
            ("statsd.listen_udp", &self.statsd.listen_udp, true),
            ("statsd.listen_tcp", &self.statsd.listen_tcp, true),
            ("web.listen_address", &self.web.listen_address, false),
        ] {
            if !(may_be_empty && addr.is_empty()) {
                resolve(addr).map_err(|e| (key, e))?;
            }
        }
        if !self.web.telemetry_path.starts_with('/') || self.web.telemetry_path.starts_with("/-/") {
            return Err((
                "web.telemetry_path",
                "must start with / and not with /-/".into(),
            ));
        }
        if self.web.max_connections == 0 {
            return Err(("web.max_connections", "must be at least 1".into()));
        }
        for (key, timeout) in [
            ("web.header_timeout", self.web.header_timeout),
            ("web.request_timeout", self.web.request_timeout),
        ] {
            if timeout < Duration::from_millis(1) {
                return Err((key, "must be at least 1ms".into()));
            }
        }
        if self.web.max_header_bytes < 8192 {
            return Err(("web.max_header_bytes", "must be at least 8192".into()));
        }
        let b = &self.observer.buckets;
        if b.is_empty() || b.iter().any(|v| !v.is_finite()) || b.windows(2).any(|w| w[0] >= w[1]) {
            return Err((
                "observer.buckets",
                "must be finite, strictly ascending and not empty".into(),
            ));
        }
        for q in &self.observer.quantiles {
            if !(q.quantile > 0.0 && q.quantile < 1.0 && q.error > 0.0 && q.error < 1.0) {
                return Err((
                    "observer.quantiles",
                    format!(
                        "quantile {} error {}: both must be in (0, 1)",
                        q.quantile, q.error
                    ),
                ));
            }
        }
        if self.statsd.tcp_max_line_bytes == 0 || self.statsd.receive_batch == 0 {
            let key = if self.statsd.receive_batch == 0 {
                "statsd.receive_batch"
            } else {
                "statsd.tcp_max_line_bytes"
            };
            return Err((key, "must be at least 1".into()));
        }
        let mode = &self.statsd.unixsocket_mode;
        if u32::from_str_radix(mode, 8).map_or(true, |m| m > 0o777) {
            return Err((
                "statsd.unixsocket_mode",
                format!("{mode:?} is not an octal mode like 755"),
            ));
        }
        // The kernel takes an int and doubles it: past 1 GiB a request would wrap.
        if self.statsd.read_buffer > 1 << 30 {
            return Err((
                "statsd.read_buffer",
                "must be at most 1073741824 (1 GiB)".into(),
            ));
        }
        if self.statsd.receive_coalesce > Duration::from_millis(100) {
            return Err(("statsd.receive_coalesce", "must be at most 100ms".into()));
        }
        if self.statsd.event_flush_interval > Duration::from_secs(10) {
            return Err(("statsd.event_flush_interval", "must be at most 10s".into()));
        }
        if self.statsd.event_flush_threshold == 0 {
            return Err(("statsd.event_flush_threshold", "must be at least 1".into()));
        }
        if self.statsd.set_window < Duration::from_millis(4) {
            return Err(("statsd.set_window", "must be at least 4ms".into()));
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_series", l.max_series),
            ("limits.max_series_per_family", l.max_series_per_family),
            ("limits.max_tags_per_line", l.max_tags_per_line),
            ("limits.max_label_bytes", l.max_label_bytes),
            ("limits.max_queued_updates", l.max_queued_updates),
        ] {
            if value == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if !(64..=65_535).contains(&l.max_datagram_bytes) {
            return Err((
                "limits.max_datagram_bytes",
                "must be between 64 and 65535".into(),
            ));
        }
        if self.shutdown.grace_period > Duration::from_secs(600) {
            return Err(("shutdown.grace_period", "must be at most 10m".into()));
        }
        let p = self.actors.publish_interval;
        if p.is_zero() || p > Duration::from_secs(60) {
            return Err((
                "actors.publish_interval",
                "must be more than 0 and at most 60s".into(),
            ));
        }
        Ok(())
    }
}

/// Names where the value of `key` came from, following the precedence flag > environment >
/// file > default: the flag, the variable, or the file and line.
fn source_of(
    flags_given: &[&str],
    env_keys: &[String],
    key: &str,
    file: Option<&(&Path, String)>,
) -> String {
    if flags_given.contains(&key) {
        return format!("flag --{}", key.replace('_', "-"));
    }
    if env_keys.iter().any(|k| k == key) {
        let var = format!("TALLYD_{}", key.replace('.', "__").to_uppercase());
        return format!("environment variable {var}");
    }
    let leaf = key.rsplit('.').next().unwrap_or(key);
    if let Some((path, text)) = file {
        let line = text.lines().position(|l| {
            l.trim_start()
                .strip_prefix(leaf)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
        if let Some(line) = line {
            return format!("{}:{}", path.display(), line + 1);
        }
    }
    "the built-in defaults".into()
}

/// Resolves a listen address: `host:port`, `ip:port`, or `:port` for every IPv4 interface.
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let full = match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_owned(),
    };
    full.to_socket_addrs()
        .map_err(|e| format!("{addr:?} is not a usable address: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

#[cfg(test)]
mod tests;
