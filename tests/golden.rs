//! Golden files: every directory under `tests/golden/` is a case run against the real binary.
//! See `tests/golden/README.md` for the layout. `GOLDEN_BLESS=1 cargo test --test golden`
//! writes `expected.prom` from what tallyd produced, for a new case; review it before committing.

mod common;

use common::{promtool_check, user_part, Exposition, Tallyd};
use std::path::Path;

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn total(e: &Exposition, metric: &str) -> f64 {
    e.sum(metric)
}

fn run_case(dir: &Path) -> Result<(), String> {
    let mut args = read_lines(&dir.join("args"));
    if dir.join("mapping.yml").exists() {
        args.push(format!(
            "--statsd.mapping-config={}",
            dir.join("mapping.yml").display()
        ));
    }
    let env: Vec<(String, String)> = read_lines(&dir.join("env"))
        .into_iter()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let t = Tallyd::start_with_env(&args, &env);

    // Each paragraph (lines separated by a blank line) of input.statsd is one datagram, sent
    // once the one before has settled: every line read, every accepted sample applied or
    // refused, every update published. So the order between paragraphs is deterministic.
    let input = std::fs::read_to_string(dir.join("input.statsd")).map_err(|e| e.to_string())?;
    let mut lines = 0.0;
    let mut e = t.scrape();
    for datagram in input.split("\n\n").filter(|d| !d.trim().is_empty()) {
        lines += datagram.lines().filter(|l| !l.is_empty()).count() as f64;
        t.send_udp(datagram.trim_end_matches('\n').as_bytes());
        // Self-metrics are read one by one, not as a snapshot, so a scrape taken while a
        // batch is being applied can mix before and after: settled means the condition
        // holds on two scrapes in a row, more than a publish interval apart, with the same
        // counts.
        let settled = |e: &Exposition| {
            let applied = total(e, "tallyd_updates_total");
            e.value("tallyd_lines_total", &[]) == Some(lines)
                && total(e, "tallyd_samples_total")
                    == applied + total(e, "tallyd_type_conflicts_total")
                && total(e, "tallyd_metric_updates_total") == applied
        };
        let counts = |e: &Exposition| {
            [
                "tallyd_samples_total",
                "tallyd_updates_total",
                "tallyd_metric_updates_total",
            ]
            .map(|m| total(e, m))
        };
        loop {
            let first = t.wait_for("every line applied and published", settled);
            std::thread::sleep(std::time::Duration::from_millis(50));
            e = t.scrape();
            if settled(&e) && counts(&e) == counts(&first) {
                break;
            }
        }
    }
    promtool_check(&e.text);
    let got = user_part(&e.text);
    let expected_path = dir.join("expected.prom");
    if std::env::var_os("GOLDEN_BLESS").is_some() {
        std::fs::write(&expected_path, &got).map_err(|e| e.to_string())?;
    }
    let want = std::fs::read_to_string(&expected_path).map_err(|_| {
        format!(
            "{} is missing (GOLDEN_BLESS=1 writes it)",
            expected_path.display()
        )
    })?;
    if got != want {
        return Err(format!(
            "exposition differs\n--- want\n{want}--- got\n{got}"
        ));
    }
    for line in read_lines(&dir.join("expected-self.txt")) {
        if !e.text.lines().any(|l| l == line) {
            return Err(format!("missing self-metric line: {line}"));
        }
    }
    Ok(())
}

#[test]
fn golden_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("input.statsd").exists())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases under {}", root.display());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            run_case(case)
                .err()
                .map(|e| format!("case {}: {e}", case.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
