//! tallyd scraped by a real Prometheus server (`/usr/bin/prometheus`, from Debian's
//! `prometheus` package, which `tests/run.sh` installs): StatsD in, PromQL out.
//!
//! - `prometheus_scrapes_tallyd_and_answers_promql`: Prometheus scrapes tallyd every second;
//!   the counter, gauge and timer sent over UDP come back through `/api/v1/query`, and so
//!   does a positive `rate()` of the counter.
//! - `prometheus_reads_native_histograms_over_protobuf`: a Prometheus with native histograms on
//!   scrapes the protobuf format and answers `histogram_quantile` over the native series.
//! - `prometheus_stores_what_tallyd_pushes_by_remote_write`: a Prometheus with its
//!   remote-write receiver on stores, for every user series tallyd shows on `/metrics`
//!   (counter, gauge, summary, histogram), the value `/metrics` shows, with the label tallyd
//!   was told to add.
//! - `the_final_push_at_shutdown_reaches_prometheus`: with an hour between pushes, the values
//!   sent before SIGTERM reach Prometheus by the final push.
//! - `the_annotation_scrape_config_keeps_one_target_per_annotated_pod`: the job in
//!   `deploy/prometheus/scrape-config.yml`, with its Kubernetes discovery replaced by static
//!   targets carrying the labels that pod discovery gives (Debian's Prometheus is built without
//!   Kubernetes discovery), keeps exactly the tallyd port of the annotated running pod.
//!
//! Every wait polls with a deadline; Prometheus is killed when its guard drops, panic or not.

mod common;

use common::{swap_kubernetes_sd, Tallyd};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long Prometheus may take to start, scrape, and answer as expected.
const DEADLINE: Duration = Duration::from_secs(15);
const INSTALL_HINT: &str = "run `bash tests/run.sh`, which installs Debian's prometheus package";

/// A Prometheus server on a free loopback port with its TSDB in a fresh directory; killed,
/// and its directory removed, on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    agent: ureq::Agent,
}

/// A directory of its own under Cargo's temporary directory for integration tests.
fn scratch_dir(what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback port nothing listens on right now: bound to 127.0.0.1:0, then released.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn prometheus_binary() -> PathBuf {
    let path = PathBuf::from("/usr/bin/prometheus");
    assert!(
        path.is_file(),
        "{} is missing: {INSTALL_HINT}",
        path.display()
    );
    path
}

impl Prometheus {
    /// Starts Prometheus with `config` as its prometheus.yml and waits until `/-/ready`.
    fn start(config: &str) -> Prometheus {
        Self::start_with(config, &[])
    }

    /// As [`Prometheus::start`], with extra flags.
    fn start_with(config: &str, flags: &[&str]) -> Prometheus {
        let binary = prometheus_binary();
        let dir = scratch_dir("prometheus");
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        // The port is free when picked but could be taken before Prometheus binds it: retry.
        for _ in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
            let child = Command::new(&binary)
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .args(flags)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let mut prometheus = Prometheus {
                child,
                addr,
                dir: dir.clone(),
                agent: agent.clone(),
            };
            let start = Instant::now();
            loop {
                if let Some(status) = prometheus.child.try_wait().unwrap() {
                    let log = prometheus.log();
                    if log.contains("address already in use") {
                        break;
                    }
                    panic!("prometheus exited at start-up ({status}); its log:\n{log}");
                }
                if prometheus.get("/-/ready", &[]).0 == 200 {
                    return prometheus;
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "prometheus did not become ready; its log:\n{}",
                    prometheus.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("no free port for prometheus after 3 tries");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path?query`, returning status and body; a transport error reads as status 0.
    fn get(&self, path: &str, query: &[(&str, &str)]) -> (u16, String) {
        let request = self
            .agent
            .get(&format!("http://{}{path}", self.addr))
            .query_pairs(query.iter().copied());
        match request.call() {
            Ok(mut response) => {
                let status = response.status().as_u16();
                (status, response.body_mut().read_to_string().unwrap())
            }
            Err(_) => (0, String::new()),
        }
    }

    /// Evaluates a PromQL instant query; the value of each series of the vector result.
    fn query(&self, promql: &str) -> Vec<f64> {
        let (status, body) = self.get("/api/v1/query", &[("query", promql)]);
        assert!(
            status == 200 && body.contains(r#""status":"success""#),
            "query {promql:?} failed ({status}): {body}"
        );
        vector_values(&body)
    }

    /// Polls `promql` until its single value satisfies `ok`; panics at the deadline with the
    /// last answer and Prometheus' log.
    fn wait_for(&self, promql: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let start = Instant::now();
        loop {
            let values = self.query(promql);
            if let [value] = values[..] {
                if ok(value) {
                    return value;
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {promql} {what}; last answer {values:?}; prometheus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `promql` is exactly `want`.
    fn wait_value(&self, promql: &str, want: f64) {
        self.wait_for(promql, &format!("= {want}"), |v| v == want);
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The sample values of a `/api/v1/query` vector result: each series' `"value":[<ts>,"<v>"]`.
/// The API writes values as JSON strings (`"42"`, `"0.0125"`, `"NaN"`, `"+Inf"`). A label
/// value cannot contain the pattern, as its quotes would be escaped.
fn vector_values(body: &str) -> Vec<f64> {
    const KEY: &str = r#""value":["#;
    let mut values = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find(KEY) {
        rest = &rest[at + KEY.len()..];
        let quoted = &rest[rest.find(',').expect("timestamp, then value") + 1..];
        let number = quoted
            .strip_prefix('"')
            .and_then(|s| s.split_once('"'))
            .map(|(number, _)| number)
            .unwrap_or_else(|| panic!("value is not a JSON string in {body}"));
        values.push(
            number
                .parse()
                .unwrap_or_else(|_| panic!("bad value {number:?} in {body}")),
        );
    }
    values
}

#[test]
fn vector_values_reads_every_series() {
    let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"a","x":"\"value\":[1,\"9\"]"},"value":[1700000000.123,"42"]},{"metric":{},"value":[1700000000,"0.0125"]}]}}"#;
    assert_eq!(vector_values(body), vec![42.0, 0.0125]);
    assert!(
        vector_values(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#)
            .is_empty()
    );
}

/// A Prometheus configuration scraping `tallyd` every second.
fn scrape_every_second(tallyd: &Tallyd) -> String {
    format!(
        "global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: tallyd
    static_configs:
      - targets: [\"{}\"]
",
        tallyd.http
    )
}

#[test]
fn prometheus_scrapes_tallyd_and_answers_promql() {
    let tallyd = Tallyd::start(&[]);
    let prometheus = Prometheus::start(&scrape_every_second(&tallyd));
    prometheus.wait_value(r#"up{job="tallyd"}"#, 1.0);

    tallyd.send_udp(b"queue.depth:42|g");
    for ms in [12.5, 30.0, 7.5] {
        tallyd.send_udp(format!("db.query:{ms}|ms").as_bytes());
    }
    // One increment every 200 ms until Prometheus has seen the counter grow (two scrapes a
    // second apart at least), and at least 10 of them; then the exact total must arrive.
    let rate = r#"rate(checkout_requests{job="tallyd",region="eu"}[5s])"#;
    let start = Instant::now();
    let mut sent = 0;
    loop {
        tallyd.send_udp(b"checkout.requests:1|c|#region:eu");
        sent += 1;
        let positive = matches!(prometheus.query(rate)[..], [r] if r > 0.0);
        if positive && sent >= 10 {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{rate} never became positive after {sent} increments; prometheus log:\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    prometheus.wait_value(
        r#"checkout_requests{job="tallyd",region="eu"}"#,
        f64::from(sent),
    );
    prometheus.wait_value(r#"queue_depth{job="tallyd"}"#, 42.0);
    prometheus.wait_value(r#"db_query_count{job="tallyd"}"#, 3.0);
    prometheus.wait_for(r#"db_query_sum{job="tallyd"}"#, "= 0.05 (seconds)", |v| {
        (v - 0.05).abs() < 1e-9
    });
    // The counter's rate is still positive over the last 5 s of samples.
    prometheus.wait_for(rate, "> 0", |r| r > 0.0);
}

/// A histogram with native buckets, scraped in the protobuf format by a Prometheus with native
/// histograms on, answers `histogram_quantile` over the `rate` of its native series.
#[test]
fn prometheus_reads_native_histograms_over_protobuf() {
    let dir = scratch_dir("native");
    let mapping = dir.join("mapping.yml");
    std::fs::write(
        &mapping,
        "defaults:\n  observer_type: histogram\nmappings:\n- match: \"api.*.latency\"\n  name: \"api_latency\"\n  labels: { route: \"$1\" }\n",
    )
    .unwrap();
    let tallyd = Tallyd::start(&[&format!("--statsd.mapping-config={}", mapping.display())]);
    let prometheus = Prometheus::start_with(
        &scrape_every_second(&tallyd),
        &["--enable-feature=native-histograms"],
    );
    prometheus.wait_value(r#"up{job="tallyd"}"#, 1.0);
    // The series exists and has been scraped before the observations that the rate covers.
    tallyd.send_udp(b"api.checkout.latency:1|h");
    let count = r#"histogram_count(api_latency{job="tallyd",route="checkout"})"#;
    prometheus.wait_value(count, 1.0);
    for v in 1..=100 {
        tallyd.send_udp(format!("api.checkout.latency:{v}|h").as_bytes());
    }
    prometheus.wait_value(count, 101.0);
    // Native only: Prometheus keeps the native histogram and no classic `_bucket` series.
    assert!(prometheus
        .query(r#"api_latency_bucket{job="tallyd"}"#)
        .is_empty());
    let p90 = r#"histogram_quantile(0.9, rate(api_latency{job="tallyd",route="checkout"}[1m]))"#;
    // 90 of the 100 values 1..=100 are at most 90: within the bucket around 90 (the default
    // factor 1.1 gives buckets that grow by 2^(1/8), about 9%).
    prometheus.wait_for(p90, "≈ 90", |v| (84.0..=97.0).contains(&v));
    let sum = r#"histogram_sum(api_latency{job="tallyd",route="checkout"})"#;
    prometheus.wait_value(sum, 5051.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Prometheus that scrapes nothing and takes remote write on `/api/v1/write`.
fn remote_write_receiver() -> Prometheus {
    Prometheus::start_with("global: {}\n", &["--web.enable-remote-write-receiver"])
}

/// tallyd pushing to `prometheus` every `interval`, with `instance="pod-a"` added, and a
/// mapping that makes `api.*.latency` a histogram.
fn pushing_tallyd(prometheus: &Prometheus, interval: &str, dir: &Path) -> Tallyd {
    let mapping = dir.join("mapping.yml");
    std::fs::write(
        &mapping,
        "mappings:\n- match: \"api.*.latency\"\n  observer_type: histogram\n  name: api_latency\n  labels: { route: \"$1\" }\n",
    )
    .unwrap();
    Tallyd::start(&[
        &format!("--statsd.mapping-config={}", mapping.display()),
        &format!("--remote-write.url=http://{}/api/v1/write", prometheus.addr),
        &format!("--remote-write.interval={interval}"),
        "--remote-write.label=instance=pod-a",
    ])
}

/// Lines of every kind: a tagged counter (5), a gauge, a summary of three timings, a
/// histogram of four observations.
const PUSHED_LINES: &[u8] = b"checkout.requests:2|c|#region:eu\ncheckout.requests:3|c|#region:eu\nqueue.depth:42|g\ndb.query:12.5|ms\ndb.query:30|ms\ndb.query:7.5|ms\napi.cart.latency:0.02|h\napi.cart.latency:0.2|h\napi.cart.latency:3|h\napi.cart.latency:0.002|h";

#[test]
fn prometheus_stores_what_tallyd_pushes_by_remote_write() {
    let dir = scratch_dir("remote-write");
    let prometheus = remote_write_receiver();
    let tallyd = pushing_tallyd(&prometheus, "1s", &dir);
    tallyd.send_udp(PUSHED_LINES);
    tallyd.wait_value("tallyd_lines_total", &[], 10.0);
    prometheus.wait_value(r#"checkout_requests{instance="pod-a",region="eu"}"#, 5.0);
    // Every user series of /metrics, with the value it shows there, in what was pushed.
    let exposition = common::user_part(&tallyd.scrape_text());
    let series: Vec<(String, f64)> = exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (selector, value) = line.rsplit_once(' ').unwrap();
            let selector = match selector.strip_suffix('}') {
                Some(open) => format!("{open},instance=\"pod-a\"}}"),
                None => format!("{selector}{{instance=\"pod-a\"}}"),
            };
            (selector, value.parse().unwrap())
        })
        .collect();
    assert!(series.len() > 20, "every kind of series: {exposition}");
    for name in [
        "api_latency_bucket",
        "api_latency_sum",
        "db_query{",
        "db_query_count",
        "queue_depth",
    ] {
        assert!(
            series.iter().any(|(s, _)| s.starts_with(name)),
            "{name} in {exposition}"
        );
    }
    for (selector, value) in &series {
        prometheus.wait_value(selector, *value);
    }
    let sent = tallyd
        .scrape()
        .value("tallyd_remote_write_samples_total", &[("outcome", "sent")]);
    assert!(sent.unwrap_or_default() >= series.len() as f64, "{sent:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_final_push_at_shutdown_reaches_prometheus() {
    let dir = scratch_dir("final-push");
    let prometheus = remote_write_receiver();
    let mut tallyd = pushing_tallyd(&prometheus, "1h", &dir);
    tallyd.send_udp(PUSHED_LINES);
    tallyd.wait_value("tallyd_lines_total", &[], 10.0);
    assert!(
        prometheus.query("checkout_requests").is_empty(),
        "nothing pushed yet"
    );
    let (status, _) = tallyd.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}");
    prometheus.wait_value(r#"checkout_requests{instance="pod-a",region="eu"}"#, 5.0);
    prometheus.wait_value(r#"api_latency_count{instance="pod-a",route="cart"}"#, 4.0);
    prometheus.wait_value(
        r#"api_latency_bucket{instance="pod-a",route="cart",le="0.25"}"#,
        3.0,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sets every `key:` line of the config to `value`, keeping its indentation.
fn set_key(config: &str, key: &str, value: &str) -> String {
    let mut found = false;
    let out: Vec<String> = config
        .lines()
        .map(|l| {
            let trimmed = l.trim_start();
            if trimmed.starts_with(&format!("{key}:")) {
                found = true;
                format!("{}{key}: {value}", &l[..l.len() - trimmed.len()])
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert!(found, "no `{key}:` in the scrape config");
    out.join("\n") + "\n"
}

/// A static target group with the labels Kubernetes pod discovery gives one container port.
fn pod_target(
    address: &str,
    pod: &str,
    container: &str,
    port: u16,
    annotations: &[(&str, &str)],
    phase: &str,
) -> String {
    let mut labels = vec![
        ("__meta_kubernetes_namespace".to_owned(), "shop".to_owned()),
        ("__meta_kubernetes_pod_name".to_owned(), pod.to_owned()),
        ("__meta_kubernetes_pod_phase".to_owned(), phase.to_owned()),
        (
            "__meta_kubernetes_pod_container_name".to_owned(),
            container.to_owned(),
        ),
        (
            "__meta_kubernetes_pod_container_port_number".to_owned(),
            port.to_string(),
        ),
        (
            "__meta_kubernetes_pod_label_app_kubernetes_io_name".to_owned(),
            "checkout".to_owned(),
        ),
    ];
    for (name, value) in annotations {
        labels.push((
            format!("__meta_kubernetes_pod_annotation_prometheus_io_{name}"),
            (*value).to_owned(),
        ));
    }
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}: \"{v}\""))
        .collect();
    format!(
        "- targets: [\"{address}\"]\n  labels: {{{}}}\n",
        labels.join(", ")
    )
}

#[test]
fn the_annotation_scrape_config_keeps_one_target_per_annotated_pod() {
    // A telemetry path of its own, so the target is up only if the path annotation is used.
    let tallyd = Tallyd::start(&["--web.telemetry-path=/stats"]);
    let port = tallyd.http.port();
    let port_text = port.to_string();
    let annotated = [
        ("scrape", "true"),
        ("port", port_text.as_str()),
        ("path", "/stats"),
    ];
    let mut targets = String::new();
    // The annotated pod: its app's port (dropped) and tallyd's (kept).
    targets += &pod_target(
        "127.0.0.1:1",
        "checkout-a",
        "app",
        8080,
        &annotated,
        "Running",
    );
    targets += &pod_target(
        &tallyd.http.to_string(),
        "checkout-a",
        "tallyd",
        port,
        &annotated,
        "Running",
    );
    // A pod without the annotation, and an annotated pod that has finished: both dropped.
    targets += &pod_target(
        "127.0.0.1:2",
        "other",
        "tallyd",
        port,
        &[("port", port_text.as_str())],
        "Running",
    );
    targets += &pod_target(
        "127.0.0.1:3",
        "done",
        "tallyd",
        port,
        &annotated,
        "Succeeded",
    );
    let static_configs = format!(
        "static_configs:\n{}",
        targets
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );

    let job = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/scrape-config.yml"),
    )
    .unwrap();
    let job = swap_kubernetes_sd(&job, &static_configs);
    let job = set_key(&job, "scrape_interval", "1s");
    let job = set_key(&job, "scrape_timeout", "1s");
    let prometheus = Prometheus::start(&job);

    let wanted =
        r#"up{job="tallyd",namespace="shop",pod="checkout-a",container="tallyd",app="checkout"}"#;
    prometheus.wait_value(wanted, 1.0);
    // Every target group is synced at once, so by now every kept target is listed.
    let (status, body) = prometheus.get("/api/v1/targets", &[("state", "active")]);
    assert_eq!(status, 200, "{body}");
    let scraped: Vec<&str> = body
        .split(r#""scrapeUrl":""#)
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    assert_eq!(
        scraped,
        [format!("http://{}/stats", tallyd.http)],
        "active targets: {body}"
    );
    prometheus.wait_value(r#"count(up{job="tallyd"})"#, 1.0);
    prometheus.wait_for(
        r#"tallyd_lines_total{job="tallyd",pod="checkout-a"}"#,
        ">= 0",
        |v| v >= 0.0,
    );
}
