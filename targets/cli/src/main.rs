//! `tollgate`: check, evaluate and test Tollgate policies on the command line.
//!
//! This is a thin host: it reads files and stdin, reads the clock, and hands everything to
//! `policy-core`, which makes every decision.

mod credentials;
mod decider;
mod host;
mod login;
mod loopback;
mod report;
mod run_tests;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use policy_core::{api_key_hash_hex, policy::Policy, OwnedRequest, UnixTime};

/// Every request in `serve` allocates a little (headers, the audit line); mimalloc's
/// per-thread pages make that cheaper than glibc's arenas under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Edge policy for Gogs: check, evaluate and test policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: `serve`'s many flags cost nothing worth boxing them for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Validate a policy file; exit 1 with a positioned error if it is not valid.
    Check {
        policy: PathBuf,
        /// JSON object of origin secrets: also check it holds every secret the policy
        /// names (the service token, the Gogs tokens of users named by keys and grants).
        #[arg(long)]
        secrets: Option<PathBuf>,
    },
    /// Decide one request, read as JSON from stdin, and print the decision as JSON.
    Eval {
        #[arg(long)]
        policy: PathBuf,
        /// Unix time (seconds) to decide at; defaults to the system clock.
        #[arg(long)]
        now: Option<u64>,
        /// JWKS for issuers configured with `jwks_url`: `FILE` for all of them, or `NAME=FILE`.
        #[arg(long, value_name = "[NAME=]FILE")]
        jwks: Vec<String>,
        /// JSON object of origin secrets (name -> Gogs token). Without it, placeholders are
        /// used: the output names which secret would be sent, never a value.
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// JSON file of rate-limit state, read before and written after the decision.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Include the rules considered and their outcomes.
        #[arg(long)]
        explain: bool,
        /// Also print the audit record, as JSON, on stderr.
        #[arg(long)]
        audit: bool,
        /// Decide inside the policy module under wasmtime instead of natively (`--wasm` or
        /// `--wasm=MODULE`). MODULE
        /// defaults to $TOLLGATE_WASM, else target/wasm32-unknown-unknown/wasm-size/tollgate_policy.wasm.
        #[arg(long, value_name = "MODULE", num_args = 0..=1, require_equals = true, default_missing_value = "")]
        wasm: Option<String>,
    },
    /// Run the `[[test]]` cases in a policy file; prints `N passed, N failed`.
    Test {
        policy: PathBuf,
        /// JWKS for issuers configured with `jwks_url` (as for `eval`).
        #[arg(long, value_name = "[NAME=]FILE")]
        jwks: Vec<String>,
        /// Show the explanation of failing cases.
        #[arg(long, short)]
        verbose: bool,
        /// Decide inside the policy module under wasmtime instead of natively (`--wasm` or
        /// `--wasm=MODULE`). MODULE
        /// defaults to $TOLLGATE_WASM, else target/wasm32-unknown-unknown/wasm-size/tollgate_policy.wasm.
        #[arg(long, value_name = "MODULE", num_args = 0..=1, require_equals = true, default_missing_value = "")]
        wasm: Option<String>,
    },
    /// Run the edge proxy in front of a Gogs origin.
    Serve(Box<ServeArgs>),
    /// Print the SHA-256 to put in an `[[api_key]]` for a key read from stdin.
    HashKey,
    /// Sign in to a gateway with your identity provider (OAuth 2.0 device authorization:
    /// open the URL shown, enter the code; or `--browser`); the tokens are kept for
    /// `tollgate credential`.
    Login {
        /// The gateway, e.g. `https://git.example.com`.
        gateway: String,
        /// The identity provider's issuer URL (its OpenID discovery document names the
        /// endpoints). Default: what the gateway publishes (`[login]` in its policy).
        #[arg(long)]
        issuer: Option<String>,
        /// The client registered with the provider for `tollgate login` (a public client
        /// allowed the device code and refresh token grants). Default: the gateway's.
        #[arg(long)]
        client_id: Option<String>,
        /// Default: the gateway's, else `openid offline_access`.
        #[arg(long)]
        scope: Option<String>,
        /// A resource indicator (RFC 8707) for the gateway's tokens, if the provider
        /// wants one. Default: the gateway's.
        #[arg(long)]
        resource: Option<String>,
        /// Sign in in a browser on this machine (authorization code with PKCE, redirected
        /// to a listener on 127.0.0.1) instead of with a device code. Chosen by itself
        /// when the provider has no device flow.
        #[arg(long)]
        browser: bool,
    },
    /// Git credential helper: `git config credential.https://GATEWAY.helper "tollgate
    /// credential"` gives git a fresh access token from `tollgate login`.
    Credential {
        /// `get`, `store` or `erase`, as git calls it.
        operation: String,
    },
}

/// `tollgate serve`'s flags.
#[derive(clap::Args)]
struct ServeArgs {
    /// The policy file. SIGHUP, POST /reload on the admin listener and the watch
    /// (--policy-watch) read it again; a new policy decides once it compiles and its
    /// own [[test]] cases pass, otherwise the old one keeps deciding.
    #[arg(long)]
    policy: PathBuf,
    /// Seconds between checks of the policy file for changes (0: only on SIGHUP and
    /// POST /reload).
    #[arg(long, default_value_t = 2)]
    policy_watch: u64,
    /// Also pull the policy from this URL (e.g. Gogs' API raw file,
    /// https://gogs/api/v1/repos/OWNER/REPO/raw/master/policy.toml), polled with
    /// If-None-Match; --policy keeps the last good copy (fetched here first if missing).
    #[arg(long)]
    policy_url: Option<String>,
    /// The secret (in --secrets) sent to --policy-url as `Authorization: token VALUE`.
    #[arg(long, requires = "policy_url")]
    policy_token_secret: Option<String>,
    /// A minisign public key (a .pub file, or its base64 line): a pulled policy is
    /// accepted only with a valid signature at --policy-url plus `.minisig`.
    #[arg(long, requires = "policy_url")]
    policy_pubkey: Option<String>,
    /// Seconds between polls of --policy-url.
    #[arg(long, default_value_t = 30, requires = "policy_url")]
    policy_poll: u64,
    /// Where accepted Gogs webhook deliveries ([[webhook]]) go: `stdout` or a file (one
    /// JSON envelope per line, synced before Gogs is answered), or
    /// `kafka[s]://HOST:PORT/TOPIC[?sasl=plain|scram-sha-256|scram-sha-512&user=NAME&password=SECRET&ca=FILE]`
    /// (one record each, keyed by repository, acknowledged before Gogs is answered; the
    /// password by name from --secrets).
    #[arg(long, default_value = "stdout")]
    webhook_sink: String,
    /// Base URL of the Gogs server, e.g. http://127.0.0.1:3000
    #[arg(long)]
    origin: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Address for /metrics and /healthz (off unless given).
    #[arg(long)]
    admin_listen: Option<std::net::SocketAddr>,
    /// JSON object of origin secrets: secret name -> Gogs token.
    #[arg(long)]
    secrets: Option<PathBuf>,
    /// Append audit records (JSON lines) to this file (or `stderr`) instead of stdout, or
    /// send them to an existing Kafka topic, one record each, every batch to the next
    /// partition: `kafka[s]://HOST:PORT/TOPIC[?...]` as for --webhook-sink (with
    /// --audit-required, requests are refused while it fails).
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Audit records waiting for the writer at most; beyond it records are dropped
    /// and counted (tollgate_audit_dropped_total).
    #[arg(long, default_value_t = 10_000)]
    audit_queue: usize,
    /// Refuse allowed requests (503, Retry-After) whose audit record cannot be
    /// queued or whose audit sink is failing, instead of forwarding them unrecorded.
    #[arg(long)]
    audit_required: bool,
    /// Seconds between JWKS refreshes.
    #[arg(long, default_value_t = 300)]
    jwks_refresh: u64,
    /// Least seconds between two refreshes prompted by unknown key ids.
    #[arg(long, default_value_t = 30)]
    jwks_min_refresh_gap: u64,
    /// Seconds the last good JWKS keeps serving while the issuer is unreachable.
    #[arg(long, default_value_t = 3600)]
    jwks_max_stale: u64,
    /// Seconds a request (or the start) waits at most on a JWKS fetch it prompted; a
    /// hanging issuer holds nothing longer (the background refresh allows 10).
    #[arg(long, default_value_t = 2)]
    jwks_request_timeout: u64,
    /// Seconds shutdown waits for requests in flight.
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
    /// Verified tokens remembered so a repeated token skips its signature check (0: off).
    #[arg(long, default_value_t = 10_000)]
    token_cache_entries: usize,
    /// Seconds a token is served from the cache at most (its own `exp` still applies).
    #[arg(long, default_value_t = 60)]
    token_cache_max_age: u64,
    /// Seconds a client may take to send a request head, counted from when the
    /// connection starts waiting for one (new, or idle after a response).
    #[arg(long, default_value_t = 20)]
    header_timeout: u64,
    /// LFS batch bodies (at most 1 MiB each) buffered at once; more get 503.
    #[arg(long, default_value_t = 64)]
    max_buffered_bodies: usize,
    /// Threads serving requests, each with its own event loop and origin connections
    /// (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Seconds to open a connection to the origin (then 502).
    #[arg(long, default_value_t = 5)]
    origin_connect_timeout: u64,
    /// Seconds the origin may take to answer once it has the whole request (then 504).
    #[arg(long, default_value_t = 60)]
    origin_header_timeout: u64,
    /// Seconds a body streaming either way may pause: a clone or push that keeps
    /// moving is never cut, one that stalls is.
    #[arg(long, default_value_t = 60)]
    stream_idle_timeout: u64,
    /// Seconds to receive a whole LFS batch body (then 408).
    #[arg(long, default_value_t = 30)]
    lfs_body_timeout: u64,
    /// Client connections held at once; more are answered 503 and closed (default: what
    /// the file-descriptor limit leaves room for).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Requests handled at once; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// Keep rate-limit state in Redis (`redis://HOST:PORT/DB`), shared by every
    /// instance pointed at it, instead of in memory.
    #[arg(long, value_name = "URL")]
    rate_store: Option<String>,
    /// Prefix of the rate-limit keys in Redis.
    #[arg(long, default_value = "tollgate:")]
    rate_store_prefix: String,
    /// Milliseconds one Redis command may take.
    #[arg(long, default_value_t = 250)]
    rate_store_timeout_ms: u64,
    /// When Redis cannot be reached: `deny` refuses rate-limited requests (503,
    /// rate_store_unavailable); `allow` admits them unchecked.
    #[arg(long, default_value = "deny", value_parser = ["deny", "allow"])]
    rate_store_failure: String,
    /// Decide every request inside the policy module under wasmtime (`--wasm` or
    /// `--wasm=MODULE`; default as for `eval`).
    #[arg(long, value_name = "MODULE", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    wasm: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { policy, secrets } => check(&policy, secrets.as_deref()),
        Command::Eval {
            policy,
            now,
            jwks,
            secrets,
            state,
            explain,
            audit,
            wasm,
        } => eval(EvalArgs {
            policy: &policy,
            now,
            jwks: &jwks,
            secrets: secrets.as_deref(),
            state: state.as_deref(),
            explain,
            audit,
            wasm: wasm.as_deref().map(Path::new),
        }),
        Command::Test {
            policy,
            jwks,
            verbose,
            wasm,
        } => test(&policy, &jwks, verbose, wasm.as_deref().map(Path::new)),
        Command::Serve(args) => serve(*args),
        Command::HashKey => hash_key(),
        Command::Login {
            gateway,
            issuer,
            client_id,
            scope,
            resource,
            browser,
        } => login::login(&login::LoginArgs {
            gateway,
            issuer,
            client_id,
            scope,
            resource,
            browser,
        }),
        Command::Credential { operation } => credentials::helper(&operation),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Reads and compiles a policy; the error text carries file:line:column and an excerpt
/// wherever the problem has a place in the file.
/// `tollgate serve`: builds the configuration from the flags and runs until stopped.
fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    let ServeArgs {
        policy,
        policy_watch,
        policy_url,
        policy_token_secret,
        policy_pubkey,
        policy_poll,
        webhook_sink,
        origin,
        listen,
        admin_listen,
        secrets,
        audit_log,
        audit_queue,
        audit_required,
        jwks_refresh,
        jwks_min_refresh_gap,
        jwks_max_stale,
        jwks_request_timeout,
        shutdown_grace,
        token_cache_entries,
        token_cache_max_age,
        header_timeout,
        max_buffered_bodies,
        workers,
        origin_connect_timeout,
        origin_header_timeout,
        stream_idle_timeout,
        lfs_body_timeout,
        max_connections,
        max_in_flight,
        rate_store,
        rate_store_prefix,
        rate_store_timeout_ms,
        rate_store_failure,
        wasm,
    } = args;
    let secrets = host::Secrets::load(secrets.as_deref())?.map();
    let policy_url = policy_url
        .map(|url| {
            pulled_policy(
                url,
                policy_token_secret.as_deref(),
                policy_pubkey.as_deref(),
                policy_poll,
                secrets.as_ref(),
            )
        })
        .transpose()?;
    if let Some(source) = &policy_url {
        if !policy.exists() {
            // No last good copy yet: the first one comes from the URL.
            let text = tollgate_serve::fetch_policy_once(&tollgate_serve::PolicyUrl::new(source)?)?;
            std::fs::write(&policy, text).map_err(|e| format!("{}: {e}", policy.display()))?;
        }
    }
    let (p, source) = load_policy(&policy)?;
    if !(origin.starts_with("http://") || origin.starts_with("https://")) {
        return Err(format!(
            "--origin `{origin}` must be an http:// or https:// URL"
        ));
    }
    let mut config = tollgate_serve::ServeConfig::new(p.engine, origin, listen);
    config.admin_listen = admin_listen;
    config.secrets = secrets.unwrap_or_default().into_iter().collect();
    config.policy_url = policy_url;
    config.webhook_sink = tollgate_serve::WebhookSink::parse(&webhook_sink)
        .map_err(|e| format!("--webhook-sink {e}"))?;
    config.audit = match audit_log {
        None => tollgate_serve::AuditTarget::Stdout,
        Some(path) => match path.to_str() {
            Some(text) => {
                tollgate_serve::AuditTarget::parse(text).map_err(|e| format!("--audit-log {e}"))?
            }
            None => tollgate_serve::AuditTarget::File(path),
        },
    };
    config.audit_queue = audit_queue.max(1);
    config.audit_required = audit_required;
    config.jwks_refresh = std::time::Duration::from_secs(jwks_refresh.max(1));
    config.jwks_min_refresh_gap = std::time::Duration::from_secs(jwks_min_refresh_gap);
    config.jwks_max_stale = std::time::Duration::from_secs(jwks_max_stale);
    config.jwks_request_timeout = std::time::Duration::from_secs(jwks_request_timeout.max(1));
    config.shutdown_grace = std::time::Duration::from_secs(shutdown_grace);
    config.token_cache_entries = token_cache_entries;
    config.token_cache_max_age = std::time::Duration::from_secs(token_cache_max_age);
    config.header_timeout = std::time::Duration::from_secs(header_timeout.max(1));
    if let Some(workers) = workers {
        config.workers = workers.max(1);
    }
    let seconds = |n: u64| std::time::Duration::from_secs(n.max(1));
    config.origin_connect_timeout = seconds(origin_connect_timeout);
    config.origin_header_timeout = seconds(origin_header_timeout);
    config.stream_idle_timeout = seconds(stream_idle_timeout);
    config.lfs_body_timeout = seconds(lfs_body_timeout);
    config.max_connections = max_connections;
    config.max_in_flight = max_in_flight.max(1);
    config.rate_store = rate_store.map(|url| tollgate_serve::RateStoreConfig {
        url,
        prefix: rate_store_prefix,
        timeout: std::time::Duration::from_millis(rate_store_timeout_ms.max(1)),
        admit_when_unavailable: rate_store_failure == "allow",
    });
    config.max_buffered_bodies = max_buffered_bodies.max(1);
    config.policy_watch = (policy_watch > 0).then(|| std::time::Duration::from_secs(policy_watch));
    config.wasm = wasm.map(|module| tollgate_serve::WasmConfig {
        module: module_path(Path::new(&module)),
        source: source.clone(),
        file: policy.display().to_string(),
    });
    config.policy_file = Some(tollgate_serve::PolicyFile {
        path: policy,
        text: source,
    });
    tollgate_serve::run(config)?;
    Ok(ExitCode::SUCCESS)
}

/// `--policy-url` and its flags, the token looked up in the secrets file.
fn pulled_policy(
    url: String,
    token_secret: Option<&str>,
    pubkey: Option<&str>,
    poll: u64,
    secrets: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<tollgate_serve::PolicyUrlConfig, String> {
    let token = match token_secret {
        Some(name) => Some(
            secrets
                .and_then(|s| s.get(name))
                .cloned()
                .ok_or_else(|| format!("--policy-token-secret `{name}` is not in --secrets"))?,
        ),
        None => None,
    };
    let pubkey = match pubkey {
        // A file (minisign's .pub), or the key's base64 line itself.
        Some(key) if Path::new(key).is_file() => {
            Some(std::fs::read_to_string(key).map_err(|e| format!("--policy-pubkey {key}: {e}"))?)
        }
        other => other.map(str::to_owned),
    };
    let config = tollgate_serve::PolicyUrlConfig {
        url,
        token,
        pubkey,
        poll: std::time::Duration::from_secs(poll.max(1)),
    };
    // Refuse a bad URL or key now, before anything is fetched or served.
    tollgate_serve::PolicyUrl::new(&config)?;
    Ok(config)
}

fn load_policy(path: &Path) -> Result<(Policy, String), String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("{}: cannot read the policy: {e}", path.display()))?;
    let source = String::from_utf8(bytes)
        .map_err(|e| report::not_utf8(path, e.as_bytes(), e.utf8_error()))?;
    let mut policy = Policy::parse(&source, &path.display().to_string())
        .map_err(|e| report::policy_error(&e, &source))?;
    // Native decisions verify signatures with aws-lc; the same answers, several times faster.
    policy.engine = policy.engine.with_crypto(&tollgate_host_kit::AWS_LC);
    Ok((policy, source))
}

fn check(path: &Path, secrets: Option<&Path>) -> Result<ExitCode, String> {
    let (policy, source) = load_policy(path)?;
    if let Some(map) = host::Secrets::load(secrets)?.map() {
        let file = path.display().to_string();
        let file_name = secrets.map_or(String::new(), |p| p.display().to_string());
        let missing: Vec<String> = policy
            .origin_secrets
            .iter()
            .filter_map(|need| {
                let problem = match map.get(&need.name) {
                    None => format!("is not in {file_name}"),
                    Some(value) if value.len() < need.min_bytes => format!(
                        "has {} bytes in {file_name}; it needs at least {}",
                        value.len(),
                        need.min_bytes
                    ),
                    Some(_) => return None,
                };
                Some(report::at_position(
                    &file,
                    need.position,
                    &source,
                    &format!("origin secret `{}` ({}) {problem}", need.name, need.purpose),
                ))
            })
            .collect();
        if !missing.is_empty() {
            return Err(missing.join("\n"));
        }
    }
    println!(
        "{}: ok ({} test case{}, revision {})",
        path.display(),
        policy.tests.len(),
        if policy.tests.len() == 1 { "" } else { "s" },
        policy.engine.revision()
    );
    Ok(ExitCode::SUCCESS)
}

/// `--wasm` with no value means $TOLLGATE_WASM, else the module's default build path.
fn module_path(arg: &Path) -> PathBuf {
    if !arg.as_os_str().is_empty() {
        return arg.to_path_buf();
    }
    std::env::var_os("TOLLGATE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(tollgate_wasmtime::DEFAULT_MODULE_PATH))
}

fn decider<'p>(
    policy: &'p Policy,
    source: &str,
    path: &Path,
    jwks: &[String],
    secrets: host::Secrets,
    wasm: Option<&Path>,
) -> Result<decider::Decider<'p>, String> {
    match wasm {
        Some(module) => decider::Decider::wasm(
            &module_path(module),
            source,
            &path.display().to_string(),
            jwks,
            secrets.map().as_ref(),
        ),
        None => Ok(decider::Decider::native(
            policy,
            host::JwksFiles::load(jwks)?,
            secrets,
        )),
    }
}

struct EvalArgs<'a> {
    policy: &'a Path,
    now: Option<u64>,
    jwks: &'a [String],
    secrets: Option<&'a Path>,
    state: Option<&'a Path>,
    explain: bool,
    audit: bool,
    wasm: Option<&'a Path>,
}

fn eval(args: EvalArgs<'_>) -> Result<ExitCode, String> {
    let (policy, source) = load_policy(args.policy)?;
    let secrets = host::Secrets::load(args.secrets)?;
    let mut decider = decider(&policy, &source, args.policy, args.jwks, secrets, args.wasm)?;
    let state = host::RateFile::load(args.state)?;
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("stdin: {e}"))?;
    let mut request: OwnedRequest =
        serde_json::from_str(&input).map_err(|e| format!("stdin: {e}"))?;
    if request.entropy.is_none() && decider.wants_entropy() {
        request.entropy =
            Some(tollgate_host_kit::os_entropy().ok_or("the system's random source failed")?);
    }
    let now = match args.now {
        Some(secs) => UnixTime::from_secs(secs),
        None => host::system_now(),
    };
    let (decision, audit) = decider.decide(&request, now, args.explain, None, &state)?;
    if let Some(path) = args.state {
        state.save(path)?;
    }
    if args.audit && !audit.is_null() {
        eprintln!("{audit}");
    }
    println!("{decision}");
    Ok(ExitCode::SUCCESS)
}

fn test(
    path: &Path,
    jwks: &[String],
    verbose: bool,
    wasm: Option<&Path>,
) -> Result<ExitCode, String> {
    let (policy, source) = load_policy(path)?;
    let mut decider = decider(
        &policy,
        &source,
        path,
        jwks,
        host::Secrets::Placeholder,
        wasm,
    )?;
    Ok(run_tests::run(&policy, path, &mut decider, verbose))
}

fn hash_key() -> Result<ExitCode, String> {
    let mut key = String::new();
    std::io::stdin()
        .read_to_string(&mut key)
        .map_err(|e| format!("stdin: {e}"))?;
    let key = key.trim_end_matches(['\r', '\n']);
    if key.is_empty() {
        return Err("no key on stdin".into());
    }
    println!("{}", api_key_hash_hex(key));
    Ok(ExitCode::SUCCESS)
}
