//! Real StatsD client libraries that nobody here wrote drive a real tallyd: pystatsd (the
//! `statsd` package), Datadog's DogStatsD client (the `datadog` package) and Node's `hot-shots`.
//! Each test runs one small script from `tests/clients/` against a fresh tallyd and asserts
//! exact values on `/metrics`, then has promtool check the exposition.
//!
//! `tests/run.sh` installs the clients at the versions pinned in `tests/clients/`: the Python
//! ones into `target/test-env/venv`, hot-shots into `tests/clients/node_modules`. A test fails,
//! never skips, when they are missing.

mod common;

use common::{assert_close, promtool_check, Exposition, Tallyd, DEADLINE};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "run `bash tests/run.sh`, which installs the test clients";

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// The interpreter of the venv that `tests/run.sh` creates, with pystatsd and datadog in it.
fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-env/venv/bin/python");
    assert!(
        python.is_file(),
        "no Python test environment at {}: {INSTALL_HINT}",
        python.display()
    );
    python
}

/// `node`, once `tests/run.sh` has installed hot-shots next to the scripts.
fn node() -> PathBuf {
    let package = clients_dir().join("node_modules/hot-shots/package.json");
    assert!(
        package.is_file(),
        "hot-shots is not installed at {}: {INSTALL_HINT}",
        package.display()
    );
    PathBuf::from("node")
}

/// Runs `interpreter tests/clients/<script> <args>` to completion with a clean environment
/// (so no `DD_*` variable of the caller's changes what a client sends) plus `env`, and returns
/// its standard output. Panics, with its output, if it fails or outlives the deadline.
fn run_client(interpreter: &Path, script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = Command::new(interpreter)
        .arg(clients_dir().join(script))
        .args(args)
        .current_dir(clients_dir())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL_HINT}", interpreter.display()));
    let status = common::wait_exit(&mut child, &format!("{script} {args:?}"));
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.success(),
        "{script} {args:?} failed ({status}); if a module is missing, {INSTALL_HINT}\n\
         stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// Host and port of a socket address, as the scripts take them.
fn host_port(addr: std::net::SocketAddr) -> (String, String) {
    (addr.ip().to_string(), addr.port().to_string())
}

fn pystatsd(scenario: &str, addr: std::net::SocketAddr) -> String {
    let (host, port) = host_port(addr);
    run_client(
        &python(),
        "pystatsd_client.py",
        &[scenario, &host, &port],
        &[],
    )
}

fn dogstatsd(scenario: &str, addr: std::net::SocketAddr, env: &[(&str, &str)]) -> String {
    let (host, port) = host_port(addr);
    run_client(
        &python(),
        "dogstatsd_client.py",
        &[scenario, &host, &port],
        env,
    )
}

/// Runs a hot-shots scenario and returns the hot-shots version it loaded.
fn hot_shots(scenario: &str, addr: std::net::SocketAddr) -> String {
    let (host, port) = host_port(addr);
    let out = run_client(
        &node(),
        "hot_shots_client.js",
        &[scenario, &host, &port],
        &[],
    );
    out.lines()
        .find_map(|l| l.strip_prefix("hot-shots "))
        .unwrap_or_else(|| panic!("no version line in the script's output:\n{out}"))
        .trim()
        .to_owned()
}

/// One expected sample: `metric{labels} == value`.
type Want<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Scrapes until every expected sample has its value (each family publishes on its own, so
/// one value arriving says nothing of the others), then returns that scrape. At the deadline,
/// panics naming each sample that differs, with the last scrape.
fn wait_all(t: &Tallyd, wants: &[Want<'_>]) -> Exposition {
    let start = Instant::now();
    loop {
        let e = t.scrape();
        let wrong: Vec<String> = wants
            .iter()
            .filter_map(|&(metric, labels, want)| {
                let got = e.value(metric, labels);
                (got != Some(want)).then(|| format!("{metric}{labels:?}: want {want}, got {got:?}"))
            })
            .collect();
        if wrong.is_empty() {
            return e;
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "timed out; still wrong:\n  {}\nlast scrape:\n{}",
                wrong.join("\n  "),
                e.text
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A timer value as tallyd records it: milliseconds to seconds.
fn ms(millis: f64) -> f64 {
    millis / 1000.0
}

#[test]
fn pystatsd_udp_counters_gauges_timers_sets_and_pipelines() {
    let t = Tallyd::start(&[]);
    pystatsd("udp", t.udp);
    let e = wait_all(
        &t,
        &[
            // incr 1 + incr 4; decr sent "-1|c", which is refused.
            ("app_requests", &[], 5.0),
            ("app_bytes", &[], 1.5),
            // 10, then +3 and -2 (delta=True).
            ("app_pool_size", &[], 11.0),
            // A negative absolute gauge: pystatsd sends "0|g" and "-7|g" in one datagram.
            ("app_temperature", &[], -7.0),
            ("app_db_query_count", &[], 2.0),
            ("app_db_query_sum", &[], ms(12.5) + ms(250.0)),
            ("app_block_count", &[], 1.0),
            // The pipeline: three lines in one datagram.
            ("app_batch_items", &[], 2.0),
            ("app_batch_time_count", &[], 1.0),
            ("app_batch_time_sum", &[], ms(5.0)),
            ("app_batch_size", &[], 3.0),
            (
                "tallyd_lines_rejected_total",
                &[("reason", "negative_counter")],
                1.0,
            ),
            // set() alice, bob, alice: two distinct members.
            ("app_users", &[], 2.0),
        ],
    );
    assert_eq!(e.type_of("app_requests"), Some("counter"));
    assert_eq!(e.type_of("app_users"), Some("gauge"));
    assert_eq!(e.type_of("app_pool_size"), Some("gauge"));
    assert_eq!(e.type_of("app_temperature"), Some("gauge"));
    assert_eq!(e.type_of("app_db_query"), Some("summary"));
    // A single observation reads as itself at every quantile.
    assert_eq!(e.quantile("app_batch_time", &[], 0.99), Some(ms(5.0)));
    // The timer() block took some time, well under the test's deadline.
    let block = e.value("app_block_sum", &[]).unwrap();
    assert!(block > 0.0 && block < 1.0, "app_block_sum = {block}");
    // Exactly what was sent, and nothing else: 15 datagrams, 18 lines, 1 of them refused.
    assert_eq!(
        e.value("tallyd_packets_total", &[("listener", "udp")]),
        Some(15.0)
    );
    assert_eq!(e.value("tallyd_lines_total", &[]), Some(18.0));
    assert_eq!(e.value("tallyd_samples_total", &[]), Some(17.0));
    assert_eq!(e.value("tallyd_metric_families", &[]), Some(10.0));
    for reason in ["malformed_line", "bad_value", "bad_type", "bad_sample_rate"] {
        assert_eq!(e.rejected(reason), 0.0, "{reason}");
    }
    promtool_check(&e.text);
}

#[test]
fn pystatsd_sample_rates_with_a_seeded_random() {
    let t = Tallyd::start(&[]);
    // pystatsd drops each sampled call at random; the script seeds `random` (2025), which sends
    // 11 of 20 increments at @0.5 and 2 of 10 timings at @0.25, and says so.
    let out = pystatsd("sampled", t.udp);
    assert_eq!(out.trim(), "sent hits=11 timings=2", "{out}");
    let e = wait_all(
        &t,
        &[
            // Each "1|c|@0.5" adds 1 / 0.5.
            ("sampled_hits", &[], 11.0 * 2.0),
            // Each "250.000000|ms|@0.25" is counted 1 / 0.25 = 4 times.
            ("sampled_time_count", &[], 2.0 * 4.0),
            ("sampled_time_sum", &[], 2.0 * 4.0 * ms(250.0)),
        ],
    );
    assert_eq!(e.value("tallyd_lines_total", &[]), Some(13.0));
    assert_eq!(e.value("tallyd_metric_families", &[]), Some(2.0));
    assert_eq!(e.rejected("bad_sample_rate"), 0.0);
    promtool_check(&e.text);
}

#[test]
fn pystatsd_tcp_client() {
    let t = Tallyd::start(&[]);
    pystatsd("tcp", t.tcp);
    let e = wait_all(
        &t,
        &[
            // 3, then 2 from the pipeline; the "-1|c" between them is refused.
            ("app_requests", &[], 5.0),
            // 10, -4, +1.
            ("app_pool_size", &[], 7.0),
            ("app_db_query_count", &[], 2.0),
            ("app_db_query_sum", &[], ms(125.0) + ms(375.0)),
            (
                "tallyd_lines_rejected_total",
                &[("reason", "negative_counter")],
                1.0,
            ),
        ],
    );
    // One connection carried everything, each line "\n"-terminated.
    assert_eq!(e.value("tallyd_tcp_connections_total", &[]), Some(1.0));
    assert_eq!(
        e.value("tallyd_tcp_connection_errors_total", &[]),
        Some(0.0)
    );
    assert_eq!(e.value("tallyd_lines_total", &[]), Some(8.0));
    assert_eq!(
        e.value("tallyd_packets_total", &[("listener", "udp")]),
        Some(0.0)
    );
    assert_eq!(e.value("tallyd_metric_families", &[]), Some(3.0));
    assert_eq!(e.rejected("malformed_line"), 0.0);
    promtool_check(&e.text);
}

/// The container id the Datadog clients here send (`|c:4f1c2b9e`), a label as in statsd_exporter.
const CONTAINER: (&str, &str) = ("container_id", "4f1c2b9e");

#[test]
fn datadog_dogstatsd_types_tags_and_extension_fields() {
    let t = Tallyd::start(&[]);
    // The Datadog admission controller sets DD_EXTERNAL_ENV in pods; the client then appends
    // "|e:<it>" to every line. It also sends "|c:<container id>" and "|card:low" here.
    dogstatsd(
        "unbuffered",
        t.udp,
        &[("DD_EXTERNAL_ENV", "it-false,cn-app,pu-1234")],
    );
    let eu: &[(&str, &str)] = &[
        ("region", "eu"),
        ("payment", "card"),
        ("env", "test"),
        CONTAINER,
    ];
    let us: &[(&str, &str)] = &[
        ("region", "us"),
        ("payment", "card"),
        ("env", "test"),
        CONTAINER,
    ];
    let env: &[(&str, &str)] = &[("env", "test"), CONTAINER];
    let api: &[(&str, &str)] = &[("route", "/api"), ("env", "test"), CONTAINER];
    let home: &[(&str, &str)] = &[("page", "home"), ("env", "test"), CONTAINER];
    let db: &[(&str, &str)] = &[("db", "main"), ("env", "test"), CONTAINER];
    let e = wait_all(
        &t,
        &[
            // Tags, then the constant tag, become labels; of the extension fields, the
            // container id does too (`container_id`, as in statsd_exporter 0.30).
            ("shop_checkout_requests", eu, 2.0),
            ("shop_checkout_requests", us, 3.0),
            ("shop_checkout_items", env, 7.0),
            (
                "shop_queue_depth",
                &[("queue", "orders"), ("env", "test"), CONTAINER],
                40.0,
            ),
            // gauge(10) then gauge(-5): DogStatsD means "set to -5", but a leading "-" makes
            // a relative gauge in tallyd, as in statsd_exporter: 10 - 5.
            ("shop_temperature", env, 5.0),
            // gauge_with_timestamp: the "|T…" field is ignored.
            ("shop_backlog", env, 12.0),
            // Histograms and distributions are not scaled; timings are, from ms to seconds.
            ("shop_payload_size_count", api, 2.0),
            ("shop_payload_size_sum", api, 800.0),
            ("shop_render_time_count", home, 2.0),
            ("shop_render_time_sum", home, 4.0),
            ("shop_db_query_count", db, 2.0),
            ("shop_db_query_sum", db, ms(12.5) + ms(250.0)),
            ("shop_job_seconds_count", env, 1.0),
            ("shop_job_millis_count", env, 1.0),
            ("shop_visitors", env, 2.0),
            (
                "tallyd_lines_rejected_total",
                &[("reason", "negative_counter")],
                1.0,
            ),
            // event() and service_check() are counted, not rejected.
            ("tallyd_events_total", &[("type", "event")], 1.0),
            ("tallyd_events_total", &[("type", "service_check")], 1.0),
        ],
    );
    assert_eq!(e.type_of("shop_checkout_requests"), Some("counter"));
    assert_eq!(e.type_of("shop_render_time"), Some("summary"));
    assert_close(e.quantile("shop_payload_size", api, 0.5), 300.0);
    // timed() without use_ms sends a ~0.02 s block as "0.02…|ms", which tallyd reads as
    // milliseconds: 1000 times too small. With use_ms=True it sends whole milliseconds.
    let seconds = e.value("shop_job_seconds_sum", env).unwrap();
    assert!(seconds > 0.0 && seconds < 0.001, "job_seconds = {seconds}");
    let millis = e.value("shop_job_millis_sum", env).unwrap();
    assert!((0.02..1.0).contains(&millis), "job_millis = {millis}");
    // Telemetry is off: 22 calls, 22 datagrams, 22 lines, 11 families, nothing else.
    assert_eq!(
        e.value("tallyd_packets_total", &[("listener", "udp")]),
        Some(22.0)
    );
    assert_eq!(e.value("tallyd_lines_total", &[]), Some(22.0));
    assert_eq!(e.value("tallyd_metric_families", &[]), Some(11.0));
    assert_eq!(e.value("tallyd_tag_errors_total", &[]), Some(0.0));
    for reason in ["malformed_line", "bad_value", "bad_type", "bad_sample_rate"] {
        assert_eq!(e.rejected(reason), 0.0, "{reason}");
    }
    promtool_check(&e.text);
}

#[test]
fn datadog_dogstatsd_buffered_and_aggregated_in_one_datagram() {
    let t = Tallyd::start(&[]);
    dogstatsd("buffered", t.udp, &[]);
    let e = wait_all(
        &t,
        &[
            // Client-side aggregation: three increments become one "3|c".
            ("agg_requests", &[("route", "/")], 3.0),
            ("agg_requests", &[("route", "/cart")], 2.0),
            // The last gauge of the flush interval.
            ("agg_workers", &[], 7.0),
            ("agg_size_count", &[], 2.0),
            ("agg_size_sum", &[], 11.0),
            ("agg_latency_count", &[], 1.0),
            ("agg_latency_sum", &[], 0.5),
        ],
    );
    // Everything went out in one datagram of six lines.
    assert_eq!(
        e.value("tallyd_packets_total", &[("listener", "udp")]),
        Some(1.0)
    );
    assert_eq!(e.value("tallyd_lines_total", &[]), Some(6.0));
    assert_eq!(e.value("tallyd_metric_families", &[]), Some(4.0));
    promtool_check(&e.text);
}

/// DogStatsD lines without tags that carry a `|card:…` or `|e:…` field (a client with a
/// cardinality, or in a pod where DD_EXTERNAL_ENV is set) hold a `:` that is not the legacy
/// `1|c:2|ms` form: the values land and nothing is rejected.
#[test]
fn datadog_dogstatsd_untagged_lines_with_extension_fields() {
    let t = Tallyd::start(&[]);
    dogstatsd(
        "untagged",
        t.udp,
        &[("DD_EXTERNAL_ENV", "it-false,cn-app,pu-1234")],
    );
    let e = wait_all(
        &t,
        &[
            ("plain_requests", &[], 2.0),
            ("plain_depth", &[], 3.0),
            ("plain_latency_count", &[], 1.0),
            ("plain_latency_sum", &[], 0.5),
        ],
    );
    assert_eq!(e.value("tallyd_lines_total", &[]), Some(4.0));
    for reason in ["malformed_line", "bad_value", "bad_type"] {
        assert_eq!(e.rejected(reason), 0.0, "{reason}");
    }
    promtool_check(&e.text);
}

#[test]
fn hot_shots_udp_in_datadog_mode_with_its_telemetry() {
    let t = Tallyd::start(&[]);
    let version = hot_shots("udp", t.udp);
    let api: &[(&str, &str)] = &[("env", "test"), CONTAINER, ("route", "/api")];
    let env: &[(&str, &str)] = &[("env", "test"), CONTAINER];
    let home: &[(&str, &str)] = &[("env", "test"), CONTAINER, ("page", "home")];
    let db: &[(&str, &str)] = &[("env", "test"), CONTAINER, ("db", "main")];
    // On close(), hot-shots sends its own counters of what it sent, tagged with itself.
    let client = |kind: Option<&'static str>| {
        let mut labels = vec![
            ("client", "nodejs"),
            ("client_version", version.as_str()),
            ("client_transport", "udp"),
        ];
        labels.extend(kind.map(|k| ("metrics_type", k)));
        labels
    };
    let by_type: Vec<_> = [
        ("count", 4.0),
        ("gauge", 3.0),
        ("timing", 2.0),
        ("histogram", 1.0),
        ("distribution", 2.0),
        ("set", 3.0),
    ]
    .into_iter()
    .map(|(kind, n)| (client(Some(kind)), n))
    .collect();
    let all = client(None);
    let mut wants: Vec<Want<'_>> = vec![
        // 1 (array tags) + 2 (object tags); the decrement "-1|c" is refused.
        ("web_requests", api, 3.0),
        (
            "web_requests",
            &[("env", "test"), CONTAINER, ("route", "/home")],
            1.0,
        ),
        // 1024, +100, -24.
        ("web_heap_used", env, 1100.0),
        ("web_db_query_count", db, 2.0),
        ("web_db_query_sum", db, ms(12.5) + ms(250.0)),
        ("web_payload_size_count", api, 1.0),
        ("web_payload_size_sum", api, 300.0),
        ("web_render_time_count", home, 2.0),
        ("web_render_time_sum", home, 6.0),
        // set() alice, unique() bob, set() alice.
        ("web_users", env, 2.0),
        (
            "tallyd_lines_rejected_total",
            &[("reason", "negative_counter")],
            1.0,
        ),
        ("tallyd_events_total", &[("type", "event")], 1.0),
        ("tallyd_events_total", &[("type", "service_check")], 1.0),
        // The telemetry counts every call, the refused one too.
        ("datadog_dogstatsd_client_metrics", &all, 15.0),
        ("datadog_dogstatsd_client_events", &all, 1.0),
        ("datadog_dogstatsd_client_service_checks", &all, 1.0),
    ];
    wants.extend(
        by_type
            .iter()
            .map(|(labels, n)| ("datadog_dogstatsd_client_metrics_by_type", &labels[..], *n)),
    );
    let e = wait_all(&t, &wants);
    assert_eq!(e.type_of("web_requests"), Some("counter"));
    assert_eq!(
        e.type_of("datadog_dogstatsd_client_metrics"),
        Some("counter")
    );
    assert_eq!(e.quantile("web_payload_size", api, 0.5), Some(300.0));
    // The "|c:…" and "|card:low" fields after the tags are ignored, without a rejection.
    for reason in ["malformed_line", "bad_value", "bad_type", "bad_sample_rate"] {
        assert_eq!(e.rejected(reason), 0.0, "{reason}");
    }
    assert_eq!(e.value("tallyd_tag_errors_total", &[]), Some(0.0));
    promtool_check(&e.text);
}

#[test]
fn hot_shots_telegraf_tags() {
    let t = Tallyd::start(&[]);
    hot_shots("telegraf", t.udp);
    let env: &[(&str, &str)] = &[("env", "test")];
    let api: &[(&str, &str)] = &[("env", "test"), ("route", "/api")];
    let db: &[(&str, &str)] = &[("env", "test"), ("db", "main")];
    // "web.requests,env=test,route=/api:1|c": InfluxDB tags become labels.
    let e = wait_all(
        &t,
        &[
            ("web_requests", api, 5.0),
            ("web_heap_used", env, 2048.0),
            ("web_db_query_count", db, 1.0),
            ("web_db_query_sum", db, ms(250.0)),
            ("web_payload_size_count", env, 1.0),
            ("web_payload_size_sum", env, 300.0),
            ("web_users", env, 2.0),
        ],
    );
    assert_eq!(e.value("tallyd_lines_total", &[]), Some(7.0));
    assert_eq!(e.value("tallyd_metric_families", &[]), Some(5.0));
    assert_eq!(e.value("tallyd_tag_errors_total", &[]), Some(0.0));
    assert_eq!(e.rejected("mixed_tagging_styles"), 0.0);
    assert_eq!(e.rejected("malformed_line"), 0.0);
    promtool_check(&e.text);
}

#[test]
fn hot_shots_tcp_buffered() {
    let t = Tallyd::start(&[]);
    hot_shots("tcp", t.tcp);
    let mail: &[(&str, &str)] = &[("queue", "mail")];
    let e = wait_all(
        &t,
        &[
            ("worker_jobs", mail, 6.0),
            ("worker_inflight", &[], 3.0),
            ("worker_job_duration_count", mail, 1.0),
            ("worker_job_duration_sum", mail, ms(125.0)),
            ("worker_job_size_count", &[], 1.0),
            ("worker_job_size_sum", &[], 2048.0),
            ("worker_job_attempts_count", &[], 1.0),
            ("worker_job_attempts_sum", &[], 1.0),
        ],
    );
    assert_eq!(e.value("tallyd_tcp_connections_total", &[]), Some(1.0));
    assert_eq!(
        e.value("tallyd_tcp_connection_errors_total", &[]),
        Some(0.0)
    );
    assert_eq!(e.value("tallyd_lines_total", &[]), Some(6.0));
    assert_eq!(e.value("tallyd_metric_families", &[]), Some(5.0));
    promtool_check(&e.text);
}
