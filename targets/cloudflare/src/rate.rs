//! Rate limits in a Durable Object, one object per limit key: strongly consistent, since
//! a Durable Object handles one event at a time and its storage calls are gated.

use policy_core::{Decision, Gcra, PendingRate, RateState, UnixTime};
use serde::{Deserialize, Serialize};
use worker::{
    durable_object, DurableObject, Env, Method, Request, RequestInit, Response, Result, State,
};

#[derive(Serialize, Deserialize)]
struct Check {
    gcra: Gcra,
    /// Decimal string: JavaScript numbers cannot hold nanosecond timestamps exactly.
    now_nanos: String,
}

#[derive(Serialize, Deserialize)]
struct Prior {
    /// The state before this request, as a decimal string (or null).
    prior: Option<String>,
}

#[durable_object]
pub struct RateLimiter {
    state: State,
}

impl DurableObject for RateLimiter {
    fn new(state: State, _env: Env) -> Self {
        RateLimiter { state }
    }

    /// Checks one request against the stored TAT and stores the new TAT if admitted; answers
    /// with the prior state so the Worker resolves to the same outcome.
    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let check: Check = serde_json::from_str(&req.text().await?)
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        let now: u64 = check
            .now_nanos
            .parse()
            .map_err(|_| worker::Error::RustError("bad now".into()))?;
        let storage = self.state.storage();
        let prior: Option<String> = storage.get("tat").await?;
        let prior_state = prior
            .as_deref()
            .and_then(|p| p.parse::<u64>().ok())
            .map(RateState);
        if let Ok(next) = check.gcra.check(prior_state, UnixTime::from_nanos(now)) {
            storage.put("tat", next.0.to_string()).await?;
        }
        Response::ok(
            serde_json::to_string(&Prior { prior })
                .map_err(|e| worker::Error::RustError(e.to_string()))?,
        )
    }
}

pub async fn resolve(env: &Env, pending: &PendingRate, namespace: &str) -> Result<Decision> {
    let name = if namespace.is_empty() {
        pending.key().to_owned()
    } else {
        format!("{namespace}/{}", pending.key())
    };
    let stub = env
        .durable_object("RATE_LIMITER")?
        .id_from_name(&name)?
        .get_stub()?;
    let body = serde_json::to_string(&Check {
        gcra: pending.gcra(),
        now_nanos: pending.now().as_nanos().to_string(),
    })
    .map_err(|e| worker::Error::RustError(e.to_string()))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let request = Request::new_with_init("https://rate-limiter/check", &init)?;
    let mut response = stub.fetch_with_request(request).await?;
    let prior: Prior = serde_json::from_str(&response.text().await?)
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
    let prior = prior
        .prior
        .and_then(|p| p.parse::<u64>().ok())
        .map(RateState);
    Ok(pending.resolve(prior).0)
}
