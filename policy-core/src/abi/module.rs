//! The module's side of the interface: what it keeps between calls and the operations the
//! host calls, over encoded bytes. `targets/wasm-module` exports these from WASM; benches
//! link them natively to measure the interface without wasmtime.

use alloc::{
    borrow::{Cow, ToOwned},
    collections::BTreeMap,
    string::{String, ToString},
    vec::Vec,
};
use core::{cell::RefCell, fmt};

use super::{
    decode, encode_into, Answer, CompleteSignIn, Decide, Init, Loaded, SetKeys, SetSecrets,
    WireDecision, WireVerdict,
};
use crate::{
    Decision, Engine, KeySet, KeyStore, SecretStore, TokenCache, UnixTime, Verdict, PLACEHOLDER,
};

/// The operations a host calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Init,
    SetKeys,
    SetSecrets,
    Decide,
    CompleteSignIn,
}

#[derive(Debug, Default)]
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
    fn secret(&self, name: &str) -> Option<Cow<'_, str>> {
        match self.values.get(name) {
            Some(value) => Some(Cow::Borrowed(value)),
            None if self.placeholder => Some(Cow::Borrowed(PLACEHOLDER)),
            None => None,
        }
    }
}

/// Verified tokens a module remembers (the host gives each instance its own).
const TOKEN_CACHE_ENTRIES: usize = 4096;
const TOKEN_CACHE_MAX_AGE_SECS: u64 = 60;

/// One module's state between calls: the compiled policy, the key sets, the origin secrets
/// and the tokens it verified.
pub struct Module {
    engine: Option<Engine>,
    keys: Keys,
    secrets: Secrets,
    tokens: RefCell<TokenCache>,
}

impl Default for Module {
    fn default() -> Self {
        Module {
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

/// Names and counts only: the secrets' values are never printed.
impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("policy_loaded", &self.engine.is_some())
            .field("issuers_with_keys", &self.keys.0.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets.values.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Module {
    /// Runs one operation on an encoded input, encoding its answer into `output` (cleared
    /// first).
    pub fn call(&mut self, op: Op, input: &[u8], output: &mut Vec<u8>) {
        match op {
            Op::Init => encode_into(&self.init(input), output),
            Op::SetKeys => encode_into(&self.set_keys(input), output),
            Op::SetSecrets => encode_into(&self.set_secrets(input), output),
            // The answer is encoded borrowed from the verdict; `Err(&String)` encodes as
            // `Err(String)` does.
            Op::Decide => encode_into(&self.decide(input).as_ref().map(WireVerdict::from), output),
            Op::CompleteSignIn => encode_into(
                &self
                    .complete_sign_in(input)
                    .as_ref()
                    .map(WireDecision::from),
                output,
            ),
        }
    }

    fn init(&mut self, input: &[u8]) -> Answer<Loaded> {
        let input: Init<'_> = decode(input).map_err(|e| e.0)?;
        let engine = Engine::from_toml(input.policy, input.file).map_err(|e| e.to_string())?;
        let loaded = Loaded {
            jwks_urls: engine
                .jwks_urls()
                .map(|(n, u)| (n.to_owned(), u.to_owned()))
                .collect(),
            user_header: engine.user_header().to_owned(),
            wants_entropy: engine.wants_entropy(),
        };
        *self = Module {
            engine: Some(engine),
            ..Module::default()
        };
        Ok(loaded)
    }

    fn set_keys(&mut self, input: &[u8]) -> Answer<usize> {
        let input: SetKeys<'_> = decode(input).map_err(|e| e.0)?;
        // Tokens verified with the old keys must be verified again.
        self.tokens.borrow_mut().clear();
        let Some(jwks) = input.jwks else {
            self.keys.0.remove(input.issuer);
            return Ok(0);
        };
        let set = KeySet::from_fetched_json(jwks).map_err(|e| e.to_string())?;
        let count = set.len();
        self.keys.0.insert(input.issuer.to_owned(), set);
        Ok(count)
    }

    fn set_secrets(&mut self, input: &[u8]) -> Answer<usize> {
        let input: SetSecrets<'_> = decode(input).map_err(|e| e.0)?;
        self.secrets = Secrets {
            values: input
                .secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            placeholder: input.placeholder,
        };
        Ok(self.secrets.values.len())
    }

    fn engine(&self) -> Answer<&Engine> {
        self.engine
            .as_ref()
            .ok_or_else(|| "no policy loaded: call tollgate_init first".to_owned())
    }

    fn complete_sign_in(&self, input: &[u8]) -> Answer<Decision> {
        let input: CompleteSignIn<'_> = decode(input).map_err(|e| e.0)?;
        let engine = self.engine()?;
        let now = UnixTime::from_nanos(input.now_nanos);
        let facts = input.request.facts();
        let response = input.response.response();
        let decision = if input.explain {
            engine.complete_sign_in_explained(&facts, response, now, &self.keys, &self.secrets)
        } else {
            engine.complete_sign_in(&facts, response, now, &self.keys, &self.secrets)
        };
        Ok(decision)
    }

    fn decide(&self, input: &[u8]) -> Answer<Verdict> {
        let input: Decide<'_> = decode(input).map_err(|e| e.0)?;
        let engine = self.engine()?;
        let now = UnixTime::from_nanos(input.now_nanos);
        let facts = input.request.facts();
        let verdict = if input.explain {
            engine.decide_explained(&facts, now, &self.keys, &self.secrets, &self.tokens)
        } else {
            engine.decide_cached(&facts, now, &self.keys, &self.secrets, &self.tokens)
        };
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::WireRequest;
    use crate::RequestFacts;

    fn answer<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Answer<T> {
        decode::<Answer<T>>(bytes).unwrap()
    }

    fn decide_input(path: &str) -> Vec<u8> {
        crate::abi::encode(&Decide {
            request: WireRequest::from_facts(&RequestFacts::get(path)),
            now_nanos: 1_800_000_000_000_000_000,
            explain: false,
        })
    }

    #[test]
    fn a_module_without_a_policy_or_with_a_malformed_input_answers_an_error() {
        let mut module = Module::default();
        let mut output = Vec::new();
        module.call(
            Op::Decide,
            &decide_input("/acme/app.git/info/refs"),
            &mut output,
        );
        let refused = answer::<WireVerdict>(&output).unwrap_err();
        assert!(refused.contains("no policy loaded"), "{refused}");

        module.call(Op::Decide, &[0xff, 0xff], &mut output);
        assert!(answer::<WireVerdict>(&output).is_err());
    }

    #[test]
    fn init_answers_the_positioned_policy_error_and_then_decides_with_a_good_policy() {
        let mut module = Module::default();
        let mut output = Vec::new();
        let bad = crate::abi::encode(&Init {
            policy: "[[grant]]\nwho = 3\n",
            file: "bad.toml",
        });
        module.call(Op::Init, &bad, &mut output);
        let error = answer::<Loaded>(&output).unwrap_err();
        assert!(error.starts_with("bad.toml:2:"), "{error}");

        let good = crate::abi::encode(&Init {
            policy: "[[grant]]\nwho = \"*\"\nrepos = \"acme/*\"\naccess = \"read\"\n",
            file: "good.toml",
        });
        module.call(Op::Init, &good, &mut output);
        assert!(answer::<Loaded>(&output).is_ok());
        module.call(
            Op::Decide,
            &decide_input("/acme/app.git/info/refs"),
            &mut output,
        );
        let verdict: Verdict = answer::<WireVerdict>(&output).unwrap().try_into().unwrap();
        let decision = verdict.resolve_with(&mut |_, _| None);
        assert!(decision.allow, "{decision:?}");
        assert_eq!(
            decision.repo.map(|r| r.to_string()).as_deref(),
            Some("acme/app")
        );
    }
}
