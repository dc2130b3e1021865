//! The policy playground (`targets/js/playground`) in headless Chromium, driven over
//! WebDriver (chromium-driver): the page loads the web build of the npm package and the
//! example policy, shows the expected decision for the example request, and a broken edit
//! shows the positioned error. A screenshot of each state is kept in
//! `target/playground/`.

use std::process::{Command, Stdio};

use serde_json::Value;
use tollgate_conformance::browser::Browser;
use tollgate_conformance::process::{free_port, repo, Proc};

#[test]
fn the_playground_decides_in_chromium_and_points_at_policy_errors() {
    let root = repo();
    let status = Command::new(root.join("scripts/js-package"))
        .arg("web")
        .status()
        .expect("run scripts/js-package");
    assert!(status.success(), "scripts/js-package web failed");

    // The repository over HTTP: the page, the package and the example policy.
    let site_port = free_port();
    let _site = Proc::start(
        "static server",
        Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(site_port.to_string())
            .arg("--directory")
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        site_port,
    );
    let session = Browser::start();
    let shots = root.join("target/playground");
    std::fs::create_dir_all(&shots).expect("screenshot folder");

    session.open(&format!(
        "http://127.0.0.1:{site_port}/targets/js/playground/index.html"
    ));
    session.wait_for(
        "the page never became ready",
        "return document.body.dataset.ready === 'true';",
    );

    // The example policy compiles, with the revision `tollgate check` names.
    let example = std::fs::read_to_string(root.join("examples/policy.toml")).expect("example");
    let revision = policy_core::Engine::from_toml(&example, "policy.toml")
        .expect("example policy")
        .revision()
        .to_owned();
    let status_line = session.text("status");
    assert!(
        status_line.contains(&format!("revision {revision}")),
        "{status_line}"
    );
    // Alice's clone, preloaded, is allowed by her grant, as `tollgate eval` says; the
    // token's claims are shown decoded.
    let verdict = session.text("verdict");
    assert!(verdict.starts_with("allowed: 200 allowed"), "{verdict}");
    let decision: Value = serde_json::from_str(&session.text("decision")).expect("decision JSON");
    assert_eq!(decision["rule"], "grant:developers-write", "{decision}");
    assert_eq!(decision["identity"]["user"], "alice", "{decision}");
    assert_eq!(decision["policy_revision"], revision.as_str());
    assert!(session.text("explain").contains("grant:developers-write"));
    assert!(session.text("token-view").contains("\"sub\": \"alice\""));
    session.screenshot(&shots.join("decision.png"));

    // A request with no token is challenged.
    session.run(
        "document.getElementById('token').value = '';\
         document.getElementById('decide').click(); return true;",
    );
    let verdict = session.text("verdict");
    assert!(
        verdict.starts_with("denied: 401 missing_credential"),
        "{verdict}"
    );

    // Breaking the policy (an unknown access level on line 3 of an edit) shows where.
    session.run(
        "const p = document.getElementById('policy');\
         p.value = '[[grant]]\\nwho = \"*\"\\nrepos = \"acme/*\"\\naccess = \"rule\"\\n';\
         p.dispatchEvent(new Event('input')); return true;",
    );
    session.wait_for(
        "no policy error shown",
        "return !document.getElementById('policy-error').hidden;",
    );
    let error = session.text("policy-error");
    assert!(error.starts_with("policy.toml:4:10: "), "{error}");
    assert!(error.contains("access = \"rule\"\n         ^"), "{error}");
    assert!(session
        .text("status")
        .contains("policy error at policy.toml:4:10"));
    session.screenshot(&shots.join("policy-error.png"));
}
