//! Rate-limit state in process memory: [`policy_core::RateStore`] over a map split into
//! shards, each behind its own lock, so concurrent requests for different keys rarely wait
//! on one another and a key's load-check-store is atomic. For `tollgate serve` and the
//! Azure handler's single-instance mode.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use policy_core::{RateState, RateStore, RateStoreError, UnixTime};

/// Shards: enough that two cores' worth of requests seldom meet on one lock.
const SHARDS: usize = 64;

#[derive(Debug)]
pub struct ShardedRates {
    shards: Vec<Mutex<HashMap<String, RateState>>>,
}

impl Default for ShardedRates {
    fn default() -> Self {
        ShardedRates {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl ShardedRates {
    fn shard(&self, key: &str) -> &Mutex<HashMap<String, RateState>> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let index = usize::try_from(hasher.finish() % SHARDS as u64).unwrap_or_default();
        &self.shards[index]
    }

    /// Drops states whose theoretical arrival time has passed: the same as no state.
    pub fn prune(&self, now: UnixTime) {
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, s| s.0 > now.as_nanos());
        }
    }

    /// Keys held (for metrics and tests).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RateStore for ShardedRates {
    fn measure_and_replace(
        &self,
        key: &str,
        decide: &mut dyn FnMut(Option<RateState>) -> Option<RateState>,
    ) -> Result<(), RateStoreError> {
        // The shard's lock spans load, check and store: nothing can change the key between.
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(next) = decide(shard.get(key).copied()) {
            shard.insert(key.to_owned(), next);
        }
        Ok(())
    }
}

/// Another store with every key under `prefix/`: keeps test endpoints' rate state
/// (`rate_namespace`) apart from each other and from real traffic.
#[derive(Debug)]
pub struct Namespaced<'a, S: ?Sized> {
    pub prefix: &'a str,
    pub store: &'a S,
}

impl<S: RateStore + ?Sized> RateStore for Namespaced<'_, S> {
    fn measure_and_replace(
        &self,
        key: &str,
        decide: &mut dyn FnMut(Option<RateState>) -> Option<RateState>,
    ) -> Result<(), RateStoreError> {
        self.store
            .measure_and_replace(&format!("{}/{key}", self.prefix), decide)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_core::Gcra;
    use std::sync::Arc;

    #[test]
    fn concurrent_checks_admit_exactly_the_quota() {
        // 10 a minute, burst 10: of 8 threads x 50 attempts at one instant, 10 pass.
        let gcra = Gcra::new(10, 60, 10).unwrap();
        let now = UnixTime::from_secs(1_800_000_000);
        let rates = Arc::new(ShardedRates::default());
        let admitted: usize = (0..8)
            .map(|_| {
                let rates = Arc::clone(&rates);
                std::thread::spawn(move || {
                    let mut n = 0;
                    for _ in 0..50 {
                        rates
                            .measure_and_replace("k", &mut |prior| {
                                let next = gcra.check(prior, now).ok();
                                n += usize::from(next.is_some());
                                next
                            })
                            .unwrap();
                    }
                    n
                })
            })
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(admitted, 10);
        assert_eq!(rates.len(), 1);
        rates.prune(UnixTime::from_secs(1_800_000_000 + 61));
        assert!(rates.is_empty());
    }
}
