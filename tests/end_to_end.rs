//! The real binary, real sockets, the real endpoint: every StatsD type with exact values,
//! sample rates, relative gauges, tags, multi-line datagrams, every rejection reason, TCP,
//! type conflicts, the HTTP routes, and promtool's verdict on the exposition.

mod common;

use common::{assert_close, promtool_check, Tallyd};
use std::io::Write;

#[test]
fn every_type_lands_with_exact_values() {
    let t = Tallyd::start(&[]);
    t.send_udp(
        b"checkout.requests:1|c|#region:eu\n\
          checkout.requests:2|c|#region:eu\r\n\
          checkout.requests:1|c|@0.1|#region:us\n\
          \n\
          queue.depth:42|g\n\
          queue.depth:+8|g\n\
          queue.depth:-5|g\n\
          db.query:12.5|ms\n\
          db.query:250|ms|@0.5\n\
          payload.size:300|h\n\
          render.time:1:2:3|d|#page:home\n\
          9lives-total:7|c",
    );
    // All six families came in one datagram; once all six have published, every value is in.
    let e = t.wait_value("tallyd_metric_families", &[], 6.0);
    assert_eq!(e.value("_9lives_total", &[]), Some(7.0));
    assert_eq!(e.value("checkout_requests", &[("region", "eu")]), Some(3.0));
    assert_eq!(
        e.value("checkout_requests", &[("region", "us")]),
        Some(10.0)
    );
    assert_eq!(e.type_of("checkout_requests"), Some("counter"));
    assert_eq!(e.value("queue_depth", &[]), Some(45.0));
    assert_eq!(e.type_of("queue_depth"), Some("gauge"));
    // Timers in seconds; @0.5 counts the observation twice.
    assert_eq!(e.type_of("db_query"), Some("summary"));
    assert_eq!(e.value("db_query_count", &[]), Some(3.0));
    assert_eq!(e.value("db_query_sum", &[]), Some(0.0125 + 2.0 * 0.25));
    assert_close(e.quantile("db_query", &[], 0.99), 0.25);
    // Histograms and distributions are not scaled.
    assert_eq!(e.value("payload_size_sum", &[]), Some(300.0));
    assert_eq!(e.quantile("payload_size", &[], 0.5), Some(300.0));
    assert_eq!(e.value("render_time_count", &[("page", "home")]), Some(3.0));
    assert_eq!(e.value("render_time_sum", &[("page", "home")]), Some(6.0));
    assert_close(e.quantile("render_time", &[("page", "home")], 0.5), 2.0);
    // What the aggregator says about the families.
    assert_eq!(
        e.value("tallyd_lines_total", &[]),
        Some(11.0),
        "the empty line is not a line"
    );
    assert_eq!(e.value("tallyd_samples_total", &[]), Some(13.0));
    assert_eq!(
        e.value(
            "tallyd_metric_updates_total",
            &[("metric", "checkout_requests")]
        ),
        Some(3.0)
    );
    assert_eq!(
        e.value("tallyd_metric_updates_total", &[("metric", "render_time")]),
        Some(3.0)
    );
    assert_eq!(
        e.value("tallyd_metric_series", &[("metric", "checkout_requests")]),
        Some(2.0)
    );
    assert_eq!(
        e.value("tallyd_metric_value", &[("metric", "checkout_requests")]),
        Some(13.0)
    );
    assert_eq!(e.value("tallyd_metric_actors", &[]), Some(6.0));
    assert_eq!(e.value("tallyd_updates_total", &[]), Some(13.0));
    let rate = e
        .value("tallyd_metric_update_rate", &[("metric", "queue_depth")])
        .unwrap();
    assert!(
        rate > 0.0,
        "a family just updated has a positive rate: {rate}"
    );
    assert_eq!(
        e.value("tallyd_packets_total", &[("listener", "udp")]),
        Some(1.0)
    );
    promtool_check(&e.text);
}

#[test]
fn histograms_when_configured() {
    let t = Tallyd::start_with_env(&[], &[("TALLYD_OBSERVER__OBSERVER_TYPE", "histogram")]);
    t.send_udp(b"api.latency:4|ms\napi.latency:30|ms|@0.25\napi.latency:20000|ms");
    let e = t.wait_value("api_latency_count", &[], 6.0);
    assert_eq!(e.type_of("api_latency"), Some("histogram"));
    assert_eq!(
        e.value("api_latency_sum", &[]),
        Some(0.004 + 4.0 * 0.03 + 20.0)
    );
    assert_eq!(e.bucket("api_latency", &[], 0.005), Some(1.0));
    assert_eq!(e.bucket("api_latency", &[], 0.025), Some(1.0));
    assert_eq!(e.bucket("api_latency", &[], 0.05), Some(5.0));
    assert_eq!(e.bucket("api_latency", &[], 10.0), Some(5.0));
    assert_eq!(e.bucket("api_latency", &[], f64::INFINITY), Some(6.0));
    promtool_check(&e.text);
}

#[test]
fn every_rejection_is_counted_and_the_rest_of_the_datagram_lands() {
    let t = Tallyd::start(&[]);
    let mut datagram = Vec::new();
    for line in [
        &b"no_value_at_all"[..],
        b"bad.value:abc|c",
        b"bad.type:1|x",
        b"mixed,k=v:1|c|#x:y",
        b"bad.rate:1|c|@2",
        b"negative:-1|c",
        b"tallyd.lines.total:1|c",
        b"utf8:\xff\xfe|c",
        b"good:5|c|#flag,k:v",
    ] {
        datagram.extend_from_slice(line);
        datagram.push(b'\n');
    }
    t.send_udp(&datagram);
    let e = t.wait_value("good", &[("k", "v")], 5.0);
    for reason in [
        "malformed_line",
        "bad_value",
        "bad_type",
        "mixed_tagging_styles",
        "bad_sample_rate",
        "negative_counter",
        "reserved_name",
        "invalid_utf8",
    ] {
        assert_eq!(e.rejected(reason), 1.0, "{reason}");
    }
    assert_eq!(e.rejected("line_too_long"), 0.0);
    assert_eq!(e.value("tallyd_tag_errors_total", &[]), Some(1.0));
    assert_eq!(e.value("tallyd_lines_total", &[]), Some(9.0));
    // Nothing rejected became a family.
    assert_eq!(e.value("tallyd_metric_families", &[]), Some(1.0));
    assert!(
        t.logs()
            .iter()
            .any(|l| l.contains("rejected StatsD line") && l.contains("bad_sample_rate")),
        "rejections are logged at debug"
    );
    promtool_check(&e.text);
}

#[test]
fn tcp_lines_and_over_long_lines() {
    let t = Tallyd::start(&[
        "--config.file",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/short-tcp-lines.toml"
        ),
    ]);
    // A line split across writes, and a last line without a newline.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(t.tcp).unwrap();
        s.write_all(b"tcp.count:1|c\ntcp.co").unwrap();
        s.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        s.write_all(b"unt:2|c\ntcp.gauge:7|g").unwrap();
    }
    t.wait_value("tcp_gauge", &[], 7.0);
    t.wait_value("tcp_count", &[], 3.0);
    // The limit in that file is 64 bytes: the line before lands, the connection is closed.
    let long = format!("tcp.count:1|c\n{}:1|c\ntcp.after:1|c\n", "x".repeat(100));
    t.send_tcp(long.as_bytes());
    t.wait_value("tallyd_tcp_too_long_lines_total", &[], 1.0);
    let e = t.wait_value("tcp_count", &[], 4.0);
    assert_eq!(e.value("tcp_after", &[]), None);
    assert_eq!(e.rejected("line_too_long"), 1.0);
    assert_eq!(e.value("tallyd_tcp_connections_total", &[]), Some(2.0));
}

#[test]
fn samples_held_in_the_flush_window_land_exactly() {
    // A long window, so that the datagrams below are combined at the edge before their
    // families see them: the values and every count must still be exact.
    let t = Tallyd::start(&["--statsd.event-flush-interval=300ms"]);
    t.send_udp(b"hits:1|c\nlevel:10|g\nlat:100|ms\nhits:2|c|@0.5");
    t.send_udp(b"hits:1|c|#k:v\nlevel:+5|g\nlevel:-1|g\nlat:300|ms\nhits:1|c");
    t.send_udp(b"hits:1|c\nlevel:3|c\nlevel:+1|g");
    let e = t.wait_value("tallyd_updates_total", &[], 11.0);
    assert_eq!(e.value("hits", &[]), Some(7.0));
    assert_eq!(e.value("hits", &[("k", "v")]), Some(1.0));
    assert_eq!(e.value("level", &[]), Some(15.0));
    assert_eq!(e.value("lat_count", &[]), Some(2.0));
    assert_close(e.value("lat_sum", &[]), 0.4);
    assert_eq!(
        e.value("tallyd_metric_updates_total", &[("metric", "hits")]),
        Some(5.0)
    );
    assert_eq!(
        e.value("tallyd_metric_updates_total", &[("metric", "level")]),
        Some(4.0)
    );
    assert_eq!(
        e.value(
            "tallyd_type_conflicts_total",
            &[("metric", "level"), ("type", "counter")]
        ),
        Some(1.0)
    );
    assert_eq!(e.value("tallyd_lines_total", &[]), Some(12.0));
}

#[test]
fn a_scrape_shows_every_line_sent_before_it() {
    // Flush window and publish interval far longer than the test: only the scrape barrier
    // can bring these values in, and one scrape each time, never a poll, must show them.
    let t = Tallyd::start_with_env(
        &["--statsd.event-flush-interval=10s"],
        &[("TALLYD_ACTORS__PUBLISH_INTERVAL", "10s")],
    );
    let mut tcp = std::net::TcpStream::connect(t.tcp).unwrap();
    tcp.write_all(b"via.tcp:1|c\n").unwrap();
    // The connection's task is running from here on.
    t.wait_value("via_tcp", &[], 1.0);
    for i in 1..=20 {
        t.send_udp(format!("via.udp:{i}|g\nhits:1|c\nlat:{i}|ms").as_bytes());
        tcp.write_all(b"via.tcp:1|c\n").unwrap();
        let e = t.scrape();
        let n = f64::from(i);
        assert_eq!(e.value("via_udp", &[]), Some(n), "scrape {i}");
        assert_eq!(e.value("hits", &[]), Some(n), "scrape {i}");
        assert_eq!(e.value("lat_count", &[]), Some(n), "scrape {i}");
        assert_eq!(e.value("via_tcp", &[]), Some(n + 1.0), "scrape {i}");
        assert_eq!(
            e.value("tallyd_scrape_barrier_timeouts_total", &[]),
            Some(0.0)
        );
    }
}

#[test]
fn readers_pausing_between_reads_lose_nothing_and_never_hold_up_a_scrape() {
    // Two readers of one socket, each pausing 100 ms after a read that finds few datagrams;
    // the flush window and publish interval far longer than the test.
    let t = Tallyd::start_with_env(
        &[
            "--statsd.udp-readers=2",
            "--statsd.event-flush-interval=10s",
        ],
        &[
            ("TALLYD_STATSD__RECEIVE_COALESCE", "100ms"),
            ("TALLYD_ACTORS__PUBLISH_INTERVAL", "10s"),
        ],
    );
    // A scrape reads what the sockets hold, paused or not: one scrape each time shows it.
    for i in 1..=10 {
        t.send_udp(format!("paused:{i}|g\nticks:1|c").as_bytes());
        let e = t.scrape();
        assert_eq!(e.value("paused", &[]), Some(f64::from(i)), "scrape {i}");
        assert_eq!(e.value("ticks", &[]), Some(f64::from(i)), "scrape {i}");
    }
    // A burst of many read batches: full reads are followed by more reads at once.
    for _ in 0..2000 {
        t.send_udp(b"burst:1|c\nburst:2|c");
    }
    let e = t.wait_value("burst", &[], 6000.0);
    assert_eq!(
        e.value("tallyd_packets_total", &[("listener", "udp")]),
        Some(2010.0)
    );
    assert_eq!(e.value("tallyd_lines_total", &[]), Some(4020.0));
}

#[test]
fn a_type_conflict_is_refused_and_counted() {
    let t = Tallyd::start(&[]);
    t.send_udp(b"jobs:1|c\njobs:5|g\njobs:3|ms\njobs:2|c");
    let e = t.wait_value("jobs", &[], 3.0);
    assert_eq!(e.type_of("jobs"), Some("counter"));
    assert_eq!(
        e.value(
            "tallyd_type_conflicts_total",
            &[("metric", "jobs"), ("type", "gauge")]
        ),
        Some(1.0)
    );
    assert_eq!(
        e.value(
            "tallyd_type_conflicts_total",
            &[("metric", "jobs"), ("type", "observer")]
        ),
        Some(1.0)
    );
    promtool_check(&e.text);
}

#[test]
fn names_that_collide_across_families_are_refused() {
    let t = Tallyd::start(&[]);
    // A summary `db_query` owns db_query_sum and db_query_count; a counter `jobs_count` owns
    // that name, so a later observer `jobs` cannot exist.
    t.send_udp(b"db.query:5|ms\njobs.count:1|c");
    t.wait_value("tallyd_metric_families", &[], 2.0);
    t.send_udp(b"db.query.count:1|c\ndb.query.sum:2|g\njobs:3|h\nok:1|c");
    let e = t.wait_value("ok", &[], 1.0);
    assert_eq!(e.conflicts("db_query_count", "counter"), Some(1.0));
    assert_eq!(e.conflicts("db_query_sum", "gauge"), Some(1.0));
    assert_eq!(e.conflicts("jobs", "observer"), Some(1.0));
    assert_eq!(
        e.value("db_query_count", &[]),
        Some(1.0),
        "the summary's own count"
    );
    assert_eq!(e.value("jobs_count", &[]), Some(1.0));
    assert_eq!(e.value("tallyd_metric_families", &[]), Some(3.0));
    promtool_check(&e.text);
}

#[test]
fn names_that_collide_with_hibernating_families_are_refused() {
    let t = Tallyd::start_with_env(&[], &[("TALLYD_ACTORS__HIBERNATE_AFTER", "100ms")]);
    t.send_udp(
        b"db.query:5|ms
jobs.count:1|c",
    );
    t.wait_for("both families hibernating", |e| {
        e.value("tallyd_metric_families_hibernating", &[]) == Some(2.0)
    });
    // The owners are asleep: the summary still owns its derived names, the counter its own.
    t.send_udp(
        b"db.query.sum:2|g
jobs:3|h
ok:1|c",
    );
    let e = t.wait_value("ok", &[], 1.0);
    assert_eq!(e.conflicts("db_query_sum", "gauge"), Some(1.0));
    assert_eq!(e.conflicts("jobs", "observer"), Some(1.0));
    assert_eq!(
        e.value("db_query_sum", &[]),
        Some(0.005),
        "the summary's own sum"
    );
    assert_eq!(e.value("jobs_count", &[]), Some(1.0));
    promtool_check(&e.text);
}

#[test]
fn http_routes() {
    let t = Tallyd::start(&[]);
    assert_eq!(t.get("/-/healthy").0, 200);
    assert_eq!(t.get("/-/ready").0, 200);
    let (status, index) = t.get("/");
    assert_eq!(status, 200);
    assert!(index.contains("href=\"/metrics\""), "{index}");
    assert_eq!(t.get("/nope").0, 404);
    assert_eq!(t.post("/metrics"), 405);
    assert_eq!(
        t.post("/-/fault?family=x"),
        403,
        "fault injection is off by default"
    );

    // gzip when accepted (ureq asks for it and decodes it).
    t.send_udp(b"zipped:1|c");
    t.wait_value("zipped", &[], 1.0);
    let mut raw = std::net::TcpStream::connect(t.http).unwrap();
    use std::io::{Read, Write};
    raw.write_all(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut response = Vec::new();
    raw.read_to_end(&mut response).unwrap();
    let head = String::from_utf8_lossy(&response[..response.len().min(400)]).to_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
}

#[test]
fn custom_telemetry_path() {
    let t = Tallyd::start(&["--web.telemetry-path=/stats"]);
    assert_eq!(t.get("/metrics").0, 404);
    let (status, body) = t.get("/stats");
    assert_eq!(status, 200);
    assert!(body.contains("tallyd_lines_total 0"), "{body}");
}

#[test]
fn a_port_alone_listens_on_ipv6_and_ipv4() {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tallyd"));
    command
        .args([
            "--statsd.listen-udp=:0",
            "--statsd.listen-tcp=:0",
            "--web.listen-address=:0",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let t = Tallyd::start_command(command);
    let ipv6 = std::net::UdpSocket::bind("[::1]:0").is_ok();
    // Every address, one socket each: IPv6 taking IPv4 too, or IPv4 alone on a system
    // without IPv6.
    let unspecified: std::net::IpAddr = if ipv6 {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    for addr in [t.udp, t.tcp, t.http] {
        assert_eq!(addr.ip(), unspecified, "{addr}");
    }
    let mut hosts = vec!["127.0.0.1"];
    if ipv6 {
        hosts.push("::1");
    }
    for host in &hosts {
        let ip: std::net::IpAddr = host.parse().unwrap();
        let at = |addr: std::net::SocketAddr| std::net::SocketAddr::new(ip, addr.port());
        let udp = std::net::UdpSocket::bind((ip, 0)).unwrap();
        udp.send_to(format!("dual:1|c|#via:{host}").as_bytes(), at(t.udp))
            .unwrap();
        let mut tcp = std::net::TcpStream::connect(at(t.tcp)).unwrap();
        tcp.write_all(format!("dual_tcp:1|c|#via:{host}\n").as_bytes())
            .unwrap();
        drop(tcp);
        let response = common::get_at(at(t.http), "/-/healthy").unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{host}: {response}");
    }
    let scrape = |host: &str| {
        let at = std::net::SocketAddr::new(host.parse().unwrap(), t.http.port());
        common::get_at(at, "/metrics").unwrap()
    };
    for host in &hosts {
        let want = [
            format!("dual{{via=\"{host}\"}} 1\n"),
            format!("dual_tcp{{via=\"{host}\"}} 1\n"),
        ];
        let deadline = std::time::Instant::now() + common::DEADLINE;
        loop {
            let body = scrape(host);
            if want.iter().all(|w| body.contains(w.as_str())) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{host}: {body}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
