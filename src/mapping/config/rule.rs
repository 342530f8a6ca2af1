//! One `mappings` entry: its matcher (a glob or a regex), its name and labels as templates, and
//! its settings resolved against the defaults.

use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::defaults::{rule_observer, Shared};
use super::{MatchType, RawAction, RawHistogram, RawMapping, RawSummary};
use crate::config::ObserverType;
use crate::mapping::glob::Glob;
use crate::mapping::template::{self, Template, Token};
use crate::mapping::{Action, MetricClass, Rule, RuleSettings};
use crate::yaml::{Errors, Problem};

/// How a rule matches names.
pub(super) enum Matcher {
    Glob(Glob),
    Regex(regex::Regex),
}

impl Matcher {
    /// Compiles `match` (at `at`) as `match_type` says.
    fn compile(
        pattern: &str,
        match_type: MatchType,
        key: &str,
        at: Option<Location>,
        errors: &Errors<'_>,
    ) -> Result<Matcher, Problem> {
        match match_type {
            MatchType::Glob => {
                let glob = Glob::parse(pattern)
                    .map_err(|why| errors.located(format!("{key}.match"), at, why))?;
                Ok(Matcher::Glob(glob))
            }
            MatchType::Regex => {
                let regex = regex::Regex::new(pattern).map_err(|e| {
                    let why = format!("`{pattern}` is not a valid regex: {}", regex_reason(&e));
                    errors.located(format!("{key}.match"), at, why)
                })?;
                Ok(Matcher::Regex(regex))
            }
        }
    }

    /// The group a regex rule's `$n` or `${name}` refers to, if it has it.
    fn group(&self, token: Token<'_>) -> Option<usize> {
        match (self, token) {
            (Matcher::Regex(regex), Token::Number(n)) => (n < regex.captures_len()).then_some(n),
            (Matcher::Regex(regex), Token::Name(name)) => {
                regex.capture_names().position(|group| group == Some(name))
            }
            _ => None,
        }
    }
}

/// A rule's `buckets` and `quantiles` outside the observer options, as statsd_exporter 0.30
/// reads them: with a warning, the buckets for a histogram and the quantiles for a summary
/// (the others are ignored); refused beside the same key in the options.
fn adopt_deprecated(
    m: &mut RawMapping,
    kind: ObserverType,
    key: &str,
    errors: &Errors<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), Problem> {
    let mut note = Notes {
        kind,
        key,
        errors,
        warnings,
    };
    let buckets = m.buckets.take();
    note.adopt(
        buckets,
        &mut m.histogram_options,
        |h: &mut RawHistogram| &mut h.buckets,
        ("buckets", "histogram_options", ObserverType::Histogram),
    )?;
    let quantiles = m.quantiles.take();
    note.adopt(
        quantiles,
        &mut m.summary_options,
        |s: &mut RawSummary| &mut s.quantiles,
        ("quantiles", "summary_options", ObserverType::Summary),
    )
}

/// What [`adopt_deprecated`] needs to place a key and say where it was.
struct Notes<'a, 'e> {
    kind: ObserverType,
    key: &'a str,
    errors: &'a Errors<'e>,
    warnings: &'a mut Vec<String>,
}

impl Notes<'_, '_> {
    /// One deprecated key, `field` (which belongs in `options_name` and serves observers of
    /// type `belongs`): warned about; refused when `options` give it too; moved into them
    /// when the rule's observer is of type `belongs`.
    fn adopt<O: Default, T>(
        &mut self,
        legacy: Option<Spanned<T>>,
        options: &mut Option<Spanned<O>>,
        slot: fn(&mut O) -> &mut Option<T>,
        (field, options_name, belongs): (&str, &str, ObserverType),
    ) -> Result<(), Problem> {
        let Some(legacy) = legacy else {
            return Ok(());
        };
        let key = format!("{}.{field}", self.key);
        let mut note = self
            .errors
            .located(key.clone(), Some(legacy.referenced), "");
        note.message = format!("deprecated; put `{field}` under `{options_name}`");
        self.warnings.push(note.to_string());
        if options
            .as_mut()
            .is_some_and(|o| slot(&mut o.value).is_some())
        {
            return Err(self.errors.located(
                key,
                Some(legacy.referenced),
                format!("cannot be given both here and under `{options_name}`"),
            ));
        }
        if self.kind == belongs {
            let (referenced, defined) = (legacy.referenced, legacy.defined);
            let options =
                options.get_or_insert_with(|| Spanned::new(O::default(), referenced, defined));
            *slot(&mut options.value) = Some(legacy.value);
        }
        Ok(())
    }
}

/// Checks and compiles `mappings[index]`.
pub(super) fn compile_rule(
    index: usize,
    item: Spanned<RawMapping>,
    shared: &Shared,
    errors: &Errors<'_>,
    warnings: &mut Vec<String>,
) -> Result<(Rule, Matcher), Problem> {
    let key = format!("mappings[{index}]");
    let mut m = item.value;
    m.observer_type = m.observer_type.or(m.timer_type.take());
    let kind = m.observer_type.unwrap_or(shared.kind);
    adopt_deprecated(&mut m, kind, &key, errors, warnings)?;
    let Some(pattern) = &m.pattern else {
        return Err(errors.located(key, Some(item.referenced), "a mapping needs `match`"));
    };
    let match_type = m.match_type.unwrap_or(shared.match_type);
    let matcher = Matcher::compile(
        &pattern.value,
        match_type,
        &key,
        Some(pattern.referenced),
        errors,
    )?;
    let action = action(&m, &matcher, &key, item.referenced, errors)?;
    let observer = rule_observer(
        m.observer_type,
        &m.histogram_options,
        &m.summary_options,
        shared,
        &key,
        errors,
    )?;
    let scale = scale(m.scale, &key, errors)?;
    let settings = RuleSettings {
        help: m.help.filter(|h| !h.is_empty()).map(Arc::from),
        ttl: m.ttl.map(|d| d.0).filter(|d| !d.is_zero()).or(shared.ttl),
        observer,
        honor_labels: m.honor_labels.unwrap_or(false),
        scale,
    };
    let rule = Rule {
        pattern: pattern.value.as_str().into(),
        regex: match_type == MatchType::Regex,
        class: m.match_metric_type.map(MetricClass::from),
        action,
        settings: Arc::new(settings),
    };
    Ok((rule, matcher))
}

/// What the rule does: drop, or map to its `name` and `labels`. Labels and a name are checked
/// for drop rules too, as statsd_exporter does.
fn action(
    m: &RawMapping,
    matcher: &Matcher,
    key: &str,
    at: Location,
    errors: &Errors<'_>,
) -> Result<Action, Problem> {
    let resolve = |token: Token<'_>| matcher.group(token);
    let template = |src: &str| match matcher {
        Matcher::Glob(glob) => Template::parse_glob(src, glob.stars),
        Matcher::Regex(_) => Template::parse(src, resolve),
    };
    let labels = match &m.labels {
        Some(raw) => labels(&raw.value, raw.referenced, template, key, errors)?,
        None => Vec::new(),
    };
    let name = match &m.name {
        Some(name) => {
            template::check_name(&name.value)
                .map_err(|why| errors.located(format!("{key}.name"), Some(name.referenced), why))?;
            Some(template(&name.value))
        }
        None => None,
    };
    match (m.action, name) {
        (Some(RawAction::Drop), _) => Ok(Action::Drop),
        (_, Some(name)) => Ok(Action::Map { name, labels }),
        (_, None) => Err(errors.located(
            key,
            Some(at),
            "a mapping needs a `name` (unless it has `action: drop`)",
        )),
    }
}

/// `labels`, names checked and values parsed as templates.
fn labels(
    raw: &BTreeMap<String, String>,
    at: Location,
    template: impl Fn(&str) -> Template,
    key: &str,
    errors: &Errors<'_>,
) -> Result<Vec<(Box<str>, Template)>, Problem> {
    let mut labels = Vec::new();
    for (label, value) in raw {
        check_label_name(label)
            .map_err(|why| errors.located(format!("{key}.labels.{label}"), Some(at), why))?;
        labels.push((Box::from(label.as_str()), template(value)));
    }
    Ok(labels)
}

/// `scale`, which must be finite and not 0.
fn scale(
    scale: Option<Spanned<f64>>,
    key: &str,
    errors: &Errors<'_>,
) -> Result<Option<f64>, Problem> {
    match scale {
        Some(scale) if !scale.value.is_finite() || scale.value == 0.0 => {
            let why = format!(
                "`{}` is not a usable scale: it must be finite and not 0",
                scale.value
            );
            Err(errors.located(format!("{key}.scale"), Some(scale.referenced), why))
        }
        scale => Ok(scale.map(|s| s.value)),
    }
}

/// A label name must be a Prometheus one, `[a-zA-Z_][a-zA-Z0-9_]*`, and not reserved (`__…`).
fn check_label_name(label: &str) -> Result<(), String> {
    let bytes = label.as_bytes();
    let valid = !bytes.is_empty()
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    if !valid {
        return Err(format!(
            "`{label}` is not a valid label name: use letters, digits and `_`, not starting with a digit"
        ));
    }
    if label.starts_with("__") {
        return Err(format!(
            "`{label}` is not allowed: names starting with `__` are reserved"
        ));
    }
    Ok(())
}

/// The useful line of a regex error (the crate's message spans several lines).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .map_or_else(
            || text.split_whitespace().collect::<Vec<_>>().join(" "),
            str::to_owned,
        )
}
