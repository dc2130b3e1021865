//! Access rules that read more of the request than its route: which git service is asked
//! for, what an LFS batch body says, which repository action is named.

use crate::access::Access;
use crate::route::lfs_batch;
use crate::route::path::query_values;
use crate::route::table::Refine;

/// What a refinement may look at.
pub(crate) struct Request<'r> {
    pub(crate) method: &'r str,
    pub(crate) query: &'r str,
    pub(crate) body: Option<&'r [u8]>,
    /// Decoded path segments after the repository's own segment.
    pub(crate) after_repo: &'r [&'r str],
    /// The `:action` parameter, for repository actions.
    pub(crate) action: Option<&'r str>,
}

pub(crate) fn access(refine: Refine, base: Access, request: &Request<'_>) -> Access {
    let refined = match refine {
        Refine::None => base,
        Refine::GitService => git_service(request),
        Refine::LfsBatch => lfs_batch::access(request.body),
        Refine::RepoAction => repo_action(request),
    };
    refined.max(base)
}

pub(crate) fn is_safe_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// Git smart HTTP (internal/route/repo/http.go). Gogs v0.14 serves any path under a
/// repository whose lowercased form ends in a git service, but decides pull or push from
/// the path as sent, so `GIT-RECEIVE-PACK` would pass as a pull; the edge lowercases too.
/// A `service` parameter other than `git-upload-pack`, in any of its repeats, is a push.
fn git_service(request: &Request<'_>) -> Access {
    let action = request.after_repo;
    if !action.iter().all(|segment| segment.is_ascii()) {
        // Go's strings.ToLower folds some non-ASCII letters into ASCII ones (the Kelvin
        // sign into `k`): no git path needs them, so they can only be an attempt.
        return Access::Write;
    }
    let ends_with = |suffix| joined_ends_with_ignore_ascii_case(action, suffix);
    let pushes = ends_with("git-receive-pack")
        || (ends_with("info/refs")
            && query_values(request.query, "service").any(|s| s != "git-upload-pack"))
        || (!is_safe_method(request.method) && !ends_with("git-upload-pack"));
    if pushes {
        Access::Write
    } else {
        Access::Read
    }
}

/// Does `segments.join("/")`, lowercased, end with `suffix` (lowercase)? Without joining:
/// this runs for every git request.
fn joined_ends_with_ignore_ascii_case(segments: &[&str], suffix: &str) -> bool {
    // The last segment backwards, then `/` and the one before it backwards, and so on.
    let mut joined_backwards = segments.iter().rev().enumerate().flat_map(|(i, segment)| {
        let separator = (i > 0).then_some(b'/');
        separator.into_iter().chain(segment.bytes().rev())
    });
    suffix
        .bytes()
        .rev()
        .all(|wanted| joined_backwards.next().map(|b| b.to_ascii_lowercase()) == Some(wanted))
}

/// internal/route/repo/repo.go `Action`: `desc` edits the repository (owners only); an
/// `unwatch` naming another user's `user_id` is for site administrators.
fn repo_action(request: &Request<'_>) -> Access {
    match request.action {
        Some("desc") => Access::Owner,
        Some("unwatch") if query_values(request.query, "user_id").next().is_some() => Access::Owner,
        _ => Access::Read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_suffix_matches_joining() {
        let cases: &[&[&str]] = &[
            &[],
            &[""],
            &["info", "refs"],
            &["xinfo", "refs"],
            &["INFO", "Refs"],
            &["info/refs"],
            &["refs"],
            &["nfo", "refs"],
            &["git-receive-pack"],
            &["GIT-RECEIVE-PACK"],
            &["objects", "git-upload-pack"],
            &["a", "b", "git-upload-pack", "x"],
            &["git-receive-pack", ""],
        ];
        for segments in cases {
            let joined = segments.join("/").to_ascii_lowercase();
            for suffix in [
                "info/refs",
                "git-receive-pack",
                "git-upload-pack",
                "/",
                "",
                "s",
            ] {
                assert_eq!(
                    joined_ends_with_ignore_ascii_case(segments, suffix),
                    joined.ends_with(suffix),
                    "{segments:?} {suffix}"
                );
            }
        }
    }
}
