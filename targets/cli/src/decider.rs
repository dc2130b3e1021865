//! One interface over the two ways the CLI can decide: the engine linked natively, or the
//! policy module under wasmtime (`--wasm`). Both give the same typed verdict, resolved and
//! printed by the same code.

use std::collections::BTreeMap;
use std::path::Path;

use policy_core::policy::Policy;
use policy_core::{NoTokenCache, OwnedRequest, OwnedTokenResponse, RateStore, UnixTime, Verdict};
use serde_json::Value;
use tollgate_wasmtime::{CompiledModule, PolicyInstance};

use crate::host::{JwksFiles, Secrets};

pub enum Decider<'p> {
    Native {
        policy: &'p Policy,
        keys: JwksFiles,
        secrets: Secrets,
    },
    Wasm(Box<PolicyInstance>),
}

impl<'p> Decider<'p> {
    pub fn native(policy: &'p Policy, keys: JwksFiles, secrets: Secrets) -> Self {
        Decider::Native {
            policy,
            keys,
            secrets,
        }
    }

    /// Loads the module, compiles `source` inside it and hands it keys and secrets.
    pub fn wasm(
        module: &Path,
        source: &str,
        file: &str,
        jwks: &[String],
        secrets: Option<&BTreeMap<String, String>>,
    ) -> Result<Self, String> {
        let module = CompiledModule::from_file(module).map_err(|e| e.to_string())?;
        let mut instance = PolicyInstance::new(&module, source, file).map_err(|e| e.to_string())?;
        let issuers: Vec<String> = instance
            .jwks_urls()
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        for (name, text) in JwksFiles::read(jwks)? {
            let targets = match name {
                Some(name) => vec![name],
                None => issuers.clone(),
            };
            for issuer in targets {
                instance
                    .set_keys(&issuer, Some(&text))
                    .map_err(|e| e.to_string())?;
            }
        }
        match secrets {
            Some(map) => instance.set_secrets(map),
            None => instance.use_placeholder_secrets(),
        }
        .map_err(|e| e.to_string())?;
        Ok(Decider::Wasm(Box::new(instance)))
    }

    /// The decision and its audit record, as JSON with every object's keys sorted; a rate
    /// limit is resolved in `rates`. A sign-in callback completes with `exchange` (the
    /// provider's answer) when given; without it the answer is the token request the
    /// callback makes, and there is no audit record.
    pub fn decide(
        &mut self,
        request: &OwnedRequest,
        now: UnixTime,
        explain: bool,
        exchange: Option<&OwnedTokenResponse>,
        rates: &dyn RateStore,
    ) -> Result<(Value, Value), String> {
        let pairs = request.header_pairs();
        let facts = request.facts(&pairs);
        let verdict = match self {
            Decider::Native {
                policy,
                keys,
                secrets,
            } => {
                if explain {
                    policy
                        .engine
                        .decide_explained(&facts, now, keys, secrets, &NoTokenCache)
                } else {
                    policy.engine.decide(&facts, now, keys, secrets)
                }
            }
            Decider::Wasm(instance) => instance
                .decide(&facts, now, explain)
                .map_err(|e| e.to_string())?,
        };
        let decision = match (verdict, exchange) {
            (Verdict::Exchange(exchange), None) => {
                let request =
                    serde_json::from_str(&exchange.to_json()).map_err(|e| e.to_string())?;
                return Ok((request, Value::Null));
            }
            (Verdict::Exchange(_), Some(answer)) => {
                self.complete_sign_in(&facts, answer, now, explain)?
            }
            (verdict, _) => verdict.resolve_in(rates),
        };
        let audit = serde_json::to_value(decision.audit(&facts, now)).map_err(|e| e.to_string())?;
        let decision = serde_json::to_value(&decision).map_err(|e| e.to_string())?;
        Ok((sorted_keys(decision), sorted_keys(audit)))
    }

    fn complete_sign_in(
        &mut self,
        facts: &policy_core::RequestFacts<'_>,
        answer: &OwnedTokenResponse,
        now: UnixTime,
        explain: bool,
    ) -> Result<policy_core::Decision, String> {
        let response = answer.response();
        Ok(match self {
            Decider::Native {
                policy,
                keys,
                secrets,
            } if explain => policy
                .engine
                .complete_sign_in_explained(facts, response, now, keys, secrets),
            Decider::Native {
                policy,
                keys,
                secrets,
            } => policy
                .engine
                .complete_sign_in(facts, response, now, keys, secrets),
            Decider::Wasm(instance) => instance
                .complete_sign_in(facts, response, now, explain)
                .map_err(|e| e.to_string())?,
        })
    }

    /// Does the policy sign browsers in, so that requests need random bytes?
    pub fn wants_entropy(&self) -> bool {
        match self {
            Decider::Native { policy, .. } => policy.engine.wants_entropy(),
            Decider::Wasm(instance) => instance.wants_entropy(),
        }
    }
}

/// `value` with the keys of every object in sorted order: decisions serialize in field
/// order when a build unifies serde_json's `preserve_order` feature (cedar-policy, a
/// benchmark peer, turns it on), and `eval` prints the same bytes whatever the build.
fn sorted_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted_keys).collect()),
        other => other,
    }
}
