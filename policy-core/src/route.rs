//! Gogs request classification: which repository a request touches, what access it needs,
//! and which of Gogs' surfaces (git smart HTTP, LFS, API, web) it belongs to.
//!
//! Names are canonicalised the way Gogs resolves them (case-insensitive, one `.git`
//! suffix, `.wiki` for git wiki repositories), and anything that could make the edge and
//! the origin see different repositories is refused: encoded separators, `.`/`..`
//! segments, empty segments, control characters and names outside Gogs' alphabet.

use alloc::{borrow::ToOwned, string::String, vec::Vec};
use core::fmt;
use percent_encoding::percent_decode_str;
use serde::Serialize;

use crate::access::Access;

/// Which Gogs surface a request is for. It selects the challenge a denial carries and the
/// origin credential an allowed request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

/// What a request is aimed at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A repository, needing at least `access`.
    Repo { repo: RepoName, access: Access },
    /// Anything not inside one repository (sign-in pages, user lists, `/api/v1/user`, ...).
    Site,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) class: RouteClass,
    pub(crate) target: Target,
}

/// Why a request's path or query was refused before any policy was consulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteError {
    NotAbsolute,
    BadEscape,
    EncodedSeparator,
    NotUtf8,
    ControlCharacter,
    Backslash,
    DotSegment,
    EmptySegment,
    BadName,
}

impl RouteError {
    pub(crate) const fn message(self) -> &'static str {
        match self {
            RouteError::NotAbsolute => "path must start with `/`",
            RouteError::BadEscape => "path has a malformed percent-escape",
            RouteError::EncodedSeparator => "path has an encoded `/` or `\\`",
            RouteError::NotUtf8 => "path is not UTF-8 once decoded",
            RouteError::ControlCharacter => "path has a control character",
            RouteError::Backslash => "path has a backslash",
            RouteError::DotSegment => "path has a `.` or `..` segment",
            RouteError::EmptySegment => "path has an empty segment (`//`)",
            RouteError::BadName => "owner or repository name is not a valid Gogs name",
        }
    }
}

/// First path segments that Gogs reserves for itself; they never name an owner.
const RESERVED_OWNERS: &[&str] = &[
    "-",
    "admin",
    "api",
    "assets",
    "attachments",
    "avatars",
    "css",
    "debug",
    "explore",
    "fonts",
    "healthcheck",
    "help",
    "img",
    "install",
    "issues",
    "js",
    "less",
    "new",
    "org",
    "plugins",
    "pulls",
    "raw",
    "repo",
    "stars",
    "template",
    "user",
    "swagger",
    "robots.txt",
    "favicon.ico",
];

/// Longest owner or repository name accepted (Gogs allows 35 and 100).
const MAX_NAME_LEN: usize = 100;

fn is_safe_method(method: &str) -> bool {
    method == "GET" || method == "HEAD" || method == "OPTIONS"
}

/// Percent-decodes `raw` once (as Go's net/http does for Gogs) and splits it into segments.
fn decode_segments(raw: &str) -> Result<Vec<String>, RouteError> {
    let rest = raw.strip_prefix('/').ok_or(RouteError::NotAbsolute)?;
    let bytes = raw.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(RouteError::BadEscape)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(RouteError::BadEscape);
            }
            if hex.eq_ignore_ascii_case(b"2f") || hex.eq_ignore_ascii_case(b"5c") {
                return Err(RouteError::EncodedSeparator);
            }
        }
    }
    let decoded = percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| RouteError::NotUtf8)?;
    if decoded.chars().any(char::is_control) {
        return Err(RouteError::ControlCharacter);
    }
    if decoded.contains('\\') {
        return Err(RouteError::Backslash);
    }
    let mut segments: Vec<String> = decoded.split('/').map(ToOwned::to_owned).collect();
    // One trailing slash is harmless (`/owner/repo/`); an empty segment anywhere else is not.
    if segments.len() > 1 && segments.last().is_some_and(String::is_empty) {
        segments.pop();
    }
    if segments.len() == 1 && segments.first().is_some_and(String::is_empty) {
        segments.clear(); // "/"
    }
    for segment in &segments {
        if segment.is_empty() {
            return Err(RouteError::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(RouteError::DotSegment);
        }
    }
    Ok(segments)
}

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
fn repo_name(owner: &str, repo: &str, strip_wiki: bool) -> Result<RepoName, RouteError> {
    let owner = owner.to_ascii_lowercase();
    let mut name = repo.to_ascii_lowercase();
    if let Some(stripped) = name.strip_suffix(".git") {
        name = stripped.to_owned();
    }
    if strip_wiki {
        if let Some(stripped) = name.strip_suffix(".wiki") {
            name = stripped.to_owned();
        }
    }
    if !valid_name(&owner) || !valid_name(&name) || name == "." || name == ".." {
        return Err(RouteError::BadName);
    }
    Ok(RepoName { owner, name })
}

/// Values of query parameter `key` (form-decoded), in order.
pub(crate) fn query_values<'q>(query: &'q str, key: &'q str) -> impl Iterator<Item = String> + 'q {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k) == key).then(|| form_decode(v))
    })
}

fn form_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

fn lower_segments(segments: &[String]) -> Vec<String> {
    segments.iter().map(|s| s.to_ascii_lowercase()).collect()
}

/// Classifies a request. `body` is consulted only for LFS batch requests.
pub(crate) fn classify(
    method: &str,
    raw_path: &str,
    query: &str,
    body: Option<&[u8]>,
) -> Result<Route, RouteError> {
    let segments = decode_segments(raw_path)?;
    let lower = lower_segments(&segments);
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();

    match lower.as_slice() {
        ["api", "v1", rest @ ..] => Ok(classify_api(method, &segments, rest)?),
        [] | [_] => Ok(Route {
            class: RouteClass::Web,
            target: Target::Site,
        }),
        [first, ..] if RESERVED_OWNERS.contains(first) => Ok(Route {
            class: RouteClass::Web,
            target: Target::Site,
        }),
        [_, _, rest @ ..] => {
            let (owner, repo) = match segments.as_slice() {
                [owner, repo, ..] => (owner.as_str(), repo.as_str()),
                _ => return Err(RouteError::BadName),
            };
            classify_repo(method, owner, repo, rest, query, body)
        }
    }
}

fn classify_repo(
    method: &str,
    owner: &str,
    repo: &str,
    rest: &[&str],
    query: &str,
    body: Option<&[u8]>,
) -> Result<Route, RouteError> {
    let safe = is_safe_method(method);
    let (class, access) = match rest {
        ["info", "refs"] => {
            // `service=git-upload-pack` (or none: dumb HTTP) reads; any other service value,
            // above all git-receive-pack, is treated as a push. Every value counts, so a
            // repeated parameter cannot hide a receive-pack behind an upload-pack.
            let mut access = Access::Read;
            for service in query_values(query, "service") {
                if service != "git-upload-pack" {
                    access = Access::Write;
                }
            }
            if !safe {
                access = Access::Write;
            }
            (RouteClass::Git, access)
        }
        ["git-upload-pack"] => (RouteClass::Git, Access::Read),
        ["git-receive-pack"] => (RouteClass::Git, Access::Write),
        ["head"] | ["objects", ..] | ["info", "alternates" | "http-alternates" | "packs"] => (
            RouteClass::Git,
            if safe { Access::Read } else { Access::Write },
        ),
        ["info", "lfs", lfs @ ..] => (RouteClass::Lfs, lfs_access(method, lfs, body)),
        // Web UI: settings pages are admin, other reads are read, anything else writes.
        ["settings", ..] => (RouteClass::Web, Access::Admin),
        _ => (
            RouteClass::Web,
            if safe { Access::Read } else { Access::Write },
        ),
    };
    let strip_wiki = matches!(class, RouteClass::Git | RouteClass::Lfs);
    Ok(Route {
        class,
        target: Target::Repo {
            repo: repo_name(owner, repo, strip_wiki)?,
            access,
        },
    })
}

fn lfs_access(method: &str, rest: &[&str], body: Option<&[u8]>) -> Access {
    let safe = is_safe_method(method);
    match rest {
        ["objects", "batch"] if method == "POST" => lfs_batch_access(body),
        ["objects", "basic", "verify"] => Access::Write,
        ["locks", "verify"] => Access::Write,
        _ if safe => Access::Read,
        _ => Access::Write,
    }
}

/// An LFS batch request says `"operation": "download"` or `"upload"` in its body. A
/// missing, oversized or unreadable body counts as an upload: the stricter reading.
fn lfs_batch_access(body: Option<&[u8]>) -> Access {
    #[derive(serde::Deserialize)]
    struct Batch<'a> {
        #[serde(borrow)]
        operation: Option<&'a str>,
    }
    let Some(body) = body.filter(|b| b.len() <= crate::RequestFacts::LFS_BATCH_BODY_LIMIT) else {
        return Access::Write;
    };
    match serde_json::from_slice::<Batch<'_>>(body) {
        Ok(Batch {
            operation: Some("download"),
        }) => Access::Read,
        _ => Access::Write,
    }
}

fn classify_api(method: &str, segments: &[String], rest: &[&str]) -> Result<Route, RouteError> {
    let safe = is_safe_method(method);
    let site = Route {
        class: RouteClass::Api,
        target: Target::Site,
    };
    match rest {
        // `/api/v1/repos/search` and `/api/v1/repos/migrate` are site-wide, not repositories.
        ["repos"] | ["repos", _] => Ok(site),
        ["repos", _, _, sub @ ..] => {
            let (owner, repo) = match segments.get(3..5) {
                Some([owner, repo]) => (owner.as_str(), repo.as_str()),
                _ => return Err(RouteError::BadName),
            };
            let access = match sub {
                // Editing or deleting the repository itself is for admins (Gogs: owner).
                [] if safe => Access::Read,
                [] => Access::Admin,
                ["hooks" | "collaborators" | "keys" | "settings", ..] => Access::Admin,
                _ if safe => Access::Read,
                _ => Access::Write,
            };
            Ok(Route {
                class: RouteClass::Api,
                target: Target::Repo {
                    repo: repo_name(owner, repo, false)?,
                    access,
                },
            })
        }
        _ => Ok(site),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn repo(method: &str, path: &str, query: &str) -> (RouteClass, String, Access) {
        match classify(method, path, query, None) {
            Ok(Route {
                class,
                target: Target::Repo { repo, access },
            }) => (class, repo.to_string(), access),
            other => panic!("{method} {path}?{query}: expected a repo route, got {other:?}"),
        }
    }

    fn err(path: &str) -> RouteError {
        match classify("GET", path, "", None) {
            Err(e) => e,
            Ok(r) => panic!("{path}: expected an error, got {r:?}"),
        }
    }

    #[test]
    fn repo_name_parse_resolves_as_gogs_does() {
        let parsed = |s: &str| RepoName::parse(s).map(|r| r.to_string());
        assert_eq!(parsed("Acme/App.git").as_deref(), Some("acme/app"));
        assert_eq!(parsed("acme/app.wiki").as_deref(), Some("acme/app.wiki"));
        for bad in [
            "acme", "acme/", "/app", "acme/a/b", "acme/..", "acme/a b", "",
        ] {
            assert_eq!(parsed(bad), None, "`{bad}`");
        }
    }

    #[test]
    fn git_smart_http() {
        use Access::*;
        use RouteClass::*;
        let cases = [
            (
                "GET",
                "/acme/app.git/info/refs",
                "service=git-upload-pack",
                Git,
                Read,
            ),
            (
                "GET",
                "/acme/app/info/refs",
                "service=git-upload-pack",
                Git,
                Read,
            ),
            (
                "GET",
                "/acme/app.git/info/refs",
                "service=git-receive-pack",
                Git,
                Write,
            ),
            ("GET", "/acme/app.git/info/refs", "", Git, Read),
            ("POST", "/acme/app.git/git-upload-pack", "", Git, Read),
            ("POST", "/acme/app.git/git-receive-pack", "", Git, Write),
            ("GET", "/acme/app.git/HEAD", "", Git, Read),
            ("GET", "/acme/app.git/objects/ab/cdef", "", Git, Read),
            // A repeated service parameter cannot hide a push.
            (
                "GET",
                "/acme/app.git/info/refs",
                "service=git-upload-pack&service=git-receive-pack",
                Git,
                Write,
            ),
            (
                "GET",
                "/acme/app.git/info/refs",
                "service=git%2Dreceive%2Dpack",
                Git,
                Write,
            ),
            (
                "GET",
                "/acme/app.git/info/refs",
                "service=bogus",
                Git,
                Write,
            ),
            (
                "POST",
                "/acme/app.git/info/refs",
                "service=git-upload-pack",
                Git,
                Write,
            ),
        ];
        for (method, path, query, class, access) in cases {
            assert_eq!(
                repo(method, path, query),
                (class, "acme/app".to_string(), access),
                "{method} {path}?{query}"
            );
        }
    }

    #[test]
    fn names_resolve_like_gogs() {
        for path in [
            "/Acme/App.git/info/refs",
            "/ACME/APP/info/refs",
            "/acme/app.GIT/info/refs",
            "/acme/%61pp.git/info/refs",
            "/acme/app.wiki.git/info/refs",
            "/acme/app/",
        ] {
            assert_eq!(repo("GET", path, "").1, "acme/app", "{path}");
        }
        // The web UI does not strip `.wiki`.
        assert_eq!(repo("GET", "/acme/app.wiki", "").1, "acme/app.wiki");
    }

    #[test]
    fn path_tricks_are_refused() {
        assert_eq!(err("acme/app"), RouteError::NotAbsolute);
        assert_eq!(err("/acme/../secret/info/refs"), RouteError::DotSegment);
        assert_eq!(err("/acme/%2e%2e/secret/info/refs"), RouteError::DotSegment);
        assert_eq!(err("/acme/./app/info/refs"), RouteError::DotSegment);
        assert_eq!(err("/acme//app/info/refs"), RouteError::EmptySegment);
        assert_eq!(err("//acme/app/info/refs"), RouteError::EmptySegment);
        assert_eq!(
            err("/acme%2fsecret/info/refs"),
            RouteError::EncodedSeparator
        );
        assert_eq!(
            err("/acme%2Fsecret/info/refs"),
            RouteError::EncodedSeparator
        );
        assert_eq!(
            err("/acme%5csecret/info/refs"),
            RouteError::EncodedSeparator
        );
        assert_eq!(err("/acme\\secret/info/refs"), RouteError::Backslash);
        assert_eq!(err("/acme/app%00/info/refs"), RouteError::ControlCharacter);
        assert_eq!(err("/acme/app%/info/refs"), RouteError::BadEscape);
        assert_eq!(err("/acme/app%zz/info/refs"), RouteError::BadEscape);
        assert_eq!(err("/acme/%ff/info/refs"), RouteError::NotUtf8);
        assert_eq!(err("/acme/a%2561/info/refs"), RouteError::BadName);
        assert_eq!(err("/acme/.git/info/refs"), RouteError::BadName);
        assert_eq!(err("/ac me/app/info/refs"), RouteError::BadName);
    }

    #[test]
    fn lfs() {
        let batch = |body: Option<&[u8]>| match classify(
            "POST",
            "/acme/app.git/info/lfs/objects/batch",
            "",
            body,
        ) {
            Ok(Route {
                class: RouteClass::Lfs,
                target: Target::Repo { access, .. },
            }) => access,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            batch(Some(br#"{"operation":"download","objects":[]}"#)),
            Access::Read
        );
        assert_eq!(
            batch(Some(br#"{"operation":"upload","objects":[]}"#)),
            Access::Write
        );
        assert_eq!(batch(None), Access::Write);
        assert_eq!(batch(Some(b"not json")), Access::Write);
        assert_eq!(
            repo("GET", "/acme/app.git/info/lfs/objects/basic/abc", "").2,
            Access::Read
        );
        assert_eq!(
            repo("PUT", "/acme/app.git/info/lfs/objects/basic/abc", "").2,
            Access::Write
        );
        assert_eq!(
            repo("POST", "/acme/app.git/info/lfs/objects/basic/verify", "").2,
            Access::Write
        );
        assert_eq!(
            repo("GET", "/acme/app.git/info/lfs/objects/basic/abc", "").0,
            RouteClass::Lfs
        );
    }

    #[test]
    fn api_and_web() {
        use Access::*;
        use RouteClass::*;
        let cases = [
            ("GET", "/api/v1/repos/acme/app", Api, Read),
            ("PATCH", "/api/v1/repos/acme/app", Api, Admin),
            ("DELETE", "/api/v1/repos/acme/app", Api, Admin),
            ("GET", "/api/v1/repos/acme/app/hooks", Api, Admin),
            ("GET", "/api/v1/repos/acme/app/collaborators", Api, Admin),
            ("PUT", "/api/v1/repos/acme/app/keys/1", Api, Admin),
            ("GET", "/api/v1/repos/acme/app/issues", Api, Read),
            ("POST", "/api/v1/repos/acme/app/issues", Api, Write),
            (
                "GET",
                "/API/V1/repos/Acme/App/raw/master/README.md",
                Api,
                Read,
            ),
            ("GET", "/acme/app/archive/master.zip", Web, Read),
            ("GET", "/acme/app/raw/master/README.md", Web, Read),
            ("GET", "/acme/app/settings", Web, Admin),
            ("POST", "/acme/app/settings/collaboration", Web, Admin),
            ("POST", "/acme/app/issues/new", Web, Write),
        ];
        for (method, path, class, access) in cases {
            assert_eq!(
                repo(method, path, ""),
                (class, "acme/app".to_string(), access),
                "{method} {path}"
            );
        }
        for path in [
            "/",
            "/explore/repos",
            "/user/login",
            "/alice",
            "/api/v1/user/repos",
            "/api/v1/repos/search",
            "/api/v1/repos/migrate",
            "/org/acme/settings",
            "/Admin/users",
        ] {
            match classify("GET", path, "", None) {
                Ok(Route {
                    target: Target::Site,
                    ..
                }) => {}
                other => panic!("{path}: expected site route, got {other:?}"),
            }
        }
    }

    #[test]
    fn query_values_decode() {
        let v: Vec<String> =
            query_values("a=1&service=git%2Dupload-pack&b&service=x+y", "service").collect();
        assert_eq!(v, ["git-upload-pack", "x y"]);
    }
}
