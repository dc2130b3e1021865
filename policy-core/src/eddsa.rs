//! EdDSA verified with ed25519-dalek's `verify_strict`, which refuses signatures whose
//! `R` has small order and keys of small order: with those, `verify` (what jwt-compact's
//! own `Ed25519` calls) accepts signatures that prove nothing about who signed.

use alloc::borrow::Cow;
use ed25519_dalek::Signer;
use jwt_compact::Algorithm;

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StrictEd25519;

impl Algorithm for StrictEd25519 {
    type SigningKey = ed25519_dalek::SigningKey;
    type VerifyingKey = ed25519_dalek::VerifyingKey;
    type Signature = ed25519_dalek::Signature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("EdDSA")
    }

    fn sign(&self, signing_key: &Self::SigningKey, message: &[u8]) -> Self::Signature {
        signing_key.sign(message)
    }

    fn verify_signature(
        &self,
        signature: &Self::Signature,
        verifying_key: &Self::VerifyingKey,
        message: &[u8],
    ) -> bool {
        verifying_key.verify_strict(message, signature).is_ok()
    }
}
