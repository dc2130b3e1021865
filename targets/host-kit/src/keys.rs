//! The JWKS key ring: the core's [`JwksSchedule`] behind a lock, driven by the host's own
//! fetch. Every host gets the same behaviour: keys fetched when missing or old, an early
//! fetch after an unknown key at most once per gap and issuer, the last good keys serving
//! until stale, and one retry of a decision that wanted fresh keys.

use std::future::Future;
use std::sync::Mutex;

use std::sync::Arc;

use policy_core::{
    Engine, JwksFetch, JwksSchedule, JwksTimings, KeysGeneration, UnixTime, UsableKeys, Verdict,
};

/// What a fetch brought: the document, or why there is none.
pub type Fetched = Result<String, String>;

/// One fetch attempt's result, for the host's metrics and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReport {
    pub issuer: String,
    pub url: String,
    /// `None` when the keys were accepted.
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct KeyRing {
    schedule: Mutex<JwksSchedule>,
    /// The host refreshes due keys in a background task ([`KeyRing::refresh_due`]), so a
    /// decision fetches only keys it has none of (and after a key miss), never waiting on
    /// a routine refresh of keys that still serve.
    background_refresh: bool,
}

impl KeyRing {
    /// A ring for `issuers`, `(issuer name, JWKS URL)` as [`Engine::jwks_urls`] lists them.
    pub fn new<'a>(
        issuers: impl IntoIterator<Item = (&'a str, &'a str)>,
        timings: JwksTimings,
    ) -> Self {
        KeyRing {
            schedule: Mutex::new(JwksSchedule::new(issuers, timings)),
            background_refresh: false,
        }
    }

    /// Says the host calls [`KeyRing::refresh_due`] on its own schedule: decisions then
    /// wait only on fetches of keys they have none of.
    pub fn refreshed_in_background(self) -> Self {
        KeyRing {
            background_refresh: true,
            ..self
        }
    }

    /// A ring for the issuers of `engine`.
    pub fn for_engine(engine: &Engine, timings: JwksTimings) -> Self {
        Self::new(engine.jwks_urls(), timings)
    }

    /// Takes over the keys `from` holds for issuers this ring fetches from the same URL
    /// (see [`JwksSchedule::carry_over`]).
    pub fn carry_over(&self, from: &KeyRing) {
        let from = from.lock();
        self.lock().carry_over(&from);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JwksSchedule> {
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys usable at `now`.
    pub fn keys(&self, now: UnixTime) -> UsableKeys {
        self.lock().key_store(now)
    }

    /// The keys usable at `now` and their generation, read together.
    pub fn keys_and_generation(&self, now: UnixTime) -> (UsableKeys, KeysGeneration) {
        let schedule = self.lock();
        (schedule.key_store(now), schedule.generation(now))
    }

    /// Which keys are usable at `now` (see [`JwksSchedule::generation`]).
    pub fn generation(&self, now: UnixTime) -> KeysGeneration {
        self.lock().generation(now)
    }

    /// The usable documents by issuer, `(issuer, serial, document)`, and their
    /// generation, for hosts that hand keys on to the policy module.
    pub fn documents(&self, now: UnixTime) -> (Vec<(String, u64, Arc<str>)>, KeysGeneration) {
        let schedule = self.lock();
        let documents = schedule
            .usable(now)
            .map(|(name, k)| (name.to_owned(), k.serial, Arc::clone(&k.document)))
            .collect();
        (documents, schedule.generation(now))
    }

    /// Fetches what is due at `now`.
    pub async fn refresh_due<F, Fut>(&self, now: UnixTime, fetch: F) -> Vec<FetchReport>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Fetched>,
    {
        let due = self.lock().due(now);
        self.perform(due, now, fetch).await
    }

    /// Fetches early after a token named a key the engine lacks, within the schedule's
    /// bounds. True when some issuer's keys changed.
    pub async fn refresh_after_key_miss<F, Fut>(
        &self,
        now: UnixTime,
        fetch: F,
    ) -> (bool, Vec<FetchReport>)
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Fetched>,
    {
        let due = self.lock().after_key_miss(now);
        let reports = self.perform(due, now, fetch).await;
        (reports.iter().any(|r| r.error.is_none()), reports)
    }

    async fn perform<F, Fut>(
        &self,
        due: Vec<JwksFetch>,
        now: UnixTime,
        fetch: F,
    ) -> Vec<FetchReport>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Fetched>,
    {
        let mut reports = Vec::with_capacity(due.len());
        for JwksFetch { issuer, url } in due {
            // The lock is never held across the fetch.
            let error = match fetch(url.clone()).await {
                Ok(document) => self
                    .lock()
                    .fetched(&issuer, &document, now)
                    .err()
                    .map(|e| e.to_string()),
                Err(e) => Some(e),
            };
            reports.push(FetchReport { issuer, url, error });
        }
        reports
    }

    /// Decides with the keys usable at `now`, fetching what is due first; a decision that
    /// wanted keys the engine lacks is made once more after an early fetch (if the
    /// schedule allows one and it brought keys). `decide` reads the keys from this ring.
    pub async fn decide<F, Fut, E>(
        &self,
        now: UnixTime,
        fetch: F,
        decide: impl Fn() -> Result<Verdict, E>,
    ) -> (Result<Verdict, E>, Vec<FetchReport>)
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Fetched>,
    {
        let due = if self.background_refresh {
            self.lock().due_without_keys(now)
        } else {
            self.lock().due(now)
        };
        let mut reports = self.perform(due, now, &fetch).await;
        let verdict = decide();
        if !verdict.as_ref().is_ok_and(Verdict::wants_fresh_keys) {
            return (verdict, reports);
        }
        let (changed, more) = self.refresh_after_key_miss(now, &fetch).await;
        reports.extend(more);
        if changed {
            return (decide(), reports);
        }
        (verdict, reports)
    }
}

/// Runs a future whose every await is already complete: [`KeyRing`]'s methods driven by
/// a blocking fetch wrapped in `std::future::ready` (the Azure handler's threads). `None`
/// if it was not complete after all.
pub fn complete_now<T>(future: impl Future<Output = T>) -> Option<T> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(value) => Some(value),
        std::task::Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const JWKS: &str = r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        complete_now(f).expect("the fetches here complete at once")
    }

    fn decision(reason: policy_core::Reason) -> Verdict {
        let mut decision = policy_core::Decision::policy_module_failed();
        decision.reason = reason;
        Verdict::Decided(decision)
    }

    #[test]
    fn a_key_miss_fetches_once_per_gap_and_decides_again() {
        let engine = Engine::from_toml(
            "[[issuer]]\nname = \"a\"\nissuer = \"https://a\"\naudiences = [\"g\"]\nalgorithms = [\"EdDSA\"]\njwks_url = \"https://a/jwks\"\n",
            "t.toml",
        )
        .unwrap();
        let ring = KeyRing::for_engine(
            &engine,
            JwksTimings {
                refresh_secs: 300,
                min_gap_secs: 30,
                max_stale_secs: 3600,
            },
        );
        let fetches = Cell::new(0);
        let fetch = |_url: String| {
            fetches.set(fetches.get() + 1);
            std::future::ready(Ok(JWKS.to_owned()))
        };
        let unknown_key = || {
            decision(policy_core::Reason::InvalidCredential(
                policy_core::TokenRejection::UnknownKey,
            ))
        };
        let at = |s: u64| UnixTime::from_secs(1_800_000_000 + s);

        // Missing keys are fetched first; within the gap a miss brings no second fetch.
        let decisions = Cell::new(0);
        let (_, reports) = block_on(ring.decide(at(0), fetch, || {
            decisions.set(decisions.get() + 1);
            Ok::<_, ()>(unknown_key())
        }));
        assert_eq!((reports.len(), fetches.get(), decisions.get()), (1, 1, 1));
        assert!(policy_core::KeyStore::key_set(&ring.keys(at(0)), "a").is_some());

        // Past the gap, a miss fetches early and the decision is made again.
        decisions.set(0);
        let (_, reports) = block_on(ring.decide(at(31), fetch, || {
            decisions.set(decisions.get() + 1);
            Ok::<_, ()>(unknown_key())
        }));
        assert_eq!((reports.len(), fetches.get(), decisions.get()), (1, 2, 2));

        // A decision that needs no keys fetches nothing.
        let (_, reports) = block_on(ring.decide(at(62), fetch, || {
            Ok::<_, ()>(decision(policy_core::Reason::MissingCredential))
        }));
        assert!(reports.is_empty());
        assert_eq!(fetches.get(), 2);
    }
}
