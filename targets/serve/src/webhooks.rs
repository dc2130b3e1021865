//! Gogs webhooks received by serve (`[[webhook]]` in the policy): the core checks each
//! delivery (signature, event, repository, size), serve drops repeats of a delivery id,
//! relays the envelope to the sink (`--webhook-sink`: stdout or a file it syncs, or a
//! Kafka topic that acknowledges it), and answers 202 only once the sink has it, since
//! Gogs never retries. Every delivery, accepted or refused, gets an audit record.

use std::io::Write;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use policy_core::{
    Delivery, DeliveryAudit, DeliveryOutcome, Engine, SecretStore, SeenDeliveries,
    WebhookRejection, WebhookRequest,
};

use crate::kafka;
use crate::proxy::{self, Body, Shared};

/// How long a delivery id is remembered, and how many at most.
const SEEN_WINDOW_SECS: u64 = 24 * 3600;
const SEEN_CAPACITY: usize = 100_000;

/// Where accepted deliveries go: one JSON envelope per line, or one Kafka record each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookSink {
    Stdout,
    File(std::path::PathBuf),
    /// `kafka[s]://HOST:PORT/TOPIC[?...]`: an existing topic, keyed by repository.
    Kafka(kafka::Address),
}

impl WebhookSink {
    /// Takes a Kafka sink's SASL password from `secrets`.
    pub fn resolve(
        &mut self,
        secrets: &std::collections::HashMap<String, String>,
    ) -> Result<(), String> {
        match self {
            WebhookSink::Kafka(address) => address.resolve(secrets),
            _ => Ok(()),
        }
    }

    /// `stdout`, `kafka[s]://HOST:PORT/TOPIC[?...]`, or a file path.
    pub fn parse(text: &str) -> Result<WebhookSink, String> {
        if text == "stdout" || text == "-" {
            return Ok(WebhookSink::Stdout);
        }
        match kafka::parse_address(text) {
            None => Ok(WebhookSink::File(text.into())),
            Some(Ok(address)) => Ok(WebhookSink::Kafka(address)),
            Some(Err(e)) => Err(format!("--webhook-sink {e}")),
        }
    }
}

/// The webhooks of the policy deciding, and what receiving them needs.
pub struct Webhooks {
    /// The policy whose `[[webhook]]`s apply; a reload replaces it.
    pub engine: ArcSwap<Engine>,
    secrets: Box<dyn SecretStore + Send + Sync>,
    seen: Mutex<SeenDeliveries>,
    sink: Sink,
}

enum Sink {
    Stdout,
    File(Mutex<std::fs::File>),
    Kafka(kafka::Topic),
}

impl Webhooks {
    /// Opens the sink: a Kafka topic must exist and its broker answer now.
    pub async fn new(
        engine: Engine,
        secrets: Box<dyn SecretStore + Send + Sync>,
        sink: &WebhookSink,
    ) -> Result<Self, String> {
        let sink = match sink {
            WebhookSink::Stdout => Sink::Stdout,
            WebhookSink::File(path) => Sink::File(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            )),
            WebhookSink::Kafka(address) => Sink::Kafka(kafka::connect(address).await?),
        };
        Ok(Webhooks {
            engine: ArcSwap::from_pointee(engine),
            secrets,
            seen: Mutex::new(SeenDeliveries::new(SEEN_WINDOW_SECS, SEEN_CAPACITY)),
            sink,
        })
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, SeenDeliveries> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Relays one delivery; `Ok` once the sink has it (written and synced, or
    /// acknowledged by the broker).
    async fn relay(self: Arc<Self>, delivery: &Delivery) -> std::io::Result<()> {
        if let Sink::Kafka(topic) = &self.sink {
            let record = kafka::record(
                Some(delivery.repository.clone().into_bytes()),
                delivery.envelope.clone().into_bytes(),
                [
                    ("delivery".to_owned(), delivery.id.clone().into_bytes()),
                    ("event".to_owned(), delivery.event.clone().into_bytes()),
                ]
                .into(),
            );
            return topic.produce(vec![record]).await;
        }
        let envelope = delivery.envelope.clone();
        tokio::task::spawn_blocking(move || self.write(&envelope))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|written| written)
    }

    /// Writes one envelope line and makes it durable before returning.
    fn write(&self, envelope: &str) -> std::io::Result<()> {
        match &self.sink {
            Sink::Kafka(_) => Err(std::io::Error::other("a Kafka sink is not written to")),
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{envelope}")?;
                out.flush()
            }
            Sink::File(file) => {
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                writeln!(file, "{envelope}")?;
                file.sync_data()
            }
        }
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
        let now = proxy::now();
        let delivery = match route.receive(&request, self.webhooks.secrets.as_ref(), now) {
            Ok(delivery) => delivery,
            Err(rejection) => return Ok(refuse(rejection, None)),
        };
        let repository = Some(delivery.repository.as_str());
        if !self.webhooks.seen().first_time(&delivery.id, now) {
            return Ok(refuse(WebhookRejection::Duplicate, repository));
        }
        match Arc::clone(&self.webhooks).relay(&delivery).await {
            Ok(()) => Ok(answer(DeliveryOutcome::Accepted, repository)),
            Err(e) => {
                eprintln!("tollgate: webhook sink: {e}");
                // Not relayed, so not seen: a redelivery from Gogs' UI must go through.
                self.webhooks.seen().forget(&delivery.id);
                Ok(answer(DeliveryOutcome::SinkUnavailable, repository))
            }
        }
    }
}
