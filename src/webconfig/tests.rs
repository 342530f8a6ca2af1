//! Web config files: unknown keys, TLS, client certificates, headers, basic auth, rate limit.

use super::*;
use base64::Engine as _;

fn load(text: &str) -> Result<WebConfig, WebConfigError> {
    WebConfig::from_yaml(text, Path::new("/etc/tallyd/web.yml"))
}

fn error(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

#[test]
fn empty_file_is_plain_http() {
    let c = load("").unwrap();
    assert!(c.tls.is_none() && c.basic_auth.is_none() && c.headers.is_empty());
    assert!(c.rate_limit.is_none());
}

#[test]
fn unknown_keys_are_named_with_their_path_and_line() {
    let msg = error("tls_server_config:\n  cert_file: a.pem\n  certfile: b.pem\n");
    assert!(msg.contains("/etc/tallyd/web.yml:3:"), "{msg}");
    assert!(msg.contains("tls_server_config.certfile"), "{msg}");
    let msg = error("basic_auth_user:\n  a: b\n");
    assert!(
        msg.contains("basic_auth_user") && msg.contains("web.yml:1:"),
        "{msg}"
    );
}

#[test]
fn tls_needs_a_certificate_and_key() {
    let msg = error("tls_server_config:\n  client_auth_type: NoClientCert\n");
    assert!(
        msg.contains("missing one of `cert` or `cert_file`"),
        "{msg}"
    );
    let msg = error("tls_server_config:\n  cert_file: /nonexistent/tallyd.pem\n  key_file: k\n");
    assert!(
        msg.contains("tls_server_config.cert_file") && msg.contains("/nonexistent/tallyd.pem"),
        "{msg}"
    );
}

/// A self-signed certificate and key, inline, as the start of a `tls_server_config`.
fn inline_cert() -> String {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let indent = |pem: String| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}",
        indent(key.cert.pem()),
        indent(key.signing_key.serialize_pem())
    )
}

#[test]
fn tls_settings_map_to_rustls() {
    let tls = inline_cert();
    let c = load(&tls).unwrap();
    let config = c.tls.unwrap();
    assert!(
        config.ignore_client_order,
        "Go's default: the server's order"
    );
    assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let c = load(&format!(
        "{tls}  min_version: TLS10\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA]\n  curve_preferences: [CurveP521, X25519]\n"
    ))
    .unwrap();
    let warnings = c.warnings.join("\n");
    assert!(warnings.contains("TLS 1.0 and 1.1"), "{warnings}");
    assert!(
        warnings.contains("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"),
        "{warnings}"
    );
    assert!(warnings.contains("CurveP521"), "{warnings}");

    for (extra, key) in [
        (
            "  client_auth_type: Sometimes\n",
            "tls_server_config.client_auth_type",
        ),
        ("  min_version: TLS14\n", "tls_server_config.min_version"),
        (
            "  min_version: TLS10\n  max_version: TLS11\n",
            "tls_server_config.max_version",
        ),
        (
            "  min_version: TLS13\n  max_version: TLS12\n",
            "tls_server_config.min_version",
        ),
        (
            "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
            "tls_server_config.cipher_suites[0]",
        ),
        (
            "  curve_preferences: [CurveP521]\n",
            "tls_server_config.curve_preferences",
        ),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config.client_ca_file",
        ),
        (
            "  client_ca_file: ca.pem\n",
            "tls_server_config.client_ca_file",
        ),
        (
            "  client_allowed_sans: [a]\n",
            "tls_server_config.client_allowed_sans",
        ),
        ("  cert_file: x.pem\n", "tls_server_config.cert_file"),
    ] {
        let msg = error(&format!("{tls}{extra}"));
        assert!(msg.contains(&format!("{key}: ")), "{key}: {msg}");
    }
    // Only TLS 1.3 is left when no listed TLS 1.2 suite exists in rustls.
    let c = load(&format!(
        "{tls}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n"
    ))
    .unwrap();
    assert!(
        c.warnings.join(" ").contains("only TLS 1.3"),
        "{:?}",
        c.warnings
    );
    // RequireAnyClientCert needs no CA.
    let c = load(&format!("{tls}  client_auth_type: RequireAnyClientCert\n")).unwrap();
    assert_eq!(c.client_auth, ClientAuth::RequireAny);
}

#[test]
fn only_exporter_toolkit_headers_may_be_set() {
    let c = load(
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-XSS-Protection: \"\"\n",
    )
    .unwrap();
    assert_eq!(c.headers.len(), 1);
    assert_eq!(c.headers[0].0.as_str(), "x-frame-options");
    let msg = error("http_server_config:\n  headers:\n    X-Powered-By: tallyd\n");
    assert!(
        msg.contains("http_server_config.headers.X-Powered-By"),
        "{msg}"
    );
    let msg = error("http_server_config:\n  headers:\n    X-Frame-Options: allow\n");
    assert!(msg.contains("deny, sameorigin"), "{msg}");
    // http2 is accepted and ignored.
    load("http_server_config:\n  http2: false\n").unwrap();
}

#[test]
fn basic_auth_hashes_must_be_bcrypt() {
    let msg = error("basic_auth_users:\n  alice: plaintext\n");
    assert!(
        msg.contains("basic_auth_users.alice") && msg.contains("bcrypt"),
        "{msg}"
    );
}

#[tokio::test]
async fn basic_auth_checks_user_and_password() {
    let hash = bcrypt::hash("s3cret", 4)
        .unwrap()
        .replacen("$2b$", "$2y$", 1);
    let c = load(&format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
    let auth = c.basic_auth.unwrap();
    let check = |user, password| {
        let auth = &auth;
        async move { auth.check(Some(&header(user, password)), 4).await }
    };
    assert_eq!(check("alice", "s3cret").await, Verdict::Allowed);
    // Remembered the second time, and still right.
    assert_eq!(check("alice", "s3cret").await, Verdict::Allowed);
    assert_eq!(check("alice", "wrong").await, Verdict::Denied);
    assert_eq!(check("bob", "s3cret").await, Verdict::Denied);
    assert_eq!(auth.check(None, 4).await, Verdict::Denied);
    assert_eq!(
        auth.check(Some(&HeaderValue::from_static("Bearer abc")), 4)
            .await,
        Verdict::Denied
    );
}

/// An `Authorization` header for `user:password`.
fn header(user: &str, password: &str) -> HeaderValue {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
}

/// Basic auth for alice (bcrypt cost 4) and carol (cost 8, 16 times as slow).
fn mixed_costs() -> crate::webconfig::BasicAuth {
    let hash = |cost| {
        bcrypt::hash("s3cret", cost)
            .unwrap()
            .replacen("$2b$", "$2y$", 1)
    };
    let config = format!(
        "basic_auth_users:\n  alice: '{}'\n  carol: '{}'\n",
        hash(4),
        hash(8)
    );
    load(&config).unwrap().basic_auth.unwrap()
}

#[tokio::test]
async fn a_failure_takes_as_long_as_the_costliest_hash_whoever_asks() {
    let auth = mixed_costs();
    let timed = |user: &'static str| {
        let auth = &auth;
        async move {
            let mut times = Vec::new();
            for _ in 0..3 {
                let started = std::time::Instant::now();
                assert_eq!(
                    auth.check(Some(&header(user, "wrong")), 4).await,
                    Verdict::Denied
                );
                times.push(started.elapsed());
            }
            // The fastest: the hash's cost with the least interference from whatever else
            // runs on the machine, which only ever adds.
            times.into_iter().min().expect("three timings")
        }
    };
    let carol = timed("carol").await;
    // Without the floor alice's failure takes a sixteenth of carol's; an unknown user's
    // would take whatever the first user's hash does.
    for user in ["alice", "nobody"] {
        let time = timed(user).await;
        assert!(
            time * 2 >= carol,
            "{user}: {time:?} against carol's {carol:?}"
        );
    }
    // Three at once take three turns of the costliest hash, whoever they name: a failed check
    // holds the turn for that long.
    for user in ["alice", "nobody"] {
        let started = std::time::Instant::now();
        let wrong = header(user, "wrong");
        let check = || auth.check(Some(&wrong), 4);
        let verdicts = tokio::join!(check(), check(), check());
        assert_eq!(
            verdicts,
            (Verdict::Denied, Verdict::Denied, Verdict::Denied)
        );
        let time = started.elapsed();
        assert!(
            time >= carol * 2,
            "{user}: 3 at once in {time:?}, carol alone {carol:?}"
        );
    }
}

#[tokio::test]
async fn checks_past_the_limit_are_refused_unchecked() {
    let auth = std::sync::Arc::new(mixed_costs());
    let first = tokio::spawn({
        let auth = auth.clone();
        async move { auth.check(Some(&header("carol", "wrong")), 1).await }
    });
    // The first check takes its place as it starts, and holds it through its bcrypt.
    tokio::task::yield_now().await;
    assert_eq!(
        auth.check(Some(&header("carol", "s3cret")), 1).await,
        Verdict::Busy
    );
    assert!(!first.is_finished(), "the first check was still running");
    assert_eq!(first.await.unwrap(), Verdict::Denied);
    // Its place is back, and a remembered password needs none.
    assert_eq!(
        auth.check(Some(&header("alice", "s3cret")), 1).await,
        Verdict::Allowed
    );
}

#[test]
fn rate_limit_is_a_token_bucket() {
    let c = load("rate_limit:\n  interval: 1h\n  burst: 2\n").unwrap();
    let limit = c.rate_limit.unwrap();
    assert!(limit.allow() && limit.allow());
    assert!(!limit.allow());
    assert!(load("rate_limit:\n  interval: 0s\n  burst: 0\n")
        .unwrap()
        .rate_limit
        .is_none());
    let msg = error("rate_limit:\n  interval: 1s\n");
    assert!(msg.contains("rate_limit.burst"), "{msg}");
}
