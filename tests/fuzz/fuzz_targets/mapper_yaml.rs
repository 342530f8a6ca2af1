//! `Mapper::from_yaml` on arbitrary text: it must return `Ok` or `Err`, never panic, hang or
//! blow the stack. When it compiles, a few names are mapped through it (every class), which
//! must not panic either, and mapped names must be valid Prometheus names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tallyd::mapping::{Mapper, MetricClass, Outcome};

const NAMES: &[&str] = &[
    "",
    "a",
    "a.b",
    "a.b.c",
    "web.checkout.cart.get.latency",
    "web.checkout.cart.get.status_200",
    "jobs.email.done",
    "app.debug.noise",
    "legacy.shop.visits",
    "x..y",
    ".",
    "*",
    "$1",
    "0.é.ü",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mapper) = Mapper::from_yaml(text, Path::new("fuzz.yml")) else {
        return;
    };
    let _ = mapper.len();
    let _ = mapper.defaults();
    // Names from the document itself reach the rules its globs and regexes were made from.
    let own = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("match:"))
        .map(|m| m.trim().trim_matches('"'));
    for name in NAMES.iter().copied().chain(own).take(32) {
        for class in MetricClass::ALL {
            if let Outcome::Mapped(m) = mapper.map(name, class) {
                assert!(tallyd::names::is_valid(&m.name), "{:?}", m.name);
                for (label, _) in &m.labels {
                    assert!(tallyd::names::is_valid(label) && !label.starts_with("__"));
                }
            }
        }
    }
});
