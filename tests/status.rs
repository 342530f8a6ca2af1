//! What tallyd shows a person, through the real binary: `/api/v1/status`, `rejected`,
//! `unmapped` (exact answers for the lines the tests send, and their bounds under a flood),
//! and the status page at `/`, loaded in Debian's headless Chromium (installed by
//! tests/setup/deploy-tools.sh), which must show the families and reasons sent; it leaves a
//! screenshot in `target/status-page.png`.

mod common;

use common::Tallyd;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

const MAPPING: &str = "mappings:\n- match: \"api.*.requests\"\n  name: api_requests\n  labels:\n    handler: \"$1\"\n";

/// A mapping file of the test's own, removed when dropped.
struct MappingFile(PathBuf);

impl MappingFile {
    fn new(test: &str, text: &str) -> MappingFile {
        let path =
            std::env::temp_dir().join(format!("tallyd-status-{test}-{}.yml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        MappingFile(path)
    }

    fn flag(&self) -> String {
        format!("--statsd.mapping-config={}", self.0.display())
    }
}

impl Drop for MappingFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn get_json(t: &Tallyd, path: &str) -> Value {
    let (status, body) = t.get(path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Sends the test's traffic over UDP and TCP, and waits until all of it is counted: 7 lines of
/// the unmapped `foo.bar`, 3 of `baz.qux` (one datagram), 2 mapped lines, and 4 refused lines.
fn send_traffic(t: &Tallyd) -> String {
    let long = format!("{}:1|c|@0", "x".repeat(600));
    t.send_udp(b"api.users.requests:1|c\napi.orders.requests:2|c");
    for _ in 0..7 {
        t.send_udp(b"foo.bar:1|c");
    }
    t.send_udp(b"baz.qux:5|g\nbaz.qux:+1|g\nbaz.qux:2|g");
    t.send_udp(b"bad.value:x|c\nbad.type:1|q");
    t.send_udp(long.as_bytes());
    // The UDP lines first, so the TCP line is the last refused.
    t.wait_value("tallyd_lines_total", &[], 15.0);
    t.send_tcp(b"tcp.bad:1|c|@2\n");
    t.wait_value("tallyd_lines_total", &[], 16.0);
    long
}

#[test]
fn status_rejected_and_unmapped_answer_what_was_sent() {
    let mapping = MappingFile::new("answers", MAPPING);
    let t = Tallyd::start(&[&mapping.flag(), "--web.enable-lifecycle"]);
    let long = send_traffic(&t);

    // The refused lines, newest first: the TCP line last sent, after the UDP ones.
    let rejected = get_json(&t, "/api/v1/rejected");
    let rows: Vec<_> = rejected
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["listener"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
                r["line"].as_str().unwrap().to_owned(),
                r["length"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("tcp", "bad_sample_rate", "tcp.bad:1|c|@2".to_owned(), 14),
            (
                "udp",
                "bad_sample_rate",
                long[..512].to_owned(),
                long.len() as u64
            ),
            ("udp", "bad_type", "bad.type:1|q".to_owned(), 12),
            ("udp", "bad_value", "bad.value:x|c".to_owned(), 13),
        ]
    );
    assert!(rejected[0]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        get_json(&t, "/api/v1/rejected?limit=1")
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Unmapped names by lines, with no error while the sketch holds every name.
    assert_eq!(
        get_json(&t, "/api/v1/unmapped"),
        json!([
            { "name": "foo.bar", "lines": 7, "error": 0 },
            { "name": "baz.qux", "lines": 3, "error": 0 },
        ])
    );

    let status = get_json(&t, "/api/v1/status");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["lines"]["total"], 16);
    assert_eq!(status["rejected"]["total"], 4);
    let reasons = &status["rejected"]["by_reason"];
    assert_eq!(
        (
            &reasons["bad_sample_rate"],
            &reasons["bad_type"],
            &reasons["bad_value"],
            &reasons["malformed_line"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(0))
    );
    let packets: Vec<_> = status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["listener"].as_str().unwrap(),
                l["packets"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(packets, vec![("udp", 11), ("tcp", 1)]);
    assert_eq!(status["unmapped_samples"], 10);
    assert_eq!(status["mapping"]["rules"], 1);
    assert_eq!(status["mapping"]["file"], mapping.0.display().to_string());
    assert_eq!(status["mapping"]["error"], Value::Null);
    let loaded_at = status["mapping"]["loaded_at"].clone();
    assert!(loaded_at.as_str().unwrap().ends_with('Z'));
    assert_eq!(status["remote_write"], Value::Null, "no push");
    let limit = |name: &str| {
        status["limits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {status}"))
            .clone()
    };
    // api_requests{handler=users}, {handler=orders}, foo_bar, baz_qux.
    assert_eq!(
        limit("limits.max_series"),
        json!({ "name": "limits.max_series", "limit": 1_000_000, "used": 4 })
    );
    assert_eq!(limit("statsd.tcp_max_connections")["limit"], 1024);
    // api_requests has two series.
    assert_eq!(limit("limits.max_series_per_family")["used"], 2);
    assert!(status["memory"]["peak_bytes"].as_u64().unwrap() > 0);

    // A reload that fails keeps the rules and says why; one that works forgets the names
    // that matched nothing, as they may match now.
    std::fs::write(&mapping.0, "mappings: [").unwrap();
    assert_eq!(t.post("/-/reload"), 500);
    let status = get_json(&t, "/api/v1/status");
    assert_eq!(status["mapping"]["rules"], 1);
    assert!(
        status["mapping"]["error"]
            .as_str()
            .unwrap()
            .contains(&mapping.0.display().to_string()),
        "{status}"
    );
    assert_eq!(
        status["mapping"]["loaded_at"], loaded_at,
        "the rules in force are the first"
    );
    assert!(status["mapping"]["failed_at"].is_string());
    std::fs::write(
        &mapping.0,
        format!("{MAPPING}- match: foo.bar\n  name: foo\n"),
    )
    .unwrap();
    assert_eq!(t.post("/-/reload"), 200);
    let status = get_json(&t, "/api/v1/status");
    assert_eq!(
        (&status["mapping"]["rules"], &status["mapping"]["error"]),
        (&json!(2), &Value::Null)
    );
    assert_ne!(status["mapping"]["loaded_at"], loaded_at);
    assert_eq!(get_json(&t, "/api/v1/unmapped"), json!([]));
    t.send_udp(b"foo.bar:1|c\nnew.name:1|c");
    t.wait_value("tallyd_lines_total", &[], 18.0);
    assert_eq!(
        get_json(&t, "/api/v1/unmapped"),
        json!([{ "name": "new.name", "lines": 1, "error": 0 }])
    );

    for bad in ["/api/v1/rejected?limit=x", "/api/v1/unmapped?limit=-1"] {
        assert_eq!(t.get(bad).0, 400, "{bad}");
    }
    assert_eq!(t.post("/api/v1/status"), 405);
}

#[test]
fn what_is_kept_stays_bounded_under_a_flood() {
    let mapping = MappingFile::new("flood", MAPPING);
    let t = Tallyd::start(&[&mapping.flag()]);
    // 1,500 refused lines and 5,000 distinct unmapped names, with one name far ahead.
    let mut sent = 0;
    for chunk in 0..50 {
        let bad: Vec<String> = (0..30).map(|n| format!("bad.{chunk}.{n}:x|c")).collect();
        t.send_udp(bad.join("\n").as_bytes());
        let names: Vec<String> = (0..100).map(|n| format!("flood.{chunk}.{n}:1|c")).collect();
        t.send_udp(names.join("\n").as_bytes());
        t.send_udp(b"heavy.name:1|c\nheavy.name:1|c\nheavy.name:1|c");
        sent += 30 + 100 + 3;
        t.wait_value("tallyd_lines_total", &[], sent as f64);
    }
    let rejected = get_json(&t, "/api/v1/rejected?limit=5000");
    let rejected = rejected.as_array().unwrap();
    assert_eq!(rejected.len(), 1000, "the last 1,000 kept");
    assert_eq!(rejected[0]["line"], "bad.49.29:x|c");
    assert_eq!(rejected[999]["line"], "bad.16.20:x|c");
    let unmapped = get_json(&t, "/api/v1/unmapped?limit=100000");
    let unmapped = unmapped.as_array().unwrap();
    assert_eq!(unmapped.len(), 1000, "the sketch follows 1,000 names");
    assert_eq!(unmapped[0]["name"], "heavy.name");
    let (lines, error) = (
        unmapped[0]["lines"].as_u64().unwrap(),
        unmapped[0]["error"].as_u64().unwrap(),
    );
    assert!(
        lines >= 150 && lines - error <= 150,
        "150 lines sent: {lines} (error {error})"
    );
}

#[test]
fn the_api_and_page_turn_off_with_a_flag() {
    let t = Tallyd::start(&["--no-web.enable-api"]);
    for path in ["/api/v1/status", "/api/v1/rejected", "/api/v1/unmapped"] {
        assert_eq!(t.get(path).0, 404, "{path}");
    }
    let (status, page) = t.get("/");
    assert_eq!(status, 200);
    assert!(
        page.contains("<a href=\"/metrics\">Metrics</a>") && !page.contains("id=\"live\""),
        "{page}"
    );
}

/// Debian's Chromium, headless: `--dump-dom` of `url` once its script ran for a refresh, and
/// a screenshot into `png`.
fn chromium(url: &str, png: &std::path::Path) -> String {
    let run = |args: &[&str]| {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .args([
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=7000",
            ])
            .args(args)
            .arg(url)
            .output()
            .expect("chromium runs (tests/setup/deploy-tools.sh installs Debian's chromium)");
        assert!(
            out.status.success(),
            "chromium {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let dom = run(&["--dump-dom"]);
    let console = String::from_utf8_lossy(&dom.stderr);
    assert!(
        !console.contains("Uncaught") && !console.contains("Content Security Policy"),
        "the page's script ran without error: {console}"
    );
    let shot = format!("--screenshot={}", png.display());
    run(&[&shot, "--window-size=1200,1400"]);
    String::from_utf8(dom.stdout).unwrap()
}

#[test]
fn the_status_page_shows_what_was_sent_in_chromium() {
    let mapping = MappingFile::new("page", MAPPING);
    let t = Tallyd::start(&[&mapping.flag()]);
    send_traffic(&t);
    t.send_udp(b"checkout.latency:12|ms|#env:prod\ncheckout.latency:30|ms|#env:dev");
    t.wait_value("tallyd_lines_total", &[], 18.0);

    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../status-page.png");
    let _ = std::fs::remove_file(&png);
    let url = format!("http://{}/?name=api.users.requests&type=c", t.http);
    let dom = chromium(&url, &png);
    let page = scraper::Html::parse_document(&dom);
    let rows = |table: &str| -> Vec<Vec<String>> {
        let selector = scraper::Selector::parse(&format!("#{table} tr")).unwrap();
        let cell = scraper::Selector::parse("td").unwrap();
        page.select(&selector)
            .map(|row| {
                row.select(&cell)
                    .map(|c| c.text().collect::<String>())
                    .collect::<Vec<_>>()
            })
            .filter(|cells| !cells.is_empty())
            .collect()
    };
    let reasons = rows("reasons");
    assert_eq!(
        reasons,
        vec![
            vec!["bad_sample_rate".to_owned(), "2".to_owned()],
            vec!["bad_type".to_owned(), "1".to_owned()],
            vec!["bad_value".to_owned(), "1".to_owned()],
        ],
        "rejections by reason, by name"
    );
    let mut largest: Vec<(String, String)> = rows("largest")
        .into_iter()
        .map(|r| (r[0].clone(), r[2].clone()))
        .collect();
    largest.sort();
    assert_eq!(
        largest,
        [
            ("api_requests", "2"),
            ("baz_qux", "1"),
            ("checkout_latency", "2"),
            ("foo_bar", "1")
        ]
        .map(|(f, s)| (f.to_owned(), s.to_owned()))
    );
    let refused: Vec<String> = rows("refused").into_iter().map(|r| r[3].clone()).collect();
    assert_eq!(refused[0], "tcp.bad:1|c|@2");
    assert_eq!(refused.len(), 4);
    let unmapped = rows("unmapped");
    assert_eq!(unmapped[0], vec!["foo.bar".to_owned(), "7".to_owned()]);
    let listeners = rows("listeners");
    assert_eq!(listeners[0][0], "udp");
    assert_eq!(listeners[0][2], "12", "udp packets");
    let explanation = page
        .select(&scraper::Selector::parse("#explanation").unwrap())
        .next()
        .expect("the explain form's answer")
        .text()
        .collect::<String>();
    let explanation: Value = serde_json::from_str(&explanation).unwrap();
    assert_eq!(explanation["metric"], "api_requests");
    assert_eq!(explanation["labels"], json!({ "handler": "users" }));
    let shot = std::fs::read(&png).expect("a screenshot");
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 20_000,
        "{} bytes",
        shot.len()
    );
}

#[test]
fn the_page_escapes_what_senders_chose() {
    let mapping = MappingFile::new("escapes", MAPPING);
    let t = Tallyd::start(&[&mapping.flag()]);
    t.send_udp(b"<script>alert(1)</script>:1|q\n<b>x</b>:1|c");
    t.wait_value("tallyd_lines_total", &[], 2.0);
    let (status, page) = t.get("/");
    assert_eq!(status, 200);
    assert!(
        !page.contains("<script>alert") && !page.contains("<b>x"),
        "{page}"
    );
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;:1|q"),
        "{page}"
    );
    assert!(
        page.contains("&lt;b&gt;x&lt;/b&gt;"),
        "the unmapped name: {page}"
    );
    let (status, page) = t.get("/?name=%3Cscript%3Ex%3C%2Fscript%3E");
    assert_eq!(status, 200);
    assert!(!page.contains("<script>x"), "{page}");
    assert!(
        page.contains("value=\"&lt;script&gt;x&lt;/script&gt;\""),
        "the name in the form: {page}"
    );
}
