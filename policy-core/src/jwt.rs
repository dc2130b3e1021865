//! JWT verification. An [`UntrustedToken`] becomes an [`Identity`] only here, through a
//! validator whose algorithm the policy fixed and whose key family fits that algorithm.

use crate::binding::{audit_value, claim, Binding};
use crate::crypto::{CryptoProvider, ProvidedEs256, ProvidedRsa, RsaScheme};
use alloc::{borrow::ToOwned, collections::BTreeMap, string::String, vec::Vec};
use base64ct::{Base64UrlUnpadded, Encoding};
use chrono::TimeDelta;
use jwt_compact::alg::Hs256;
use jwt_compact::{AlgorithmExt, Claims, TimeOptions, Token, UntrustedToken, ValidationError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::eddsa::StrictEd25519;
use crate::identity::{valid_user, Identity, Via, MAX_GROUPS, MAX_NAME_LEN};
use crate::json_members::repeats_a_member;
use crate::keys::{Algorithm, KeyMiss, KeySet, KeyStore, VerifyingKey};
use crate::time::UnixTime;

/// One trusted token issuer, validated from the policy.
#[derive(Clone, Debug)]
pub(crate) struct Issuer {
    pub(crate) name: String,
    pub(crate) iss: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) inline_keys: Option<KeySet>,
    pub(crate) jwks_url: Option<String>,
    pub(crate) leeway_secs: u32,
    /// The claim naming the Gogs user; `None` when only bindings make identities.
    pub(crate) user_claim: Option<String>,
    pub(crate) groups_claim: Option<String>,
    pub(crate) token_type: Option<String>,
    pub(crate) require_exp: bool,
    /// Its `[[binding]]`s, in policy order: the first that matches applies.
    pub(crate) bindings: Vec<Binding>,
    /// Claims copied into the identity for the audit.
    pub(crate) audit_claims: Vec<String>,
}

/// Why a presented credential was not accepted. Each has a stable code for audit logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRejection {
    TooLarge,
    Malformed,
    DuplicateMember,
    CriticalHeader,
    UnknownIssuer,
    AlgorithmNotAllowed,
    NoKeys,
    UnknownKey,
    KeyAlgorithmMismatch,
    AmbiguousKey,
    BadSignature,
    MissingExpiry,
    Expired,
    NotYetValid,
    WrongAudience,
    WrongType,
    MissingUserClaim,
    InvalidUser,
    InvalidGroups,
    NoBinding,
    UnknownApiKey,
    /// An ID token whose `nonce` is not the sign-in's (`[sso]`).
    WrongNonce,
}

impl TokenRejection {
    /// Every rejection, for mapping codes back (the policy module's wire form).
    pub const ALL: [TokenRejection; 22] = [
        TokenRejection::TooLarge,
        TokenRejection::Malformed,
        TokenRejection::DuplicateMember,
        TokenRejection::CriticalHeader,
        TokenRejection::UnknownIssuer,
        TokenRejection::AlgorithmNotAllowed,
        TokenRejection::NoKeys,
        TokenRejection::UnknownKey,
        TokenRejection::KeyAlgorithmMismatch,
        TokenRejection::AmbiguousKey,
        TokenRejection::BadSignature,
        TokenRejection::MissingExpiry,
        TokenRejection::Expired,
        TokenRejection::NotYetValid,
        TokenRejection::WrongAudience,
        TokenRejection::WrongType,
        TokenRejection::MissingUserClaim,
        TokenRejection::InvalidUser,
        TokenRejection::InvalidGroups,
        TokenRejection::NoBinding,
        TokenRejection::UnknownApiKey,
        TokenRejection::WrongNonce,
    ];

    pub const fn code(self) -> &'static str {
        match self {
            TokenRejection::TooLarge => "token_too_large",
            TokenRejection::Malformed => "token_malformed",
            TokenRejection::DuplicateMember => "token_duplicate_member",
            TokenRejection::CriticalHeader => "token_critical_header",
            TokenRejection::UnknownIssuer => "token_unknown_issuer",
            TokenRejection::AlgorithmNotAllowed => "token_algorithm_not_allowed",
            TokenRejection::NoKeys => "token_issuer_keys_unavailable",
            TokenRejection::UnknownKey => "token_unknown_key",
            TokenRejection::KeyAlgorithmMismatch => "token_key_algorithm_mismatch",
            TokenRejection::AmbiguousKey => "token_ambiguous_key",
            TokenRejection::BadSignature => "token_bad_signature",
            TokenRejection::MissingExpiry => "token_missing_exp",
            TokenRejection::Expired => "token_expired",
            TokenRejection::NotYetValid => "token_not_yet_valid",
            TokenRejection::WrongAudience => "token_wrong_audience",
            TokenRejection::WrongType => "token_wrong_type",
            TokenRejection::MissingUserClaim => "token_missing_user_claim",
            TokenRejection::InvalidUser => "token_invalid_user",
            TokenRejection::InvalidGroups => "token_invalid_groups",
            TokenRejection::NoBinding => "no_binding",
            TokenRejection::UnknownApiKey => "unknown_api_key",
            TokenRejection::WrongNonce => "token_wrong_nonce",
        }
    }

    pub const fn message(self) -> &'static str {
        match self {
            TokenRejection::TooLarge => "token is larger than the policy allows",
            TokenRejection::Malformed => "token is not a well-formed JWT",
            TokenRejection::DuplicateMember => {
                "token header or claims repeat a member, which parsers read differently"
            }
            TokenRejection::CriticalHeader => {
                "token has a `crit` header this gateway does not implement"
            }
            TokenRejection::UnknownIssuer => "token issuer is not trusted",
            TokenRejection::AlgorithmNotAllowed => "token algorithm is not allowed for its issuer",
            TokenRejection::NoKeys => "keys for the token's issuer are not available",
            TokenRejection::UnknownKey => "token was signed with an unknown key",
            TokenRejection::KeyAlgorithmMismatch => "token algorithm does not fit the key it names",
            TokenRejection::AmbiguousKey => "token has no `kid` and several keys could verify it",
            TokenRejection::BadSignature => "token signature is invalid",
            TokenRejection::MissingExpiry => "token has no `exp` claim",
            TokenRejection::Expired => "token has expired",
            TokenRejection::NotYetValid => "token is not valid yet",
            TokenRejection::WrongAudience => "token audience is not accepted",
            TokenRejection::WrongType => "token type (`typ`) is not accepted",
            TokenRejection::MissingUserClaim => "token lacks the claim that names the user",
            TokenRejection::InvalidUser => "token names a user that is not a valid Gogs user name",
            TokenRejection::InvalidGroups => "token groups claim is not a list of names",
            TokenRejection::NoBinding => "token matches none of its issuer's bindings",
            TokenRejection::UnknownApiKey => "credentials are not recognised",
            TokenRejection::WrongNonce => "token was not issued for this sign-in (`nonce`)",
        }
    }
}

/// Extra JOSE header fields we must look at: an unknown `crit` extension means refuse.
#[derive(Clone, Debug, Default, Deserialize)]
struct ExtraHeader {
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct IssOnly {
    iss: Option<String>,
}

type CustomClaims = Map<String, Value>;

/// A verified token: who it names and the time window it is good for (with leeway).
#[derive(Clone, Debug)]
pub(crate) struct Verified {
    pub(crate) identity: Identity,
    pub(crate) valid_from: UnixTime,
    /// `None` for a token without `exp` (only when the issuer allows that).
    pub(crate) valid_until: Option<UnixTime>,
}

fn unix(t: chrono::DateTime<chrono::Utc>, shift_secs: i64) -> UnixTime {
    UnixTime::from_secs(u64::try_from(t.timestamp().saturating_add(shift_secs)).unwrap_or(0))
}

/// Why [`verify`] refused a token, and the issuer it was verified for when the refusal
/// came after its signature (a token no binding takes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) rejection: TokenRejection,
    pub(crate) issuer: Option<String>,
}

impl From<TokenRejection> for Refusal {
    fn from(rejection: TokenRejection) -> Self {
        Refusal {
            rejection,
            issuer: None,
        }
    }
}

/// Verifies `token` against the configured issuers. With `nonce`, the token is an OpenID
/// Connect ID token: its `nonce` claim must be exactly that, and its `azp`, when present,
/// one of the issuer's audiences (the client id).
pub(crate) fn verify(
    token: &str,
    issuers: &[Issuer],
    store: &dyn KeyStore,
    now: UnixTime,
    max_bytes: usize,
    crypto: &dyn CryptoProvider,
    nonce: Option<&str>,
) -> Result<Verified, Refusal> {
    if token.len() > max_bytes {
        return Err(TokenRejection::TooLarge.into());
    }
    refuse_repeated_members(token)?;
    let untrusted =
        UntrustedToken::<ExtraHeader>::try_from(token).map_err(|_| TokenRejection::Malformed)?;
    if untrusted.header().other_fields.crit.is_some() {
        return Err(TokenRejection::CriticalHeader.into());
    }
    // The issuer picks the key set; which issuer is only a claim until the signature is
    // checked, so it is re-checked on the verified claims below.
    let peeked = untrusted
        .deserialize_claims_unchecked::<IssOnly>()
        .map_err(|_| TokenRejection::Malformed)?;
    let iss = peeked.custom.iss.ok_or(TokenRejection::UnknownIssuer)?;
    let issuer = issuers
        .iter()
        .find(|i| i.iss == iss)
        .ok_or(TokenRejection::UnknownIssuer)?;
    let alg = Algorithm::from_name(untrusted.algorithm())
        .filter(|alg| issuer.algorithms.contains(alg))
        .ok_or(TokenRejection::AlgorithmNotAllowed)?;
    let kid = untrusted.header().key_id.as_deref();
    let key = select_key(issuer, store, kid, alg)?;
    let verified = validate_signature(&untrusted, alg, key, crypto)?;
    let (header, claims) = verified.into_parts();
    check_claims(issuer, &claims, header.token_type.as_deref(), now)?;
    if let Some(nonce) = nonce {
        if string_claim(&claims.custom, "nonce") != Some(nonce) {
            return Err(TokenRejection::WrongNonce.into());
        }
        if let Some(azp) = claims.custom.get("azp") {
            if !azp
                .as_str()
                .is_some_and(|a| issuer.audiences.iter().any(|x| x == a))
            {
                return Err(TokenRejection::WrongAudience.into());
            }
        }
    }
    let matching = issuer.bindings.iter().find(|b| b.matches(&claims.custom));
    let (user, mut groups, binding) = match matching {
        Some(binding) => (
            binding.user.clone(),
            binding.groups.clone(),
            Some(binding.name.clone()),
        ),
        None => {
            // No binding applies: the user claim decides, if the issuer has one.
            let Some(user_claim) = &issuer.user_claim else {
                return Err(Refusal {
                    rejection: TokenRejection::NoBinding,
                    issuer: Some(issuer.name.clone()),
                });
            };
            let user = string_claim(&claims.custom, user_claim)
                .ok_or(TokenRejection::MissingUserClaim)?
                .to_ascii_lowercase();
            if !valid_user(&user) {
                return Err(TokenRejection::InvalidUser.into());
            }
            (user, Vec::new(), None)
        }
    };
    if let Some(claim) = &issuer.groups_claim {
        for group in groups_claim(claims.custom.get(claim.as_str()))? {
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
    }
    let audit_claims: BTreeMap<String, String> = issuer
        .audit_claims
        .iter()
        .filter_map(|name| Some((name.clone(), audit_value(claim(&claims.custom, name)?))))
        .collect();
    let leeway = i64::from(issuer.leeway_secs);
    Ok(Verified {
        identity: Identity {
            user,
            groups,
            via: Via::Jwt {
                issuer: issuer.name.clone(),
                alg,
                kid: kid.map(ToOwned::to_owned),
                binding,
                claims: audit_claims,
            },
        },
        valid_from: claims
            .not_before
            .map_or(UnixTime::EPOCH, |nbf| unix(nbf, -leeway)),
        valid_until: claims.expiration.map(|exp| unix(exp, leeway)),
    })
}

/// A header or claims object repeating a member is refused before anything reads either.
fn refuse_repeated_members(token: &str) -> Result<(), TokenRejection> {
    let mut parts = token.split('.');
    for part in [parts.next(), parts.next()] {
        let decoded = part
            .and_then(|p| Base64UrlUnpadded::decode_vec(p).ok())
            .ok_or(TokenRejection::Malformed)?;
        match repeats_a_member(&decoded) {
            Some(false) => {}
            Some(true) => return Err(TokenRejection::DuplicateMember),
            None => return Err(TokenRejection::Malformed),
        }
    }
    Ok(())
}

fn select_key<'k>(
    issuer: &'k Issuer,
    store: &'k dyn KeyStore,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<&'k VerifyingKey, TokenRejection> {
    let fetched = if issuer.jwks_url.is_some() {
        store.key_set(&issuer.name)
    } else {
        None
    };
    let sets = [(issuer.inline_keys.as_ref(), false), (fetched, true)];
    let mut last_miss = None;
    for (set, is_fetched) in sets {
        let Some(set) = set else { continue };
        match set.select(kid, alg) {
            // Hosts parse fetched sets with `KeySet::from_fetched_json`, which refuses
            // HMAC keys; one that got here anyway is still never used.
            Ok(VerifyingKey::Hmac(_)) if is_fetched => last_miss = Some(KeyMiss::AlgorithmMismatch),
            Ok(key) => return Ok(key),
            Err(miss) => last_miss = Some(miss),
        }
    }
    Err(match last_miss {
        None => TokenRejection::NoKeys,
        Some(KeyMiss::UnknownKid) => TokenRejection::UnknownKey,
        Some(KeyMiss::AlgorithmMismatch) => TokenRejection::KeyAlgorithmMismatch,
        Some(KeyMiss::Ambiguous) => TokenRejection::AmbiguousKey,
    })
}

fn validate_signature(
    token: &UntrustedToken<'_, ExtraHeader>,
    alg: Algorithm,
    key: &VerifyingKey,
    crypto: &dyn CryptoProvider,
) -> Result<Token<CustomClaims, ExtraHeader>, TokenRejection> {
    // Each arm fixes the algorithm; `VerifyingKey` pairs it with the only key family it
    // may use, so the token's own `alg` never chooses how its signature is checked.
    let result = match (alg, key) {
        (Algorithm::HS256, VerifyingKey::Hmac(k)) => {
            Hs256.validator::<CustomClaims>(k).validate(token)
        }
        (Algorithm::RS256, VerifyingKey::Rsa(k)) => ProvidedRsa {
            scheme: RsaScheme::Pkcs1Sha256,
            provider: crypto,
        }
        .validator::<CustomClaims>(k)
        .validate(token),
        (Algorithm::PS256, VerifyingKey::Rsa(k)) => ProvidedRsa {
            scheme: RsaScheme::PssSha256,
            provider: crypto,
        }
        .validator::<CustomClaims>(k)
        .validate(token),
        (Algorithm::ES256, VerifyingKey::P256(k)) => ProvidedEs256 { provider: crypto }
            .validator::<CustomClaims>(k)
            .validate(token),
        (Algorithm::EdDSA, VerifyingKey::Ed25519(k)) => {
            StrictEd25519.validator::<CustomClaims>(k).validate(token)
        }
        _ => return Err(TokenRejection::KeyAlgorithmMismatch),
    };
    result.map_err(|e| match e {
        ValidationError::MalformedClaims(_) => TokenRejection::Malformed,
        ValidationError::AlgorithmMismatch { .. } => TokenRejection::AlgorithmNotAllowed,
        _ => TokenRejection::BadSignature,
    })
}

fn check_claims(
    issuer: &Issuer,
    claims: &Claims<CustomClaims>,
    typ: Option<&str>,
    now: UnixTime,
) -> Result<(), TokenRejection> {
    let leeway = TimeDelta::try_seconds(i64::from(issuer.leeway_secs)).unwrap_or(TimeDelta::zero());
    let clock = now.to_chrono();
    let options = TimeOptions::new(leeway, move || clock);
    match claims.expiration {
        Some(_) => {
            claims
                .validate_expiration(&options)
                .map_err(|_| TokenRejection::Expired)?;
        }
        None if issuer.require_exp => return Err(TokenRejection::MissingExpiry),
        None => {}
    }
    // jwt-compact treats a missing `nbf` as an error; RFC 7519 makes it optional.
    if claims.not_before.is_some() {
        claims
            .validate_maturity(&options)
            .map_err(|_| TokenRejection::NotYetValid)?;
    }
    if string_claim(&claims.custom, "iss") != Some(issuer.iss.as_str()) {
        return Err(TokenRejection::UnknownIssuer);
    }
    let audience_ok = match claims.custom.get("aud") {
        Some(Value::String(aud)) => issuer.audiences.iter().any(|a| a == aud),
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .any(|aud| issuer.audiences.iter().any(|a| a == aud)),
        _ => false,
    };
    if !audience_ok {
        return Err(TokenRejection::WrongAudience);
    }
    if let Some(expected) = &issuer.token_type {
        // RFC 8725 §3.11: compare case-insensitively, with or without "application/".
        let normalise = |t: &str| {
            let t = t.to_ascii_lowercase();
            t.strip_prefix("application/")
                .map(ToOwned::to_owned)
                .unwrap_or(t)
        };
        if typ.map(normalise) != Some(normalise(expected)) {
            return Err(TokenRejection::WrongType);
        }
    }
    Ok(())
}

fn string_claim<'c>(claims: &'c CustomClaims, name: &str) -> Option<&'c str> {
    claims.get(name).and_then(Value::as_str)
}

fn groups_claim(value: Option<&Value>) -> Result<Vec<String>, TokenRejection> {
    let valid =
        |g: &str| !g.is_empty() && g.len() <= MAX_NAME_LEN && !g.chars().any(char::is_control);
    match value {
        None => Ok(Vec::new()),
        Some(Value::String(g)) if valid(g) => Ok(alloc::vec![g.clone()]),
        Some(Value::Array(items)) if items.len() <= MAX_GROUPS => items
            .iter()
            .map(|item| match item {
                Value::String(g) if valid(g) => Ok(g.clone()),
                _ => Err(TokenRejection::InvalidGroups),
            })
            .collect(),
        Some(_) => Err(TokenRejection::InvalidGroups),
    }
}
