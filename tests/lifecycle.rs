//! The daemon's life: supervision restarts a failed family while the others keep their
//! values, idle families hibernate and come back with their state, SIGTERM and SIGINT exit 0
//! promptly, bad settings fail start-up naming their source.

mod common;

use common::Tallyd;
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::Duration;

#[test]
fn a_failed_family_is_restarted_and_the_others_keep_running() {
    let t = Tallyd::start(&["--web.enable-fault-injection"]);
    t.send_udp(b"steady:5|c\nfragile:3|c\nlevel:9|g");
    t.wait_value("tallyd_metric_families", &[], 3.0);
    assert_eq!(t.post("/-/fault?family=fragile"), 200);
    // The failed family's state is gone with it (the restart count and the exposition are
    // read apart, so wait for both); its siblings are untouched.
    let e = t.wait_for("the restart counted and the family's series gone", |e| {
        e.value("tallyd_family_restarts_total", &[]) == Some(1.0) && e.type_of("fragile").is_none()
    });
    assert_eq!(e.value("steady", &[]), Some(5.0));
    assert_eq!(e.value("level", &[]), Some(9.0));
    assert_eq!(
        e.value("tallyd_metric_actors", &[]),
        Some(3.0),
        "restarted, not removed"
    );
    // The restarted family takes new updates; listeners find it again through the registry.
    t.send_udp(b"fragile:2|c\nsteady:1|c");
    let e = t.wait_value("fragile", &[], 2.0);
    t.wait_value("steady", &[], 6.0);
    assert_eq!(e.sum("tallyd_updates_dropped_total"), 0.0);
    assert!(t
        .logs()
        .iter()
        .any(|l| l.contains("family actor failed") && l.contains("fragile")));
    assert_eq!(t.post("/-/fault?family=unknown"), 404);
}

#[test]
fn idle_families_hibernate_and_wake_with_their_state() {
    let t = Tallyd::start_with_env(
        &["--statsd.default-ttl=0s"],
        &[("TALLYD_ACTORS__HIBERNATE_AFTER", "100ms")],
    );
    t.send_udp(b"jobs:1|c|#q:a\njobs:2|c|#q:b\nlevel:7|g\nlat:100|ms\nlat:300|ms");
    let e = t.wait_for("three hibernating families and no actor", |e| {
        e.value("tallyd_metric_families_hibernating", &[]) == Some(3.0)
            && e.value("tallyd_metric_actors", &[]) == Some(0.0)
    });
    // Every series stays on /metrics while its actor is gone.
    assert_eq!(e.value("jobs", &[("q", "a")]), Some(1.0));
    assert_eq!(e.value("jobs", &[("q", "b")]), Some(2.0));
    assert_eq!(e.value("level", &[]), Some(7.0));
    assert_eq!(e.value("lat_count", &[]), Some(2.0));
    assert_eq!(e.value("tallyd_family_wakeups_total", &[]), Some(0.0));

    // The next update brings the actor back with the state it had.
    t.send_udp(b"jobs:5|c|#q:a\nlevel:+1|g\nlat:200|ms");
    let e = t.wait_value("tallyd_family_wakeups_total", &[], 3.0);
    let e = if e.value("lat_count", &[]) == Some(3.0) {
        e
    } else {
        t.wait_value("lat_count", &[], 3.0)
    };
    assert_eq!(e.value("jobs", &[("q", "a")]), Some(6.0));
    assert_eq!(e.value("jobs", &[("q", "b")]), Some(2.0));
    assert_eq!(e.value("level", &[]), Some(8.0));
    common::assert_close(e.value("lat_sum", &[]), 0.6);
    assert_eq!(
        e.value("tallyd_metric_updates_total", &[("metric", "jobs")]),
        Some(3.0),
        "the family's own counts carry over too"
    );
    assert_eq!(e.value("tallyd_series", &[("type", "counter")]), Some(2.0));
    let e = t.wait_for("hibernating again", |e| {
        e.value("tallyd_metric_families_hibernating", &[]) == Some(3.0)
    });
    assert_eq!(e.value("tallyd_family_restarts_total", &[]), Some(0.0));
    assert_eq!(e.value("tallyd_updates_total", &[]), Some(8.0));
}

#[test]
fn a_family_updated_in_every_flush_window_stays_live_while_a_sporadic_one_hibernates() {
    // Hibernation after 200 ms idle, shorter than the 1 s flush window: `steady` gets a batch
    // of about ten lines in every window, `once` one batch of one line. Every window closes
    // on the clock, under the flush threshold: each family stays live for two windows after
    // its batch.
    let t = Tallyd::start_with_env(
        &["--statsd.event-flush-interval=1s"],
        &[("TALLYD_ACTORS__HIBERNATE_AFTER", "200ms")],
    );
    t.send_udp(b"once:1|c");
    // No scrape meanwhile: one would have the listener send its batches early.
    let lines = 40;
    for _ in 0..lines {
        t.send_udp(b"steady:1|c");
        std::thread::sleep(Duration::from_millis(100));
    }
    let e = t.wait_value("steady", &[], lines as f64);
    // `steady` had a batch in every window: it never hibernated. `once` did, two windows
    // after its batch.
    assert_eq!(e.value("tallyd_family_wakeups_total", &[]), Some(0.0));
    assert_eq!(e.value("tallyd_metric_actors", &[]), Some(1.0));
    assert_eq!(
        e.value("tallyd_metric_families_hibernating", &[]),
        Some(1.0)
    );
    assert_eq!(e.value("once", &[]), Some(1.0));
    // Once it misses a window, it hibernates too. (The registry sets both gauges together,
    // but a scrape may read one before and the other after: wait for both.)
    let e = t.wait_for("both hibernating and no actor live", |e| {
        e.value("tallyd_metric_families_hibernating", &[]) == Some(2.0)
            && e.value("tallyd_metric_actors", &[]) == Some(0.0)
    });
    assert_eq!(e.value("steady", &[]), Some(lines as f64));
}

#[test]
fn families_with_a_ttl_do_not_hibernate() {
    let mapping = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mapping/ttl.yml");
    let t = Tallyd::start_with_env(
        &[&format!("--statsd.mapping-config={mapping}")],
        &[("TALLYD_ACTORS__HIBERNATE_AFTER", "50ms")],
    );
    t.send_udp(b"kept.a:1|c");
    t.wait_value("kept_total", &[], 1.0);
    t.send_udp(b"idle:1|c");
    // `idle` went quiet after `kept_total`: by the time it hibernates, `kept_total` would have
    // hibernated too, were it allowed to.
    // Both gauges, as a scrape may read them either side of the registry's update.
    let e = t.wait_for("`idle` hibernating and one actor live", |e| {
        e.value("tallyd_metric_families_hibernating", &[]) == Some(1.0)
            && e.value("tallyd_metric_actors", &[]) == Some(1.0)
    });
    assert_eq!(e.value("kept_total", &[]), Some(1.0));
    assert_eq!(e.value("idle", &[]), Some(1.0));
}

#[test]
fn sigterm_exits_zero_promptly_after_applying_what_was_received() {
    let mut t = Tallyd::start(&[]);
    t.send_udp(b"before.stop:1|c");
    t.wait_value("before_stop", &[], 1.0);
    for _ in 0..50 {
        t.send_udp(b"late:1|c");
    }
    let (status, took) = t.signal_and_wait(Signal::SIGTERM);
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let logs = t.logs();
    assert!(logs.iter().any(|l| l.contains("shutting down")), "{logs:?}");
    assert!(
        logs.last().is_some_and(|l| l.contains("stopped")),
        "{logs:?}"
    );
}

#[test]
fn the_grace_period_serves_the_final_values() {
    let mut t = Tallyd::start(&["--shutdown.grace-period=3s"]);
    t.send_udp(b"final:1|c");
    t.wait_value("final", &[], 1.0);
    for _ in 0..20 {
        t.send_udp(b"final:1|c");
    }
    let pid = nix::unistd::Pid::from_raw(t.pid() as i32);
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    // During the grace period: not ready, and every datagram sent before the signal is in.
    let start = std::time::Instant::now();
    while t.get("/-/ready").0 != 503 {
        assert!(start.elapsed() < common::DEADLINE, "never became unready");
        std::thread::sleep(Duration::from_millis(10));
    }
    let e = t.wait_value("final", &[], 21.0);
    assert_eq!(e.sum("tallyd_updates_dropped_total"), 0.0);
    let (status, took) = t.signal_and_wait(Signal::SIGTERM);
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn sigint_exits_zero() {
    let mut t = Tallyd::start(&[]);
    let (status, _) = t.signal_and_wait(Signal::SIGINT);
    assert!(status.success(), "{status:?}");
}

fn start_fails(args: &[&str]) -> String {
    let (code, stderr) = common::start_fails(args, &[]);
    assert_eq!(code, Some(2), "start-up must fail: {stderr}");
    stderr
}

#[test]
fn a_bad_config_file_names_file_line_and_field() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bad-type.toml");
    let msg = start_fails(&["--config.file", file]);
    assert!(
        msg.contains(file) && msg.contains("line 4") && msg.contains("receive_batch"),
        "{msg}"
    );
}

#[test]
fn a_bad_flag_names_the_flag() {
    let msg = start_fails(&["--log.level=loud"]);
    assert!(msg.contains("--log.level"), "{msg}");
    let msg = start_fails(&["--web.telemetry-path=metrics"]);
    assert!(
        msg.contains("web.telemetry_path") && msg.contains("--web.telemetry-path"),
        "{msg}"
    );
}

#[test]
fn a_busy_port_fails_start_up_with_its_address() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_tallyd"))
        .args([
            "--statsd.listen-udp=127.0.0.1:0",
            "--statsd.listen-tcp=127.0.0.1:0",
            &format!("--web.listen-address={addr}"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("cannot bind HTTP") && msg.contains(&addr),
        "{msg}"
    );
}

#[test]
fn the_defaults_start_without_a_warning() {
    let logs = Tallyd::start(&[]).logs();
    assert!(!logs.iter().any(|l| l.contains("WARN")), "{logs:#?}");
}

#[test]
fn a_udp_buffer_past_rmem_max_is_taken_with_cap_net_admin_and_capped_without() {
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // CAP_NET_ADMIN is bit 12 of the effective capabilities, which tallyd inherits.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    let net_admin = caps & (1 << 12) != 0;
    let asked = rmem_max + 100_000;
    if asked > 1 << 30 {
        // No request past this cap is a valid setting (at most 1 GiB): nothing to show.
        return;
    }
    let t = Tallyd::start(&[&format!("--statsd.read-buffer={asked}")]);
    let logs = t.logs();
    let (said, got) = if net_admin {
        ("set past net.core.rmem_max", 2 * asked)
    } else {
        ("capped by the kernel", 2 * rmem_max)
    };
    let line = logs
        .iter()
        .find(|l| l.contains(said))
        .unwrap_or_else(|| panic!("{said}: {logs:#?}"));
    assert!(line.contains(&format!("got={got}")), "{line}");
    t.send_udp(b"big.buffer:1|c");
    t.wait_value("big_buffer", &[], 1.0);
}

#[test]
fn the_receive_pause_follows_the_traffic_from_what_a_small_udp_buffer_holds() {
    // 100,000 bytes (the kernel doubles it) hold 93 µs of the fastest stream: the pauses
    // start there, and said so; the lines still all land.
    let t = Tallyd::start(&["--statsd.read-buffer=100000"]);
    let logs = t.logs();
    let line = logs
        .iter()
        .find(|l| l.contains("UDP pauses between reads follow the traffic"))
        .unwrap_or_else(|| panic!("{logs:#?}"));
    assert!(line.contains("receive_buffer=200000"), "{line}");
    assert!(line.contains("shortest_pause=93.13"), "{line}");
    for _ in 0..100 {
        t.send_udp(b"small.buffer:1|c");
    }
    t.wait_value("small_buffer", &[], 100.0);
}

#[test]
fn the_api_lists_families_busiest_or_largest_first_live_or_hibernating() {
    let t = Tallyd::start_with_env(
        &["--statsd.event-flush-interval=0s"],
        &[("TALLYD_ACTORS__HIBERNATE_AFTER", "200ms")],
    );
    // `wide`: 3 series, 3 updates, then quiet: it hibernates. `busy`: 1 series, 10 updates.
    t.send_udp(b"wide:1|c|#k:a\nwide:1|c|#k:b\nwide:1|c|#k:c");
    t.wait_for("wide hibernating", |e| {
        e.value("tallyd_metric_families_hibernating", &[]) == Some(1.0)
    });
    for _ in 0..10 {
        t.send_udp(b"busy:1|ms");
    }
    t.wait_value("busy_count", &[], 10.0);
    let get = |path: &str| -> serde_json::Value {
        let (status, body) = t.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    let by_rate = get("/api/v1/families");
    assert_eq!(by_rate[0]["name"], "busy");
    assert_eq!(
        (
            &by_rate[0]["type"],
            &by_rate[0]["series"],
            &by_rate[0]["updates"],
            &by_rate[0]["state"]
        ),
        (
            &serde_json::json!("summary"),
            &serde_json::json!(1),
            &serde_json::json!(10),
            &serde_json::json!("live")
        )
    );
    assert!(by_rate[0]["rate"].as_f64().unwrap() > by_rate[1]["rate"].as_f64().unwrap());
    let by_series = get("/api/v1/families?sort=series&limit=1");
    assert_eq!(by_series.as_array().unwrap().len(), 1);
    assert_eq!(
        (
            &by_series[0]["name"],
            &by_series[0]["series"],
            &by_series[0]["state"]
        ),
        (
            &serde_json::json!("wide"),
            &serde_json::json!(3),
            &serde_json::json!("hibernating")
        )
    );
    for bad in ["/api/v1/families?sort=size", "/api/v1/families?limit=x"] {
        assert_eq!(t.get(bad).0, 400, "{bad}");
    }
}
