//! Rate limits in a Durable Object, one object per limit key: strongly consistent, since
//! a Durable Object handles one event at a time and its storage calls are gated. GCRA
//! runs once per limit, in its object; the Worker concludes from the results.

use policy_core::{Decision, Gcra, PendingRate, RateCheck, RateState, UnixTime};
use serde::{Deserialize, Serialize};
use worker::{
    durable_object, DurableObject, Env, Method, Request, RequestInit, Response, Result, State,
};

#[derive(Serialize, Deserialize)]
struct Check {
    gcra: Gcra,
    /// Decimal string: JavaScript numbers cannot hold nanosecond timestamps exactly.
    now_nanos: String,
    /// What to do with the stored TAT.
    #[serde(default)]
    op: Op,
    /// For [`Op::GiveBack`]: the TAT this request stored (decimal string).
    #[serde(default)]
    written: Option<String>,
}

#[derive(Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    /// Admit or refuse one request, storing the new TAT if admitted.
    #[default]
    Consume,
    /// Only report what a request would get (a request already refused by another limit).
    Measure,
    /// Give back one request this limit admitted (another limit refused it), if the
    /// stored TAT is still the one that request wrote.
    GiveBack,
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

    /// Checks one request against the stored TAT and stores the new TAT if admitted (or
    /// gives one back); answers with what it stored or how long to wait.
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
        let checked = match check.op {
            Op::GiveBack => {
                let written = check
                    .written
                    .as_deref()
                    .and_then(|w| w.parse::<u64>().ok())
                    .map(RateState);
                let back = written.and_then(|w| check.gcra.give_back(w, prior_state));
                if let Some(back) = back {
                    storage.put("tat", back.0.to_string()).await?;
                }
                Checked {
                    stored: back.map(|b| b.0.to_string()),
                    wait_nanos: None,
                }
            }
            op => match check.gcra.check(prior_state, UnixTime::from_nanos(now)) {
                Ok(next) => {
                    if matches!(op, Op::Consume) {
                        storage.put("tat", next.0.to_string()).await?;
                    }
                    Checked {
                        stored: Some(next.0.to_string()),
                        wait_nanos: None,
                    }
                }
                Err(wait) => Checked {
                    stored: None,
                    wait_nanos: Some(wait.to_string()),
                },
            },
        };
        Response::ok(
            serde_json::to_string(&checked).map_err(|e| worker::Error::RustError(e.to_string()))?,
        )
    }
}

/// The final decision: each limit's object consumes in turn; once one refuses, the
/// earlier ones give back what they took and the later ones only measure, so a refused
/// request consumes nothing and the 429 carries the longest wait. A shadow limit's refusal
/// refuses nothing (the core reports it). An object that cannot
/// be reached or answers nonsense refuses the request (503), never admits it.
pub async fn resolve(env: &Env, pending: &PendingRate, namespace: &str) -> Result<Decision> {
    let now = pending.now();
    let mut results = Vec::with_capacity(pending.checks().len());
    let mut refused = false;
    for (i, check) in pending.checks().iter().enumerate() {
        let op = if refused { Op::Measure } else { Op::Consume };
        let Some(result) = ask(env, check, now, namespace, op, None).await? else {
            if refused {
                // Only measuring: the refusal stands, with the waits known so far.
                break;
            }
            give_back(env, pending, &results, namespace).await?;
            return Ok(pending.unavailable(i));
        };
        if result.is_err() && !refused && !check.is_shadow() {
            refused = true;
            give_back(env, pending, &results, namespace).await?;
        }
        results.push(result);
    }
    Ok(pending.conclude(&results))
}

async fn give_back(
    env: &Env,
    pending: &PendingRate,
    results: &[std::result::Result<RateState, u64>],
    namespace: &str,
) -> Result<()> {
    for (check, result) in pending.checks().iter().zip(results) {
        if let Ok(written) = result {
            // An object that does not give back leaves the request counted, which can
            // only refuse early.
            let _ = ask(
                env,
                check,
                pending.now(),
                namespace,
                Op::GiveBack,
                Some(*written),
            )
            .await?;
        }
    }
    Ok(())
}

/// One limit's object: `Some(Ok(stored))`, `Some(Err(wait_nanos))`, or `None` when it
/// could not be reached or answered nonsense.
async fn ask(
    env: &Env,
    check: &RateCheck,
    now: UnixTime,
    namespace: &str,
    op: Op,
    written: Option<RateState>,
) -> Result<Option<std::result::Result<RateState, u64>>> {
    let name = if namespace.is_empty() {
        check.key().to_owned()
    } else {
        format!("{namespace}/{}", check.key())
    };
    let stub = env
        .durable_object("RATE_LIMITER")?
        .id_from_name(&name)?
        .get_stub()?;
    let body = serde_json::to_string(&Check {
        gcra: check.gcra(),
        now_nanos: now.as_nanos().to_string(),
        op,
        written: written.map(|w| w.0.to_string()),
    })
    .map_err(|e| worker::Error::RustError(e.to_string()))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let request = Request::new_with_init("https://rate-limiter/check", &init)?;
    let Ok(mut response) = stub.fetch_with_request(request).await else {
        return Ok(None);
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
        }) => number(Some(s)).map(|tat| Ok(RateState(tat))),
        Some(Checked { wait_nanos, .. }) => number(wait_nanos).map(Err),
        None => None,
    })
}
