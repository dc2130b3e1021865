//! Who decides, and the steps around every decision that all hosts share.
//!
//! A [`Decider`] is the engine linked natively ([`NativeDecider`]) or the policy module
//! under wasmtime (`tollgate_wasmtime::ModulePool`); both give the same typed
//! [`Verdict`]. A [`Gate`] pairs one with the [`KeyRing`], so every host fetches due keys,
//! retries a key miss once, refuses a request no body could pass before reading its body,
//! and turns a failed decider into a refusal, in the same way.

use std::future::Future;

use policy_core::{Decision, Engine, RequestFacts, SecretStore, UnixTime, Verdict};

use crate::keys::{FetchReport, Fetched, KeyRing};
use crate::tokens::SharedTokenCache;

/// Why a decider could not decide (the policy module trapped, ran out of time, answered
/// malformed bytes). The request is refused with [`Decision::policy_module_failed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecideFailure(pub String);

/// Turns a request into a verdict with the keys usable in `keys` at `now`.
pub trait Decider {
    fn decide(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        keys: &KeyRing,
        explain: bool,
    ) -> Result<Verdict, DecideFailure>;
}

impl<D: Decider + ?Sized> Decider for Box<D> {
    fn decide(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        keys: &KeyRing,
        explain: bool,
    ) -> Result<Verdict, DecideFailure> {
        (**self).decide(facts, now, keys, explain)
    }
}

/// The engine linked into the host, with the host's origin secrets and, optionally, a
/// verified-token cache.
#[derive(Debug)]
pub struct NativeDecider<S> {
    engine: Engine,
    secrets: S,
    tokens: Option<SharedTokenCache>,
}

impl<S: SecretStore> NativeDecider<S> {
    pub fn new(engine: Engine, secrets: S, tokens: Option<SharedTokenCache>) -> Self {
        NativeDecider {
            engine,
            secrets,
            tokens,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The origin secrets, which also key `[[webhook]]` signatures.
    pub fn secrets(&self) -> &S {
        &self.secrets
    }
}

impl<S: SecretStore> Decider for NativeDecider<S> {
    fn decide(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        keys: &KeyRing,
        explain: bool,
    ) -> Result<Verdict, DecideFailure> {
        let (usable, generation) = keys.keys_and_generation(now);
        let engine = &self.engine;
        Ok(match (&self.tokens, explain) {
            (Some(tokens), false) => {
                engine.decide_cached(facts, now, &usable, &self.secrets, &tokens.view(generation))
            }
            (Some(tokens), true) => engine.decide_explained(
                facts,
                now,
                &usable,
                &self.secrets,
                &tokens.view(generation),
            ),
            (None, false) => engine.decide(facts, now, &usable, &self.secrets),
            (None, true) => engine.decide_explained(
                facts,
                now,
                &usable,
                &self.secrets,
                &policy_core::NoTokenCache,
            ),
        })
    }
}

/// One decision as a host acts on it.
#[derive(Debug)]
pub struct Decided {
    /// The verdict; a failed decider's is its refusal.
    pub verdict: Verdict,
    /// Key fetches made on the way, for the host's metrics and logs.
    pub fetches: Vec<FetchReport>,
    /// Why the decider failed, when it did, for the host's log.
    pub failure: Option<DecideFailure>,
}

/// A decider and the keys it decides with.
#[derive(Debug)]
pub struct Gate<D> {
    pub decider: D,
    pub keys: KeyRing,
}

impl<D: Decider> Gate<D> {
    pub fn new(decider: D, keys: KeyRing) -> Self {
        Gate { decider, keys }
    }

    /// Decides `facts` at `now`, fetching keys with `fetch` when the schedule says so.
    pub async fn decide<F, Fut>(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        explain: bool,
        fetch: F,
    ) -> Decided
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Fetched>,
    {
        let (result, fetches) = self
            .keys
            .decide(now, fetch, || {
                self.decider.decide(facts, now, &self.keys, explain)
            })
            .await;
        match result {
            Ok(verdict) => Decided {
                verdict,
                fetches,
                failure: None,
            },
            Err(failure) => Decided {
                verdict: Verdict::Decided(Decision::policy_module_failed()),
                fetches,
                failure: Some(failure),
            },
        }
    }

    /// For a request whose body counts ([`RequestFacts::wants_body`]), decided before the
    /// body is read: `Some` refusal when no body could make it pass (decided as if the
    /// body asked for the least access), so the host answers without reading or holding
    /// the body. Nothing is stored: a pending rate limit is left for the real decision.
    pub async fn refusal_before_body<F, Fut>(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        fetch: F,
    ) -> Option<Decided>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Fetched>,
    {
        let decided = self
            .decide(&facts.with_least_access_body(), now, false, fetch)
            .await;
        match &decided.verdict {
            Verdict::Decided(decision) if !decision.allow => Some(decided),
            _ => None,
        }
    }
}
