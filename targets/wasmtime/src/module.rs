//! A compiled module and the clock that bounds its calls.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmtime::{Config, Engine, Module};

use crate::error::{load_error, WasmError};

/// Where `cargo build -p tollgate-wasm-module --target wasm32-unknown-unknown --profile
/// wasm-speed` leaves the module, relative to the workspace root: the build wasmtime
/// hosts run.
pub const DEFAULT_MODULE_PATH: &str =
    "target/wasm32-unknown-unknown/wasm-speed/tollgate_policy.wasm";
/// The same module built for size (`--profile wasm-size`), as edge bundles are.
pub const SIZE_MODULE_PATH: &str = "target/wasm32-unknown-unknown/wasm-size/tollgate_policy.wasm";

/// How often the epoch advances: the granularity of a call's time budget.
const TICK: Duration = Duration::from_millis(10);
/// A call's time budget: far above what a decision needs (well under a millisecond, a few
/// with RSA in a cold instance), low enough to stop a runaway call quickly.
const DEFAULT_BUDGET: Duration = Duration::from_secs(1);

/// A compiled module, shareable between instances (compile once, instantiate per worker).
#[derive(Clone)]
pub struct CompiledModule {
    pub(crate) engine: Engine,
    pub(crate) module: Module,
    /// Epoch ticks a call may run for.
    pub(crate) budget_ticks: u64,
}

impl std::fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModule")
            .field("budget_ticks", &self.budget_ticks)
            .finish_non_exhaustive()
    }
}

impl CompiledModule {
    pub fn from_file(path: &Path) -> Result<Self, WasmError> {
        let bytes = std::fs::read(path).map_err(|e| WasmError::Load {
            message: format!(
                "{}: {e} (build it with `cargo build -p tollgate-wasm-module --target wasm32-unknown-unknown --profile wasm-speed`)",
                path.display()
            ),
        })?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WasmError> {
        // Epoch interruption: a check at function entries and loop back-edges against a
        // counter another thread advances, cheaper than fuel's per-block accounting.
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(load_error)?;
        let module = Module::new(&engine, bytes).map_err(load_error)?;
        start_ticker(&engine)?;
        Ok(CompiledModule {
            engine,
            module,
            budget_ticks: ticks(DEFAULT_BUDGET),
        })
    }

    /// The module at `path`, or at [`DEFAULT_MODULE_PATH`] under `workspace_root`.
    pub fn locate(path: Option<&Path>, workspace_root: &Path) -> Result<Self, WasmError> {
        let path: PathBuf = path.map_or_else(
            || workspace_root.join(DEFAULT_MODULE_PATH),
            Path::to_path_buf,
        );
        Self::from_file(&path)
    }

    /// The same module with another time budget per call (rounded up to the tick).
    pub fn with_call_budget(mut self, budget: Duration) -> Self {
        self.budget_ticks = ticks(budget);
        self
    }
}

fn ticks(budget: Duration) -> u64 {
    u64::try_from(budget.as_nanos().div_ceil(TICK.as_nanos())).unwrap_or(u64::MAX)
}

/// Advances the engine's epoch every tick for as long as the engine lives. Without it no
/// deadline would ever pass, so failing to start it fails the load.
fn start_ticker(engine: &Engine) -> Result<(), WasmError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("tollgate-wasm-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        })
        .map(drop)
        .map_err(|e| load_error(format!("epoch ticker: {e}")))
}
