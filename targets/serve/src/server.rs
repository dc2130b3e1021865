//! Listeners, background tasks and graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use policy_core::SecretStore;
use tokio::net::TcpListener;
use tollgate_host_kit::{Decider, Gate, KeyRing, NativeDecider, ShardedRates, SharedTokenCache};
use tollgate_wasmtime::ModulePool;

use crate::audit::AuditLog;
use crate::config::ServeConfig;
use crate::metrics::{Limit, Metrics};
use crate::proxy::{self, Body, Origin, OriginClient, Shared, Timeouts};
use tollgate_host_kit::RedisRates;

/// How often expired rate-limit entries are dropped.
const RATE_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often the key ring is asked what is due.
const KEY_SCHEDULE_EVERY: Duration = Duration::from_secs(1);

/// Builds a runtime and serves until SIGINT or SIGTERM.
pub fn run(config: ServeConfig) -> Result<(), String> {
    // Requests are served by the worker threads; this runtime only runs key fetches,
    // pruning, the admin listener and shutdown, so one thread is enough.
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
    let (decider, issuers): (Box<dyn Decider + Send + Sync>, Vec<(String, String)>) =
        match &config.wasm {
            None => {
                let tokens = (config.token_cache_entries > 0).then(|| {
                    SharedTokenCache::new(
                        config.token_cache_entries,
                        config.token_cache_max_age.as_secs(),
                    )
                });
                let issuers = owned_pairs(config.engine.jwks_urls());
                let secrets = SecretMap(config.secrets.clone());
                // Native: aws-lc verifies signatures (same answers as RustCrypto, faster).
                let engine = config
                    .engine
                    .clone()
                    .with_crypto(&tollgate_host_kit::AWS_LC);
                (
                    Box::new(NativeDecider::new(engine, secrets, tokens)),
                    issuers,
                )
            }
            Some(wasm) => {
                let module = tollgate_wasmtime::CompiledModule::from_file(&wasm.module)
                    .map_err(|e| e.to_string())?;
                let secrets = config.secrets.clone().into_iter().collect();
                let pool = ModulePool::new(
                    module,
                    wasm.source.clone(),
                    wasm.file.clone(),
                    Some(secrets),
                )
                .map_err(|e| e.to_string())?;
                let issuers = pool.jwks_urls().to_vec();
                (Box::new(pool), issuers)
            }
        };
    let keys = KeyRing::new(
        issuers.iter().map(|(n, u)| (n.as_str(), u.as_str())),
        config.jwks_timings(),
    );
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
    let shared = Arc::new(Shared {
        gate: Gate::new(decider, keys),
        rates: ShardedRates::default(),
        origin: Origin::parse(&config.origin)?,
        audit: AuditLog::open(&config.audit, config.audit_queue)
            .map_err(|e| format!("audit log: {e}"))?,
        audit_required: config.audit_required,
        metrics: Metrics::new(
            config.engine.revision(),
            issuers.iter().map(|(n, _)| n.as_str()),
        ),
        jwks_client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("JWKS client: {e}"))?,
        body_slots: tokio::sync::Semaphore::new(config.max_buffered_bodies),
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
        timeouts: Timeouts {
            origin_header: config.origin_header_timeout,
            stream_idle: config.stream_idle_timeout,
            lfs_body: config.lfs_body_timeout,
        },
        redis,
    });
    let reports = shared
        .gate
        .keys
        .refresh_due(proxy::now(), |url| shared.fetch_jwks(url))
        .await;
    shared.report_fetches(&reports);

    let listener = std::net::TcpListener::bind(config.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| format!("listen on {}: {e}", config.listen))?;
    let listen_addr = listener.local_addr().map_err(|e| e.to_string())?;
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

    let background = tokio::spawn(background(Arc::clone(&shared)));
    let admin_task = admin.map(|l| tokio::spawn(admin_loop(l, Arc::clone(&shared))));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut threads = Vec::with_capacity(workers);
    for index in 0..workers {
        let worker = Worker {
            listener: listener.try_clone().map_err(|e| format!("listener: {e}"))?,
            shared: Arc::clone(&shared),
            connection_slots: Arc::clone(&connection_slots),
            connect_timeout: config.origin_connect_timeout,
            header_timeout: config.header_timeout,
            shutdown_grace: config.shutdown_grace,
            stop: stopped.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("tollgate-worker-{index}"))
                .spawn(move || worker.run())
                .map_err(|e| format!("worker thread: {e}"))?,
        );
    }
    drop(listener);
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
    background.abort();
    if let Some(task) = admin_task {
        task.abort();
    }
    shared.audit.close();
    eprintln!("tollgate: stopped");
    Ok(())
}

/// One worker thread: its own single-threaded runtime and origin connection pool, accepting
/// from the shared listening socket. A request is handled start to finish on one thread,
/// so no step of it wakes another (on 2 cores, cross-thread wakeups of a work-stealing
/// runtime cost more than the decision itself).
struct Worker {
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    /// One permit per client connection open, shared by all workers.
    connection_slots: Arc<tokio::sync::Semaphore>,
    connect_timeout: Duration,
    header_timeout: Duration,
    shutdown_grace: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Worker {
    fn run(self) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("worker runtime: {e}"))?;
        runtime.block_on(self.accept())
    }

    async fn accept(mut self) -> Result<(), String> {
        let listener =
            TcpListener::from_std(self.listener).map_err(|e| format!("listener: {e}"))?;
        let client = origin_client(self.connect_timeout)?;
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            eprintln!("tollgate: accept: {e}");
                            continue;
                        }
                    };
                    let Ok(slot) = Arc::clone(&self.connection_slots).try_acquire_owned() else {
                        self.shared.metrics.shed(Limit::Connections);
                        tokio::spawn(refuse_connection(stream));
                        continue;
                    };
                    // Small responses (denials, git negotiation) go out at once.
                    let _ = stream.set_nodelay(true);
                    let (shared, client) = (Arc::clone(&self.shared), client.clone());
                    let service = service_fn(move |req| {
                        proxy::handle(Arc::clone(&shared), client.clone(), peer, req)
                    });
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(self.header_timeout)
                        .serve_connection(TokioIo::new(stream), service);
                    let watched = graceful.watch(connection);
                    let shared = Arc::clone(&self.shared);
                    tokio::spawn(async move {
                        shared.metrics.connections(1);
                        let served = watched.await;
                        shared.metrics.connections(-1);
                        drop(slot);
                        if let Err(e) = served {
                            if !e.is_incomplete_message() {
                                eprintln!("tollgate: connection from {peer}: {e}");
                            }
                        }
                    });
                }
                _ = self.stop.changed() => break,
            }
        }
        drop(listener);
        if tokio::time::timeout(self.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            eprintln!("tollgate: requests still in flight after the grace period; closing");
        }
        Ok(())
    }
}

/// Follows the key ring's schedule (it says what is due; checking costs nothing when
/// nothing is) and drops expired rate-limit state.
async fn background(shared: Arc<Shared>) {
    let mut keys = tokio::time::interval(KEY_SCHEDULE_EVERY);
    let mut prune = tokio::time::interval(RATE_PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = keys.tick() => {
                let reports = shared
                    .gate
                    .keys
                    .refresh_due(proxy::now(), |url| shared.fetch_jwks(url))
                    .await;
                shared.report_fetches(&reports);
            }
            _ = prune.tick() => shared.rates.prune(proxy::now()),
        }
    }
}

/// Answers a connection over the limit with a 503 and closes it, giving the client at
/// most a second to take it.
async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 28\r\nConnection: close\r\n\r\ntoo many connections; retry\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(REFUSAL)).await;
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
/// PKI roots when the origin is `https`.
fn origin_client(connect_timeout: Duration) -> Result<OriginClient, String> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https))
}

fn owned_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    pairs.map(|(a, b)| (a.to_owned(), b.to_owned())).collect()
}

/// The origin secrets, as the engine reads them.
struct SecretMap(HashMap<String, String>);

impl SecretStore for SecretMap {
    fn secret(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.0
            .get(name)
            .map(|v| std::borrow::Cow::Borrowed(v.as_str()))
    }
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
                async move { Ok::<_, std::convert::Infallible>(admin(&shared, &req)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn admin(shared: &Shared, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    use http_body_util::{BodyExt, Full};
    let (status, content_type, body) = match req.uri().path() {
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
