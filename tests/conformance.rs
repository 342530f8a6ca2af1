//! Conformance with statsd_exporter v0.30.0's own test tables: every case under
//! `tests/conformance/` (the format is in its README) runs through a fresh tallyd daemon, its
//! packets sent over real UDP or TCP sockets, and what `/metrics` then shows is compared with
//! what statsd_exporter shows for the same input.

mod common;

use common::{Tallyd, DEADLINE};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Labels = BTreeMap<String, String>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    transports: Vec<Transport>,
    cases: Vec<Case>,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Transport {
    Udp,
    Tcp,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Packets {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    args: Vec<String>,
    mapping: Option<String>,
    #[serde(default)]
    refused: bool,
    #[serde(rename = "in")]
    packets: Option<Packets>,
    /// `\xNN` in the packets stands for the byte 0xNN (for input that is not UTF-8).
    #[serde(default)]
    bytes: bool,
    #[serde(default, with = "humantime_serde")]
    wait: Option<Duration>,
    expect: Option<Vec<Expected>>,
    lookups: Option<Vec<Lookup>>,
    /// Where tallyd differs on purpose, why; `tallyd` is then what tallyd shows instead of
    /// `expect`.
    differs: Option<String>,
    tallyd: Option<Vec<Expected>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    counter: Option<String>,
    gauge: Option<String>,
    summary: Option<String>,
    histogram: Option<String>,
    #[serde(default)]
    labels: Labels,
    value: Option<f64>,
    count: Option<f64>,
    sum: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lookup {
    metric: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    dropped: bool,
    observer: Option<String>,
    buckets: Option<Vec<f64>>,
    quantiles: Option<Vec<f64>>,
    scale: Option<f64>,
    /// Kept for the record: a TTL is not waited for.
    #[allow(dead_code)]
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
}

/// One series as a scrape shows it: the family, its type, the labels other than `le` and
/// `quantile`.
type SeriesKey = (String, String, Labels);

/// A scrape, read for conformance: every user sample by name and labels, and each family's
/// type.
struct Scrape {
    samples: BTreeMap<(String, Labels), f64>,
    types: BTreeMap<String, String>,
    text: String,
}

fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `{a="x",b="y"}` (without the braces) into labels; values may hold escaped quotes.
fn parse_labels(text: &str) -> Labels {
    let mut labels = Labels::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let bytes = after.as_bytes();
        let mut end = 0;
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        labels.insert(
            key.trim_start_matches(',').to_owned(),
            unescape(&after[..end]),
        );
        rest = &after[(end + 1).min(after.len())..];
    }
    labels
}

impl Scrape {
    fn of(tallyd: &Tallyd) -> Scrape {
        let text = tallyd.scrape_text();
        let own = |name: &str| name.starts_with("tallyd_") || name.starts_with("process_");
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                if !own(name) {
                    types.insert(name.to_owned(), kind.to_owned());
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, parse_labels(labels.trim_end_matches('}'))),
                None => (series, Labels::new()),
            };
            if own(name) {
                continue;
            }
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().expect("sample value"),
            };
            samples.insert((name.to_owned(), labels), value);
        }
        Scrape {
            samples,
            types,
            text,
        }
    }

    /// The family and type a sample belongs to.
    fn family(&self, sample: &str) -> (String, String) {
        if let Some(kind) = self.types.get(sample) {
            return (sample.to_owned(), kind.clone());
        }
        for suffix in ["_sum", "_count", "_bucket"] {
            if let Some(base) = sample.strip_suffix(suffix) {
                if let Some(kind) = self.types.get(base) {
                    return (base.to_owned(), kind.clone());
                }
            }
        }
        (sample.to_owned(), "untyped".to_owned())
    }

    fn key(&self, name: &str, labels: &Labels) -> SeriesKey {
        let (family, kind) = self.family(name);
        let mut labels = labels.clone();
        labels.remove("le");
        labels.remove("quantile");
        (family, kind, labels)
    }

    /// Every series shown.
    fn series(&self) -> BTreeSet<SeriesKey> {
        self.samples
            .keys()
            .map(|(name, labels)| self.key(name, labels))
            .collect()
    }

    fn get(&self, name: &str, labels: &Labels) -> Option<f64> {
        self.samples
            .get(&(name.to_owned(), labels.clone()))
            .copied()
    }

    /// The upper bounds (but `+Inf`) or quantiles a series shows under `label`.
    fn bounds(&self, key: &SeriesKey, label: &str) -> Vec<f64> {
        let mut bounds: Vec<f64> = self
            .samples
            .keys()
            .filter(|(name, labels)| self.key(name, labels) == *key)
            .filter_map(|(_, labels)| labels.get(label)?.parse().ok())
            .filter(|b: &f64| b.is_finite())
            .collect();
        bounds.sort_by(f64::total_cmp);
        bounds
    }
}

fn close(got: f64, want: f64) -> bool {
    got == want || (got - want).abs() <= want.abs().max(1e-12) * 1e-9
}

/// The counters that move once a packet has been read, and whose stillness, with every
/// sample applied or refused, means the packet's effect is all on `/metrics`.
fn progress(tallyd: &Tallyd) -> ([f64; 6], Scrape) {
    let e = tallyd.scrape();
    let sum = |m: &str| e.sum(m);
    let counts = [
        e.value("tallyd_packets_total", &[("listener", "udp")])
            .unwrap_or(0.0),
        sum("tallyd_tcp_connections_total"),
        sum("tallyd_tcp_connections_open"),
        sum("tallyd_samples_total"),
        sum("tallyd_updates_total"),
        sum("tallyd_metric_updates_total"),
    ];
    (counts, Scrape::of(tallyd))
}

/// A packet's bytes: its text, with each `\xNN` read as the byte 0xNN when `bytes` is set.
fn packet_bytes(packet: &str, bytes: bool) -> Vec<u8> {
    if !bytes {
        return packet.as_bytes().to_vec();
    }
    let mut out = Vec::new();
    let mut rest = packet.as_bytes();
    while let Some(&b) = rest.first() {
        let hex = rest
            .strip_prefix(b"\\x")
            .and_then(|h| h.get(..2))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                rest = &rest[4..];
            }
            None => {
                out.push(b);
                rest = &rest[1..];
            }
        }
    }
    out
}

/// Sends one packet and waits until tallyd has read it and shows all it did.
fn send(tallyd: &Tallyd, transport: Transport, packet: &[u8], sent: &mut [f64; 2]) -> Scrape {
    match transport {
        Transport::Udp => {
            tallyd.send_udp(packet);
            sent[0] += 1.0;
        }
        Transport::Tcp => {
            let mut stream = std::net::TcpStream::connect(tallyd.tcp).expect("TCP connect");
            stream.write_all(packet).expect("TCP write");
            drop(stream);
            sent[1] += 1.0;
        }
    }
    let start = Instant::now();
    loop {
        let (first, _) = progress(tallyd);
        let read = first[0] == sent[0] && first[1] == sent[1] && first[2] == 0.0;
        if read {
            std::thread::sleep(Duration::from_millis(30));
            let (second, scrape) = progress(tallyd);
            if second == first && second[4] == second[5] {
                return scrape;
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "packet {:?} was not read and applied within {DEADLINE:?}",
            String::from_utf8_lossy(packet)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn expected_key(e: &Expected) -> Result<(SeriesKey, &Expected), String> {
    let (name, kind) = match (&e.counter, &e.gauge, &e.summary, &e.histogram) {
        (Some(n), None, None, None) => (n, "counter"),
        (None, Some(n), None, None) => (n, "gauge"),
        (None, None, Some(n), None) => (n, "summary"),
        (None, None, None, Some(n)) => (n, "histogram"),
        _ => {
            return Err(
                "an expect entry names exactly one of counter, gauge, summary, histogram".into(),
            )
        }
    };
    Ok(((name.clone(), kind.to_owned(), e.labels.clone()), e))
}

fn check_expect(scrape: &Scrape, expect: &[Expected]) -> Result<(), String> {
    let wanted: BTreeMap<SeriesKey, &Expected> =
        expect.iter().map(expected_key).collect::<Result<_, _>>()?;
    let shown = scrape.series();
    let want_keys: BTreeSet<SeriesKey> = wanted.keys().cloned().collect();
    if shown != want_keys {
        return Err(format!(
            "series differ\n  missing: {:?}\n  unexpected: {:?}\n{}",
            want_keys.difference(&shown).collect::<Vec<_>>(),
            shown.difference(&want_keys).collect::<Vec<_>>(),
            scrape.text
        ));
    }
    for ((name, kind, labels), e) in &wanted {
        let checks: Vec<(String, Option<f64>)> = match kind.as_str() {
            "counter" | "gauge" => vec![(name.clone(), e.value)],
            _ => vec![
                (format!("{name}_count"), e.count),
                (format!("{name}_sum"), e.sum),
            ],
        };
        for (sample, want) in checks {
            let Some(want) = want else { continue };
            let got = scrape.get(&sample, labels);
            if !got.is_some_and(|got| close(got, want)) {
                return Err(format!("{sample}{labels:?} is {got:?}, expected {want}"));
            }
        }
    }
    Ok(())
}

fn lookup_line(lookup: &Lookup, value: usize) -> Result<String, String> {
    let suffix = match lookup.kind.as_deref() {
        None | Some("counter") => "c",
        Some("gauge") => "g",
        Some("observer") => "h",
        Some(other) => return Err(format!("unknown lookup type {other}")),
    };
    Ok(format!("{}:{value}|{suffix}", lookup.metric))
}

fn check_lookup(
    before: &Scrape,
    after: &Scrape,
    lookup: &Lookup,
    value: f64,
) -> Result<(), String> {
    let changed: BTreeSet<SeriesKey> = after
        .samples
        .iter()
        .filter(|(k, v)| before.samples.get(*k) != Some(*v))
        .map(|((name, labels), _)| after.key(name, labels))
        .collect();
    let Some(name) = &lookup.name else {
        if !lookup.dropped {
            return Err("a lookup has `name` or `dropped: true`".into());
        }
        return if changed.is_empty() {
            Ok(())
        } else {
            Err(format!("dropped, yet changed {changed:?}"))
        };
    };
    let kind = match lookup.kind.as_deref() {
        Some("gauge") => "gauge",
        Some("observer") => lookup.observer.as_deref().unwrap_or("summary"),
        _ => "counter",
    };
    let key = (name.clone(), kind.to_owned(), lookup.labels.clone());
    if changed != BTreeSet::from([key.clone()]) {
        return Err(format!("expected {key:?} to change; changed: {changed:?}"));
    }
    if let Some(buckets) = &lookup.buckets {
        let got = after.bounds(&key, "le");
        if &got != buckets {
            return Err(format!("buckets {got:?}, expected {buckets:?}"));
        }
    }
    if let Some(quantiles) = &lookup.quantiles {
        let got = after.bounds(&key, "quantile");
        if &got != quantiles {
            return Err(format!("quantiles {got:?}, expected {quantiles:?}"));
        }
    }
    if let Some(scale) = lookup.scale {
        // What the value became: a counter's increase, an observer's sum's.
        let sample = match kind {
            "counter" => name.clone(),
            _ => format!("{name}_sum"),
        };
        let delta = after.get(&sample, &lookup.labels).unwrap_or(0.0)
            - before.get(&sample, &lookup.labels).unwrap_or(0.0);
        if !close(delta, value * scale) {
            return Err(format!(
                "{sample} grew by {delta}, expected {}",
                value * scale
            ));
        }
    }
    Ok(())
}

fn mapping_file(case: &Case, mapping: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("tallyd-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "{}-{}.yml",
        NEXT.fetch_add(1, Ordering::Relaxed),
        case.name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
    ));
    std::fs::write(&path, mapping).unwrap();
    path
}

fn run_case(file: &File, case: &Case, transport: Transport) -> Result<(), String> {
    let mut args: Vec<String> = file.args.iter().chain(&case.args).cloned().collect();
    if let Some(mapping) = &case.mapping {
        args.push(format!(
            "--statsd.mapping-config={}",
            mapping_file(case, mapping).display()
        ));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if case.refused {
        let mut check = args.clone();
        check.push("--check-config");
        let (code, stderr) = common::start_fails(&check, &[]);
        return match code {
            Some(2) if stderr.contains("invalid mapping file") => Ok(()),
            Some(0) => Err("statsd_exporter refuses this mapping file; tallyd accepted it".into()),
            other => Err(format!(
                "refused with exit {other:?}, not 2 naming the file: {stderr}"
            )),
        };
    }
    let tallyd = Tallyd::start(&args);
    let mut sent = [0.0; 2];
    if let Some(lookups) = &case.lookups {
        let mut before = Scrape::of(&tallyd);
        for (i, lookup) in lookups.iter().enumerate() {
            let line = lookup_line(lookup, i + 1)?;
            let after = send(&tallyd, transport, line.as_bytes(), &mut sent);
            check_lookup(&before, &after, lookup, (i + 1) as f64)
                .map_err(|e| format!("lookup {line:?}: {e}"))?;
            before = after;
        }
        return Ok(());
    }
    let packets = match &case.packets {
        None => vec![],
        Some(Packets::One(p)) => vec![p.clone()],
        Some(Packets::Many(ps)) => ps.clone(),
    };
    let mut scrape = Scrape::of(&tallyd);
    // An empty packet carries nothing to wait for.
    for packet in packets.iter().filter(|p| !p.is_empty()) {
        scrape = send(
            &tallyd,
            transport,
            &packet_bytes(packet, case.bytes),
            &mut sent,
        );
    }
    let expect = match (&case.differs, &case.tallyd) {
        (None, None) => case.expect.as_deref(),
        (Some(why), Some(tallyd)) if !why.trim().is_empty() => Some(&tallyd[..]),
        _ => return Err("`differs` (a reason) and `tallyd` go together".into()),
    };
    let expect = expect.unwrap_or(&[]);
    // With `wait`, what the scrape shows may take up to that long to come (a TTL's expiry).
    let deadline = Instant::now() + case.wait.unwrap_or_default();
    loop {
        let checked = check_expect(&scrape, expect);
        if checked.is_ok() || Instant::now() >= deadline {
            return checked;
        }
        std::thread::sleep(Duration::from_millis(100));
        scrape = Scrape::of(&tallyd);
    }
}

fn case_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            case_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "yml") {
            into.push(path);
        }
    }
}

#[test]
fn statsd_exporter_test_tables() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut paths = Vec::new();
    case_files(&root, &mut paths);
    paths.sort();
    assert!(!paths.is_empty(), "no case files under {}", root.display());
    let files: Vec<(String, File)> = paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let file: File =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let name = p.strip_prefix(&root).unwrap().display().to_string();
            (name, file)
        })
        .collect();
    let only = std::env::var("CONFORMANCE_ONLY").ok();
    let mut work = Vec::new();
    for (name, file) in &files {
        let transports = if file.transports.is_empty() {
            vec![Transport::Udp]
        } else {
            file.transports.clone()
        };
        for case in &file.cases {
            for &transport in &transports {
                let label = format!("{name}: {} ({transport:?})", case.name);
                if only.as_ref().is_none_or(|o| label.contains(o.as_str())) {
                    work.push((label, file, case, transport));
                }
            }
        }
    }
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((label, file, case, transport)) = work.get(i) else {
                    break;
                };
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_case(file, case, *transport)
                }))
                .unwrap_or_else(|panic| {
                    Err(panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default())
                });
                if let Err(e) = outcome {
                    failures.lock().unwrap().push(format!("{label}: {e}"));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from statsd_exporter:\n\n{}",
        failures.len(),
        work.len(),
        failures.join("\n\n")
    );
}
