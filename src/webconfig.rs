//! The web configuration file of Prometheus' exporter-toolkit (`--web.config.file`): TLS on the
//! HTTP port (optionally verifying client certificates), basic authentication, extra response
//! headers and a request rate limit, in the format of
//! <https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md>, so
//! that a file written for node_exporter or statsd_exporter works unchanged.
//!
//! Every key is checked: an unknown one fails start-up with its path (`tls_server_config.certfile`)
//! and line. Where tallyd cannot do what exporter-toolkit does, it says so:
//! - The file is read at start-up; exporter-toolkit re-reads it (and the certificates) on every
//!   connection. tallyd watches the file and the certificate files it names, and new TLS
//!   handshakes use a changed certificate within a second or two ([`rotation`]); the other
//!   sections keep what was read at start-up.
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
//!
//! Each section of the file has its submodule: `tls` (`tls_server_config`), `auth`
//! (`basic_auth_users`), `headers` (`http_server_config`) and `rate_limit`.

mod auth;
mod headers;
mod rate_limit;
pub mod rotation;
mod tls;

pub use auth::{BasicAuth, Verdict};
pub use rate_limit::RateLimiter;
pub use tls::ClientAuth;

use hyper::header::{HeaderName, HeaderValue};
use rustls::ServerConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::yaml::{self, Errors, Problem};
use headers::RawHttp;
use rate_limit::RawRateLimit;
use tls::RawTls;

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
    /// The files TLS was read from (certificate, key, client CA), to watch for changes.
    pub tls_files: Vec<PathBuf>,
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
    /// The configuration the `web.config_file` setting names; the default when it is empty.
    pub fn from_setting(config_file: &str) -> Result<WebConfig, WebConfigError> {
        match config_file {
            "" => Ok(WebConfig::default()),
            path => WebConfig::load(Path::new(path)),
        }
    }

    /// Reads and checks a web configuration file, with the certificate files it names.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = crate::files::read_to_string(path).map_err(|source| WebConfigError::Read {
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
            config.tls_files = tls.files(dir);
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

/// The file's shape.
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

/// Deserializes the document, keeping the key path and location of the first error.
fn parse(text: &str, errors: &Errors<'_>) -> Result<RawFile, Problem> {
    yaml::parse(text, yaml::key_path).map_err(|failure| errors.failure(&failure))
}

#[cfg(test)]
mod tests;
