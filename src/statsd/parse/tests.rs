use super::*;
use proptest::prelude::*;

fn metric(line: &[u8]) -> Result<Line<'_>, RejectReason> {
    match parse_line(line)? {
        Datum::Metric(line) => Ok(line),
        other => panic!("{other:?}"),
    }
}

fn samples(line: &str) -> Vec<Result<Sample<'_>, RejectReason>> {
    metric(line.as_bytes()).unwrap().samples().collect()
}

fn one(line: &str) -> Sample<'static> {
    match samples(line).as_slice() {
        [Ok(sample)] => Sample {
            text: "",
            ..*sample
        },
        other => panic!("{line:?} gave {other:?}"),
    }
}

type TagList<'a> = Vec<Result<(&'a str, &'a str), TagError>>;

/// The name and tags of a metric line parsed with `styles`.
fn named(line: &[u8], styles: TagStyles) -> (String, TagList<'_>) {
    match parse(line, styles) {
        Ok(Datum::Metric(line)) => (line.name.into_owned(), line.tags.iter().collect()),
        other => panic!("{other:?}"),
    }
}

fn sample(
    metric_type: MetricType,
    value: f64,
    relative: bool,
    sample_rate: f64,
) -> Sample<'static> {
    Sample {
        metric_type,
        value,
        text: "",
        relative,
        sample_rate,
    }
}

/// Compares everything but the value's text.
fn same(a: &Sample<'_>, b: &Sample<'_>) -> bool {
    Sample { text: "", ..*a } == Sample { text: "", ..*b }
}

macro_rules! assert_samples {
    ($got:expr, $want:expr) => {{
        let got: Vec<Result<Sample<'_>, RejectReason>> = $got;
        let want: Vec<Result<Sample<'_>, RejectReason>> = $want.into_iter().collect();
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(&want) {
            match (g, w) {
                (Ok(g), Ok(w)) => assert!(same(g, w), "{g:?} vs {w:?}"),
                _ => assert_eq!(g, w),
            }
        }
    }};
}

#[test]
fn every_type() {
    use MetricType::*;
    assert_eq!(one("a:1|c"), sample(Counter, 1.0, false, 1.0));
    assert_eq!(one("a:42|g"), sample(Gauge, 42.0, false, 1.0));
    assert_eq!(one("a:12.5|ms"), sample(Timer, 12.5, false, 1.0));
    assert_eq!(one("a:3|h"), sample(Histogram, 3.0, false, 1.0));
    assert_eq!(one("a:0.25|d"), sample(Distribution, 0.25, false, 1.0));
}

#[test]
fn gauge_sign_means_relative() {
    assert_eq!(one("q:+3|g"), sample(MetricType::Gauge, 3.0, true, 1.0));
    assert_eq!(one("q:-3|g"), sample(MetricType::Gauge, -3.0, true, 1.0));
    // A sign on a timer is just a sign.
    assert_eq!(one("t:-3|ms"), sample(MetricType::Timer, -3.0, false, 1.0));
}

#[test]
fn sample_rate_and_tags_in_any_order() {
    let line = metric(b"req:2|c|#region:eu,tier:web|@0.5").unwrap();
    assert_eq!(line.name, "req");
    assert_eq!(
        line.tags.iter().collect::<TagList<'_>>(),
        [Ok(("region", "eu")), Ok(("tier", "web"))]
    );
    assert_samples!(
        line.samples().collect(),
        [Ok(sample(MetricType::Counter, 2.0, false, 0.5))]
    );
}

#[test]
fn dogstatsd_extension_fields_are_ignored_but_the_container_id() {
    for line in [
        "a:1|c|card:low",
        "a:1|c|e:it-false,cn-app|card:high",
        "a:1|c|c:abc|@1",
        "a:1|c|c:abc123|T1656581400|@1",
    ] {
        assert_eq!(
            one(line),
            sample(MetricType::Counter, 1.0, false, 1.0),
            "{line}"
        );
    }
    let (_, tags) = named(b"a:1|c|#k:v|c:abc123|T1656581400|@1", TagStyles::ALL);
    assert_eq!(tags, [Ok(("k", "v")), Ok(("container_id", "abc123"))]);
    let (_, tags) = named(b"a:1|c|card:low|e:x", TagStyles::ALL);
    assert_eq!(tags, []);
}

#[test]
fn packed_values_share_type_and_rate() {
    assert_samples!(
        samples("lat:1:2:3|d|@0.5|#k:v"),
        [1.0, 2.0, 3.0].map(|v| Ok(sample(MetricType::Distribution, v, false, 0.5)))
    );
}

#[test]
fn legacy_groups_each_have_a_type() {
    assert_samples!(
        samples("a:1|c:2|ms|@0.1:x|g"),
        [
            Ok(sample(MetricType::Counter, 1.0, false, 1.0)),
            Ok(sample(MetricType::Timer, 2.0, false, 0.1)),
            Err(RejectReason::BadValue),
        ]
    );
    assert_samples!(
        samples("a:1|c:2"),
        [Ok(one("a:1|c")), Err(RejectReason::MalformedLine)]
    );
}

#[test]
fn rejections_have_reasons() {
    let cases: &[(&[u8], RejectReason)] = &[
        (b"no_colon", RejectReason::MalformedLine),
        (b":1|c", RejectReason::MalformedLine),
        (b"a:", RejectReason::MalformedLine),
        (b"a:1", RejectReason::MalformedLine),
        (b"a:1|", RejectReason::MalformedLine),
        (b"a:1|x", RejectReason::BadType),
        (b"a,k=v:1|c|#x:y", RejectReason::MixedTaggingStyles),
        (b"a#k=v:1|c|@0.5|#x:y", RejectReason::MixedTaggingStyles),
        (b"a[k=v]:1|c|#x:y", RejectReason::MixedTaggingStyles),
        (b"[k=v]:1|c", RejectReason::MalformedLine),
        (b"_e{5,x}:title|text", RejectReason::MalformedLine),
        (b"a:1|c|@0", RejectReason::BadSampleRate),
        (b"a:1|c|@1.5", RejectReason::BadSampleRate),
        (b"a:1|c|@-1", RejectReason::BadSampleRate),
        (b"a:1|c|@abc", RejectReason::BadSampleRate),
        (b"a:\xff|c", RejectReason::InvalidUtf8),
    ];
    for (line, reason) in cases {
        assert_eq!(
            parse_line(line).err(),
            Some(*reason),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
    let sample_cases = [
        ("a:abc|c", RejectReason::BadValue),
        ("a:|c", RejectReason::BadValue),
        ("a:NaN|g", RejectReason::BadValue),
        ("a:inf|ms", RejectReason::BadValue),
        ("a:-1|c", RejectReason::NegativeCounter),
    ];
    for (line, reason) in sample_cases {
        assert_eq!(samples(line), [Err(reason)], "{line}");
    }
    assert_eq!(samples("a:|s"), [Err(RejectReason::BadValue)]);
}

#[test]
fn tags_without_values_are_errors() {
    let (_, got) = named(b"x:1|c|#a:1,flag,:x,b:c:d,,e:", TagStyles::ALL);
    assert_eq!(
        got,
        [
            Ok(("a", "1")),
            Err(TagError),
            Err(TagError),
            Ok(("b", "c:d")),
            Err(TagError),
            Err(TagError)
        ]
    );
    let (_, got) = named(b"x,a=1,flag,b=c=d,:1|c", TagStyles::ALL);
    assert_eq!(got, [Ok(("a", "1")), Err(TagError), Ok(("b", "c=d"))]);
}

#[test]
fn tag_values_with_control_characters_are_errors() {
    let line = "x:1|c|#a:x\0y,b:x\ry,c:\u{1b}[31m,d:\u{7f},e:ü\tok,f:ok";
    let (_, got) = named(line.as_bytes(), TagStyles::ALL);
    assert_eq!(
        got,
        [
            Err(TagError),
            Err(TagError),
            Err(TagError),
            Err(TagError),
            Err(TagError),
            Ok(("f", "ok"))
        ]
    );
}

#[test]
fn every_tag_style() {
    let k = Ok(("k", "v"));
    let k2 = Ok(("k2", "v2"));
    let cases: [(&[u8], &str, TagList<'_>); 11] = [
        (b"req:1|c|#k:v", "req", vec![k]),
        (b"req:1|c|#k:v|@0.5|#k2:v2", "req", vec![k, k2]),
        (b"req:1|c|##k:v,#k2:v2", "req", vec![k, k2]),
        (b"req,k=v,k2=v2:1|c", "req", vec![k, k2]),
        (b"req#k=v,k2=v2:1|c", "req", vec![k, k2]),
        (
            b"req#k=v,k2=v2,x=1#2:1|c",
            "req",
            vec![k, k2, Ok(("x", "1#2"))],
        ),
        (b"req,k=v#k2=v2:1|c", "req", vec![Ok(("k", "v#k2=v2"))]),
        (b"req[k=v,k2=v2]:1|c", "req", vec![k, k2]),
        (b"req[k=v].total:1|c", "req.total", vec![k]),
        (b"req,x=y[k=v]:1|c", "req,x=y", vec![k]),
        (b"req:1|c", "req", vec![]),
    ];
    for (input, name, tags) in cases {
        assert_eq!(named(input, TagStyles::ALL), (name.to_owned(), tags));
    }
}

#[test]
fn a_signalfx_bracket_without_its_partner_leaves_the_name_as_it_is() {
    for input in [
        &b"[tag1=bar,tag2=bazfoo.test:100|c"[..],
        b"tag1=bar,tag2=baz]foo.test:100|c",
        b"a]b[c=d:1|c",
    ] {
        let name = std::str::from_utf8(input)
            .unwrap()
            .split(':')
            .next()
            .unwrap();
        assert_eq!(
            named(input, TagStyles::ALL),
            (name.to_owned(), vec![Err(TagError)])
        );
    }
}

#[test]
fn name_tags_none_of_them_valid_let_dogstatsd_tags_through() {
    assert_eq!(
        named(b"req,bad:1|c|#k:v", TagStyles::ALL),
        ("req".to_owned(), vec![Err(TagError), Ok(("k", "v"))])
    );
}

#[test]
fn switched_off_styles_stay_in_the_name() {
    let none = TagStyles {
        dogstatsd: false,
        influxdb: false,
        librato: false,
        signalfx: false,
    };
    for input in [&b"req,k=v:1|c"[..], b"req#k=v:1|c", b"req[k=v]:1|c"] {
        let (name, tags) = named(input, none);
        assert_eq!(tags, []);
        assert_eq!(Some(name.as_bytes()), input.split(|&b| b == b':').next());
    }
    let no_dogstatsd = TagStyles {
        dogstatsd: false,
        ..TagStyles::ALL
    };
    assert_eq!(
        named(b"req:1|c|#x:y|c:abc", no_dogstatsd),
        ("req".to_owned(), vec![Ok(("container_id", "abc"))]),
        "the |# field is ignored"
    );
    assert_eq!(
        parse(b"req,k=v:1|c|#x:y", no_dogstatsd),
        Err(RejectReason::MixedTaggingStyles),
        "statsd_exporter refuses name tags beside a |# field it does not read"
    );
}

#[test]
fn events_and_service_checks_are_not_metrics() {
    assert_eq!(parse_line(b"_e{5,4}:title|text|#k:v"), Ok(Datum::Event));
    assert_eq!(parse_line(b"_sc|db.up|0|#k:v"), Ok(Datum::ServiceCheck));
}

#[test]
fn sets_keep_the_member_text() {
    let got = samples("users:alice|s|#k:v");
    let member = got[0].unwrap();
    assert_eq!(
        (member.metric_type, member.text),
        (MetricType::Set, "alice")
    );
}

#[test]
fn short_decimals_take_the_fast_way_and_read_as_the_standard_parser_reads_them() {
    for (text, value) in [
        ("1", 1.0),
        ("12.5", 12.5),
        ("0.1", 0.1),
        (".25", 0.25),
        ("5.", 5.0),
        ("123456789.012345", 123_456_789.012_345),
    ] {
        assert_eq!(small_decimal(text), Some(value), "{text}");
        assert_eq!(text.parse::<f64>().ok(), Some(value), "{text}");
    }
    // Signs, exponents, two points, no digit, 16 digits: the standard parser's.
    for text in ["-1", "+1", "1e5", "1.2.3", ".", "", "1234567890123456"] {
        assert_eq!(small_decimal(text), None, "{text}");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        for line in bytes.split(|&b| b == b'\n') {
            if let Ok(Datum::Metric(parsed)) = parse_line(line) {
                for sample in parsed.samples().flatten() {
                    prop_assert!(sample.value.is_finite());
                    prop_assert!(sample.sample_rate > 0.0 && sample.sample_rate <= 1.0);
                }
                let raw_len = line.len();
                prop_assert!(parsed.tags.iter().count() <= raw_len);
            }
        }
    }

    #[test]
    fn line_shaped_input_never_panics(line in "[a-z.]{0,8}(:[-+0-9.e]{0,6}){0,3}(\\|[a-z@#:,.0-9]{0,8}){0,4}") {
        if let Ok(Datum::Metric(parsed)) = parse_line(line.as_bytes()) {
            for sample in parsed.samples().flatten() {
                prop_assert!(sample.metric_type != MetricType::Counter || sample.value >= 0.0);
            }
        }
    }

    #[test]
    fn numbers_read_the_same_whichever_way_they_are_parsed(
        text in "[0-9]{1,17}|[0-9]{0,9}\\.?[0-9]{0,9}|[-+0-9.e]{0,8}"
    ) {
        let fast = small_decimal(&text);
        let std = text.parse::<f64>().ok();
        let digits = text.bytes().filter(u8::is_ascii_digit).count();
        let points = text.bytes().filter(|&b| b == b'.').count();
        let plain = text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if fast.is_some() {
            prop_assert_eq!(fast.map(f64::to_bits), std.map(f64::to_bits));
        } else {
            // Only short plain decimals take the fast way.
            prop_assert!(!plain || points > 1 || digits == 0 || digits > 15);
        }
    }

    #[test]
    fn well_formed_counters_round_trip(name in "[a-z][a-z0-9._]{0,20}", value in 0u32..1_000_000, rate in 1u32..=100) {
        let rate = f64::from(rate) / 100.0;
        let line = format!("{name}:{value}|c|@{rate}");
        let parsed = metric(line.as_bytes()).unwrap();
        prop_assert_eq!(&*parsed.name, name.as_str());
        let got: Vec<_> = parsed.samples().map(|s| s.map(|s| Sample { text: "", ..s })).collect();
        prop_assert_eq!(got, vec![Ok(sample(MetricType::Counter, f64::from(value), false, rate))]);
    }
}
