//! Runs the Tollgate policy module (`targets/wasm-module`) under wasmtime.
//!
//! The host side of the module's typed interface (`policy_core::abi`): values are encoded
//! into the module's memory, an export is called, and the answer is decoded into the same
//! typed [`policy_core::Verdict`] the engine gives when linked natively. Each call has a
//! time budget enforced by epoch interruption, and the store a memory cap, so a runaway or
//! trapping module turns into an error, which hosts treat as a denial.

mod error;
mod instance;
mod module;
mod pool;

pub use error::WasmError;
pub use instance::PolicyInstance;
pub use module::{CompiledModule, DEFAULT_MODULE_PATH, SIZE_MODULE_PATH};
pub use pool::ModulePool;
