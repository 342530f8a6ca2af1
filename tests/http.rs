//! The HTTP server's hardening and `--web.config.file`, against the real binary: a slowloris
//! client is cut at the header timeout without holding up scrapes; a client that stops
//! reading is cut at the request timeout; the connection cap refuses and counts; oversized
//! request heads get 431; basic auth; TLS and mutual TLS with certificates made at test time;
//! a bad web config file fails start-up with exit code 2, naming the file and the key.
//!
//! `cargo test --test http`

mod common;

use base64::Engine as _;
use common::{start_fails, Exposition, Pki, Tallyd, DEADLINE};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---- helpers ------------------------------------------------------------------------------

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("tallyd-http-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn flag(path: &Path) -> String {
    format!("--web.config.file={}", path.display())
}

/// Sends raw bytes on a new connection and reads until the server closes it (or `DEADLINE`).
/// Write and read errors (a reset from a server that closed early) end the exchange.
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = stream.write_all(request);
    read_until_closed(&mut stream)
}

fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut response = Vec::new();
    let mut chunk = [0; 16384];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(e) => {
                use std::io::ErrorKind::{TimedOut, WouldBlock};
                assert!(
                    !matches!(e.kind(), WouldBlock | TimedOut),
                    "the server did not close the connection within {DEADLINE:?}"
                );
                break;
            }
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

/// The body of a raw HTTP/1.1 response.
fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

fn agent(tls: Option<ureq::tls::TlsConfig>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder().http_status_as_error(false);
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    config.build().new_agent()
}

/// `GET url` with optional basic-auth credentials: status, headers of interest, body.
fn get(
    agent: &ureq::Agent,
    url: &str,
    credentials: Option<(&str, &str)>,
) -> Result<(u16, ureq::http::HeaderMap, String), ureq::Error> {
    let mut request = agent.get(url);
    if let Some((user, password)) = credentials {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request = request.header("Authorization", format!("Basic {encoded}"));
    }
    let mut response = request.call()?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Ok((status, headers, response.body_mut().read_to_string()?))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/web")
        .join(name)
}

// ---- timeouts and caps --------------------------------------------------------------------

#[test]
fn slowloris_is_cut_at_the_header_timeout_and_scrapes_go_on() {
    let t = Tallyd::start_with_env(&[], &[("TALLYD_WEB__HEADER_TIMEOUT", "1s")]);
    // Connections that start a request and never finish its headers.
    let mut slow: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(t.http).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    let opened = Instant::now();
    // Meanwhile scrapes are answered at once.
    for _ in 0..5 {
        let start = Instant::now();
        t.scrape_text();
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "a scrape took {:?} beside slow clients",
            start.elapsed()
        );
    }
    for s in &mut slow {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let response = read_until_closed(s);
        // hyper may say 408 as it hangs up; it never answers the request.
        assert!(
            response.is_empty() || response.starts_with("HTTP/1.1 408"),
            "{response}"
        );
    }
    let cut = opened.elapsed();
    assert!(
        cut >= Duration::from_millis(800) && cut < Duration::from_secs(4),
        "slow clients were cut after {cut:?}, not at the 1s header timeout"
    );
    // A client that never sends a byte is cut the same way.
    let start = Instant::now();
    assert_eq!(raw(t.http, b""), "");
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[test]
fn a_client_that_stops_reading_is_cut_at_the_request_timeout() {
    // One connection at a time: while the stalled client holds it, every scrape is refused.
    let t = Tallyd::start_with_env(
        &[],
        &[
            ("TALLYD_WEB__REQUEST_TIMEOUT", "1s"),
            ("TALLYD_WEB__MAX_CONNECTIONS", "1"),
        ],
    );
    // Make the exposition large, so that pipelined responses fill the socket buffers.
    for batch in 0..10 {
        let lines: Vec<String> = (0..100)
            .map(|i| format!("padding_metric_with_a_long_name_{batch}_{i}:1|c"))
            .collect();
        t.send_udp(lines.join("\n").as_bytes());
    }
    t.wait_for("1000 padding families", |e| {
        e.value("padding_metric_with_a_long_name_9_99", &[]) == Some(1.0)
    });
    let mut stalled = TcpStream::connect(t.http).unwrap();
    stalled
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // 200 pipelined scrapes, never read: far more than the socket buffers hold.
    let requests = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
    let _ = stalled.write_all(&requests);
    let stalled_at = Instant::now();
    // The slot comes back once the stalled response times out.
    let agent = agent(None);
    let url = format!("http://{}/-/healthy", t.http);
    loop {
        if let Ok((200, _, _)) = get(&agent, &url, None) {
            break;
        }
        assert!(
            stalled_at.elapsed() < DEADLINE,
            "the stalled connection still holds the only slot"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        stalled_at.elapsed() >= Duration::from_millis(800),
        "freed after {:?}, before the request timeout",
        stalled_at.elapsed()
    );
}

#[test]
fn connections_past_the_cap_are_refused_and_counted() {
    let t = Tallyd::start_with_env(&[], &[("TALLYD_WEB__MAX_CONNECTIONS", "3")]);
    // Three kept-alive connections that were just served: not to be closed for another
    // within a second.
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(t.http).unwrap();
            stream
                .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut response = [0; 1024];
            stream.set_read_timeout(Some(DEADLINE)).unwrap();
            let n = stream.read(&mut response).unwrap();
            assert!(response[..n].starts_with(b"HTTP/1.1 200"));
            stream
        })
        .collect();
    // The fourth is answered 503 and closed at once, not queued behind the idle ones.
    let start = Instant::now();
    let refused = raw(t.http, b"");
    assert!(
        refused.starts_with("HTTP/1.1 503") && refused.contains("Too many connections"),
        "{refused}"
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    // The connections being served still work: one of them reads the counter.
    idle[0]
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    idle[0].set_read_timeout(Some(DEADLINE)).unwrap();
    let response = read_until_closed(&mut idle[0]);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let e = Exposition::parse(body(&response));
    assert_eq!(
        e.value("tallyd_http_connections_rejected_total", &[]),
        Some(1.0)
    );
    // When clients leave, their slots come back.
    drop(idle);
    let start = Instant::now();
    loop {
        let (status, _) = t.get("/-/ready");
        if status == 200 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "slots never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn oversized_request_heads_get_431() {
    let request = |header_bytes: usize| {
        format!(
            "GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(header_bytes)
        )
    };
    let t = Tallyd::start(&[]);
    let ok = raw(t.http, request(8 * 1024).as_bytes());
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // Over the default 16 KiB: 431 (or, if the server hangs up before the client has read
    // it, just closed).
    let big = raw(t.http, request(32 * 1024).as_bytes());
    assert!(
        big.is_empty() || big.starts_with("HTTP/1.1 431"),
        "{}",
        &big[..big.len().min(200)]
    );
    drop(t);

    let t = Tallyd::start_with_env(&[], &[("TALLYD_WEB__MAX_HEADER_BYTES", "65536")]);
    let ok = raw(t.http, request(32 * 1024).as_bytes());
    assert!(
        ok.starts_with("HTTP/1.1 200"),
        "{}",
        &ok[..ok.len().min(200)]
    );
}

// ---- --web.config.file ------------------------------------------------------------------

#[test]
fn basic_auth_guards_every_path() {
    let t = Tallyd::start(&[&flag(&fixture("basic-auth.yml"))]);
    let agent = agent(None);
    let url = |path: &str| format!("http://{}{path}", t.http);
    for (credentials, path) in [
        (None, "/metrics"),
        (Some(("prometheus", "wrong")), "/metrics"),
        (Some(("nobody", "scrape-me")), "/-/healthy"),
    ] {
        let (status, headers, _) = get(&agent, &url(path), credentials).unwrap();
        assert_eq!(status, 401, "{credentials:?} {path}");
        assert_eq!(headers["www-authenticate"], "Basic");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let right = Some(("prometheus", "scrape-me"));
    let (status, headers, _) = get(&agent, &url("/-/healthy"), right).unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["x-frame-options"], "deny");
    // Twice: the second time the password is remembered, not re-hashed.
    get(&agent, &url("/metrics"), right).unwrap();
    let (status, _, body) = get(&agent, &url("/metrics"), right).unwrap();
    assert_eq!(status, 200);
    let e = Exposition::parse(&body);
    assert_eq!(e.value("tallyd_http_auth_failures_total", &[]), Some(3.0));
    assert_eq!(
        e.value("tallyd_http_requests_total", &[("code", "401")]),
        Some(3.0)
    );
    assert_eq!(
        e.value("tallyd_http_requests_total", &[("code", "200")]),
        Some(2.0)
    );
    common::promtool_check(&body);
}

#[test]
fn clients_with_wrong_passwords_cannot_keep_scrapes_out() {
    let dir = TempDir::new("wrong-passwords");
    // Cost 8: each wrong password costs a real bcrypt, many milliseconds in a debug build.
    let hash = bcrypt::hash("scrape-me", 8)
        .unwrap()
        .replacen("$2b$", "$2y$", 1);
    let config = dir.write(
        "web.yml",
        format!("basic_auth_users:\n  prometheus: '{hash}'\n"),
    );
    let t = Tallyd::start_with_env(&[&flag(&config)], &[("TALLYD_WEB__MAX_CONNECTIONS", "16")]);
    let right = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("prometheus:scrape-me")
    );
    let request = |authorization: &str| {
        format!(
            "GET /-/healthy HTTP/1.1\r\nHost: tallyd\r\nAuthorization: {authorization}\r\n\
             Connection: close\r\n\r\n"
        )
    };
    // Prometheus' first scrape: its password passes bcrypt once, and is remembered.
    assert!(raw(t.http, request(&right).as_bytes()).starts_with("HTTP/1.1 200"));
    // Twice as many strangers as slots, each trying wrong passwords as fast as it is answered.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wrong = request(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("prometheus:guess")
    ));
    let attackers: Vec<_> = (0..32)
        .map(|_| {
            let (stop, wrong, http) = (stop.clone(), wrong.clone(), t.http);
            std::thread::spawn(move || {
                let mut tries = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Refused or closed connections are part of the attack; go on.
                    if let Ok(mut stream) = TcpStream::connect(http) {
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = stream.write_all(wrong.as_bytes());
                        let _ = read_until_closed(&mut stream);
                    }
                    tries += 1;
                }
                tries
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile the scraper, on a fresh connection each time, keeps getting answers.
    let mut answered = 0;
    let asked = 30;
    for _ in 0..asked {
        if raw(t.http, request(&right).as_bytes()).starts_with("HTTP/1.1 200") {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let tries: u64 = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    assert!(tries > 100, "the attack ran: {tries} tries");
    assert_eq!(
        answered, asked,
        "scrapes answered while {tries} wrong passwords came"
    );
    let metrics = format!("http://{}/metrics", t.http);
    let (_, _, body) = get(&agent(None), &metrics, Some(("prometheus", "scrape-me"))).unwrap();
    let e = Exposition::parse(&body);
    // Most wrong passwords were refused unchecked: bcrypt ran for at most a few at a time.
    let refused = e
        .value("tallyd_http_password_checks_refused_total", &[])
        .unwrap();
    let failed = e.value("tallyd_http_auth_failures_total", &[]).unwrap();
    assert!(
        refused > failed,
        "refused {refused}, checked and failed {failed}"
    );
}

fn trusting(ca_pem: &str, client: Option<&(String, String)>) -> ureq::tls::TlsConfig {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let ca = Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let mut tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![ca])));
    if let Some((cert, key)) = client {
        let cert = Certificate::from_pem(cert.as_bytes()).unwrap();
        let key = PrivateKey::from_pem(key.as_bytes()).unwrap();
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
    }
    tls.build()
}

#[test]
fn tls_serves_https_with_the_configured_certificate() {
    let pki = Pki::new("tls");
    let (cert, key) = pki.issue(
        &["localhost", "127.0.0.1"],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let dir = TempDir::new("tls");
    dir.write("server.pem", &cert);
    dir.write("server.key", &key);
    // Relative paths: relative to the web config file, as exporter-toolkit reads them.
    let web = dir.write(
        "web.yml",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  min_version: TLS12\n",
    );
    let t = Tallyd::start_with_env(&[&flag(&web)], &[("TALLYD_WEB__HEADER_TIMEOUT", "1s")]);
    let port = t.http.port();

    let https = agent(Some(trusting(&pki.ca_pem(), None)));
    for host in ["127.0.0.1", "localhost"] {
        let (status, _, body) = get(&https, &format!("https://{host}:{port}/metrics"), None)
            .unwrap_or_else(|e| panic!("https://{host}: {e}"));
        assert_eq!(status, 200);
        assert!(body.contains("tallyd_lines_total 0"), "{body}");
        common::promtool_check(&body);
    }
    // A client that does not trust the certificate, and one speaking plain HTTP, get nothing.
    assert!(get(
        &agent(None),
        &format!("https://127.0.0.1:{port}/metrics"),
        None
    )
    .is_err());
    let plain = get(
        &agent(None),
        &format!("http://127.0.0.1:{port}/metrics"),
        None,
    );
    assert!(!matches!(plain, Ok((200, _, _))), "plain HTTP was served");
    // A TLS client that never finishes its handshake (half a ClientHello record header) is
    // cut at the header timeout; meanwhile HTTPS scrapes go on.
    let mut stalled = TcpStream::connect(t.http).unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let stalled_at = Instant::now();
    let (status, _, _) = get(&https, &format!("https://127.0.0.1:{port}/-/healthy"), None).unwrap();
    assert_eq!(status, 200);
    stalled.set_read_timeout(Some(DEADLINE)).unwrap();
    read_until_closed(&mut stalled);
    let cut = stalled_at.elapsed();
    assert!(
        cut >= Duration::from_millis(800) && cut < Duration::from_secs(4),
        "a stalled TLS handshake was cut after {cut:?}, not at the 1s header timeout"
    );
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let (old, new) = (Pki::new("rotate-old"), Pki::new("rotate-new"));
    let issue = |pki: &Pki| {
        pki.issue(
            &["localhost", "127.0.0.1"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    };
    let dir = TempDir::new("rotate");
    let (cert, key) = issue(&old);
    dir.write("server.pem", &cert);
    dir.write("server.key", &key);
    let web = dir.write(
        "web.yml",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n",
    );
    let t = Tallyd::start(&[&flag(&web)]);
    let url = format!("https://127.0.0.1:{}/-/healthy", t.http.port());
    // A fresh agent each time: a new connection, a new handshake.
    let served = |pki: &Pki| {
        matches!(
            get(&agent(Some(trusting(&pki.ca_pem(), None))), &url, None),
            Ok((200, _, _))
        )
    };
    assert!(served(&old) && !served(&new));
    // A renewal as cert-manager writes it: the new certificate and key replace the files.
    let (cert, key) = issue(&new);
    let (cert_tmp, key_tmp) = (
        dir.write("server.pem.new", &cert),
        dir.write("server.key.new", &key),
    );
    std::fs::rename(cert_tmp, dir.0.join("server.pem")).unwrap();
    std::fs::rename(key_tmp, dir.0.join("server.key")).unwrap();
    let renewed = Instant::now();
    while !served(&new) {
        assert!(
            renewed.elapsed() < Duration::from_secs(5),
            "the renewed certificate was not served within 5 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!served(&old), "the old certificate is still served");
    // A broken file keeps the certificate in force, counted.
    dir.write("server.key", "not a key");
    let broken = Instant::now();
    let https = agent(Some(trusting(&new.ca_pem(), None)));
    let metrics = format!("https://127.0.0.1:{}/metrics", t.http.port());
    loop {
        let (_, _, body) = get(&https, &metrics, None).unwrap();
        let e = Exposition::parse(&body);
        if e.value("tallyd_tls_reloads_total", &[("outcome", "failure")]) == Some(1.0) {
            assert!(e.value("tallyd_tls_reloads_total", &[("outcome", "success")]) >= Some(1.0));
            break;
        }
        assert!(broken.elapsed() < Duration::from_secs(5), "{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served(&new));
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::new("mtls");
    let server = pki.issue(&["127.0.0.1"], rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let client = pki.issue(&["prometheus"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let stranger =
        Pki::new("stranger").issue(&["prometheus"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let dir = TempDir::new("mtls");
    let cert = dir.write("server.pem", &server.0);
    let key = dir.write("server.key", &server.1);
    let ca = dir.write("ca.pem", pki.ca_pem());
    let web = dir.write(
        "web.yml",
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n  \
             client_auth_type: RequireAndVerifyClientCert\n",
            cert.display(),
            key.display(),
            ca.display()
        ),
    );
    let t = Tallyd::start(&[&flag(&web)]);
    let url = format!("https://127.0.0.1:{}/metrics", t.http.port());

    let (status, _, body) = get(
        &agent(Some(trusting(&pki.ca_pem(), Some(&client)))),
        &url,
        None,
    )
    .expect("a client with a certificate from the CA is served");
    assert_eq!(status, 200);
    assert!(body.contains("tallyd_lines_total"), "{body}");
    let without = get(&agent(Some(trusting(&pki.ca_pem(), None))), &url, None);
    assert!(without.is_err(), "served without a client certificate");
    let foreign = get(
        &agent(Some(trusting(&pki.ca_pem(), Some(&stranger)))),
        &url,
        None,
    );
    assert!(
        foreign.is_err(),
        "served a client certificate from another CA"
    );
}

#[test]
fn a_bad_web_config_file_fails_start_up() {
    let file = fixture("unknown-key.yml");
    let (code, stderr) = start_fails(&[&flag(&file)], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:5:3", file.display()))
            && stderr.contains("tls_server_config.client_auth")
            && stderr.contains("unknown field"),
        "{stderr}"
    );

    let file = fixture("missing-cert.yml");
    let (code, stderr) = start_fails(&[&flag(&file)], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&file.display().to_string())
            && stderr.contains("tls_server_config.cert_file")
            && stderr.contains("does-not-exist.pem"),
        "{stderr}"
    );

    let (code, stderr) = start_fails(&["--web.config.file=/nonexistent/web.yml"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/web.yml"), "{stderr}");

    // Bad [web] values fail start-up too, naming where they came from.
    for (var, value, complaint) in [
        ("TALLYD_WEB__MAX_CONNECTIONS", "0", "at least 1"),
        ("TALLYD_WEB__MAX_HEADER_BYTES", "1024", "at least 8192"),
        ("TALLYD_WEB__HEADER_TIMEOUT", "0s", "at least 1ms"),
    ] {
        let (code, stderr) = start_fails(&[], &[(var, value)]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(var) && stderr.contains(complaint),
            "{stderr}"
        );
    }
}
