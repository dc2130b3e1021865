/// Why the module could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmError {
    /// Loading, compiling or instantiating the module, or a module of another ABI version.
    Load { message: String },
    /// A trap, the time budget running out, or an answer that does not decode.
    Call { op: &'static str, message: String },
    /// The module answered with an error (for `init`: the positioned policy error).
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

pub(crate) fn load_error(e: impl std::fmt::Display) -> WasmError {
    WasmError::Load {
        message: format!("{e:#}"),
    }
}
