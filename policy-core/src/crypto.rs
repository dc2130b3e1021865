//! Where signature math comes from. The engine checks tokens through jwt-compact's
//! validators either way; a [`CryptoProvider`] only supplies the public-key verification
//! behind them, as rustls' `CryptoProvider` does. [`RustCrypto`] (pure Rust, no
//! platform code) is the default and the only choice for WASM targets; native hosts plug in
//! a faster one with [`crate::Engine::with_crypto`]. Every provider must give the same
//! answers: the conformance corpus runs against each.

use alloc::borrow::Cow;
use alloc::vec::Vec;
use core::fmt;

use jwt_compact::alg::{Es256, Rsa, RsaPublicKey};
use jwt_compact::{Algorithm as JwtAlgorithm, AlgorithmSignature};
use rsa::traits::PublicKeyParts;

/// An RSA signature scheme a JWT can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsaScheme {
    /// RS256: RSASSA-PKCS1-v1_5 with SHA-256.
    Pkcs1Sha256,
    /// PS256: RSASSA-PSS with SHA-256, MGF1-SHA-256, 32-byte salt.
    PssSha256,
}

/// Public-key signature verification for RS256, PS256 and ES256. HS256 and EdDSA stay
/// in the core: HMAC is cheap, and EdDSA is verified strictly by the core's own rules.
pub trait CryptoProvider: fmt::Debug + Send + Sync {
    /// Does `signature` over `message` verify with the RSA `key` (at least 2048 bits, as
    /// the core accepts them)?
    fn verify_rsa(
        &self,
        scheme: RsaScheme,
        key: RsaKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> bool;

    /// Does the 64-byte `r || s` `signature` over `message` verify with the P-256 `key`?
    fn verify_es256(&self, key: P256Key<'_>, message: &[u8], signature: &[u8]) -> bool;
}

/// An RSA public key from a policy or JWKS, as a provider reads it.
#[derive(Clone, Copy, Debug)]
pub struct RsaKey<'k>(&'k RsaPublicKey);

impl RsaKey<'_> {
    /// The modulus, big-endian.
    pub fn modulus(&self) -> Vec<u8> {
        self.0.n().to_bytes_be()
    }

    /// The public exponent, big-endian.
    pub fn exponent(&self) -> Vec<u8> {
        self.0.e().to_bytes_be()
    }
}

/// A P-256 public key from a policy or JWKS, as a provider reads it.
#[derive(Clone, Copy, Debug)]
pub struct P256Key<'k>(&'k p256::ecdsa::VerifyingKey);

impl P256Key<'_> {
    /// The SEC1 uncompressed point (65 bytes: `0x04 || x || y`).
    pub fn sec1_uncompressed(&self) -> Vec<u8> {
        self.0.to_encoded_point(false).as_bytes().to_vec()
    }
}

/// The pure-Rust provider: the `rsa` and `p256` crates through jwt-compact.
#[derive(Clone, Copy, Debug, Default)]
pub struct RustCrypto;

impl CryptoProvider for RustCrypto {
    fn verify_rsa(
        &self,
        scheme: RsaScheme,
        key: RsaKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let alg = match scheme {
            RsaScheme::Pkcs1Sha256 => Rsa::rs256(),
            RsaScheme::PssSha256 => Rsa::ps256(),
        };
        let Ok(signature) = <Rsa as JwtAlgorithm>::Signature::try_from_slice(signature) else {
            return false;
        };
        alg.verify_signature(&signature, key.0, message)
    }

    fn verify_es256(&self, key: P256Key<'_>, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = <Es256 as JwtAlgorithm>::Signature::try_from_slice(signature) else {
            return false;
        };
        Es256.verify_signature(&signature, key.0, message)
    }
}

/// A signature as the token carries it, for the provider to read.
#[derive(Debug)]
pub(crate) struct RawSignature(Vec<u8>);

impl AlgorithmSignature for RawSignature {
    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Ok(RawSignature(slice.to_vec()))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0)
    }
}

/// RS256 or PS256 for jwt-compact's validator, verified by a provider.
#[derive(Debug)]
pub(crate) struct ProvidedRsa<'p> {
    pub scheme: RsaScheme,
    pub provider: &'p dyn CryptoProvider,
}

impl JwtAlgorithm for ProvidedRsa<'_> {
    type SigningKey = ();
    type VerifyingKey = RsaPublicKey;
    type Signature = RawSignature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self.scheme {
            RsaScheme::Pkcs1Sha256 => "RS256",
            RsaScheme::PssSha256 => "PS256",
        })
    }

    fn sign(&self, _: &(), _: &[u8]) -> RawSignature {
        // Never called: the core only verifies. An empty signature verifies nothing.
        RawSignature(Vec::new())
    }

    fn verify_signature(
        &self,
        signature: &RawSignature,
        key: &RsaPublicKey,
        message: &[u8],
    ) -> bool {
        self.provider
            .verify_rsa(self.scheme, RsaKey(key), message, &signature.0)
    }
}

/// ES256 for jwt-compact's validator, verified by a provider.
#[derive(Debug)]
pub(crate) struct ProvidedEs256<'p> {
    pub provider: &'p dyn CryptoProvider,
}

impl JwtAlgorithm for ProvidedEs256<'_> {
    type SigningKey = ();
    type VerifyingKey = p256::ecdsa::VerifyingKey;
    type Signature = RawSignature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("ES256")
    }

    fn sign(&self, _: &(), _: &[u8]) -> RawSignature {
        RawSignature(Vec::new())
    }

    fn verify_signature(
        &self,
        signature: &RawSignature,
        key: &p256::ecdsa::VerifyingKey,
        message: &[u8],
    ) -> bool {
        self.provider
            .verify_es256(P256Key(key), message, &signature.0)
    }
}
