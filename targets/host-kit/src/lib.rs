//! What every Tollgate host needs around `policy-core`, written once: turning a platform's
//! request into [`policy_core::RequestFacts`] ([`ingest`]), following the core's JWKS
//! schedule with the host's own fetch ([`keys`]), deciding natively or in the policy
//! module behind one [`gate::Decider`] ([`gate`]), a verified-token cache shared by threads
//! ([`tokens`]), and rate-limit state in memory by compare-and-replace ([`rates`]). Hosts
//! keep only the translation to and from their platform. No I/O and no runtime here:
//! fetches come in as async closures, so the same code serves tokio (serve), a blocking
//! thread (the Azure handler), a Workers isolate and a Fastly instance. The exceptions,
//! for the native hosts only, are behind features: `redis`, rate-limit state in Redis
//! ([`redis_rates`]) shared between instances; `events`, Kafka sinks ([`kafka`]), the
//! audit log's queue and writer ([`audit_log`]) and the relay of Gogs webhook deliveries
//! ([`webhooks`]). Behind `reload`: vetting a policy (it
//! compiles, its own test cases pass) before a host swaps it in ([`reload`]).

#[cfg(feature = "events")]
pub mod audit_log;
#[cfg(feature = "aws-lc")]
pub mod crypto;
pub mod entropy;
pub mod gate;
pub mod ingest;
#[cfg(feature = "events")]
pub mod kafka;
pub mod keys;
pub mod rates;
#[cfg(feature = "redis")]
pub mod redis_rates;
#[cfg(feature = "reload")]
pub mod reload;
pub mod request_id;
pub mod tokens;
#[cfg(feature = "events")]
pub mod webhooks;

#[cfg(feature = "aws-lc")]
pub use crypto::AWS_LC;
#[cfg(feature = "js")]
pub use entropy::js_entropy;
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub use entropy::os_entropy;
pub use gate::{DecideFailure, Decided, Decider, Gate, NativeDecider};
pub use ingest::{IngestError, Ingested};
pub use keys::{complete_now, FetchReport, Fetched, KeyRing};
pub use rates::{Namespaced, ShardedRates};
#[cfg(feature = "redis")]
pub use redis_rates::{RedisRates, Unavailable};
#[cfg(feature = "reload")]
pub use reload::{vet, Rejected, ReloadState, Vetted};
pub use tokens::SharedTokenCache;
