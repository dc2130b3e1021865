//! Tollgate on Cloudflare Workers.
//!
//! A thin host: it turns the incoming request into `RequestFacts`, reads the clock, keeps
//! JWKS in an isolate-local cache, keeps rate-limit state in a Durable Object, and turns
//! the engine's decision into a response or an origin fetch; Gogs webhook deliveries go
//! to a Cloudflare Queue (`webhook.rs`), and a browser sign-in's randomness and token
//! request come from the isolate's `crypto` and `fetch` (`sign_in.rs`). All policy logic
//! is in `policy-core`.
//!
//! Configuration (wrangler.toml `[vars]` and secrets):
//! - `TOLLGATE_POLICY`: the policy TOML.
//! - `TOLLGATE_ORIGIN`: the Gogs base URL.
//! - `TOLLGATE_SECRETS` (a secret): JSON object of origin secret name -> Gogs token.
//! - `TOLLGATE_JWKS_REFRESH`, `TOLLGATE_JWKS_MIN_REFRESH_GAP`, `TOLLGATE_JWKS_MAX_STALE`:
//!   seconds (300, 30, 3600).
//! - Bindings: the `RateLimiter` and `WebhookDeliveries` Durable Objects, and, for a
//!   policy with `[[webhook]]`s, the queue `TOLLGATE_EVENTS` deliveries are relayed to.
//! - `TOLLGATE_TEST_ENDPOINTS = "true"` enables `POST /__tollgate/eval` for the
//!   conformance suite. Never set it in production.
#![cfg(target_arch = "wasm32")]
#![allow(unsafe_code)] // the #[event] and #[durable_object] macros generate FFI glue

mod config;
mod forward;
mod jwks;
mod rate;
mod sign_in;
mod webhook;

use policy_core::{
    Decision, EvalRequest, OwnedTokenResponse, RequestFacts, TokenExchange, UnixTime, Verdict,
};
use tollgate_host_kit::Decider;
use worker::{console_log, event, Context, Env, Method, Request, Response, Result};

pub use rate::RateLimiter;
pub use webhook::WebhookDeliveries;

fn now() -> UnixTime {
    UnixTime::from_millis(js_sys::Date::now() as u64)
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let config = match config::Config::load(&env) {
        Ok(config) => config,
        Err(message) => {
            // Fail closed: without a valid policy nothing passes.
            console_log!("{}", serde_json::json!({ "tollgate_error": message }));
            return Response::error("gateway misconfigured\n", 500);
        }
    };
    if config.test_endpoints && req.path() == "/__tollgate/eval" && req.method() == Method::Post {
        return eval_endpoint(&mut req, &env, &config).await;
    }
    if let Some(answer) = webhook::receive(&mut req, &env, &config).await? {
        return Ok(answer);
    }
    let mut ingested = match forward::ingest(&req) {
        Ok(ingested) => ingested,
        Err(e) => return Response::error(e.message(), e.status()),
    };
    if config.gate.decider.wants_entropy() {
        ingested.set_entropy(tollgate_host_kit::js_entropy());
    }
    // LFS batch bodies decide the access they need; a request no body could get through is
    // refused before its body is read.
    if ingested.wants_body() {
        let pairs = ingested.header_pairs();
        let facts = ingested.facts(&pairs);
        let at = now();
        if let Some(refusal) = config
            .gate
            .refusal_before_body(&facts, at, jwks::download)
            .await
        {
            if let Verdict::Decided(decision) = refusal.verdict {
                console_log!("{}", decision.audit(&facts, at).to_json());
                return forward::deny(&decision);
            }
        }
        let Ok(bytes) = req.bytes().await else {
            return Response::error("cannot read request body\n", 400);
        };
        if let Err(e) = ingested.set_body(bytes) {
            return Response::error(e.message(), e.status());
        }
    }
    let pairs = ingested.header_pairs();
    let facts = ingested.facts(&pairs);
    let at = now();
    let decision = match decide(&env, &config, &facts, at, None).await? {
        Ok(decision) => decision,
        Err(_) => return Response::error("sign-in incomplete\n", 500),
    };
    console_log!("{}", decision.audit(&facts, at).to_json());
    if !decision.allow {
        return forward::deny(&decision);
    }
    let client_ip = ingested.client_ip().map(str::to_owned);
    let body = ingested.take_body();
    forward::to_origin(req, &config.origin, client_ip.as_deref(), &decision, body).await
}

/// Decides through the gate (keys fetched when due, one retry after a key miss), completes
/// a browser sign-in (its token request sent, or for a test the answer `given`), and
/// resolves a rate limit in the Durable Object for the limit's key. `rate_namespace`
/// separates test cases' state. `Err` is the token request, for a test that gave no answer.
async fn decide(
    env: &Env,
    config: &config::Config,
    facts: &RequestFacts<'_>,
    at: UnixTime,
    test: Option<(&str, Option<&OwnedTokenResponse>)>,
) -> Result<std::result::Result<Decision, TokenExchange>> {
    let gate = &config.gate;
    let (decided, rate_namespace) = match test {
        None => {
            let send = |request| async move { sign_in::send(&request).await };
            let decided = gate
                .decide_signing_in(facts, at, false, jwks::download, send)
                .await;
            (decided, "")
        }
        Some((namespace, given)) => {
            match gate
                .decide_with_given_answer(facts, at, false, jwks::download, given)
                .await
            {
                Ok(decided) => (decided, namespace),
                Err(request) => return Ok(Err(request)),
            }
        }
    };
    for report in &decided.fetches {
        if let Some(error) = &report.error {
            console_log!(
                "{}",
                serde_json::json!({ "tollgate_error": format!("JWKS for issuer `{}`: {error}; keeping the last good keys", report.issuer) })
            );
        }
    }
    match decided.verdict {
        Verdict::Pending(pending) => rate::resolve(env, &pending, rate_namespace).await.map(Ok),
        verdict => Ok(Ok(verdict.resolve_with(&mut |_, _| None))),
    }
}

/// Test-only: decide a request given as JSON (`tollgate eval`'s input) at a given time.
async fn eval_endpoint(req: &mut Request, env: &Env, config: &config::Config) -> Result<Response> {
    let text = req.text().await?;
    let input: EvalRequest = match serde_json::from_str(&text) {
        Ok(input) => input,
        Err(e) => return Response::error(format!("bad eval input: {e}\n"), 400),
    };
    let pairs = input.request.header_pairs();
    let facts = input.request.facts(&pairs);
    let test = Some((input.rate_namespace.as_str(), input.exchange.as_ref()));
    let json = match decide(env, config, &facts, UnixTime::from_secs(input.now), test).await? {
        Ok(decision) => decision.to_json(),
        Err(request) => request.to_json(),
    };
    let mut response = Response::ok(json)?;
    response
        .headers_mut()
        .set("content-type", "application/json")?;
    Ok(response)
}
