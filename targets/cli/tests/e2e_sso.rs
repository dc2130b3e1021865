//! People in their browsers through the edge (`[sso]`): headless Chromium opens a Gogs web
//! page through `tollgate serve`, is sent to the real OpenID provider (oidc-provider,
//! tests/e2e/idp), signs in on the provider's own pages and consents, and lands back on
//! the page, which the origin served to the person as Gogs' reverse-proxy authentication
//! does (X-WEBAUTH-USER), the session cookie never reaching it. After signing out (the
//! provider's session ended too) the page is refused: the browser is at the provider's
//! sign-in form again and the origin sees nothing.

use std::path::Path;

use serde_json::Value;
use tollgate_conformance::browser::Browser;
use tollgate_conformance::process::repo;
use tollgate_conformance::world::{finish_at_provider, header, World};

fn origin_pages(world: &World, path: &str) -> Vec<Value> {
    world
        .origin_requests()
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with(path)))
        .collect()
}

#[test]
fn a_browser_signs_in_at_the_provider_reaches_gogs_as_the_person_and_signs_out() {
    let world = World::start();
    let tollgate = Path::new(env!("CARGO_BIN_EXE_tollgate"));
    let audit = world.path("audit.jsonl");
    let (_serve, port) = world.serve_policy(
        tollgate,
        &world.sso_policy(),
        &["--audit-log", audit.to_str().expect("path")],
    );
    let gateway = format!("http://127.0.0.1:{port}");
    let idp = format!("http://127.0.0.1:{}", world.idp_port);
    let shots = repo().join("target/sso");
    std::fs::create_dir_all(&shots).expect("screenshot folder");

    // Over plain HTTP first: an anonymous page is a redirect to the provider with the
    // login cookie; git and the API keep their challenges.
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let redirect = http
        .get(format!("{gateway}/acme/app"))
        .send()
        .expect("page");
    assert_eq!(redirect.status(), 302);
    let location = redirect.headers()["location"].to_str().expect("location");
    assert!(
        location.starts_with(&format!(
            "{idp}/auth?response_type=code&client_id=tollgate-web&redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2F-%2Ftollgate%2Fcallback&scope=openid%20groups&state="
        )) && location.ends_with("&code_challenge_method=S256"),
        "{location}"
    );
    let cookie = redirect.headers()["set-cookie"].to_str().expect("cookie");
    assert!(
        cookie.starts_with("tollgate_session=l1.")
            && cookie.ends_with("; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax"),
        "{cookie}"
    );
    let git = http
        .get(format!(
            "{gateway}/acme/app.git/info/refs?service=git-upload-pack"
        ))
        .send()
        .expect("git");
    assert_eq!(git.status(), 401);
    assert_eq!(git.headers()["www-authenticate"], "Basic realm=\"Gogs\"");

    // In the browser: the page, the provider's pages, and the page again, signed in.
    let browser = Browser::start();
    browser.open(&format!("{gateway}/acme/app/issues?state=open"));
    assert!(
        browser.url().starts_with(&format!("{idp}/interaction/")),
        "{}",
        browser.url()
    );
    finish_at_provider(&browser, "alice", &gateway);
    browser.wait_for(
        "the page after signing in",
        "return !!document.getElementById('user');",
    );
    assert_eq!(
        browser.url(),
        format!("{gateway}/acme/app/issues?state=open")
    );
    assert_eq!(browser.text("page"), "/acme/app/issues");
    assert_eq!(browser.text("user"), "alice");
    browser.screenshot(&shots.join("signed-in.png"));

    // The session cookie: HttpOnly (scripts cannot read it), Secure, SameSite=Lax.
    let cookies = browser.cookies();
    let session = cookies
        .iter()
        .find(|c| c["name"] == "tollgate_session")
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"));
    assert_eq!(
        (
            &session["httpOnly"],
            &session["secure"],
            &session["sameSite"]
        ),
        (&Value::Bool(true), &Value::Bool(true), &Value::from("Lax")),
        "{session}"
    );
    let session_value = session["value"].as_str().expect("value").to_owned();
    assert!(session_value.starts_with("s1."), "{session_value}");
    assert_eq!(
        browser.run("return document.cookie.includes('tollgate_session');"),
        Value::Bool(false)
    );

    // What Gogs saw: alice by X-WEBAUTH-USER, no session cookie, no credential of hers.
    let pages = origin_pages(&world, "/acme/app/issues");
    assert_eq!(pages.len(), 1, "{pages:?}");
    assert_eq!(header(&pages[0], "x-webauth-user"), Some("alice"));
    assert!(header(&pages[0], "authorization").is_none());
    assert!(
        !header(&pages[0], "cookie")
            .unwrap_or_default()
            .contains("tollgate_session"),
        "{:?}",
        pages[0]
    );
    // Another page in the same session goes straight through.
    browser.open(&format!("{gateway}/acme/app"));
    assert_eq!(browser.text("user"), "alice");
    // The session is for the web: git with it is still challenged.
    let git = http
        .get(format!(
            "{gateway}/acme/app.git/info/refs?service=git-upload-pack"
        ))
        .header("cookie", format!("tollgate_session={session_value}"))
        .send()
        .expect("git");
    assert_eq!(git.status(), 401);

    // The audit: the sign-in, and the page decided for alice.
    let records: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["reason"] == "signed_in" && r["identity"]["user"] == "alice"),
        "no sign-in audited: {records:?}"
    );

    // Signing out ends both sessions; the page is then refused.
    browser.open(&format!("{gateway}/-/tollgate/logout"));
    finish_at_provider(&browser, "alice", &format!("{gateway}/"));
    assert!(
        !browser
            .cookies()
            .iter()
            .any(|c| c["name"] == "tollgate_session"),
        "{:?}",
        browser.cookies()
    );
    let before = world.origin_requests().len();
    browser.open(&format!("{gateway}/acme/app"));
    browser.wait_for(
        "the provider's sign-in form after signing out",
        "return !!document.querySelector('input[name=login]');",
    );
    assert!(
        browser.url().starts_with(&format!("{idp}/interaction/")),
        "{}",
        browser.url()
    );
    browser.screenshot(&shots.join("signed-out.png"));
    assert_eq!(
        world.origin_requests()[before..]
            .iter()
            .filter(|r| r["path"] == "/acme/app")
            .count(),
        0,
        "the origin served the page after sign-out"
    );
}
