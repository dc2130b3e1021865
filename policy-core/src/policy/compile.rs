//! Validation: raw policy structs become the engine's typed form, or an error that points
//! at the offending value.

use alloc::{borrow::ToOwned, collections::BTreeSet, format, string::String, vec::Vec};
use core::ops::Range;
use toml::Spanned;

use super::identities::{issuer_identities, IssuerIdentities, Names};
use super::schema::{
    RawApiKey, RawEffect, RawGrant, RawIssuer, RawLogin, RawOrigin, RawPolicy, RawRateLimit,
    RawWebhook,
};
#[cfg(feature = "testing")]
use super::schema::{RawShadowExpect, RawTestCase};
use super::{Policy, PolicyError, SecretUse, Source};
use crate::access::Access;
use crate::apikey::ApiKey;
#[cfg(feature = "testing")]
use crate::cases::{
    Expectation, ShadowExpectation, TestCase, TokenRequestExpectation, DEFAULT_TEST_ENTROPY,
    DEFAULT_TEST_NOW,
};
use crate::engine::{Engine, Gateway, RateLimit, RatePer, SiteAccess, SiteSwitch};
use crate::identity::{valid_user, MAX_NAME_LEN};
use crate::jwt::Issuer;
use crate::keys::{Algorithm, KeySet};
use crate::origin::{CredentialMode, OriginConfig, DEFAULT_SESSION_COOKIES};
use crate::rate::Gcra;
#[cfg(feature = "testing")]
use crate::request::OwnedRequest;
use crate::route::RouteClass;
use crate::scope::{Effect, Grant, Principal, RepoPattern};
#[cfg(feature = "testing")]
use crate::time::UnixTime;
use crate::webhook::Webhook;

type At<'a> = &'a Source<'a>;

fn err<T>(at: At<'_>, span: Range<usize>, message: String) -> Result<T, PolicyError> {
    Err(at.error(Some(span), message))
}

const DEFAULT_MAX_TOKEN_BYTES: u64 = 8 * 1024;
const MAX_LEEWAY_SECONDS: u32 = 300;
const MAX_PERIOD_SECONDS: u64 = 30 * 24 * 3600;

pub(super) fn compile(raw: RawPolicy, at: At<'_>) -> Result<Policy, PolicyError> {
    let gateway = gateway(&raw, at)?;
    let gogs = gogs_versions(raw.origin.gogs.as_ref(), at)?;
    let service_secret_span = raw.origin.service_token_secret.as_ref().map(Spanned::span);
    let origin = origin(raw.origin, &gateway, at)?;
    let user_spans: Vec<(String, Range<usize>)> = raw
        .api_keys
        .iter()
        .map(|k| &k.get_ref().user)
        .chain(raw.bindings.iter().map(|b| &b.get_ref().user))
        .map(|user| (user.get_ref().to_ascii_lowercase(), user.span()))
        .chain(raw.grants.iter().flat_map(|g| {
            let who = &g.get_ref().who;
            who.get_ref()
                .0
                .iter()
                .filter_map(|p| p.strip_prefix("user:"))
                .map(|u| (u.to_ascii_lowercase(), who.span()))
                .collect::<Vec<_>>()
        }))
        .collect();
    let identities = issuer_identities(&raw.issuers, raw.bindings, at)?;
    let api_keys = api_keys(raw.api_keys, at)?;
    let names = Names::new(
        api_keys.iter().map(|k| k.name.clone()).collect(),
        &raw.issuers,
        &identities,
    );
    let issuers = issuers(raw.issuers, identities, at)?;
    let login = raw
        .login
        .map(|l| login(l.into_inner(), &issuers, at))
        .transpose()?;
    let (grants, shadow_grants) = grants(raw.grants, &names, at)?;
    let rate_limits = rate_limits(raw.rate_limits, &names, at)?;
    let webhook_secrets: Vec<SecretUse> = raw
        .webhooks
        .iter()
        .map(|w| {
            let w = w.get_ref();
            SecretUse {
                name: w.secret.get_ref().clone(),
                position: Some(at.position(w.secret.span().start)),
                purpose: format!("the secret of webhook `{}`", w.name.get_ref()),
                min_bytes: 1,
            }
        })
        .collect();
    let webhooks = webhooks(raw.webhooks, at)?;
    let mut origin = origin;
    let mut sso_secrets = Vec::new();
    let sso = match raw.sso {
        Some(raw_sso) => {
            let mut taken: Vec<&str> = webhooks.iter().map(|w| w.path.as_str()).collect();
            taken.push(crate::LOGIN_METADATA_PATH);
            let (sso, secrets) = super::sso::sso(raw_sso, &issuers, &taken, at)?;
            sso_secrets = secrets;
            // The session cookie is the edge's own: like Gogs' sign-in cookies, it never
            // reaches the origin.
            if !origin.session_cookies.contains(&sso.cookie) {
                origin.session_cookies.push(sso.cookie.clone());
            }
            Some(sso)
        }
        None => None,
    };
    #[cfg(feature = "testing")]
    let tests = tests(raw.tests, at)?;
    let mut origin_secrets = origin_secrets(&origin, service_secret_span, &user_spans, at);
    origin_secrets.extend(webhook_secrets);
    origin_secrets.extend(sso_secrets);
    Ok(Policy {
        origin_secrets,
        engine: Engine {
            gateway,
            origin,
            issuers,
            api_keys,
            grants,
            shadow_grants,
            rate_limits,
            webhooks,
            login,
            sso,
            gogs,
            crypto: &crate::RustCrypto,
            revision: revision_of(at.text),
        },
        #[cfg(feature = "testing")]
        tests,
    })
}

/// `[login]` as the document the gateway publishes at [`crate::LOGIN_METADATA_PATH`].
fn login(raw: RawLogin, issuers: &[Issuer], at: At<'_>) -> Result<String, PolicyError> {
    #[derive(serde::Serialize)]
    struct Published<'a> {
        issuer: &'a str,
        client_id: &'a str,
        scope: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        resource: Option<&'a str>,
    }
    let name = raw.issuer.get_ref();
    let Some(issuer) = issuers.iter().find(|i| &i.name == name) else {
        let known: Vec<&str> = issuers.iter().map(|i| i.name.as_str()).collect();
        return err(
            at,
            raw.issuer.span(),
            format!(
                "login.issuer `{name}` names no [[issuer]] (there are: `{}`)",
                known.join("`, `")
            ),
        );
    };
    // Each is sent as a form field and shown to people: visible characters only.
    let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b));
    let client_id = raw.client_id.get_ref();
    if !visible(client_id) || client_id.contains(' ') {
        return err(
            at,
            raw.client_id.span(),
            format!("login.client_id `{client_id}` must be visible characters without spaces"),
        );
    }
    let scope = raw
        .scope
        .as_ref()
        .map_or("openid offline_access", |s| s.get_ref().as_str());
    if let Some(spanned) = &raw.scope {
        if !visible(scope) || scope.split(' ').any(str::is_empty) {
            return err(
                at,
                spanned.span(),
                format!("login.scope `{scope}` must be scope names separated by single spaces"),
            );
        }
    }
    let resource = raw.resource.as_ref().map(Spanned::get_ref);
    if let (Some(spanned), Some(resource)) = (&raw.resource, resource) {
        if !visible(resource) || resource.contains(' ') || !resource.contains(':') {
            return err(
                at,
                spanned.span(),
                format!("login.resource `{resource}` must be an absolute URI (RFC 8707)"),
            );
        }
    }
    serde_json::to_string(&Published {
        issuer: &issuer.iss,
        client_id,
        scope,
        resource: resource.map(String::as_str),
    })
    .or_else(|e| err(at, raw.issuer.span(), format!("login: {e}")))
}

/// The policy's revision: `sha256:` and the first 16 hex digits of the SHA-256 of its
/// text, so every host given the same file names the same revision.
fn revision_of(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hex = hex::encode(Sha256::digest(text.as_bytes()));
    hex.truncate(16);
    format!("sha256:{hex}")
}

/// The origin secrets the policy names, each once, where it is first named.
fn origin_secrets(
    origin: &OriginConfig,
    service_secret_span: Option<Range<usize>>,
    users: &[(String, Range<usize>)],
    at: At<'_>,
) -> Vec<SecretUse> {
    let mut out: Vec<SecretUse> = Vec::new();
    let modes = [origin.git, origin.api, origin.web];
    if let (true, Some(name)) = (
        modes.contains(&CredentialMode::ServiceToken),
        &origin.service_token_secret,
    ) {
        out.push(SecretUse {
            name: name.clone(),
            position: service_secret_span.map(|s| at.position(s.start)),
            purpose: String::from("the service account's Gogs token"),
            min_bytes: 1,
        });
    }
    if modes.contains(&CredentialMode::UserToken) {
        for (user, span) in users {
            let name = origin.user_token_secret.replace("{user}", user);
            if !out.iter().any(|u| u.name == name) {
                out.push(SecretUse {
                    name,
                    position: Some(at.position(span.start)),
                    purpose: format!("the Gogs token of `{user}`"),
                    min_bytes: 1,
                });
            }
        }
    }
    out
}

/// `origin.gogs`: the Gogs versions whose routes requests are classified against; by
/// default every version Tollgate has an inventory of, so a request must satisfy what any
/// of them would make of it.
fn gogs_versions(
    raw: Option<&Spanned<super::schema::OneOrMany>>,
    at: At<'_>,
) -> Result<Vec<&'static crate::route::Version>, PolicyError> {
    let all = crate::route::versions();
    let Some(names) = raw else {
        return Ok(all.iter().collect());
    };
    if names.get_ref().0.is_empty() {
        return err(
            at,
            names.span(),
            "origin.gogs must name at least one Gogs version".to_owned(),
        );
    }
    let mut out: Vec<&'static crate::route::Version> = Vec::new();
    for name in &names.get_ref().0 {
        match all.iter().find(|v| v.name == name) {
            Some(v) if !out.iter().any(|o| o.name == v.name) => out.push(v),
            Some(_) => {}
            None => {
                let known: Vec<&str> = all.iter().map(|v| v.name).collect();
                return err(
                    at,
                    names.span(),
                    format!(
                        "unknown Gogs version `{name}`; route inventories exist for `{}`",
                        known.join("`, `")
                    ),
                );
            }
        }
    }
    Ok(out)
}

fn gateway(raw: &RawPolicy, at: At<'_>) -> Result<Gateway, PolicyError> {
    let g = &raw.gateway;
    let realm = match &g.realm {
        Some(realm) => {
            let ok = !realm.get_ref().is_empty()
                && realm.get_ref().len() <= 64
                && realm
                    .get_ref()
                    .chars()
                    .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\');
            if !ok {
                return err(
                    at,
                    realm.span(),
                    format!(
                        "realm `{}` must be 1-64 printable ASCII characters without `\"` or `\\`",
                        realm.get_ref()
                    ),
                );
            }
            realm.get_ref().clone()
        }
        None => String::from("Gogs"),
    };
    let max_token_bytes = match &g.max_token_bytes {
        Some(max) if !(256..=65_536).contains(max.get_ref()) => {
            return err(
                at,
                max.span(),
                format!(
                    "max_token_bytes must be between 256 and 65536, not {}",
                    max.get_ref()
                ),
            );
        }
        Some(max) => *max.get_ref(),
        None => DEFAULT_MAX_TOKEN_BYTES,
    };
    let anonymous_ipv6_prefix = match &g.anonymous_ipv6_prefix {
        Some(p) if !(1..=128).contains(p.get_ref()) => {
            return err(
                at,
                p.span(),
                format!(
                    "anonymous_ipv6_prefix must be between 1 and 128, not {}",
                    p.get_ref()
                ),
            );
        }
        Some(p) => *p.get_ref(),
        None => crate::client_key::DEFAULT_IPV6_PREFIX,
    };
    let site = |s: &Option<Spanned<SiteAccess>>| {
        s.as_ref()
            .map_or(SiteAccess::Authenticated, |s| *s.get_ref())
    };
    Ok(Gateway {
        realm,
        max_token_bytes: usize::try_from(max_token_bytes).unwrap_or(usize::MAX),
        hide_forbidden_repos: g.hide_forbidden_repos.unwrap_or(true),
        site_web: site(&g.site_web),
        site_api: site(&g.site_api),
        cross_repo: g.cross_repo.unwrap_or(SiteSwitch::Deny),
        by_id: g.by_id.unwrap_or(SiteSwitch::Deny),
        operator: g.operator.unwrap_or(SiteSwitch::Deny),
        anonymous_ipv6_prefix,
    })
}

/// An RFC 6265 cookie name: a token, so no separators, spaces or controls.
pub(super) fn cookie_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

fn header_name_ok(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Request headers HTTP or Tollgate itself gives a meaning: Gogs' reverse-proxy user
/// header must be none of them, or setting it would clobber (or smuggle) that meaning.
const HEADERS_WITH_A_MEANING: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "via",
    "range",
    "origin",
    "referer",
    "accept",
    "accept-encoding",
    "user-agent",
    "git-protocol",
    "x-csrf-token",
    "x-gogs-event",
    "x-gogs-delivery",
    "x-gogs-signature",
];

fn origin(raw: RawOrigin, gateway: &Gateway, at: At<'_>) -> Result<OriginConfig, PolicyError> {
    let mode =
        |m: &Option<Spanned<CredentialMode>>, default| m.as_ref().map_or(default, |m| *m.get_ref());
    let git = mode(&raw.git, CredentialMode::UserToken);
    let api = mode(&raw.api, CredentialMode::UserToken);
    let web = mode(&raw.web, CredentialMode::ReverseProxy);
    if let Some(g) = &raw.git {
        if matches!(git, CredentialMode::ReverseProxy | CredentialMode::None) {
            return err(at, g.span(), "origin.git must be `user-token` or `service-token`: Gogs does not apply reverse-proxy authentication to git over HTTP".to_owned());
        }
    }
    if web == CredentialMode::ServiceToken && gateway.site_web != SiteAccess::Deny {
        let span = raw.web.as_ref().map(Spanned::span);
        return Err(at.error(span, "origin.web = `service-token` makes every page outside a repository (dashboards, settings, administration) run as the service account; set `gateway.site_web = \"deny\"`".to_owned()));
    }
    if api == CredentialMode::ServiceToken && gateway.site_api != SiteAccess::Deny {
        let span = raw.api.as_ref().map(Spanned::span);
        return Err(at.error(span, "origin.api = `service-token` makes every site-wide API call (`/api/v1/user/repos`, ...) run as the service account; set `gateway.site_api = \"deny\"`".to_owned()));
    }
    let uses_service = [git, api, web].contains(&CredentialMode::ServiceToken);
    let service_user = match raw.service_user {
        Some(user) if !valid_user(user.get_ref()) => {
            return err(
                at,
                user.span(),
                format!(
                    "service_user `{}` is not a valid Gogs user name",
                    user.get_ref()
                ),
            );
        }
        Some(user) => Some(user.into_inner().to_ascii_lowercase()),
        None => None,
    };
    let service_token_secret = raw.service_token_secret.map(Spanned::into_inner);
    if uses_service && (service_user.is_none() || service_token_secret.is_none()) {
        return Err(at.error(None, "[origin] uses `service-token`, so it needs both `service_user` and `service_token_secret`".to_owned()));
    }
    let user_token_secret = match raw.user_token_secret {
        Some(s) if !s.get_ref().contains("{user}") => {
            return err(
                at,
                s.span(),
                format!(
                    "user_token_secret `{}` must contain `{{user}}`",
                    s.get_ref()
                ),
            );
        }
        Some(s) => s.into_inner(),
        None => String::from("gogs-token/{user}"),
    };
    let user_header = match raw.user_header {
        Some(h) if !header_name_ok(h.get_ref()) => {
            return err(
                at,
                h.span(),
                format!(
                    "user_header `{}` is not a valid header name (letters, digits and `-`)",
                    h.get_ref()
                ),
            );
        }
        Some(h) if HEADERS_WITH_A_MEANING.contains(&h.get_ref().to_ascii_lowercase().as_str()) => {
            return err(
                at,
                h.span(),
                format!(
                    "user_header `{}` already means something to HTTP or to Tollgate; Gogs' default is `X-WEBAUTH-USER`",
                    h.get_ref()
                ),
            );
        }
        Some(h) => h.into_inner().to_ascii_lowercase(),
        None => String::from("x-webauth-user"),
    };
    let session_cookies = match raw.session_cookies {
        None => DEFAULT_SESSION_COOKIES.map(String::from).to_vec(),
        Some(list) if list.get_ref().is_empty() => {
            return err(at, list.span(), "session_cookies must name at least one cookie: Gogs always signs browsers in with its session cookie".to_owned());
        }
        Some(list) => {
            if let Some(bad) = list.get_ref().iter().find(|c| !cookie_name_ok(c)) {
                return err(
                    at,
                    list.span(),
                    format!("session_cookies: `{bad}` is not a valid cookie name"),
                );
            }
            list.into_inner()
        }
    };
    Ok(OriginConfig {
        git,
        api,
        web,
        user_token_secret,
        service_user,
        service_token_secret,
        user_header,
        session_cookies,
    })
}

fn rule_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub(super) fn unique_name(
    seen: &mut BTreeSet<String>,
    name: &Spanned<String>,
    what: &str,
    at: At<'_>,
) -> Result<String, PolicyError> {
    if !rule_name_ok(name.get_ref()) {
        return err(at, name.span(), format!("{what} name `{}` must be 1-{MAX_NAME_LEN} characters of letters, digits, `-`, `_`, `.`", name.get_ref()));
    }
    if !seen.insert(name.get_ref().clone()) {
        return err(
            at,
            name.span(),
            format!("{what} name `{}` is used twice", name.get_ref()),
        );
    }
    Ok(name.get_ref().clone())
}

/// Where the edge may fetch from or send a browser to (JWKS, the `[sso]` endpoints): `https://`, or plain `http://` to a loopback
/// address. Parsed as an RFC 3986 URI, and anything a host's own URL parser might read
/// differently is refused outright: user info (`http://127.0.0.1:80@evil.example/`),
/// percent-encoded or empty hosts, fragments, an upper-case scheme.
pub(super) fn fetch_url_problem(url: &str) -> Option<&'static str> {
    use fluent_uri::component::Host;
    let Ok(uri) = fluent_uri::Uri::parse(url) else {
        return Some("is not a valid URI");
    };
    let Some(authority) = uri.authority() else {
        return Some("has no host");
    };
    if authority.userinfo().is_some() {
        return Some("carries user information (`user@`), which names no host but can hide one");
    }
    if uri.fragment().is_some() {
        return Some("has a fragment");
    }
    if authority
        .port()
        .is_some_and(|p| p.as_str().is_empty() || p.as_str().parse::<u16>().is_err())
    {
        return Some("has an invalid port");
    }
    let loopback = match authority.host_parsed() {
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
        Host::RegName(name) => {
            let name = name.as_str();
            if name.is_empty() || name.contains('%') {
                return Some("has an empty or percent-encoded host");
            }
            name.eq_ignore_ascii_case("localhost")
        }
        _ => return Some("has a host of an unsupported kind"),
    };
    match uri.scheme().as_str() {
        "https" => None,
        "http" if loopback => None,
        "http" => Some("must be https:// (plain http only to a loopback address)"),
        _ => Some("must be https:// (plain http only to a loopback address)"),
    }
}

fn issuers(
    raw: Vec<Spanned<RawIssuer>>,
    identities: Vec<IssuerIdentities>,
    at: At<'_>,
) -> Result<Vec<Issuer>, PolicyError> {
    let mut names = BTreeSet::new();
    let mut isses = BTreeSet::new();
    let mut out = Vec::new();
    for (spanned, identities) in raw.into_iter().zip(identities) {
        let table = spanned.span();
        let r = spanned.into_inner();
        let name = unique_name(&mut names, &r.name, "issuer", at)?;
        if r.issuer.get_ref().is_empty() {
            return err(at, r.issuer.span(), "issuer must not be empty".to_owned());
        }
        if !isses.insert(r.issuer.get_ref().clone()) {
            return err(
                at,
                r.issuer.span(),
                format!("issuer `{}` is configured twice", r.issuer.get_ref()),
            );
        }
        if r.audiences.get_ref().is_empty() || r.audiences.get_ref().iter().any(String::is_empty) {
            return err(at, r.audiences.span(), "audiences must list at least one non-empty audience: tokens minted for other services must not open Gogs".to_owned());
        }
        if r.algorithms.is_empty() {
            return err(
                at,
                table,
                format!("issuer `{name}` needs `algorithms`, e.g. [\"ES256\"]"),
            );
        }
        let mut algorithms = Vec::new();
        for alg in &r.algorithms {
            let parsed = match Algorithm::from_name(alg.get_ref()) {
                Some(a) => a,
                None if alg.get_ref().eq_ignore_ascii_case("none") => {
                    return err(
                        at,
                        alg.span(),
                        "algorithm `none` is never accepted: unsigned tokens would let anyone in"
                            .to_owned(),
                    );
                }
                None => {
                    return err(at, alg.span(), format!("unsupported algorithm `{}`; expected one of HS256, RS256, PS256, ES256, EdDSA", alg.get_ref()));
                }
            };
            if !algorithms.contains(&parsed) {
                algorithms.push(parsed);
            }
        }
        let inline_keys = match &r.jwks {
            Some(jwks) => Some(
                KeySet::from_json(jwks.get_ref())
                    .map_err(|e| at.error(Some(jwks.span()), format!("{e}")))?,
            ),
            None => None,
        };
        if let Some(url) = &r.jwks_url {
            if let Some(problem) = fetch_url_problem(url.get_ref()) {
                return err(
                    at,
                    url.span(),
                    format!("jwks_url `{}` {problem}", url.get_ref()),
                );
            }
            if let Some(hs) = r.algorithms.iter().find(|a| a.get_ref() == "HS256") {
                return err(at, hs.span(), format!("issuer `{name}`: HS256 cannot be combined with `jwks_url`: an HMAC key fetched from a URL is no secret; keep HS256 keys inline in `jwks`, or use RS256, PS256, ES256 or EdDSA"));
            }
        }
        if inline_keys.is_none() && r.jwks_url.is_none() {
            return err(
                at,
                table,
                format!("issuer `{name}` needs `jwks` (inline JSON) or `jwks_url`"),
            );
        }
        let leeway_secs = match &r.leeway_seconds {
            Some(l) if *l.get_ref() > MAX_LEEWAY_SECONDS => {
                return err(
                    at,
                    l.span(),
                    format!("leeway_seconds must be at most {MAX_LEEWAY_SECONDS}"),
                );
            }
            Some(l) => *l.get_ref(),
            None => 30,
        };
        out.push(Issuer {
            name,
            iss: r.issuer.into_inner(),
            audiences: r.audiences.into_inner(),
            algorithms,
            inline_keys,
            jwks_url: r.jwks_url.map(Spanned::into_inner),
            leeway_secs,
            user_claim: identities.user_claim,
            groups_claim: r.groups_claim,
            token_type: r.token_type,
            require_exp: r.require_exp.unwrap_or(true),
            bindings: identities.bindings,
            audit_claims: identities.audit_claims,
        });
    }
    Ok(out)
}

pub(super) fn group_ok(g: &str) -> bool {
    !g.is_empty() && g.len() <= MAX_NAME_LEN && !g.chars().any(char::is_control)
}

fn api_keys(raw: Vec<Spanned<RawApiKey>>, at: At<'_>) -> Result<Vec<ApiKey>, PolicyError> {
    let mut names = BTreeSet::new();
    let mut hashes = BTreeSet::new();
    let mut out = Vec::new();
    for spanned in raw {
        let r = spanned.into_inner();
        let name = unique_name(&mut names, &r.name, "api_key", at)?;
        let hex_hash = r.sha256.get_ref();
        let mut sha256 = [0u8; 32];
        if hex::decode_to_slice(hex_hash, &mut sha256).is_err() {
            return err(
                at,
                r.sha256.span(),
                "sha256 must be 64 hex digits: the SHA-256 of the key (`tollgate hash-key`)"
                    .to_owned(),
            );
        }
        if !hashes.insert(sha256) {
            return err(
                at,
                r.sha256.span(),
                "this sha256 is used by another api_key".to_owned(),
            );
        }
        if !valid_user(r.user.get_ref()) {
            return err(
                at,
                r.user.span(),
                format!("user `{}` is not a valid Gogs user name", r.user.get_ref()),
            );
        }
        if let Some(groups) = &r.groups {
            if let Some(bad) = groups.get_ref().iter().find(|g| !group_ok(g)) {
                return err(
                    at,
                    groups.span(),
                    format!("group `{bad}` is not a valid group name"),
                );
            }
        }
        out.push(ApiKey {
            name,
            sha256,
            user: r.user.get_ref().to_ascii_lowercase(),
            groups: r.groups.map(Spanned::into_inner).unwrap_or_default(),
        });
    }
    Ok(out)
}

fn principals(
    who: &Spanned<super::schema::OneOrMany>,
    names: &Names,
    at: At<'_>,
) -> Result<Vec<Principal>, PolicyError> {
    if who.get_ref().0.is_empty() {
        return err(
            at,
            who.span(),
            "`who` must name at least one principal".to_owned(),
        );
    }
    let mut out = Vec::new();
    for entry in &who.get_ref().0 {
        let principal = match entry.split_once(':') {
            _ if entry == "*" || entry == "anyone" => Principal::Anyone,
            _ if entry == "authenticated" => Principal::Authenticated,
            _ if entry == "anonymous" => Principal::Anonymous,
            Some(("user", user)) if valid_user(user) => {
                if let Some((first, second)) = &names.undeclared_user_issuers {
                    return err(at, who.span(), format!("`{entry}` is ambiguous: issuers `{first}` and `{second}` both take user names from a claim, and one issuer's `{user}` may be someone else than another's; set `gogs_users = true` on each issuer whose users are Gogs users (and `false` on the others)"));
                }
                Principal::User {
                    name: user.to_ascii_lowercase(),
                    user_issuers: names.user_issuers.clone(),
                }
            }
            Some(("group", group)) if group_ok(group) => Principal::Group(String::from(group)),
            Some(("key", key)) if names.keys.contains(key) => Principal::Key(String::from(key)),
            Some(("binding", binding)) if names.bindings.contains(binding) => {
                Principal::Binding(String::from(binding))
            }
            Some(("issuer", issuer)) if names.issuers.contains(issuer) => {
                Principal::Issuer(String::from(issuer))
            }
            Some((kind @ ("key" | "binding" | "issuer"), name)) => {
                let table = match kind {
                    "key" => "[[api_key]]",
                    "binding" => "[[binding]]",
                    _ => "[[issuer]]",
                };
                return err(at, who.span(), format!("`{kind}:{name}` names no {table}"));
            }
            _ => {
                return err(at, who.span(), format!("unknown principal `{entry}`; expected `user:NAME`, `group:NAME`, `key:NAME`, `binding:NAME`, `issuer:NAME`, `authenticated`, `anonymous` or `*`"));
            }
        };
        out.push(principal);
    }
    Ok(out)
}

fn pattern_part_ok(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 100
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*' | b'?'))
}

fn repo_patterns(
    repos: &Spanned<super::schema::OneOrMany>,
    at: At<'_>,
) -> Result<Vec<RepoPattern>, PolicyError> {
    if repos.get_ref().0.is_empty() {
        return err(
            at,
            repos.span(),
            "`repos` must list at least one `owner/repo` pattern".to_owned(),
        );
    }
    let mut out = Vec::new();
    for pattern in &repos.get_ref().0 {
        let lower = pattern.to_ascii_lowercase();
        let Some((owner, name)) = lower
            .split_once('/')
            .filter(|(o, n)| pattern_part_ok(o) && pattern_part_ok(n))
        else {
            return err(at, repos.span(), format!("repository pattern `{pattern}` must be `owner/repo`, each part letters, digits, `-`, `_`, `.`, `*` or `?`"));
        };
        if name.ends_with(".git") {
            return err(at, repos.span(), format!("repository pattern `{pattern}`: drop the `.git` suffix (names are matched without it)"));
        }
        out.push(RepoPattern::new(owner, name));
    }
    Ok(out)
}

/// The enforced grants, and every grant when some are shadow grants (see
/// [`Engine::shadow_grants`]).
fn grants(
    raw: Vec<Spanned<RawGrant>>,
    principal_names: &Names,
    at: At<'_>,
) -> Result<(Vec<Grant>, Option<Vec<Grant>>), PolicyError> {
    let mut names = BTreeSet::new();
    let mut all = Vec::new();
    let mut shadow = Vec::new();
    for (index, spanned) in raw.into_iter().enumerate() {
        let r = spanned.into_inner();
        let name = match &r.name {
            Some(name) => unique_name(&mut names, name, "grant", at)?,
            None => {
                let generated = format!("#{}", index + 1);
                names.insert(generated.clone());
                generated
            }
        };
        shadow.push(is_shadow(r.mode.as_ref(), at)?);
        all.push(Grant {
            name,
            who: principals(&r.who, principal_names, at)?,
            repos: repo_patterns(&r.repos, at)?,
            access: r.access,
            effect: match r.effect {
                Some(RawEffect::Deny) => Effect::Deny,
                Some(RawEffect::Allow) | None => Effect::Allow,
            },
        });
    }
    if !shadow.contains(&true) {
        return Ok((all, None));
    }
    let enforced = all
        .iter()
        .zip(&shadow)
        .filter(|(_, shadow)| !**shadow)
        .map(|(grant, _)| grant.clone())
        .collect();
    Ok((enforced, Some(all)))
}

/// Whether a rule's `mode` is `shadow` (evaluated and reported, never deciding) rather
/// than `enforce`, the default.
fn is_shadow(mode: Option<&Spanned<String>>, at: At<'_>) -> Result<bool, PolicyError> {
    match mode.map(|m| (m.get_ref().as_str(), m.span())) {
        None | Some(("enforce", _)) => Ok(false),
        Some(("shadow", _)) => Ok(true),
        Some((other, span)) => err(
            at,
            span,
            format!("unknown mode `{other}`; expected `enforce` or `shadow`"),
        ),
    }
}

fn rate_limits(
    raw: Vec<Spanned<RawRateLimit>>,
    principal_names: &Names,
    at: At<'_>,
) -> Result<Vec<RateLimit>, PolicyError> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for spanned in raw {
        let r = spanned.into_inner();
        let name = unique_name(&mut names, &r.name, "rate_limit", at)?;
        let requests = *r.requests.get_ref();
        if requests == 0 {
            return err(
                at,
                r.requests.span(),
                "requests must be at least 1 (use a deny grant to shut someone out)".to_owned(),
            );
        }
        let period = *r.period_seconds.get_ref();
        if !(1..=MAX_PERIOD_SECONDS).contains(&period) {
            return err(
                at,
                r.period_seconds.span(),
                format!("period_seconds must be between 1 and {MAX_PERIOD_SECONDS}"),
            );
        }
        let burst = match &r.burst {
            Some(b) if *b.get_ref() == 0 => {
                return err(at, b.span(), "burst must be at least 1".to_owned())
            }
            Some(b) => *b.get_ref(),
            None => requests,
        };
        let gcra = Gcra::new(requests, period, burst).ok_or_else(|| {
            at.error(
                Some(r.requests.span()),
                "rate limit values out of range".to_owned(),
            )
        })?;
        out.push(RateLimit {
            name,
            who: principals(&r.who, principal_names, at)?,
            classes: narrowing(r.class.as_ref(), "class", route_class, at)?,
            access: narrowing(r.access.as_ref(), "access", access_level, at)?,
            gcra,
            per: rate_per(r.per.as_ref(), r.shared.as_ref(), at)?,
            shadow: is_shadow(r.mode.as_ref(), at)?,
        });
    }
    Ok(out)
}

/// The largest `max_body_bytes` a webhook may set (and its default, 1 MiB).
const MAX_WEBHOOK_BODY: u64 = 16 << 20;
const DEFAULT_WEBHOOK_BODY: usize = 1 << 20;

/// Gogs' webhook events, as `X-Gogs-Event` names them.
const GOGS_EVENTS: [&str; 11] = [
    "create",
    "delete",
    "fork",
    "push",
    "issues",
    "pull_request",
    "issue_comment",
    "release",
    "pull_request_review",
    "pull_request_review_comment",
    "ping",
];

/// A path the gateway answers itself (a webhook, sign-in's callback and logout): absolute,
/// of letters, digits, `-`, `_`, `.` and `/`, with no `.` or `..` segment, no `//` and no
/// trailing `/`, so the edge and every HTTP stack read it alike.
pub(super) fn plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && !path.ends_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
        && !path.split('/').any(|s| s == "." || s == "..")
        && !path.contains("//")
}

fn webhooks(raw: Vec<Spanned<RawWebhook>>, at: At<'_>) -> Result<Vec<Webhook>, PolicyError> {
    let mut names = BTreeSet::new();
    let mut paths = BTreeSet::new();
    let mut out = Vec::new();
    for spanned in raw {
        let r = spanned.into_inner();
        let name = unique_name(&mut names, &r.name, "webhook", at)?;
        let path = r.path.get_ref();
        if !plain_path(path) {
            return err(at, r.path.span(), format!("webhook path `{path}` must be an absolute path of letters, digits, `-`, `_`, `.` and `/` (no `..`, no trailing `/`)"));
        }
        if !paths.insert(path.clone()) {
            return err(at, r.path.span(), format!("two webhooks at `{path}`"));
        }
        let events = match &r.events {
            None => Vec::new(),
            Some(events) => {
                for event in &events.get_ref().0 {
                    if !GOGS_EVENTS.contains(&event.as_str()) {
                        return err(
                            at,
                            events.span(),
                            format!(
                                "unknown event `{event}`; Gogs sends `{}`",
                                GOGS_EVENTS.join("`, `")
                            ),
                        );
                    }
                }
                events.get_ref().0.clone()
            }
        };
        let max_body_bytes = match &r.max_body_bytes {
            Some(n) if !(1..=MAX_WEBHOOK_BODY).contains(n.get_ref()) => {
                return err(
                    at,
                    n.span(),
                    format!("max_body_bytes must be between 1 and {MAX_WEBHOOK_BODY}"),
                );
            }
            Some(n) => usize::try_from(*n.get_ref()).unwrap_or(DEFAULT_WEBHOOK_BODY),
            None => DEFAULT_WEBHOOK_BODY,
        };
        out.push(Webhook {
            name,
            path: path.clone(),
            secret: r.secret.get_ref().clone(),
            events,
            repos: repo_patterns(&r.repos, at)?,
            max_body_bytes,
        });
    }
    Ok(out)
}

/// The values of a rate limit's `class` or `access` (a name or a list of them); each must
/// be one `parse` knows.
fn narrowing<T: PartialEq>(
    raw: Option<&Spanned<super::schema::OneOrMany>>,
    field: &str,
    parse: fn(&str) -> Result<T, &'static str>,
    at: At<'_>,
) -> Result<Vec<T>, PolicyError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    if raw.get_ref().0.is_empty() {
        return err(
            at,
            raw.span(),
            format!("{field} must name at least one value (leave it out to count every request)"),
        );
    }
    let mut out = Vec::new();
    for name in &raw.get_ref().0 {
        let value = parse(name).map_err(|expected| {
            at.error(
                Some(raw.span()),
                format!("unknown {field} `{name}`; expected {expected}"),
            )
        })?;
        if !out.contains(&value) {
            out.push(value);
        }
    }
    Ok(out)
}

fn route_class(name: &str) -> Result<RouteClass, &'static str> {
    match name {
        "git" => Ok(RouteClass::Git),
        "lfs" => Ok(RouteClass::Lfs),
        "api" => Ok(RouteClass::Api),
        "web" => Ok(RouteClass::Web),
        _ => Err("`git`, `lfs`, `api` or `web`"),
    }
}

fn access_level(name: &str) -> Result<Access, &'static str> {
    match name {
        "read" => Ok(Access::Read),
        "write" => Ok(Access::Write),
        "admin" => Ok(Access::Admin),
        "owner" => Ok(Access::Owner),
        _ => Err("`read`, `write`, `admin` or `owner`"),
    }
}

fn rate_per(
    per: Option<&Spanned<String>>,
    shared: Option<&Spanned<bool>>,
    at: At<'_>,
) -> Result<RatePer, PolicyError> {
    match (per, shared) {
        (Some(_), Some(shared)) => err(
            at,
            shared.span(),
            "`shared` is the older spelling of `per = \"shared\"`; give only `per`".to_owned(),
        ),
        (Some(per), None) => match per.get_ref().as_str() {
            "identity" => Ok(RatePer::Identity),
            "identity+repo" => Ok(RatePer::IdentityAndRepo),
            "shared" => Ok(RatePer::Shared),
            other => err(
                at,
                per.span(),
                format!("unknown per `{other}`; expected `identity`, `identity+repo` or `shared`"),
            ),
        },
        (None, Some(shared)) if *shared.get_ref() => Ok(RatePer::Shared),
        (None, _) => Ok(RatePer::Identity),
    }
}

#[cfg(feature = "testing")]
fn tests(raw: Vec<Spanned<RawTestCase>>, at: At<'_>) -> Result<Vec<TestCase>, PolicyError> {
    let mut out = Vec::new();
    for spanned in raw {
        let table = spanned.span();
        let r = spanned.into_inner();
        let expect_span = r.expect.span();
        let e = r.expect.into_inner();
        let expect = Expectation {
            allow: e.allow,
            status: e.status,
            reason: e.reason,
            rule: e.rule,
            message: e.message,
            user: e.user,
            binding: e.binding,
            claims: e.claims,
            repo: e.repo,
            access: e.access,
            retry_after: e.retry_after,
            headers: e.headers,
            set: e.set,
            strip: e.strip,
            shadow: match e.shadow {
                None => None,
                Some(RawShadowExpect::Present(false)) => Some(ShadowExpectation::Absent),
                Some(RawShadowExpect::Present(true)) => {
                    return err(at, expect_span, format!("test `{}`: `shadow = true` says too little; give the expected shadow outcome as a table (allow, status, reason, rule)", r.name));
                }
                Some(RawShadowExpect::Fields(f)) => Some(ShadowExpectation::Present {
                    allow: f.allow,
                    status: f.status,
                    reason: f.reason,
                    rule: f.rule,
                }),
            },
            token_request: e.token_request.map(|t| TokenRequestExpectation {
                url: t.url,
                body: t.body,
                headers: t.headers,
            }),
        };
        if expect.is_empty() {
            return err(at, expect_span, format!("test `{}` expects nothing; name at least one field (allow, status, reason, ...)", r.name));
        }
        let repeat = match &r.repeat {
            Some(n) if !(1..=10_000).contains(n.get_ref()) => {
                return err(
                    at,
                    n.span(),
                    "repeat must be between 1 and 10000".to_owned(),
                );
            }
            Some(n) => *n.get_ref(),
            None => 1,
        };
        // Every request carries the same randomness on every host unless the case says.
        let with_entropy = |mut request: OwnedRequest| {
            request.entropy.get_or_insert(DEFAULT_TEST_ENTROPY);
            request
        };
        out.push(TestCase {
            name: r.name,
            position: at.position(table.start),
            now: UnixTime::from_secs(r.now.unwrap_or(DEFAULT_TEST_NOW)),
            repeat,
            before: r.before.into_iter().map(with_entropy).collect(),
            request: with_entropy(r.request),
            exchange: r.exchange,
            expect,
        });
    }
    Ok(out)
}
