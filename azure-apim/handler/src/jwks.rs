//! JWKS for `jwks_url` issuers: fetched at start, again when older than five minutes, and
//! on an unknown key at most every thirty seconds; handed to each module instance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tollgate_wasmtime::{PolicyInstance, WasmError};

const REFRESH: Duration = Duration::from_secs(300);
const MIN_GAP: Duration = Duration::from_secs(30);
const MAX_STALE: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub struct Jwks {
    /// issuer -> (document, fetched at)
    docs: Mutex<HashMap<String, (String, Instant)>>,
    last_attempt: Mutex<Option<Instant>>,
}

impl Jwks {
    /// Fetches every issuer's keys (respecting the minimum gap unless `force`); true when
    /// any fetch succeeded.
    pub fn fetch_all(&self, issuers: &[(String, String)], force: bool) -> bool {
        {
            let mut last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
            if !force && last.is_some_and(|t| t.elapsed() < MIN_GAP) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build();
        let Ok(client) = client else { return false };
        let mut any = false;
        for (name, url) in issuers {
            match client.get(url).send().and_then(|r| r.error_for_status()).and_then(|r| r.text()) {
                Ok(text) => {
                    self.docs.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), (text, Instant::now()));
                    any = true;
                }
                Err(e) => eprintln!("tollgate-azure-handler: JWKS for `{name}` from {url}: {e}; keeping the last good keys"),
            }
        }
        any
    }

    /// Gives `instance` the current documents (dropping stale ones), refreshing when due.
    pub fn load_into(&self, instance: &mut PolicyInstance) -> Result<(), WasmError> {
        let due = self
            .docs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|(_, t)| t.elapsed() > REFRESH);
        if due {
            self.fetch_all(instance.jwks_urls(), false);
        }
        let docs = self.docs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let issuers: Vec<String> = instance
            .jwks_urls()
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        for issuer in issuers {
            match docs.get(&issuer) {
                Some((text, fetched)) if fetched.elapsed() <= MAX_STALE => {
                    instance.set_keys(&issuer, Some(text))?
                }
                _ => instance.set_keys(&issuer, None)?,
            }
        }
        Ok(())
    }
}
