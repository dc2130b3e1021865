//! What one Gogs version makes of a request: the routes it reaches (its macaron router,
//! master's flamego router behind it, and the static files and middleware answering
//! before either) and what each of them needs.

use alloc::vec::Vec;

use crate::access::Access;
use crate::route::matcher::{self, Captures};
use crate::route::refine::{self, is_safe_method};
use crate::route::table::{Spec, SpecTarget, Version, METHODS};
use crate::route::{repo_name, RepoName, RouteClass, RouteError, SiteKind};

/// One reading of the request by one route.
#[derive(Debug)]
pub(crate) enum Need {
    Repo {
        repo: RepoName,
        access: Access,
        class: RouteClass,
        pattern: &'static str,
    },
    Site {
        kind: SiteKind,
        class: RouteClass,
        pattern: &'static str,
    },
}

pub(crate) struct Request<'r> {
    pub(crate) method: &'r str,
    pub(crate) query: &'r str,
    pub(crate) body: Option<&'r [u8]>,
    /// Decoded path segments; `[""]` for `/`.
    pub(crate) segments: &'r [&'r str],
    /// `/` and the segments joined by `/`.
    pub(crate) path: &'r str,
}

/// Adds to `needs` what every route of `version` that the request reaches needs.
pub(crate) fn interpret(
    version: &Version,
    request: &Request<'_>,
    needs: &mut Vec<Need>,
) -> Result<(), RouteError> {
    if version
        .literal_patterns
        .binary_search(&request.path)
        .is_ok()
    {
        return Err(RouteError::PatternPath);
    }
    // Go's methods are case-sensitive; a method no route registers reaches none.
    let Some(method) = METHODS.iter().position(|m| *m == request.method) else {
        return Ok(());
    };
    if let Some(root) = version.macaron.get(method).copied().flatten() {
        if let Some((spec, captures)) = matcher::find(root, request.segments) {
            need(version, spec, &captures, request, needs)?;
            if spec.dispatch {
                if let Some(root) = version.flamego.get(method).copied().flatten() {
                    if let Some((spec, captures)) = matcher::find(root, request.segments) {
                        need(version, spec, &captures, request, needs)?;
                    }
                }
            }
        }
    }
    let first = request.segments.first().copied();
    for prefix in version.prefixes {
        if prefix.method == method && first == Some(prefix.segment) {
            needs.push(Need::Site {
                kind: SiteKind::Page,
                class: RouteClass::Web,
                pattern: prefix.what,
            });
        }
    }
    Ok(())
}

fn need(
    version: &Version,
    spec: &'static Spec,
    captures: &Captures,
    request: &Request<'_>,
    needs: &mut Vec<Need>,
) -> Result<(), RouteError> {
    let site = |kind| Need::Site {
        kind,
        class: spec.class,
        pattern: spec.pattern,
    };
    match spec.target {
        SpecTarget::Repo => {}
        SpecTarget::Site | SpecTarget::Shell => needs.push(site(SiteKind::Page)),
        SpecTarget::CrossRepo => needs.push(site(SiteKind::CrossRepo)),
        SpecTarget::ById => needs.push(site(SiteKind::ById)),
        SpecTarget::Operator => needs.push(site(SiteKind::Operator)),
        SpecTarget::NotFound | SpecTarget::Dispatch => {}
    }
    if spec.target != SpecTarget::Repo {
        return Ok(());
    }
    let segment = |name| {
        captures
            .segment(name)
            .and_then(|i| request.segments.get(i).copied().map(|s| (i, s)))
    };
    let (Some((_, owner)), Some((repo_at, repo))) =
        (segment(spec.owner_param), segment(spec.repo_param))
    else {
        return Err(RouteError::BadName);
    };
    if version.is_reserved(owner) {
        return Ok(()); // no user or organisation has this name: Gogs answers 404
    }
    let strip_wiki = matches!(spec.class, RouteClass::Git | RouteClass::Lfs);
    let repo = repo_name(owner, repo, strip_wiki)?;
    let refine_request = refine::Request {
        method: request.method,
        query: request.query,
        body: request.body,
        after_repo: request.segments.get(repo_at + 1..).unwrap_or_default(),
        action: segment(":action").map(|(_, a)| a),
    };
    let mut access = refine::access(spec.refine, spec.access, &refine_request);
    if matches!(spec.class, RouteClass::Web | RouteClass::Api) && !is_safe_method(request.method) {
        // A scope that may only read changes nothing, whatever Gogs would let a reader do
        // (open issues, comment, star).
        access = access.max(Access::Write);
    }
    needs.push(Need::Repo {
        repo,
        access,
        class: spec.class,
        pattern: spec.pattern,
    });
    Ok(())
}
