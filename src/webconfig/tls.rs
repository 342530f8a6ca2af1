//! `tls_server_config`: the certificate and key, client certificates (`client_auth_type`,
//! `client_ca_file`), TLS versions, cipher suites and curves, as a rustls [`ServerConfig`] on
//! ring. What Go offers and rustls lacks is left out with a warning, or refused when nothing
//! usable is left.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

use crate::yaml::{Errors, Problem};

/// The section's key, which every error names.
const KEY: &str = "tls_server_config";

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

/// `tls_server_config`. Empty strings mean unset, as Go's zero values do.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawTls {
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

/// The PEM files (or inline PEM) a `tls_server_config` names, parsed.
struct Certificates {
    chain: Vec<CertificateDer<'static>>,
    private_key: PrivateKeyDer<'static>,
    /// The key the private key came from (`key` or `key_file`), for errors.
    key_key: String,
    /// The client CA's PEM and the key it came from.
    client_ca: Option<(Vec<u8>, String)>,
}

impl RawTls {
    /// The files the section reads (`cert_file`, `key_file`, `client_ca_file`), relative paths
    /// taken from `dir`.
    pub(super) fn files(&self, dir: &Path) -> Vec<std::path::PathBuf> {
        [&self.cert_file, &self.key_file, &self.client_ca_file]
            .into_iter()
            .filter(|file| !file.is_empty())
            .map(|file| dir.join(file))
            .collect()
    }

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

    /// The server's TLS configuration and client-certificate policy; `None` when the section
    /// turns nothing on. What cannot be served is added to `warnings`.
    pub(super) fn build(
        self,
        dir: &Path,
        errors: &Errors<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<(Option<Arc<ServerConfig>>, ClientAuth), Problem> {
        if !self.enabled() {
            return Ok((None, ClientAuth::None));
        }
        let certificates = self.certificates(dir, errors)?;
        let client_auth = self.client_auth(certificates.client_ca.is_some(), errors)?;
        let (tls12, tls13) = self.versions(errors, warnings)?;
        // ring's provider, chosen here so that nothing depends on a process-wide default.
        let mut provider = rustls::crypto::ring::default_provider();
        let tls12 = self.cipher_suites(&mut provider, tls12, errors, warnings)?;
        self.curves(&mut provider, errors, warnings)?;
        let versions = protocol_versions(tls12, tls13, errors)?;
        let provider = Arc::new(provider);
        let verifier = client_verifier(
            client_auth,
            certificates.client_ca.as_ref(),
            &provider,
            errors,
        )?;
        let builder = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| errors.at(KEY, e.to_string()))?;
        let builder = match verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let key_key = certificates.key_key;
        let mut config = builder
            .with_single_cert(certificates.chain, certificates.private_key)
            .map_err(|e| errors.at(&key_key, format!("does not go with the certificate: {e}")))?;
        // Go's default, and the file's `prefer_server_cipher_suites`.
        config.ignore_client_order = self.prefer_server_cipher_suites.unwrap_or(true);
        // tallyd speaks HTTP/1.1 only; say so, so that clients offering h2 fall back.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((Some(Arc::new(config)), client_auth))
    }

    /// Reads the certificate chain, the private key and the client CA, inline or from files.
    fn certificates(&self, dir: &Path, errors: &Errors<'_>) -> Result<Certificates, Problem> {
        let read = |inline: &str, file: &str, name: &str, file_name: &str| {
            read_pem(dir, errors, (inline, name), (file, file_name))
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
        Ok(Certificates {
            chain,
            private_key,
            key_key,
            client_ca,
        })
    }

    /// `client_auth_type`, checked against the client CA and `client_allowed_sans`.
    fn client_auth(&self, has_client_ca: bool, errors: &Errors<'_>) -> Result<ClientAuth, Problem> {
        let client_auth = match self.client_auth_type.as_str() {
            "" | "NoClientCert" => ClientAuth::None,
            "RequestClientCert" => ClientAuth::Request,
            // `RequireClientCert` is exporter-toolkit's old name.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAny,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
            other => {
                return Err(errors.at(
                    format!("{KEY}.client_auth_type"),
                    format!(
                        "{other:?} is not one of NoClientCert, RequestClientCert, \
                         RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                    ),
                ))
            }
        };
        if has_client_ca && client_auth == ClientAuth::None {
            return Err(errors.at(
                format!("{KEY}.client_auth_type"),
                "a client CA is given but client_auth_type is NoClientCert; \
                 use RequireAndVerifyClientCert",
            ));
        }
        if !self.client_allowed_sans.is_empty() {
            return Err(errors.at(
                format!("{KEY}.client_allowed_sans"),
                "is not supported by tallyd; use a client CA that signs only the allowed \
                 clients, with RequireAndVerifyClientCert",
            ));
        }
        Ok(client_auth)
    }

    /// Whether `min_version` to `max_version` (Go's defaults: TLS12 to TLS13) take in TLS 1.2
    /// and TLS 1.3.
    fn versions(
        &self,
        errors: &Errors<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<(bool, bool), Problem> {
        let version = |value: &str, field: &str, default: u8| match value {
            "" => Ok(default),
            v => tls_version(v).ok_or_else(|| {
                errors.at(
                    format!("{KEY}.{field}"),
                    format!("{v:?} is not one of TLS10, TLS11, TLS12, TLS13"),
                )
            }),
        };
        let min = version(&self.min_version, "min_version", 2)?;
        let max = version(&self.max_version, "max_version", 3)?;
        if min > max {
            return Err(errors.at(format!("{KEY}.min_version"), "is above max_version"));
        }
        if min < 2 {
            warnings.push(format!(
                "{KEY}.min_version: TLS 1.0 and 1.1 are not available (rustls); \
                 the lowest version served is TLS 1.2"
            ));
        }
        Ok(((min..=max).contains(&2), (min..=max).contains(&3)))
    }

    /// Puts `cipher_suites` in the provider. They apply to TLS 1.2 (Go does not let TLS 1.3
    /// suites be chosen either); returns whether TLS 1.2 is still served.
    fn cipher_suites(
        &self,
        provider: &mut CryptoProvider,
        tls12: bool,
        errors: &Errors<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<bool, Problem> {
        if self.cipher_suites.is_empty() {
            return Ok(tls12);
        }
        let mut chosen = Vec::new();
        let mut unavailable = Vec::new();
        for (i, name) in self.cipher_suites.iter().enumerate() {
            match cipher_suite(name) {
                Ok(Some(suite)) => chosen.push(suite),
                Ok(None) if TLS13_SUITE_NAMES.contains(&name.as_str()) => {}
                Ok(None) => unavailable.push(name.as_str()),
                Err(()) => {
                    return Err(errors.at(
                        format!("{KEY}.cipher_suites[{i}]"),
                        format!("unknown cipher suite {name:?}"),
                    ))
                }
            }
        }
        left_out(warnings, "cipher_suites", &unavailable);
        let mut tls12 = tls12;
        if chosen.is_empty() && tls12 {
            warnings.push(format!(
                "{KEY}.cipher_suites: none of the TLS 1.2 suites listed is available; \
                 only TLS 1.3 is served"
            ));
            tls12 = false;
        }
        provider.cipher_suites.retain(|s| s.tls13().is_some());
        provider.cipher_suites.extend(chosen);
        Ok(tls12)
    }

    /// Puts `curve_preferences` in the provider.
    fn curves(
        &self,
        provider: &mut CryptoProvider,
        errors: &Errors<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<(), Problem> {
        if self.curve_preferences.is_empty() {
            return Ok(());
        }
        let mut groups = Vec::new();
        let mut unavailable = Vec::new();
        for (i, name) in self.curve_preferences.iter().enumerate() {
            match curve(name) {
                Ok(Some(group)) => groups.push(group),
                Ok(None) => unavailable.push(name.as_str()),
                Err(()) => {
                    return Err(errors.at(
                        format!("{KEY}.curve_preferences[{i}]"),
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
                format!("{KEY}.curve_preferences"),
                "none of these curves is available in rustls (X25519, CurveP256, CurveP384 are)",
            ));
        }
        left_out(warnings, "curve_preferences", &unavailable);
        provider.kx_groups = groups;
        Ok(())
    }
}

/// Reads PEM given inline (`cert`) or as a file relative to `dir` (`cert_file`), with the
/// key it came from; `None` when neither is given.
fn read_pem(
    dir: &Path,
    errors: &Errors<'_>,
    (inline, name): (&str, &str),
    (file, file_name): (&str, &str),
) -> Result<Option<(Vec<u8>, String)>, Problem> {
    let key = |k: &str| format!("{KEY}.{k}");
    match (inline.is_empty(), file.is_empty()) {
        (false, false) => Err(errors.at(
            key(file_name),
            format!("give `{name}` or `{file_name}`, not both"),
        )),
        (false, true) => Ok(Some((inline.as_bytes().to_vec(), key(name)))),
        (true, false) => {
            let path = dir.join(file);
            crate::files::read(&path)
                .map(|bytes| Some((bytes, key(file_name))))
                .map_err(|e| {
                    errors.at(
                        key(file_name),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })
        }
        (true, true) => Ok(None),
    }
}

/// Warns of the names in `field` that rustls lacks, if any.
fn left_out(warnings: &mut Vec<String>, field: &str, unavailable: &[&str]) {
    if !unavailable.is_empty() {
        warnings.push(format!(
            "{KEY}.{field}: not available in rustls, left out: {}",
            unavailable.join(", ")
        ));
    }
}

/// The protocol versions to serve; an error when none is left.
fn protocol_versions(
    tls12: bool,
    tls13: bool,
    errors: &Errors<'_>,
) -> Result<Vec<&'static SupportedProtocolVersion>, Problem> {
    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
    if tls12 {
        versions.push(&rustls::version::TLS12);
    }
    if tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if versions.is_empty() {
        return Err(errors.at(
            format!("{KEY}.max_version"),
            "leaves no TLS version rustls can serve (TLS12 or TLS13)",
        ));
    }
    Ok(versions)
}

/// What checks client certificates under `client_auth`, with the client CA's PEM; `None` when
/// none are asked for.
fn client_verifier(
    client_auth: ClientAuth,
    client_ca: Option<&(Vec<u8>, String)>,
    provider: &Arc<CryptoProvider>,
    errors: &Errors<'_>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, Problem> {
    let roots = match client_ca {
        Some((pem, key)) => Some(client_roots(pem, key, errors)?),
        None => None,
    };
    let ca_key = format!("{KEY}.client_ca_file");
    Ok(match client_auth {
        ClientAuth::None => None,
        ClientAuth::Request | ClientAuth::RequireAny => Some(Arc::new(AnyClientCert {
            mandatory: client_auth == ClientAuth::RequireAny,
            algorithms: provider.signature_verification_algorithms,
        })),
        ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify => {
            let roots = roots.ok_or_else(|| {
                errors.at(
                    &ca_key,
                    format!("is required with client_auth_type {}", client_auth.as_str()),
                )
            })?;
            let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let builder = if client_auth == ClientAuth::VerifyIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            Some(
                builder
                    .build()
                    .map_err(|e| errors.at(&ca_key, format!("unusable: {e}")))?,
            )
        }
    })
}

/// The client CA certificates, from the PEM given at `key`.
fn client_roots(pem: &[u8], key: &str, errors: &Errors<'_>) -> Result<Arc<RootCertStore>, Problem> {
    let mut roots = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| errors.at(key, format!("not a PEM certificate: {e}")))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(errors.at(key, "no usable CA certificate found"));
    }
    Ok(Arc::new(roots))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_and_curve_names_follow_go() {
        assert!(cipher_suite("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
            .unwrap()
            .is_some());
        assert!(cipher_suite("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA")
            .unwrap()
            .is_none());
        assert!(cipher_suite("TLS_AES_128_GCM_SHA256").unwrap().is_none());
        assert!(cipher_suite("TLS_RSA_WITH_RC4_128_SHA").is_err());
        assert!(curve("X25519").unwrap().is_some());
        assert!(curve("CurveP521").unwrap().is_none());
        assert!(curve("CurveP999").is_err());
    }
}
