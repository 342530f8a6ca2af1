//! statsd_exporter's YAML mapping file: rules that turn a StatsD name such as
//! `client.web.request.get` into a Prometheus name and labels (`client_requests{client="web",
//! op="get"}`), drop it, or give it its own help, TTL, observer type and scale.
//!
//! ## Behaviour (statsd_exporter's `pkg/mapper`, which this follows)
//! - Glob rules (`match_type: glob`, the default) are compiled into one trie (see `glob.rs`), so
//!   a name costs one walk, not one test per rule. `*` matches one dot-free component, possibly
//!   empty. With ordering on (the default) the glob that comes first in the file wins; with
//!   `glob_disable_ordering: true` exact components beat `*`, depth first.
//! - Regex rules (`match_type: regex`, unanchored, Rust `regex` syntax, which for mapping
//!   files is Go's RE2 syntax) are tried in file order, but only when no glob matched: globs
//!   always win over regexes, wherever they are in the file.
//! - `$1`, `${1}` and `$0` (the whole name) in a regex rule's `name` and label values, with
//!   Go's `regexp.Expand` rules; `$1` to `$n` for a glob of n `*`s, read as statsd_exporter's
//!   glob formatter reads them (see `template.rs`). The expanded name is escaped like an unmapped
//!   one (every character outside `[a-zA-Z0-9_]` becomes `_`); one that expands to nothing is
//!   [`Outcome::EmptyName`], which statsd_exporter counts as `empty_metric_name` and drops.
//! - `match_metric_type` limits a rule to counters, gauges or observers (timers, histograms,
//!   distributions).
//! - Each rule's `ttl`, `observer_type`, `histogram_options` and `summary_options` are
//!   resolved against `defaults` once, at load, into [`RuleSettings`] shared by every name the
//!   rule maps. Unmapped names take [`Mapper::defaults`] (only `ttl` and the observer come from
//!   the file there).
//! - Unknown keys are errors. The keys statsd_exporter deprecated (`timer_type`, and `buckets`
//!   and `quantiles` outside `*_options`) are read as statsd_exporter 0.30 reads them, the
//!   latter two with a warning ([`Mapper::warnings`]). Every error names the file, the line
//!   and column when known, and the key (`mappings[2].observer_type`).
//!
//! ## Where tallyd differs
//! - A `*` may also sit inside a component (`req_*`, `*_ms`, `a*b*c`) and is captured like a
//!   whole-component `*`; statsd_exporter rejects such globs (its issue #481).
//! - A glob that is a prefix of an earlier, longer one (`a.b` after `a.b.c`) matches;
//!   statsd_exporter's FSM only sets a rule on a state it creates, so it never matches there.
//! - With `glob_disable_ordering: true` the search always backtracks instead of relying on
//!   statsd_exporter's `TestIfNeedBacktracking` heuristic.
//! - Load-time checks statsd_exporter lacks: `$1_total` in a `name` (a group named `1_total`,
//!   always empty: write `${1}_total`), a duration without a unit (`ttl: 60`, which Go reads as
//!   nanoseconds), `histogram_options` when no `observer_type` is set anywhere (statsd_exporter
//!   ignores them and makes a summary), buckets not finite and strictly ascending, quantiles
//!   outside (0, 1) or listed twice, `scale` 0 or not finite, label names starting with `__`.
//! - Accepted where statsd_exporter refuses: one-letter label names, `action: drop` without a
//!   `name`; `match_metric_type: timer` is read as `observer`.
//! - Regexes use Rust's engine: `\w`, `\d`, `\s` and `\b` are Unicode-aware, where Go's are
//!   ASCII-only; this matters only for non-ASCII names.
//!
//! ## Usage
//! ```
//! use std::path::Path;
//! use tallyd::config::CacheType;
//! use tallyd::mapping::{MapCache, Mapper, MetricClass, Outcome};
//!
//! let yaml = r#"
//! mappings:
//!   - match: "client.*.request.*"
//!     name: "client_requests"
//!     labels: { client: "$1", op: "$2" }
//! "#;
//! let mapper = Mapper::from_yaml(yaml, Path::new("mapping.yml")).unwrap();
//! let mut cache = MapCache::new(1000, CacheType::Lru); // one per listener thread
//! match cache.get_or_map(&mapper, "client.web.request.get", MetricClass::Counter) {
//!     Outcome::Mapped(m) => {
//!         assert_eq!(&*m.name, "client_requests");
//!         assert_eq!(m.labels[0], ("client".into(), "web".into()));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```

mod cache;
mod config;
pub mod explain;
mod glob;
mod template;
#[cfg(test)]
mod tests;

pub use cache::MapCache;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::names;
use glob::GlobSet;
use template::Template;

/// The kind of StatsD sample a rule's `match_metric_type` selects: `c` is a counter, `g` a
/// gauge, and `ms`, `h` and `d` are observers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricClass {
    /// `match_metric_type: counter`.
    Counter,
    /// `match_metric_type: gauge`.
    Gauge,
    /// `match_metric_type: observer` (statsd_exporter once called it `timer`; both are read).
    Observer,
}

impl MetricClass {
    /// Every class, in [`MetricClass::index`] order.
    pub const ALL: [MetricClass; 3] = [
        MetricClass::Counter,
        MetricClass::Gauge,
        MetricClass::Observer,
    ];

    /// A dense index, 0 to 2.
    pub const fn index(self) -> usize {
        match self {
            MetricClass::Counter => 0,
            MetricClass::Gauge => 1,
            MetricClass::Observer => 2,
        }
    }
}

/// What the mapping file does with one StatsD name.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// No rule matched: use the escaped StatsD name, no extra labels, and
    /// [`Mapper::defaults`].
    Unmapped,
    /// A rule with `action: drop` matched: discard the sample.
    Drop,
    /// A rule matched but its `name` expanded to nothing (e.g. `name: "$3"` with two
    /// captures): statsd_exporter discards the sample and counts `empty_metric_name`.
    EmptyName,
    /// A rule matched: the sample gets this name, these labels and these settings.
    Mapped(Arc<Mapped>),
}

/// A StatsD name as a rule maps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapped {
    /// The Prometheus metric name: the rule's `name` expanded and then escaped, so always a
    /// valid name.
    pub name: Arc<str>,
    /// The rule's labels with values expanded, sorted by label name. Values are not escaped
    /// (any text is a valid label value), and may be empty.
    pub labels: Vec<(Box<str>, Box<str>)>,
    /// The rule's position in `mappings`, from 0, for log messages.
    pub rule: usize,
    /// The rule's resolved settings, shared by every name it maps.
    pub settings: Arc<RuleSettings>,
}

impl Mapped {
    /// Adds this mapping's labels to the labels a line brought in its tags, as statsd_exporter
    /// does: a mapping label replaces a tag of the same name, unless the rule has
    /// `honor_labels: true`, in which case the tag wins.
    pub fn merge_labels(&self, tags: &mut Vec<(Box<str>, Box<str>)>) {
        for (name, value) in &self.labels {
            let mut present = false;
            for (_, tag_value) in tags.iter_mut().filter(|(tag, _)| tag == name) {
                present = true;
                if !self.settings.honor_labels {
                    tag_value.clone_from(value);
                }
            }
            if !present {
                tags.push((name.clone(), value.clone()));
            }
        }
    }
}

/// Everything a rule (or the defaults) says about the series it names, besides the name and the
/// labels, resolved against `defaults` when the file was loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSettings {
    /// `help`; `None` means the generic help text.
    pub help: Option<Arc<str>>,
    /// `ttl`, or `defaults.ttl` when the rule has none: how long a series may go without a
    /// sample before it is removed. `None` (a TTL of `0s`) means never.
    pub ttl: Option<Duration>,
    /// What an observer sample (`ms`, `h`, `d`) becomes. Shared between rules that take the
    /// defaults.
    pub observer: Arc<ObserverChoice>,
    /// `honor_labels`: tags win over this rule's labels (see [`Mapped::merge_labels`]).
    pub honor_labels: bool,
    /// `scale`: multiply every value by this, after the timer's ms→s division.
    pub scale: Option<f64>,
}

/// An observer's Prometheus type and its options.
#[derive(Clone, Debug, PartialEq)]
pub enum ObserverChoice {
    /// `observer_type: summary` (statsd_exporter's default).
    Summary(SummaryOptions),
    /// `observer_type: histogram`.
    Histogram(HistogramOptions),
}

/// `summary_options`, each field resolved against `defaults.summary_options`.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryOptions {
    /// The quantiles to report, with their allowed error; never empty (the default is 0.5,
    /// 0.9 and 0.99 with errors 0.05, 0.01 and 0.001).
    pub quantiles: Vec<Quantile>,
    /// `max_age`: how far back observations count; `None` means the Prometheus client default
    /// (10 minutes).
    pub max_age: Option<Duration>,
    /// `age_buckets`: how many buckets `max_age` is split into; `None` means the client default
    /// (5).
    pub age_buckets: Option<u32>,
    /// `buf_cap`: observations buffered before they are merged; `None` means the client default
    /// (500).
    pub buf_cap: Option<u32>,
}

/// One summary quantile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantile {
    /// The quantile, in (0, 1).
    pub quantile: f64,
    /// The allowed rank error, in [0, 1).
    pub error: f64,
}

/// `histogram_options`, resolved against `defaults.histogram_options`.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramOptions {
    /// Upper bounds, finite and strictly ascending, without the implicit `+Inf`; never empty
    /// (the default is Prometheus's `.005 .01 .025 .05 .1 .25 .5 1 2.5 5 10`).
    pub buckets: Vec<f64>,
    /// The native buckets' growth factor (default 1.1); 1 or less: no native histogram.
    pub native_bucket_factor: f64,
    /// Most native buckets a series keeps (default 256).
    pub native_max_buckets: u32,
}

/// Why a mapping file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The file could not be read.
    #[error("cannot read mapping file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML, has an unknown or deprecated key, or a value that makes no
    /// sense: the file (or the origin given to [`Mapper::from_yaml`]), where, and what.
    #[error("invalid mapping file {0}")]
    Invalid(crate::yaml::Problem),
}

impl From<crate::yaml::Problem> for MappingError {
    fn from(problem: crate::yaml::Problem) -> Self {
        MappingError::Invalid(problem)
    }
}

/// A compiled mapping file. Cheap to share (`Arc<Mapper>`); lookups take `&self`.
#[derive(Debug)]
pub struct Mapper {
    /// Distinguishes mappers so that a [`MapCache`] notices a reload.
    id: u64,
    /// What the file asks in a way statsd_exporter deprecated, each with its file and line.
    warnings: Vec<String>,
    rules: Vec<Rule>,
    globs: GlobSet,
    /// The regex rules, in file order, with their index in `rules`.
    regexes: Vec<(usize, regex::Regex)>,
    defaults: Arc<RuleSettings>,
}

#[derive(Debug)]
struct Rule {
    /// Its `match`, and whether that is a regex rather than a glob: what `--explain` shows.
    pattern: Box<str>,
    regex: bool,
    class: Option<MetricClass>,
    action: Action,
    settings: Arc<RuleSettings>,
}

/// The rule that matched a name: its place in `mappings`, its `match` and `match_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleRef<'a> {
    /// Its position in `mappings`, from 0.
    pub index: usize,
    /// Its `match`.
    pub pattern: &'a str,
    /// `glob` or `regex`.
    pub match_type: &'static str,
}

#[derive(Debug)]
enum Action {
    Drop,
    Map {
        name: Template,
        labels: Vec<(Box<str>, Template)>,
    },
}

/// The groups of one match: a regex's captures, or a glob's `*`s after `$0`.
enum Groups<'a> {
    Regex(regex::Captures<'a>),
    Glob {
        name: &'a str,
        stars: Vec<Range<usize>>,
    },
}

impl Groups<'_> {
    fn get(&self, i: usize) -> &str {
        match self {
            Groups::Regex(captures) => captures.get(i).map_or("", |m| m.as_str()),
            Groups::Glob { name, .. } if i == 0 => name,
            Groups::Glob { name, stars } => stars.get(i - 1).map_or("", |r| &name[r.clone()]),
        }
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Default for Mapper {
    /// A mapper with no rules, for running without a mapping file: every name is
    /// [`Outcome::Unmapped`], summaries use statsd_exporter's default quantiles and series
    /// never expire.
    fn default() -> Self {
        config::empty()
    }
}

impl Mapper {
    /// Compiles a mapping file's text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Mapper, MappingError> {
        config::compile(text, origin)
    }

    /// Reads and compiles a mapping file.
    pub fn load(path: &Path) -> Result<Mapper, MappingError> {
        let text = crate::files::read_to_string(path).map_err(|source| MappingError::Read {
            path: path.to_owned(),
            source,
        })?;
        Mapper::from_yaml(&text, path)
    }

    /// What the file asks in a way statsd_exporter deprecated (and reads all the same), each
    /// with its file, line and key: for the log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The number of rules (`mappings` entries), for the `tallyd_mapping_loaded` gauge.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The settings for unmapped names: `defaults.ttl` and the default observer.
    pub fn defaults(&self) -> &Arc<RuleSettings> {
        &self.defaults
    }

    /// Maps one StatsD name for a sample of `class`. Allocates the expanded name and labels;
    /// callers on a hot path should go through a [`MapCache`].
    pub fn map(&self, name: &str, class: MetricClass) -> Outcome {
        self.explain(name, class).1
    }

    /// As [`Mapper::map`], with the rule that matched, if one did.
    pub fn explain(&self, name: &str, class: MetricClass) -> (Option<RuleRef<'_>>, Outcome) {
        let Some((index, groups)) = self.find(name, class) else {
            return (None, Outcome::Unmapped);
        };
        let rule = &self.rules[index];
        let matched = RuleRef {
            index,
            pattern: &rule.pattern,
            match_type: if rule.regex { "regex" } else { "glob" },
        };
        (Some(matched), self.apply(index, &groups))
    }

    /// The rule that matches `name` for `class` and what it captured: globs first, then the
    /// regexes in file order.
    fn find<'a>(&self, name: &'a str, class: MetricClass) -> Option<(usize, Groups<'a>)> {
        if !self.globs.is_empty() {
            if let Some((rule, stars)) = self.globs.find(name, class) {
                return Some((rule as usize, Groups::Glob { name, stars }));
            }
        }
        self.regexes.iter().find_map(|(rule, regex)| {
            if self.rules[*rule].class.is_some_and(|only| only != class) {
                return None;
            }
            regex
                .captures(name)
                .map(|captures| (*rule, Groups::Regex(captures)))
        })
    }

    fn apply(&self, index: usize, groups: &Groups<'_>) -> Outcome {
        let rule = &self.rules[index];
        let Action::Map { name, labels } = &rule.action else {
            return Outcome::Drop;
        };
        let expanded = name.expand(|i| groups.get(i));
        if expanded.is_empty() {
            return Outcome::EmptyName;
        }
        let name: Arc<str> = match names::escape(&expanded) {
            std::borrow::Cow::Borrowed(_) => expanded.into(),
            std::borrow::Cow::Owned(escaped) => escaped.into(),
        };
        let labels = labels
            .iter()
            .map(|(label, value)| (label.clone(), value.expand(|i| groups.get(i)).into()))
            .collect();
        Outcome::Mapped(Arc::new(Mapped {
            name,
            labels,
            rule: index,
            settings: rule.settings.clone(),
        }))
    }

    fn id(&self) -> u64 {
        self.id
    }
}
