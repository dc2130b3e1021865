//! End to end: the real `git` client, through `tollgate serve`, to a real Git smart-HTTP
//! origin (`git http-backend` behind tests/e2e/git_origin.py, authenticating like Gogs),
//! with tokens from a real OpenID provider (oidc-provider, tests/e2e/idp).

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64ct::Encoding;
use serde_json::Value;
use tollgate_conformance::process::{free_port, git, git_ok, Proc};
use tollgate_conformance::world::{
    gateway_git_scenarios, git_with, header, incompressible, read_jsonl, text, World,
    SCENARIO_REASONS,
};

/// A World with `tollgate serve` in front of it.
struct Env {
    world: World,
    tollgate_port: u16,
    admin_port: u16,
    tollgate: Proc,
}

impl std::ops::Deref for Env {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl std::ops::DerefMut for Env {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.world
    }
}

impl Env {
    fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}.git", self.tollgate_port)
    }

    fn git_with(&self, auth: &str, dir: &Path, args: &[&str]) -> std::process::Output {
        git_with(&self.home(), auth, dir, args)
    }

    /// The decision records of the audit log (not the outcome records of forwarded
    /// requests) once there is one for every decision made so far: the writer thread
    /// writes batches a few milliseconds after the responses went out.
    fn audit(&self) -> Vec<Value> {
        let decided: u64 = self
            .metrics()
            .lines()
            .filter(|line| line.starts_with("tollgate_decisions_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let records: Vec<Value> = read_jsonl(&self.path("audit.log"))
                .into_iter()
                .filter(|r| r.get("allow").is_some())
                .collect();
            if records.len() as u64 >= decided || std::time::Instant::now() > deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn metrics(&self) -> String {
        reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .and_then(|r| r.text())
            .expect("metrics")
    }
}

fn start(extra_serve_args: &[&str]) -> Env {
    start_auditing_to(None, extra_serve_args)
}

/// [`start`], with audit records going to `audit_log` (default: `audit.log` in the world).
fn start_auditing_to(audit_log: Option<&Path>, extra_serve_args: &[&str]) -> Env {
    let world = World::start();
    let policy_path = world.path("policy.toml");
    std::fs::write(&policy_path, world.policy()).expect("policy");
    let secrets_path = world.path("secrets.json");
    std::fs::write(&secrets_path, world.secrets_json()).expect("secrets");
    let tollgate_port = free_port();
    let admin_port = free_port();
    let stderr = File::create(world.path("tollgate.stderr")).expect("stderr file");
    let tollgate = Proc::start(
        "tollgate serve",
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--policy"])
            .arg(&policy_path)
            .args(["--origin", &world.origin_url()])
            .args(["--listen", &format!("127.0.0.1:{tollgate_port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .arg("--secrets")
            .arg(&secrets_path)
            .arg("--audit-log")
            .arg(audit_log.map_or_else(|| world.path("audit.log"), Path::to_path_buf))
            .args(extra_serve_args)
            .stdout(Stdio::null())
            .stderr(stderr),
        tollgate_port,
    );
    Env {
        world,
        tollgate_port,
        admin_port,
        tollgate,
    }
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

/// The scenarios every gateway must pass, then what is particular to `tollgate serve`.
fn git_scenarios(env: Env) {
    let gateway = format!("http://127.0.0.1:{}", env.tollgate_port);
    let stderr = || std::fs::read_to_string(env.path("tollgate.stderr")).unwrap_or_default();
    gateway_git_scenarios(&env, &gateway, &stderr);
    let work = env.path("work");

    // Fetch on an existing clone.
    let alice = format!("Bearer {}", env.token("alice", "es256"));
    let out = env.git_with(&alice, &work.join("alice"), &["fetch", "-q", "origin"]);
    assert!(out.status.success(), "alice fetch: {}", text(&out.stderr));

    // An expired token (one-second lifetime, no leeway) is refused.
    let short = format!("Bearer {}", env.token("alice", "short"));
    std::thread::sleep(Duration::from_millis(2100));
    let out = env.git_with(&short, &work, &["ls-remote", &env.url("acme/app")]);
    assert!(!out.status.success(), "expired token accepted");

    // EdDSA tokens work too.
    let dave = format!("Bearer {}", env.token("dave", "eddsa"));
    let out = env.git_with(&dave, &work, &["ls-remote", &env.url("acme/app")]);
    assert!(
        out.status.success(),
        "dave ls-remote: {}",
        text(&out.stderr)
    );

    // One audit line per decision in the audit log.
    let reasons: Vec<String> = env
        .audit()
        .iter()
        .filter_map(|a| a["reason"].as_str().map(String::from))
        .collect();
    for expected in SCENARIO_REASONS.iter().chain(&["token_expired"]) {
        assert!(
            reasons.iter().any(|r| r == expected),
            "no `{expected}` audit record in {reasons:?}"
        );
    }
    // X-Request-Id: the client's usable one is kept, audited and forwarded; otherwise
    // serve's own id (the decision's `id`) stands in.
    let client = reqwest::blocking::Client::new();
    for (sent, kept) in [
        (Some("req-7f3a9c"), true),
        (Some("bad id with spaces"), false),
        (None, false),
    ] {
        let mut request = client
            .get(format!(
                "{}/info/refs?service=git-upload-pack",
                env.url("acme/app")
            ))
            .header("Authorization", &alice);
        if let Some(id) = sent {
            request = request.header("X-Request-Id", id);
        }
        assert_eq!(request.send().expect("request").status(), 200);
        let forwarded = env.origin_requests().pop().expect("an origin request");
        let at_origin = header(&forwarded, "x-request-id").expect("X-Request-Id at the origin");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let record = loop {
            let found = env
                .audit()
                .into_iter()
                .find(|r| r["request_id"] == at_origin);
            if let Some(record) = found {
                break record;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no audit record with request_id `{at_origin}`"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        if kept {
            assert_eq!(Some(at_origin), sent);
        } else {
            assert_eq!(record["id"], at_origin, "{record}");
        }
    }

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

/// Writes `head` (and no body) on a raw connection and returns what comes back within
/// `wait`, or `None` if nothing does.
fn raw_exchange(port: u16, head: &str, wait: Duration) -> (std::net::TcpStream, Option<String>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.write_all(head.as_bytes()).expect("write head");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 4096];
    let answer = match stream.read(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    };
    (stream, answer)
}

/// Does the server close `stream` within `wait`?
fn closed_within(stream: &mut std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a response to drain first
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

#[test]
fn slow_and_idle_connections_are_closed_and_bodies_are_read_only_when_they_can_matter() {
    let env = start(&["--header-timeout", "1", "--max-buffered-bodies", "1"]);
    let port = env.tollgate_port;

    // Half a request head, never finished (slowloris): a 408 after the header timeout,
    // and closed.
    let (mut slow, answer) = raw_exchange(
        port,
        "GET /acme/app.git/info/refs HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(4),
    );
    assert!(
        answer
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 408 ")
                && a.ends_with("the request head did not arrive\n")),
        "{answer:?}"
    );
    assert!(
        closed_within(&mut slow, Duration::from_secs(4)),
        "a half-sent head held its connection"
    );

    // A connection that sends nothing is closed without a word after the same timeout.
    let (mut silent, answer) = raw_exchange(port, "", Duration::from_secs(4));
    assert_eq!(
        answer.as_deref(),
        Some(""),
        "a silent connection was answered"
    );
    assert!(closed_within(&mut silent, Duration::from_secs(1)));

    // A kept-alive connection left idle after its response: closed the same way.
    let (mut idle, answer) = raw_exchange(
        port,
        "GET /user/login HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(
        answer.is_some_and(|a| a.starts_with("HTTP/1.1 ")),
        "no response to a whole head"
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(4)),
        "an idle connection was kept open"
    );

    // An LFS batch no body could get through is refused before its body is read: the
    // answer comes while the promised megabyte has not been sent.
    let batch = |auth: &str| {
        format!(
            "POST /acme/app.git/info/lfs/objects/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.git-lfs+json\r\n{auth}Content-Length: 1048576\r\n\r\n"
        )
    };
    let (_anonymous, answer) = raw_exchange(port, &batch(""), Duration::from_secs(5));
    let answer = answer.expect("an anonymous batch waited for its body");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("lfs-authenticate: basic"),
        "{answer}"
    );
    let forged = format!(
        "Authorization: Bearer {}\r\n",
        tollgate_conformance::world::forge(&env.token("alice", "es256"))
    );
    let (_forged, answer) = raw_exchange(port, &batch(&forged), Duration::from_secs(5));
    assert!(answer
        .expect("a forged batch waited for its body")
        .starts_with("HTTP/1.1 401"));

    // One caller who may upload holds the only body slot while it sends slowly; a
    // second such request is shed with 503 and Retry-After, and counted.
    let alice = format!("Authorization: Bearer {}\r\n", env.token("alice", "es256"));
    let (_holding, answer) = raw_exchange(port, &batch(&alice), Duration::from_millis(500));
    assert_eq!(
        answer, None,
        "an allowed batch was answered before its body arrived"
    );
    let (_second, answer) = raw_exchange(port, &batch(&alice), Duration::from_secs(5));
    let answer = answer.expect("the second batch waited instead of being shed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(
        env.metrics()
            .contains("tollgate_shed_total{limit=\"lfs_bodies\"} 1\n"),
        "{}",
        env.metrics()
    );
    let refused: Vec<Value> = env
        .audit()
        .into_iter()
        .filter(|a| a["path"] == "/acme/app.git/info/lfs/objects/batch")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().all(|a| a["status"] == 401), "{refused:?}");
}

#[test]
fn audit_required_refuses_what_it_cannot_record() {
    // Every write to /dev/full fails, so no audit record can be kept.
    let env = start_auditing_to(Some(Path::new("/dev/full")), &["--audit-required"]);
    let alice = env.token("alice", "es256");
    let client = reqwest::blocking::Client::new();
    let refs = format!("{}/info/refs?service=git-upload-pack", env.url("acme/app"));
    let get = || {
        client
            .get(&refs)
            .bearer_auth(&alice)
            .send()
            .expect("request")
    };
    // The writer finds out at its first write; from then on allowed requests are refused.
    let mut refused = None;
    for _ in 0..50 {
        let response = get();
        if response.status() == 503 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200, "neither forwarded nor refused");
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = refused.expect("an allowed request went through with no audit record kept");
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let metrics = env.metrics();
    assert!(
        !metrics.contains("tollgate_audit_refused_total 0\n")
            && metrics.contains("tollgate_audit_refused_total "),
        "{metrics}"
    );
    let origin_before = env.origin_requests().len();
    assert_eq!(get().status(), 503);
    assert_eq!(
        env.origin_requests().len(),
        origin_before,
        "a refused request reached the origin"
    );
    let stderr = std::fs::read_to_string(env.path("tollgate.stderr")).unwrap_or_default();
    assert!(stderr.contains("cannot write audit records"), "{stderr}");
}

#[test]
fn a_ci_job_on_a_protected_branch_pushes_and_one_on_an_unprotected_branch_cannot() {
    let env = start(&[]);
    let home = env.home();
    let work = env.path("work");
    std::fs::create_dir_all(&work).expect("work");

    // The identity provider's token carries the job's claims; the binding makes it ci-app.
    let job = format!("Bearer {}", env.token("job-protected", "rs256"));
    let out = env.git_with(&job, &work, &["clone", "-q", &env.url("acme/app"), "job"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(work.join("job/RELEASE"), "1.4\n").expect("write");
    git_ok(&home, &work.join("job"), &["add", "RELEASE"]);
    git_ok(
        &home,
        &work.join("job"),
        &["commit", "-q", "-m", "release 1.4"],
    );
    let out = env.git_with(&job, &work.join("job"), &["push", "-q", "origin", "main"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stored = git(
        &home,
        &env.path("repos/acme/app.git"),
        &["cat-file", "blob", "main:RELEASE"],
    );
    assert_eq!(stored.stdout, b"1.4\n");
    // The origin saw ci-app's own Gogs token, and the audit names binding and pipeline.
    let pushes: Vec<Value> = env
        .origin_requests()
        .into_iter()
        .filter(|r| r["path"] == "/acme/app.git/git-receive-pack")
        .collect();
    let ci_app = format!(
        "Basic {}",
        base64ct::Base64::encode_string(b"ci-app:gogs-ci-app-0005")
    );
    assert!(
        !pushes.is_empty()
            && pushes
                .iter()
                .all(|r| r["headers"]["authorization"] == ci_app.as_str()),
        "{pushes:?}"
    );
    let audit = env.audit();
    let push = audit
        .iter()
        .rfind(|a| a["path"] == "/acme/app.git/git-receive-pack")
        .expect("audit record of the push");
    assert_eq!(push["allow"], true, "{push}");
    assert_eq!(push["identity"]["user"], "ci-app", "{push}");
    assert_eq!(push["identity"]["binding"], "app-release", "{push}");
    assert_eq!(
        push["identity"]["claims"]["project_path"], "acme/app",
        "{push}"
    );
    assert_eq!(push["identity"]["claims"]["ref"], "release/1.4", "{push}");
    assert_eq!(
        push["identity"]["claims"]["sha"], "0123456789abcdef0123456789abcdef01234567",
        "{push}"
    );

    // Same project and branch, unprotected: no binding takes it, and its `sub` names no
    // one with access, so it can neither clone nor push.
    let other = format!("Bearer {}", env.token("job-unprotected", "rs256"));
    let out = env.git_with(
        &other,
        &work,
        &["clone", "-q", &env.url("acme/app"), "other"],
    );
    assert!(!out.status.success(), "the unprotected job cloned");
    let out = env.git_with(&other, &work.join("job"), &["push", "-q", "origin", "main"]);
    assert!(!out.status.success(), "the unprotected job pushed");
    let refused = env.audit().pop().expect("audit record");
    assert_eq!(refused["allow"], false, "{refused}");
    assert_eq!(refused["identity"]["user"], "job-unprotected", "{refused}");
    assert!(refused["identity"].get("binding").is_none(), "{refused}");
}

/// The outcome record of the forwarded `method path` request that failed (its decision
/// record shares its id), once the audit writer has written both.
fn failed_outcome(env: &Env, method: &str, path: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let records = read_jsonl(&env.path("audit.log"));
        let of_request = |id: &Value| {
            records
                .iter()
                .any(|r| r["id"] == *id && r["method"] == method && r["path"] == path)
        };
        let failed = records
            .iter()
            .filter_map(|r| r.get("outcome").map(|outcome| (&r["id"], outcome)))
            .find(|(id, outcome)| !outcome["failure"].is_null() && of_request(id));
        if let Some((_, outcome)) = failed {
            return outcome.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed outcome for {method} {path} in {records:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(env: &Env, line_start: &str) -> u64 {
    env.metrics()
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn an_origin_reset_mid_clone_or_mid_push_fails_git_and_is_recorded() {
    let env = start(&[]);
    let home = env.home();
    let work = env.path("work");
    std::fs::create_dir_all(&work).expect("work");
    let alice = format!("Bearer {}", env.token("alice", "es256"));
    let bare = env.path("repos/acme/app.git");
    let origin_main = || git_ok(&home, &bare, &["rev-parse", "main"]);
    // A repository whose pack is far more than the 8 KiB the faults let through.
    let out = env.git_with(&alice, &work, &["clone", "-q", &env.url("acme/app"), "a"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Two different 256 KiB blobs (the same bytes twice would go as a tiny delta).
    let blobs = incompressible(512 << 10);
    let commit_blob = |name: &str, blob: &[u8]| {
        std::fs::write(work.join("a").join(name), blob).expect("write");
        git_ok(&home, &work.join("a"), &["add", name]);
        git_ok(&home, &work.join("a"), &["commit", "-q", "-m", name]);
    };
    commit_blob("one.bin", &blobs[..256 << 10]);
    let out = env.git_with(&alice, &work.join("a"), &["push", "-q", "origin", "main"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The origin resets the connection 8 KiB into the pack of a clone.
    env.inject_origin_fault(Some("reset-upload-pack-response"));
    let out = env.git_with(&alice, &work, &["clone", "-q", &env.url("acme/app"), "b"]);
    assert!(!out.status.success(), "a clone cut by a reset succeeded");
    let outcome = failed_outcome(&env, "POST", "/acme/app.git/git-upload-pack");
    assert_eq!(outcome["failure"], "origin_reset", "{outcome}");
    assert_eq!(outcome["origin_status"], 200, "{outcome}");
    let sent = outcome["bytes_to_client"].as_u64().unwrap_or(0);
    assert!((8192..256 << 10).contains(&sent), "{outcome}");
    assert!(
        metric(
            &env,
            "tollgate_exchange_failures_total{kind=\"origin_reset\"}"
        ) >= 1
    );

    // The origin resets the connection 8 KiB into the pack of a push: git fails, and the
    // origin's branch has not moved.
    env.inject_origin_fault(Some("reset-receive-pack-request"));
    let before = origin_main();
    commit_blob("two.bin", &blobs[256 << 10..]);
    let out = env.git_with(&alice, &work.join("a"), &["push", "-q", "origin", "main"]);
    assert!(!out.status.success(), "a push cut by a reset succeeded");
    assert_eq!(
        origin_main(),
        before,
        "the cut push moved the origin's branch"
    );
    let outcome = failed_outcome(&env, "POST", "/acme/app.git/git-receive-pack");
    assert_eq!(outcome["failure"], "origin_reset", "{outcome}");
    assert_eq!(outcome["origin_status"], Value::Null, "{outcome}");
    assert!(
        outcome["bytes_from_client"].as_u64().unwrap_or(0) >= 8192,
        "{outcome}"
    );

    // The origin recovers, and so does everything through serve: nothing was left behind.
    env.inject_origin_fault(None);
    let out = env.git_with(&alice, &work.join("a"), &["push", "-q", "origin", "main"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env.git_with(&alice, &work, &["clone", "-q", &env.url("acme/app"), "c"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(work.join("c/two.bin")).expect("two.bin"),
        std::fs::read(work.join("a/two.bin")).expect("two.bin")
    );
    assert_eq!(
        metric(&env, "tollgate_requests_in_flight"),
        0,
        "{}",
        env.metrics()
    );
}
