//! Where rate-limit decisions are made on Fastly.
//!
//! - [`Erl`]: Fastly's Edge Rate Limiting (rate counter + penalty box). The production
//!   choice: no extra round trip and no state to manage, but counts are approximate, per
//!   POP, and per-second (a quota of 100 an hour becomes 1 a second), and a refused client
//!   stays in the penalty box for at least a minute. Viceroy only stubs it (never limits).
//! - [`KvGcra`]: the engine's exact GCRA, state in a KV Store updated with a generation
//!   match (compare-and-replace). Exact per key, at the cost of KV round trips; this is the
//!   path the tests exercise under Viceroy.

use std::time::Duration;

use fastly::erl::{Penaltybox, RateCounter, RateWindow, ERL};
use fastly::kv_store::{KVStore, KVStoreError};
use policy_core::{Decision, PendingRate, RateState, RateStore, RateStoreError};
use tollgate_host_kit::Namespaced;

/// The limiter a deployment chose (`rate_store` in the Config Store).
pub enum Limiter {
    Erl(Erl),
    Kv(KvGcra),
}

impl Limiter {
    /// Admits or refuses a pending decision; `namespace` (test endpoints) keeps its state
    /// apart. A store that fails refuses (fail closed).
    pub fn check(&self, pending: &PendingRate, namespace: &str) -> Decision {
        match self {
            Limiter::Erl(erl) => erl.check(pending, namespace),
            Limiter::Kv(kv) if namespace.is_empty() => pending.resolve_in(kv),
            Limiter::Kv(kv) => pending.resolve_in(&Namespaced {
                prefix: namespace,
                store: kv,
            }),
        }
    }
}

pub struct Erl {
    erl: ERL,
}

impl Erl {
    pub fn open() -> Self {
        Erl {
            erl: ERL::open(
                RateCounter::open("tollgate_rc"),
                Penaltybox::open("tollgate_pb"),
            ),
        }
    }
}

/// How long ERL keeps a refused client out (its minimum), and so the Retry-After.
const PENALTY: Duration = Duration::from_secs(60);

impl Erl {
    /// Every limit counts the request in its own rate counter, until an enforced one
    /// refuses. ERL cannot take a count back, so a request refused by one limit stays
    /// counted by those checked before it.
    fn check(&self, pending: &PendingRate, namespace: &str) -> Decision {
        let mut waits = Vec::with_capacity(pending.checks().len());
        for check in pending.checks() {
            let entry = if namespace.is_empty() {
                check.key().to_owned()
            } else {
                format!("{namespace}/{}", check.key())
            };
            let limit = check.gcra().requests_per_second_ceil();
            let wait = match self
                .erl
                .check_rate(&entry, 1, RateWindow::TenSecs, limit, PENALTY)
            {
                Ok(false) => None,
                Ok(true) => Some(PENALTY),
                Err(_) => Some(Duration::from_secs(1)),
            };
            waits.push(wait.map(|w| u64::try_from(w.as_nanos()).unwrap_or(u64::MAX)));
            if wait.is_some() && !check.is_shadow() {
                break;
            }
        }
        pending.conclude_waits(&waits)
    }
}

pub struct KvGcra {
    store: KVStore,
}

impl KvGcra {
    pub fn open(name: &str) -> Option<Self> {
        KVStore::open(name)
            .ok()
            .flatten()
            .map(|store| KvGcra { store })
    }
}

/// Attempts at compare-and-replace before giving up (and refusing).
const CAS_ATTEMPTS: usize = 8;

impl RateStore for KvGcra {
    /// GCRA on the key's stored state, stored back only if no one wrote the key since it
    /// was read (generation match); on a lost race, load and check again.
    fn measure_and_replace(
        &self,
        key: &str,
        decide: &mut dyn FnMut(Option<RateState>) -> Option<RateState>,
    ) -> Result<(), RateStoreError> {
        let key = format!("rate/{key}");
        let failed = |e: KVStoreError| RateStoreError(format!("KV store: {e:?}"));
        for _ in 0..CAS_ATTEMPTS {
            let (prior, generation) = match self.store.lookup(&key) {
                Ok(mut found) => {
                    let generation = found.current_generation();
                    let text = String::from_utf8(found.take_body_bytes()).unwrap_or_default();
                    (
                        text.trim().parse::<u64>().ok().map(RateState),
                        Some(generation),
                    )
                }
                Err(KVStoreError::ItemNotFound) => (None, None),
                Err(e) => return Err(failed(e)),
            };
            let Some(next) = decide(prior) else {
                return Ok(());
            };
            let insert = self.store.build_insert();
            let insert = match generation {
                Some(generation) => insert.if_generation_match(generation),
                None => insert.mode(fastly::kv_store::InsertMode::Add),
            };
            match insert.execute(&key, next.0.to_string()) {
                Ok(()) => return Ok(()),
                Err(KVStoreError::ItemPreconditionFailed) => continue,
                Err(e) => return Err(failed(e)),
            }
        }
        Err(RateStoreError("KV store: the key kept changing".into()))
    }
}
