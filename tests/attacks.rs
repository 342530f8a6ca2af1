//! Hostile and broken clients against the real binary: random bytes, invalid UTF-8, a
//! datagram as large as UDP allows, a flood of distinct names past the series limit, a
//! type-conflict storm, TCP clients that connect and never send, slowloris HTTP clients, and a
//! family actor that keeps failing. After each attack, [`aftermath`] shows that good traffic
//! still lands with exact values, that no family actor restarted unless the test made it
//! fail, that nothing panicked, and that memory stayed bounded.

mod common;

use common::{Exposition, Tallyd};
use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Resident memory tallyd may reach during any of these attacks.
const RSS_LIMIT_BYTES: u64 = 200 << 20;

/// The largest UDP payload over IPv4 loopback.
const UDP_MAX: usize = 65_507;

/// A tiny deterministic RNG (xorshift64), so every run throws the same bytes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// tallyd's resident set size, from /proc/<pid>/status.
fn rss_bytes(t: &Tallyd) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

/// The sum of every sample of `metric` in an exposition's text, whatever its labels, or of
/// one series when `metric` has them (`name{label="value"}`); `None` when there is none. A
/// text search: tens of times faster than parsing a large exposition in a debug build.
fn text_value(text: &str, metric: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| l.starts_with(metric)) {
        let rest = &line[metric.len()..];
        let value = if metric.ends_with('}') {
            rest.strip_prefix(' ')
        } else if rest.starts_with('{') {
            rest.rsplit_once("} ").map(|(_, v)| v)
        } else {
            rest.strip_prefix(' ')
        };
        if let Some(v) = value.and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Scrapes (without parsing) until `ready` holds for the text, or panics at the deadline.
fn wait_text(t: &Tallyd, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let (status, text) = t.get("/metrics");
        if status == 200 && ready(&text) {
            return text;
        }
        assert!(
            start.elapsed() < common::DEADLINE,
            "timed out waiting for {what}; last scrape:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends datagrams from one socket, at most `window` ahead of what tallyd has read (or the
/// kernel has dropped), so that a burst does not overflow the socket buffer.
fn send_paced(t: &Tallyd, datagrams: &[Vec<u8>], window: usize) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let seen = |text: &str| {
        text_value(text, r#"tallyd_packets_total{listener="udp"}"#).unwrap_or(0.0)
            + text_value(text, "tallyd_udp_kernel_drops_total").unwrap_or(0.0)
    };
    let before = seen(&t.get("/metrics").1);
    for (i, chunk) in datagrams.chunks(window).enumerate() {
        for datagram in chunk {
            socket.send_to(datagram, t.udp).unwrap();
        }
        let sent = (i * window + chunk.len()) as f64;
        wait_text(t, &format!("{sent} datagrams read"), |text| {
            seen(text) - before >= sent
        });
    }
}

/// What every attack must leave behind: a probe of every basic type lands with exact values,
/// `tallyd_family_restarts_total` is `restarts`, no log line says "panicked" (except the
/// injected faults' own), and the resident set is under [`RSS_LIMIT_BYTES`]. Returns the last
/// scrape.
fn aftermath(t: &Tallyd, probe: &str, restarts: f64) -> Exposition {
    t.send_udp(
        format!(
            "{probe}.count:2|c\n{probe}.count:3|c|@0.5\n{probe}.level:7|g\n{probe}.level:-2|g\n\
             {probe}.took:250|ms\n{probe}.took:750|ms"
        )
        .as_bytes(),
    );
    let count = format!("{probe}_count");
    let e = t.wait_for(&format!("{count} = 8 and {probe}_took_count = 2"), |e| {
        e.value(&count, &[]) == Some(8.0)
            && e.value(&format!("{probe}_took_count"), &[]) == Some(2.0)
    });
    assert_eq!(e.value(&format!("{probe}_level"), &[]), Some(5.0));
    assert_eq!(e.value(&format!("{probe}_took_sum"), &[]), Some(1.0));
    assert_eq!(
        e.value("tallyd_family_restarts_total", &[]),
        Some(restarts),
        "family restarts"
    );
    let logs = t.logs();
    let panics: Vec<_> = logs
        .iter()
        .filter(|l| l.contains("panicked") && !l.contains("fault injected"))
        .collect();
    assert!(panics.is_empty(), "tallyd panicked: {panics:#?}");
    let rss = rss_bytes(t);
    assert!(
        rss < RSS_LIMIT_BYTES,
        "resident set {} MiB over {} MiB",
        rss >> 20,
        RSS_LIMIT_BYTES >> 20
    );
    e
}

#[test]
fn random_bytes_are_rejected_and_counted() {
    let t = Tallyd::start(&[]);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    // Pure noise, and valid lines with a few bytes flipped, which reach deeper into the parser.
    let templates: &[&[u8]] = &[
        b"noise.c:1|c|@0.5|#k:v,k2:v2",
        b"noise.g:+4|g|#a:b",
        b"noise.t:1:2:3|ms|@0.1",
        b"noise,k=v:1|h",
        b"noise#k=v:1|d",
        b"noise[k=v]x:1|c",
        b"noise:1|c:2|g:3|ms",
        b"noise.s:member|s",
        b"_e{5,4}:title|text|#k:v",
        b"_sc|name|0|#k:v",
    ];
    let mut datagrams = Vec::new();
    for i in 0..1500 {
        let datagram = if i % 2 == 0 {
            let len = rng.below(1400);
            rng.bytes(len)
        } else {
            let mut lines = Vec::new();
            for _ in 0..1 + rng.below(20) {
                let mut line = templates[rng.below(templates.len())].to_vec();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(line.len());
                    line[at] = rng.next() as u8;
                }
                lines.extend_from_slice(&line);
                lines.push(b'\n');
            }
            lines
        };
        datagrams.push(datagram);
    }
    send_paced(&t, &datagrams, 200);
    // The same noise over TCP, on a few connections.
    for chunk in datagrams.chunks(300).take(3) {
        t.send_tcp(&chunk.concat());
    }
    t.wait_value("tallyd_tcp_connections_total", &[], 3.0);
    let e = t.scrape();
    assert!(e.sum("tallyd_lines_rejected_total") > 1000.0, "{}", e.text);
    aftermath(&t, "after_random", 0.0);
}

#[test]
fn invalid_utf8_is_rejected_line_by_line() {
    let t = Tallyd::start(&[]);
    let bad: &[&[u8]] = &[
        b"name\xff:1|c",
        b"name:1\xfe|c",
        b"name:1|c|#k:\xc3",         // truncated two-byte sequence
        b"name:1|c|#k:\xed\xa0\x80", // a UTF-16 surrogate
        b"\xc0\xafname:1|c",         // overlong encoding of '/'
        b"name:1|\x80c",             // lone continuation byte
        b"na\xf4\x90\x80\x80me:1|g", // above U+10FFFF
        b"name,k=\xe2\x82:1|c",      // truncated three-byte sequence
    ];
    let mut datagram = Vec::new();
    for line in bad {
        datagram.extend_from_slice(line);
        datagram.push(b'\n');
    }
    // Valid non-ASCII lands, escaped, in the same datagram as the bad lines.
    datagram.extend_from_slice("caf\u{e9}.latte:2|c|#city:Z\u{fc}rich\n".as_bytes());
    t.send_udp(&datagram);
    let e = t.wait_value("caf__latte", &[("city", "Z\u{fc}rich")], 2.0);
    assert_eq!(e.rejected("invalid_utf8"), bad.len() as f64);
    // The same over TCP, a bad line split across two writes.
    {
        let mut s = TcpStream::connect(t.tcp).unwrap();
        s.write_all(b"tcp.utf8:1|c\ntcp.bad:1|c|#k:\xe2").unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        s.write_all(b"\x28\xa1\ntcp.utf8:1|c\n").unwrap();
    }
    let e = t.wait_value("tcp_utf8", &[], 2.0);
    assert_eq!(e.rejected("invalid_utf8"), bad.len() as f64 + 1.0);
    assert_eq!(e.value("tallyd_metric_families", &[]), Some(2.0));
    aftermath(&t, "after_utf8", 0.0);
}

#[test]
fn a_datagram_as_large_as_udp_allows() {
    let t = Tallyd::start(&[]);
    // One line of 65,507 bytes: a huge name. It is one line; whether it becomes a family or is
    // rejected, it is counted exactly once and nothing else happens.
    let mut huge = b"huge.".to_vec();
    huge.resize(UDP_MAX - 4, b'x');
    huge.extend_from_slice(b":1|c");
    assert_eq!(huge.len(), UDP_MAX);
    t.send_udp(&huge);
    let e = t.wait_value("tallyd_lines_total", &[], 1.0);
    let accepted = e.value("tallyd_samples_total", &[]).unwrap();
    let rejected = e.sum("tallyd_lines_rejected_total");
    assert_eq!(
        accepted + rejected,
        1.0,
        "counted once: {accepted} + {rejected}"
    );
    // One line whose tag value fills the datagram: over max_label_bytes.
    let mut tagged = b"huge.tag:1|c|#k:".to_vec();
    tagged.resize(UDP_MAX, b'v');
    t.send_udp(&tagged);
    let e = t.wait_value("tallyd_lines_total", &[], 2.0);
    assert_eq!(e.rejected("label_too_long"), 1.0);
    // 65,507 bytes of short lines, every one counted: nothing truncated.
    let line = b"many.lines:1|c\n";
    let mut many = line.repeat(UDP_MAX / line.len());
    let lines = many.len() / line.len();
    many.resize(UDP_MAX, b'\n'); // trailing empty lines are not lines
    t.send_udp(&many);
    let e = t.wait_value("many_lines", &[], lines as f64);
    assert_eq!(e.value("tallyd_lines_total", &[]), Some(2.0 + lines as f64));
    aftermath(&t, "after_big", 0.0);
}

#[test]
fn a_datagram_over_the_configured_limit_is_refused_whole() {
    let t = Tallyd::start_with_env(&[], &[("TALLYD_LIMITS__MAX_DATAGRAM_BYTES", "1000")]);
    let line = b"too.big:1|c\n";
    t.send_udp(&line.repeat(100));
    let e = t.wait_for("datagram_too_large", |e| {
        e.rejected("datagram_too_large") == 1.0
    });
    assert_eq!(e.value("too_big", &[]), None, "no line of it is applied");
    aftermath(&t, "after_limit", 0.0);
}

#[test]
fn a_flood_of_distinct_names_stops_at_the_series_limit() {
    let t = Tallyd::start(&["--limits.max-series=5000"]);
    // Series that exist before the flood keep updating through it.
    let keep: Vec<u8> = (0..50)
        .flat_map(|i| format!("keep.{i}:1|c\n").into_bytes())
        .collect();
    t.send_udp(&keep);
    t.wait_value("tallyd_series", &[("type", "counter")], 50.0);
    // 20,000 distinct names, 60 lines per datagram.
    let names: Vec<String> = (0..20_000).map(|i| format!("flood.n{i}:1|c")).collect();
    let datagrams: Vec<Vec<u8>> = names
        .chunks(60)
        .map(|c| c.join("\n").into_bytes())
        .collect();
    send_paced(&t, &datagrams, 50);
    // Exact counts, from the text: the exposition now holds 5,000 families.
    let refused = r#"tallyd_series_refused_total{limit="max_series"}"#;
    let counters = r#"tallyd_series{type="counter"}"#;
    wait_text(&t, "15,050 refused", |text| {
        text_value(text, refused) == Some(15_050.0)
    });
    // Series that existed before the flood keep updating.
    t.send_udp(&keep);
    let text = wait_text(&t, "every keeper at 2", |text| {
        (0..50).all(|i| text_value(text, &format!("keep_{i}")) == Some(2.0))
    });
    assert_eq!(text_value(&text, counters), Some(5000.0));
    assert_eq!(text_value(&text, "tallyd_updates_dropped_total"), Some(0.0));
    assert_eq!(text_value(&text, "tallyd_family_restarts_total"), Some(0.0));
    // A newcomer is refused too, and counted.
    t.send_udp(b"refused.newcomer:1|c");
    let text = wait_text(&t, "the newcomer refused", |text| {
        text_value(text, refused) == Some(15_051.0)
    });
    assert_eq!(text_value(&text, "refused_newcomer"), None);
    let rss = rss_bytes(&t);
    eprintln!(
        "after 20,050 names: {} MiB resident, {:?} family actors",
        rss >> 20,
        text_value(&text, "tallyd_metric_actors")
    );
    // Names past the limit are refused by the registry before they get an actor, so the
    // flood leaves no actors behind.
    assert!(rss < RSS_LIMIT_BYTES, "resident set {} MiB", rss >> 20);
    let panics = t
        .logs()
        .into_iter()
        .filter(|l| l.contains("panicked"))
        .count();
    assert_eq!(panics, 0, "tallyd panicked");
    // One full parse, so that promtool checks this exposition too when `t` is dropped.
    t.scrape();
}

/// The series limit bounds family actors too: a new name past the limit is refused by the
/// registry before it gets an actor, so distinct names past the limit do not grow memory.
#[test]
fn names_refused_by_the_series_limit_do_not_keep_actors() {
    let t = Tallyd::start(&["--limits.max-series=100"]);
    let names: Vec<String> = (0..2000).map(|i| format!("refused.n{i}:1|c")).collect();
    let datagrams: Vec<Vec<u8>> = names
        .chunks(60)
        .map(|c| c.join("\n").into_bytes())
        .collect();
    send_paced(&t, &datagrams, 20);
    wait_text(&t, "1,900 refused", |text| {
        text_value(text, r#"tallyd_series_refused_total{limit="max_series"}"#) == Some(1900.0)
    });
    let text = wait_text(&t, "at most 100 family actors", |text| {
        text_value(text, "tallyd_metric_actors").is_some_and(|n| n <= 100.0)
    });
    assert_eq!(
        text_value(&text, r#"tallyd_series{type="counter"}"#),
        Some(100.0)
    );
}

/// Found by `tests/fuzz` (target `ingest`, `tests/fuzz/regressions/ingest/`): an observation
/// is counted `floor(1 / rate)` times and `@1e-300` is a valid rate, so one sample counted
/// u64::MAX times and the next overflowed the series' count: a panic in a debug build (the
/// family actor failed and restarted empty), a wrapped `_count` in a release build. Counts are
/// now capped and summed saturating.
#[test]
fn tiny_sample_rates_do_not_overflow_observation_counts() {
    let t = Tallyd::start(&[]);
    t.send_udp(b"tiny.rate:1|ms|@1e-300\ntiny.rate:1|ms|@1e-300\ntiny.hist:1|h|@1e-300");
    t.send_udp(b"tiny.rate:1|ms|@1e-300\ntiny.hist:1|h|@1e-300");
    // Each observation counts at most 2^32 - 1 times.
    let cap = f64::from(u32::MAX);
    let e = t.wait_for("capped counts", |e| {
        e.value("tiny_rate_count", &[]) == Some(3.0 * cap)
            && e.value("tiny_hist_count", &[]) == Some(2.0 * cap)
    });
    assert_eq!(e.value("tiny_rate_sum", &[]), Some(3.0 * cap * 0.001));
    aftermath(&t, "after_tiny_rates", 0.0);
}

#[test]
fn a_type_conflict_storm_keeps_the_first_type() {
    let t = Tallyd::start(&[]);
    t.send_udp(b"storm:1|c");
    t.wait_value("storm", &[], 1.0);
    // 3,000 rounds of counter, gauge, timer on one name, 90 lines per datagram.
    let lines: Vec<&str> = ["storm:1|c", "storm:5|g", "storm:3|ms"].repeat(3000);
    let datagrams: Vec<Vec<u8>> = lines
        .chunks(90)
        .map(|c| c.join("\n").into_bytes())
        .collect();
    send_paced(&t, &datagrams, 25);
    let conflicts = |e: &Exposition, kind| {
        e.value(
            "tallyd_type_conflicts_total",
            &[("metric", "storm"), ("type", kind)],
        )
    };
    // Conflicts are counted as they happen; the family's value is published when a scrape
    // asks: wait for both.
    let e = t.wait_for("6,000 conflicts and 3,001 counts", |e| {
        conflicts(e, "gauge") == Some(3000.0)
            && conflicts(e, "observer") == Some(3000.0)
            && e.value("storm", &[]) == Some(3001.0)
    });
    assert_eq!(e.type_of("storm"), Some("counter"));
    // Conflict warnings are rate-limited, not one per line.
    let warnings = t
        .logs()
        .iter()
        .filter(|l| l.contains("type conflict"))
        .count();
    assert!(warnings <= 100, "{warnings} type-conflict log lines");
    aftermath(&t, "after_storm", 0.0);
}

#[test]
fn silent_tcp_clients_block_neither_others_nor_shutdown() {
    let mut t = Tallyd::start(&[]);
    // Connected and silent; connected with half a line.
    let mut silent: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(t.tcp).unwrap())
        .collect();
    let mut half = TcpStream::connect(t.tcp).unwrap();
    half.write_all(b"half.line:1").unwrap();
    silent.push(half);
    t.wait_value("tallyd_tcp_connections_total", &[], 51.0);
    // Others still get through, over TCP and UDP.
    t.send_tcp(b"tcp.ok:4|c\n");
    t.wait_value("tcp_ok", &[], 4.0);
    aftermath(&t, "after_silent_tcp", 0.0);
    // And shutdown does not wait for them.
    let (status, took) = t.signal_and_wait(Signal::SIGTERM);
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    drop(silent);
}

/// One `GET /metrics` on a fresh connection: the status, or `None` if the server closed or
/// refused the connection without an answer.
fn raw_get(http: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect(http).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Opens a connection and sends half a request line, then holds it.
fn slowloris(http: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(http).unwrap();
    s.write_all(b"GET /metr").unwrap();
    s
}

#[test]
fn slowloris_http_clients_do_not_stop_scrapes_or_shutdown() {
    // Shutdown lets requests in flight finish, and a half-sent request head counts as one: it
    // is cut at web.header_timeout, or when the HTTP drain gives up (5 s). A short header
    // timeout keeps this test fast; with the default (10 s) the same clients hold shutdown for
    // those 5 s.
    let mut t = Tallyd::start_with_env(&[], &[("TALLYD_WEB__HEADER_TIMEOUT", "1s")]);
    let held: Vec<TcpStream> = (0..16).map(|_| slowloris(t.http)).collect();
    for _ in 0..5 {
        assert_eq!(raw_get(t.http), Some(200));
    }
    aftermath(&t, "after_slowloris", 0.0);
    let (status, took) = t.signal_and_wait(Signal::SIGTERM);
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    drop(held);
}

#[test]
fn slowloris_clients_holding_every_slot_are_cut_at_the_header_timeout() {
    let t = Tallyd::start_with_env(
        &[],
        &[
            ("TALLYD_WEB__MAX_CONNECTIONS", "4"),
            ("TALLYD_WEB__HEADER_TIMEOUT", "1s"),
        ],
    );
    let start = Instant::now();
    let mut held: Vec<TcpStream> = (0..4).map(|_| slowloris(t.http)).collect();
    // Every slot is taken: a scrape now is refused (or waits); within the header timeout and
    // a little more the slow clients are cut and scrapes are served again.
    let mut refused = 0;
    let served = loop {
        match raw_get(t.http) {
            Some(200) => break start.elapsed(),
            _ => refused += 1,
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "never served again"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(served < Duration::from_secs(3), "served after {served:?}");
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 256];
        // Closed by the server: EOF (perhaps after a 408), or a reset.
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
    let e = t.scrape();
    if refused > 0 {
        assert!(
            e.sum("tallyd_http_connections_rejected_total") >= 1.0,
            "refused connections are counted"
        );
    }
    aftermath(&t, "after_slow_slots", 0.0);
}

#[test]
fn a_family_that_keeps_failing_is_restarted_each_time() {
    let t = Tallyd::start(&["--web.enable-fault-injection"]);
    t.send_udp(b"steady:5|c\nfragile:3|c\nlevel:9|g");
    t.wait_value("tallyd_metric_families", &[], 3.0);
    for round in 1..=6 {
        assert_eq!(t.post("/-/fault?family=fragile"), 200, "round {round}");
        t.wait_value("tallyd_family_restarts_total", &[], f64::from(round));
        // The restarted family takes updates again, from zero.
        t.send_udp(format!("fragile:{round}|c\nsteady:1|c").as_bytes());
        t.wait_value("fragile", &[], f64::from(round));
    }
    let e = t.wait_value("steady", &[], 11.0);
    assert_eq!(e.value("level", &[]), Some(9.0));
    assert_eq!(e.sum("tallyd_updates_dropped_total"), 0.0);
    assert_eq!(e.value("tallyd_metric_actors", &[]), Some(3.0));
    let failures = t
        .logs()
        .iter()
        .filter(|l| l.contains("family actor failed") && l.contains("fragile"))
        .count();
    assert_eq!(failures, 6, "each failure is logged");
    aftermath(&t, "after_faults", 6.0);
}
