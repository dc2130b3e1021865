//! The policy module's interface (`targets/wasm-module`), typed, versioned and shared by
//! the module and its hosts: every input and output is one of these types, encoded with
//! postcard. A host reads the module's `tollgate_abi_version` export first and refuses a
//! module whose version is not [`ABI_VERSION`].
//!
//! A decision crosses as a [`WireVerdict`]: the same typed [`Verdict`] a host gets from
//! the engine linked natively, so rate limits, audit records and responses are made by the
//! same host code either way. Header values that hold secrets cross too (the module must
//! hand the origin credential over); they are never printed.
//!
//! The output types hold `Cow`s: the module encodes a verdict borrowed from its own (no
//! copy of every string per decision) and the host decodes owned values. Borrowed or
//! owned, the encoding is the same.

use alloc::{borrow::Cow, collections::BTreeMap, string::String, vec::Vec};
use serde::{Deserialize, Serialize};

use crate::access::Access;
use crate::decision::{Decision, ExplainStep, Header, Reason, Shadow, Verdict};
use crate::identity::{Identity, Via};
use crate::keys::Algorithm;
use crate::rate::{PendingRate, RateCheck};
use crate::route::{RepoName, RouteClass};
use crate::time::UnixTime;

mod module;
pub use module::{Module, Op};

/// The interface version this crate speaks. Bump it with any change to these types.
pub const ABI_VERSION: u32 = 9;

/// Every operation answers `Ok` or a message (for `init`, the positioned policy error).
pub type Answer<T> = Result<T, String>;

/// `tollgate_init`: compile a policy.
#[derive(Debug, Serialize, Deserialize)]
pub struct Init<'a> {
    pub policy: &'a str,
    /// Labels the policy's error positions.
    pub file: &'a str,
}

/// What `tollgate_init` answers about the policy it loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loaded {
    /// `(issuer name, JWKS URL)` for the host to fetch.
    pub jwks_urls: Vec<(String, String)>,
    /// `origin.user_header`, lowercase.
    pub user_header: String,
    /// Whether requests must carry the host's random bytes (`[sso]`).
    pub wants_entropy: bool,
}

/// `tollgate_set_keys`: an issuer's JWKS document, or `None` to forget its keys.
#[derive(Debug, Serialize, Deserialize)]
pub struct SetKeys<'a> {
    pub issuer: &'a str,
    pub jwks: Option<&'a str>,
}

/// `tollgate_set_secrets`: origin secrets by name; `placeholder` makes every name resolve
/// to a stand-in (policy tests: decisions only ever show names).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SetSecrets<'a> {
    #[serde(borrow)]
    pub secrets: Vec<(&'a str, &'a str)>,
    pub placeholder: bool,
}

/// `tollgate_decide`: one request at one time.
#[derive(Debug, Serialize, Deserialize)]
pub struct Decide<'a> {
    #[serde(borrow)]
    pub request: WireRequest<'a>,
    pub now_nanos: u64,
    pub explain: bool,
}

/// `tollgate_complete_sign_in`: the provider's answer to the token request a sign-in
/// callback made ([`crate::Engine::complete_sign_in`]), with that callback request.
#[derive(Debug, Serialize, Deserialize)]
pub struct CompleteSignIn<'a> {
    #[serde(borrow)]
    pub request: WireRequest<'a>,
    pub now_nanos: u64,
    pub response: WireTokenResponse<'a>,
    pub explain: bool,
}

/// [`crate::TokenResponse`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub enum WireTokenResponse<'a> {
    Answered { status: u16, body: &'a [u8] },
    Failed,
}

impl<'a> WireTokenResponse<'a> {
    pub fn from_response(response: crate::TokenResponse<'a>) -> Self {
        match response {
            crate::TokenResponse::Answered { status, body } => {
                WireTokenResponse::Answered { status, body }
            }
            crate::TokenResponse::Failed => WireTokenResponse::Failed,
        }
    }

    pub fn response(&self) -> crate::TokenResponse<'a> {
        match *self {
            WireTokenResponse::Answered { status, body } => {
                crate::TokenResponse::Answered { status, body }
            }
            WireTokenResponse::Failed => crate::TokenResponse::Failed,
        }
    }
}

/// [`crate::RequestFacts`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// Borrowed from the facts by the host, collected by the module: the same bytes.
    #[serde(borrow)]
    pub headers: Cow<'a, [(&'a str, &'a str)]>,
    pub body: Option<&'a [u8]>,
    pub client_ip: Option<&'a str>,
    pub entropy: Option<[u8; 32]>,
}

impl<'a> WireRequest<'a> {
    pub fn from_facts(facts: &crate::RequestFacts<'a>) -> Self {
        WireRequest {
            method: facts.method,
            path: facts.path,
            query: facts.query,
            headers: Cow::Borrowed(facts.headers),
            body: facts.body,
            client_ip: facts.client_ip,
            entropy: facts.entropy,
        }
    }

    /// The facts again; `self` keeps the header pairs they borrow.
    pub fn facts(&self) -> crate::RequestFacts<'_> {
        crate::RequestFacts {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: &self.headers,
            body: self.body,
            client_ip: self.client_ip,
            entropy: self.entropy,
        }
    }
}

/// [`Verdict`] on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WireVerdict<'a> {
    Decided(WireDecision<'a>),
    Pending(WirePending<'a>),
    Exchange(WireExchange<'a>),
}

/// [`crate::TokenExchange`] on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireExchange<'a> {
    pub url: Cow<'a, str>,
    pub headers: Vec<WireHeader<'a>>,
    pub body: Cow<'a, str>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WirePending<'a> {
    pub checks: Cow<'a, [RateCheck]>,
    pub now_nanos: u64,
    pub allowed: WireDecision<'a>,
    pub explain: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireDecision<'a> {
    pub allow: bool,
    pub status: u16,
    pub reason: Cow<'a, str>,
    pub message: Cow<'a, str>,
    pub rule: Option<Cow<'a, str>>,
    pub identity: Option<WireIdentity<'a>>,
    pub class: Option<RouteClass>,
    pub repo: Option<WireRepo<'a>>,
    pub access: Option<Access>,
    pub strip: Cow<'a, [String]>,
    pub set: Vec<WireHeader<'a>>,
    pub headers: Vec<WireHeader<'a>>,
    pub retry_after: Option<u64>,
    pub policy_revision: Option<Cow<'a, str>>,
    pub shadow: Option<WireShadow<'a>>,
    pub explain: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// [`RepoName`] on the wire: its two resolved parts, not a string to parse again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireRepo<'a> {
    pub owner: Cow<'a, str>,
    pub name: Cow<'a, str>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireShadow<'a> {
    pub allow: bool,
    pub status: u16,
    pub reason: Cow<'a, str>,
    pub rule: Option<Cow<'a, str>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireHeader<'a> {
    pub name: Cow<'a, str>,
    pub value: Cow<'a, str>,
    pub redacted: Option<Cow<'a, str>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireIdentity<'a> {
    pub user: Cow<'a, str>,
    pub groups: Cow<'a, [String]>,
    pub via: WireVia<'a>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WireVia<'a> {
    Jwt {
        issuer: Cow<'a, str>,
        alg: Algorithm,
        kid: Option<Cow<'a, str>>,
        binding: Option<Cow<'a, str>>,
        claims: Cow<'a, BTreeMap<String, String>>,
    },
    ApiKey {
        key: Cow<'a, str>,
    },
    Session {
        issuer: Cow<'a, str>,
        binding: Option<Cow<'a, str>>,
        claims: Cow<'a, BTreeMap<String, String>>,
    },
}

/// A wire value that does not describe a decision (a module of another build).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError(pub String);

impl<'a> From<&'a Verdict> for WireVerdict<'a> {
    fn from(verdict: &'a Verdict) -> Self {
        match verdict {
            Verdict::Decided(d) => WireVerdict::Decided(d.into()),
            Verdict::Pending(p) => WireVerdict::Pending(WirePending {
                checks: Cow::Borrowed(&p.checks),
                now_nanos: p.now.as_nanos(),
                allowed: (&p.allowed).into(),
                explain: p.explain,
            }),
            Verdict::Exchange(e) => WireVerdict::Exchange(WireExchange {
                url: Cow::Borrowed(&e.url),
                headers: e.headers.iter().map(wire_header).collect(),
                body: Cow::Borrowed(&e.body),
            }),
        }
    }
}

impl TryFrom<WireVerdict<'_>> for Verdict {
    type Error = WireError;
    fn try_from(wire: WireVerdict<'_>) -> Result<Self, WireError> {
        Ok(match wire {
            WireVerdict::Decided(d) => Verdict::Decided(d.try_into()?),
            WireVerdict::Pending(p) => Verdict::Pending(PendingRate {
                checks: p.checks.into_owned(),
                now: UnixTime::from_nanos(p.now_nanos),
                allowed: p.allowed.try_into()?,
                explain: p.explain,
            }),
            WireVerdict::Exchange(e) => Verdict::Exchange(crate::TokenExchange {
                url: e.url.into_owned(),
                headers: e.headers.into_iter().map(header).collect(),
                body: e.body.into_owned(),
            }),
        })
    }
}

fn borrowed(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(Cow::Borrowed)
}

fn owned(s: Option<Cow<'_, str>>) -> Option<String> {
    s.map(Cow::into_owned)
}

fn wire_header(h: &Header) -> WireHeader<'_> {
    WireHeader {
        name: Cow::Borrowed(h.name()),
        value: Cow::Borrowed(h.value()),
        redacted: borrowed(&h.redacted),
    }
}

fn header(w: WireHeader<'_>) -> Header {
    Header {
        name: w.name.into_owned(),
        value: w.value.into_owned(),
        redacted: owned(w.redacted),
    }
}

impl<'a> From<&'a Decision> for WireDecision<'a> {
    fn from(d: &'a Decision) -> Self {
        WireDecision {
            allow: d.allow,
            status: d.status,
            reason: Cow::Borrowed(d.reason.code()),
            message: Cow::Borrowed(&d.message),
            rule: borrowed(&d.rule),
            identity: d.identity.as_ref().map(|i| WireIdentity {
                user: Cow::Borrowed(&i.user),
                groups: Cow::Borrowed(&i.groups),
                via: match &i.via {
                    Via::Jwt {
                        issuer,
                        alg,
                        kid,
                        binding,
                        claims,
                    } => WireVia::Jwt {
                        issuer: Cow::Borrowed(issuer),
                        alg: *alg,
                        kid: borrowed(kid),
                        binding: borrowed(binding),
                        claims: Cow::Borrowed(claims),
                    },
                    Via::ApiKey { key } => WireVia::ApiKey {
                        key: Cow::Borrowed(key),
                    },
                    Via::Session {
                        issuer,
                        binding,
                        claims,
                    } => WireVia::Session {
                        issuer: Cow::Borrowed(issuer),
                        binding: borrowed(binding),
                        claims: Cow::Borrowed(claims),
                    },
                },
            }),
            class: d.class,
            repo: d.repo.as_ref().map(|r| WireRepo {
                owner: Cow::Borrowed(r.owner()),
                name: Cow::Borrowed(r.name()),
            }),
            access: d.access,
            strip: Cow::Borrowed(&d.strip),
            set: d.set.iter().map(wire_header).collect(),
            headers: d.headers.iter().map(wire_header).collect(),
            retry_after: d.retry_after,
            policy_revision: borrowed(&d.policy_revision),
            shadow: d.shadow.as_ref().map(|s| WireShadow {
                allow: s.allow,
                status: s.status,
                reason: Cow::Borrowed(s.reason.code()),
                rule: borrowed(&s.rule),
            }),
            explain: d
                .explain
                .iter()
                .map(|s| {
                    (
                        Cow::Borrowed(s.rule.as_str()),
                        Cow::Borrowed(s.outcome.as_str()),
                    )
                })
                .collect(),
        }
    }
}

impl TryFrom<WireDecision<'_>> for Decision {
    type Error = WireError;
    fn try_from(w: WireDecision<'_>) -> Result<Self, WireError> {
        let reason_of = |code: &str| {
            Reason::from_code(code)
                .ok_or_else(|| WireError(alloc::format!("unknown reason `{code}`")))
        };
        let reason = reason_of(&w.reason)?;
        let shadow = match w.shadow {
            Some(s) => Some(Shadow {
                allow: s.allow,
                status: s.status,
                reason: reason_of(&s.reason)?,
                rule: owned(s.rule),
            }),
            None => None,
        };
        Ok(Decision {
            allow: w.allow,
            status: w.status,
            reason,
            message: w.message.into_owned(),
            rule: owned(w.rule),
            // The module verified this identity; its decision is as trusted as the module.
            identity: w.identity.map(|i| Identity {
                user: i.user.into_owned(),
                groups: i.groups.into_owned(),
                via: match i.via {
                    WireVia::Jwt {
                        issuer,
                        alg,
                        kid,
                        binding,
                        claims,
                    } => Via::Jwt {
                        issuer: issuer.into_owned(),
                        alg,
                        kid: owned(kid),
                        binding: owned(binding),
                        claims: claims.into_owned(),
                    },
                    WireVia::ApiKey { key } => Via::ApiKey {
                        key: key.into_owned(),
                    },
                    WireVia::Session {
                        issuer,
                        binding,
                        claims,
                    } => Via::Session {
                        issuer: issuer.into_owned(),
                        binding: owned(binding),
                        claims: claims.into_owned(),
                    },
                },
            }),
            class: w.class,
            repo: w
                .repo
                .map(|r| RepoName::resolved(r.owner.into_owned(), r.name.into_owned())),
            access: w.access,
            strip: w.strip.into_owned(),
            set: w.set.into_iter().map(header).collect(),
            headers: w.headers.into_iter().map(header).collect(),
            retry_after: w.retry_after,
            policy_revision: owned(w.policy_revision),
            shadow,
            explain: w
                .explain
                .into_iter()
                .map(|(rule, outcome)| ExplainStep {
                    rule: rule.into_owned(),
                    outcome: outcome.into_owned(),
                })
                .collect(),
        })
    }
}

/// Encodes a wire value.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_into(value, &mut bytes);
    bytes
}

/// Encodes a wire value into `bytes`, replacing what it held and reusing its capacity (the
/// module and its hosts keep one buffer each instead of allocating per call). A value
/// that cannot be encoded leaves `bytes` empty, which decodes as nothing.
pub fn encode_into<T: Serialize>(value: &T, bytes: &mut Vec<u8>) {
    bytes.clear();
    match postcard::to_extend(value, core::mem::take(bytes)) {
        Ok(encoded) => *bytes = encoded,
        Err(_) => bytes.clear(),
    }
}

/// Decodes a wire value, borrowing from `bytes` where the type borrows.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    postcard::from_bytes(bytes).map_err(|e| WireError(alloc::format!("{e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, NoKeys, NoSecrets, RequestFacts};

    #[test]
    fn verdicts_cross_unchanged() {
        let engine = Engine::from_toml(
            "[[api_key]]\nname = \"k\"\nsha256 = \"395d4a6f304809c8f0de3c9c46ed6fc831faf84dc0e0e8e3505a8c0095ea6916\"\nuser = \"reader\"\n[[grant]]\nwho = \"key:k\"\nrepos = \"acme/app\"\naccess = \"read\"\n[[rate_limit]]\nname = \"r\"\nwho = \"*\"\nrequests = 1\nperiod_seconds = 60\n",
            "t.toml",
        )
        .unwrap();
        let headers = [("authorization", "token k-reader")];
        let facts = RequestFacts {
            headers: &headers,
            ..RequestFacts::get("/acme/app.git/info/refs")
        };
        let now = UnixTime::from_secs(1_800_000_000);
        for verdict in [
            engine.decide(&facts, now, &NoKeys, &crate::NoSecrets),
            engine.decide(
                &RequestFacts::get("/acme/x.git/info/refs"),
                now,
                &NoKeys,
                &NoSecrets,
            ),
        ] {
            let wire = encode(&WireVerdict::from(&verdict));
            let decoded = decode::<WireVerdict>(&wire).unwrap();
            // Borrowed by the module, owned by the host: the same bytes.
            assert_eq!(encode(&decoded), wire);
            let back: Verdict = decoded.try_into().unwrap();
            let json = |v: Verdict| v.resolve_with(&mut |_, _| None).to_json();
            assert_eq!(json(back), json(verdict));
        }
    }
}
