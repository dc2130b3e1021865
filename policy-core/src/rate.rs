//! Rate limiting with GCRA, the way `governor` does it: the whole state of one key is a
//! single `u64`, the theoretical arrival time (TAT) of the next request, so hosts can keep
//! it in a Durable Object, a KV entry or an atomic and update it by compare-and-replace.

use alloc::{format, string::String, vec::Vec};
use serde::{Deserialize, Serialize};

use crate::decision::{Decision, ExplainStep, Header, Reason};
use crate::time::UnixTime;

/// A quota: `burst` requests at once, refilled at one per `interval`. Serializable, so a
/// host can run the check where its state lives (a Durable Object, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gcra {
    interval_nanos: u64,
    burst: u32,
    /// The quota as written, for window-counting limiters (API Management).
    requests: u32,
    period_secs: u64,
}

/// The stored state of one rate-limit key: the theoretical arrival time, in Unix nanos.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RateState(pub u64);

impl Gcra {
    /// `requests` per `period_secs`, at most `burst` at once. `None` when a value is zero.
    pub fn new(requests: u32, period_secs: u64, burst: u32) -> Option<Gcra> {
        if requests == 0 || period_secs == 0 || burst == 0 {
            return None;
        }
        let period_nanos = period_secs.checked_mul(1_000_000_000)?;
        let interval_nanos = (period_nanos / u64::from(requests)).max(1);
        Some(Gcra {
            interval_nanos,
            burst,
            requests,
            period_secs,
        })
    }

    /// The quota as the policy states it: `(requests, period in seconds)`.
    pub fn quota(&self) -> (u32, u64) {
        (self.requests, self.period_secs)
    }

    /// The quota as whole requests per second, rounded up (at least 1): the closest a
    /// per-second window counter (Fastly's Edge Rate Limiting) can come to it. Slower
    /// quotas, such as 100 an hour, become 1 a second there.
    pub fn requests_per_second_ceil(&self) -> u32 {
        let per_second = 1_000_000_000u64.div_ceil(self.interval_nanos).max(1);
        u32::try_from(per_second).unwrap_or(u32::MAX)
    }

    /// Admits or refuses one request at `now`. `Ok` carries the state to store; `Err` the
    /// nanoseconds until a request would be admitted (the state is then unchanged).
    pub fn check(&self, prior: Option<RateState>, now: UnixTime) -> Result<RateState, u64> {
        let now = now.as_nanos();
        let tat = prior.map_or(now, |s| s.0).max(now);
        let new_tat = tat.saturating_add(self.interval_nanos);
        let tolerance = self.interval_nanos.saturating_mul(u64::from(self.burst));
        let allow_until = now.saturating_add(tolerance);
        if new_tat <= allow_until {
            Ok(RateState(new_tat))
        } else {
            Err(new_tat - allow_until)
        }
    }
}

/// A state change for the host to store. `expires` is when the entry stops mattering (a
/// TAT in the past is the same as no entry), usable as a storage TTL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RateUpdate {
    pub key: String,
    pub state: RateState,
    pub expires: u64,
}

/// Where rate-limit state lives: one [`RateState`] per key, changed only by
/// compare-and-replace, as in governor's `StateStore::measure_and_replace`. The store hands
/// `decide` the key's current state and stores what it returns only if the key still
/// holds the state it handed over; otherwise it runs `decide` again on the newer state.
/// Hosts implement it over their storage (a sharded map, a KV store with generation
/// match, a file); [`PendingRate::resolve_in`] runs GCRA through it.
pub trait RateStore {
    /// Runs `decide` on the state of `key` and stores the state it returns (`None`: leave
    /// the key as it is). `Err` when the store could not be read or written.
    fn measure_and_replace(
        &self,
        key: &str,
        decide: &mut dyn FnMut(Option<RateState>) -> Option<RateState>,
    ) -> Result<(), RateStoreError>;
}

/// A rate-limit store that could not be read or written; requests it would have decided
/// are refused (fail closed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateStoreError(pub String);

/// An allowed request that still has to pass a rate limit: resolve it against a
/// [`RateStore`] ([`PendingRate::resolve_in`]), against a state the host loaded itself
/// ([`PendingRate::resolve`]), or with the result of a GCRA check run where the state lives
/// ([`PendingRate::conclude`]).
#[derive(Clone, Debug)]
pub struct PendingRate {
    pub(crate) key: String,
    pub(crate) limit_name: String,
    pub(crate) gcra: Gcra,
    pub(crate) now: UnixTime,
    pub(crate) allowed: Decision,
    /// Whether the decision is being explained (see [`crate::Engine::decide_explained`]).
    pub(crate) explain: bool,
}

impl PendingRate {
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn gcra(&self) -> Gcra {
        self.gcra
    }

    /// The time the decision was made at; a remote state holder must check at this time
    /// so that its update and [`PendingRate::resolve`] agree.
    pub fn now(&self) -> UnixTime {
        self.now
    }

    /// The final decision given the stored state, plus the update to store (none when refused).
    pub fn resolve(&self, prior: Option<RateState>) -> (Decision, Option<RateUpdate>) {
        self.conclude(self.gcra.check(prior, self.now))
    }

    /// The final decision through `store`: GCRA runs on the key's state and the new state
    /// is stored by compare-and-replace. A store that fails refuses the request (503,
    /// `rate_store_unavailable`).
    pub fn resolve_in(&self, store: &dyn RateStore) -> (Decision, Option<RateUpdate>) {
        let mut outcome = None;
        let stored = store.measure_and_replace(&self.key, &mut |prior| {
            let (decision, update) = self.resolve(prior);
            let state = update.as_ref().map(|u| u.state);
            outcome = Some((decision, update));
            state
        });
        match (stored, outcome) {
            (Ok(()), Some(outcome)) => outcome,
            _ => (self.unavailable(), None),
        }
    }

    /// The final decision from a GCRA check that ran where the state lives (a Durable
    /// Object): `Ok` with the state it stored, or `Err` with the nanoseconds to wait.
    pub fn conclude(&self, check: Result<RateState, u64>) -> (Decision, Option<RateUpdate>) {
        match check {
            Ok(state) => {
                let update = RateUpdate {
                    key: self.key.clone(),
                    state,
                    expires: state.0.div_ceil(1_000_000_000),
                };
                (self.admit(), Some(update))
            }
            Err(wait_nanos) => (self.refuse(wait_nanos.div_ceil(1_000_000_000)), None),
        }
    }

    /// The decision when the host's own limiter admitted the request. For hosts whose
    /// limiter keeps no GCRA state (Fastly's Edge Rate Limiting); others use `resolve`.
    pub fn admit(&self) -> Decision {
        let mut decision = self.allowed.clone();
        if self.explain {
            decision.explain.push(ExplainStep::new(
                format!("rate_limit:{}", self.limit_name),
                format!("within the limit (key `{}`)", self.key),
            ));
        }
        decision
    }

    /// The 429 when a limiter refused the request; `retry_after_secs` is raised to 1.
    pub fn refuse(&self, retry_after_secs: u64) -> Decision {
        let rule = format!("rate_limit:{}", self.limit_name);
        let retry_after = retry_after_secs.max(1);
        let mut decision = self.allowed.clone();
        decision.allow = false;
        decision.status = 429;
        decision.reason = Reason::RateLimited;
        decision.message = format!(
            "rate limit `{}` exceeded; retry in {retry_after} s",
            self.limit_name
        );
        decision.rule = Some(rule.clone());
        decision.set = Vec::new();
        decision.strip = Vec::new();
        decision.headers = alloc::vec![Header::new("retry-after", format!("{retry_after}"))];
        decision.retry_after = Some(retry_after);
        if self.explain {
            decision.explain.push(ExplainStep::new(
                rule,
                format!("over the limit (key `{}`)", self.key),
            ));
        }
        decision
    }

    /// The 503 when the limit's state could not be read or written: refusing is the only
    /// answer that cannot exceed the limit.
    pub fn unavailable(&self) -> Decision {
        let mut decision = self.allowed.clone();
        decision.allow = false;
        decision.status = 503;
        decision.reason = Reason::RateStoreUnavailable;
        decision.message = format!(
            "rate limit `{}` cannot be checked right now",
            self.limit_name
        );
        decision.rule = Some(format!("rate_limit:{}", self.limit_name));
        decision.set = Vec::new();
        decision.strip = Vec::new();
        decision.headers = alloc::vec![Header::new("retry-after", String::from("1"))];
        decision.retry_after = Some(1);
        decision
    }

    /// The limit's name (`[[rate_limit]] name`).
    pub fn limit_name(&self) -> &str {
        &self.limit_name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn burst_then_refill() {
        // 10 per 10 s (one per second), burst 3.
        let gcra = Gcra::new(10, 10, 3).unwrap();
        let t0 = UnixTime::from_secs(1_000);
        let mut state = None;
        for _ in 0..3 {
            state = Some(gcra.check(state, t0).unwrap());
        }
        assert_eq!(gcra.check(state, t0), Err(SEC));
        // One interval later exactly one more fits.
        let t1 = UnixTime::from_nanos(t0.as_nanos() + SEC);
        state = Some(gcra.check(state, t1).unwrap());
        assert!(gcra.check(state, t1).is_err());
    }

    #[test]
    fn zero_values_are_refused() {
        assert!(Gcra::new(0, 1, 1).is_none());
        assert!(Gcra::new(1, 0, 1).is_none());
        assert!(Gcra::new(1, 1, 0).is_none());
    }

    #[test]
    fn stale_state_counts_as_fresh() {
        let gcra = Gcra::new(1, 60, 1).unwrap();
        let old = RateState(5 * SEC);
        assert!(gcra.check(Some(old), UnixTime::from_secs(1_000)).is_ok());
    }

    proptest::proptest! {
        /// Over any window starting from a fresh state, admitted requests never exceed
        /// burst + elapsed / interval: the defining bound of GCRA.
        #[test]
        fn never_admits_more_than_the_quota(
            requests in 1u32..100,
            period in 1u64..120,
            burst in 1u32..20,
            gaps in proptest::collection::vec(0u64..2 * SEC, 1..200),
        ) {
            let gcra = Gcra::new(requests, period, burst).unwrap();
            let start = 1_000 * SEC;
            let mut now = start;
            let mut state = None;
            let mut admitted = 0u64;
            for gap in gaps {
                now += gap;
                if let Ok(s) = gcra.check(state, UnixTime::from_nanos(now)) {
                    state = Some(s);
                    admitted += 1;
                }
                let bound = u64::from(burst) + (now - start) / gcra.interval_nanos;
                proptest::prop_assert!(admitted <= bound, "admitted {} > bound {}", admitted, bound);
            }
        }

        /// A refused request admitted after waiting exactly the reported time.
        #[test]
        fn retry_after_is_exact(requests in 1u32..50, period in 1u64..60, burst in 1u32..5) {
            let gcra = Gcra::new(requests, period, burst).unwrap();
            let now = 1_000 * SEC;
            let mut state = None;
            loop {
                match gcra.check(state, UnixTime::from_nanos(now)) {
                    Ok(s) => state = Some(s),
                    Err(wait) => {
                        proptest::prop_assert!(gcra.check(state, UnixTime::from_nanos(now + wait)).is_ok());
                        proptest::prop_assert!(gcra.check(state, UnixTime::from_nanos(now + wait - 1)).is_err());
                        break;
                    }
                }
            }
        }
    }
}
