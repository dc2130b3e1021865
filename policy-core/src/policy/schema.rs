//! The policy file as written: strict serde structs (unknown fields are errors) with spans
//! kept on everything validation may need to point at.

use alloc::collections::BTreeMap;
use alloc::{string::String, vec::Vec};
use serde::Deserialize;
use toml::Spanned;

use crate::access::Access;
use crate::engine::{SiteAccess, SiteSwitch};
use crate::origin::CredentialMode;
#[cfg(feature = "testing")]
use crate::request::OwnedRequest;
pub(crate) use crate::serde_util::OneOrMany;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    #[serde(default)]
    pub(crate) gateway: RawGateway,
    #[serde(default)]
    pub(crate) origin: RawOrigin,
    #[serde(default, rename = "issuer")]
    pub(crate) issuers: Vec<Spanned<RawIssuer>>,
    #[serde(default, rename = "binding")]
    pub(crate) bindings: Vec<Spanned<RawBinding>>,
    #[serde(default, rename = "api_key")]
    pub(crate) api_keys: Vec<Spanned<RawApiKey>>,
    #[serde(default, rename = "grant")]
    pub(crate) grants: Vec<Spanned<RawGrant>>,
    #[serde(default, rename = "rate_limit")]
    pub(crate) rate_limits: Vec<Spanned<RawRateLimit>>,
    #[serde(default, rename = "webhook")]
    pub(crate) webhooks: Vec<Spanned<RawWebhook>>,
    pub(crate) login: Option<Spanned<RawLogin>>,
    pub(crate) sso: Option<Spanned<RawSso>>,
    #[cfg(feature = "testing")]
    #[serde(default, rename = "test")]
    pub(crate) tests: Vec<Spanned<RawTestCase>>,
    /// Without the `testing` feature, `[[test]]` tables are accepted and skipped unread.
    #[cfg(not(feature = "testing"))]
    #[serde(default, rename = "test")]
    _skipped_tests: Vec<serde::de::IgnoredAny>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub(crate) realm: Option<Spanned<String>>,
    pub(crate) max_token_bytes: Option<Spanned<u64>>,
    pub(crate) hide_forbidden_repos: Option<bool>,
    pub(crate) site_web: Option<Spanned<SiteAccess>>,
    pub(crate) site_api: Option<Spanned<SiteAccess>>,
    pub(crate) cross_repo: Option<SiteSwitch>,
    pub(crate) by_id: Option<SiteSwitch>,
    pub(crate) operator: Option<SiteSwitch>,
    pub(crate) anonymous_ipv6_prefix: Option<Spanned<u8>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOrigin {
    pub(crate) git: Option<Spanned<CredentialMode>>,
    pub(crate) api: Option<Spanned<CredentialMode>>,
    pub(crate) web: Option<Spanned<CredentialMode>>,
    pub(crate) user_token_secret: Option<Spanned<String>>,
    pub(crate) service_user: Option<Spanned<String>>,
    pub(crate) service_token_secret: Option<Spanned<String>>,
    pub(crate) user_header: Option<Spanned<String>>,
    pub(crate) session_cookies: Option<Spanned<Vec<String>>>,
    pub(crate) gogs: Option<Spanned<OneOrMany>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIssuer {
    pub(crate) name: Spanned<String>,
    pub(crate) issuer: Spanned<String>,
    pub(crate) audiences: Spanned<Vec<String>>,
    pub(crate) algorithms: Vec<Spanned<String>>,
    pub(crate) jwks: Option<Spanned<String>>,
    pub(crate) jwks_url: Option<Spanned<String>>,
    pub(crate) leeway_seconds: Option<Spanned<u32>>,
    pub(crate) user_claim: Option<Spanned<String>>,
    pub(crate) groups_claim: Option<String>,
    pub(crate) token_type: Option<String>,
    pub(crate) require_exp: Option<bool>,
    /// Whether the user claim names Gogs users, so `user:NAME` principals match it.
    pub(crate) gogs_users: Option<Spanned<bool>>,
    /// Accept a user claim people can usually edit at their identity provider.
    pub(crate) allow_editable_user_claim: Option<bool>,
    pub(crate) audit_claims: Option<Spanned<Vec<String>>>,
}

/// A claim value to match, as written: TOML strings, booleans and integers all compare
/// as text.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawClaimValue {
    Text(String),
    Flag(bool),
    Number(i64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBinding {
    pub(crate) name: Spanned<String>,
    pub(crate) issuer: Spanned<String>,
    pub(crate) claims: Spanned<BTreeMap<String, Spanned<RawClaimValue>>>,
    pub(crate) user: Spanned<String>,
    pub(crate) groups: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiKey {
    pub(crate) name: Spanned<String>,
    pub(crate) sha256: Spanned<String>,
    pub(crate) user: Spanned<String>,
    pub(crate) groups: Option<Spanned<Vec<String>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawEffect {
    Allow,
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrant {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) who: Spanned<OneOrMany>,
    pub(crate) repos: Spanned<OneOrMany>,
    pub(crate) access: Access,
    pub(crate) effect: Option<RawEffect>,
    pub(crate) mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub(crate) name: Spanned<String>,
    pub(crate) who: Spanned<OneOrMany>,
    pub(crate) requests: Spanned<u32>,
    pub(crate) period_seconds: Spanned<u64>,
    pub(crate) burst: Option<Spanned<u32>>,
    pub(crate) class: Option<Spanned<OneOrMany>>,
    pub(crate) access: Option<Spanned<OneOrMany>>,
    pub(crate) per: Option<Spanned<String>>,
    /// The older spelling of `per = "shared"`.
    pub(crate) shared: Option<Spanned<bool>>,
    pub(crate) mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub(crate) name: Spanned<String>,
    pub(crate) path: Spanned<String>,
    pub(crate) secret: Spanned<String>,
    pub(crate) events: Option<Spanned<OneOrMany>>,
    pub(crate) repos: Spanned<OneOrMany>,
    pub(crate) max_body_bytes: Option<Spanned<u64>>,
}

/// `[login]`: what `tollgate login` needs to sign people in, published by the gateway.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLogin {
    /// The `[[issuer]]` people sign in with, by name.
    pub(crate) issuer: Spanned<String>,
    pub(crate) client_id: Spanned<String>,
    pub(crate) scope: Option<Spanned<String>>,
    pub(crate) resource: Option<Spanned<String>>,
}

/// `[sso]`: browser single sign-on with an OpenID provider.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSso {
    /// The `[[issuer]]` whose ID tokens sign people in, by name.
    pub(crate) issuer: Spanned<String>,
    pub(crate) client_id: Spanned<String>,
    /// The client secret, by name in the host's secrets; none for a public client.
    pub(crate) client_secret: Option<Spanned<String>>,
    pub(crate) authorization_endpoint: Spanned<String>,
    pub(crate) token_endpoint: Spanned<String>,
    pub(crate) redirect_uri: Spanned<String>,
    pub(crate) scopes: Option<Spanned<Vec<String>>>,
    pub(crate) cookie: Option<Spanned<String>>,
    pub(crate) lifetime_seconds: Option<Spanned<u64>>,
    /// The key that signs session cookies, by name in the host's secrets.
    pub(crate) session_key: Spanned<String>,
    pub(crate) logout_path: Option<Spanned<String>>,
    pub(crate) end_session_endpoint: Option<Spanned<String>>,
    pub(crate) post_logout_redirect_uri: Option<Spanned<String>>,
}

#[cfg(feature = "testing")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTestCase {
    pub(crate) name: String,
    pub(crate) now: Option<u64>,
    pub(crate) repeat: Option<Spanned<u32>>,
    #[serde(default)]
    pub(crate) before: Vec<OwnedRequest>,
    pub(crate) request: OwnedRequest,
    /// `{ status = 200, body = '...' }`, or `{ failed = true }`.
    pub(crate) exchange: Option<crate::sso::OwnedTokenResponse>,
    pub(crate) expect: Spanned<RawExpect>,
}

#[cfg(feature = "testing")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTokenRequestExpect {
    pub(crate) url: Option<String>,
    pub(crate) body: Option<String>,
    pub(crate) headers: Option<BTreeMap<String, String>>,
}

#[cfg(feature = "testing")]
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExpect {
    pub(crate) allow: Option<bool>,
    pub(crate) status: Option<u16>,
    pub(crate) reason: Option<String>,
    pub(crate) rule: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) binding: Option<String>,
    pub(crate) claims: Option<BTreeMap<String, String>>,
    pub(crate) repo: Option<String>,
    pub(crate) access: Option<Access>,
    pub(crate) retry_after: Option<u64>,
    pub(crate) headers: Option<BTreeMap<String, String>>,
    pub(crate) set: Option<BTreeMap<String, String>>,
    pub(crate) strip: Option<Vec<String>>,
    pub(crate) shadow: Option<RawShadowExpect>,
    pub(crate) token_request: Option<RawTokenRequestExpect>,
}

/// `shadow = false` (no shadow outcome), or a table of the shadow outcome's fields.
#[cfg(feature = "testing")]
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawShadowExpect {
    Present(bool),
    Fields(RawShadowFields),
}

#[cfg(feature = "testing")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShadowFields {
    pub(crate) allow: Option<bool>,
    pub(crate) status: Option<u16>,
    pub(crate) reason: Option<String>,
    pub(crate) rule: Option<String>,
}
