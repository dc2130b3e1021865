//! `[[binding]]`: a verified token becomes a Gogs identity because of what its claims say
//! (a CI job's project and branch, a workload's object id), not because one claim names a
//! user. Also reads the claims an issuer records in the audit.

use alloc::borrow::Cow;
use alloc::{string::String, vec::Vec};
use serde_json::{Map, Value};

use crate::glob::glob_match;

/// Longest claim value kept for the audit; longer values are cut at a character boundary.
pub(crate) const MAX_AUDIT_VALUE: usize = 256;
/// Most claims an issuer may record in the audit.
pub(crate) const MAX_AUDIT_CLAIMS: usize = 16;

/// One claim a binding requires: its name (dotted names reach nested claims) and a glob
/// over the claim's text.
#[derive(Clone, Debug)]
pub(crate) struct ClaimTest {
    pub(crate) name: String,
    pub(crate) pattern: String,
}

/// A validated `[[binding]]`.
#[derive(Clone, Debug)]
pub(crate) struct Binding {
    pub(crate) name: String,
    pub(crate) claims: Vec<ClaimTest>,
    /// The Gogs user the token acts as, lowercased.
    pub(crate) user: String,
    pub(crate) groups: Vec<String>,
}

impl Binding {
    /// Does every claim the binding lists match?
    pub(crate) fn matches(&self, claims: &Map<String, Value>) -> bool {
        self.claims.iter().all(|test| {
            claim(claims, &test.name).is_some_and(|value| {
                texts(value).any(|text| glob_match(test.pattern.as_bytes(), text.as_bytes()))
            })
        })
    }
}

/// The claim called `name`: a top-level member of that exact name first (namespaced claims
/// such as `https://example.com/roles` contain dots), else the dotted path into nested
/// objects.
pub(crate) fn claim<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let first = claims.get(parts.next()?)?;
    parts.try_fold(first, |value, part| value.as_object()?.get(part))
}

/// The texts a claim value offers to a pattern: a string itself, a boolean or number as
/// its JSON text (so `true` and `"true"` both match `"true"`), each such element of a list.
/// Objects and null offer nothing.
fn texts(value: &Value) -> impl Iterator<Item = Cow<'_, str>> {
    let items: &[Value] = match value {
        Value::Array(items) => items,
        single => core::slice::from_ref(single),
    };
    items.iter().filter_map(scalar_text)
}

fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Number(n) => Some(Cow::Owned(alloc::format!("{n}"))),
        _ => None,
    }
}

/// A claim's value as the audit records it: scalars as text, anything else as its JSON,
/// at most [`MAX_AUDIT_VALUE`] bytes.
pub(crate) fn audit_value(value: &Value) -> String {
    let mut text = match scalar_text(value) {
        Some(text) => text.into_owned(),
        None => serde_json::to_string(value).unwrap_or_default(),
    };
    if text.len() > MAX_AUDIT_VALUE {
        let mut end = MAX_AUDIT_VALUE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn binding(tests: &[(&str, &str)]) -> Binding {
        Binding {
            name: "b".into(),
            claims: tests
                .iter()
                .map(|(name, pattern)| ClaimTest {
                    name: (*name).into(),
                    pattern: (*pattern).into(),
                })
                .collect(),
            user: "ci".into(),
            groups: Vec::new(),
        }
    }

    #[test]
    fn every_listed_claim_must_match() {
        let b = binding(&[("project_path", "acme/app"), ("ref", "release/*")]);
        assert!(b.matches(&claims(
            json!({"project_path": "acme/app", "ref": "release/1.2"})
        )));
        assert!(!b.matches(&claims(json!({"project_path": "acme/app", "ref": "main"}))));
        assert!(!b.matches(&claims(json!({"project_path": "acme/app"}))));
        assert!(!b.matches(&claims(
            json!({"project_path": "acme/app-fork", "ref": "release/1"})
        )));
    }

    #[test]
    fn booleans_and_numbers_match_by_their_json_text() {
        let b = binding(&[("ref_protected", "true"), ("project_id", "42")]);
        assert!(b.matches(&claims(json!({"ref_protected": true, "project_id": 42}))));
        assert!(b.matches(&claims(
            json!({"ref_protected": "true", "project_id": "42"})
        )));
        assert!(!b.matches(&claims(json!({"ref_protected": false, "project_id": 42}))));
        assert!(!b.matches(&claims(json!({"ref_protected": "True", "project_id": 42}))));
    }

    #[test]
    fn a_list_matches_when_any_element_does() {
        let b = binding(&[("roles", "Config.Read")]);
        assert!(b.matches(&claims(json!({"roles": ["Other", "Config.Read"]}))));
        assert!(!b.matches(&claims(json!({"roles": ["Other"]}))));
        assert!(!b.matches(&claims(json!({"roles": [["Config.Read"]]}))));
        assert!(!b.matches(&claims(json!({"roles": {"Config.Read": true}}))));
    }

    #[test]
    fn dotted_names_reach_nested_claims_after_exact_names() {
        let nested = claims(json!({"ci": {"job": {"ref": "main"}}, "https://x.test/team": "ops"}));
        assert_eq!(claim(&nested, "ci.job.ref"), Some(&json!("main")));
        assert_eq!(claim(&nested, "https://x.test/team"), Some(&json!("ops")));
        assert_eq!(claim(&nested, "ci.job.missing"), None);
        assert_eq!(claim(&nested, "ci.job.ref.deeper"), None);
    }

    #[test]
    fn glob_stars_cross_slashes_in_claim_values() {
        let b = binding(&[(
            "job_workflow_ref",
            "acme/app/.github/workflows/*@refs/heads/main",
        )]);
        assert!(b.matches(&claims(json!({
            "job_workflow_ref": "acme/app/.github/workflows/deploy.yml@refs/heads/main"
        }))));
    }

    #[test]
    fn audit_values_are_bounded_text() {
        assert_eq!(audit_value(&json!("x")), "x");
        assert_eq!(audit_value(&json!(true)), "true");
        assert_eq!(audit_value(&json!(["a", 1])), r#"["a",1]"#);
        let long = "é".repeat(200);
        let cut = audit_value(&json!(long));
        assert!(cut.len() <= MAX_AUDIT_VALUE && long.starts_with(&cut));
    }
}
