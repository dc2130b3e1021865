//! Rate-limit state in Redis, so that several serve instances enforce one limit together.
//! GCRA stays in policy-core: the host reads a key's state, lets the pending decision
//! resolve against it, and stores the new state with a compare-and-set script that
//! writes only if the key still holds what was read; on a conflict it reads again. Keys
//! expire when their state stops mattering.

use std::time::Duration;

use policy_core::{Decision, PendingRate, RateState};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Writes `ARGV[2]` (expiring at Unix second `ARGV[3]`) only if the key still holds
/// `ARGV[1]` (empty: absent). Answers 1 when it wrote, 0 when the key had changed.
const COMPARE_AND_SET: &str = r"
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EXAT', ARGV[3])
return 1
";

/// Reads and writes of one decision before it gives up on a key that keeps changing.
const MAX_ATTEMPTS: usize = 64;

pub struct RedisRates {
    connection: ConnectionManager,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
}

/// Why a limit could not be checked.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl RedisRates {
    /// Connects to `url` (`redis://HOST:PORT/DB`); `timeout` bounds every command, and
    /// the connection is re-established by itself after Redis comes back.
    pub async fn connect(url: &str, prefix: String, timeout: Duration) -> Result<Self, String> {
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
        })
    }

    /// The final decision for `pending`, its state read and written in Redis.
    pub async fn resolve(&self, pending: &PendingRate) -> Result<Decision, Unavailable> {
        let key = format!("{}{}", self.prefix, pending.key());
        let mut connection = self.connection.clone();
        for _ in 0..MAX_ATTEMPTS {
            let read: Option<String> = self
                .bounded(redis::cmd("GET").arg(&key).query_async(&mut connection))
                .await?;
            let prior = match &read {
                Some(text) => Some(RateState(text.parse().map_err(|_| {
                    Unavailable(format!("key `{key}` holds `{text}`, not a rate state"))
                })?)),
                None => None,
            };
            let (decision, update) = pending.resolve(prior);
            // Refused: nothing to store, and a refused request consumes nothing.
            let Some(update) = update else {
                return Ok(decision);
            };
            let written: i64 = self
                .bounded(
                    self.script
                        .key(&key)
                        .arg(read.as_deref().unwrap_or(""))
                        .arg(update.state.0.to_string())
                        .arg(update.expires.max(1))
                        .invoke_async(&mut connection),
                )
                .await?;
            if written == 1 {
                return Ok(decision);
            }
        }
        Err(Unavailable(format!(
            "key `{key}` changed on every one of {MAX_ATTEMPTS} attempts"
        )))
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
