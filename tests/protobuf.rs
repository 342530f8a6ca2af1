//! The protobuf exposition, as a scraper that asks for it gets it from the real binary: the
//! same families, series and values as the text exposition of the same moment, and native
//! histograms as statsd_exporter 0.30 exposes them.

mod common;

use common::{Exposition, Tallyd};
use prost::Message;
use tallyd::exposition::proto::{Metric, MetricFamily, MetricType};

const ACCEPT: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// `GET /metrics` asking for protobuf: the Content-Type and every family, decoded.
fn scrape_protobuf(t: &Tallyd, gzip: bool) -> (String, Vec<MetricFamily>) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut request = agent
        .get(&format!("http://{}/metrics", t.http))
        .header("Accept", ACCEPT);
    if !gzip {
        request = request.header("Accept-Encoding", "identity");
    }
    let mut response = request.call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    let mut rest = &body[..];
    let mut families = Vec::new();
    while !rest.is_empty() {
        families.push(MetricFamily::decode_length_delimited(&mut rest).expect("a MetricFamily"));
    }
    (content_type, families)
}

fn labels(m: &Metric) -> Vec<(&str, &str)> {
    m.label.iter().map(|l| (l.name(), l.value())).collect()
}

fn find<'a>(families: &'a [MetricFamily], name: &str) -> &'a MetricFamily {
    families
        .iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("no family {name}"))
}

#[test]
fn protobuf_shows_what_the_text_shows() {
    let mapping = std::env::temp_dir().join(format!("tallyd-protobuf-{}.yml", std::process::id()));
    std::fs::write(
        &mapping,
        "mappings:\n- match: \"h.*\"\n  observer_type: histogram\n  name: \"hist_$1\"\n  help: \"A histogram\\nwith two lines\"\n  histogram_options: { buckets: [1, 10] }\n",
    )
    .unwrap();
    let t = Tallyd::start(&[&format!("--statsd.mapping-config={}", mapping.display())]);
    t.send_udp(
        b"c.requests:3|c|#route:/a\nc.requests:4|c|#route:/b\ng.depth:-2|g\n\
          t.query:250|ms\nt.query:50|ms|#db:x\nh.size:0.5|h\nh.size:5|h\nh.size:50|h\n\
          u.users:alice|s\nu.users:bob|s",
    );
    let text = t.wait_value("u_users", &[], 2.0);
    let (content_type, families) = scrape_protobuf(&t, false);
    assert_eq!(
        content_type,
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
    );
    // Every family of the text, in the same order (tallyd's own ones included). The text was
    // scraped first: a self-metric counting HTTP requests may have appeared since.
    let text_families: Vec<&str> = text
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
    let common: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| text_families.contains(n))
        .collect();
    assert_eq!(common, text_families);
    assert!(names.len() - common.len() <= 1, "{names:?}");

    let requests = find(&families, "c_requests");
    assert_eq!(requests.r#type(), MetricType::Counter);
    let values: Vec<(Vec<(&str, &str)>, f64)> = requests
        .metric
        .iter()
        .map(|m| (labels(m), m.counter.as_ref().unwrap().value()))
        .collect();
    assert_eq!(
        values,
        [(vec![("route", "/a")], 3.0), (vec![("route", "/b")], 4.0)]
    );
    let depth = find(&families, "g_depth");
    assert_eq!(depth.r#type(), MetricType::Gauge);
    assert_eq!(depth.metric[0].gauge.as_ref().unwrap().value(), -2.0);
    assert_eq!(
        find(&families, "u_users").metric[0]
            .gauge
            .as_ref()
            .unwrap()
            .value(),
        2.0
    );

    // A summary: its quantiles, sum and count, per series.
    let query = find(&families, "t_query");
    assert_eq!(query.r#type(), MetricType::Summary);
    let by_db: Vec<_> = query
        .metric
        .iter()
        .map(|m| {
            let s = m.summary.as_ref().unwrap();
            let quantiles: Vec<f64> = s.quantile.iter().map(|q| q.quantile()).collect();
            (labels(m), s.sample_count(), s.sample_sum(), quantiles)
        })
        .collect();
    assert_eq!(
        by_db,
        [
            (vec![], 1, 0.25, vec![0.5, 0.9, 0.99]),
            (vec![("db", "x")], 1, 0.05, vec![0.5, 0.9, 0.99]),
        ]
    );
    assert_eq!(
        query.metric[0].summary.as_ref().unwrap().quantile[0].value(),
        text.quantile("t_query", &[], 0.5).unwrap()
    );

    // A histogram: classic buckets (cumulative, no +Inf) and native ones; HELP unescaped.
    let size = find(&families, "hist_size");
    assert_eq!(size.r#type(), MetricType::Histogram);
    assert_eq!(size.help(), "A histogram\nwith two lines");
    let h = size.metric[0].histogram.as_ref().unwrap();
    assert_eq!((h.sample_count(), h.sample_sum()), (3, 55.5));
    let classic: Vec<(f64, u64)> = h
        .bucket
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect();
    assert_eq!(classic, [(1.0, 1), (10.0, 2)]);
    // Factor 1.1 by default: schema 3. 0.5 is bucket -8 (an upper bound, 2^-1), 5 is 19
    // (2^(19/8) = 5.19 > 5 > 2^(18/8) = 4.76), 50 is 46 (2^(46/8) = 55.7 > 50 > 2^(45/8)).
    assert_eq!(h.schema(), 3);
    assert_eq!(h.zero_threshold(), 2f64.powi(-128));
    assert_eq!(h.zero_count(), 0);
    let spans: Vec<(i32, u32)> = h
        .positive_span
        .iter()
        .map(|s| (s.offset(), s.length()))
        .collect();
    assert_eq!(spans, [(-8, 1), (26, 1), (26, 1)]);
    assert_eq!(h.positive_delta, [1, 0, 0]);
    assert!(h.negative_span.is_empty() && h.negative_delta.is_empty());

    // tallyd's own metrics come through too.
    let lines = find(&families, "tallyd_lines_total");
    assert_eq!(lines.r#type(), MetricType::Counter);
    assert!(lines.metric[0].counter.as_ref().unwrap().value() >= 10.0);

    // Gzipped, the same.
    let (_, gzipped) = scrape_protobuf(&t, true);
    assert_eq!(gzipped.len(), families.len());
    assert_eq!(find(&gzipped, "hist_size"), size);
    // A scraper that asks for text still gets text.
    assert!(Exposition::parse(&t.scrape_text()).type_of("hist_size") == Some("histogram"));
}
