//! The world an end-to-end test runs in: a Git smart-HTTP origin that authenticates like
//! Gogs (`git http-backend` behind tests/e2e/git_origin.py) with seeded repositories, and
//! a real OpenID provider (oidc-provider, tests/e2e/idp). A gateway under test (`tollgate
//! serve`, the Worker under wrangler, ...) is started in front of it by each test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64ct::{Base64, Encoding};
use serde_json::Value;

use crate::browser::Browser;
use crate::process::{free_port, git_ok, repo, Proc};
use std::time::{Duration, Instant};

/// The identity provider's clients: the client id is the token's `sub`. The two `job-*`
/// clients stand for GitLab CI jobs of acme/app on a release branch, one protected.
pub const CLIENTS: &str = r#"{
  "alice": {"secret": "alice-secret", "groups": ["developers"]},
  "bob": {"secret": "bob-secret", "groups": ["contractors"]},
  "dave": {"secret": "dave-secret", "groups": ["developers"]},
  "job-protected": {"secret": "job-protected-secret", "claims": {
    "project_path": "acme/app", "project_id": "42", "ref": "release/1.4", "ref_type": "branch",
    "ref_protected": "true", "pipeline_source": "push",
    "sha": "0123456789abcdef0123456789abcdef01234567"}},
  "job-unprotected": {"secret": "job-unprotected-secret", "claims": {
    "project_path": "acme/app", "project_id": "42", "ref": "release/1.4", "ref_type": "branch",
    "ref_protected": "false", "pipeline_source": "push",
    "sha": "89abcdef0123456789abcdef0123456789abcdef"}}
}"#;
/// Each user's Gogs access token at the origin.
pub const ORIGIN_TOKENS: &[(&str, &str)] = &[
    ("alice", "gogs-alice-0001"),
    ("bob", "gogs-bob-0002"),
    ("dave", "gogs-dave-0003"),
    ("ci-bot", "gogs-ci-0004"),
    ("ci-app", "gogs-ci-app-0005"),
];
/// API keys in [`World::policy`]: the CI bot's, and one with a rate limit of 3 per hour.
pub const CI_KEY: &str = "ci-api-key-e2e";
pub const BURST_KEY: &str = "burst-api-key-e2e";

#[derive(Debug)]
pub struct World {
    pub dir: tempfile::TempDir,
    pub origin_port: u16,
    pub idp_port: u16,
    /// The port [`World::serve`] listens on: the identity provider knows it, as the
    /// redirect URI of its web client (`tollgate-web`).
    pub gateway_port: u16,
    pub idp: Proc,
    pub origin: Proc,
}

impl World {
    pub fn start() -> World {
        let idp_dir = repo().join("tests/e2e/idp");
        assert!(
            idp_dir.join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed: run ./scripts/test (it runs `npm ci` in tests/e2e/idp)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let root = dir.path().join("repos");
        std::fs::create_dir_all(&home).expect("home");
        seed_repo(&home, &root, "acme/app", "app readme\n");
        seed_repo(&home, &root, "acme/secret", "secret readme\n");

        let origin_port = free_port();
        let gateway_port = free_port();
        let tokens: serde_json::Map<String, Value> = ORIGIN_TOKENS
            .iter()
            .map(|(u, t)| ((*u).to_owned(), Value::from(*t)))
            .collect();
        let origin = Proc::start(
            "git origin",
            Command::new("python3")
                .arg(repo().join("tests/e2e/git_origin.py"))
                .arg(origin_port.to_string())
                .arg(&root)
                .arg(Value::Object(tokens).to_string())
                .arg(dir.path().join("origin.log"))
                .env("GIT_ORIGIN_FAULTS", dir.path().join("origin-fault"))
                // LFS hrefs point at the gateway, as Gogs' ROOT_URL would.
                .env(
                    "GIT_ORIGIN_PUBLIC_URL",
                    format!("http://127.0.0.1:{gateway_port}"),
                )
                .stdout(Stdio::null()),
            origin_port,
        );
        let idp_port = free_port();
        let idp = Proc::start(
            "oidc-provider",
            Command::new("node")
                .arg(idp_dir.join("idp.mjs"))
                .arg(idp_port.to_string())
                .arg(CLIENTS)
                .arg(format!("http://127.0.0.1:{gateway_port}"))
                .current_dir(&idp_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            idp_port,
        );
        World {
            dir,
            origin_port,
            idp_port,
            gateway_port,
            idp,
            origin,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn home(&self) -> PathBuf {
        self.path("home")
    }

    pub fn origin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.origin_port)
    }

    /// An access token from the identity provider; `resource` picks the algorithm
    /// (`es256`, `rs256`, `eddsa`) or a one-second lifetime (`short`).
    pub fn token(&self, client: &str, resource: &str) -> String {
        let response = reqwest::blocking::Client::new()
            .post(format!("http://127.0.0.1:{}/token", self.idp_port))
            .basic_auth(client, Some(format!("{client}-secret")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&resource=urn%3Agogs%3A{resource}"
            ))
            .send()
            .expect("token request");
        let json: Value =
            serde_json::from_str(&response.text().expect("token body")).expect("token JSON");
        json["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token: {json}"))
            .to_owned()
    }

    /// Makes the origin misbehave from its next request on (`fault`, one of those
    /// tests/e2e/git_origin.py lists), or behave again (`None`).
    pub fn inject_origin_fault(&self, fault: Option<&str>) {
        let path = self.path("origin-fault");
        match fault {
            Some(fault) => std::fs::write(path, fault).expect("write the origin fault"),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Every request the origin received: method, path, headers, body size and SHA-256.
    pub fn origin_requests(&self) -> Vec<Value> {
        read_jsonl(&self.path("origin.log"))
    }

    /// The policy every gateway under test enforces.
    pub fn policy(&self) -> String {
        format!(
            r#"
[gateway]
realm = "Gogs"

[origin]
git = "user-token"

[[issuer]]
name = "e2e"
issuer = "http://127.0.0.1:{idp}"
audiences = ["gogs"]
algorithms = ["ES256", "RS256", "EdDSA"]
jwks_url = "http://127.0.0.1:{idp}/jwks"
token_type = "at+jwt"
user_claim = "sub"
groups_claim = "groups"
leeway_seconds = 0
audit_claims = ["project_path", "ref", "sha"]

# What `tollgate login` signs people in with (five-second access tokens, refreshed).
[login]
issuer = "e2e"
client_id = "tollgate-cli"
resource = "urn:gogs:login"

# A CI job of acme/app on a protected release branch acts as the Gogs user ci-app.
[[binding]]
name = "app-release"
issuer = "e2e"
claims = {{ project_id = "42", ref_protected = "true", ref = "release/*" }}
user = "ci-app"

[[api_key]]
name = "ci"
sha256 = "{ci}"
user = "ci-bot"
groups = ["ci"]

[[api_key]]
name = "burst"
sha256 = "{burst}"
user = "ci-bot"
groups = ["burst"]

[[grant]]
name = "developers"
who = "group:developers"
repos = "acme/*"
access = "write"

[[grant]]
name = "contractors"
who = "group:contractors"
repos = "acme/app"
access = "read"

[[grant]]
name = "release"
who = "binding:app-release"
repos = "acme/app"
access = "write"

[[grant]]
name = "ci"
who = ["key:ci", "key:burst"]
repos = "acme/app"
access = "read"

[[rate_limit]]
name = "burst"
who = "group:burst"
requests = 3
period_seconds = 3600
"#,
            idp = self.idp_port,
            ci = policy_core::api_key_hash_hex(CI_KEY),
            burst = policy_core::api_key_hash_hex(BURST_KEY),
        )
    }

    /// [`World::policy`] with people signing in to the web UI in their browsers (`[sso]`
    /// with the provider's `tollgate-web` client): pages need a signed-in person, who
    /// reaches Gogs as X-WEBAUTH-USER.
    pub fn sso_policy(&self) -> String {
        let policy = self.policy().replacen(
            "[origin]\ngit = \"user-token\"\n",
            "[origin]\ngit = \"user-token\"\nweb = \"reverse-proxy\"\n",
            1,
        );
        let policy = policy.replacen(
            "[gateway]\nrealm = \"Gogs\"\n",
            "[gateway]\nrealm = \"Gogs\"\nsite_web = \"authenticated\"\n",
            1,
        );
        format!(
            r#"{policy}
[sso]
issuer = "e2e"
client_id = "tollgate-web"
client_secret = "sso-client"
authorization_endpoint = "http://127.0.0.1:{idp}/auth"
token_endpoint = "http://127.0.0.1:{idp}/token"
end_session_endpoint = "http://127.0.0.1:{idp}/session/end"
redirect_uri = "http://127.0.0.1:{gateway}/-/tollgate/callback"
post_logout_redirect_uri = "http://127.0.0.1:{gateway}/"
scopes = ["openid", "groups"]
session_key = "sso-session"
lifetime_seconds = 600
"#,
            idp = self.idp_port,
            gateway = self.gateway_port,
        )
    }

    /// `tollgate serve` (the binary at `tollgate`) in front of this world, deciding with
    /// [`World::policy`] and [`World::secrets_json`], with `extra` flags, on
    /// [`World::gateway_port`], which it returns; its stderr goes to `serve.stderr` in the
    /// world.
    pub fn serve(&self, tollgate: &Path, extra: &[&str]) -> (Proc, u16) {
        self.serve_policy(tollgate, &self.policy(), extra)
    }

    /// [`World::serve`] deciding with `policy`.
    pub fn serve_policy(&self, tollgate: &Path, policy: &str, extra: &[&str]) -> (Proc, u16) {
        std::fs::write(self.path("policy.toml"), policy).expect("policy");
        std::fs::write(self.path("secrets.json"), self.secrets_json()).expect("secrets");
        let port = self.gateway_port;
        let serve = Proc::start(
            "tollgate serve",
            Command::new(tollgate)
                .args(["serve", "--policy"])
                .arg(self.path("policy.toml"))
                .arg("--secrets")
                .arg(self.path("secrets.json"))
                .args(["--origin", &self.origin_url()])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.path("serve.stderr")).expect("stderr")),
            port,
        );
        (serve, port)
    }

    /// The origin secrets for [`World::policy`] and [`World::sso_policy`], as a JSON
    /// object.
    pub fn secrets_json(&self) -> String {
        let mut secrets: serde_json::Map<String, Value> = ORIGIN_TOKENS
            .iter()
            .map(|(u, t)| (format!("gogs-token/{u}"), Value::from(*t)))
            .collect();
        secrets.insert("sso-client".into(), Value::from("tollgate-web-secret"));
        secrets.insert(
            "sso-session".into(),
            Value::from("e2e-session-key-0123456789abcdef0123456789abcdef"),
        );
        Value::Object(secrets).to_string()
    }
}

/// Drives the OpenID provider's own pages in `browser` until it is back at `done_prefix`:
/// the sign-in form filled in as `user` (any password), the consent given, a sign-out
/// confirmed.
pub fn finish_at_provider(browser: &Browser, user: &str, done_prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !browser.url().starts_with(done_prefix) {
        assert!(
            Instant::now() < deadline,
            "still at {} after 60 s: {}",
            browser.url(),
            browser.run("return document.body ? document.body.innerText : '';")
        );
        browser.run(&format!(
            "if (document.readyState !== 'complete' || window.__tollgate_sent) return false;
             const login = document.querySelector('input[name=login]');
             const submit = (form) => {{ window.__tollgate_sent = true; form.submit(); }};
             if (login) {{
               login.value = '{user}';
               document.querySelector('input[name=password]').value = 'any';
               submit(login.form);
             }} else if (document.querySelector('button[name=logout]')) {{
               window.__tollgate_sent = true;
               document.querySelector('button[name=logout]').click();
             }} else if (document.querySelector('input[name=prompt][value=consent]')) {{
               submit(document.querySelector('input[name=prompt][value=consent]').form);
             }}
             return true;"
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn seed_repo(home: &Path, root: &Path, name: &str, content: &str) {
    let bare = root.join(format!("{name}.git"));
    std::fs::create_dir_all(&bare).expect("mkdir bare");
    git_ok(home, &bare, &["init", "-q", "--bare", "-b", "main"]);
    git_ok(home, &bare, &["config", "http.receivepack", "true"]);
    let work = root.join(format!("{name}.seed"));
    std::fs::create_dir_all(&work).expect("mkdir seed");
    git_ok(home, &work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("README"), content).expect("write README");
    git_ok(home, &work, &["add", "README"]);
    git_ok(home, &work, &["commit", "-q", "-m", "seed"]);
    git_ok(
        home,
        &work,
        &["push", "-q", &bare.display().to_string(), "main"],
    );
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// A header of a logged origin request, by case-insensitive name.
pub fn header<'r>(request: &'r Value, name: &str) -> Option<&'r str> {
    request["headers"]
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        Base64::encode_string(format!("{user}:{password}").as_bytes())
    )
}

/// Pseudo-random bytes (xorshift64), so git cannot compress the pack below their size.
pub fn incompressible(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The token with one signature character changed: still base64url, no longer valid.
pub fn forge(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() - 5;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// git with `Authorization: <auth>` sent on every request.
pub fn git_with(home: &Path, auth: &str, dir: &Path, args: &[&str]) -> std::process::Output {
    let header = format!("http.extraHeader=Authorization: {auth}");
    let mut all = vec!["-c", &header];
    all.extend_from_slice(args);
    crate::process::git(home, dir, &all)
}

/// What every gateway in front of a [`World`] must do with real git traffic, checked at
/// the client and at the origin: challenges, clone with read, push refused with read and
/// accepted with write (a pack over git's postBuffer, arriving byte-identical), a hidden
/// repository, a forged token, API keys as a header and as Basic after the challenge, the
/// rate limit at its count (`Retry-After` set), and nothing of the caller's credentials or
/// a client `X-WEBAUTH-USER` at the origin. `log` shows the gateway's output on failure.
pub fn gateway_git_scenarios(world: &World, gateway_url: &str, log: &dyn Fn() -> String) {
    use crate::process::{git, git_ok};

    let url = |repo: &str| format!("{gateway_url}/{repo}.git");
    let refs = |repo: &str| format!("{}/info/refs?service=git-upload-pack", url(repo));
    let home = world.home();
    let work = world.path("work");
    std::fs::create_dir_all(&work).expect("work");
    let client = reqwest::blocking::Client::new();

    let anonymous = client.get(refs("acme/app")).send().expect("request");
    assert_eq!(anonymous.status(), 401, "{}", log());
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Basic realm=\"Gogs\""
    );

    // alice (ES256, developers) clones; bob (RS256, read only) clones but cannot push.
    let alice = format!("Bearer {}", world.token("alice", "es256"));
    let out = git_with(
        &home,
        &alice,
        &work,
        &["clone", "-q", &url("acme/app"), "alice"],
    );
    assert!(
        out.status.success(),
        "alice clone: {}\n{}",
        text(&out.stderr),
        log()
    );
    assert_eq!(
        std::fs::read_to_string(work.join("alice/README")).expect("README"),
        "app readme\n"
    );
    let bob = format!("Bearer {}", world.token("bob", "rs256"));
    let out = git_with(
        &home,
        &bob,
        &work,
        &["clone", "-q", &url("acme/app"), "bob"],
    );
    assert!(out.status.success(), "bob clone: {}", text(&out.stderr));
    std::fs::write(work.join("bob/bob.txt"), "bob\n").expect("write");
    git_ok(&home, &work.join("bob"), &["add", "bob.txt"]);
    git_ok(&home, &work.join("bob"), &["commit", "-q", "-m", "bob"]);
    let out = git_with(&home, &bob, &work.join("bob"), &["push", "origin", "main"]);
    assert!(!out.status.success(), "bob's push must be refused");
    assert!(text(&out.stderr).contains("403"), "{}", text(&out.stderr));
    let out = git_with(
        &home,
        &bob,
        &work,
        &["clone", "-q", &url("acme/secret"), "bob-secret"],
    );
    assert!(
        !out.status.success() && text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );

    // alice pushes a pack larger than git's postBuffer (so it streams chunked).
    let big = incompressible(3 << 20);
    std::fs::write(work.join("alice/big.bin"), &big).expect("write");
    git_ok(&home, &work.join("alice"), &["add", "big.bin"]);
    git_ok(&home, &work.join("alice"), &["commit", "-q", "-m", "big"]);
    let out = git_with(
        &home,
        &alice,
        &work.join("alice"),
        &["push", "-q", "origin", "main"],
    );
    assert!(
        out.status.success(),
        "alice push: {}\n{}",
        text(&out.stderr),
        log()
    );
    let stored = git(
        &home,
        &world.path("repos/acme/app.git"),
        &["cat-file", "blob", "main:big.bin"],
    );
    assert!(
        stored.stdout == big,
        "the pushed blob differs at the origin"
    );

    // A forged token is refused; the CI key works as a header and as Basic after the challenge.
    let forged = format!("Bearer {}", forge(alice.trim_start_matches("Bearer ")));
    let out = git_with(&home, &forged, &work, &["ls-remote", &url("acme/app")]);
    assert!(!out.status.success(), "forged token accepted");
    let out = git_with(
        &home,
        &format!("token {CI_KEY}"),
        &work,
        &["ls-remote", &url("acme/app")],
    );
    assert!(out.status.success(), "ci header: {}", text(&out.stderr));
    let with_creds = url("acme/app").replace("http://", &format!("http://ci-bot:{CI_KEY}@"));
    let out = git(&home, &work, &["ls-remote", &with_creds]);
    assert!(out.status.success(), "ci basic: {}", text(&out.stderr));

    // The rate limit cuts in at the configured count (3 per hour for the burst key).
    let burst = |client: &reqwest::blocking::Client| {
        client
            .get(refs("acme/app"))
            .header("authorization", format!("token {BURST_KEY}"))
            .send()
            .expect("request")
    };
    let statuses: Vec<u16> = (0..4).map(|_| burst(&client).status().as_u16()).collect();
    assert_eq!(statuses, [200, 200, 200, 429], "{}", log());
    let limited = burst(&client);
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=1200).contains(&retry), "Retry-After {retry}");

    // What reached the origin: only the gateway's credentials, never a client X-WEBAUTH-USER.
    let auth = format!("http.extraHeader=Authorization: {alice}");
    let out = git(
        &home,
        &work,
        &[
            "-c",
            "http.extraHeader=X-WEBAUTH-USER: admin",
            "-c",
            &auth,
            "ls-remote",
            &url("acme/app"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = world.origin_requests();
    assert!(seen.len() > 5, "only {} origin requests logged", seen.len());
    for request in &seen {
        assert!(
            header(request, "x-webauth-user").is_none(),
            "X-WEBAUTH-USER reached the origin: {request}"
        );
        let auth = header(request, "authorization");
        assert!(
            auth.is_none_or(|a| a.starts_with("Basic ")),
            "a caller credential reached the origin: {request}"
        );
    }
    let alice_basic = basic("alice", "gogs-alice-0001");
    assert!(seen
        .iter()
        .any(|r| header(r, "authorization") == Some(alice_basic.as_str())));

    // A web page carrying someone else's Gogs session: Gogs would sign the browser in from
    // it before reading X-WEBAUTH-USER, so it must not arrive; the other cookies must.
    // Nor may its own spellings of the identity header, or its own idea of its address.
    let page = client
        .get(format!("{gateway_url}/acme/app/src/master"))
        .header("Authorization", &alice)
        .header("X-WEBAUTH-USER", "admin")
        .header("X_WEBAUTH_USER", "admin")
        .header("X-Real-IP", "203.0.113.66")
        .header("X-Forwarded-For", "203.0.113.66")
        .header("Forwarded", "for=203.0.113.66")
        .header("Cookie", "lang=en-US; i_like_gogs=admin-session; _csrf=tok")
        .send()
        .expect("web request");
    // The origin serves the page to the user in X-WEBAUTH-USER; what it was sent is the point.
    assert_eq!(page.status(), 200, "{}", log());
    let seen = world.origin_requests();
    let forwarded = seen
        .iter()
        .rev()
        .find(|r| r["path"] == "/acme/app/src/master")
        .unwrap_or_else(|| panic!("the web request never reached the origin\n{}", log()));
    assert_eq!(
        header(forwarded, "x-webauth-user"),
        Some("alice"),
        "{forwarded}"
    );
    assert_eq!(
        header(forwarded, "cookie"),
        Some("lang=en-US; _csrf=tok"),
        "{forwarded}"
    );
    assert_eq!(header(forwarded, "authorization"), None, "{forwarded}");
    assert_eq!(header(forwarded, "x_webauth_user"), None, "{forwarded}");
    assert_eq!(header(forwarded, "forwarded"), None, "{forwarded}");
    for name in ["x-real-ip", "x-forwarded-for"] {
        let value = header(forwarded, name)
            .unwrap_or_else(|| panic!("no {name} at the origin: {forwarded}"));
        assert!(
            !value.contains("203.0.113.66"),
            "the client's own {name} reached the origin: {forwarded}"
        );
    }
}

/// The audit reasons the scenarios above must have produced.
pub const SCENARIO_REASONS: &[&str] = &[
    "allowed",
    "missing_credential",
    "insufficient_access",
    "not_found",
    "token_bad_signature",
    "rate_limited",
];
