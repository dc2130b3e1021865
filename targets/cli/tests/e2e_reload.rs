//! `tollgate serve` replacing its policy while serving, with real processes on 127.0.0.1:
//! POST /reload, SIGHUP and the file watch put a policy in place only once it compiles and
//! its own `[[test]]` cases pass; a broken or failing one leaves the old policy deciding.
//! Rate state and the keys of unchanged issuers survive a reload; shadow rules show in
//! the audit records and metrics of the policy that has them.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_conformance::process::{faulty_origin, free_port, repo, Proc};

/// Anonymous clones of acme/*, five an hour per address, and a JWKS issuer whose keys the
/// gateway fetches (`JWKS_URL` is filled in).
const V1: &str = r#"
[origin]
git = "service-token"
service_user = "svc"
service_token_secret = "svc-token"

[[issuer]]
name = "ci"
issuer = "https://ci.example"
audiences = ["tollgate"]
algorithms = ["EdDSA"]
jwks_url = "JWKS_URL"

[[grant]]
name = "anyone-reads"
who = "*"
repos = "acme/*"
access = "read"

[[rate_limit]]
name = "anonymous"
who = "anonymous"
requests = 5
period_seconds = 3600

[[test]]
name = "anyone clones"
request = { path = "/acme/ok.git/info/refs", query = "service=git-upload-pack" }
expect = { allow = true }
"#;

/// V1 trying out a shadow freeze of acme/ok, with a test case saying so.
const V2_SHADOW: &str = r#"
[[grant]]
name = "freeze-ok"
mode = "shadow"
who = "*"
repos = "acme/ok"
access = "read"
effect = "deny"

[[test]]
name = "the freeze is only reported"
request = { path = "/acme/ok.git/info/refs", query = "service=git-upload-pack" }
expect = { allow = true, shadow = { allow = false, status = 401, rule = "grant:freeze-ok" } }
"#;

/// A case V1 does not pass: it is written for a policy that denies acme/ok.
const FAILING_TEST: &str = r#"
[[test]]
name = "acme/ok is closed"
request = { path = "/acme/ok.git/info/refs", query = "service=git-upload-pack" }
expect = { allow = false }
"#;

const GIT_PATH: &str = "/acme/ok.git/info/refs?service=git-upload-pack";

const JWKS: &str = r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

struct Setup {
    dir: tempfile::TempDir,
    jwks_url: String,
    gateway: Proc,
    port: u16,
    admin_port: u16,
    _origin: Proc,
    _jwks: Proc,
}

impl Setup {
    fn start(extra: &[&str]) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("secrets.json"), r#"{"svc-token": "t"}"#).expect("secrets");
        std::fs::create_dir(dir.path().join("jwks")).expect("jwks dir");
        std::fs::write(dir.path().join("jwks/keys.json"), JWKS).expect("jwks");
        let jwks_port = free_port();
        let jwks = Proc::start(
            "JWKS server",
            Command::new("python3")
                .args(["-m", "http.server", "--bind", "127.0.0.1"])
                .arg(jwks_port.to_string())
                .arg("--directory")
                .arg(dir.path().join("jwks"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            jwks_port,
        );
        let jwks_url = format!("http://127.0.0.1:{jwks_port}/keys.json");
        std::fs::write(
            dir.path().join("policy.toml"),
            V1.replace("JWKS_URL", &jwks_url),
        )
        .expect("policy");
        let origin_port = free_port();
        let origin = faulty_origin(origin_port);
        let (port, admin_port) = (free_port(), free_port());
        let stderr = File::create(dir.path().join("serve.stderr")).expect("stderr");
        let gateway = Proc::start(
            "tollgate serve",
            Command::new(env!("CARGO_BIN_EXE_tollgate"))
                .args(["serve", "--policy"])
                .arg(dir.path().join("policy.toml"))
                .arg("--secrets")
                .arg(dir.path().join("secrets.json"))
                .arg("--audit-log")
                .arg(dir.path().join("audit.log"))
                .args(["--origin", &format!("http://127.0.0.1:{origin_port}")])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(stderr),
            port,
        );
        Setup {
            dir,
            jwks_url,
            gateway,
            port,
            admin_port,
            _origin: origin,
            _jwks: jwks,
        }
    }

    fn write_policy(&self, text: &str) {
        // Written beside and renamed over, as deployment tools do, so no reader sees half.
        let temp = self.dir.path().join("policy.toml.new");
        std::fs::write(&temp, text.replace("JWKS_URL", &self.jwks_url)).expect("policy");
        std::fs::rename(&temp, self.dir.path().join("policy.toml")).expect("rename");
    }

    fn clone_status(&self) -> u16 {
        reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{}{GIT_PATH}", self.port))
            .timeout(Duration::from_secs(10))
            .send()
            .expect("answer")
            .status()
            .as_u16()
    }

    fn reload(&self) -> (u16, Value) {
        let response = reqwest::blocking::Client::new()
            .post(format!("http://127.0.0.1:{}/reload", self.admin_port))
            .timeout(Duration::from_secs(30))
            .send()
            .expect("reload answer");
        let status = response.status().as_u16();
        let body = response.text().expect("reload answer");
        (
            status,
            serde_json::from_str(&body).expect("reload answer is JSON"),
        )
    }

    fn metrics(&self) -> String {
        reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .and_then(|r| r.text())
            .expect("metrics")
    }

    /// The revision `tollgate_policy_info` names.
    fn revision(&self) -> String {
        let metrics = self.metrics();
        let line = metrics
            .lines()
            .find(|l| l.starts_with("tollgate_policy_info{"))
            .expect("tollgate_policy_info");
        line.split('"').nth(1).expect("revision label").to_owned()
    }

    /// The `n`th decision record of the audit log (from 1), waiting up to 10 s for the
    /// log's writer to get there.
    fn decision(&self, n: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log =
                std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default();
            let decisions: Vec<Value> = log
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|r| r.get("reason").is_some())
                .collect();
            if let Some(record) = decisions.get(n - 1) {
                return record.clone();
            }
            assert!(
                Instant::now() < deadline,
                "only {} decision records:\n{log}",
                decisions.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.stderr")).unwrap_or_default()
    }

    /// Waits up to 20 s for `tollgate_policy_info` to name another revision than `from`.
    fn await_revision_change(&self, from: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let revision = self.revision();
            if revision != from {
                return revision;
            }
            assert!(
                Instant::now() < deadline,
                "the policy was not reloaded:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn metric_line<'m>(metrics: &'m str, prefix: &str) -> Option<&'m str> {
    metrics.lines().find(|l| l.starts_with(prefix))
}

#[test]
fn post_reload_replaces_a_passing_policy_and_refuses_a_broken_or_failing_one() {
    let setup = Setup::start(&["--policy-watch", "0"]);
    let v1 = setup.revision();
    assert!(v1.starts_with("sha256:"), "{v1}");

    // Three of the five clones an hour under V1.
    for _ in 0..3 {
        assert_eq!(setup.clone_status(), 200);
    }
    assert_eq!(setup.decision(3)["policy_revision"], v1.as_str());
    let fetched_once = "tollgate_jwks_fetches_total{issuer=\"ci\",result=\"ok\"} 1\n";
    assert!(
        setup.metrics().contains(fetched_once),
        "{}",
        setup.metrics()
    );

    // The same file again: nothing to replace.
    let (status, answer) = setup.reload();
    assert_eq!(
        (status, &answer["result"]),
        (200, &Value::from("unchanged"))
    );
    assert_eq!(answer["revision"], v1.as_str());

    // V2 passes its own tests (the shadow case included) and replaces V1.
    setup.write_policy(&format!("{V1}{V2_SHADOW}"));
    let (status, answer) = setup.reload();
    assert_eq!(
        (status, &answer["result"]),
        (200, &Value::from("replaced")),
        "{answer}"
    );
    let v2 = answer["revision"].as_str().expect("revision").to_owned();
    assert_ne!(v2, v1);
    assert_eq!(setup.revision(), v2);

    // The rate state carried over: V1 counted three, so two more pass, then 429.
    assert_eq!(setup.clone_status(), 200);
    let decision = setup.decision(4);
    assert_eq!(decision["policy_revision"], v2.as_str());
    assert_eq!(decision["shadow"]["rule"], "grant:freeze-ok", "{decision}");
    assert_eq!(decision["shadow"]["allow"], false, "{decision}");
    assert_eq!(setup.clone_status(), 200);
    assert_eq!(setup.clone_status(), 429);
    // All three would have been 401 with the freeze enforced, the 429 too.
    let metrics = setup.metrics();
    assert!(
        metrics.contains(
            "tollgate_shadow_decisions_total{status=\"401\",reason=\"missing_credential\"} 3\n"
        ),
        "{metrics}"
    );
    // The issuer's URL did not change, so its keys carried over: no second fetch.
    assert!(metrics.contains(fetched_once), "{metrics}");

    // A policy that does not compile is refused with its position; V2 keeps deciding.
    setup.write_policy(&format!(
        "{V1}{V2_SHADOW}\n[[grant]]\nwho = \"*\"\nrepos = \"acme/*\"\naccess = \"rule\"\n"
    ));
    let (status, answer) = setup.reload();
    assert_eq!(
        (status, &answer["result"]),
        (422, &Value::from("refused")),
        "{answer}"
    );
    let error = answer["error"].as_str().expect("error");
    assert!(error.contains("policy.toml:"), "{error}");
    assert!(error.contains("rule"), "{error}");
    assert_eq!(setup.revision(), v2);

    // One whose own test case fails is refused too, naming the case.
    setup.write_policy(&format!("{V1}{FAILING_TEST}"));
    let (status, answer) = setup.reload();
    assert_eq!(status, 422, "{answer}");
    let error = answer["error"].as_str().expect("error");
    assert!(error.contains("1 of 2 test cases fail"), "{error}");
    assert!(error.contains("acme/ok is closed"), "{error}");
    assert_eq!(setup.revision(), v2);
    assert_eq!(setup.clone_status(), 429, "still V2, still limited");
    let metrics = setup.metrics();
    assert!(
        metric_line(
            &metrics,
            "tollgate_policy_reloads_total{result=\"replaced\"} 1"
        )
        .is_some(),
        "{metrics}"
    );
    assert!(
        metric_line(
            &metrics,
            "tollgate_policy_reloads_total{result=\"refused\"} 2"
        )
        .is_some(),
        "{metrics}"
    );
    assert!(
        setup.stderr().contains("keeps deciding"),
        "{}",
        setup.stderr()
    );

    // Only POST reloads.
    let get = reqwest::blocking::get(format!("http://127.0.0.1:{}/reload", setup.admin_port))
        .expect("answer");
    assert_eq!(get.status().as_u16(), 405);
}

#[test]
fn sighup_and_the_file_watch_reload_and_a_moved_issuer_is_fetched_again() {
    let mut setup = Setup::start(&["--policy-watch", "1"]);
    let v1 = setup.revision();

    // The watch: an edited file is put in place within a few seconds.
    setup.write_policy(&format!("{V1}{V2_SHADOW}"));
    let v2 = setup.await_revision_change(&v1);
    assert_eq!(setup.clone_status(), 200);
    assert_eq!(setup.decision(1)["policy_revision"], v2.as_str());

    // SIGHUP: the issuer's JWKS moved, so the new policy fetches it before deciding.
    let moved = V1.replace("jwks_url = \"JWKS_URL\"", "jwks_url = \"JWKS_URL?v=2\"");
    // Written and signalled faster than the watch looks, and watched only for changes
    // the signal has not already taken: either way it is reloaded once.
    setup.write_policy(&moved);
    let status = Command::new("kill")
        .args(["-HUP", &setup.gateway.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let v3 = setup.await_revision_change(&v2);
    assert_ne!(v3, v1);
    let metrics = setup.metrics();
    assert!(
        metrics.contains("tollgate_jwks_fetches_total{issuer=\"ci\",result=\"ok\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metric_line(
            &metrics,
            "tollgate_policy_reloads_total{result=\"replaced\"} 2"
        )
        .is_some(),
        "{metrics}"
    );
    assert_eq!(setup.clone_status(), 200);
    let decision = setup.decision(2);
    assert_eq!(decision["policy_revision"], v3.as_str());
    assert!(decision.get("shadow").is_none(), "{decision}");
    // SIGHUP did not stop it.
    assert!(setup.gateway.terminate().success());
}

/// Signs `file` with the minisign secret key in `dir` (made without a password).
fn sign(dir: &Path, file: &Path) {
    let out = Command::new("minisign")
        .args(["-S", "-s"])
        .arg(dir.join("minisign.key"))
        .arg("-m")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .expect("run minisign");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn policy_url_pulls_signed_policies_and_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let published = dir.join("published");
    std::fs::create_dir(&published).expect("published dir");
    let keygen = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(dir.join("minisign.pub"))
        .arg("-s")
        .arg(dir.join("minisign.key"))
        .stdin(Stdio::null())
        .output()
        .expect("run minisign -G");
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let publish = |text: &str, signed: bool| {
        let file = published.join("policy.toml");
        std::fs::write(&file, text).expect("publish");
        if signed {
            sign(dir, &file);
        }
    };
    // V1 without its issuer: this test is about where the policy comes from.
    let open = V1.replace(
        &V1[V1.find("[[issuer]]").expect("issuer")..V1.find("[[grant]]").expect("grant")],
        "",
    );
    publish(&open, true);

    let policy_port = free_port();
    let policy_log = dir.join("policy-origin.log");
    let policy_origin = || {
        Proc::start(
            "policy origin",
            Command::new("python3")
                .arg(repo().join("tests/e2e/policy_origin.py"))
                .arg(policy_port.to_string())
                .arg(&published)
                .arg("policy-read-token")
                .stdout(Stdio::null())
                .stderr(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&policy_log)
                        .expect("log"),
                ),
            policy_port,
        )
    };
    let mut origin_of_policies = policy_origin();
    let origin_port = free_port();
    let _origin = faulty_origin(origin_port);
    std::fs::write(
        dir.join("secrets.json"),
        r#"{"svc-token": "t", "policy-read": "policy-read-token"}"#,
    )
    .expect("secrets");
    let url = format!("http://127.0.0.1:{policy_port}/policy.toml");
    let serve_args = |port: u16, admin_port: u16| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        command
            .args(["serve", "--policy"])
            .arg(dir.join("last-good.toml"))
            .args(["--policy-url", &url, "--policy-token-secret", "policy-read"])
            .arg("--policy-pubkey")
            .arg(dir.join("minisign.pub"))
            .args(["--policy-poll", "1", "--policy-watch", "0"])
            .arg("--secrets")
            .arg(dir.join("secrets.json"))
            .arg("--audit-log")
            .arg(dir.join("audit.log"))
            .args(["--origin", &format!("http://127.0.0.1:{origin_port}")])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .stdout(Stdio::null());
        command
    };

    // No last good copy yet: serve fetches the policy (with the token), verifies it and
    // keeps it before it starts.
    let (port, admin_port) = (free_port(), free_port());
    let _gateway = Proc::start(
        "tollgate serve",
        serve_args(port, admin_port)
            .stderr(File::create(dir.join("serve.stderr")).expect("stderr")),
        port,
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("last-good.toml")).expect("last good copy"),
        open
    );
    let metrics = || {
        reqwest::blocking::get(format!("http://127.0.0.1:{admin_port}/metrics"))
            .and_then(|r| r.text())
            .expect("metrics")
    };
    let revision = || {
        let m = metrics();
        let line = metric_line(&m, "tollgate_policy_info{")
            .expect("policy info")
            .to_owned();
        line.split('"').nth(1).expect("revision").to_owned()
    };
    let clone_status = || {
        reqwest::blocking::get(format!("http://127.0.0.1:{port}{GIT_PATH}"))
            .expect("answer")
            .status()
            .as_u16()
    };
    let wait_for = |what: &str, done: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let m = metrics();
            if done(&m) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}:\n{m}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let v1 = revision();
    assert_eq!(clone_status(), 200);

    // While nothing changes, polls are answered 304 (If-None-Match with the ETag).
    let log = || std::fs::read_to_string(&policy_log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log().contains("GET /policy.toml 304") {
        assert!(Instant::now() < deadline, "no 304:\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !log().contains(" 401"),
        "every request carried the token:\n{}",
        log()
    );

    // A signed edit that closes acme/ok is pulled, vetted and kept as the last good copy.
    let closed = format!(
        "{}\n[[grant]]\nname = \"close-ok\"\nwho = \"*\"\nrepos = \"acme/ok\"\naccess = \"read\"\neffect = \"deny\"\n",
        open.replace("expect = { allow = true }", "expect = { allow = false }")
    );
    publish(&closed, true);
    wait_for("the signed policy was not put in place", &|m| {
        !m.contains(&v1)
    });
    assert_eq!(clone_status(), 401);
    assert_eq!(
        std::fs::read_to_string(dir.join("last-good.toml")).expect("last good copy"),
        closed
    );
    let v2 = revision();

    // Tampered after signing: refused, counted, and the closed policy keeps deciding.
    publish(
        &closed.replace("effect = \"deny\"", "effect = \"allow\""),
        false,
    );
    wait_for("no bad signature counted", &|m| {
        !m.contains("tollgate_policy_pulls_total{result=\"bad_signature\"} 0\n")
    });
    assert_eq!(revision(), v2);
    assert_eq!(clone_status(), 401);

    // Signed but failing its own test case: refused by the vetting.
    publish(&format!("{open}{FAILING_TEST}"), true);
    wait_for("no refused reload counted", &|m| {
        !m.contains("tollgate_policy_reloads_total{result=\"refused\"} 0\n")
    });
    assert_eq!(revision(), v2);

    // The policy's origin going away keeps the last good policy deciding.
    origin_of_policies.terminate();
    wait_for("no failed fetch counted", &|m| {
        !m.contains("tollgate_policy_pulls_total{result=\"fetch_failed\"} 0\n")
    });
    assert_eq!(revision(), v2);
    assert_eq!(clone_status(), 401);
    assert_eq!(
        std::fs::read_to_string(dir.join("last-good.toml")).expect("last good copy"),
        closed
    );

    // And a new instance starts from that copy while the URL is down.
    let (port2, admin2) = (free_port(), free_port());
    let _second = Proc::start(
        "second tollgate serve",
        serve_args(port2, admin2).stderr(Stdio::null()),
        port2,
    );
    let status = reqwest::blocking::get(format!("http://127.0.0.1:{port2}{GIT_PATH}"))
        .expect("answer")
        .status();
    assert_eq!(status.as_u16(), 401);
}

#[test]
fn policy_url_with_no_last_good_copy_and_no_answer_stops_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--policy"])
        .arg(dir.path().join("missing.toml"))
        .args([
            "--policy-url",
            &format!("http://127.0.0.1:{}/policy.toml", free_port()),
        ])
        .args(["--origin", "http://127.0.0.1:9"])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .stdin(Stdio::null())
        .output()
        .expect("run serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("policy from http://127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("fetch failed"), "{stderr}");
    assert!(!dir.path().join("missing.toml").exists());
}
