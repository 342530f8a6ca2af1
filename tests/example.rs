//! Runs `examples/counter_system.rs` (built by `cargo test` with the other targets) against a
//! real tallyd and checks the statistics it prints.

mod common;

use common::Tallyd;
use std::process::Command;

#[test]
fn counter_system_example_reports_what_was_sent() {
    let t = Tallyd::start(&[]);
    // Integration tests live in target/<profile>/deps; examples in target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/counter_system");
    if !example.exists() {
        // `cargo test` builds examples with the other targets; `cargo test --test example`
        // does not, so build it here (a no-op when it is fresh).
        let profile = example
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .file_name()
            .unwrap();
        let built = Command::new(env!("CARGO"))
            .args(["build", "--example", "counter_system", "--profile"])
            .arg(if profile == "debug" {
                "dev".as_ref()
            } else {
                profile
            })
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(built.success());
    }
    let out = Command::new(example)
        .args([
            "--statsd",
            &t.udp.to_string(),
            "--http",
            &t.http.to_string(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 4 clients x 50 updates, every third a decrement: 34 up, 16 down each.
    assert!(
        stdout.contains("total value:                       72\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("total operations:                  200\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("counters:                          4\n"),
        "{stdout}"
    );
    let rate: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("average updates/s per counter:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // 51 updates each within the last ten seconds (the reset and the 50), over nine seconds and
    // the current one so far, whenever they are read within the window: 5.1 to 5.7 a second.
    assert!((5.0..=5.7).contains(&rate), "{stdout}");
}
