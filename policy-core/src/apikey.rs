//! API keys: the policy stores only their SHA-256, compared in constant time.

use alloc::{string::String, vec::Vec};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

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
        if bool::from(digests_equal(&key.sha256, &digest)) && found.is_none() {
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

/// Compares two digests in constant time, a 64-bit word at a time: `subtle` guards each
/// comparison with an optimization barrier, which in WASM is a call per byte compared.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> Choice {
    let word = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().unwrap_or_default());
    a.chunks_exact(8)
        .zip(b.chunks_exact(8))
        .fold(Choice::from(1), |equal, (x, y)| {
            equal & word(x).ct_eq(&word(y))
        })
}

/// The lowercase hex SHA-256 of an API key, as the policy's `sha256` field wants it.
pub fn api_key_hash_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_differing_in_any_byte_are_unequal() {
        let a: [u8; 32] = Sha256::digest(b"key").into();
        assert!(bool::from(digests_equal(&a, &a)));
        for position in [0, 7, 8, 15, 16, 31] {
            let mut b = a;
            if let Some(byte) = b.get_mut(position) {
                *byte ^= 1;
            }
            assert!(!bool::from(digests_equal(&a, &b)), "byte {position}");
        }
    }
}
