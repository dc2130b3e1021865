//! One request: decide, then answer the denial or stream the request to the origin.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyDataStream, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use policy_core::forwarding::{client_address_headers, connection_tokens, may_forward, may_return};
use policy_core::{OwnedRequest, RateState, RequestFacts, SecretStore, UnixTime};

use crate::audit::AuditLog;
use crate::jwks::KeyCache;
use crate::metrics::Metrics;
use crate::policy_host::{Outcome, PolicyHost};

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub struct Shared {
    pub policy: PolicyHost,
    pub origin: String,
    pub keys: KeyCache,
    pub rate: Mutex<HashMap<String, RateState>>,
    pub audit: AuditLog,
    pub metrics: Metrics,
    pub client: reqwest::Client,
    /// One permit per request body buffered at once.
    pub body_slots: tokio::sync::Semaphore,
}

pub struct SecretMap(pub HashMap<String, String>);

impl SecretStore for SecretMap {
    fn secret(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.0
            .get(name)
            .map(|v| std::borrow::Cow::Borrowed(v.as_str()))
    }
}

pub fn now() -> UnixTime {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    UnixTime::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

/// Decides with the current keys; an unknown key prompts one bounded JWKS refresh and a
/// second decision, so key rotation at the issuer is picked up without a restart.
async fn decide(shared: &Shared, request: &OwnedRequest, now: UnixTime) -> Outcome {
    let outcome = shared
        .policy
        .decide(&shared.keys, request, now, &shared.rate, &shared.metrics);
    let key_miss =
        outcome.reason == "token_unknown_key" || outcome.reason == "token_issuer_keys_unavailable";
    if key_miss && shared.keys.refresh_on_miss(&shared.metrics).await {
        return shared
            .policy
            .decide(&shared.keys, request, now, &shared.rate, &shared.metrics);
    }
    outcome
}

pub async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    shared.metrics.in_flight(1);
    let response = handle_inner(&shared, peer, request).await;
    shared.metrics.in_flight(-1);
    Ok(response)
}

async fn handle_inner(
    shared: &Shared,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let mut owned = OwnedRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        client_ip: Some(peer.ip().to_string()),
        ..OwnedRequest::default()
    };
    for (name, value) in &parts.headers {
        let Ok(value) = value.to_str() else {
            // Refuse rather than drop: a header we cannot read may be one Gogs reads.
            return full(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                "header values must be visible ASCII\n",
            );
        };
        owned
            .headers
            .entry(name.as_str().to_owned())
            .or_default()
            .0
            .push(value.to_owned());
    }

    // LFS batch bodies decide the access they need: read them (bounded), then forward
    // the same bytes. Every other body streams through untouched. A request no body could
    // get through (no or a forged credential, no grant at all) is refused unread, and
    // only so many bodies are held at once.
    let wants_body = RequestFacts::wants_body(&owned.method, &owned.path);
    if wants_body {
        if let Some(outcome) =
            shared
                .policy
                .refusal_before_body(&shared.keys, &owned, now(), &shared.metrics)
        {
            shared
                .metrics
                .decision(outcome.status, &outcome.reason, started.elapsed());
            shared.audit.write(&outcome.audit);
            return deny(&outcome);
        }
    }
    let _body_slot = if wants_body {
        match shared.body_slots.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => {
                shared.metrics.shed();
                let mut busy = full(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/vnd.git-lfs+json",
                    "{\"message\":\"too many LFS batch requests in flight; retry shortly\"}",
                );
                busy.headers_mut()
                    .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
                return busy;
            }
        }
    } else {
        None
    };
    let (buffered, streaming) = if wants_body {
        match Limited::new(body, RequestFacts::LFS_BATCH_BODY_LIMIT)
            .collect()
            .await
        {
            Ok(collected) => (Some(collected.to_bytes()), None),
            Err(_) => {
                return full(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "application/vnd.git-lfs+json",
                    "{\"message\":\"LFS batch request too large or interrupted\"}",
                )
            }
        }
    } else {
        (None, Some(body))
    };
    owned.body = buffered
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned());

    let now = now();
    let outcome = decide(shared, &owned, now).await;
    shared
        .metrics
        .decision(outcome.status, &outcome.reason, started.elapsed());
    shared.audit.write(&outcome.audit);

    if !outcome.allow {
        return deny(&outcome);
    }
    forward(shared, &parts, peer, &outcome, buffered, streaming).await
}

fn deny(outcome: &Outcome) -> Response<Body> {
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = full(
        status,
        &outcome.denial_content_type,
        outcome.denial_body.clone(),
    );
    for (name, value) in &outcome.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

async fn forward(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    peer: SocketAddr,
    outcome: &Outcome,
    buffered: Option<Bytes>,
    streaming: Option<Incoming>,
) -> Response<Body> {
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let url = format!("{}{}", shared.origin, path_and_query);
    let mut builder = shared.client.request(parts.method.clone(), &url);
    let connection = connection_tokens(
        parts
            .headers
            .get_all("connection")
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    for (name, value) in &parts.headers {
        if may_forward(name.as_str(), &connection, &outcome.strip) {
            builder = builder.header(name, value);
        }
    }
    for (name, value) in &outcome.set {
        builder = builder.header(name, value);
    }
    for (name, value) in client_address_headers(&peer.ip().to_string()) {
        builder = builder.header(name, value);
    }
    let body = match (buffered, streaming) {
        (Some(bytes), _) => reqwest::Body::from(bytes),
        (None, Some(incoming)) => reqwest::Body::wrap_stream(BodyDataStream::new(incoming)),
        (None, None) => reqwest::Body::from(Bytes::new()),
    };
    let upstream = match builder.body(body).send().await {
        Ok(upstream) => upstream,
        Err(e) => {
            shared.metrics.origin_error();
            eprintln!("tollgate: origin request failed: {e}");
            return full(
                StatusCode::BAD_GATEWAY,
                "text/plain; charset=utf-8",
                "origin unavailable\n",
            );
        }
    };
    let mut response = Response::builder().status(upstream.status());
    let connection = connection_tokens(
        upstream
            .headers()
            .get_all("connection")
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    for (name, value) in upstream.headers() {
        if may_return(name.as_str(), &connection) {
            response = response.header(name, value);
        }
    }
    let stream = upstream
        .bytes_stream()
        .map_ok(Frame::data)
        .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) });
    response
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|_| {
            full(
                StatusCode::BAD_GATEWAY,
                "text/plain; charset=utf-8",
                "bad origin response\n",
            )
        })
}
