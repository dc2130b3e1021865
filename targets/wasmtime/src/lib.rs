//! Runs the Tollgate policy module (`targets/wasm-module`) under wasmtime.
//!
//! The host side of the module's ABI: it copies JSON into the module's memory, calls an
//! export, and copies the JSON answer out. Each call gets a fuel budget and the store a
//! memory cap, so a runaway or trapping module turns into an error — which hosts must
//! treat as a denial.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use policy_core::{OwnedRequest, RateState, UnixTime};
use serde_json::{json, Value};
use wasmtime::{
    Config, Engine, Instance, Memory, Module, Store, StoreLimits, StoreLimitsBuilder, TypedFunc,
};

/// Fuel for one call: far above what a decision needs (a few million instructions with
/// RSA), low enough to stop a loop quickly.
const FUEL_PER_CALL: u64 = 2_000_000_000;
/// Linear memory the module may grow to.
const MEMORY_LIMIT: usize = 64 << 20;

/// Where `cargo build -p tollgate-wasm-module --target wasm32-unknown-unknown --profile
/// wasm-size` leaves the module, relative to the workspace root.
pub const DEFAULT_MODULE_PATH: &str =
    "target/wasm32-unknown-unknown/wasm-size/tollgate_policy.wasm";

/// Why the module could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmError {
    /// Loading, compiling or instantiating the module.
    Load { message: String },
    /// A trap, fuel exhaustion, or a malformed answer during a call.
    Call { op: &'static str, message: String },
    /// The module answered `{"error": ...}` (for `init`: the positioned policy error).
    Refused { op: &'static str, message: String },
}

impl std::fmt::Display for WasmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WasmError::Load { message } => write!(f, "policy module: {message}"),
            WasmError::Call { op, message } => write!(f, "policy module `{op}` failed: {message}"),
            WasmError::Refused { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for WasmError {}

fn load_error(e: impl std::fmt::Display) -> WasmError {
    WasmError::Load {
        message: format!("{e:#}"),
    }
}

/// A compiled module, shareable between instances (compile once, instantiate per worker).
#[derive(Clone)]
pub struct CompiledModule {
    engine: Engine,
    module: Module,
}

impl std::fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompiledModule")
    }
}

impl CompiledModule {
    pub fn from_file(path: &Path) -> Result<Self, WasmError> {
        let bytes = std::fs::read(path).map_err(|e| WasmError::Load {
            message: format!(
                "{}: {e} (build it with `cargo build -p tollgate-wasm-module --target wasm32-unknown-unknown --profile wasm-size`)",
                path.display()
            ),
        })?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WasmError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        let engine = Engine::new(&config).map_err(load_error)?;
        let module = Module::new(&engine, bytes).map_err(load_error)?;
        Ok(CompiledModule { engine, module })
    }

    /// The module at `path`, or at [`DEFAULT_MODULE_PATH`] under `workspace_root`.
    pub fn locate(path: Option<&Path>, workspace_root: &Path) -> Result<Self, WasmError> {
        let path: PathBuf = path.map_or_else(
            || workspace_root.join(DEFAULT_MODULE_PATH),
            Path::to_path_buf,
        );
        Self::from_file(&path)
    }
}

/// What a proxying host does with a final decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward to the origin: remove `strip`, then set `set` (real values; may hold secrets).
    Forward {
        strip: Vec<String>,
        set: Vec<(String, String)>,
    },
    /// Answer with the decision's status and headers, and this body.
    Deny { content_type: String, body: String },
}

/// A final decision: its JSON (as `tollgate eval` prints it), its audit record, and the
/// action to take.
#[derive(Debug, Clone, PartialEq)]
pub struct Final {
    pub decision: Value,
    pub audit: Value,
    pub action: Action,
}

impl Final {
    /// Whether the decision allows the request (false for anything malformed).
    pub fn allow(&self) -> bool {
        self.decision["allow"] == Value::Bool(true)
    }

    /// The decision's status; 500 if the answer lacks one.
    pub fn status(&self) -> u16 {
        self.decision["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(500)
    }

    /// The decision's reason code; `policy_module_error` if the answer lacks one.
    pub fn reason(&self) -> &str {
        self.decision["reason"]
            .as_str()
            .unwrap_or("policy_module_error")
    }
}

/// What a decision call returned.
#[derive(Debug, Clone, PartialEq)]
pub enum WasmVerdict {
    Decided(Final),
    /// Needs the rate-limit state for `key`; call [`PolicyInstance::resolve`]. The quota
    /// (`requests` per `period_seconds`) is for hosts that count in windows instead.
    Pending {
        key: String,
        requests: u64,
        period_seconds: u64,
    },
}

/// The answer to [`PolicyInstance::resolve`].
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub outcome: Final,
    /// `(key, new state, expiry in Unix seconds)` to store, if the request was admitted.
    pub update: Option<(String, RateState, u64)>,
}

fn parse_final(op: &'static str, out: &Value) -> Result<Final, WasmError> {
    let (Some(decision), Some(audit), Some(action)) =
        (out.get("decision"), out.get("audit"), out.get("action"))
    else {
        return Err(bad_answer(op, out));
    };
    let action = if let Some(forward) = action.get("forward") {
        Action::Forward {
            strip: serde_json::from_value(forward["strip"].clone())
                .map_err(|_| bad_answer(op, out))?,
            set: serde_json::from_value(forward["set"].clone()).map_err(|_| bad_answer(op, out))?,
        }
    } else if let Some(deny) = action.get("deny") {
        Action::Deny {
            content_type: deny["content_type"]
                .as_str()
                .unwrap_or("text/plain")
                .to_owned(),
            body: deny["body"].as_str().unwrap_or_default().to_owned(),
        }
    } else {
        return Err(bad_answer(op, out));
    };
    Ok(Final {
        decision: decision.clone(),
        audit: audit.clone(),
        action,
    })
}

struct Exports {
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    free: TypedFunc<(u32, u32), ()>,
    init: TypedFunc<(u32, u32), u64>,
    set_keys: TypedFunc<(u32, u32), u64>,
    set_secrets: TypedFunc<(u32, u32), u64>,
    decide: TypedFunc<(u32, u32), u64>,
    resolve: TypedFunc<(u32, u32), u64>,
}

/// One instance of the module with a policy loaded. Not shared between threads: give each
/// worker its own (instantiation is cheap once the module is compiled).
pub struct PolicyInstance {
    store: Store<StoreLimits>,
    exports: Exports,
    jwks_urls: Vec<(String, String)>,
    user_header: String,
}

impl std::fmt::Debug for PolicyInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyInstance")
            .field("jwks_urls", &self.jwks_urls)
            .field("user_header", &self.user_header)
            .finish_non_exhaustive()
    }
}

impl PolicyInstance {
    /// Instantiates the module and loads `policy` (TOML); `file` labels its errors.
    pub fn new(module: &CompiledModule, policy: &str, file: &str) -> Result<Self, WasmError> {
        let limits = StoreLimitsBuilder::new().memory_size(MEMORY_LIMIT).build();
        let mut store = Store::new(&module.engine, limits);
        store.limiter(|limits| limits);
        store.set_fuel(FUEL_PER_CALL).map_err(load_error)?;
        let instance = Instance::new(&mut store, &module.module, &[]).map_err(load_error)?;
        let exports = Exports::bind(&instance, &mut store)?;
        let mut this = PolicyInstance {
            store,
            exports,
            jwks_urls: Vec::new(),
            user_header: String::new(),
        };
        let ok = this.call_ok("init", &json!({ "policy": policy, "file": file }))?;
        this.jwks_urls = serde_json::from_value(ok["jwks_urls"].clone()).unwrap_or_default();
        this.user_header = ok["user_header"].as_str().unwrap_or_default().to_owned();
        Ok(this)
    }

    /// Issuers whose keys the host must fetch: `(issuer name, JWKS URL)`.
    pub fn jwks_urls(&self) -> &[(String, String)] {
        &self.jwks_urls
    }

    /// The policy's reverse-proxy user header (`origin.user_header`, lowercase).
    pub fn user_header(&self) -> &str {
        &self.user_header
    }

    /// Hands the module an issuer's JWKS; `None` makes it forget them (stale keys).
    pub fn set_keys(&mut self, issuer: &str, jwks: Option<&str>) -> Result<(), WasmError> {
        self.call_ok("set_keys", &json!({ "issuer": issuer, "jwks": jwks }))
            .map(drop)
    }

    pub fn set_secrets(&mut self, secrets: &BTreeMap<String, String>) -> Result<(), WasmError> {
        self.call_ok("set_secrets", &json!({ "secrets": secrets }))
            .map(drop)
    }

    /// For policy tests: every secret name resolves to a stand-in value.
    pub fn use_placeholder_secrets(&mut self) -> Result<(), WasmError> {
        self.call_ok("set_secrets", &json!({ "placeholder": true }))
            .map(drop)
    }

    pub fn decide(
        &mut self,
        request: &OwnedRequest,
        now: UnixTime,
        explain: bool,
    ) -> Result<WasmVerdict, WasmError> {
        let input = json!({ "request": request, "now_nanos": now.as_nanos(), "explain": explain });
        let out = self.call("decide", &input)?;
        if let Some(pending) = out.get("pending") {
            let key = pending["key"]
                .as_str()
                .ok_or_else(|| bad_answer("decide", &out))?;
            return Ok(WasmVerdict::Pending {
                key: key.to_owned(),
                requests: pending["requests"].as_u64().unwrap_or(0),
                period_seconds: pending["period_seconds"].as_u64().unwrap_or(0),
            });
        }
        parse_final("decide", &out).map(WasmVerdict::Decided)
    }

    pub fn resolve(&mut self, prior: Option<RateState>) -> Result<Resolved, WasmError> {
        let out = self.call("resolve", &json!({ "state": prior.map(|s| s.0) }))?;
        let outcome = parse_final("resolve", &out)?;
        let update = match out.get("update") {
            Some(Value::Null) | None => None,
            Some(u) => Some((
                u["key"]
                    .as_str()
                    .ok_or_else(|| bad_answer("resolve", &out))?
                    .to_owned(),
                RateState(
                    u["state"]
                        .as_u64()
                        .ok_or_else(|| bad_answer("resolve", &out))?,
                ),
                u["expires"].as_u64().unwrap_or(0),
            )),
        };
        Ok(Resolved { outcome, update })
    }

    /// Decides and resolves against a synchronous state accessor (one-shot hosts, tests).
    pub fn decide_with_state(
        &mut self,
        request: &OwnedRequest,
        now: UnixTime,
        explain: bool,
        state: &mut dyn FnMut(&str, Option<RateState>) -> Option<RateState>,
    ) -> Result<Final, WasmError> {
        match self.decide(request, now, explain)? {
            WasmVerdict::Decided(outcome) => Ok(outcome),
            WasmVerdict::Pending { key, .. } => {
                let resolved = self.resolve(state(&key, None))?;
                if let Some((key, new_state, _)) = &resolved.update {
                    state(key, Some(*new_state));
                }
                Ok(resolved.outcome)
            }
        }
    }

    fn call_ok(&mut self, op: &'static str, input: &Value) -> Result<Value, WasmError> {
        let out = self.call(op, input)?;
        out.get("ok").cloned().ok_or_else(|| bad_answer(op, &out))
    }

    fn call(&mut self, op: &'static str, input: &Value) -> Result<Value, WasmError> {
        let call_error = |e: wasmtime::Error| WasmError::Call {
            op,
            message: format!("{e:#}"),
        };
        self.store.set_fuel(FUEL_PER_CALL).map_err(call_error)?;
        let bytes = serde_json::to_vec(input).map_err(|e| WasmError::Call {
            op,
            message: e.to_string(),
        })?;
        let len = u32::try_from(bytes.len()).map_err(|_| WasmError::Call {
            op,
            message: "input too large".into(),
        })?;
        let e = &self.exports;
        let ptr = e.alloc.call(&mut self.store, len).map_err(call_error)?;
        e.memory
            .write(&mut self.store, ptr as usize, &bytes)
            .map_err(|err| WasmError::Call {
                op,
                message: err.to_string(),
            })?;
        let func = match op {
            "init" => &e.init,
            "set_keys" => &e.set_keys,
            "set_secrets" => &e.set_secrets,
            "decide" => &e.decide,
            _ => &e.resolve,
        };
        let packed = func.call(&mut self.store, (ptr, len)).map_err(call_error)?;
        e.free
            .call(&mut self.store, (ptr, len))
            .map_err(call_error)?;
        let (out_ptr, out_len) = ((packed >> 32) as u32, packed as u32);
        let mut out = vec![0u8; out_len as usize];
        e.memory
            .read(&self.store, out_ptr as usize, &mut out)
            .map_err(|err| WasmError::Call {
                op,
                message: err.to_string(),
            })?;
        e.free
            .call(&mut self.store, (out_ptr, out_len))
            .map_err(call_error)?;
        let value: Value = serde_json::from_slice(&out).map_err(|err| WasmError::Call {
            op,
            message: err.to_string(),
        })?;
        if let Some(message) = value.get("error").and_then(Value::as_str) {
            return Err(WasmError::Refused {
                op,
                message: message.to_owned(),
            });
        }
        Ok(value)
    }
}

fn bad_answer(op: &'static str, out: &Value) -> WasmError {
    WasmError::Call {
        op,
        message: format!("unexpected answer: {out}"),
    }
}

impl Exports {
    fn bind(instance: &Instance, store: &mut Store<StoreLimits>) -> Result<Self, WasmError> {
        let memory = instance
            .get_memory(&mut *store, "memory")
            .ok_or_else(|| load_error("module exports no memory"))?;
        let op = |store: &mut Store<StoreLimits>, name: &str| {
            instance
                .get_typed_func::<(u32, u32), u64>(store, name)
                .map_err(load_error)
        };
        Ok(Exports {
            memory,
            alloc: instance
                .get_typed_func::<u32, u32>(&mut *store, "tollgate_alloc")
                .map_err(load_error)?,
            free: instance
                .get_typed_func::<(u32, u32), ()>(&mut *store, "tollgate_free")
                .map_err(load_error)?,
            init: op(store, "tollgate_init")?,
            set_keys: op(store, "tollgate_set_keys")?,
            set_secrets: op(store, "tollgate_set_secrets")?,
            decide: op(store, "tollgate_decide")?,
            resolve: op(store, "tollgate_resolve")?,
        })
    }
}
