//! Listeners, background tasks and graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::audit::AuditLog;
use crate::config::ServeConfig;
use crate::jwks::KeyCache;
use crate::metrics::Metrics;
use crate::policy_host::{PolicyHost, SharedTokenCache, WasmPool};
use crate::proxy::{self, Body, SecretMap, Shared};

/// How often expired rate-limit entries are dropped.
const RATE_PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Builds a runtime and serves until SIGINT or SIGTERM.
pub fn run(config: ServeConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
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
    let issuers: Vec<(String, String)> = config
        .engine
        .jwks_urls()
        .map(|(n, u)| (n.to_owned(), u.to_owned()))
        .collect();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("origin client: {e}"))?;
    let policy = match &config.wasm {
        None => PolicyHost::Native {
            tokens: SharedTokenCache::new(
                config.token_cache_entries,
                config.token_cache_max_age.as_secs(),
            ),
            engine: Box::new(config.engine.clone()),
            secrets: SecretMap(config.secrets.clone()),
        },
        Some(wasm) => {
            let module = tollgate_wasmtime::CompiledModule::from_file(&wasm.module)
                .map_err(|e| e.to_string())?;
            let secrets = config
                .secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            PolicyHost::Wasm(WasmPool::new(
                module,
                wasm.source.clone(),
                wasm.file.clone(),
                secrets,
            )?)
        }
    };
    let shared = Arc::new(Shared {
        policy,
        origin: config.origin.clone(),
        keys: KeyCache::new(issuers, config.jwks_min_refresh_gap, config.jwks_max_stale)?,
        rate: Mutex::new(HashMap::new()),
        audit: AuditLog::open(&config.audit).map_err(|e| format!("audit log: {e}"))?,
        metrics: Metrics::default(),
        client,
        body_slots: tokio::sync::Semaphore::new(config.max_buffered_bodies),
    });
    shared.keys.refresh_all(&shared.metrics).await;

    let listener = TcpListener::bind(config.listen)
        .await
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
    eprintln!(
        "tollgate: listening on {listen_addr}, origin {}, deciding {}{}",
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

    let background = tokio::spawn(background(Arc::clone(&shared), config.jwks_refresh));
    let admin_task = admin.map(|l| tokio::spawn(admin_loop(l, Arc::clone(&shared))));

    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
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
                let shared = Arc::clone(&shared);
                let service = service_fn(move |req| proxy::handle(Arc::clone(&shared), peer, req));
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(config.header_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                let watched = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = watched.await {
                        if !e.is_incomplete_message() {
                            eprintln!("tollgate: connection from {peer}: {e}");
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    eprintln!(
        "tollgate: shutting down; waiting up to {:?} for requests in flight",
        config.shutdown_grace
    );
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("tollgate: requests still in flight after the grace period; closing");
    }
    background.abort();
    if let Some(task) = admin_task {
        task.abort();
    }
    eprintln!("tollgate: stopped");
    Ok(())
}

async fn background(shared: Arc<Shared>, jwks_refresh: Duration) {
    let mut refresh = tokio::time::interval(jwks_refresh);
    let mut prune = tokio::time::interval(RATE_PRUNE_EVERY);
    refresh.tick().await; // the first tick is immediate; keys were just fetched
    loop {
        tokio::select! {
            _ = refresh.tick() => shared.keys.refresh_all(&shared.metrics).await,
            _ = prune.tick() => {
                // A state whose TAT has passed is the same as no state.
                let now = proxy::now().as_nanos();
                shared.rate.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, s| s.0 > now);
            }
        }
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
            shared.metrics.render(),
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
