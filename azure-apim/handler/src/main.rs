//! The Azure Functions custom handler that API Management calls before it forwards a
//! request to Gogs. It runs the Tollgate policy module under wasmtime and answers what
//! APIM should do: forward (with which headers) or answer (with which status, challenge
//! and body), and which key and quota to hand `rate-limit-by-key`.
//!
//! Environment (Function App settings):
//! - `FUNCTIONS_CUSTOMHANDLER_PORT`: set by the Functions host.
//! - `TOLLGATE_POLICY` (the policy TOML) or `TOLLGATE_POLICY_FILE` (default `policy.toml`).
//!   A policy file is reloaded on SIGHUP and when it changes, checked every
//!   `TOLLGATE_POLICY_WATCH_SECS` (default 2; `0`: only on SIGHUP); see [`reload`].
//! - `TOLLGATE_MODULE`: the policy module (default `tollgate_policy.wasm`).
//! - `TOLLGATE_SECRETS`: JSON object of origin secret name -> Gogs token (use a Key Vault
//!   reference).
//! - `TOLLGATE_RATE`: `apim` (default: APIM counts, see `rate_limits` in the answer),
//!   `memory` (exact GCRA inside this one process; for a single instance and for tests), or
//!   `redis://HOST:PORT/DB` (exact GCRA with the state in Redis, shared by every instance;
//!   `TOLLGATE_RATE_PREFIX` (`tollgate:`), `TOLLGATE_RATE_TIMEOUT_MS` (250) and
//!   `TOLLGATE_RATE_FAILURE` (`deny`, or `allow` to admit unchecked when Redis is down)).
//! - `TOLLGATE_WEBHOOK_SINK`: where accepted Gogs webhook deliveries (`[[webhook]]`, see
//!   [`webhook`]) go: `stdout` (default), a file, or `kafka[s]://HOST:PORT/TOPIC[?...]`
//!   (Event Hubs through its Kafka endpoint; the SASL password by name from
//!   `TOLLGATE_SECRETS`).
//! - `TOLLGATE_AUDIT_LOG`: where audit records go: `stderr` (default), `stdout`, a file, or
//!   `kafka[s]://HOST:PORT/TOPIC[?...]`, through a queue of `TOLLGATE_AUDIT_QUEUE` records
//!   (10000; beyond it records are dropped). `TOLLGATE_AUDIT_REQUIRED=true` refuses an
//!   allowed request (503 `audit_unavailable`) whose record cannot be queued or whose sink
//!   is failing, instead of forwarding it unrecorded.
//! - `TOLLGATE_TEST_ENDPOINTS=true`: accept `now`, the request's `entropy` and a sign-in's
//!   `exchange` (the provider's answer) in the input. Never in production.

mod answer;
mod reload;
mod webhook;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use policy_core::{
    JwksTimings, OwnedRequest, OwnedTokenResponse, TokenExchange, UnixTime, Verdict,
};
use tollgate_host_kit::audit_log::{AuditLog, AuditTarget};
use tollgate_host_kit::request_id;
use tollgate_host_kit::{
    complete_now, Decider, Fetched, Gate, KeyRing, Namespaced, RedisRates, ShardedRates,
};
use tollgate_wasmtime::{CompiledModule, ModulePool};

use crate::answer::{Answer, ApimLimit};
use crate::reload::PolicyFile;
use crate::webhook::Webhooks;

/// Largest request description accepted from APIM.
const MAX_INPUT: u64 = 2 << 20;

/// Largest JWKS document accepted from an issuer.
const MAX_JWKS: u64 = 1 << 20;

struct Handler {
    /// The policy deciding and its keys; a reload swaps in a new one.
    gate: ArcSwap<Gate<ModulePool>>,
    /// Where the policy came from, when it came from a file (reloads read it again).
    policy_file: Option<PolicyFile>,
    rates: Rates,
    /// Gogs webhook deliveries APIM forwards.
    webhooks: Webhooks,
    audit: AuditLog,
    /// Refuse an allowed request whose audit record cannot be kept.
    audit_required: bool,
    jwks_client: reqwest::blocking::Client,
    test_endpoints: bool,
}

/// Where rate limits are enforced (`TOLLGATE_RATE`).
enum Rates {
    /// APIM's `rate-limit-by-key` counts, on the keys the answer names.
    Apim,
    /// Exact GCRA in this process.
    Memory(ShardedRates),
    /// Exact GCRA with the state in Redis, shared by every instance.
    Redis {
        store: RedisRates,
        /// Drives the Redis connection; the handler's threads wait on it.
        runtime: tokio::runtime::Runtime,
    },
}

impl Rates {
    fn from_env() -> Result<Rates, String> {
        Ok(match env("TOLLGATE_RATE").as_deref() {
            None | Some("apim") => Rates::Apim,
            Some("memory") => Rates::Memory(ShardedRates::default()),
            Some(url) if url.starts_with("redis://") => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("rate store runtime: {e}"))?;
                let prefix = env("TOLLGATE_RATE_PREFIX").unwrap_or_else(|| "tollgate:".into());
                let timeout_ms: u64 = env_number("TOLLGATE_RATE_TIMEOUT_MS", 250, "milliseconds")?;
                let admit_when_unavailable = env_choice("TOLLGATE_RATE_FAILURE", "deny", "allow")?;
                let store = runtime.block_on(RedisRates::connect(
                    url,
                    prefix,
                    Duration::from_millis(timeout_ms.max(1)),
                    admit_when_unavailable,
                ))?;
                Rates::Redis { store, runtime }
            }
            Some(other) => {
                return Err(format!(
                    "TOLLGATE_RATE `{other}`: expected `apim`, `memory` or `redis://HOST:PORT/DB`"
                ))
            }
        })
    }
}

/// `{"request": {method, path, query, headers, body, client_ip}, "now"?, "rate_namespace"?}`
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    request: OwnedRequest,
    /// Unix seconds; honoured only with `TOLLGATE_TEST_ENDPOINTS=true`.
    now: Option<u64>,
    /// Separates rate-limit state between test cases (memory and Redis modes).
    rate_namespace: Option<String>,
    /// The provider's answer to a sign-in's token request; honoured only with
    /// `TOLLGATE_TEST_ENDPOINTS=true` (otherwise the handler sends the request itself).
    exchange: Option<OwnedTokenResponse>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A setting that is one of two words: `off` (also when unset) or `on`.
fn env_choice(name: &str, off: &str, on: &str) -> Result<bool, String> {
    match env(name) {
        None => Ok(false),
        Some(value) if value == off => Ok(false),
        Some(value) if value == on => Ok(true),
        Some(other) => Err(format!("{name} `{other}`: expected `{off}` or `{on}`")),
    }
}

/// A numeric setting, `default` when unset; `unit` says what the number counts.
fn env_number<T: std::str::FromStr>(name: &str, default: T, unit: &str) -> Result<T, String> {
    match env(name) {
        None => Ok(default),
        Some(value) => value
            .parse()
            .map_err(|_| format!("{name} `{value}`: expected {unit}")),
    }
}

fn now() -> UnixTime {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    UnixTime::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

impl Handler {
    fn from_env() -> Result<Handler, String> {
        let (policy, path) = match (env("TOLLGATE_POLICY"), env("TOLLGATE_POLICY_FILE")) {
            (Some(text), _) => (text, None),
            (None, file) => {
                let file = file.unwrap_or_else(|| "policy.toml".into());
                let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
                (text, Some(PathBuf::from(file)))
            }
        };
        let module_path =
            PathBuf::from(env("TOLLGATE_MODULE").unwrap_or_else(|| "tollgate_policy.wasm".into()));
        let module = CompiledModule::from_file(&module_path).map_err(|e| e.to_string())?;
        let secrets: BTreeMap<String, String> = match env("TOLLGATE_SECRETS") {
            Some(json) => {
                serde_json::from_str(&json).map_err(|e| format!("TOLLGATE_SECRETS: {e}"))?
            }
            None => BTreeMap::new(),
        };
        let rates = Rates::from_env()?;
        // Compiles the policy now: a bad policy stops the handler with its positioned error.
        let pool = ModulePool::new(
            module.clone(),
            policy.clone(),
            "TOLLGATE_POLICY".into(),
            Some(secrets.clone()),
        )
        .map_err(|e| e.to_string())?;
        answer::check_user_header(pool.user_header())?;
        let keys = KeyRing::new(
            pool.jwks_urls()
                .iter()
                .map(|(n, u)| (n.as_str(), u.as_str())),
            JwksTimings::default(),
        );
        // The module computes the same revision as the engine linked here, which checks
        // webhook deliveries.
        let engine = policy_core::Engine::from_toml(&policy, "TOLLGATE_POLICY")
            .map_err(|e| e.to_string())?;
        let revision = engine.revision().to_owned();
        let webhooks = Webhooks::open(
            engine,
            secrets.clone(),
            env("TOLLGATE_WEBHOOK_SINK").as_deref(),
        )?;
        let (audit, audit_required) = open_audit_log(&secrets)?;
        let handler = Handler {
            gate: ArcSwap::from_pointee(Gate::new(pool, keys)),
            policy_file: path.map(|path| PolicyFile {
                path,
                module,
                secrets,
                seen: std::sync::Mutex::new(tollgate_host_kit::ReloadState::new(policy, revision)),
            }),
            rates,
            webhooks,
            audit,
            audit_required,
            jwks_client: reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| format!("JWKS client: {e}"))?,
            test_endpoints: env("TOLLGATE_TEST_ENDPOINTS").as_deref() == Some("true"),
        };
        let reports = complete_now(
            handler
                .gate
                .load()
                .keys
                .refresh_due(now(), |url| std::future::ready(handler.fetch_jwks(&url))),
        );
        for report in reports.into_iter().flatten() {
            if let Some(error) = report.error {
                eprintln!(
                    "tollgate-azure-handler: JWKS for `{}` from {}: {error}",
                    report.issuer, report.url
                );
            }
        }
        Ok(handler)
    }

    /// One blocking JWKS fetch (the handler's worker threads may wait).
    fn fetch_jwks(&self, url: &str) -> Fetched {
        let response = self
            .jwks_client
            .get(url)
            .send()
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.to_string())?;
        let mut text = String::new();
        response
            .take(MAX_JWKS + 1)
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())?;
        if text.len() as u64 > MAX_JWKS {
            return Err("document over 1 MiB".into());
        }
        Ok(text)
    }

    /// Sends a sign-in's token request (blocking, as JWKS fetches are): the status and
    /// body, or `None` when no whole answer came.
    fn send_token_request(&self, request: &TokenExchange) -> Option<(u16, Vec<u8>)> {
        let mut post = self
            .jwks_client
            .post(&request.url)
            .body(request.body.clone());
        for header in &request.headers {
            post = post.header(header.name(), header.value());
        }
        let sent = post.send().map_err(|e| e.to_string()).and_then(|response| {
            let status = response.status().as_u16();
            let mut body = Vec::new();
            // One byte over the limit is enough for the gate to refuse the answer.
            response
                .take(TokenExchange::MAX_RESPONSE_BYTES as u64 + 1)
                .read_to_end(&mut body)
                .map(|_| (status, body))
                .map_err(|e| e.to_string())
        });
        match sent {
            Ok(answer) => Some(answer),
            Err(e) => {
                eprintln!(
                    "tollgate-azure-handler: sign-in token request to {}: {e}",
                    request.url
                );
                None
            }
        }
    }

    fn decide(&self, mut input: Input) -> Answer {
        let at = match (self.test_endpoints, input.now) {
            (true, Some(secs)) => UnixTime::from_secs(secs),
            _ => now(),
        };
        let gate = self.gate.load_full();
        // A sign-in's randomness is the handler's own, never the caller's (but in tests).
        if !(self.test_endpoints && input.request.entropy.is_some()) {
            input.request.entropy = gate
                .decider
                .wants_entropy()
                .then(tollgate_host_kit::os_entropy)
                .flatten();
        }
        let pairs = input.request.header_pairs();
        let facts = input.request.facts(&pairs);
        // The decision's id, and the request's: the client's X-Request-Id when usable,
        // else the decision's id. Both are audited; APIM forwards the request id to Gogs.
        let id = request_id::next_id(|| now().as_nanos());
        let request_id = request_id::from_client(facts.header_values("x-request-id"))
            .unwrap_or_else(|| id.clone());
        let audited = |decision: &policy_core::Decision| {
            let mut record = decision.audit(&facts, at);
            record.id = Some(id.clone());
            record.request_id = Some(request_id.clone());
            record.to_json()
        };
        let fetch = |url: String| std::future::ready(self.fetch_jwks(&url));
        // Every fetch is blocking, so the future is complete when polled once.
        let decided = if self.test_endpoints {
            let given = input.exchange.as_ref();
            match complete_now(gate.decide_with_given_answer(&facts, at, false, fetch, given)) {
                Some(Err(request)) => return Answer::token_request(&request),
                Some(Ok(decided)) => Some(decided),
                None => None,
            }
        } else {
            let send =
                |request: TokenExchange| std::future::ready(self.send_token_request(&request));
            complete_now(gate.decide_signing_in(&facts, at, false, fetch, send))
        };
        let Some(decided) = decided else {
            let refusal = policy_core::Decision::policy_module_failed();
            return Answer::from_decision(&refusal, Vec::new(), audited(&refusal));
        };
        for report in &decided.fetches {
            if let Some(error) = &report.error {
                eprintln!("tollgate-azure-handler: JWKS for `{}` from {}: {error}; keeping the last good keys", report.issuer, report.url);
            }
        }
        if let Some(failure) = &decided.failure {
            eprintln!(
                "tollgate-azure-handler: policy module failed: {}",
                failure.0
            );
        }
        let namespace = input.rate_namespace.as_deref().unwrap_or("live");
        let (decision, limits) = match (decided.verdict, &self.rates) {
            (Verdict::Decided(decision), _) => (decision, Vec::new()),
            // The gate completed every sign-in; one that was not counts as unanswered.
            (verdict @ Verdict::Exchange(_), _) => {
                (verdict.resolve_with(&mut |_, _| None), Vec::new())
            }
            (Verdict::Pending(pending), Rates::Memory(rates)) => {
                let store = Namespaced {
                    prefix: namespace,
                    store: rates,
                };
                (pending.resolve_in(&store), Vec::new())
            }
            (Verdict::Pending(pending), Rates::Redis { store, runtime }) => {
                let namespace = input.rate_namespace.as_deref();
                let (decision, unavailable) = runtime.block_on(store.decide(&pending, namespace));
                if let Some(e) = unavailable {
                    eprintln!("tollgate-azure-handler: rate store: {}", e.0);
                }
                (decision, Vec::new())
            }
            (Verdict::Pending(pending), Rates::Apim) => {
                // APIM counts: the request is admitted here and APIM's rate-limit-by-key
                // enforces each quota on the key handed to it. That policy cannot count
                // without enforcing, so shadow limits are left out.
                let limits = pending
                    .checks()
                    .iter()
                    .filter(|check| !check.is_shadow())
                    .map(|check| {
                        let (calls, period_seconds) = check.gcra().quota();
                        ApimLimit {
                            key: match &input.rate_namespace {
                                Some(ns) => format!("{ns}/{}", check.key()),
                                None => check.key().to_owned(),
                            },
                            calls: u64::from(calls),
                            period_seconds,
                        }
                    })
                    .collect();
                (pending.admit(), limits)
            }
        };
        let mut answer = Answer::from_decision(&decision, limits, audited(&decision));
        answer.request_id = request_id.clone();
        answer
    }
}

/// The audit log `TOLLGATE_AUDIT_LOG` names (a Kafka password by name from `secrets`),
/// and whether records are required.
fn open_audit_log(secrets: &BTreeMap<String, String>) -> Result<(AuditLog, bool), String> {
    let mut target = AuditTarget::parse(env("TOLLGATE_AUDIT_LOG").as_deref().unwrap_or("stderr"))
        .map_err(|e| format!("TOLLGATE_AUDIT_LOG {e}"))?;
    target
        .resolve(|name| secrets.get(name).cloned())
        .map_err(|e| format!("TOLLGATE_AUDIT_LOG: {e} in TOLLGATE_SECRETS"))?;
    let queue: usize = env_number("TOLLGATE_AUDIT_QUEUE", 10_000, "a number of records")?;
    let required = env_choice("TOLLGATE_AUDIT_REQUIRED", "false", "true")?;
    let log = AuditLog::open(&target, queue).map_err(|e| format!("audit log: {e}"))?;
    Ok((log, required))
}

fn respond(request: tiny_http::Request, status: u16, body: String) {
    let header = tiny_http::Header::from_bytes("content-type", "application/json").ok();
    let mut response = tiny_http::Response::from_string(body).with_status_code(status);
    if let Some(h) = header {
        response.add_header(h);
    }
    let _ = request.respond(response);
}

fn serve(handler: Arc<Handler>, server: Arc<tiny_http::Server>) {
    for request in server.incoming_requests() {
        let path = request
            .url()
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned();
        let post = *request.method() == tiny_http::Method::Post;
        match path.strip_prefix(webhook::ROUTE_PREFIX) {
            _ if path == "/api/decide" && post => decide(&handler, request),
            Some(hook) if hook.starts_with('/') && post => deliver(&handler, hook, request),
            _ => respond(
                request,
                404,
                "{\"error\":\"POST /api/decide or /api/webhook/PATH\"}".into(),
            ),
        }
    }
}

fn decide(handler: &Handler, mut request: tiny_http::Request) {
    let mut body = String::new();
    if request
        .as_reader()
        .take(MAX_INPUT)
        .read_to_string(&mut body)
        .is_err()
    {
        return respond(request, 400, "{\"error\":\"unreadable body\"}".into());
    }
    match serde_json::from_str::<Input>(&body) {
        Ok(input) => {
            let mut answer = handler.decide(input);
            // The record is not part of the answer APIM reads.
            let recorded = handler.audit.record(std::mem::take(&mut answer.audit));
            let answer = if answer.allow && !recorded && handler.audit_required {
                Answer::audit_unavailable()
            } else {
                answer
            };
            respond(request, 200, answer.to_json());
        }
        Err(e) => respond(
            request,
            400,
            serde_json::json!({ "error": format!("bad request description: {e}") }).to_string(),
        ),
    }
}

/// A Gogs delivery APIM forwarded as it came; Gogs gets the answer.
fn deliver(handler: &Handler, hook: &str, mut request: tiny_http::Request) {
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.as_str().to_owned(),
            )
        })
        .collect();
    let method = request.method().as_str().to_owned();
    match handler
        .webhooks
        .receive(hook, &method, &headers, request.as_reader())
    {
        Some(answered) => {
            handler.audit.record(answered.audit);
            respond(request, answered.status, answered.body);
        }
        None => respond(
            request,
            404,
            serde_json::json!({ "error": format!("no [[webhook]] at `{hook}`") }).to_string(),
        ),
    }
}

/// On SIGTERM (the Functions host stopping the handler) or SIGINT, writes out the audit
/// records still queued, then exits.
fn on_terminate(handler: Arc<Handler>) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("signal runtime: {e}"))?;
    let (mut terminate, mut interrupt) = runtime
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })
        .map_err(|e| format!("SIGTERM: {e}"))?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        });
        handler.audit.close();
        std::process::exit(0);
    });
    Ok(())
}

fn main() {
    let handler = match Handler::from_env() {
        Ok(handler) => Arc::new(handler),
        Err(e) => {
            eprintln!("tollgate-azure-handler: {e}");
            std::process::exit(1);
        }
    };
    if handler.policy_file.is_some() {
        let watch_secs: u64 = match env_number("TOLLGATE_POLICY_WATCH_SECS", 2, "seconds") {
            Ok(secs) => secs,
            Err(e) => {
                eprintln!("tollgate-azure-handler: {e}");
                std::process::exit(1);
            }
        };
        if watch_secs > 0 {
            reload::watch(Arc::clone(&handler), Duration::from_secs(watch_secs));
        }
        if let Err(e) = reload::on_hangup(Arc::clone(&handler)) {
            eprintln!("tollgate-azure-handler: {e}");
            std::process::exit(1);
        }
    }
    if let Err(e) = on_terminate(Arc::clone(&handler)) {
        eprintln!("tollgate-azure-handler: {e}");
        std::process::exit(1);
    }
    let port = env("FUNCTIONS_CUSTOMHANDLER_PORT").unwrap_or_else(|| "8080".into());
    let server = match tiny_http::Server::http(format!("127.0.0.1:{port}")) {
        Ok(server) => Arc::new(server),
        Err(e) => {
            eprintln!("tollgate-azure-handler: listen on {port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("tollgate-azure-handler: listening on 127.0.0.1:{port}");
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (handler, server) = (Arc::clone(&handler), Arc::clone(&server));
            std::thread::spawn(move || serve(handler, server))
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}

#[cfg(test)]
mod tests {
    use super::{env_choice, env_number};

    #[test]
    fn settings_read_their_words_and_numbers_and_name_a_bad_value() {
        // Names of their own: the process environment is shared by the tests.
        std::env::set_var("TOLLGATE_TEST_CHOICE_ON", "allow");
        std::env::set_var("TOLLGATE_TEST_CHOICE_BAD", "maybe");
        std::env::set_var("TOLLGATE_TEST_NUMBER", "250");
        std::env::set_var("TOLLGATE_TEST_NUMBER_BAD", "1s");
        assert_eq!(
            env_choice("TOLLGATE_TEST_CHOICE_UNSET", "deny", "allow"),
            Ok(false)
        );
        assert_eq!(
            env_choice("TOLLGATE_TEST_CHOICE_ON", "deny", "allow"),
            Ok(true)
        );
        assert_eq!(
            env_choice("TOLLGATE_TEST_CHOICE_BAD", "deny", "allow"),
            Err("TOLLGATE_TEST_CHOICE_BAD `maybe`: expected `deny` or `allow`".into())
        );
        assert_eq!(
            env_number("TOLLGATE_TEST_NUMBER_UNSET", 2u64, "seconds"),
            Ok(2)
        );
        assert_eq!(env_number("TOLLGATE_TEST_NUMBER", 2u64, "seconds"), Ok(250));
        assert_eq!(
            env_number::<u64>("TOLLGATE_TEST_NUMBER_BAD", 2, "seconds"),
            Err("TOLLGATE_TEST_NUMBER_BAD `1s`: expected seconds".into())
        );
    }
}
