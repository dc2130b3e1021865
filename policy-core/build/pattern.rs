//! Route segment patterns as macaron and flamego read them, and the regular expressions
//! inside them, reduced to the small language the runtime matcher implements. Anything
//! outside that language is a build error, never an approximation.

/// A pattern's kind, in the order the routers try them (macaron tree.go `patternType`,
/// flamego `MatchStyle`): static, regexp, path-ext, holder (placeholder), match-all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pat {
    Static(String),
    Regex(Regex),
    PathExt,
    Holder(String),
    MatchAll,
}

impl Pat {
    pub fn rank(&self) -> u8 {
        match self {
            Pat::Static(_) => 0,
            Pat::Regex(_) => 1,
            Pat::PathExt => 2,
            Pat::Holder(_) => 3,
            Pat::MatchAll => 4,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regex {
    pub source: String,
    pub anchored_start: bool,
    pub anchored_end: bool,
    pub pieces: Vec<Piece>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    /// Characters from `ranges` (any character when `any`), `min..=max` times (`max`
    /// `None`: unbounded).
    Class {
        ranges: Vec<(char, char)>,
        any: bool,
        min: u32,
        max: Option<u32>,
    },
    OneOf(Vec<String>),
}

/// macaron `checkPattern`: the segment's kind, and whether it is optional (`?:page`).
pub fn macaron(segment: &str) -> Result<(Pat, bool), String> {
    let optional = segment.starts_with('?');
    let pattern = segment.trim_start_matches('?');
    let pat = if pattern == "*" {
        Pat::MatchAll
    } else if pattern == "*.*" {
        Pat::PathExt
    } else if pattern.contains(':') {
        let (regex, wildcards) = macaron_wildcards(pattern);
        if regex == "(.+)" {
            Pat::Holder(wildcards.into_iter().next().unwrap_or_default())
        } else {
            Pat::Regex(parse_regex(&regex)?)
        }
    } else {
        Pat::Static(pattern.to_owned())
    };
    Ok((pat, optional))
}

/// macaron `getWildcards`: replaces each `:name` by its regular expression, returning the
/// expression and the wildcard names in order.
fn macaron_wildcards(pattern: &str) -> (String, Vec<String>) {
    let mut pattern = pattern.to_owned();
    let mut names = Vec::new();
    loop {
        let bytes = pattern.as_bytes();
        let Some(start) = (0..bytes.len())
            .find(|&i| bytes[i] == b':' && bytes.get(i + 1).is_some_and(u8::is_ascii_alphanumeric))
        else {
            return (pattern, names);
        };
        let end = (start + 1..bytes.len())
            .find(|&i| !bytes[i].is_ascii_alphanumeric())
            .unwrap_or(bytes.len());
        let wildcard = pattern[start..end].to_owned();
        names.push(wildcard.clone());
        let rest = &pattern[end..];
        pattern = if rest.is_empty() {
            pattern.replacen(&wildcard, "(.+)", 1)
        } else if !rest.starts_with('(') {
            if rest.starts_with(":int") {
                let p = pattern.replacen(":int", "([0-9]+)", 1);
                format!("{}{}", &p[..start], &p[end..])
            } else if rest.starts_with(":string") {
                let p = pattern.replacen(":string", "([\\w]+)", 1);
                format!("{}{}", &p[..start], &p[end..])
            } else {
                pattern.replacen(&wildcard, "(.+)", 1)
            }
        } else {
            format!("{}{}", &pattern[..start], &pattern[end..])
        };
    }
}

/// flamego segment syntax: literals, `{name}`, `{name: /regex/}`, `{**}`, `{name: **}`.
pub fn flamego(segment: &str) -> Result<Pat, String> {
    enum Element {
        Literal(String),
        Bind,
        Regex(String),
        All,
    }
    let mut elements = Vec::new();
    let mut rest = segment;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('{') {
            let close = inner
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in `{segment}`"))?;
            // A regex may itself contain `}` (`{7,40}`): the element ends at the `/}`.
            let (body, after) = match inner.find(": /") {
                Some(colon) if colon < close => {
                    let end = inner
                        .find("/}")
                        .ok_or_else(|| format!("unclosed regex in `{segment}`"))?;
                    (&inner[..end + 1], &inner[end + 2..])
                }
                _ => (&inner[..close], &inner[close + 1..]),
            };
            let element = match body.split_once(':') {
                None if body == "**" => Element::All,
                None => Element::Bind,
                Some((_, value)) => {
                    let value = value.trim();
                    if value == "**" {
                        Element::All
                    } else if let Some(re) =
                        value.strip_prefix('/').and_then(|v| v.strip_suffix('/'))
                    {
                        Element::Regex(re.to_owned())
                    } else {
                        return Err(format!(
                            "bind parameter `{body}` in `{segment}` is not understood"
                        ));
                    }
                }
            };
            elements.push(element);
            rest = after;
        } else {
            let end = rest.find('{').unwrap_or(rest.len());
            elements.push(Element::Literal(rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
    match elements.as_slice() {
        [] => Ok(Pat::Static(String::new())),
        [Element::Literal(l)] => Ok(Pat::Static(l.clone())),
        [Element::Bind] => Ok(Pat::Holder(
            segment.trim_matches(|c| c == '{' || c == '}').to_owned(),
        )),
        [Element::All] => Ok(Pat::MatchAll),
        _ => {
            // flamego `constructMatchStyleRegex`: anchored, literals quoted, binds `(.+)`.
            let mut regex = String::from("^");
            for element in &elements {
                match element {
                    Element::Literal(l) => regex.push_str(&quote(l)),
                    Element::Bind => regex.push_str("(.+)"),
                    Element::Regex(re) => {
                        regex.push('(');
                        regex.push_str(re);
                        regex.push(')');
                    }
                    Element::All => {
                        return Err(format!("`**` must be a whole segment in `{segment}`"))
                    }
                }
            }
            regex.push('$');
            Ok(Pat::Regex(parse_regex(&regex)?))
        }
    }
}

fn quote(literal: &str) -> String {
    let mut out = String::new();
    for c in literal.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Parses the subset of Go's RE2 syntax Gogs' routes use: literals and escapes, `.`,
/// bracket classes of ranges, groups holding one class or an alternation of literals,
/// the quantifiers `{n}`, `{n,m}`, `+`, `*`, `?`, and `^`/`$` at the ends.
pub fn parse_regex(source: &str) -> Result<Regex, String> {
    let unsupported =
        |what: &str| format!("regular expression `{source}`: {what} is not supported");
    let mut chars: Vec<char> = source.chars().collect();
    let anchored_start = chars.first() == Some(&'^');
    if anchored_start {
        chars.remove(0);
    }
    let anchored_end =
        chars.last() == Some(&'$') && chars.len() >= 2 && chars[chars.len() - 2] != '\\';
    if anchored_end {
        chars.pop();
    }
    let mut pieces: Vec<Piece> = Vec::new();
    let mut i = 0;
    let push_literal = |pieces: &mut Vec<Piece>, c: char| match pieces.last_mut() {
        Some(Piece::Literal(l)) => l.push(c),
        _ => pieces.push(Piece::Literal(c.to_string())),
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let escaped = *chars
                    .get(i + 1)
                    .ok_or_else(|| unsupported("a trailing `\\`"))?;
                if escaped == 'w' {
                    pieces.push(word_class());
                } else if escaped.is_ascii_alphanumeric() {
                    return Err(unsupported(&format!("`\\{escaped}`")));
                } else {
                    push_literal(&mut pieces, escaped);
                }
                i += 2;
            }
            '.' => {
                pieces.push(Piece::Class {
                    ranges: Vec::new(),
                    any: true,
                    min: 1,
                    max: Some(1),
                });
                i += 1;
            }
            '[' => {
                let (class, next) = bracket(&chars, i).map_err(|e| unsupported(&e))?;
                pieces.push(class);
                i = next;
            }
            '(' => {
                let mut depth = 0;
                let close = (i..chars.len())
                    .find(|&j| {
                        match chars[j] {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .ok_or_else(|| unsupported("an unclosed group"))?;
                let inner: String = chars[i + 1..close].iter().collect();
                let literal_words = inner
                    .chars()
                    .all(|c| c == '|' || c == '-' || c == '_' || c.is_ascii_alphanumeric());
                if literal_words {
                    pieces.push(Piece::OneOf(inner.split('|').map(str::to_owned).collect()));
                } else {
                    // Captures only name parameters; the matcher needs what the group matches.
                    match parse_regex(&inner)?.pieces.as_slice() {
                        [single @ (Piece::Class { .. } | Piece::OneOf(_))] => {
                            pieces.push(single.clone())
                        }
                        _ => return Err(unsupported(&format!("the group `({inner})`"))),
                    }
                }
                i = close + 1;
            }
            '{' | '+' | '*' | '?' => {
                let (min, max, next) = quantifier(&chars, i).map_err(|e| unsupported(&e))?;
                match pieces.last_mut() {
                    Some(Piece::Class { min: m, max: x, .. }) if *m == 1 && *x == Some(1) => {
                        *m = min;
                        *x = max;
                    }
                    _ => return Err(unsupported("a quantifier not after a single class")),
                }
                i = next;
            }
            '^' | '$' | '|' | ')' | ']' | '}' => return Err(unsupported(&format!("`{c}` here"))),
            _ => {
                push_literal(&mut pieces, c);
                i += 1;
            }
        }
    }
    Ok(Regex {
        source: source.to_owned(),
        anchored_start,
        anchored_end,
        pieces,
    })
}

fn word_class() -> Piece {
    Piece::Class {
        ranges: vec![('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')],
        any: false,
        min: 1,
        max: Some(1),
    }
}

fn bracket(chars: &[char], open: usize) -> Result<(Piece, usize), String> {
    let mut ranges = Vec::new();
    let mut i = open + 1;
    while i < chars.len() && chars[i] != ']' {
        let c = chars[i];
        if c == '\\' {
            match chars.get(i + 1) {
                Some('w') => {
                    if let Piece::Class { ranges: w, .. } = word_class() {
                        ranges.extend(w);
                    }
                }
                Some(&e) if !e.is_ascii_alphanumeric() => ranges.push((e, e)),
                _ => return Err("an escape in a class".into()),
            }
            i += 2;
        } else if c == '^' && i == open + 1 {
            return Err("a negated class".into());
        } else if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&e| e != ']') {
            ranges.push((c, chars[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    if i >= chars.len() {
        return Err("an unclosed class".into());
    }
    Ok((
        Piece::Class {
            ranges,
            any: false,
            min: 1,
            max: Some(1),
        },
        i + 1,
    ))
}

fn quantifier(chars: &[char], at: usize) -> Result<(u32, Option<u32>, usize), String> {
    match chars[at] {
        '+' => Ok((1, None, at + 1)),
        '*' => Ok((0, None, at + 1)),
        '?' => Ok((0, Some(1), at + 1)),
        _ => {
            let close = (at..chars.len())
                .find(|&j| chars[j] == '}')
                .ok_or("an unclosed `{`")?;
            let body: String = chars[at + 1..close].iter().collect();
            let number = |s: &str| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("the repetition `{{{body}}}`"))
            };
            let (min, max) = match body.split_once(',') {
                None => {
                    let n = number(&body)?;
                    (n, Some(n))
                }
                Some((a, "")) => (number(a)?, None),
                Some((a, b)) => (number(a)?, Some(number(b)?)),
            };
            Ok((min, max, close + 1))
        }
    }
}
