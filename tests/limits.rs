//! Never unbounded, never silent: TTL expiry (series leave /metrics, an empty family's actor
//! retires and comes back on the next update), series limits, tag and label limits, oversized
//! datagrams, and the series gauges going down as well as up.

mod common;

use common::Tallyd;

#[test]
fn idle_series_expire_and_an_empty_family_retires() {
    // A TTL under the 2 s flush window: a line may wait a window at its listener before its
    // family sees it, so a series is kept for its TTL and a window after it was last applied,
    // and one updated steadily never expires between two flushes.
    let t = Tallyd::start(&["--statsd.default-ttl=1s"]);
    t.send_udp(b"ttl.req:1|c|#k:a\nttl.req:1|c|#k:b\nkept.gauge:5|g");
    let e = t.wait_value("tallyd_metric_actors", &[], 2.0);
    assert_eq!(e.value("tallyd_series", &[("type", "counter")]), Some(2.0));
    // Keep one series alive while the others go idle, with no scrape meanwhile (a scrape
    // would have the listener flush), for longer than the TTL and a window.
    let start = std::time::Instant::now();
    let mut sent = 1;
    while start.elapsed() < std::time::Duration::from_secs(4) {
        t.send_udp(b"ttl.req:1|c|#k:a");
        sent += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let e = t.wait_for("k=b and the gauge expired", |e| {
        e.value("ttl_req", &[("k", "b")]).is_none() && e.value("kept_gauge", &[]).is_none()
    });
    // Never expired on the way: not one increment lost to a restart of the series.
    assert_eq!(e.value("ttl_req", &[("k", "a")]), Some(f64::from(sent)));
    assert_eq!(e.value("tallyd_series", &[("type", "gauge")]), Some(0.0));
    // The gauge family had no series left: its actor retired.
    let e = t.wait_value("tallyd_family_retirements_total", &[], 1.0);
    assert_eq!(e.value("tallyd_metric_actors", &[]), Some(1.0));
    assert!(e
        .value("tallyd_series_expired_total", &[])
        .is_some_and(|v| v >= 2.0));
    // An update brings the family back, through the registry, with nothing lost.
    t.send_udp(b"kept.gauge:7|g");
    let e = t.wait_value("kept_gauge", &[], 7.0);
    assert_eq!(e.sum("tallyd_updates_dropped_total"), 0.0);
}

#[test]
fn mapping_ttl_beats_the_default() {
    let dir = std::env::temp_dir().join(format!("tallyd-ttl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mapping.yml");
    std::fs::write(
        &file,
        "mappings:\n  - match: \"short.*\"\n    name: \"short_$1\"\n    ttl: 200ms\n",
    )
    .unwrap();
    let t = Tallyd::start(&[&format!("--statsd.mapping-config={}", file.display())]);
    t.send_udp(b"short.lived:1|c\nlong.lived:1|c");
    t.wait_value("short_lived", &[], 1.0);
    let e = t.wait_for("short_lived expired", |e| {
        e.value("short_lived", &[]).is_none()
    });
    assert_eq!(
        e.value("long_lived", &[]),
        Some(1.0),
        "no default TTL: kept"
    );
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn series_limits_refuse_new_series_and_keep_old_ones() {
    let t = Tallyd::start(&["--limits.max-series=5", "--limits.max-series-per-family=3"]);
    t.send_udp(b"fam.a:1|c|#k:1\nfam.a:1|c|#k:2\nfam.a:1|c|#k:3\nfam.a:1|c|#k:4\nfam.b:1|c|#k:1");
    let e = t.wait_value(
        "tallyd_series_refused_total",
        &[("limit", "max_series_per_family")],
        1.0,
    );
    assert_eq!(e.value("fam_a", &[("k", "4")]), None);
    t.wait_value("fam_b", &[("k", "1")], 1.0);
    t.send_udp(b"fam.b:1|c|#k:2\nfam.b:1|c|#k:3\nfam.a:5|c|#k:1");
    t.wait_value(
        "tallyd_series_refused_total",
        &[("limit", "max_series")],
        1.0,
    );
    // Existing series keep updating.
    t.wait_value("fam_a", &[("k", "1")], 6.0);
    let e = t.wait_value("fam_b", &[("k", "2")], 1.0);
    assert_eq!(e.value("fam_b", &[("k", "3")]), None);
    assert_eq!(e.value("tallyd_series", &[("type", "counter")]), Some(5.0));
}

#[test]
fn tag_label_and_datagram_limits() {
    let t = Tallyd::start_with_env(
        &[],
        &[
            ("TALLYD_LIMITS__MAX_TAGS_PER_LINE", "2"),
            ("TALLYD_LIMITS__MAX_LABEL_BYTES", "8"),
            ("TALLYD_LIMITS__MAX_DATAGRAM_BYTES", "100"),
        ],
    );
    t.send_udp(b"many:1|c|#a:1,b:2,c:3\nlong:1|c|#k:123456789\nok:1|c|#a:1,b:2");
    t.send_udp(format!("big:1|c|#pad:{}", "x".repeat(120)).as_bytes());
    t.send_udp(b"after:1|c");
    let e = t.wait_value("after", &[], 1.0);
    assert_eq!(e.value("ok", &[("a", "1"), ("b", "2")]), Some(1.0));
    assert_eq!(e.rejected("too_many_tags"), 1.0);
    assert_eq!(e.rejected("label_too_long"), 1.0);
    assert_eq!(e.rejected("datagram_too_large"), 1.0);
    assert_eq!(
        e.value("tallyd_packets_total", &[("listener", "udp")]),
        Some(3.0)
    );
}

#[test]
fn a_full_queue_drops_and_counts_whole_batches() {
    let t = Tallyd::start_with_env(&[], &[("TALLYD_LIMITS__MAX_QUEUED_UPDATES", "3")]);
    // Four series: four updates (samples of one series would combine into one).
    t.send_udp(b"big:1|c|#s:1\nbig:1|c|#s:2\nbig:1|c|#s:3\nbig:1|c|#s:4\nbig:1|c|#s:4");
    // Counted in samples.
    t.wait_value(
        "tallyd_updates_dropped_total",
        &[("stage", "queue_full")],
        5.0,
    );
    t.send_udp(b"small:1|c\nsmall:1|c");
    let e = t.wait_value("small", &[], 2.0);
    assert_eq!(
        e.type_of("big"),
        None,
        "no series of the dropped batch exists"
    );
    assert_eq!(
        e.value(
            "tallyd_updates_dropped_total",
            &[("stage", "undeliverable")]
        ),
        Some(0.0)
    );
}

#[test]
fn a_new_family_whose_first_batch_is_dropped_gives_its_series_back() {
    // Room for one queued update: the first batch of `lost`, two updates, is dropped
    // (queue_full) after the registry took a series for the family. With no TTL, the empty
    // family gives that series back: without hibernation (0s) and when its idle check comes
    // later than the 1 s grace (30s), at its grace timer; at 200ms, with no grace timer, at
    // its idle check, after which the registry lets it go (it keeps no empty family) rather
    // than keep it hibernating.
    for hibernate_after in ["0s", "200ms", "30s"] {
        let t = Tallyd::start_with_env(
            &["--limits.max-series=2"],
            &[
                ("TALLYD_LIMITS__MAX_QUEUED_UPDATES", "1"),
                ("TALLYD_ACTORS__HIBERNATE_AFTER", hibernate_after),
            ],
        );
        t.send_udp(b"lost:1|c|#k:a\nlost:1|c|#k:b");
        t.wait_value(
            "tallyd_updates_dropped_total",
            &[("stage", "queue_full")],
            2.0,
        );
        let e = t.wait_value("tallyd_family_retirements_total", &[], 1.0);
        assert_eq!(
            e.value("tallyd_metric_families_hibernating", &[]),
            Some(0.0),
            "{hibernate_after}"
        );
        // Both series of the budget are free again: two new families get one each.
        t.send_udp(b"kept.one:1|c");
        t.wait_value("kept_one", &[], 1.0);
        t.send_udp(b"kept.two:1|c");
        let e = t.wait_value("kept_two", &[], 1.0);
        let refused = e.value("tallyd_series_refused_total", &[("limit", "max_series")]);
        assert_eq!(refused, Some(0.0), "{hibernate_after}");
        let counters = e.value("tallyd_series", &[("type", "counter")]);
        assert_eq!(counters, Some(2.0), "{hibernate_after}");
        assert_eq!(e.value("lost", &[("k", "a")]), None, "{hibernate_after}");
    }
}

/// Sends `line(i)` for each `i` below `names`, the lines of 50 to a datagram.
fn send_in_fifties(t: &Tallyd, names: u32, line: impl Fn(u32) -> String) {
    for chunk in (0..names).collect::<Vec<_>>().chunks(50) {
        let lines: Vec<String> = chunk.iter().map(|&i| line(i)).collect();
        t.send_udp(lines.join("\n").as_bytes());
    }
}

#[test]
fn a_burst_of_new_names_is_held_to_the_live_family_limit_and_loses_nothing() {
    // Ten live actors at most, whatever comes: 300 new names in bursts of 50. Past the limit
    // a family whose batch makes it steady (its window closed on the clock) takes the place
    // of the least recently updated one, which hibernates with its series; one whose batch
    // came with a scrape's flush is born hibernating, and updated there in the second round.
    // A woken family may be asked to make room again before its actor has started.
    let t = Tallyd::start(&[
        "--limits.max-live-families=10",
        "--statsd.event-flush-interval=50ms",
    ]);
    let names = 300;
    for round in 1..=2 {
        send_in_fifties(&t, names, |i| {
            format!("burst.n{i}:{round}|c\nburst.g{i}:{i}|g")
        });
        // Every increment reached its series: round one sent 1 each, round two 2 more.
        let want = f64::from(round * (round + 1) / 2);
        let e = t.wait_for("every series of the round", |e| {
            (0..names).all(|i| e.value(&format!("burst_n{i}"), &[]) == Some(want))
        });
        for i in (0..names).step_by(13) {
            assert_eq!(e.value(&format!("burst_g{i}"), &[]), Some(f64::from(i)));
        }
        let actors = e.value("tallyd_metric_actors", &[]).unwrap();
        assert!(actors <= 10.0, "{actors} live actors over the limit of 10");
        assert_eq!(e.value("tallyd_metric_actors_limit", &[]), Some(10.0));
        assert_eq!(e.sum("tallyd_updates_dropped_total"), 0.0);
    }
    let e = t.scrape();
    // Each batch past the first ten either made room for its family's actor or was applied
    // where its family hibernates.
    let evictions = e.value("tallyd_family_evictions_total", &[]).unwrap();
    let in_place = e
        .value("tallyd_family_hibernating_updates_total", &[])
        .unwrap();
    assert!(
        evictions + in_place >= 1150.0,
        "600 families twice through 10 places: {evictions} evictions, {in_place} in place"
    );
    // No family lost its state on the way (a restart starts it empty).
    assert_eq!(e.value("tallyd_family_restarts_total", &[]), Some(0.0));
    assert_eq!(e.value("tallyd_family_lookups_waiting", &[]), Some(0.0));
    assert!(e.value("tallyd_resident_memory_peak_bytes", &[]).unwrap() > 1e6);
    common::promtool_check(&t.scrape_text());
}

#[test]
fn families_that_never_hibernate_by_themselves_still_make_room() {
    // With `hibernate_after` at 0s no family hibernates when idle, but past the limit the
    // least recently updated is still made to (or the new one is born hibernating), and
    // nothing is lost.
    let t = Tallyd::start_with_env(
        &["--limits.max-live-families=5"],
        &[("TALLYD_ACTORS__HIBERNATE_AFTER", "0s")],
    );
    let lines: Vec<String> = (0..20).map(|i| format!("keep.n{i}:{i}|g")).collect();
    t.send_udp(lines.join("\n").as_bytes());
    let e = t.wait_for("all 20 gauges", |e| {
        (0..20).all(|i| e.value(&format!("keep_n{i}"), &[]) == Some(f64::from(i)))
    });
    assert!(e.value("tallyd_metric_actors", &[]).unwrap() <= 5.0);
    let evictions = e.value("tallyd_family_evictions_total", &[]).unwrap();
    let in_place = e
        .value("tallyd_family_hibernating_updates_total", &[])
        .unwrap();
    assert_eq!(evictions + in_place, 15.0);
    assert_eq!(e.sum("tallyd_updates_dropped_total"), 0.0);
}

#[test]
fn past_the_live_limit_a_burst_is_born_hibernating_and_a_steady_family_gets_its_actor() {
    // Ten live actors at most. 2,000 new names come faster than a flush window (each flush
    // closes at the threshold of 100 updates): the first ten get an actor, every other family
    // is born hibernating, its first batch applied there, and no live family is made to
    // hibernate early. The same names twice more within a window and a half: the third
    // batch of each makes its family steady, which has its actor back, in turn.
    let t = Tallyd::start(&[
        "--limits.max-live-families=10",
        "--statsd.event-flush-threshold=100",
    ]);
    let names = 2000;
    let send = |round: u32| send_in_fifties(&t, names, |i| format!("born.n{i}:{round}|c"));
    send(1);
    let e = t.wait_for("every family of the burst", |e| {
        (0..names).all(|i| e.value(&format!("born_n{i}"), &[]) == Some(1.0))
    });
    assert_eq!(e.value("tallyd_family_evictions_total", &[]), Some(0.0));
    assert_eq!(e.value("tallyd_family_wakeups_total", &[]), Some(0.0));
    assert_eq!(
        e.value("tallyd_family_hibernating_updates_total", &[]),
        Some(f64::from(names - 10))
    );
    assert_eq!(e.value("tallyd_metric_actors", &[]), Some(10.0));
    assert_eq!(
        e.value("tallyd_metric_families_hibernating", &[]),
        Some(f64::from(names - 10))
    );
    send(2);
    send(3);
    let e = t.wait_for("every family's three batches", |e| {
        (0..names).all(|i| e.value(&format!("born_n{i}"), &[]) == Some(6.0))
    });
    assert!(e.value("tallyd_family_wakeups_total", &[]).unwrap() > 0.0);
    assert!(e.value("tallyd_family_evictions_total", &[]).unwrap() > 0.0);
    assert!(e.value("tallyd_metric_actors", &[]).unwrap() <= 10.0);
    assert_eq!(e.sum("tallyd_updates_dropped_total"), 0.0);
    assert_eq!(e.value("tallyd_family_restarts_total", &[]), Some(0.0));
    common::promtool_check(&t.scrape_text());
}

#[test]
fn past_the_live_limit_a_large_hibernating_family_gets_its_actor_back() {
    // One live actor at most, no family hibernating by itself, flushes at 10 updates. A
    // family of 100 series is live; a small one is born hibernating, updated there, and on
    // its third batch in step (steady) takes the live place. The large one's next batch,
    // not in step, would be applied where it hibernates were it small: with 100 series it
    // has its actor back instead, so the registry does not render 100 series per batch.
    let t = Tallyd::start_with_env(
        &[
            "--limits.max-live-families=1",
            "--statsd.event-flush-threshold=10",
            "--statsd.event-flush-interval=1s",
        ],
        &[("TALLYD_ACTORS__HIBERNATE_AFTER", "1h")],
    );
    let large: Vec<String> = (0..100).map(|i| format!("large:1|c|#k:v{i}")).collect();
    t.send_udp(large.join("\n").as_bytes());
    t.wait_for("the large family", |e| e.sum("large") == 100.0);
    let small: Vec<String> = (0..10).map(|i| format!("small:1|c|#k:v{i}")).collect();
    for batch in 1..=3 {
        t.send_udp(small.join("\n").as_bytes());
        t.wait_for("the small family's batch", |e| {
            e.sum("small") == f64::from(10 * batch)
        });
    }
    let e = t.scrape();
    assert_eq!(
        e.value("tallyd_family_hibernating_updates_total", &[]),
        Some(2.0)
    );
    assert_eq!(e.value("tallyd_family_wakeups_total", &[]), Some(1.0));
    assert_eq!(e.value("tallyd_family_evictions_total", &[]), Some(1.0));
    // Time has to pass, not a condition to wait for: a batch more than a window and a half
    // (1.5 s) after the family's last is out of step with it.
    std::thread::sleep(std::time::Duration::from_millis(1600));
    t.send_udp(large[..10].join("\n").as_bytes());
    let e = t.wait_for("the large family's second batch", |e| {
        e.sum("large") == 110.0
    });
    assert_eq!(
        e.value("tallyd_family_hibernating_updates_total", &[]),
        Some(2.0)
    );
    assert_eq!(e.value("tallyd_family_wakeups_total", &[]), Some(2.0));
    assert_eq!(e.value("tallyd_family_evictions_total", &[]), Some(2.0));
    assert_eq!(e.value("tallyd_metric_actors", &[]), Some(1.0));
    assert_eq!(e.sum("small"), 30.0);
    assert_eq!(e.sum("tallyd_updates_dropped_total"), 0.0);
}

#[test]
fn past_the_live_limit_families_that_may_not_hibernate_are_refused_and_counted_at_once() {
    // Every family has a TTL, so none may hibernate to make room: past the limit of 5, the
    // others' samples are refused for now and counted, without holding the listener up.
    let t = Tallyd::start(&["--limits.max-live-families=5", "--statsd.default-ttl=1h"]);
    let lines: Vec<String> = (0..20).map(|i| format!("ttl.n{i}:1|c")).collect();
    let sent = std::time::Instant::now();
    t.send_udp(lines.join("\n").as_bytes());
    let e = t.wait_for("15 refused", |e| {
        e.value(
            "tallyd_updates_dropped_total",
            &[("stage", "undeliverable")],
        ) == Some(15.0)
    });
    assert!(
        sent.elapsed() < std::time::Duration::from_secs(4),
        "no 5 s wait"
    );
    assert_eq!(e.value("tallyd_series", &[("type", "counter")]), Some(5.0));
    assert_eq!(e.value("tallyd_metric_actors", &[]), Some(5.0));
    // Later lines of the five that got an actor still land.
    t.send_udp(b"ttl.n0:1|c\nttl.n1:1|c\nttl.n2:1|c\nttl.n3:1|c\nttl.n4:1|c");
    t.wait_for("the five again", |e| e.sum("tallyd_updates_total") == 10.0);
}
