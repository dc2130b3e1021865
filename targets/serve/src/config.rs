use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use policy_core::Engine;
use tollgate_host_kit::audit_log::AuditTarget;

/// `--policy-url` and its settings.
#[derive(Clone, Debug)]
pub struct PolicyUrlConfig {
    pub url: String,
    /// Sent as `Authorization: token VALUE`.
    pub token: Option<String>,
    /// A minisign public key (its base64 line, or its `.pub` file's text): the policy is
    /// accepted only with a valid signature at the URL plus `.minisig`.
    pub pubkey: Option<String>,
    /// How often the URL is asked.
    pub poll: Duration,
}

/// The file a policy was read from, and the text read.
#[derive(Clone, Debug)]
pub struct PolicyFile {
    pub path: PathBuf,
    pub text: String,
}

/// Decide inside the policy module instead of natively.
#[derive(Clone, Debug)]
pub struct WasmConfig {
    pub module: PathBuf,
    /// The policy text and its file name (the module compiles it itself).
    pub source: String,
    pub file: String,
}

/// Everything `tollgate serve` needs; the CLI fills it from flags.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub engine: Engine,
    /// The file the policy was read from. SIGHUP, `POST /reload` on the admin listener
    /// and the watch read it again and put the new policy in place once it compiles and
    /// its own test cases pass. `None`: the policy is fixed.
    pub policy_file: Option<PolicyFile>,
    /// How often the policy file is checked for changes; `None`: only on SIGHUP and
    /// `POST /reload`.
    pub policy_watch: Option<Duration>,
    /// Pull the policy from a URL too; the policy file keeps the last good one.
    pub policy_url: Option<PolicyUrlConfig>,
    /// Where envelopes of accepted webhook deliveries go.
    pub webhook_sink: crate::WebhookSink,
    /// Base URL of the Gogs origin, e.g. `http://127.0.0.1:3000` (no trailing slash).
    pub origin: String,
    pub listen: SocketAddr,
    /// Where `/metrics` and `/healthz` are served; `None` for nowhere.
    pub admin_listen: Option<SocketAddr>,
    /// Origin secrets (Gogs tokens) by name.
    pub secrets: HashMap<String, String>,
    pub audit: AuditTarget,
    /// How often every issuer's JWKS is fetched again.
    pub jwks_refresh: Duration,
    /// Least time between two fetches of one issuer's JWKS prompted by unknown `kid`s, so a
    /// flood of made-up key ids cannot turn into a flood of fetches.
    pub jwks_min_refresh_gap: Duration,
    /// How long the last good keys keep serving while the issuer cannot be reached; after
    /// that, tokens from that issuer are refused (fail closed).
    pub jwks_max_stale: Duration,
    /// Longest a request (or the start) waits on a JWKS fetch it prompted (a key miss, or
    /// keys due); the background refresh allows 10 s.
    pub jwks_request_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// `Some`: every decision is made by the policy module under wasmtime.
    pub wasm: Option<WasmConfig>,
    /// Verified tokens remembered (native mode), so a repeated token skips its signature
    /// check; 0 turns the cache off.
    pub token_cache_entries: usize,
    /// Longest a token is served from the cache (bounds how long a token signed by a
    /// withdrawn key keeps working); its own `exp` still applies.
    pub token_cache_max_age: Duration,
    /// Longest a client may take to send a request head, counted from when the
    /// connection starts waiting for one: a new connection, or a kept-alive one after its
    /// last response. So it bounds both slow heads (slowloris) and idle connections.
    pub header_timeout: Duration,
    /// Audit records waiting for the writer thread at most; beyond it a record is dropped
    /// and counted (`tollgate_audit_dropped_total`), or, with `audit_required`, the
    /// request is refused.
    pub audit_queue: usize,
    /// Refuse (503 with Retry-After) an allowed request whose audit record cannot be
    /// queued or whose sink is failing, rather than forward it unrecorded.
    pub audit_required: bool,
    /// Threads accepting and proxying requests, each with its own runtime and origin
    /// connections (default: one per core).
    pub workers: usize,
    /// Request bodies buffered at once (LFS batch requests, at most 1 MiB each); beyond
    /// it requests are answered 503 with Retry-After.
    pub max_buffered_bodies: usize,
    /// Longest wait to open a connection to the origin (then 502).
    pub origin_connect_timeout: Duration,
    /// Longest wait for the origin's response head once the request is sent (then 504).
    pub origin_header_timeout: Duration,
    /// Longest pause in a body streaming either way: a pack that keeps moving is never
    /// cut, one that stalls is (408 if the client stalled before the origin answered).
    pub stream_idle_timeout: Duration,
    /// Longest time to read a whole LFS batch body (then 408).
    pub lfs_body_timeout: Duration,
    /// Client connections held at once; beyond it a connection is answered 503 and
    /// closed. `None`: as many as the file-descriptor limit leaves room for.
    pub max_connections: Option<usize>,
    /// Requests being handled at once; beyond it a request is answered 503.
    pub max_in_flight: usize,
    /// Rate-limit state in Redis, shared with other instances (default: in memory).
    pub rate_store: Option<RateStoreConfig>,
}

/// Where rate-limit state lives when it is shared between instances.
#[derive(Clone, Debug)]
pub struct RateStoreConfig {
    /// `redis://HOST:PORT/DB`.
    pub url: String,
    /// Put before every key, so instances of other deployments can share the database.
    pub prefix: String,
    /// Longest wait for one Redis command.
    pub timeout: Duration,
    /// Admit a rate-limited request when Redis cannot be reached, instead of refusing it
    /// (503, `rate_store_unavailable`).
    pub admit_when_unavailable: bool,
}

impl ServeConfig {
    /// The key ring's timings.
    pub fn jwks_timings(&self) -> policy_core::JwksTimings {
        policy_core::JwksTimings {
            refresh_secs: self.jwks_refresh.as_secs().max(1),
            min_gap_secs: self.jwks_min_refresh_gap.as_secs(),
            max_stale_secs: self.jwks_max_stale.as_secs(),
        }
    }

    pub fn new(engine: Engine, origin: String, listen: SocketAddr) -> Self {
        ServeConfig {
            engine,
            policy_file: None,
            policy_watch: None,
            policy_url: None,
            webhook_sink: crate::WebhookSink::Stdout,
            origin: origin.trim_end_matches('/').to_owned(),
            listen,
            admin_listen: None,
            secrets: HashMap::new(),
            audit: AuditTarget::Stdout,
            jwks_refresh: Duration::from_secs(300),
            jwks_min_refresh_gap: Duration::from_secs(30),
            jwks_max_stale: Duration::from_secs(3600),
            jwks_request_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            wasm: None,
            token_cache_entries: 10_000,
            token_cache_max_age: Duration::from_secs(60),
            header_timeout: Duration::from_secs(20),
            max_buffered_bodies: 64,
            origin_connect_timeout: Duration::from_secs(5),
            origin_header_timeout: Duration::from_secs(60),
            stream_idle_timeout: Duration::from_secs(60),
            lfs_body_timeout: Duration::from_secs(30),
            max_connections: None,
            max_in_flight: 4096,
            rate_store: None,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            audit_queue: 10_000,
            audit_required: false,
        }
    }
}
