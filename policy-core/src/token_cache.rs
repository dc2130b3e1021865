//! A cache of verified tokens, so a token seen again skips its signature check (the
//! expensive part of a decision: 30-200 µs natively, up to 2 ms in WASM).
//!
//! Entries are keyed by the SHA-256 of the token and hold the identity it verified to. An
//! entry is used only inside the token's own validity window (`nbf`..`exp`, with the
//! issuer's leeway) and never longer than the cache's maximum age, which bounds how long a
//! token signed by a key the issuer has since withdrawn keeps working. The cache belongs
//! to one compiled policy: build a new one with a new policy.

use alloc::collections::BTreeMap;
use core::cell::RefCell;

use crate::identity::Identity;
use crate::time::UnixTime;

/// Where the engine looks verified tokens up and records new ones. Methods take `&self` so
/// hosts choose their own interior mutability: `RefCell` in single-threaded hosts (the
/// WASM module, the workers), a mutex in `tollgate serve`.
pub trait TokenCacheStore {
    /// Whether this store keeps tokens at all; one that does not spares the engine hashing
    /// each token for keys it would never use.
    fn keeps_tokens(&self) -> bool {
        true
    }
    fn lookup(&self, digest: &[u8; 32], now: UnixTime) -> Option<Identity>;
    fn remember(
        &self,
        digest: [u8; 32],
        identity: &Identity,
        valid_from: UnixTime,
        valid_until: UnixTime,
        now: UnixTime,
    );
}

/// No caching: every token is verified.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTokenCache;

impl TokenCacheStore for NoTokenCache {
    fn keeps_tokens(&self) -> bool {
        false
    }
    fn lookup(&self, _digest: &[u8; 32], _now: UnixTime) -> Option<Identity> {
        None
    }
    fn remember(&self, _: [u8; 32], _: &Identity, _: UnixTime, _: UnixTime, _: UnixTime) {}
}

#[derive(Clone, Debug)]
struct Entry {
    identity: Identity,
    valid_from: UnixTime,
    valid_until: UnixTime,
}

/// A bounded cache: at most `capacity` entries; when full, expired entries go first, then
/// the one that would expire soonest.
#[derive(Clone, Debug)]
pub struct TokenCache {
    entries: BTreeMap<[u8; 32], Entry>,
    capacity: usize,
    max_age_nanos: u64,
}

impl TokenCache {
    pub fn new(capacity: usize, max_age_secs: u64) -> Self {
        TokenCache {
            entries: BTreeMap::new(),
            capacity,
            max_age_nanos: max_age_secs.saturating_mul(1_000_000_000),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets everything (for example when an issuer's keys change).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn get(&self, digest: &[u8; 32], now: UnixTime) -> Option<&Identity> {
        self.entries
            .get(digest)
            .filter(|e| e.valid_from <= now && now < e.valid_until)
            .map(|e| &e.identity)
    }

    pub fn insert(
        &mut self,
        digest: [u8; 32],
        identity: &Identity,
        valid_from: UnixTime,
        valid_until: UnixTime,
        now: UnixTime,
    ) {
        if self.capacity == 0 {
            return;
        }
        let cap = UnixTime::from_nanos(now.as_nanos().saturating_add(self.max_age_nanos));
        let valid_until = valid_until.min(cap);
        if valid_until <= now {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&digest) {
            self.entries.retain(|_, e| e.valid_until > now);
            if self.entries.len() >= self.capacity {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.valid_until)
                    .map(|(k, _)| *k);
                if let Some(key) = soonest {
                    self.entries.remove(&key);
                }
            }
        }
        self.entries.insert(
            digest,
            Entry {
                identity: identity.clone(),
                valid_from,
                valid_until,
            },
        );
    }
}

impl TokenCacheStore for RefCell<TokenCache> {
    fn lookup(&self, digest: &[u8; 32], now: UnixTime) -> Option<Identity> {
        self.try_borrow().ok()?.get(digest, now).cloned()
    }
    fn remember(
        &self,
        digest: [u8; 32],
        identity: &Identity,
        valid_from: UnixTime,
        valid_until: UnixTime,
        now: UnixTime,
    ) {
        if let Ok(mut cache) = self.try_borrow_mut() {
            cache.insert(digest, identity, valid_from, valid_until, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Via;
    use alloc::{string::String, vec::Vec};

    fn who(user: &str) -> Identity {
        Identity {
            user: String::from(user),
            groups: Vec::new(),
            via: Via::ApiKey {
                key: String::from("k"),
            },
        }
    }

    const T0: UnixTime = UnixTime::from_secs(1_000);

    #[test]
    fn entries_live_inside_the_token_window_and_the_max_age() {
        let mut cache = TokenCache::new(8, 60);
        // Valid from 990 to 2000, but the cache keeps it at most 60 s.
        cache.insert(
            [1; 32],
            &who("a"),
            UnixTime::from_secs(990),
            UnixTime::from_secs(2_000),
            T0,
        );
        assert_eq!(cache.get(&[1; 32], T0).map(|i| i.user.as_str()), Some("a"));
        assert!(cache.get(&[1; 32], UnixTime::from_secs(1_059)).is_some());
        assert!(cache.get(&[1; 32], UnixTime::from_secs(1_060)).is_none());
        assert!(
            cache.get(&[1; 32], UnixTime::from_secs(989)).is_none(),
            "before nbf"
        );
        assert!(cache.get(&[2; 32], T0).is_none(), "another token");
        // A token expiring sooner than the max age goes at its expiry.
        cache.insert([3; 32], &who("b"), T0, UnixTime::from_secs(1_010), T0);
        assert!(cache.get(&[3; 32], UnixTime::from_secs(1_009)).is_some());
        assert!(cache.get(&[3; 32], UnixTime::from_secs(1_010)).is_none());
        // Already expired: not kept at all.
        cache.insert([4; 32], &who("c"), T0, UnixTime::from_secs(999), T0);
        assert!(cache.get(&[4; 32], T0).is_none());
    }

    #[test]
    fn a_full_cache_drops_expired_then_soonest_expiring_entries() {
        let mut cache = TokenCache::new(2, 3_600);
        cache.insert([1; 32], &who("a"), T0, UnixTime::from_secs(1_100), T0);
        cache.insert([2; 32], &who("b"), T0, UnixTime::from_secs(1_500), T0);
        cache.insert([3; 32], &who("c"), T0, UnixTime::from_secs(1_300), T0);
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get(&[1; 32], T0).is_none(),
            "soonest-expiring entry evicted"
        );
        assert!(cache.get(&[2; 32], T0).is_some() && cache.get(&[3; 32], T0).is_some());
        assert_eq!(TokenCache::new(0, 60).len(), 0);
    }
}
