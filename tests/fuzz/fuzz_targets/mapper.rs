//! `Mapper::map` on arbitrary names and classes, against fixed mapping files compiled once.
//!
//! Input: byte 0 picks the class (bits 0-1, mod 3) and the mapping file (bits 2-3, mod 3):
//! `tests/data/mapping/valid.yml` (glob ordering on), the same with `glob_disable_ordering:
//! true`, or `tests/golden/mapping/mapping.yml`. The rest is the StatsD name (UTF-8, as the
//! parser only hands out UTF-8). Checked: mapping is deterministic, a `MapCache` answers as the
//! mapper does (on the miss and on the hit), a mapped name is a valid Prometheus name, and the
//! labels are sorted, unique, valid names, none reserved (`__`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;
use tallyd::config::CacheType;
use tallyd::mapping::{MapCache, Mapper, MetricClass, Outcome};

const VALID: &str = include_str!("../../data/mapping/valid.yml");
const GOLDEN: &str = include_str!("../../golden/mapping/mapping.yml");

fn mappers() -> &'static [Mapper; 3] {
    static MAPPERS: OnceLock<[Mapper; 3]> = OnceLock::new();
    MAPPERS.get_or_init(|| {
        let unordered = VALID.replace(
            "glob_disable_ordering: false",
            "glob_disable_ordering: true",
        );
        assert_ne!(
            unordered, VALID,
            "valid.yml no longer sets glob_disable_ordering"
        );
        [
            Mapper::from_yaml(VALID, Path::new("valid.yml")).expect("valid.yml compiles"),
            Mapper::from_yaml(&unordered, Path::new("valid-unordered.yml"))
                .expect("valid.yml with glob_disable_ordering compiles"),
            Mapper::from_yaml(GOLDEN, Path::new("golden/mapping.yml"))
                .expect("golden mapping.yml compiles"),
        ]
    })
}

/// A comparable form of an outcome.
fn key(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Mapped(m) => format!("{:?} {:?} {}", m.name, m.labels, m.rule),
        other => format!("{other:?}"),
    }
}

fn check(outcome: &Outcome, name: &str) {
    let Outcome::Mapped(m) = outcome else { return };
    assert!(
        tallyd::names::is_valid(&m.name),
        "{name:?} mapped to invalid name {:?}",
        m.name
    );
    for pair in m.labels.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "labels not sorted/unique: {:?}",
            m.labels
        );
    }
    for (label, _) in &m.labels {
        assert!(tallyd::names::is_valid(label), "bad label name {label:?}");
        assert!(!label.starts_with("__"), "reserved label name {label:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, name)) = data.split_first() else {
        return;
    };
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    let class = MetricClass::ALL[usize::from(selector & 3) % 3];
    let mapper = &mappers()[usize::from((selector >> 2) & 3) % 3];
    let first = mapper.map(name, class);
    check(&first, name);
    assert_eq!(
        key(&first),
        key(&mapper.map(name, class)),
        "not deterministic"
    );
    let kind = match selector & 16 {
        0 => CacheType::Lru,
        _ => CacheType::Random,
    };
    let mut cache = MapCache::new(4, kind);
    let missed = cache.get_or_map(mapper, name, class);
    let hit = cache.get_or_map(mapper, name, class);
    assert_eq!(key(&first), key(&missed), "cache miss differs");
    assert_eq!(key(&first), key(&hit), "cache hit differs");
    // The other classes must not panic either.
    for other in MetricClass::ALL {
        check(&mapper.map(name, other), name);
    }
});
