//! The seed scenario: four counters, four clients sending 50 updates each over UDP (every
//! third update a decrement, sent as a relative gauge change), then the aggregated statistics
//! read back from tallyd's /metrics: total value, total operations, number of counters and
//! average updates per second per counter.
//!
//! Start tallyd on its defaults (`cargo run --release`), then:
//!
//! ```text
//! cargo run --example counter_system
//! cargo run --example counter_system -- --statsd 127.0.0.1:9125 --http 127.0.0.1:9102
//! ```
//!
//! It exits non-zero if what /metrics reports differs from what the clients sent.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

const COUNTERS: [&str; 4] = [
    "counter_system.alpha",
    "counter_system.beta",
    "counter_system.gamma",
    "counter_system.delta",
];
const CLIENTS: usize = 4;
const UPDATES_PER_CLIENT: usize = 50;

fn family(counter: &str) -> String {
    counter.replace('.', "_")
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn scrape(http: &str) -> prometheus_parse::Scrape {
    let mut response = match ureq::get(&format!("http://{http}/metrics")).call() {
        Ok(response) => response,
        Err(e) => {
            eprintln!("cannot scrape tallyd at {http}: {e} (is it running? `cargo run --release`)");
            std::process::exit(1);
        }
    };
    let body = response.body_mut().read_to_string().expect("a text body");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("valid exposition")
}

fn value(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    label: Option<(&str, &str)>,
) -> Option<f64> {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .and_then(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

fn updates(scrape: &prometheus_parse::Scrape, counter: &str) -> f64 {
    value(
        scrape,
        "tallyd_metric_updates_total",
        Some(("metric", &family(counter))),
    )
    .unwrap_or(0.0)
}

/// Scrapes until `done` holds, for at most ten seconds.
fn wait_for(
    http: &str,
    done: impl Fn(&prometheus_parse::Scrape) -> bool,
) -> prometheus_parse::Scrape {
    let start = Instant::now();
    loop {
        let scrape = scrape(http);
        if done(&scrape) {
            return scrape;
        }
        if start.elapsed() > Duration::from_secs(10) {
            eprintln!("tallyd did not report the expected updates within 10 s");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let statsd = arg("--statsd", "127.0.0.1:9125");
    let http = arg("--http", "127.0.0.1:9102");

    // Start every counter from zero, so the totals below are this run's.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a local UDP socket");
    let reset: Vec<String> = COUNTERS.iter().map(|c| format!("{c}:0|g")).collect();
    socket
        .send_to(reset.join("\n").as_bytes(), &statsd)
        .expect("send reset");
    let before = wait_for(&http, |s| {
        COUNTERS
            .iter()
            .all(|c| value(s, &family(c), None) == Some(0.0))
    });
    let baseline: Vec<f64> = COUNTERS.iter().map(|c| updates(&before, c)).collect();

    // Four clients, each its own socket and thread, 50 updates each spread over the counters.
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let statsd = statsd.clone();
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("a local UDP socket");
                let mut net = 0i64;
                for i in 0..UPDATES_PER_CLIENT {
                    let counter = COUNTERS[(client + i) % COUNTERS.len()];
                    let delta = if i % 3 == 2 { "-1" } else { "+1" };
                    net += if i % 3 == 2 { -1 } else { 1 };
                    socket
                        .send_to(format!("{counter}:{delta}|g").as_bytes(), &statsd)
                        .expect("send update");
                }
                net
            })
        })
        .collect();
    let expected_total: i64 = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .sum();
    let sent = (CLIENTS * UPDATES_PER_CLIENT) as f64;

    let after = wait_for(&http, |s| {
        COUNTERS
            .iter()
            .zip(&baseline)
            .map(|(c, b)| updates(s, c) - b)
            .sum::<f64>()
            >= sent
    });
    let elapsed = started.elapsed();
    let total_value: f64 = COUNTERS
        .iter()
        .map(|c| value(&after, &family(c), None).unwrap_or(f64::NAN))
        .sum();
    let operations: f64 = COUNTERS
        .iter()
        .zip(&baseline)
        .map(|(c, b)| updates(&after, c) - b)
        .sum();
    let rates: Vec<f64> = COUNTERS
        .iter()
        .map(|c| {
            value(
                &after,
                "tallyd_metric_update_rate",
                Some(("metric", &family(c))),
            )
            .unwrap_or(0.0)
        })
        .collect();
    let average_rate = rates.iter().sum::<f64>() / rates.len() as f64;

    println!("counters:                          {}", COUNTERS.len());
    for counter in COUNTERS {
        println!(
            "  {:<32} {}",
            family(counter),
            value(&after, &family(counter), None).unwrap_or(f64::NAN)
        );
    }
    println!("total value:                       {total_value}");
    println!("total operations:                  {operations}");
    println!("average updates/s per counter:     {average_rate:.1}");
    println!(
        "(sent in {:.1} ms, read back from http://{http}/metrics)",
        elapsed.as_secs_f64() * 1e3
    );

    if total_value != expected_total as f64 || operations != sent {
        eprintln!("mismatch: expected total value {expected_total} and {sent} operations");
        std::process::exit(1);
    }
}
