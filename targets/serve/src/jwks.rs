//! JWKS fetching and caching for issuers configured with `jwks_url`.
//!
//! Keys are fetched at start and every `jwks_refresh`; a token with an unknown `kid`
//! prompts an early fetch, at most once per `jwks_min_refresh_gap` per issuer. When the
//! issuer cannot be reached the last good keys keep serving for `jwks_max_stale`; after
//! that the issuer has no keys and its tokens are refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use policy_core::{KeySet, KeyStore};

use crate::metrics::Metrics;

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_JWKS_BYTES: usize = 1 << 20;

struct Entry {
    keys: Arc<KeySet>,
    /// The JWKS document, for hosts that hand keys on (the policy module).
    text: Arc<str>,
    /// Increases with every successful fetch, so copies elsewhere know they are behind.
    serial: u64,
    fetched_at: Instant,
}

pub struct KeyCache {
    issuers: Vec<(String, String)>,
    entries: RwLock<HashMap<String, Entry>>,
    last_attempt: Mutex<HashMap<String, Instant>>,
    client: reqwest::Client,
    min_gap: Duration,
    max_stale: Duration,
    serial: std::sync::atomic::AtomicU64,
}

/// The keys usable right now, detached from the cache's lock.
pub struct KeysSnapshot(HashMap<String, Arc<KeySet>>);

impl KeyStore for KeysSnapshot {
    fn key_set(&self, issuer_name: &str) -> Option<&KeySet> {
        self.0.get(issuer_name).map(|k| &**k)
    }
}

impl KeyCache {
    pub fn new(
        issuers: Vec<(String, String)>,
        min_gap: Duration,
        max_stale: Duration,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| format!("JWKS client: {e}"))?;
        Ok(KeyCache {
            issuers,
            entries: RwLock::default(),
            last_attempt: Mutex::default(),
            client,
            min_gap,
            max_stale,
            serial: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn snapshot(&self) -> KeysSnapshot {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let fresh = entries
            .iter()
            .filter(|(_, e)| e.fetched_at.elapsed() <= self.max_stale)
            .map(|(name, e)| (name.clone(), Arc::clone(&e.keys)))
            .collect();
        KeysSnapshot(fresh)
    }

    /// Which fetch of each issuer's keys is usable now, sorted: changes whenever keys are
    /// fetched anew or go stale, so caches built on the keys know to start over.
    pub fn fresh_serials(&self) -> Vec<(String, u64)> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut serials: Vec<(String, u64)> = entries
            .iter()
            .filter(|(_, e)| e.fetched_at.elapsed() <= self.max_stale)
            .map(|(name, e)| (name.clone(), e.serial))
            .collect();
        serials.sort();
        serials
    }

    /// The usable JWKS documents by issuer: `(serial, text)`.
    pub fn fresh_documents(&self) -> HashMap<String, (u64, Arc<str>)> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .filter(|(_, e)| e.fetched_at.elapsed() <= self.max_stale)
            .map(|(name, e)| (name.clone(), (e.serial, Arc::clone(&e.text))))
            .collect()
    }

    /// Fetches every issuer's keys now.
    pub async fn refresh_all(&self, metrics: &Metrics) {
        for (name, url) in &self.issuers {
            self.fetch(name, url, metrics).await;
        }
    }

    /// After an unknown `kid`: fetches the issuers not fetched within the minimum gap.
    /// Returns whether any fetch brought keys.
    pub async fn refresh_on_miss(&self, metrics: &Metrics) -> bool {
        let mut any = false;
        for (name, url) in &self.issuers {
            let due = {
                let attempts = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
                attempts
                    .get(name)
                    .is_none_or(|t| t.elapsed() >= self.min_gap)
            };
            if due {
                any |= self.fetch(name, url, metrics).await;
            }
        }
        any
    }

    async fn fetch(&self, name: &str, url: &str, metrics: &Metrics) -> bool {
        self.last_attempt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), Instant::now());
        match self.download(url).await {
            Ok((keys, text)) => {
                let serial = self
                    .serial
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                let entry = Entry {
                    keys: Arc::new(keys),
                    text: text.into(),
                    serial,
                    fetched_at: Instant::now(),
                };
                self.entries
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_owned(), entry);
                metrics.jwks_fetch(name, true);
                true
            }
            Err(e) => {
                eprintln!("tollgate: JWKS for issuer `{name}` from {url}: {e}; keeping the last good keys");
                metrics.jwks_fetch(name, false);
                false
            }
        }
    }

    async fn download(&self, url: &str) -> Result<(KeySet, String), String> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err("document too large".into());
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("document too large".into());
        }
        let text = std::str::from_utf8(&body).map_err(|_| "not UTF-8".to_owned())?;
        let keys = KeySet::from_fetched_json(text).map_err(|e| e.to_string())?;
        Ok((keys, text.to_owned()))
    }
}
