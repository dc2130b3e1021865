//! Policy files: TOML parsed strictly, validated, compiled into an [`Engine`].
//!
//! Every error names the file, the line and the column, and says what was expected.

mod compile;
mod identities;
mod schema;
mod sso;

use alloc::{string::String, vec::Vec};
use core::fmt;
use core::ops::Range;

#[cfg(feature = "testing")]
use crate::cases::TestCase;
use crate::engine::Engine;

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `source`.
    pub fn of_offset(source: &str, offset: usize) -> Position {
        let before = source.get(..offset.min(source.len())).unwrap_or(source);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
        Position { line, column }
    }
}

/// Why a policy file was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub position: Option<Position>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(Position { line, column }) => {
                write!(f, "{}:{line}:{column}: {}", self.file, self.message)
            }
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PolicyError {}

/// A parsed policy file: the engine and the `[[test]]` cases written beside it.
#[derive(Debug)]
pub struct Policy {
    pub engine: Engine,
    /// The `[[test]]` cases written beside the policy (with the `testing` feature).
    #[cfg(feature = "testing")]
    pub tests: Vec<TestCase>,
    /// Secrets the policy itself names (the service token, the Gogs tokens of the users
    /// its API keys and grants name, each webhook's secret, `[sso]`'s keys), for hosts to
    /// check they hold them. Users known only from tokens at request time are not here.
    pub origin_secrets: Vec<SecretUse>,
}

/// An origin secret a policy needs, and where the policy asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretUse {
    /// The secret's name in the host's secret store.
    pub name: String,
    pub position: Option<Position>,
    /// What the secret is for, as a phrase: "the Gogs token of `ci-bot`".
    pub purpose: String,
    /// The fewest bytes it may have (a signing key must not be guessable); 1 for most.
    pub min_bytes: usize,
}

impl Policy {
    /// Parses and validates `source`; `file` labels error messages.
    pub fn parse(source: &str, file: &str) -> Result<Policy, PolicyError> {
        let at = Source { file, text: source };
        let raw: schema::RawPolicy = toml::from_str(source).map_err(|e| {
            // toml's message already says what was expected; keep its first line (the
            // rest repeats the source excerpt, which our position replaces).
            let message = String::from(e.message().lines().next().unwrap_or("invalid TOML").trim());
            at.error(e.span(), message)
        })?;
        compile::compile(raw, &at)
    }
}

/// The policy text being compiled, for turning spans into positioned errors.
pub(crate) struct Source<'a> {
    file: &'a str,
    text: &'a str,
}

impl Source<'_> {
    pub(crate) fn position(&self, offset: usize) -> Position {
        Position::of_offset(self.text, offset)
    }

    pub(crate) fn error(&self, span: Option<Range<usize>>, message: String) -> PolicyError {
        PolicyError {
            file: String::from(self.file),
            position: span.map(|s| self.position(s.start)),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Engine, NoKeys, NoSecrets, RequestFacts, UnixTime};
    use alloc::string::{String, ToString};

    #[test]
    fn the_revision_names_the_text_and_every_decision_carries_it() {
        let a = Engine::from_toml("[gateway]\nrealm = \"a\"\n", "a.toml").unwrap();
        let elsewhere = Engine::from_toml("[gateway]\nrealm = \"a\"\n", "b.toml").unwrap();
        let b = Engine::from_toml("[gateway]\nrealm = \"b\"\n", "a.toml").unwrap();
        assert_eq!(a.revision(), elsewhere.revision());
        assert_ne!(a.revision(), b.revision());
        assert!(a.revision().starts_with("sha256:") && a.revision().len() == 23);
        let decision = a
            .decide(
                &RequestFacts::get("/acme/app.git/info/refs"),
                UnixTime::from_secs(1_800_000_000),
                &NoKeys,
                &NoSecrets,
            )
            .resolve_with(&mut |_, _| None);
        assert_eq!(decision.policy_revision.as_deref(), Some(a.revision()));
    }

    const ISSUER: &str = "[[issuer]]\nname = \"corp\"\nissuer = \"https://id.example.test\"\naudiences = [\"gogs\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://id.example.test/jwks\"\n";

    fn login_error(login: &str) -> String {
        let text = alloc::format!("{ISSUER}[login]\n{login}");
        Engine::from_toml(&text, "p.toml").unwrap_err().to_string()
    }

    #[test]
    fn login_settings_are_checked_with_their_position() {
        let unknown = login_error("issuer = \"other\"\nclient_id = \"cli\"\n");
        assert!(
            unknown.starts_with(
                "p.toml:8:10: login.issuer `other` names no [[issuer]] (there are: `corp`)"
            ),
            "{unknown}"
        );
        let spaced = login_error("issuer = \"corp\"\nclient_id = \"a b\"\n");
        assert!(spaced.contains("login.client_id `a b` must be"), "{spaced}");
        let scope = login_error("issuer = \"corp\"\nclient_id = \"cli\"\nscope = \"openid  x\"\n");
        assert!(scope.contains("login.scope `openid  x`"), "{scope}");
        let resource = login_error("issuer = \"corp\"\nclient_id = \"cli\"\nresource = \"gogs\"\n");
        assert!(resource.contains("must be an absolute URI"), "{resource}");
        let unknown_field = login_error("issuer = \"corp\"\nclient_id = \"cli\"\nsecret = \"x\"\n");
        assert!(
            unknown_field.contains("unknown field `secret`"),
            "{unknown_field}"
        );
    }

    #[test]
    fn without_login_nothing_is_published() {
        let engine = Engine::from_toml(ISSUER, "p.toml").unwrap();
        let decision = engine
            .decide(
                &RequestFacts::get(crate::LOGIN_METADATA_PATH),
                UnixTime::from_secs(1_800_000_000),
                &NoKeys,
                &NoSecrets,
            )
            .resolve_with(&mut |_, _| None);
        assert_ne!(decision.reason, crate::Reason::Published);
        assert!(!decision.allow);
    }
}
