//! The Fastly Compute app under Viceroy: the conformance corpus, and real git traffic
//! through it to a local Git origin with keys from a local identity provider.

use tollgate_conformance::fastly::{Fastly, Viceroy, ViceroyConfig};
use tollgate_conformance::process::{git, git_ok};
use tollgate_conformance::run;
use tollgate_conformance::world::{
    basic, forge, git_with, header, incompressible, text, World, BURST_KEY, CI_KEY,
};

#[test]
fn fastly_app_passes_the_corpus() {
    let report = run(&mut Fastly::default());
    for f in &report.failures {
        eprintln!(
            "[{}] {} :: {}\n    {}",
            f.target,
            f.file,
            f.case,
            f.problems.join("\n    ")
        );
    }
    assert!(
        report.failures.is_empty(),
        "{} corpus cases failed on Fastly",
        report.failures.len()
    );
    assert!(
        report.passed >= 90,
        "only {} corpus cases ran",
        report.passed
    );
}

fn secrets(world: &World) -> Vec<(String, String)> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&world.secrets_json()).expect("secrets");
    map.into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

fn jwks(world: &World) -> String {
    reqwest::blocking::get(format!("http://127.0.0.1:{}/jwks", world.idp_port))
        .and_then(|r| r.text())
        .expect("JWKS from the identity provider")
}

#[test]
fn git_through_the_fastly_app() {
    let world = World::start();
    let origin = world.origin_url();
    let app = Viceroy::start(&ViceroyConfig {
        origin: &origin,
        config: vec![
            ("policy", world.policy()),
            ("jwks.e2e", jwks(&world)),
            ("rate_store", "kv".into()),
        ],
        secrets: secrets(&world),
    });
    let url = |repo: &str| format!("{}/{repo}.git", app.url());
    let home = world.home();
    let work = world.path("work");
    std::fs::create_dir_all(&work).expect("work");
    let client = reqwest::blocking::Client::new();

    let anonymous = client
        .get(format!(
            "{}/info/refs?service=git-upload-pack",
            url("acme/app")
        ))
        .send()
        .expect("request");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Basic realm=\"Gogs\""
    );

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
        app.log()
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
    assert!(
        !out.status.success() && text(&out.stderr).contains("403"),
        "{}",
        text(&out.stderr)
    );
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
        app.log()
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

    let out = git_with(
        &home,
        &format!("Bearer {}", forge(alice.trim_start_matches("Bearer "))),
        &work,
        &["ls-remote", &url("acme/app")],
    );
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

    // Exact GCRA in the KV Store: the fourth of three allowed requests is refused.
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            client
                .get(format!(
                    "{}/info/refs?service=git-upload-pack",
                    url("acme/app")
                ))
                .header("authorization", format!("token {BURST_KEY}"))
                .send()
                .expect("request")
                .status()
                .as_u16()
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429]);

    let out = git(
        &home,
        &work,
        &[
            "-c",
            "http.extraHeader=X-WEBAUTH-USER: admin",
            "-c",
            &format!("http.extraHeader=Authorization: {alice}"),
            "ls-remote",
            &url("acme/app"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = world.origin_requests();
    for request in &seen {
        assert!(
            header(request, "x-webauth-user").is_none(),
            "X-WEBAUTH-USER reached the origin: {request}"
        );
        assert!(
            header(request, "authorization").is_none_or(|a| a.starts_with("Basic ")),
            "caller credential at the origin: {request}"
        );
    }
    let alice_basic = basic("alice", "gogs-alice-0001");
    assert!(seen
        .iter()
        .any(|r| header(r, "authorization") == Some(alice_basic.as_str())));

    let reasons: Vec<String> = app
        .audit()
        .iter()
        .filter_map(|a| a["reason"].as_str().map(String::from))
        .collect();
    for expected in [
        "allowed",
        "missing_credential",
        "insufficient_access",
        "not_found",
        "token_bad_signature",
        "rate_limited",
    ] {
        assert!(
            reasons.iter().any(|r| r == expected),
            "no `{expected}` audit record in {reasons:?}"
        );
    }
}

#[test]
fn edge_rate_limiting_is_the_default_store() {
    // Viceroy's ERL never limits, so this shows the production path runs and admits.
    let world = World::start();
    let origin = world.origin_url();
    let app = Viceroy::start(&ViceroyConfig {
        origin: &origin,
        config: vec![("policy", world.policy()), ("jwks.e2e", jwks(&world))],
        secrets: secrets(&world),
    });
    let client = reqwest::blocking::Client::new();
    for _ in 0..4 {
        let status = client
            .get(format!(
                "{}/acme/app.git/info/refs?service=git-upload-pack",
                app.url()
            ))
            .header("authorization", format!("token {BURST_KEY}"))
            .send()
            .expect("request")
            .status();
        assert_eq!(status, 200, "{}", app.log());
    }
}
