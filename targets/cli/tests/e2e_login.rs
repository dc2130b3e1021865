//! People through the edge: `tollgate login GATEWAY` reads the sign-in settings the gateway
//! publishes (`[login]`), and signs alice in with the real OpenID provider
//! (oidc-provider, tests/e2e/idp) through the device authorization grant, the provider's
//! own sign-in and consent pages completed over HTTP as her browser would; then git, with
//! `tollgate credential` as its credential helper, clones through `tollgate serve`, and
//! fetches again after her five-second access token has expired, with a refreshed one.
//! When the refresh is refused, git is told to sign in again. `tollgate login --browser`
//! signs her in with the authorization code grant and PKCE instead, in headless Chromium
//! redirected back to the command's loopback listener; then git-lfs pushes and fetches an
//! object through the gateway with the same helper.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_conformance::browser::Browser;
use tollgate_conformance::process::Proc;
use tollgate_conformance::world::{finish_at_provider, header, text, World};

/// The value of the first `name="NAME" value="..."` in `page`.
fn field(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    page[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Where the first form in `page` (from `origin`) posts to.
fn action(origin: &str, page: &str) -> String {
    let start = page
        .find("action=\"")
        .unwrap_or_else(|| panic!("no form in {page}"))
        + "action=\"".len();
    let action = page[start..].split('"').next().unwrap_or_default();
    if action.starts_with('/') {
        format!("{origin}{action}")
    } else {
        action.to_owned()
    }
}

/// Signs in at the provider as `user` for the device code `user_code`, as a browser would:
/// the code page, its confirmation, the sign-in form, the consent form.
fn approve_device(idp: &str, user_code: &str, user: &str) {
    let browser = reqwest::blocking::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let page = |response: reqwest::blocking::Response| response.text().expect("page");
    let code_page = page(
        browser
            .get(format!("{idp}/device"))
            .send()
            .expect("device page"),
    );
    let confirm_page = page(
        browser
            .post(format!("{idp}/device"))
            .form(&[
                ("xsrf", field(&code_page, "xsrf").as_str()),
                ("user_code", user_code),
            ])
            .send()
            .expect("enter the code"),
    );
    let sign_in_page = page(
        browser
            .post(format!("{idp}/device"))
            .form(&[
                ("xsrf", field(&confirm_page, "xsrf").as_str()),
                ("user_code", user_code),
                ("confirm", "yes"),
            ])
            .send()
            .expect("confirm the code"),
    );
    let consent_page = page(
        browser
            .post(action(idp, &sign_in_page))
            .form(&[("prompt", "login"), ("login", user), ("password", "any")])
            .send()
            .expect("sign in"),
    );
    let done = page(
        browser
            .post(action(idp, &consent_page))
            .form(&[("prompt", "consent")])
            .send()
            .expect("consent"),
    );
    assert!(done.contains("Sign-in Success"), "{done}");
}

/// `git` in `dir` with `tollgate credential` as its only credential helper, under `home`.
fn git(home: &Path, dir: &Path, args: &[&str]) -> Output {
    let helper = format!(
        "credential.helper={} credential",
        env!("CARGO_BIN_EXE_tollgate")
    );
    Command::new("git")
        .args(["-c", "credential.helper=", "-c", &helper])
        .args(args)
        .current_dir(dir)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("TOLLGATE_CREDENTIALS")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("run git")
}

/// `tollgate login` with `args`, as a person at this world's home would run it, its
/// stderr piped for the test to read.
fn login(home: &Path, args: &[&str], browser: Option<&str>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .arg("login")
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("TOLLGATE_CREDENTIALS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(browser) = browser {
        command.env("BROWSER", browser);
    }
    command.spawn().expect("tollgate login")
}

/// `login`'s exit status; `still_running` is the failure when it has not exited in 30 s.
fn exited_within_30_s(login: &mut Child, still_running: &str) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = login.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "{still_running}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stored(home: &Path, gateway: &str) -> Value {
    let text = std::fs::read_to_string(home.join(".config/tollgate/credentials.json"))
        .expect("credentials file");
    let all: Value = serde_json::from_str(&text).expect("credentials JSON");
    all[gateway].clone()
}

/// The world a person signs in to: the provider and the origin, `tollgate serve` in front
/// (auditing nowhere), their URLs, and the person's home folder.
struct Signing {
    world: World,
    _serve: Proc,
    gateway: String,
    idp: String,
    home: std::path::PathBuf,
}

impl Signing {
    fn start() -> Signing {
        let world = World::start();
        let tollgate = Path::new(env!("CARGO_BIN_EXE_tollgate"));
        let (serve, port) = world.serve(tollgate, &["--audit-log", "/dev/null"]);
        Signing {
            gateway: format!("http://127.0.0.1:{port}"),
            idp: format!("http://127.0.0.1:{}", world.idp_port),
            home: world.home(),
            world,
            _serve: serve,
        }
    }
}

#[test]
fn login_then_git_through_the_credential_helper_with_refreshed_tokens() {
    let Signing {
        world,
        _serve,
        gateway,
        idp,
        home,
    } = Signing::start();

    // Sign in: the command shows a code, alice enters it at the provider and signs in.
    // Nothing but the gateway: it publishes the issuer, client id and resource.
    let mut login = login(&home, &[&gateway], None);
    let mut said = String::new();
    let mut lines = BufReader::new(login.stderr.take().expect("stderr")).lines();
    let user_code = loop {
        let line = lines
            .next()
            .expect("a line from tollgate login")
            .expect("stderr");
        said.push_str(&line);
        said.push('\n');
        if let Some((_, code)) = line.split_once("enter the code ") {
            break code.trim().to_owned();
        }
    };
    assert!(said.contains(&format!("{idp}/device")), "{said}");
    approve_device(&idp, &user_code, "alice");
    let status = exited_within_30_s(&mut login, &format!("tollgate login still polling: {said}"));
    for line in lines {
        said.push_str(&line.expect("stderr"));
        said.push('\n');
    }
    assert!(status.success(), "{said}");
    assert!(said.contains(&format!("Signed in to {gateway}.")), "{said}");

    // The tokens are kept for the owner only, and never shown.
    let file = home.join(".config/tollgate/credentials.json");
    let mode = std::fs::metadata(&file)
        .expect("credentials")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "credentials file mode {mode:o}");
    let first = stored(&home, &gateway);
    let first_token = first["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    assert!(first["refresh_token"].is_string(), "{first:?}");
    assert!(
        !said.contains(&first_token),
        "tollgate login printed the token"
    );

    // git clones through the gateway with no token handling: the helper hands it alice's
    // token (refreshed first, since it lives five seconds), and the origin sees alice.
    let work = world.path("work");
    std::fs::create_dir_all(&work).expect("work");
    let out = git(
        &home,
        &work,
        &["clone", "-q", &format!("{gateway}/acme/app.git"), "app"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let basic = tollgate_conformance::world::basic("alice", "gogs-alice-0001");
    let at_origin = world.origin_requests();
    assert!(
        at_origin
            .iter()
            .any(|r| header(r, "authorization") == Some(basic.as_str())),
        "alice never reached the origin: {at_origin:?}"
    );
    let second_token = stored(&home, &gateway)["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_ne!(
        second_token, first_token,
        "the expiring token was not refreshed"
    );

    // Past the token's expiry, a fetch works again with a refreshed one.
    std::thread::sleep(Duration::from_secs(6));
    let out = git(&home, &work.join("app"), &["fetch", "-q", "origin"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let third_token = stored(&home, &gateway)["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_ne!(
        third_token, second_token,
        "the expired token was not refreshed"
    );

    // A refresh the provider refuses: git fails, and is told to sign in again.
    let mut broken: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("file")).expect("json");
    broken[&gateway]["refresh_token"] = Value::from("revoked");
    broken[&gateway]["expires_at"] = Value::from(0);
    std::fs::write(&file, broken.to_string()).expect("write");
    let out = git(&home, &work.join("app"), &["fetch", "-q", "origin"]);
    assert!(
        !out.status.success(),
        "a fetch with a refused refresh succeeded"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("run `tollgate login {gateway}`")),
        "{stderr}"
    );
}

#[test]
fn login_in_a_browser_with_pkce_on_a_loopback_redirect() {
    let Signing {
        world,
        _serve,
        gateway,
        idp,
        home,
    } = Signing::start();

    // Five-minute tokens (not `[login]`'s five-second ones): a push with git-lfs spans
    // several requests on one credential. No desktop here: the test's Chromium opens the
    // URL the command shows.
    let mut login = login(
        &home,
        &[&gateway, "--browser", "--resource", "urn:gogs:es256"],
        Some("true"),
    );
    let mut lines = BufReader::new(login.stderr.take().expect("stderr")).lines();
    let line = lines.next().expect("a line").expect("stderr");
    let url = line
        .split_once(", open ")
        .map(|(_, url)| url.trim().to_owned())
        .unwrap_or_else(|| panic!("no URL in `{line}`"));
    assert!(url.starts_with(&format!("{idp}/auth?response_type=code&client_id=tollgate-cli&redirect_uri=http%3A%2F%2F127.0.0.1%3A")), "{url}");
    assert!(url.contains("&code_challenge_method=S256"), "{url}");
    let loopback = reqwest::Url::parse(&url)
        .expect("URL")
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .expect("redirect_uri");

    let browser = Browser::start();
    browser.open(&url);
    finish_at_provider(&browser, "alice", &loopback);
    browser.wait_for(
        "the loopback listener's answer",
        "return document.body && document.body.innerText.startsWith('Signed in.');",
    );
    let status = exited_within_30_s(&mut login, "tollgate login --browser never finished");
    let said: String = lines.map_while(Result::ok).collect::<Vec<_>>().join("\n");
    assert!(status.success(), "{said}");
    assert!(said.contains(&format!("Signed in to {gateway}.")), "{said}");
    let kept = stored(&home, &gateway);
    assert!(kept["refresh_token"].is_string(), "{kept:?}");
    assert!(!said.contains(kept["access_token"].as_str().expect("token")));

    // The same helper, the same clone.
    let work = world.path("work");
    std::fs::create_dir_all(&work).expect("work");
    let out = git(
        &home,
        &work,
        &["clone", "-q", &format!("{gateway}/acme/app.git"), "app"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // git-lfs asks the same helper: an object pushed through the gateway, then fetched
    // into a second clone, reaching the origin with alice's Gogs credential.
    let app = work.join("app");
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(app.join("model.bin"), &blob).expect("write the object");
    for args in [
        // Into the test's own home: the second clone's checkout needs the filter too.
        &["lfs", "install"][..],
        &["lfs", "track", "*.bin"],
        &["add", ".gitattributes", "model.bin"],
        &[
            "-c",
            "user.name=alice",
            "-c",
            "user.email=alice@example.com",
            "commit",
            "-q",
            "-m",
            "model",
        ],
        &["push", "-q", "origin", "main"],
    ] {
        let out = git(&home, &app, args);
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    }
    let out = git(
        &home,
        &work,
        &["clone", "-q", &format!("{gateway}/acme/app.git"), "again"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let fetched = std::fs::read(work.join("again/model.bin")).expect("the fetched object");
    assert!(
        fetched == blob,
        "the second clone did not get the object's content: {}",
        String::from_utf8_lossy(&fetched[..fetched.len().min(200)])
    );
    let basic = tollgate_conformance::world::basic("alice", "gogs-alice-0001");
    let lfs: Vec<Value> = world
        .origin_requests()
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.contains("/info/lfs/")))
        .collect();
    for (method, path) in [
        ("POST", "/acme/app.git/info/lfs/objects/batch"),
        ("PUT", "/acme/app.git/info/lfs/objects/basic/"),
        ("GET", "/acme/app.git/info/lfs/objects/basic/"),
    ] {
        assert!(
            lfs.iter().any(|r| r["method"] == method
                && r["path"].as_str().is_some_and(|p| p.starts_with(path))
                && header(r, "authorization") == Some(basic.as_str())),
            "no {method} {path} as alice at the origin: {lfs:?}"
        );
    }
}
