//! Rate limits in a Durable Object, one object per limit key: strongly consistent, since
//! a Durable Object handles one event at a time and its storage calls are gated. GCRA
//! runs once, in the object; the Worker concludes from its result.

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

/// The object's check: the state it stored (admitted), or the nanoseconds to wait.
/// Decimal strings, as in [`Check`].
#[derive(Serialize, Deserialize)]
struct Checked {
    stored: Option<String>,
    wait_nanos: Option<String>,
}

#[durable_object]
pub struct RateLimiter {
    state: State,
}

impl DurableObject for RateLimiter {
    fn new(state: State, _env: Env) -> Self {
        RateLimiter { state }
    }

    /// Checks one request against the stored TAT and stores the new TAT if admitted;
    /// answers with what it stored or how long to wait.
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
        let checked = match check.gcra.check(prior_state, UnixTime::from_nanos(now)) {
            Ok(next) => {
                storage.put("tat", next.0.to_string()).await?;
                Checked {
                    stored: Some(next.0.to_string()),
                    wait_nanos: None,
                }
            }
            Err(wait) => Checked {
                stored: None,
                wait_nanos: Some(wait.to_string()),
            },
        };
        Response::ok(
            serde_json::to_string(&checked).map_err(|e| worker::Error::RustError(e.to_string()))?,
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
    // A limiter that cannot be reached or answers nonsense refuses (503), never admits.
    let Ok(mut response) = stub.fetch_with_request(request).await else {
        return Ok(pending.unavailable());
    };
    let checked: Option<Checked> = response
        .text()
        .await
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let number = |n: Option<String>| n.and_then(|n| n.parse::<u64>().ok());
    Ok(match checked {
        Some(Checked {
            stored: Some(s), ..
        }) => match number(Some(s)) {
            Some(tat) => pending.conclude(Ok(RateState(tat))).0,
            None => pending.unavailable(),
        },
        Some(Checked { wait_nanos, .. }) => match number(wait_nanos) {
            Some(wait) => pending.conclude(Err(wait)).0,
            None => pending.unavailable(),
        },
        None => pending.unavailable(),
    })
}
