//! The `tollgate` binary, run as users run it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tollgate(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tollgate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_temp(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, content).expect("write temp file");
    path.display().to_string()
}

#[test]
fn example_and_corpus_pass_under_tollgate_test() {
    assert_policies_pass(&[]);
}

/// `tollgate test [extra] FILE` passes, and runs cases, for the example policy and every
/// corpus file.
fn assert_policies_pass(extra: &[&str]) {
    let mut files = vec![repo().join("examples/policy.toml")];
    files.extend(tollgate_conformance_files());
    assert!(files.len() >= 4);
    for file in files {
        let file_arg = file.display().to_string();
        let mut args = vec!["test"];
        args.extend_from_slice(extra);
        args.push(&file_arg);
        let out = tollgate(&args, "");
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{}:\n{stdout}{}",
            file.display(),
            text(&out.stderr)
        );
        let last = stdout.lines().last().unwrap_or_default();
        assert!(
            last.ends_with("passed, 0 failed"),
            "{}: {last}",
            file.display()
        );
        assert!(
            !last.starts_with("0 passed"),
            "{}: ran no case",
            file.display()
        );
    }
}

fn tollgate_conformance_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/corpus"))
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn a_wrong_expectation_fails_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = std::fs::read_to_string(repo().join("examples/policy.toml")).expect("example");
    let broken = policy.replacen("retry_after = 20", "retry_after = 21", 1);
    assert_ne!(policy, broken);
    let path = write_temp(&dir, "broken.toml", &broken);
    let out = tollgate(&["test", &path], "");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  the CI bot's fourth request in a minute is rate limited"),
        "{stdout}"
    );
    assert!(
        stdout.contains("retry_after: expected 21, got 20"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or_default()
            .ends_with(" passed, 1 failed"),
        "{stdout}"
    );
}

#[test]
fn check_reports_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("[gateway]\nrelm = \"x\"\n", "2:1: unknown field `relm`, expected one of"),
        ("[[grant]]\nwho = \"user:alice\"\nrepos = \"acme/*\"\naccess = \"reed\"\n", "4:10: unknown variant `reed`, expected one of `read`, `write`, `admin`"),
        ("[[grant]]\nwho = \"usr:alice\"\nrepos = \"acme/*\"\naccess = \"read\"\n", "2:7: unknown principal `usr:alice`"),
        ("[[grant]]\nwho = \"*\"\nrepos = \"acme\"\naccess = \"read\"\n", "3:9: repository pattern `acme` must be `owner/repo`"),
        ("[[grant]]\nwho = \"*\"\nrepos = \"acme/app.git\"\naccess = \"read\"\n", "drop the `.git` suffix"),
        (
            "[[issuer]]\nname = \"x\"\nissuer = \"https://i\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\", \"none\"]\njwks_url = \"https://i/jwks\"\n",
            "5:24: algorithm `none` is never accepted",
        ),
        (
            "[[issuer]]\nname = \"x\"\nissuer = \"https://i\"\naudiences = []\nalgorithms = [\"ES256\"]\njwks_url = \"https://i/jwks\"\n",
            "4:13: audiences must list at least one",
        ),
        (
            "[[issuer]]\nname = \"x\"\nissuer = \"https://i\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"http://idp.example/jwks\"\n",
            "6:12: jwks_url `http://idp.example/jwks` must be https://",
        ),
        (
            "[[issuer]]\nname = \"x\"\nissuer = \"https://i\"\naudiences = [\"g\"]\nalgorithms = [\"HS256\"]\njwks = '{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2hvcnQ\"}]}'\n",
            "6:8: invalid JWKS: key 0: HMAC key is 5 bytes; at least 32 are required",
        ),
        ("[origin]\ngit = \"reverse-proxy\"\n", "2:7: origin.git must be `user-token` or `service-token`"),
        ("[origin]\napi = \"service-token\"\nservice_user = \"svc\"\nservice_token_secret = \"s\"\n", "2:7: origin.api = `service-token` makes every site-wide API call"),
        ("[[api_key]]\nname = \"k\"\nsha256 = \"abc\"\nuser = \"bot\"\n", "3:10: sha256 must be 64 hex digits"),
        ("[[rate_limit]]\nname = \"r\"\nwho = \"*\"\nrequests = 0\nperiod_seconds = 1\n", "4:12: requests must be at least 1"),
        ("[[test]]\nname = \"t\"\nrequest = { path = \"/\" }\nexpect = {}\n", "4:10: test `t` expects nothing"),
        ("[[grant]\n", "1:9: unclosed array table, expected `]`"),
        ("[origin]\nsession_cookies = []\n", "2:19: session_cookies must name at least one cookie"),
        ("[origin]\nsession_cookies = [\"i_like_gogs\", \"a b\"]\n", "2:19: session_cookies: `a b` is not a valid cookie name"),
        (
            "[[issuer]]\nname = \"x\"\nissuer = \"https://i\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"http://127.0.0.1:80@evil.example/jwks\"\n",
            "6:12: jwks_url `http://127.0.0.1:80@evil.example/jwks` carries user information",
        ),
        (
            "[[issuer]]\nname = \"x\"\nissuer = \"https://i\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"http://127.0.0.1\\\\@evil.example/jwks\"\n",
            "6:12: jwks_url `http://127.0.0.1\\@evil.example/jwks` is not a valid URI",
        ),
        (
            "[[issuer]]\nname = \"x\"\nissuer = \"https://i\"\naudiences = [\"g\"]\nalgorithms = [\"RS256\", \"HS256\"]\njwks_url = \"https://i/jwks\"\n",
            "5:24: issuer `x`: HS256 cannot be combined with `jwks_url`",
        ),
        (
            "[[issuer]]\nname = \"x\"\nissuer = \"https://i\"\naudiences = [\"g\"]\nalgorithms = [\"EdDSA\"]\njwks = '{\"keys\": [{\"kty\": \"OKP\", \"crv\": \"Ed25519\", \"x\": \"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}'\n",
            "6:8: invalid JWKS: key 0: Ed25519 key has small order",
        ),
        ("[origin]\nuser_header = \"Authorization\"\n", "2:15: user_header `Authorization` already means something"),
        ("[origin]\nuser_header = \"X_Remote_User\"\n", "2:15: user_header `X_Remote_User` is not a valid header name"),
        (
            "[origin]\nweb = \"service-token\"\nservice_user = \"svc\"\nservice_token_secret = \"s\"\n",
            "2:7: origin.web = `service-token` makes every page outside a repository",
        ),
        ("[origin]\ngogs = [\"v0.14.3\", \"v9\"]\n", "2:8: unknown Gogs version `v9`; route inventories exist for `master`, `v0.14.3`"),
        ("[gateway]\nanonymous_ipv6_prefix = 0\n", "2:25: anonymous_ipv6_prefix must be between 1 and 128"),
        ("[gateway]\ncross_repo = \"open\"\n", "2:14: unknown variant `open`, expected `deny` or `site`"),
        (
            "[[issuer]]\nname = \"ci\"\nissuer = \"https://ci\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://i/jwks\"\n[[binding]]\nname = \"b\"\nissuer = \"gitlab\"\nclaims = { ref = \"main\" }\nuser = \"ci-app\"\n",
            "9:10: `gitlab` names no [[issuer]]",
        ),
        (
            "[[issuer]]\nname = \"ci\"\nissuer = \"https://ci\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://i/jwks\"\n[[binding]]\nname = \"b\"\nissuer = \"ci\"\nclaims = {}\nuser = \"ci-app\"\n",
            "10:10: binding `b` must list at least one claim",
        ),
        (
            "[[issuer]]\nname = \"ci\"\nissuer = \"https://ci\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://i/jwks\"\n[[binding]]\nname = \"b\"\nissuer = \"ci\"\nclaims = { ref = \"**\" }\nuser = \"ci-app\"\n",
            "10:18: the pattern for claim `ref` must be 1-256 characters and more than `*`",
        ),
        (
            "[[issuer]]\nname = \"x\"\nissuer = \"https://i\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://i/jwks\"\nuser_claim = \"preferred_username\"\n",
            "7:14: user_claim `preferred_username` is one people can usually edit",
        ),
        (
            "[[issuer]]\nname = \"a\"\nissuer = \"https://a\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://i/jwks\"\n[[issuer]]\nname = \"b\"\nissuer = \"https://b\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://i/jwks\"\n[[grant]]\nwho = \"user:alice\"\nrepos = \"acme/*\"\naccess = \"read\"\n",
            "14:7: `user:alice` is ambiguous: issuers `a` and `b` both take user names from a claim",
        ),
        ("[[grant]]\nwho = \"binding:nope\"\nrepos = \"acme/*\"\naccess = \"read\"\n", "2:7: `binding:nope` names no [[binding]]"),
        ("[[grant]]\nwho = \"issuer:nope\"\nrepos = \"acme/*\"\naccess = \"read\"\n", "2:7: `issuer:nope` names no [[issuer]]"),
        ("[[rate_limit]]\nname = \"r\"\nwho = \"*\"\nrequests = 1\nperiod_seconds = 1\nclass = \"ssh\"\n", "6:9: unknown class `ssh`; expected `git`, `lfs`, `api` or `web`"),
        ("[[rate_limit]]\nname = \"r\"\nwho = \"*\"\nrequests = 1\nperiod_seconds = 1\naccess = []\n", "6:10: access must name at least one value"),
        ("[[rate_limit]]\nname = \"r\"\nwho = \"*\"\nrequests = 1\nperiod_seconds = 1\nper = \"repo\"\n", "6:7: unknown per `repo`; expected `identity`, `identity+repo` or `shared`"),
        ("[[rate_limit]]\nname = \"r\"\nwho = \"*\"\nrequests = 1\nperiod_seconds = 1\nper = \"shared\"\nshared = true\n", "7:10: `shared` is the older spelling of `per = \"shared\"`"),
        ("[[webhook]]\nname = \"w\"\npath = \"/hooks/../x\"\nsecret = \"s\"\nrepos = \"acme/*\"\n", "3:8: webhook path `/hooks/../x` must be an absolute path"),
        ("[[webhook]]\nname = \"w\"\npath = \"/hooks/gogs\"\nsecret = \"s\"\nevents = [\"push\", \"deploy\"]\nrepos = \"acme/*\"\n", "5:10: unknown event `deploy`; Gogs sends `create`"),
        ("[[grant]]\nwho = \"*\"\nrepos = \"acme/*\"\naccess = \"read\"\nmode = \"dry-run\"\n", "5:8: unknown mode `dry-run`; expected `enforce` or `shadow`"),
        ("[[rate_limit]]\nname = \"r\"\nwho = \"*\"\nrequests = 1\nperiod_seconds = 1\nmode = \"Shadow\"\n", "6:8: unknown mode `Shadow`; expected `enforce` or `shadow`"),
        ("[[issuer]]\nname = \"corp\"\nissuer = \"https://id\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://id/jwks\"\n[sso]\nissuer = \"idp\"\nclient_id = \"web\"\nauthorization_endpoint = \"https://id/auth\"\ntoken_endpoint = \"https://id/token\"\nredirect_uri = \"https://git.example/-/tollgate/callback\"\nsession_key = \"sso-session\"\n", "8:10: sso.issuer `idp` names no [[issuer]] (there are: `corp`)"),
        ("[[issuer]]\nname = \"corp\"\nissuer = \"https://id\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://id/jwks\"\n[sso]\nissuer = \"corp\"\nclient_id = \"web\"\nauthorization_endpoint = \"https://id/auth\"\ntoken_endpoint = \"http://id.example/token\"\nredirect_uri = \"https://git.example/-/tollgate/callback\"\nsession_key = \"sso-session\"\n", "11:18: sso.token_endpoint `http://id.example/token` must be https://"),
        ("[[issuer]]\nname = \"corp\"\nissuer = \"https://id\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://id/jwks\"\n[sso]\nissuer = \"corp\"\nclient_id = \"web\"\nauthorization_endpoint = \"https://id/auth\"\ntoken_endpoint = \"https://id/token\"\nredirect_uri = \"https://git.example/cb?x=1\"\nsession_key = \"sso-session\"\n", "12:16: sso.redirect_uri `https://git.example/cb?x=1` must end in a path"),
        ("[[issuer]]\nname = \"corp\"\nissuer = \"https://id\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://id/jwks\"\n[sso]\nissuer = \"corp\"\nclient_id = \"web\"\nauthorization_endpoint = \"https://id/auth\"\ntoken_endpoint = \"https://id/token\"\nredirect_uri = \"https://git.example/-/tollgate/callback\"\nsession_key = \"sso-session\"\nscopes = [\"profile\"]\n", "14:10: sso.scopes must include `openid`"),
        ("[[issuer]]\nname = \"corp\"\nissuer = \"https://id\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://id/jwks\"\n[sso]\nissuer = \"corp\"\nclient_id = \"web\"\nauthorization_endpoint = \"https://id/auth\"\ntoken_endpoint = \"https://id/token\"\nredirect_uri = \"https://git.example/-/tollgate/callback\"\nsession_key = \"sso-session\"\nlifetime_seconds = 5\n", "14:20: sso.lifetime_seconds must be between 60 and 2592000"),
        ("[[issuer]]\nname = \"corp\"\nissuer = \"https://id\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://id/jwks\"\n[sso]\nissuer = \"corp\"\nclient_id = \"web\"\nauthorization_endpoint = \"https://id/auth\"\ntoken_endpoint = \"https://id/token\"\nredirect_uri = \"https://git.example/-/tollgate/callback\"\nsession_key = \"sso-session\"\ncookie = \"a;b\"\n", "14:10: sso.cookie `a;b` is not a valid cookie name"),
        ("[[issuer]]\nname = \"corp\"\nissuer = \"https://id\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://id/jwks\"\n[sso]\nissuer = \"corp\"\nclient_id = \"web\"\nauthorization_endpoint = \"https://id/auth\"\ntoken_endpoint = \"https://id/token\"\nredirect_uri = \"https://git.example/-/tollgate/callback\"\nsession_key = \"sso-session\"\nlogout_path = \"/-/tollgate/callback\"\n", "14:15: sso.logout_path: the gateway already answers `/-/tollgate/callback` itself"),
        ("[[issuer]]\nname = \"corp\"\nissuer = \"https://id\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://id/jwks\"\n[sso]\nissuer = \"corp\"\nclient_id = \"web\"\nauthorization_endpoint = \"https://id/auth\"\ntoken_endpoint = \"https://id/token\"\nredirect_uri = \"https://git.example/-/tollgate/callback\"\nsession_key = \"sso-session\"\nend_session_endpoint = \"https://id/logout\"\npost_logout_redirect_uri = \"/\"\n", "15:28: sso.post_logout_redirect_uri `/` must be an https:// URL (the provider sends the browser there)"),
        ("[[issuer]]\nname = \"corp\"\nissuer = \"https://id\"\naudiences = [\"g\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://id/jwks\"\n[sso]\nissuer = \"corp\"\nclient_id = \"web\"\nauthorization_endpoint = \"https://id/auth\"\ntoken_endpoint = \"https://id/token\"\nredirect_uri = \"https://git.example/-/tollgate/callback\"\n", "missing field `session_key`"),
        ("[[grant]]\nwho = \"*\"\nrepos = \"acme/*\"\naccess = \"read\"\n[[test]]\nname = \"t\"\nrequest = { path = \"/acme/a.git/info/refs\" }\nexpect = { shadow = true }\n", "8:10: test `t`: `shadow = true` says too little"),
    ];
    for (i, (policy, expected)) in cases.iter().enumerate() {
        let path = write_temp(&dir, &format!("bad{i}.toml"), policy);
        let out = tollgate(&["check", &path], "");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {i}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {path}:")),
            "case {i}: {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "case {i}: expected `{expected}` in:\n{stderr}"
        );
        assert!(
            stderr.contains("^"),
            "case {i}: no caret excerpt:\n{stderr}"
        );
    }
    let out = tollgate(&["check", "examples/policy.toml"], "");
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("examples/policy.toml: ok (17 test cases, revision sha256:")
            && stdout.ends_with(")\n"),
        "{stdout}"
    );
}

#[test]
fn eval_prints_the_documented_schema() {
    let request = std::fs::read_to_string(repo().join("examples/requests/alice-clone.json"))
        .expect("request");
    let out = tollgate(
        &[
            "eval",
            "--policy",
            "examples/policy.toml",
            "--now",
            "1767225600",
        ],
        &request,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let mut keys: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut documented = [
        "allow",
        "status",
        "reason",
        "message",
        "rule",
        "identity",
        "class",
        "repo",
        "access",
        "strip",
        "set",
        "headers",
        "retry_after",
        "policy_revision",
    ];
    documented.sort_unstable();
    assert_eq!(keys, documented);
    // The revision names the policy text: the SHA-256 of the file's bytes.
    let policy = std::fs::read(repo().join("examples/policy.toml")).expect("policy");
    let digest = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().expect("stdin").write_all(&policy)?;
            child.wait_with_output()
        })
        .expect("sha256sum");
    let hex = text(&digest.stdout);
    assert_eq!(json["policy_revision"], format!("sha256:{}", &hex[..16]));
    assert_eq!(json["allow"], true);
    assert_eq!(json["status"], 200);
    assert_eq!(json["identity"]["user"], "alice");
    assert_eq!(json["identity"]["via"], "jwt");
    assert_eq!(json["repo"], "acme/app");
    assert_eq!(
        json["set"]["authorization"],
        "Basic base64(alice:<secret gogs-token/alice>)"
    );
}

#[test]
fn eval_sends_real_secrets_only_to_the_origin_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = write_temp(
        &dir,
        "secrets.json",
        r#"{"gogs-token/alice": "0123456789abcdef"}"#,
    );
    let request = std::fs::read_to_string(repo().join("examples/requests/alice-clone.json"))
        .expect("request");
    let out = tollgate(
        &[
            "eval",
            "--policy",
            "examples/policy.toml",
            "--now",
            "1767225600",
            "--secrets",
            &secrets,
            "--audit",
        ],
        &request,
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stdout.contains("0123456789abcdef") && !stderr.contains("0123456789abcdef"),
        "secret leaked"
    );
    let audit: serde_json::Value =
        serde_json::from_str(stderr.trim()).expect("audit JSON on stderr");
    assert_eq!(audit["reason"], "allowed");
    assert_eq!(audit["identity"]["user"], "alice");
    assert_eq!(
        audit["credential_fingerprint"].as_str().map(str::len),
        Some(16)
    );

    // A secret store that lacks the user's token fails closed.
    let empty = write_temp(&dir, "empty.json", "{}");
    let out = tollgate(
        &[
            "eval",
            "--policy",
            "examples/policy.toml",
            "--now",
            "1767225600",
            "--secrets",
            &empty,
        ],
        &request,
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["allow"], false);
    assert_eq!(json["status"], 500);
    assert_eq!(json["reason"], "origin_credential_missing");
}

#[test]
fn eval_state_file_carries_rate_limits_across_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json").display().to_string();
    let request = r#"{"path": "/acme/app.git/info/refs", "headers": {"Authorization": "token ci-secret-key-0001"}}"#;
    let args = [
        "eval",
        "--policy",
        "examples/policy.toml",
        "--now",
        "1767225600",
        "--state",
        &state,
    ];
    let statuses: Vec<u64> = (0..4)
        .map(|_| {
            let out = tollgate(&args, request);
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
            json["status"].as_u64().expect("status")
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state")).expect("state JSON");
    assert!(saved.get("ci/user:ci-bot").is_some(), "{saved}");
}

#[test]
fn concurrent_evals_sharing_a_state_file_stay_exact() {
    // The example's `ci` limit admits 3 requests a minute: of 8 evals run at once, exactly
    // 3 may pass, whatever order the processes load and save the file in.
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json").display().to_string();
    let request = r#"{"path": "/acme/app.git/info/refs", "headers": {"Authorization": "token ci-secret-key-0001"}}"#;
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let state = state.clone();
            std::thread::spawn(move || {
                let out = tollgate(
                    &[
                        "eval",
                        "--policy",
                        "examples/policy.toml",
                        "--now",
                        "1767225600",
                        "--state",
                        &state,
                    ],
                    request,
                );
                let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
                json["status"].as_u64().expect("status")
            })
        })
        .collect();
    let mut statuses: Vec<u64> = runs.into_iter().map(|r| r.join().expect("eval")).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429]);
}

#[test]
fn check_points_at_bytes_that_are_not_utf8() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"[gateway]\nrealm = \"caf\xe9\"\n").expect("write");
    let path = path.display().to_string();
    let out = tollgate(&["check", &path], "");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: {path}:2:13: the policy is not UTF-8 (byte 0xe9)"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("^"), "{stderr}");
    let out = tollgate(&["check", "no/such/policy.toml"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("error: no/such/policy.toml: cannot read the policy:"));
}

#[test]
fn check_with_secrets_names_each_missing_one_where_the_policy_asks_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = write_temp(&dir, "secrets.json", r#"{"gogs-token/alice": "x"}"#);
    let out = tollgate(
        &["check", "examples/policy.toml", "--secrets", &secrets],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let example = std::fs::read_to_string(repo().join("examples/policy.toml")).expect("example");
    let line = 1 + example
        .lines()
        .position(|l| l == "user = \"ci-bot\"")
        .expect("the example's ci-bot key");
    assert!(
        stderr.contains(&format!(
            "examples/policy.toml:{line}:8: origin secret `gogs-token/ci-bot` (the Gogs token of `ci-bot`) is not in {secrets}"
        )),
        "{stderr}"
    );
    let complete = write_temp(&dir, "all.json", r#"{"gogs-token/ci-bot": "x"}"#);
    let out = tollgate(
        &["check", "examples/policy.toml", "--secrets", &complete],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A signing key too short to trust is named with where the policy asks for it.
    let short = write_temp(
        &dir,
        "short.json",
        r#"{"gogs-service": "x", "sso-client": "x", "sso-session": "too-short"}"#,
    );
    let out = tollgate(&["check", "tests/corpus/sso.toml", "--secrets", &short], "");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("origin secret `sso-session` (the key that signs browser sessions ([sso])) has 9 bytes in {short}; it needs at least 32")),
        "{stderr}"
    );
}

#[test]
fn eval_rejects_bad_input_clearly() {
    let out = tollgate(
        &["eval", "--policy", "examples/policy.toml"],
        "{\"path\": \"/\", \"methd\": \"GET\"}",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("stdin: unknown field `methd`"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn hash_key_matches_the_example() {
    let out = tollgate(&["hash-key"], "ci-secret-key-0001\n");
    assert_eq!(
        text(&out.stdout),
        "3e3a05d43c46c1398e3f449950bcfc1a4b5ec6347b3f18c06874a51ec46cde56\n"
    );
}

#[test]
fn wasm_module_answers_byte_for_byte_like_the_native_engine() {
    let module = tollgate_conformance::build_wasm_module();
    let module_arg = format!("--wasm={}", module.display());
    for request in ["alice-clone.json", "bob-push.json"] {
        let body = std::fs::read_to_string(repo().join("examples/requests").join(request))
            .expect("request");
        let base = [
            "eval",
            "--policy",
            "examples/policy.toml",
            "--now",
            "1767225600",
            "--audit",
            "--explain",
        ];
        let native = tollgate(&base, &body);
        let mut with_wasm = base.to_vec();
        with_wasm.push(&module_arg);
        let wasm = tollgate(&with_wasm, &body);
        assert!(
            native.status.success() && wasm.status.success(),
            "{}",
            text(&wasm.stderr)
        );
        assert_eq!(
            text(&native.stdout),
            text(&wasm.stdout),
            "{request}: decisions differ"
        );
        assert_eq!(
            text(&native.stderr),
            text(&wasm.stderr),
            "{request}: audit records differ"
        );
    }
    assert_policies_pass(&[&module_arg]);
}
