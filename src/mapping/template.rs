//! `$1`, `${1}` and `$0` in a mapping's `name` and label values, parsed once when the file is
//! loaded and filled in per metric name.
//!
//! The syntax is that of Go's `regexp.Expand`, which statsd_exporter uses for regex rules:
//! `$name` takes the longest run of letters, digits and `_` (so `$1_total` refers to a group
//! named `1_total`, which never exists, and expands to nothing: write `${1}_total`), `${name}`
//! is braced, `$$` is a literal `$`, and a `$` not followed by a name is kept as it is. A
//! reference to a group that does not exist, or did not take part in the match, expands to
//! nothing.
//!
//! Glob rules number their `*`s from 1 and read their templates as statsd_exporter's glob
//! formatter does ([`Template::parse_glob`]), which differs in the corners.

/// A parsed template: literal text and group references, resolved to group indexes.
#[derive(Clone, Debug)]
pub(super) struct Template {
    pieces: Box<[Piece]>,
}

#[derive(Clone, Debug)]
enum Piece {
    Literal(Box<str>),
    Group(usize),
}

/// One lexical element of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Token<'a> {
    /// Text copied as it is (including a `$` that starts no reference).
    Literal(&'a str),
    /// `$$`.
    Dollar,
    /// `$7` or `${7}`: a group number, as Go reads one (no leading zero, below 10^8).
    Number(usize),
    /// `$name` or `${name}` that is not a number.
    Name(&'a str),
}

/// Splits a template into tokens, the way Go's `regexp.Expand` reads it.
pub(super) fn tokens(src: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(dollar) = rest.find('$') {
        if dollar > 0 {
            out.push(Token::Literal(&rest[..dollar]));
        }
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push(Token::Dollar);
            rest = tail;
            continue;
        }
        match reference(after) {
            Some((name, tail)) => {
                out.push(match group_number(name) {
                    Some(n) => Token::Number(n),
                    None => Token::Name(name),
                });
                rest = tail;
            }
            None => {
                out.push(Token::Literal("$"));
                rest = after;
            }
        }
    }
    if !rest.is_empty() {
        out.push(Token::Literal(rest));
    }
    out
}

/// The name after a `$` (bare or braced) and the text after it, or `None` when malformed.
fn reference(s: &str) -> Option<(&str, &str)> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, s),
    };
    let len = body
        .char_indices()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if len == 0 {
        return None;
    }
    let (name, tail) = body.split_at(len);
    if braced {
        tail.strip_prefix('}').map(|tail| (name, tail))
    } else {
        Some((name, tail))
    }
}

/// The matches of statsd_exporter's `\$\{?([a-zA-Z0-9_$]+)\}?` in `src`, leftmost first, not
/// overlapping.
fn glob_references(src: &str) -> Vec<&str> {
    let bytes = src.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'$' {
            at += 1;
            continue;
        }
        let mut end = at + 1;
        if bytes.get(end) == Some(&b'{') {
            end += 1;
        }
        let body = end;
        while end < bytes.len() && word(bytes[end]) {
            end += 1;
        }
        if end == body {
            // With the `{` optional, Go's regexp also tries without it; `${` followed by no
            // word character matches nothing either way.
            at += 1;
            continue;
        }
        if bytes.get(end) == Some(&b'}') {
            end += 1;
        }
        found.push(&src[at..end]);
        at = end;
    }
    found
}

/// A reference name read as a group number: ASCII digits, no leading zero, below 10^8.
fn group_number(name: &str) -> Option<usize> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 8 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return None;
    }
    name.parse().ok()
}

impl Template {
    /// Parses `src`; `resolve` turns a reference into a group index, or `None` for a group that
    /// cannot exist (which then always expands to nothing).
    pub(super) fn parse(src: &str, resolve: impl Fn(Token<'_>) -> Option<usize>) -> Template {
        let mut pieces: Vec<Piece> = Vec::new();
        let mut literal = String::new();
        for token in tokens(src) {
            match token {
                Token::Literal(text) => literal.push_str(text),
                Token::Dollar => literal.push('$'),
                Token::Number(_) | Token::Name(_) => {
                    if let Some(group) = resolve(token) {
                        if !literal.is_empty() {
                            pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
                        }
                        pieces.push(Piece::Group(group));
                    }
                }
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal.into()));
        }
        Template {
            pieces: pieces.into(),
        }
    }

    /// Parses a glob rule's template the way statsd_exporter 0.30's glob formatter reads it:
    /// every match of `\$\{?[a-zA-Z0-9_$]+\}?`, in order, replaces each occurrence of its
    /// text still in the template, by a placeholder when it is a number from 1 to `stars`
    /// and by nothing otherwise (`$0`, `$name`, `$1_total`); then each placeholder takes the
    /// next of those numbers' groups, in the order they were found. So `$1.$10` fills
    /// `$1`'s text inside `$10` first and expands to the first group, `.`, the tenth group
    /// and `0`, as in statsd_exporter. Placeholders left without a group, or groups left
    /// without a placeholder, are written as Go's `fmt.Sprintf` writes them.
    pub(super) fn parse_glob(src: &str, stars: usize) -> Template {
        const PLACEHOLDER: &str = "%s";
        let mut format = src.to_owned();
        let mut groups = Vec::new();
        for whole in glob_references(src) {
            // The reference's inner text as Go's regexp captured it: after one `$` and an
            // optional `{`, before an optional `}`.
            let inner = whole.strip_prefix("${").unwrap_or_else(|| &whole[1..]);
            let inner = inner.strip_suffix('}').unwrap_or(inner);
            match inner.parse::<usize>() {
                Ok(n) if (1..=stars).contains(&n) => {
                    format = format.replace(whole, PLACEHOLDER);
                    groups.push(n);
                }
                _ => format = format.replace(whole, ""),
            }
        }
        if groups.is_empty() {
            let pieces = match format.is_empty() {
                true => Vec::new(),
                false => vec![Piece::Literal(format.into())],
            };
            return Template {
                pieces: pieces.into(),
            };
        }
        let mut pieces = Vec::new();
        let mut next = groups.iter();
        let mut parts = format.split(PLACEHOLDER).peekable();
        while let Some(part) = parts.next() {
            if !part.is_empty() {
                pieces.push(Piece::Literal(part.into()));
            }
            if parts.peek().is_some() {
                pieces.push(match next.next() {
                    Some(&n) => Piece::Group(n),
                    None => Piece::Literal("%!s(MISSING)".into()),
                });
            }
        }
        let extra: Vec<usize> = next.copied().collect();
        if !extra.is_empty() {
            pieces.push(Piece::Literal("%!(EXTRA ".into()));
            for (i, n) in extra.into_iter().enumerate() {
                let separator = if i == 0 { "string=" } else { ", string=" };
                pieces.push(Piece::Literal(separator.into()));
                pieces.push(Piece::Group(n));
            }
            pieces.push(Piece::Literal(")".into()));
        }
        Template {
            pieces: pieces.into(),
        }
    }

    /// Appends the expansion to `out`; `group(i)` is the text of group `i` (empty when it did
    /// not take part in the match).
    pub(super) fn render<'a>(&self, out: &mut String, group: impl Fn(usize) -> &'a str) {
        for piece in &*self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Group(i) => out.push_str(group(*i)),
            }
        }
    }

    /// The expansion as a new string.
    pub(super) fn expand<'a>(&self, group: impl Fn(usize) -> &'a str) -> String {
        let mut out = String::new();
        self.render(&mut out, group);
        out
    }
}

/// Checks a `name` template the way statsd_exporter does (its `metricNameRE`): letters, digits,
/// `_` and numbered references (`$1`, `${1}`), not starting with a digit.
pub(super) fn check_name(src: &str) -> Result<(), String> {
    const HINT: &str = "a name may hold letters, digits, `_` and `$1`/`${1}` references, \
                        and may not start with a digit";
    if src.is_empty() {
        return Err("the name is empty".to_owned());
    }
    for (i, token) in tokens(src).into_iter().enumerate() {
        match token {
            Token::Literal(text) => {
                if let Some(c) = text
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
                {
                    return Err(format!(
                        "`{src}` is not a valid metric name: `{c}` is not allowed; {HINT}"
                    ));
                }
                if i == 0 && text.as_bytes()[0].is_ascii_digit() {
                    return Err(format!(
                        "`{src}` is not a valid metric name: it starts with a digit; {HINT}"
                    ));
                }
            }
            Token::Number(_) => {}
            // statsd_exporter's check accepts `$01` (which then expands to nothing); so do we.
            Token::Name(name) if name.bytes().all(|b| b.is_ascii_digit()) => {}
            Token::Name(name) => {
                let digits = name.bytes().take_while(u8::is_ascii_digit).count();
                // `$1_total` names a group `1_total` (Go's rule), which always expands to
                // nothing: statsd_exporter loads it and then drops every sample.
                let why = if digits > 0 {
                    format!(
                        "`${name}` refers to a group named `{name}`, not to group {}; write `${{{}}}{}`",
                        &name[..digits],
                        &name[..digits],
                        &name[digits..]
                    )
                } else {
                    format!("`${name}` is not a numbered reference")
                };
                return Err(format!("`{src}` is not a valid metric name: {why}; {HINT}"));
            }
            Token::Dollar => {
                return Err(format!(
                    "`{src}` is not a valid metric name: `$$` is not allowed; {HINT}"
                ));
            }
        }
    }
    Ok(())
}
