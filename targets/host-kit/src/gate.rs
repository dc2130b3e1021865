//! Who decides, and the steps around every decision that all hosts share.
//!
//! A [`Decider`] is the engine linked natively ([`NativeDecider`]) or the policy module
//! under wasmtime (`tollgate_wasmtime::ModulePool`); both give the same typed
//! [`Verdict`]. A [`Gate`] pairs one with the [`KeyRing`], so every host fetches due keys,
//! retries a key miss once, refuses a request no body could pass before reading its body,
//! and turns a failed decider into a refusal, in the same way.

use std::future::Future;

use policy_core::{
    Decision, Engine, OwnedTokenResponse, RequestFacts, SecretStore, TokenExchange, TokenResponse,
    UnixTime, Verdict,
};

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

    /// Completes the browser sign-in `facts` (the provider's callback) began, with the
    /// answer to its token request ([`policy_core::Engine::complete_sign_in`]).
    fn complete_sign_in(
        &self,
        facts: &RequestFacts<'_>,
        response: TokenResponse<'_>,
        now: UnixTime,
        keys: &KeyRing,
        explain: bool,
    ) -> Result<Decision, DecideFailure>;

    /// Does every request need the host's random bytes ([`RequestFacts::entropy`])? Only
    /// for a policy that signs browsers in.
    fn wants_entropy(&self) -> bool;
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

    fn complete_sign_in(
        &self,
        facts: &RequestFacts<'_>,
        response: TokenResponse<'_>,
        now: UnixTime,
        keys: &KeyRing,
        explain: bool,
    ) -> Result<Decision, DecideFailure> {
        (**self).complete_sign_in(facts, response, now, keys, explain)
    }

    fn wants_entropy(&self) -> bool {
        (**self).wants_entropy()
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

    fn complete_sign_in(
        &self,
        facts: &RequestFacts<'_>,
        response: TokenResponse<'_>,
        now: UnixTime,
        keys: &KeyRing,
        explain: bool,
    ) -> Result<Decision, DecideFailure> {
        let usable = keys.keys(now);
        Ok(if explain {
            self.engine
                .complete_sign_in_explained(facts, response, now, &usable, &self.secrets)
        } else {
            self.engine
                .complete_sign_in(facts, response, now, &usable, &self.secrets)
        })
    }

    fn wants_entropy(&self) -> bool {
        self.engine.wants_entropy()
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

impl Decided {
    /// A failed decider's verdict is its refusal.
    fn from(result: Result<Verdict, DecideFailure>, fetches: Vec<FetchReport>) -> Decided {
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
}

/// Where the answer to a browser sign-in's token request comes from.
enum TokenAnswer<'a, S> {
    /// Live traffic: `S` posts the request with the host's HTTP client and gives the
    /// status and body (`None` when no whole answer came).
    Send(S),
    /// A test endpoint, given the provider's answer.
    Given(&'a OwnedTokenResponse),
    /// A test endpoint, given none: the token request itself is the answer.
    Show,
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
        Decided::from(result, fetches)
    }

    /// [`Gate::decide`], and for a browser's sign-in callback ([`Verdict::Exchange`]) the
    /// rest of the sign-in: `send` posts the token request with the host's HTTP client and
    /// gives the status and body (`None` when no whole answer came), then the decider
    /// verifies the ID token, with keys fetched as for any decision. The request is sent
    /// once whatever happens: a code is good for one exchange.
    pub async fn decide_signing_in<F, Fut, S, SFut>(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        explain: bool,
        fetch: F,
        send: S,
    ) -> Decided
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Fetched>,
        S: FnOnce(TokenExchange) -> SFut,
        SFut: Future<Output = Option<(u16, Vec<u8>)>>,
    {
        match self
            .decide_answering(facts, now, explain, fetch, TokenAnswer::Send(send))
            .await
        {
            Ok(decided) => decided,
            // Only `Show` gives the request back.
            Err(_) => Decided::from(
                Ok(Verdict::Decided(Decision::policy_module_failed())),
                Vec::new(),
            ),
        }
    }

    /// For test endpoints: [`Gate::decide_signing_in`] with the provider's answer `given`
    /// by the test instead of sent for; without one, `Err` is the token request itself.
    pub async fn decide_with_given_answer<F, Fut>(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        explain: bool,
        fetch: F,
        given: Option<&OwnedTokenResponse>,
    ) -> Result<Decided, TokenExchange>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Fetched>,
    {
        // Nothing is sent: the type of the sender that never runs.
        type Unsent = fn(TokenExchange) -> std::future::Ready<Option<(u16, Vec<u8>)>>;
        let answer: TokenAnswer<'_, Unsent> = match given {
            Some(given) => TokenAnswer::Given(given),
            None => TokenAnswer::Show,
        };
        self.decide_answering(facts, now, explain, fetch, answer)
            .await
    }

    async fn decide_answering<F, Fut, S, SFut>(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        explain: bool,
        fetch: F,
        answer: TokenAnswer<'_, S>,
    ) -> Result<Decided, TokenExchange>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Fetched>,
        S: FnOnce(TokenExchange) -> SFut,
        SFut: Future<Output = Option<(u16, Vec<u8>)>>,
    {
        let decided = self.decide(facts, now, explain, &fetch).await;
        let Verdict::Exchange(request) = decided.verdict else {
            return Ok(decided);
        };
        let answer = match answer {
            TokenAnswer::Show => return Err(request),
            TokenAnswer::Send(send) => send(request).await,
            TokenAnswer::Given(given) => match given.response() {
                TokenResponse::Answered { status, body } => Some((status, body.to_vec())),
                TokenResponse::Failed => None,
            },
        };
        let response = match &answer {
            Some((status, body)) if body.len() <= TokenExchange::MAX_RESPONSE_BYTES => {
                TokenResponse::Answered {
                    status: *status,
                    body,
                }
            }
            _ => TokenResponse::Failed,
        };
        let (result, completing_fetches) = self
            .keys
            .decide(now, &fetch, || {
                self.decider
                    .complete_sign_in(facts, response, now, &self.keys, explain)
                    .map(Verdict::Decided)
            })
            .await;
        let mut fetches = decided.fetches;
        fetches.extend(completing_fetches);
        Ok(Decided::from(result, fetches))
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
