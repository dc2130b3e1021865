//! Tollgate on Fastly Compute.
//!
//! A thin host: it turns the request into `RequestFacts`, reads the clock, loads the
//! policy (once per sandbox, which serves many requests) and JWKS from the `tollgate`
//! Config Store and origin tokens from the
//! `tollgate_secrets` Secret Store, asks the engine, and answers the denial or sends the
//! request to the backend `origin`. Rate limits go through a [`rate::RateStore`]: Fastly's
//! Edge Rate Limiting in production, or exact GCRA in a KV Store.

#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod rate;

/// Serves requests in this sandbox until the platform ends it, keeping the compiled policy,
/// keys and caches between them.
#[cfg(target_arch = "wasm32")]
fn main() {
    let mut instance = app::Instance::default();
    let summary = fastly::http::serve::Serve::new().run(|req| instance.handle(req));
    if let Some(e) = summary.error() {
        println!(
            "{}",
            serde_json::json!({ "tollgate_error": format!("serve: {e}") })
        );
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("tollgate-fastly runs on Fastly Compute: cargo build -p tollgate-fastly --target wasm32-wasip1 --profile wasm-size");
    std::process::exit(2);
}
