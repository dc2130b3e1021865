//! policy-core as a WASM module (`wasm32-unknown-unknown`, no imports).
//!
//! The interface is typed and versioned (`policy_core::abi`): the host reads
//! `tollgate_abi_version`, then calls the exports below with a postcard-encoded value in
//! the module's memory and gets one back (see [`exports`] for the memory protocol). The
//! module keeps the compiled policy, the key sets, the origin secrets and a cache of the
//! tokens it verified between calls; the host supplies time and requests, and resolves rate
//! limits itself from the typed pending verdict. One instance serves one request at a time.
//!
//! | export | input | answer (`Result<_, String>`) |
//! | --- | --- | --- |
//! | `tollgate_abi_version` | – | `u32` (the return value itself) |
//! | `tollgate_input` | `len` | where the host writes `len` input bytes (the return value) |
//! | `tollgate_init` | `abi::Init` (policy TOML, file name) | `abi::Loaded` (JWKS URLs, user header) |
//! | `tollgate_set_keys` | `abi::SetKeys` (issuer, JWKS or none) | key count |
//! | `tollgate_set_secrets` | `abi::SetSecrets` | secret count |
//! | `tollgate_decide` | `abi::Decide` (request, time, explain) | `abi::WireVerdict`: the decision, or an allow pending a rate limit |
//! | `tollgate_complete_sign_in` | `abi::CompleteSignIn` (callback, provider's answer) | `abi::WireDecision` |
//!
//! An `Err` answer (a bad policy, a malformed input) is a denial to every host. The
//! operations themselves are `policy_core::abi::Module`; this crate only exports them.

mod exports;
