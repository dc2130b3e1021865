//! `types.d.ts`, the package's TypeScript types for the JSON `decide`, `resolve` and
//! `runTests` read and write, generated from the Rust types by ts-rs. The test fails when
//! the committed file differs from what the types say; `TOLLGATE_BLESS=1 cargo test -p
//! tollgate-js` rewrites it.

use std::path::Path;

use policy_core::{
    Access, Algorithm, Decision, ExplainStep, Identity, OwnedRequest, OwnedTokenResponse, Reason,
};
use policy_core::{RouteClass, Shadow};
use ts_rs::{Config, TS};

use crate::{Check, Options, PositionedError, Resolved, TestOutcome, TokenRequest, Update};

/// `T`'s declaration, exported, after its doc comment (rustdoc links shown as code).
fn declaration<T: TS>(cfg: &Config) -> String {
    let docs = T::docs()
        .map(|docs| format!("{}\n", docs.trim_end()))
        .unwrap_or_default();
    let decl = T::decl(cfg);
    let (head, body) = decl.split_once(" = ").unwrap_or(("", &decl));
    let body = body.trim_end().trim_end_matches(';');
    let body = if body.len() > 100 && !body.contains('{') {
        // A long union of literals (`Reason`): one alternative per line.
        format!(
            "\n    | {}",
            body.split(" | ").collect::<Vec<_>>().join("\n    | ")
        )
    } else {
        format!(" {}", layout(body, 0))
    };
    plain_links(&format!("{docs}export {head} ={body};\n"))
}

/// ts-rs's one-line type text laid out one member per line: an object type whose members
/// carry doc comments, or that would be long, opens a block; short ones stay inline.
fn layout(text: &str, indent: usize) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = scan(rest).find(|&(_, c, _)| c == '{').map(|(i, _, _)| i) {
        let Some(close) = matching_brace(&rest[open..]).map(|c| open + c) else {
            break;
        };
        out.push_str(&rest[..open]);
        let inner = rest[open + 1..close].trim().trim_end_matches(',');
        if !inner.contains("/**") && inner.len() < 60 {
            out.push_str(&format!("{{ {inner} }}"));
        } else {
            out.push_str("{\n");
            for member in split_members(inner) {
                let pad = " ".repeat(indent + 4);
                let (doc, field) = match member.rfind("*/") {
                    Some(end) => (&member[..end + 2], member[end + 2..].trim()),
                    None => ("", member),
                };
                for line in doc.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    let line = if line.starts_with('*') {
                        format!(" {line}")
                    } else {
                        line.to_owned()
                    };
                    out.push_str(&format!("{pad}{line}\n"));
                }
                out.push_str(&format!("{pad}{},\n", layout(field, indent + 4)));
            }
            out.push_str(&format!("{}}}", " ".repeat(indent)));
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Where the brace closing the one `text` opens with is.
fn matching_brace(text: &str) -> Option<usize> {
    scan(text)
        .skip(1)
        .find(|&(_, c, depth)| depth == 0 && c == '}')
        .map(|(i, _, _)| i)
}

/// `inner`'s members: split at commas outside brackets, comments and strings.
fn split_members(inner: &str) -> Vec<&str> {
    let mut members = Vec::new();
    let mut start = 0;
    for (i, c, depth) in scan(inner) {
        if depth == 0 && c == ',' {
            members.push(inner[start..i].trim());
            start = i + 1;
        }
    }
    members.push(inner[start..].trim());
    members.retain(|m| !m.is_empty());
    members
}

/// `text`'s characters outside comments and string literals, each with its byte offset
/// and bracket depth (counted before an opening bracket, after a closing one).
fn scan(text: &str) -> impl Iterator<Item = (usize, char, usize)> + '_ {
    let mut depth = 0usize;
    let (mut in_comment, mut in_string) = (false, false);
    text.char_indices().filter_map(move |(i, c)| {
        if in_comment {
            in_comment = !(c == '/' && text[..i].ends_with('*'));
            return None;
        }
        if in_string {
            in_string = c != '"';
            return None;
        }
        match c {
            '/' if text[i..].starts_with("/**") => {
                in_comment = true;
                None
            }
            '"' => {
                in_string = true;
                None
            }
            '{' | '[' | '(' | '<' => {
                depth += 1;
                Some((i, c, depth - 1))
            }
            '}' | ']' | ')' | '>' => {
                depth = depth.saturating_sub(1);
                Some((i, c, depth))
            }
            _ => Some((i, c, depth)),
        }
    })
}

/// `text` with rustdoc links (`[`crate::Engine::revision`]`) as code (`` `revision` ``).
fn plain_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("[`") {
        let Some(len) = rest[start..].find("`]") else {
            break;
        };
        let path = &rest[start + 2..start + len];
        let name = path.rsplit("::").next().unwrap_or(path);
        out.push_str(&rest[..start]);
        out.push_str(&format!("`{name}`"));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// Every declaration, in reading order: what goes in, what comes out, what they hold.
fn declarations() -> String {
    // JSON numbers reach JavaScript as numbers; the few u64 fields that could exceed 2^53
    // (rate states) are strings already.
    let cfg = Config::new().with_large_int("number");
    let parts = [
        declaration::<OwnedRequest>(&cfg),
        declaration::<Options>(&cfg),
        declaration::<Decision>(&cfg),
        declaration::<Reason>(&cfg),
        declaration::<Identity>(&cfg),
        declaration::<Algorithm>(&cfg),
        declaration::<RouteClass>(&cfg),
        declaration::<Access>(&cfg),
        declaration::<Shadow>(&cfg),
        declaration::<ExplainStep>(&cfg),
        declaration::<Check<'static>>(&cfg),
        declaration::<Update<'static>>(&cfg),
        declaration::<Resolved<'static>>(&cfg),
        declaration::<TokenRequest<'static>>(&cfg),
        declaration::<OwnedTokenResponse>(&cfg),
        declaration::<TestOutcome<'static>>(&cfg),
        declaration::<PositionedError<'static>>(&cfg),
    ];
    format!(
        "// GENERATED from the Rust types by targets/js/src/types.rs (ts-rs); do not edit.\n\n{}",
        parts.join("\n")
    )
}

#[test]
fn typescript_declarations_match_the_rust_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/types.d.ts");
    let generated = declarations();
    if std::env::var_os("TOLLGATE_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write src/types.d.ts");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "targets/js/src/types.d.ts is stale: run `TOLLGATE_BLESS=1 cargo test -p tollgate-js`"
    );
}
