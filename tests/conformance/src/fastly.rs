//! The Fastly Compute app (targets/fastly) under Viceroy, on 127.0.0.1, stopped by PID.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use policy_core::cases::TestCase;
use serde_json::{json, Value};

use crate::process::{free_port, repo, which, DevServer};
use crate::{corpus_secrets, eval_over_http, Target};

/// Builds the app once per test process and returns the module.
pub fn build_app() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(repo())
                .args([
                    "build",
                    "-q",
                    "-p",
                    "tollgate-fastly",
                    "--target",
                    "wasm32-wasip1",
                    "--profile",
                    "wasm-size",
                ])
                .status()
                .expect("cargo build for Fastly");
            assert!(status.success(), "building the Fastly app failed");
            repo().join("target/wasm32-wasip1/wasm-size/tollgate-fastly.wasm")
        })
        .clone()
}

/// Config Store items hold at most 8000 characters: longer values are stored as
/// `KEY.parts = N` and `KEY.1` ... `KEY.N`, which the app joins.
pub fn chunks(key: &str, value: &str) -> Vec<(String, String)> {
    const MAX: usize = 7000;
    if value.chars().count() <= MAX {
        return vec![(key.to_owned(), value.to_owned())];
    }
    let chars: Vec<char> = value.chars().collect();
    let pieces: Vec<String> = chars.chunks(MAX).map(|c| c.iter().collect()).collect();
    let mut items = vec![(format!("{key}.parts"), pieces.len().to_string())];
    items.extend(
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("{key}.{}", i + 1), p)),
    );
    items
}

/// What goes into the generated `[local_server]`.
#[derive(Debug, Default)]
pub struct ViceroyConfig<'a> {
    pub origin: &'a str,
    pub config: Vec<(&'a str, String)>,
    pub secrets: Vec<(String, String)>,
}

/// One Viceroy with a generated fastly.toml, logging to `viceroy.log`.
pub fn start_viceroy(config: &ViceroyConfig<'_>) -> DevServer {
    let module = build_app();
    let viceroy = which("viceroy")
        .expect("viceroy is not installed: run ./scripts/test (cargo install viceroy)");
    let dir = tempfile::tempdir().expect("tempdir");
    // JSON strings are valid TOML basic strings.
    let mut toml = format!(
            "manifest_version = 3\nname = \"tollgate-test\"\nlanguage = \"rust\"\n\n[local_server]\n[local_server.backends.origin]\nurl = {}\n\n[local_server.config_stores.tollgate]\nformat = \"inline-toml\"\n[local_server.config_stores.tollgate.contents]\n",
            json!(config.origin)
        );
    for (key, value) in &config.config {
        for (item, piece) in chunks(key, value) {
            toml.push_str(&format!("{} = {}\n", json!(item), json!(piece)));
        }
    }
    toml.push_str("\n[local_server.secret_stores]\ntollgate_secrets = [\n");
    for (key, value) in &config.secrets {
        // Secret Store names cannot hold `/`: the app looks `a/b` up as `a.b`.
        let key = key.replace('/', ".");
        toml.push_str(&format!(
            "  {{ key = {}, data = {} }},\n",
            json!(key),
            json!(value)
        ));
    }
    toml.push_str(
        "]\n\n[local_server.kv_stores]\ntollgate_rate = [{ key = \"created\", data = \"1\" }]\n",
    );
    let manifest = dir.path().join("fastly.toml");
    std::fs::write(&manifest, toml).expect("fastly.toml");
    let port = free_port();
    DevServer::start(
        "viceroy",
        Command::new(viceroy)
            .arg("-C")
            .arg(&manifest)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg(&module)
            .current_dir(dir.path()),
        dir,
        "viceroy.log",
        port,
    )
}

/// The corpus through the app's test-only `/__tollgate/eval` endpoint, with the exact GCRA
/// rate store (Viceroy stubs Edge Rate Limiting).
#[derive(Debug, Default)]
pub struct Fastly {
    viceroy: Option<DevServer>,
    case: u64,
}

impl Target for Fastly {
    fn name(&self) -> &'static str {
        "fastly (viceroy)"
    }

    fn load(&mut self, source: &str, _file: &str) -> Result<(), String> {
        self.viceroy = None;
        self.viceroy = Some(start_viceroy(&ViceroyConfig {
            origin: "http://127.0.0.1:9",
            config: vec![
                ("policy", source.to_owned()),
                ("rate_store", "kv".into()),
                ("test_endpoints", "true".into()),
            ],
            secrets: corpus_secrets().into_iter().collect(),
        }));
        Ok(())
    }

    fn reset(&mut self) {
        self.case += 1;
    }

    fn decide(&mut self, case: &TestCase) -> Result<Value, String> {
        let host = self.viceroy.as_ref().ok_or("no policy loaded")?;
        eval_over_http(&host.url(), case, &format!("case-{}", self.case))
            .map_err(|e| format!("{e}\n{}", host.log()))
    }
}
