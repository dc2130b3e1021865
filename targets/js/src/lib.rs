//! Tollgate's engine for JavaScript and TypeScript: the same `policy-core` every other host
//! runs, compiled with wasm-bindgen and packaged by wasm-pack (`scripts/js-package`). It
//! only translates: requests, options and decisions cross as the JSON every other host
//! reads and writes (`tollgate eval`'s schema), so a decision here is byte for byte the
//! one `tollgate eval` prints. Its TypeScript types (`src/types.d.ts`, in the package's
//! `.d.ts`) are generated from the Rust types those JSON values come from; see `types.rs`.
//!
//! ```js
//! import { Policy } from "@tollgate/policy";
//! const policy = Policy.parse(toml, "policy.toml");   // throws {file, line, column, message}
//! const verdict = policy.decide({ path: "/acme/app.git/info/refs" }, { now: 1767225600 });
//! const decision = verdict.decision ?? verdict.resolve(priorStates).decision;
//! ```

use std::collections::BTreeMap;

use policy_core::policy::Policy as CompiledPolicy;
use policy_core::{
    KeySet, KeyStore, OwnedRequest, OwnedTokenResponse, PlaceholderSecrets, RateState, SecretStore,
    UnixTime,
};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

#[cfg(test)]
mod types;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = include_str!("types.d.ts");

/// A compiled policy and its `[[test]]` cases.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Policy {
    policy: CompiledPolicy,
}

/// `decide`'s and `runTests`'s options, every one optional.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(ts_rs::TS), ts(rename = "Options"))]
struct Options {
    /// Unix seconds (default: the JavaScript clock).
    #[cfg_attr(test, ts(optional = nullable))]
    now: Option<f64>,
    /// JWKS documents (the JSON text) by issuer name, for issuers with a `jwks_url`.
    #[serde(default)]
    #[cfg_attr(test, ts(as = "Option<BTreeMap<String, String>>", optional))]
    keys: BTreeMap<String, String>,
    /// Origin secrets by name; without them, placeholders (decisions show names only).
    #[cfg_attr(test, ts(optional = nullable))]
    secrets: Option<BTreeMap<String, String>>,
    /// Record the steps behind the decision in its `explain`.
    #[serde(default)]
    #[cfg_attr(test, ts(as = "Option<bool>", optional))]
    explain: bool,
}

impl Options {
    /// The options a method was given; none (or null) is every default.
    fn read(value: Option<JsValue>) -> Result<Options, JsValue> {
        match value {
            Some(value) if !value.is_null() => from_js(&value, "options"),
            _ => Ok(Options::default()),
        }
    }

    /// `keys`, each JWKS document parsed; a bad one is refused, naming its issuer.
    fn key_sets(&self) -> Result<Keys, JsValue> {
        self.keys
            .iter()
            .map(|(issuer, jwks)| {
                KeySet::from_fetched_json(jwks)
                    .map(|set| (issuer.clone(), set))
                    .map_err(|e| JsValue::from_str(&format!("keys.{issuer}: {e}")))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map(Keys)
    }
}

/// What `decide` and `completeSignIn` read alike from their arguments.
struct Call {
    request: OwnedRequest,
    now: UnixTime,
    keys: Keys,
    secrets: Secrets,
    explain: bool,
}

impl Call {
    fn read(
        policy: &CompiledPolicy,
        request: &JsValue,
        options: Option<JsValue>,
    ) -> Result<Call, JsValue> {
        let mut request: OwnedRequest = from_js(request, "request")?;
        if request.entropy.is_none() && policy.engine.wants_entropy() {
            request.entropy = tollgate_host_kit::js_entropy();
        }
        let options = Options::read(options)?;
        Ok(Call {
            request,
            now: unix_time(options.now.unwrap_or_else(|| js_sys::Date::now() / 1000.0)),
            keys: options.key_sets()?,
            explain: options.explain,
            secrets: Secrets(options.secrets),
        })
    }
}

/// Parsed JWKS documents by issuer name.
struct Keys(BTreeMap<String, KeySet>);

impl KeyStore for Keys {
    fn key_set(&self, issuer_name: &str) -> Option<&KeySet> {
        self.0.get(issuer_name)
    }
}

struct Secrets(Option<BTreeMap<String, String>>);

impl SecretStore for Secrets {
    fn secret(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        match &self.0 {
            Some(map) => map
                .get(name)
                .map(|v| std::borrow::Cow::Borrowed(v.as_str())),
            None => PlaceholderSecrets.secret(name),
        }
    }
}

/// What `Policy.parse` throws for a bad policy. `line` and `column` (1-based) are null when
/// the error has no position.
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(rename = "PolicyError"))]
struct PositionedError<'e> {
    file: &'e str,
    line: Option<usize>,
    column: Option<usize>,
    message: &'e str,
}

/// A value as the JavaScript object its JSON describes.
fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsValue> {
    let json = serde_json::to_string(value).map_err(|e| JsValue::from_str(&e.to_string()))?;
    js_sys::JSON::parse(&json)
}

/// A JavaScript value read through its JSON form, refused with a message naming `what`.
fn from_js<T: for<'de> Deserialize<'de>>(value: &JsValue, what: &str) -> Result<T, JsValue> {
    let json: String = js_sys::JSON::stringify(value)
        .map_err(|_| JsValue::from_str(&format!("{what}: not JSON-serialisable")))?
        .into();
    serde_json::from_str(&json).map_err(|e| JsValue::from_str(&format!("{what}: {e}")))
}

#[wasm_bindgen]
impl Policy {
    /// Compiles `source`; `file` labels error positions. Throws a `PolicyError`
    /// (`{file, line, column, message}`) for a bad policy.
    pub fn parse(source: &str, file: &str) -> Result<Policy, JsValue> {
        CompiledPolicy::parse(source, file)
            .map(|policy| Policy { policy })
            .map_err(|e| {
                let position = e.position;
                to_js(&PositionedError {
                    file: &e.file,
                    line: position.map(|p| p.line),
                    column: position.map(|p| p.column),
                    message: &e.message,
                })
                .unwrap_or_else(|error| error)
            })
    }

    /// `sha256:` and 16 hex digits: what every decision's `policy_revision` says.
    #[wasm_bindgen(getter)]
    pub fn revision(&self) -> String {
        self.policy.engine.revision().to_owned()
    }

    /// `[[issuer name, JWKS URL], ...]`: the documents `decide` wants in `keys`.
    #[wasm_bindgen(js_name = jwksUrls, unchecked_return_type = "[string, string][]")]
    pub fn jwks_urls(&self) -> Result<JsValue, JsValue> {
        let urls: Vec<(&str, &str)> = self.policy.engine.jwks_urls().collect();
        to_js(&urls)
    }

    /// Decides `request` (`{method, path, query, headers, body, client_ip, entropy}`) under
    /// `options` (`{now, keys, secrets, explain}`). A policy that signs browsers in draws
    /// a request's randomness from `crypto.getRandomValues` when it names none.
    pub fn decide(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Request")] request: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "Options")] options: Option<JsValue>,
    ) -> Result<Verdict, JsValue> {
        let call = Call::read(&self.policy, &request, options)?;
        let pairs = call.request.header_pairs();
        let facts = call.request.facts(&pairs);
        let engine = &self.policy.engine;
        let (now, keys, secrets) = (call.now, &call.keys, &call.secrets);
        let verdict = if call.explain {
            engine.decide_explained(&facts, now, keys, secrets, &policy_core::NoTokenCache)
        } else {
            engine.decide(&facts, now, keys, secrets)
        };
        Ok(Verdict { verdict })
    }

    /// Completes a browser sign-in (`[sso]`): `request` is the provider's callback whose
    /// verdict had a `tokenRequest`, `response` what the token endpoint answered it
    /// (`{status, body}`, or `{failed: true}` when no answer came). The decision is a 302
    /// back to the page with the session cookie, or the refusal; one that `wants fresh
    /// keys` may be completed again, with the same response, once the keys are given.
    #[wasm_bindgen(js_name = completeSignIn, unchecked_return_type = "Decision")]
    pub fn complete_sign_in(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Request")] request: JsValue,
        #[wasm_bindgen(unchecked_param_type = "TokenResponse")] response: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "Options")] options: Option<JsValue>,
    ) -> Result<JsValue, JsValue> {
        let response: OwnedTokenResponse = from_js(&response, "response")?;
        let call = Call::read(&self.policy, &request, options)?;
        let pairs = call.request.header_pairs();
        let facts = call.request.facts(&pairs);
        let engine = &self.policy.engine;
        let (now, keys, secrets) = (call.now, &call.keys, &call.secrets);
        let decision = if call.explain {
            engine.complete_sign_in_explained(&facts, response.response(), now, keys, secrets)
        } else {
            engine.complete_sign_in(&facts, response.response(), now, keys, secrets)
        };
        to_js(&decision)
    }

    /// Runs the policy's own `[[test]]` cases, as `tollgate test` does:
    /// `[{name, line, passed, mismatches}]`. `options.keys` and `options.secrets` as for
    /// `decide`.
    #[wasm_bindgen(js_name = runTests, unchecked_return_type = "TestOutcome[]")]
    pub fn run_tests(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "Options")] options: Option<JsValue>,
    ) -> Result<JsValue, JsValue> {
        let options = Options::read(options)?;
        let keys = options.key_sets()?;
        let results = self.policy.run_tests(&keys, &Secrets(options.secrets));
        let outcomes: Vec<TestOutcome<'_>> = results
            .iter()
            .map(|r| TestOutcome {
                name: &r.case.name,
                line: r.case.position.line,
                passed: r.passed(),
                mismatches: &r.mismatches,
            })
            .collect();
        to_js(&outcomes)
    }

    /// The number of `[[test]]` cases.
    #[wasm_bindgen(getter, js_name = testCount)]
    pub fn test_count(&self) -> usize {
        self.policy.tests.len()
    }
}

/// One `[[test]]` case's result.
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
struct TestOutcome<'c> {
    name: &'c str,
    /// The case's line in the policy.
    line: usize,
    passed: bool,
    /// What differed from the case's `expect`, one sentence each.
    mismatches: &'c [String],
}

/// Unix seconds (fractions kept to the nanosecond where a double holds them).
fn unix_time(secs: f64) -> UnixTime {
    let secs = secs.max(0.0);
    let whole = secs.trunc();
    let nanos = ((secs - whole) * 1e9).round();
    // `as` saturates for out-of-range doubles, which is what a time far off should do.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let (whole, nanos) = (whole as u64, nanos as u64);
    UnixTime::from_nanos(whole.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// What `decide` answers: a final decision, or an allow that must still pass rate limits
/// whose state the caller keeps.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Verdict {
    verdict: policy_core::Verdict,
}

/// The request a sign-in callback needs sent to the provider's token endpoint, as
/// `tollgate eval` shows it (the client secret redacted; `tokenRequestHeaders()` has the
/// values to send).
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(rename = "TokenRequest"))]
struct TokenRequest<'t> {
    /// The token endpoint; POST to it.
    url: &'t str,
    #[cfg_attr(test, ts(type = "Record<string, string>"))]
    headers: BTreeMap<&'t str, &'t str>,
    /// `application/x-www-form-urlencoded`.
    body: &'t str,
}

/// A rate-limit state to store.
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(rename = "RateUpdate"))]
struct Update<'u> {
    key: &'u str,
    /// The GCRA theoretical arrival time in Unix nanoseconds, as a decimal string (a
    /// JavaScript number cannot hold every u64).
    state: String,
    /// When the state stops mattering, in Unix seconds.
    #[cfg_attr(test, ts(type = "number"))]
    expires: u64,
}

/// A rate limit a request must still pass: load `key`'s stored state.
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(rename = "RateCheck"))]
struct Check<'c> {
    key: &'c str,
    /// The `[[rate_limit]]`'s name.
    limit: &'c str,
    /// A shadow limit (`mode = "shadow"`): it reports, never refuses.
    shadow: bool,
}

/// What `resolve` answers: the final decision and the states to store.
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
struct Resolved<'d> {
    decision: &'d policy_core::Decision,
    updates: Vec<Update<'d>>,
}

#[wasm_bindgen]
impl Verdict {
    /// The decision, when no rate limit is left to check and no sign-in to complete;
    /// `undefined` otherwise.
    #[wasm_bindgen(getter, unchecked_return_type = "Decision | undefined")]
    pub fn decision(&self) -> Result<JsValue, JsValue> {
        match &self.verdict {
            policy_core::Verdict::Decided(decision) => to_js(decision),
            _ => Ok(JsValue::UNDEFINED),
        }
    }

    /// For a browser's sign-in callback (`[sso]`): the request to POST to the provider's
    /// token endpoint, whose answer goes to `Policy.completeSignIn`; `undefined` otherwise.
    #[wasm_bindgen(getter, js_name = tokenRequest, unchecked_return_type = "TokenRequest | undefined")]
    pub fn token_request(&self) -> Result<JsValue, JsValue> {
        match &self.verdict {
            policy_core::Verdict::Exchange(request) => to_js(&TokenRequest {
                url: &request.url,
                headers: request
                    .headers
                    .iter()
                    .map(|h| (h.name(), h.display_value()))
                    .collect(),
                body: &request.body,
            }),
            _ => Ok(JsValue::UNDEFINED),
        }
    }

    /// The token request's headers, `[name, value]` pairs with their real values (the
    /// client secret included: never log them). Empty when there is no token request.
    #[wasm_bindgen(js_name = tokenRequestHeaders, unchecked_return_type = "[string, string][]")]
    pub fn token_request_headers(&self) -> Result<JsValue, JsValue> {
        let headers: Vec<(&str, &str)> = match &self.verdict {
            policy_core::Verdict::Exchange(request) => request
                .headers
                .iter()
                .map(|h| (h.name(), h.value()))
                .collect(),
            _ => Vec::new(),
        };
        to_js(&headers)
    }

    /// The headers to set on the origin request, `[name, value]` pairs with their real
    /// values (the origin credential included: never log them; a decision's `set` shows
    /// them redacted). Empty for a denial. For a verdict still pending, forward only if
    /// `resolve` then allows.
    #[wasm_bindgen(js_name = originHeaders, unchecked_return_type = "[string, string][]")]
    pub fn origin_headers(&self) -> Result<JsValue, JsValue> {
        let admitted;
        let decision = match &self.verdict {
            policy_core::Verdict::Decided(decision) => decision,
            policy_core::Verdict::Pending(pending) => {
                admitted = pending.admit();
                &admitted
            }
            policy_core::Verdict::Exchange(_) => return to_js(&Vec::<(&str, &str)>::new()),
        };
        let headers: Vec<(&str, &str)> = if decision.allow {
            decision.set.iter().map(|h| (h.name(), h.value())).collect()
        } else {
            Vec::new()
        };
        to_js(&headers)
    }

    /// The rate limits still to pass, `[{key, limit, shadow}]` (empty when decided): load
    /// each key's state and call `resolve`.
    #[wasm_bindgen(getter, unchecked_return_type = "RateCheck[]")]
    pub fn checks(&self) -> Result<JsValue, JsValue> {
        let checks: Vec<Check<'_>> = match &self.verdict {
            policy_core::Verdict::Decided(_) | policy_core::Verdict::Exchange(_) => Vec::new(),
            policy_core::Verdict::Pending(pending) => pending
                .checks()
                .iter()
                .map(|c| Check {
                    key: c.key(),
                    limit: c.limit_name(),
                    shadow: c.is_shadow(),
                })
                .collect(),
        };
        to_js(&checks)
    }

    /// The final decision given each check's stored state (`priorStates[i]` for
    /// `checks[i]`: the decimal string an earlier `resolve` returned, or null), and the
    /// states to store: `{decision, updates: [{key, state, expires}]}`.
    #[wasm_bindgen(unchecked_return_type = "Resolved")]
    pub fn resolve(
        &self,
        #[wasm_bindgen(js_name = priorStates, unchecked_optional_param_type = "(string | null)[]")]
        prior_states: Option<JsValue>,
    ) -> Result<JsValue, JsValue> {
        let pending = match &self.verdict {
            policy_core::Verdict::Decided(decision) => {
                return to_js(&Resolved {
                    decision,
                    updates: Vec::new(),
                })
            }
            policy_core::Verdict::Pending(pending) => pending,
            policy_core::Verdict::Exchange(_) => {
                return Err(JsValue::from_str(
                    "a sign-in callback: send `tokenRequest` and call `Policy.completeSignIn`",
                ))
            }
        };
        let priors: Vec<Option<String>> = match prior_states {
            Some(states) => from_js(&states, "priorStates")?,
            None => Vec::new(),
        };
        let priors = priors
            .iter()
            .map(|state| {
                state
                    .as_deref()
                    .map(|s| {
                        s.parse::<u64>().map(RateState).map_err(|_| {
                            JsValue::from_str(&format!("priorStates: `{s}` is not a state"))
                        })
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (decision, updates) = pending.resolve(&priors);
        to_js(&Resolved {
            decision: &decision,
            updates: updates
                .iter()
                .map(|u| Update {
                    key: &u.key,
                    state: u.state.0.to_string(),
                    expires: u.expires,
                })
                .collect(),
        })
    }
}
