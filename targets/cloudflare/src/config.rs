//! Configuration from the Worker's environment, compiled once per isolate.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use policy_core::policy::Policy;
use policy_core::{Engine, SecretStore};
use worker::Env;

#[derive(Clone, Copy)]
pub struct JwksSettings {
    pub refresh_ms: u64,
    pub min_gap_ms: u64,
    pub max_stale_ms: u64,
}

pub struct SecretMap(HashMap<String, String>);

impl SecretStore for SecretMap {
    fn secret(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.0
            .get(name)
            .map(|v| std::borrow::Cow::Borrowed(v.as_str()))
    }
}

#[derive(Clone)]
pub struct Config {
    pub engine: Rc<Engine>,
    pub origin: String,
    pub secrets: Rc<SecretMap>,
    pub jwks: JwksSettings,
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
        None => Ok(default * 1000),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(|s| s * 1000)
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
        let config = Config {
            engine: Rc::new(engine),
            origin: origin.trim_end_matches('/').to_owned(),
            secrets: Rc::new(SecretMap(secret_map)),
            jwks: JwksSettings {
                refresh_ms: seconds(env, "TOLLGATE_JWKS_REFRESH", 300)?,
                min_gap_ms: seconds(env, "TOLLGATE_JWKS_MIN_REFRESH_GAP", 30)?,
                max_stale_ms: seconds(env, "TOLLGATE_JWKS_MAX_STALE", 3600)?,
            },
            test_endpoints: var(env, "TOLLGATE_TEST_ENDPOINTS").as_deref() == Some("true"),
        };
        CACHE.with(|c| *c.borrow_mut() = Some((policy, secrets, config.clone())));
        Ok(config)
    }
}
