//! Gogs webhook deliveries through API Management (`apim-webhook-policy.xml`): APIM
//! forwards a delivery as it came, body bytes and headers, to `/api/webhook` followed by
//! the `[[webhook]]` path, and gives Gogs the answer unchanged. The host kit checks it
//! with the core (signature over the exact bytes, event, repository, size), drops a
//! repeated delivery id (remembered by this instance), and relays the envelope to
//! `TOLLGATE_WEBHOOK_SINK`; 202 comes only once the sink has it, since Gogs never retries.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;

use arc_swap::ArcSwap;
use policy_core::{
    DeliveryAudit, DeliveryOutcome, Engine, SecretStore, WebhookRejection, WebhookRequest,
};
use tollgate_host_kit::complete_now;
use tollgate_host_kit::webhooks::{Deliveries, Received, Relay, WebhookSink};

use crate::now;

/// Where APIM forwards deliveries; the `[[webhook]]` path follows.
pub const ROUTE_PREFIX: &str = "/api/webhook";

/// The handler's secrets (`TOLLGATE_SECRETS`), where webhook secrets are found by name.
struct Secrets(BTreeMap<String, String>);

impl SecretStore for Secrets {
    fn secret(&self, name: &str) -> Option<Cow<'_, str>> {
        self.0.get(name).map(|v| Cow::Borrowed(v.as_str()))
    }
}

/// What receiving deliveries needs: the policy's webhooks, their secrets, the delivery ids
/// seen, and the opened sink.
pub struct Webhooks {
    /// The policy whose `[[webhook]]`s apply; a reload replaces it.
    pub engine: ArcSwap<Engine>,
    secrets: Secrets,
    deliveries: Deliveries,
    relay: Relay,
    /// Drives a Kafka sink's client; the handler's threads wait on it.
    runtime: Option<tokio::runtime::Runtime>,
}

/// One delivery's answer to Gogs and its audit record.
pub struct Answered {
    pub status: u16,
    pub body: String,
    pub audit: String,
}

impl Webhooks {
    /// Opens `TOLLGATE_WEBHOOK_SINK` (`stdout`, the default; a file; or
    /// `kafka[s]://HOST:PORT/TOPIC[?...]`, whose topic must exist and broker answer now).
    pub fn open(
        engine: Engine,
        secrets: BTreeMap<String, String>,
        sink: Option<&str>,
    ) -> Result<Webhooks, String> {
        let mut sink = WebhookSink::parse(sink.unwrap_or("stdout"))
            .map_err(|e| format!("TOLLGATE_WEBHOOK_SINK {e}"))?;
        sink.resolve(|name| secrets.get(name).cloned())
            .map_err(|e| format!("TOLLGATE_WEBHOOK_SINK: {e} in TOLLGATE_SECRETS"))?;
        let (relay, runtime) = match sink {
            WebhookSink::Kafka(_) => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("webhook sink runtime: {e}"))?;
                let relay = runtime.block_on(Relay::open(&sink));
                (relay, Some(runtime))
            }
            _ => (
                complete_now(Relay::open(&sink)).ok_or("opening a file sink did not complete")?,
                None,
            ),
        };
        Ok(Webhooks {
            engine: ArcSwap::from_pointee(engine),
            secrets: Secrets(secrets),
            deliveries: Deliveries::default(),
            relay: relay.map_err(|e| format!("webhook sink: {e}"))?,
            runtime,
        })
    }

    /// Receives the delivery APIM forwarded to `/api/webhook{path}`; `None` when no
    /// `[[webhook]]` is at `path`.
    pub fn receive(
        &self,
        path: &str,
        method: &str,
        headers: &[(String, String)],
        body: &mut dyn Read,
    ) -> Option<Answered> {
        let engine = self.engine.load_full();
        let route = engine.webhook_at(path)?;
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let at = now();
        let answer = |received: Received| {
            if let Some(e) = &received.sink_error {
                eprintln!("tollgate-azure-handler: webhook sink: {e}");
            }
            let audit = DeliveryAudit::new(
                None,
                at,
                route.name(),
                &headers,
                received.repository.as_deref(),
                received.outcome,
            );
            Answered {
                status: received.outcome.status(),
                body: received.outcome.answer_body(),
                audit: audit.to_json(),
            }
        };
        let limit = route.max_body_bytes();
        let mut bytes = Vec::new();
        let unread = match body.take(limit as u64 + 1).read_to_end(&mut bytes) {
            Err(_) => Some(DeliveryOutcome::BodyTimeout),
            Ok(_) if bytes.len() > limit => {
                Some(DeliveryOutcome::Refused(WebhookRejection::TooLarge))
            }
            Ok(_) => None,
        };
        if let Some(outcome) = unread {
            return Some(answer(unrelayed(outcome)));
        }
        let request = WebhookRequest {
            method,
            headers: &headers,
            body: &bytes,
        };
        let received = match (&self.relay, &self.runtime) {
            (Relay::Kafka(topic), Some(runtime)) => runtime.block_on(self.deliveries.receive(
                &route,
                &request,
                &self.secrets,
                at,
                |delivery| async move { Relay::produce(topic, &delivery).await },
            )),
            (relay, _) => complete_now(self.deliveries.receive(
                &route,
                &request,
                &self.secrets,
                at,
                |delivery| std::future::ready(relay.write(&delivery.envelope)),
            ))
            .unwrap_or_else(|| unrelayed(DeliveryOutcome::SinkUnavailable)),
        };
        Some(answer(received))
    }
}

fn unrelayed(outcome: DeliveryOutcome) -> Received {
    Received {
        outcome,
        repository: None,
        sink_error: None,
    }
}
