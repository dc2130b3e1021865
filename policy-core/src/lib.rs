//! Tollgate's policy engine.
//!
//! Everything that decides whether a request may reach the Gogs origin lives here, and
//! nothing else does. The crate is `#![no_std]` + `alloc` and sans-IO: it never reads a
//! clock, draws randomness, opens a socket or touches a platform API. Hosts (the CLI, the
//! wasmtime module, the Cloudflare and Fastly workers, the Azure handler, the npm package)
//! hand it:
//!
//! - the request, as [`RequestFacts`];
//! - the time, as a [`UnixTime`] argument;
//! - verification keys for issuers configured with a JWKS URL, through [`KeyStore`];
//! - origin secrets (Gogs tokens), through [`SecretStore`];
//! - rate-limit state, through [`PendingRate::resolve`], which returns the updates to store.
//!
//! ```text
//! Policy TOML --parse/validate--> Engine --decide(facts, now, keys, secrets)--> Verdict
//!                                                     Verdict::Pending --resolve(states)--> Decision + RateUpdates
//! ```
//!
//! A browser signing in (`[sso]`) comes back to the callback path with a code: its verdict
//! is a [`TokenExchange`] the host sends (as it fetches a JWKS), and the provider's answer
//! goes to [`Engine::complete_sign_in`], which verifies the ID token and starts a session
//! cookie the edge signs. The randomness a sign-in needs comes in with the request
//! ([`RequestFacts::entropy`]).
//!
//! Gogs webhook deliveries to a `[[webhook]]` path are checked by
//! [`Engine::webhook_at`] and [`WebhookRoute::receive`] instead (signature, event,
//! repository), and a policy's own `[[test]]` cases run through [`cases::run`] (the
//! `testing` feature), the same way for `tollgate test` and for a host vetting a reload.
// `ts` (TypeScript declarations, generated at build time and never in a deciding host) uses
// ts-rs, whose derives expand to code written against the std prelude.
#![cfg_attr(not(feature = "ts"), no_std)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

/// The policy module's typed interface (the `abi` feature).
#[cfg(feature = "abi")]
pub mod abi;
mod access;
mod apikey;
mod audit;
mod binding;
/// `[[test]]` cases and their expectations: for tools that run them (`tollgate test`, the
/// conformance harness), not for hosts that only decide.
#[cfg(feature = "testing")]
pub mod cases;
mod client_key;
mod credential;
mod crypto;
mod decision;
mod eddsa;
mod engine;
pub mod forwarding;
mod glob;
mod identity;
mod json_members;
mod jwks_schedule;
mod jwt;
mod keys;
mod no_random;
mod origin;
pub mod policy;
mod rate;
mod request;
mod route;
mod scope;
mod serde_util;
mod sso;
mod time;
mod token_cache;
#[cfg(feature = "ts")]
mod ts;
mod webhook;

pub use access::Access;
pub use apikey::api_key_hash_hex;
pub use audit::AuditRecord;
pub use crypto::{CryptoProvider, P256Key, RsaKey, RsaScheme, RustCrypto};
pub use decision::{Decision, ExplainStep, Header, Reason, Shadow, Verdict};
pub use engine::{Engine, LOGIN_METADATA_PATH};
pub use identity::{Identity, Via};
pub use jwks_schedule::{
    FetchedKeys, JwksFetch, JwksSchedule, JwksTimings, KeysGeneration, UsableKeys,
};
pub use jwt::TokenRejection;
pub use keys::{Algorithm, KeySet, KeySetError, KeyStore, NoKeys};
pub use origin::{NoSecrets, PlaceholderSecrets, SecretStore, PLACEHOLDER};
pub use policy::{PolicyError, Position, SecretUse};
pub use rate::{Gcra, PendingRate, RateCheck, RateState, RateStore, RateStoreError, RateUpdate};
pub use request::{EvalRequest, OwnedRequest, RequestFacts};
pub use route::{RepoName, RouteClass};
pub use serde_util::OneOrMany;
pub use sso::{OwnedTokenResponse, SignInFailure, TokenExchange, TokenResponse};
pub use time::UnixTime;
pub use token_cache::{NoTokenCache, TokenCache, TokenCacheStore};
pub use webhook::{
    Delivery, DeliveryAudit, DeliveryOutcome, SeenDeliveries, WebhookRejection, WebhookRequest,
    WebhookRoute,
};
