//! Who decides: the engine linked natively, or the policy module under wasmtime
//! (`--wasm`). Either way the proxy gets an [`Outcome`] to act on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use policy_core::{
    Decision, Engine, OwnedRequest, RateState, TokenCache, TokenCacheStore, UnixTime, Verdict,
};
use tollgate_wasmtime::{Action, CompiledModule, Final, PolicyInstance, WasmVerdict};

use crate::jwks::KeyCache;
use crate::metrics::Metrics;
use crate::proxy::SecretMap;

/// What the proxy does with one request.
#[derive(Debug)]
pub struct Outcome {
    pub allow: bool,
    pub status: u16,
    pub reason: String,
    /// Request headers to remove (lowercase).
    pub strip: Vec<String>,
    /// Origin headers with their real values.
    pub set: Vec<(String, String)>,
    /// Response headers for a denial.
    pub headers: Vec<(String, String)>,
    pub denial_content_type: String,
    pub denial_body: String,
    pub audit: String,
}

impl Outcome {
    fn from_decision(decision: &Decision, audit: String) -> Self {
        let (content_type, body) = decision.denial_body();
        Outcome {
            allow: decision.allow,
            status: decision.status,
            reason: decision.reason.code().to_owned(),
            strip: decision.strip.clone(),
            set: decision
                .set
                .iter()
                .map(|h| (h.name().to_owned(), h.value().to_owned()))
                .collect(),
            headers: decision
                .headers
                .iter()
                .map(|h| (h.name().to_owned(), h.value().to_owned()))
                .collect(),
            denial_content_type: content_type.to_owned(),
            denial_body: body,
            audit,
        }
    }

    fn from_final(outcome: Final) -> Self {
        let (allow, status, reason) = (
            outcome.allow(),
            outcome.status(),
            outcome.reason().to_owned(),
        );
        let d = &outcome.decision;
        let headers = d["headers"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let (strip, set, denial_content_type, denial_body) = match outcome.action {
            Action::Forward { strip, set } => (strip, set, String::new(), String::new()),
            Action::Deny { content_type, body } => (Vec::new(), Vec::new(), content_type, body),
        };
        Outcome {
            allow,
            status,
            reason,
            strip,
            set,
            headers,
            denial_content_type,
            denial_body,
            audit: outcome.audit.to_string(),
        }
    }

    /// The module failed (trap, fuel, malformed answer): refuse.
    fn module_failure(message: &str) -> Self {
        eprintln!("tollgate: policy module failed: {message}");
        Outcome {
            allow: false,
            status: 500,
            reason: "policy_module_error".into(),
            strip: Vec::new(),
            set: Vec::new(),
            headers: Vec::new(),
            denial_content_type: "text/plain; charset=utf-8".into(),
            denial_body: "policy evaluation failed\n".into(),
            audit: serde_json::json!({ "allow": false, "status": 500, "reason": "policy_module_error" }).to_string(),
        }
    }
}

/// An instance with the key documents it has been given, by issuer serial.
struct Slot {
    instance: PolicyInstance,
    loaded: HashMap<String, u64>,
}

/// Instances of the module, one per request in flight, reused afterwards.
pub struct WasmPool {
    module: CompiledModule,
    source: String,
    file: String,
    secrets: BTreeMap<String, String>,
    idle: Mutex<Vec<Slot>>,
}

impl WasmPool {
    pub fn new(
        module: CompiledModule,
        source: String,
        file: String,
        secrets: BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let pool = WasmPool {
            module,
            source,
            file,
            secrets,
            idle: Mutex::new(Vec::new()),
        };
        // Instantiate once now, so a bad module or policy fails at start, not per request.
        let slot = pool.instantiate()?;
        pool.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot);
        Ok(pool)
    }

    fn instantiate(&self) -> Result<Slot, String> {
        let mut instance = PolicyInstance::new(&self.module, &self.source, &self.file)
            .map_err(|e| e.to_string())?;
        instance
            .set_secrets(&self.secrets)
            .map_err(|e| e.to_string())?;
        Ok(Slot {
            instance,
            loaded: HashMap::new(),
        })
    }

    /// Brings the instance's keys up to date with the cache (and drops stale ones).
    fn sync_keys(slot: &mut Slot, keys: &KeyCache) -> Result<(), String> {
        let fresh = keys.fresh_documents();
        let issuers: Vec<String> = slot
            .instance
            .jwks_urls()
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        for issuer in issuers {
            match fresh.get(&issuer) {
                Some((serial, text)) if slot.loaded.get(&issuer) != Some(serial) => {
                    slot.instance
                        .set_keys(&issuer, Some(text))
                        .map_err(|e| e.to_string())?;
                    slot.loaded.insert(issuer, *serial);
                }
                None if slot.loaded.contains_key(&issuer) => {
                    slot.instance
                        .set_keys(&issuer, None)
                        .map_err(|e| e.to_string())?;
                    slot.loaded.remove(&issuer);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn decide_in(
        slot: &mut Slot,
        keys: &KeyCache,
        request: &OwnedRequest,
        now: UnixTime,
        rate: &Mutex<HashMap<String, RateState>>,
    ) -> Result<Final, String> {
        Self::sync_keys(slot, keys)?;
        match slot
            .instance
            .decide(request, now, false)
            .map_err(|e| e.to_string())?
        {
            WasmVerdict::Decided(outcome) => Ok(outcome),
            WasmVerdict::Pending { key, .. } => {
                let mut rate = rate.lock().unwrap_or_else(|p| p.into_inner());
                let resolved = slot
                    .instance
                    .resolve(rate.get(&key).copied())
                    .map_err(|e| e.to_string())?;
                if let Some((key, state, _)) = resolved.update {
                    rate.insert(key, state);
                }
                Ok(resolved.outcome)
            }
        }
    }
}

/// The verified-token cache shared by all requests (native mode). The lock is held only
/// for a lookup or an insert, never across a signature check. It starts over whenever the
/// usable keys change (a new fetch, or keys going stale), so a cached token never outlives
/// the keys that verified it.
pub struct SharedTokenCache {
    pub cache: Mutex<TokenCache>,
    pub keys_seen: Mutex<Vec<(String, u64)>>,
}

impl SharedTokenCache {
    pub fn new(entries: usize, max_age_secs: u64) -> Self {
        SharedTokenCache {
            cache: Mutex::new(TokenCache::new(entries, max_age_secs)),
            keys_seen: Mutex::new(Vec::new()),
        }
    }

    fn follow_keys(&self, keys: &KeyCache) {
        let now = keys.fresh_serials();
        let mut seen = self.keys_seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen != now {
            self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
            *seen = now;
        }
    }
}

impl TokenCacheStore for SharedTokenCache {
    fn lookup(&self, digest: &[u8; 32], now: UnixTime) -> Option<policy_core::Identity> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest, now)
            .cloned()
    }
    fn remember(
        &self,
        digest: [u8; 32],
        identity: &policy_core::Identity,
        valid_from: UnixTime,
        valid_until: UnixTime,
        now: UnixTime,
    ) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(
            digest,
            identity,
            valid_from,
            valid_until,
            now,
        );
    }
}

/// The body a request is decided with before its own is read (see
/// `Engine::refusal_before_body`): an LFS batch that only downloads.
const LEAST_ACCESS_BODY: &str = r#"{"operation":"download"}"#;

pub enum PolicyHost {
    Native {
        engine: Box<Engine>,
        secrets: SecretMap,
        tokens: SharedTokenCache,
    },
    Wasm(WasmPool),
}

impl PolicyHost {
    /// The denial a request gets whatever its body says, before the body is read. A key
    /// miss is left to the full decision, which refreshes keys and retries.
    pub fn refusal_before_body(
        &self,
        keys: &KeyCache,
        request: &OwnedRequest,
        now: UnixTime,
        _metrics: &Metrics,
    ) -> Option<Outcome> {
        let outcome = match self {
            PolicyHost::Native {
                engine,
                secrets,
                tokens,
            } => {
                tokens.follow_keys(keys);
                let pairs = request.header_pairs();
                let facts = request.facts(&pairs);
                let decision =
                    engine.refusal_before_body(&facts, now, &keys.snapshot(), secrets, tokens)?;
                Outcome::from_decision(&decision, decision.audit(&facts, now).to_json())
            }
            PolicyHost::Wasm(pool) => {
                let least = OwnedRequest {
                    body: Some(LEAST_ACCESS_BODY.into()),
                    ..request.clone()
                };
                let mut slot = pool
                    .idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop()
                    .map_or_else(|| pool.instantiate(), Ok)
                    .ok()?;
                let verdict = WasmPool::sync_keys(&mut slot, keys).and_then(|()| {
                    slot.instance
                        .decide(&least, now, false)
                        .map_err(|e| e.to_string())
                });
                let outcome = match verdict {
                    Ok(WasmVerdict::Decided(outcome)) if !outcome.allow() => {
                        Some(Outcome::from_final(outcome))
                    }
                    Ok(_) => None,
                    Err(_) => return None, // the full decision reports the failure
                };
                pool.idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(slot);
                outcome?
            }
        };
        let key_miss = outcome.reason == "token_unknown_key"
            || outcome.reason == "token_issuer_keys_unavailable";
        (!key_miss).then_some(outcome)
    }

    /// Decides one request (with rate-limit state) and returns what to do.
    pub fn decide(
        &self,
        keys: &KeyCache,
        request: &OwnedRequest,
        now: UnixTime,
        rate: &Mutex<HashMap<String, RateState>>,
        _metrics: &Metrics,
    ) -> Outcome {
        match self {
            PolicyHost::Native {
                engine,
                secrets,
                tokens,
            } => {
                tokens.follow_keys(keys);
                let pairs = request.header_pairs();
                let facts = request.facts(&pairs);
                let decision =
                    match engine.decide_cached(&facts, now, &keys.snapshot(), secrets, tokens) {
                        Verdict::Decided(decision) => decision,
                        Verdict::Pending(pending) => {
                            // Holding the lock makes load-resolve-store one compare-and-replace.
                            let mut rate = rate.lock().unwrap_or_else(|p| p.into_inner());
                            let (decision, update) =
                                pending.resolve(rate.get(pending.key()).copied());
                            if let Some(update) = update {
                                rate.insert(update.key, update.state);
                            }
                            decision
                        }
                    };
                Outcome::from_decision(&decision, decision.audit(&facts, now).to_json())
            }
            PolicyHost::Wasm(pool) => {
                let slot = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let mut slot = match slot.map_or_else(|| pool.instantiate(), Ok) {
                    Ok(slot) => slot,
                    Err(e) => return Outcome::module_failure(&e),
                };
                match WasmPool::decide_in(&mut slot, keys, request, now, rate) {
                    Ok(outcome) => {
                        pool.idle
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(slot);
                        Outcome::from_final(outcome)
                    }
                    // A failed instance is dropped, never reused.
                    Err(e) => Outcome::module_failure(&e),
                }
            }
        }
    }
}
