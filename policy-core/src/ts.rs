//! TypeScript declarations (feature `ts`) for what the engine's JSON holds that no derive
//! can see: a [`Reason`] serializes as its code, so its type is the union of every code.

use alloc::{format, string::String, vec::Vec};

use ts_rs::{Config, TS};

use crate::Reason;

impl TS for Reason {
    type WithoutGenerics = Self;
    type OptionInnerType = Self;

    fn docs() -> Option<String> {
        Some(String::from(
            "/**\n * Why a request was decided as it was: a stable code for audit logs and metrics.\n */",
        ))
    }

    fn name(_: &Config) -> String {
        String::from("Reason")
    }

    fn inline(_: &Config) -> String {
        let codes: Vec<String> = Reason::all().map(|r| format!("\"{}\"", r.code())).collect();
        codes.join(" | ")
    }

    fn decl(cfg: &Config) -> String {
        format!("type Reason = {};", Self::inline(cfg))
    }

    fn decl_concrete(cfg: &Config) -> String {
        Self::decl(cfg)
    }
}
