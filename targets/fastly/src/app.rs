//! Request in, response out: translation between Fastly's types and the engine's.
//!
//! The sandbox is reused for many requests ([`fastly::http::serve::Serve`]), so an
//! [`Instance`] keeps what it built: the policy compiled once (again only when the Config
//! Store's text changes), the key ring with its parsed keys, the verified-token cache and
//! the store handles.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use fastly::config_store::ConfigStore;
use fastly::http::StatusCode;
use fastly::{Request, Response};
use policy_core::forwarding::{client_address_headers, connection_tokens};
use policy_core::policy::Policy;
use policy_core::{
    Decision, EvalRequest, JwksTimings, OwnedTokenResponse, RequestFacts, SecretStore,
    TokenExchange, UnixTime, Verdict,
};
use tollgate_host_kit::{
    complete_now, Decided, Decider, Fetched, Gate, Ingested, KeyRing, NativeDecider,
    SharedTokenCache,
};

use crate::rate::{Erl, KvGcra, Limiter};

/// Config Store with the policy (`policy`), JWKS per issuer (`jwks.<issuer name>`), the
/// rate store choice (`rate_store`: `erl` or `kv`) and `test_endpoints`.
const CONFIG_STORE: &str = "tollgate";
/// Secret Store with the origin secrets, by the names the policy gives them.
const SECRET_STORE: &str = "tollgate_secrets";
/// KV Store for exact GCRA state when `rate_store = "kv"`.
const KV_STORE: &str = "tollgate_rate";
/// The backend that is the Gogs origin.
const BACKEND: &str = "origin";
/// The backend that is the identity provider's token endpoint, for a policy with `[sso]`
/// (Fastly sends requests only to backends the service names).
const SSO_BACKEND: &str = "sso";
/// Verified tokens an instance remembers, and for how long at most.
const TOKEN_CACHE_ENTRIES: usize = 1000;
const TOKEN_CACHE_MAX_AGE_SECS: u64 = 60;
/// Keys come from the Config Store, not the network: read again every minute (or early
/// after an unknown key), so a key pushed there reaches a long-lived instance soon.
const JWKS_TIMINGS: JwksTimings = JwksTimings {
    refresh_secs: 60,
    min_gap_secs: 5,
    max_stale_secs: u64::MAX / 2,
};

/// Origin secrets, looked up on demand. Secret Store names cannot hold `/`, so the policy's
/// `gogs-token/alice` is stored as `gogs-token.alice`.
pub struct Secrets(Option<fastly::secret_store::SecretStore>);

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

/// Everything built from one policy text.
struct Setup {
    policy: String,
    gate: Gate<NativeDecider<Secrets>>,
    /// `(issuer, JWKS URL)`: the ring fetches by URL, the Config Store holds by issuer.
    issuers: Vec<(String, String)>,
    limiter: Limiter,
    test_endpoints: bool,
}

/// What one sandbox keeps between requests.
#[derive(Default)]
pub struct Instance {
    setup: Option<Setup>,
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

fn open_config() -> Result<ConfigStore, String> {
    ConfigStore::try_open(CONFIG_STORE).map_err(|e| format!("config store `{CONFIG_STORE}`: {e:?}"))
}

impl Instance {
    /// The setup for the Config Store's current policy: the one built before if the text
    /// is unchanged, else a new one.
    fn setup(&mut self) -> Result<&Setup, String> {
        let config = open_config()?;
        let policy = chunked(&config, "policy")?.ok_or("config store has no `policy`")?;
        if self.setup.as_ref().is_some_and(|s| s.policy == policy) {
            return self.setup.as_ref().ok_or_else(String::new);
        }
        self.setup = None;
        let engine = Policy::parse(&policy, "config store `tollgate` key `policy`")
            .map_err(|e| e.to_string())?
            .engine;
        let issuers: Vec<(String, String)> = engine
            .jwks_urls()
            .map(|(n, u)| (n.to_owned(), u.to_owned()))
            .collect();
        let limiter = match config.get("rate_store").as_deref() {
            None | Some("erl") => Limiter::Erl(Erl::open()),
            Some("kv") => Limiter::Kv(
                KvGcra::open(KV_STORE)
                    .ok_or("rate_store = kv but the KV Store `tollgate_rate` is missing")?,
            ),
            Some(other) => return Err(format!("rate_store `{other}`: expected `erl` or `kv`")),
        };
        let keys = KeyRing::for_engine(&engine, JWKS_TIMINGS);
        let secrets = Secrets(fastly::secret_store::SecretStore::open(SECRET_STORE).ok());
        let tokens = SharedTokenCache::new(TOKEN_CACHE_ENTRIES, TOKEN_CACHE_MAX_AGE_SECS);
        let setup = Setup {
            gate: Gate::new(NativeDecider::new(engine, secrets, Some(tokens)), keys),
            issuers,
            limiter,
            test_endpoints: config.get("test_endpoints").as_deref() == Some("true"),
            policy,
        };
        Ok(self.setup.insert(setup))
    }

    pub fn handle(&mut self, req: Request) -> Response {
        match self.setup() {
            Ok(setup) => setup.handle(req),
            Err(message) => {
                // Fail closed: without a valid configuration nothing passes.
                println!("{}", serde_json::json!({ "tollgate_error": message }));
                text(StatusCode::INTERNAL_SERVER_ERROR, "gateway misconfigured\n")
            }
        }
    }
}

impl Setup {
    /// The key ring's fetch: the issuer's keys from the Config Store (an issuer without
    /// them has its tokens refused).
    fn read_keys(&self, url: &str) -> Fetched {
        let issuer = self
            .issuers
            .iter()
            .find(|(_, u)| u == url)
            .map(|(i, _)| i.as_str())
            .ok_or("no issuer has this JWKS URL")?;
        let config = open_config()?;
        chunked(&config, &format!("jwks.{issuer}"))?
            .ok_or_else(|| format!("the config store has no `jwks.{issuer}`"))
    }

    /// Decides through the gate (a browser sign-in's token request sent to the `sso`
    /// backend) and settles a rate limit with the limiter. Every fetch is a Config Store
    /// read and every send blocks, so the gate's futures are complete when polled once.
    fn decide(&self, facts: &RequestFacts<'_>, at: UnixTime) -> Decision {
        let fetch = |url: String| std::future::ready(self.read_keys(&url));
        let send = |request: TokenExchange| std::future::ready(send_token_request(&request));
        let decided = complete_now(self.gate.decide_signing_in(facts, at, false, fetch, send));
        self.settle(decided, "")
    }

    fn settle(&self, decided: Option<Decided>, namespace: &str) -> Decision {
        let Some(decided) = decided else {
            return Decision::policy_module_failed();
        };
        match decided.verdict {
            Verdict::Pending(pending) => self.limiter.check(&pending, namespace),
            verdict => verdict.resolve_with(&mut |_, _| None),
        }
    }

    fn handle(&self, mut req: Request) -> Response {
        if self.test_endpoints
            && req.get_path() == "/__tollgate/eval"
            && req.get_method_str() == "POST"
        {
            return self.eval_endpoint(req);
        }
        let client_ip = req.get_client_ip_addr().map(|ip| ip.to_string());
        let mut ingested = Ingested::new(
            req.get_method_str().to_owned(),
            req.get_path().to_owned(),
            req.get_query_str().unwrap_or("").to_owned(),
            client_ip.clone(),
        );
        for name in req.get_header_names_str() {
            for value in req.get_header_all(name) {
                // Refuse rather than drop: a header we cannot read may be one Gogs reads.
                let read = value.to_str().ok().is_some_and(|v| {
                    ingested
                        .header(name.to_ascii_lowercase(), v.to_owned())
                        .is_ok()
                });
                if !read {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "header values must be visible ASCII\n",
                    );
                }
            }
        }
        if ingested.wants_body() {
            // A request no body could get through is refused before its body is read.
            let pairs = ingested.header_pairs();
            let facts = ingested.facts(&pairs);
            let at = now();
            let fetch = |url: String| std::future::ready(self.read_keys(&url));
            if let Some(Some(refusal)) =
                complete_now(self.gate.refusal_before_body(&facts, at, fetch))
            {
                if let Verdict::Decided(decision) = refusal.verdict {
                    println!("{}", decision.audit(&facts, at).to_json());
                    return deny(&decision);
                }
            }
            // Read one byte past the limit at most: an endless body must not fill memory.
            let mut body = Vec::new();
            let limit = RequestFacts::LFS_BATCH_BODY_LIMIT as u64 + 1;
            if std::io::Read::read_to_end(
                &mut std::io::Read::take(req.take_body(), limit),
                &mut body,
            )
            .is_err()
            {
                return text(StatusCode::BAD_REQUEST, "cannot read request body\n");
            }
            if let Err(e) = ingested.set_body(body) {
                return text(
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                    e.message(),
                );
            }
        }
        if self.gate.decider.wants_entropy() {
            ingested.set_entropy(tollgate_host_kit::os_entropy());
        }
        let at = now();
        let pairs = ingested.header_pairs();
        let facts = ingested.facts(&pairs);
        let decision = self.decide(&facts, at);
        println!("{}", decision.audit(&facts, at).to_json());
        if !decision.allow {
            return deny(&decision);
        }
        drop(pairs);
        if let Some(body) = ingested.take_body() {
            req.set_body(body);
        }
        let connection = connection_tokens(
            req.get_header_all("connection")
                .filter_map(|v| v.to_str().ok()),
        );
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
        if let Some(ip) = &client_ip {
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
    fn eval_endpoint(&self, mut req: Request) -> Response {
        let input: EvalRequest = match serde_json::from_slice(&req.take_body_bytes()) {
            Ok(input) => input,
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("bad eval input: {e}\n")),
        };
        let pairs = input.request.header_pairs();
        let facts = input.request.facts(&pairs);
        let at = UnixTime::from_secs(input.now);
        let fetch = |url: String| std::future::ready(self.read_keys(&url));
        let given: Option<&OwnedTokenResponse> = input.exchange.as_ref();
        let json = match complete_now(
            self.gate
                .decide_with_given_answer(&facts, at, false, fetch, given),
        ) {
            Some(Err(request)) => request.to_json(),
            Some(Ok(decided)) => self.settle(Some(decided), &input.rate_namespace).to_json(),
            None => Decision::policy_module_failed().to_json(),
        };
        Response::from_status(StatusCode::OK)
            .with_header("content-type", "application/json")
            .with_body(json)
    }
}

/// Sends a sign-in's token request to the `sso` backend: the status and body, or `None`
/// when no whole answer came.
fn send_token_request(request: &TokenExchange) -> Option<(u16, Vec<u8>)> {
    let mut post = Request::post(&request.url).with_body(request.body.clone());
    for header in &request.headers {
        post.set_header(header.name(), header.value());
    }
    match post.send(SSO_BACKEND) {
        Ok(mut response) => {
            let status = response.get_status().as_u16();
            // One byte over the limit is enough for the gate to refuse the answer.
            let limit = TokenExchange::MAX_RESPONSE_BYTES as u64 + 1;
            let mut body = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(response.take_body(), limit),
                &mut body,
            )
            .ok()?;
            Some((status, body))
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({ "tollgate_error": format!("sign-in token request to {}: {e}", request.url) })
            );
            None
        }
    }
}

fn deny(decision: &Decision) -> Response {
    let (content_type, body) = decision.denial_body();
    let mut response = Response::from_status(decision.status)
        .with_header("content-type", content_type)
        .with_body(body);
    for header in &decision.headers {
        response.append_header(header.name(), header.value());
    }
    response
}
