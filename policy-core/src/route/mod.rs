//! Gogs request classification: which repository a request touches, what access it needs,
//! and which of Gogs' surfaces (git smart HTTP, LFS, API, web) it belongs to.
//!
//! The answer comes from Gogs' own route tables (see table.rs and policy-core/gogs/): the
//! request is matched the way Gogs' routers match it, for every Gogs version the policy
//! follows, and it must satisfy every route it could reach. Names are canonicalised the
//! way Gogs resolves them (case-insensitive, one `.git` suffix, `.wiki` for git wiki
//! repositories), and anything that could make the edge and the origin see different
//! requests is refused: encoded separators and unreserved characters, `.`/`..` segments,
//! empty segments, control characters and names outside Gogs' alphabet.

mod gogs;
mod lfs_batch;
mod matcher;
mod path;
mod refine;
mod table;
#[cfg(test)]
mod tests;

use alloc::{string::String, vec::Vec};
use core::fmt;
use serde::Serialize;

use crate::access::Access;

pub(crate) use lfs_batch::{BODY_LIMIT as LFS_BATCH_BODY_LIMIT, LEAST_ACCESS_BODY};
pub(crate) use path::query_values;
pub(crate) use table::Version;

/// Which Gogs surface a request is for. It selects the challenge a denial carries and the
/// origin credential an allowed request gets.
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteClass {
    /// Git smart (and dumb) HTTP.
    Git,
    /// Git LFS (`/info/lfs/...`).
    Lfs,
    /// `/api/v1/...`.
    Api,
    /// Everything else: the web UI, archives, raw files.
    Web,
}

impl RouteClass {
    pub const fn as_str(self) -> &'static str {
        match self {
            RouteClass::Git => "git",
            RouteClass::Lfs => "lfs",
            RouteClass::Api => "api",
            RouteClass::Web => "web",
        }
    }
}

/// A repository as Gogs resolves it: lowercase owner and name, suffixes removed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepoName {
    owner: String,
    name: String,
}

impl RepoName {
    /// `owner/name` as Gogs resolves it (lowercased, a `.git` suffix removed); `None` for
    /// a name Gogs would not accept.
    pub fn parse(full: &str) -> Option<RepoName> {
        let (owner, name) = full.split_once('/')?;
        repo_name(owner, name, false).ok()
    }

    /// A name another engine already resolved (the policy module's wire form): nothing
    /// is normalised again.
    #[cfg(feature = "abi")]
    pub(crate) fn resolved(owner: String, name: String) -> RepoName {
        RepoName { owner, name }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl Serialize for RepoName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Kinds of routes outside one repository, each with its own gateway setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SiteKind {
    /// Pages and API calls outside any repository (`gateway.site_web`, `site_api`).
    Page,
    /// Lists and searches across repositories (`gateway.cross_repo`).
    CrossRepo,
    /// A repository reached by id, uuid or a form field (`gateway.by_id`).
    ById,
    /// Gogs' diagnostics and installer (`gateway.operator`).
    Operator,
}

/// The repository a request touches and the access it needs there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RepoNeed {
    pub(crate) repo: RepoName,
    pub(crate) access: Access,
}

/// Everything a request must be allowed before it may reach the origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) class: RouteClass,
    pub(crate) repo: Option<RepoNeed>,
    /// Site rules to pass, in the order found, without repeats.
    pub(crate) site: Vec<SiteKind>,
    /// The class site rules are applied for (`site_api` for the API, else `site_web`).
    pub(crate) site_class: RouteClass,
    /// The Gogs route (as registered) behind `class` and `repo`, for explanations.
    pub(crate) pattern: &'static str,
}

/// Why a request's path or query was refused before any policy was consulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteError {
    NotAbsolute,
    BadEscape,
    EncodedSeparator,
    EncodedUnreserved,
    NotUtf8,
    ControlCharacter,
    Backslash,
    DotSegment,
    EmptySegment,
    BadName,
    /// The path spells a route pattern, which macaron answers without its tree.
    PatternPath,
    /// Two routes the request could reach name different repositories.
    TwoRepositories,
    /// No route of any followed Gogs version takes the request.
    NoRoute,
}

impl RouteError {
    pub(crate) const fn message(self) -> &'static str {
        match self {
            RouteError::NotAbsolute => "path must start with `/`",
            RouteError::BadEscape => "path has a malformed percent-escape",
            RouteError::EncodedSeparator => "path has an encoded `/` or `\\`",
            RouteError::EncodedUnreserved => {
                "path percent-encodes a letter, digit or `-._~`, which never needs encoding"
            }
            RouteError::NotUtf8 => "path is not UTF-8 once decoded",
            RouteError::ControlCharacter => "path has a control character",
            RouteError::Backslash => "path has a backslash",
            RouteError::DotSegment => "path has a `.` or `..` segment",
            RouteError::EmptySegment => "path has an empty segment (`//`)",
            RouteError::BadName => "owner or repository name is not a valid Gogs name",
            RouteError::PatternPath => "path spells a Gogs route pattern",
            RouteError::TwoRepositories => "path could name two different repositories",
            RouteError::NoRoute => "no such page",
        }
    }
}

/// Longest owner or repository name accepted (Gogs allows 35 and 100).
const MAX_NAME_LEN: usize = 100;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Canonical repository from an owner and a repository segment. Git and LFS URLs may
/// carry `.git` and `.wiki` (Gogs serves `repo.wiki.git` under `repo`'s permissions);
/// the API and web UI only strip `.git`.
pub(crate) fn repo_name(owner: &str, repo: &str, strip_wiki: bool) -> Result<RepoName, RouteError> {
    let name = strip_suffix_ignore_ascii_case(repo, ".git").unwrap_or(repo);
    let name = if strip_wiki {
        strip_suffix_ignore_ascii_case(name, ".wiki").unwrap_or(name)
    } else {
        name
    };
    if !valid_name(owner) || !valid_name(name) || name == "." || name == ".." {
        return Err(RouteError::BadName);
    }
    Ok(RepoName {
        owner: owner.to_ascii_lowercase(),
        name: name.to_ascii_lowercase(),
    })
}

/// `s` without `suffix`, compared ignoring ASCII case (as after Go's `strings.ToLower`).
pub(crate) fn strip_suffix_ignore_ascii_case<'s>(s: &'s str, suffix: &str) -> Option<&'s str> {
    let start = s.len().checked_sub(suffix.len())?;
    let tail = s.get(start..)?;
    if tail.eq_ignore_ascii_case(suffix) {
        s.get(..start)
    } else {
        None
    }
}

/// The Gogs versions a policy can follow, by inventory name.
pub(crate) fn versions() -> &'static [Version] {
    &table::VERSIONS
}

/// Classifies a request against the routes of `versions`: it needs whatever any route it
/// can reach needs. `body` is consulted only where a route reads it (LFS batch).
pub(crate) fn classify(
    versions: &[&'static Version],
    method: &str,
    raw_path: &str,
    query: &str,
    body: Option<&[u8]>,
) -> Result<Route, RouteError> {
    let decoded = path::decode_path(raw_path)?;
    let trimmed = path::trim_trailing_slash(&decoded);
    let mut segments = path::segments(trimmed)?;
    // The segments joined again: `/a/b/` is `/a/b`.
    let joined = ["/", trimmed].concat();
    if segments.is_empty() {
        segments.push(""); // macaron matches `/` as one empty segment
    }
    let request = gogs::Request {
        method,
        query,
        body,
        segments: &segments,
        path: &joined,
    };
    let mut needs = Vec::new();
    for version in versions {
        gogs::interpret(version, &request, &mut needs)?;
    }
    combine(needs)
}

fn combine(needs: Vec<gogs::Need>) -> Result<Route, RouteError> {
    let mut repo: Option<(RepoNeed, RouteClass, &'static str)> = None;
    let mut site: Vec<SiteKind> = Vec::new();
    let mut site_from: Option<(RouteClass, &'static str)> = None;
    for need in needs {
        match need {
            gogs::Need::Repo {
                repo: name,
                access,
                class,
                pattern,
            } => match &mut repo {
                None => repo = Some((RepoNeed { repo: name, access }, class, pattern)),
                Some((have, _, _)) if have.repo != name => return Err(RouteError::TwoRepositories),
                Some((have, have_class, have_pattern)) => {
                    if access > have.access {
                        have.access = access;
                        *have_class = class;
                        *have_pattern = pattern;
                    }
                }
            },
            gogs::Need::Site {
                kind,
                class,
                pattern,
            } => {
                if !site.contains(&kind) {
                    site.push(kind);
                }
                site_from.get_or_insert((class, pattern));
            }
        }
    }
    let site_class = site_from.map_or(RouteClass::Web, |(class, _)| class);
    match (repo, site_from) {
        (Some((need, class, pattern)), _) => Ok(Route {
            class,
            repo: Some(need),
            site,
            site_class,
            pattern,
        }),
        (None, Some((class, pattern))) => Ok(Route {
            class,
            repo: None,
            site,
            site_class,
            pattern,
        }),
        (None, None) => Err(RouteError::NoRoute),
    }
}
