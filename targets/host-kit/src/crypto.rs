//! ring as the core's [`CryptoProvider`], for native hosts: RSA verification several times
//! faster than RustCrypto's. Same answers; the conformance corpus runs against both.

use policy_core::{CryptoProvider, P256Key, RsaKey, RsaScheme};
use ring::signature::{
    RsaPublicKeyComponents, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256,
    RSA_PSS_2048_8192_SHA256,
};

#[derive(Clone, Copy, Debug, Default)]
pub struct Ring;

/// The provider to hand [`policy_core::Engine::with_crypto`].
pub static RING: Ring = Ring;

impl CryptoProvider for Ring {
    fn verify_rsa(
        &self,
        scheme: RsaScheme,
        key: RsaKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let params = match scheme {
            RsaScheme::Pkcs1Sha256 => &RSA_PKCS1_2048_8192_SHA256,
            RsaScheme::PssSha256 => &RSA_PSS_2048_8192_SHA256,
        };
        let components = RsaPublicKeyComponents {
            n: key.modulus(),
            e: key.exponent(),
        };
        components.verify(params, message, signature).is_ok()
    }

    fn verify_es256(&self, key: P256Key<'_>, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.sec1_uncompressed())
            .verify(message, signature)
            .is_ok()
    }
}
