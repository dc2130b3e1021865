//! Request in, response out: translation between Fastly's types and the engine's.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use fastly::config_store::ConfigStore;
use fastly::http::StatusCode;
use fastly::{Request, Response};
use policy_core::cases::EvalRequest;
use policy_core::forwarding::{client_address_headers, connection_tokens};
use policy_core::policy::Policy;
use policy_core::{
    Decision, Engine, KeySet, KeyStore, OwnedRequest, RequestFacts, SecretStore, UnixTime, Verdict,
};

use crate::rate::{Erl, KvGcra, RateStore};

/// Config Store with the policy (`policy`), JWKS per issuer (`jwks.<issuer name>`), the
/// rate store choice (`rate_store`: `erl` or `kv`) and `test_endpoints`.
const CONFIG_STORE: &str = "tollgate";
/// Secret Store with the origin secrets, by the names the policy gives them.
const SECRET_STORE: &str = "tollgate_secrets";
/// KV Store for exact GCRA state when `rate_store = "kv"`.
const KV_STORE: &str = "tollgate_rate";
/// The backend that is the Gogs origin.
const BACKEND: &str = "origin";

struct Keys(HashMap<String, KeySet>);

impl KeyStore for Keys {
    fn key_set(&self, issuer_name: &str) -> Option<&KeySet> {
        self.0.get(issuer_name)
    }
}

/// Origin secrets, looked up on demand. Secret Store names cannot hold `/`, so the policy's
/// `gogs-token/alice` is stored as `gogs-token.alice`.
struct Secrets(Option<fastly::secret_store::SecretStore>);

pub fn secret_store_name(name: &str) -> String {
    name.replace('/', ".")
}

impl SecretStore for Secrets {
    fn secret(&self, name: &str) -> Option<Cow<'_, str>> {
        let secret = self.0.as_ref()?.get(&secret_store_name(name))?;
        String::from_utf8(secret.plaintext().to_vec())
            .ok()
            .map(Cow::Owned)
    }
}

fn now() -> UnixTime {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    UnixTime::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

fn text(status: StatusCode, body: &str) -> Response {
    Response::from_status(status)
        .with_header("content-type", "text/plain; charset=utf-8")
        .with_body(body.to_owned())
}

struct Setup {
    engine: Engine,
    keys: Keys,
    secrets: Secrets,
    rate: Box<dyn RateStore>,
    test_endpoints: bool,
}

/// A Config Store value, which may be split because items hold at most 8000 characters:
/// `KEY` alone, or `KEY.parts = N` with the pieces in `KEY.1` ... `KEY.N`.
fn chunked(config: &ConfigStore, key: &str) -> Result<Option<String>, String> {
    let Some(parts) = config.get(&format!("{key}.parts")) else {
        return Ok(config.get(key));
    };
    let parts: usize = parts
        .trim()
        .parse()
        .map_err(|_| format!("{key}.parts must be a number"))?;
    let mut value = String::new();
    for i in 1..=parts {
        value.push_str(
            &config
                .get(&format!("{key}.{i}"))
                .ok_or_else(|| format!("{key}.{i} is missing ({parts} parts)"))?,
        );
    }
    Ok(Some(value))
}

fn setup() -> Result<Setup, String> {
    let config = ConfigStore::try_open(CONFIG_STORE)
        .map_err(|e| format!("config store `{CONFIG_STORE}`: {e:?}"))?;
    let policy = chunked(&config, "policy")?.ok_or("config store has no `policy`")?;
    let engine = Policy::parse(&policy, "config store `tollgate` key `policy`")
        .map_err(|e| e.to_string())?
        .engine;
    let mut keys = HashMap::new();
    let issuers: Vec<String> = engine
        .jwks_urls()
        .map(|(name, _)| name.to_owned())
        .collect();
    for name in issuers {
        // Keys ship through the Config Store (refreshed by deploy or API); an issuer
        // without them has its tokens refused.
        if let Some(jwks) = chunked(&config, &format!("jwks.{name}"))? {
            keys.insert(
                name.clone(),
                KeySet::from_fetched_json(&jwks).map_err(|e| format!("jwks.{name}: {e}"))?,
            );
        }
    }
    let rate: Box<dyn RateStore> = match config.get("rate_store").as_deref() {
        None | Some("erl") => Box::new(Erl::open()),
        Some("kv") => Box::new(
            KvGcra::open(KV_STORE)
                .ok_or("rate_store = kv but the KV Store `tollgate_rate` is missing")?,
        ),
        Some(other) => return Err(format!("rate_store `{other}`: expected `erl` or `kv`")),
    };
    Ok(Setup {
        engine,
        keys: Keys(keys),
        secrets: Secrets(fastly::secret_store::SecretStore::open(SECRET_STORE).ok()),
        rate,
        test_endpoints: config.get("test_endpoints").as_deref() == Some("true"),
    })
}

fn decide(setup: &Setup, owned: &OwnedRequest, at: UnixTime, namespace: &str) -> Decision {
    let pairs = owned.header_pairs();
    match setup
        .engine
        .decide(&owned.facts(&pairs), at, &setup.keys, &setup.secrets)
    {
        Verdict::Decided(decision) => decision,
        Verdict::Pending(pending) => setup.rate.check(&pending, namespace),
    }
}

pub fn handle(mut req: Request) -> Response {
    let setup = match setup() {
        Ok(setup) => setup,
        Err(message) => {
            // Fail closed: without a valid configuration nothing passes.
            println!("{}", serde_json::json!({ "tollgate_error": message }));
            return text(StatusCode::INTERNAL_SERVER_ERROR, "gateway misconfigured\n");
        }
    };
    if setup.test_endpoints
        && req.get_path() == "/__tollgate/eval"
        && req.get_method_str() == "POST"
    {
        return eval_endpoint(&setup, req);
    }
    let mut owned = OwnedRequest {
        method: req.get_method_str().to_owned(),
        path: req.get_path().to_owned(),
        query: req.get_query_str().unwrap_or("").to_owned(),
        client_ip: req.get_client_ip_addr().map(|ip| ip.to_string()),
        ..OwnedRequest::default()
    };
    for name in req.get_header_names_str() {
        for value in req.get_header_all_str(name) {
            owned
                .headers
                .entry(name.to_ascii_lowercase())
                .or_default()
                .0
                .push(value.to_owned());
        }
    }
    if RequestFacts::wants_body(&owned.method, &owned.path) {
        // Read one byte past the limit at most: an endless body must not fill memory.
        let mut body = Vec::new();
        let limit = RequestFacts::LFS_BATCH_BODY_LIMIT as u64 + 1;
        if std::io::Read::read_to_end(&mut std::io::Read::take(req.take_body(), limit), &mut body)
            .is_err()
        {
            return text(StatusCode::BAD_REQUEST, "cannot read request body\n");
        }
        if body.len() > RequestFacts::LFS_BATCH_BODY_LIMIT {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "LFS batch request too large\n",
            );
        }
        owned.body = Some(String::from_utf8_lossy(&body).into_owned());
        req.set_body(body);
    }
    let at = now();
    let decision = decide(&setup, &owned, at, "");
    let pairs = owned.header_pairs();
    println!("{}", decision.audit(&owned.facts(&pairs), at).to_json());
    if !decision.allow {
        let (content_type, body) = decision.denial_body();
        let mut response = Response::from_status(decision.status)
            .with_header("content-type", content_type)
            .with_body(body);
        for header in &decision.headers {
            response.append_header(header.name(), header.value());
        }
        return response;
    }
    let connection = connection_tokens(req.get_header_all_str("connection"));
    let names: Vec<String> = req
        .get_header_names_str()
        .iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    for name in names {
        // Host stays: Fastly sends it on (or the backend's override host replaces it).
        if name != "host" && !decision.forwards_header(&name, &connection) {
            req.remove_header(&name);
        }
    }
    for header in &decision.set {
        req.set_header(header.name(), header.value());
    }
    if let Some(ip) = &owned.client_ip {
        for (name, value) in client_address_headers(ip) {
            req.set_header(name, value);
        }
    }
    match req.send(BACKEND) {
        Ok(response) => response,
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({ "tollgate_error": format!("origin: {e}") })
            );
            text(StatusCode::BAD_GATEWAY, "origin unavailable\n")
        }
    }
}

/// Test-only (`test_endpoints = "true"`): decide a request given as JSON at a given time.
fn eval_endpoint(setup: &Setup, mut req: Request) -> Response {
    let input: EvalRequest = match serde_json::from_slice(&req.take_body_bytes()) {
        Ok(input) => input,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("bad eval input: {e}\n")),
    };
    let namespace = if input.rate_namespace.is_empty() {
        String::new()
    } else {
        format!("{}/", input.rate_namespace)
    };
    let decision = decide(
        setup,
        &input.request,
        UnixTime::from_secs(input.now),
        &namespace,
    );
    Response::from_status(StatusCode::OK)
        .with_header("content-type", "application/json")
        .with_body(decision.to_json())
}
