//! The conformance harness: one corpus (`tests/corpus/*.toml`, policies with `[[test]]`
//! cases), run against every host. A host is a [`Target`]: it loads a policy and answers
//! each request with a decision in the JSON form `tollgate eval` prints. Every target must
//! give the same answers; a failure names the file, the case and the target.
//!
//! Today's targets: the native engine (here) and the `tollgate` CLI (targets/cli/tests).
//! Later hosts (the WASM module, the edge workers) implement [`Target`] the same way.

pub mod browser;
pub mod cloudflare;
pub mod fastly;
pub mod gogs_webhook;
pub mod kafka_broker;
pub mod node;
pub mod process;
pub mod world;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use policy_core::cases::TestCase;
use policy_core::policy::Policy;
use policy_core::{NoKeys, RateState, SecretStore, Verdict};
use serde_json::Value;

/// A rate-state accessor over a map, for [`policy_core::Verdict::resolve_with`].
pub fn map_rate_state(
    map: &mut HashMap<String, RateState>,
) -> impl FnMut(&str, Option<RateState>) -> Option<RateState> + '_ {
    move |key, update| match update {
        Some(s) => map.insert(key.to_owned(), s).or(Some(s)),
        None => map.get(key).copied(),
    }
}

/// The corpus files, sorted.
pub fn corpus_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// A host that can run corpus cases.
pub trait Target {
    fn name(&self) -> &'static str;
    /// Loads a policy; called once per corpus file.
    fn load(&mut self, source: &str, file: &str) -> Result<(), String>;
    /// Forgets rate-limit state; called before each case.
    fn reset(&mut self);
    /// Decides the case's request once, returning the decision's JSON.
    fn decide(&mut self, case: &TestCase) -> Result<Value, String>;
}

#[derive(Debug)]
pub struct Failure {
    pub target: &'static str,
    pub file: String,
    pub case: String,
    pub problems: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failures: Vec<Failure>,
}

impl Report {
    /// Panics, naming every failing case and its target, unless all of at least
    /// `min_cases` cases passed (a corpus that silently shrank must fail too).
    pub fn assert_clean(&self, min_cases: usize) {
        for f in &self.failures {
            eprintln!(
                "[{}] {} :: {}\n    {}",
                f.target,
                f.file,
                f.case,
                f.problems.join("\n    ")
            );
        }
        assert!(
            self.failures.is_empty(),
            "{} corpus cases failed",
            self.failures.len()
        );
        assert!(
            self.passed >= min_cases,
            "only {} corpus cases ran",
            self.passed
        );
    }
}

/// Cases the corpus holds at least; raise it as the corpus grows.
pub const MIN_CORPUS_CASES: usize = 228;

/// Runs every corpus file against `target`.
pub fn run(target: &mut dyn Target) -> Report {
    let mut report = Report::default();
    for path in corpus_files() {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let policy = Policy::parse(&source, &file).unwrap_or_else(|e| panic!("{e}"));
        if let Err(e) = target.load(&source, &file) {
            report.failures.push(Failure {
                target: target.name(),
                file,
                case: "(load)".into(),
                problems: vec![e],
            });
            continue;
        }
        for case in &policy.tests {
            target.reset();
            let mut last = Err(String::from("case never ran"));
            for step in case.steps() {
                let step = TestCase {
                    request: step.request.clone(),
                    exchange: step.exchange.cloned(),
                    ..case.clone()
                };
                last = target.decide(&step);
            }
            let problems = match last {
                Ok(json) => {
                    let mut problems = case.expect.check(&json);
                    // Every host names the revision of the policy text it was given (a
                    // token request is no decision and names none).
                    let revision = policy.engine.revision();
                    if json.get("token_request").is_none() && json["policy_revision"] != revision {
                        problems.push(format!(
                            "policy_revision: expected `{revision}`, got {}",
                            json["policy_revision"]
                        ));
                    }
                    problems
                }
                Err(e) => vec![e],
            };
            if problems.is_empty() {
                report.passed += 1;
            } else {
                report.failures.push(Failure {
                    target: target.name(),
                    file: file.clone(),
                    case: case.name.clone(),
                    problems,
                });
            }
        }
    }
    report
}

/// The origin secrets every target gets (`tests/corpus/secrets.json`).
pub fn corpus_secrets() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/secrets.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Debug)]
struct SecretMap(BTreeMap<String, String>);

impl SecretStore for SecretMap {
    fn secret(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.0
            .get(name)
            .map(|v| std::borrow::Cow::Borrowed(v.as_str()))
    }
}

/// The engine called directly.
#[derive(Debug)]
pub struct Native {
    policy: Option<Policy>,
    secrets: SecretMap,
    state: HashMap<String, RateState>,
    /// `None`: the core's default, RustCrypto.
    crypto: Option<&'static dyn policy_core::CryptoProvider>,
}

impl Native {
    /// The engine verifying signatures with `provider`.
    pub fn with_crypto(provider: &'static dyn policy_core::CryptoProvider) -> Self {
        Native {
            crypto: Some(provider),
            ..Native::default()
        }
    }
}

impl Default for Native {
    fn default() -> Self {
        Native {
            policy: None,
            secrets: SecretMap(corpus_secrets()),
            state: HashMap::new(),
            crypto: None,
        }
    }
}

impl Target for Native {
    fn name(&self) -> &'static str {
        match self.crypto {
            None => "native",
            Some(_) => "native (crypto provider)",
        }
    }

    fn load(&mut self, source: &str, file: &str) -> Result<(), String> {
        let mut policy = Policy::parse(source, file).map_err(|e| e.to_string())?;
        if let Some(provider) = self.crypto {
            policy.engine = policy.engine.with_crypto(provider);
        }
        self.policy = Some(policy);
        Ok(())
    }

    fn reset(&mut self) {
        self.state.clear();
    }

    fn decide(&mut self, case: &TestCase) -> Result<Value, String> {
        serde_json::from_str(&self.answer(case)?.0).map_err(|e| e.to_string())
    }
}

impl Native {
    /// The answer to the case's request as JSON text, rate state kept as for
    /// [`Target::decide`]: the decision (also returned typed), or for a sign-in callback
    /// the token request (or, given the case's `exchange`, the decision completing it).
    pub fn answer(
        &mut self,
        case: &TestCase,
    ) -> Result<(String, Option<policy_core::Decision>), String> {
        let policy = self.policy.as_ref().ok_or("no policy loaded")?;
        let pairs = case.request.header_pairs();
        let facts = case.request.facts(&pairs);
        let engine = &policy.engine;
        let decision = match engine.decide(&facts, case.now, &NoKeys, &self.secrets) {
            Verdict::Exchange(exchange) => match &case.exchange {
                Some(answer) => engine.complete_sign_in(
                    &facts,
                    answer.response(),
                    case.now,
                    &NoKeys,
                    &self.secrets,
                ),
                None => return Ok((exchange.to_json(), None)),
            },
            verdict => verdict.resolve_with(&mut map_rate_state(&mut self.state)),
        };
        Ok((decision.to_json(), Some(decision)))
    }
}

/// Builds the policy module (speed profile, the one wasmtime hosts run) and returns its path. Cargo skips the work
/// when it is up to date.
pub fn build_wasm_module() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "-q",
            "-p",
            "tollgate-wasm-module",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "wasm-speed",
        ])
        .status()
        .expect("run cargo build for the policy module");
    assert!(status.success(), "building the policy module failed");
    root.join(tollgate_wasmtime::DEFAULT_MODULE_PATH)
}

/// The policy module under wasmtime.
#[derive(Debug)]
pub struct Wasm {
    module: tollgate_wasmtime::CompiledModule,
    instance: Option<tollgate_wasmtime::PolicyInstance>,
    state: HashMap<String, RateState>,
}

impl Wasm {
    pub fn new(module: tollgate_wasmtime::CompiledModule) -> Self {
        Wasm {
            module,
            instance: None,
            state: Default::default(),
        }
    }
}

impl Target for Wasm {
    fn name(&self) -> &'static str {
        "wasmtime"
    }

    fn load(&mut self, source: &str, file: &str) -> Result<(), String> {
        let mut instance = tollgate_wasmtime::PolicyInstance::new(&self.module, source, file)
            .map_err(|e| e.to_string())?;
        instance
            .set_secrets(&corpus_secrets())
            .map_err(|e| e.to_string())?;
        self.instance = Some(instance);
        Ok(())
    }

    fn reset(&mut self) {
        self.state.clear();
    }

    fn decide(&mut self, case: &TestCase) -> Result<Value, String> {
        let instance = self.instance.as_mut().ok_or("no policy loaded")?;
        let pairs = case.request.header_pairs();
        let facts = case.request.facts(&pairs);
        let verdict = instance
            .decide(&facts, case.now, false)
            .map_err(|e| e.to_string())?;
        let json = match verdict {
            Verdict::Exchange(exchange) => match &case.exchange {
                Some(answer) => instance
                    .complete_sign_in(&facts, answer.response(), case.now, false)
                    .map_err(|e| e.to_string())?
                    .to_json(),
                None => exchange.to_json(),
            },
            verdict => verdict
                .resolve_with(&mut map_rate_state(&mut self.state))
                .to_json(),
        };
        serde_json::from_str(&json).map_err(|e| e.to_string())
    }
}

/// Decides `case` through a host's test-only `POST /__tollgate/eval` (the edge hosts), at
/// the case's time and with rate-limit state kept apart under `namespace`.
pub fn eval_over_http(base_url: &str, case: &TestCase, namespace: &str) -> Result<Value, String> {
    let body = policy_core::EvalRequest {
        request: case.request.clone(),
        now: case.now.as_secs(),
        rate_namespace: namespace.to_owned(),
        exchange: case.exchange.clone(),
    };
    let body = serde_json::to_string(&body).map_err(|e| e.to_string())?;
    let response = reqwest::blocking::Client::new()
        .post(format!("{base_url}/__tollgate/eval"))
        .body(body)
        .send()
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("eval endpoint answered {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// The engine called directly through a token cache, with rate limits resolved in the
/// memory store `tollgate serve` uses (compare-and-replace per key): each case is first
/// decided without rate state to warm the cache, then for real, so the answer checked is
/// the one given from the cache.
#[derive(Debug)]
pub struct NativeCached {
    inner: Native,
    tokens: std::cell::RefCell<policy_core::TokenCache>,
    rates: tollgate_host_kit::ShardedRates,
    pub hits: usize,
}

impl Default for NativeCached {
    fn default() -> Self {
        NativeCached {
            inner: Native::default(),
            tokens: std::cell::RefCell::new(policy_core::TokenCache::new(1024, 3600)),
            rates: tollgate_host_kit::ShardedRates::default(),
            hits: 0,
        }
    }
}

impl Target for NativeCached {
    fn name(&self) -> &'static str {
        "native with token cache"
    }

    fn load(&mut self, source: &str, file: &str) -> Result<(), String> {
        self.tokens.borrow_mut().clear();
        self.inner.load(source, file)
    }

    fn reset(&mut self) {
        self.inner.reset();
        self.rates = tollgate_host_kit::ShardedRates::default();
    }

    fn decide(&mut self, case: &TestCase) -> Result<Value, String> {
        let policy = self.inner.policy.as_ref().ok_or("no policy loaded")?;
        let pairs = case.request.header_pairs();
        let facts = case.request.facts(&pairs);
        let decide = || {
            policy.engine.decide_explained(
                &facts,
                case.now,
                &NoKeys,
                &self.inner.secrets,
                &self.tokens,
            )
        };
        // Warm the cache, leaving the rate state alone, then decide for real.
        let _ = decide().resolve_with(&mut |_, _| None);
        let decision = match decide() {
            Verdict::Exchange(exchange) => {
                let Some(answer) = &case.exchange else {
                    return serde_json::from_str(&exchange.to_json()).map_err(|e| e.to_string());
                };
                policy.engine.complete_sign_in_explained(
                    &facts,
                    answer.response(),
                    case.now,
                    &NoKeys,
                    &self.inner.secrets,
                )
            }
            verdict => verdict.resolve_in(&self.rates),
        };
        if decision
            .explain
            .iter()
            .any(|s| s.outcome.ends_with("(cached)"))
        {
            self.hits += 1;
        }
        serde_json::to_value(&decision).map_err(|e| e.to_string())
    }
}
