//! statsd_exporter's mapping file through the real binary: names, labels, help, per-rule
//! observers, drop, match_metric_type, honor_labels, scale; `--check-config`; reloads by SIGHUP
//! and `POST /-/reload`, where a bad file keeps the old rules.

mod common;

use common::{promtool_check, Tallyd, DEADLINE};
use nix::sys::signal::Signal;
use std::process::Command;

const VALID: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mapping/valid.yml");
const INVALID: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/mapping/invalid.yml"
);

fn mapping_flag(path: &str) -> String {
    format!("--statsd.mapping-config={path}")
}

#[test]
fn names_labels_help_and_observers_come_from_the_rules() {
    let t = Tallyd::start(&[&mapping_flag(VALID)]);
    t.send_udp(
        b"web.checkout.cart.get.latency:120|ms\n\
          web.checkout.cart.get.status_200:1|c\n\
          web.checkout.cart.get.status_200:2|c\n\
          jobs.email.done:3|c\n\
          jobs.email.duration:2|h\n\
          db.users.query_time:50|h\n\
          queue.orders.depth:7|g|#env:staging\n\
          app.debug.noise:1|c\n\
          legacy.shop.visits:4|c\n\
          unmatched.name:1|c",
    );
    let e = t.wait_value("tallyd_metric_families", &[], 8.0);
    let web = [
        ("endpoint", "cart"),
        ("method", "get"),
        ("service", "checkout"),
    ];
    assert_eq!(
        e.type_of("http_request_duration_seconds"),
        Some("histogram"),
        "defaults: histogram"
    );
    assert_eq!(
        e.value("http_request_duration_seconds_sum", &web),
        Some(0.12)
    );
    assert_eq!(
        e.bucket("http_request_duration_seconds", &web, 0.5),
        Some(1.0)
    );
    assert!(e.text.contains("# HELP http_request_duration_seconds HTTP request latency by service, endpoint and method."));
    let status = [
        ("code", "200"),
        ("endpoint", "cart"),
        ("method", "get"),
        ("service", "checkout"),
    ];
    assert_eq!(e.value("http_responses_total", &status), Some(3.0));
    assert_eq!(e.value("jobs_done_total", &[("kind", "email")]), Some(3.0));
    assert!(e.text.contains("# HELP jobs_done_total Jobs finished"));
    assert_eq!(
        e.type_of("job_duration_seconds"),
        Some("summary"),
        "a rule's own observer_type"
    );
    assert_eq!(
        e.quantile("job_duration_seconds", &[("kind", "email")], 0.9),
        Some(2.0)
    );
    // scale 0.001 on an unscaled histogram value: 50 -> 0.05, into the rule's own buckets.
    assert_eq!(
        e.value("db_query_seconds_sum", &[("database", "users")]),
        Some(0.05)
    );
    assert_eq!(
        e.bucket("db_query_seconds", &[("database", "users")], 0.1),
        Some(1.0)
    );
    // honor_labels: the tag wins over the rule's env label.
    assert_eq!(
        e.value("queue_depth", &[("env", "staging"), ("queue", "orders")]),
        Some(7.0)
    );
    assert_eq!(
        e.value(
            "legacy_visits",
            &[("app", "shop"), ("original", "legacy.shop.visits")]
        ),
        Some(4.0)
    );
    assert_eq!(e.value("unmatched_name", &[]), Some(1.0));
    assert!(!e.text.contains("noise"), "dropped by action: drop");
    assert_eq!(e.value("tallyd_mapping_loaded", &[]), Some(8.0));
    assert_eq!(e.value("tallyd_mapping_dropped_total", &[]), Some(1.0));
    assert_eq!(e.value("tallyd_mapping_unmapped_total", &[]), Some(1.0));
    assert_eq!(e.value("tallyd_mapping_cache_misses_total", &[]), Some(9.0));
    assert_eq!(e.value("tallyd_mapping_cache_hits_total", &[]), Some(1.0));
    promtool_check(&e.text);
}

#[test]
fn match_metric_type_limits_a_rule() {
    let t = Tallyd::start(&[&mapping_flag(VALID)]);
    // "web.*.*.*.status_*" only maps counters: a gauge of that name is left unmapped.
    t.send_udp(b"web.a.b.c.status_500:3|g");
    let e = t.wait_value("web_a_b_c_status_500", &[], 3.0);
    assert_eq!(e.value("tallyd_mapping_unmapped_total", &[]), Some(1.0));
}

#[test]
fn check_config_validates_and_exits() {
    let ok = Command::new(env!("CARGO_BIN_EXE_tallyd"))
        .args(["--check-config", &mapping_flag(VALID)])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        stdout.contains("mapping file ") && stdout.contains("valid.yml: 8 rules"),
        "{stdout}"
    );
    // Without a mapping file it says so, rather than count no rules.
    let none = Command::new(env!("CARGO_BIN_EXE_tallyd"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(none.status.success(), "{none:?}");
    assert_eq!(
        String::from_utf8_lossy(&none.stdout),
        "tallyd: configuration valid; no mapping file\n"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_tallyd"))
        .args(["--check-config", &mapping_flag(INVALID)])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(
        msg.contains("invalid.yml:12") && msg.contains("mappings[1].observer_typ"),
        "{msg}"
    );
}

fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn sighup_and_post_reload_swap_the_rules_and_a_bad_file_keeps_the_old_ones() {
    let dir = std::env::temp_dir().join(format!("tallyd-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mapping.yml");
    write(
        &file,
        "mappings:\n  - match: \"a.*\"\n    name: \"first_$1\"\n",
    );
    let t = Tallyd::start(&[
        &mapping_flag(file.to_str().unwrap()),
        "--web.enable-lifecycle",
    ]);
    t.send_udp(b"a.x:1|c");
    t.wait_value("first_x", &[], 1.0);

    // SIGHUP with a new file.
    write(&file, "mappings:\n  - match: \"a.*\"\n    name: \"second_$1\"\n  - match: \"b.*\"\n    name: \"bee\"\n");
    let pid = nix::unistd::Pid::from_raw(t.pid() as i32);
    nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
    t.wait_value(
        "tallyd_config_reloads_total",
        &[("outcome", "success")],
        1.0,
    );
    t.send_udp(b"a.x:2|c");
    let e = t.wait_value("second_x", &[], 2.0);
    assert_eq!(e.value("tallyd_mapping_loaded", &[]), Some(2.0));

    // A broken file: refused, counted, the rules in force stay.
    write(&file, "mappings:\n  - match: \"a.*\"\n    nmae: \"oops\"\n");
    assert_eq!(t.post("/-/reload"), 500);
    let start = std::time::Instant::now();
    t.send_udp(b"a.x:3|c");
    let e = t.wait_value("second_x", &[], 5.0);
    assert!(start.elapsed() < DEADLINE);
    assert_eq!(
        e.value("tallyd_config_reloads_total", &[("outcome", "failure")]),
        Some(1.0)
    );
    assert_eq!(e.value("tallyd_mapping_loaded", &[]), Some(2.0));
    assert!(t
        .logs()
        .iter()
        .any(|l| l.contains("reload failed") && l.contains("nmae")));

    // Fixed again, through the HTTP API.
    write(
        &file,
        "mappings:\n  - match: \"a.*\"\n    name: \"third_$1\"\n",
    );
    assert_eq!(t.post("/-/reload"), 200);
    t.send_udp(b"a.x:4|c");
    t.wait_value("third_x", &[], 4.0);
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reload_over_http_needs_the_lifecycle_flag() {
    let t = Tallyd::start(&[]);
    assert_eq!(t.post("/-/reload"), 403);
}

#[test]
fn a_file_with_deprecated_keys_loads_and_warns() {
    let dir = common::SocketDir::new("deprecated-keys");
    let path = dir.path.with_file_name("mapping.yml");
    write(
        &path,
        "mappings:\n- match: api.*.latency\n  name: api_latency\n  timer_type: histogram\n  \
         buckets: [0.1, 1]\n  labels: {endpoint: \"$1\"}\n",
    );
    let check = Command::new(env!("CARGO_BIN_EXE_tallyd"))
        .args(["--check-config", &mapping_flag(path.to_str().unwrap())])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("mapping.yml:5:12: mappings[0].buckets: deprecated"),
        "{stderr}"
    );
    // The rule is a histogram with the file's buckets, as statsd_exporter 0.30 reads it.
    let t = Tallyd::start(&[&mapping_flag(path.to_str().unwrap())]);
    t.send_udp(b"api.cart.latency:500|ms");
    let e = t.wait_value("api_latency_count", &[("endpoint", "cart")], 1.0);
    assert_eq!(
        e.bucket("api_latency", &[("endpoint", "cart")], 1.0),
        Some(1.0)
    );
    assert_eq!(
        e.bucket("api_latency", &[("endpoint", "cart")], 0.1),
        Some(0.0)
    );
    assert!(t
        .logs()
        .iter()
        .any(|l| l.contains("mappings[0].buckets: deprecated")));
}

#[test]
fn the_mapping_cache_holds_statsd_cache_size_names() {
    // Lines of one name with new tags each: the line cache misses, the mapping cache is asked.
    let lines: Vec<String> = (0..5)
        .map(|i| format!("web.a.b.c.status_200:1|c|#try:{i}"))
        .collect();
    for (flags, hits, misses) in [
        (vec![], 4.0, 1.0),
        (vec!["--statsd.cache-size=0"], 0.0, 5.0),
        (
            vec!["--statsd.cache-size=1", "--statsd.cache-type=random"],
            4.0,
            1.0,
        ),
    ] {
        let mut args = vec![mapping_flag(VALID)];
        args.extend(flags.iter().map(|f| f.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let t = Tallyd::start(&args);
        for line in &lines {
            t.send_udp(line.as_bytes());
        }
        let e = t.wait_value("tallyd_samples_total", &[], 5.0);
        assert_eq!(
            (
                e.value("tallyd_mapping_cache_hits_total", &[]),
                e.value("tallyd_mapping_cache_misses_total", &[])
            ),
            (Some(hits), Some(misses)),
            "{flags:?}"
        );
    }
    let (code, stderr) = common::start_fails(&["--statsd.cache-type=fifo"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("statsd.cache_type") && stderr.contains("--statsd.cache-type"),
        "{stderr}"
    );
}

/// `tallyd --explain` with the valid mapping file, for each name: the JSON line of each.
fn explain(names: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![mapping_flag(VALID)];
    args.extend(names.iter().map(|n| format!("--explain={n}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = common::command(&args, &[])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn explain_says_how_each_name_maps_one_json_object_a_line() {
    let lines = explain(&[
        "web.checkout.cart.get.latency:ms",
        "app.debug.noise",
        "unmatched.name:s",
        "tallyd.own",
    ]);
    assert_eq!(
        lines[0],
        serde_json::json!({
            "name": "web.checkout.cart.get.latency", "type": "ms",
            "rule": {"index": 0, "match": "web.*.*.*.latency", "match_type": "glob"},
            "action": "map", "metric": "http_request_duration_seconds",
            "labels": {"endpoint": "cart", "method": "get", "service": "checkout"},
            "metric_type": "histogram", "ttl": "10m",
            "help": "HTTP request latency by service, endpoint and method.", "scale": null,
            "observer": {"type": "histogram", "buckets": [0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
                "native_histogram_bucket_factor": 1.1, "native_histogram_max_buckets": 256}
        })
    );
    assert_eq!(lines[1]["action"], "drop");
    assert_eq!(lines[1]["rule"]["match_type"], "regex");
    assert_eq!(lines[1]["metric"], serde_json::Value::Null);
    assert_eq!(lines[2]["rule"], serde_json::Value::Null);
    assert_eq!(
        (&lines[2]["metric"], &lines[2]["metric_type"]),
        (
            &serde_json::json!("unmatched_name"),
            &serde_json::json!("gauge")
        )
    );
    assert_eq!(lines[3]["refused"], "reserved_name");
    assert_eq!(lines.len(), 4);

    let (code, stderr) = common::start_fails(&["--explain=a:xyz"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--explain") && stderr.contains("\"xyz\""),
        "{stderr}"
    );
}

#[test]
fn the_api_explains_a_name_as_explain_does_and_can_be_turned_off() {
    let t = Tallyd::start(&[&mapping_flag(VALID)]);
    let (status, body) = t.get("/api/v1/mapping?name=web.checkout.cart.get.latency&type=ms");
    assert_eq!(status, 200, "{body}");
    let got: serde_json::Value = serde_json::from_str(&body).unwrap();
    let want = &explain(&["web.checkout.cart.get.latency:ms"])[0];
    assert_eq!(&got, want);
    // Percent-encoded, and a counter when no type is given.
    let (_, body) = t.get("/api/v1/mapping?name=jobs.%65mail.done");
    let got: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&got["metric"], &got["labels"]["kind"], &got["type"]),
        (
            &serde_json::json!("jobs_done_total"),
            &serde_json::json!("email"),
            &serde_json::json!("c")
        )
    );
    for bad in [
        "/api/v1/mapping",
        "/api/v1/mapping?name=a&type=x",
        "/api/v1/mapping?name=a:1",
    ] {
        let (status, body) = t.get(bad);
        assert_eq!(status, 400, "{bad}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(error["error"].is_string(), "{body}");
    }
    let off = Tallyd::start(&[&mapping_flag(VALID), "--no-web.enable-api"]);
    assert_eq!(off.get("/api/v1/mapping?name=a").0, 404);
}
