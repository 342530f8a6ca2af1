//! Remote write through the real binary, against a receiver of the test's own (plain HTTP or
//! TLS) that records each request and answers what the test tells it: the request is remote
//! write 1.0 (its headers; a snappy-compressed `WriteRequest` with sorted labels and the
//! families' metadata, decoded here with messages written from `prompb/remote.proto`), with
//! the credentials read from their files at each push and the extra headers; a 4xx is counted
//! as failed, a 5xx sent again, and a receiver that is down fills the bounded queue, whose
//! oldest requests are dropped and counted. Prometheus itself receives tallyd's pushes in
//! tests/prometheus.rs.

mod common;

use common::{Pki, Tallyd, DEADLINE};
use prost::Message;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `prompb.WriteRequest`, the fields the tests read.
#[derive(Clone, PartialEq, Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    metadata: Vec<MetricMetadata>,
}

#[derive(Clone, PartialEq, Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

#[derive(Clone, PartialEq, Message)]
struct MetricMetadata {
    #[prost(int32, tag = "1")]
    r#type: i32,
    #[prost(string, tag = "2")]
    metric_family_name: String,
    #[prost(string, tag = "4")]
    help: String,
}

/// A request the receiver got: its headers (names in lower case) and its body.
#[derive(Clone, Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// When it had come whole.
    at: Instant,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn decoded(&self) -> WriteRequest {
        let plain = snap::raw::Decoder::new()
            .decompress_vec(&self.body)
            .expect("a snappy block");
        WriteRequest::decode(plain.as_slice()).expect("a WriteRequest")
    }
}

/// A remote-write receiver on a free loopback port, answering each request with the next
/// status of its script (204 once the script is spent), each on a connection of its own.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let (got, next) = (received.clone(), script.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                stream.set_read_timeout(Some(DEADLINE)).unwrap();
                let status = next.lock().unwrap().pop_front().unwrap_or(204);
                let answered = match &tls {
                    None => answer(stream, status),
                    Some(config) => {
                        let connection = rustls::ServerConnection::new(config.clone()).unwrap();
                        answer(rustls::StreamOwned::new(connection, stream), status)
                    }
                };
                if let Some(request) = answered {
                    got.lock().unwrap().push(request);
                }
            }
        });
        Receiver {
            addr,
            received,
            script,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` requests came.
    fn wait_for(&self, n: usize) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{} of {n} requests came",
                received.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads one request from `stream` and answers `status`, closing the connection.
fn answer(mut stream: impl Read + Write, status: u16) -> Option<Received> {
    let mut reader = BufReader::new(&mut stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("POST /api/v1/write ") {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")?
        .1
        .parse()
        .ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let reason = if status < 300 { "OK" } else { "No" };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
    );
    let _ = stream.flush();
    Some(Received {
        headers,
        body,
        at: Instant::now(),
    })
}

/// A file of the test's own, removed when dropped.
struct TestFile(PathBuf);

impl TestFile {
    fn new(name: &str, text: &str) -> TestFile {
        let path = std::env::temp_dir().join(format!("tallyd-rw-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TestFile(path)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn labels(series: &TimeSeries) -> Vec<(&str, &str)> {
    series
        .labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect()
}

#[test]
fn a_push_is_remote_write_with_the_credentials_and_headers_asked() {
    let receiver = Receiver::start(None);
    let token = TestFile::new("token", "first-token\n");
    let t = Tallyd::start(&[
        &format!("--remote-write.url=http://{}/api/v1/write", receiver.addr),
        "--remote-write.interval=300ms",
        &format!("--remote-write.bearer-token-file={}", token.path()),
        "--remote-write.header=X-Scope-OrgID: team-a",
        "--remote-write.label=instance=pod-a",
        "--remote-write.label=region=default",
    ]);
    t.send_udp(b"checkout.requests:3|c|#region:eu\nqueue.depth:7|g");
    t.wait_value("tallyd_lines_total", &[], 2.0);
    let first = receiver.wait_for(1)[0].clone();
    assert_eq!(first.header("content-encoding"), Some("snappy"));
    assert_eq!(first.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(
        first.header("x-prometheus-remote-write-version"),
        Some("0.1.0")
    );
    assert_eq!(first.header("authorization"), Some("Bearer first-token"));
    assert_eq!(first.header("x-scope-orgid"), Some("team-a"));
    assert!(first.header("user-agent").unwrap().starts_with("tallyd/"));

    // A push of every series: find the one that has the lines sent.
    let start = Instant::now();
    let request = loop {
        let found = receiver.received().iter().map(Received::decoded).find(|r| {
            r.timeseries
                .iter()
                .any(|s| s.labels.iter().any(|l| l.value == "checkout_requests"))
        });
        if let Some(request) = found {
            break request;
        }
        assert!(start.elapsed() < DEADLINE, "no push with checkout_requests");
        std::thread::sleep(Duration::from_millis(50));
    };
    for series in &request.timeseries {
        let names: Vec<&str> = series.labels.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "labels sorted by name");
        assert_eq!(series.samples.len(), 1);
        assert!(series
            .labels
            .iter()
            .any(|l| (l.name.as_str(), l.value.as_str()) == ("instance", "pod-a")));
    }
    let find = |name: &str| {
        request
            .timeseries
            .iter()
            .find(|s| {
                s.labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == name)
            })
            .unwrap_or_else(|| panic!("{name} pushed"))
    };
    let counter = find("checkout_requests");
    assert_eq!(
        labels(counter),
        vec![
            ("__name__", "checkout_requests"),
            ("instance", "pod-a"),
            ("region", "eu")
        ],
        "the series' own region wins over the added one"
    );
    assert_eq!(counter.samples[0].value, 3.0);
    let gauge = find("queue_depth");
    assert_eq!(
        labels(gauge),
        vec![
            ("__name__", "queue_depth"),
            ("instance", "pod-a"),
            ("region", "default")
        ]
    );
    assert_eq!(gauge.samples[0].value, 7.0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((now_ms - counter.samples[0].timestamp).abs() < 60_000);
    let metadata = request
        .metadata
        .iter()
        .find(|m| m.metric_family_name == "checkout_requests")
        .expect("the family's metadata");
    assert_eq!(metadata.r#type, 1, "counter");

    // The token file is read again for every request: a rotated token is used.
    std::fs::write(&token.0, "second-token").unwrap();
    let seen = receiver.received().len();
    let start = Instant::now();
    while !receiver.received()[seen..]
        .iter()
        .any(|r| r.header("authorization") == Some("Bearer second-token"))
    {
        assert!(
            start.elapsed() < DEADLINE,
            "the rotated token was never sent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, status) = t.get("/api/v1/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let push = &status["remote_write"];
    assert_eq!(
        push["url"],
        format!("http://{}/api/v1/write", receiver.addr)
    );
    assert!(push["samples"]["sent"].as_u64().unwrap() > 0, "{push}");
    assert!(
        push["last_success"].as_str().unwrap().ends_with('Z'),
        "{push}"
    );
    let e = t.scrape();
    assert_eq!(
        e.value(
            "tallyd_remote_write_samples_total",
            &[("outcome", "failed")]
        ),
        Some(0.0)
    );
    assert!(
        e.value("tallyd_remote_write_last_success_timestamp_seconds", &[])
            .unwrap()
            > 0.0
    );
}

#[test]
fn a_refused_push_is_counted_and_a_failed_one_sent_again() {
    let receiver = Receiver::start(None);
    receiver.script.lock().unwrap().extend([400, 503, 503]);
    let password = TestFile::new("password", "s3cret\n");
    let t = Tallyd::start(&[
        &format!("--remote-write.url=http://{}/api/v1/write", receiver.addr),
        "--remote-write.interval=1h",
        "--remote-write.basic-auth.username=pusher",
        &format!(
            "--remote-write.basic-auth.password-file={}",
            password.path()
        ),
    ]);
    t.send_udp(b"a:1|c");
    t.wait_value("tallyd_lines_total", &[], 1.0);
    // Only the final push, at shutdown: refused (400), so counted as failed, never sent again.
    // A second tallyd's final push gets two 503s, then a 204.
    let mut t = t;
    let (status, _) = t.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success());
    let received = receiver.wait_for(1);
    assert_eq!(received.len(), 1, "a 400 is not sent again");
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("pusher:s3cret");
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );

    let mut t = Tallyd::start(&[
        &format!("--remote-write.url=http://{}/api/v1/write", receiver.addr),
        "--remote-write.interval=1h",
    ]);
    t.send_udp(b"a:1|c");
    t.wait_value("tallyd_lines_total", &[], 1.0);
    let (status, _) = t.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success());
    let received = receiver.wait_for(4);
    assert_eq!(received.len(), 4, "sent three times: 503, 503, 204");
    assert_eq!(received[1].body, received[3].body, "the same request again");
    // Sent again after 100 ms, then 200 ms: a failing receiver is not hammered.
    assert!(received[2].at - received[1].at >= Duration::from_millis(100));
    assert!(received[3].at - received[2].at >= Duration::from_millis(200));
    let logs = t.logs().join("\n");
    assert!(
        logs.contains("remote write: a request failed; sending it again"),
        "{logs}"
    );
}

#[test]
fn a_receiver_that_is_down_fills_the_bounded_queue_and_drops_its_oldest() {
    // A port bound, so no other test takes it, but not listened on: connections are refused.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let down = socket.local_addr().unwrap().as_socket().unwrap();
    let t = Tallyd::start(&[
        &format!("--remote-write.url=http://{down}/api/v1/write"),
        "--remote-write.interval=100ms",
        "--remote-write.queue-bytes=65536",
        "--remote-write.timeout=1s",
    ]);
    let e = t.wait_for("samples dropped from the full queue", |e| {
        e.value(
            "tallyd_remote_write_samples_total",
            &[("outcome", "dropped")],
        )
        .is_some_and(|n| n > 0.0)
    });
    assert!(e.value("tallyd_remote_write_retries_total", &[]).unwrap() > 0.0);
    assert_eq!(
        e.value("tallyd_remote_write_samples_total", &[("outcome", "sent")]),
        Some(0.0)
    );
    assert_eq!(
        e.value("tallyd_remote_write_queue_bytes_limit", &[]),
        Some(65536.0)
    );
    // At most the limit, and one request of about 5 KiB over it while it is being sent.
    let queued = e.value("tallyd_remote_write_queue_bytes", &[]).unwrap();
    assert!(queued <= 65536.0, "{queued}");
}

#[test]
fn a_push_over_tls_checks_the_receivers_certificate() {
    let pki = Pki::new("remote-write");
    let (cert, key) = pki.issue(
        &["receiver.test"],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let config = Arc::new(config);
    let receiver = Receiver::start(Some(config.clone()));
    let ca = TestFile::new("ca.pem", &pki.ca_pem());
    let url = format!("--remote-write.url=https://{}/api/v1/write", receiver.addr);
    let t = Tallyd::start(&[
        &url,
        "--remote-write.interval=200ms",
        &format!("--remote-write.tls.ca-file={}", ca.path()),
        "--remote-write.tls.server-name=receiver.test",
    ]);
    receiver.wait_for(1);
    t.wait_for("a push over TLS", |e| {
        e.value("tallyd_remote_write_samples_total", &[("outcome", "sent")])
            .is_some_and(|n| n > 0.0)
    });
    drop(t);
    // Without the CA, the certificate is refused: nothing is sent, and it is tried again.
    let receiver = Receiver::start(Some(config));
    let url = format!("--remote-write.url=https://{}/api/v1/write", receiver.addr);
    let t = Tallyd::start(&[
        &url,
        "--remote-write.interval=200ms",
        "--remote-write.timeout=1s",
    ]);
    let e = t.wait_for("a refused certificate retried", |e| {
        e.value("tallyd_remote_write_retries_total", &[])
            .is_some_and(|n| n > 0.0)
    });
    assert_eq!(
        e.value("tallyd_remote_write_samples_total", &[("outcome", "sent")]),
        Some(0.0)
    );
    assert!(receiver.received().is_empty());
    assert!(
        t.logs().join("\n").contains("certificate"),
        "the log says why"
    );
}

#[test]
fn bad_remote_write_settings_are_refused_naming_them() {
    for (flag, names) in [
        ("--remote-write.url=ftp://x/", "--remote-write.url"),
        (
            "--remote-write.url=https://user:pass@x/",
            "holds credentials",
        ),
        (
            "--remote-write.header=Content-Type: x",
            "--remote-write.header",
        ),
        ("--remote-write.label=__name__=x", "--remote-write.label"),
    ] {
        let (code, stderr) = common::start_fails(&[flag], &[]);
        assert_eq!(code, Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(names), "{flag}: {stderr}");
    }
    let (code, stderr) = common::start_fails(
        &[
            "--remote-write.url=http://127.0.0.1:1/api/v1/write",
            "--remote-write.bearer-token-file=/nonexistent/token",
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--remote-write.bearer-token-file=/nonexistent/token"),
        "{stderr}"
    );
}
