//! Walks every route of every Gogs route inventory (policy-core/gogs/*.routes) with sample
//! parameters and checks that Tollgate's decision agrees with the guard Gogs puts on it:
//! the same repository, access at least what the guards demand, the same surface. The
//! guards are restated here, apart from policy-core/gogs/semantics.toml (which compiles
//! the classifier), so a weakened meaning there is a failing test, not a bypass.

use policy_core::{Access, Engine, NoKeys, NoSecrets, RequestFacts, RouteClass, UnixTime, Verdict};

/// What a middleware or handler demands of the repository named in the path.
enum Guard {
    /// Loads the repository and requires this access (Gogs' RepoAssignment family).
    Repo(Access),
    /// Raises the access the route requires.
    Access(Access),
    /// Git smart HTTP: loads the repository (read; write for a push).
    Git,
    /// Git LFS: the class only.
    Lfs,
    /// The API's context.
    Api,
}

const GUARDS: &[(&str, Guard)] = &[
    ("context.RepoAssignment()", Guard::Repo(Access::Read)),
    ("context.RepoAssignment(true)", Guard::Repo(Access::Read)),
    (
        "context.RepoAssignment(false,true)",
        Guard::Repo(Access::Read),
    ),
    ("repoAssignment()", Guard::Repo(Access::Read)),
    ("withRepoContext", Guard::Repo(Access::Read)),
    (
        "authorize(store,database.AccessModeRead)",
        Guard::Repo(Access::Read),
    ),
    (
        "authorize(store,database.AccessModeWrite)",
        Guard::Repo(Access::Write),
    ),
    ("authenticate(store)", Guard::Lfs),
    ("repo.HTTPContexter(repo.NewStore())", Guard::Git),
    ("reqRepoWriter", Guard::Access(Access::Write)),
    ("reqRepoWriter()", Guard::Access(Access::Write)),
    ("reqRepoAdmin", Guard::Access(Access::Admin)),
    ("reqRepoAdmin()", Guard::Access(Access::Admin)),
    ("reqRepoOwner()", Guard::Access(Access::Owner)),
    ("context.APIContexter()", Guard::Api),
    // Handlers that check more than their route's middleware.
    ("repo.SettingsPost", Guard::Access(Access::Owner)), // convert, transfer, delete
    ("repo.TriggerTask", Guard::Repo(Access::Read)),     // loads the repository itself
];

struct Expected {
    repo: bool,
    access: Access,
    class: RouteClass,
}

fn expected(handlers: &[&str]) -> Expected {
    let mut e = Expected {
        repo: false,
        access: Access::Read,
        class: RouteClass::Web,
    };
    for h in handlers {
        for (name, guard) in GUARDS {
            if name != h {
                continue;
            }
            match guard {
                Guard::Repo(a) => {
                    e.repo = true;
                    e.access = e.access.max(*a);
                }
                Guard::Access(a) => e.access = e.access.max(*a),
                Guard::Git => {
                    e.repo = true;
                    e.class = RouteClass::Git;
                }
                Guard::Lfs => e.class = RouteClass::Lfs,
                Guard::Api => e.class = RouteClass::Api,
            }
        }
    }
    e
}

/// A value matching one regular expression of the kinds Gogs' routes use.
fn sample_regex(re: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = re.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '^' | '$' => i += 1,
            '\\' => {
                out.push(chars[i + 1]);
                i += 2;
            }
            '(' => {
                let close = i + chars[i..].iter().position(|&c| c == ')').unwrap();
                let inner: String = chars[i + 1..close].iter().collect();
                let first = inner.split('|').next().unwrap().trim_start_matches('(');
                out.push_str(&sample_regex(first));
                i = close + 1;
            }
            '[' => {
                let close = i + chars[i..].iter().position(|&c| c == ']').unwrap();
                let c = chars[i + 1];
                let mut n = 1;
                i = close + 1;
                if chars.get(i) == Some(&'{') {
                    let end = i + chars[i..].iter().position(|&c| c == '}').unwrap();
                    let spec: String = chars[i + 1..end].iter().collect();
                    n = spec.split(',').next().unwrap().parse().unwrap();
                    i = end + 1;
                }
                out.extend(std::iter::repeat_n(c, n));
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// A request path reaching `pattern`: owner `acme`, repository `app`, other parameters
/// plausible values.
fn sample_path(router: &str, pattern: &str) -> String {
    let mut out = String::new();
    let trimmed = pattern.trim_end_matches('/');
    let segments: Vec<String> = if router == "flamego" {
        // Split at `/` outside `{...}`.
        let mut segs = vec![String::new()];
        let mut depth = 0;
        for c in trimmed.trim_start_matches('/').chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                '/' if depth == 0 => {
                    segs.push(String::new());
                    continue;
                }
                _ => {}
            }
            segs.last_mut().unwrap().push(c);
        }
        segs
    } else {
        trimmed
            .trim_start_matches('/')
            .split('/')
            .map(str::to_owned)
            .collect()
    };
    for segment in segments {
        if segment.is_empty() && out.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(&sample_segment(router, &segment));
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn sample_segment(router: &str, segment: &str) -> String {
    match segment {
        ":username" | "{owner}" => "acme".into(),
        ":reponame" | "{repo}" => "app".into(),
        "*" | "{**}" => "master/docs/a.md".into(),
        "?:page" => "Home".into(),
        s if router == "flamego" && s.contains("**") => "docs/a.md".into(),
        s if router == "flamego" && s.starts_with('{') && !s.contains(':') => "master".into(),
        s if router == "flamego" && s.contains('{') => {
            // `{name: /regex/}` elements between literals.
            let mut out = String::new();
            let mut rest = s;
            while let Some(open) = rest.find('{') {
                out.push_str(&rest[..open]);
                let end = rest.find("/}").unwrap();
                let re = &rest[rest[open..].find('/').unwrap() + open + 1..end];
                out.push_str(&sample_regex(re));
                rest = &rest[end + 2..];
            }
            out.push_str(rest);
            out
        }
        s if s.starts_with(':') && !s.contains('(') => "x1".into(),
        s if s.contains(':') => {
            // macaron `:name(regex)` pieces: drop the names, sample the expressions.
            let mut stripped = String::new();
            let mut chars = s.chars().peekable();
            while let Some(c) = chars.next() {
                if c == ':' && chars.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
                    while chars.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
                        chars.next();
                    }
                } else {
                    stripped.push(c);
                }
            }
            sample_regex(&stripped)
        }
        s => s.into(),
    }
}

fn engine(version: &str) -> Engine {
    let policy = format!(
        r#"
[gateway]
site_web = "anonymous"
site_api = "anonymous"
cross_repo = "site"
by_id = "site"
operator = "site"
[origin]
gogs = "{version}"
"#
    );
    Engine::from_toml(&policy, "inventory.toml").unwrap()
}

#[test]
fn every_gogs_route_is_decided_at_least_as_strictly_as_gogs_guards_it() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/gogs");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "routes"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "inventories for v0.14.3 and master");
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in &files {
        let version = file.file_stem().unwrap().to_str().unwrap();
        let engine = engine(version);
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            let ["route", router, method, pattern, handlers, source] = fields.as_slice() else {
                continue;
            };
            let handlers: Vec<&str> = handlers.split(" ; ").collect();
            if handlers.last() == Some(&"func{c.NotFound()}") {
                continue; // the API's 404 for unknown paths
            }
            let path = sample_path(router, pattern);
            let (path, query) = match path.split_once('?') {
                Some((p, q)) => (p.to_owned(), q.to_owned()),
                None => (path, String::new()),
            };
            let facts = RequestFacts {
                method,
                path: &path,
                query: &query,
                ..RequestFacts::get("/")
            };
            let decision = match engine.decide(
                &facts,
                UnixTime::from_secs(1_800_000_000),
                &NoKeys,
                &NoSecrets,
            ) {
                Verdict::Decided(d) => d,
                Verdict::Pending(_) => unreachable!("no rate limits"),
                Verdict::Exchange(_) => unreachable!("no [sso]"),
            };
            checked += 1;
            let want = expected(&handlers);
            let where_ = format!("{version} {method} {pattern} ({source}) as {path}");
            // A route that hands the request to master's flamego router is a 404 there when
            // flamego has no route for it (HEAD, other methods): refusing it agrees.
            let dispatches = matches!(
                handlers.last(),
                Some(&"flamegoBridger(webHandler)" | &"func{c.ServeWeb()}")
            );
            if decision.reason.code() == "no_route" && dispatches && !want.repo {
                continue;
            }
            if decision.status == 400 || decision.reason.code() == "no_route" {
                problems.push(format!(
                    "{where_}: refused as `{}`: {}",
                    decision.reason, decision.message
                ));
                continue;
            }
            let repo = decision.repo.as_ref().map(ToString::to_string);
            if want.repo {
                if repo.as_deref() != Some("acme/app") {
                    problems.push(format!(
                        "{where_}: repository {repo:?}, Gogs loads acme/app"
                    ));
                } else if decision.access.is_none_or(|a| a < want.access) {
                    problems.push(format!(
                        "{where_}: needs {:?}, Gogs' guards demand {:?}",
                        decision.access, want.access
                    ));
                } else if decision.class != Some(want.class) {
                    problems.push(format!(
                        "{where_}: class {:?}, Gogs serves it as {:?}",
                        decision.class, want.class
                    ));
                }
            } else if let Some(other) = repo.filter(|r| r == "acme/app") {
                problems.push(format!(
                    "{where_}: decided on repository {other}, which the route does not load"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {checked} routes disagree:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(checked > 1000, "only {checked} routes checked");
}
