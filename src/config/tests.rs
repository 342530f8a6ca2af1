//! The loader against files, variables and flags: precedence, sources named in errors, flag names.

use super::*;

fn load(cli: &Cli, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let vars = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    Settings::load_from(cli, environment(vars))
}

fn write(text: &str) -> (tempfile_path::TempPath, Cli) {
    let path = tempfile_path::TempPath::new(text);
    let cli = Cli {
        config_file: Some(path.0.clone()),
        ..Cli::default()
    };
    (path, cli)
}

/// A file removed when dropped; enough for these tests without another dependency.
mod tempfile_path {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    pub(super) struct TempPath(pub(super) PathBuf);

    impl TempPath {
        pub(super) fn new(text: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "tallyd-config-{}-{}.toml",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, text).unwrap();
            TempPath(path)
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn shipped_file_equals_the_defaults() {
    let cli = Cli {
        config_file: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tallyd.toml").into()),
        ..Cli::default()
    };
    assert_eq!(load(&cli, &[]).unwrap(), Settings::default());
}

#[test]
fn defaults_are_statsd_exporters_ports() {
    let s = load(&Cli::default(), &[]).unwrap();
    assert_eq!(s.statsd.listen_udp, "127.0.0.1:9125");
    assert_eq!(s.statsd.listen_tcp, "127.0.0.1:9125");
    assert_eq!(s.web.listen_address, ":9102");
    assert_eq!(s.web.telemetry_path, "/metrics");
}

#[test]
fn flags_beat_environment_beats_file() {
    let (_f, mut cli) = write("[statsd]\nlisten_udp = \"127.0.0.1:1\"\nlisten_tcp = \"127.0.0.1:2\"\n[web]\ntelemetry_path = \"/file\"\n");
    cli.listen_udp = Some("127.0.0.1:3".into());
    let s = load(
        &cli,
        &[
            ("TALLYD_STATSD__LISTEN_UDP", "127.0.0.1:4"),
            ("TALLYD_STATSD__LISTEN_TCP", "127.0.0.1:5"),
            ("TALLYD_OBSERVER__BUCKETS", "0.1,1,10"),
        ],
    )
    .unwrap();
    assert_eq!(s.statsd.listen_udp, "127.0.0.1:3");
    assert_eq!(s.statsd.listen_tcp, "127.0.0.1:5");
    assert_eq!(s.web.telemetry_path, "/file");
    assert_eq!(s.observer.buckets, [0.1, 1.0, 10.0]);
}

#[test]
fn other_tallyd_variables_are_not_settings() {
    // What Kubernetes injects for a Service named "tallyd".
    let vars = [
        ("TALLYD_PORT", "tcp://10.0.0.1:9102"),
        ("TALLYD_SERVICE_HOST", "10.0.0.1"),
    ];
    assert_eq!(load(&Cli::default(), &vars).unwrap(), Settings::default());
    let typo = load(&Cli::default(), &[("TALLYD_STATSD__LISTEN_UPD", "x")]).unwrap_err();
    assert!(typo.to_string().contains("listen_upd"), "{typo}");
}

#[test]
fn file_errors_name_file_line_and_field() {
    let (f, cli) = write("[statsd]\nlisten_udp = \"127.0.0.1:9125\"\nreceive_batch = \"many\"\n");
    let msg = load(&cli, &[]).unwrap_err().to_string();
    assert!(msg.contains(&f.0.display().to_string()), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
    assert!(msg.contains("receive_batch"), "{msg}");

    let (_f, cli) = write("[statsd]\nlisten_upd = \"x\"\n");
    let msg = load(&cli, &[]).unwrap_err().to_string();
    assert!(
        msg.contains("unknown field `listen_upd`") && msg.contains("line 2"),
        "{msg}"
    );
}

#[test]
fn semantic_errors_name_their_source() {
    let (f, cli) = write("[observer]\nobserver_type = \"histogram\"\nbuckets = [1.0, 0.5]\n");
    let msg = load(&cli, &[]).unwrap_err().to_string();
    assert!(msg.contains("observer.buckets"), "{msg}");
    assert!(msg.contains(&format!("{}:3", f.0.display())), "{msg}");

    let msg = load(
        &Cli::default(),
        &[("TALLYD_WEB__TELEMETRY_PATH", "metrics")],
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("web.telemetry_path") && msg.contains("TALLYD_WEB__TELEMETRY_PATH"),
        "{msg}"
    );

    // Durations past their bounds: named with their file and line.
    for (file, key, bound) in [
        (
            "[statsd]\nreceive_coalesce = \"1s\"\n",
            "statsd.receive_coalesce",
            "at most 100ms",
        ),
        (
            "[actors]\npublish_interval = \"61s\"\n",
            "actors.publish_interval",
            "at most 60s",
        ),
        (
            "[statsd]\nread_buffer = 1073741825\n",
            "statsd.read_buffer",
            "at most 1073741824",
        ),
    ] {
        let (f, cli) = write(file);
        let msg = load(&cli, &[]).unwrap_err().to_string();
        assert!(msg.contains(key) && msg.contains(bound), "{msg}");
        assert!(msg.contains(&format!("{}:2", f.0.display())), "{msg}");
    }

    let cli = Cli {
        event_flush_threshold: Some("0".into()),
        ..Cli::default()
    };
    let msg = load(&cli, &[]).unwrap_err().to_string();
    assert!(
        msg.contains("statsd.event_flush_threshold")
            && msg.contains("--statsd.event-flush-threshold"),
        "{msg}"
    );

    // A value of the wrong type, from a flag or a variable: named with where it came from.
    let cli = Cli {
        default_ttl: Some("5".into()),
        ..Cli::default()
    };
    let msg = load(&cli, &[]).unwrap_err().to_string();
    assert!(
        msg.contains("statsd.default_ttl")
            && msg.contains("flag --statsd.default-ttl")
            && msg.contains("expected a duration"),
        "{msg}"
    );
    let msg = load(&Cli::default(), &[("TALLYD_STATSD__DEFAULT_TTL", "5")])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("statsd.default_ttl")
            && msg.contains("environment variable TALLYD_STATSD__DEFAULT_TTL"),
        "{msg}"
    );

    let cli = Cli {
        listen_udp: Some("not an address".into()),
        ..Cli::default()
    };
    let msg = load(&cli, &[]).unwrap_err().to_string();
    assert!(
        msg.contains("statsd.listen_udp") && msg.contains("--statsd.listen-udp"),
        "{msg}"
    );
}

#[test]
fn statsd_exporter_flag_names_parse() {
    let cli = Cli::try_parse_from([
        "tallyd",
        "--statsd.listen-udp=127.0.0.1:9000",
        "--statsd.listen-tcp",
        "",
        "--web.listen-address=127.0.0.1:9001",
        "--web.telemetry-path=/m",
        "--log.level=debug",
        "--log.format=json",
        "--statsd.event-flush-interval=200ms",
        "--statsd.event-flush-threshold=1000",
        "--limits.max-family-self-metrics=0",
    ])
    .unwrap();
    let s = load(&cli, &[]).unwrap();
    assert_eq!(s.statsd.event_flush_interval, Duration::from_millis(200));
    assert_eq!(s.statsd.event_flush_threshold, 1000);
    assert_eq!(s.limits.max_family_self_metrics, 0);
    assert_eq!(s.statsd.listen_udp, "127.0.0.1:9000");
    assert_eq!(s.statsd.listen_tcp, "");
    assert_eq!(s.web.listen_address, "127.0.0.1:9001");
    assert_eq!(s.web.telemetry_path, "/m");
    assert_eq!(s.log.level, LogLevel::Debug);
    assert_eq!(s.log.format, LogFormat::Json);
}

#[test]
fn tag_flags_and_their_no_forms() {
    let parse = |args: &[&str]| {
        let cli =
            Cli::try_parse_from(std::iter::once("tallyd").chain(args.iter().copied())).unwrap();
        load(&cli, &[]).unwrap().statsd.tag_styles()
    };
    let all_on = parse(&[]);
    assert!(all_on.dogstatsd && all_on.influxdb && all_on.librato && all_on.signalfx);
    let styles = parse(&[
        "--no-statsd.parse-dogstatsd-tags",
        "--statsd.parse-influxdb-tags=false",
        "--statsd.parse-librato-tags",
        "--no-statsd.parse-librato-tags",
        "--statsd.parse-signalfx-tags",
    ]);
    assert!(!styles.dogstatsd && !styles.influxdb && !styles.librato && styles.signalfx);
    // Of a flag and its `no-` form, the later on the command line wins, whichever it is.
    let styles = parse(&[
        "--statsd.parse-dogstatsd-tags",
        "--no-statsd.parse-dogstatsd-tags",
        "--no-statsd.parse-influxdb-tags",
        "--statsd.parse-influxdb-tags",
    ]);
    assert!(!styles.dogstatsd && styles.influxdb);
    let api = |args: &[&str]| {
        let cli =
            Cli::try_parse_from(std::iter::once("tallyd").chain(args.iter().copied())).unwrap();
        load(&cli, &[]).unwrap().web.enable_api
    };
    assert!(api(&[]));
    assert!(api(&["--no-web.enable-api", "--web.enable-api"]));
    assert!(!api(&["--web.enable-api", "--no-web.enable-api"]));
    let (_f, mut cli) = write("[statsd]\nparse_librato_tags = false\n");
    cli.parse_librato_tags = Some(true);
    cli.web_enable_lifecycle = true;
    let s = load(&cli, &[]).unwrap();
    assert!(s.statsd.parse_librato_tags && s.web.enable_lifecycle);
}
