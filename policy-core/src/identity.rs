use alloc::{collections::BTreeMap, string::String, vec::Vec};
use serde::Serialize;

use crate::keys::Algorithm;

/// A caller whose credential was verified. Only [`crate::jwt`], [`crate::apikey`] and
/// [`crate::sso`] (a session cookie the edge signed) make these, so holding one means
/// verification happened.
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Gogs user name, lowercased (Gogs names are case-insensitive).
    pub user: String,
    pub groups: Vec<String>,
    #[serde(flatten)]
    pub via: Via,
}

/// How the identity was established.
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Via {
    Jwt {
        issuer: String,
        alg: Algorithm,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        kid: Option<String>,
        /// The `[[binding]]` that made the identity, when one did (not the user claim).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        binding: Option<String>,
        /// The issuer's `audit_claims` as the token carried them, so a CI request can be
        /// traced to its pipeline.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        #[cfg_attr(feature = "ts", ts(as = "Option<BTreeMap<String, String>>", optional))]
        claims: BTreeMap<String, String>,
    },
    ApiKey {
        key: String,
    },
    /// A browser session the edge signed (`[sso]`), made from an ID token of `issuer`.
    Session {
        issuer: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        binding: Option<String>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        #[cfg_attr(feature = "ts", ts(as = "Option<BTreeMap<String, String>>", optional))]
        claims: BTreeMap<String, String>,
    },
}

impl Via {
    /// The `[[issuer]]` whose token established the identity, directly or through a session.
    pub fn issuer(&self) -> Option<&str> {
        match self {
            Via::Jwt { issuer, .. } | Via::Session { issuer, .. } => Some(issuer),
            Via::ApiKey { .. } => None,
        }
    }

    /// The `[[binding]]` that made the identity, when one did.
    pub fn binding(&self) -> Option<&str> {
        match self {
            Via::Jwt { binding, .. } | Via::Session { binding, .. } => binding.as_deref(),
            Via::ApiKey { .. } => None,
        }
    }
}

/// Longest user or group name taken from a token.
pub(crate) const MAX_NAME_LEN: usize = 64;
/// Most groups taken from one token; more is refused rather than truncated.
pub(crate) const MAX_GROUPS: usize = 256;

/// A Gogs user name: it reaches the origin in headers, so nothing else may pass.
pub(crate) fn valid_user(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name != "."
        && name != ".."
}
