//! Tollgate on Cloudflare Workers.
//!
//! A thin host: it turns the incoming request into `RequestFacts`, reads the clock, keeps
//! JWKS in an isolate-local cache, keeps rate-limit state in a Durable Object, and turns
//! the engine's decision into a response or an origin fetch. All policy logic is in
//! `policy-core`.
//!
//! Configuration (wrangler.toml `[vars]` and secrets):
//! - `TOLLGATE_POLICY`: the policy TOML.
//! - `TOLLGATE_ORIGIN`: the Gogs base URL.
//! - `TOLLGATE_SECRETS` (a secret): JSON object of origin secret name -> Gogs token.
//! - `TOLLGATE_JWKS_REFRESH`, `TOLLGATE_JWKS_MIN_REFRESH_GAP`, `TOLLGATE_JWKS_MAX_STALE`:
//!   seconds (300, 30, 3600).
//! - `TOLLGATE_TEST_ENDPOINTS = "true"` enables `POST /__tollgate/eval` for the
//!   conformance suite. Never set it in production.
#![cfg(target_arch = "wasm32")]
#![allow(unsafe_code)] // the #[event] and #[durable_object] macros generate FFI glue

mod config;
mod forward;
mod jwks;
mod rate;

use policy_core::cases::EvalRequest;
use policy_core::{Decision, OwnedRequest, RequestFacts, UnixTime, Verdict};
use worker::{console_log, event, Context, Env, Method, Request, Response, Result};

pub use rate::RateLimiter;

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
    let (owned, buffered) = match forward::request_facts(&mut req).await {
        Ok(pair) => pair,
        Err((status, message)) => return Response::error(message, status),
    };
    let at = now();
    let decision = decide(&env, &config, &owned, at, "").await?;
    let pairs = owned.header_pairs();
    console_log!("{}", decision.audit(&owned.facts(&pairs), at).to_json());
    if !decision.allow {
        return forward::deny(&decision);
    }
    forward::to_origin(req, &config.origin, &owned, &decision, buffered).await
}

/// Decides, refreshing JWKS on an unknown key (bounded) and resolving rate limits in the
/// Durable Object for the limit's key. `rate_namespace` separates test cases' state.
async fn decide(
    env: &Env,
    config: &config::Config,
    owned: &OwnedRequest,
    at: UnixTime,
    rate_namespace: &str,
) -> Result<Decision> {
    let pairs = owned.header_pairs();
    let facts: RequestFacts<'_> = owned.facts(&pairs);
    let keys = jwks::keys(&config.engine, &config.jwks, at, false).await;
    let mut verdict = config.engine.decide(&facts, at, &keys, &*config.secrets);
    if let Verdict::Decided(d) = &verdict {
        let code = d.reason.code();
        if code == "token_unknown_key" || code == "token_issuer_keys_unavailable" {
            let keys = jwks::keys(&config.engine, &config.jwks, at, true).await;
            verdict = config.engine.decide(&facts, at, &keys, &*config.secrets);
        }
    }
    match verdict {
        Verdict::Decided(decision) => Ok(decision),
        Verdict::Pending(pending) => rate::resolve(env, &pending, rate_namespace).await,
    }
}

/// Test-only: decide a request given as JSON (`tollgate eval`'s input) at a given time.
async fn eval_endpoint(req: &mut Request, env: &Env, config: &config::Config) -> Result<Response> {
    let text = req.text().await?;
    let input: EvalRequest = match serde_json::from_str(&text) {
        Ok(input) => input,
        Err(e) => return Response::error(format!("bad eval input: {e}\n"), 400),
    };
    let decision = decide(
        env,
        config,
        &input.request,
        UnixTime::from_secs(input.now),
        &input.rate_namespace,
    )
    .await?;
    let mut response = Response::ok(decision.to_json())?;
    response
        .headers_mut()
        .set("content-type", "application/json")?;
    Ok(response)
}
