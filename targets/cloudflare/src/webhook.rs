//! Gogs webhooks at the Worker (`[[webhook]]` in the policy): the core checks each delivery
//! (signature, event, repository, size), a Durable Object per delivery id drops repeats,
//! and the envelope goes to a Cloudflare Queue (binding `TOLLGATE_EVENTS`). The answer is
//! 202 only once the queue has the message, since Gogs never retries a delivery. Every
//! delivery, accepted or refused, gets an audit line on the console.

use futures_util::StreamExt;
use policy_core::{Delivery, DeliveryAudit, DeliveryOutcome, WebhookRejection, WebhookRequest};
use worker::{
    console_log, durable_object, DurableObject, Env, Method, QueueContentType, RawMessageBuilder,
    Request, RequestInit, Response, Result, State,
};

use crate::config::Config;

/// The queue binding accepted deliveries go to.
const QUEUE_BINDING: &str = "TOLLGATE_EVENTS";
/// How long a delivery id is remembered.
const SEEN_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Receives the delivery when `req` is for a webhook's path; `None` otherwise (the
/// request is decided as usual).
pub async fn receive(req: &mut Request, env: &Env, config: &Config) -> Result<Option<Response>> {
    let engine = config.gate.decider.engine();
    let path = req.path();
    let Some(route) = engine.webhook_at(&path) else {
        return Ok(None);
    };
    let headers: Vec<(String, String)> = req.headers().entries().collect();
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let finish = |outcome: DeliveryOutcome, repository: Option<&str>| {
        let now = crate::now();
        let record = DeliveryAudit::new(None, now, route.name(), &pairs, repository, outcome);
        console_log!("{}", record.to_json());
        let mut response = Response::ok(outcome.answer_body())?.with_status(outcome.status());
        response
            .headers_mut()
            .set("content-type", "application/json")?;
        Ok(Some(response))
    };
    let announced = req
        .headers()
        .get("content-length")?
        .and_then(|n| n.parse::<usize>().ok());
    if announced.is_some_and(|n| n > route.max_body_bytes()) {
        return finish(DeliveryOutcome::Refused(WebhookRejection::TooLarge), None);
    }
    // Read at most the webhook's limit: a chunked body announces no length.
    let mut body = Vec::new();
    let mut chunks = req.stream()?;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > route.max_body_bytes() {
            return finish(DeliveryOutcome::Refused(WebhookRejection::TooLarge), None);
        }
        body.extend_from_slice(&chunk);
    }
    let method = req.method();
    let request = WebhookRequest {
        method: method.as_ref(),
        headers: &pairs,
        body: &body,
    };
    let delivery = match route.receive(&request, config.gate.decider.secrets(), crate::now()) {
        Ok(delivery) => delivery,
        Err(rejection) => return finish(DeliveryOutcome::Refused(rejection), None),
    };
    let repository = Some(delivery.repository.as_str());
    match remember(env, &delivery.id, "claim").await {
        Some(true) => {}
        Some(false) => {
            return finish(
                DeliveryOutcome::Refused(WebhookRejection::Duplicate),
                repository,
            )
        }
        None => return finish(DeliveryOutcome::SinkUnavailable, repository),
    }
    match relay(env, &delivery).await {
        Ok(()) => finish(DeliveryOutcome::Accepted, repository),
        Err(e) => {
            console_log!(
                "{}",
                serde_json::json!({ "tollgate_error": format!("webhook queue `{QUEUE_BINDING}`: {e}") })
            );
            // Not relayed, so not seen: a redelivery from Gogs' UI must go through.
            let _ = remember(env, &delivery.id, "forget").await;
            finish(DeliveryOutcome::SinkUnavailable, repository)
        }
    }
}

/// Sends the envelope (as the JSON object it is) and returns once the queue has it.
async fn relay(env: &Env, delivery: &Delivery) -> Result<()> {
    let envelope = js_sys::JSON::parse(&delivery.envelope)
        .map_err(|_| worker::Error::RustError("the envelope is not JSON".into()))?;
    let message = RawMessageBuilder::new(envelope).build_with_content_type(QueueContentType::Json);
    env.queue(QUEUE_BINDING)?.send_raw(message).await
}

/// Asks the delivery id's object to `claim` it (`Some(true)`: first time within the
/// window) or to `forget` it. `None`: the object could not be reached.
async fn remember(env: &Env, delivery_id: &str, op: &str) -> Option<bool> {
    let namespace = env.durable_object("WEBHOOK_DELIVERIES").ok()?;
    let stub = namespace
        .id_from_name(delivery_id)
        .and_then(|id| id.get_stub())
        .ok()?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post);
    let request = Request::new_with_init(&format!("https://deliveries/{op}"), &init).ok()?;
    let mut answer = stub.fetch_with_request(request).await.ok()?;
    match answer.text().await.ok()?.as_str() {
        "first" | "forgotten" => Some(true),
        "seen" => Some(false),
        _ => None,
    }
}

/// One delivery id: whether it was received within the window. Strongly consistent (one
/// event at a time per object), so two copies of a delivery arriving together at two
/// isolates are told apart; an alarm clears the object once the window has passed.
#[durable_object]
pub struct WebhookDeliveries {
    state: State,
}

impl DurableObject for WebhookDeliveries {
    fn new(state: State, _env: Env) -> Self {
        WebhookDeliveries { state }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let storage = self.state.storage();
        if req.path() == "/forget" {
            storage.delete_all().await?;
            return Response::ok("forgotten");
        }
        if storage.get::<bool>("seen").await?.unwrap_or(false) {
            return Response::ok("seen");
        }
        storage.put("seen", true).await?;
        storage.set_alarm(SEEN_WINDOW_MS).await?;
        Response::ok("first")
    }

    async fn alarm(&self) -> Result<Response> {
        self.state.storage().delete_all().await?;
        Response::ok("cleared")
    }
}
