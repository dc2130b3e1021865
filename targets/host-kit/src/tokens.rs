//! The verified-token cache of a host that decides natively on many threads: one
//! [`TokenCache`] behind a lock held only for a lookup or an insert, never across a
//! signature check. It starts over whenever the usable keys change (a fetch accepted, keys
//! gone stale), so a cached token never outlives the keys that verified it.

use std::sync::Mutex;

use policy_core::{Identity, KeysGeneration, TokenCache, TokenCacheStore, UnixTime};

#[derive(Debug)]
pub struct SharedTokenCache {
    inner: Mutex<(KeysGeneration, TokenCache)>,
}

impl SharedTokenCache {
    /// At most `entries` tokens, each served for at most `max_age_secs`.
    pub fn new(entries: usize, max_age_secs: u64) -> Self {
        SharedTokenCache {
            inner: Mutex::new((
                KeysGeneration::default(),
                TokenCache::new(entries, max_age_secs),
            )),
        }
    }

    /// The cache as seen by a decision made with keys of `generation`.
    pub fn view(&self, generation: KeysGeneration) -> TokenCacheView<'_> {
        TokenCacheView {
            shared: self,
            generation,
        }
    }

    fn with<T>(&self, generation: KeysGeneration, f: impl FnOnce(&mut TokenCache) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.0 != generation {
            inner.1.clear();
            inner.0 = generation;
        }
        f(&mut inner.1)
    }
}

/// [`SharedTokenCache`] for one decision.
#[derive(Clone, Copy, Debug)]
pub struct TokenCacheView<'a> {
    shared: &'a SharedTokenCache,
    generation: KeysGeneration,
}

impl TokenCacheStore for TokenCacheView<'_> {
    fn lookup(&self, digest: &[u8; 32], now: UnixTime) -> Option<Identity> {
        self.shared
            .with(self.generation, |cache| cache.get(digest, now).cloned())
    }

    fn remember(
        &self,
        digest: [u8; 32],
        identity: &Identity,
        valid_from: UnixTime,
        valid_until: UnixTime,
        now: UnixTime,
    ) {
        self.shared.with(self.generation, |cache| {
            cache.insert(digest, identity, valid_from, valid_until, now);
        });
    }
}
