//! Strict YAML documents, as tallyd reads its mapping file and its web config file: parsed with
//! serde-saphyr into types that refuse unknown keys, and on error the key path of the offending
//! value (`mappings[2].timer_type`), its line and column, and the parser's message without the
//! location it appends; and [`Problem`], the error both files report, rendered
//! `file:line:column: key: message`, built by `Errors`.

use serde::de::DeserializeOwned;
use serde_saphyr::Location;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a document did not parse.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The parser's error (boxed: it is large, and errors are rare).
    pub(crate) error: Box<serde_saphyr::Error>,
    /// The key path of the value that failed, including an unknown key itself.
    pub(crate) key: String,
}

impl Failure {
    /// The 1-based line and column, when the parser knows them.
    pub(crate) fn line_column(&self) -> Option<(u64, u64)> {
        self.error.location().and_then(line_column)
    }

    /// The error's text on one line, without the " at line …, column …" the parser appends.
    pub(crate) fn message(&self) -> String {
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
pub(crate) fn join(key: &str, field: &str) -> String {
    if key.is_empty() {
        field.to_owned()
    } else {
        format!("{key}.{field}")
    }
}

/// The key path as written: `tls_server_config.cipher_suites[1]`.
pub(crate) fn key_path(path: &serde_path_to_error::Path) -> String {
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

/// YAML nodes (mappings, sequences, scalars) a file may hold: what 16 MiB of short scalars
/// make, some 400,000 mapping rules of a match, a name and a label.
const MAX_NODES: usize = 4_000_000;

/// Parses `text`; an empty document is `T::default()`. `path` renders the key path of a
/// failure (see [`key_path`]; a caller whose types wrap values may need its own).
pub(crate) fn parse<T: DeserializeOwned + Default>(
    text: &str,
    path: impl Fn(&serde_path_to_error::Path) -> String,
) -> Result<T, Failure> {
    let mut options = serde_saphyr::Options::default();
    // Callers report the location themselves, on one line.
    options.with_snippet = false;
    // Room for what a file of `crate::files::MAX_FILE_BYTES` holds: the parser's default
    // budget (250,000 nodes) refuses a mapping file past about 27,000 rules. The limits on
    // aliases, anchors and depth, which guard against a small file that expands, stay.
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = MAX_NODES;
    budget.max_events = 2 * MAX_NODES;
    options.budget = Some(budget);
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

/// Line and column of a location; the parser marks an unknown one with line 0.
fn line_column(at: Location) -> Option<(u64, u64)> {
    (at.line() != 0).then(|| (at.line(), at.column()))
}

/// What is wrong where in a YAML file: shown as `file:line:column: key: message`, the line and
/// column when known, the key when not the whole file.
#[derive(Debug)]
pub struct Problem {
    /// The file (or the origin the text was given with).
    pub file: PathBuf,
    /// The 1-based line and column, when known.
    pub line_column: Option<(u64, u64)>,
    /// Where in the document, e.g. `mappings[2].timer_type`; empty for the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.line_column {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Builds the [`Problem`]s of one file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Errors<'a> {
    file: &'a Path,
}

impl<'a> Errors<'a> {
    /// Problems in `file`.
    pub(crate) fn new(file: &'a Path) -> Self {
        Errors { file }
    }

    /// A problem with the value at `key`, without a location.
    pub(crate) fn at(&self, key: impl Into<String>, message: impl Into<String>) -> Problem {
        self.located(key, None, message)
    }

    /// A problem with the value at `key`, which the document has at `at`.
    pub(crate) fn located(
        &self,
        key: impl Into<String>,
        at: Option<Location>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            file: self.file.to_owned(),
            line_column: at.and_then(line_column),
            key: key.into(),
            message: message.into(),
        }
    }

    /// The parser's failure, with its key path, location and message.
    pub(crate) fn failure(&self, failure: &Failure) -> Problem {
        self.located(
            failure.key.clone(),
            failure.error.location(),
            failure.message(),
        )
    }
}
