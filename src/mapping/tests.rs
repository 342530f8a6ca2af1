//! Mapping files: matching, templates, defaults, errors with their key and line, the cache.

use super::template::{tokens, Token};
use super::*;
use crate::config::CacheType;
use proptest::prelude::*;
use std::path::Path;

fn mapper(yaml: &str) -> Mapper {
    Mapper::from_yaml(yaml, Path::new("test.yml")).unwrap_or_else(|e| panic!("{e}"))
}

fn error(yaml: &str) -> String {
    match Mapper::from_yaml(yaml, Path::new("bad.yml")) {
        Ok(_) => panic!("loaded:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

/// `Some((name, labels))` when mapped, `None` when unmapped; panics on drop or empty name.
fn mapped(m: &Mapper, name: &str, class: MetricClass) -> Option<(String, Vec<(String, String)>)> {
    match m.map(name, class) {
        Outcome::Mapped(found) => Some((
            found.name.to_string(),
            found
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )),
        Outcome::Unmapped => None,
        other => panic!("{name}: {other:?}"),
    }
}

fn settings(m: &Mapper, name: &str, class: MetricClass) -> Arc<RuleSettings> {
    match m.map(name, class) {
        Outcome::Mapped(found) => found.settings.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

/// One row of a table: StatsD name, class, and the expected name with its labels sorted by
/// name, or `None` for unmapped.
type Case<'a> = (
    &'a str,
    MetricClass,
    Option<(&'a str, &'a [(&'a str, &'a str)])>,
);

fn check(m: &Mapper, cases: &[Case<'_>]) {
    for (name, class, want) in cases {
        let want = want.map(|(n, labels)| {
            (
                n.to_owned(),
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<Vec<_>>(),
            )
        });
        assert_eq!(mapped(m, name, *class), want, "{name} as {class:?}");
    }
}

use MetricClass::{Counter, Gauge, Observer};

/// A histogram of `buckets`, with statsd_exporter's native defaults (factor 1.1, 256 buckets).
fn histogram(buckets: Vec<f64>) -> ObserverChoice {
    ObserverChoice::Histogram(HistogramOptions {
        buckets,
        native_bucket_factor: 1.1,
        native_max_buckets: 256,
    })
}

#[test]
fn globs() {
    let m = mapper(
        r#"
mappings:
- match: test.dispatcher.*.*.*
  name: "dispatch_events"
  labels: { processor: "$1", action: "$2", result: "$3", job: "test_dispatcher" }
- match: "*.signup.*.*"
  name: "signup_events_total"
  labels: { provider: "$2", outcome: "$3", job: "${1}_server" }
- match: "api.req_*.*_ms"
  name: "api_${1}_seconds"
  labels: { unit: "$2" }
- match: "host-*.cpu-*-*.load"
  name: "cpu_load"
  labels: { host: "$1", core: "$2", mode: "$3" }
- match: "x.a*b*c"
  name: "multi"
  labels: { one: "$1", two: "$2" }
- match: "svc.*.hits"
  name: "${1}_hits"
- match: "whole.*.*"
  name: "all_$0"
  labels: { name: "$0", missing: "$9" }
- match: "*.*"
  name: "catchall"
  labels: { first: "$1", second: "$2", third: "$3", job: "$1-$2-$3" }
"#,
    );
    check(
        &m,
        &[
            (
                "test.dispatcher.FooProcessor.send.succeeded",
                Counter,
                Some((
                    "dispatch_events",
                    &[
                        ("action", "send"),
                        ("job", "test_dispatcher"),
                        ("processor", "FooProcessor"),
                        ("result", "succeeded"),
                    ],
                )),
            ),
            (
                "foo_product.signup.facebook.failure",
                Gauge,
                Some((
                    "signup_events_total",
                    &[
                        ("job", "foo_product_server"),
                        ("outcome", "failure"),
                        ("provider", "facebook"),
                    ],
                )),
            ),
            // `$3` of a two-`*` glob is empty, as in statsd_exporter.
            (
                "foo.bar",
                Counter,
                Some((
                    "catchall",
                    &[
                        ("first", "foo"),
                        ("job", "foo-bar-"),
                        ("second", "bar"),
                        ("third", ""),
                    ],
                )),
            ),
            // `*` matches an empty component.
            (
                "foo.",
                Counter,
                Some((
                    "catchall",
                    &[
                        ("first", "foo"),
                        ("job", "foo--"),
                        ("second", ""),
                        ("third", ""),
                    ],
                )),
            ),
            ("foo.bar.baz", Counter, None),
            ("", Counter, None),
            // Partial components.
            (
                "api.req_login.latency_ms",
                Observer,
                Some(("api_login_seconds", &[("unit", "latency")])),
            ),
            ("api.request.latency_ms", Observer, None),
            ("api.req_login.latency_s", Observer, None),
            (
                "host-web1.cpu-0-user.load",
                Gauge,
                Some((
                    "cpu_load",
                    &[("core", "0"), ("host", "web1"), ("mode", "user")],
                )),
            ),
            // Several `*` in one component split like the regex `a([^.]*)b([^.]*)c`.
            (
                "x.aXbYc",
                Counter,
                Some(("multi", &[("one", "X"), ("two", "Y")])),
            ),
            (
                "x.abbc",
                Counter,
                Some(("multi", &[("one", "b"), ("two", "")])),
            ),
            // Captured text is escaped into the name, not into label values.
            ("svc.my-app.hits", Counter, Some(("my_app_hits", &[]))),
            // A glob has no `$0`, as in statsd_exporter 0.30: it expands to nothing.
            (
                "whole.a-b.c",
                Counter,
                Some(("all_", &[("missing", ""), ("name", "")])),
            ),
        ],
    );
}

#[test]
fn glob_templates_expand_as_statsd_exporters_glob_formatter() {
    // Twelve `*`s; every expectation is what statsd_exporter 0.30's fsm.TemplateFormatter
    // gives for the same template.
    let m = mapper(
        r#"
mappings:
- match: "t.*.*.*.*.*.*.*.*.*.*.*.*"
  name: "t"
  labels:
    # `$1`'s text is replaced inside `$10` too, before `$10` is read: the tenth group then
    # fills that second place, followed by the `0` left over.
    plain: "$1-$10"
    braced: "${1}-${10}"
    reversed: "$10-$1"
    twelve: "${12}${11}"
    # A `$` goes on a reference, so this is one reference, to no group.
    run_on: "$12$11"
    name: "$1_total"
    dollar: "$$1"
    unclosed: "${2"
    missing: "$13"
    zero: "$0"
"#,
    );
    let groups = "t.a.b.c.d.e.f.g.h.i.j.k.l";
    check(
        &m,
        &[(
            groups,
            Counter,
            Some((
                "t",
                &[
                    ("braced", "a-j"),
                    ("dollar", ""),
                    ("missing", ""),
                    ("name", ""),
                    ("plain", "a-j0"),
                    ("reversed", "j-a"),
                    ("run_on", ""),
                    ("twelve", "lk"),
                    ("unclosed", "b"),
                    ("zero", ""),
                ],
            )),
        )],
    );
    // A reference whose text an earlier one already replaced leaves a place without a group
    // (`$1` inside `$1x`, which names no group) or a group without a place (`$01`, group 1,
    // after `$0` took its text), written as Go's fmt.Sprintf writes them.
    let m = mapper(
        r#"
mappings:
- match: "u.*.*"
  name: "u"
  labels: { extra: "$0 $01", missing: "$1 $1x" }
"#,
    );
    check(
        &m,
        &[(
            "u.a.b",
            Counter,
            Some((
                "u",
                &[
                    ("extra", " 1%!(EXTRA string=a)"),
                    ("missing", "a %!s(MISSING)x"),
                ],
            )),
        )],
    );
}

#[test]
fn statsd_exporter_long_glob_and_trailing_empty_component() {
    // From statsd_exporter's mapper_test.go: 13 components, the last one empty.
    let m = mapper(
        r#"
mappings:
- match: request_time.*.*.*.*.*.*.*.*.*.*.*.*
  name: "tyk_http_request"
  labels: { method_and_path: "${1}", response_code: "${2}", ipv4_t4: "${10}", oauthid: "${12}" }
"#,
    );
    let name = "request_time.get/threads/1/posts.200.00000000.nonversioned.discussions.\
                a11bbcdf0ac64ec243658dc64b7100fb.172.20.0.1.12ba97b7eaa1a50001000001.";
    check(
        &m,
        &[(
            name,
            Counter,
            Some((
                "tyk_http_request",
                &[
                    ("ipv4_t4", "1"),
                    ("method_and_path", "get/threads/1/posts"),
                    ("oauthid", ""),
                    ("response_code", "200"),
                ],
            )),
        )],
    );
}

#[test]
fn first_glob_in_file_order_wins() {
    let m = mapper(
        r#"
mappings:
- match: order.*.*
  name: "testa"
  labels: { label: "${1}_foo" }
- match: order.*.bbb
  name: "testb"
  labels: { label: "${1}_foo" }
- match: "*.x"
  name: "star_first"
- match: a.x
  name: "exact_later"
- match: "*.dummy.*"
  name: metric_one
  labels: { system: $1, attribute: $2 }
- match: full.name.*
  name: metric_two
  labels: { system: static, attribute: $1 }
- match: p.q.r
  name: long
- match: p.q
  name: prefix_of_an_earlier_glob
"#,
    );
    check(
        &m,
        &[
            (
                "order.good.bbb",
                Counter,
                Some(("testa", &[("label", "good_foo")])),
            ),
            ("a.x", Counter, Some(("star_first", &[]))),
            (
                "whatever.dummy.test",
                Counter,
                Some((
                    "metric_one",
                    &[("attribute", "test"), ("system", "whatever")],
                )),
            ),
            // Needs backtracking: `full.*` is tried and fails at `dummy` first, or the reverse;
            // the captures of the failed path must not leak.
            (
                "full.name.anothertest",
                Counter,
                Some((
                    "metric_two",
                    &[("attribute", "anothertest"), ("system", "static")],
                )),
            ),
            // statsd_exporter's FSM never sets a result on a node an earlier, longer glob
            // created, so it leaves `p.q` unmapped; tallyd maps it.
            ("p.q", Counter, Some(("prefix_of_an_earlier_glob", &[]))),
            ("p.q.r", Counter, Some(("long", &[]))),
        ],
    );
}

#[test]
fn glob_disable_ordering_prefers_exact_components() {
    let m = mapper(
        r#"
defaults:
  glob_disable_ordering: true
mappings:
- match: noorder.*.*
  name: "testa"
  labels: { label: "${1}_foo" }
- match: noorder.*.bbb
  name: "testb"
  labels: { label: "${1}_foo" }
- match: noorder.ccc.bbb
  name: "testc"
  labels: { label: "ccc_foo" }
- match: backtrack.*.bbb
  name: "btb"
  labels: { label: "${1}_foo" }
- match: backtrack.justatest.aaa
  name: "bta"
  labels: { label: "${1}_foo" }
- match: "*.x"
  name: "star_first"
- match: a.x
  name: "exact_later"
"#,
    );
    check(
        &m,
        &[
            (
                "noorder.good.bbb",
                Counter,
                Some(("testb", &[("label", "good_foo")])),
            ),
            (
                "noorder.ccc.bbb",
                Counter,
                Some(("testc", &[("label", "ccc_foo")])),
            ),
            (
                "noorder.x.y",
                Counter,
                Some(("testa", &[("label", "x_foo")])),
            ),
            (
                "backtrack.good.bbb",
                Counter,
                Some(("btb", &[("label", "good_foo")])),
            ),
            // The exact `justatest` leads nowhere for `bbb`: back to the `*`.
            (
                "backtrack.justatest.bbb",
                Counter,
                Some(("btb", &[("label", "justatest_foo")])),
            ),
            (
                "backtrack.justatest.aaa",
                Counter,
                Some(("bta", &[("label", "_foo")])),
            ),
            ("a.x", Counter, Some(("exact_later", &[]))),
            ("b.x", Counter, Some(("star_first", &[]))),
        ],
    );
}

#[test]
fn regexes() {
    let m = mapper(
        r#"
mappings:
- match: (.*)\.(.*)-(.*)\.(.*)
  match_type: regex
  name: "proxy_requests_total"
  labels: { job: "$1", protocol: "$2", endpoint: "$3", result: "$4" }
- match: test3\.(\w+)\.(\w+)
  match_type: regex
  name: "${2}_$1"
- match: 'b\.(c)'
  match_type: regex
  name: "unanchored"
  labels: { whole: "$0", group: "${1}", after: "$1_foo", braced: "${1}_foo", dollar: "$$1" }
- match: '(?P<svc>\w+)\.calls'
  match_type: regex
  name: "calls"
  labels: { svc: "${svc}", nope: "${other}" }
"#,
    );
    check(
        &m,
        &[
            (
                "proxy-1.http-goober.success",
                Counter,
                Some((
                    "proxy_requests_total",
                    &[
                        ("endpoint", "goober"),
                        ("job", "proxy-1"),
                        ("protocol", "http"),
                        ("result", "success"),
                    ],
                )),
            ),
            (
                "test3.total_requests.count",
                Counter,
                Some(("count_total_requests", &[])),
            ),
            // Unanchored like Go's FindStringSubmatchIndex: `$0` is the matched text.
            (
                "a.b.c",
                Counter,
                Some((
                    "unanchored",
                    &[
                        ("after", ""),
                        ("braced", "c_foo"),
                        ("dollar", "$1"),
                        ("group", "c"),
                        ("whole", "b.c"),
                    ],
                )),
            ),
            (
                "api.calls",
                Gauge,
                Some(("calls", &[("nope", ""), ("svc", "api")])),
            ),
            ("nothing", Counter, None),
        ],
    );
}

#[test]
fn globs_win_over_earlier_regexes() {
    // statsd_exporter issue #349: the glob FSM runs first, regexes only when it finds nothing.
    let m = mapper(
        r#"
mappings:
- match: ([^.]+)\.([^.]+)
  match_type: regex
  name: "regex_$2"
- match: "only.*"
  name: "glob_only"
  match_metric_type: gauge
- match: "*.*"
  name: "glob_$2"
- match: "only\\.(.*)"
  match_type: regex
  name: "regex_only_$1"
"#,
    );
    check(
        &m,
        &[
            ("job.fetch", Counter, Some(("glob_fetch", &[]))),
            ("only.x", Gauge, Some(("glob_only", &[]))),
            // The typed glob does not apply to counters, but the untyped `*.*` does.
            ("only.x", Counter, Some(("glob_x", &[]))),
            ("a.b.c", Counter, Some(("regex_b", &[]))),
        ],
    );
    // A regex-only mapper, and one with the regex first but no glob matching.
    let m = mapper(
        "mappings:\n- match: a.*\n  name: a\n- match: '^b'\n  match_type: regex\n  name: b\n",
    );
    check(
        &m,
        &[
            ("b.x", Counter, Some(("b", &[]))),
            ("a.x", Counter, Some(("a", &[]))),
        ],
    );
}

#[test]
fn match_metric_type_limits_a_rule_to_its_class() {
    let m = mapper(
        r#"
defaults:
  match_type: regex
mappings:
- match: test.foo.*
  match_type: glob
  name: "test_foo_sum"
  match_metric_type: counter
- match: test.foo.*
  match_type: glob
  name: "test_foo_current"
  match_metric_type: gauge
- match: '^t\.(.*)'
  name: "t_gauge"
  match_metric_type: gauge
- match: '^t\.(.*)'
  name: "t_timer"
  match_metric_type: timer
- match: '^t\.(.*)'
  name: "t_any"
"#,
    );
    check(
        &m,
        &[
            ("test.foo.test", Counter, Some(("test_foo_sum", &[]))),
            ("test.foo.test", Gauge, Some(("test_foo_current", &[]))),
            ("test.foo.test", Observer, None),
            ("t.x", Gauge, Some(("t_gauge", &[]))),
            ("t.x", Observer, Some(("t_timer", &[]))),
            ("t.x", Counter, Some(("t_any", &[]))),
        ],
    );
}

#[test]
fn drop_and_empty_names() {
    let m = mapper(
        r#"
mappings:
- match: web.*
  name: "web"
  labels: { site: "$1" }
- match: two.*.*
  name: "$3"
- match: quiet.*
  action: drop
- match: .
  match_type: regex
  name: "drop"
  action: drop
"#,
    );
    assert!(matches!(m.map("test.a", Counter), Outcome::Drop));
    assert!(matches!(m.map("quiet.x", Gauge), Outcome::Drop));
    assert!(matches!(m.map("two.a.b", Counter), Outcome::EmptyName));
    check(
        &m,
        &[(
            "web.localhost",
            Counter,
            Some(("web", &[("site", "localhost")])),
        )],
    );
    // The regex `.` needs one character: the empty name is left alone.
    assert!(matches!(m.map("", Counter), Outcome::Unmapped));
}

#[test]
fn defaults_resolve_ttl_and_observers() {
    let m = mapper(
        r#"
defaults:
  ttl: 1m2s
  observer_type: histogram
  histogram_options: { buckets: [0.1, 1, 10] }
  summary_options:
    quantiles: [{ quantile: 0.9, error: 0.1 }, { quantile: 0.99, error: 0.01 }]
    max_age: 15m
    age_buckets: 3
    buf_cap: 100
mappings:
- match: plain.*
  name: plain
- match: short.*
  name: short
  ttl: 5s
- match: zero.*
  name: zero
  ttl: 0s
- match: own.*
  name: own
  histogram_options: { buckets: [1, 2] }
- match: empty.*
  name: empty
  histogram_options: { buckets: [] }
- match: summary.*
  name: summary
  observer_type: summary
- match: partial.*
  name: partial
  observer_type: summary
  summary_options: { max_age: 5m }
- match: quantiles.*
  name: quantiles
  observer_type: summary
  summary_options:
    quantiles: [{ quantile: 0.42, error: 0.04 }, { quantile: 0.7 }]
    buf_cap: 1000
"#,
    );
    let minute2 = Some(Duration::from_secs(62));
    assert_eq!(m.defaults().ttl, minute2);
    assert_eq!(settings(&m, "plain.x", Counter).ttl, minute2);
    assert_eq!(
        settings(&m, "short.x", Counter).ttl,
        Some(Duration::from_secs(5))
    );
    // 0 means "not set" in statsd_exporter, so the default applies.
    assert_eq!(settings(&m, "zero.x", Counter).ttl, minute2);

    let default_histogram = histogram(vec![0.1, 1.0, 10.0]);
    assert_eq!(*m.defaults().observer, default_histogram);
    let plain = settings(&m, "plain.x", Observer);
    assert!(
        Arc::ptr_eq(&plain.observer, &m.defaults().observer),
        "shared, not copied"
    );
    assert_eq!(
        *settings(&m, "own.x", Observer).observer,
        histogram(vec![1.0, 2.0])
    );
    assert_eq!(
        *settings(&m, "empty.x", Observer).observer,
        default_histogram
    );

    let default_summary = SummaryOptions {
        quantiles: vec![
            Quantile {
                quantile: 0.9,
                error: 0.1,
            },
            Quantile {
                quantile: 0.99,
                error: 0.01,
            },
        ],
        max_age: Some(Duration::from_secs(15 * 60)),
        age_buckets: Some(3),
        buf_cap: Some(100),
    };
    assert_eq!(
        *settings(&m, "summary.x", Observer).observer,
        ObserverChoice::Summary(default_summary.clone())
    );
    assert_eq!(
        *settings(&m, "partial.x", Observer).observer,
        ObserverChoice::Summary(SummaryOptions {
            max_age: Some(Duration::from_secs(5 * 60)),
            ..default_summary.clone()
        })
    );
    assert_eq!(
        *settings(&m, "quantiles.x", Observer).observer,
        ObserverChoice::Summary(SummaryOptions {
            quantiles: vec![
                Quantile {
                    quantile: 0.42,
                    error: 0.04
                },
                Quantile {
                    quantile: 0.7,
                    error: 0.0
                },
            ],
            buf_cap: Some(1000),
            ..default_summary
        })
    );
}

#[test]
fn built_in_defaults_are_statsd_exporters() {
    let statsd_exporter_summary = ObserverChoice::Summary(SummaryOptions {
        quantiles: [(0.5, 0.05), (0.9, 0.01), (0.99, 0.001)]
            .map(|(quantile, error)| Quantile { quantile, error })
            .to_vec(),
        max_age: None,
        age_buckets: None,
        buf_cap: None,
    });
    let none = Mapper::default();
    assert!(none.is_empty());
    assert_eq!(none.len(), 0);
    assert!(matches!(none.map("a.b", Counter), Outcome::Unmapped));
    assert_eq!(none.defaults().ttl, None);
    assert_eq!(*none.defaults().observer, statsd_exporter_summary);

    // An empty file, or one with only comments, is the same.
    for text in [
        "",
        "# nothing\n",
        "mappings: []\n",
        "defaults:\nmappings:\n",
    ] {
        let m = mapper(text);
        assert_eq!(m.len(), 0, "{text:?}");
        assert_eq!(*m.defaults().observer, statsd_exporter_summary);
    }

    let m = mapper("mappings:\n- match: a.*\n  name: a\n  observer_type: histogram\n");
    assert_eq!(
        *settings(&m, "a.b", Observer).observer,
        histogram(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
        ])
    );
    assert_eq!(m.len(), 1);
}

#[test]
fn help_honor_labels_and_scale() {
    let m = mapper(
        r#"
mappings:
- match: "jobs.*.done"
  match_metric_type: counter
  name: "jobs_done"
  labels: { kind: "$1", env: "prod" }
  help: "Jobs finished"
  scale: 0.001
  honor_labels: true
- match: "plain.*"
  name: "plain"
  labels: { env: "prod" }
  help: ""
"#,
    );
    let Outcome::Mapped(jobs) = m.map("jobs.email.done", Counter) else {
        panic!("unmapped")
    };
    assert_eq!(jobs.settings.help.as_deref(), Some("Jobs finished"));
    assert_eq!(jobs.settings.scale, Some(0.001));
    assert!(jobs.settings.honor_labels);
    assert_eq!(jobs.rule, 0);

    // honor_labels: the tag wins.
    let mut tags: Vec<(Box<str>, Box<str>)> = vec![("env".into(), "staging".into())];
    jobs.merge_labels(&mut tags);
    assert_eq!(
        tags,
        vec![
            ("env".into(), "staging".into()),
            ("kind".into(), "email".into())
        ]
    );

    let Outcome::Mapped(plain) = m.map("plain.x", Gauge) else {
        panic!("unmapped")
    };
    assert_eq!(plain.settings.help, None, "empty help means the default");
    assert_eq!(plain.settings.scale, None);
    assert!(!plain.settings.honor_labels);
    assert_eq!(plain.rule, 1);
    // Without it: the mapping's label wins.
    let mut tags: Vec<(Box<str>, Box<str>)> = vec![("env".into(), "staging".into())];
    plain.merge_labels(&mut tags);
    assert_eq!(tags, vec![("env".into(), "prod".into())]);
}

#[test]
fn outcomes_of_one_rule_share_its_settings() {
    let m = mapper("mappings:\n- match: a.*\n  name: a_$1\n  help: shared\n");
    let (Outcome::Mapped(x), Outcome::Mapped(y)) = (m.map("a.x", Counter), m.map("a.y", Gauge))
    else {
        panic!("unmapped")
    };
    assert_eq!((&*x.name, &*y.name), ("a_x", "a_y"));
    assert!(Arc::ptr_eq(&x.settings, &y.settings));
}

#[test]
fn names_longer_than_any_glob_still_reach_the_regexes() {
    let long = "a.".repeat(10_000);
    let m = mapper(
        "mappings:\n- match: a.*\n  name: a\n- match: '^a\\.a'\n  match_type: regex\n  name: r\n",
    );
    check(
        &m,
        &[
            (&long, Counter, Some(("r", &[]))),
            ("a.b", Counter, Some(("a", &[]))),
        ],
    );
    let globs_only = mapper("mappings:\n- match: a.*\n  name: a\n");
    assert!(matches!(globs_only.map(&long, Counter), Outcome::Unmapped));
}

#[test]
fn mapper_is_shareable_and_cache_movable() {
    fn shareable<T: Send + Sync>() {}
    fn movable<T: Send>() {}
    shareable::<Mapper>();
    shareable::<Outcome>();
    movable::<MapCache>();
}

// ---- errors ----

/// Asserts the message names the file, the key and the line (and each extra fragment).
fn assert_error(yaml: &str, key: &str, line: u64, fragments: &[&str]) {
    let message = error(yaml);
    let place = format!("bad.yml:{line}:");
    assert!(message.contains(&place), "{message:?} lacks {place:?}");
    assert!(
        message.contains(&format!(" {key}: ")),
        "{message:?} lacks key {key:?}"
    );
    for fragment in fragments {
        assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
    }
}

#[test]
fn unknown_keys_are_named_with_their_path() {
    assert_error(
        "mappings:\n- match: a.b\n  name: x\n- match: c.d\n  name: y\n- match: e.f\n  name: z\n  bogus: 1\n",
        "mappings[2].bogus",
        8,
        &["unknown field `bogus`"],
    );
    assert_error(
        "defaults:\n  tll: 1m\n",
        "defaults.tll",
        2,
        &["unknown field `tll`"],
    );
    assert_error("mapping: []\n", "mapping", 1, &["unknown field `mapping`"]);
    assert_error(
        "defaults:\n  summary_options:\n    quantiles: [{quantile: 0.5, eror: 1}]\n",
        "defaults.summary_options.quantiles[0].eror",
        3,
        &[],
    );
    assert_error(
        "mappings:\n- match: a.b\n  name: x\n  histogram_options:\n    bucket: [1]\n",
        "mappings[0].histogram_options.bucket",
        5,
        &[],
    );
}

#[test]
fn deprecated_keys_mean_what_statsd_exporter_0_30_reads() {
    use MetricClass::Observer;
    let quantiles = |qs: &[(f64, f64)]| -> Vec<Quantile> {
        qs.iter()
            .map(|&(quantile, error)| Quantile { quantile, error })
            .collect()
    };
    // `timer_type` stands for `observer_type` where that is not given; in `defaults`,
    // `buckets` and `quantiles` for those of the observer options; silently.
    let m = mapper(
        "defaults:\n  timer_type: histogram\n  buckets: [1, 2]\n  quantiles: [{quantile: 0.5, error: 0.1}]\n\
         mappings:\n\
         - match: h.*\n  name: h\n\
         - match: s.*\n  name: s\n  timer_type: summary\n\
         - match: o.*\n  name: o\n  timer_type: summary\n  observer_type: histogram\n",
    );
    assert!(m.warnings().is_empty(), "{:?}", m.warnings());
    assert_eq!(
        *settings(&m, "h.x", Observer).observer,
        histogram(vec![1.0, 2.0])
    );
    match &*settings(&m, "s.x", Observer).observer {
        ObserverChoice::Summary(s) => assert_eq!(s.quantiles, quantiles(&[(0.5, 0.1)])),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        *settings(&m, "o.x", Observer).observer,
        histogram(vec![1.0, 2.0])
    );
    // A rule's own `buckets` and `quantiles`: used by the observer they belong to, ignored by
    // the other, each with a warning naming file, line and key.
    let m = mapper(
        "mappings:\n\
         - match: h.*\n  name: h\n  observer_type: histogram\n  buckets: [3, 4]\n\
         - match: s.*\n  name: s\n  quantiles: [{quantile: 0.75, error: 0.01}]\n\
         - match: i.*\n  name: i\n  buckets: [5]\n",
    );
    assert_eq!(
        *settings(&m, "h.x", Observer).observer,
        histogram(vec![3.0, 4.0])
    );
    match &*settings(&m, "s.x", Observer).observer {
        ObserverChoice::Summary(s) => assert_eq!(s.quantiles, quantiles(&[(0.75, 0.01)])),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        &*settings(&m, "i.x", Observer).observer,
        ObserverChoice::Summary(_)
    ));
    assert_eq!(
        m.warnings(),
        [
            "test.yml:5:12: mappings[0].buckets: deprecated; put `buckets` under `histogram_options`",
            "test.yml:8:14: mappings[1].quantiles: deprecated; put `quantiles` under `summary_options`",
            "test.yml:11:12: mappings[2].buckets: deprecated; put `buckets` under `histogram_options`",
        ]
    );
    // Both places at once is refused, as in statsd_exporter.
    assert_error(
        "mappings:\n- match: a.b\n  name: x\n  observer_type: histogram\n  buckets: [1]\n  histogram_options: {buckets: [2]}\n",
        "mappings[0].buckets",
        5,
        &["both here and under `histogram_options`"],
    );
    // `match_metric_type: timer` means observer.
    let m = mapper("mappings:\n- match: t.*\n  name: t\n  match_metric_type: timer\n");
    assert!(mapped(&m, "t.x", Observer).is_some());
    assert!(mapped(&m, "t.x", MetricClass::Counter).is_none());
}

#[test]
fn bad_yaml_names_the_line() {
    // A key indented less than its siblings.
    let message = error("mappings:\n- match: a.b\n  name: x\n labels: {}\n");
    assert!(
        message.starts_with("invalid mapping file bad.yml:4:"),
        "{message}"
    );
    let message = error("mappings: [\n");
    assert!(message.contains("bad.yml:1:"), "{message}");
    assert_error(
        "mappings:\n- match: a.b\n  name: x\n  labels: {a: b}\n  labels: {c: d}\n",
        "mappings[0].labels",
        5,
        &["given twice"],
    );
    assert_error(
        "mappings:\n- match: a.b\n  name: x\n  labels: {a: [1]}\n",
        "mappings[0].labels.a",
        4,
        &[],
    );
    assert_error(
        "mappings:\n- match: a.b\n  name: x\n  honor_labels: maybe\n",
        "mappings[0].honor_labels",
        4,
        &[],
    );
}

#[test]
fn bad_values_are_rejected() {
    let cases: &[(&str, &str, u64, &[&str])] = &[
        (
            "mappings:\n- match: '*\\.foo'\n  match_type: regex\n  name: foo\n",
            "mappings[0].match",
            2,
            &["not a valid regex", "repetition operator"],
        ),
        (
            "mappings:\n- match: a.b\n  name: x\n  labels: {1abc: v}\n",
            "mappings[0].labels.1abc",
            4,
            &["not a valid label name"],
        ),
        (
            "mappings:\n- match: a.b\n  name: x\n  labels: {a-b: v}\n",
            "mappings[0].labels.a-b",
            4,
            &["not a valid label name"],
        ),
        (
            "mappings:\n- match: a.b\n  name: x\n  labels: {__name__: v}\n",
            "mappings[0].labels.__name__",
            4,
            &["reserved"],
        ),
        (
            "mappings:\n- match: a..b\n  name: x\n",
            "mappings[0].match",
            2,
            &["empty component"],
        ),
        (
            "mappings:\n- match: a.-b.*\n  name: x\n",
            "mappings[0].match",
            2,
            &["starts with `-`"],
        ),
        (
            "mappings:\n- match: 1a.b\n  name: x\n",
            "mappings[0].match",
            2,
            &["may not start with a digit"],
        ),
        (
            "mappings:\n- match: a.b$\n  name: x\n",
            "mappings[0].match",
            2,
            &["`$` is not allowed", "match_type: regex"],
        ),
        (
            "mappings:\n- match: a.**\n  name: x\n",
            "mappings[0].match",
            2,
            &["`**`"],
        ),
        (
            "mappings:\n- match: a.*\n  labels: {a: $1}\n",
            "mappings[0]",
            2,
            &["needs a `name`"],
        ),
        (
            "mappings:\n- name: x\n",
            "mappings[0]",
            2,
            &["needs `match`"],
        ),
        (
            "mappings:\n- match: a.*\n  name: 0foo\n",
            "mappings[0].name",
            3,
            &["starts with a digit"],
        ),
        (
            "mappings:\n- match: a.*\n  name: a.b\n",
            "mappings[0].name",
            3,
            &["`.` is not allowed"],
        ),
        (
            "mappings:\n- match: a.*\n  name: $1_total\n",
            "mappings[0].name",
            3,
            &["write `${1}_total`"],
        ),
        (
            "mappings:\n- match: a.*\n  name: \"\"\n",
            "mappings[0].name",
            3,
            &["empty"],
        ),
        (
            "mappings:\n- match: a.*\n  name: x\n  observer_type: histogram\n  histogram_options:\n    buckets: [1, 0.5]\n",
            "mappings[0].histogram_options.buckets",
            6,
            &["strictly ascending"],
        ),
        (
            "defaults:\n  histogram_options:\n    buckets: [1, .inf]\n",
            "defaults.histogram_options.buckets",
            3,
            &["not finite"],
        ),
        (
            "defaults:\n  summary_options:\n    quantiles: [{quantile: 1.5, error: 0.1}]\n",
            "defaults.summary_options.quantiles",
            3,
            &["not between 0 and 1"],
        ),
        (
            "defaults:\n  summary_options:\n    quantiles: [{quantile: 0.5, error: 1}]\n",
            "defaults.summary_options.quantiles",
            3,
            &["error `1`"],
        ),
        (
            "defaults:\n  summary_options:\n    quantiles: [{quantile: 0.5}, {quantile: 0.5}]\n",
            "defaults.summary_options.quantiles",
            3,
            &["twice"],
        ),
        (
            "mappings:\n- match: a.*\n  name: x\n  histogram_options: {buckets: [1]}\n",
            "mappings[0].histogram_options",
            4,
            &["observer_type: histogram"],
        ),
        (
            "defaults:\n  observer_type: histogram\nmappings:\n- match: a.*\n  name: x\n  summary_options: {max_age: 1m}\n",
            "mappings[0].summary_options",
            6,
            &["histogram"],
        ),
        (
            "mappings:\n- match: a.*\n  name: x\n  scale: 0\n",
            "mappings[0].scale",
            4,
            &["not 0"],
        ),
        (
            "mappings:\n- match: a.*\n  name: x\n  scale: .nan\n",
            "mappings[0].scale",
            4,
            &["finite"],
        ),
        (
            "defaults:\n  ttl: 5\n",
            "defaults.ttl",
            2,
            &["no unit", "5s"],
        ),
        (
            "mappings:\n- match: a.*\n  name: x\n  ttl: 1d\n",
            "mappings[0].ttl",
            4,
            &["not a duration"],
        ),
        (
            "mappings:\n- match: a.*\n  name: x\n  ttl: -1m\n",
            "mappings[0].ttl",
            4,
            &["negative"],
        ),
        (
            "mappings:\n- match: a.*\n  name: x\n  action: xyz\n",
            "mappings[0].action",
            4,
            &["xyz"],
        ),
        (
            "mappings:\n- match: a.*\n  name: x\n  match_type: fsm\n",
            "mappings[0].match_type",
            4,
            &["fsm"],
        ),
        (
            "mappings:\n- match: a.*\n  name: x\n  match_metric_type: wrong\n",
            "mappings[0].match_metric_type",
            4,
            &["wrong"],
        ),
        (
            "defaults:\n  observer_type: wrong\n",
            "defaults.observer_type",
            2,
            &["wrong"],
        ),
    ];
    for (yaml, key, line, fragments) in cases {
        assert_error(yaml, key, *line, fragments);
    }
}

#[test]
fn drop_rules_need_no_name_but_valid_labels() {
    let m = mapper("mappings:\n- match: a.*\n  action: drop\n");
    assert!(matches!(m.map("a.b", Counter), Outcome::Drop));
    assert_error(
        "mappings:\n- match: a.*\n  action: drop\n  labels: {'a b': c}\n",
        "mappings[0].labels.a b",
        4,
        &[],
    );
}

#[test]
fn unreadable_file_names_it() {
    let path = Path::new("/nonexistent/tallyd/mapping.yml");
    let e = Mapper::load(path).unwrap_err();
    assert!(matches!(e, MappingError::Read { .. }));
    assert!(
        e.to_string().contains("/nonexistent/tallyd/mapping.yml"),
        "{e}"
    );
}

// ---- fixtures ----

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/mapping")
        .join(name)
}

#[test]
fn realistic_file_loads_and_maps() {
    let m = Mapper::load(&fixture("valid.yml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.len(), 8);
    assert_eq!(m.defaults().ttl, Some(Duration::from_secs(600)));
    check(
        &m,
        &[
            (
                "web.checkout.cart.get.latency",
                Observer,
                Some((
                    "http_request_duration_seconds",
                    &[
                        ("endpoint", "cart"),
                        ("method", "get"),
                        ("service", "checkout"),
                    ],
                )),
            ),
            (
                "web.checkout.cart.get.status_200",
                Counter,
                Some((
                    "http_responses_total",
                    &[
                        ("code", "200"),
                        ("endpoint", "cart"),
                        ("method", "get"),
                        ("service", "checkout"),
                    ],
                )),
            ),
            ("web.checkout.cart.get.status_200", Gauge, None),
            (
                "jobs.email.done",
                Counter,
                Some(("jobs_done_total", &[("kind", "email")])),
            ),
            (
                "queue.mail.depth",
                Gauge,
                Some(("queue_depth", &[("env", "production"), ("queue", "mail")])),
            ),
            (
                "legacy.shop.orders",
                Counter,
                Some((
                    "legacy_orders",
                    &[("app", "shop"), ("original", "legacy.shop.orders")],
                )),
            ),
            ("legacy.Shop.orders", Counter, None),
        ],
    );
    assert!(matches!(m.map("web.debug.x", Counter), Outcome::Drop));
    let latency = settings(&m, "web.checkout.cart.get.latency", Observer);
    assert_eq!(
        latency.help.as_deref(),
        Some("HTTP request latency by service, endpoint and method.")
    );
    assert_eq!(
        *latency.observer,
        histogram(vec![0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
    );
    assert_eq!(
        settings(&m, "jobs.email.done", Counter).ttl,
        Some(Duration::from_secs(3600))
    );
    let ObserverChoice::Summary(jobs) = &*settings(&m, "jobs.email.duration", Observer).observer
    else {
        panic!("a summary")
    };
    assert_eq!(jobs.quantiles.len(), 1);
    assert_eq!(jobs.max_age, Some(Duration::from_secs(300)));
    assert_eq!(
        settings(&m, "db.main.query_time", Observer).scale,
        Some(0.001)
    );
    assert!(settings(&m, "queue.mail.depth", Gauge).honor_labels);
}

#[test]
fn realistic_invalid_file_names_file_key_and_line() {
    let e = Mapper::load(&fixture("invalid.yml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tests/data/mapping/invalid.yml:12:"), "{e}");
    assert!(e.contains("mappings[1].observer_typ"), "{e}");
}

// ---- pieces ----

#[test]
fn template_tokens_follow_go_expand() {
    use Token::{Dollar, Literal, Name, Number};
    let cases: &[(&str, &[Token<'_>])] = &[
        ("$1", &[Number(1)]),
        ("${1}_x", &[Number(1), Literal("_x")]),
        ("$1_x", &[Name("1_x")]),
        ("a$$b", &[Literal("a"), Dollar, Literal("b")]),
        ("${1", &[Literal("$"), Literal("{1")]),
        ("$", &[Literal("$")]),
        ("$-", &[Literal("$"), Literal("-")]),
        ("$01", &[Name("01")]),
        ("${name}", &[Name("name")]),
        ("$1-$2", &[Number(1), Literal("-"), Number(2)]),
    ];
    for (src, want) in cases {
        assert_eq!(tokens(src), *want, "{src}");
    }
}

// ---- cache ----

#[test]
fn cache_counts_hits_and_misses_and_stays_bounded() {
    let m = mapper("mappings:\n- match: a.*\n  name: a_$1\n");
    let mut cache = MapCache::new(2, CacheType::Lru);
    let name = |o: Outcome| match o {
        Outcome::Mapped(m) => m.name.to_string(),
        other => format!("{other:?}"),
    };
    assert_eq!(name(cache.get_or_map(&m, "a.x", Counter)), "a_x");
    assert_eq!(name(cache.get_or_map(&m, "a.x", Counter)), "a_x");
    assert_eq!((cache.hits(), cache.misses()), (1, 1));
    // Another class is another entry.
    cache.get_or_map(&m, "a.x", Gauge);
    assert_eq!((cache.hits(), cache.misses(), cache.len()), (1, 2, 2));
    // Full: a new name takes the place of the least recently used (a.x as a counter).
    assert_eq!(name(cache.get_or_map(&m, "b", Counter)), "Unmapped");
    assert_eq!(cache.len(), 2);
    cache.get_or_map(&m, "a.x", Gauge);
    assert_eq!((cache.hits(), cache.misses()), (2, 3));
    cache.get_or_map(&m, "a.x", Counter);
    assert_eq!((cache.hits(), cache.misses(), cache.len()), (2, 4, 2));
    // b was the least recently used: gone; a.x as a gauge stays.
    cache.get_or_map(&m, "a.x", Gauge);
    assert_eq!((cache.hits(), cache.misses()), (3, 4));

    // A reloaded mapper is not answered from the old one's entries.
    let reloaded = mapper("mappings:\n- match: a.*\n  name: b_$1\n");
    assert_eq!(name(cache.get_or_map(&reloaded, "a.x", Counter)), "b_x");
    assert_eq!(cache.misses(), 5);

    // Random replacement keeps the bound too, and answers what the mapper does.
    let mut random = MapCache::new(2, CacheType::Random);
    for n in ["a.1", "a.2", "a.3", "a.4", "a.2"] {
        assert_eq!(name(random.get_or_map(&m, n, Counter)), n.replace('.', "_"));
        assert!(random.len() <= 2);
    }
    assert_eq!(random.hits() + random.misses(), 5);

    // Capacity 0 caches nothing.
    let mut none = MapCache::new(0, CacheType::Lru);
    none.get_or_map(&m, "a.x", Counter);
    none.get_or_map(&m, "a.x", Counter);
    assert_eq!((none.hits(), none.misses(), none.len()), (0, 2, 0));

    // Without rules there is nothing to cache or count.
    let mut cache = MapCache::new(10, CacheType::Random);
    assert!(matches!(
        cache.get_or_map(&Mapper::default(), "a.x", Counter),
        Outcome::Unmapped
    ));
    assert_eq!((cache.hits(), cache.misses()), (0, 0));
    assert!(cache.is_empty());
}

// ---- properties ----

fn class() -> impl Strategy<Value = MetricClass> {
    prop_oneof![Just(Counter), Just(Gauge), Just(Observer)]
}

/// A name made of short components over a small alphabet, so that rules match often.
fn dotted_name() -> impl Strategy<Value = String> {
    prop::collection::vec("(a|b|ab|ba|aab|)", 1..5).prop_map(|parts| parts.join("."))
}

fn glob_component() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("a".to_owned()),
        2 => Just("b".to_owned()),
        1 => Just("ab".to_owned()),
        4 => Just("*".to_owned()),
        1 => Just("a*".to_owned()),
        1 => Just("*b".to_owned()),
        1 => Just("a*b".to_owned()),
        1 => Just("*a*".to_owned()),
    ]
}

fn globs_strategy() -> impl Strategy<Value = Vec<(String, Option<MetricClass>)>> {
    let glob = prop::collection::vec(glob_component(), 1..5).prop_map(|parts| parts.join("."));
    prop::collection::vec((glob, prop::option::of(class())), 1..8)
}

fn yaml_for(globs: &[(String, Option<MetricClass>)], ordered: bool) -> String {
    let mut yaml = format!(
        "defaults:\n  glob_disable_ordering: {}\nmappings:\n",
        !ordered
    );
    for (i, (glob, class)) in globs.iter().enumerate() {
        yaml.push_str(&format!(
            "- match: '{glob}'\n  name: r{i}\n  labels: {{ c: '$1|$2|$3|$4|$5|$6|$7|$8' }}\n"
        ));
        if let Some(class) = class {
            let t = ["counter", "gauge", "observer"][class.index()];
            yaml.push_str(&format!("  match_metric_type: {t}\n"));
        }
    }
    yaml
}

/// statsd_exporter's pre-FSM semantics: each glob as the regex `^…$` with `*` → `([^.]*)`,
/// tried in file order.
fn reference(
    globs: &[(String, Option<MetricClass>)],
    name: &str,
    class: MetricClass,
) -> Option<(usize, Vec<String>)> {
    globs.iter().enumerate().find_map(|(i, (glob, only))| {
        if only.is_some_and(|c| c != class) {
            return None;
        }
        let regex = glob_regex(glob);
        let found = regex.captures(name)?;
        Some((
            i,
            found
                .iter()
                .skip(1)
                .map(|m| m.map_or(String::new(), |m| m.as_str().to_owned()))
                .collect(),
        ))
    })
}

fn glob_regex(glob: &str) -> regex::Regex {
    let body: Vec<String> = glob.split('*').map(regex::escape).collect();
    regex::Regex::new(&format!("^{}$", body.join("([^.]*)"))).unwrap()
}

fn rule_and_captures(m: &Mapper, name: &str, class: MetricClass) -> Option<(usize, Vec<String>)> {
    match m.map(name, class) {
        Outcome::Mapped(found) => {
            let captures = found.labels[0].1.split('|').map(str::to_owned).collect();
            Some((found.rule, captures))
        }
        Outcome::Unmapped => None,
        other => panic!("{other:?}"),
    }
}

proptest! {
    #[test]
    fn map_never_panics(name in "\\PC{0,80}", dotted in dotted_name(), class in class()) {
        let file = Mapper::load(&fixture("valid.yml")).unwrap();
        let partial = mapper(
            "mappings:\n- match: '*.a*b*c.*'\n  name: x_${1}_$2\n  labels: {all: $0, x: $9}\n\
             - match: '*'\n  name: y_$1\n- match: '(.*)\\.(\\w*)'\n  match_type: regex\n  name: z_$2\n",
        );
        for m in [&file, &partial] {
            for n in [&name, &dotted] {
                match m.map(n, class) {
                    Outcome::Mapped(found) => prop_assert!(crate::names::is_valid(&found.name)),
                    Outcome::Unmapped | Outcome::Drop | Outcome::EmptyName => {}
                }
            }
        }
    }

    #[test]
    fn ordered_trie_equals_first_matching_glob(
        globs in globs_strategy(),
        names in prop::collection::vec(dotted_name(), 1..10),
        class in class(),
    ) {
        let m = mapper(&yaml_for(&globs, true));
        for name in &names {
            let mut want = reference(&globs, name, class);
            if let Some((_, captures)) = &mut want {
                captures.resize(8, String::new());
            }
            prop_assert_eq!(rule_and_captures(&m, name, class), want, "{}", name);
        }
    }

    #[test]
    fn unordered_trie_finds_a_matching_glob_whenever_one_exists(
        globs in globs_strategy(),
        names in prop::collection::vec(dotted_name(), 1..10),
        class in class(),
    ) {
        let m = mapper(&yaml_for(&globs, false));
        for name in &names {
            let found = rule_and_captures(&m, name, class);
            prop_assert_eq!(found.is_some(), reference(&globs, name, class).is_some(), "{}", name);
            if let Some((rule, captures)) = found {
                let (glob, only) = &globs[rule];
                prop_assert!(only.is_none_or(|c| c == class));
                let regex = glob_regex(glob);
                let expected: Vec<String> = regex
                    .captures(name)
                    .expect("the chosen glob matches")
                    .iter()
                    .skip(1)
                    .map(|m| m.map_or(String::new(), |m| m.as_str().to_owned()))
                    .chain(std::iter::repeat(String::new()))
                    .take(8)
                    .collect();
                prop_assert_eq!(captures, expected);
            }
        }
    }

    #[test]
    fn cache_agrees_with_the_mapper(
        names in prop::collection::vec((dotted_name(), class()), 1..40),
        capacity in 0usize..8,
        random in any::<bool>(),
    ) {
        let m = Mapper::load(&fixture("valid.yml")).unwrap();
        let partial = mapper("mappings:\n- match: '*.a*'\n  name: x_$1\n- match: '*.b'\n  action: drop\n");
        let kind = if random { CacheType::Random } else { CacheType::Lru };
        let mut cache = MapCache::new(capacity, kind);
        for (name, class) in &names {
            for m in [&m, &partial] {
                let direct = format!("{:?}", m.map(name, *class));
                let cached = format!("{:?}", cache.get_or_map(m, name, *class));
                prop_assert_eq!(direct, cached);
            }
        }
        prop_assert!(cache.len() <= capacity);
        prop_assert_eq!(cache.hits() + cache.misses(), 2 * names.len() as u64);
    }
}

#[test]
fn dashes_in_globs_load_as_in_statsd_exporter() {
    // statsd_exporter's mapper_test.go, "Config with multiple dashes in metric name".
    let m = mapper("mappings:\n- match: \"foo--bar.*\"\n  name: \"foo_bar_${1}\"\n");
    check(
        &m,
        &[("foo--bar.count", Counter, Some(("foo_bar_count", &[])))],
    );
}

#[test]
fn native_histogram_options_inherit_as_in_statsd_exporter() {
    let native = |m: &Mapper, name: &str| match &*settings(m, name, Observer).observer {
        ObserverChoice::Histogram(h) => (h.native_bucket_factor, h.native_max_buckets),
        other => panic!("{other:?}"),
    };
    // No options anywhere: statsd_exporter's 1.1 and 256.
    let m = mapper("defaults:\n  observer_type: histogram\nmappings:\n- match: a.*\n  name: a\n");
    assert_eq!(native(&m, "a.x"), (1.1, 256));
    assert_eq!(
        *m.defaults().observer,
        ObserverChoice::Histogram(HistogramOptions {
            buckets: vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            native_bucket_factor: 1.1,
            native_max_buckets: 256,
        })
    );
    // A rule's factor counts when above 0, its most buckets when above 0; else the defaults'.
    let m = mapper(
        r#"
defaults:
  observer_type: histogram
  histogram_options: { buckets: [1, 2], native_histogram_bucket_factor: 2, native_histogram_max_buckets: 4 }
mappings:
- { match: "inh.*", name: inh }
- { match: "zero.*", name: zero, histogram_options: { native_histogram_bucket_factor: 0, native_histogram_max_buckets: 0 } }
- { match: "neg.*", name: neg, histogram_options: { native_histogram_bucket_factor: -3 } }
- { match: "ovf.*", name: ovf, histogram_options: { native_histogram_bucket_factor: 1.1 } }
- { match: "ovm.*", name: ovm, histogram_options: { native_histogram_max_buckets: 100 } }
- { match: "off.*", name: off, histogram_options: { native_histogram_bucket_factor: 0.5 } }
"#,
    );
    for (name, want) in [
        ("inh.x", (2.0, 4)),
        ("zero.x", (2.0, 4)),
        ("neg.x", (2.0, 4)),
        ("ovf.x", (1.1, 4)),
        ("ovm.x", (2.0, 100)),
        ("off.x", (0.5, 4)),
        ("unmapped", (2.0, 4)),
    ] {
        let got = if name == "unmapped" {
            match &*m.defaults().observer {
                ObserverChoice::Histogram(h) => (h.native_bucket_factor, h.native_max_buckets),
                other => panic!("{other:?}"),
            }
        } else {
            native(&m, name)
        };
        assert_eq!(got, want, "{name}");
    }
    // In `defaults`, only 0 means "the default": a negative factor turns native buckets off.
    let m = mapper(
        "defaults:\n  observer_type: histogram\n  histogram_options: { native_histogram_bucket_factor: -3 }\nmappings:\n- match: a.*\n  name: a\n",
    );
    assert_eq!(native(&m, "a.x"), (-3.0, 256));
    let e = error(
        "defaults:\n  observer_type: histogram\nmappings:\n- match: a.*\n  name: a\n  histogram_options: { native_histogram_bucket_factor: .nan }\n",
    );
    assert!(
        e.contains("mappings[0].histogram_options.native_histogram_bucket_factor")
            && e.contains("not a finite number"),
        "{e}"
    );
}
