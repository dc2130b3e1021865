//! Gogs webhook deliveries on the native hosts (serve, the Azure handler): where accepted
//! deliveries go ([`WebhookSink`], opened as a [`Relay`]), and what follows once the host
//! has read a delivery's body ([`Deliveries::receive`]): the core checks it, a repeat of a
//! delivery id is dropped, the envelope is relayed, and only a relayed delivery is
//! accepted, since Gogs never retries. The host reads the body within its limits, answers
//! with the outcome and writes the audit record.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use policy_core::{
    Delivery, DeliveryOutcome, SecretStore, SeenDeliveries, UnixTime, WebhookRejection,
    WebhookRequest, WebhookRoute,
};

use crate::kafka;

/// How long a delivery id is remembered, and how many at most.
const SEEN_WINDOW_SECS: u64 = 24 * 3600;
const SEEN_CAPACITY: usize = 100_000;

/// Where accepted deliveries go: one JSON envelope per line, or one Kafka record each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookSink {
    Stdout,
    File(PathBuf),
    /// `kafka[s]://HOST:PORT/TOPIC[?...]`: an existing topic, keyed by repository.
    Kafka(kafka::Address),
}

impl WebhookSink {
    /// `stdout` (or `-`), `kafka[s]://HOST:PORT/TOPIC[?...]`, or a file path.
    pub fn parse(text: &str) -> Result<WebhookSink, String> {
        if text == "stdout" || text == "-" {
            return Ok(WebhookSink::Stdout);
        }
        match kafka::parse_address(text) {
            None => Ok(WebhookSink::File(text.into())),
            Some(Ok(address)) => Ok(WebhookSink::Kafka(address)),
            Some(Err(e)) => Err(e),
        }
    }

    /// Takes a Kafka sink's SASL password from the host's secrets, by name.
    pub fn resolve(&mut self, secret: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        match self {
            WebhookSink::Kafka(address) => address.resolve(secret),
            _ => Ok(()),
        }
    }
}

/// An opened sink.
#[derive(Debug)]
pub enum Relay {
    Stdout,
    File(Mutex<std::fs::File>),
    Kafka(kafka::Topic),
}

impl Relay {
    /// Opens `sink`: a file for appending; a Kafka topic must exist and its broker answer
    /// now.
    pub async fn open(sink: &WebhookSink) -> Result<Relay, String> {
        Ok(match sink {
            WebhookSink::Stdout => Relay::Stdout,
            WebhookSink::File(path) => Relay::File(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            )),
            WebhookSink::Kafka(address) => Relay::Kafka(kafka::connect(address).await?),
        })
    }

    /// Produces `delivery` to the Kafka topic, keyed by repository; `Ok` once the broker
    /// acknowledged it. For the other sinks, see [`Relay::write`].
    pub async fn produce(topic: &kafka::Topic, delivery: &Delivery) -> std::io::Result<()> {
        let record = kafka::record(
            Some(delivery.repository.clone().into_bytes()),
            delivery.envelope.clone().into_bytes(),
            [
                ("delivery".to_owned(), delivery.id.clone().into_bytes()),
                ("event".to_owned(), delivery.event.clone().into_bytes()),
            ]
            .into(),
        );
        topic.produce(vec![record]).await
    }

    /// Writes one envelope line to stdout or the file, and makes it durable before
    /// returning (it blocks: async hosts call it where blocking is allowed).
    pub fn write(&self, envelope: &str) -> std::io::Result<()> {
        match self {
            Relay::Kafka(_) => Err(std::io::Error::other("a Kafka sink is not written to")),
            Relay::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{envelope}")?;
                out.flush()
            }
            Relay::File(file) => {
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                writeln!(file, "{envelope}")?;
                file.sync_data()
            }
        }
    }
}

/// The delivery ids seen lately, shared by a host's requests.
#[derive(Debug)]
pub struct Deliveries {
    seen: Mutex<SeenDeliveries>,
}

impl Default for Deliveries {
    fn default() -> Self {
        Deliveries {
            seen: Mutex::new(SeenDeliveries::new(SEEN_WINDOW_SECS, SEEN_CAPACITY)),
        }
    }
}

/// How one delivery ended.
#[derive(Debug)]
pub struct Received {
    pub outcome: DeliveryOutcome,
    /// `owner/name`, once the core accepted the payload's repository.
    pub repository: Option<String>,
    /// Why the sink did not take it, for the host's log.
    pub sink_error: Option<std::io::Error>,
}

impl Deliveries {
    fn seen(&self) -> std::sync::MutexGuard<'_, SeenDeliveries> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `request` (its whole body read) against `route`, drops a repeat, and relays
    /// the delivery with `relay`, which resolves once the sink has it. A delivery the sink
    /// did not take is forgotten, so a redelivery from Gogs' settings page goes through.
    pub async fn receive<R, F>(
        &self,
        route: &WebhookRoute<'_>,
        request: &WebhookRequest<'_>,
        secrets: &(dyn SecretStore + Sync),
        now: UnixTime,
        relay: R,
    ) -> Received
    where
        R: FnOnce(Delivery) -> F,
        F: Future<Output = std::io::Result<()>>,
    {
        let delivery = match route.receive(request, secrets, now) {
            Ok(delivery) => delivery,
            Err(rejection) => return refused(rejection, None),
        };
        let (id, repository) = (delivery.id.clone(), Some(delivery.repository.clone()));
        if !self.seen().first_time(&id, now) {
            return refused(WebhookRejection::Duplicate, repository);
        }
        match relay(delivery).await {
            Ok(()) => Received {
                outcome: DeliveryOutcome::Accepted,
                repository,
                sink_error: None,
            },
            Err(e) => {
                self.seen().forget(&id);
                Received {
                    outcome: DeliveryOutcome::SinkUnavailable,
                    repository,
                    sink_error: Some(e),
                }
            }
        }
    }
}

fn refused(rejection: WebhookRejection, repository: Option<String>) -> Received {
    Received {
        outcome: DeliveryOutcome::Refused(rejection),
        repository,
        sink_error: None,
    }
}
