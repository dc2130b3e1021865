//! policy-core as a WASM module (`wasm32-unknown-unknown`, no imports).
//!
//! The host calls exported functions with a JSON document in the module's memory and gets
//! a JSON document back (see [`abi`]). The module keeps the compiled policy, the key sets
//! and the origin secrets between calls; the host supplies time, requests and rate-limit
//! state. One instance serves one request at a time.
//!
//! | export | input | output |
//! | --- | --- | --- |
//! | `tollgate_init` | `{"policy": TOML, "file": NAME}` | `{"ok": {"jwks_urls": [[issuer, url]], "tests": N, "user_header": NAME}}` |
//! | `tollgate_set_keys` | `{"issuer": NAME, "jwks": JSON or null}` | `{"ok": {"keys": N}}` |
//! | `tollgate_set_secrets` | `{"secrets": {NAME: VALUE}, "placeholder": BOOL}` | `{"ok": {"secrets": N}}` |
//! | `tollgate_decide` | `{"request": REQUEST, "now_nanos": N, "explain": BOOL}` | `{"decision": D, "audit": A, "action": X}` or `{"pending": {"key": K, "limit": NAME, "requests": N, "period_seconds": S}}` |
//! | `tollgate_resolve` | `{"state": TAT or null}` | `{"decision": D, "audit": A, "action": X, "update": U or null}` |
//!
//! `D` is the decision exactly as `tollgate eval` prints it (secrets shown by name). `X`
//! is what a proxy acts on: `{"forward": {"strip": [..], "set": [[name, value]..]}}` with
//! the real origin header values, or `{"deny": {"content_type": .., "body": ..}}`.
//!
//! Every output may instead be `{"error": MESSAGE}`; hosts treat that as a denial.

mod abi;
mod ops;

pub use ops::{call, Op};
