//! Strict YAML documents, as tallyd reads its mapping file and its web config file: parsed with
//! serde-saphyr into types that refuse unknown keys, and on error the key path of the offending
//! value (`mappings[2].timer_type`), its line and column, and the parser's message without the
//! location it appends, so each caller can word its own error around them.

use serde::de::DeserializeOwned;

/// Why a document did not parse.
#[derive(Debug)]
pub struct Failure {
    /// The parser's error (boxed: it is large, and errors are rare).
    pub error: Box<serde_saphyr::Error>,
    /// The key path of the value that failed, including an unknown key itself.
    pub key: String,
}

impl Failure {
    /// The 1-based line and column, when the parser knows them.
    pub fn line_column(&self) -> Option<(u64, u64)> {
        self.error
            .location()
            .filter(|at| at.line() != 0)
            .map(|at| (at.line(), at.column()))
    }

    /// The error's text on one line, without the " at line …, column …" the parser appends.
    pub fn message(&self) -> String {
        let text = self.error.to_string();
        let text = match self.line_column() {
            Some((line, column)) => {
                let suffix = format!(" at line {line}, column {column}");
                text.strip_suffix(&suffix)
                    .map(str::to_owned)
                    .unwrap_or(text)
            }
            None => text,
        };
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// `key.field`, or `field` at the top.
pub fn join(key: &str, field: &str) -> String {
    if key.is_empty() {
        field.to_owned()
    } else {
        format!("{key}.{field}")
    }
}

/// The key path as written: `tls_server_config.cipher_suites[1]`.
pub fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Unknown => {}
        }
    }
    out
}

/// Parses `text`; an empty document is `T::default()`. `path` renders the key path of a
/// failure (see [`key_path`]; a caller whose types wrap values may need its own).
pub fn parse<T: DeserializeOwned + Default>(
    text: &str,
    path: impl Fn(&serde_path_to_error::Path) -> String,
) -> Result<T, Failure> {
    let mut options = serde_saphyr::Options::default();
    // Callers report the location themselves, on one line.
    options.with_snippet = false;
    let mut key = None;
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize::<_, Option<T>>(de).map_err(|e| {
            key = Some(path(e.path()));
            e.into_inner()
        })
    });
    match parsed {
        Ok(document) => Ok(document.unwrap_or_default()),
        Err(error) => {
            let mut key = key.unwrap_or_default();
            if let serde_saphyr::Error::SerdeUnknownField { field, .. } = &error {
                if !key.ends_with(field.as_str()) {
                    key = join(&key, field);
                }
            }
            Err(Failure {
                error: Box::new(error),
                key,
            })
        }
    }
}
