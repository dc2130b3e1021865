//! JWKS for `jwks_url` issuers, cached in the isolate. Fetched when missing or older than
//! the refresh interval; on an unknown key, fetched again at most once per minimum gap;
//! kept while the issuer is unreachable until `max_stale`, then dropped (fail closed).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use policy_core::{Engine, KeySet, KeyStore, UnixTime};
use worker::{console_log, Fetch, Url};

use crate::config::JwksSettings;

struct Cached {
    keys: Rc<KeySet>,
    fetched_ms: u64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, Cached>,
    last_attempt_ms: HashMap<String, u64>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// The keys usable now, detached from the cache.
pub struct Keys(HashMap<String, Rc<KeySet>>);

impl KeyStore for Keys {
    fn key_set(&self, issuer_name: &str) -> Option<&KeySet> {
        self.0.get(issuer_name).map(|k| &**k)
    }
}

async fn download(url: &str) -> Result<KeySet, String> {
    let url = Url::parse(url).map_err(|e| e.to_string())?;
    let mut response = Fetch::Url(url).send().await.map_err(|e| e.to_string())?;
    if response.status_code() != 200 {
        return Err(format!("status {}", response.status_code()));
    }
    let text = response.text().await.map_err(|e| e.to_string())?;
    if text.len() > 1 << 20 {
        return Err("document too large".into());
    }
    KeySet::from_fetched_json(&text).map_err(|e| e.to_string())
}

/// Keys for every `jwks_url` issuer, fetching what is due. `key_miss` asks for an early
/// fetch (bounded by the minimum gap).
pub async fn keys(engine: &Engine, settings: &JwksSettings, now: UnixTime, key_miss: bool) -> Keys {
    let now_ms = now.as_nanos() / 1_000_000;
    let issuers: Vec<(String, String)> = engine
        .jwks_urls()
        .map(|(n, u)| (n.to_owned(), u.to_owned()))
        .collect();
    for (name, url) in &issuers {
        let due = CACHE.with(|c| {
            let cache = c.borrow();
            let age = cache
                .entries
                .get(name)
                .map(|e| now_ms.saturating_sub(e.fetched_ms));
            let since_attempt = cache
                .last_attempt_ms
                .get(name)
                .map(|t| now_ms.saturating_sub(*t));
            let gap_ok = since_attempt.is_none_or(|s| s >= settings.min_gap_ms);
            match age {
                None => gap_ok,
                Some(age) if age >= settings.refresh_ms => gap_ok,
                Some(_) => key_miss && gap_ok,
            }
        });
        if !due {
            continue;
        }
        CACHE.with(|c| c.borrow_mut().last_attempt_ms.insert(name.clone(), now_ms));
        match download(url).await {
            Ok(set) => CACHE.with(|c| {
                c.borrow_mut().entries.insert(
                    name.clone(),
                    Cached {
                        keys: Rc::new(set),
                        fetched_ms: now_ms,
                    },
                );
            }),
            Err(e) => console_log!(
                "{}",
                serde_json::json!({ "tollgate_error": format!("JWKS for issuer `{name}`: {e}; keeping the last good keys") })
            ),
        }
    }
    CACHE.with(|c| {
        let cache = c.borrow();
        Keys(
            cache
                .entries
                .iter()
                .filter(|(_, e)| now_ms.saturating_sub(e.fetched_ms) <= settings.max_stale_ms)
                .map(|(n, e)| (n.clone(), Rc::clone(&e.keys)))
                .collect(),
        )
    })
}
