//! The access a Git LFS batch request needs, read from its body the way Gogs reads it:
//! jsoniter matches field names case-insensitively and keeps the last of duplicate keys
//! (internal/route/lfs/batch.go). The edge reads every `operation` key instead and
//! grants download access only when they all say `download`.

use alloc::{borrow::Cow, vec::Vec};
use core::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use crate::access::Access;

/// Largest LFS batch body the engine reads; larger ones count as uploads.
pub(crate) const BODY_LIMIT: usize = 1 << 20;

/// A batch body needing the least access there is (a download): what a request is
/// decided with before its real body is read (`Engine::refusal_before_body`).
pub(crate) const LEAST_ACCESS_BODY: &[u8] = br#"{"operation":"download"}"#;

/// `Read` for a batch that can only be a download; `Write` for anything else: an upload,
/// a missing, oversized or malformed body, no `operation`, two that disagree, or a key
/// that is not plain ASCII (Go folds some non-ASCII letters into ASCII ones).
pub(crate) fn access(body: Option<&[u8]>) -> Access {
    let Some(body) = body.filter(|b| b.len() <= BODY_LIMIT) else {
        return Access::Write;
    };
    match serde_json::from_slice::<Operations>(body) {
        Ok(ops)
            if !ops.unclear
                && !ops.values.is_empty()
                && ops.values.iter().all(|v| v.as_deref() == Some("download")) =>
        {
            Access::Read
        }
        _ => Access::Write,
    }
}

/// Every top-level `operation` value, in order (`None` for a non-string value).
struct Operations {
    values: Vec<Option<alloc::string::String>>,
    unclear: bool,
}

impl<'de> Deserialize<'de> for Operations {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(OperationsVisitor)
    }
}

struct OperationsVisitor;

impl<'de> Visitor<'de> for OperationsVisitor {
    type Value = Operations;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an LFS batch request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Operations, A::Error> {
        let mut ops = Operations {
            values: Vec::new(),
            unclear: false,
        };
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if !key.is_ascii() {
                ops.unclear = true;
            }
            if key.eq_ignore_ascii_case("operation") {
                let value = map.next_value::<serde_json::Value>()?;
                ops.values
                    .push(value.as_str().map(alloc::string::String::from));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(ops)
    }
}
