//! End to end: the real `git` client, through `tollgate serve`, to a real Git smart-HTTP
//! origin (`git http-backend` behind tests/e2e/git_origin.py, authenticating like Gogs),
//! with tokens from a real OpenID provider (oidc-provider, tests/e2e/idp).

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64ct::{Base64, Encoding};
use serde_json::Value;
use support::{free_port, git, git_ok, repo, Proc};

const CLIENTS: &str = r#"{
  "alice": {"secret": "alice-secret", "groups": ["developers"]},
  "bob": {"secret": "bob-secret", "groups": ["contractors"]},
  "dave": {"secret": "dave-secret", "groups": ["developers"]}
}"#;
const ORIGIN_TOKENS: &[(&str, &str)] = &[
    ("alice", "gogs-alice-0001"),
    ("bob", "gogs-bob-0002"),
    ("dave", "gogs-dave-0003"),
    ("ci-bot", "gogs-ci-0004"),
];
const CI_KEY: &str = "ci-api-key-e2e";
const BURST_KEY: &str = "burst-api-key-e2e";

struct Env {
    dir: tempfile::TempDir,
    tollgate_port: u16,
    admin_port: u16,
    idp_port: u16,
    tollgate: Proc,
    idp: Proc,
    _origin: Proc,
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn home(&self) -> PathBuf {
        self.path("home")
    }

    fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}.git", self.tollgate_port)
    }

    fn token(&self, client: &str, resource: &str) -> String {
        let secret = format!("{client}-secret");
        let response = reqwest::blocking::Client::new()
            .post(format!("http://127.0.0.1:{}/token", self.idp_port))
            .basic_auth(client, Some(secret))
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

    /// git with `Authorization: <value>` on every request.
    fn git_with(&self, auth: &str, dir: &Path, args: &[&str]) -> std::process::Output {
        let header = format!("http.extraHeader=Authorization: {auth}");
        let mut all = vec!["-c", &header];
        all.extend_from_slice(args);
        git(&self.home(), dir, &all)
    }

    fn origin_requests(&self) -> Vec<Value> {
        read_jsonl(&self.path("origin.log"))
    }

    fn audit(&self) -> Vec<Value> {
        read_jsonl(&self.path("audit.log"))
    }

    fn metrics(&self) -> String {
        reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .and_then(|r| r.text())
            .expect("metrics")
    }
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// A header of a logged origin request, by case-insensitive name.
fn header<'r>(request: &'r Value, name: &str) -> Option<&'r str> {
    request["headers"]
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

fn start(extra_serve_args: &[&str]) -> Env {
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
            .current_dir(&idp_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        idp_port,
    );

    let policy = format!(
        r#"
[gateway]
realm = "Gogs"

[origin]
git = "user-token"

[[issuer]]
name = "e2e"
issuer = "http://127.0.0.1:{idp_port}"
audiences = ["gogs"]
algorithms = ["ES256", "RS256", "EdDSA"]
jwks_url = "http://127.0.0.1:{idp_port}/jwks"
token_type = "at+jwt"
groups_claim = "groups"
leeway_seconds = 0

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
        ci = policy_core::api_key_hash_hex(CI_KEY),
        burst = policy_core::api_key_hash_hex(BURST_KEY),
    );
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy).expect("policy");
    let secrets: serde_json::Map<String, Value> = ORIGIN_TOKENS
        .iter()
        .map(|(u, t)| (format!("gogs-token/{u}"), Value::from(*t)))
        .collect();
    let secrets_path = dir.path().join("secrets.json");
    std::fs::write(&secrets_path, Value::Object(secrets).to_string()).expect("secrets");

    let tollgate_port = free_port();
    let admin_port = free_port();
    let stderr = File::create(dir.path().join("tollgate.stderr")).expect("stderr file");
    let tollgate = Proc::start(
        "tollgate serve",
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--policy"])
            .arg(&policy_path)
            .args(["--origin", &format!("http://127.0.0.1:{origin_port}")])
            .args(["--listen", &format!("127.0.0.1:{tollgate_port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .arg("--secrets")
            .arg(&secrets_path)
            .arg("--audit-log")
            .arg(dir.path().join("audit.log"))
            .args(extra_serve_args)
            .stdout(Stdio::null())
            .stderr(stderr),
        tollgate_port,
    );
    Env {
        dir,
        tollgate_port,
        admin_port,
        idp_port,
        tollgate,
        idp,
        _origin: origin,
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        Base64::encode_string(format!("{user}:{password}").as_bytes())
    )
}

/// Pseudo-random bytes (xorshift64), so git cannot compress the pack below their size.
fn incompressible(len: usize) -> Vec<u8> {
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

fn forge(token: &str) -> String {
    // Change one signature character: still base64url, no longer a valid signature.
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() - 5;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[test]
fn git_clone_fetch_push_through_tollgate() {
    git_scenarios(start(&["--jwks-min-refresh-gap", "2"]));
}

#[test]
fn git_through_tollgate_deciding_in_the_policy_module() {
    let module = format!(
        "--wasm={}",
        tollgate_conformance::build_wasm_module().display()
    );
    let env = start(&["--jwks-min-refresh-gap", "2", &module]);
    let stderr = std::fs::read_to_string(env.path("tollgate.stderr")).expect("stderr");
    assert!(
        stderr.contains("deciding in the policy module (wasmtime)"),
        "{stderr}"
    );
    git_scenarios(env);
}

/// Everything a team does through the gateway, checked at the client and at the origin.
fn git_scenarios(env: Env) {
    let home = env.home();
    let work = env.path("work");
    std::fs::create_dir_all(&work).expect("work");

    // alice (ES256, developers): clone and fetch.
    let alice = format!("Bearer {}", env.token("alice", "es256"));
    let out = env.git_with(
        &alice,
        &work,
        &["clone", "-q", &env.url("acme/app"), "alice"],
    );
    assert!(out.status.success(), "alice clone: {}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(work.join("alice/README")).expect("README"),
        "app readme\n"
    );
    let out = env.git_with(&alice, &work.join("alice"), &["fetch", "-q", "origin"]);
    assert!(out.status.success(), "alice fetch: {}", text(&out.stderr));

    // bob (RS256, contractors, read only): clone works, push is refused with a 403.
    let bob = format!("Bearer {}", env.token("bob", "rs256"));
    let out = env.git_with(&bob, &work, &["clone", "-q", &env.url("acme/app"), "bob"]);
    assert!(out.status.success(), "bob clone: {}", text(&out.stderr));
    std::fs::write(work.join("bob/bob.txt"), "bob was here\n").expect("write");
    git_ok(&home, &work.join("bob"), &["add", "bob.txt"]);
    git_ok(&home, &work.join("bob"), &["commit", "-q", "-m", "bob"]);
    let out = env.git_with(&bob, &work.join("bob"), &["push", "origin", "main"]);
    assert!(!out.status.success(), "bob's push must be refused");
    assert!(
        text(&out.stderr).contains("403"),
        "bob push stderr: {}",
        text(&out.stderr)
    );

    // A repository outside bob's grants does not exist for him.
    let out = env.git_with(
        &bob,
        &work,
        &["clone", "-q", &env.url("acme/secret"), "bob-secret"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not found"),
        "bob secret stderr: {}",
        text(&out.stderr)
    );

    // alice pushes a pack larger than http.postBuffer (so git streams it chunked); the
    // origin must hold exactly the bytes she committed.
    let big = incompressible(3 << 20);
    std::fs::write(work.join("alice/big.bin"), &big).expect("big file");
    git_ok(&home, &work.join("alice"), &["add", "big.bin"]);
    git_ok(&home, &work.join("alice"), &["commit", "-q", "-m", "big"]);
    let out = env.git_with(
        &alice,
        &work.join("alice"),
        &["push", "-q", "origin", "main"],
    );
    assert!(out.status.success(), "alice push: {}", text(&out.stderr));
    let local_head = git_ok(&home, &work.join("alice"), &["rev-parse", "HEAD"]);
    let bare = env.path("repos/acme/app.git");
    assert_eq!(git_ok(&home, &bare, &["rev-parse", "main"]), local_head);
    let stored = git(&home, &bare, &["cat-file", "blob", "main:big.bin"]);
    assert!(
        stored.stdout == big,
        "the pushed blob differs at the origin"
    );
    let pushes: Vec<Value> = env
        .origin_requests()
        .into_iter()
        .filter(|r| {
            r["method"] == "POST"
                && r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("git-receive-pack"))
        })
        .collect();
    let big_push = pushes
        .iter()
        .find(|r| r["body_bytes"].as_u64().unwrap_or(0) > 1 << 20)
        .expect("a large receive-pack POST");
    assert_eq!(
        header(big_push, "authorization"),
        Some(basic("alice", "gogs-alice-0001").as_str()),
        "origin credential"
    );

    // Forged and expired tokens are refused with a challenge, so git reports auth failure.
    let forged = format!("Bearer {}", forge(alice.trim_start_matches("Bearer ")));
    let out = env.git_with(&forged, &work, &["ls-remote", &env.url("acme/app")]);
    assert!(!out.status.success(), "forged token accepted");
    let short = format!("Bearer {}", env.token("alice", "short"));
    std::thread::sleep(Duration::from_millis(2100));
    let out = env.git_with(&short, &work, &["ls-remote", &env.url("acme/app")]);
    assert!(!out.status.success(), "expired token accepted");
    let reasons: Vec<String> = env
        .audit()
        .iter()
        .filter_map(|a| a["reason"].as_str().map(String::from))
        .collect();
    assert!(
        reasons.iter().any(|r| r == "token_bad_signature"),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r == "token_expired"), "{reasons:?}");

    // EdDSA tokens work too.
    let dave = format!("Bearer {}", env.token("dave", "eddsa"));
    let out = env.git_with(&dave, &work, &["ls-remote", &env.url("acme/app")]);
    assert!(
        out.status.success(),
        "dave ls-remote: {}",
        text(&out.stderr)
    );

    // The CI bot's API key: as an extra header, and as Basic credentials in the URL
    // (sent only after tollgate's 401 challenge).
    let out = env.git_with(
        &format!("token {CI_KEY}"),
        &work,
        &["clone", "-q", &env.url("acme/app"), "ci-header"],
    );
    assert!(
        out.status.success(),
        "ci clone (header): {}",
        text(&out.stderr)
    );
    let url = env
        .url("acme/app")
        .replace("http://", &format!("http://ci-bot:{CI_KEY}@"));
    let out = git(&home, &work, &["clone", "-q", &url, "ci-basic"]);
    assert!(
        out.status.success(),
        "ci clone (basic): {}",
        text(&out.stderr)
    );
    let ci_basic = basic("ci-bot", "gogs-ci-0004");
    assert!(env
        .origin_requests()
        .iter()
        .any(|r| header(r, "authorization") == Some(ci_basic.as_str())));

    // A client-sent X-WEBAUTH-USER never reaches the origin, nor does any caller token.
    let spoof = "http.extraHeader=X-WEBAUTH-USER: admin";
    let out = git(
        &home,
        &work,
        &[
            "-c",
            spoof,
            "-c",
            &format!("http.extraHeader=Authorization: {alice}"),
            "ls-remote",
            &env.url("acme/app"),
        ],
    );
    assert!(
        out.status.success(),
        "spoofing ls-remote: {}",
        text(&out.stderr)
    );
    let seen = env.origin_requests();
    assert!(
        seen.len() > 10,
        "only {} origin requests logged",
        seen.len()
    );
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

    // The rate limit cuts in at the configured count (3 per hour for the burst key).
    let client = reqwest::blocking::Client::new();
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            client
                .get(format!(
                    "{}/info/refs?service=git-upload-pack",
                    env.url("acme/app")
                ))
                .header("authorization", format!("token {BURST_KEY}"))
                .send()
                .expect("request")
                .status()
                .as_u16()
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    let limited = client
        .get(format!(
            "{}/info/refs?service=git-upload-pack",
            env.url("acme/app")
        ))
        .header("authorization", format!("token {BURST_KEY}"))
        .send()
        .expect("request");
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=1200).contains(&retry), "Retry-After {retry}");

    // Unknown key ids prompt at most one JWKS refresh per gap, however many arrive.
    std::thread::sleep(Duration::from_millis(2100));
    let (head, rest) = alice
        .trim_start_matches("Bearer ")
        .split_once('.')
        .expect("jwt");
    let mut header: Value =
        serde_json::from_slice(&base64ct::Base64UrlUnpadded::decode_vec(head).expect("b64"))
            .expect("header");
    header["kid"] = Value::from("rotated-key");
    let rotated = format!(
        "{}.{rest}",
        base64ct::Base64UrlUnpadded::encode_string(header.to_string().as_bytes())
    );
    for _ in 0..5 {
        let status = client
            .get(format!(
                "{}/info/refs?service=git-upload-pack",
                env.url("acme/app")
            ))
            .bearer_auth(&rotated)
            .send()
            .expect("request")
            .status();
        assert_eq!(status, 401);
    }
    let metrics = env.metrics();
    assert!(
        metrics.contains("tollgate_jwks_fetches_total{issuer=\"e2e\",result=\"ok\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_decisions_total{status=\"429\",reason=\"rate_limited\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_decisions_total{status=\"403\",reason=\"insufficient_access\"}"),
        "{metrics}"
    );

    // Graceful shutdown on SIGTERM.
    let mut env = env;
    let status = env.tollgate.terminate();
    assert!(status.success(), "tollgate exited with {status}");
    let stderr = std::fs::read_to_string(env.path("tollgate.stderr")).expect("stderr");
    assert!(stderr.contains("tollgate: stopped"), "{stderr}");
}

#[test]
fn last_good_keys_serve_while_the_issuer_is_down_then_fail_closed() {
    let mut env = start(&["--jwks-refresh", "1", "--jwks-max-stale", "3"]);
    let work = env.path("work");
    std::fs::create_dir_all(&work).expect("work");
    let alice = format!("Bearer {}", env.token("alice", "es256"));
    let out = env.git_with(&alice, &work, &["ls-remote", &env.url("acme/app")]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    env.idp.terminate();
    let out = env.git_with(&alice, &work, &["ls-remote", &env.url("acme/app")]);
    assert!(
        out.status.success(),
        "cached keys must keep serving: {}",
        text(&out.stderr)
    );

    std::thread::sleep(Duration::from_secs(5));
    let out = env.git_with(&alice, &work, &["ls-remote", &env.url("acme/app")]);
    assert!(!out.status.success(), "stale keys must not serve");
    let last = env.audit().pop().expect("audit record");
    assert_eq!(last["reason"], "token_issuer_keys_unavailable", "{last}");
    assert_eq!(last["status"], 401);
}

#[test]
fn a_large_push_streams_in_bounded_memory() {
    let env = start(&[]);
    let home = env.home();
    let work = env.path("work");
    std::fs::create_dir_all(&work).expect("work");
    let alice = format!("Bearer {}", env.token("alice", "es256"));
    let out = env.git_with(
        &alice,
        &work,
        &["clone", "-q", &env.url("acme/app"), "alice"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // 96 MiB of incompressible bytes: buffering the push would need at least that much.
    let big = incompressible(96 << 20);
    std::fs::write(work.join("alice/huge.bin"), &big).expect("write");
    git_ok(&home, &work.join("alice"), &["add", "huge.bin"]);
    git_ok(&home, &work.join("alice"), &["commit", "-q", "-m", "huge"]);
    let out = env.git_with(
        &alice,
        &work.join("alice"),
        &["push", "-q", "origin", "main"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stored = git(
        &home,
        &env.path("repos/acme/app.git"),
        &["cat-file", "blob", "main:huge.bin"],
    );
    assert!(
        stored.stdout == big,
        "the pushed blob differs at the origin"
    );
    let peak_mib = env.tollgate.peak_rss_kib() / 1024;
    eprintln!("tollgate peak RSS after a 96 MiB push: {peak_mib} MiB");
    assert!(
        peak_mib < 64,
        "tollgate peaked at {peak_mib} MiB for a 96 MiB push: the body was buffered"
    );
}
