//! Rate-limit state in Redis, so that several serve instances enforce one limit together.
//! GCRA stays in policy-core: the host reads the states of a request's limits, lets the
//! pending decision resolve against them, and stores the new states with a script that
//! writes only if every key still holds what was read; on a conflict the script answers
//! the newer states and the host decides again. Within one instance, requests sharing a
//! key take turns (a striped lock), so conflicts only come from other instances, and the
//! lock also guards what this instance last saw of each key: an admitted request usually
//! costs one round trip (the compare-and-set against the remembered state), and a refusal
//! is only given after reading Redis itself. Keys expire when their state stops mattering.
//!
//! A request's keys are written by one script, so they must live on one Redis server
//! (a single primary, not a cluster).

use std::collections::HashMap;
use std::time::Duration;

use policy_core::{Decision, PendingRate, RateState};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Mutex, MutexGuard};

/// `KEYS`: the request's keys; `ARGV`: for each key, the state read ('' when absent),
/// then each new state, then each one's time to live in seconds. Writes every new state only if
/// every key still holds what was read, answering `{1}`; otherwise writes nothing and
/// answers `{0, current...}`.
const COMPARE_AND_SET: &str = r"
local n = #KEYS
local current = {}
local same = true
for i = 1, n do
  current[i] = redis.call('GET', KEYS[i]) or ''
  if current[i] ~= ARGV[i] then same = false end
end
if not same then
  table.insert(current, 1, 0)
  return current
end
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[n + i], 'EX', ARGV[2 * n + i])
end
return {1}
";

/// Decisions a request makes before it gives up on keys that keep changing.
const MAX_ATTEMPTS: usize = 64;

/// Stripes of the per-instance lock: requests whose keys share no stripe never wait for
/// each other.
const LOCK_STRIPES: usize = 1024;

/// Keys a stripe remembers before it forgets them all (the next request for each reads
/// Redis again): bounds memory at about a million keys.
const REMEMBERED_PER_STRIPE: usize = 1024;

/// What this instance last read or wrote for the keys of one stripe ('' for no state).
/// Other instances may have written since, which the compare-and-set finds out.
type Remembered = HashMap<String, String>;

pub struct RedisRates {
    connection: ConnectionManager,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    stripes: Box<[Mutex<Remembered>]>,
    /// Admit rate-limited requests unchecked while Redis is unavailable (an explicit
    /// opt-out); otherwise they are refused.
    admit_when_unavailable: bool,
}

impl std::fmt::Debug for RedisRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRates")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a limit could not be checked.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl RedisRates {
    /// Connects to `url` (`redis://HOST:PORT/DB`); `timeout` bounds every command, and
    /// the connection is re-established by itself after Redis comes back.
    pub async fn connect(
        url: &str,
        prefix: String,
        timeout: Duration,
        admit_when_unavailable: bool,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("rate store `{url}`: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let connection = tokio::time::timeout(
            timeout.max(Duration::from_secs(5)),
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| format!("rate store `{url}`: no answer"))?
        .map_err(|e| format!("rate store `{url}`: {e}"))?;
        Ok(RedisRates {
            connection,
            script: redis::Script::new(COMPARE_AND_SET),
            prefix,
            timeout,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::default()).collect(),
            admit_when_unavailable,
        })
    }

    /// The final decision for `pending`, and why Redis could not be used when it could
    /// not: the request is then refused (503, `rate_store_unavailable`), or admitted
    /// unchecked if the store was connected with `admit_when_unavailable`. A `namespace`
    /// (test endpoints) keeps its keys apart from real traffic's.
    pub async fn decide(
        &self,
        pending: &PendingRate,
        namespace: Option<&str>,
    ) -> (Decision, Option<Unavailable>) {
        match self.resolve(pending, namespace).await {
            Ok(decision) => (decision, None),
            Err(e) if self.admit_when_unavailable => (pending.admit(), Some(e)),
            Err(e) => (pending.unavailable(0), Some(e)),
        }
    }

    /// The final decision for `pending`, its states read and written in Redis.
    async fn resolve(
        &self,
        pending: &PendingRate,
        namespace: Option<&str>,
    ) -> Result<Decision, Unavailable> {
        let keys: Vec<String> = pending
            .checks()
            .iter()
            .map(|check| match namespace {
                Some(namespace) => format!("{}{namespace}/{}", self.prefix, check.key()),
                None => format!("{}{}", self.prefix, check.key()),
            })
            .collect();
        let mut turn = self.take_turn(&keys).await;
        let mut connection = self.connection.clone();
        let remembered: Option<Vec<String>> = keys.iter().map(|key| turn.remembered(key)).collect();
        let (mut read, mut fresh) = match remembered {
            Some(read) => (read, false),
            None => (self.read(&keys, &mut connection).await?, true),
        };
        for _ in 0..MAX_ATTEMPTS {
            let priors = keys
                .iter()
                .zip(&read)
                .map(|(key, text)| state(key, text))
                .collect::<Result<Vec<_>, _>>()?;
            let (decision, updates) = pending.resolve(&priors);
            if updates.is_empty() {
                // Refused. Another instance may have written since this one looked, which
                // only moves states on: check what Redis holds before saying how long to wait.
                if !fresh {
                    read = self.read(&keys, &mut connection).await?;
                    fresh = true;
                    continue;
                }
                turn.remember(&keys, &read);
                // A refused request consumes nothing: there is nothing to store.
                return Ok(decision);
            }
            let written: Vec<String> = updates.iter().map(|u| u.state.0.to_string()).collect();
            let mut invocation = self.script.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            invocation.arg(&read).arg(&written);
            // Times to live counted from the decision's own time, so neither a gateway
            // clock off from Redis' nor a test's fixed time makes a key vanish early.
            let decided_at = pending.now().as_nanos().div_ceil(1_000_000_000);
            for update in &updates {
                invocation.arg(update.expires.saturating_sub(decided_at).max(1));
            }
            let answer: Vec<redis::Value> = self
                .bounded(invocation.invoke_async(&mut connection))
                .await?;
            match answer.split_first() {
                Some((redis::Value::Int(1), _)) => {
                    turn.remember(&keys, &written);
                    return Ok(decision);
                }
                Some((redis::Value::Int(0), current)) if current.len() == keys.len() => {
                    read = current
                        .iter()
                        .map(redis::from_redis_value_ref::<String>)
                        .collect::<Result<_, _>>()
                        .map_err(|e| Unavailable(format!("compare-and-set answered {e}")))?;
                    fresh = true;
                }
                _ => return Err(Unavailable(format!("compare-and-set answered {answer:?}"))),
            }
        }
        Err(Unavailable(format!(
            "keys {keys:?} changed on every one of {MAX_ATTEMPTS} attempts"
        )))
    }

    /// The states Redis holds for `keys` ('' for none).
    async fn read(
        &self,
        keys: &[String],
        connection: &mut ConnectionManager,
    ) -> Result<Vec<String>, Unavailable> {
        let read: Vec<Option<String>> = self
            .bounded(redis::cmd("MGET").arg(keys).query_async(connection))
            .await?;
        Ok(read.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Waits until no other request of this instance uses one of `keys`' stripes, taking
    /// them in ascending order so that two requests never wait for each other.
    async fn take_turn(&self, keys: &[String]) -> Turn<'_> {
        let mut stripes: Vec<usize> = keys.iter().map(|key| stripe(key)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            if let Some(lock) = self.stripes.get(i) {
                guards.push((i, lock.lock().await));
            }
        }
        Turn { guards }
    }

    async fn bounded<T>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unavailable> {
        match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Unavailable(e.to_string())),
            Err(_) => Err(Unavailable(format!("no answer within {:?}", self.timeout))),
        }
    }
}

/// The stripes a request holds, and through them what the instance remembers of its keys.
struct Turn<'a> {
    guards: Vec<(usize, MutexGuard<'a, Remembered>)>,
}

impl Turn<'_> {
    fn stripe_of(&mut self, key: &str) -> Option<&mut Remembered> {
        let i = stripe(key);
        self.guards
            .iter_mut()
            .find(|(stripe, _)| *stripe == i)
            .map(|(_, guard)| &mut **guard)
    }

    fn remembered(&mut self, key: &str) -> Option<String> {
        self.stripe_of(key)?.get(key).cloned()
    }

    fn remember(&mut self, keys: &[String], states: &[String]) {
        for (key, state) in keys.iter().zip(states) {
            if let Some(remembered) = self.stripe_of(key) {
                if remembered.len() >= REMEMBERED_PER_STRIPE && !remembered.contains_key(key) {
                    remembered.clear();
                }
                remembered.insert(key.clone(), state.clone());
            }
        }
    }
}

fn stripe(key: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
    usize::try_from(hash % LOCK_STRIPES as u64).unwrap_or(0)
}

/// A key's stored text as a state; '' is no state.
fn state(key: &str, text: &str) -> Result<Option<RateState>, Unavailable> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(|tat| Some(RateState(tat)))
        .map_err(|_| Unavailable(format!("key `{key}` holds `{text}`, not a rate state")))
}
