use super::*;
use alloc::borrow::Cow;
use alloc::string::ToString;

fn all() -> Vec<&'static Version> {
    versions().iter().collect()
}

fn only(name: &str) -> Vec<&'static Version> {
    versions().iter().filter(|v| v.name == name).collect()
}

fn route_in(
    versions: &[&'static Version],
    method: &str,
    path: &str,
    query: &str,
) -> Result<Route, RouteError> {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path, query),
    };
    classify(versions, method, path, query, None)
}

/// `(class, repo, access)` of a request that must touch a repository.
fn repo(method: &str, path: &str) -> (RouteClass, String, Access) {
    match route_in(&all(), method, path, "") {
        Ok(Route {
            class,
            repo: Some(RepoNeed { repo, access }),
            ..
        }) => (class, repo.to_string(), access),
        other => panic!("{method} {path}: expected a repository route, got {other:?}"),
    }
}

fn site(method: &str, path: &str) -> Vec<SiteKind> {
    match route_in(&all(), method, path, "") {
        Ok(Route {
            repo: None, site, ..
        }) => site,
        other => panic!("{method} {path}: expected a route outside repositories, got {other:?}"),
    }
}

fn err(path: &str) -> RouteError {
    match route_in(&all(), "GET", path, "") {
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
    let cases = [
        (
            "GET",
            "/acme/app.git/info/refs?service=git-upload-pack",
            Read,
        ),
        ("GET", "/acme/app/info/refs?service=git-upload-pack", Read),
        (
            "GET",
            "/acme/app.git/info/refs?service=git-receive-pack",
            Write,
        ),
        ("GET", "/acme/app.git/info/refs", Read),
        ("POST", "/acme/app.git/git-upload-pack", Read),
        ("POST", "/acme/app.git/git-receive-pack", Write),
        ("GET", "/acme/app.git/HEAD", Read),
        (
            "GET",
            "/acme/app.git/objects/ab/cdef0123456789abcdef0123456789abcdef01",
            Read,
        ),
        // A repeated service parameter cannot hide a push.
        (
            "GET",
            "/acme/app.git/info/refs?service=git-upload-pack&service=git-receive-pack",
            Write,
        ),
        (
            "GET",
            "/acme/app.git/info/refs?service=git%2Dreceive%2Dpack",
            Write,
        ),
        ("GET", "/acme/app.git/info/refs?service=bogus", Write),
        // Gogs v0.14 serves any path ending in a git service, lowercased, but decides
        // pull or push from the path as sent.
        ("POST", "/acme/app/GIT-RECEIVE-PACK", Write),
        ("POST", "/acme/app/git-receive-pac%E2%84%AA", Write),
        ("GET", "/acme/app/INFO/REFS?service=git-receive-pack", Write),
    ];
    for (method, path, access) in cases {
        let (class, name, got) = repo(method, path);
        assert_eq!(
            (name.as_str(), got),
            ("acme/app", access),
            "{method} {path}"
        );
        assert_eq!(class, RouteClass::Git, "{method} {path}");
    }
}

#[test]
fn owners_gogs_does_not_reserve_are_owners() {
    // Tollgate once took these first segments for site pages; Gogs lets users have them.
    for owner in [
        "swagger",
        "fonts",
        "healthcheck",
        "attachments",
        "avatars",
        "robots.txt",
        "favicon.ico",
        "captcha",
    ] {
        let path = alloc::format!("/{owner}/specs.git/info/refs");
        assert_eq!(
            repo("GET", &path),
            (
                RouteClass::Git,
                alloc::format!("{owner}/specs"),
                Access::Read
            ),
            "{path}"
        );
        let push = alloc::format!("/{owner}/specs.git/git-receive-pack");
        assert_eq!(repo("POST", &push).2, Access::Write, "{push}");
    }
    // Gogs' reserved names never own anything: `/api/x/info/refs` is no repository.
    for owner in [
        "api",
        "admin",
        "user",
        "org",
        "explore",
        "repo",
        "assets",
        "-",
        "ADMIN",
        "alice.KEYS",
    ] {
        let path = alloc::format!("/{owner}/specs.git/info/refs");
        assert!(
            !matches!(
                route_in(&all(), "GET", &path, ""),
                Ok(Route { repo: Some(_), .. })
            ),
            "{path}"
        );
    }
}

#[test]
fn guards_decide_access_whatever_the_method() {
    use Access::*;
    let cases = [
        (
            "PATCH",
            "/api/v1/repos/acme/app/issue-tracker",
            RouteClass::Api,
            Admin,
        ),
        (
            "PATCH",
            "/api/v1/repos/acme/app/wiki",
            RouteClass::Api,
            Admin,
        ),
        (
            "POST",
            "/api/v1/repos/acme/app/mirror-sync",
            RouteClass::Api,
            Admin,
        ),
        ("DELETE", "/api/v1/repos/acme/app", RouteClass::Api, Owner),
        (
            "GET",
            "/api/v1/repos/acme/app/hooks",
            RouteClass::Api,
            Admin,
        ),
        (
            "GET",
            "/api/v1/repos/acme/app/collaborators",
            RouteClass::Api,
            Admin,
        ),
        (
            "GET",
            "/api/v1/repos/acme/app/issues",
            RouteClass::Api,
            Read,
        ),
        (
            "POST",
            "/api/v1/repos/acme/app/issues",
            RouteClass::Api,
            Write,
        ),
        (
            "GET",
            "/api/v1/repos/Acme/App/raw/master/README.md",
            RouteClass::Api,
            Read,
        ),
        (
            "GET",
            "/acme/app/milestones/1/close",
            RouteClass::Web,
            Write,
        ),
        (
            "HEAD",
            "/acme/app/milestones/1/open",
            RouteClass::Web,
            Write,
        ),
        ("POST", "/acme/app/action/desc", RouteClass::Web, Owner),
        ("POST", "/acme/app/action/star", RouteClass::Web, Write),
        (
            "POST",
            "/acme/app/action/unwatch?user_id=7",
            RouteClass::Web,
            Owner,
        ),
        ("POST", "/acme/app/settings", RouteClass::Web, Owner),
        ("GET", "/acme/app/settings", RouteClass::Web, Admin),
        (
            "POST",
            "/acme/app/settings/collaboration",
            RouteClass::Web,
            Admin,
        ),
        ("GET", "/acme/app/tasks/trigger", RouteClass::Web, Write),
        ("GET", "/acme/app/archive/master.zip", RouteClass::Web, Read),
        (
            "GET",
            "/acme/app/raw/master/README.md",
            RouteClass::Web,
            Read,
        ),
        ("POST", "/acme/app/issues/new", RouteClass::Web, Write),
        ("GET", "/acme/app", RouteClass::Web, Read),
        ("GET", "/acme/app/wiki", RouteClass::Web, Read),
    ];
    for (method, path, class, access) in cases {
        assert_eq!(
            repo(method, path),
            (class, "acme/app".to_string(), access),
            "{method} {path}"
        );
    }
}

#[test]
fn gogs_master_web_api_routes_are_repository_routes() {
    use Access::*;
    let master = only("master");
    for (method, path, access) in [
        ("GET", "/api/web/acme/app/header", Read),
        ("GET", "/api/web/acme/app/commit/0123abc", Read),
        ("POST", "/api/web/acme/app/star", Write),
        ("DELETE", "/api/web/acme/app/watch", Write),
        ("GET", "/acme/app/raw/master/a.txt", Read),
    ] {
        match route_in(&master, method, path, "") {
            Ok(Route {
                repo: Some(need), ..
            }) => {
                assert_eq!(
                    (need.repo.to_string().as_str(), need.access),
                    ("acme/app", access),
                    "{method} {path}"
                )
            }
            other => panic!("{method} {path}: {other:?}"),
        }
    }
}

#[test]
fn routes_the_edge_cannot_scope_are_their_own_kind() {
    assert_eq!(site("POST", "/repo/fork/5"), [SiteKind::ById]);
    assert_eq!(site("GET", "/repo/fork/5"), [SiteKind::ById]);
    assert_eq!(site("GET", "/attachments/0b4d-uuid"), [SiteKind::ById]);
    assert_eq!(site("GET", "/api/v1/issues"), [SiteKind::CrossRepo]);
    assert_eq!(site("GET", "/api/v1/user/repos"), [SiteKind::CrossRepo]);
    assert_eq!(site("GET", "/explore/repos"), [SiteKind::CrossRepo]);
    assert_eq!(site("GET", "/"), [SiteKind::CrossRepo]);
    assert_eq!(site("GET", "/alice"), [SiteKind::CrossRepo]);
    assert_eq!(site("GET", "/-/metrics"), [SiteKind::Operator]);
    assert!(site("GET", "/debug/pprof/heap").contains(&SiteKind::Operator));
    assert_eq!(site("GET", "/alice/followers"), [SiteKind::Page]);
    assert_eq!(site("GET", "/user/login"), [SiteKind::Page]);
    assert_eq!(site("GET", "/explore/users"), [SiteKind::Page]);
    assert_eq!(site("GET", "/api/v1/user"), [SiteKind::Page]);
    assert_eq!(site("GET", "/admin/users"), [SiteKind::Page]);
}

#[test]
fn static_files_and_repositories_under_one_name_need_both() {
    // `/avatars/5` is an uploaded avatar when the file exists, else the repository.
    match route_in(&all(), "GET", "/avatars/5", "") {
        Ok(Route {
            repo: Some(need),
            site,
            ..
        }) => {
            assert_eq!(need.repo.to_string(), "avatars/5");
            assert_eq!(site, [SiteKind::Page]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn requests_no_route_takes_are_refused() {
    assert_eq!(
        route_in(&all(), "PROPFIND", "/acme/app", ""),
        Err(RouteError::NoRoute)
    );
    assert_eq!(
        route_in(&all(), "get", "/acme/app", ""),
        Err(RouteError::NoRoute)
    );
    assert_eq!(
        route_in(&all(), "PUT", "/api/v1/repos/acme/app/keys/1", ""),
        Err(RouteError::NoRoute)
    );
    assert_eq!(
        route_in(&all(), "GET", "/api/v1/bogus", ""),
        Err(RouteError::NoRoute)
    );
    assert_eq!(
        route_in(&all(), "GET", "/:username/:reponame/settings", ""),
        Err(RouteError::PatternPath)
    );
}

#[test]
fn names_resolve_like_gogs() {
    for path in [
        "/Acme/App.git/info/refs",
        "/ACME/APP/info/refs",
        "/acme/app.GIT/info/refs",
        "/acme/app.wiki.git/info/refs",
        "/acme/App.WIKI.Git/info/refs",
        "/acme/app/",
    ] {
        assert_eq!(repo("GET", path).1, "acme/app", "{path}");
    }
    // The web UI does not strip `.wiki`.
    assert_eq!(repo("GET", "/acme/app.wiki").1, "acme/app.wiki");
}

#[test]
fn path_tricks_are_refused() {
    assert_eq!(err("acme/app"), RouteError::NotAbsolute);
    assert_eq!(err("/acme/../secret/info/refs"), RouteError::DotSegment);
    assert_eq!(
        err("/acme/%2e%2e/secret/info/refs"),
        RouteError::EncodedUnreserved
    );
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
    assert_eq!(
        err("/acme/%61pp.git/info/refs"),
        RouteError::EncodedUnreserved
    );
    assert_eq!(
        err("/%61pi/v1/repos/acme/app/hooks"),
        RouteError::EncodedUnreserved
    );
    assert_eq!(err("/acme/a%2561/info/refs"), RouteError::BadName);
    assert_eq!(err("/acme/.git/info/refs"), RouteError::BadName);
    assert_eq!(err("/ac me/app/info/refs"), RouteError::BadName);
}

#[test]
fn lfs() {
    let batch = |body: &[u8]| match classify(
        &all(),
        "POST",
        "/acme/app.git/info/lfs/objects/batch",
        "",
        Some(body),
    ) {
        Ok(Route {
            class: RouteClass::Lfs,
            repo: Some(need),
            ..
        }) => need.access,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        batch(br#"{"operation":"download","objects":[]}"#),
        Access::Read
    );
    assert_eq!(
        batch(br#"{"operation":"upload","objects":[]}"#),
        Access::Write
    );
    assert_eq!(
        batch(br#"{"operation":"download","Operation":"upload"}"#),
        Access::Write
    );
    assert_eq!(batch(br#"{"OPERATION":"download"}"#), Access::Read);
    assert_eq!(
        batch(br#"{"operation":"download","operation":"download"}"#),
        Access::Read
    );
    assert_eq!(
        batch(br#"{"operation":"upload","operation":"download"}"#),
        Access::Write
    );
    assert_eq!(
        batch("{\"operation\":\"download\",\"op\u{0131}ration\":\"upload\"}".as_bytes()),
        Access::Write
    );
    assert_eq!(batch(br#"{"operation":"Download"}"#), Access::Write);
    assert_eq!(batch(br#"{"objects":[]}"#), Access::Write);
    assert_eq!(batch(br#"{"operation":["download"]}"#), Access::Write);
    assert_eq!(batch(b"not json"), Access::Write);
    assert_eq!(
        batch(br#"{"operation":"download"} trailing"#),
        Access::Write
    );
    match classify(
        &all(),
        "POST",
        "/acme/app.git/info/lfs/objects/batch",
        "",
        None,
    ) {
        Ok(Route {
            repo: Some(need), ..
        }) => assert_eq!(need.access, Access::Write),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        repo("GET", "/acme/app.git/info/lfs/objects/basic/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
        (RouteClass::Lfs, "acme/app".to_string(), Access::Read)
    );
    assert_eq!(
        repo("PUT", "/acme/app.git/info/lfs/objects/basic/abc").2,
        Access::Write
    );
    assert_eq!(
        repo("POST", "/acme/app.git/info/lfs/objects/basic/verify").2,
        Access::Write
    );
}

#[test]
fn query_values_decode() {
    let v: Vec<_> = query_values(
        "a=1&service=git%2Dupload-pack&b&service=x+y&service=plain",
        "service",
    )
    .collect();
    assert_eq!(v, ["git-upload-pack", "x y", "plain"]);
    assert!(matches!(v.last(), Some(Cow::Borrowed(_))));
}
