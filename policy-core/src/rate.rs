//! Rate limiting with GCRA, the way `governor` does it: the whole state of one key is a
//! single `u64`, the theoretical arrival time (TAT) of the next request, so hosts can keep
//! it in a Durable Object, a KV entry or an atomic and update it by compare-and-replace.

use alloc::{format, string::String, vec::Vec};
use serde::{Deserialize, Serialize};

use crate::decision::{Decision, ExplainStep, Header, Reason, Shadow};
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

    /// What to store instead of `written`, the state [`Gcra::check`] stored for a request
    /// that is being taken back, if the key still holds `current`: one interval less, as
    /// if the request had not come. `None` (leave the key) once anyone else has written
    /// since: their state may rest on time that passed after `written`, and taking an
    /// interval off it could admit one request too many. Leaving the key counted can only
    /// refuse early.
    pub fn give_back(&self, written: RateState, current: Option<RateState>) -> Option<RateState> {
        (current == Some(written)).then(|| RateState(written.0.saturating_sub(self.interval_nanos)))
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

impl RateUpdate {
    fn new(key: &str, state: RateState) -> Self {
        RateUpdate {
            key: String::from(key),
            state,
            expires: state.0.div_ceil(1_000_000_000),
        }
    }
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

/// One limit an allowed request still has to pass: the `[[rate_limit]]` and the key its
/// state is kept under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateCheck {
    pub(crate) key: String,
    pub(crate) limit_name: String,
    pub(crate) gcra: Gcra,
    /// A shadow limit (`mode = "shadow"`): counted like the others, but when it would
    /// refuse, the request goes on and the decision only reports it.
    pub(crate) shadow: bool,
}

impl RateCheck {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The limit's name (`[[rate_limit]] name`).
    pub fn limit_name(&self) -> &str {
        &self.limit_name
    }

    pub fn gcra(&self) -> Gcra {
        self.gcra
    }

    /// Whether the limit is in shadow mode: its refusal does not refuse the request.
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }
}

/// An allowed request that still has to pass every rate limit that applies to it (at
/// least one). It is admitted only when all of them admit it, and a refused request
/// consumes nothing from any of them. A shadow limit that would refuse does not count
/// against admission: it keeps its state, and the decision reports it
/// ([`Decision::shadow`]). Resolve it against a [`RateStore`]
/// ([`PendingRate::resolve_in`]), against states the host loaded itself
/// ([`PendingRate::resolve`]), or from GCRA checks run where the states live
/// ([`PendingRate::conclude`]).
#[derive(Clone, Debug)]
pub struct PendingRate {
    pub(crate) checks: Vec<RateCheck>,
    pub(crate) now: UnixTime,
    pub(crate) allowed: Decision,
    /// Whether the decision is being explained (see [`crate::Engine::decide_explained`]).
    pub(crate) explain: bool,
}

impl PendingRate {
    /// The limits to pass, in policy order.
    pub fn checks(&self) -> &[RateCheck] {
        &self.checks
    }

    /// The time the decision was made at; a remote state holder must check at this time
    /// so that its update and [`PendingRate::resolve`] agree.
    pub fn now(&self) -> UnixTime {
        self.now
    }

    /// The final decision given the stored state of every check (`priors[i]` for
    /// `checks()[i]`; missing entries count as no state), plus the updates to store: one
    /// per check, in order, when admitted (a shadow check that would have refused keeps
    /// its prior state), none when refused.
    pub fn resolve(&self, priors: &[Option<RateState>]) -> (Decision, Vec<RateUpdate>) {
        let prior = |i: usize| priors.get(i).copied().flatten();
        let results: Vec<Result<RateState, u64>> = self
            .checks
            .iter()
            .enumerate()
            .map(|(i, check)| check.gcra.check(prior(i), self.now))
            .collect();
        let decision = self.conclude(&results);
        let updates = if decision.allow {
            self.checks
                .iter()
                .zip(&results)
                .enumerate()
                .map(|(i, (check, result))| {
                    // No state at all counts as a state long past.
                    let state = result.unwrap_or_else(|_| prior(i).unwrap_or(RateState(0)));
                    RateUpdate::new(&check.key, state)
                })
                .collect()
        } else {
            Vec::new()
        };
        (decision, updates)
    }

    /// The final decision through `store`: each check consumes from its key by
    /// compare-and-replace, in order. When one refuses, what the earlier ones consumed is
    /// given back and the later ones are only read (for the longest Retry-After). A store
    /// that fails refuses the request (503, `rate_store_unavailable`), unless a limit has
    /// already refused it (the 429 stands).
    pub fn resolve_in(&self, store: &dyn RateStore) -> Decision {
        let mut results: Vec<Result<RateState, u64>> = Vec::with_capacity(self.checks.len());
        let mut refused = false;
        for (i, check) in self.checks.iter().enumerate() {
            let mut result = None;
            let stored = store.measure_and_replace(&check.key, &mut |prior| {
                let checked = check.gcra.check(prior, self.now);
                result = Some(checked);
                // Once the request is refused, the remaining checks only measure.
                if refused {
                    None
                } else {
                    checked.ok()
                }
            });
            let Some(result) = result.filter(|_| stored.is_ok()) else {
                if refused {
                    // Only measuring: the refusal stands, with the waits known so far.
                    break;
                }
                self.give_back(store, &results);
                return self.unavailable(i);
            };
            if result.is_err() && !refused && !check.shadow {
                refused = true;
                self.give_back(store, &results);
            }
            results.push(result);
        }
        self.conclude(&results)
    }

    /// Returns what the admitted checks among `results` consumed, where no one has
    /// written since (see [`Gcra::give_back`]). A failure leaves the request counted,
    /// which can only refuse later requests early, never admit too many.
    fn give_back(&self, store: &dyn RateStore, results: &[Result<RateState, u64>]) {
        for (check, result) in self.checks.iter().zip(results) {
            if let Ok(written) = *result {
                let _ = store.measure_and_replace(&check.key, &mut |current| {
                    check.gcra.give_back(written, current)
                });
            }
        }
    }

    /// The final decision from GCRA checks that ran where the states live (Durable
    /// Objects): `results[i]` for `checks()[i]`, `Ok` with the state it stored or `Err`
    /// with the nanoseconds to wait. See [`PendingRate::conclude_waits`].
    pub fn conclude(&self, results: &[Result<RateState, u64>]) -> Decision {
        let waits: Vec<Option<u64>> = results.iter().map(|r| r.err()).collect();
        self.conclude_waits(&waits)
    }

    /// The final decision from each limiter's answer: `waits[i]` for `checks()[i]`,
    /// `None` when it admitted, the nanoseconds to wait when it refused. Admitted when
    /// every enforced check admitted (a refusing shadow check is reported in
    /// [`Decision::shadow`]); otherwise the 429 names the enforced limit with the longest
    /// wait. Fewer answers than checks, none refusing, is a 503: the rest were never asked.
    pub fn conclude_waits(&self, waits: &[Option<u64>]) -> Decision {
        let longest = |shadow: bool| {
            waits
                .iter()
                .zip(&self.checks)
                .enumerate()
                .filter(|(_, (_, check))| check.shadow == shadow)
                .filter_map(|(i, (wait, _))| wait.map(|wait| (i, wait)))
                .fold(
                    None,
                    |longest: Option<(usize, u64)>, (i, wait)| match longest {
                        Some((_, most)) if most >= wait => longest,
                        _ => Some((i, wait)),
                    },
                )
        };
        match longest(false) {
            Some((i, wait)) => self.refuse(i, wait.div_ceil(1_000_000_000)),
            None if waits.len() == self.checks.len() => {
                let mut decision = self.admit();
                // A shadow grant's outcome, decided before any limit, comes first.
                let unreported = decision.shadow.is_none();
                if let Some((i, wait)) = longest(true).filter(|_| unreported) {
                    let would_be = self.refuse(i, wait.div_ceil(1_000_000_000));
                    decision.shadow = Shadow::of(&decision, &would_be);
                    if self.explain {
                        let rule = would_be.rule.unwrap_or_default();
                        decision.explain.push(ExplainStep::new(
                            "shadow",
                            format!("with shadow rules enforced: 429 rate_limited by `{rule}`"),
                        ));
                    }
                }
                decision
            }
            None => self.unavailable(waits.len()),
        }
    }

    /// The decision when the host's own limiters admitted the request, or when it admits
    /// without checking (a rate store that is down, configured to let requests through).
    pub fn admit(&self) -> Decision {
        let mut decision = self.allowed.clone();
        if self.explain {
            for check in &self.checks {
                decision.explain.push(ExplainStep::new(
                    format!("rate_limit:{}", check.limit_name),
                    format!(
                        "{}within the limit (key `{}`)",
                        if check.shadow { "shadow: " } else { "" },
                        check.key
                    ),
                ));
            }
        }
        decision
    }

    /// The 429 when the limiter of `checks()[index]` refused the request;
    /// `retry_after_secs` is raised to 1.
    pub fn refuse(&self, index: usize, retry_after_secs: u64) -> Decision {
        let Some(check) = self.checks.get(index) else {
            return self.unavailable(index);
        };
        let rule = format!("rate_limit:{}", check.limit_name);
        let retry_after = retry_after_secs.max(1);
        let mut decision = self.denial(429, Reason::RateLimited, rule.clone(), retry_after);
        decision.message = format!(
            "rate limit `{}` exceeded; retry in {retry_after} s",
            check.limit_name
        );
        if self.explain {
            decision.explain.push(ExplainStep::new(
                rule,
                format!("over the limit (key `{}`)", check.key),
            ));
        }
        decision
    }

    /// The 503 when the state of `checks()[index]` could not be read or written: refusing
    /// is the only answer that cannot exceed the limit.
    pub fn unavailable(&self, index: usize) -> Decision {
        let name = self
            .checks
            .get(index)
            .or(self.checks.first())
            .map_or("", |c| c.limit_name.as_str());
        let mut decision = self.denial(
            503,
            Reason::RateStoreUnavailable,
            format!("rate_limit:{name}"),
            1,
        );
        decision.message = format!("rate limit `{name}` cannot be checked right now");
        decision
    }

    fn denial(&self, status: u16, reason: Reason, rule: String, retry_after: u64) -> Decision {
        let mut decision = self.allowed.clone();
        decision.allow = false;
        decision.status = status;
        decision.reason = reason;
        decision.rule = Some(rule);
        decision.set = Vec::new();
        decision.strip = Vec::new();
        decision.headers = alloc::vec![Header::new("retry-after", format!("{retry_after}"))];
        decision.retry_after = Some(retry_after);
        decision
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
    fn give_back_only_undoes_a_state_no_one_wrote_over() {
        // 1 a second, burst 2.
        let gcra = Gcra::new(10, 10, 2).unwrap();
        let t0 = UnixTime::from_secs(1_000);
        let written = gcra.check(None, t0).unwrap();
        assert_eq!(
            gcra.give_back(written, Some(written)),
            Some(RateState(t0.as_nanos()))
        );
        // Someone admitted 5 s later, after `written` had run out, wrote t0 + 6 s: taking
        // a second off that would give back their request, not ours.
        let later = UnixTime::from_secs(1_005);
        let theirs = gcra.check(Some(written), later).unwrap();
        assert_eq!(gcra.give_back(written, Some(theirs)), None);
        assert_eq!(gcra.give_back(written, None), None);
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

    /// A store over a map, as a host's memory store would be.
    #[derive(Default)]
    struct MapStore(core::cell::RefCell<alloc::collections::BTreeMap<String, RateState>>);

    impl RateStore for MapStore {
        fn measure_and_replace(
            &self,
            key: &str,
            decide: &mut dyn FnMut(Option<RateState>) -> Option<RateState>,
        ) -> Result<(), RateStoreError> {
            let prior = self.0.borrow().get(key).copied();
            if let Some(next) = decide(prior) {
                self.0.borrow_mut().insert(String::from(key), next);
            }
            Ok(())
        }
    }

    /// An allowed request under `limits` (name, requests per 10 s, burst), at `secs`; a
    /// limit whose name starts with `shadow` is in shadow mode.
    fn pending(limits: &[(&str, u32, u32)], secs: u64) -> PendingRate {
        let mut allowed = Decision::policy_module_failed();
        allowed.allow = true;
        allowed.status = 200;
        allowed.reason = Reason::Allowed;
        PendingRate {
            checks: limits
                .iter()
                .map(|&(name, requests, burst)| RateCheck {
                    key: format!("{name}/user:alice"),
                    limit_name: String::from(name),
                    gcra: Gcra::new(requests, 10, burst).unwrap(),
                    shadow: name.starts_with("shadow"),
                })
                .collect(),
            now: UnixTime::from_secs(secs),
            allowed,
            explain: false,
        }
    }

    #[test]
    fn every_limit_must_admit_and_the_longest_wait_is_named() {
        // `slow`: 1 per 10 s; `fast`: 10 per 10 s, burst 1.
        let p = pending(&[("fast", 10, 1), ("slow", 1, 1)], 1_000);
        let (first, updates) = p.resolve(&[None, None]);
        assert!(first.allow);
        assert_eq!(updates.len(), 2);
        let priors: Vec<_> = updates.iter().map(|u| Some(u.state)).collect();
        // Both refuse now; `slow` waits longer (10 s against 1 s) and is the one named.
        let (second, none) = p.resolve(&priors);
        assert!(none.is_empty(), "a refused request stores nothing");
        assert_eq!((second.status, second.retry_after), (429, Some(10)));
        assert_eq!(second.rule.as_deref(), Some("rate_limit:slow"));
    }

    #[test]
    fn a_refused_request_consumes_nothing_from_the_limits_that_admitted_it() {
        let store = MapStore::default();
        // `wide`: 3 at once; `narrow`: 1 at once.
        let p = pending(&[("wide", 3, 3), ("narrow", 1, 1)], 1_000);
        assert!(p.resolve_in(&store).allow);
        for _ in 0..5 {
            let refused = p.resolve_in(&store);
            assert_eq!(refused.rule.as_deref(), Some("rate_limit:narrow"));
            assert_eq!(refused.retry_after, Some(10));
        }
        // `wide` counted only the admitted request: two more fit on their own.
        let wide = pending(&[("wide", 3, 3)], 1_000);
        assert!(wide.resolve_in(&store).allow);
        assert!(wide.resolve_in(&store).allow);
        assert!(!wide.resolve_in(&store).allow);
    }

    /// A store whose every key starting with `broken` fails.
    struct PartlyBroken(MapStore);

    impl RateStore for PartlyBroken {
        fn measure_and_replace(
            &self,
            key: &str,
            decide: &mut dyn FnMut(Option<RateState>) -> Option<RateState>,
        ) -> Result<(), RateStoreError> {
            if key.starts_with("broken") {
                return Err(RateStoreError(String::from("down")));
            }
            self.0.measure_and_replace(key, decide)
        }
    }

    #[test]
    fn a_store_failure_refuses_with_503_unless_a_limit_already_refused() {
        let store = PartlyBroken(MapStore::default());
        let p = pending(&[("ok", 3, 3), ("broken", 3, 3)], 1_000);
        let down = p.resolve_in(&store);
        assert_eq!(
            (down.status, down.rule.as_deref()),
            (503, Some("rate_limit:broken"))
        );
        // What `ok` took for the failed request was given back: 3 still fit.
        let ok = pending(&[("ok", 3, 3)], 1_000);
        for _ in 0..3 {
            assert!(ok.resolve_in(&store).allow);
        }
        // `ok` refuses first; `broken` is then only measured, and its failure does not
        // turn the 429 into a 503.
        let refused = p.resolve_in(&store);
        assert_eq!(
            (refused.status, refused.rule.as_deref()),
            (429, Some("rate_limit:ok"))
        );
    }

    #[test]
    fn a_shadow_limit_reports_a_refusal_but_never_refuses() {
        let store = MapStore::default();
        // `shadow`: 1 at once, reported only; `real`: 3 at once.
        let p = pending(&[("shadow", 1, 1), ("real", 3, 3)], 1_000);
        let first = p.resolve_in(&store);
        assert!(first.allow && first.shadow.is_none());
        for _ in 0..2 {
            let over = p.resolve_in(&store);
            assert!(over.allow, "a shadow limit never refuses");
            let shadow = over.shadow.expect("the shadow refusal is reported");
            assert_eq!(
                (
                    shadow.allow,
                    shadow.status,
                    shadow.reason,
                    shadow.rule.as_deref()
                ),
                (false, 429, Reason::RateLimited, Some("rate_limit:shadow"))
            );
        }
        // The real limit counted all three and now refuses; its 429 carries no shadow.
        let refused = p.resolve_in(&store);
        assert_eq!(
            (refused.status, refused.rule.as_deref()),
            (429, Some("rate_limit:real"))
        );
        assert!(refused.shadow.is_none());
        // Admitted requests store one update per check, the refusing shadow one unchanged.
        let (admitted, updates) = p.resolve(&[Some(RateState(1_001 * SEC)), None]);
        assert!(admitted.allow && admitted.shadow.is_some());
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[0].state, RateState(1_001 * SEC));
    }

    #[test]
    fn resolve_in_and_resolve_agree() {
        let store = MapStore::default();
        let mut states: alloc::collections::BTreeMap<String, RateState> = Default::default();
        let limits = [("a", 5, 2), ("shadow-b", 3, 3), ("c", 20, 1)];
        for step in 0..40u64 {
            let p = pending(&limits, 1_000 + step / 3);
            let priors: Vec<_> = p
                .checks()
                .iter()
                .map(|c| states.get(c.key()).copied())
                .collect();
            let (expected, updates) = p.resolve(&priors);
            for update in updates {
                states.insert(update.key, update.state);
            }
            let got = p.resolve_in(&store);
            assert_eq!(got.to_json(), expected.to_json(), "step {step}");
        }
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
