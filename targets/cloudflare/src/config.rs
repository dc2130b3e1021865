//! Configuration from the Worker's environment, compiled once per isolate.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use policy_core::policy::Policy;
use policy_core::{JwksTimings, SecretStore};
use tollgate_host_kit::{Gate, KeyRing, NativeDecider, SharedTokenCache};
use worker::Env;

/// Verified tokens an isolate remembers, and for how long at most.
const TOKEN_CACHE_ENTRIES: usize = 1000;
const TOKEN_CACHE_MAX_AGE_SECS: u64 = 60;

pub struct SecretMap(HashMap<String, String>);

impl SecretStore for SecretMap {
    fn secret(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.0
            .get(name)
            .map(|v| std::borrow::Cow::Borrowed(v.as_str()))
    }
}

/// The engine with its secrets, token cache and key ring: they live as long as the
/// isolate keeps this configuration.
pub type PolicyGate = Gate<NativeDecider<SecretMap>>;

#[derive(Clone)]
pub struct Config {
    pub gate: Rc<PolicyGate>,
    pub origin: String,
    pub test_endpoints: bool,
}

thread_local! {
    /// The last configuration built, with the texts it was built from: an isolate
    /// compiles its policy once, and again only when the deployment changes it.
    static CACHE: RefCell<Option<(String, String, Config)>> = const { RefCell::new(None) };
}

fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string())
}

fn seconds(env: &Env, name: &str, default: u64) -> Result<u64, String> {
    match var(env, name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("{name} must be a number of seconds, not `{v}`")),
    }
}

impl Config {
    pub fn load(env: &Env) -> Result<Config, String> {
        let policy = var(env, "TOLLGATE_POLICY").ok_or("TOLLGATE_POLICY is not set")?;
        let secrets = env
            .secret("TOLLGATE_SECRETS")
            .map(|s| s.to_string())
            .or_else(|_| env.var("TOLLGATE_SECRETS").map(|s| s.to_string()))
            .unwrap_or_else(|_| "{}".into());
        if let Some(config) = CACHE.with(|c| {
            c.borrow()
                .as_ref()
                .filter(|(p, s, _)| *p == policy && *s == secrets)
                .map(|(_, _, config)| config.clone())
        }) {
            return Ok(config);
        }
        let origin = var(env, "TOLLGATE_ORIGIN").ok_or("TOLLGATE_ORIGIN is not set")?;
        if !(origin.starts_with("https://") || origin.starts_with("http://")) {
            return Err(format!("TOLLGATE_ORIGIN `{origin}` must be an http(s) URL"));
        }
        let engine = Policy::parse(&policy, "TOLLGATE_POLICY")
            .map_err(|e| e.to_string())?
            .engine;
        let secret_map: HashMap<String, String> = serde_json::from_str(&secrets)
            .map_err(|e| format!("TOLLGATE_SECRETS is not a JSON object of strings: {e}"))?;
        let timings = JwksTimings {
            refresh_secs: seconds(env, "TOLLGATE_JWKS_REFRESH", 300)?.max(1),
            min_gap_secs: seconds(env, "TOLLGATE_JWKS_MIN_REFRESH_GAP", 30)?,
            max_stale_secs: seconds(env, "TOLLGATE_JWKS_MAX_STALE", 3600)?,
        };
        let keys = KeyRing::for_engine(&engine, timings);
        let tokens = SharedTokenCache::new(TOKEN_CACHE_ENTRIES, TOKEN_CACHE_MAX_AGE_SECS);
        let decider = NativeDecider::new(engine, SecretMap(secret_map), Some(tokens));
        let config = Config {
            gate: Rc::new(Gate::new(decider, keys)),
            origin: origin.trim_end_matches('/').to_owned(),
            test_endpoints: var(env, "TOLLGATE_TEST_ENDPOINTS").as_deref() == Some("true"),
        };
        CACHE.with(|c| *c.borrow_mut() = Some((policy, secrets, config.clone())));
        Ok(config)
    }
}
