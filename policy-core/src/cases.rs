//! `[[test]]` cases written in a policy file: a request, a time, and what the decision
//! must say. Expectations are checked against a decision's JSON form, so the same case
//! runs against the native engine and against any host that answers in that JSON
//! (the WASM module, the edge workers).

use alloc::{collections::BTreeMap, format, string::String, vec::Vec};
use core::cell::RefCell;
use serde_json::Value;

use crate::access::Access;
use crate::keys::KeyStore;
use crate::origin::SecretStore;
use crate::policy::{Policy, Position};
use crate::rate::{RateState, RateStore, RateStoreError};
use crate::request::OwnedRequest;
use crate::sso::OwnedTokenResponse;
use crate::time::UnixTime;

/// The time a case runs at when it names none: 2026-01-01T00:00:00Z.
pub const DEFAULT_TEST_NOW: u64 = 1_767_225_600;

/// The randomness a case's requests carry when they name none (`entropy`), so that a
/// sign-in redirect is the same on every host: bytes 0 to 31.
pub const DEFAULT_TEST_ENTROPY: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];

/// One request a case sends, at the case's time.
#[derive(Clone, Copy, Debug)]
pub struct Step<'c> {
    pub request: &'c OwnedRequest,
    pub now: UnixTime,
    /// The answer to the token request, if the request is a sign-in callback: only the
    /// case's own requests carry it, not those sent `before`.
    pub exchange: Option<&'c OwnedTokenResponse>,
}

#[derive(Clone, Debug)]
pub struct TestCase {
    pub name: String,
    /// Where the case's `expect` table starts in the policy file.
    pub position: Position,
    pub now: UnixTime,
    /// Send the request this many times (sharing rate-limit state); the expectation is
    /// checked on the last answer.
    pub repeat: u32,
    /// Requests sent first, in order, sharing rate-limit state with the case's own
    /// (their answers are not checked): two clients sharing one limit, say.
    pub before: Vec<OwnedRequest>,
    pub request: OwnedRequest,
    /// What the identity provider answers the token request the request makes, if it is
    /// a sign-in callback (`[sso]`); without it, the token request is the answer checked.
    pub exchange: Option<OwnedTokenResponse>,
    pub expect: Expectation,
}

impl TestCase {
    /// The requests the case sends, in order; the expectation applies to the last.
    pub fn steps(&self) -> impl Iterator<Item = Step<'_>> {
        let before = self.before.iter().map(|request| Step {
            request,
            now: self.now,
            exchange: None,
        });
        let own = core::iter::repeat_n(&self.request, self.repeat as usize).map(|request| Step {
            request,
            now: self.now,
            exchange: self.exchange.as_ref(),
        });
        before.chain(own)
    }
}

/// Fields left `None` are not checked.
#[derive(Clone, Debug, Default)]
pub struct Expectation {
    pub allow: Option<bool>,
    pub status: Option<u16>,
    pub reason: Option<String>,
    pub rule: Option<String>,
    /// The decision's message, exactly (for a published document, the document).
    pub message: Option<String>,
    pub user: Option<String>,
    /// The `[[binding]]` that made the identity.
    pub binding: Option<String>,
    /// The identity's audit claims, exactly.
    pub claims: Option<BTreeMap<String, String>>,
    pub repo: Option<String>,
    pub access: Option<Access>,
    pub retry_after: Option<u64>,
    /// Response headers (challenges, Retry-After); names compared case-insensitively.
    pub headers: Option<BTreeMap<String, String>>,
    /// Origin headers, compared on their displayed (redacted) values.
    pub set: Option<BTreeMap<String, String>>,
    pub strip: Option<Vec<String>>,
    pub shadow: Option<ShadowExpectation>,
    /// The token request a sign-in callback makes (`{"token_request": ...}`), checked
    /// field by field: `url`, `body`, and `headers` exactly (secrets redacted).
    pub token_request: Option<TokenRequestExpectation>,
}

/// What a case expects of a token request; fields left `None` are not checked.
#[derive(Clone, Debug, Default)]
pub struct TokenRequestExpectation {
    pub url: Option<String>,
    pub body: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
}

/// What a case expects of the decision's shadow outcome ([`crate::Decision::shadow`]).
#[derive(Clone, Debug)]
pub enum ShadowExpectation {
    /// `shadow = false`: the shadow rules would have decided the same.
    Absent,
    /// A shadow outcome; fields left `None` are not checked.
    Present {
        allow: Option<bool>,
        status: Option<u16>,
        reason: Option<String>,
        rule: Option<String>,
    },
}

impl Expectation {
    /// Every way `decision` (the JSON of a [`crate::Decision`]) differs from the expectation.
    pub fn check(&self, decision: &Value) -> Vec<String> {
        let mut mismatches = Vec::new();
        let mut field = |name: &str, expected: Option<Value>, actual: &Value| {
            if let Some(expected) = expected {
                if expected != *actual {
                    mismatches.push(format!("{name}: expected {expected}, got {actual}"));
                }
            }
        };
        let get = |key: &str| decision.get(key).cloned().unwrap_or(Value::Null);
        field("allow", self.allow.map(Value::from), &get("allow"));
        field("status", self.status.map(Value::from), &get("status"));
        field(
            "reason",
            self.reason.clone().map(Value::from),
            &get("reason"),
        );
        field("rule", self.rule.clone().map(Value::from), &get("rule"));
        field(
            "message",
            self.message.clone().map(Value::from),
            &get("message"),
        );
        let of_identity = |key: &str| {
            decision
                .get("identity")
                .and_then(|i| i.get(key))
                .cloned()
                .unwrap_or(Value::Null)
        };
        field(
            "user",
            self.user.clone().map(Value::from),
            &of_identity("user"),
        );
        field(
            "binding",
            self.binding.clone().map(Value::from),
            &of_identity("binding"),
        );
        let claims = match of_identity("claims") {
            Value::Null => Value::Object(serde_json::Map::new()),
            claims => claims,
        };
        field(
            "claims",
            self.claims.as_ref().map(|c| {
                c.iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect()
            }),
            &claims,
        );
        field("repo", self.repo.clone().map(Value::from), &get("repo"));
        field(
            "access",
            self.access.map(|a| Value::from(a.as_str())),
            &get("access"),
        );
        field(
            "retry_after",
            self.retry_after.map(Value::from),
            &get("retry_after"),
        );
        field("strip", self.strip.clone().map(Value::from), &get("strip"));
        let shadow = get("shadow");
        match &self.shadow {
            None => {}
            Some(ShadowExpectation::Absent) => {
                field("shadow", Some(Value::Null), &shadow);
            }
            Some(ShadowExpectation::Present { .. }) if shadow.is_null() => {
                mismatches.push(String::from("shadow: expected a shadow outcome, got none"));
            }
            Some(ShadowExpectation::Present {
                allow,
                status,
                reason,
                rule,
            }) => {
                let of_shadow = |key: &str| shadow.get(key).cloned().unwrap_or(Value::Null);
                field("shadow.allow", allow.map(Value::from), &of_shadow("allow"));
                field(
                    "shadow.status",
                    status.map(Value::from),
                    &of_shadow("status"),
                );
                field(
                    "shadow.reason",
                    reason.clone().map(Value::from),
                    &of_shadow("reason"),
                );
                field(
                    "shadow.rule",
                    rule.clone().map(Value::from),
                    &of_shadow("rule"),
                );
            }
        }
        if let Some(expected) = &self.token_request {
            match decision.get("token_request") {
                None => mismatches.push(String::from(
                    "token_request: expected a token request, got a decision",
                )),
                Some(request) => {
                    let headers = expected.headers.as_ref().map(|h| {
                        h.iter()
                            .map(|(k, v)| (k.to_ascii_lowercase(), Value::from(v.as_str())))
                            .collect()
                    });
                    for (key, expected) in [
                        ("url", expected.url.clone().map(Value::from)),
                        ("body", expected.body.clone().map(Value::from)),
                        ("headers", headers),
                    ] {
                        let actual = request.get(key).cloned().unwrap_or(Value::Null);
                        match expected {
                            Some(expected) if expected != actual => mismatches.push(format!(
                                "token_request.{key}: expected {expected}, got {actual}"
                            )),
                            _ => {}
                        }
                    }
                }
            }
        }
        for (key, expected) in [("headers", &self.headers), ("set", &self.set)] {
            let Some(expected) = expected else { continue };
            let lower = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
                m.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect()
            };
            let actual: BTreeMap<String, String> = decision
                .get(key)
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            (
                                k.to_ascii_lowercase(),
                                v.as_str().map(String::from).unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if lower(expected) != actual {
                mismatches.push(format!(
                    "{key}: expected {}, got {}",
                    serde_json::to_string(&lower(expected)).unwrap_or_default(),
                    serde_json::to_string(&actual).unwrap_or_default()
                ));
            }
        }
        mismatches
    }

    pub fn is_empty(&self) -> bool {
        self.allow.is_none()
            && self.status.is_none()
            && self.reason.is_none()
            && self.rule.is_none()
            && self.user.is_none()
            && self.binding.is_none()
            && self.claims.is_none()
            && self.repo.is_none()
            && self.access.is_none()
            && self.retry_after.is_none()
            && self.headers.is_none()
            && self.set.is_none()
            && self.strip.is_none()
            && self.shadow.is_none()
            && self.token_request.is_none()
    }
}

/// Rate-limit state in memory for one case: every case starts from an empty one, and its
/// requests share it.
#[derive(Debug, Default)]
pub struct CaseRates(RefCell<BTreeMap<String, RateState>>);

impl RateStore for CaseRates {
    fn measure_and_replace(
        &self,
        key: &str,
        decide: &mut dyn FnMut(Option<RateState>) -> Option<RateState>,
    ) -> Result<(), RateStoreError> {
        let mut states = self.0.borrow_mut();
        if let Some(next) = decide(states.get(key).copied()) {
            states.insert(String::from(key), next);
        }
        Ok(())
    }
}

/// What one case came to.
#[derive(Debug)]
pub struct CaseResult<'c> {
    pub case: &'c TestCase,
    /// The JSON of the last decision, or why there was none.
    pub decision: Result<Value, String>,
    /// Every way the decision differs from the case's expectation; empty when it passed.
    pub mismatches: Vec<String>,
}

impl CaseResult<'_> {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Runs `cases` in order: each sends its requests ([`TestCase::steps`]) through `decide`,
/// which answers with a decision's JSON (or a token request's, for a sign-in callback
/// whose step carries no exchange), resolving rate limits in the store it is given (the
/// case's own, empty at the start). The last answer is checked.
pub fn run<'c>(
    cases: &'c [TestCase],
    mut decide: impl FnMut(Step<'_>, &dyn RateStore) -> Result<Value, String>,
) -> Vec<CaseResult<'c>> {
    cases
        .iter()
        .map(|case| {
            let rates = CaseRates::default();
            let mut decision = Err(String::from("case never ran"));
            for step in case.steps() {
                decision = decide(step, &rates);
            }
            let mismatches = match &decision {
                Ok(json) => case.expect.check(json),
                Err(e) => alloc::vec![format!("no decision: {e}")],
            };
            CaseResult {
                case,
                decision,
                mismatches,
            }
        })
        .collect()
}

impl Policy {
    /// Runs the policy's own `[[test]]` cases with its engine linked natively, with `keys`
    /// for issuers that fetch theirs and `secrets` for the origin credential.
    pub fn run_tests(&self, keys: &dyn KeyStore, secrets: &dyn SecretStore) -> Vec<CaseResult<'_>> {
        run(&self.tests, |step, rates| {
            let pairs = step.request.header_pairs();
            let facts = step.request.facts(&pairs);
            let engine = &self.engine;
            let json = match engine.decide(&facts, step.now, keys, secrets) {
                crate::Verdict::Exchange(exchange) => match step.exchange {
                    Some(answer) => engine
                        .complete_sign_in(&facts, answer.response(), step.now, keys, secrets)
                        .to_json(),
                    None => exchange.to_json(),
                },
                verdict => verdict.resolve_in(rates).to_json(),
            };
            serde_json::from_str(&json).map_err(|e| format!("{e}"))
        })
    }
}
