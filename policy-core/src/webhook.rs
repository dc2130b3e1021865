//! Gogs webhooks received at the edge (`[[webhook]]`): a delivery is accepted only with a
//! valid `X-Gogs-Signature` (lowercase hex HMAC-SHA256 of the JSON payload, keyed by the
//! hook's secret), an event and a repository the webhook accepts, and a body within its
//! limit. Accepted deliveries become a documented envelope for the host to relay; the
//! host drops repeats ([`SeenDeliveries`]) and answers 2xx only once its sink has the
//! envelope, because Gogs never retries a delivery.

use alloc::{collections::BTreeMap, string::String, vec::Vec};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::origin::SecretStore;
use crate::route::RepoName;
use crate::scope::RepoPattern;
use crate::time::UnixTime;

/// One `[[webhook]]`.
#[derive(Clone, Debug)]
pub(crate) struct Webhook {
    pub(crate) name: String,
    pub(crate) path: String,
    /// The secret (by name, from the host's secrets) that keys the signature.
    pub(crate) secret: String,
    /// Accepted `X-Gogs-Event`s; empty: every event.
    pub(crate) events: Vec<String>,
    pub(crate) repos: Vec<RepoPattern>,
    pub(crate) max_body_bytes: usize,
}

/// A delivery as the host received it.
#[derive(Clone, Copy, Debug)]
pub struct WebhookRequest<'a> {
    pub method: &'a str,
    /// Lowercase names.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

impl<'a> WebhookRequest<'a> {
    fn header(&self, name: &str) -> Option<&'a str> {
        header_once(self.headers, name)
    }
}

/// The value of header `name` when it is sent exactly once: a repeated header cannot be
/// read unambiguously.
fn header_once<'a>(headers: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    let mut values = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v);
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

/// Why a delivery was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookRejection {
    /// Not a POST.
    MethodNotAllowed,
    /// Over the webhook's `max_body_bytes`.
    TooLarge,
    /// No `X-Gogs-Signature`, `X-Gogs-Event` or `X-Gogs-Delivery`.
    MissingHeaders,
    /// The signature does not verify (or the secret is not configured: fail closed).
    BadSignature,
    /// The payload is not the JSON object Gogs sends, or names no repository.
    BadPayload,
    /// An event the webhook does not accept.
    EventNotAccepted,
    /// A repository the webhook does not accept.
    RepositoryNotAccepted,
    /// A delivery id already received within the window.
    Duplicate,
}

impl WebhookRejection {
    /// A stable code, for audit records and answers.
    pub fn code(self) -> &'static str {
        match self {
            WebhookRejection::MethodNotAllowed => "method_not_allowed",
            WebhookRejection::TooLarge => "too_large",
            WebhookRejection::MissingHeaders => "missing_headers",
            WebhookRejection::BadSignature => "bad_signature",
            WebhookRejection::BadPayload => "bad_payload",
            WebhookRejection::EventNotAccepted => "event_not_accepted",
            WebhookRejection::RepositoryNotAccepted => "repository_not_accepted",
            WebhookRejection::Duplicate => "duplicate",
        }
    }

    /// The status to answer with.
    pub fn status(self) -> u16 {
        match self {
            WebhookRejection::MethodNotAllowed => 405,
            WebhookRejection::TooLarge => 413,
            WebhookRejection::MissingHeaders | WebhookRejection::BadPayload => 400,
            WebhookRejection::BadSignature => 401,
            WebhookRejection::EventNotAccepted | WebhookRejection::RepositoryNotAccepted => 403,
            WebhookRejection::Duplicate => 409,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            WebhookRejection::MethodNotAllowed => "webhooks are delivered with POST",
            WebhookRejection::TooLarge => "the delivery is larger than this webhook accepts",
            WebhookRejection::MissingHeaders => {
                "X-Gogs-Event, X-Gogs-Delivery and X-Gogs-Signature are each required once"
            }
            WebhookRejection::BadSignature => "the signature does not match the payload",
            WebhookRejection::BadPayload => "the payload is not a Gogs event naming a repository",
            WebhookRejection::EventNotAccepted => "this webhook does not accept that event",
            WebhookRejection::RepositoryNotAccepted => {
                "this webhook does not accept events of that repository"
            }
            WebhookRejection::Duplicate => "this delivery was already received",
        }
    }
}

/// How a delivery ended: what its audit record says and its answer carries, the same on
/// every host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Relayed: the sink has the envelope (202).
    Accepted,
    Refused(WebhookRejection),
    /// The body did not arrive within the host's body timeout (408).
    BodyTimeout,
    /// The sink did not take the envelope (503); the delivery is not remembered as seen,
    /// so a redelivery from Gogs' settings page goes through.
    SinkUnavailable,
}

impl DeliveryOutcome {
    pub fn status(self) -> u16 {
        match self {
            DeliveryOutcome::Accepted => 202,
            DeliveryOutcome::Refused(rejection) => rejection.status(),
            DeliveryOutcome::BodyTimeout => 408,
            DeliveryOutcome::SinkUnavailable => 503,
        }
    }

    /// A stable code, for audit records and answers.
    pub fn code(self) -> &'static str {
        match self {
            DeliveryOutcome::Accepted => "accepted",
            DeliveryOutcome::Refused(rejection) => rejection.code(),
            DeliveryOutcome::BodyTimeout => "body_timeout",
            DeliveryOutcome::SinkUnavailable => "sink_unavailable",
        }
    }

    /// The body to answer with (`application/json`): `{"result":CODE}` and a newline.
    pub fn answer_body(self) -> String {
        alloc::format!("{{\"result\":\"{}\"}}\n", self.code())
    }
}

/// The audit record of one delivery, accepted or refused.
#[derive(Clone, Debug, Serialize)]
pub struct DeliveryAudit<'a> {
    /// The host's id for the request, when it gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// The `[[webhook]]` the delivery came to.
    pub webhook: &'a str,
    /// `X-Gogs-Delivery`, `X-Gogs-Event` as sent (when sent once).
    pub delivery: Option<&'a str>,
    pub event: Option<&'a str>,
    /// `owner/name`, once the payload named an accepted repository.
    pub repository: Option<&'a str>,
    pub status: u16,
    pub reason: &'static str,
}

impl<'a> DeliveryAudit<'a> {
    /// The record of a delivery to `webhook` with request `headers` (lowercase names)
    /// that ended in `outcome` at `now`.
    pub fn new(
        id: Option<&'a str>,
        now: UnixTime,
        webhook: &'a str,
        headers: &'a [(&'a str, &'a str)],
        repository: Option<&'a str>,
        outcome: DeliveryOutcome,
    ) -> Self {
        DeliveryAudit {
            id,
            time_ms: now.as_nanos() / 1_000_000,
            webhook,
            delivery: header_once(headers, "x-gogs-delivery"),
            event: header_once(headers, "x-gogs-event"),
            repository,
            status: outcome.status(),
            reason: outcome.code(),
        }
    }

    /// The record as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An accepted delivery, ready to relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The `[[webhook]]` that accepted it.
    pub webhook: String,
    /// `X-Gogs-Delivery`.
    pub id: String,
    pub event: String,
    /// `owner/name`: the message key, so one repository's events stay in order.
    pub repository: String,
    /// The envelope to relay, one line of JSON (see the README for its fields).
    pub envelope: String,
}

/// The envelope relayed for each delivery.
#[derive(Serialize)]
struct Envelope<'a> {
    delivery: &'a str,
    event: &'a str,
    repository: &'a str,
    #[serde(rename = "ref")]
    git_ref: Option<&'a str>,
    before: Option<&'a str>,
    after: Option<&'a str>,
    pusher: Option<&'a str>,
    received_ms: u64,
    webhook: &'a str,
    /// The payload exactly as signed.
    payload: &'a RawValue,
}

/// What the envelope reads from a payload; the rest is relayed as it came.
#[derive(serde::Deserialize)]
struct Summary<'a> {
    #[serde(borrow)]
    repository: Option<RepositoryField<'a>>,
    #[serde(borrow, rename = "ref")]
    git_ref: Option<&'a str>,
    #[serde(borrow)]
    before: Option<&'a str>,
    #[serde(borrow)]
    after: Option<&'a str>,
    #[serde(borrow)]
    pusher: Option<UserField<'a>>,
}

#[derive(serde::Deserialize)]
struct RepositoryField<'a> {
    #[serde(borrow)]
    full_name: &'a str,
}

#[derive(serde::Deserialize)]
struct UserField<'a> {
    #[serde(borrow)]
    username: Option<&'a str>,
}

impl Webhook {
    /// Checks one delivery at `now`; `Ok` is the delivery to relay.
    pub(crate) fn receive(
        &self,
        request: &WebhookRequest<'_>,
        secrets: &dyn SecretStore,
        now: UnixTime,
    ) -> Result<Delivery, WebhookRejection> {
        if !request.method.eq_ignore_ascii_case("POST") {
            return Err(WebhookRejection::MethodNotAllowed);
        }
        if request.body.len() > self.max_body_bytes {
            return Err(WebhookRejection::TooLarge);
        }
        let (Some(event), Some(id), Some(signature)) = (
            request.header("x-gogs-event"),
            request.header("x-gogs-delivery"),
            request.header("x-gogs-signature"),
        ) else {
            return Err(WebhookRejection::MissingHeaders);
        };
        // Gogs signs the JSON payload: the body itself, or a form's `payload` field.
        let form = request
            .header("content-type")
            .is_some_and(|t| t.trim().starts_with("application/x-www-form-urlencoded"));
        let payload = if form {
            form_field(request.body, "payload").ok_or(WebhookRejection::BadPayload)?
        } else {
            String::from_utf8(request.body.to_vec()).map_err(|_| WebhookRejection::BadPayload)?
        };
        let secret = secrets
            .secret(&self.secret)
            .ok_or(WebhookRejection::BadSignature)?;
        let expected = hex::decode(signature.trim()).map_err(|_| WebhookRejection::BadSignature)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|_| WebhookRejection::BadSignature)?;
        mac.update(payload.as_bytes());
        // Constant time: a forger learns nothing from how long the refusal took.
        mac.verify_slice(&expected)
            .map_err(|_| WebhookRejection::BadSignature)?;

        if !self.events.is_empty() && !self.events.iter().any(|e| e == event) {
            return Err(WebhookRejection::EventNotAccepted);
        }
        let raw: &RawValue =
            serde_json::from_str(&payload).map_err(|_| WebhookRejection::BadPayload)?;
        let summary: Summary<'_> =
            serde_json::from_str(raw.get()).map_err(|_| WebhookRejection::BadPayload)?;
        let full_name = summary
            .repository
            .map(|r| r.full_name)
            .ok_or(WebhookRejection::BadPayload)?;
        let repo = RepoName::parse(full_name).ok_or(WebhookRejection::BadPayload)?;
        if !self.repos.iter().any(|p| p.matches(&repo)) {
            return Err(WebhookRejection::RepositoryNotAccepted);
        }
        let repository = alloc::string::ToString::to_string(&repo);
        // One line per envelope: the payload's layout (Gogs indents it) is dropped, its
        // members, their order and every value kept as signed.
        let payload =
            RawValue::from_string(compact(raw.get())).map_err(|_| WebhookRejection::BadPayload)?;
        let envelope = Envelope {
            delivery: id,
            event,
            repository: &repository,
            git_ref: summary.git_ref,
            before: summary.before,
            after: summary.after,
            pusher: summary.pusher.and_then(|p| p.username),
            received_ms: now.as_nanos() / 1_000_000,
            webhook: &self.name,
            payload: &payload,
        };
        let envelope =
            serde_json::to_string(&envelope).map_err(|_| WebhookRejection::BadPayload)?;
        Ok(Delivery {
            webhook: self.name.clone(),
            id: String::from(id),
            event: String::from(event),
            repository,
            envelope,
        })
    }
}

/// `json` without the whitespace between its tokens (strings untouched).
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// The value of `name` in a form-encoded body (`+` is a space, then percent-decoding).
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let body = core::str::from_utf8(body).ok()?;
    let mut found = None;
    for pair in body.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == name {
            if found.is_some() {
                // Twice: which one Gogs signed cannot be told.
                return None;
            }
            let spaced = value.replace('+', " ");
            found = Some(
                percent_encoding::percent_decode_str(&spaced)
                    .decode_utf8()
                    .ok()?
                    .into_owned(),
            );
        }
    }
    found
}

/// Delivery ids received within a window, so a replayed delivery is refused: the host keeps
/// one per process and asks it for every accepted delivery. Bounded: past `capacity` ids,
/// the oldest are forgotten first.
#[derive(Debug)]
pub struct SeenDeliveries {
    window_secs: u64,
    capacity: usize,
    /// Id to the time it was first received, and the same ordered by time.
    by_id: BTreeMap<String, u64>,
    by_time: BTreeMap<(u64, String), ()>,
}

impl SeenDeliveries {
    pub fn new(window_secs: u64, capacity: usize) -> Self {
        SeenDeliveries {
            window_secs,
            capacity: capacity.max(1),
            by_id: BTreeMap::new(),
            by_time: BTreeMap::new(),
        }
    }

    /// Records `id` at `now`; `false` when it was already received within the window.
    pub fn first_time(&mut self, id: &str, now: UnixTime) -> bool {
        let now = now.as_nanos() / 1_000_000_000;
        let horizon = now.saturating_sub(self.window_secs);
        while let Some((at, _)) = self
            .by_time
            .first_key_value()
            .map(|((at, old), ())| (*at, old))
        {
            if at >= horizon {
                break;
            }
            self.forget_oldest();
        }
        if self.by_id.contains_key(id) {
            return false;
        }
        if self.by_id.len() >= self.capacity {
            self.forget_oldest();
        }
        self.by_id.insert(String::from(id), now);
        self.by_time.insert((now, String::from(id)), ());
        true
    }

    fn forget_oldest(&mut self) {
        if let Some(((_, old), ())) = self.by_time.pop_first() {
            self.by_id.remove(&old);
        }
    }

    /// Forgets `id`, for a delivery its sink could not take (Gogs may be asked to redeliver).
    pub fn forget(&mut self, id: &str) {
        if let Some(at) = self.by_id.remove(id) {
            self.by_time.remove(&(at, String::from(id)));
        }
    }
}

impl crate::Engine {
    /// The `[[webhook]]` served at `path`, if any: hosts hand such requests to
    /// [`WebhookRoute::receive`] instead of deciding them, reading at most
    /// [`WebhookRoute::max_body_bytes`] of the body.
    pub fn webhook_at(&self, path: &str) -> Option<WebhookRoute<'_>> {
        self.webhooks
            .iter()
            .find(|w| w.path == path)
            .map(|webhook| WebhookRoute { webhook })
    }
}

/// A webhook path a request arrived at.
#[derive(Clone, Copy, Debug)]
pub struct WebhookRoute<'e> {
    webhook: &'e Webhook,
}

impl WebhookRoute<'_> {
    pub fn name(&self) -> &str {
        &self.webhook.name
    }

    pub fn max_body_bytes(&self) -> usize {
        self.webhook.max_body_bytes
    }

    /// Checks one delivery; see [`WebhookRejection`] for every refusal.
    pub fn receive(
        &self,
        request: &WebhookRequest<'_>,
        secrets: &dyn SecretStore,
        now: UnixTime,
    ) -> Result<Delivery, WebhookRejection> {
        self.webhook.receive(request, secrets, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Engine;

    const POLICY: &str = "[[webhook]]\nname = \"events\"\npath = \"/_tollgate/hooks/gogs\"\nsecret = \"hook-secret\"\nevents = [\"push\", \"release\"]\nrepos = \"acme/*\"\nmax_body_bytes = 4096\n";
    const PUSH: &str = r#"{
  "ref": "refs/heads/main",
  "before": "0000000000000000000000000000000000000000",
  "after": "4d3c2b1a4d3c2b1a4d3c2b1a4d3c2b1a4d3c2b1a",
  "repository": {"id": 1, "full_name": "acme/app"},
  "pusher": {"username": "alice"}
}"#;

    struct Secret;
    impl SecretStore for Secret {
        fn secret(&self, name: &str) -> Option<alloc::borrow::Cow<'_, str>> {
            (name == "hook-secret").then_some(alloc::borrow::Cow::Borrowed("s3cret"))
        }
    }

    /// What Gogs sends in `X-Gogs-Signature`: lowercase hex HMAC-SHA256 of the JSON.
    fn sign(json: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(json.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn receive(
        engine: &Engine,
        method: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Delivery, WebhookRejection> {
        let route = engine.webhook_at("/_tollgate/hooks/gogs").unwrap();
        let request = WebhookRequest {
            method,
            headers,
            body,
        };
        route.receive(&request, &Secret, UnixTime::from_secs(1_800_000_000))
    }

    #[test]
    fn a_signed_push_becomes_an_envelope_and_anything_else_is_refused() {
        let engine = Engine::from_toml(POLICY, "t.toml").unwrap();
        assert!(engine.webhook_at("/_tollgate/hooks/other").is_none());
        let signature = sign(PUSH);
        let headers = [
            ("content-type", "application/json"),
            ("x-gogs-event", "push"),
            ("x-gogs-delivery", "f8c5a7e2-0000-4000-8000-000000000001"),
            ("x-gogs-signature", signature.as_str()),
        ];
        let delivery = receive(&engine, "POST", &headers, PUSH.as_bytes()).unwrap();
        assert_eq!(delivery.repository, "acme/app");
        let envelope: serde_json::Value = serde_json::from_str(&delivery.envelope).unwrap();
        assert_eq!(envelope["ref"], "refs/heads/main");
        assert_eq!(envelope["pusher"], "alice");
        assert_eq!(envelope["received_ms"], 1_800_000_000_000u64);
        assert_eq!(envelope["payload"]["repository"]["id"], 1);

        // The same payload as a form, signed over the JSON as Gogs signs it.
        let form = alloc::format!(
            "payload={}",
            percent_encoding::utf8_percent_encode(PUSH, percent_encoding::NON_ALPHANUMERIC)
        );
        let mut form_headers = headers;
        form_headers[0] = ("content-type", "application/x-www-form-urlencoded");
        assert!(receive(&engine, "POST", &form_headers, form.as_bytes()).is_ok());

        let tampered = PUSH.replace("alice", "mallory");
        let refusals = [
            (
                receive(&engine, "GET", &headers, PUSH.as_bytes()),
                WebhookRejection::MethodNotAllowed,
            ),
            (
                receive(&engine, "POST", &headers, tampered.as_bytes()),
                WebhookRejection::BadSignature,
            ),
            (
                receive(&engine, "POST", &headers[..3], PUSH.as_bytes()),
                WebhookRejection::MissingHeaders,
            ),
            (
                receive(&engine, "POST", &headers, &[b' '; 4097]),
                WebhookRejection::TooLarge,
            ),
        ];
        for (got, expected) in refusals {
            assert_eq!(got, Err(expected));
        }
        let other_repo = PUSH.replace("acme/app", "other/app");
        let signature = sign(&other_repo);
        let mut wrong = headers;
        wrong[3] = ("x-gogs-signature", signature.as_str());
        assert_eq!(
            receive(&engine, "POST", &wrong, other_repo.as_bytes()),
            Err(WebhookRejection::RepositoryNotAccepted)
        );
        let mut issue = headers;
        issue[1] = ("x-gogs-event", "issues");
        assert_eq!(
            receive(&engine, "POST", &issue, PUSH.as_bytes()),
            Err(WebhookRejection::EventNotAccepted)
        );
    }

    #[test]
    fn a_delivery_id_is_taken_once_within_the_window() {
        let mut seen = SeenDeliveries::new(3600, 2);
        let at = |secs: u64| UnixTime::from_secs(1_800_000_000 + secs);
        assert!(seen.first_time("a", at(0)));
        assert!(!seen.first_time("a", at(10)));
        assert!(seen.first_time("b", at(20)));
        // Over capacity: the oldest is forgotten first.
        assert!(seen.first_time("c", at(30)));
        assert!(seen.first_time("a", at(40)));
        assert!(!seen.first_time("c", at(50)), "still within the window");
        // Past the window it is forgotten.
        assert!(seen.first_time("c", at(5000)));
        assert!(!seen.first_time("c", at(5001)));
        // A delivery whose sink failed is forgotten at once.
        seen.forget("c");
        assert!(seen.first_time("c", at(5002)));
    }
}
