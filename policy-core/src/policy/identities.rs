//! Validation of what turns a token into an identity beyond its issuer's keys: the
//! `[[binding]]`s, which issuers' user claims name Gogs users, the claims kept for the
//! audit, and the names principals may refer to.

use alloc::{borrow::ToOwned, collections::BTreeSet, format, string::String, vec::Vec};
use toml::Spanned;

use super::schema::{RawBinding, RawClaimValue, RawIssuer};
use super::{PolicyError, Source};
use crate::binding::{Binding, ClaimTest, MAX_AUDIT_CLAIMS};
use crate::identity::{valid_user, MAX_NAME_LEN};

type At<'a> = &'a Source<'a>;

/// User claims people can usually change themselves at an identity provider: a token
/// naming a Gogs user through one would let them pick whom they act as.
const EDITABLE_USER_CLAIMS: [&str; 6] = [
    "preferred_username",
    "nickname",
    "name",
    "given_name",
    "family_name",
    "email",
];

/// Longest claim name or claim pattern in a binding.
const MAX_CLAIM_TEXT: usize = 256;

/// How one issuer makes identities, before it is assembled into a `jwt::Issuer`.
pub(super) struct IssuerIdentities {
    pub(super) user_claim: Option<String>,
    pub(super) gogs_users: bool,
    pub(super) bindings: Vec<Binding>,
    pub(super) audit_claims: Vec<String>,
}

/// The names `who` entries may refer to, and which issuers' users `user:NAME` means.
pub(super) struct Names {
    pub(super) keys: BTreeSet<String>,
    pub(super) bindings: BTreeSet<String>,
    pub(super) issuers: BTreeSet<String>,
    /// Issuers whose user claim names Gogs users.
    pub(super) user_issuers: Vec<String>,
    /// Set when several issuers name users from a claim and not all say whether those are
    /// Gogs users: `user:NAME` would be ambiguous, so it is refused (the issuer names).
    pub(super) undeclared_user_issuers: Option<(String, String)>,
}

/// Validates the bindings and each issuer's identity settings, in issuer order.
pub(super) fn issuer_identities(
    issuers: &[Spanned<RawIssuer>],
    bindings: Vec<Spanned<RawBinding>>,
    at: At<'_>,
) -> Result<Vec<IssuerIdentities>, PolicyError> {
    let mut by_issuer: Vec<Vec<Binding>> = issuers.iter().map(|_| Vec::new()).collect();
    let mut names = BTreeSet::new();
    for spanned in bindings {
        let raw = spanned.into_inner();
        let index = issuers
            .iter()
            .position(|i| i.get_ref().name.get_ref() == raw.issuer.get_ref())
            .ok_or_else(|| {
                at.error(
                    Some(raw.issuer.span()),
                    format!("`{}` names no [[issuer]]", raw.issuer.get_ref()),
                )
            })?;
        let binding = binding(raw, &mut names, at)?;
        if let Some(list) = by_issuer.get_mut(index) {
            list.push(binding);
        }
    }

    let user_claims: Vec<Option<String>> = issuers
        .iter()
        .zip(&by_issuer)
        .map(|(issuer, bindings)| {
            let issuer = issuer.get_ref();
            match &issuer.user_claim {
                Some(claim) => Some(claim.get_ref().clone()),
                // Without bindings the subject names the user, as it always has; with
                // bindings, only they make identities unless a user claim is set.
                None if bindings.is_empty() => Some(String::from("sub")),
                None => None,
            }
        })
        .collect();
    let naming = user_claims.iter().filter(|c| c.is_some()).count();

    let mut out = Vec::new();
    for ((spanned, bindings), user_claim) in issuers.iter().zip(by_issuer).zip(user_claims) {
        let issuer = spanned.get_ref();
        if let (Some(claim), Some(written)) = (&user_claim, &issuer.user_claim) {
            if EDITABLE_USER_CLAIMS.contains(&claim.as_str())
                && issuer.allow_editable_user_claim != Some(true)
            {
                return Err(at.error(Some(written.span()), format!("user_claim `{claim}` is one people can usually edit at their identity provider, so they could choose which Gogs user they act as; use an identifier the provider controls (`sub`, `oid`, an admin-set attribute), or set `allow_editable_user_claim = true` if this provider does not let users change it")));
            }
        }
        let gogs_users = match &issuer.gogs_users {
            Some(declared) => *declared.get_ref() && user_claim.is_some(),
            None => user_claim.is_some() && naming == 1,
        };
        out.push(IssuerIdentities {
            user_claim,
            gogs_users,
            bindings,
            audit_claims: audit_claims(issuer, at)?,
        });
    }
    Ok(out)
}

fn binding(
    raw: RawBinding,
    names: &mut BTreeSet<String>,
    at: At<'_>,
) -> Result<Binding, PolicyError> {
    let name = super::compile::unique_name(names, &raw.name, "binding", at)?;
    if raw.claims.get_ref().is_empty() {
        return Err(at.error(Some(raw.claims.span()), format!("binding `{name}` must list at least one claim: without one it would take every token of issuer `{}`", raw.issuer.get_ref())));
    }
    let mut claims = Vec::new();
    for (claim, value) in raw.claims.get_ref() {
        let pattern = match value.get_ref() {
            RawClaimValue::Text(text) => text.clone(),
            RawClaimValue::Flag(flag) => format!("{flag}"),
            RawClaimValue::Number(number) => format!("{number}"),
        };
        if claim.is_empty() || claim.len() > MAX_CLAIM_TEXT {
            return Err(at.error(
                Some(raw.claims.span()),
                format!("claim names must be 1-{MAX_CLAIM_TEXT} characters"),
            ));
        }
        if pattern.is_empty() || pattern.len() > MAX_CLAIM_TEXT || pattern.chars().all(|c| c == '*')
        {
            return Err(at.error(Some(value.span()), format!("the pattern for claim `{claim}` must be 1-{MAX_CLAIM_TEXT} characters and more than `*`: a claim that may hold anything adds no condition")));
        }
        claims.push(ClaimTest {
            name: claim.clone(),
            pattern,
        });
    }
    if !valid_user(raw.user.get_ref()) {
        return Err(at.error(
            Some(raw.user.span()),
            format!(
                "user `{}` is not a valid Gogs user name",
                raw.user.get_ref()
            ),
        ));
    }
    let groups = match raw.groups {
        Some(groups) => {
            if let Some(bad) = groups
                .get_ref()
                .iter()
                .find(|g| !super::compile::group_ok(g))
            {
                return Err(at.error(
                    Some(groups.span()),
                    format!("group `{bad}` is not a valid group name"),
                ));
            }
            groups.into_inner()
        }
        None => Vec::new(),
    };
    Ok(Binding {
        name,
        claims,
        user: raw.user.get_ref().to_ascii_lowercase(),
        groups,
    })
}

fn audit_claims(issuer: &RawIssuer, at: At<'_>) -> Result<Vec<String>, PolicyError> {
    let Some(list) = &issuer.audit_claims else {
        return Ok(Vec::new());
    };
    if list.get_ref().len() > MAX_AUDIT_CLAIMS {
        return Err(at.error(
            Some(list.span()),
            format!("audit_claims may list at most {MAX_AUDIT_CLAIMS} claims"),
        ));
    }
    if let Some(bad) = list
        .get_ref()
        .iter()
        .find(|c| c.is_empty() || c.len() > MAX_NAME_LEN)
    {
        return Err(at.error(
            Some(list.span()),
            format!("audit claim `{bad}` must be 1-{MAX_NAME_LEN} characters"),
        ));
    }
    Ok(list.get_ref().to_owned())
}

impl Names {
    /// What principals may name, given the issuers as validated.
    pub(super) fn new(
        keys: BTreeSet<String>,
        issuers: &[Spanned<RawIssuer>],
        identities: &[IssuerIdentities],
    ) -> Self {
        let naming: Vec<(&RawIssuer, &IssuerIdentities)> = issuers
            .iter()
            .map(Spanned::get_ref)
            .zip(identities)
            .filter(|(_, ids)| ids.user_claim.is_some())
            .collect();
        let undeclared_user_issuers = match naming.as_slice() {
            [first, second, ..] if naming.iter().any(|(raw, _)| raw.gogs_users.is_none()) => {
                Some((
                    first.0.name.get_ref().clone(),
                    second.0.name.get_ref().clone(),
                ))
            }
            _ => None,
        };
        Names {
            keys,
            bindings: identities
                .iter()
                .flat_map(|ids| ids.bindings.iter().map(|b| b.name.clone()))
                .collect(),
            issuers: issuers
                .iter()
                .map(|i| i.get_ref().name.get_ref().clone())
                .collect(),
            user_issuers: issuers
                .iter()
                .zip(identities)
                .filter(|(_, ids)| ids.gogs_users)
                .map(|(i, _)| i.get_ref().name.get_ref().clone())
                .collect(),
            undeclared_user_issuers,
        }
    }
}
