//! The Cloudflare Worker under `wrangler dev` (workerd): the conformance corpus, and real
//! git traffic through the Worker to a local Git origin with a local identity provider.

use std::time::Duration;

use tollgate_conformance::cloudflare::{Cloudflare, Wrangler};
use tollgate_conformance::process::{git, git_ok};
use tollgate_conformance::run;
use tollgate_conformance::world::{
    basic, forge, git_with, header, incompressible, text, World, BURST_KEY, CI_KEY,
};

#[test]
fn worker_passes_the_corpus() {
    let report = run(&mut Cloudflare::default());
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
        "{} corpus cases failed on the Worker",
        report.failures.len()
    );
    assert!(
        report.passed >= 90,
        "only {} corpus cases ran",
        report.passed
    );
}

#[test]
fn git_through_the_worker() {
    let world = World::start();
    let policy = world.policy();
    let origin = world.origin_url();
    let secrets = world.secrets_json();
    let worker = Wrangler::start(&[
        ("TOLLGATE_POLICY", &policy),
        ("TOLLGATE_ORIGIN", &origin),
        ("TOLLGATE_SECRETS", &secrets),
    ]);
    let url = |repo: &str| format!("{}/{repo}.git", worker.url());
    let home = world.home();
    let work = world.path("work");
    std::fs::create_dir_all(&work).expect("work");

    // Anonymous: a Basic challenge git understands.
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

    // alice (ES256) clones; bob (RS256, read only) clones but cannot push.
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
        worker.log()
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

    // alice pushes a pack larger than git's postBuffer, streamed through the Worker.
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
        worker.log()
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

    // Forged token refused; CI key works as a header and as Basic after the challenge.
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

    // The Durable Object rate limit cuts in at the configured count (3 per hour).
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
    let limited = client
        .get(format!(
            "{}/info/refs?service=git-upload-pack",
            url("acme/app")
        ))
        .header("authorization", format!("token {BURST_KEY}"))
        .send()
        .expect("request");
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=1200).contains(&retry), "Retry-After {retry}");

    // What reached the origin: only Tollgate's credentials, never a client X-WEBAUTH-USER.
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
    assert!(seen.len() > 5);
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

    // One audit line per decision, Logpush-ready JSON on the Worker's console.
    std::thread::sleep(Duration::from_millis(300));
    let audit = worker.audit();
    let reasons: Vec<&str> = audit.iter().filter_map(|a| a["reason"].as_str()).collect();
    for expected in [
        "allowed",
        "missing_credential",
        "insufficient_access",
        "not_found",
        "token_bad_signature",
        "rate_limited",
    ] {
        assert!(
            reasons.contains(&expected),
            "no `{expected}` audit record in {reasons:?}"
        );
    }
}
