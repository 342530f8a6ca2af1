//! Glob rules compiled into one trie keyed by the dot-separated components of a StatsD name, so
//! a lookup walks the name once instead of trying every rule.
//!
//! This is statsd_exporter's finite state machine (`pkg/mapper/fsm`) with the same results:
//! one root per metric class (a rule with `match_metric_type` hangs under its class only), and
//! from each node an exact component is tried before a `*`. With ordering on (the default)
//! every path that can match is explored and the rule that comes first in the file wins; each
//! node remembers the first rule below it and the range of name lengths that can still end in
//! a rule, so hopeless branches are cut. With `glob_disable_ordering: true` the first rule
//! reached (exact components before `*`, depth first) wins.
//!
//! Beyond statsd_exporter, a `*` may also sit inside a component (`request_*`, `*_ms`,
//! `a*b*c`): it matches any part of that one component and is captured like a whole-component
//! `*`. statsd_exporter rejects such globs (its issue #481).

use rustc_hash::FxHashMap;
use std::ops::Range;

use super::MetricClass;

/// A parsed glob.
#[derive(Debug)]
pub(super) struct Glob {
    components: Vec<Component>,
    /// How many `*` it has, i.e. the highest `$n` it can fill.
    pub(super) stars: usize,
}

#[derive(Clone, Debug)]
enum Component {
    /// Matches exactly this text.
    Exact(Box<str>),
    /// `*`: any one component, possibly empty.
    Star,
    /// Text with one or more `*` in it.
    Partial(Partial),
}

/// A component with `*` inside it.
#[derive(Clone, Debug)]
struct Partial {
    source: Box<str>,
    shape: Shape,
}

#[derive(Clone, Debug)]
enum Shape {
    /// One `*` between a (possibly empty) prefix and suffix: no regex needed.
    One { prefix: Box<str>, suffix: Box<str> },
    /// Several `*`: an anchored regex with one group per `*`, which gives the captures the
    /// same leftmost-first split a `([^.]*)` regex would.
    Many(regex::Regex),
}

impl Partial {
    /// Matches `text` (the component at `start` in the name) and pushes the captures.
    fn matches(&self, text: &str, start: usize, captures: &mut Vec<Range<usize>>) -> bool {
        match &self.shape {
            Shape::One { prefix, suffix } => {
                let fits = text.len() >= prefix.len() + suffix.len()
                    && text.starts_with(&**prefix)
                    && text.ends_with(&**suffix);
                if fits {
                    captures.push(start + prefix.len()..start + text.len() - suffix.len());
                }
                fits
            }
            Shape::Many(regex) => {
                match regex.captures(text) {
                    Some(found) => {
                        captures.extend(found.iter().skip(1).map(|m| {
                            m.map_or(start..start, |m| start + m.start()..start + m.end())
                        }));
                        true
                    }
                    None => false,
                }
            }
        }
    }
}

impl Glob {
    /// Parses and validates a glob. statsd_exporter's rule (its `metricLineRE`): components
    /// separated by `.`, each either `*` or letters, digits, `_` and `-`, not starting with `-`,
    /// the first not starting with a digit. A component may also mix `*` into that text.
    pub(super) fn parse(pattern: &str) -> Result<Glob, String> {
        let mut components = Vec::new();
        let mut stars = 0;
        for (i, text) in pattern.split('.').enumerate() {
            let why = |reason: &str| format!("`{pattern}` is not a valid glob: {reason}");
            if text.is_empty() {
                return Err(why(
                    "it has an empty component (a leading, trailing or doubled `.`)",
                ));
            }
            if let Some(c) = text
                .chars()
                .find(|&c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '*'))
            {
                return Err(why(&format!(
                    "`{c}` is not allowed in a glob (letters, digits, `_`, `-`, `*` and `.` are); \
                     use `match_type: regex` for this"
                )));
            }
            if text.contains("**") {
                return Err(why("`**` is ambiguous; one `*` matches a whole component"));
            }
            if text.starts_with('-') {
                return Err(why(&format!("`{text}` starts with `-`")));
            }
            if i == 0 && text.as_bytes()[0].is_ascii_digit() {
                return Err(why("the first component may not start with a digit"));
            }
            components.push(match text {
                "*" => {
                    stars += 1;
                    Component::Star
                }
                _ if text.contains('*') => {
                    let pieces: Vec<&str> = text.split('*').collect();
                    stars += pieces.len() - 1;
                    let shape = if let [prefix, suffix] = pieces[..] {
                        Shape::One {
                            prefix: prefix.into(),
                            suffix: suffix.into(),
                        }
                    } else {
                        let body: Vec<String> =
                            pieces.iter().map(|piece| regex::escape(piece)).collect();
                        let regex = regex::Regex::new(&format!("^{}$", body.join("([^.]*)")))
                            .map_err(|e| why(&e.to_string()))?;
                        Shape::Many(regex)
                    };
                    Component::Partial(Partial {
                        source: text.into(),
                        shape,
                    })
                }
                _ => Component::Exact(text.into()),
            });
        }
        Ok(Glob { components, stars })
    }
}

type NodeId = usize;

#[derive(Debug)]
struct Node {
    exact: FxHashMap<Box<str>, NodeId>,
    partial: Vec<(Partial, NodeId)>,
    star: Option<NodeId>,
    /// The first rule (in file order) whose glob ends here.
    rule: Option<u32>,
    /// The first rule whose glob passes through or ends here.
    first_rule: u32,
    /// How many more components a name may have after this one and still end in a rule.
    min_rest: usize,
    max_rest: usize,
}

impl Node {
    fn new(rest: usize, rule: u32) -> Node {
        Node {
            exact: FxHashMap::default(),
            partial: Vec::new(),
            star: None,
            rule: None,
            first_rule: rule,
            min_rest: rest,
            max_rest: rest,
        }
    }
}

/// All glob rules of a mapping file.
#[derive(Debug)]
pub(super) struct GlobSet {
    nodes: Vec<Node>,
    /// In effect `glob_disable_ordering: false`.
    ordered: bool,
    rules: usize,
    /// Components in the longest glob: a name with more cannot match.
    max_components: usize,
}

/// The roots are the first three nodes, one per [`MetricClass`].
const ROOTS: usize = MetricClass::ALL.len();

impl GlobSet {
    pub(super) fn new(ordered: bool) -> GlobSet {
        GlobSet {
            nodes: (0..ROOTS).map(|_| Node::new(0, u32::MAX)).collect(),
            ordered,
            rules: 0,
            max_components: 0,
        }
    }

    /// True when no glob rule was added.
    pub(super) fn is_empty(&self) -> bool {
        self.rules == 0
    }

    /// Adds rule number `rule`; rules must be added in file order.
    pub(super) fn insert(&mut self, glob: Glob, rule: u32, class: Option<MetricClass>) {
        self.rules += 1;
        self.max_components = self.max_components.max(glob.components.len());
        let roots = match class {
            Some(class) => class.index()..class.index() + 1,
            None => 0..ROOTS,
        };
        let len = glob.components.len();
        for root in roots {
            let mut node = root;
            for (i, component) in glob.components.iter().enumerate() {
                let rest = len - i - 1;
                node = self.child(node, component.clone(), rest, rule);
                let child = &mut self.nodes[node];
                child.min_rest = child.min_rest.min(rest);
                child.max_rest = child.max_rest.max(rest);
                child.first_rule = child.first_rule.min(rule);
            }
            // Rules come in file order, so an earlier rule with the same glob keeps the node.
            self.nodes[node].rule.get_or_insert(rule);
        }
    }

    /// The child of `node` for `component`, created if needed.
    fn child(&mut self, node: NodeId, component: Component, rest: usize, rule: u32) -> NodeId {
        let next = self.nodes.len();
        let parent = &mut self.nodes[node];
        let found = match &component {
            Component::Exact(text) => parent.exact.get(text).copied(),
            Component::Star => parent.star,
            Component::Partial(p) => parent
                .partial
                .iter()
                .find(|(q, _)| q.source == p.source)
                .map(|(_, id)| *id),
        };
        if let Some(id) = found {
            return id;
        }
        match component {
            Component::Exact(text) => {
                parent.exact.insert(text, next);
            }
            Component::Star => parent.star = Some(next),
            Component::Partial(p) => parent.partial.push((p, next)),
        }
        self.nodes.push(Node::new(rest, rule));
        next
    }

    /// The rule that maps `name` for a sample of `class`, with the byte ranges its `*`s
    /// captured, in order.
    pub(super) fn find(&self, name: &str, class: MetricClass) -> Option<(u32, Vec<Range<usize>>)> {
        let mut components = Vec::new();
        let mut start = 0;
        for (i, b) in name.bytes().enumerate() {
            if b == b'.' {
                // This component and at least one more: too many for any glob?
                if components.len() + 2 > self.max_components {
                    return None;
                }
                components.push(start..i);
                start = i + 1;
            }
        }
        components.push(start..name.len());
        let mut search = Search {
            set: self,
            name,
            components,
            captures: Vec::new(),
            best: None,
        };
        search.visit(class.index(), 0);
        search.best
    }
}

/// One lookup. Recursion depth is bounded by the longest glob, since every level consumes
/// one trie edge, and each node is visited at most once.
struct Search<'a> {
    set: &'a GlobSet,
    name: &'a str,
    components: Vec<Range<usize>>,
    captures: Vec<Range<usize>>,
    best: Option<(u32, Vec<Range<usize>>)>,
}

impl Search<'_> {
    /// Explores below `node`, where `depth` components are consumed; true to stop searching.
    fn visit(&mut self, node: NodeId, depth: usize) -> bool {
        let set = self.set;
        let here = &set.nodes[node];
        if depth == self.components.len() {
            return match here.rule {
                Some(rule) => {
                    if self.best.as_ref().is_none_or(|(best, _)| rule < *best) {
                        self.best = Some((rule, self.captures.clone()));
                    }
                    !set.ordered
                }
                None => false,
            };
        }
        let rest = self.components.len() - depth - 1;
        let range = self.components[depth].clone();
        let text = &self.name[range.clone()];

        if let Some(&child) = here.exact.get(text) {
            if self.worth(child, rest) && self.visit(child, depth + 1) {
                return true;
            }
        }
        for (partial, child) in &here.partial {
            if !self.worth(*child, rest) {
                continue;
            }
            let mark = self.captures.len();
            if partial.matches(text, range.start, &mut self.captures)
                && self.visit(*child, depth + 1)
            {
                return true;
            }
            self.captures.truncate(mark);
        }
        if let Some(child) = here.star {
            if self.worth(child, rest) {
                self.captures.push(range);
                if self.visit(child, depth + 1) {
                    return true;
                }
                self.captures.pop();
            }
        }
        false
    }

    /// Whether `child` can still end in a rule with `rest` components left after it, and (with
    /// ordering) in a rule earlier than the best found so far.
    fn worth(&self, child: NodeId, rest: usize) -> bool {
        let node = &self.set.nodes[child];
        (node.min_rest..=node.max_rest).contains(&rest)
            && !(self.set.ordered
                && self
                    .best
                    .as_ref()
                    .is_some_and(|(best, _)| node.first_rule >= *best))
    }
}
