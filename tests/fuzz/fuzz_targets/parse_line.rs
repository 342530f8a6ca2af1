//! `tallyd::statsd::parse::parse` on one arbitrary line.
//!
//! Input: byte 0 picks the tag styles (bit 0 DogStatsD, 1 InfluxDB, 2 Librato, 3 SignalFX); the
//! rest is the line. Every sample and every tag is iterated, and what the parser promises is
//! checked: rates in (0, 1], finite values, no negative counter, a set member never empty, a
//! tag key never empty, a name never empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tallyd::statsd::parse::{self, Datum, MetricType, RejectReason, TagStyles};

fn styles(bits: u8) -> TagStyles {
    TagStyles {
        dogstatsd: bits & 1 != 0,
        influxdb: bits & 2 != 0,
        librato: bits & 4 != 0,
        signalfx: bits & 8 != 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, line)) = data.split_first() else {
        return;
    };
    let styles = styles(selector);
    let datum = match parse::parse(line, styles) {
        Ok(datum) => datum,
        Err(reason) => {
            assert!(RejectReason::ALL.contains(&reason));
            if reason == RejectReason::InvalidUtf8 {
                assert!(std::str::from_utf8(line).is_err());
            }
            return;
        }
    };
    // Accepted lines are UTF-8.
    let text = std::str::from_utf8(line).expect("an accepted line is UTF-8");
    let Datum::Metric(parsed) = datum else {
        return;
    };
    assert!(!parsed.name.is_empty(), "empty name accepted: {text:?}");
    let styles_off = !(styles.dogstatsd || styles.influxdb || styles.librato || styles.signalfx);
    for tag in parsed.tags.iter().flatten() {
        assert!(
            !styles_off || tag.0 == "container_id",
            "tags while every style is off: {text:?}"
        );
    }
    for tag in parsed.tags.iter() {
        if let Ok((key, _value)) = tag {
            assert!(!key.is_empty(), "empty tag key: {text:?}");
        }
    }
    let observes = parsed.observes();
    for sample in parsed.samples() {
        let Ok(sample) = sample else { continue };
        assert!(
            sample.sample_rate > 0.0 && sample.sample_rate <= 1.0,
            "rate {} from {text:?}",
            sample.sample_rate
        );
        assert!(sample.value.is_finite(), "value from {text:?}");
        match sample.metric_type {
            MetricType::Counter => assert!(sample.value >= 0.0, "negative counter: {text:?}"),
            MetricType::Set => assert!(!sample.text.is_empty()),
            MetricType::Gauge => {
                assert_eq!(sample.relative, sample.text.starts_with(['+', '-']));
            }
            MetricType::Timer | MetricType::Histogram | MetricType::Distribution => {}
        }
        if observes {
            assert!(matches!(
                sample.metric_type,
                MetricType::Timer | MetricType::Histogram | MetricType::Distribution
            ));
        }
        // The conversion to an update must not panic either.
        let _ = tallyd::update::Op::from_sample(&sample);
    }
});
