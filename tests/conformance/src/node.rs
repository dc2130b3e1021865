//! The npm package (`targets/js`, built with wasm-pack) under Node as a conformance host:
//! `targets/js/tests/conformance-host.cjs` drives the package's public API over stdin and
//! stdout, and every decision must be the native engine's, byte for byte.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

use policy_core::cases::TestCase;
use serde_json::{json, Value};

use crate::process::node22;
use crate::{corpus_secrets, Native, Target};

/// Builds the Node flavour of the package (`scripts/js-package node`) and returns its
/// folder. wasm-pack and cargo skip what is up to date.
pub fn build_js_package() -> PathBuf {
    // Once per test binary: two tests building into one folder at once would race.
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_flavour("node")).clone()
}

/// Builds the bundler flavour (`scripts/js-package bundler`: ES modules importing the
/// WASM as a module, for webpack, Vite and the like) and returns its folder.
pub fn build_bundler_package() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_flavour("bundler")).clone()
}

fn build_flavour(flavour: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(root.join("scripts/js-package"))
        .arg(flavour)
        .current_dir(&root)
        .env("PATH", crate::process::path_with_node22())
        .status()
        .expect("run scripts/js-package");
    assert!(status.success(), "scripts/js-package {flavour} failed");
    root.join("targets/js/pkg").join(flavour)
}

/// Type-checks `targets/js/tsconfig.json`'s files (the README's Worker example and the
/// misuses the declarations must refuse) against the built package's declarations with
/// TypeScript (`targets/js/package.json`, installed here when missing). Returns tsc's exit
/// status and output.
pub fn type_check(package: &Path) -> (bool, String) {
    let js = package.join("../..");
    if !js.join("node_modules/typescript").is_dir() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&js)
            .status()
            .expect("run npm ci in targets/js");
        assert!(status.success(), "npm ci in targets/js failed");
    }
    let output = Command::new(node22())
        .args(["node_modules/typescript/bin/tsc", "-p", "tsconfig.json"])
        .current_dir(&js)
        .output()
        .expect("run tsc");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// The package in a Node process, checked against the native engine case by case.
#[derive(Debug)]
pub struct NodePackage {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    native: Native,
    secrets: Value,
}

impl NodePackage {
    pub fn start(package: &Path) -> NodePackage {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut child = Command::new(node22())
            .arg(root.join("targets/js/tests/conformance-host.cjs"))
            .arg(package)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take().expect("node stdin");
        let stdout = BufReader::new(child.stdout.take().expect("node stdout"));
        NodePackage {
            child,
            stdin,
            stdout,
            native: Native::default(),
            secrets: serde_json::to_value(corpus_secrets()).unwrap_or_default(),
        }
    }

    /// The package's `runTests()` on the policy last loaded, `options` as it takes them:
    /// `[{name, line, passed, mismatches}]`.
    pub fn run_tests(&mut self, options: &Value) -> Result<Value, String> {
        self.ask(&json!({"op": "run_tests", "options": options}))
            .map(|reply| reply["outcomes"].clone())
    }

    /// The package's decision (its JSON text) on `request` at `now` under `options`, with
    /// no rate-limit state.
    pub fn decide_with(&mut self, request: &Value, options: &Value) -> Result<String, String> {
        let reply = self.ask(&json!({"op": "decide", "request": request, "options": options}))?;
        reply["decision"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| String::from("no decision"))
    }

    fn ask(&mut self, op: &Value) -> Result<Value, String> {
        writeln!(self.stdin, "{op}").map_err(|e| format!("write to node: {e}"))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("read from node: {e}"))?;
        let reply: Value =
            serde_json::from_str(&line).map_err(|e| format!("node answered `{line}`: {e}"))?;
        match reply.get("error") {
            Some(error) => Err(format!("node: {error}")),
            None => Ok(reply),
        }
    }
}

impl Drop for NodePackage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Target for NodePackage {
    fn name(&self) -> &'static str {
        "npm package under Node"
    }

    fn load(&mut self, source: &str, file: &str) -> Result<(), String> {
        self.native.load(source, file)?;
        self.ask(&json!({"op": "load", "source": source, "file": file}))
            .map(|_| ())
    }

    fn reset(&mut self) {
        self.native.reset();
        let _ = self.ask(&json!({"op": "reset"}));
    }

    fn decide(&mut self, case: &TestCase) -> Result<Value, String> {
        let reply = self.ask(&json!({
            "op": "decide",
            "request": case.request,
            "options": {"now": case.now.as_secs(), "secrets": self.secrets},
            "exchange": case.exchange,
        }))?;
        let text = reply["decision"].as_str().ok_or("no decision")?.to_owned();
        // Byte for byte: the package's JSON text against the native answer's.
        let (native_text, native) = self.native.answer(case)?;
        if text != native_text {
            return Err(format!(
                "differs from native:\n      node:   {text}\n      native: {native_text}"
            ));
        }
        // The decision shows origin secrets redacted; what the host forwards must carry
        // the real values the native engine sets.
        let native_headers: Vec<(&str, &str)> = match &native {
            Some(native) if native.allow => {
                native.set.iter().map(|h| (h.name(), h.value())).collect()
            }
            _ => Vec::new(),
        };
        if reply["origin_headers"] != json!(native_headers) {
            return Err(format!(
                "originHeaders() differs from native: node {}, native {native_headers:?}",
                reply["origin_headers"]
            ));
        }
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }
}
