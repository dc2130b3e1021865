//! Listeners, background tasks and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tollgate_host_kit::{Gate, KeyRing, ShardedRates};

use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::origin_io::StallingWritesFail;
use crate::policy_url::PolicyUrl;
use crate::proxy::{self, Body, Origin, OriginClient, Shared, Timeouts};
use crate::reload::{DeciderMaker, Reloaded, Reloader, SecretMap, Trigger};
use crate::webhooks::Webhooks;
use crate::workers::{self, Worker};
use tollgate_host_kit::audit_log::AuditLog;
use tollgate_host_kit::RedisRates;

/// How often expired rate-limit entries are dropped.
const RATE_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often the key ring is asked what is due.
const KEY_SCHEDULE_EVERY: Duration = Duration::from_secs(1);

/// Builds a runtime and serves until SIGINT or SIGTERM.
pub fn run(config: ServeConfig) -> Result<(), String> {
    // Requests are served by the worker threads; this runtime only accepts connections
    // for them and runs key fetches, pruning, the admin listener and shutdown, so one
    // thread is enough.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(serve(config, shutdown_signal()))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// Serves until `shutdown` completes, then drains requests in flight.
pub async fn serve(config: ServeConfig, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let maker = DeciderMaker {
        secrets: config.secrets.clone(),
        token_cache: (config.token_cache_entries > 0).then_some((
            config.token_cache_entries,
            config.token_cache_max_age.as_secs(),
        )),
        module: match &config.wasm {
            Some(wasm) => Some(
                tollgate_wasmtime::CompiledModule::from_file(&wasm.module)
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        },
    };
    let (source, file) = match (&config.wasm, &config.policy_file) {
        (Some(wasm), _) => (wasm.source.clone(), wasm.file.clone()),
        (None, Some(policy)) => (policy.text.clone(), policy.path.display().to_string()),
        (None, None) => (String::new(), String::new()),
    };
    let decider = maker.make(config.engine.clone(), &source, &file)?;
    let keys = KeyRing::for_engine(&config.engine, config.jwks_timings()).refreshed_in_background();
    let revision = config.engine.revision().to_owned();
    let reloader = config.policy_file.as_ref().map(|policy| {
        Reloader::new(
            policy.path.clone(),
            policy.text.clone(),
            revision.clone(),
            maker,
            config.jwks_timings(),
        )
    });
    let redis = match &config.rate_store {
        Some(store) => Some(
            RedisRates::connect(
                &store.url,
                store.prefix.clone(),
                store.timeout,
                store.admit_when_unavailable,
            )
            .await?,
        ),
        None => None,
    };
    let mut webhook_sink = config.webhook_sink.clone();
    let in_secrets = |e: String| format!("{e} in --secrets");
    webhook_sink
        .resolve(|name| config.secrets.get(name).cloned())
        .map_err(in_secrets)?;
    let mut audit_target = config.audit.clone();
    audit_target
        .resolve(|name| config.secrets.get(name).cloned())
        .map_err(in_secrets)?;
    let shared = Arc::new(Shared {
        gate: ArcSwap::from_pointee(Gate::new(decider, keys)),
        reloader,
        policy_url: config.policy_url.as_ref().map(PolicyUrl::new).transpose()?,
        webhooks: Arc::new(
            Webhooks::new(
                config.engine.clone(),
                Box::new(SecretMap(config.secrets.clone())),
                &webhook_sink,
            )
            .await
            .map_err(|e| format!("webhook sink: {e}"))?,
        ),
        rates: ShardedRates::default(),
        origin: Origin::parse(&config.origin)?,
        audit: AuditLog::open(&audit_target, config.audit_queue)
            .map_err(|e| format!("audit log: {e}"))?,
        audit_required: config.audit_required,
        metrics: Metrics::new(&revision),
        fetch_client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("JWKS client: {e}"))?,
        body_slots: tokio::sync::Semaphore::new(config.max_buffered_bodies),
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
        timeouts: Timeouts {
            jwks_request: config.jwks_request_timeout,
            origin_header: config.origin_header_timeout,
            stream_idle: config.stream_idle_timeout,
            lfs_body: config.lfs_body_timeout,
        },
        redis,
    });
    // Keys before the first request, but a hanging issuer delays the start only so long.
    let reports = shared
        .gate
        .load()
        .keys
        .refresh_due(proxy::now(), |url| shared.fetch_jwks_promptly(url))
        .await;
    shared.report_fetches(&reports);

    // Bound now, so a port in use fails the start at once; listening waits until
    // everything else is running, so a port that accepts means a server fully started.
    let client_socket =
        client_socket(config.listen).map_err(|e| format!("listen on {}: {e}", config.listen))?;
    let listen_addr = client_socket.local_addr().map_err(|e| e.to_string())?;
    let admin = match config.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("admin listen on {addr}: {e}"))?,
        ),
        None => None,
    };
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    let workers = config.workers.max(1);
    let max_connections = connection_capacity(config.max_connections);
    let connection_slots = Arc::new(tokio::sync::Semaphore::new(max_connections));

    let hangups = hangup_signals(shared.reloader.is_some());
    let background = tokio::spawn(background(
        Arc::clone(&shared),
        config.policy_watch,
        hangups,
    ));
    let puller = shared
        .policy_url
        .as_ref()
        .map(|source| tokio::spawn(pull_policies(Arc::clone(&shared), source.poll)));
    let admin_task = admin.map(|l| tokio::spawn(admin_loop(l, Arc::clone(&shared))));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut threads = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for index in 0..workers {
        let (worker, handle) = Worker::new(
            Arc::clone(&shared),
            origin_client(config.origin_connect_timeout, shared.timeouts.stream_idle)?,
            config.header_timeout,
            config.shutdown_grace,
            stopped.clone(),
        );
        handles.push(handle);
        threads.push(worker.spawn(index)?);
    }
    let listener = client_socket
        .listen(LISTEN_BACKLOG)
        .map_err(|e| format!("listen on {listen_addr}: {e}"))?;
    eprintln!(
        "tollgate: listening on {listen_addr} ({workers} worker threads, up to {max_connections} connections), origin {}, deciding {}{}",
        config.origin,
        if config.wasm.is_some() {
            "in the policy module (wasmtime)"
        } else {
            "natively"
        },
        admin_addr
            .map(|a| format!(", metrics on http://{a}/metrics"))
            .unwrap_or_default()
    );
    let acceptor = tokio::spawn(workers::accept(
        listener,
        handles,
        Arc::clone(&shared),
        connection_slots,
        stopped,
    ));
    shutdown.await;
    eprintln!(
        "tollgate: shutting down; waiting up to {:?} for requests in flight",
        config.shutdown_grace
    );
    let _ = stop.send(true);
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("a worker thread panicked".into()))
            })
            .collect::<Vec<Result<(), String>>>()
    })
    .await
    .unwrap_or_default();
    for result in joined {
        if let Err(e) = result {
            eprintln!("tollgate: {e}");
        }
    }
    acceptor.abort();
    background.abort();
    if let Some(task) = puller {
        task.abort();
    }
    if let Some(task) = admin_task {
        task.abort();
    }
    shared.audit.close();
    eprintln!("tollgate: stopped");
    Ok(())
}

/// Follows the key ring's schedule (it says what is due; checking costs nothing when
/// nothing is), drops expired rate-limit state, and reloads the policy on SIGHUP and,
/// every `policy_watch`, when its file changed.
async fn background(shared: Arc<Shared>, policy_watch: Option<Duration>, mut hangups: Hangups) {
    let mut keys = tokio::time::interval(KEY_SCHEDULE_EVERY);
    let mut prune = tokio::time::interval(RATE_PRUNE_EVERY);
    let mut watch = tokio::time::interval(policy_watch.unwrap_or(Duration::MAX / 4));
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watching = policy_watch.is_some() && shared.reloader.is_some();
    loop {
        tokio::select! {
            _ = keys.tick() => {
                let gate = shared.gate.load_full();
                let reports = gate
                    .keys
                    .refresh_due(proxy::now(), |url| shared.fetch_jwks(url))
                    .await;
                shared.report_fetches(&reports);
            }
            _ = prune.tick() => shared.rates.prune(proxy::now()),
            _ = watch.tick(), if watching => {
                let _ = shared.reload(Trigger::Watch, true).await;
            }
            Some(()) = next_hangup(&mut hangups) => {
                let _ = shared.reload(Trigger::Signal, false).await;
            }
        }
    }
}

/// Polls `--policy-url` every `every`, the first time at once; a poll waits for the one
/// before it.
async fn pull_policies(shared: Arc<Shared>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        shared.pull_policy().await;
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

/// SIGHUP, when there is a policy file to reload (otherwise SIGHUP keeps its default).
fn hangup_signals(reloadable: bool) -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        reloadable
            .then(|| signal(SignalKind::hangup()).ok())
            .flatten()
    }
    #[cfg(not(unix))]
    {
        let _ = reloadable;
        None
    }
}

async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(signals) = hangups {
        return signals.recv().await;
    }
    let _ = hangups;
    std::future::pending().await
}

/// Connections the kernel queues for the acceptor: the standard library's 128
/// would make a burst of clients (or of half-open attackers) wait on SYN retransmissions
/// while the workers are idle; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// The client socket, bound but not yet listening.
fn client_socket(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// How many client connections to hold: `configured`, or what the file-descriptor limit
/// leaves room for (each may need a connection to the origin too), after raising the soft
/// limit to the hard one where the system allows.
fn connection_capacity(configured: Option<usize>) -> usize {
    /// Descriptors kept for everything else: listeners, audit log, JWKS fetches, wasmtime.
    const RESERVED: u64 = 64;
    let descriptors = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let room = usize::try_from(descriptors.saturating_sub(RESERVED) / 2).unwrap_or(usize::MAX);
    match configured {
        Some(n) => {
            if n > room {
                eprintln!("tollgate: --max-connections {n} is more than {descriptors} file descriptors can hold ({room})");
            }
            n.max(1)
        }
        None => room.clamp(1, 100_000),
    }
}

/// The origin's HTTP client: keep-alive connections, no Nagle delay, HTTPS with the web
/// PKI roots when the origin is `https`, and writes the origin stops taking for
/// `write_idle` failed.
fn origin_client(connect_timeout: Duration, write_idle: Duration) -> Result<OriginClient, String> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(StallingWritesFail {
            http,
            idle: write_idle,
        });
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https))
}

async fn admin_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, std::convert::Infallible>(admin(&shared, &req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn admin(shared: &Shared, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    use http_body_util::{BodyExt, Full};
    let (status, content_type, body) = match req.uri().path() {
        "/reload" if req.method() == hyper::Method::POST => {
            let (status, answer) = match shared.reload(Trigger::Admin, false).await {
                Ok(Reloaded::Replaced { revision }) => (
                    StatusCode::OK,
                    serde_json::json!({"result": "replaced", "revision": revision}),
                ),
                Ok(Reloaded::Unchanged { revision }) => (
                    StatusCode::OK,
                    serde_json::json!({"result": "unchanged", "revision": revision}),
                ),
                Err(error) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    serde_json::json!({"result": "refused", "error": error}),
                ),
            };
            (status, "application/json", format!("{answer}\n"))
        }
        "/reload" => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "POST /reload reads the policy file again\n".to_owned(),
        ),
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.metrics.render(shared.audit.dropped()),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}
