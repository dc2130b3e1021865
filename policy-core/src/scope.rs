//! Grants: who may do what to which repositories. Allows add up to the highest level any
//! matching grant gives; a matching deny removes its level and everything above it, and
//! always wins over allows.

use alloc::{format, string::String, vec::Vec};

use crate::access::Access;
use crate::decision::{Explain, ExplainStep};
use crate::glob::SegmentGlob;
use crate::identity::{Identity, Via};
use crate::route::RepoName;

/// One entry of a `who` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Principal {
    /// A Gogs user, as named by an API key, a binding, or the user claim of an issuer
    /// trusted to name Gogs users (`user_issuers`): another issuer's user of the same name
    /// is someone else.
    User {
        name: String,
        user_issuers: Vec<String>,
    },
    Group(String),
    /// An identity established by the API key with this name.
    Key(String),
    /// An identity established by the `[[binding]]` with this name.
    Binding(String),
    /// Any identity from the issuer with this name, by binding or user claim.
    Issuer(String),
    Authenticated,
    Anonymous,
    Anyone,
}

impl Principal {
    pub(crate) fn matches(&self, who: Option<&Identity>) -> bool {
        match (self, who) {
            (Principal::Anyone, _)
            | (Principal::Anonymous, None)
            | (Principal::Authenticated, Some(_)) => true,
            (Principal::User { name, user_issuers }, Some(id)) => {
                id.user == *name
                    && match (&id.via, id.via.issuer()) {
                        (Via::ApiKey { .. }, _) => true,
                        _ if id.via.binding().is_some() => true,
                        (_, Some(issuer)) => user_issuers.iter().any(|i| i == issuer),
                        (_, None) => false,
                    }
            }
            (Principal::Binding(name), Some(id)) => id.via.binding() == Some(name.as_str()),
            (Principal::Issuer(name), Some(id)) => id.via.issuer() == Some(name.as_str()),
            (Principal::Group(group), Some(id)) => id.groups.iter().any(|g| g == group),
            (
                Principal::Key(name),
                Some(Identity {
                    via: Via::ApiKey { key },
                    ..
                }),
            ) => key == name,
            _ => false,
        }
    }
}

pub(crate) fn any_matches(principals: &[Principal], who: Option<&Identity>) -> bool {
    principals.iter().any(|p| p.matches(who))
}

/// `owner/repo`, each side a segment glob, lowercase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RepoPattern {
    owner: SegmentGlob,
    name: SegmentGlob,
}

impl RepoPattern {
    pub(crate) fn new(owner: &str, name: &str) -> Self {
        RepoPattern {
            owner: SegmentGlob::new(owner),
            name: SegmentGlob::new(name),
        }
    }

    pub(crate) fn matches(&self, repo: &RepoName) -> bool {
        self.owner.matches(repo.owner()) && self.name.matches(repo.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    Allow,
    Deny,
}

#[derive(Clone, Debug)]
pub(crate) struct Grant {
    pub(crate) name: String,
    pub(crate) who: Vec<Principal>,
    pub(crate) repos: Vec<RepoPattern>,
    pub(crate) access: Access,
    pub(crate) effect: Effect,
}

/// The result of weighing every grant for one identity and repository.
#[derive(Debug)]
pub(crate) struct Scope<'g> {
    /// The access left after denies.
    pub(crate) effective: Option<Access>,
    /// The first allow grant giving the highest allowed level.
    pub(crate) best_allow: Option<&'g Grant>,
    /// The matching deny with the lowest level.
    pub(crate) deny: Option<&'g Grant>,
}

/// Weighs every grant for `who` on `repo`, recording one step per grant in `explain`.
pub(crate) fn evaluate<'g>(
    grants: &'g [Grant],
    who: Option<&Identity>,
    repo: &RepoName,
    explain: &mut Explain,
) -> Scope<'g> {
    let mut note = |grant: &Grant, outcome: &dyn Fn() -> String| {
        explain.step(|| ExplainStep::new(format!("grant:{}", grant.name), outcome()));
    };
    let mut best_allow: Option<&Grant> = None;
    let mut deny: Option<&Grant> = None;
    for grant in grants {
        if !any_matches(&grant.who, who) {
            note(grant, &|| "skipped: `who` does not match".into());
            continue;
        }
        if !grant.repos.iter().any(|p| p.matches(repo)) {
            note(grant, &|| format!("skipped: no pattern matches `{repo}`"));
            continue;
        }
        match grant.effect {
            Effect::Allow => {
                note(grant, &|| format!("matched: allows {}", grant.access));
                if best_allow.is_none_or(|best| grant.access > best.access) {
                    best_allow = Some(grant);
                }
            }
            Effect::Deny => {
                note(grant, &|| {
                    format!("matched: denies {} and above", grant.access)
                });
                if deny.is_none_or(|d| grant.access < d.access) {
                    deny = Some(grant);
                }
            }
        }
    }
    let granted = best_allow.map(|g| g.access);
    let effective = match deny {
        Some(d) => granted.and_then(|g| d.access.below().map(|cap| g.min(cap))),
        None => granted,
    };
    Scope {
        effective,
        best_allow,
        deny,
    }
}
