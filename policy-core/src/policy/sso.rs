//! `[sso]`: browser single sign-on, validated into [`Sso`].

use alloc::{borrow::ToOwned, boxed::Box, format, string::String, vec::Vec};
use toml::Spanned;

use super::compile::{cookie_name_ok, fetch_url_problem, plain_path};
use super::schema::RawSso;
use super::{PolicyError, SecretUse, Source};
use crate::jwt::Issuer;
use crate::sso::{Sso, MIN_KEY_BYTES};

const DEFAULT_COOKIE: &str = "tollgate_session";
/// Under Gogs' reserved user name `-`, so no repository or user page of Gogs is shadowed.
const DEFAULT_LOGOUT_PATH: &str = "/-/tollgate/logout";
const DEFAULT_LIFETIME_SECONDS: u64 = 8 * 3600;
const LIFETIME_SECONDS: core::ops::RangeInclusive<u64> = 60..=30 * 24 * 3600;

fn err<T>(
    at: &Source<'_>,
    span: core::ops::Range<usize>,
    message: String,
) -> Result<T, PolicyError> {
    Err(at.error(Some(span), message))
}

/// `[sso]` checked against the policy's issuers; `taken` are the paths the gateway already
/// answers itself (webhooks, the login document), which sign-in's paths must not be.
pub(super) fn sso(
    raw: Spanned<RawSso>,
    issuers: &[Issuer],
    taken: &[&str],
    at: &Source<'_>,
) -> Result<(Box<Sso>, Vec<SecretUse>), PolicyError> {
    let table = raw.span();
    let r = raw.into_inner();
    let name = r.issuer.get_ref();
    let Some(issuer) = issuers.iter().find(|i| &i.name == name) else {
        let known: Vec<&str> = issuers.iter().map(|i| i.name.as_str()).collect();
        return err(
            at,
            r.issuer.span(),
            format!(
                "sso.issuer `{name}` names no [[issuer]] (there are: `{}`)",
                known.join("`, `")
            ),
        );
    };
    let client_id = r.client_id.get_ref();
    if client_id.is_empty() || !client_id.bytes().all(|b| b.is_ascii_graphic()) {
        return err(
            at,
            r.client_id.span(),
            format!("sso.client_id `{client_id}` must be visible characters without spaces"),
        );
    }
    for (field, url) in [
        ("authorization_endpoint", Some(&r.authorization_endpoint)),
        ("token_endpoint", Some(&r.token_endpoint)),
        ("redirect_uri", Some(&r.redirect_uri)),
        ("end_session_endpoint", r.end_session_endpoint.as_ref()),
    ] {
        let Some(url) = url else { continue };
        if let Some(problem) = fetch_url_problem(url.get_ref()) {
            return err(
                at,
                url.span(),
                format!("sso.{field} `{}` {problem}", url.get_ref()),
            );
        }
    }
    let redirect_uri = r.redirect_uri.get_ref();
    let callback_path = match fluent_uri::Uri::parse(redirect_uri.as_str()) {
        Ok(uri) if uri.query().is_none() && plain_path(uri.path().as_str()) => {
            String::from(uri.path().as_str())
        }
        _ => {
            return err(
                at,
                r.redirect_uri.span(),
                format!("sso.redirect_uri `{redirect_uri}` must end in a path of letters, digits, `-`, `_`, `.` and `/` (no query): the edge answers the provider's callback there"),
            )
        }
    };
    let logout_path = match &r.logout_path {
        Some(path) if !plain_path(path.get_ref()) => {
            return err(
                at,
                path.span(),
                format!(
                    "sso.logout_path `{}` must be an absolute path of letters, digits, `-`, `_`, `.` and `/` (no `..`, no trailing `/`)",
                    path.get_ref()
                ),
            )
        }
        Some(path) => path.get_ref().clone(),
        None => String::from(DEFAULT_LOGOUT_PATH),
    };
    for (field, path, span) in [
        ("redirect_uri", &callback_path, r.redirect_uri.span()),
        (
            "logout_path",
            &logout_path,
            r.logout_path.as_ref().map_or(table.clone(), Spanned::span),
        ),
    ] {
        if taken.contains(&path.as_str()) || (field == "logout_path" && *path == callback_path) {
            return err(
                at,
                span,
                format!("sso.{field}: the gateway already answers `{path}` itself"),
            );
        }
    }
    let scopes: Vec<String> = match &r.scopes {
        None => alloc::vec![String::from("openid")],
        Some(scopes) => {
            let list = scopes.get_ref();
            if let Some(bad) = list.iter().find(|s| {
                s.is_empty()
                    || !s
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            }) {
                return err(
                    at,
                    scopes.span(),
                    format!("sso.scopes: `{bad}` is not a scope name"),
                );
            }
            if !list.iter().any(|s| s == "openid") {
                return err(
                    at,
                    scopes.span(),
                    "sso.scopes must include `openid`: the edge signs people in with the ID token"
                        .to_owned(),
                );
            }
            list.clone()
        }
    };
    let cookie = match &r.cookie {
        Some(c) if !cookie_name_ok(c.get_ref()) => {
            return err(
                at,
                c.span(),
                format!("sso.cookie `{}` is not a valid cookie name", c.get_ref()),
            )
        }
        Some(c) => c.get_ref().clone(),
        None => String::from(DEFAULT_COOKIE),
    };
    let lifetime_secs = match &r.lifetime_seconds {
        Some(l) if !LIFETIME_SECONDS.contains(l.get_ref()) => {
            return err(
                at,
                l.span(),
                format!(
                    "sso.lifetime_seconds must be between {} and {} (30 days), not {}",
                    LIFETIME_SECONDS.start(),
                    LIFETIME_SECONDS.end(),
                    l.get_ref()
                ),
            )
        }
        Some(l) => *l.get_ref(),
        None => DEFAULT_LIFETIME_SECONDS,
    };
    let post_logout_redirect_uri = match &r.post_logout_redirect_uri {
        None => None,
        Some(after) => {
            let local = crate::sso::local_path(after.get_ref());
            let absolute = fetch_url_problem(after.get_ref()).is_none();
            let allowed = absolute || (local && r.end_session_endpoint.is_none());
            if !allowed {
                return err(
                    at,
                    after.span(),
                    format!(
                        "sso.post_logout_redirect_uri `{}` must be an https:// URL{}",
                        after.get_ref(),
                        if r.end_session_endpoint.is_some() {
                            " (the provider sends the browser there)"
                        } else {
                            " or a path on this gateway"
                        }
                    ),
                );
            }
            Some(after.get_ref().clone())
        }
    };
    let mut secrets = Vec::new();
    for (field, secret, purpose, min_bytes) in [
        (
            "session_key",
            Some(&r.session_key),
            "the key that signs browser sessions ([sso])",
            MIN_KEY_BYTES,
        ),
        (
            "client_secret",
            r.client_secret.as_ref(),
            "the client secret for the identity provider's token endpoint ([sso])",
            1,
        ),
    ] {
        let Some(secret) = secret else { continue };
        if secret.get_ref().is_empty() {
            return err(
                at,
                secret.span(),
                format!("sso.{field} must name a secret in the host's secret store"),
            );
        }
        secrets.push(SecretUse {
            name: secret.get_ref().clone(),
            position: Some(at.position(secret.span().start)),
            purpose: String::from(purpose),
            min_bytes,
        });
    }
    let mut id_token_issuer = issuer.clone();
    id_token_issuer.audiences = alloc::vec![client_id.clone()];
    // ID tokens are typed `JWT` (or not at all); the issuer's `token_type` is for access tokens.
    id_token_issuer.token_type = None;
    Ok((
        Box::new(Sso {
            issuer: id_token_issuer,
            client_id: client_id.clone(),
            client_secret: r.client_secret.map(Spanned::into_inner),
            authorization_endpoint: r.authorization_endpoint.into_inner(),
            token_endpoint: r.token_endpoint.into_inner(),
            redirect_uri: redirect_uri.clone(),
            callback_path,
            logout_path,
            scope: scopes.join(" "),
            cookie,
            lifetime_secs,
            session_key: r.session_key.into_inner(),
            end_session_endpoint: r.end_session_endpoint.map(Spanned::into_inner),
            post_logout_redirect_uri,
        }),
        secrets,
    ))
}
