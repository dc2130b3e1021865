//! Gogs' route tables, compiled by build.rs from the route inventories in
//! policy-core/gogs/ (one per Gogs version) and what their handlers mean
//! (policy-core/gogs/semantics.toml).

use crate::access::Access;
use crate::route::{strip_suffix_ignore_ascii_case, RouteClass};

/// One Gogs version's routing, as its source builds it.
pub(crate) struct Version {
    /// The inventory's name (`v0.14.3`, `master`): what `origin.gogs` selects.
    pub(crate) name: &'static str,
    /// Which Gogs source the inventory was extracted from (tag and commit).
    pub(crate) source: &'static str,
    /// Gogs' reserved user and organisation names: no owner can have one.
    pub(crate) reserved: &'static [&'static str],
    /// Reserved name patterns: `*.keys` (a suffix) or `x*` (a prefix).
    pub(crate) reserved_patterns: &'static [&'static str],
    /// Paths answered before or instead of routing (static files, middleware).
    pub(crate) prefixes: &'static [Prefix],
    /// The macaron router's trees, one per method in [`METHODS`] order.
    pub(crate) macaron: [Option<&'static Node>; 7],
    /// Gogs master's flamego router, reached through `dispatch` routes.
    pub(crate) flamego: [Option<&'static Node>; 7],
    /// Registered macaron patterns with parameters, sorted: a request whose path equals
    /// one is answered without the tree (macaron router.go `getLeaf`).
    pub(crate) literal_patterns: &'static [&'static str],
}

/// A first path segment answered by static files or middleware for one method.
pub(crate) struct Prefix {
    pub(crate) method: usize,
    pub(crate) segment: &'static str,
    pub(crate) what: &'static str,
}

/// A router tree node: the segment pattern that leads to it, then its children in the
/// order the router tries them.
pub(crate) struct Node {
    pub(crate) pattern: Pattern,
    pub(crate) subtrees: &'static [&'static Node],
    pub(crate) leaves: &'static [Leaf],
}

pub(crate) struct Leaf {
    pub(crate) pattern: Pattern,
    pub(crate) spec: &'static Spec,
}

pub(crate) enum Pattern {
    Static(&'static str),
    Regex(&'static Regex),
    /// A named parameter matching one whole segment (`:username`, `{owner}`).
    Holder(&'static str),
    /// `*`, `{**}`: the rest of the path.
    MatchAll,
}

/// A segment regular expression, reduced at build time to what Gogs' routes use.
pub(crate) struct Regex {
    pub(crate) anchored_start: bool,
    pub(crate) anchored_end: bool,
    pub(crate) pieces: &'static [Piece],
}

pub(crate) enum Piece {
    Literal(&'static str),
    /// `min..=max` characters from `ranges` (any character when `any`).
    Class {
        ranges: &'static [(char, char)],
        any: bool,
        min: u32,
        max: Option<u32>,
    },
    OneOf(&'static [&'static str]),
}

/// What a route means to the edge.
#[derive(Debug)]
pub(crate) struct Spec {
    /// The route as Gogs registers it, for explanations.
    pub(crate) pattern: &'static str,
    pub(crate) target: SpecTarget,
    /// The route hands the request to the flamego router as well.
    pub(crate) dispatch: bool,
    pub(crate) access: Access,
    pub(crate) class: RouteClass,
    pub(crate) refine: Refine,
    /// Parameter names holding the repository's owner and name (`repo` targets).
    pub(crate) owner_param: &'static str,
    pub(crate) repo_param: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpecTarget {
    Repo,
    Site,
    CrossRepo,
    ById,
    Operator,
    Shell,
    NotFound,
    /// Nothing of its own: whatever the flamego router makes of the request.
    Dispatch,
}

/// Request-dependent access rules (route/refine.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refine {
    None,
    GitService,
    LfsBatch,
    RepoAction,
}

impl core::fmt::Debug for Version {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Gogs {} ({})", self.name, self.source)
    }
}

impl Version {
    /// Gogs' `isNameAllowed` for user names: reserved names and patterns, compared in
    /// lowercase after trimming spaces.
    pub(crate) fn is_reserved(&self, name: &str) -> bool {
        // The inventory's names and patterns are lowercase ASCII (the build checks).
        let name = name.trim();
        let starts_with = |prefix: &str| {
            name.get(..prefix.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
        };
        self.reserved.iter().any(|r| r.eq_ignore_ascii_case(name))
            || self.reserved_patterns.iter().any(|p| {
                p.strip_prefix('*')
                    .is_some_and(|suffix| strip_suffix_ignore_ascii_case(name, suffix).is_some())
                    || p.strip_suffix('*').is_some_and(starts_with)
            })
    }
}

include!(concat!(env!("OUT_DIR"), "/gogs_routes.rs"));
