//! When to fetch each `jwks_url` issuer's keys, and which fetched keys may be used: the one
//! schedule every host follows, sans-IO. The host asks what is due, performs the fetches
//! with its own I/O, and reports each document back.
//!
//! - An issuer never fetched, or last fetched `refresh` ago, is due.
//! - After a token named a key the engine does not have ([`crate::Decision::wants_fresh_keys`]),
//!   every issuer is due early, but no issuer is attempted twice within `min_gap`: a flood
//!   of made-up key ids cannot become a flood of fetches.
//! - While an issuer cannot be reached its last good keys keep serving for `max_stale`
//!   after they were fetched; then it has no keys and its tokens are refused.

use alloc::{string::String, sync::Arc, vec::Vec};

use crate::keys::{KeySet, KeySetError, KeyStore};
use crate::time::UnixTime;

/// The schedule's three durations, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JwksTimings {
    /// How often an issuer's keys are fetched again.
    pub refresh_secs: u64,
    /// Least time between two attempts at one issuer.
    pub min_gap_secs: u64,
    /// How long the last good keys serve after they were fetched.
    pub max_stale_secs: u64,
}

impl Default for JwksTimings {
    fn default() -> Self {
        JwksTimings {
            refresh_secs: 300,
            min_gap_secs: 30,
            max_stale_secs: 3600,
        }
    }
}

/// A fetch for the host to perform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksFetch {
    pub issuer: String,
    pub url: String,
}

/// The last good keys of one issuer.
#[derive(Clone, Debug)]
pub struct FetchedKeys {
    pub keys: Arc<KeySet>,
    /// The document they came from, for hosts that hand keys on (the policy module).
    pub document: Arc<str>,
    /// Increases with every document accepted for this issuer.
    pub serial: u64,
    pub fetched_at: UnixTime,
}

#[derive(Debug)]
struct Issuer {
    name: String,
    url: String,
    keys: Option<FetchedKeys>,
    attempted_at: Option<UnixTime>,
}

#[derive(Debug)]
pub struct JwksSchedule {
    timings: JwksTimings,
    issuers: Vec<Issuer>,
    serial: u64,
}

impl JwksSchedule {
    /// A schedule for `issuers`, `(issuer name, JWKS URL)` as [`crate::Engine::jwks_urls`] lists
    /// them, none fetched yet.
    pub fn new<'a>(
        issuers: impl IntoIterator<Item = (&'a str, &'a str)>,
        timings: JwksTimings,
    ) -> Self {
        JwksSchedule {
            timings,
            issuers: issuers
                .into_iter()
                .map(|(name, url)| Issuer {
                    name: String::from(name),
                    url: String::from(url),
                    keys: None,
                    attempted_at: None,
                })
                .collect(),
            serial: 0,
        }
    }

    pub fn timings(&self) -> JwksTimings {
        self.timings
    }

    /// Takes over what `from` knows of every issuer both schedules fetch from the same
    /// URL (its keys and when it last tried), so a new policy does not fetch those again
    /// or go without their keys meanwhile. An issuer whose URL changed starts unfetched.
    pub fn carry_over(&mut self, from: &JwksSchedule) {
        for issuer in &mut self.issuers {
            if let Some(old) = from
                .issuers
                .iter()
                .find(|o| o.name == issuer.name && o.url == issuer.url)
            {
                issuer.keys.clone_from(&old.keys);
                issuer.attempted_at = old.attempted_at;
            }
        }
        self.serial = self.serial.max(from.serial);
    }

    /// The fetches due at `now` (missing or old keys), marked as attempted.
    pub fn due(&mut self, now: UnixTime) -> Vec<JwksFetch> {
        let timings = self.timings;
        self.take(now, |issuer| {
            issuer
                .keys
                .as_ref()
                .is_none_or(|k| now.secs_since(k.fetched_at) >= timings.refresh_secs)
        })
    }

    /// The fetches due at `now` for issuers with no usable keys (never fetched, or stale
    /// past `max_stale`), marked as attempted: all a request need wait for where a
    /// background task makes the routine refreshes ([`JwksSchedule::due`]).
    pub fn due_without_keys(&mut self, now: UnixTime) -> Vec<JwksFetch> {
        let timings = self.timings;
        self.take(now, |issuer| {
            issuer
                .keys
                .as_ref()
                .is_none_or(|k| now.secs_since(k.fetched_at) >= timings.max_stale_secs)
        })
    }

    /// The fetches to make after a token named a key the engine lacks: every issuer not
    /// attempted within the minimum gap, marked as attempted.
    pub fn after_key_miss(&mut self, now: UnixTime) -> Vec<JwksFetch> {
        self.take(now, |_| true)
    }

    fn take(&mut self, now: UnixTime, wanted: impl Fn(&Issuer) -> bool) -> Vec<JwksFetch> {
        let gap = self.timings.min_gap_secs;
        let mut out = Vec::new();
        for issuer in &mut self.issuers {
            let allowed = issuer.attempted_at.is_none_or(|t| now.secs_since(t) >= gap);
            if allowed && wanted(issuer) {
                issuer.attempted_at = Some(now);
                out.push(JwksFetch {
                    issuer: issuer.name.clone(),
                    url: issuer.url.clone(),
                });
            }
        }
        out
    }

    /// Records a fetched document. A document that is not a valid key set (or holds a
    /// secret key) leaves the last good keys in place and says why.
    pub fn fetched(
        &mut self,
        issuer: &str,
        document: &str,
        now: UnixTime,
    ) -> Result<(), KeySetError> {
        let keys = KeySet::from_fetched_json(document)?;
        self.serial = self.serial.saturating_add(1);
        let serial = self.serial;
        if let Some(entry) = self.issuers.iter_mut().find(|i| i.name == issuer) {
            entry.keys = Some(FetchedKeys {
                keys: Arc::new(keys),
                document: Arc::from(document),
                serial,
                fetched_at: now,
            });
        }
        Ok(())
    }

    /// The keys usable at `now`, by issuer (stale ones left out).
    pub fn usable(&self, now: UnixTime) -> impl Iterator<Item = (&str, &FetchedKeys)> {
        let max_stale = self.timings.max_stale_secs;
        self.issuers.iter().filter_map(move |i| {
            i.keys
                .as_ref()
                .filter(|k| now.secs_since(k.fetched_at) <= max_stale)
                .map(|k| (i.name.as_str(), k))
        })
    }

    /// The usable keys as a [`KeyStore`], detached from the schedule (cheap: shared sets).
    pub fn key_store(&self, now: UnixTime) -> UsableKeys {
        UsableKeys(
            self.usable(now)
                .map(|(name, k)| (String::from(name), Arc::clone(&k.keys)))
                .collect(),
        )
    }

    /// Which keys are usable at `now`, as one small value: it changes whenever keys are
    /// accepted or go stale, so caches built on the keys (verified tokens) know to start
    /// over. (Serials only grow, so any change that keeps the count adds a serial above
    /// every earlier one and raises the latest.)
    pub fn generation(&self, now: UnixTime) -> KeysGeneration {
        self.usable(now)
            .fold(KeysGeneration::default(), |g, (_, k)| KeysGeneration {
                usable: g.usable + 1,
                latest: g.latest.max(k.serial),
            })
    }
}

/// See [`JwksSchedule::generation`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeysGeneration {
    usable: usize,
    latest: u64,
}

/// Keys usable at one moment, by issuer.
#[derive(Clone, Debug, Default)]
pub struct UsableKeys(Vec<(String, Arc<KeySet>)>);

impl KeyStore for UsableKeys {
    fn key_set(&self, issuer_name: &str) -> Option<&KeySet> {
        self.0
            .iter()
            .find(|(name, _)| name == issuer_name)
            .map(|(_, keys)| &**keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Engine;

    const JWKS: &str = r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    fn schedule() -> JwksSchedule {
        let engine = Engine::from_toml(
            "[[issuer]]\nname = \"a\"\nissuer = \"https://a\"\naudiences = [\"g\"]\nalgorithms = [\"EdDSA\"]\njwks_url = \"https://a/jwks\"\n",
            "t.toml",
        )
        .expect("policy");
        JwksSchedule::new(
            engine.jwks_urls(),
            JwksTimings {
                refresh_secs: 300,
                min_gap_secs: 30,
                max_stale_secs: 3600,
            },
        )
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn fetches_when_missing_then_on_refresh_never_within_the_gap() {
        let mut s = schedule();
        assert_eq!(s.due(at(0)).len(), 1);
        assert!(s.due(at(1)).is_empty(), "attempted within the gap");
        assert!(s.key_store(at(1)).key_set("a").is_none());
        s.fetched("a", JWKS, at(2)).expect("keys");
        assert!(s.key_store(at(3)).key_set("a").is_some());
        assert!(s.due(at(100)).is_empty(), "fresh keys");
        assert_eq!(s.due(at(302)).len(), 1, "refresh");
    }

    #[test]
    fn a_request_beside_a_background_refresh_waits_only_for_keys_it_lacks() {
        let mut s = schedule();
        assert_eq!(s.due_without_keys(at(0)).len(), 1, "never fetched");
        s.fetched("a", JWKS, at(0)).expect("keys");
        assert!(
            s.due_without_keys(at(400)).is_empty(),
            "due for refresh, still serving"
        );
        assert_eq!(s.due(at(400)).len(), 1, "the background's refresh");
        assert_eq!(s.due_without_keys(at(3600)).len(), 1, "stale: no keys left");
    }

    #[test]
    fn carry_over_keeps_the_keys_of_issuers_whose_url_is_unchanged() {
        let mut old = schedule();
        old.due(at(0));
        old.fetched("a", JWKS, at(0)).expect("keys");
        let timings = old.timings();
        let mut same = JwksSchedule::new([("a", "https://a/jwks")], timings);
        same.carry_over(&old);
        assert!(same.key_store(at(1)).key_set("a").is_some());
        assert!(same.due(at(1)).is_empty(), "nothing to fetch again");
        let mut moved = JwksSchedule::new([("a", "https://a/other-jwks")], timings);
        moved.carry_over(&old);
        assert!(moved.key_store(at(1)).key_set("a").is_none());
        assert_eq!(moved.due(at(1)).len(), 1, "a new URL is fetched");
    }

    #[test]
    fn key_misses_fetch_early_but_at_most_once_per_gap() {
        let mut s = schedule();
        s.due(at(0));
        s.fetched("a", JWKS, at(0)).expect("keys");
        assert!(
            s.after_key_miss(at(10)).is_empty(),
            "within the gap of the first attempt"
        );
        assert_eq!(s.after_key_miss(at(31)).len(), 1);
        assert!(s.after_key_miss(at(32)).is_empty());
        assert!(s.after_key_miss(at(60)).is_empty());
        assert_eq!(s.after_key_miss(at(62)).len(), 1);
    }

    #[test]
    fn last_good_keys_serve_until_stale_and_bad_documents_change_nothing() {
        let mut s = schedule();
        s.due(at(0));
        s.fetched("a", JWKS, at(0)).expect("keys");
        let generation = s.generation(at(1));
        assert!(s
            .fetched(
                "a",
                "{\"keys\": [{\"kty\": \"oct\", \"k\": \"AAAA\"}]}",
                at(400)
            )
            .is_err());
        assert_eq!(
            s.generation(at(401)),
            generation,
            "a bad document keeps the last good keys"
        );
        assert!(s.key_store(at(3600)).key_set("a").is_some());
        assert!(
            s.key_store(at(3601)).key_set("a").is_none(),
            "stale keys fail closed"
        );
        assert_ne!(
            s.generation(at(3601)),
            generation,
            "keys going stale change the generation"
        );
        assert_eq!(s.generation(at(3601)), KeysGeneration::default());
    }
}
