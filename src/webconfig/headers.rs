//! `http_server_config`: the extra response headers exporter-toolkit allows, with their values
//! checked; `http2` is read and ignored (tallyd serves HTTP/1.1).

use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;

use crate::yaml::{Errors, Problem};

/// `http_server_config`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHttp {
    /// Ignored: tallyd serves HTTP/1.1 only.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: BTreeMap<String, String>,
}

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
    pub(super) fn headers(
        &self,
        errors: &Errors<'_>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Problem> {
        let mut out = Vec::new();
        for (name, value) in &self.headers {
            let key = format!("http_server_config.headers.{name}");
            let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(n, _)| n == name) else {
                let names: Vec<&str> = EXTRA_HEADERS.iter().map(|(n, _)| *n).collect();
                return Err(errors.at(
                    key.as_str(),
                    format!("this header cannot be set; only {}", names.join(", ")),
                ));
            };
            if value.is_empty() {
                continue; // "Unset if blank."
            }
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(errors.at(
                    key.as_str(),
                    format!("{value:?} is not one of {}", allowed.join(", ")),
                ));
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| errors.at(key.as_str(), "is not a valid header value"))?;
            let name = HeaderName::from_bytes(name.as_bytes()).expect("a name from EXTRA_HEADERS");
            out.push((name, value));
        }
        Ok(out)
    }
}
