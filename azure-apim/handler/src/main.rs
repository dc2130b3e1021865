//! The Azure Functions custom handler that API Management calls before it forwards a
//! request to Gogs. It runs the Tollgate policy module under wasmtime and answers what
//! APIM should do: forward (with which headers) or answer (with which status, challenge
//! and body), and which key and quota to hand `rate-limit-by-key`.
//!
//! Environment (Function App settings):
//! - `FUNCTIONS_CUSTOMHANDLER_PORT`: set by the Functions host.
//! - `TOLLGATE_POLICY` (the policy TOML) or `TOLLGATE_POLICY_FILE` (default `policy.toml`).
//! - `TOLLGATE_MODULE`: the policy module (default `tollgate_policy.wasm`).
//! - `TOLLGATE_SECRETS`: JSON object of origin secret name -> Gogs token (use a Key Vault
//!   reference).
//! - `TOLLGATE_RATE`: `apim` (default: APIM counts, see `rate_limit` in the answer) or
//!   `memory` (exact GCRA inside this one process; for a single instance and for tests).
//! - `TOLLGATE_TEST_ENDPOINTS=true`: accept `now` in the input. Never in production.

mod answer;
mod jwks;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use policy_core::{OwnedRequest, RateState, UnixTime};
use tollgate_wasmtime::{CompiledModule, PolicyInstance, WasmVerdict};

use crate::answer::Answer;

/// Largest request description accepted from APIM.
const MAX_INPUT: u64 = 2 << 20;

struct Handler {
    module: CompiledModule,
    policy: String,
    secrets: BTreeMap<String, String>,
    idle: Mutex<Vec<PolicyInstance>>,
    keys: jwks::Jwks,
    rate_in_memory: bool,
    rate: Mutex<HashMap<String, RateState>>,
    test_endpoints: bool,
}

/// `{"request": {method, path, query, headers, body, client_ip}, "now"?, "rate_namespace"?}`
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    request: OwnedRequest,
    /// Unix seconds; honoured only with `TOLLGATE_TEST_ENDPOINTS=true`.
    now: Option<u64>,
    /// Separates rate-limit state between test cases (memory mode).
    rate_namespace: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn now() -> UnixTime {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    UnixTime::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

impl Handler {
    fn from_env() -> Result<Handler, String> {
        let policy = match (env("TOLLGATE_POLICY"), env("TOLLGATE_POLICY_FILE")) {
            (Some(text), _) => text,
            (None, file) => {
                let file = file.unwrap_or_else(|| "policy.toml".into());
                std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?
            }
        };
        let module_path =
            PathBuf::from(env("TOLLGATE_MODULE").unwrap_or_else(|| "tollgate_policy.wasm".into()));
        let module = CompiledModule::from_file(&module_path).map_err(|e| e.to_string())?;
        let secrets = match env("TOLLGATE_SECRETS") {
            Some(json) => {
                serde_json::from_str(&json).map_err(|e| format!("TOLLGATE_SECRETS: {e}"))?
            }
            None => BTreeMap::new(),
        };
        let rate_in_memory = match env("TOLLGATE_RATE").as_deref() {
            None | Some("apim") => false,
            Some("memory") => true,
            Some(other) => {
                return Err(format!(
                    "TOLLGATE_RATE `{other}`: expected `apim` or `memory`"
                ))
            }
        };
        let handler = Handler {
            module,
            policy,
            secrets,
            idle: Mutex::new(Vec::new()),
            keys: jwks::Jwks::default(),
            rate_in_memory,
            rate: Mutex::new(HashMap::new()),
            test_endpoints: env("TOLLGATE_TEST_ENDPOINTS").as_deref() == Some("true"),
        };
        // Compile the policy now: a bad policy stops the handler with its positioned error.
        let instance = handler.instantiate()?;
        answer::check_user_header(instance.user_header())?;
        handler.keys.fetch_all(instance.jwks_urls(), true);
        handler
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(instance);
        Ok(handler)
    }

    fn instantiate(&self) -> Result<PolicyInstance, String> {
        let mut instance = PolicyInstance::new(&self.module, &self.policy, "TOLLGATE_POLICY")
            .map_err(|e| e.to_string())?;
        instance
            .set_secrets(&self.secrets)
            .map_err(|e| e.to_string())?;
        Ok(instance)
    }

    fn decide(&self, input: Input) -> Answer {
        let at = match (self.test_endpoints, input.now) {
            (true, Some(secs)) => UnixTime::from_secs(secs),
            _ => now(),
        };
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut instance = match pooled.map_or_else(|| self.instantiate(), Ok) {
            Ok(instance) => instance,
            Err(e) => return Answer::failure(&e),
        };
        let answer = self.decide_in(&mut instance, &input, at);
        if answer.is_ok() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(instance);
        }
        answer.unwrap_or_else(|e| Answer::failure(&e))
    }

    fn decide_in(
        &self,
        instance: &mut PolicyInstance,
        input: &Input,
        at: UnixTime,
    ) -> Result<Answer, String> {
        self.keys.load_into(instance).map_err(|e| e.to_string())?;
        let mut verdict = instance
            .decide(&input.request, at, false)
            .map_err(|e| e.to_string())?;
        if let WasmVerdict::Decided(outcome) = &verdict {
            let reason = outcome.decision["reason"].as_str().unwrap_or_default();
            if (reason == "token_unknown_key" || reason == "token_issuer_keys_unavailable")
                && self.keys.fetch_all(instance.jwks_urls(), false)
            {
                self.keys.load_into(instance).map_err(|e| e.to_string())?;
                verdict = instance
                    .decide(&input.request, at, false)
                    .map_err(|e| e.to_string())?;
            }
        }
        match verdict {
            WasmVerdict::Decided(outcome) => Ok(Answer::from_final(outcome, None)),
            WasmVerdict::Pending {
                key,
                requests,
                period_seconds,
            } => {
                let namespaced = match &input.rate_namespace {
                    Some(ns) => format!("{ns}/{key}"),
                    None => key.clone(),
                };
                if self.rate_in_memory {
                    let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
                    let resolved = instance
                        .resolve(rate.get(&namespaced).copied())
                        .map_err(|e| e.to_string())?;
                    if let Some((_, state, _)) = resolved.update {
                        rate.insert(namespaced, state);
                    }
                    Ok(Answer::from_final(resolved.outcome, None))
                } else {
                    // APIM counts: a fresh state always admits, and APIM's
                    // rate-limit-by-key enforces the quota on the key we hand it.
                    let resolved = instance.resolve(None).map_err(|e| e.to_string())?;
                    Ok(Answer::from_final(
                        resolved.outcome,
                        Some((namespaced, requests, period_seconds)),
                    ))
                }
            }
        }
    }
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
    for mut request in server.incoming_requests() {
        let route_ok = request.url().split('?').next() == Some("/api/decide")
            && *request.method() == tiny_http::Method::Post;
        if !route_ok {
            respond(request, 404, "{\"error\":\"POST /api/decide\"}".into());
            continue;
        }
        let mut body = String::new();
        if request
            .as_reader()
            .take(MAX_INPUT)
            .read_to_string(&mut body)
            .is_err()
        {
            respond(request, 400, "{\"error\":\"unreadable body\"}".into());
            continue;
        }
        match serde_json::from_str::<Input>(&body) {
            Ok(input) => {
                let answer = handler.decide(input);
                eprintln!("{}", answer.audit);
                respond(request, 200, answer.to_json());
            }
            Err(e) => respond(
                request,
                400,
                serde_json::json!({ "error": format!("bad request description: {e}") }).to_string(),
            ),
        }
    }
}

fn main() {
    let handler = match Handler::from_env() {
        Ok(handler) => Arc::new(handler),
        Err(e) => {
            eprintln!("tollgate-azure-handler: {e}");
            std::process::exit(1);
        }
    };
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
