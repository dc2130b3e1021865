//! Instances of one module with one policy, one per request in flight, reused afterwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use policy_core::{Decision, KeysGeneration, RequestFacts, TokenResponse, UnixTime, Verdict};
use tollgate_host_kit::{DecideFailure, Decider, KeyRing};

use crate::error::WasmError;
use crate::instance::PolicyInstance;
use crate::module::CompiledModule;

/// An instance and the key documents it holds: by issuer, the serial of each, and the
/// generation of the key ring they were taken from (`None`: never synced).
#[derive(Debug)]
struct Slot {
    instance: PolicyInstance,
    keys: HashMap<String, u64>,
    generation: Option<KeysGeneration>,
}

#[derive(Debug)]
pub struct ModulePool {
    module: CompiledModule,
    policy: String,
    file: String,
    secrets: Option<BTreeMap<String, String>>,
    idle: Mutex<Vec<Slot>>,
    jwks_urls: Vec<(String, String)>,
    user_header: String,
    wants_entropy: bool,
}

impl ModulePool {
    /// A pool for `policy` (its errors labelled with `file`). `secrets: None` gives every
    /// secret name a stand-in value (policy tests). One instance is made now, so a bad
    /// module or policy fails at start, not per request.
    pub fn new(
        module: CompiledModule,
        policy: String,
        file: String,
        secrets: Option<BTreeMap<String, String>>,
    ) -> Result<Self, WasmError> {
        let mut pool = ModulePool {
            module,
            policy,
            file,
            secrets,
            idle: Mutex::new(Vec::new()),
            jwks_urls: Vec::new(),
            user_header: String::new(),
            wants_entropy: false,
        };
        let slot = pool.instantiate()?;
        pool.jwks_urls = slot.instance.jwks_urls().to_vec();
        pool.user_header = slot.instance.user_header().to_owned();
        pool.wants_entropy = slot.instance.wants_entropy();
        pool.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot);
        Ok(pool)
    }

    /// Issuers whose keys the host must fetch: `(issuer name, JWKS URL)`.
    pub fn jwks_urls(&self) -> &[(String, String)] {
        &self.jwks_urls
    }

    /// The policy's reverse-proxy user header (lowercase).
    pub fn user_header(&self) -> &str {
        &self.user_header
    }

    fn instantiate(&self) -> Result<Slot, WasmError> {
        let mut instance = PolicyInstance::new(&self.module, &self.policy, &self.file)?;
        match &self.secrets {
            Some(secrets) => instance.set_secrets(secrets)?,
            None => instance.use_placeholder_secrets()?,
        }
        Ok(Slot {
            instance,
            keys: HashMap::new(),
            generation: None,
        })
    }

    /// Decides in an idle instance (or a new one), after bringing its keys up to date with
    /// the ring's usable keys (only when they changed since the instance last saw them).
    /// An instance that failed is dropped, never reused.
    pub fn decide(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        explain: bool,
        keys: &KeyRing,
    ) -> Result<Verdict, WasmError> {
        self.with_instance(now, keys, |instance| instance.decide(facts, now, explain))
    }

    /// Completes a browser sign-in in an idle instance, as [`ModulePool::decide`] decides.
    pub fn complete_sign_in(
        &self,
        facts: &RequestFacts<'_>,
        response: TokenResponse<'_>,
        now: UnixTime,
        explain: bool,
        keys: &KeyRing,
    ) -> Result<Decision, WasmError> {
        self.with_instance(now, keys, |instance| {
            instance.complete_sign_in(facts, response, now, explain)
        })
    }

    fn with_instance<T>(
        &self,
        now: UnixTime,
        keys: &KeyRing,
        call: impl FnOnce(&mut PolicyInstance) -> Result<T, WasmError>,
    ) -> Result<T, WasmError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut slot = match pooled {
            Some(slot) => slot,
            None => self.instantiate()?,
        };
        let generation = keys.generation(now);
        if slot.generation != Some(generation) {
            let (documents, generation) = keys.documents(now);
            Self::sync_keys(&mut slot, &documents)?;
            slot.generation = Some(generation);
        }
        let answer = call(&mut slot.instance)?;
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot);
        Ok(answer)
    }

    fn sync_keys(slot: &mut Slot, keys: &[(String, u64, Arc<str>)]) -> Result<(), WasmError> {
        for (issuer, serial, document) in keys {
            if slot.keys.get(issuer) != Some(serial) {
                slot.instance.set_keys(issuer, Some(document))?;
                slot.keys.insert(issuer.clone(), *serial);
            }
        }
        let gone: Vec<String> = slot
            .keys
            .keys()
            .filter(|issuer| !keys.iter().any(|(i, _, _)| i == *issuer))
            .cloned()
            .collect();
        for issuer in gone {
            slot.instance.set_keys(&issuer, None)?;
            slot.keys.remove(&issuer);
        }
        Ok(())
    }
}

impl Decider for ModulePool {
    fn decide(
        &self,
        facts: &RequestFacts<'_>,
        now: UnixTime,
        keys: &KeyRing,
        explain: bool,
    ) -> Result<Verdict, DecideFailure> {
        ModulePool::decide(self, facts, now, explain, keys)
            .map_err(|e| DecideFailure(e.to_string()))
    }

    fn complete_sign_in(
        &self,
        facts: &RequestFacts<'_>,
        response: TokenResponse<'_>,
        now: UnixTime,
        keys: &KeyRing,
        explain: bool,
    ) -> Result<Decision, DecideFailure> {
        ModulePool::complete_sign_in(self, facts, response, now, explain, keys)
            .map_err(|e| DecideFailure(e.to_string()))
    }

    fn wants_entropy(&self) -> bool {
        self.wants_entropy
    }
}
