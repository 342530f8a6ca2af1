//! The command-line flags, named as statsd_exporter names them. Each flag that sets a setting
//! names its config key where it is declared (`=> "statsd.listen_udp"`), and
//! [`Cli::overrides`] yields them for the merge.

use clap::Parser;
use std::path::PathBuf;

use super::{LogFormat, LogLevel};

/// Declares [`Cli`] and its [`Cli::overrides`] from one list, so that a flag and the config key
/// it sets are written once, side by side: `field: Type => "key"` overrides `key` with the
/// flag's value when it is given, `field: bool => "key" = "value"` with `value` when the
/// switch is given; a field without `=>` sets nothing by itself.
macro_rules! flags {
    (
        $(#[$attr:meta])*
        pub struct Cli {
            $(
                $(#[$field_attr:meta])*
                pub $field:ident: $ty:ty $(=> $key:literal $(= $when_given:literal)?)?,
            )*
        }
    ) => {
        $(#[$attr])*
        pub struct Cli {
            $(
                $(#[$field_attr])*
                pub $field: $ty,
            )*
        }

        impl Cli {
            /// Each flag that sets a setting, in declaration order (a later one wins): its
            /// config key, its name (`--statsd.relay.address`) and the value given, `None`
            /// when the flag is absent.
            pub(super) fn overrides(&self) -> Vec<(&'static str, String, Option<&str>)> {
                let command = <Cli as clap::CommandFactory>::command();
                let name = |field: &str| {
                    command
                        .get_arguments()
                        .find(|arg| arg.get_id() == field)
                        .and_then(|arg| arg.get_long())
                        .map_or_else(String::new, |long| format!("--{long}"))
                };
                vec![$($(
                    (
                        $key,
                        name(stringify!($field)),
                        flags!(@value self.$field $(, $when_given)?),
                    ),
                )?)*]
            }
        }
    };
    (@value $value:expr) => { FlagValue::given(&$value) };
    (@value $value:expr, $when_given:literal) => { $value.then_some($when_given) };
}

/// A flag's value as the text its config key is overridden with.
trait FlagValue {
    /// `None` when the flag is absent.
    fn given(&self) -> Option<&str>;
}

impl FlagValue for Option<String> {
    fn given(&self) -> Option<&str> {
        self.as_deref()
    }
}

impl FlagValue for Option<bool> {
    fn given(&self) -> Option<&str> {
        self.map(|on| if on { "true" } else { "false" })
    }
}

/// A switch: given means on.
impl FlagValue for bool {
    fn given(&self) -> Option<&str> {
        self.then_some("true")
    }
}

impl FlagValue for Option<LogLevel> {
    fn given(&self) -> Option<&str> {
        self.map(LogLevel::as_str)
    }
}

impl FlagValue for Option<LogFormat> {
    fn given(&self) -> Option<&str> {
        self.map(LogFormat::as_str)
    }
}

flags! {
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
    pub listen_udp: Option<String> => "statsd.listen_udp",
    /// TCP address to receive StatsD on, one line per "\n" ("" disables TCP).
    #[arg(long = "statsd.listen-tcp", value_name = "ADDR")]
    pub listen_tcp: Option<String> => "statsd.listen_tcp",
    /// StatsD TCP connections open at once, at most (one past it is closed as it is accepted).
    #[arg(long = "statsd.tcp-max-connections", value_name = "N")]
    pub tcp_max_connections: Option<String> => "statsd.tcp_max_connections",
    /// Close a StatsD TCP connection that completes no line for this long (0s = never).
    #[arg(long = "statsd.tcp-idle-timeout", value_name = "DURATION")]
    pub tcp_idle_timeout: Option<String> => "statsd.tcp_idle_timeout",
    /// UDP receive buffer size in bytes (SO_RCVBUF; default 8 MiB, capped by net.core.rmem_max unless tallyd has CAP_NET_ADMIN; 0 = system default).
    #[arg(long = "statsd.read-buffer", value_name = "BYTES")]
    pub read_buffer: Option<String> => "statsd.read_buffer",
    /// Tasks reading the UDP socket in parallel (0 = one per CPU; more than one may reorder datagrams).
    #[arg(long = "statsd.udp-readers", value_name = "N")]
    pub udp_readers: Option<String> => "statsd.udp_readers",
    /// Longest time a received sample waits at its listener before going to its family (0s = after every receive).
    #[arg(long = "statsd.event-flush-interval", value_name = "DURATION")]
    pub event_flush_interval: Option<String> => "statsd.event_flush_interval",
    /// Updates a listener holds, after combining, before it flushes them early.
    #[arg(long = "statsd.event-flush-threshold", value_name = "N")]
    pub event_flush_threshold: Option<String> => "statsd.event_flush_threshold",
    /// Unix datagram socket path to receive StatsD on ("" disables it).
    #[arg(long = "statsd.listen-unixgram", value_name = "PATH")]
    pub listen_unixgram: Option<String> => "statsd.listen_unixgram",
    /// Permissions of the Unix datagram socket, in octal.
    #[arg(long = "statsd.unixsocket-mode", value_name = "MODE")]
    pub unixsocket_mode: Option<String> => "statsd.unixsocket_mode",
    /// statsd_exporter mapping file (YAML).
    #[arg(long = "statsd.mapping-config", value_name = "FILE")]
    pub mapping_config: Option<String> => "statsd.mapping_config",
    /// Parse DogStatsD tags (`|#k:v`); `--no-statsd.parse-dogstatsd-tags` turns it off.
    #[arg(long = "statsd.parse-dogstatsd-tags", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", overrides_with = "no_parse_dogstatsd_tags")]
    pub parse_dogstatsd_tags: Option<bool> => "statsd.parse_dogstatsd_tags",
    #[arg(long = "no-statsd.parse-dogstatsd-tags", hide = true, overrides_with = "parse_dogstatsd_tags")]
    #[doc(hidden)]
    pub no_parse_dogstatsd_tags: bool => "statsd.parse_dogstatsd_tags" = "false",
    /// Parse InfluxDB tags (`name,k=v`); `--no-statsd.parse-influxdb-tags` turns it off.
    #[arg(long = "statsd.parse-influxdb-tags", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", overrides_with = "no_parse_influxdb_tags")]
    pub parse_influxdb_tags: Option<bool> => "statsd.parse_influxdb_tags",
    #[arg(long = "no-statsd.parse-influxdb-tags", hide = true, overrides_with = "parse_influxdb_tags")]
    #[doc(hidden)]
    pub no_parse_influxdb_tags: bool => "statsd.parse_influxdb_tags" = "false",
    /// Parse Librato tags (`name#k=v`); `--no-statsd.parse-librato-tags` turns it off.
    #[arg(long = "statsd.parse-librato-tags", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", overrides_with = "no_parse_librato_tags")]
    pub parse_librato_tags: Option<bool> => "statsd.parse_librato_tags",
    #[arg(long = "no-statsd.parse-librato-tags", hide = true, overrides_with = "parse_librato_tags")]
    #[doc(hidden)]
    pub no_parse_librato_tags: bool => "statsd.parse_librato_tags" = "false",
    /// Parse SignalFX tags (`name[k=v]`); `--no-statsd.parse-signalfx-tags` turns it off.
    #[arg(long = "statsd.parse-signalfx-tags", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", overrides_with = "no_parse_signalfx_tags")]
    pub parse_signalfx_tags: Option<bool> => "statsd.parse_signalfx_tags",
    #[arg(long = "no-statsd.parse-signalfx-tags", hide = true, overrides_with = "parse_signalfx_tags")]
    #[doc(hidden)]
    pub no_parse_signalfx_tags: bool => "statsd.parse_signalfx_tags" = "false",
    /// Series idle this long leave /metrics (0s = never), unless a mapping sets a ttl.
    #[arg(long = "statsd.default-ttl", value_name = "DURATION")]
    pub default_ttl: Option<String> => "statsd.default_ttl",
    /// Names each listener task remembers the mapping of (0: none).
    #[arg(long = "statsd.cache-size", value_name = "N")]
    pub cache_size: Option<String> => "statsd.cache_size",
    /// Which name a full mapping cache forgets: lru or random.
    #[arg(long = "statsd.cache-type", value_name = "TYPE")]
    pub cache_type: Option<String> => "statsd.cache_type",
    /// Relay every line read, over UDP, to this host:port ("" disables it).
    #[arg(long = "statsd.relay.address", value_name = "HOST:PORT")]
    pub relay_address: Option<String> => "statsd.relay_address",
    /// Most bytes in a relay packet; a longer line is not relayed.
    #[arg(long = "statsd.relay.packet-length", value_name = "BYTES")]
    pub relay_packet_length: Option<String> => "statsd.relay_packet_length",
    /// Most series in all families together; new series past it are refused and counted.
    #[arg(long = "limits.max-series", value_name = "N")]
    pub max_series: Option<String> => "limits.max_series",
    /// Most series in one family.
    #[arg(long = "limits.max-series-per-family", value_name = "N")]
    pub max_series_per_family: Option<String> => "limits.max_series_per_family",
    /// Most live family actors at once; past it the least recently updated families hibernate early.
    #[arg(long = "limits.max-live-families", value_name = "N")]
    pub max_live_families: Option<String> => "limits.max_live_families",
    /// Most families with their own tallyd_metric_* series (the busiest by update rate).
    #[arg(long = "limits.max-family-self-metrics", value_name = "N")]
    pub max_family_self_metrics: Option<String> => "limits.max_family_self_metrics",
    /// After SIGTERM, keep serving the final values this long (e.g. 10s).
    #[arg(long = "shutdown.grace-period", value_name = "DURATION")]
    pub shutdown_grace_period: Option<String> => "shutdown.grace_period",
    /// Check the settings and the mapping file, then exit (0 when valid).
    #[arg(long = "check-config")]
    pub check_config: bool,
    /// Say how a StatsD name maps (TYPE c, g, ms, h, d or s; c when left out): one JSON
    /// object a line, then exit. Repeatable.
    #[arg(long = "explain", value_name = "NAME[:TYPE]")]
    pub explain: Vec<String>,
    /// Address of the HTTP server (/metrics, /-/healthy, /-/ready, /-/reload).
    #[arg(long = "web.listen-address", value_name = "ADDR")]
    pub web_listen_address: Option<String> => "web.listen_address",
    /// Path of the metrics exposition.
    #[arg(long = "web.telemetry-path", value_name = "PATH")]
    pub web_telemetry_path: Option<String> => "web.telemetry_path",
    /// exporter-toolkit web config file (YAML): TLS, basic auth, response headers, rate limit.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<String> => "web.config_file",
    /// Serve HTTP on the socket systemd passes (socket activation) instead of
    /// --web.listen-address.
    #[arg(long = "web.systemd-socket")]
    pub web_systemd_socket: bool => "web.systemd_socket",
    /// Enable POST /-/reload, which reloads the mapping file.
    #[arg(long = "web.enable-lifecycle")]
    pub web_enable_lifecycle: bool => "web.enable_lifecycle",
    /// Serve the JSON API under /api/v1/ (on by default); `--no-web.enable-api` turns it off.
    #[arg(long = "web.enable-api", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", overrides_with = "no_web_enable_api")]
    pub web_enable_api: Option<bool> => "web.enable_api",
    #[arg(long = "no-web.enable-api", hide = true, overrides_with = "web_enable_api")]
    #[doc(hidden)]
    pub no_web_enable_api: bool => "web.enable_api" = "false",
    /// Enable POST /-/fault?family=NAME, which makes a family actor fail (chaos drills).
    #[arg(long = "web.enable-fault-injection")]
    pub web_enable_fault_injection: bool => "web.enable_fault_injection",
    /// Push every series to this Prometheus remote-write URL at each interval ("" disables it).
    #[arg(long = "remote-write.url", value_name = "URL")]
    pub remote_write_url: Option<String> => "remote_write.url",
    /// Time between two pushes.
    #[arg(long = "remote-write.interval", value_name = "DURATION")]
    pub remote_write_interval: Option<String> => "remote_write.interval",
    /// Time one push request may take.
    #[arg(long = "remote-write.timeout", value_name = "DURATION")]
    pub remote_write_timeout: Option<String> => "remote_write.timeout",
    /// Extra request header, "Name: value" (repeatable).
    #[arg(long = "remote-write.header", value_name = "NAME: VALUE")]
    pub remote_write_headers: Vec<String>,
    /// Label added to every pushed series without one of that name, "name=value" (repeatable).
    #[arg(long = "remote-write.label", value_name = "NAME=VALUE")]
    pub remote_write_labels: Vec<String>,
    /// File holding the bearer token to push with.
    #[arg(long = "remote-write.bearer-token-file", value_name = "FILE")]
    pub remote_write_bearer_token_file: Option<String> => "remote_write.bearer_token_file",
    /// Basic auth user name to push with.
    #[arg(long = "remote-write.basic-auth.username", value_name = "NAME")]
    pub remote_write_basic_auth_username: Option<String> => "remote_write.basic_auth_username",
    /// File holding the basic auth password to push with.
    #[arg(long = "remote-write.basic-auth.password-file", value_name = "FILE")]
    pub remote_write_basic_auth_password_file: Option<String> => "remote_write.basic_auth_password_file",
    /// PEM file of the CAs of the receiver's certificate (default: the system's).
    #[arg(long = "remote-write.tls.ca-file", value_name = "FILE")]
    pub remote_write_tls_ca_file: Option<String> => "remote_write.tls_ca_file",
    /// PEM file of the client certificate to push with.
    #[arg(long = "remote-write.tls.cert-file", value_name = "FILE")]
    pub remote_write_tls_cert_file: Option<String> => "remote_write.tls_cert_file",
    /// PEM file of the client certificate's key.
    #[arg(long = "remote-write.tls.key-file", value_name = "FILE")]
    pub remote_write_tls_key_file: Option<String> => "remote_write.tls_key_file",
    /// Name the receiver's certificate must hold (default: the URL's host).
    #[arg(long = "remote-write.tls.server-name", value_name = "NAME")]
    pub remote_write_tls_server_name: Option<String> => "remote_write.tls_server_name",
    /// Accept any certificate from the receiver (testing only).
    #[arg(long = "remote-write.tls.insecure-skip-verify")]
    pub remote_write_tls_insecure_skip_verify: bool => "remote_write.tls_insecure_skip_verify",
    /// Most samples in one push request.
    #[arg(long = "remote-write.max-samples-per-send", value_name = "N")]
    pub remote_write_max_samples_per_send: Option<String> => "remote_write.max_samples_per_send",
    /// Most bytes of push requests waiting; past it the oldest is dropped and counted.
    #[arg(long = "remote-write.queue-bytes", value_name = "BYTES")]
    pub remote_write_queue_bytes: Option<String> => "remote_write.queue_bytes",
    /// Log level.
    #[arg(long = "log.level", value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel> => "log.level",
    /// Log format.
    #[arg(long = "log.format", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat> => "log.format",
}
}

impl Cli {
    /// The repeatable flags that set a list, as [`Cli::overrides`]: the list's config key, the
    /// flag's name, and every value given (none: the flag is absent).
    pub(super) fn list_overrides(&self) -> [(&'static str, &'static str, &[String]); 2] {
        [
            (
                "remote_write.headers",
                "--remote-write.header",
                &self.remote_write_headers,
            ),
            (
                "remote_write.labels",
                "--remote-write.label",
                &self.remote_write_labels,
            ),
        ]
    }
}
