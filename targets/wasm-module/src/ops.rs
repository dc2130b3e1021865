//! The module's operations, safe Rust over byte slices. [`crate::abi`] exports them.

use std::cell::RefCell;
use std::collections::BTreeMap;

use policy_core::policy::Policy;
use policy_core::{
    Engine, KeySet, KeyStore, NoTokenCache, OwnedRequest, PendingRate, RateState, SecretStore,
    UnixTime, Verdict,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// The exported operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Init,
    SetKeys,
    SetSecrets,
    Decide,
    Resolve,
}

#[derive(Default)]
struct Keys(BTreeMap<String, KeySet>);

impl KeyStore for Keys {
    fn key_set(&self, issuer_name: &str) -> Option<&KeySet> {
        self.0.get(issuer_name)
    }
}

#[derive(Default)]
struct Secrets {
    values: BTreeMap<String, String>,
    /// Policy testing: every name resolves to a stand-in (decisions only ever show names).
    placeholder: bool,
}

impl SecretStore for Secrets {
    fn secret(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        match self.values.get(name) {
            Some(value) => Some(std::borrow::Cow::Borrowed(value)),
            None if self.placeholder => Some(std::borrow::Cow::Borrowed("placeholder")),
            None => None,
        }
    }
}

/// A decision waiting for the host's rate-limit state, with what its audit record needs.
struct Waiting {
    pending: PendingRate,
    request: OwnedRequest,
    now: UnixTime,
}

#[derive(Default)]
struct State {
    engine: Option<Engine>,
    keys: Keys,
    secrets: Secrets,
    waiting: Option<Waiting>,
}

// wasm32-unknown-unknown has one thread; thread_local! gives interior mutability with no
// `unsafe` and no locking.
thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InitInput {
    policy: String,
    #[serde(default = "default_file")]
    file: String,
}

fn default_file() -> String {
    String::from("policy.toml")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetKeysInput {
    issuer: String,
    /// `null` forgets the issuer's keys (the host found them stale).
    jwks: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetSecretsInput {
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    placeholder: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideInput {
    request: OwnedRequest,
    now_nanos: u64,
    #[serde(default)]
    explain: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveInput {
    state: Option<u64>,
}

fn error(message: impl ToString) -> Value {
    json!({ "error": message.to_string() })
}

/// Runs one operation on a JSON input, returning the JSON output bytes.
pub fn call(op: Op, input: &[u8]) -> Vec<u8> {
    let output = STATE.with(|state| {
        let mut state = state.borrow_mut();
        match op {
            Op::Init => init(&mut state, input),
            Op::SetKeys => set_keys(&mut state, input),
            Op::SetSecrets => set_secrets(&mut state, input),
            Op::Decide => decide(&mut state, input),
            Op::Resolve => resolve(&mut state, input),
        }
    });
    serde_json::to_vec(&output).unwrap_or_else(|_| b"{\"error\":\"output\"}".to_vec())
}

fn init(state: &mut State, input: &[u8]) -> Value {
    let input: InitInput = match serde_json::from_slice(input) {
        Ok(i) => i,
        Err(e) => return error(e),
    };
    match Policy::parse(&input.policy, &input.file) {
        Ok(policy) => {
            let urls: Vec<(String, String)> = policy
                .engine
                .jwks_urls()
                .map(|(n, u)| (n.to_string(), u.to_string()))
                .collect();
            let tests = policy.tests.len();
            let user_header = policy.engine.user_header().to_string();
            *state = State {
                engine: Some(policy.engine),
                ..State::default()
            };
            json!({ "ok": { "jwks_urls": urls, "tests": tests, "user_header": user_header } })
        }
        Err(e) => error(e),
    }
}

fn set_keys(state: &mut State, input: &[u8]) -> Value {
    let input: SetKeysInput = match serde_json::from_slice(input) {
        Ok(i) => i,
        Err(e) => return error(e),
    };
    let Some(jwks) = input.jwks else {
        state.keys.0.remove(&input.issuer);
        return json!({ "ok": { "keys": 0 } });
    };
    match KeySet::from_fetched_json(&jwks) {
        Ok(set) => {
            let count = set.len();
            state.keys.0.insert(input.issuer, set);
            json!({ "ok": { "keys": count } })
        }
        Err(e) => error(e),
    }
}

fn set_secrets(state: &mut State, input: &[u8]) -> Value {
    match serde_json::from_slice::<SetSecretsInput>(input) {
        Ok(input) => {
            let count = input.secrets.len();
            state.secrets = Secrets {
                values: input.secrets,
                placeholder: input.placeholder,
            };
            json!({ "ok": { "secrets": count } })
        }
        Err(e) => error(e),
    }
}

fn finished(decision: &policy_core::Decision, request: &OwnedRequest, now: UnixTime) -> Value {
    let pairs = request.header_pairs();
    let audit =
        serde_json::to_value(decision.audit(&request.facts(&pairs), now)).unwrap_or(Value::Null);
    // What a proxying host acts on: the real origin header values (the decision shows
    // secrets by name only) or the denial response's bytes.
    let action = if decision.allow {
        let set: Vec<(&str, &str)> = decision.set.iter().map(|h| (h.name(), h.value())).collect();
        json!({ "forward": { "strip": decision.strip, "set": set } })
    } else {
        let (content_type, body) = decision.denial_body();
        json!({ "deny": { "content_type": content_type, "body": body } })
    };
    json!({ "decision": decision, "audit": audit, "action": action })
}

fn decide(state: &mut State, input: &[u8]) -> Value {
    state.waiting = None;
    let input: DecideInput = match serde_json::from_slice(input) {
        Ok(i) => i,
        Err(e) => return error(e),
    };
    let Some(engine) = &state.engine else {
        return error("no policy loaded: call tollgate_init first");
    };
    let now = UnixTime::from_nanos(input.now_nanos);
    let pairs = input.request.header_pairs();
    let facts = input.request.facts(&pairs);
    let verdict = if input.explain {
        engine.decide_explained(&facts, now, &state.keys, &state.secrets, &NoTokenCache)
    } else {
        engine.decide(&facts, now, &state.keys, &state.secrets)
    };
    match verdict {
        Verdict::Decided(decision) => finished(&decision, &input.request, now),
        Verdict::Pending(pending) => {
            let key = pending.key().to_string();
            let (requests, period_seconds) = pending.gcra().quota();
            let limit = pending.limit_name().to_string();
            state.waiting = Some(Waiting {
                pending,
                request: input.request,
                now,
            });
            json!({ "pending": { "key": key, "limit": limit, "requests": requests, "period_seconds": period_seconds } })
        }
    }
}

fn resolve(state: &mut State, input: &[u8]) -> Value {
    let input: ResolveInput = match serde_json::from_slice(input) {
        Ok(i) => i,
        Err(e) => return error(e),
    };
    let Some(waiting) = &state.waiting else {
        return error("nothing to resolve: the last decide was final");
    };
    let (decision, update) = waiting.pending.resolve(input.state.map(RateState));
    let mut out = finished(&decision, &waiting.request, waiting.now);
    if let Some(obj) = out.as_object_mut() {
        obj.insert(
            "update".into(),
            serde_json::to_value(update).unwrap_or(Value::Null),
        );
    }
    out
}
