//! The policy playground (`targets/js/playground`) in headless Chromium, driven over
//! WebDriver (chromium-driver): the page loads the web build of the npm package and the
//! example policy, shows the expected decision for the example request, and a broken edit
//! shows the positioned error. A screenshot of each state is kept in
//! `target/playground/`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_conformance::process::{free_port, repo, Proc};

struct WebDriver {
    base: String,
    client: reqwest::blocking::Client,
}

impl WebDriver {
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(60));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let text = request
            .send()
            .expect("webdriver")
            .text()
            .expect("webdriver answer");
        let answer: Value = serde_json::from_str(&text).expect("webdriver JSON");
        assert!(
            answer["value"].get("error").is_none(),
            "webdriver {path}: {answer}"
        );
        answer["value"].clone()
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body))
    }
}

struct Session<'d> {
    driver: &'d WebDriver,
    id: String,
}

impl Session<'_> {
    /// Runs `script` in the page and returns what it returns.
    fn run(&self, script: &str) -> Value {
        self.driver.post(
            &format!("/session/{}/execute/sync", self.id),
            json!({"script": script, "args": []}),
        )
    }

    fn text(&self, id: &str) -> String {
        self.run(&format!(
            "return document.getElementById('{id}').textContent;"
        ))
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits up to 30 s for `script` to return true.
    fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.run(script) != json!(true) {
            assert!(
                Instant::now() < deadline,
                "{what}; status: {}",
                self.text("status")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, file: &Path) {
        use base64ct::Encoding;
        let png = self.driver.call(
            reqwest::Method::GET,
            &format!("/session/{}/screenshot", self.id),
            None,
        );
        let bytes = base64ct::Base64::decode_vec(png.as_str().expect("screenshot")).expect("PNG");
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(file, bytes).expect("write screenshot");
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .client
            .delete(format!("{}/session/{}", self.driver.base, self.id))
            .send();
    }
}

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
    let driver_port = free_port();
    let _chromedriver = Proc::start(
        "chromedriver",
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        driver_port,
    );
    let driver = WebDriver {
        base: format!("http://127.0.0.1:{driver_port}"),
        client: reqwest::blocking::Client::new(),
    };
    let session = driver.post(
        "/session",
        json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"],
        }}}}),
    );
    let session = Session {
        driver: &driver,
        id: session["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned(),
    };
    let shots = root.join("target/playground");
    std::fs::create_dir_all(&shots).expect("screenshot folder");

    driver.post(
        &format!("/session/{}/url", session.id),
        json!({"url": format!("http://127.0.0.1:{site_port}/targets/js/playground/index.html")}),
    );
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
