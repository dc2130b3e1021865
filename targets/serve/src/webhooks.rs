//! Gogs webhooks received by serve (`[[webhook]]` in the policy): the core checks each
//! delivery (signature, event, repository, size), serve drops repeats of a delivery id,
//! relays the envelope to the sink (`--webhook-sink`: stdout or a file it syncs, or a
//! Kafka topic that acknowledges it), and answers 202 only once the sink has it, since
//! Gogs never retries. Every delivery, accepted or refused, gets an audit record.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use policy_core::{
    Delivery, DeliveryAudit, DeliveryOutcome, Engine, SecretStore, WebhookRejection, WebhookRequest,
};
use tollgate_host_kit::webhooks::{Deliveries, Relay, WebhookSink};

use crate::proxy::{self, Body, Shared};

/// The webhooks of the policy deciding, and what receiving them needs.
pub struct Webhooks {
    /// The policy whose `[[webhook]]`s apply; a reload replaces it.
    pub engine: ArcSwap<Engine>,
    secrets: Box<dyn SecretStore + Send + Sync>,
    deliveries: Deliveries,
    relay: Arc<Relay>,
}

impl Webhooks {
    /// Opens the sink: a Kafka topic must exist and its broker answer now.
    pub async fn new(
        engine: Engine,
        secrets: Box<dyn SecretStore + Send + Sync>,
        sink: &WebhookSink,
    ) -> Result<Self, String> {
        Ok(Webhooks {
            engine: ArcSwap::from_pointee(engine),
            secrets,
            deliveries: Deliveries::default(),
            relay: Arc::new(Relay::open(sink).await?),
        })
    }

    /// Relays one delivery; `Ok` once the sink has it (acknowledged by the broker, or
    /// written and synced on a blocking thread).
    async fn relay(&self, delivery: Delivery) -> std::io::Result<()> {
        if let Relay::Kafka(topic) = self.relay.as_ref() {
            return Relay::produce(topic, &delivery).await;
        }
        let relay = Arc::clone(&self.relay);
        tokio::task::spawn_blocking(move || relay.write(&delivery.envelope))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|written| written)
    }
}

impl Shared {
    /// Receives a webhook delivery when `parts` names a webhook's path; otherwise hands
    /// the body back (the request is decided as usual).
    pub async fn webhook(
        &self,
        exchange_id: &str,
        parts: &Parts,
        body: Incoming,
    ) -> Result<Response<Body>, Incoming> {
        // Most requests are not deliveries: a look at the paths takes no reference.
        if self
            .webhooks
            .engine
            .load()
            .webhook_at(parts.uri.path())
            .is_none()
        {
            return Err(body);
        }
        let engine = self.webhooks.engine.load_full();
        let Some(route) = engine.webhook_at(parts.uri.path()) else {
            return Err(body);
        };
        let headers: Vec<(&str, &str)> = parts
            .headers
            .iter()
            .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v)))
            .collect();
        let answer = |outcome: DeliveryOutcome, repository: Option<&str>| {
            let record = DeliveryAudit::new(
                Some(exchange_id),
                proxy::now(),
                route.name(),
                &headers,
                repository,
                outcome,
            );
            self.audit.record(record.to_json());
            self.metrics.webhook(outcome.status());
            proxy::full(
                StatusCode::from_u16(outcome.status()).unwrap_or(StatusCode::BAD_REQUEST),
                "application/json",
                outcome.answer_body(),
            )
        };
        let refuse = |rejection: WebhookRejection, repository: Option<&str>| {
            answer(DeliveryOutcome::Refused(rejection), repository)
        };
        let read = tokio::time::timeout(
            self.timeouts.lfs_body,
            Limited::new(body, route.max_body_bytes()).collect(),
        )
        .await;
        let bytes: Bytes = match read {
            Err(_) => return Ok(answer(DeliveryOutcome::BodyTimeout, None)),
            Ok(Err(_)) => return Ok(refuse(WebhookRejection::TooLarge, None)),
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        let request = WebhookRequest {
            method: parts.method.as_str(),
            headers: &headers,
            body: &bytes,
        };
        let received = self
            .webhooks
            .deliveries
            .receive(
                &route,
                &request,
                self.webhooks.secrets.as_ref(),
                proxy::now(),
                |delivery| self.webhooks.relay(delivery),
            )
            .await;
        if let Some(e) = &received.sink_error {
            eprintln!("tollgate: webhook sink: {e}");
        }
        Ok(answer(received.outcome, received.repository.as_deref()))
    }
}
