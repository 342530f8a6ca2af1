//! The web configuration file of Prometheus' exporter-toolkit (`--web.config.file`): TLS on the
//! HTTP port (optionally verifying client certificates), basic authentication, extra response
//! headers and a request rate limit, in the format of
//! <https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md>, so
//! that a file written for node_exporter or statsd_exporter works unchanged.
//!
//! Every key is checked: an unknown one fails start-up with its path (`tls_server_config.certfile`)
//! and line. Where tallyd cannot do what exporter-toolkit does, it says so:
//! - The file is read at start-up; exporter-toolkit re-reads it (and the certificates) on every
//!   connection. Restart tallyd to pick up a new certificate.
//! - TLS is rustls: TLS 1.0 and 1.1, the CBC and RSA key-exchange cipher suites and the P-521
//!   curve do not exist there. Asking for them logs a warning at start-up and they are left out;
//!   a setting that leaves nothing usable (e.g. `max_version: TLS11`) is an error.
//! - `client_allowed_sans` is refused rather than ignored: ignoring it would let in clients the
//!   file means to keep out.
//! - `http_server_config.http2` is ignored: tallyd serves HTTP/1.1.
//!
//! Basic authentication protects every path, as in exporter-toolkit. A wrong or missing password
//! gets 401 with `WWW-Authenticate: Basic`. A password is checked with bcrypt once; the result is
//! remembered for that user, since Prometheus sends the same credentials every scrape and bcrypt
//! at cost 10 takes tens of milliseconds.

use base64::Engine as _;
use hyper::header::{HeaderName, HeaderValue};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};
use serde::Deserialize;

use crate::yaml::{self, Errors, Problem};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::WebSettings;

/// Why the web configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// The file could not be read.
    #[error("cannot read web config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML, has an unknown key, or a value that cannot be used: the
    /// file, where, and what.
    #[error("invalid web config file {0}")]
    Invalid(yaml::Problem),
}

impl From<yaml::Problem> for WebConfigError {
    fn from(problem: yaml::Problem) -> Self {
        WebConfigError::Invalid(problem)
    }
}

/// What the web configuration file asks of the HTTP server. The default (no file) is plain
/// HTTP, open to all.
#[derive(Debug, Default)]
pub struct WebConfig {
    /// The file it was read from, if any.
    pub path: Option<PathBuf>,
    /// TLS, when `tls_server_config` names a certificate.
    pub tls: Option<Arc<ServerConfig>>,
    /// Whether the TLS clients must present a certificate (`client_auth_type`), for the logs.
    pub client_auth: ClientAuth,
    /// Users and their bcrypt hashes, when `basic_auth_users` is not empty.
    pub basic_auth: Option<BasicAuth>,
    /// Extra headers added to every response (`http_server_config.headers`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The request rate limit (`rate_limit`), when its interval is not 0.
    pub rate_limit: Option<RateLimiter>,
    /// What the file asks that tallyd cannot do and leaves out, to be logged at start-up.
    pub warnings: Vec<String>,
}

impl WebConfig {
    /// The configuration `web.config_file` names; the default when it is empty.
    pub fn from_settings(web: &WebSettings) -> Result<WebConfig, WebConfigError> {
        match web.config_file.as_str() {
            "" => Ok(WebConfig::default()),
            path => WebConfig::load(Path::new(path)),
        }
    }

    /// Reads and checks a web configuration file, with the certificate files it names.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Checks a web configuration given as text; `origin` names it in errors, and relative
    /// paths in it are relative to `origin`'s directory, as exporter-toolkit reads them.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<WebConfig, WebConfigError> {
        let errors = Errors::new(origin);
        let raw = parse(text, &errors)?;
        let dir = origin.parent().unwrap_or(Path::new(""));
        let mut config = WebConfig {
            path: Some(origin.to_owned()),
            ..WebConfig::default()
        };
        if let Some(tls) = raw.tls_server_config {
            (config.tls, config.client_auth) = tls.build(dir, &errors, &mut config.warnings)?;
        }
        if let Some(http) = raw.http_server_config {
            config.headers = http.headers(&errors)?;
        }
        let users = raw.basic_auth_users.unwrap_or_default();
        if !users.is_empty() {
            config.basic_auth = Some(BasicAuth::new(users, &errors)?);
        }
        if let Some(limit) = raw.rate_limit {
            config.rate_limit = limit.build(&errors)?;
        }
        Ok(config)
    }
}

/// How TLS clients are asked for certificates (`client_auth_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert` (the default).
    #[default]
    None,
    /// `RequestClientCert`: asked for, not required, not verified.
    Request,
    /// `RequireAnyClientCert`: required, not verified against a CA.
    RequireAny,
    /// `VerifyClientCertIfGiven`: verified against `client_ca_file` when given.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`: required and verified against `client_ca_file`.
    RequireAndVerify,
}

impl ClientAuth {
    /// The name exporter-toolkit uses.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientAuth::None => "NoClientCert",
            ClientAuth::Request => "RequestClientCert",
            ClientAuth::RequireAny => "RequireAnyClientCert",
            ClientAuth::VerifyIfGiven => "VerifyClientCertIfGiven",
            ClientAuth::RequireAndVerify => "RequireAndVerifyClientCert",
        }
    }
}

// ---- the file's shape -------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
}

/// `tls_server_config`. Empty strings mean unset, as Go's zero values do.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
    client_ca: String,
    cert_file: String,
    key_file: String,
    client_auth_type: String,
    client_ca_file: String,
    client_allowed_sans: Vec<String>,
    min_version: String,
    max_version: String,
    cipher_suites: Vec<String>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHttp {
    /// Ignored: tallyd serves HTTP/1.1 only.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRateLimit {
    #[serde(with = "humantime_serde")]
    interval: Option<Duration>,
    burst: Option<u32>,
}

/// Deserializes the document, keeping the key path and location of the first error.
fn parse(text: &str, errors: &Errors<'_>) -> Result<RawFile, Problem> {
    yaml::parse(text, yaml::key_path).map_err(|failure| errors.failure(&failure))
}

// ---- TLS ----------------------------------------------------------------------------------

/// Cipher suites as Go's `tls.CipherSuites()` names them, which is what exporter-toolkit
/// accepts; `None` for the ones rustls does not implement.
fn cipher_suite(name: &str) -> Result<Option<SupportedCipherSuite>, ()> {
    use rustls::crypto::ring::cipher_suite as cs;
    Ok(Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        // TLS 1.3 suites: Go accepts the names and ignores them (TLS 1.3 suites are not
        // configurable there), and so does tallyd.
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            return Ok(None)
        }
        "TLS_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_GCM_SHA256"
        | "TLS_RSA_WITH_AES_256_GCM_SHA384"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA" => return Ok(None),
        _ => return Err(()),
    }))
}

const TLS13_SUITE_NAMES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Curves as exporter-toolkit names them; `None` for those rustls (with ring) lacks.
fn curve(name: &str) -> Result<Option<&'static dyn SupportedKxGroup>, ()> {
    use rustls::crypto::ring::kx_group;
    match name {
        "X25519" => Ok(Some(kx_group::X25519)),
        "CurveP256" => Ok(Some(kx_group::SECP256R1)),
        "CurveP384" => Ok(Some(kx_group::SECP384R1)),
        "CurveP521" | "X25519MLKEM768" => Ok(None),
        _ => Err(()),
    }
}

/// TLS versions as exporter-toolkit names them, as (major, minor) numbers.
fn tls_version(name: &str) -> Option<u8> {
    match name {
        "TLS10" => Some(0),
        "TLS11" => Some(1),
        "TLS12" => Some(2),
        "TLS13" => Some(3),
        _ => None,
    }
}

impl RawTls {
    /// True when any field that turns TLS on is set, as exporter-toolkit's `IsEnabled`.
    fn enabled(&self) -> bool {
        [
            &self.cert,
            &self.key,
            &self.client_ca,
            &self.cert_file,
            &self.key_file,
            &self.client_ca_file,
            &self.client_auth_type,
        ]
        .iter()
        .any(|s| !s.is_empty())
    }

    fn build(
        self,
        dir: &Path,
        errors: &Errors<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<(Option<Arc<ServerConfig>>, ClientAuth), Problem> {
        const KEY: &str = "tls_server_config";
        if !self.enabled() {
            return Ok((None, ClientAuth::None));
        }
        let read = |inline: &str, file: &str, name: &str, file_name: &str| {
            let key = |k: &str| format!("{KEY}.{k}");
            match (inline.is_empty(), file.is_empty()) {
                (false, false) => Err(errors.at(
                    &key(file_name),
                    format!("give `{name}` or `{file_name}`, not both"),
                )),
                (false, true) => Ok(Some((inline.as_bytes().to_vec(), key(name)))),
                (true, false) => {
                    let path = dir.join(file);
                    std::fs::read(&path)
                        .map(|bytes| Some((bytes, key(file_name))))
                        .map_err(|e| {
                            errors.at(
                                &key(file_name),
                                format!("cannot read {}: {e}", path.display()),
                            )
                        })
                }
                (true, true) => Ok(None),
            }
        };
        let Some((cert_pem, cert_key)) = read(&self.cert, &self.cert_file, "cert", "cert_file")?
        else {
            return Err(errors.at(KEY, "missing one of `cert` or `cert_file`"));
        };
        let Some((key_pem, key_key)) = read(&self.key, &self.key_file, "key", "key_file")? else {
            return Err(errors.at(KEY, "missing one of `key` or `key_file`"));
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| errors.at(&cert_key, format!("not a PEM certificate: {e}")))?;
        if chain.is_empty() {
            return Err(errors.at(&cert_key, "no PEM certificate found"));
        }
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| errors.at(&key_key, format!("no usable PEM private key: {e}")))?;
        let client_ca = read(
            &self.client_ca,
            &self.client_ca_file,
            "client_ca",
            "client_ca_file",
        )?;

        let client_auth = match self.client_auth_type.as_str() {
            "" | "NoClientCert" => ClientAuth::None,
            "RequestClientCert" => ClientAuth::Request,
            // `RequireClientCert` is exporter-toolkit's old name.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAny,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
            other => {
                return Err(errors.at(
                    &format!("{KEY}.client_auth_type"),
                    format!(
                        "{other:?} is not one of NoClientCert, RequestClientCert, \
                         RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                    ),
                ))
            }
        };
        if client_ca.is_some() && client_auth == ClientAuth::None {
            return Err(errors.at(
                &format!("{KEY}.client_auth_type"),
                "a client CA is given but client_auth_type is NoClientCert; \
                 use RequireAndVerifyClientCert",
            ));
        }
        if !self.client_allowed_sans.is_empty() {
            return Err(errors.at(
                &format!("{KEY}.client_allowed_sans"),
                "is not supported by tallyd; use a client CA that signs only the allowed \
                 clients, with RequireAndVerifyClientCert",
            ));
        }

        // Versions. Go's defaults: TLS12 to TLS13.
        let version = |value: &str, field: &str, default: u8| match value {
            "" => Ok(default),
            v => tls_version(v).ok_or_else(|| {
                errors.at(
                    &format!("{KEY}.{field}"),
                    format!("{v:?} is not one of TLS10, TLS11, TLS12, TLS13"),
                )
            }),
        };
        let min = version(&self.min_version, "min_version", 2)?;
        let max = version(&self.max_version, "max_version", 3)?;
        if min > max {
            return Err(errors.at(
                &format!("{KEY}.min_version"),
                "is above max_version".to_owned(),
            ));
        }
        if min < 2 {
            warnings.push(format!(
                "{KEY}.min_version: TLS 1.0 and 1.1 are not available (rustls); \
                 the lowest version served is TLS 1.2"
            ));
        }

        // ring's provider, chosen here so that nothing depends on a process-wide default.
        let mut provider = rustls::crypto::ring::default_provider();
        let mut tls12 = (min..=max).contains(&2);
        let tls13 = (min..=max).contains(&3);

        // Cipher suites apply to TLS 1.2 (Go does not let TLS 1.3 suites be chosen either).
        if !self.cipher_suites.is_empty() {
            let mut chosen = Vec::new();
            let mut unavailable = Vec::new();
            for (i, name) in self.cipher_suites.iter().enumerate() {
                match cipher_suite(name) {
                    Ok(Some(suite)) => chosen.push(suite),
                    Ok(None) if TLS13_SUITE_NAMES.contains(&name.as_str()) => {}
                    Ok(None) => unavailable.push(name.as_str()),
                    Err(()) => {
                        return Err(errors.at(
                            &format!("{KEY}.cipher_suites[{i}]"),
                            format!("unknown cipher suite {name:?}"),
                        ))
                    }
                }
            }
            if !unavailable.is_empty() {
                warnings.push(format!(
                    "{KEY}.cipher_suites: not available in rustls, left out: {}",
                    unavailable.join(", ")
                ));
            }
            if chosen.is_empty() && tls12 {
                warnings.push(format!(
                    "{KEY}.cipher_suites: none of the TLS 1.2 suites listed is available; \
                     only TLS 1.3 is served"
                ));
                tls12 = false;
            }
            provider.cipher_suites.retain(|s| s.tls13().is_some());
            provider.cipher_suites.extend(chosen);
        }
        if !self.curve_preferences.is_empty() {
            let mut groups = Vec::new();
            let mut unavailable = Vec::new();
            for (i, name) in self.curve_preferences.iter().enumerate() {
                match curve(name) {
                    Ok(Some(group)) => groups.push(group),
                    Ok(None) => unavailable.push(name.as_str()),
                    Err(()) => {
                        return Err(errors.at(
                            &format!("{KEY}.curve_preferences[{i}]"),
                            format!(
                                "unknown curve {name:?}; expected X25519, CurveP256, CurveP384 \
                                 or CurveP521"
                            ),
                        ))
                    }
                }
            }
            if groups.is_empty() {
                return Err(errors.at(
                    &format!("{KEY}.curve_preferences"),
                    "none of these curves is available in rustls (X25519, CurveP256, CurveP384 are)",
                ));
            }
            if !unavailable.is_empty() {
                warnings.push(format!(
                    "{KEY}.curve_preferences: not available in rustls, left out: {}",
                    unavailable.join(", ")
                ));
            }
            provider.kx_groups = groups;
        }
        let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
        if tls12 {
            versions.push(&rustls::version::TLS12);
        }
        if tls13 {
            versions.push(&rustls::version::TLS13);
        }
        if versions.is_empty() {
            return Err(errors.at(
                &format!("{KEY}.max_version"),
                "leaves no TLS version rustls can serve (TLS12 or TLS13)",
            ));
        }

        let provider = Arc::new(provider);
        let roots = match &client_ca {
            Some((pem, key)) => {
                let mut roots = RootCertStore::empty();
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| errors.at(key, format!("not a PEM certificate: {e}")))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(errors.at(key, "no usable CA certificate found"));
                }
                Some(Arc::new(roots))
            }
            None => None,
        };
        let ca_required = |name: &str| {
            errors.at(
                &format!("{KEY}.client_ca_file"),
                format!("is required with client_auth_type {name}"),
            )
        };
        let verifier: Option<Arc<dyn ClientCertVerifier>> = match client_auth {
            ClientAuth::None => None,
            ClientAuth::Request | ClientAuth::RequireAny => Some(Arc::new(AnyClientCert {
                mandatory: client_auth == ClientAuth::RequireAny,
                algorithms: provider.signature_verification_algorithms,
            })),
            ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify => {
                let roots = roots.ok_or_else(|| ca_required(client_auth.as_str()))?;
                let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
                let builder = if client_auth == ClientAuth::VerifyIfGiven {
                    builder.allow_unauthenticated()
                } else {
                    builder
                };
                Some(builder.build().map_err(|e| {
                    errors.at(&format!("{KEY}.client_ca_file"), format!("unusable: {e}"))
                })?)
            }
        };
        let builder = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| errors.at(KEY, e.to_string()))?;
        let builder = match verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, private_key)
            .map_err(|e| errors.at(&key_key, format!("does not go with the certificate: {e}")))?;
        // Go's default, and the file's `prefer_server_cipher_suites`.
        config.ignore_client_order = self.prefer_server_cipher_suites.unwrap_or(true);
        // tallyd speaks HTTP/1.1 only; say so, so that clients offering h2 fall back.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((Some(Arc::new(config)), client_auth))
    }
}

/// Accepts any client certificate whose key signed the handshake, without checking who
/// issued it: exporter-toolkit's `RequestClientCert` and `RequireAnyClientCert`.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

// ---- response headers -------------------------------------------------------------------

/// The headers exporter-toolkit lets the file set, with their allowed values (any when empty).
/// It refuses every other header on purpose, for consistency across Prometheus exporters.
const EXTRA_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

impl RawHttp {
    fn headers(&self, errors: &Errors<'_>) -> Result<Vec<(HeaderName, HeaderValue)>, Problem> {
        let mut out = Vec::new();
        for (name, value) in &self.headers {
            let key = format!("http_server_config.headers.{name}");
            let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(n, _)| n == name) else {
                let names: Vec<&str> = EXTRA_HEADERS.iter().map(|(n, _)| *n).collect();
                return Err(errors.at(
                    &key,
                    format!("this header cannot be set; only {}", names.join(", ")),
                ));
            };
            if value.is_empty() {
                continue; // "Unset if blank."
            }
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(errors.at(
                    &key,
                    format!("{value:?} is not one of {}", allowed.join(", ")),
                ));
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| errors.at(&key, "is not a valid header value"))?;
            let name = HeaderName::from_bytes(name.as_bytes()).expect("a name from EXTRA_HEADERS");
            out.push((name, value));
        }
        Ok(out)
    }
}

// ---- basic authentication ---------------------------------------------------------------

/// `basic_auth_users`: user names and bcrypt hashes.
#[derive(Debug)]
pub struct BasicAuth {
    users: Vec<(Vec<u8>, String)>,
    /// The password that last passed bcrypt, per user (same index as `users`).
    verified: Mutex<Vec<Option<Vec<u8>>>>,
    /// One bcrypt at a time, as in exporter-toolkit: a flood of wrong passwords then costs one
    /// core, not all of them, and scrapes with remembered passwords are not held up.
    bcrypt_turn: tokio::sync::Mutex<()>,
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>, errors: &Errors<'_>) -> Result<Self, Problem> {
        for (user, hash) in &users {
            hash.parse::<bcrypt::HashParts>().map_err(|e| {
                errors.at(
                    &format!("basic_auth_users.{user}"),
                    format!("not a bcrypt hash: {e}"),
                )
            })?;
        }
        let users: Vec<(Vec<u8>, String)> = users
            .into_iter()
            .map(|(user, hash)| (user.into_bytes(), hash))
            .collect();
        Ok(BasicAuth {
            verified: Mutex::new(vec![None; users.len()]),
            users,
            bcrypt_turn: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether an `Authorization` header carries the password of a configured user.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        // Every name is compared, in constant time, so the time taken does not tell which
        // names exist.
        let mut found = None;
        for (i, (name, _)) in self.users.iter().enumerate() {
            if constant_time_eq(name, &user) {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified[i]
                .as_deref()
                .is_some_and(|known| constant_time_eq(known, &password))
            {
                return true;
            }
        }
        // An unknown user is checked against a real hash too, so that it takes as long as a
        // known user with a wrong password.
        let hash = self.users[found.unwrap_or(0)].1.clone();
        let turn = self.bcrypt_turn.lock().await;
        let checked = password.clone();
        // bcrypt is deliberately slow; it runs off the async workers.
        let matches =
            tokio::task::spawn_blocking(move || bcrypt::verify(&checked, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        drop(turn);
        match found {
            Some(i) if matches => {
                self.verified.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(password);
                true
            }
            _ => false,
        }
    }
}

/// User and password of `Basic base64(user:password)`.
fn credentials(header: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = header.as_bytes();
    let (scheme, encoded) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// Compares without stopping at the first difference (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

// ---- rate limit -------------------------------------------------------------------------

impl RawRateLimit {
    fn build(self, errors: &Errors<'_>) -> Result<Option<RateLimiter>, Problem> {
        let interval = self.interval.unwrap_or_default();
        if interval.is_zero() {
            return Ok(None);
        }
        let burst = self.burst.unwrap_or(0);
        if burst == 0 {
            return Err(errors.at(
                "rate_limit.burst",
                "must be at least 1 when rate_limit.interval is set (0 would refuse every request)",
            ));
        }
        Ok(Some(RateLimiter {
            interval,
            burst,
            bucket: Mutex::new((f64::from(burst), Instant::now())),
        }))
    }
}

/// A token bucket, as Go's `rate.Limiter` that exporter-toolkit uses: one token every
/// `interval`, at most `burst` saved up; a request without a token gets 429.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: u32,
    /// Tokens, and when they were counted. A std Mutex: held for a few instructions, never
    /// across an await.
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// Takes a token if there is one.
    pub fn allow(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let earned = now.duration_since(bucket.1).as_secs_f64() / self.interval.as_secs_f64();
        bucket.0 = (bucket.0 + earned).min(f64::from(self.burst));
        bucket.1 = now;
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests;
