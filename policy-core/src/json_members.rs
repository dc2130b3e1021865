//! Does a JSON document repeat a member in one object? JSON parsers disagree on which
//! copy wins (serde_json keeps the last, others the first or refuse), so a token whose
//! header or claims repeat one could mean one thing to its issuer and another here.

use alloc::{borrow::Cow, collections::BTreeSet};
use core::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// `Some(true)` when some object in `json` (at any depth) repeats a member name, compared
/// after unescaping; `None` when `json` is not a JSON document.
pub(crate) fn repeats_a_member(json: &[u8]) -> Option<bool> {
    serde_json::from_slice::<Members>(json)
        .ok()
        .map(|m| m.repeated)
}

struct Members {
    repeated: bool,
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut seen: BTreeSet<Cow<'de, str>> = BTreeSet::new();
        let mut repeated = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            repeated |= !seen.insert(key);
            repeated |= map.next_value::<Members>()?.repeated;
        }
        Ok(Members { repeated })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Members, A::Error> {
        let mut repeated = false;
        while let Some(item) = seq.next_element::<Members>()? {
            repeated |= item.repeated;
        }
        Ok(Members { repeated })
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Members, E> {
        Ok(Members { repeated: false })
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Members, E> {
        Ok(Members { repeated: false })
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Members, E> {
        Ok(Members { repeated: false })
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Members, E> {
        Ok(Members { repeated: false })
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Members, E> {
        Ok(Members { repeated: false })
    }
    fn visit_unit<E: de::Error>(self) -> Result<Members, E> {
        Ok(Members { repeated: false })
    }
}

#[cfg(test)]
mod tests {
    use super::repeats_a_member;

    #[test]
    fn repeats_are_found_at_any_depth_and_after_unescaping() {
        assert_eq!(repeats_a_member(br#"{"sub":"a","aud":"b"}"#), Some(false));
        assert_eq!(repeats_a_member(br#"{"sub":"a","sub":"b"}"#), Some(true));
        assert_eq!(
            repeats_a_member(br#"{"sub":"a","su\u0062":"b"}"#),
            Some(true)
        );
        assert_eq!(repeats_a_member(br#"{"x":[{"k":1,"k":2}]}"#), Some(true));
        assert_eq!(
            repeats_a_member(br#"{"x":{"k":1},"y":{"k":2}}"#),
            Some(false)
        );
        assert_eq!(repeats_a_member(b"{\"a\":"), None);
    }
}
