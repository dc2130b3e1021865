//! One request: decide, then answer the denial or stream the request to the origin.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::origin_io::StallingWritesFail;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use policy_core::forwarding::{client_address_headers, connection_tokens, may_forward, may_return};
use policy_core::{Decision, RequestFacts, UnixTime, Verdict};
use tollgate_host_kit::{Decided, FetchReport, Fetched, Gate, Ingested, ShardedRates};

use crate::exchange::{next_id, Direction, Exchange, Failure, Metered};
use crate::metrics::{Limit, Metrics};
use crate::policy_url::PolicyUrl;
use crate::reload::{BoxedDecider, Reloader};
use crate::webhooks::Webhooks;
use tollgate_host_kit::audit_log::AuditLog;
use tollgate_host_kit::request_id;
use tollgate_host_kit::RedisRates;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;
pub type OriginClient = Client<hyper_rustls::HttpsConnector<StallingWritesFail>, Body>;

/// Where allowed requests go: the origin's scheme and authority, and the path it is
/// mounted under (empty, or `/gogs` without a trailing slash).
#[derive(Debug)]
pub struct Origin {
    pub scheme: hyper::http::uri::Scheme,
    pub authority: hyper::http::uri::Authority,
    pub base_path: String,
}

impl Origin {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("origin `{url}`: {e}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(format!("origin `{url}`: needs a scheme and a host"));
        };
        if uri.query().is_some() {
            return Err(format!("origin `{url}`: may not have a query"));
        }
        Ok(Origin {
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    fn uri(&self, path_and_query: &str) -> Option<Uri> {
        let path_and_query = if self.base_path.is_empty() {
            path_and_query.to_owned()
        } else {
            format!("{}{path_and_query}", self.base_path)
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .ok()
    }
}

pub struct Shared {
    /// The policy deciding and its keys; a reload swaps in a new one.
    pub gate: ArcSwap<Gate<BoxedDecider>>,
    /// Reloads of the policy file, when the policy came from one.
    pub reloader: Option<Reloader>,
    /// Where new policies are pulled from (`--policy-url`).
    pub policy_url: Option<PolicyUrl>,
    /// Gogs webhooks the policy receives.
    pub webhooks: Arc<Webhooks>,
    pub rates: ShardedRates,
    pub origin: Origin,
    pub audit: AuditLog,
    pub audit_required: bool,
    pub metrics: Metrics,
    /// What serve fetches on the policy's behalf: JWKS documents, `--policy-url`, and a
    /// browser sign-in's token request. No redirects, 10 s.
    pub fetch_client: reqwest::Client,
    /// One permit per request body buffered at once.
    pub body_slots: tokio::sync::Semaphore,
    /// One permit per request being handled.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub timeouts: Timeouts,
    /// Rate state shared through Redis, instead of `rates`.
    pub redis: Option<RedisRates>,
}

/// How long serve waits on each side (see [`crate::ServeConfig`]).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Longest a request (or the start) waits on a JWKS fetch it prompted; the background
    /// refresh waits longer, so a hanging issuer holds no request for more than this.
    pub jwks_request: Duration,
    pub origin_header: Duration,
    pub stream_idle: Duration,
    pub lfs_body: Duration,
}

impl Shared {
    /// Fetches one JWKS document for the key ring: no redirects, 10 s, at most 1 MiB.
    pub fn fetch_jwks(&self, url: String) -> impl std::future::Future<Output = Fetched> + '_ {
        const MAX_JWKS_BYTES: usize = 1 << 20;
        async move {
            let response = self
                .fetch_client
                .get(&url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("answered {}", response.status()));
            }
            if response
                .content_length()
                .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
            {
                return Err("document over 1 MiB".into());
            }
            let bytes = response.bytes().await.map_err(|e| e.to_string())?;
            if bytes.len() > MAX_JWKS_BYTES {
                return Err("document over 1 MiB".into());
            }
            String::from_utf8(bytes.into()).map_err(|_| "document is not UTF-8".into())
        }
    }

    /// [`Shared::fetch_jwks`], given up after `timeouts.jwks_request`: for fetches a
    /// request waits on.
    pub fn fetch_jwks_promptly(
        &self,
        url: String,
    ) -> impl std::future::Future<Output = Fetched> + '_ {
        let limit = self.timeouts.jwks_request;
        async move {
            tokio::time::timeout(limit, self.fetch_jwks(url))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
        }
    }

    /// Counts and logs the key fetches a decision or the schedule made.
    pub fn report_fetches(&self, reports: &[FetchReport]) {
        for report in reports {
            self.metrics
                .jwks_fetch(&report.issuer, report.error.is_none());
            if let Some(error) = &report.error {
                eprintln!(
                    "tollgate: JWKS for issuer `{}` from {}: {error}",
                    report.issuer, report.url
                );
            }
        }
    }
}

pub fn now() -> UnixTime {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    UnixTime::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

pub fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn busy(content_type: &'static str, body: &'static str) -> Response<Body> {
    let mut response = full(StatusCode::SERVICE_UNAVAILABLE, content_type, body);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Handles one request; `client` is the worker thread's origin connection pool.
pub async fn handle(
    shared: Arc<Shared>,
    client: OriginClient,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let Ok(permit) = Arc::clone(&shared.in_flight).try_acquire_owned() else {
        shared.metrics.shed(Limit::InFlight);
        return Ok(busy(
            "text/plain; charset=utf-8",
            "too many requests in flight; retry shortly\n",
        ));
    };
    shared.metrics.in_flight(1);
    let exchange = Exchange::new(
        next_id(),
        client_request_id(request.headers()),
        Arc::clone(&shared),
        permit,
    );
    let response = handle_inner(&shared, &client, exchange, peer, request).await;
    shared.metrics.in_flight(-1);
    Ok(response)
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's `X-Request-Id`, when usable; otherwise serve uses the exchange's own id.
fn client_request_id(headers: &hyper::HeaderMap) -> Option<String> {
    request_id::from_client(
        headers
            .get_all(X_REQUEST_ID)
            .iter()
            .map(|v| v.to_str().unwrap_or_default()),
    )
}

/// What came of deciding one request.
enum Outcome {
    /// Answer this without forwarding.
    Answer(Response<Body>),
    /// Forward with the decision's header changes, and this body (the one read for the
    /// decision, or the client's streaming through).
    Forward(Box<Decision>, Body),
}

async fn handle_inner(
    shared: &Shared,
    client: &OriginClient,
    exchange: Arc<Exchange>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let body = match shared.webhook(&exchange.id, &parts, body).await {
        Ok(response) => return response,
        Err(body) => body,
    };
    let client_ip = peer.ip().to_string();
    match decide(shared, &exchange, &parts, &client_ip, body, started).await {
        Outcome::Answer(response) => response,
        Outcome::Forward(decision, body) => {
            prepare_for_origin(&shared.origin, &mut parts, &client_ip, &decision);
            if let Ok(value) = HeaderValue::from_str(&exchange.request_id) {
                parts.headers.insert(X_REQUEST_ID, value);
            }
            send(shared, client, exchange, Request::from_parts(parts, body)).await
        }
    }
}

/// Reads what the decision needs from the request (borrowing, not copying, its header
/// lines), decides, audits, and says what to do. `body` is read only when the decision
/// needs it (LFS batches); otherwise it streams on untouched.
async fn decide(
    shared: &Shared,
    exchange: &Exchange,
    parts: &Parts,
    client_ip: &str,
    body: Incoming,
    started: Instant,
) -> Outcome {
    let mut ingested = Ingested::new(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        Some(client_ip.to_owned()),
    );
    for (name, value) in &parts.headers {
        // Refuse rather than drop: a header we cannot read may be one Gogs reads.
        let read = match value.to_str() {
            Ok(value) => ingested.header(name.as_str(), value).is_ok(),
            Err(_) => false,
        };
        if !read {
            return Outcome::Answer(full(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                "header values must be visible ASCII\n",
            ));
        }
    }
    let fetch = |url| shared.fetch_jwks_promptly(url);
    // One policy decides the whole request, even if a reload lands meanwhile.
    let gate = shared.gate.load_full();
    if gate.decider.wants_entropy() {
        ingested.set_entropy(tollgate_host_kit::os_entropy());
    }

    if !ingested.wants_body() {
        let now = now();
        let facts = ingested.borrowed_facts();
        let send = |request| async move { shared.send_token_request(&request).await };
        let decided = gate
            .decide_signing_in(&facts, now, false, fetch, send)
            .await;
        return match conclude(shared, exchange, &facts, now, decided, started).await {
            Ok(decision) => Outcome::Forward(decision, body.map_err(BoxError::from).boxed()),
            Err(answer) => Outcome::Answer(*answer),
        };
    }

    // LFS batch bodies decide the access they need: read them (bounded), then forward the
    // same bytes. A request no body could get through is refused unread, and only so many
    // bodies are held at once.
    {
        let now = now();
        let facts = ingested.borrowed_facts();
        if let Some(refusal) = gate.refusal_before_body(&facts, now, fetch).await {
            let answer = conclude(shared, exchange, &facts, now, refusal, started).await;
            // A refusal is a denial, so `conclude` gives its answer.
            let refused = || {
                full(
                    StatusCode::FORBIDDEN,
                    "text/plain; charset=utf-8",
                    "refused\n",
                )
            };
            return Outcome::Answer(answer.err().map_or_else(refused, |answer| *answer));
        }
    }
    let Ok(_body_slot) = shared.body_slots.try_acquire() else {
        shared.metrics.shed(Limit::LfsBodies);
        return Outcome::Answer(busy(
            "application/vnd.git-lfs+json",
            "{\"message\":\"too many LFS batch requests in flight; retry shortly\"}",
        ));
    };
    let read = tokio::time::timeout(
        shared.timeouts.lfs_body,
        Limited::new(body, RequestFacts::LFS_BATCH_BODY_LIMIT).collect(),
    )
    .await;
    let Ok(read) = read else {
        exchange.fail(Failure::ClientStalled);
        return Outcome::Answer(full(
            StatusCode::REQUEST_TIMEOUT,
            "application/vnd.git-lfs+json",
            "{\"message\":\"LFS batch request body not received in time\"}",
        ));
    };
    let Some(bytes) = read.ok().map(|collected| collected.to_bytes()) else {
        return Outcome::Answer(full(
            StatusCode::PAYLOAD_TOO_LARGE,
            "application/vnd.git-lfs+json",
            "{\"message\":\"LFS batch request too large or interrupted\"}",
        ));
    };
    // Within the limit, so `set_body` takes it.
    let _ = ingested.set_body(Vec::from(bytes));
    let now = now();
    let facts = ingested.borrowed_facts();
    let decided = gate.decide(&facts, now, false, fetch).await;
    match conclude(shared, exchange, &facts, now, decided, started).await {
        Ok(decision) => {
            let bytes = Bytes::from(ingested.take_body().unwrap_or_default());
            Outcome::Forward(
                decision,
                Full::new(bytes).map_err(|never| match never {}).boxed(),
            )
        }
        Err(answer) => Outcome::Answer(*answer),
    }
}

/// Settles a decision: reports key fetches, resolves a pending rate limit in the shared
/// store, counts and audits it. `Ok` is an allowed request to forward; `Err` the answer
/// to give instead (the denial, or 503 when `--audit-required` cannot record it).
async fn conclude(
    shared: &Shared,
    exchange: &Exchange,
    facts: &RequestFacts<'_>,
    now: UnixTime,
    decided: Decided,
    started: Instant,
) -> Result<Box<Decision>, Box<Response<Body>>> {
    shared.report_fetches(&decided.fetches);
    if let Some(failure) = &decided.failure {
        eprintln!("tollgate: policy module failed: {}", failure.0);
    }
    let decision = match (&shared.redis, decided.verdict) {
        (Some(redis), Verdict::Pending(pending)) => {
            let (decision, unavailable) = redis.decide(&pending, None).await;
            if let Some(e) = unavailable {
                shared.metrics.rate_store_error();
                eprintln!("tollgate: rate store: {}", e.0);
            }
            decision
        }
        (_, verdict) => verdict.resolve_in(&shared.rates),
    };
    shared.metrics.decision(&decision, started.elapsed());
    let mut record = decision.audit(facts, now);
    record.id = Some(exchange.id.clone());
    record.request_id = Some(exchange.request_id.clone());
    let recorded = shared.audit.record(record.to_json());
    if !decision.allow {
        return Err(Box::new(deny(&decision)));
    }
    if !recorded && shared.audit_required {
        shared.metrics.audit_refused();
        return Err(Box::new(busy(
            "text/plain; charset=utf-8",
            "the audit log cannot take records; retry shortly\n",
        )));
    }
    Ok(Box::new(decision))
}

fn deny(decision: &Decision) -> Response<Body> {
    let (content_type, body) = decision.denial_body();
    let mut response = full(
        StatusCode::from_u16(decision.status).unwrap_or(StatusCode::FORBIDDEN),
        content_type,
        body,
    );
    for header in &decision.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name().as_bytes()),
            HeaderValue::from_str(header.value()),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Turns the client's request head into the origin's, in place: hop-by-hop, client
/// address and stripped headers removed, the decision's headers set, the client's
/// address set from the peer, the URI pointed at the origin (`Host` follows from it).
fn prepare_for_origin(origin: &Origin, parts: &mut Parts, client_ip: &str, decision: &Decision) {
    let connection = connection_tokens(
        parts
            .headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let removed: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|name| !may_forward(name.as_str(), &connection, &decision.strip))
        .cloned()
        .collect();
    for name in removed {
        parts.headers.remove(name);
    }
    for header in &decision.set {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name().as_bytes()),
            HeaderValue::from_str(header.value()),
        ) {
            parts.headers.insert(name, value);
        }
    }
    for (name, value) in client_address_headers(client_ip) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            parts.headers.insert(name, value);
        }
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    // The incoming path was accepted by the decision, so it is a valid URI path here.
    if let Some(uri) = origin.uri(path_and_query) {
        parts.uri = uri;
    }
    parts.version = Version::HTTP_11;
}

async fn send(
    shared: &Shared,
    client: &OriginClient,
    exchange: Arc<Exchange>,
    request: Request<Body>,
) -> Response<Body> {
    if request.uri().authority() != Some(&shared.origin.authority) {
        // `prepare_for_origin` could not point it at the origin: never send it elsewhere.
        shared.metrics.origin_error();
        return full(
            StatusCode::BAD_GATEWAY,
            "text/plain; charset=utf-8",
            "bad request target\n",
        );
    }
    exchange.forwarded();
    let idle = shared.timeouts.stream_idle;
    let request = request
        .map(|body| Metered::new(body, Arc::clone(&exchange), Direction::Upload, idle).boxed());
    let sent = Instant::now();
    let response = client.request(request);
    // The origin's time to answer counts from the end of the upload: a push that keeps
    // moving is bounded by the idle timeout instead.
    let silent_origin = async {
        exchange.uploaded().await;
        tokio::time::sleep(shared.timeouts.origin_header).await;
    };
    let upstream = tokio::select! {
        answered = response => answered,
        () = silent_origin => {
            exchange.fail(Failure::OriginHeadersTimeout);
            return failed(&exchange);
        }
    };
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(e) => {
            exchange.fail(match (e.is_connect(), timed_out(&e)) {
                (true, true) => Failure::OriginConnectTimeout,
                (true, false) => Failure::OriginConnect,
                (false, true) => Failure::OriginNotReading,
                (false, false) => Failure::OriginReset,
            });
            eprintln!("tollgate: origin request failed: {e}");
            return failed(&exchange);
        }
    };
    shared.metrics.origin_answered(sent.elapsed());
    exchange.answered(upstream.status().as_u16());
    let (mut parts, body) = upstream.into_parts();
    let connection = connection_tokens(
        parts
            .headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let removed: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|name| !may_return(name.as_str(), &connection))
        .cloned()
        .collect();
    for name in removed {
        parts.headers.remove(name);
    }
    parts.version = Version::HTTP_11;
    let body = Metered::new(body, exchange, Direction::Download, idle).boxed();
    Response::from_parts(parts, body)
}

/// Whether `error` (or what caused it) is a timeout: a connection the origin did not
/// accept in time rather than one it refused, or a write it stopped taking
/// ([`crate::origin_io`]) rather than a reset.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        let io_timeout = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        if io_timeout || e.to_string().contains("timed out") {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The answer for an exchange the origin did not complete: 408 when the client's own
/// upload stalled, 504 when the origin was too slow (to accept, to read, to answer), 502
/// otherwise.
fn failed(exchange: &Exchange) -> Response<Body> {
    let (status, body) = match exchange.failure() {
        Some(Failure::ClientStalled) => (
            StatusCode::REQUEST_TIMEOUT,
            "the request body stopped arriving\n",
        ),
        Some(Failure::OriginHeadersTimeout) => (
            StatusCode::GATEWAY_TIMEOUT,
            "the origin did not answer in time\n",
        ),
        Some(Failure::OriginConnectTimeout) => (
            StatusCode::GATEWAY_TIMEOUT,
            "the origin did not accept the connection in time\n",
        ),
        Some(Failure::OriginNotReading) => (
            StatusCode::GATEWAY_TIMEOUT,
            "the origin stopped reading the request\n",
        ),
        _ => (StatusCode::BAD_GATEWAY, "origin unavailable\n"),
    };
    let mut response = full(status, "text/plain; charset=utf-8", body);
    let upload_cut = matches!(
        exchange.failure(),
        Some(Failure::ClientStalled | Failure::OriginNotReading)
    );
    if upload_cut {
        // The rest of the body may still come; the connection cannot be reused.
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
