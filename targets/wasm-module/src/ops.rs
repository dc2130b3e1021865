//! The module's operations, safe Rust over byte slices; [`crate::exports`] exports them.
//! Inputs and outputs are the typed, postcard-encoded values of `policy_core::abi`.

use std::cell::RefCell;
use std::collections::BTreeMap;

use policy_core::abi::{
    self, Answer, CompleteSignIn, Decide, Init, Loaded, SetKeys, SetSecrets, WireDecision,
    WireVerdict,
};
use policy_core::{Decision, Engine, KeySet, KeyStore, SecretStore, TokenCache, UnixTime, Verdict};

/// The exported operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Init,
    SetKeys,
    SetSecrets,
    Decide,
    CompleteSignIn,
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
            None if self.placeholder => Some(std::borrow::Cow::Borrowed(policy_core::PLACEHOLDER)),
            None => None,
        }
    }
}

/// Verified tokens this instance remembers (the host gives each instance its own).
const TOKEN_CACHE_ENTRIES: usize = 4096;
const TOKEN_CACHE_MAX_AGE_SECS: u64 = 60;

struct State {
    engine: Option<Engine>,
    keys: Keys,
    secrets: Secrets,
    tokens: RefCell<TokenCache>,
}

impl Default for State {
    fn default() -> Self {
        State {
            engine: None,
            keys: Keys::default(),
            secrets: Secrets::default(),
            tokens: RefCell::new(TokenCache::new(
                TOKEN_CACHE_ENTRIES,
                TOKEN_CACHE_MAX_AGE_SECS,
            )),
        }
    }
}

// wasm32-unknown-unknown has one thread; thread_local! gives interior mutability with no
// `unsafe` and no locking.
thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Runs one operation on an encoded input, encoding its answer into `output` (cleared
/// first).
pub fn call(op: Op, input: &[u8], output: &mut Vec<u8>) {
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        match op {
            Op::Init => abi::encode_into(&init(&mut state, input), output),
            Op::SetKeys => abi::encode_into(&set_keys(&mut state, input), output),
            Op::SetSecrets => abi::encode_into(&set_secrets(&mut state, input), output),
            // The answer is encoded borrowed from the verdict; `Err(&String)` encodes as
            // `Err(String)` does.
            Op::Decide => abi::encode_into(
                &decide(&state, input).as_ref().map(WireVerdict::from),
                output,
            ),
            Op::CompleteSignIn => abi::encode_into(
                &complete_sign_in(&state, input)
                    .as_ref()
                    .map(WireDecision::from),
                output,
            ),
        }
    })
}

fn init(state: &mut State, input: &[u8]) -> Answer<Loaded> {
    let input: Init<'_> = abi::decode(input).map_err(|e| e.0)?;
    let engine = Engine::from_toml(input.policy, input.file).map_err(|e| e.to_string())?;
    let loaded = Loaded {
        jwks_urls: engine
            .jwks_urls()
            .map(|(n, u)| (n.to_owned(), u.to_owned()))
            .collect(),
        user_header: engine.user_header().to_owned(),
        wants_entropy: engine.wants_entropy(),
    };
    *state = State {
        engine: Some(engine),
        ..State::default()
    };
    Ok(loaded)
}

fn set_keys(state: &mut State, input: &[u8]) -> Answer<usize> {
    let input: SetKeys<'_> = abi::decode(input).map_err(|e| e.0)?;
    // Tokens verified with the old keys must be verified again.
    state.tokens.borrow_mut().clear();
    let Some(jwks) = input.jwks else {
        state.keys.0.remove(input.issuer);
        return Ok(0);
    };
    let set = KeySet::from_fetched_json(jwks).map_err(|e| e.to_string())?;
    let count = set.len();
    state.keys.0.insert(input.issuer.to_owned(), set);
    Ok(count)
}

fn set_secrets(state: &mut State, input: &[u8]) -> Answer<usize> {
    let input: SetSecrets<'_> = abi::decode(input).map_err(|e| e.0)?;
    state.secrets = Secrets {
        values: input
            .secrets
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        placeholder: input.placeholder,
    };
    Ok(state.secrets.values.len())
}

fn engine(state: &State) -> Answer<&Engine> {
    state
        .engine
        .as_ref()
        .ok_or_else(|| "no policy loaded: call tollgate_init first".to_owned())
}

fn complete_sign_in(state: &State, input: &[u8]) -> Answer<Decision> {
    let input: CompleteSignIn<'_> = abi::decode(input).map_err(|e| e.0)?;
    let engine = engine(state)?;
    let now = UnixTime::from_nanos(input.now_nanos);
    let facts = input.request.facts();
    let response = input.response.response();
    let decision = if input.explain {
        engine.complete_sign_in_explained(&facts, response, now, &state.keys, &state.secrets)
    } else {
        engine.complete_sign_in(&facts, response, now, &state.keys, &state.secrets)
    };
    Ok(decision)
}

fn decide(state: &State, input: &[u8]) -> Answer<Verdict> {
    let input: Decide<'_> = abi::decode(input).map_err(|e| e.0)?;
    let engine = engine(state)?;
    let now = UnixTime::from_nanos(input.now_nanos);
    let facts = input.request.facts();
    let verdict = if input.explain {
        engine.decide_explained(&facts, now, &state.keys, &state.secrets, &state.tokens)
    } else {
        engine.decide_cached(&facts, now, &state.keys, &state.secrets, &state.tokens)
    };
    Ok(verdict)
}
