//! Sends one remote write request: HTTP/1.1 over TCP or TLS (rustls, hyper-util's pooled
//! client with hyper-rustls), with the headers remote write 1.0 asks for, the credentials
//! (read again from their files for every request, so a rotated token is used at once) and
//! the extra headers; and says what became of it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, USER_AGENT,
};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

use crate::config::RemoteWriteSettings;
use crate::files;

/// Bytes of a refusal's body kept for the log.
const REASON_BYTES: usize = 256;
/// Most bytes of a response's body read.
const RESPONSE_BYTES: usize = 64 << 10;

/// What became of a request.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The receiver took it (2xx).
    Sent,
    /// The receiver refused it for good (a 4xx other than 429): why.
    Refused(String),
    /// It may succeed if sent again (a network error, a timeout, a 5xx, a 429): why.
    Retry(String),
}

/// The credentials sent with each request.
#[derive(Debug)]
enum Auth {
    None,
    Bearer(String),
    Basic {
        username: String,
        password_file: String,
    },
}

/// See the module.
#[derive(Debug)]
pub(super) struct Client {
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    timeout: Duration,
    auth: Auth,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Client {
    /// A client for `settings` (checked by the settings' validation); an error naming the
    /// setting whose file cannot be used.
    pub(super) fn new(settings: &RemoteWriteSettings) -> anyhow::Result<Client> {
        let url: Uri = settings.url.parse()?;
        let tls = tls_config(settings)?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let builder = match settings.tls_server_name.as_str() {
            "" => builder,
            name => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
                ServerName::try_from(name.to_owned())
                    .map_err(|e| anyhow::anyhow!("--remote-write.tls.server-name={name}: {e}"))?,
            )),
        };
        let connector = builder.enable_http1().build();
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let auth = if !settings.bearer_token_file.is_empty() {
            // Read once now, so a missing file stops tallyd at start, naming it.
            read_secret(
                &settings.bearer_token_file,
                "--remote-write.bearer-token-file",
            )?;
            Auth::Bearer(settings.bearer_token_file.clone())
        } else if !settings.basic_auth_username.is_empty() {
            if !settings.basic_auth_password_file.is_empty() {
                read_secret(
                    &settings.basic_auth_password_file,
                    "--remote-write.basic-auth.password-file",
                )?;
            }
            Auth::Basic {
                username: settings.basic_auth_username.clone(),
                password_file: settings.basic_auth_password_file.clone(),
            }
        } else {
            Auth::None
        };
        let headers = settings
            .headers
            .iter()
            .map(|h| super::header(h).map_err(|e| anyhow::anyhow!("--remote-write.header: {e}")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Client {
            http,
            url,
            timeout: settings.timeout,
            auth,
            headers,
        })
    }

    /// Sends one compressed `WriteRequest`.
    pub(super) async fn send(&self, body: Bytes) -> Outcome {
        let request = match self.request(body) {
            Ok(request) => request,
            Err(e) => return Outcome::Retry(e),
        };
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                // The chain of causes: hyper-util's own error says little alone.
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    why = format!("{why}: {cause}");
                    source = cause.source();
                }
                why
            })?;
            let status = response.status();
            // Only the start of a refusal is logged: a larger body is not read whole.
            let body = http_body_util::Limited::new(response.into_body(), RESPONSE_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Outcome::Retry(format!("no answer within {:?}", self.timeout)),
            Ok(Err(why)) => Outcome::Retry(why),
            Ok(Ok((status, _))) if status.is_success() => Outcome::Sent,
            Ok(Ok((status, body))) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(REASON_BYTES)]);
                let why = format!("{status}: {}", text.trim());
                match status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                    true => Outcome::Retry(why),
                    false => Outcome::Refused(why),
                }
            }
        }
    }

    fn request(&self, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::post(self.url.clone())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(CONTENT_ENCODING, "snappy")
            .header(USER_AGENT, concat!("tallyd/", env!("CARGO_PKG_VERSION")))
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        let authorization = match &self.auth {
            Auth::None => None,
            Auth::Bearer(file) => {
                let token = read_secret(file, "--remote-write.bearer-token-file")
                    .map_err(|e| e.to_string())?;
                Some(format!("Bearer {token}"))
            }
            Auth::Basic {
                username,
                password_file,
            } => {
                let password = match password_file.is_empty() {
                    true => String::new(),
                    false => read_secret(password_file, "--remote-write.basic-auth.password-file")
                        .map_err(|e| e.to_string())?,
                };
                use base64::Engine as _;
                let pair = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                Some(format!("Basic {pair}"))
            }
        };
        if let Some(authorization) = authorization {
            let mut value = HeaderValue::from_str(&authorization)
                .map_err(|_| "the credentials are not a valid header value".to_owned())?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(request)
    }
}

/// A credentials file's content, without the line end.
fn read_secret(path: &str, flag: &str) -> anyhow::Result<String> {
    let bytes = files::read(std::path::Path::new(path))
        .map_err(|e| anyhow::anyhow!("{flag}={path}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{flag}={path}: not UTF-8"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// The TLS settings of `settings`: the CAs (the system's, or `tls_ca_file`'s), the client
/// certificate, or no verification at all.
fn tls_config(settings: &RemoteWriteSettings) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if settings.tls_insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        if settings.tls_ca_file.is_empty() {
            // An https:// URL needs them; a machine without any is told when it connects.
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        } else {
            let flag = "--remote-write.tls.ca-file";
            let pem = files::read(std::path::Path::new(&settings.tls_ca_file))
                .map_err(|e| anyhow::anyhow!("{flag}={}: {e}", settings.tls_ca_file))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
            }
            if roots.is_empty() {
                anyhow::bail!("{flag}={}: no certificate in it", settings.tls_ca_file);
            }
        }
        builder.with_root_certificates(roots)
    };
    if settings.tls_cert_file.is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let (cert_flag, key_flag) = (
        "--remote-write.tls.cert-file",
        "--remote-write.tls.key-file",
    );
    let pem = files::read(std::path::Path::new(&settings.tls_cert_file))
        .map_err(|e| anyhow::anyhow!("{cert_flag}={}: {e}", settings.tls_cert_file))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{cert_flag}: {e}"))?;
    let pem = files::read(std::path::Path::new(&settings.tls_key_file))
        .map_err(|e| anyhow::anyhow!("{key_flag}={}: {e}", settings.tls_key_file))?;
    let key =
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| anyhow::anyhow!("{key_flag}: {e}"))?;
    builder
        .with_client_auth_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("{cert_flag}: {e}"))
}

/// `tls_insecure_skip_verify`: any certificate is taken, its signatures still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
