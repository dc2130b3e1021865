//! One instance of the module with a policy loaded.

use std::collections::BTreeMap;

use policy_core::abi::{
    self, Answer, CompleteSignIn, Decide, Init, Loaded, SetKeys, SetSecrets, WireDecision,
    WireRequest, WireTokenResponse, WireVerdict, ABI_VERSION,
};
use policy_core::{Decision, RequestFacts, TokenResponse, UnixTime, Verdict};
use serde::{de::DeserializeOwned, Serialize};
use wasmtime::{Instance, Memory, Store, StoreLimits, StoreLimitsBuilder, TypedFunc};

use crate::error::{load_error, WasmError};
use crate::module::CompiledModule;

/// Linear memory the module may grow to.
const MEMORY_LIMIT: usize = 64 << 20;

struct Exports {
    memory: Memory,
    input: TypedFunc<u32, u32>,
    init: TypedFunc<u32, u64>,
    set_keys: TypedFunc<u32, u64>,
    set_secrets: TypedFunc<u32, u64>,
    decide: TypedFunc<u32, u64>,
    complete_sign_in: TypedFunc<u32, u64>,
}

/// One instance of the module with a policy loaded. Not shared between threads: give each
/// worker its own (instantiation is cheap once the module is compiled), or use a
/// [`crate::ModulePool`].
pub struct PolicyInstance {
    store: Store<StoreLimits>,
    exports: Exports,
    budget_ticks: u64,
    loaded: Loaded,
    /// Each call's input, encoded here before it is copied into the module.
    encoded: Vec<u8>,
}

impl std::fmt::Debug for PolicyInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyInstance")
            .field("loaded", &self.loaded)
            .finish_non_exhaustive()
    }
}

impl PolicyInstance {
    /// Instantiates the module, checks its interface version and loads `policy` (TOML);
    /// `file` labels its errors.
    pub fn new(module: &CompiledModule, policy: &str, file: &str) -> Result<Self, WasmError> {
        let limits = StoreLimitsBuilder::new().memory_size(MEMORY_LIMIT).build();
        let mut store = Store::new(&module.engine, limits);
        store.limiter(|limits| limits);
        store.set_epoch_deadline(module.budget_ticks);
        let instance = Instance::new(&mut store, &module.module, &[]).map_err(load_error)?;
        let version = instance
            .get_typed_func::<(), u32>(&mut store, "tollgate_abi_version")
            .and_then(|f| f.call(&mut store, ()))
            .map_err(|e| load_error(format!("no interface version: {e}")))?;
        if version != ABI_VERSION {
            return Err(load_error(format!(
                "the module speaks interface version {version}; this host speaks {ABI_VERSION}: rebuild one of them"
            )));
        }
        let exports = Exports::bind(&instance, &mut store)?;
        let mut this = PolicyInstance {
            store,
            exports,
            budget_ticks: module.budget_ticks,
            loaded: Loaded::default(),
            encoded: Vec::new(),
        };
        this.loaded = this.call("init", &Init { policy, file })?;
        Ok(this)
    }

    /// Issuers whose keys the host must fetch: `(issuer name, JWKS URL)`.
    pub fn jwks_urls(&self) -> &[(String, String)] {
        &self.loaded.jwks_urls
    }

    /// The policy's reverse-proxy user header (`origin.user_header`, lowercase).
    pub fn user_header(&self) -> &str {
        &self.loaded.user_header
    }

    /// Whether requests must carry the host's random bytes (a policy with `[sso]`).
    pub fn wants_entropy(&self) -> bool {
        self.loaded.wants_entropy
    }

    /// Hands the module an issuer's JWKS; `None` makes it forget them (stale keys).
    pub fn set_keys(&mut self, issuer: &str, jwks: Option<&str>) -> Result<(), WasmError> {
        self.call::<_, usize>("set_keys", &SetKeys { issuer, jwks })
            .map(drop)
    }

    pub fn set_secrets(&mut self, secrets: &BTreeMap<String, String>) -> Result<(), WasmError> {
        let secrets = secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.call::<_, usize>(
            "set_secrets",
            &SetSecrets {
                secrets,
                placeholder: false,
            },
        )
        .map(drop)
    }

    /// For policy tests: every secret name resolves to a stand-in value.
    pub fn use_placeholder_secrets(&mut self) -> Result<(), WasmError> {
        self.call::<_, usize>(
            "set_secrets",
            &SetSecrets {
                secrets: Vec::new(),
                placeholder: true,
            },
        )
        .map(drop)
    }

    /// Decides one request: the same typed verdict as `Engine::decide_cached` (the module
    /// keeps its own verified-token cache).
    pub fn decide(
        &mut self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        explain: bool,
    ) -> Result<Verdict, WasmError> {
        let input = Decide {
            request: WireRequest::from_facts(facts),
            now_nanos: now.as_nanos(),
            explain,
        };
        let wire: WireVerdict = self.call("decide", &input)?;
        Verdict::try_from(wire).map_err(|e| WasmError::Call {
            op: "decide",
            message: e.0,
        })
    }

    /// Completes a browser sign-in with the provider's answer to its token request: the
    /// same decision as `Engine::complete_sign_in`.
    pub fn complete_sign_in(
        &mut self,
        facts: &RequestFacts<'_>,
        response: TokenResponse<'_>,
        now: UnixTime,
        explain: bool,
    ) -> Result<Decision, WasmError> {
        let input = CompleteSignIn {
            request: WireRequest::from_facts(facts),
            now_nanos: now.as_nanos(),
            response: WireTokenResponse::from_response(response),
            explain,
        };
        let wire: WireDecision = self.call("complete_sign_in", &input)?;
        Decision::try_from(wire).map_err(|e| WasmError::Call {
            op: "complete_sign_in",
            message: e.0,
        })
    }

    fn call<I: Serialize, O: DeserializeOwned>(
        &mut self,
        op: &'static str,
        input: &I,
    ) -> Result<O, WasmError> {
        let fail = |message: String| WasmError::Call { op, message };
        abi::encode_into(input, &mut self.encoded);
        let len = u32::try_from(self.encoded.len()).map_err(|_| fail("input too large".into()))?;
        // Every call starts with the whole budget.
        self.store.set_epoch_deadline(self.budget_ticks);
        let e = &self.exports;
        let trap = |err: wasmtime::Error| WasmError::Call {
            op,
            message: format!("{err:#}"),
        };
        let at = e.input.call(&mut self.store, len).map_err(trap)?;
        e.memory
            .write(&mut self.store, at as usize, &self.encoded)
            .map_err(|err| fail(err.to_string()))?;
        let func = match op {
            "init" => &e.init,
            "set_keys" => &e.set_keys,
            "set_secrets" => &e.set_secrets,
            "complete_sign_in" => &e.complete_sign_in,
            _ => &e.decide,
        };
        let packed = func.call(&mut self.store, len).map_err(trap)?;
        let (out_ptr, out_len) = ((packed >> 32) as usize, packed as u32 as usize);
        // Decoded where the module left it: the answer owns everything it keeps.
        let out = out_ptr
            .checked_add(out_len)
            .and_then(|end| e.memory.data(&self.store).get(out_ptr..end))
            .ok_or_else(|| fail(format!("answer at {out_ptr}+{out_len} is outside memory")))?;
        match abi::decode::<Answer<O>>(out).map_err(|err| fail(err.0))? {
            Ok(value) => Ok(value),
            Err(message) => Err(WasmError::Refused { op, message }),
        }
    }
}

impl Exports {
    fn bind(instance: &Instance, store: &mut Store<StoreLimits>) -> Result<Self, WasmError> {
        let memory = instance
            .get_memory(&mut *store, "memory")
            .ok_or_else(|| load_error("module exports no memory"))?;
        let op = |store: &mut Store<StoreLimits>, name: &str| {
            instance
                .get_typed_func::<u32, u64>(store, name)
                .map_err(load_error)
        };
        Ok(Exports {
            memory,
            input: instance
                .get_typed_func::<u32, u32>(&mut *store, "tollgate_input")
                .map_err(load_error)?,
            init: op(store, "tollgate_init")?,
            set_keys: op(store, "tollgate_set_keys")?,
            set_secrets: op(store, "tollgate_set_secrets")?,
            decide: op(store, "tollgate_decide")?,
            complete_sign_in: op(store, "tollgate_complete_sign_in")?,
        })
    }
}
