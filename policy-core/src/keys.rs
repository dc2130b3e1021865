//! Verification keys: JWKS parsing, key selection and the [`KeyStore`] trait through which
//! hosts hand the engine keys they fetched from an issuer's JWKS URL.

use alloc::{borrow::ToOwned, format, string::String, vec::Vec};
use core::fmt;

use jwt_compact::alg::{Hs256Key, RsaPublicKey, StrongKey};
use jwt_compact::jwk::JsonWebKey;
use serde::{Deserialize, Serialize};

/// Signature algorithms the engine verifies. `none` is deliberately not representable.
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    HS256,
    RS256,
    PS256,
    ES256,
    EdDSA,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ];

    /// Exact, case-sensitive JOSE name, as RFC 7518 requires.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::RS256 => "RS256",
            Algorithm::PS256 => "PS256",
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Public key material, one variant per key family. Which algorithms a family may verify
/// is fixed here, so a token cannot choose to have an RSA public key used as an HMAC secret.
#[derive(Clone)]
pub(crate) enum VerifyingKey {
    Hmac(Hs256Key),
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl VerifyingKey {
    fn supports(&self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (VerifyingKey::Hmac(_), Algorithm::HS256)
                | (VerifyingKey::Rsa(_), Algorithm::RS256 | Algorithm::PS256)
                | (VerifyingKey::P256(_), Algorithm::ES256)
                | (VerifyingKey::Ed25519(_), Algorithm::EdDSA)
        )
    }

    const fn family(&self) -> &'static str {
        match self {
            VerifyingKey::Hmac(_) => "oct",
            VerifyingKey::Rsa(_) => "RSA",
            VerifyingKey::P256(_) => "EC P-256",
            VerifyingKey::Ed25519(_) => "OKP Ed25519",
        }
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key bytes: an HMAC key is a secret.
        write!(f, "VerifyingKey({})", self.family())
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Jwk {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: VerifyingKey,
}

/// A parsed JSON Web Key Set, holding only keys usable for signature verification.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
    skipped: usize,
}

/// Why a JWKS document was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySetError {
    /// Not JSON, or not an object with a `keys` array.
    Document { message: String },
    /// A key of a supported family whose parameters are wrong.
    Key {
        index: usize,
        kid: Option<String>,
        message: String,
    },
    /// An asymmetric key that carries private material.
    PrivateKey { index: usize, kid: Option<String> },
    /// A symmetric (`oct`) key in a JWKS fetched from a URL.
    FetchedSecret { index: usize, kid: Option<String> },
    /// No key in the set can verify any supported algorithm.
    NoUsableKeys { skipped: usize },
}

impl fmt::Display for KeySetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |index: &usize, kid: &Option<String>| match kid {
            Some(kid) => format!("key {index} (kid `{kid}`)"),
            None => format!("key {index}"),
        };
        match self {
            KeySetError::Document { message } => write!(f, "invalid JWKS: {message}"),
            KeySetError::Key { index, kid, message } => {
                write!(f, "invalid JWKS: {}: {message}", at(index, kid))
            }
            KeySetError::PrivateKey { index, kid } => write!(
                f,
                "invalid JWKS: {} contains private key material; publish only public keys",
                at(index, kid)
            ),
            KeySetError::FetchedSecret { index, kid } => write!(
                f,
                "invalid JWKS: {} is a symmetric (`oct`) key; an HMAC secret served at a URL is no secret, so fetched key sets may hold only public keys",
                at(index, kid)
            ),
            KeySetError::NoUsableKeys { skipped } => write!(
                f,
                "invalid JWKS: no usable signing key ({skipped} skipped: unsupported type, curve, algorithm or `use`)"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for KeySetError {}

/// Why no key could be chosen for a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyMiss {
    /// The token's `kid` is not in the set (hosts may refresh the JWKS and retry).
    UnknownKid,
    /// The `kid` names a key of another family or algorithm: algorithm confusion.
    AlgorithmMismatch,
    /// No `kid`, and not exactly one key fits the algorithm.
    Ambiguous,
}

#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct JwkMeta {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    d: Option<serde_json::Value>,
}

/// Smallest HMAC key accepted, per RFC 7518 §3.2 (the hash output size).
const MIN_HMAC_KEY_BYTES: usize = 32;

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`).
    ///
    /// Keys of families or curves Tollgate does not verify (P-384, X25519, ...), keys with
    /// `"use": "enc"` and keys declaring another `alg` are skipped, since identity providers
    /// routinely publish those next to their signing keys. A supported key with bad
    /// parameters, or with private material, refuses the whole set.
    pub fn from_json(json: &str) -> Result<KeySet, KeySetError> {
        Self::parse(json, false)
    }

    /// [`KeySet::from_json`] for a document fetched from an issuer's `jwks_url`: a
    /// symmetric key there refuses the whole set.
    pub fn from_fetched_json(json: &str) -> Result<KeySet, KeySetError> {
        Self::parse(json, true)
    }

    fn parse(json: &str, fetched: bool) -> Result<KeySet, KeySetError> {
        let doc: JwksDocument = serde_json::from_str(json).map_err(|e| KeySetError::Document {
            message: format!("{e}"),
        })?;
        let mut set = KeySet::default();
        for (index, value) in doc.keys.into_iter().enumerate() {
            match parse_key(index, value, fetched)? {
                Some(jwk) => set.keys.push(jwk),
                None => set.skipped += 1,
            }
        }
        if set.keys.is_empty() {
            return Err(KeySetError::NoUsableKeys {
                skipped: set.skipped,
            });
        }
        Ok(set)
    }

    /// How many keys were usable.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Merges another set into this one (the policy's inline keys plus fetched ones).
    pub fn extend(&mut self, other: KeySet) {
        self.keys.extend(other.keys);
        self.skipped += other.skipped;
    }

    pub(crate) fn select(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<&VerifyingKey, KeyMiss> {
        let fits = |jwk: &&Jwk| jwk.key.supports(alg) && jwk.alg.is_none_or(|a| a == alg);
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    return Err(KeyMiss::UnknownKid);
                }
                named
                    .find(fits)
                    .map(|k| &k.key)
                    .ok_or(KeyMiss::AlgorithmMismatch)
            }
            None => {
                let mut fitting = self.keys.iter().filter(fits);
                match (fitting.next(), fitting.next()) {
                    (Some(only), None) => Ok(&only.key),
                    (None, _) => Err(KeyMiss::UnknownKid),
                    (Some(_), Some(_)) => Err(KeyMiss::Ambiguous),
                }
            }
        }
    }
}

fn parse_key(
    index: usize,
    value: serde_json::Value,
    fetched: bool,
) -> Result<Option<Jwk>, KeySetError> {
    let meta: JwkMeta = serde_json::from_value(value.clone()).map_err(|e| KeySetError::Key {
        index,
        kid: None,
        message: format!("{e}"),
    })?;
    let kid = meta.kid.clone();
    let bad = |message: String| KeySetError::Key {
        index,
        kid: kid.clone(),
        message,
    };
    if meta.use_.as_deref().is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let alg = match meta.alg.as_deref() {
        None => None,
        Some(name) => match Algorithm::from_name(name) {
            Some(alg) => Some(alg),
            None => return Ok(None), // RS384, ES384, ...: not ours to verify.
        },
    };
    let supported = match (meta.kty.as_deref(), meta.crv.as_deref()) {
        (Some("oct" | "RSA"), _) | (Some("EC"), Some("P-256")) | (Some("OKP"), Some("Ed25519")) => {
            true
        }
        (Some(_), _) => false,
        (None, _) => return Err(bad("missing `kty`".to_owned())),
    };
    if !supported {
        return Ok(None);
    }
    if fetched && meta.kty.as_deref() == Some("oct") {
        return Err(KeySetError::FetchedSecret { index, kid });
    }
    if meta.d.is_some() && meta.kty.as_deref() != Some("oct") {
        return Err(KeySetError::PrivateKey { index, kid });
    }
    let jwk: JsonWebKey<'static> =
        serde_json::from_value(value).map_err(|e| bad(format!("{e}")))?;
    let key = match &jwk {
        JsonWebKey::Symmetric { secret } => {
            if secret.len() < MIN_HMAC_KEY_BYTES {
                return Err(bad(format!(
                    "HMAC key is {} bytes; at least {MIN_HMAC_KEY_BYTES} are required",
                    secret.len()
                )));
            }
            VerifyingKey::Hmac(Hs256Key::new(&**secret))
        }
        JsonWebKey::Rsa { .. } => {
            let key = RsaPublicKey::try_from(&jwk).map_err(|e| bad(format!("{e}")))?;
            let key = StrongKey::try_from(key)
                .map_err(|_| bad("RSA key is shorter than 2048 bits".to_owned()))?;
            VerifyingKey::Rsa(key.into_inner())
        }
        JsonWebKey::EllipticCurve { .. } => VerifyingKey::P256(
            p256::ecdsa::VerifyingKey::try_from(&jwk).map_err(|e| bad(format!("{e}")))?,
        ),
        JsonWebKey::KeyPair { .. } => {
            let key =
                ed25519_dalek::VerifyingKey::try_from(&jwk).map_err(|e| bad(format!("{e}")))?;
            if key.is_weak() {
                // A small-order key verifies signatures anyone can make.
                return Err(bad("Ed25519 key has small order (a weak key)".to_owned()));
            }
            VerifyingKey::Ed25519(key)
        }
        _ => return Ok(None),
    };
    if let Some(alg) = alg {
        if !key.supports(alg) {
            return Err(bad(format!(
                "`alg` {alg} does not fit a {} key",
                key.family()
            )));
        }
    }
    Ok(Some(Jwk { kid, alg, key }))
}

/// Where the engine gets keys for issuers configured with `jwks_url`. Hosts fetch and cache
/// the JWKS (with their own I/O) and answer by issuer name. Returning `None` makes tokens
/// from that issuer fail closed.
pub trait KeyStore {
    fn key_set(&self, issuer_name: &str) -> Option<&KeySet>;
}

/// A key store with no keys: only inline JWKS in the policy are used.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoKeys;

impl KeyStore for NoKeys {
    fn key_set(&self, _issuer_name: &str) -> Option<&KeySet> {
        None
    }
}

impl<S: KeyStore + ?Sized> KeyStore for &S {
    fn key_set(&self, issuer_name: &str) -> Option<&KeySet> {
        (**self).key_set(issuer_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCT: &str = r#"{"kty": "oct", "kid": "h", "k": "dG9sbGdhdGUtZXhhbXBsZS1kZW1vLWhtYWMta2V5LTMyYnl0ZXMhIQ"}"#;
    const ED: &str = r#"{"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
    /// The identity point: every signature verifies against it under a lax check.
    const ED_SMALL_ORDER: &str = r#"{"kty": "OKP", "crv": "Ed25519", "kid": "w", "x": "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#;

    fn set(keys: &[&str]) -> String {
        alloc::format!(r#"{{"keys": [{}]}}"#, keys.join(","))
    }

    #[test]
    fn fetched_sets_may_not_hold_secrets() {
        assert_eq!(KeySet::from_json(&set(&[OCT])).map(|s| s.len()), Ok(1));
        assert_eq!(
            KeySet::from_fetched_json(&set(&[ED, OCT])).map(|s| s.len()),
            Err(KeySetError::FetchedSecret {
                index: 1,
                kid: Some("h".into())
            })
        );
        assert_eq!(
            KeySet::from_fetched_json(&set(&[ED])).map(|s| s.len()),
            Ok(1)
        );
    }

    #[test]
    fn small_order_ed25519_keys_are_refused() {
        for parse in [KeySet::from_json, KeySet::from_fetched_json] {
            match parse(&set(&[ED, ED_SMALL_ORDER])) {
                Err(KeySetError::Key {
                    index: 1, message, ..
                }) => {
                    assert!(message.contains("small order"), "{message}")
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
