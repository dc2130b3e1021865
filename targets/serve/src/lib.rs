//! `tollgate serve`: a reverse proxy in front of Gogs.
//!
//! For every request it builds [`RequestFacts`](policy_core::RequestFacts), asks the
//! engine, answers denials itself, and streams allowed requests to the origin with the
//! caller's credential swapped for the origin credential. Bodies stream both ways; only
//! LFS batch bodies (at most 1 MiB of JSON) are buffered, because their content decides
//! the access they need.
//!
//! Deciding, the key schedule, the token cache and rate state come from the host kit
//! (`tollgate-host-kit`); this crate owns the I/O around them: the clock, the HTTP
//! listeners and origin client, JWKS fetches and a browser sign-in's token request, audit
//! output, metrics and shutdown.

mod client_conn;
mod config;
mod exchange;
mod metrics;
mod origin_io;
mod policy_url;
mod proxy;
mod reload;
mod server;
mod sign_in;
mod webhooks;
mod workers;

pub use config::{PolicyFile, PolicyUrlConfig, RateStoreConfig, ServeConfig, WasmConfig};
pub use policy_url::{fetch_once as fetch_policy_once, PolicyUrl};
pub use server::{run, serve};
pub use tollgate_host_kit::audit_log::AuditTarget;
pub use tollgate_host_kit::webhooks::WebhookSink;
