//! API keys: the policy stores only their SHA-256, compared in constant time.

use alloc::{string::String, vec::Vec};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::identity::{Identity, Via};

#[derive(Clone, Debug)]
pub(crate) struct ApiKey {
    pub(crate) name: String,
    pub(crate) sha256: [u8; 32],
    pub(crate) user: String,
    pub(crate) groups: Vec<String>,
}

/// Finds the key whose hash matches `presented`. Every stored hash is compared, so the
/// time taken does not depend on which key (if any) matched.
pub(crate) fn lookup(keys: &[ApiKey], presented: &str) -> Option<Identity> {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    for key in keys {
        if bool::from(key.sha256.ct_eq(&digest)) && found.is_none() {
            found = Some(key);
        }
    }
    found.map(|key| Identity {
        user: key.user.clone(),
        groups: key.groups.clone(),
        via: Via::ApiKey {
            key: key.name.clone(),
        },
    })
}

/// The lowercase hex SHA-256 of an API key, as the policy's `sha256` field wants it.
pub fn api_key_hash_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}
