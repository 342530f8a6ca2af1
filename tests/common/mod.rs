//! The shared integration-test harness: runs the real `tallyd` binary on free loopback ports,
//! sends real StatsD datagrams and TCP lines, scrapes the real HTTP endpoint, parses the
//! exposition, and waits for expected values with a deadline instead of sleeping.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any expected value or event may take to appear.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The tallyd binary with every socket on `127.0.0.1:0`, debug logs on stderr (piped), then
/// `extra` flags and `env` variables.
pub fn command(extra: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tallyd"));
    command
        .args([
            "--statsd.listen-udp=127.0.0.1:0",
            "--statsd.listen-tcp=127.0.0.1:0",
            "--web.listen-address=127.0.0.1:0",
            "--log.level=debug",
        ])
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// `GET path` on a new connection to `addr`, closed after the response: the whole response
/// (status line, headers, body), or `None` when nothing answers within the deadline.
pub fn get_at(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).ok()?;
    Some(response)
}

/// Waits for `child` to exit; kills it and panics, naming `what`, past the deadline.
pub fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs tallyd (see [`command`]) expecting it to refuse to start: its exit code and stderr.
pub fn start_fails(extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = command(extra, env).spawn().expect("tallyd binary starts");
    let status = wait_exit(
        &mut child,
        &format!("tallyd with {extra:?} (expected to refuse)"),
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

/// A running `tallyd` process, killed when dropped.
pub struct Tallyd {
    child: Child,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// The last exposition scraped, checked with promtool when the test ends.
    last_scrape: Mutex<Option<String>>,
}

fn field(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

impl Tallyd {
    /// Starts tallyd with every socket on `127.0.0.1:0` and the given extra flags, and waits
    /// for its start-up line, which names the addresses it bound.
    pub fn start(extra: &[&str]) -> Tallyd {
        Self::start_with_env(extra, &[])
    }

    /// As [`Tallyd::start`], with environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Tallyd {
        Self::start_command(command(extra, env))
    }

    /// As [`Tallyd::start`], from a [`command`] the test adjusted.
    pub fn start_command(mut command: Command) -> Tallyd {
        let mut child = command.spawn().expect("tallyd binary starts");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("tallyd listening") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "tallyd did not start; its log:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Tallyd {
            udp: field(&line, "udp").expect("udp address in start line"),
            tcp: field(&line, "tcp").expect("tcp address in start line"),
            http: field(&line, "http").expect("http address in start line"),
            child,
            logs,
            last_scrape: Mutex::new(None),
        }
    }

    /// Sends one datagram.
    pub fn send_udp(&self, payload: &[u8]) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.send_to(payload, self.udp).unwrap();
    }

    /// Sends bytes over one TCP connection, then closes it.
    pub fn send_tcp(&self, payload: &[u8]) {
        let mut stream = TcpStream::connect(self.tcp).unwrap();
        stream.write_all(payload).unwrap();
    }

    /// `GET path`, returning status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut response = agent
            .get(&format!("http://{}{path}", self.http))
            .call()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    /// `POST path` with an empty body, returning the status.
    pub fn post(&self, path: &str) -> u16 {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let response = agent
            .post(&format!("http://{}{path}", self.http))
            .send_empty()
            .unwrap();
        response.status().as_u16()
    }

    /// One scrape of `/metrics`, as text.
    pub fn scrape_text(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        *self.last_scrape.lock().unwrap() = Some(body.clone());
        body
    }

    /// One scrape, parsed.
    pub fn scrape(&self) -> Exposition {
        Exposition::parse(&self.scrape_text())
    }

    /// Scrapes until `ready` holds, or panics at the deadline with the last scrape.
    pub fn wait_for(&self, what: &str, ready: impl Fn(&Exposition) -> bool) -> Exposition {
        let start = Instant::now();
        loop {
            let exposition = self.scrape();
            if ready(&exposition) {
                return exposition;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out waiting for {what}; last scrape:\n{}",
                    exposition.text
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `metric{labels}` equals `want`.
    pub fn wait_value(&self, metric: &str, labels: &[(&str, &str)], want: f64) -> Exposition {
        self.wait_for(&format!("{metric}{labels:?} = {want}"), |e| {
            e.value(metric, labels) == Some(want)
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal) -> (ExitStatus, Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "tallyd did not exit after {signal}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Tallyd {
    /// Kills tallyd; then, unless the test already failed, checks the last exposition it
    /// scraped with promtool, so that every test's exposition is checked.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            return;
        }
        if let Some(text) = self.last_scrape.lock().unwrap().take() {
            promtool_check(&text);
        }
    }
}

/// A parsed exposition.
pub struct Exposition {
    pub text: String,
    scrape: prometheus_parse::Scrape,
}

impl Exposition {
    pub fn parse(text: &str) -> Exposition {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Exposition {
            text: text.to_owned(),
            scrape: prometheus_parse::Scrape::parse(lines).expect("exposition parses"),
        }
    }

    fn find(&self, metric: &str, labels: &[(&str, &str)]) -> Option<&prometheus_parse::Sample> {
        self.scrape.samples.iter().find(|s| {
            s.metric == metric
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
        })
    }

    /// The value of a counter, gauge or untyped sample (`_sum`, `_count`) with exactly these
    /// labels.
    pub fn value(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        use prometheus_parse::Value;
        match self.find(metric, labels)?.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        }
    }

    /// The sum of every counter, gauge or untyped sample named `metric`, whatever its labels
    /// (0 when there is none).
    /// `tallyd_type_conflicts_total` for `metric` and sample `kind`.
    pub fn conflicts(&self, metric: &str, kind: &str) -> Option<f64> {
        self.value(
            "tallyd_type_conflicts_total",
            &[("metric", metric), ("type", kind)],
        )
    }

    pub fn sum(&self, metric: &str) -> f64 {
        use prometheus_parse::Value;
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }

    /// A summary's quantile.
    pub fn quantile(&self, metric: &str, labels: &[(&str, &str)], q: f64) -> Option<f64> {
        match &self.find(metric, labels)?.value {
            prometheus_parse::Value::Summary(qs) => {
                qs.iter().find(|c| c.quantile == q).map(|c| c.count)
            }
            _ => None,
        }
    }

    /// A histogram's cumulative bucket count for upper bound `le`.
    pub fn bucket(&self, metric: &str, labels: &[(&str, &str)], le: f64) -> Option<f64> {
        match &self.find(metric, labels)?.value {
            prometheus_parse::Value::Histogram(bs) => {
                bs.iter().find(|b| b.less_than == le).map(|b| b.count)
            }
            _ => None,
        }
    }

    /// The `# TYPE` of a family.
    pub fn type_of(&self, family: &str) -> Option<&str> {
        self.text.lines().find_map(|l| {
            let rest = l.strip_prefix("# TYPE ")?;
            let (name, kind) = rest.split_once(' ')?;
            (name == family).then_some(kind)
        })
    }

    /// `tallyd_lines_rejected_total{reason}`.
    pub fn rejected(&self, reason: &str) -> f64 {
        self.value("tallyd_lines_rejected_total", &[("reason", reason)])
            .unwrap_or_else(|| panic!("no rejected counter for {reason}"))
    }
}

/// Asserts a summary quantile is within the sketch's 1% relative error of `want`.
pub fn assert_close(got: Option<f64>, want: f64) {
    let got = got.expect("quantile present");
    assert!(
        (got - want).abs() <= want.abs() * 0.01,
        "{got} is not within 1% of {want}"
    );
}

/// Checks an exposition with `promtool check metrics`: a parse error fails the test, naming
/// lint remarks (exit code 3, e.g. "counter metrics should have _total suffix") do not, since
/// StatsD names are the user's. promtool is installed by `tests/run.sh`.
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (run `bash tests/run.sh`, which installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let code = out.status.code();
    assert!(
        matches!(code, Some(0) | Some(3)),
        "promtool rejected the exposition ({code:?}):\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// Replaces the `kubernetes_sd_configs:` block of a scrape job (the line and every line
/// indented deeper below it) with `replacement`, indented like it.
pub fn swap_kubernetes_sd(config: &str, replacement: &str) -> String {
    let lines: Vec<&str> = config.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == "kubernetes_sd_configs:")
        .expect("the job has a kubernetes_sd_configs block");
    let indent = lines[at].len() - lines[at].trim_start().len();
    let end = (at + 1..lines.len())
        .find(|&i| {
            let l = lines[i];
            !l.trim().is_empty() && l.len() - l.trim_start().len() <= indent
        })
        .unwrap_or(lines.len());
    let pad = " ".repeat(indent);
    let mut out: Vec<String> = lines[..at].iter().map(|l| l.to_string()).collect();
    out.extend(replacement.lines().map(|l| format!("{pad}{l}")));
    out.extend(lines[end..].iter().map(|l| l.to_string()));
    out.join("\n") + "\n"
}

/// A fresh directory for a test's Unix socket, removed when dropped: its socket path, and the
/// flag that has tallyd listen there.
pub struct SocketDir {
    dir: std::path::PathBuf,
    pub path: std::path::PathBuf,
    pub flag: String,
}

impl SocketDir {
    /// A directory named after `test` and this process.
    pub fn new(test: &str) -> SocketDir {
        let dir = std::env::temp_dir().join(format!("tallyd-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("statsd.sock");
        let flag = format!("--statsd.listen-unixgram={}", path.display());
        SocketDir { dir, path, flag }
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The user families of an exposition: every line but tallyd's and the process collector's.
pub fn user_part(text: &str) -> String {
    let own = |line: &str| {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        name.starts_with("tallyd_") || name.starts_with("process_")
    };
    text.lines()
        .filter(|l| !own(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A CA, and certificates it signs, made fresh for each test.
pub struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("tallyd test CA {name}"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        Pki {
            ca: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// A certificate for `names` (DNS names or IPs) with `usage`: (certificate PEM, key PEM).
    pub fn issue(&self, names: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }
}
